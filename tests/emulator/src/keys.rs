//! Alternate keys: their definitions, the unique index behind each, and rows addressed by key
//! (`accounts(accountnumber='A-1')`).
//!
//! Dataverse enforces a key with a filtered unique index over its columns (filtered on every one of
//! them being non-null), which a background job builds when the key is created. Here the index is a
//! hash map from the key's values, normalised as the index's collation compares them (text
//! case-insensitively), to the row's id; a row with a null key column is not in it, so it is not
//! constrained. The job is instant: a key is `Active` as soon as it is defined, or refused when the
//! rows already there break it (where Dataverse would leave it `Failed`).
//!
//! Some values cannot be addressed by key in a URL at all: Dataverse's front end refuses a path that
//! holds `< > * % & : \ ?` even percent-encoded, and a decoded `/` splits the path (see
//! `crate::server` and `crate::api`). So a key on a date-and-time column, whose literal holds `:`, is
//! never usable in a URL either. Such rows are found with `$filter` on the key's columns instead;
//! the key still keeps them unique.

use std::collections::HashMap;

use percent_encoding::utf8_percent_encode;
use serde_json::{Number, Value};
use uuid::Uuid;

use crate::clock;
use crate::reply::Fail;
use crate::schema::{ColumnType, System, TableDef, stable_id};

/// The most keys a table may have ("Work with alternate keys" on Microsoft Learn: "up to ten
/// alternate key table definitions"; older guidance said five).
pub const MAX_KEYS: usize = 10;
/// The most columns in one key: a SQL Server index's limit, which the same page repeats.
pub const MAX_KEY_COLUMNS: usize = 16;

/// One alternate key of a table.
#[derive(Debug, Clone)]
pub struct EntityKey {
    pub schema_name: String,
    /// The schema name in lowercase, as Dataverse derives it.
    pub logical_name: String,
    /// The key's columns, as positions in the table, in the order the key was defined with.
    pub columns: Vec<usize>,
    pub metadata_id: Uuid,
}

/// Why a key cannot be defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefineError {
    #[error("the key name '{0}' must be letters, digits and underscores, starting with a letter")]
    Name(String),
    #[error("'{table}' already has a key named '{name}'")]
    NameTaken { table: String, name: String },
    #[error("a key has 1 to {MAX_KEY_COLUMNS} columns, not {0}")]
    ColumnCount(usize),
    #[error("'{table}' has no column '{column}'")]
    UnknownColumn { table: String, column: String },
    #[error(
        "'{column}' is a lookup's property: a key names the lookup by its logical name, '{attribute}'"
    )]
    LookupProperty { column: String, attribute: String },
    #[error("the key names '{0}' twice")]
    Repeated(String),
    #[error(
        "'{column}' is {kind}: key columns are single lines of text, whole numbers, decimals, dates and times, lookups and choices"
    )]
    Unsupported { column: String, kind: &'static str },
    #[error("'{table}' already has {MAX_KEYS} keys, as many as Dataverse allows")]
    TooMany { table: String },
    #[error("the key '{existing}' already has these columns")]
    SameColumns { existing: String },
    #[error(
        "rows {first} and {second} of '{table}' share the values of ({columns}), so the key's unique index cannot be built"
    )]
    Violated {
        table: String,
        columns: String,
        first: Uuid,
        second: Uuid,
    },
}

/// Checks a key definition against its table: everything but the rows, which [`KeyIndex::build`]
/// checks.
pub fn define(def: &TableDef, name: &str, columns: &[String]) -> Result<EntityKey, DefineError> {
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(DefineError::Name(name.to_owned()));
    }
    let logical_name = name.to_ascii_lowercase();
    if def.keys.iter().any(|k| k.logical_name == logical_name) {
        return Err(DefineError::NameTaken {
            table: def.logical_name.clone(),
            name: name.to_owned(),
        });
    }
    if def.keys.len() >= MAX_KEYS {
        return Err(DefineError::TooMany {
            table: def.logical_name.clone(),
        });
    }
    if columns.is_empty() || columns.len() > MAX_KEY_COLUMNS {
        return Err(DefineError::ColumnCount(columns.len()));
    }
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(c) = def.attribute(column) else {
            // `_x_value` is how rows and key URLs spell a lookup, but a key's definition names the
            // attribute, as `KeyAttributes` lists it.
            if let Some(c) = def.column(column) {
                return Err(DefineError::LookupProperty {
                    column: column.clone(),
                    attribute: def.columns[c].attribute().to_owned(),
                });
            }
            return Err(DefineError::UnknownColumn {
                table: def.logical_name.clone(),
                column: column.clone(),
            });
        };
        if positions.contains(&c) {
            return Err(DefineError::Repeated(column.clone()));
        }
        if let Some(kind) = unsupported(def, c) {
            return Err(DefineError::Unsupported {
                column: column.clone(),
                kind,
            });
        }
        positions.push(c);
    }
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    if let Some(existing) = def.keys.iter().find(|k| {
        let mut theirs = k.columns.clone();
        theirs.sort_unstable();
        theirs == sorted
    }) {
        return Err(DefineError::SameColumns {
            existing: existing.schema_name.clone(),
        });
    }
    Ok(EntityKey {
        schema_name: name.to_owned(),
        metadata_id: stable_id(&format!("{}/key/{logical_name}", def.logical_name)),
        logical_name,
        columns: positions,
    })
}

/// What kind of column `c` is, when a key cannot include it. Dataverse takes decimal, whole number,
/// single line of text, date and time, lookup and choice (option set) columns.
fn unsupported(def: &TableDef, c: usize) -> Option<&'static str> {
    let column = &def.columns[c];
    // `statecode` and `statuscode` are choices here, but status and status reason columns in
    // Dataverse, which a key cannot include.
    if matches!(column.name.as_str(), "statecode" | "statuscode") {
        return Some("a status column");
    }
    match &column.ty {
        ColumnType::Text { max_len, memo } if *memo || *max_len > 4000 => {
            Some("a multiple lines of text column")
        }
        ColumnType::Text { .. }
        | ColumnType::Whole { .. }
        | ColumnType::Decimal
        | ColumnType::DateTime { .. }
        | ColumnType::DateOnly
        | ColumnType::Choice { .. }
        | ColumnType::Lookup { .. } => None,
        ColumnType::Id => Some("the primary key"),
        ColumnType::BigInt => Some("a big integer column"),
        ColumnType::Money => Some("a currency column"),
        ColumnType::Float => Some("a floating point column"),
        ColumnType::YesNo => Some("a yes/no column"),
        ColumnType::System(System::FullName) => Some("a computed column"),
        ColumnType::System(_) => Some("a column the platform maintains"),
    }
}

/// A key's values as its unique index compares them, one per column.
pub type Tuple = Vec<String>;

/// One key's unique index: each row's values, normalised, to its id.
#[derive(Debug, Default)]
pub struct KeyIndex(HashMap<Tuple, Uuid>);

impl KeyIndex {
    /// Indexes `rows` under `key`, as the key's index job does; refused when two rows share values.
    pub fn build<'a>(
        def: &TableDef,
        key: &EntityKey,
        rows: impl Iterator<Item = (Uuid, &'a [Value])>,
    ) -> Result<Self, DefineError> {
        let mut index = HashMap::new();
        for (id, cells) in rows {
            let Some(tuple) = tuple(def, key, |c| &cells[c]) else {
                continue;
            };
            if let Some(first) = index.insert(tuple, id) {
                return Err(DefineError::Violated {
                    table: def.logical_name.clone(),
                    columns: attributes(def, key).join(", "),
                    first,
                    second: id,
                });
            }
        }
        Ok(Self(index))
    }

    pub fn get(&self, tuple: &Tuple) -> Option<Uuid> {
        self.0.get(tuple).copied()
    }

    pub fn insert(&mut self, tuple: Tuple, id: Uuid) {
        self.0.insert(tuple, id);
    }

    /// Removes `tuple` if it is `id`'s.
    pub fn remove(&mut self, tuple: &Tuple, id: Uuid) {
        if self.0.get(tuple) == Some(&id) {
            self.0.remove(tuple);
        }
    }
}

/// A row's values of `key`, normalised; `None` when one of them is null, which keeps the row out of
/// the (filtered) index.
pub fn tuple<'a>(
    def: &TableDef,
    key: &EntityKey,
    value: impl Fn(usize) -> &'a Value,
) -> Option<Tuple> {
    key.columns
        .iter()
        .map(|c| normalise(&def.columns[*c].ty, value(*c)))
        .collect()
}

/// One value as the index compares it. Text compares as `crate::odata::filter::compare_text` does
/// (case-insensitively, so `abc` and `ABC` collide); numbers by value; GUIDs, dates and date-times are
/// stored in one form already.
fn normalise(ty: &ColumnType, value: &Value) -> Option<String> {
    match (ty, value) {
        (_, Value::Null) => None,
        (ColumnType::Text { .. }, Value::String(s)) => {
            Some(s.chars().flat_map(char::to_lowercase).collect())
        }
        (ColumnType::Decimal, Value::Number(n)) => {
            let n = n.as_f64().unwrap_or_default();
            // `-0` and `0` are one value.
            Some(if n == 0.0 {
                "0".to_owned()
            } else {
                n.to_string()
            })
        }
        (_, Value::String(s)) => Some(s.to_ascii_lowercase()),
        (_, other) => Some(other.to_string()),
    }
}

/// The key's columns by attribute logical name, as `KeyAttributes` lists them.
pub fn attributes<'a>(def: &'a TableDef, key: &EntityKey) -> Vec<&'a str> {
    key.columns
        .iter()
        .map(|c| def.columns[*c].attribute())
        .collect()
}

/// `0x80060892` `DuplicateRecordEntityKey`: a write would give two rows the same values of `key`. The
/// wording is the one Microsoft's error code list has for the code, as a live 412 reported it; the
/// service names the key and its columns by display name, which the emulator does not keep.
pub fn duplicate(def: &TableDef, key: &EntityKey) -> Fail {
    Fail::new(
        412,
        "0x80060892",
        format!(
            "Entity Key {} violated. A record with the same value for {} already exists. A duplicate record cannot be created. Select one or more unique values and try again.",
            key.schema_name,
            attributes(def, key).join(", ")
        ),
    )
}

/// `0x80060891` `RecordNotFoundByEntityKey`: no row has the key values in the URL.
pub fn not_found(def: &TableDef) -> Fail {
    Fail::new(
        404,
        "0x80060891",
        format!(
            "A record with the specified key values does not exist in {} entity",
            def.logical_name
        ),
    )
}

/// `0x80060890` `EntityKeyNotDefined`: the URL names columns that are not one of the table's keys.
pub fn not_defined(def: &TableDef) -> Fail {
    Fail::new(
        400,
        "0x80060890",
        format!(
            "The specified key attributes are not a defined key for the {} entity",
            def.logical_name
        ),
    )
}

/// What the parentheses after an entity set name address.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    /// `accounts(<guid>)` or `accounts(accountid=<guid>)`.
    Id(Uuid),
    /// `accounts(accountnumber='A-1')`: key `key` of the table (an index into its keys), and the
    /// values as rows store them, in the key's column order.
    Key {
        key: usize,
        values: Vec<(usize, Value)>,
    },
}

fn syntax() -> Fail {
    Fail::bad_query("Bad Request - Error in query syntax.")
}

/// Parses the text between the parentheses of `accounts(...)`, already percent-decoded: a GUID, or
/// `name=value` pairs in any order naming exactly the columns of one key. Text values are quoted with
/// `''` for a quote; numbers, GUIDs (of lookups, named `_x_value`) and dates are bare.
pub fn parse_address(def: &TableDef, text: &str) -> Result<Address, Fail> {
    if text.len() == 36
        && let Ok(id) = Uuid::parse_str(text)
    {
        return Ok(Address::Id(id));
    }
    if !text.contains('=') {
        return Err(Fail::bad_query(format!(
            "Bad Request - Error in query syntax. The key value '{text}' is not a valid Edm.Guid literal."
        )));
    }
    let parts = split_parts(text)?;
    if let [(name, literal)] = parts.as_slice()
        && *name == def.primary_id
    {
        return match literal {
            Literal::Bare(s) if s.len() == 36 => Uuid::parse_str(s)
                .map(Address::Id)
                .map_err(|_| invalid_literal(literal, "Edm.Guid")),
            _ => Err(invalid_literal(literal, "Edm.Guid")),
        };
    }
    let mut columns = Vec::with_capacity(parts.len());
    for (name, _) in &parts {
        let c = def.column(name).ok_or_else(|| not_defined(def))?;
        if columns.contains(&c) {
            return Err(Fail::bad_query(format!(
                "Bad Request - Error in query syntax. The key property '{name}' appears more than once."
            )));
        }
        columns.push(c);
    }
    let mut sorted = columns.clone();
    sorted.sort_unstable();
    let key = def
        .keys
        .iter()
        .position(|k| {
            let mut theirs = k.columns.clone();
            theirs.sort_unstable();
            theirs == sorted
        })
        .ok_or_else(|| not_defined(def))?;
    let mut values = Vec::with_capacity(parts.len());
    for c in &def.keys[key].columns {
        let at = columns.iter().position(|x| x == c).unwrap_or_default();
        let value = literal_value(&def.columns[*c].ty, &parts[at].1)?;
        values.push((*c, value));
    }
    Ok(Address::Key { key, values })
}

#[derive(Debug)]
enum Literal<'a> {
    Quoted(String),
    Bare(&'a str),
}

impl std::fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Quoted(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Bare(s) => f.write_str(s),
        }
    }
}

fn split_parts(text: &str) -> Result<Vec<(&str, Literal<'_>)>, Fail> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let (name, after) = rest.split_once('=').ok_or_else(syntax)?;
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(syntax());
        }
        let (literal, after) = if let Some(quoted) = after.strip_prefix('\'') {
            // A quote ends the literal unless another follows it (`''` is one quote).
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(syntax()),
                    Some((i, '\'')) => {
                        if quoted[i + 1..].starts_with('\'') {
                            value.push('\'');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            (Literal::Quoted(value), &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            let bare = &after[..end];
            if bare.is_empty() || bare.contains('\'') {
                return Err(syntax());
            }
            (Literal::Bare(bare), &after[end..])
        };
        parts.push((name, literal));
        if after.is_empty() {
            return Ok(parts);
        }
        rest = after.strip_prefix(',').ok_or_else(syntax)?;
    }
}

fn invalid_literal(literal: &Literal<'_>, edm: &str) -> Fail {
    Fail::bad_query(format!(
        "Bad Request - Error in query syntax. The key value {literal} is not a valid {edm} literal."
    ))
}

/// A key literal as the column's rows store it.
fn literal_value(ty: &ColumnType, literal: &Literal<'_>) -> Result<Value, Fail> {
    let bare = match literal {
        Literal::Quoted(s) => {
            return match ty {
                ColumnType::Text { .. } => Ok(Value::String(s.clone())),
                _ => Err(invalid_literal(literal, edm_name(ty))),
            };
        }
        Literal::Bare(s) => *s,
    };
    let invalid = || invalid_literal(literal, edm_name(ty));
    match ty {
        ColumnType::Whole { .. } | ColumnType::Choice { .. } => {
            bare.parse::<i32>().map(Value::from).map_err(|_| invalid())
        }
        ColumnType::Decimal => {
            let numeric = bare
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
            bare.parse::<f64>()
                .ok()
                .filter(|_| numeric)
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(invalid)
        }
        ColumnType::Lookup { .. } if bare.len() == 36 => Uuid::parse_str(bare)
            .map(|id| Value::String(id.to_string()))
            .map_err(|_| invalid()),
        ColumnType::DateTime { behavior, .. } => crate::dates::read(*behavior, bare)
            .map(|t| Value::String(clock::format_utc(t)))
            .ok_or_else(invalid),
        ColumnType::DateOnly => clock::parse_date(bare)
            .map(|d| Value::String(clock::format_date(d)))
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

fn edm_name(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Text { .. } => "Edm.String",
        ColumnType::Whole { .. } | ColumnType::Choice { .. } => "Edm.Int32",
        ColumnType::Decimal => "Edm.Decimal",
        ColumnType::DateTime { .. } => "Edm.DateTimeOffset",
        ColumnType::DateOnly => "Edm.Date",
        _ => "Edm.Guid",
    }
}

/// The key form of a row's address, `accountnumber='A-1',new_code=42`, as `OData-EntityId` echoes it
/// for a request addressed by key: the key's columns in its order, text quoted and percent-encoded.
pub fn render(def: &TableDef, values: &[(usize, Value)]) -> String {
    let mut out = String::new();
    for (i, (c, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&def.columns[*c].name);
        out.push('=');
        match value {
            Value::String(s) if matches!(def.columns[*c].ty, ColumnType::Text { .. }) => {
                out.push('\'');
                out.extend(utf8_percent_encode(&s.replace('\'', "''"), crate::api::URL));
                out.push('\'');
            }
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builtin_tables;

    fn account() -> TableDef {
        let mut def = builtin_tables().remove(0);
        let number = define(&def, "aws_accountnumber", &["accountnumber".to_owned()]).unwrap();
        def.keys.push(number);
        let pair = define(
            &def,
            "aws_employees_contact",
            &[
                "numberofemployees".to_owned(),
                "primarycontactid".to_owned(),
            ],
        )
        .unwrap();
        def.keys.push(pair);
        def
    }

    #[test]
    fn reads_quoted_text_with_doubled_quotes_and_bare_numbers_in_any_order() {
        let def = account();
        let number = def.column("accountnumber").unwrap();
        assert_eq!(
            parse_address(&def, "accountnumber='O''Brien, (1)'").unwrap(),
            Address::Key {
                key: 0,
                values: vec![(number, Value::from("O'Brien, (1)"))]
            }
        );
        let id = "6D81597F-0000-4000-8000-000000000001";
        let Address::Key { key, values } = parse_address(
            &def,
            &format!("_primarycontactid_value={id},numberofemployees=42"),
        )
        .unwrap() else {
            panic!("a key");
        };
        assert_eq!(key, 1);
        assert_eq!(values[0].1, Value::from(42));
        assert_eq!(values[1].1, Value::from(id.to_ascii_lowercase()));
        assert_eq!(
            render(&def, &values),
            format!(
                "numberofemployees=42,_primarycontactid_value={}",
                id.to_ascii_lowercase()
            )
        );
    }

    #[test]
    fn refuses_malformed_keys_and_keys_that_are_not_defined() {
        let def = account();
        for bad in [
            "accountnumber='open",
            "accountnumber='a'b",
            "accountnumber=",
            "=1",
            "accountnumber='a',",
            "accountnumber='a',accountnumber='b'",
        ] {
            assert_eq!(
                parse_address(&def, bad).unwrap_err().code,
                "0x80060888",
                "{bad}"
            );
        }
        for undefined in ["name='x'", "numberofemployees=1", "nosuch=1"] {
            assert_eq!(
                parse_address(&def, undefined).unwrap_err().code,
                "0x80060890"
            );
        }
        let wrong_type = parse_address(&def, "accountnumber=42").unwrap_err();
        assert!(
            wrong_type.message.contains("Edm.String"),
            "{}",
            wrong_type.message
        );
        assert!(parse_address(&def, "accountid='x'").is_err());
        assert_eq!(
            parse_address(&def, "accountid=6d81597f-0000-4000-8000-000000000001").unwrap(),
            Address::Id(Uuid::from_u128(0x6d81597f_0000_4000_8000_000000000001))
        );
    }

    #[test]
    fn refuses_definitions_dataverse_refuses() {
        let def = account();
        let cols = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let refused = |name: &str, c: &[&str]| define(&def, name, &cols(c)).unwrap_err();
        assert!(matches!(
            refused("AWS_AccountNumber", &["name"]),
            DefineError::NameTaken { .. }
        ));
        assert!(matches!(
            refused("k", &["revenue"]),
            DefineError::Unsupported { .. }
        ));
        assert!(matches!(
            refused("k", &["creditonhold"]),
            DefineError::Unsupported { .. }
        ));
        assert!(matches!(
            refused("k", &["statecode"]),
            DefineError::Unsupported { .. }
        ));
        assert!(matches!(
            refused("k", &["accountid"]),
            DefineError::Unsupported { .. }
        ));
        assert!(matches!(
            refused("k", &["_primarycontactid_value"]),
            DefineError::LookupProperty { .. }
        ));
        assert!(matches!(
            refused("k", &["nosuch"]),
            DefineError::UnknownColumn { .. }
        ));
        assert!(matches!(
            refused("k", &["name", "name"]),
            DefineError::Repeated(_)
        ));
        assert!(matches!(refused("k", &[]), DefineError::ColumnCount(0)));
        assert!(matches!(refused("1k", &["name"]), DefineError::Name(_)));
        assert!(matches!(
            refused("k", &["primarycontactid", "numberofemployees"]),
            DefineError::SameColumns { .. }
        ));
    }

    #[test]
    fn normalises_text_case_insensitively_and_numbers_by_value() {
        let text = ColumnType::Text {
            max_len: 10,
            memo: false,
        };
        assert_eq!(
            normalise(&text, &Value::from("ZÜRICH")),
            normalise(&text, &Value::from("zürich"))
        );
        let decimal = ColumnType::Decimal;
        assert_eq!(
            normalise(&decimal, &serde_json::json!(2.0)),
            normalise(&decimal, &serde_json::json!(2.0_f64))
        );
        assert_eq!(
            normalise(&decimal, &serde_json::json!(-0.0)),
            normalise(&decimal, &serde_json::json!(0.0))
        );
        assert_eq!(normalise(&text, &Value::Null), None);
    }
}
