//! The parser and type checker: tokens to an [`Expr`].
//!
//! Dataverse refuses an ill-typed filter (a number compared with text, a string function given a
//! number, a filter that is not a boolean) before it reads a single row, and answers 400 with a
//! message a client may depend on. Checking types while the tree is built gives the same answer at
//! the same moment, where checking them during evaluation would only make a bad filter match
//! nothing. The parser also converts the literals the service converts (a quoted GUID against a GUID
//! column, a date against a date-time), so evaluation never has to.
//!
//! It also owns the recursion limit, [`MAX_DEPTH`]. Every other part walks the tree recursively,
//! which is safe only because no tree this parser builds is deeper than a small multiple of it.

use uuid::Uuid;

use super::lexer::{Kind, Token, lex, syntax};
use super::{CmpOp, Expr, Lit, Pattern, Properties, StrFn, Work};
use crate::clock;
use crate::reply::Fail;
use crate::schema::Edm;

/// The type of an expression; `None` is the type of `null`, compatible with everything.
type Ty = Option<Edm>;

/// [`parse`](super::parse), adding the work it does to `work`.
pub(super) fn parse_counting(
    text: &str,
    props: &dyn Properties,
    work: &Work,
) -> Result<Expr, Fail> {
    let tokens = lex(text, work)?;
    let mut parser = Parser {
        text,
        tokens,
        at: 0,
        props,
        depth: 0,
        work,
    };
    let (expr, ty) = parser.or()?;
    if parser.peek().kind != Kind::End {
        return Err(parser.syntax_error(parser.peek().pos));
    }
    if !matches!(ty, Some(Edm::Boolean) | None) {
        return Err(Fail::bad_query(
            "The $filter expression must evaluate to a single boolean value.",
        ));
    }
    Ok(expr)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
    props: &'a dyn Properties,
    depth: u32,
    work: &'a Work,
}

/// Nesting past this answers 400, as the OData parser's recursion limit does, rather than
/// exhausting the emulator's stack on a hostile `((((...`. Every construct that makes the tree deeper
/// counts (a parenthesis, a `not`, a function's argument, a chained comparison), so the tree's depth
/// is bounded by a small multiple of it, and everything that walks the tree may recurse.
pub(super) const MAX_DEPTH: u32 = 100;

impl Parser<'_> {
    /// Goes one level deeper, or refuses to.
    fn descend(&mut self) -> Result<(), Fail> {
        if self.depth >= MAX_DEPTH {
            return Err(Fail::bad_query("The recursion limit has been exceeded."));
        }
        self.depth += 1;
        Ok(())
    }

    /// Parses one level deeper (a parenthesis, a `not`, a function's argument).
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<(Expr, Ty), Fail>,
    ) -> Result<(Expr, Ty), Fail> {
        self.descend()?;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.work.add(match &token.kind {
            Kind::Ident(s) | Kind::Str(s) | Kind::Date(s) => 1 + s.len(),
            _ => 1,
        });
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(&self.peek().kind, Kind::Ident(w) if w == word)
    }

    fn syntax_error(&self, pos: usize) -> Fail {
        syntax(self.text, pos, self.work)
    }

    /// An error message that quotes the whole filter.
    fn quoting(&self, message: String) -> Fail {
        self.work.add(self.text.len());
        Fail::bad_query(message)
    }

    fn or(&mut self) -> Result<(Expr, Ty), Fail> {
        self.work.add(1);
        self.chain(Logic::Or)
    }

    fn and(&mut self) -> Result<(Expr, Ty), Fail> {
        self.work.add(1);
        self.chain(Logic::And)
    }

    /// `a or b or ...` (or the same with `and`) as one node holding every term, so a long chain
    /// makes a wide tree rather than a deep one. (A parenthesised group stays a node of its own: its
    /// parenthesis already counted against [`MAX_DEPTH`].)
    fn chain(&mut self, logic: Logic) -> Result<(Expr, Ty), Fail> {
        let operand = |parser: &mut Self| match logic {
            Logic::Or => parser.and(),
            Logic::And => parser.comparison(),
        };
        let (first, mut ty) = operand(self)?;
        if !self.keyword(logic.word()) {
            return Ok((first, ty));
        }
        let mut terms = vec![first];
        while self.keyword(logic.word()) {
            self.next();
            let (term, term_ty) = operand(self)?;
            logical(logic.kind(), ty, term_ty)?;
            self.work.add(1);
            terms.push(term);
            ty = Some(Edm::Boolean);
        }
        Ok((logic.node(terms), ty))
    }

    fn comparison(&mut self) -> Result<(Expr, Ty), Fail> {
        let depth = self.depth;
        let result = self.comparisons();
        self.depth = depth;
        result
    }

    /// `a eq b`, or a chain of comparisons, which the `OData` grammar allows and which means
    /// `(a eq b) eq c`: every link after the first nests the tree one level deeper, so it counts
    /// against [`MAX_DEPTH`] as a parenthesis would. The caller restores the depth.
    fn comparisons(&mut self) -> Result<(Expr, Ty), Fail> {
        self.work.add(1);
        let (mut left, mut left_ty) = self.unary()?;
        let mut chained = false;
        while let Some(op) = self.comparison_operator()? {
            if chained {
                self.descend()?;
            }
            chained = true;
            self.next();
            let (right, right_ty) = self.unary()?;
            let (left_c, right_c) = comparable(op, left, left_ty, right, right_ty, self.work)?;
            self.work.add(1);
            left = Expr::Cmp(op, Box::new(left_c), Box::new(right_c));
            left_ty = Some(Edm::Boolean);
        }
        Ok((left, left_ty))
    }

    /// The comparison operator at the cursor, if any. Operators Dataverse does not support (`has`, `in`,
    /// arithmetic) are syntax errors there, as they are here.
    fn comparison_operator(&self) -> Result<Option<CmpOp>, Fail> {
        let Kind::Ident(word) = &self.peek().kind else {
            return Ok(None);
        };
        Ok(Some(match word.as_str() {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            "has" | "in" | "add" | "sub" | "mul" | "div" | "mod" => {
                return Err(self.syntax_error(self.peek().pos));
            }
            _ => return Ok(None),
        }))
    }

    fn unary(&mut self) -> Result<(Expr, Ty), Fail> {
        self.work.add(1);
        if self.keyword("not") {
            self.next();
            let (inner, ty) = self.nested(Self::unary)?;
            if !matches!(ty, Some(Edm::Boolean) | None) {
                return Err(Fail::bad_query(format!(
                    "A unary operator with an incompatible type was detected. Found operand type '{}' for operator kind 'Not'.",
                    ty.map_or("null", Edm::name)
                )));
            }
            return Ok((Expr::Not(Box::new(inner)), Some(Edm::Boolean)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<(Expr, Ty), Fail> {
        self.work.add(1);
        let token = self.next();
        let lit = |l: Lit, ty: Ty| Ok((Expr::Lit(l), ty));
        match token.kind {
            Kind::Open => {
                let inner = self.nested(Self::or)?;
                if self.peek().kind != Kind::Close {
                    return Err(self.quoting(format!(
                        "')' or operator expected at position {} in '{}'.",
                        self.peek().pos,
                        self.text
                    )));
                }
                self.next();
                Ok(inner)
            }
            Kind::Str(s) => lit(Lit::Str(s), Some(Edm::String)),
            Kind::Int(n) => {
                let ty = if i32::try_from(n).is_ok() {
                    Edm::Int32
                } else {
                    Edm::Int64
                };
                lit(Lit::Int(n), Some(ty))
            }
            Kind::Num(n) => lit(Lit::Num(n), Some(Edm::Decimal)),
            Kind::Guid(g) => lit(Lit::Exact(g.to_string(), Edm::Guid), Some(Edm::Guid)),
            Kind::DateTime(t) => lit(
                Lit::Exact(clock::format_utc(t), Edm::DateTimeOffset),
                Some(Edm::DateTimeOffset),
            ),
            Kind::Date(d) => lit(Lit::Exact(d, Edm::Date), Some(Edm::Date)),
            Kind::Ident(word) => self.identifier(&word, token.pos),
            Kind::End => Err(self.quoting(format!(
                "Expression expected at position {} in '{}'.",
                token.pos, self.text
            ))),
            Kind::Close | Kind::Comma => Err(self.syntax_error(token.pos)),
        }
    }

    fn identifier(&mut self, word: &str, pos: usize) -> Result<(Expr, Ty), Fail> {
        // A lookup, or an error message that names the word.
        self.work.add(word.len());
        match word {
            "null" => return Ok((Expr::Lit(Lit::Null), None)),
            "true" => return Ok((Expr::Lit(Lit::Bool(true)), Some(Edm::Boolean))),
            "false" => return Ok((Expr::Lit(Lit::Bool(false)), Some(Edm::Boolean))),
            _ => {}
        }
        if word.starts_with('@') {
            return Err(Fail::not_implemented(format!(
                "parameter aliases such as '{word}' in $filter"
            )));
        }
        if word.starts_with("Microsoft.Dynamics.CRM.")
            && self.props.allows_enum_literals()
            && let Kind::Str(member) = &self.peek().kind
        {
            // An enum literal, `Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'`: metadata keeps
            // enum values as their member names, so it compares as the name does.
            let member = member.clone();
            self.next();
            return Ok((Expr::Lit(Lit::Str(member)), Some(Edm::String)));
        }
        if word.starts_with("Microsoft.Dynamics.CRM.") {
            return Err(Fail::not_implemented(format!(
                "the query function '{word}'"
            )));
        }
        if word.contains('/') {
            // Complex-value leaves such as `CanChangeTrackingBeEnabled/Value` are properties of their
            // own; anything else with a slash is a lookup path or a lambda.
            if let Ok((column, edm)) = self.props.property(word) {
                return Ok((Expr::Prop(column, edm), Some(edm)));
            }
            return Err(Fail::not_implemented(format!(
                "navigation paths and lambda operators in $filter ('{word}')"
            )));
        }
        if self.peek().kind == Kind::Open {
            return self.function(word, pos);
        }
        let (column, edm) = self.props.property(word)?;
        Ok((Expr::Prop(column, edm), Some(edm)))
    }

    fn function(&mut self, name: &str, _pos: usize) -> Result<(Expr, Ty), Fail> {
        let func = match name {
            "contains" => StrFn::Contains,
            "startswith" => StrFn::StartsWith,
            "endswith" => StrFn::EndsWith,
            _ => {
                return Err(Fail::bad_query(format!(
                    "An unknown function with name '{name}' was found. This may also be a function import or a key lookup on a navigation property, which is not allowed."
                )));
            }
        };
        if !self.props.allows_string_functions() {
            return Err(Fail::new(
                400,
                "0x8006088a",
                format!("The \"{name}\" function isn't supported for Metadata Entities."),
            ));
        }
        self.next(); // (
        let mut args = Vec::new();
        if self.peek().kind != Kind::Close {
            loop {
                args.push(self.nested(Self::or)?);
                if self.peek().kind == Kind::Comma {
                    self.next();
                    continue;
                }
                break;
            }
        }
        if self.peek().kind != Kind::Close {
            return Err(self.quoting(format!(
                "')' or ',' expected at position {} in '{}'.",
                self.peek().pos,
                self.text
            )));
        }
        self.next();
        let signature_ok = args.len() == 2
            && args
                .iter()
                .all(|(_, ty)| matches!(ty, Some(Edm::String) | None));
        if !signature_ok {
            return Err(Fail::bad_query(format!(
                "No function signature for the function with name '{name}' matches the specified arguments. The function signatures considered are: {name}(Edm.String Nullable=true, Edm.String Nullable=true)."
            )));
        }
        let mut args = args.into_iter().map(|(e, _)| e);
        let expr = match (args.next(), args.next()) {
            (Some(subject), Some(Expr::Lit(Lit::Str(pattern)))) => {
                Expr::Like(Box::new(subject), Pattern::new(&pattern, func, self.work))
            }
            (Some(subject), Some(pattern)) => Expr::Str(func, Box::new(subject), Box::new(pattern)),
            _ => return Err(self.syntax_error(self.peek().pos)),
        };
        Ok((expr, Some(Edm::Boolean)))
    }
}

/// `and` or `or`, for the parser's handling of their chains.
#[derive(Debug, Clone, Copy)]
enum Logic {
    And,
    Or,
}

impl Logic {
    fn word(self) -> &'static str {
        match self {
            Logic::And => "and",
            Logic::Or => "or",
        }
    }

    /// The operator kind error messages name.
    fn kind(self) -> &'static str {
        match self {
            Logic::And => "And",
            Logic::Or => "Or",
        }
    }

    fn node(self, terms: Vec<Expr>) -> Expr {
        match self {
            Logic::And => Expr::And(terms),
            Logic::Or => Expr::Or(terms),
        }
    }
}

fn logical(kind: &str, left: Ty, right: Ty) -> Result<(), Fail> {
    let ok = |t: Ty| matches!(t, Some(Edm::Boolean) | None);
    if ok(left) && ok(right) {
        Ok(())
    } else {
        Err(Fail::bad_query(format!(
            "A binary operator with incompatible types was detected. Found operand types '{}' and '{}' for operator kind '{kind}'.",
            left.map_or("null", Edm::name),
            right.map_or("null", Edm::name)
        )))
    }
}

/// Checks that two operands can be compared, converting a quoted GUID literal compared with a GUID
/// column (the documentation shows both forms) and a date literal compared with a date-time.
fn comparable(
    op: CmpOp,
    left: Expr,
    lt: Ty,
    right: Expr,
    rt: Ty,
    work: &Work,
) -> Result<(Expr, Expr), Fail> {
    let incompatible = || {
        Fail::bad_query(format!(
            "A binary operator with incompatible types was detected. Found operand types '{}' and '{}' for operator kind '{}'.",
            lt.map_or("null", Edm::name),
            rt.map_or("null", Edm::name),
            op.kind()
        ))
    };
    let (Some(l), Some(r)) = (lt, rt) else {
        return Ok((left, right));
    };
    if l == r || (l.is_numeric() && r.is_numeric()) {
        return Ok((left, right));
    }
    let convert = |e: Expr, target: Edm| -> Option<Expr> {
        match (e, target) {
            (Expr::Lit(Lit::Str(s)), Edm::Guid) => {
                work.add(s.len());
                Uuid::parse_str(&s)
                    .ok()
                    .map(|g| Expr::Lit(Lit::Exact(g.to_string(), Edm::Guid)))
            }
            (Expr::Lit(Lit::Exact(d, Edm::Date)), Edm::DateTimeOffset) => Some(Expr::Lit(
                Lit::Exact(format!("{d}T00:00:00Z"), Edm::DateTimeOffset),
            )),
            _ => None,
        }
    };
    match (l, r) {
        (Edm::Guid, Edm::String) | (Edm::DateTimeOffset, Edm::Date) => convert(right, l)
            .map(|r| (left, r))
            .ok_or_else(incompatible),
        (Edm::String, Edm::Guid) | (Edm::Date, Edm::DateTimeOffset) => convert(left, r)
            .map(|l| (l, right))
            .ok_or_else(incompatible),
        _ => Err(incompatible()),
    }
}
