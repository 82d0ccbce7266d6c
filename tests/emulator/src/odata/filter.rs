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
//!
//! The stages live in submodules: `lexer` makes tokens, `parser` builds and type-checks the tree,
//! `eval` tests a row against it, `like` matches the string functions' patterns, and `seek` derives
//! where in a sorted table the matching rows can start. This module holds the types they share and
//! the entry points the service calls.

mod eval;
mod lexer;
mod like;
mod parser;
mod seek;

pub use eval::{compare_text, matches};
pub use like::Pattern;
pub use seek::{KeyBound, before_bound, key_bound};

use crate::reply::Fail;
use crate::schema::Edm;

/// Resolves a property name to a column, so the parser can check types while it parses.
pub trait Properties {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail>;
    /// Metadata queries refuse string functions.
    fn allows_string_functions(&self) -> bool {
        true
    }
    /// Metadata properties may be enums, compared with literals such as
    /// `Microsoft.Dynamics.CRM.AttributeRequiredLevel'ApplicationRequired'`; rows have none.
    fn allows_enum_literals(&self) -> bool {
        false
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
/// as the filter's nesting, which the parser bounds (see [`MAX_DEPTH`](parser::MAX_DEPTH)): walking,
/// evaluating and dropping it recurse no deeper than that, however long the chain.
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
    parser::parse_counting(text, props, &Work::default())
}

/// `FetchXML`'s `like` family as an expression: column `column` matched against `pattern` as SQL
/// `LIKE` matches it, with `func` adding the `%` as `$filter`'s functions do, or with none added
/// (`None`) for a `like` pattern written whole.
pub fn like(column: usize, edm: Edm, pattern: &str, func: Option<StrFn>) -> Expr {
    let work = Work::default();
    let pattern = match func {
        Some(func) => Pattern::new(pattern, func, &work),
        None => Pattern::whole(pattern, &work),
    };
    Expr::Like(Box::new(Expr::Prop(column, edm)), pattern)
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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
