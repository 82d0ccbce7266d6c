//! `$orderby` for a trigger: the order of the rows one poll returns.
//!
//! Which changes fire, and in which order they are published, is the cursor's business (a user order
//! would let changes slip past it). `$orderby` sorts what one poll returns, as the original connector's
//! option did: nulls first, text case-insensitively, as Dataverse orders.

use std::cmp::Ordering;

use serde_json::Value;

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
        let valid_column = !column.is_empty()
            && column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_column || words.next().is_some() {
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

pub(super) fn sort(rows: &mut [Value], keys: &OrderBy) {
    rows.sort_by(|a, b| {
        for (column, descending) in keys {
            let ordering = compare(a.get(column), b.get(column));
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
        let mut rows = vec![
            json!({"name": "beta", "n": 2}),
            json!({"name": "Alpha", "n": 2}),
            json!({"name": "gamma", "n": null}),
            json!({"name": "delta", "n": 5}),
        ];
        sort(&mut rows, &parse("n desc, name").unwrap());
        let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["delta", "Alpha", "beta", "gamma"]);
        assert!(parse("name sideways").is_err());
        assert!(parse("name) desc").is_err());
    }
}
