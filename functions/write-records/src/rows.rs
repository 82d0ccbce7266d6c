//! One input row made into a bulk target: annotations dropped, and for an update or upsert the row
//! it names, by its primary id column or by the alternate key's columns (`key`).

use connector::CrmError;
use dataverse::{AlternateKey, Table, key_reference};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Where a row came from: its position in `rows` or `Items` (from 0), or its line in the S3
/// object (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Row(u64),
    Line(u64),
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Created,
    Updated,
    Upserted,
    Failed,
    /// Sent, and no answer came that says whether it was written.
    Unknown,
    /// Not sent: the invocation stopped before it (see `stopped` and `next_row`/`next_line`).
    NotAttempted,
}

/// Why a row failed: the `Crm.*` type and the message, as an invocation's error would carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RowError {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

/// The longest message kept per row, in bytes of its JSON text (escapes included): thousands
/// of failed rows must still fit in one answer, and a message of quotes or control characters
/// escapes to up to six times its length.
const ROW_MESSAGE_BYTES: usize = 300;

/// The bytes `text` takes inside a JSON string, as `serde_json` writes it.
fn escaped_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len() * 6, |json| json.len() - 2)
}

impl RowError {
    pub(crate) fn of(error: &CrmError) -> Self {
        let mut message = error.message();
        if escaped_len(&message) > ROW_MESSAGE_BYTES {
            let ellipsis = escaped_len("…");
            let mut kept = 0;
            let mut end = 0;
            let mut buffer = [0; 4];
            for (at, c) in message.char_indices() {
                let width = escaped_len(c.encode_utf8(&mut buffer));
                if kept + width + ellipsis > ROW_MESSAGE_BYTES {
                    break;
                }
                kept += width;
                end = at + c.len_utf8();
            }
            message.truncate(end);
            message.push('…');
        }
        Self {
            kind: error.error_type(),
            message,
        }
    }
}

/// One row's outcome, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<u64>,
    pub(crate) status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<RowError>,
}

impl Outcome {
    pub(crate) fn new(at: At, status: Status) -> Self {
        let (row, line) = match at {
            At::Row(n) => (Some(n), None),
            At::Line(n) => (None, Some(n)),
        };
        Self {
            row,
            line,
            status,
            id: None,
            key: None,
            error: None,
        }
    }

    pub(crate) fn failed(at: At, error: &CrmError) -> Self {
        Self {
            error: Some(RowError::of(error)),
            ..Self::new(at, Status::Failed)
        }
    }
}

/// A row ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) at: At,
    /// The columns, as the bulk message's target.
    pub(crate) columns: Map<String, Value>,
    /// The row's id, when the row gives it.
    pub(crate) id: Option<Uuid>,
    /// The alternate key naming the row, when `key` does.
    pub(crate) key: Option<Map<String, Value>>,
}

/// How rows name the row they write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming<'a> {
    /// A create: the row is new (an id it gives is the new row's).
    New,
    /// An update or upsert by the table's primary id column.
    Id,
    /// An update or upsert by these alternate key columns.
    Key(&'a [String]),
}

/// Whether a member is an annotation a read returned (`@odata.etag`, `x@OData.Community...`)
/// rather than a column to write. Bindings (`x@odata.bind`) are kept: they are how a lookup is set.
fn is_annotation(name: &str) -> bool {
    match name.find('@') {
        None => false,
        Some(0) => true,
        Some(at) => !name[at..].eq_ignore_ascii_case("@odata.bind"),
    }
}

/// The field a row's problem is reported under.
pub(crate) fn field(at: At) -> String {
    match at {
        At::Row(n) => format!("rows[{n}]"),
        At::Line(n) => format!("input line {n}"),
    }
}

/// Makes `value` into a target for `table`. A row that cannot be one fails on its own with
/// `Crm.InvalidInput`, and nothing is sent for it.
pub(crate) fn prepare(
    at: At,
    value: Value,
    table: &Table,
    naming: Naming<'_>,
) -> Result<Target, CrmError> {
    let Value::Object(mut columns) = value else {
        return Err(CrmError::invalid(
            field(at),
            "must be a JSON object of column values",
        ));
    };
    columns.retain(|name, _| !is_annotation(name));
    if columns.is_empty() {
        return Err(CrmError::invalid(
            field(at),
            "names no column to write (annotations such as @odata.etag are left out)",
        ));
    }
    let primary = &table.primary_id_attribute;
    let id = match columns.get(primary) {
        Some(Value::String(text)) if text.len() == 36 => Uuid::try_parse(text).ok(),
        _ => None,
    };
    if columns.get(primary).is_some_and(|v| !v.is_null()) && id.is_none() {
        return Err(CrmError::invalid(
            field(at),
            format!("its {primary} must be a GUID such as 00000000-0000-0000-0000-000000000000"),
        ));
    }
    let key = match naming {
        Naming::New => None,
        Naming::Id => {
            if id.is_none() {
                return Err(CrmError::invalid(
                    field(at),
                    format!(
                        "names no row: give its {primary}, or name an alternate key's columns in key"
                    ),
                ));
            }
            None
        }
        Naming::Key(names) => {
            let mut values = Map::new();
            for name in names {
                match columns.get(name) {
                    Some(value) if !value.is_null() => {
                        values.insert(name.clone(), value.clone());
                    }
                    _ => {
                        return Err(CrmError::invalid(
                            field(at),
                            format!("names no row: it has no value for the key column {name}"),
                        ));
                    }
                }
            }
            let key = AlternateKey::from_json(&values)
                .map_err(|e| CrmError::invalid(field(at), format!("its key: {e}")))?;
            columns.insert(
                "@odata.id".into(),
                Value::String(key_reference(table, &key)),
            );
            Some(key.to_json())
        }
    };
    Ok(Target {
        at,
        columns,
        id,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            logical_name: "account".into(),
            entity_set_name: "accounts".into(),
            primary_id_attribute: "accountid".into(),
            primary_name_attribute: Some("name".into()),
            change_tracking_enabled: false,
        }
    }

    fn field_of(result: Result<Target, CrmError>) -> String {
        match result {
            Err(CrmError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drops_what_a_read_returned_besides_the_columns_and_keeps_bindings() {
        let row = serde_json::json!({
            "@odata.etag": "W/\"1\"", "name": "a",
            "_parentaccountid_value@OData.Community.Display.V1.FormattedValue": "x",
            "parentaccountid@odata.bind": "/accounts(3f2504e0-4f89-41d3-9a0c-0305e82c3301)"
        });
        let target = prepare(At::Row(0), row, &table(), Naming::New).unwrap();
        let names: Vec<&str> = target.columns.keys().map(String::as_str).collect();
        assert_eq!(names, ["name", "parentaccountid@odata.bind"]);
    }

    #[test]
    fn an_update_must_name_its_row_by_id_or_by_the_key_columns() {
        let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        assert_eq!(
            field_of(prepare(
                At::Row(3),
                serde_json::json!({"name": "a"}),
                &table(),
                Naming::Id
            )),
            "rows[3]"
        );
        assert_eq!(
            field_of(prepare(
                At::Line(7),
                serde_json::json!({"accountid": "x", "name": "a"}),
                &table(),
                Naming::New
            )),
            "input line 7"
        );
        let by_id = prepare(
            At::Row(0),
            serde_json::json!({"accountid": id, "name": "a"}),
            &table(),
            Naming::Id,
        )
        .unwrap();
        assert_eq!(by_id.id.unwrap().to_string(), id);
        let columns = ["accountnumber".to_owned()];
        assert_eq!(
            field_of(prepare(
                At::Row(1),
                serde_json::json!({"name": "a"}),
                &table(),
                Naming::Key(&columns)
            )),
            "rows[1]"
        );
        let by_key = prepare(
            At::Row(1),
            serde_json::json!({"accountnumber": "A-1", "name": "a"}),
            &table(),
            Naming::Key(&columns),
        )
        .unwrap();
        assert_eq!(by_key.columns["@odata.id"], "accounts(accountnumber='A-1')");
        assert_eq!(by_key.key.unwrap()["accountnumber"], "A-1");
        assert_eq!(
            field_of(prepare(
                At::Row(2),
                serde_json::json!([1]),
                &table(),
                Naming::New
            )),
            "rows[2]"
        );
    }

    #[test]
    fn a_row_error_keeps_its_type_and_a_short_message() {
        let error = CrmError::invalid("rows[1]", "x".repeat(2_000));
        let row = RowError::of(&error);
        assert_eq!(row.kind, "Crm.InvalidInput");
        assert!(
            row.message.len() <= ROW_MESSAGE_BYTES,
            "{}",
            row.message.len()
        );
        // Quotes and control characters escape to two and six bytes: the cap is on the escaped
        // text, what the answer carries.
        for text in [
            "\"".repeat(2_000),
            "\u{1}".repeat(2_000),
            "a\"\n\u{1f}é".repeat(500),
        ] {
            let row = RowError::of(&CrmError::invalid("rows[1]", text));
            let json = serde_json::to_string(&row.message).unwrap();
            assert!(json.len() - 2 <= ROW_MESSAGE_BYTES, "{}", json.len());
            assert!(json.len() - 2 > ROW_MESSAGE_BYTES - 8, "{}", json.len());
            assert!(row.message.ends_with('…'));
        }
        // A short message is kept whole.
        let short = RowError::of(&CrmError::invalid("rows[1]", "\"quoted\""));
        assert!(!short.message.ends_with('…'));
    }
}
