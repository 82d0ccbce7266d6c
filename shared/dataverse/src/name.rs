//! Names that end up in URLs. Checked once, where they enter, so that nothing a caller writes can be
//! spliced into a path or a query as anything but a name.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer};

use crate::{Error, excerpt};

/// The longest table name (logical or entity set) the client accepts.
pub(crate) const MAX_TABLE_NAME: usize = 128;

/// Whether `name` can be a Dataverse schema name (a table's logical or entity set name, a column's
/// logical name): a letter or underscore, then letters, digits and underscores. Dataverse makes
/// every logical name this way, so anything else is a mistake or an attempt to inject.
pub fn is_schema_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A table, by its logical name (`account`) or its entity set name (`accounts`):
/// [`Client::table`](crate::Client::table) resolves either.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TableName {
    type Error = Error;

    fn try_from(name: String) -> Result<Self, Error> {
        if name.len() <= MAX_TABLE_NAME && is_schema_name(&name) {
            return Ok(Self(name));
        }
        Err(Error::InvalidTable {
            problem: format!(
                "'{}' is not a table name: use a logical name such as 'account' or an entity set name such as 'accounts' (letters, digits and underscores)",
                excerpt(&name)
            ),
        })
    }
}

impl TryFrom<&str> for TableName {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Error> {
        Self::try_from(name.to_owned())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TableName::try_from(String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_schema_names_only() {
        for good in ["account", "accounts", "new_widget", "_x1"] {
            assert!(TableName::try_from(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_TABLE_NAME + 1);
        for bad in [
            "",
            "1account",
            "accounts?$x=1",
            "a b",
            "accounts(1)",
            long.as_str(),
        ] {
            assert!(
                matches!(TableName::try_from(bad), Err(Error::InvalidTable { .. })),
                "{bad}"
            );
        }
    }
}
