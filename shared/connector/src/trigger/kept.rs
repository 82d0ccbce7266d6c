//! `when-record-updated` with `columns`: the watched columns' values kept beside each row's
//! fingerprint, so that an event can say which watched columns changed (`changed`) and what they
//! held before (`previous`).
//!
//! Kept per row, as one JSON object: `{"<column>": {"v": <value>}}`, or `{"<column>": {"h": "<hash>"}}`
//! for a value that did not fit the row's budget. A hashed value still tells whether the column
//! changed, but not what it was: such a column is named in `previous_omitted` instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The most bytes of values kept per row (their JSON text). DynamoDB would take a hundred times more
/// (400 KB an item), but reads and writes are paid by size: 3,500 bytes of values, with the item's
/// key, fingerprint, expiry and a dozen column names, stay under 4 KB, so reading a row's item
/// costs one strongly consistent read unit and writing it at most four write units. A page of 1,000
/// rows then reads at most 4 MB of kept values, in ten `BatchGetItem` calls. Column names, and the
/// hashes of values that did not fit, come on top.
pub(crate) const KEPT_BUDGET: usize = 3500;

/// One watched column's earlier value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum KeptValue {
    /// The value itself.
    #[serde(rename = "v")]
    Value(Value),
    /// Too large for the budget: a hash of its JSON text.
    #[serde(rename = "h")]
    Hash(String),
}

/// A hash of a value's JSON text: 16 bytes, in hex.
fn hash(text: &str) -> String {
    super::event::hex(&Sha256::digest(text.as_bytes())[..16])
}

/// What is kept of `values` (the watched `columns`' values, in their order): each value whole while
/// the budget lasts, in the columns' order, and hashed after.
pub(super) fn keep(columns: &[String], values: &[Value]) -> String {
    let mut kept = BTreeMap::new();
    let mut used = 0;
    for (column, value) in columns.iter().zip(values) {
        let text = value.to_string();
        let entry = if used + text.len() <= KEPT_BUDGET {
            used += text.len();
            KeptValue::Value(value.clone())
        } else {
            KeptValue::Hash(hash(&text))
        };
        kept.insert(column.as_str(), entry);
    }
    // A map of strings to JSON values always serialises.
    serde_json::to_string(&kept).unwrap_or_default()
}

/// Which watched columns changed, and what they held before, for an event.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Difference {
    /// The watched columns whose value changed, in the order `columns` names them.
    pub(super) changed: Vec<String>,
    /// Their earlier values; `None` when nothing was kept for the row (first seen, or kept by a
    /// version that stored the fingerprint alone).
    pub(super) previous: Option<Map<String, Value>>,
    /// Changed columns whose earlier value `previous` leaves out: kept as a hash only, or not kept.
    pub(super) omitted: Vec<String>,
}

/// Compares the values now with what was kept. Without anything kept, every watched column may
/// have changed, so all are named and there is no `previous`.
pub(super) fn difference(columns: &[String], values: &[Value], kept: Option<&str>) -> Difference {
    let earlier = kept.and_then(|text| {
        serde_json::from_str::<BTreeMap<String, KeptValue>>(text)
            .inspect_err(|error| tracing::warn!(%error, "kept values cannot be read; the event has no previous values"))
            .ok()
    });
    let Some(earlier) = earlier else {
        return Difference {
            changed: columns.to_vec(),
            previous: None,
            omitted: Vec::new(),
        };
    };
    let mut difference = Difference {
        previous: Some(Map::new()),
        ..Difference::default()
    };
    for (column, now) in columns.iter().zip(values) {
        let (changed, before) = match earlier.get(column) {
            Some(KeptValue::Value(before)) => (before != now, Some(before)),
            Some(KeptValue::Hash(before)) => (*before != hash(&now.to_string()), None),
            // A column watched since the row was last kept.
            None => (true, None),
        };
        if !changed {
            continue;
        }
        difference.changed.push(column.clone());
        match (before, &mut difference.previous) {
            (Some(before), Some(previous)) => {
                previous.insert(column.clone(), before.clone());
            }
            _ => difference.omitted.push(column.clone()),
        }
    }
    difference
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn names_the_changed_columns_in_their_order_with_their_earlier_values() {
        let watched = columns(&["name", "telephone1", "revenue"]);
        let kept = keep(&watched, &[json!("A"), json!("1"), Value::Null]);
        let now = [json!("A"), json!("2"), json!(5)];
        let difference = difference(&watched, &now, Some(&kept));
        assert_eq!(difference.changed, ["telephone1", "revenue"]);
        assert_eq!(
            difference.previous,
            Some(
                json!({"telephone1": "1", "revenue": null})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        );
        assert!(difference.omitted.is_empty());
    }

    #[test]
    fn without_kept_values_every_column_may_have_changed() {
        let watched = columns(&["name", "telephone1"]);
        let difference = difference(&watched, &[json!("A"), json!("2")], None);
        assert_eq!(difference.changed, watched);
        assert_eq!(difference.previous, None);
    }

    #[test]
    fn a_value_past_the_budget_is_kept_as_a_hash_and_omitted_from_previous() {
        let watched = columns(&["description", "name"]);
        let big = json!("x".repeat(KEPT_BUDGET));
        let kept = keep(&watched, &[big.clone(), json!("A")]);
        assert!(kept.len() < 200, "{kept}");
        let same = difference(&watched, &[big, json!("A")], Some(&kept));
        assert!(
            same.changed.is_empty(),
            "a hash still tells an unchanged value"
        );
        let changed = difference(&watched, &[json!("short"), json!("B")], Some(&kept));
        assert_eq!(changed.changed, ["description", "name"]);
        assert_eq!(changed.omitted, ["description"]);
        assert_eq!(
            changed.previous,
            Some(json!({"name": "A"}).as_object().unwrap().clone())
        );
    }
}
