//! Recursive descent from tokens to a [`Node`] tree.
//!
//! Precedence is `OData`'s: `not` binds tightest, then the comparisons, then `and`, then `or`. The
//! grammar is narrower than `OData`'s on purpose: a comparison takes a column or a literal on each
//! side, and `not` takes a parenthesis or a function. Everything else `OData` allows there (`not a eq
//! b`, which means `(not a) eq b`; `(a eq b) eq true`; `a eq b eq c`; a bare boolean column) is
//! either refused by Dataverse's type checks or evaluated by rules it does not document, so it is
//! refused here by name rather than given a meaning that might differ.

use super::lexer::{Lexer, Tok, Token};
use super::like::{Pattern, StrFn};
use super::{FilterError, Literal, MAX_DEPTH, Node, Op, Operand};

/// A parsed filter and the columns it reads, in first-seen order.
pub(super) fn parse(text: &str) -> Result<(Node, Vec<String>), FilterError> {
    let mut lexer = Lexer::new(text);
    let token = lexer.next_token()?;
    let mut parser = Parser {
        text,
        lexer,
        token,
        depth: 0,
        columns: Vec::new(),
    };
    let root = parser.or()?;
    if parser.token.tok != Tok::End {
        let expected = if parser.token.tok == Tok::Close {
            "the end of the filter (this ')' closes nothing)"
        } else {
            "'and', 'or' or the end of the filter"
        };
        return Err(parser.syntax(expected));
    }
    Ok((root, parser.columns))
}

#[derive(Debug)]
struct Parser<'a> {
    text: &'a str,
    lexer: Lexer<'a>,
    /// The next token, not yet consumed.
    token: Token,
    depth: usize,
    columns: Vec<String>,
}

/// What a primary expression turned out to be.
enum Primary {
    Condition(Node),
    Value(Spanned),
}

/// An operand and where it was written.
struct Spanned {
    operand: Operand,
    pos: usize,
    start: usize,
    end: usize,
}

/// Operators `OData` has and Dataverse's `$filter` does not.
const OTHER_OPERATORS: [&str; 8] = ["has", "in", "add", "sub", "mul", "div", "divby", "mod"];

impl Parser<'_> {
    /// Consumes the current token and returns it.
    fn advance(&mut self) -> Result<Token, FilterError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.token, next))
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(&self.token.tok, Tok::Word(w) if w == word)
    }

    /// The filter's text between two byte offsets taken from tokens.
    fn quote(&self, start: usize, end: usize) -> String {
        self.text.get(start..end).unwrap_or_default().to_owned()
    }

    fn syntax(&self, expected: &'static str) -> FilterError {
        FilterError::Syntax {
            position: self.token.pos,
            expected,
            found: self.token.describe(self.text),
        }
    }

    fn unsupported(position: usize, construct: String) -> FilterError {
        FilterError::Unsupported {
            position,
            construct,
        }
    }

    /// Runs `parse` one nesting level deeper. The cap keeps a hostile `((((...` from exhausting the
    /// stack; evaluating and dropping the tree recurse no deeper than parsing it did.
    fn nested<T>(
        &mut self,
        position: usize,
        parse: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(FilterError::TooDeep {
                position,
                limit: MAX_DEPTH,
            });
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// `a or b or ...`, kept as one node so a long chain makes a wide tree, not a deep one.
    fn or(&mut self) -> Result<Node, FilterError> {
        let first = self.and()?;
        if !self.at_word("or") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.at_word("or") {
            self.advance()?;
            terms.push(self.and()?);
        }
        Ok(Node::Or(terms))
    }

    fn and(&mut self) -> Result<Node, FilterError> {
        let first = self.condition(true)?;
        if !self.at_word("and") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.at_word("and") {
            self.advance()?;
            terms.push(self.condition(true)?);
        }
        Ok(Node::And(terms))
    }

    /// A `not`, a parenthesis, a function call or (when `comparison`) a comparison.
    fn condition(&mut self, comparison: bool) -> Result<Node, FilterError> {
        if self.at_word("not") {
            let not = self.advance()?;
            let inner = self.nested(not.pos, |p| p.condition(false))?;
            return Ok(Node::Not(Box::new(inner)));
        }
        match self.primary()? {
            Primary::Condition(node) => {
                self.refuse_operator("comparing the result of a condition with a value")?;
                Ok(node)
            }
            Primary::Value(value) if comparison => self.comparison(value),
            Primary::Value(value) => Err(Self::unsupported(
                value.pos,
                "'not' directly before a value: OData reads `not a eq b` as `(not a) eq b`; \
                 write `not (a eq b)`"
                    .to_owned(),
            )),
        }
    }

    /// Refuses an operator at the cursor, where only `and`, `or`, `)` or the end may follow.
    fn refuse_operator(&self, what: &str) -> Result<(), FilterError> {
        if let Tok::Word(word) = &self.token.tok {
            if Op::from_word(word).is_some() {
                return Err(Self::unsupported(self.token.pos, what.to_owned()));
            }
            if OTHER_OPERATORS.contains(&word.as_str()) {
                return Err(Self::unsupported(
                    self.token.pos,
                    format!("the '{word}' operator"),
                ));
            }
        }
        Ok(())
    }

    fn comparison(&mut self, left: Spanned) -> Result<Node, FilterError> {
        let op = match &self.token.tok {
            Tok::Word(word) => Op::from_word(word),
            _ => None,
        };
        let Some(op) = op else {
            self.refuse_operator("a comparison operator")?;
            let ends_condition = matches!(self.token.tok, Tok::End | Tok::Close)
                || self.at_word("and")
                || self.at_word("or");
            if ends_condition {
                return Err(Self::unsupported(
                    left.pos,
                    format!(
                        "'{}' used as a condition on its own; compare it with eq or ne",
                        self.quote(left.start, left.end)
                    ),
                ));
            }
            return Err(self.syntax("a comparison operator (eq, ne, gt, ge, lt, le)"));
        };
        self.advance()?;
        let right = match self.primary()? {
            Primary::Value(right) => right,
            Primary::Condition(_) => {
                return Err(Self::unsupported(
                    left.pos,
                    "comparing a value with the result of a condition".to_owned(),
                ));
            }
        };
        let is_null = |s: &Spanned| matches!(s.operand, Operand::Literal(Literal::Null));
        if op.is_ordering() && (is_null(&left) || is_null(&right)) {
            // Dataverse's condition operators take no null for an ordering, and the OData rules
            // (null ge null is true) may not be what it does.
            return Err(Self::unsupported(
                left.pos,
                "an ordering comparison (gt, ge, lt, le) with null".to_owned(),
            ));
        }
        self.refuse_operator("a chain of comparisons such as `a eq b eq c`")?;
        Ok(Node::Compare {
            op,
            left: left.operand,
            right: right.operand,
            text: self.quote(left.start, right.end),
        })
    }

    fn primary(&mut self) -> Result<Primary, FilterError> {
        let token = self.advance()?;
        let literal = |literal| {
            Ok(Primary::Value(Spanned {
                operand: Operand::Literal(literal),
                pos: token.pos,
                start: token.start,
                end: token.end,
            }))
        };
        match token.tok.clone() {
            Tok::Open => {
                let inner = self.nested(token.pos, Self::or)?;
                if self.token.tok != Tok::Close {
                    return Err(FilterError::Syntax {
                        position: self.token.pos,
                        expected: "')' to close the parenthesis opened earlier",
                        found: self.token.describe(self.text),
                    });
                }
                self.advance()?;
                Ok(Primary::Condition(inner))
            }
            Tok::Str(s) => literal(Literal::Text(s)),
            Tok::Number(n) => literal(Literal::Number(n)),
            Tok::Guid(g) => literal(Literal::Guid(g)),
            Tok::DateTime(t) => literal(Literal::DateTime(t)),
            Tok::Date(d) => literal(Literal::Date(d)),
            Tok::Word(word) => self.word(&word, &token),
            Tok::Close | Tok::Comma | Tok::End => Err(FilterError::Syntax {
                position: token.pos,
                expected: "a value or a condition",
                found: token.describe(self.text),
            }),
        }
    }

    /// A word where a value or condition is expected.
    fn word(&mut self, word: &str, token: &Token) -> Result<Primary, FilterError> {
        let pos = token.pos;
        if word.starts_with('@') {
            return Err(Self::unsupported(
                pos,
                format!("the parameter alias '{word}'; substitute its value into the filter"),
            ));
        }
        if word.starts_with('$') {
            return Err(Self::unsupported(
                pos,
                format!("the OData variable '{word}'"),
            ));
        }
        if let Some((_, last)) = word.rsplit_once('/') {
            let construct = if matches!(last, "any" | "all") {
                format!("the lambda operator '{word}' over a related collection")
            } else {
                format!("the navigation path '{word}': an image holds only the row's own columns")
            };
            return Err(Self::unsupported(pos, construct));
        }
        if word.contains('.') {
            let construct = if word.starts_with("Microsoft.Dynamics.CRM.") {
                format!("the Dataverse query function '{word}'")
            } else {
                format!("the qualified name '{word}'")
            };
            return Err(Self::unsupported(pos, construct));
        }
        if matches!(word, "and" | "or" | "not")
            || Op::from_word(word).is_some()
            || OTHER_OPERATORS.contains(&word)
        {
            return Err(FilterError::Syntax {
                position: pos,
                expected: "a value or a condition",
                found: format!("'{word}'"),
            });
        }
        if self.token.tok == Tok::Open {
            return self.function(word, token);
        }
        let literal = match word {
            "null" => Some(Literal::Null),
            "true" => Some(Literal::Bool(true)),
            "false" => Some(Literal::Bool(false)),
            _ => None,
        };
        let operand = if let Some(literal) = literal {
            Operand::Literal(literal)
        } else if matches!(word, "INF" | "NaN") {
            return Err(Self::unsupported(
                pos,
                format!("the floating-point literal '{word}'"),
            ));
        } else {
            if !self.columns.iter().any(|c| c == word) {
                self.columns.push(word.to_owned());
            }
            Operand::Column(word.to_owned())
        };
        Ok(Primary::Value(Spanned {
            operand,
            pos,
            start: token.start,
            end: token.end,
        }))
    }

    /// `contains(column,'value')` and its siblings; the cursor is on the `(`.
    fn function(&mut self, name: &str, token: &Token) -> Result<Primary, FilterError> {
        let func = match name {
            "contains" => StrFn::Contains,
            "startswith" => StrFn::StartsWith,
            "endswith" => StrFn::EndsWith,
            _ => {
                return Err(Self::unsupported(
                    token.pos,
                    format!("the function '{name}'"),
                ));
            }
        };
        self.advance()?;
        let Primary::Value(Spanned {
            operand: Operand::Column(column),
            ..
        }) = self.primary()?
        else {
            return Err(Self::unsupported(
                token.pos,
                format!("{name}() whose first argument is not a column"),
            ));
        };
        if self.token.tok != Tok::Comma {
            return Err(self.syntax("',' and the value to look for"));
        }
        self.advance()?;
        let value_pos = self.token.pos;
        let Primary::Value(Spanned {
            operand: Operand::Literal(Literal::Text(value)),
            ..
        }) = self.primary()?
        else {
            return Err(Self::unsupported(
                value_pos,
                format!("{name}() whose second argument is not a string literal"),
            ));
        };
        if self.token.tok != Tok::Close {
            return Err(self.syntax("')' to end the function's arguments"));
        }
        let close = self.advance()?;
        let pattern = Pattern::new(func, &value).map_err(|why| {
            Self::unsupported(
                value_pos,
                format!("{why} in the {name}() value, which SQL Server's LIKE leaves undefined"),
            )
        })?;
        Ok(Primary::Condition(Node::Like {
            func,
            column,
            pattern,
            text: self.quote(token.start, close.end),
        }))
    }
}
