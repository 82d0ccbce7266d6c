//! Payloads: the EventBridge envelope, and typed, validated inputs named as in the original connector.
//!
//! A bad payload is a `Crm.InvalidInput` naming the field and the problem, before anything is sent, so
//! nothing a caller writes can end up spliced into a URL.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{CrmError, excerpt};

/// The fields of a `Record Created/Updated/Deleted` event's detail that describe the event rather than
/// ask for anything; an action drops them, so a rule on our own events can target it directly.
const EVENT_FIELDS: [&str; 6] = [
    "event_id",
    "version",
    "changed_on",
    "record",
    "truncated",
    "via",
];

/// Takes the payload out of an EventBridge event (`{"source", "detail-type", "detail": {...}}`), so a
/// function can be the target of an event rule as well as invoked directly.
pub(crate) fn unwrap_envelope(event: Value) -> Value {
    match event {
        Value::Object(mut map) if is_envelope_map(&map) => {
            let mut detail = map.remove("detail").unwrap_or(Value::Null);
            let is_record_event = map
                .get("detail-type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("Record "));
            if let (true, Some(fields)) = (is_record_event, detail.as_object_mut()) {
                for name in EVENT_FIELDS {
                    fields.remove(name);
                }
            }
            detail
        }
        other => other,
    }
}

/// Whether `event` is an EventBridge event, which [`unwrap_envelope`] takes the payload out of.
pub fn is_envelope(event: &Value) -> bool {
    event.as_object().is_some_and(is_envelope_map)
}

fn is_envelope_map(map: &Map<String, Value>) -> bool {
    map.contains_key("detail-type")
        && map.contains_key("source")
        && map.get("detail").is_some_and(Value::is_object)
}

/// Parses a payload into `T`, turning every serde complaint into `Crm.InvalidInput` with the field's
/// name.
pub fn parse<T: DeserializeOwned>(event: Value) -> Result<T, CrmError> {
    parse_payload(unwrap_envelope(event))
}

/// [`parse`], for a payload whose envelope was already taken off (by the idempotency layer, which
/// needs the event's `id`). Taking it off twice would unwrap a `detail` that itself looks like an
/// event.
pub fn parse_payload<T: DeserializeOwned>(payload: Value) -> Result<T, CrmError> {
    if !payload.is_object() {
        return Err(CrmError::invalid(
            "payload",
            format!("must be a JSON object, not {}", kind(&payload)),
        ));
    }
    serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        match SerdeProblem::of(e.inner()) {
            SerdeProblem::Missing(name) => CrmError::invalid(name, "is required"),
            SerdeProblem::Unknown { name, expected } => CrmError::invalid(
                name,
                format!(
                    "is not an input of this function (expected {})",
                    expected.replace('`', "")
                ),
            ),
            SerdeProblem::Other(message) => CrmError::invalid(
                if path == "." {
                    "payload".to_owned()
                } else {
                    path
                },
                shorten_quoted(&message),
            ),
        }
    })
}

/// What serde said was wrong. serde reports a missing or unknown field only in its message ("missing
/// field \`x\`", "unknown field \`x\`, expected one of ..."), so this is the one place that reads
/// those messages.
pub(crate) enum SerdeProblem {
    Missing(String),
    Unknown { name: String, expected: String },
    Other(String),
}

impl SerdeProblem {
    pub(crate) fn of(error: &serde_json::Error) -> Self {
        let message = error.to_string();
        // serde_json appends " at line L column C"; the field's name comes before it.
        if let Some(name) = quoted_after(&message, "missing field ") {
            return Self::Missing(name.to_owned());
        }
        if let Some(name) = quoted_after(&message, "unknown field ") {
            let expected = message
                .split_once(", expected ")
                .map_or("", |(_, e)| e)
                .to_owned();
            return Self::Unknown {
                name: name.to_owned(),
                expected,
            };
        }
        Self::Other(message)
    }
}

/// serde quotes a refused string in full (`invalid type: string "...", expected u64`): keep an
/// excerpt of it instead.
fn shorten_quoted(message: &str) -> String {
    if let (Some(start), Some(end)) = (message.find(" \""), message.rfind("\", expected "))
        && start + 2 <= end
    {
        let quoted = &message[start + 2..end];
        if quoted.chars().count() > crate::error::EXCERPT_LIMIT {
            return format!(
                "{} \"{}\"{}",
                &message[..start],
                excerpt(quoted),
                &message[end + 1..]
            );
        }
    }
    message.to_owned()
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .strip_prefix(prefix)?
        .strip_prefix('`')?
        .split('`')
        .next()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `name` is 1 to `max` letters, digits, '.', '_' or '-': safe as a secret's name, a file
/// name or a key, wherever it ends up.
pub(crate) fn is_plain_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The organisation: the name its credentials are stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Dataset(String);

impl Dataset {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Dataset {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if is_plain_name(&name, 128) && !name.starts_with('.') {
            Ok(Self(name))
        } else {
            Err(format!(
                "'{}' is not a dataset name: use letters, digits, '.', '_' and '-' (it names the credentials, e.g. 'contoso')",
                excerpt(&name)
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Dataset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Dataset::try_from(String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

pub use dataverse::TableName;

/// The rows a list or a poll returns when `$top` is not given: the original connector's default
/// "Maximum Get Count".
pub const DEFAULT_TOP: usize = 256;

/// A row id: a GUID, and nothing else, so no path can be injected into a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId(pub Uuid);

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // Only the 36-character hyphenated form: braces, URNs and bare hex are not what Dataverse
        // returns, and accepting them would hide a caller's mix-up.
        match Uuid::try_parse(&text) {
            Ok(id) if text.len() == 36 => Ok(Self(id)),
            _ => Err(de::Error::custom(format!(
                "'{}' is not a GUID such as 00000000-0000-0000-0000-000000000000",
                excerpt(&text)
            ))),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `key`: the values of one of the table's alternate keys, `{"accountnumber": "A-1"}`, naming a row
/// where `id` would.
#[derive(Debug, Clone, PartialEq)]
pub struct Key(pub dataverse::AlternateKey);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Object(columns) => dataverse::AlternateKey::from_json(&columns)
                .map(Self)
                .map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "must be a JSON object of the key's columns and values, not {}",
                kind(&other)
            ))),
        }
    }
}

/// The row an action is about: `id` or `key`, exactly one of them.
pub fn row(id: Option<RecordId>, key: Option<Key>) -> Result<dataverse::RowRef, CrmError> {
    match (id, key) {
        (Some(id), None) => Ok(dataverse::RowRef::Id(id.0)),
        (None, Some(key)) => Ok(dataverse::RowRef::Key(key.0)),
        (Some(_), Some(_)) => Err(CrmError::invalid(
            "key",
            "names the row as well as id: give one of them",
        )),
        (None, None) => Err(CrmError::invalid(
            "id",
            "is required, or key (an alternate key's values) instead",
        )),
    }
}

/// `related`: one row, or a list of rows, each named `{"id": ...}` or `{"key": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Related(pub Vec<dataverse::RowRef>);

/// The most rows one call relates: each is a request, and all must fit in one invocation.
pub const MAX_RELATED: usize = 100;

impl<'de> Deserialize<'de> for Related {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct One {
            #[serde(default)]
            id: Option<RecordId>,
            #[serde(default)]
            key: Option<Key>,
        }
        let items = match Value::deserialize(deserializer)? {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            other => {
                return Err(de::Error::custom(format!(
                    "must be a row ({{\"id\": ...}} or {{\"key\": {{...}}}}) or a list of them, not {}",
                    kind(&other)
                )));
            }
        };
        if items.is_empty() || items.len() > MAX_RELATED {
            return Err(de::Error::custom(format!(
                "must name 1 to {MAX_RELATED} rows, not {}",
                items.len()
            )));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let one = One::deserialize(item)
                    .map_err(|e| de::Error::custom(format!("row {i}: {e}")))?;
                match (one.id, one.key) {
                    (Some(id), None) => Ok(dataverse::RowRef::Id(id.0)),
                    (None, Some(key)) => Ok(dataverse::RowRef::Key(key.0)),
                    _ => Err(de::Error::custom(format!(
                        "row {i}: give exactly one of id and key"
                    ))),
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// An etag as Dataverse returns it in `@odata.etag` (`W/"12345"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(String);

impl Etag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Etag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tag = String::deserialize(deserializer)?;
        let opaque = tag.strip_prefix("W/").unwrap_or(&tag);
        let valid = tag.len() <= 256
            && opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && opaque[1..opaque.len() - 1]
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"');
        if valid {
            Ok(Self(tag))
        } else {
            Err(de::Error::custom(format!(
                "'{}' is not an etag such as W/\"12345\" (take it from a row's @odata.etag)",
                excerpt(&tag)
            )))
        }
    }
}

/// `$top`: a positive number of rows.
pub fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    match Option::<u64>::deserialize(deserializer)? {
        None => Ok(None),
        Some(0) => Err(de::Error::custom("must be at least 1")),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::custom("is too large")),
    }
}

/// An optional OData expression (`$filter`, `$select`, ...). An empty string counts as absent, so a
/// schedule's JSON input can always carry the key.
pub fn expression<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    match value {
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) if text.chars().any(char::is_control) => Err(de::Error::custom(
            "must not contain control characters such as line breaks",
        )),
        other => Ok(other),
    }
}

/// `item`: the columns to write, as a JSON object.
pub fn columns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Map<String, Value>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Object(map) if !map.is_empty() => Ok(map),
        Value::Object(_) => Err(de::Error::custom("must name at least one column to write")),
        other => Err(de::Error::custom(format!(
            "must be a JSON object of column values, not {}",
            kind(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        dataset: Dataset,
        table: TableName,
        id: Option<RecordId>,
        #[serde(rename = "$top", default, deserialize_with = "positive")]
        top: Option<usize>,
        #[serde(rename = "$filter", default, deserialize_with = "expression")]
        filter: Option<String>,
        etag: Option<Etag>,
    }

    fn error(payload: Value) -> (String, String) {
        match parse::<Sample>(payload).unwrap_err() {
            CrmError::InvalidInput { field, problem } => (field, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_a_bare_payload_or_an_eventbridge_event() {
        let bare = json!({"dataset": "contoso", "table": "accounts", "$filter": ""});
        let sample: Sample = parse(bare.clone()).unwrap();
        assert_eq!(sample.filter, None, "an empty filter is no filter");
        let event = json!({"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": bare});
        assert_eq!(parse::<Sample>(event).unwrap().table.as_str(), "accounts");
    }

    #[test]
    fn drops_the_event_fields_of_our_own_record_events() {
        let event = json!({"source": "dynamics.crm", "detail-type": "Record Created", "detail": {
            "event_id": "ab", "dataset": "contoso", "table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d",
            "version": "5", "changed_on": "2026-01-01T00:00:00Z", "record": {"name": "x"}
        }});
        let sample: Sample = parse(event.clone()).unwrap();
        assert!(sample.id.is_some());
        // A pushed change's event says how it came; that is not a request either.
        let mut pushed = event;
        pushed["detail"]["via"] = json!("webhook");
        pushed["detail"]["truncated"] = json!(true);
        assert!(parse::<Sample>(pushed).unwrap().id.is_some());
    }

    #[test]
    fn names_the_field_and_the_problem() {
        let base = || json!({"dataset": "contoso", "table": "accounts"});
        assert_eq!(
            error(json!({"table": "accounts"})),
            ("dataset".into(), "is required".into())
        );
        let mut bad_id = base();
        bad_id["id"] = json!("../accounts");
        assert_eq!(error(bad_id).0, "id");
        let mut braces = base();
        braces["id"] = json!("{2e451703-c686-e711-80e5-00155db19e6d}");
        assert_eq!(error(braces).0, "id");
        for table in ["accounts/x", "accounts?x=1", "accounts(1)", ""] {
            let mut bad = base();
            bad["table"] = json!(table);
            let (field, problem) = error(bad);
            assert_eq!(field, "table");
            assert!(problem.contains("not a table name"), "{problem}");
        }
        let mut top = base();
        top["$top"] = json!(0);
        assert_eq!(error(top), ("$top".into(), "must be at least 1".into()));
        let mut typo = base();
        typo["$fitler"] = json!("x");
        let (field, problem) = error(typo);
        assert_eq!(field, "$fitler");
        assert!(problem.contains("not an input"), "{problem}");
        let mut etag = base();
        etag["etag"] = json!("123\r\nX-Evil: 1");
        assert_eq!(error(etag).0, "etag");
        assert_eq!(error(json!(["dataset"])).0, "payload");
    }

    #[test]
    fn quotes_at_most_an_excerpt_of_a_huge_input() {
        let huge = "x".repeat(5_000_000);
        for (key, value) in [
            ("table", json!(huge)),
            ("$top", json!(huge)),
            ("id", json!(huge)),
            ("etag", json!(huge)),
            (huge.as_str(), json!(1)),
        ] {
            let mut payload = json!({"dataset": "contoso", "table": "accounts"});
            payload[key] = value;
            let (field, problem) = error(payload);
            assert!(field.len() < 200, "{}", field.len());
            assert!(problem.len() < 400, "{key:.10}: {} bytes", problem.len());
            assert!(
                problem.contains("5000000 characters") || field.contains("5000000 characters"),
                "{key:.10}: {problem}"
            );
        }
    }

    #[test]
    fn accepts_etags_and_guids_as_dataverse_writes_them() {
        let sample: Sample = parse(json!({
            "dataset": "contoso.prod", "table": "new_project", "id": "2e451703-c686-e711-80e5-00155db19e6d",
            "etag": "W/\"71004878\"", "$top": 5
        }))
        .unwrap();
        assert_eq!(sample.etag.unwrap().as_str(), "W/\"71004878\"");
        assert_eq!(sample.top, Some(5));
    }
}
