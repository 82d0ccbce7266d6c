//! Entries of a change-tracking delta: changed rows and `$deletedEntity` tombstones.

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// One entry of a delta page.
#[derive(Debug)]
pub enum Change {
    /// A created or updated row, in its current state (Dataverse does not say which it was).
    Upserted(Box<RawValue>),
    /// A deleted row; a tombstone carries only the id.
    Deleted(Uuid),
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "@odata.context", borrow, default)]
    context: Option<&'a str>,
    #[serde(default)]
    reason: Option<&'a str>,
    #[serde(default)]
    id: Option<&'a str>,
}

/// Tells a tombstone (`{"@odata.context": ".../$deletedEntity", "id", "reason": "deleted"}`) from a row.
pub fn classify(entry: Box<RawValue>) -> Change {
    let tombstone = serde_json::from_str::<Probe<'_>>(entry.get())
        .ok()
        .filter(|p| {
            p.context.is_some_and(|c| c.ends_with("$deletedEntity")) || p.reason == Some("deleted")
        })
        .and_then(|p| p.id.and_then(|id| Uuid::parse_str(id).ok()));
    match tombstone {
        Some(id) => Change::Deleted(id),
        None => Change::Upserted(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn recognises_tombstones_and_rows() {
        let tombstone = raw(
            r#"{"@odata.context":"https://o/api/data/v9.2/$metadata#accounts/$deletedEntity","id":"2e451703-c686-e711-80e5-00155db19e6d","reason":"deleted"}"#,
        );
        assert!(
            matches!(classify(tombstone), Change::Deleted(id) if id.to_string() == "2e451703-c686-e711-80e5-00155db19e6d")
        );
        let row = raw(
            r#"{"@odata.etag":"W/\"1\"","name":"x","accountid":"2e451703-c686-e711-80e5-00155db19e6d"}"#,
        );
        assert!(matches!(classify(row), Change::Upserted(_)));
    }
}
