//! What a poll sends out: one event per change (`docs/events.md`), and the answer listing them, each
//! kept under the limit of where it goes.

use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Kind, ScanError};
use crate::events::Event;

/// Lambda refuses a response over 6 MB: past this budget, returned rows are cut to their id.
const RESPONSE_BUDGET: usize = 5_500_000;
/// EventBridge refuses an entry over 256 KB: past this, an event's record is cut to its id.
const DETAIL_BUDGET: usize = 250_000;

pub(crate) use crate::hex;

/// The event id: stable for the same change, so a redelivery carries the same one. A creation and a
/// deletion happen once per row, so their identity leaves the version out; an update is one version.
/// `id` is the row's id as lower-case hyphenated text.
fn event_id(dataset: &str, table: &str, id: &str, version: Option<u64>, kind: Kind) -> String {
    // The hash of `dataset|table|id|version|kind`, fed piece by piece: one is taken per change, and
    // building the text first cost an allocation each time.
    let mut hasher = Sha256::new();
    let mut number = itoa::Buffer::new();
    for piece in [
        dataset.as_bytes(),
        b"|",
        table.as_bytes(),
        b"|",
        id.as_bytes(),
        b"|",
        version.map_or("", |v| number.format(v)).as_bytes(),
        b"|",
        kind.short().as_bytes(),
    ] {
        hasher.update(piece);
    }
    hex(&hasher.finalize()[..16])
}

/// One change found, as the poll's answer returns it.
#[derive(Debug)]
pub(super) struct Fired {
    pub(super) id: Uuid,
    /// The row as Dataverse sent it, or `{"id": ...}` for a deletion.
    pub(super) row: Box<RawValue>,
    /// The `$orderby` columns' values, to sort the answer by.
    pub(super) sort_keys: Vec<serde_json::Value>,
}

/// `{"<primary id>": "<id>"}`, or with `"truncated": true`: what stands for a row cut for size.
#[derive(Serialize)]
struct KeyOnly<'a> {
    #[serde(flatten)]
    key: std::collections::BTreeMap<&'a str, Uuid>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

fn key_only(primary_id: &str, id: Uuid, truncated: bool) -> Result<Box<RawValue>, ScanError> {
    let key = KeyOnly {
        key: [(primary_id, id)].into(),
        truncated,
    };
    serde_json::value::to_raw_value(&key).map_err(ScanError::Encode)
}

/// `{"id": "<id>"}`: what a deletion returns.
pub(super) fn deletion(id: Uuid) -> Result<Box<RawValue>, ScanError> {
    key_only("id", id, false)
}

/// One change, as its event tells it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    pub(crate) kind: Kind,
    pub(crate) dataset: &'a str,
    pub(crate) table: &'a dataverse::Table,
    pub(crate) id: Uuid,
    /// The row's `versionnumber`; part of an update's identity.
    pub(crate) version: Option<u64>,
    /// `modifiedon`, as Dataverse wrote it.
    pub(crate) changed_on: Option<&'a str>,
    /// The row, in the Web API's shape.
    pub(crate) record: Option<&'a RawValue>,
    /// How the change was seen when not by polling (`"webhook"`); polled events leave it out.
    pub(crate) via: Option<&'static str>,
    /// Which watched columns changed, what they held before, and which of those earlier values
    /// are not given; for updates whose columns are compared, `None` otherwise.
    pub(crate) changes: Option<&'a ColumnChanges>,
}

/// Which watched columns an update changed, for its event.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ColumnChanges {
    /// The columns whose value changed, in a stable order.
    pub(crate) changed: Vec<String>,
    /// Their values before the change; `None` when they are not known.
    pub(crate) previous: Option<serde_json::Map<String, serde_json::Value>>,
    /// Changed columns whose earlier value `previous` leaves out.
    pub(crate) previous_omitted: Vec<String>,
}

/// The event for `change`, its record cut down to its id when EventBridge would refuse the entry.
/// Its `event_id` depends only on what identifies the change, not on how it was seen, so a change
/// both pushed and polled is one event to a consumer that deduplicates.
pub(crate) fn event_for(change: &Change<'_>) -> Result<Event, ScanError> {
    /// The detail, serialised straight from borrowed parts (the record is not copied).
    #[derive(Serialize)]
    struct Detail<'a> {
        event_id: &'a str,
        dataset: &'a str,
        table: &'a str,
        id: &'a str,
        version: Option<&'a str>,
        changed_on: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        record: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        changed: Option<&'a [String]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<&'a serde_json::Map<String, serde_json::Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous_omitted: Option<&'a [String]>,
    }
    // Taken apart whole, so that a field added to `Change` cannot be left out of the detail.
    let Change {
        kind,
        dataset,
        table,
        id,
        version,
        changed_on,
        record,
        via,
        changes,
    } = *change;
    // The id's text is written once, for both the event id and the detail.
    let mut id_buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id_text = &*id.hyphenated().encode_lower(&mut id_buffer);
    let hashed = identity(change, id_text);
    let mut number = itoa::Buffer::new();
    let mut detail = Detail {
        event_id: &hashed,
        dataset,
        table: &table.entity_set_name,
        id: id_text,
        version: version.map(|v| number.format(v)),
        changed_on,
        record,
        truncated: false,
        via,
        changed: changes.map(|c| c.changed.as_slice()),
        previous: changes.and_then(|c| c.previous.as_ref()),
        previous_omitted: changes
            .map(|c| c.previous_omitted.as_slice())
            .filter(|omitted| !omitted.is_empty()),
    };
    // The record, and room for the other fields, all short but the earlier values (bounded by
    // `KEPT_BUDGET` when polled).
    let capacity = record.map_or(0, |r| r.get().len()) + 320;
    let mut text = detail_text(&detail, capacity)?;
    if text.len() > DETAIL_BUDGET {
        let key = key_only(&table.primary_id_attribute, id, false)?;
        detail.record = Some(&key);
        detail.truncated = true;
        text = detail_text(&detail, 320)?;
        if text.len() > DETAIL_BUDGET && detail.previous.is_some() {
            // Earlier values from a large pre-image: the event says which columns changed, and
            // that their earlier values are left out.
            detail.previous = None;
            detail.previous_omitted = detail.changed;
            text = detail_text(&detail, 320)?;
        }
    }
    Ok(Event {
        detail_type: kind.detail_type(),
        detail: text,
    })
}

/// The `event_id` of `change`'s event.
#[cfg(feature = "webhook")]
pub(crate) fn change_id(change: &Change<'_>) -> String {
    let mut id_buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
    identity(change, change.id.hyphenated().encode_lower(&mut id_buffer))
}

/// The event id of `change`, whose id reads `id_text`: a creation and a deletion happen once per
/// row, so only an update's version is part of it.
fn identity(change: &Change<'_>, id_text: &str) -> String {
    let version = if change.kind == Kind::Updated {
        change.version
    } else {
        None
    };
    event_id(
        change.dataset,
        &change.table.entity_set_name,
        id_text,
        version,
        change.kind,
    )
}

/// `detail` as JSON text, in a buffer of `capacity` (enough for it): this runs for every change, and growing
/// the buffer a step at a time cost more than writing it.
fn detail_text(detail: &impl Serialize, capacity: usize) -> Result<String, ScanError> {
    let mut text = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut text, detail).map_err(ScanError::Encode)?;
    // serde_json writes only UTF-8; this check is a fast scan that never fails.
    String::from_utf8(text).map_err(|e| ScanError::Encode(serde::ser::Error::custom(e)))
}

/// The rows to return, each cut down to its id once the answer would outgrow Lambda's limit.
pub(super) fn fit_response(
    fired: Vec<Fired>,
    primary_id: &str,
) -> Result<Vec<Box<RawValue>>, ScanError> {
    let mut used = 0;
    fired
        .into_iter()
        .map(|f| {
            used += f.row.get().len() + 1;
            if used <= RESPONSE_BUDGET {
                Ok(f.row)
            } else {
                key_only(primary_id, f.id, true)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn event_ids_are_stable_per_change() {
        let id = "00000000-0000-0000-0000-000000000007";
        let a = event_id("contoso", "accounts", id, Some(5), Kind::Updated);
        assert_eq!(
            a,
            event_id("contoso", "accounts", id, Some(5), Kind::Updated)
        );
        assert_ne!(
            a,
            event_id("contoso", "accounts", id, Some(6), Kind::Updated)
        );
        assert_ne!(
            a,
            event_id("contoso", "accounts", id, Some(5), Kind::Created)
        );
        assert_eq!(a.len(), 32);
        // Ids already published must not change with the code that computes them: these were
        // computed as the SHA-256 of "contoso|accounts|<id>|5|updated" (and "||created").
        assert_eq!(a, "9df2488fea054c573322d57711726fb3");
        assert_eq!(
            event_id("contoso", "accounts", id, None, Kind::Created),
            "66fa5fcc5f69c9984ee7a11bfafe2508"
        );
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
        // And the published event carries it, beside the id it was computed from.
        let table = table();
        let event = event_for(&Change {
            version: Some(5),
            ..change(Kind::Updated, &table, Uuid::from_u128(7))
        })
        .unwrap();
        let detail: Value = serde_json::from_str(&event.detail).unwrap();
        assert_eq!(detail["event_id"], a.as_str());
        assert_eq!(detail["id"], id);
        assert_eq!(detail["version"], "5");
    }

    fn table() -> dataverse::Table {
        dataverse::Table {
            logical_name: "account".into(),
            entity_set_name: "accounts".into(),
            primary_id_attribute: "accountid".into(),
            primary_name_attribute: None,
            change_tracking_enabled: true,
        }
    }

    /// A polled change of row `id` in dataset `contoso`, with nothing else known.
    fn change(kind: Kind, table: &dataverse::Table, id: Uuid) -> Change<'_> {
        Change {
            kind,
            dataset: "contoso",
            table,
            id,
            version: None,
            changed_on: None,
            record: None,
            via: None,
            changes: None,
        }
    }

    #[test]
    fn oversized_records_are_cut_to_their_id() {
        let record =
            serde_json::value::to_raw_value(&json!({"description": "x".repeat(300_000)})).unwrap();
        let id = Uuid::from_u128(1);
        let table = table();
        let event = event_for(&Change {
            version: Some(3),
            record: Some(&record),
            ..change(Kind::Created, &table, id)
        })
        .unwrap();
        let detail: Value = serde_json::from_str(&event.detail).unwrap();
        assert_eq!(detail["truncated"], true);
        assert_eq!(detail["record"], json!({"accountid": id}));
        assert!(event.size("dynamics.crm") < 256 * 1024);
        let small = event_for(&change(Kind::Deleted, &table, id)).unwrap();
        let detail: Value = serde_json::from_str(&small.detail).unwrap();
        assert!(detail.get("record").is_none());
        assert!(detail.get("truncated").is_none());
        assert_eq!(detail["version"], Value::Null);
    }

    #[test]
    fn the_answer_keeps_rows_whole_until_the_budget_and_ids_after() {
        let big = "y".repeat(RESPONSE_BUDGET / 2);
        let fired = |n: u128| Fired {
            id: Uuid::from_u128(n),
            row: serde_json::value::to_raw_value(
                &json!({"accountid": Uuid::from_u128(n), "d": big}),
            )
            .unwrap(),
            sort_keys: Vec::new(),
        };
        let rows = fit_response(vec![fired(1), fired(2), fired(3)], "accountid").unwrap();
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::from_str(r.get()).unwrap())
            .collect();
        assert!(rows[0].get("d").is_some() && rows[1].get("d").is_none());
        assert_eq!(
            rows[2],
            json!({"accountid": Uuid::from_u128(3), "truncated": true})
        );
    }
}
