//! `$orderby` for a trigger: the order of the rows one poll returns.
//!
//! Which changes fire, and in which order they are published, is the cursor's business (a user order
//! would let changes slip past it). `$orderby` sorts what one poll returns, as the original connector's
//! option did: nulls first, text case-insensitively, as Dataverse orders.

use std::cmp::Ordering;

use serde_json::Value;

use super::event::Fired;
use crate::CrmError;

/// `$orderby` parsed: columns and whether each is descending.
pub type OrderBy = Vec<(String, bool)>;

/// Parses `column [asc|desc], ...`; called when the payload is read, before anything is fetched.
pub(super) fn parse(orderby: &str) -> Result<OrderBy, CrmError> {
    let mut keys = Vec::new();
    for item in orderby.split(',') {
        let mut words = item.split_whitespace();
        let column = words.next().unwrap_or_default();
        let descending = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(CrmError::invalid(
                    "$orderby",
                    format!(
                        "'{}' is not a direction: use asc or desc after '{}'",
                        crate::excerpt(other),
                        crate::excerpt(column)
                    ),
                ));
            }
        };
        if !dataverse::is_schema_name(column) || words.next().is_some() {
            return Err(CrmError::invalid(
                "$orderby",
                format!(
                    "'{}' is not 'column [asc|desc], ...'",
                    crate::excerpt(orderby)
                ),
            ));
        }
        keys.push((column.to_owned(), descending));
    }
    Ok(keys)
}

pub(super) fn sort(rows: &mut [Fired], keys: &OrderBy) {
    // Each row carries its `$orderby` values in the order the keys are listed.
    rows.sort_by(|a, b| {
        for (i, (_, descending)) in keys.iter().enumerate() {
            let ordering = compare(a.sort_keys.get(i), b.sort_keys.get(i));
            if ordering != Ordering::Equal {
                return if *descending {
                    ordering.reverse()
                } else {
                    ordering
                };
            }
        }
        Ordering::Equal
    });
}

/// A total order over JSON values: by kind first (null, booleans, numbers, text, the rest), then
/// within a kind, text case-insensitively.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) | Value::Object(_) => 4,
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x
            .to_lowercase()
            .cmp(&y.to_lowercase())
            .then_with(|| x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(_) | Value::Object(_), Value::Array(_) | Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sorts_by_several_keys_with_nulls_first() {
        let row = |n: u128, keys: [Value; 2]| Fired {
            id: uuid::Uuid::from_u128(n),
            row: serde_json::value::to_raw_value(&json!({})).unwrap(),
            sort_keys: keys.to_vec(),
        };
        let mut rows = vec![
            row(1, [json!(2), json!("beta")]),
            row(2, [json!(2), json!("Alpha")]),
            row(3, [json!(null), json!("gamma")]),
            row(4, [json!(5), json!("delta")]),
        ];
        sort(&mut rows, &parse("n desc, name").unwrap());
        let order: Vec<u128> = rows.iter().map(|r| r.id.as_u128()).collect();
        assert_eq!(order, [4, 2, 1, 3]);
        assert!(parse("name sideways").is_err());
        assert!(parse("name) desc").is_err());
    }
}
