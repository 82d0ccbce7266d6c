//! `$orderby` for a trigger: the order of the rows one poll returns.
//!
//! Which changes fire, and in which order they are published, is the cursor's business (a user order
//! would let changes slip past it). `$orderby` sorts what one poll returns, as the original connector's
//! option did: nulls first, text case-insensitively, as Dataverse orders.

use std::cmp::Ordering;

use serde_json::Value;

use crate::CrmError;

pub(super) fn sort(rows: &mut [Value], orderby: &str) -> Result<(), CrmError> {
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
                    format!("'{other}' is not a direction: use asc or desc after '{column}'"),
                ));
            }
        };
        if column.is_empty() || words.next().is_some() {
            return Err(CrmError::invalid(
                "$orderby",
                format!("'{orderby}' is not 'column [asc|desc], ...'"),
            ));
        }
        keys.push((column.to_owned(), descending));
    }
    rows.sort_by(|a, b| {
        for (column, descending) in &keys {
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
    Ok(())
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
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
        sort(&mut rows, "n desc, name").unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["delta", "Alpha", "beta", "gamma"]);
        assert!(sort(&mut rows, "name sideways").is_err());
    }
}
