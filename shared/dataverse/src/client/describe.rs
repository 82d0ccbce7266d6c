//! A table's definition, as someone building a payload needs it: its columns (type, required level,
//! length, lookup targets, choice values), its primary id and name, and its alternate keys.
//!
//! `EntityDefinitions` serves this in pieces (Microsoft Learn, "Query table definitions using the Web
//! API"): the base `AttributeMetadata` of every column with the table, and each derived type's own
//! properties (`MaxLength`, `Targets`, `OptionSet`) only through a type-cast path. Selecting them on
//! the base collection is an error, and expanding everything unselected returns every property of
//! every column (hundreds of kilobytes for a common table). So: one request for the table, its
//! columns and keys, and one per derived type, sent together.

use serde::{Deserialize, Serialize};

use super::{Client, Table};
use crate::Error;
use crate::query::encode;
use crate::retry::Deadline;

/// What [`Client::describe`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableDescription {
    pub logical_name: String,
    pub schema_name: String,
    pub entity_set_name: String,
    pub display_name: Option<String>,
    pub primary_id: String,
    pub primary_name: Option<String>,
    /// In the order Dataverse lists them.
    pub columns: Vec<ColumnDescription>,
    pub keys: Vec<KeyDescription>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDescription {
    pub logical_name: String,
    pub schema_name: String,
    pub display_name: Option<String>,
    /// Dataverse's `AttributeType`: `String`, `Picklist`, `Lookup`, `DateTime`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `None`, `Recommended`, `ApplicationRequired` or `SystemRequired`.
    pub required_level: String,
    pub valid_for_create: bool,
    pub valid_for_update: bool,
    /// A column Dataverse derives from another (a lookup's name column): read, never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute_of: Option<String>,
    /// Text and memo columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Lookup columns: the tables a value may point at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// Choice, state and status columns: the values and their labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Choice>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub value: i64,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyDescription {
    pub name: String,
    pub columns: Vec<String>,
}

/// A Dataverse `Label`: only the user's own language is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Label {
    #[serde(default)]
    user_localized_label: Option<LocalizedLabel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LocalizedLabel {
    #[serde(default)]
    label: Option<String>,
}

impl Label {
    fn text(self) -> Option<String> {
        self.user_localized_label.and_then(|l| l.label)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Definition {
    logical_name: String,
    schema_name: String,
    entity_set_name: String,
    primary_id_attribute: String,
    #[serde(default)]
    primary_name_attribute: Option<String>,
    #[serde(default)]
    display_name: Label,
    #[serde(default)]
    attributes: Vec<ColumnMetadata>,
    #[serde(default)]
    keys: Vec<Key>,
}

/// One column's `AttributeMetadata`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ColumnMetadata {
    logical_name: String,
    schema_name: String,
    #[serde(default)]
    attribute_type: Option<String>,
    #[serde(default)]
    required_level: Option<Managed>,
    #[serde(default)]
    is_valid_for_create: Option<bool>,
    #[serde(default)]
    is_valid_for_update: Option<bool>,
    #[serde(default)]
    attribute_of: Option<String>,
    #[serde(default)]
    display_name: Label,
}

/// A managed property: `{"Value": ...}`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Managed {
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Key {
    schema_name: String,
    #[serde(default)]
    key_attributes: Vec<String>,
}

/// A type-cast collection: `{"value": [{"LogicalName", ...derived properties}]}`.
#[derive(Deserialize)]
struct Derived {
    value: Vec<DerivedAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DerivedAttribute {
    logical_name: String,
    #[serde(default)]
    max_length: Option<u64>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    #[serde(default)]
    option_set: Option<OptionSet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OptionSet {
    #[serde(default)]
    options: Vec<OptionMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OptionMetadata {
    value: i64,
    #[serde(default)]
    label: Label,
}

/// The derived types asked for: the properties each adds, and the option set to expand for choices.
const DERIVED: [(&str, &str, bool); 6] = [
    ("StringAttributeMetadata", "LogicalName,MaxLength", false),
    ("MemoAttributeMetadata", "LogicalName,MaxLength", false),
    ("LookupAttributeMetadata", "LogicalName,Targets", false),
    ("PicklistAttributeMetadata", "LogicalName", true),
    ("StateAttributeMetadata", "LogicalName", true),
    ("StatusAttributeMetadata", "LogicalName", true),
];

impl Client {
    /// `table`'s definition: see the module documentation. Seven requests, six of them at once.
    pub async fn describe(
        &self,
        table: &Table,
        deadline: Deadline,
    ) -> Result<TableDescription, Error> {
        let base = format!("EntityDefinitions(LogicalName='{}')", table.logical_name);
        let url = self.url(&format!(
            "{base}?$select=LogicalName,SchemaName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,DisplayName&$expand={}",
            encode(
                "Attributes($select=LogicalName,SchemaName,AttributeType,RequiredLevel,IsValidForCreate,IsValidForUpdate,AttributeOf,DisplayName),\
                 Keys($select=SchemaName,KeyAttributes)"
            )
        ))?;
        let definition = async {
            let answer = self.get_json(&url, None, deadline).await?;
            crate::transport::decode::<Definition>("EntityDefinitions", &answer.body)
        };
        let derived =
            futures_util::future::try_join_all(DERIVED.iter().map(|(kind, select, options)| {
                let base = &base;
                async move {
                    let expand = if *options {
                        format!("&$expand={}", encode("OptionSet($select=Options)"))
                    } else {
                        String::new()
                    };
                    let url = self.url(&format!(
                        "{base}/Attributes/Microsoft.Dynamics.CRM.{kind}?$select={select}{expand}"
                    ))?;
                    let answer = self.get_json(&url, None, deadline).await?;
                    crate::transport::decode::<Derived>("EntityDefinitions", &answer.body)
                }
            }));
        let (definition, derived) = futures_util::future::try_join(definition, derived).await?;
        Ok(assemble(definition, derived))
    }
}

fn assemble(definition: Definition, derived: Vec<Derived>) -> TableDescription {
    let mut extra: std::collections::HashMap<String, DerivedAttribute> = derived
        .into_iter()
        .flat_map(|d| d.value)
        .map(|a| (a.logical_name.clone(), a))
        .collect();
    let columns = definition
        .attributes
        .into_iter()
        .map(|a| {
            let more = extra.remove(&a.logical_name);
            let (max_length, targets, choices) = match more {
                Some(d) => (
                    d.max_length,
                    d.targets,
                    d.option_set.map(|set| {
                        set.options
                            .into_iter()
                            .map(|o| Choice {
                                value: o.value,
                                label: o.label.text(),
                            })
                            .collect()
                    }),
                ),
                None => (None, None, None),
            };
            ColumnDescription {
                logical_name: a.logical_name,
                schema_name: a.schema_name,
                display_name: a.display_name.text(),
                kind: a.attribute_type.unwrap_or_default(),
                required_level: a
                    .required_level
                    .map_or_else(|| "None".to_owned(), |r| r.value),
                valid_for_create: a.is_valid_for_create.unwrap_or(false),
                valid_for_update: a.is_valid_for_update.unwrap_or(false),
                attribute_of: a.attribute_of,
                max_length,
                targets,
                choices,
            }
        })
        .collect();
    TableDescription {
        logical_name: definition.logical_name,
        schema_name: definition.schema_name,
        entity_set_name: definition.entity_set_name,
        display_name: definition.display_name.text(),
        primary_id: definition.primary_id_attribute,
        primary_name: definition.primary_name_attribute,
        columns,
        keys: definition
            .keys
            .into_iter()
            .map(|k| KeyDescription {
                name: k.schema_name,
                columns: k.key_attributes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn derived_properties_join_their_columns() {
        let definition: Definition = serde_json::from_value(json!({
            "LogicalName": "account", "SchemaName": "Account", "EntitySetName": "accounts",
            "PrimaryIdAttribute": "accountid", "PrimaryNameAttribute": "name",
            "DisplayName": {"UserLocalizedLabel": {"Label": "Account", "LanguageCode": 1033}},
            "Attributes": [
                {"LogicalName": "name", "SchemaName": "Name", "AttributeType": "String",
                 "RequiredLevel": {"Value": "ApplicationRequired"}, "IsValidForCreate": true,
                 "IsValidForUpdate": true, "AttributeOf": null, "DisplayName": {"UserLocalizedLabel": null}},
                {"LogicalName": "industrycode", "SchemaName": "IndustryCode", "AttributeType": "Picklist",
                 "RequiredLevel": {"Value": "None"}, "IsValidForCreate": true, "IsValidForUpdate": true}
            ],
            "Keys": [{"SchemaName": "aws_accountnumber", "KeyAttributes": ["accountnumber"]}]
        }))
        .unwrap();
        let strings: Derived =
            serde_json::from_value(json!({"value": [{"LogicalName": "name", "MaxLength": 160}]}))
                .unwrap();
        let choices: Derived = serde_json::from_value(json!({"value": [{"LogicalName": "industrycode",
            "OptionSet": {"Options": [{"Value": 1, "Label": {"UserLocalizedLabel": {"Label": "Accounting"}}}]}}]}))
        .unwrap();
        let described = assemble(definition, vec![strings, choices]);
        assert_eq!(described.display_name.as_deref(), Some("Account"));
        assert_eq!(described.columns[0].max_length, Some(160));
        assert_eq!(described.columns[0].required_level, "ApplicationRequired");
        assert_eq!(described.columns[0].display_name, None);
        assert_eq!(
            described.columns[1].choices,
            Some(vec![Choice {
                value: 1,
                label: Some("Accounting".into())
            }])
        );
        assert_eq!(described.keys[0].columns, ["accountnumber"]);
    }
}
