//! A row as the scan sees it, read once.
//!
//! A poll passes most of each row on untouched: into an event's `record` and into what it returns.
//! So a row stays the JSON text Dataverse sent, and one pass over that text picks out the few
//! columns the scan decides by (key, times, version), the watched columns and the `$orderby` ones.
//! Every other column is skipped without being built, and sizes are measured on the text itself.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::ScanError;

/// What the scan needs of a row, and the row itself.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) id: Uuid,
    /// `createdon` and `modifiedon`, in Unix seconds.
    pub(super) created: i64,
    pub(super) modified: i64,
    /// `modifiedon` as Dataverse wrote it: an event's `changed_on`.
    pub(super) modified_text: String,
    pub(super) version: u64,
    /// The watched columns' values hashed, when columns are watched.
    pub(super) fingerprint: Option<String>,
    /// The watched columns' values, in their order (empty when none are watched).
    pub(super) watched: Vec<Value>,
    /// The user the change is recorded under (`_createdby_value` or `_modifiedby_value`), when
    /// the scan asks for it and the row has one.
    pub(super) author: Option<Uuid>,
    /// The `$orderby` columns' values, in their order: what the poll's answer is sorted by.
    pub(super) sort_keys: Vec<Value>,
    pub(super) raw: Box<RawValue>,
}

/// The columns to pick out of each row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Columns<'a> {
    pub(super) primary_id: &'a str,
    pub(super) watched: &'a [String],
    pub(super) sorted: &'a [String],
    /// The column naming who made the change, for `ignore_own_changes`.
    pub(super) author: Option<&'a str>,
}

impl Columns<'_> {
    /// Reads `raw` once. A row without its key columns, or with one that is not what Dataverse
    /// writes there, is an error: the scan cannot place it, and guessing would lose or repeat it.
    pub(super) fn read(self, raw: Box<RawValue>) -> Result<Row, ScanError> {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let found = Reader(self)
            .deserialize(&mut de)
            .map_err(ScanError::Unreadable)?;
        let wrong = |column: &str, value: &Value, expected: &'static str| ScanError::WrongValue {
            column: column.to_owned(),
            value: crate::excerpt(&value.to_string()),
            expected,
        };
        let text = |column: &str, value: Value| match value {
            Value::String(text) => Ok(text),
            other => Err(wrong(column, &other, "text")),
        };
        let id = text(self.primary_id, found.id)?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| wrong(self.primary_id, &Value::String(id), "a GUID"))?;
        let created = text("createdon", found.created)?;
        let modified_text = text("modifiedon", found.modified)?;
        let version = found
            .version
            .as_u64()
            .ok_or_else(|| wrong("versionnumber", &found.version, "a whole number"))?;
        let fingerprint = (!self.watched.is_empty()).then(|| fingerprint(&found.watched));
        let seconds = |column: &str, text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .map(OffsetDateTime::unix_timestamp)
                .map_err(|_| wrong(column, &Value::String(text.to_owned()), "a date-time"))
        };
        // A row without an author (a lookup left empty) was not written by the connector.
        let author = found
            .author
            .as_str()
            .and_then(|text| Uuid::parse_str(text).ok());
        Ok(Row {
            id,
            created: seconds("createdon", &created)?,
            modified: seconds("modifiedon", &modified_text)?,
            modified_text,
            version,
            fingerprint,
            watched: found.watched,
            author,
            sort_keys: found.sorted,
            raw,
        })
    }

    fn place(self, name: &str) -> Place {
        if name == self.primary_id {
            return Place::Id;
        }
        match name {
            "createdon" => return Place::Created,
            "modifiedon" => return Place::Modified,
            "versionnumber" => return Place::Version,
            _ => {}
        }
        // The author column can also be watched or sorted by: it fills every slot it names.
        let author = self.author == Some(name);
        let watched = self.watched.iter().position(|c| c == name);
        let sorted = self.sorted.iter().position(|c| c == name);
        match (author, watched, sorted) {
            (false, None, None) => Place::Other,
            (author, watched, sorted) => Place::Value {
                author,
                watched,
                sorted,
            },
        }
    }
}

/// Where a row's column goes.
enum Place {
    Id,
    Created,
    Modified,
    Version,
    /// The author column, a watched column, an `$orderby` column, or more than one of these.
    Value {
        author: bool,
        watched: Option<usize>,
        sorted: Option<usize>,
    },
    Other,
}

/// The columns picked out, before they are checked (a missing one is null).
struct Found {
    id: Value,
    created: Value,
    modified: Value,
    version: Value,
    author: Value,
    watched: Vec<Value>,
    sorted: Vec<Value>,
}

/// Reads a row's map for [`Columns::read`].
struct Reader<'a>(Columns<'a>);

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Found;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row: a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        // A column absent from the row reads as null, as it does in Dataverse's own answers when a
        // value is empty.
        let columns = self.0;
        let mut found = Found {
            id: Value::Null,
            created: Value::Null,
            modified: Value::Null,
            version: Value::Null,
            author: Value::Null,
            watched: vec![Value::Null; columns.watched.len()],
            sorted: vec![Value::Null; columns.sorted.len()],
        };
        while let Some(place) = map.next_key_seed(KeySeed(columns))? {
            match place {
                Place::Id => found.id = map.next_value()?,
                Place::Created => found.created = map.next_value()?,
                Place::Modified => found.modified = map.next_value()?,
                Place::Version => found.version = map.next_value()?,
                Place::Value {
                    author,
                    watched,
                    sorted,
                } => {
                    let value: Value = map.next_value()?;
                    if author {
                        found.author = value.clone();
                    }
                    if let Some(i) = sorted {
                        found.sorted[i] = value.clone();
                    }
                    if let Some(i) = watched {
                        found.watched[i] = value;
                    }
                }
                Place::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// Places a key without keeping it: most keys are compared and forgotten.
struct KeySeed<'a>(Columns<'a>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Place;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Place, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Place;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Place, E> {
        Ok(self.0.place(name))
    }
}

/// `raw` without the column `name` and its annotations (`name@...`), the other members kept as
/// they were, in their order: for a column the scan asked for that the caller did not select.
pub(super) fn without(raw: &RawValue, name: &str) -> Result<Box<RawValue>, ScanError> {
    let members: Vec<(String, &RawValue)> = serde_json::from_str::<Members<'_>>(raw.get())
        .map_err(ScanError::Unreadable)?
        .0;
    let mut text = String::with_capacity(raw.get().len());
    text.push('{');
    let mut first = true;
    for (key, value) in members {
        let annotation = key
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'));
        if annotation {
            continue;
        }
        if !first {
            text.push(',');
        }
        first = false;
        text.push_str(&serde_json::to_string(&key).map_err(ScanError::Encode)?);
        text.push(':');
        text.push_str(value.get());
    }
    text.push('}');
    RawValue::from_string(text).map_err(ScanError::Unreadable)
}

/// An object's members in their order, each value left as its text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row: a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The watched columns' values, hashed: equal fingerprints mean no watched column changed. The
/// values are hashed as compact JSON, so a fingerprint saved by an earlier poll still compares equal.
pub(super) fn fingerprint(values: &[Value]) -> String {
    let mut hasher = Sha256::new();
    // Writing JSON values into a hasher cannot fail: no I/O error, and every map key is a string.
    if let Err(error) = serde_json::to_writer(HashWriter(&mut hasher), values) {
        tracing::error!(%error, "a fingerprint could not be computed; the row fires");
    }
    super::event::hex(&hasher.finalize()[..8])
}

/// Feeds what is written into a hash.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(value: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(value).unwrap()
    }

    const ID: &str = "2e451703-c686-e711-80e5-00155db19e6d";

    fn columns<'a>(watched: &'a [String], sorted: &'a [String]) -> Columns<'a> {
        Columns {
            primary_id: "accountid",
            watched,
            sorted,
            author: None,
        }
    }

    #[test]
    fn picks_out_the_scan_columns_and_keeps_the_row_as_sent() {
        let text = format!(
            r#"{{"@odata.etag":"W/\"9\"","accountid":"{ID}","name":"A","telephone1":null,"createdon":"2024-01-02T03:04:05Z","modifiedon":"2024-01-02T03:04:06Z","versionnumber":9,"nested":{{"a":[1,2]}}}}"#
        );
        let watched = ["name".to_owned(), "missing".to_owned()];
        let sorted = ["name".to_owned()];
        let row = columns(&watched, &sorted)
            .read(RawValue::from_string(text.clone()).unwrap())
            .unwrap();
        assert_eq!(row.id.to_string(), ID);
        assert_eq!(row.created, 1_704_164_645);
        assert_eq!(row.modified, row.created + 1);
        assert_eq!(row.modified_text, "2024-01-02T03:04:06Z");
        assert_eq!(row.version, 9);
        assert_eq!(row.sort_keys, [json!("A")]);
        assert_eq!(row.raw.get(), text);
        // The same hash as the values serialised whole, as fingerprints were first computed.
        let whole = Sha256::digest(serde_json::to_vec(&[json!("A"), Value::Null]).unwrap());
        assert_eq!(
            row.fingerprint.unwrap(),
            super::super::event::hex(&whole[..8])
        );
    }

    #[test]
    fn the_author_column_fills_its_watched_and_sorted_slots_too() {
        let author = "8d2d1c4e-5b6a-4f7e-9a0b-1c2d3e4f5a6b";
        let value = json!({"accountid": ID, "_modifiedby_value": author,
            "createdon": "2024-01-02T03:04:05Z", "modifiedon": "2024-01-02T03:04:05Z", "versionnumber": 1});
        let named = ["_modifiedby_value".to_owned()];
        let row = Columns {
            primary_id: "accountid",
            watched: &named,
            sorted: &named,
            author: Some("_modifiedby_value"),
        }
        .read(raw(&value))
        .unwrap();
        assert_eq!(row.author.unwrap().to_string(), author);
        assert_eq!(row.watched, [json!(author)]);
        assert_eq!(row.sort_keys, [json!(author)]);
    }

    #[test]
    fn drops_a_column_and_its_annotations_keeping_the_rest_in_order() {
        let text = r#"{"b":1,"_modifiedby_value":"x","_modifiedby_value@OData.Community.Display.V1.FormattedValue":"Me","_modifiedby_value_other":2,"a":{"n":[1]}}"#;
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        assert_eq!(
            without(&raw, "_modifiedby_value").unwrap().get(),
            r#"{"b":1,"_modifiedby_value_other":2,"a":{"n":[1]}}"#
        );
    }

    #[test]
    fn fingerprints_change_only_with_the_watched_columns() {
        let row = |name: &str, phone: &str| {
            let value = json!({"accountid": ID, "name": name, "telephone1": phone,
                "createdon": "2024-01-02T03:04:05Z", "modifiedon": "2024-01-02T03:04:05Z", "versionnumber": 1});
            columns(&["name".to_owned()], &[])
                .read(raw(&value))
                .unwrap()
                .fingerprint
        };
        assert_eq!(row("a", "1"), row("a", "2"));
        assert_ne!(row("a", "1"), row("b", "1"));
    }

    #[test]
    fn a_row_the_scan_cannot_place_is_an_error_naming_the_column() {
        let base = json!({"accountid": ID, "createdon": "2024-01-02T03:04:05Z",
            "modifiedon": "2024-01-02T03:04:05Z", "versionnumber": 1});
        let read = |value: &Value| columns(&[], &[]).read(raw(value)).unwrap_err().to_string();
        for column in ["accountid", "createdon", "modifiedon", "versionnumber"] {
            let mut row = base.clone();
            row.as_object_mut().unwrap().remove(column);
            assert!(read(&row).contains(column), "{}", read(&row));
        }
        let mut row = base.clone();
        row["createdon"] = json!("yesterday");
        assert!(read(&row).contains("createdon"));
        let mut row = base.clone();
        row["accountid"] = json!("not-a-guid");
        assert!(read(&row).contains("accountid"));
        let mut row = base;
        row["versionnumber"] = json!("9");
        assert!(read(&row).contains("versionnumber"));
        assert!(read(&json!([1])).contains("JSON object"));
    }
}
