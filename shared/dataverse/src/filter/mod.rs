//! Evaluates an `OData` `$filter` against one row on the client, the way Dataverse would.
//!
//! Why: a webhook delivers a deleted row's pre-image, and a trigger must decide whether that row
//! matched its `$filter`, the same filter Dataverse evaluates for the polling triggers. Nothing can be
//! asked of the server about a row that no longer exists, so the answer is computed here, and where
//! Dataverse's answer cannot be known exactly the evaluator says so ([`Unknowable`]) instead of
//! guessing. Parsing refuses ([`FilterError`]) what it could never evaluate.
//!
//! Supported: `eq ne gt ge lt le`, `and or not`, parentheses, columns (`_x_value` lookups included),
//! literals (`null`, `true`/`false`, numbers, `'strings'` with `''`, unquoted GUIDs, date-times with an
//! offset, dates), column-to-column comparisons, and `contains`/`startswith`/`endswith` with SQL
//! `LIKE` wildcards live in the value. Refused by name: navigation paths, lambdas, functions other
//! than those three, `Microsoft.Dynamics.CRM.*` query functions, parameter aliases, arithmetic.
//!
//! Also refused, because Dataverse either rejects them or evaluates them by undocumented rules: a
//! bare value as a condition, `not` directly before a comparison, comparing a condition's result,
//! chained comparisons, ordering against `null`, date-times without an offset, `F` literals.
//!
//! The rules, and where they come from ("the emulator" is `tests/emulator/src/odata/filter`, read
//! for its semantics, not shared):
//!
//! - Text compares case-insensitively (Microsoft Learn, "Filter rows using OData": "String filters
//!   are case-insensitive"), trailing spaces aside, and is refused where an accent-insensitive
//!   collation could answer differently (see `text.rs`).
//! - `ne` is true for a null column, `eq null` for an absent one; an ordering against a null column
//!   is false; `not` becomes the opposite operator (see `eval`).
//! - Numbers compare as exact decimals; GUIDs equal case-insensitively and order as SQL Server's
//!   `uniqueidentifier`; date-times as instants; a date against a date-time as midnight UTC (the
//!   emulator's reading).
//!
//! Positions in errors count characters from 0.
//!
//! ```
//! use dataverse::filter::Filter;
//!
//! let filter = Filter::parse("statecode eq 0 and contains(name,'contoso')")?;
//! assert_eq!(filter.columns(), ["statecode", "name"]);
//! let image = serde_json::json!({ "statecode": 0, "name": "Contoso Ltd" });
//! assert_eq!(filter.matches(image.as_object().unwrap()), Ok(true));
//! # Ok::<(), dataverse::filter::FilterError>(())
//! ```

mod eval;
mod lexer;
mod like;
mod parser;
mod text;
mod value;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;

use serde_json::{Map, Value};
use uuid::Uuid;

use like::{Pattern, StrFn};
use value::{Decimal, Instant};

/// How deeply parentheses and `not`s may nest. `OData` parsers have a recursion limit (the emulator
/// uses 100 too); no real filter comes near it, and the cap keeps hostile input off the stack.
const MAX_DEPTH: usize = 100;

/// A parsed `$filter` expression.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
    columns: Vec<String>,
}

impl Filter {
    /// Parses the (URL-decoded) text of a `$filter`; refuses what it cannot evaluate exactly, naming
    /// the construct and its position.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let (root, columns) = parser::parse(text)?;
        Ok(Filter { root, columns })
    }

    /// The column names the expression reads (deduplicated, in first-seen order), so a caller can
    /// check an image holds them: an absent column reads as null.
    pub fn columns(&self) -> Vec<&str> {
        self.columns.iter().map(String::as_str).collect()
    }

    /// Whether `row` (a Web API–shaped object) matches. A column absent from `row` counts as null
    /// (images leave null columns out).
    ///
    /// `Err` when a value cannot be compared exactly (a JSON array or object where a scalar is
    /// needed, a string column against a number literal, text whose order depends on the collation,
    /// ...); the caller then treats the answer as unknown. A part that cannot be decided does not
    /// spoil the whole: `a or b` is true when `a` is, whatever `b` is.
    pub fn matches(&self, row: &Map<String, Value>) -> Result<bool, Unknowable> {
        eval::eval(&self.root, row, false)
    }
}

/// Why a `$filter` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The text is not a filter.
    #[error("syntax error at position {position}: expected {expected}, found {found}")]
    Syntax {
        position: usize,
        expected: &'static str,
        found: String,
    },

    #[error("the string starting at position {position} is never closed (write '' for a quote)")]
    UnterminatedString { position: usize },

    /// A number, date or date-time that is malformed or out of range.
    #[error("invalid {kind} literal '{text}' at position {position}")]
    InvalidLiteral {
        position: usize,
        kind: &'static str,
        text: String,
    },

    /// Valid `OData`, but outside what this evaluator can answer exactly.
    #[error("unsupported at position {position}: {construct}")]
    Unsupported { position: usize, construct: String },

    #[error("the filter nests deeper than {limit} levels at position {position}")]
    TooDeep { position: usize, limit: usize },
}

/// Why a row's match could not be decided. Each names the condition, as written in the filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unknowable {
    /// A column holds a JSON array or object.
    #[error("`{condition}`: column '{column}' holds a JSON {found}, not a single value")]
    NotScalar {
        condition: String,
        column: String,
        found: &'static str,
    },

    /// The two sides are of types Dataverse does not compare (it would have refused the filter, or
    /// the image is not shaped like the Web API's rows).
    #[error("`{condition}` compares {left} with {right}, which Dataverse does not compare")]
    Mismatch {
        condition: String,
        left: String,
        right: String,
    },

    /// The answer depends on the database's collation (accents, punctuation order).
    #[error("`{condition}` depends on the database collation: {reason}")]
    Collation {
        condition: String,
        reason: &'static str,
    },

    /// The answer depends on behaviour Dataverse does not document, or on digits already lost.
    #[error("`{condition}` cannot be decided exactly: {reason}")]
    Inexact {
        condition: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
enum Node {
    /// Two or more terms.
    And(Vec<Node>),
    /// Two or more terms.
    Or(Vec<Node>),
    Not(Box<Node>),
    Compare {
        op: Op,
        left: Operand,
        right: Operand,
        /// The comparison as written, for messages.
        text: String,
    },
    Like {
        func: StrFn,
        column: String,
        pattern: Pattern,
        text: String,
    },
}

#[derive(Debug, Clone)]
enum Operand {
    Column(String),
    Literal(Literal),
}

#[derive(Debug, Clone)]
enum Literal {
    Null,
    Bool(bool),
    Number(Decimal),
    /// A quoted string: text, or a quoted GUID or date, depending on the column.
    Text(String),
    Guid(Uuid),
    DateTime(Instant),
    /// Days since 1970-01-01.
    Date(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn from_word(word: &str) -> Option<Op> {
        Some(match word {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        !matches!(self, Op::Eq | Op::Ne)
    }

    /// The operator Dataverse uses for `not (a op b)`.
    fn negate(self) -> Op {
        match self {
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
            Op::Gt => Op::Le,
            Op::Ge => Op::Lt,
            Op::Lt => Op::Ge,
            Op::Le => Op::Gt,
        }
    }

    /// The operator for `b op a` meaning `a self b`.
    fn flip(self) -> Op {
        match self {
            Op::Eq | Op::Ne => self,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
        }
    }

    /// Whether `a op b` holds when `a` compares to `b` as `order`.
    fn holds(self, order: Ordering) -> bool {
        match self {
            Op::Eq => order.is_eq(),
            Op::Ne => order.is_ne(),
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
        }
    }
}
