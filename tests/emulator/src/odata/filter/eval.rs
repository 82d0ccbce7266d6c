//! Evaluation: whether one row matches a parsed filter.
//!
//! This runs once per row, where everything before it runs once per request, and its rules are
//! Dataverse's rather than textbook SQL's: text compares case-insensitively, GUIDs in SQL Server's
//! order, and `ne` holds against a blank column. Keeping those rules in one place matters beyond
//! `$filter`: sorting uses [`compare_text`] as well, so that a page's order and its filter agree on
//! which texts are equal.

use serde_json::Value;

use super::{CmpOp, Expr, Lit, Pattern, Work};
use crate::schema::Edm;

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
pub(super) fn truth(expr: &Expr, row: &[Value]) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
