//! The `RemoteExecutionContext` Dataverse posts to a webhook, and its rows in the Web API's shape.
//!
//! The context is the .NET type serialised by WCF's JSON serializer, not Web API JSON: maps are
//! arrays of `{"key", "value"}`, dates are `"\/Date(<ms>[+-hhmm])\/"`, and typed values are objects
//! tagged with `"__type"` (`EntityReference:…`, `OptionSetValue:…`, `Money:…`). Events carry rows
//! as the pollers publish them, so a row from a context is rewritten: a lookup becomes
//! `_<column>_value` holding the referenced id, a choice or an amount its plain number, a date an
//! ISO 8601 UTC time.

use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::trigger::Kind;

/// What a context could not be read for. Each is the sender's fault: the delivery is refused with
/// 400, and retrying it cannot help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error("the body is not a RemoteExecutionContext: {0}")]
    Shape(String),

    #[error("the message '{0}' is not one a webhook publishes (Create, Update or Delete)")]
    UnknownMessage(String),

    #[error("the entity image's attribute '{0}' has a value of an unknown shape")]
    Attribute(String),
}

/// The parts of a context an event is made from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Context {
    pub message_name: String,
    /// The table's logical name.
    pub primary_entity_name: String,
    pub primary_entity_id: Uuid,
    #[serde(default)]
    pub input_parameters: Vec<Pair>,
    #[serde(default)]
    pub pre_entity_images: Vec<Pair>,
    #[serde(default)]
    pub post_entity_images: Vec<Pair>,
    #[serde(default)]
    pub depth: Option<u32>,
    /// The user who initiated the operation ("the user account which initiated the action"), as
    /// text: read leniently, since only `ignore_own_changes` needs it.
    #[serde(default)]
    pub initiating_user_id: Option<Value>,
    /// The user the step runs as: the caller unless the step was registered to run as another.
    #[serde(default)]
    pub user_id: Option<Value>,
}

/// One entry of a WCF dictionary.
#[derive(Debug, Deserialize)]
pub struct Pair {
    pub key: String,
    pub value: Value,
}

impl Context {
    /// Reads a body. The message names the field that did not fit, never a value.
    pub fn parse(body: &[u8]) -> Result<Self, ContextError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let problem = match e.inner().classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!(
                        "not JSON (line {}, column {})",
                        e.inner().line(),
                        e.inner().column()
                    )
                }
                _ => match crate::input::SerdeProblem::of(e.inner()) {
                    crate::input::SerdeProblem::Missing(name) => format!("missing `{name}`"),
                    _ => format!("`{}` is not what Dataverse sends there", e.path()),
                },
            };
            ContextError::Shape(problem)
        })
    }

    /// Who made the change: `InitiatingUserId`, the user who started the operation, which stays
    /// the caller even when the step is registered to run as someone else; `UserId` when it is
    /// missing.
    pub fn caller(&self) -> Option<Uuid> {
        [&self.initiating_user_id, &self.user_id]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|text| Uuid::parse_str(text).ok())
            .find(|id| !id.is_nil())
    }

    /// Which trigger the message stands for.
    pub fn kind(&self) -> Result<Kind, ContextError> {
        match self.message_name.as_str() {
            "Create" => Ok(Kind::Created),
            "Update" => Ok(Kind::Updated),
            "Delete" => Ok(Kind::Deleted),
            other => Err(ContextError::UnknownMessage(crate::excerpt(other))),
        }
    }

    /// The fullest row the context carries, in the Web API's shape: the first post-image (the row as
    /// the operation left it, with the columns the step registered), else for a creation the
    /// `Target` it was made from. `None` when it has neither, as after Dataverse cut an oversized
    /// context down, or for an update without a post-image (its `Target` holds only what changed).
    ///
    /// With `formatted`, the entity's `FormattedValues` and its lookups' names and tables become the
    /// annotations the Web API writes beside each column (see [`annotate`]).
    pub fn row(
        &self,
        primary_id: &str,
        formatted: bool,
    ) -> Result<Option<Map<String, Value>>, ContextError> {
        let image = self.post_entity_images.first().map(|p| &p.value);
        let entity = match self.kind() {
            Ok(Kind::Created) => image.or_else(|| self.target_entity()),
            Ok(Kind::Updated) => image,
            _ => None,
        };
        entity
            .map(|e| web_api_row(e, primary_id, self.primary_entity_id, formatted))
            .transpose()
    }

    /// The `Target` entity: what the request set, for a Create or an Update.
    fn target_entity(&self) -> Option<&Value> {
        self.input_parameters
            .iter()
            .find(|p| p.key == "Target")
            .map(|p| &p.value)
            .filter(|v| v.get("Attributes").is_some())
    }

    /// The columns the request set (the `Target`), in the Web API's shape.
    pub fn target(&self, primary_id: &str) -> Result<Option<Map<String, Value>>, ContextError> {
        self.target_entity()
            .map(|e| web_api_row(e, primary_id, self.primary_entity_id, false))
            .transpose()
    }

    /// The first pre-image, in the Web API's shape: the row before the operation.
    pub fn before(&self, primary_id: &str) -> Result<Option<Map<String, Value>>, ContextError> {
        self.pre_entity_images
            .first()
            .map(|p| web_api_row(&p.value, primary_id, self.primary_entity_id, false))
            .transpose()
    }
}

/// The annotation the Web API puts beside a value for its display text.
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
/// The annotation beside a lookup for the logical name of the table it points to.
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

/// Adds to `row` the annotations the Web API would write with formatted values asked for: each
/// entry of the entity's `FormattedValues` as `<column>@OData.Community.Display.V1.FormattedValue`
/// (a lookup's under `_<name>_value`), and for each lookup the logical name of its table, and its
/// `Name` when `FormattedValues` has none. A context does not say which navigation property leads to
/// a lookup's table, so `associatednavigationproperty` is not written.
fn annotate(entity: &Value, row: &mut Map<String, Value>) {
    let pairs = |name: &str| {
        entity
            .get(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair.get("key")?.as_str()?, pair.get("value")?)))
    };
    let mut lookups = std::collections::HashSet::new();
    for (key, value) in pairs("Attributes") {
        let Some(reference) = value.as_object().filter(|v| {
            v.get("__type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("EntityReference"))
        }) else {
            continue;
        };
        lookups.insert(key);
        let column = format!("_{key}_value");
        if let Some(table) = reference.get("LogicalName").filter(|v| v.is_string()) {
            row.insert(format!("{column}{LOOKUP_TABLE}"), table.clone());
        }
        if let Some(name) = reference.get("Name").filter(|v| v.is_string()) {
            row.insert(format!("{column}{FORMATTED}"), name.clone());
        }
    }
    for (key, text) in pairs("FormattedValues") {
        if !text.is_string() {
            continue;
        }
        let column = if lookups.contains(key) {
            format!("_{key}_value")
        } else {
            key.to_owned()
        };
        row.insert(format!("{column}{FORMATTED}"), text.clone());
    }
}

/// An entity's attributes as the Web API returns a row.
fn web_api_row(
    entity: &Value,
    primary_id: &str,
    id: Uuid,
    formatted: bool,
) -> Result<Map<String, Value>, ContextError> {
    let attributes = entity
        .get("Attributes")
        .and_then(Value::as_array)
        .ok_or_else(|| ContextError::Shape("an entity image has no `Attributes` list".into()))?;
    let mut row = Map::new();
    for pair in attributes {
        let Some(key) = pair.get("key").and_then(Value::as_str) else {
            return Err(ContextError::Shape("an attribute has no `key`".into()));
        };
        let value = pair.get("value").unwrap_or(&Value::Null);
        match web_api_value(value) {
            Some(Converted::Plain(v)) => {
                row.insert(key.to_owned(), v);
            }
            Some(Converted::Lookup(target)) => {
                row.insert(format!("_{key}_value"), target);
            }
            // Collections (activity parties) are not columns of the row in the Web API.
            Some(Converted::Skip) => {}
            None => return Err(ContextError::Attribute(crate::excerpt(key))),
        }
    }
    // The key is in the image only when the step asked for it; the row always carries it.
    row.entry(primary_id.to_owned())
        .or_insert_with(|| Value::String(id.to_string()));
    if let Some(version) = row.get("versionnumber").and_then(Value::as_u64) {
        row.insert(
            "@odata.etag".into(),
            Value::String(format!("W/\"{version}\"")),
        );
    }
    if formatted {
        annotate(entity, &mut row);
    }
    Ok(row)
}

enum Converted {
    Plain(Value),
    /// A lookup: its column becomes `_<name>_value`.
    Lookup(Value),
    Skip,
}

/// One WCF value as the Web API writes it; `None` for a shape not known.
fn web_api_value(value: &Value) -> Option<Converted> {
    let converted = match value {
        Value::String(text) => match wcf_date(text) {
            Some(iso) => Converted::Plain(Value::String(iso)),
            None => Converted::Plain(value.clone()),
        },
        Value::Object(fields) => {
            let kind = fields.get("__type").and_then(Value::as_str).unwrap_or("");
            let name = kind.split(':').next().unwrap_or("");
            match name {
                "EntityReference" => {
                    let id = fields.get("Id").and_then(Value::as_str)?;
                    Converted::Lookup(Value::String(id.to_ascii_lowercase()))
                }
                "OptionSetValue" | "Money" | "BooleanManagedProperty" => {
                    Converted::Plain(fields.get("Value")?.clone())
                }
                "EntityCollection" => Converted::Skip,
                // An untagged object is plain data (a JSON column's parsed value, for one).
                "" => Converted::Plain(value.clone()),
                _ => return None,
            }
        }
        // A multi-select choice: a list of `OptionSetValue`s, which the Web API writes as one string
        // of comma-separated numbers.
        Value::Array(items) => {
            let numbers: Option<Vec<String>> = items
                .iter()
                .map(|item| {
                    item.get("Value")
                        .and_then(Value::as_i64)
                        .map(|n| n.to_string())
                })
                .collect();
            Converted::Plain(Value::String(numbers?.join(",")))
        }
        _ => Converted::Plain(value.clone()),
    };
    Some(converted)
}

/// `/Date(1506384247000)/` or `/Date(1506409448000-0700)/` as an ISO 8601 UTC time to the second,
/// as the Web API writes date-times. The milliseconds count from the Unix epoch in UTC; the offset
/// only says where the sender was.
fn wcf_date(text: &str) -> Option<String> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    // The offset's sign, if any, comes after the first digit (the milliseconds may be negative).
    let end = inner
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map_or(inner.len(), |(i, _)| i);
    let millis: i64 = inner[..end].parse().ok()?;
    let at = OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)).ok()?;
    at.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_wcf_dates_with_and_without_offsets() {
        assert_eq!(
            wcf_date("/Date(1506384247000)/").unwrap(),
            "2017-09-26T00:04:07Z"
        );
        assert_eq!(
            wcf_date("/Date(1506409448000-0700)/").unwrap(),
            "2017-09-26T07:04:08Z"
        );
        assert_eq!(wcf_date("/Date(-1000)/").unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(wcf_date("Date(1)"), None);
        assert_eq!(wcf_date("/Date(x)/"), None);
    }

    #[test]
    fn rewrites_data_contract_values_as_the_web_api_writes_them() {
        let id = Uuid::from_u128(9);
        let entity = json!({"Attributes": [
            {"key": "firstname", "value": "Ada"},
            {"key": "numberofemployees", "value": 12},
            {"key": "createdon", "value": "/Date(1506384247000)/"},
            {"key": "parentcustomerid", "value": {"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Id": "6D81597F-0000-0000-0000-000000000001", "LogicalName": "account", "Name": "Contoso"}},
            {"key": "statuscode", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 1}},
            {"key": "creditlimit", "value": {"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 250.5}},
            {"key": "tags", "value": [{"__type": "OptionSetValue:x", "Value": 3}, {"__type": "OptionSetValue:x", "Value": 5}]},
            {"key": "versionnumber", "value": 4711},
            {"key": "description", "value": null}
        ]});
        let row = web_api_row(&entity, "contactid", id, false).unwrap();
        assert_eq!(
            Value::Object(row),
            json!({
                "firstname": "Ada", "numberofemployees": 12, "createdon": "2017-09-26T00:04:07Z",
                "_parentcustomerid_value": "6d81597f-0000-0000-0000-000000000001",
                "statuscode": 1, "creditlimit": 250.5, "tags": "3,5", "versionnumber": 4711,
                "description": null, "contactid": id.to_string(), "@odata.etag": "W/\"4711\""
            })
        );
        let odd = json!({"Attributes": [{"key": "x", "value": {"__type": "Unheard:of", "V": 1}}]});
        assert!(matches!(
            web_api_row(&odd, "contactid", id, false),
            Err(ContextError::Attribute(name)) if name == "x"
        ));
    }

    #[test]
    fn formatted_values_become_the_web_apis_annotations() {
        let id = Uuid::from_u128(9);
        let entity = json!({"Attributes": [
            {"key": "statuscode", "value": {"__type": "OptionSetValue:x", "Value": 1}},
            {"key": "parentcustomerid", "value": {"__type": "EntityReference:x",
                "Id": "6D81597F-0000-0000-0000-000000000001", "LogicalName": "account", "Name": "Contoso"}}
        ], "FormattedValues": [
            {"key": "statuscode", "value": "Active"},
            {"key": "parentcustomerid", "value": "Contoso Ltd"}
        ]});
        let row = web_api_row(&entity, "contactid", id, true).unwrap();
        assert_eq!(
            row["statuscode@OData.Community.Display.V1.FormattedValue"],
            "Active"
        );
        assert_eq!(
            row["_parentcustomerid_value@OData.Community.Display.V1.FormattedValue"],
            "Contoso Ltd"
        );
        assert_eq!(
            row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"],
            "account"
        );
        let plain = web_api_row(&entity, "contactid", id, false).unwrap();
        assert!(plain.keys().all(|k| !k.contains('@') || k == "@odata.etag"));
    }

    #[test]
    fn the_caller_is_the_initiating_user_then_the_user() {
        let body = |extra: &str| {
            format!(
                r#"{{"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "00000000-0000-0000-0000-000000000001"{extra}}}"#
            )
        };
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        let both = Context::parse(
            body(&format!(r#", "InitiatingUserId": "{a}", "UserId": "{b}""#)).as_bytes(),
        )
        .unwrap();
        assert_eq!(both.caller(), Some(Uuid::parse_str(a).unwrap()));
        let user = Context::parse(body(&format!(r#", "UserId": "{b}""#)).as_bytes()).unwrap();
        assert_eq!(user.caller(), Some(Uuid::parse_str(b).unwrap()));
        assert_eq!(Context::parse(body("").as_bytes()).unwrap().caller(), None);
    }

    #[test]
    fn names_what_is_missing_without_quoting_values() {
        let missing =
            Context::parse(br#"{"MessageName": "Create", "PrimaryEntityName": "contact"}"#);
        assert_eq!(
            missing.unwrap_err().to_string(),
            "the body is not a RemoteExecutionContext: missing `PrimaryEntityId`"
        );
        let wrong = Context::parse(
            br#"{"MessageName": "Create", "PrimaryEntityName": "contact", "PrimaryEntityId": "secret-ish"}"#,
        );
        let message = wrong.unwrap_err().to_string();
        assert!(
            message.contains("PrimaryEntityId") && !message.contains("secret-ish"),
            "{message}"
        );
        assert!(
            Context::parse(b"not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let assign = Context::parse(
            br#"{"MessageName": "Assign", "PrimaryEntityName": "contact", "PrimaryEntityId": "00000000-0000-0000-0000-000000000001"}"#,
        )
        .unwrap();
        assert!(matches!(assign.kind(), Err(ContextError::UnknownMessage(m)) if m == "Assign"));
    }
}
