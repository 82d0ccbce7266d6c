//! The body of a delivery: the .NET `RemoteExecutionContext` as WCF's JSON serializer writes it.
//!
//! That is not Web API JSON. Members come in the order WCF writes them (alphabetical), maps are
//! arrays of `{"key", "value"}`, dates are `"/Date(<ms since the epoch>)/"`, and a value whose
//! declared type is `object` carries its data contract first, as `"__type"`: `Money`,
//! `OptionSetValue`, `EntityReference`, `Entity`. Every object here is a struct, never a
//! `serde_json::Map`, so `__type` stays first whatever map order `serde_json` was built with.
//!
//! An attribute is named by its logical name (`parentcustomerid`), not as the Web API reads it
//! (`_parentcustomerid_value`). Images leave out columns whose value is null, as Dataverse's do;
//! `Target` keeps a null the request wrote.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::delivery::{Image, Step};
use super::{Change, Message, ORGANIZATION_NAME};
use crate::clock;
use crate::format;
use crate::schema::{ColumnType, System, TableDef};
use crate::store::Store;

const ENTITY: &str = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts";
const ENTITY_REFERENCE: &str = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts";
const MONEY: &str = "Money:http://schemas.microsoft.com/xrm/2011/Contracts";
const OPTION_SET_VALUE: &str = "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts";

/// Dataverse sends a context of at most 256 KB whole; a larger one goes without its parameters,
/// its images and its parent context, and with `x-ms-dynamics-msg-size-exceeded`.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;

/// A serialised context.
#[derive(Debug)]
pub struct Built {
    pub body: Vec<u8>,
    pub size_exceeded: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RemoteExecutionContext {
    business_unit_id: Uuid,
    correlation_id: Uuid,
    depth: u32,
    initiating_user_id: Uuid,
    input_parameters: Vec<Pair<Parameter>>,
    is_executing_offline: bool,
    is_in_transaction: bool,
    isolation_mode: u32,
    message_name: &'static str,
    mode: u32,
    operation_created_on: String,
    operation_id: Uuid,
    organization_id: Uuid,
    organization_name: &'static str,
    output_parameters: Vec<Pair<Value>>,
    owning_extension: Reference,
    parent_context: Option<()>,
    post_entity_images: Vec<Pair<Entity>>,
    pre_entity_images: Vec<Pair<Entity>>,
    primary_entity_id: Uuid,
    primary_entity_name: String,
    request_id: Option<Uuid>,
    secondary_entity_name: &'static str,
    shared_variables: Vec<Pair<Value>>,
    stage: u32,
    user_id: Uuid,
}

/// One entry of a WCF dictionary.
#[derive(Debug, Serialize)]
struct Pair<T> {
    key: String,
    value: T,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Parameter {
    Entity(Entity),
    Reference(Reference),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entity {
    #[serde(rename = "__type")]
    data_contract: &'static str,
    attributes: Vec<Pair<Attribute>>,
    #[serde(rename = "EntityState")]
    state: Option<()>,
    formatted_values: Vec<Pair<String>>,
    id: Uuid,
    key_attributes: Vec<Pair<Value>>,
    logical_name: String,
    related_entities: Vec<Pair<Value>>,
    row_version: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Reference {
    /// Absent where the member's declared type is `EntityReference` already (`OwningExtension`).
    #[serde(rename = "__type", skip_serializing_if = "Option::is_none")]
    data_contract: Option<&'static str>,
    id: Uuid,
    key_attributes: Vec<Pair<Value>>,
    logical_name: String,
    name: Option<String>,
    row_version: Option<String>,
}

impl Reference {
    fn new(id: Uuid, logical_name: &str) -> Self {
        Self {
            data_contract: Some(ENTITY_REFERENCE),
            id,
            key_attributes: Vec::new(),
            logical_name: logical_name.to_owned(),
            name: None,
            row_version: None,
        }
    }
}

/// An attribute's value: a JSON primitive (text, number, yes/no, a date string, null) or a data
/// contract.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Attribute {
    Plain(Value),
    Typed(Typed),
    Reference(Reference),
}

#[derive(Debug, Serialize)]
struct Typed {
    #[serde(rename = "__type")]
    data_contract: &'static str,
    #[serde(rename = "Value")]
    value: Value,
}

/// `/Date(<ms>)/` for `secs` since the epoch.
fn wcf_date(secs: i64) -> String {
    format!("/Date({})/", secs.saturating_mul(1000))
}

/// Column `c`'s value in WCF's form; `None` when it cannot be read as its type, which the store
/// never leaves (and which is then sent as null rather than failing the delivery).
fn attribute(store: &Store, def: &TableDef, c: usize, value: &Value) -> Attribute {
    if value.is_null() {
        return Attribute::Plain(Value::Null);
    }
    let column = &def.columns[c];
    let id = || value.as_str().and_then(|s| Uuid::parse_str(s).ok());
    let converted = match &column.ty {
        ColumnType::Money => Some(Attribute::Typed(Typed {
            data_contract: MONEY,
            value: value.clone(),
        })),
        ColumnType::Choice { .. } => Some(Attribute::Typed(Typed {
            data_contract: OPTION_SET_VALUE,
            value: value.clone(),
        })),
        ColumnType::DateTime { .. }
        | ColumnType::System(System::CreatedOn | System::ModifiedOn) => value
            .as_str()
            .and_then(clock::parse_datetime)
            .map(|secs| Attribute::Plain(Value::String(wcf_date(secs)))),
        // A date-only value is midnight UTC of its day, as the platform holds it.
        ColumnType::DateOnly => value
            .as_str()
            .and_then(clock::parse_date)
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .map(|secs| Attribute::Plain(Value::String(wcf_date(secs)))),
        ColumnType::Lookup { navs } => id().map(|id| {
            let target = value
                .as_str()
                .and_then(|s| store.lookup_target(navs, s))
                .map(|(t, _)| store.tables[t].def.logical_name.as_str())
                .or_else(|| navs.first().map(|n| n.target.as_str()))
                .unwrap_or_default();
            Attribute::Reference(Reference::new(id, target))
        }),
        ColumnType::System(System::Reference) => id().map(|id| {
            let target = format::platform_table(column.attribute());
            Attribute::Reference(Reference::new(id, target))
        }),
        ColumnType::Id
        | ColumnType::Text { .. }
        | ColumnType::Whole { .. }
        | ColumnType::BigInt
        | ColumnType::Decimal
        | ColumnType::Float
        | ColumnType::YesNo
        | ColumnType::System(System::VersionNumber | System::FullName | System::Flag) => {
            Some(Attribute::Plain(value.clone()))
        }
    };
    converted.unwrap_or(Attribute::Plain(Value::Null))
}

fn entity(
    def: &TableDef,
    id: Uuid,
    attributes: Vec<Pair<Attribute>>,
    formatted_values: Vec<Pair<String>>,
) -> Entity {
    Entity {
        data_contract: ENTITY,
        attributes,
        state: None,
        formatted_values,
        id,
        key_attributes: Vec::new(),
        logical_name: def.logical_name.clone(),
        related_entities: Vec::new(),
        row_version: None,
    }
}

/// An image of `cells`: the listed columns or all of them, without nulls.
fn image(store: &Store, def: &TableDef, id: Uuid, cells: &[Value], spec: &Image) -> Entity {
    let columns: Vec<usize> = match &spec.columns {
        Some(listed) => listed.clone(),
        None => (0..def.columns.len()).collect(),
    };
    let present: Vec<usize> = columns
        .into_iter()
        .filter(|c| !cells[*c].is_null())
        .collect();
    let attributes = present
        .iter()
        .map(|c| Pair {
            key: def.columns[*c].attribute().to_owned(),
            value: attribute(store, def, *c, &cells[*c]),
        })
        .collect();
    // An image is the row as the platform read it, so it carries the values as the user sees
    // them, under the attribute's logical name, as a retrieved entity does.
    let formatted = present
        .iter()
        .filter_map(|c| {
            format::formatted(store, def, *c, &cells[*c]).map(|value| Pair {
                key: def.columns[*c].attribute().to_owned(),
                value,
            })
        })
        .collect();
    entity(def, id, attributes, formatted)
}

/// `Target`: for a create or an update, the columns the request set, the key, and for an update
/// the `modifiedon`/`modifiedby` the platform adds; for a delete, a reference to the row.
fn target(store: &Store, def: &TableDef, change: &Change) -> Parameter {
    if change.message == Message::Delete {
        return Parameter::Reference(Reference::new(change.id, &def.logical_name));
    }
    let mut attributes: Vec<Pair<Attribute>> = change
        .set
        .iter()
        .map(|(c, v)| Pair {
            key: def.columns[*c].attribute().to_owned(),
            value: attribute(store, def, *c, v),
        })
        .collect();
    let mut add = |c: usize| {
        if let Some(cells) = &change.after
            && !change.set.iter().any(|(i, _)| *i == c)
        {
            attributes.push(Pair {
                key: def.columns[c].attribute().to_owned(),
                value: attribute(store, def, c, &cells[c]),
            });
        }
    };
    add(def.idx.id);
    if change.message == Message::Update {
        add(def.idx.modified);
        if let Some(c) = def.column("_modifiedby_value") {
            add(c);
        }
    }
    // The target is what the request sent, not a row read back: it has no formatted values.
    Parameter::Entity(entity(def, change.id, attributes, Vec::new()))
}

/// The context `step` receives for `change`, cut down when it is over [`MAX_CONTEXT_BYTES`].
pub fn build(store: &Store, change: &Change, step: &Step, correlation: Uuid) -> Built {
    let def = &store.tables[change.table].def;
    let mut pre = Vec::new();
    let mut post = Vec::new();
    for spec in &step.images {
        if spec.pre
            && let Some(cells) = &change.before
        {
            pre.push(Pair {
                key: spec.alias.clone(),
                value: image(store, def, change.id, cells, spec),
            });
        }
        if spec.post
            && let Some(cells) = &change.after
        {
            post.push(Pair {
                key: spec.alias.clone(),
                value: image(store, def, change.id, cells, spec),
            });
        }
    }
    let output_parameters = match change.message {
        Message::Create => vec![Pair {
            key: "id".to_owned(),
            value: Value::String(change.id.to_string()),
        }],
        Message::Update | Message::Delete => Vec::new(),
    };
    // The user who made the change is the context's `UserId` and `InitiatingUserId`.
    let org = crate::store::Org {
        user: change.user,
        ..store.org
    };
    let mut context = RemoteExecutionContext {
        business_unit_id: org.business_unit,
        correlation_id: correlation,
        depth: 1,
        initiating_user_id: org.user,
        input_parameters: vec![Pair {
            key: "Target".to_owned(),
            value: target(store, def, change),
        }],
        is_executing_offline: false,
        is_in_transaction: false,
        isolation_mode: 1,
        message_name: change.message.name(),
        mode: 1,
        operation_created_on: wcf_date(change.at),
        operation_id: Uuid::new_v4(),
        organization_id: org.organization,
        organization_name: ORGANIZATION_NAME,
        output_parameters,
        owning_extension: Reference {
            data_contract: None,
            id: step.id,
            key_attributes: Vec::new(),
            logical_name: super::registration::STEP.to_owned(),
            name: Some(step.name.clone()),
            row_version: None,
        },
        parent_context: None,
        post_entity_images: post,
        pre_entity_images: pre,
        primary_entity_id: change.id,
        primary_entity_name: def.logical_name.clone(),
        request_id: None,
        secondary_entity_name: "none",
        shared_variables: Vec::new(),
        stage: 40,
        user_id: org.user,
    };
    let body = serialize(&context);
    if body.len() <= MAX_CONTEXT_BYTES {
        return Built {
            body,
            size_exceeded: false,
        };
    }
    context.input_parameters.clear();
    context.pre_entity_images.clear();
    context.post_entity_images.clear();
    context.parent_context = None;
    Built {
        body: serialize(&context),
        size_exceeded: true,
    }
}

fn serialize(context: &RemoteExecutionContext) -> Vec<u8> {
    // Plain data into a Vec: serialising cannot fail.
    serde_json::to_vec(context).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wcf_dates_count_milliseconds_from_the_epoch() {
        assert_eq!(wcf_date(1_506_384_247), "/Date(1506384247000)/");
        assert_eq!(wcf_date(0), "/Date(0)/");
    }

    #[test]
    fn a_data_contract_comes_first_in_its_object() {
        let money = Attribute::Typed(Typed {
            data_contract: MONEY,
            value: serde_json::json!(2.5),
        });
        let text = serde_json::to_string(&money).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"__type":"Money:http://schemas.microsoft.com/xrm/2011/Contracts","Value":2.5}"#
        );
        let reference =
            serde_json::to_string(&Reference::new(Uuid::nil(), "account")).unwrap_or_default();
        assert!(
            reference.starts_with(r#"{"__type":"EntityReference:"#),
            "{reference}"
        );
    }
}
