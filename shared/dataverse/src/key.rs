//! Which row a request is about: its id, or the values of one of its table's alternate keys.
//!
//! A key goes in the URL as Dataverse writes it, `accounts(accountnumber='A-1')` or
//! `contacts(firstname='Joe',emailaddress1='joe@example.com')`: text quoted with `''` for a quote,
//! numbers bare, and a lookup named by its `_x_value` property with a bare GUID. The values are
//! percent-encoded, so any Unicode text travels intact.
//!
//! Dataverse's web front end refuses some characters in a URL path even when percent-encoded (ASP.NET's
//! "potentially dangerous Request.Path" list, and `/`, which splits the path). A row whose key text
//! holds one of them cannot be addressed by key at all, so the client finds its id with `$filter`
//! first ([`RowRef::addressable`]).

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use uuid::Uuid;

/// Characters Dataverse refuses inside a URL path, encoded or not: ASP.NET's list, `/`, and `+`,
/// which Microsoft's alternate-key page also names.
pub const UNADDRESSABLE: [char; 10] = ['/', '<', '>', '*', '%', '&', ':', '\\', '?', '+'];

/// What stays as it is in a key's text: unreserved characters. Everything else, the quote included,
/// is percent-encoded, so a value can never close its own literal.
const KEY_TEXT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A row, by id or by alternate key.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRef {
    Id(Uuid),
    Key(AlternateKey),
}

impl From<Uuid> for RowRef {
    fn from(id: Uuid) -> Self {
        RowRef::Id(id)
    }
}

/// The values of one alternate key, by column, in column-name order (so one key has one URL).
#[derive(Debug, Clone, PartialEq)]
pub struct AlternateKey {
    parts: Vec<(String, KeyValue)>,
}

/// One key column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Text(String),
    /// A whole or decimal number (whole-number, decimal and choice columns), as JSON wrote it.
    Number(serde_json::Number),
    /// A lookup's id (`_x_value` columns).
    Guid(Uuid),
}

/// Why a value cannot be part of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("has no columns; give one or more, as {{\"column\": value}}")]
    Empty,

    #[error("'{column}' is not a column's logical name")]
    Column { column: String },

    #[error(
        "'{column}' is {found}; a key value is text, a number, or for a lookup (_x_value) a GUID"
    )]
    Value { column: String, found: &'static str },

    #[error("'{column}' is a lookup, so its value must be a GUID")]
    Lookup { column: String },
}

impl AlternateKey {
    /// From `{"column": value, ...}` as a caller gives it.
    pub fn from_json(columns: &serde_json::Map<String, Value>) -> Result<Self, KeyError> {
        if columns.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut parts = Vec::with_capacity(columns.len());
        for (column, value) in columns {
            if !is_property(column) {
                return Err(KeyError::Column {
                    column: crate::excerpt(column),
                });
            }
            let lookup = column.starts_with('_') && column.ends_with("_value");
            let value = match value {
                Value::String(text) if lookup => {
                    KeyValue::Guid(Uuid::parse_str(text).map_err(|_| KeyError::Lookup {
                        column: column.clone(),
                    })?)
                }
                Value::String(text) => KeyValue::Text(text.clone()),
                Value::Number(n) if !lookup => KeyValue::Number(n.clone()),
                Value::Number(_) => {
                    return Err(KeyError::Lookup {
                        column: column.clone(),
                    });
                }
                other => {
                    return Err(KeyError::Value {
                        column: column.clone(),
                        found: kind(other),
                    });
                }
            };
            parts.push((column.clone(), value));
        }
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { parts })
    }

    pub fn parts(&self) -> &[(String, KeyValue)] {
        &self.parts
    }

    /// The key as `{"column": value}`, as a caller gave it.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.parts
            .iter()
            .map(|(column, value)| {
                let value = match value {
                    KeyValue::Text(t) => Value::String(t.clone()),
                    KeyValue::Number(n) => Value::Number(n.clone()),
                    KeyValue::Guid(id) => Value::String(id.to_string()),
                };
                (column.clone(), value)
            })
            .collect()
    }

    /// Whether Dataverse accepts every value in a URL path (see the module documentation).
    pub fn addressable(&self) -> bool {
        self.parts.iter().all(|(_, value)| match value {
            KeyValue::Text(text) => !text.contains(UNADDRESSABLE),
            KeyValue::Number(_) | KeyValue::Guid(_) => true,
        })
    }

    /// `column='text',other=42`, percent-encoded for a URL path.
    pub(crate) fn url_segment(&self) -> String {
        self.render("=", ",", true)
    }

    /// `column eq 'text' and other eq 42`: the same row found with `$filter` (encoded by the query).
    pub(crate) fn filter(&self) -> String {
        self.render(" eq ", " and ", false)
    }

    /// The parts joined by `separator`, each `column{assign}value`, text quoted with `''` for a
    /// quote and, for a URL path, percent-encoded.
    fn render(&self, assign: &str, separator: &str, encoded: bool) -> String {
        let mut out = String::new();
        for (i, (column, value)) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_str(separator);
            }
            out.push_str(column);
            out.push_str(assign);
            match value {
                KeyValue::Text(t) => {
                    let quoted = t.replace('\'', "''");
                    out.push('\'');
                    if encoded {
                        out.extend(utf8_percent_encode(&quoted, KEY_TEXT));
                    } else {
                        out.push_str(&quoted);
                    }
                    out.push('\'');
                }
                KeyValue::Number(n) => {
                    let _ = write!(out, "{n}");
                }
                KeyValue::Guid(id) => {
                    let _ = write!(out, "{id}");
                }
            }
        }
        out
    }

    /// The key's values as columns of a new row, for a create that stands in for an upsert: a
    /// lookup cannot be set by its `_x_value` property, so only text and numbers are given.
    pub(crate) fn settable(&self) -> impl Iterator<Item = (&str, Value)> {
        self.parts.iter().filter_map(|(column, value)| match value {
            KeyValue::Text(t) => Some((column.as_str(), Value::String(t.clone()))),
            KeyValue::Number(n) => Some((column.as_str(), Value::Number(n.clone()))),
            KeyValue::Guid(_) => None,
        })
    }
}

impl std::fmt::Display for RowRef {
    /// For logs and messages: the id, or the key's columns (never its values, which may be
    /// personal data).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowRef::Id(id) => write!(f, "{id}"),
            RowRef::Key(key) => {
                f.write_str("key(")?;
                for (i, (column, _)) in key.parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(column)?;
                }
                f.write_str(")")
            }
        }
    }
}

fn is_property(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(value: Value) -> Result<AlternateKey, KeyError> {
        match value {
            Value::Object(columns) => AlternateKey::from_json(&columns),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn renders_keys_as_dataverse_reads_them_with_quotes_and_unicode_encoded() {
        let single = key(json!({"accountnumber": "O'Brien & Sons"})).unwrap();
        assert_eq!(
            single.url_segment(),
            "accountnumber='O%27%27Brien%20%26%20Sons'"
        );
        assert!(!single.addressable(), "& is refused in a URL path");
        let multi = key(
            json!({"lastname": "Zürich", "firstname": "東京", "new_code": 42,
            "_parentcustomerid_value": "6D81597F-0000-4000-8000-000000000001"}),
        )
        .unwrap();
        assert_eq!(
            multi.url_segment(),
            "_parentcustomerid_value=6d81597f-0000-4000-8000-000000000001,firstname='%E6%9D%B1%E4%BA%AC',lastname='Z%C3%BCrich',new_code=42"
        );
        assert!(multi.addressable());
        assert_eq!(
            multi.filter(),
            "_parentcustomerid_value eq 6d81597f-0000-4000-8000-000000000001 and firstname eq '東京' and lastname eq 'Zürich' and new_code eq 42"
        );
        assert_eq!(
            key(json!({"name": "it's"})).unwrap().filter(),
            "name eq 'it''s'"
        );
        assert_eq!(
            RowRef::Key(multi).to_string(),
            "key(_parentcustomerid_value,firstname,lastname,new_code)"
        );
    }

    #[test]
    fn refuses_what_cannot_be_a_key() {
        assert_eq!(key(json!({})), Err(KeyError::Empty));
        assert!(matches!(
            key(json!({"Name": "x"})),
            Err(KeyError::Column { .. })
        ));
        assert!(matches!(
            key(json!({"name": null})),
            Err(KeyError::Value { found: "null", .. })
        ));
        assert!(matches!(
            key(json!({"name": true})),
            Err(KeyError::Value { .. })
        ));
        assert!(matches!(
            key(json!({"_x_value": "not a guid"})),
            Err(KeyError::Lookup { .. })
        ));
        assert!(matches!(
            key(json!({"_x_value": 5})),
            Err(KeyError::Lookup { .. })
        ));
    }
}
