//! Entries of a change-tracking delta: changed rows and `$deletedEntity` tombstones.

use std::borrow::Cow;

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

// `Cow`, because a string with an escape (`\/`) cannot be borrowed from the entry.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "@odata.context", borrow, default)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// Tells a tombstone (`{"@odata.context": ".../$deletedEntity", "id", "reason": "deleted"}`) from a row.
/// The context decides when there is one; `reason` only without it (`odata.metadata=none`), since a
/// row may well have columns of its own named like a tombstone's.
pub fn classify(entry: Box<RawValue>) -> Change {
    let tombstone = serde_json::from_str::<Probe<'_>>(entry.get())
        .ok()
        .filter(|p| match &p.context {
            Some(context) => context.ends_with("/$deletedEntity"),
            None => p.reason.as_deref() == Some("deleted"),
        })
        .and_then(|p| p.id.and_then(|id| Uuid::parse_str(&id).ok()));
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

    #[test]
    fn the_context_decides_even_when_escaped_or_when_a_row_looks_like_a_tombstone() {
        let escaped = raw(
            r#"{"@odata.context":"https:\/\/o\/api\/data\/v9.2\/$metadata#accounts\/$deletedEntity","id":"2e451703-c686-e711-80e5-00155db19e6d","reason":"deleted"}"#,
        );
        assert!(matches!(classify(escaped), Change::Deleted(_)));
        let lookalike = raw(
            r#"{"@odata.context":"https://o/api/data/v9.2/$metadata#new_things/$entity","id":"2e451703-c686-e711-80e5-00155db19e6d","reason":"deleted"}"#,
        );
        assert!(matches!(classify(lookalike), Change::Upserted(_)));
        let bare = raw(r#"{"id":"2e451703-c686-e711-80e5-00155db19e6d","reason":"deleted"}"#);
        assert!(matches!(classify(bare), Change::Deleted(_)));
    }
}
