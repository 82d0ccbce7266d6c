//! `$filter`: the subset of the `OData` expression language Dataverse supports, parsed and type-checked
//! like the real service does it, so a client's encoding or quoting mistake fails here as it would in
//! production.
//!
//! Supported: `eq ne gt ge lt le`, `and or not`, parentheses, `contains`/`startswith`/`endswith`
//! (case-insensitive, with SQL wildcards inside the value, as Dataverse evaluates them), `null`,
//! `true`/`false`, integers and decimals, strings with `''` escapes, unquoted GUIDs (quoted ones too,
//! against GUID columns), date-times and dates. Column-to-column comparisons work.
//! Refused with 501: lookup paths (`a/b`), lambda operators, `Microsoft.Dynamics.CRM.*` query functions
//! and parameter aliases.

use serde_json::Value;
use uuid::Uuid;

use crate::clock;
use crate::reply::Fail;
use crate::schema::Edm;

/// Resolves a property name to a column, so the parser can check types while it parses.
pub trait Properties {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail>;
    /// The text used in "Could not find a property" messages and similar.
    fn type_name(&self) -> String;
    /// Metadata queries refuse string functions.
    fn allows_string_functions(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn kind(self) -> &'static str {
        match self {
            CmpOp::Eq => "Equal",
            CmpOp::Ne => "NotEqual",
            CmpOp::Gt => "GreaterThan",
            CmpOp::Ge => "GreaterThanOrEqual",
            CmpOp::Lt => "LessThan",
            CmpOp::Le => "LessThanOrEqual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    /// Normalised to the form rows store (lowercase GUIDs, `...Z` date-times, `YYYY-MM-DD` dates), so
    /// evaluation is a string comparison.
    Exact(String, Edm),
}

/// A parsed filter. `and` and `or` chains are n-ary nodes, not nested pairs, so a tree is only as deep
/// as the filter's nesting, which the parser bounds (see [`MAX_DEPTH`]): walking, evaluating and
/// dropping it recurse no deeper than that, however long the chain.
#[derive(Debug, Clone)]
pub enum Expr {
    Prop(usize, Edm),
    Lit(Lit),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// Two or more terms.
    And(Vec<Expr>),
    /// Two or more terms.
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `contains`/`startswith`/`endswith` with a literal pattern, split into pieces once at parse
    /// time rather than for every row.
    Like(Box<Expr>, Pattern),
    /// The same with a pattern only known per row (a column, or `null`).
    Str(StrFn, Box<Expr>, Box<Expr>),
}

/// The type of an expression; `None` is the type of `null`, compatible with everything.
type Ty = Option<Edm>;

/// Work done by the lexer, the parser or the `LIKE` matcher, in units of "one character looked at,
/// one token taken or one node built". Nothing in the service reads it: the property suite uses it
/// to show that the cost of a filter grows linearly with its length, without timing anything.
/// Library calls that are linear in their input (number and date parsing, copies, lookups) are
/// charged the length of that input.
///
/// Only test builds count. Elsewhere `Work` is empty and [`Work::add`] does nothing, so the request
/// path, where the matcher runs once per row, pays nothing for the bookkeeping.
#[cfg(test)]
#[derive(Debug, Default)]
struct Work(std::cell::Cell<u64>);

/// A field of nothing rather than a unit struct, so both versions are made with `Work::default()`.
#[cfg(not(test))]
#[derive(Debug, Default)]
struct Work(());

impl Work {
    #[cfg(test)]
    fn add(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.0.set(self.0.get().saturating_add(n));
    }

    #[cfg(not(test))]
    #[allow(clippy::unused_self)] // The same signature as the counting version.
    #[inline]
    fn add(&self, _n: usize) {}

    #[cfg(test)]
    fn steps(&self) -> u64 {
        self.0.get()
    }
}

pub fn parse(text: &str, props: &dyn Properties) -> Result<Expr, Fail> {
    parse_counting(text, props, &Work::default())
}

/// [`parse`], adding the work it does to `work`.
fn parse_counting(text: &str, props: &dyn Properties, work: &Work) -> Result<Expr, Fail> {
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

// ---------------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Int(i64),
    Num(f64),
    Guid(Uuid),
    DateTime(i64),
    Date(String),
    Open,
    Close,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    pos: usize,
}

fn lex(text: &str, work: &Work) -> Result<Vec<Token>, Fail> {
    let chars: Vec<char> = text.chars().collect();
    work.add(chars.len());
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        work.add(1);
        let c = chars[i];
        let start = i;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                i += 1;
                Kind::Open
            }
            ')' => {
                i += 1;
                Kind::Close
            }
            ',' => {
                i += 1;
                Kind::Comma
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    work.add(1);
                    match chars.get(i) {
                        None => {
                            work.add(text.len());
                            return Err(Fail::bad_query(format!(
                                "There is an unterminated literal at position {} in '{text}'.",
                                chars.len()
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                Kind::Str(value)
            }
            _ => {
                if let Some((guid, len)) = guid_at(&chars[i..], work) {
                    i += len;
                    Kind::Guid(guid)
                } else if c.is_ascii_digit()
                    || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
                {
                    let (kind, len) = number_or_date(&chars[i..], work)
                        .ok_or_else(|| syntax(text, start, work))?;
                    i += len;
                    kind
                } else if c.is_alphabetic() || c == '_' || c == '@' || c == '$' {
                    let len = chars[i..]
                        .iter()
                        .take_while(|c| {
                            work.add(1);
                            c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '@' | '$')
                        })
                        .count();
                    i += len;
                    work.add(len);
                    Kind::Ident(chars[start..i].iter().collect())
                } else {
                    return Err(syntax(text, start, work));
                }
            }
        };
        tokens.push(Token { kind, pos: start });
    }
    tokens.push(Token {
        kind: Kind::End,
        pos: chars.len(),
    });
    Ok(tokens)
}

fn syntax(text: &str, pos: usize, work: &Work) -> Fail {
    work.add(text.len());
    Fail::bad_query(format!("Syntax error at position {pos} in '{text}'."))
}

fn is_word_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// An unquoted GUID literal: 8-4-4-4-12 hex digits not followed by more word characters.
fn guid_at(chars: &[char], work: &Work) -> Option<(Uuid, usize)> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut at = 0;
    for (n, len) in GROUPS.iter().enumerate() {
        if n > 0 {
            work.add(1);
            if chars.get(at) != Some(&'-') {
                return None;
            }
            at += 1;
        }
        for _ in 0..*len {
            work.add(1);
            if !chars.get(at)?.is_ascii_hexdigit() {
                return None;
            }
            at += 1;
        }
    }
    if is_word_char(chars.get(at)) || chars.get(at) == Some(&'-') {
        return None;
    }
    work.add(2 * at);
    let text: String = chars[..at].iter().collect();
    Uuid::parse_str(&text).ok().map(|g| (g, at))
}

fn number_or_date(chars: &[char], work: &Work) -> Option<(Kind, usize)> {
    // Date or date-time: YYYY-MM-DD[THH:MM[:SS[.fff]](Z|+HH:MM|-HH:MM)]
    work.add(10);
    let is_date = chars.len() >= 10
        && chars[..4].iter().all(char::is_ascii_digit)
        && chars[4] == '-'
        && chars[5..7].iter().all(char::is_ascii_digit)
        && chars[7] == '-'
        && chars[8..10].iter().all(char::is_ascii_digit);
    if is_date {
        let len = chars
            .iter()
            .take_while(|c| {
                work.add(1);
                c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+')
            })
            .count();
        // A copy, then up to three parse attempts.
        work.add(4 * len);
        let text: String = chars[..len].iter().collect();
        if len == 10 {
            let date = clock::parse_date(&text)?;
            return Some((Kind::Date(clock::format_date(date)), len));
        }
        return clock::parse_datetime(&text).map(|t| (Kind::DateTime(t), len));
    }
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| {
                work.add(1);
                c.is_ascii_digit()
            })
            .count()
    };
    let mut len = usize::from(chars[0] == '-');
    len += digits(len);
    let mut decimal = false;
    if chars.get(len) == Some(&'.') && chars.get(len + 1).is_some_and(char::is_ascii_digit) {
        decimal = true;
        len += 1;
        len += digits(len);
    }
    if matches!(chars.get(len), Some('e' | 'E')) {
        let mut exp = len + 1;
        if matches!(chars.get(exp), Some('+' | '-')) {
            exp += 1;
        }
        let exponent = digits(exp);
        if exponent > 0 {
            decimal = true;
            len = exp + exponent;
        }
    }
    // A copy, then one parse.
    work.add(2 * len);
    let text: String = chars[..len].iter().collect();
    // Type suffixes: 5L (Int64), 5.0M (Decimal), 5.0D / 5.0F (Double/Single).
    let suffix = chars
        .get(len)
        .filter(|c| matches!(c, 'L' | 'l' | 'M' | 'm' | 'D' | 'd' | 'F' | 'f'));
    let total = len + usize::from(suffix.is_some());
    if is_word_char(chars.get(total)) {
        return None;
    }
    if decimal || matches!(suffix, Some('M' | 'm' | 'D' | 'd' | 'F' | 'f')) {
        text.parse::<f64>().ok().map(|n| (Kind::Num(n), total))
    } else {
        text.parse::<i64>().ok().map(|n| (Kind::Int(n), total))
    }
}

// ---------------------------------------------------------------------------------------------------
// Parser and type checker

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
const MAX_DEPTH: u32 = 100;

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

// ---------------------------------------------------------------------------------------------------
// Evaluation

/// A value during evaluation. Text compares case-insensitively, as Dataverse's collation does; GUIDs,
/// dates and date-times are stored normalised and compare exactly.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Null,
    Text(&'a str),
    Exact(&'a str),
    /// Compared in SQL Server's GUID order.
    Guid(&'a str),
    Int(i64),
    Num(f64),
    Bool(bool),
}

/// The value of a leaf.
fn leaf<'a>(expr: &'a Expr, row: &'a [Value]) -> Scalar<'a> {
    match expr {
        Expr::Prop(column, edm) => match row.get(*column) {
            Some(Value::String(s)) if *edm == Edm::String => Scalar::Text(s),
            Some(Value::String(s)) if *edm == Edm::Guid => Scalar::Guid(s),
            Some(Value::String(s)) => Scalar::Exact(s),
            Some(Value::Bool(b)) => Scalar::Bool(*b),
            Some(Value::Number(n)) => n
                .as_i64()
                .map_or_else(|| Scalar::Num(n.as_f64().unwrap_or(f64::NAN)), Scalar::Int),
            None | Some(Value::Null | Value::Array(_) | Value::Object(_)) => Scalar::Null,
        },
        Expr::Lit(lit) => match lit {
            Lit::Null => Scalar::Null,
            Lit::Bool(b) => Scalar::Bool(*b),
            Lit::Int(n) => Scalar::Int(*n),
            Lit::Num(n) => Scalar::Num(*n),
            Lit::Str(s) => Scalar::Text(s),
            Lit::Exact(s, Edm::Guid) => Scalar::Guid(s),
            Lit::Exact(s, _) => Scalar::Exact(s),
        },
        _ => Scalar::Null,
    }
}

fn truth_of(value: Scalar<'_>) -> Option<bool> {
    match value {
        Scalar::Bool(b) => Some(b),
        _ => None,
    }
}

/// The value of an operand: a leaf's own, or a boolean sub-expression's truth (unknown is null).
fn value<'a>(expr: &'a Expr, row: &'a [Value]) -> Scalar<'a> {
    match expr {
        Expr::Prop(..) | Expr::Lit(_) => leaf(expr, row),
        _ => truth(expr, row).map_or(Scalar::Null, Scalar::Bool),
    }
}

/// The text a string function reads from an operand, if it has any.
fn text(value: Scalar<'_>) -> Option<&str> {
    match value {
        Scalar::Text(s) | Scalar::Exact(s) | Scalar::Guid(s) => Some(s),
        _ => None,
    }
}

/// Evaluates a boolean expression with SQL's three-valued logic: `None` is "unknown", and a row is
/// returned only when the whole filter is `Some(true)`. Recursive: the parser bounds the tree's
/// depth.
pub fn truth(expr: &Expr, row: &[Value]) -> Option<bool> {
    match expr {
        Expr::Prop(..) | Expr::Lit(_) => truth_of(leaf(expr, row)),
        Expr::And(terms) => {
            let mut all = Some(true);
            for term in terms {
                match truth(term, row) {
                    Some(false) => return Some(false),
                    None => all = None,
                    Some(true) => {}
                }
            }
            all
        }
        Expr::Or(terms) => {
            let mut any = Some(false);
            for term in terms {
                match truth(term, row) {
                    Some(true) => return Some(true),
                    None => any = None,
                    Some(false) => {}
                }
            }
            any
        }
        Expr::Not(inner) => truth(inner, row).map(|b| !b),
        Expr::Cmp(op, left, right) => compare(*op, value(left, row), value(right, row)),
        Expr::Like(subject, pattern) => {
            text(value(subject, row)).map(|s| pattern.matches(s, &Work::default()))
        }
        Expr::Str(func, subject, pattern) => {
            let (s, p) = (text(value(subject, row))?, text(value(pattern, row))?);
            let work = Work::default();
            Some(Pattern::new(p, *func, &work).matches(s, &work))
        }
    }
}

/// A lower bound on a row's sort key that every row matching a filter respects: the start of an
/// index range seek. Every matching row's key is at or after `prefix`, or, when `after`, strictly
/// after every key that begins with `prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBound {
    pub prefix: Vec<Value>,
    pub after: bool,
}

/// Derives a [`KeyBound`] on the leading sort `columns` (ascending) from a filter: `c gt x`, `c ge x`
/// and `c eq x` on the first column bound it, `c eq x and <bound on the next columns>` extends the
/// prefix (the keyset form `(a, b) > (x, y)`), `and` takes the tightest of its terms' bounds and `or`
/// the loosest, if every term has one. Recursive: the parser bounds the tree's depth.
pub fn key_bound(expr: &Expr, columns: &[(usize, Edm)]) -> Option<KeyBound> {
    let (first, _) = *columns.first()?;
    let literal_on = |e: &Expr, ops: &[CmpOp]| match e {
        Expr::Cmp(op, left, right) if ops.contains(op) => match (left.as_ref(), right.as_ref()) {
            (Expr::Prop(c, _), Expr::Lit(lit)) if *c == first => {
                literal_value(lit).map(|v| (*op, v))
            }
            _ => None,
        },
        _ => None,
    };
    if let Some((op, value)) = literal_on(expr, &[CmpOp::Gt, CmpOp::Ge, CmpOp::Eq]) {
        return Some(KeyBound {
            prefix: vec![value],
            after: op == CmpOp::Gt,
        });
    }
    let tightest = |bounds: &mut dyn Iterator<Item = KeyBound>, columns: &[(usize, Edm)]| {
        bounds.reduce(|x, y| {
            if compare_keys(&x, &y, columns).is_ge() {
                x
            } else {
                y
            }
        })
    };
    match expr {
        Expr::And(terms) => {
            let mut bounds = terms.iter().filter_map(|t| key_bound(t, columns));
            let own = tightest(&mut bounds, columns);
            // The keyset form: one term fixes the first column, the others bound the next ones.
            let keyset = terms.iter().enumerate().find_map(|(at, term)| {
                let (_, value) = literal_on(term, &[CmpOp::Eq])?;
                let mut rest = terms
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != at)
                    .filter_map(|(_, t)| key_bound(t, &columns[1..]));
                let mut prefix = vec![value];
                let mut after = false;
                if let Some(inner) = tightest(&mut rest, &columns[1..]) {
                    prefix.extend(inner.prefix);
                    after = inner.after;
                }
                Some(KeyBound { prefix, after })
            });
            tightest(&mut own.into_iter().chain(keyset), columns)
        }
        Expr::Or(terms) => {
            let bounds = terms
                .iter()
                .map(|t| key_bound(t, columns))
                .collect::<Option<Vec<_>>>()?;
            bounds.into_iter().reduce(|x, y| {
                if compare_keys(&x, &y, columns).is_le() {
                    x
                } else {
                    y
                }
            })
        }
        _ => None,
    }
}

fn compare_keys(x: &KeyBound, y: &KeyBound, columns: &[(usize, Edm)]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for ((a, b), (_, edm)) in x.prefix.iter().zip(&y.prefix).zip(columns) {
        let ordering = compare_values(a, b, *edm);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    match x.prefix.len().cmp(&y.prefix.len()) {
        Ordering::Equal => x.after.cmp(&y.after),
        Ordering::Less if x.after => Ordering::Greater,
        Ordering::Less => Ordering::Less,
        Ordering::Greater if y.after => Ordering::Less,
        Ordering::Greater => Ordering::Greater,
    }
}

/// Whether a row's sort key (the values of `columns`) is before the bound.
pub fn before_bound(cells: &[Value], bound: &KeyBound, columns: &[(usize, Edm)]) -> bool {
    for (value, (column, edm)) in bound.prefix.iter().zip(columns) {
        match compare_values(&cells[*column], value, *edm) {
            std::cmp::Ordering::Less => return true,
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Equal => {}
        }
    }
    bound.after
}

/// Orders two stored values as rows are sorted (nulls first, text case-insensitively).
fn compare_values(a: &Value, b: &Value, edm: Edm) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(x), Value::String(y)) if edm == Edm::String => compare_text(x, y),
        (Value::String(x), Value::String(y)) if edm == Edm::Guid => crate::guid::compare_text(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (x, y) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
    }
}

fn literal_value(lit: &Lit) -> Option<Value> {
    match lit {
        Lit::Int(n) => Some(Value::from(*n)),
        Lit::Num(n) => serde_json::Number::from_f64(*n).map(Value::Number),
        // Text compares case-insensitively and null sorts first: neither is worth seeking on.
        Lit::Null | Lit::Bool(_) | Lit::Str(_) => None,
        Lit::Exact(s, _) => Some(Value::String(s.clone())),
    }
}

pub fn matches(expr: &Expr, row: &[Value]) -> bool {
    truth(expr, row) == Some(true)
}

fn compare(op: CmpOp, a: Scalar<'_>, b: Scalar<'_>) -> Option<bool> {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Scalar::Null, Scalar::Null) => {
            return match op {
                CmpOp::Eq | CmpOp::Ge | CmpOp::Le => Some(true),
                CmpOp::Ne => Some(false),
                _ => None,
            };
        }
        // Not SQL's three-valued logic: Dataverse's "does not equal" also returns the rows where the
        // column is blank (PowerObjects, "Boolean Blitz", 2016), so a null is unequal to any value.
        (Scalar::Null, _) | (_, Scalar::Null) => {
            return match op {
                CmpOp::Eq => Some(false),
                CmpOp::Ne => Some(true),
                _ => None,
            };
        }
        (Scalar::Text(x), Scalar::Text(y) | Scalar::Exact(y))
        | (Scalar::Exact(x), Scalar::Text(y)) => compare_text(x, y),
        (Scalar::Exact(x), Scalar::Exact(y)) => x.cmp(y),
        (Scalar::Guid(x), Scalar::Guid(y)) => crate::guid::compare_text(x, y),
        (Scalar::Int(x), Scalar::Int(y)) => x.cmp(&y),
        (Scalar::Bool(x), Scalar::Bool(y)) => x.cmp(&y),
        (x, y) => {
            // Mixed integer/decimal comparisons go through f64, as SQL promotes them to float.
            #[allow(clippy::cast_precision_loss)]
            let as_f64 = |s: Scalar<'_>| match s {
                Scalar::Int(n) => Some(n as f64),
                Scalar::Num(n) => Some(n),
                _ => None,
            };
            as_f64(x)?.partial_cmp(&as_f64(y)?)?
        }
    };
    Some(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
    })
}

/// Case-insensitive comparison, as SQL Server's default collation compares text.
pub fn compare_text(a: &str, b: &str) -> std::cmp::Ordering {
    // Byte by byte while both sides are ASCII (sorting a large table spends its time here), falling
    // back to Unicode lowercasing from the first non-ASCII byte on.
    let (x, y) = (a.as_bytes(), b.as_bytes());
    for (i, (&p, &q)) in x.iter().zip(y).enumerate() {
        if !p.is_ascii() || !q.is_ascii() {
            return a[i..]
                .chars()
                .flat_map(char::to_lowercase)
                .cmp(b[i..].chars().flat_map(char::to_lowercase));
        }
        let ordering = p.to_ascii_lowercase().cmp(&q.to_ascii_lowercase());
        if ordering.is_ne() {
            return ordering;
        }
    }
    x.len().cmp(&y.len())
}

/// `contains`/`startswith`/`endswith` become a SQL `LIKE` on the server, so `%`, `_`, `[abc]` and
/// `[^abc]` inside the value are wildcards there, and here. Case-insensitive, as the collation is.
#[derive(Debug, Clone)]
pub struct Pattern {
    pieces: Vec<Piece>,
    /// The pattern lowercased, with the `%` the function adds around it; classes refer into it.
    chars: Vec<char>,
}

impl Pattern {
    fn new(value: &str, func: StrFn, work: &Work) -> Self {
        let mut chars: Vec<char> = Vec::with_capacity(value.len() + 2);
        if func != StrFn::StartsWith {
            chars.push('%');
        }
        chars.extend(value.chars().flat_map(char::to_lowercase));
        if func != StrFn::EndsWith {
            chars.push('%');
        }
        work.add(chars.len());
        let pieces = pieces(&chars, work);
        Pattern { pieces, chars }
    }

    /// Whether `subject` matches. The subject is lowercased as it is read, without a copy: this
    /// runs once per row.
    fn matches(&self, subject: &str, work: &Work) -> bool {
        like_match(
            subject.chars().flat_map(char::to_lowercase),
            &self.pieces,
            &self.chars,
            work,
        )
    }
}

/// One element of a `LIKE` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `%`
    Any,
    /// `_`
    One,
    Char(char),
    /// `[...]` or `[^...]`: the class's characters are `pattern[from..to]`.
    Class {
        negated: bool,
        from: usize,
        to: usize,
    },
}

/// Splits a pattern into pieces in one pass. Matching used to look for a class's closing `]` each
/// time it met a `[`, which made a pattern of many `[` cost the square of its length per character
/// of the subject.
fn pieces(p: &[char], work: &Work) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(p.len());
    // Once a search for `]` has failed, none follows, and every later `[` is a plain character: so
    // the searches together look at each character at most once.
    let mut may_close = true;
    let mut i = 0;
    while i < p.len() {
        work.add(1);
        let piece = match p[i] {
            '%' => Piece::Any,
            '_' => Piece::One,
            '[' if may_close => {
                let close = p[i + 1..].iter().position(|&c| {
                    work.add(1);
                    c == ']'
                });
                if let Some(offset) = close {
                    let end = i + 1 + offset;
                    let negated = offset > 0 && p[i + 1] == '^';
                    pieces.push(Piece::Class {
                        negated,
                        from: i + 1 + usize::from(negated),
                        to: end,
                    });
                    i = end + 1;
                    continue;
                }
                may_close = false;
                Piece::Char('[')
            }
            c => Piece::Char(c),
        };
        pieces.push(piece);
        i += 1;
    }
    pieces
}

/// Matches a (lowercased) subject against pieces. The subject is an iterator so it can be lowercased
/// lazily; it is cloned to remember a position, which costs a few words, not an allocation.
fn like_match(
    subject: impl Iterator<Item = char> + Clone,
    pieces: &[Piece],
    chars: &[char],
    work: &Work,
) -> bool {
    // Backtracking to the last '%' only: at most one pass over the pattern for each starting point
    // in the subject.
    let mut rest = subject;
    let mut pi = 0;
    // The last `%` seen, and the subject after what it has swallowed so far.
    let mut star = None;
    loop {
        work.add(1);
        let mut after = rest.clone();
        let Some(c) = after.next() else {
            break;
        };
        if let Some(&piece) = pieces.get(pi) {
            let matched = match piece {
                Piece::Any => {
                    star = Some((pi, rest.clone()));
                    pi += 1;
                    continue;
                }
                Piece::One => true,
                Piece::Char(p) => p == c,
                Piece::Class { negated, from, to } => {
                    work.add(to - from);
                    in_class(&chars[from..to], c) != negated
                }
            };
            if matched {
                rest = after;
                pi += 1;
                continue;
            }
        }
        match &mut star {
            Some((sp, swallowed)) => {
                // Let the `%` swallow one more character, and try the rest of the pattern there.
                swallowed.next();
                rest = swallowed.clone();
                pi = *sp + 1;
            }
            None => return false,
        }
    }
    let left = pieces.get(pi..).unwrap_or_default();
    work.add(left.len());
    left.iter().all(|&piece| piece == Piece::Any)
}

/// Whether `c` is in a class's characters (`a-z` ranges included).
fn in_class(class: &[char], c: char) -> bool {
    let mut hit = false;
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            hit |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    hit
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The test table's columns, shared with the property suite. A row shorter than the columns
    /// reads as null in the cells it lacks.
    pub(super) struct Cols;

    impl Properties for Cols {
        fn property(&self, name: &str) -> Result<(usize, Edm), Fail> {
            match name {
                "name" => Ok((0, Edm::String)),
                "employees" => Ok((1, Edm::Int32)),
                "id" => Ok((2, Edm::Guid)),
                "on" => Ok((3, Edm::DateTimeOffset)),
                // A complex value's leaf, which may contain a slash.
                "hold" | "Flag/Value" => Ok((4, Edm::Boolean)),
                "other" => Ok((5, Edm::String)),
                "revenue" => Ok((6, Edm::Decimal)),
                "day" => Ok((7, Edm::Date)),
                _ => Err(Fail::no_such_property(name, "Microsoft.Dynamics.CRM.test")),
            }
        }

        fn type_name(&self) -> String {
            "Microsoft.Dynamics.CRM.test".into()
        }
    }

    /// A row for [`Cols`]: a value in every column but `other`, which is null.
    pub(super) fn row() -> Vec<Value> {
        vec![
            json!("O'Bryan Ltd"),
            json!(250),
            json!("70bf4d48-34cb-ed11-b596-0022481d68cd"),
            json!("2021-06-01T10:00:00Z"),
            json!(false),
            Value::Null,
            json!(1.5),
            json!("2021-06-01"),
        ]
    }

    fn eval(filter: &str) -> bool {
        matches(&parse(filter, &Cols).unwrap(), &row())
    }

    fn error(filter: &str) -> String {
        parse(filter, &Cols).unwrap_err().message
    }

    #[test]
    fn compares_strings_case_insensitively_with_escaped_quotes() {
        assert!(eval("name eq 'o''bryan ltd'"));
        assert!(eval("startswith(name,'O''B') and not endswith(name,'x')"));
        assert!(eval("contains(name, 'bry')"));
    }

    #[test]
    fn treats_sql_wildcards_inside_values_as_wildcards() {
        assert!(eval("contains(name,'o%ltd')"));
        assert!(eval("startswith(name,'_''b')"));
        assert!(eval("startswith(name,'[mno]''')"));
        assert!(!eval("startswith(name,'[^o]')"));
    }

    #[test]
    fn compares_text_case_insensitively_across_scripts() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(compare_text("Redmond", "redmond"), Equal);
        assert_eq!(compare_text("abc", "ABD"), Less);
        assert_eq!(compare_text("ab", "AB "), Less);
        assert_eq!(compare_text("Müller", "MÜLLER"), Equal);
        assert_eq!(compare_text("Éa", "éb"), Less);
        assert_eq!(compare_text("z", "É"), Less);
        assert_eq!(compare_text("zz", "z"), Greater);
    }

    #[test]
    fn follows_three_valued_logic_for_null() {
        assert!(eval("other eq null"));
        assert!(!eval("other ne null"));
        assert!(!eval("other gt 'a'"));
        assert!(!eval("not (other gt 'a')"));
        assert!(eval("name ne null and employees ge 250"));
    }

    #[test]
    fn accepts_guid_datetime_and_numeric_literals() {
        assert!(eval("id eq 70bf4d48-34cb-ed11-b596-0022481d68cd"));
        assert!(eval("id eq '70BF4D48-34CB-ED11-B596-0022481D68CD'"));
        // GUIDs compare as SQL Server compares them, last group first, not as text.
        assert!(eval("id lt 00000000-0000-0000-0000-ffffffffffff"));
        assert!(eval("id gt ffffffff-ffff-ffff-ffff-000000000000"));
        assert!(eval(
            "on ge 2021-01-01T00:00:00-00:00 and on lt 2021-06-01T10:00:01Z"
        ));
        assert!(eval("employees gt 249.5 and employees lt 251L"));
        assert!(eval("hold eq false or employees eq -1"));
        assert!(eval("name ne other or (employees eq 250)"));
    }

    #[test]
    fn derives_the_key_bound_an_index_seek_can_start_from() {
        let columns = [(3, Edm::DateTimeOffset), (2, Edm::Guid)];
        let bound = |f: &str| key_bound(&parse(f, &Cols).unwrap(), &columns);
        let key = |prefix: Vec<Value>, after: bool| Some(KeyBound { prefix, after });
        let (t, f) = ("2021-06-01T00:00:00Z", "2021-01-01T00:00:00Z");
        let id = "70bf4d48-34cb-ed11-b596-0022481d68cd";
        assert_eq!(bound(&format!("on gt {t}")), key(vec![json!(t)], true));
        // The keyset form: (on, id) > (t, id), widened by a window that starts earlier.
        assert_eq!(
            bound(&format!(
                "(on gt {t} or (on eq {t} and id gt {id})) and on lt 2022-01-01T00:00:00Z"
            )),
            key(vec![json!(t), json!(id)], true)
        );
        assert_eq!(
            bound(&format!(
                "on gt {t} or (on eq {t} and id gt {id}) or on ge {f}"
            )),
            key(vec![json!(f)], false)
        );
        assert_eq!(
            bound(&format!("on ge {f} and on ge {t}")),
            key(vec![json!(t)], false)
        );
        // However many conditions come first: an `and` chain is one node, searched whole.
        let hold = vec!["hold"; 100].join(" and ");
        assert_eq!(
            bound(&format!("{hold} and on gt {t}")),
            key(vec![json!(t)], true)
        );
        assert_eq!(bound(&format!("on gt {t} or employees gt 5")), None);
        assert_eq!(bound(&format!("not (on lt {t})")), None);
        let row = |on: &str, id: &str| {
            let mut cells = vec![Value::Null; 6];
            cells[3] = json!(on);
            cells[2] = json!(id);
            cells
        };
        let keyset = KeyBound {
            prefix: vec![json!(t), json!(id)],
            after: true,
        };
        assert!(before_bound(&row(t, id), &keyset, &columns));
        assert!(before_bound(
            &row(t, "00000000-0000-0000-0000-000000000000"),
            &keyset,
            &columns
        ));
        // GUIDs compare in SQL Server's order: the last group first.
        assert!(!before_bound(
            &row(t, "00000000-0000-0000-0000-ffffffffffff"),
            &keyset,
            &columns
        ));
        assert!(before_bound(
            &row(t, "ffffffff-ffff-ffff-ffff-000000000000"),
            &keyset,
            &columns
        ));
        assert!(!before_bound(
            &row("2021-06-02T00:00:00Z", id),
            &keyset,
            &columns
        ));
    }

    #[test]
    fn reads_a_chain_of_comparisons_from_the_left_and_counts_it_against_the_recursion_limit() {
        // `(hold eq true) eq false`: hold is false, so the inner comparison is false, and equal.
        assert!(eval("hold eq true eq false"));
        assert!(!eval("hold eq false eq false"));
        let at_limit = format!("hold{}", " eq true".repeat(101));
        assert!(parse(&at_limit, &Cols).is_ok());
        let over = format!("hold{}", " eq true".repeat(102));
        assert_eq!(error(&over), "The recursion limit has been exceeded.");
    }

    #[test]
    fn reports_syntax_errors_with_positions() {
        assert_eq!(
            error("lastname eq 'O'Bryan'").replace("lastname", "name"),
            "There is an unterminated literal at position 21 in 'name eq 'O'Bryan''."
        );
        assert_eq!(
            error("name eq"),
            "Expression expected at position 7 in 'name eq'."
        );
        assert_eq!(
            error("name eqq 'x'"),
            "Syntax error at position 5 in 'name eqq 'x''."
        );
        assert_eq!(
            error("(name eq 'x'"),
            "')' or operator expected at position 12 in '(name eq 'x''."
        );
        assert!(error("name eq 'x' #").starts_with("Syntax error at position 12"));
    }

    #[test]
    fn rejects_ill_typed_comparisons_and_unknown_names() {
        assert!(error("employees eq 'many'").contains("incompatible types"));
        assert!(error("nme eq 'x'").contains("Could not find a property named 'nme'"));
        assert!(error("tolower(name) eq 'x'").contains("unknown function"));
        assert!(error("contains(employees,'1')").contains("No function signature"));
        assert!(error("name").contains("single boolean value"));
        assert!(error("not name").contains("unary operator"));
        assert!(error("name eq 'x' AND hold").starts_with("Syntax error"));
    }
}
