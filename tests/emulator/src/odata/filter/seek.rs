//! Index seeks: what a filter says about where its rows start.
//!
//! A client paging through a large table sends the keyset form of a filter (`(a, b) > (x, y)`,
//! written out with `gt`, `eq` and `and`), and the rows it wants begin far into the table's sort
//! order. Rather than test every row before that point, the caller asks this part for a key that no
//! matching row sorts before, and starts there. It is an optimisation and nothing more: a bound may
//! be looser than the filter, never tighter, and every row from it on is still tested with
//! [`matches`](super::matches), so a filter this part does not understand just gets no bound.

use serde_json::Value;

use super::eval::compare_text;
use super::{CmpOp, Expr, Lit};
use crate::schema::Edm;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::odata::filter::parse;
    use crate::odata::filter::tests::Cols;

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
}
