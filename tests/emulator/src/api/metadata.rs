//! `EntityDefinitions`: the table metadata clients use to turn a logical name into an entity set name
//! and a primary key. Like the real service it has no paging, `$top`, `$orderby` or string functions.

use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::render::write_json;
use crate::odata::filter::{self, Properties};
use crate::reply::{Fail, Reply};
use crate::schema::{Edm, TableDef, TableKind};
use crate::store::Store;

const TYPE_NAME: &str = "Microsoft.Dynamics.CRM.EntityMetadata";

/// Metadata properties: name, type, and whether a bare request returns it.
const PROPERTIES: &[(&str, Edm)] = &[
    ("MetadataId", Edm::Guid),
    ("LogicalName", Edm::String),
    ("EntitySetName", Edm::String),
    ("SchemaName", Edm::String),
    ("LogicalCollectionName", Edm::String),
    ("PrimaryIdAttribute", Edm::String),
    ("PrimaryNameAttribute", Edm::String),
    ("ObjectTypeCode", Edm::Int32),
    ("IsCustomEntity", Edm::Boolean),
    ("ChangeTrackingEnabled", Edm::Boolean),
    ("IsOptimisticConcurrencyEnabled", Edm::Boolean),
    ("CanChangeTrackingBeEnabled", Edm::Boolean),
];

/// `CanChangeTrackingBeEnabled` is a complex value; filters reach its leaf as `.../Value`.
const CAN_TRACK_VALUE: usize = PROPERTIES.len();

#[derive(Debug)]
struct MetaProps;

impl Properties for MetaProps {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail> {
        if name == "CanChangeTrackingBeEnabled/Value" {
            return Ok((CAN_TRACK_VALUE, Edm::Boolean));
        }
        PROPERTIES
            .iter()
            .position(|(p, _)| *p == name)
            .filter(|i| PROPERTIES[*i].0 != "CanChangeTrackingBeEnabled")
            .map(|i| (i, PROPERTIES[i].1))
            .ok_or_else(|| Fail::no_such_property(name, TYPE_NAME))
    }

    fn allows_string_functions(&self) -> bool {
        false
    }
}

fn values(def: &TableDef) -> Vec<Value> {
    // The platform's own registration tables cannot have change tracking turned on.
    let can_track = def.kind == TableKind::Ordinary;
    vec![
        json!(def.metadata_id.to_string()),
        json!(def.logical_name),
        json!(def.entity_set_name),
        json!(def.schema_name),
        json!(def.entity_set_name),
        json!(def.primary_id),
        json!(def.primary_name),
        json!(def.object_type_code),
        json!(def.is_custom),
        json!(def.change_tracking),
        json!(true),
        json!({"Value": can_track, "CanBeChanged": can_track, "ManagedPropertyLogicalName": "canchangetrackingbeenabled"}),
        json!(can_track),
    ]
}

fn projection(select: Option<&str>) -> Result<(Vec<usize>, String), Fail> {
    let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
        return Ok(((0..PROPERTIES.len()).collect(), String::new()));
    };
    let mut columns = Vec::new();
    let mut names = Vec::new();
    for name in select.split(',').map(str::trim) {
        let i = PROPERTIES
            .iter()
            .position(|(p, _)| *p == name)
            .ok_or_else(|| Fail::no_such_property(name, TYPE_NAME))?;
        if !columns.contains(&i) {
            columns.push(i);
            names.push(name);
        }
    }
    // MetadataId is always returned.
    if !columns.contains(&0) {
        columns.push(0);
    }
    Ok((columns, format!("({})", names.join(","))))
}

fn write(out: &mut Vec<u8>, row: &[Value], columns: &[usize]) {
    out.push(b'{');
    for (n, i) in columns.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json(out, PROPERTIES[*i].0);
        out.push(b':');
        write_json(out, &row[*i]);
    }
    out.push(b'}');
}

/// `EntityDefinitions`, `EntityDefinitions(LogicalName='x')`, `EntityDefinitions(<MetadataId>)`.
pub fn entity_definitions(
    store: &Store,
    ctx: &Ctx,
    key: Option<&str>,
    rest: &str,
) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    for (name, present) in [
        ("$top", opts.top.is_some()),
        ("$orderby", opts.orderby.is_some()),
        ("$count", opts.count.is_some()),
        ("$skiptoken", opts.skiptoken.is_some()),
    ] {
        if present {
            return Err(Fail::unsupported_option(name));
        }
    }
    if opts.expand.is_some() || !rest.is_empty() {
        return Err(Fail::not_implemented(
            "attribute and relationship metadata (EntityDefinitions/Attributes, $expand)",
        ));
    }
    let (columns, context) = projection(opts.select.as_deref())?;
    if let Some(key) = key {
        let def = if let Some(quoted) = key.strip_prefix("LogicalName=") {
            let name = quoted
                .strip_prefix('\'')
                .and_then(|q| q.strip_suffix('\''))
                .ok_or_else(|| {
                    Fail::bad_query(format!("Bad Request - Error in query syntax: '{key}'."))
                })?;
            store
                .tables
                .iter()
                .find(|t| t.def.logical_name == name)
                .ok_or_else(|| {
                    Fail::new(
                        404,
                        "0x80040217",
                        format!("Could not find entity with logical name '{name}'."),
                    )
                })?
        } else {
            let id = Uuid::parse_str(key).map_err(|_| {
                Fail::bad_query(format!("Bad Request - Error in query syntax: '{key}'."))
            })?;
            store
                .tables
                .iter()
                .find(|t| t.def.metadata_id == id)
                .ok_or_else(|| {
                    Fail::new(
                        404,
                        "0x80040217",
                        format!("Could not find entity with MetadataId '{id}'."),
                    )
                })?
        };
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"@odata.context\":");
        write_json(
            &mut out,
            &format!("{}$metadata#EntityDefinitions{context}/$entity", ctx.base),
        );
        out.push(b',');
        let mut body = Vec::new();
        write(&mut body, &values(&def.def), &columns);
        out.extend_from_slice(&body[1..]);
        return Ok(Reply::raw_json(200, out));
    }
    let filter = opts
        .filter
        .as_deref()
        .map(|f| filter::parse(f, &MetaProps))
        .transpose()?;
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!("{}$metadata#EntityDefinitions{context}", ctx.base),
    );
    out.extend_from_slice(b",\"value\":[");
    let mut first = true;
    for table in &store.tables {
        let row = values(&table.def);
        if filter.as_ref().is_some_and(|f| !filter::matches(f, &row)) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write(&mut out, &row, &columns);
    }
    out.extend_from_slice(b"]}");
    Ok(Reply::raw_json(200, out))
}

/// The service document: every entity set.
pub fn service_document(store: &Store, ctx: &Ctx) -> Reply {
    let mut sets: Vec<Value> = store
        .tables
        .iter()
        .map(|t| json!({"name": t.def.entity_set_name, "kind": "EntitySet", "url": t.def.entity_set_name}))
        .collect();
    sets.push(
        json!({"name": "EntityDefinitions", "kind": "EntitySet", "url": "EntityDefinitions"}),
    );
    Reply::json(
        200,
        &json!({"@odata.context": format!("{}$metadata", ctx.base), "value": sets}),
    )
}

pub fn who_am_i(store: &Store, ctx: &Ctx) -> Reply {
    Reply::json(
        200,
        &json!({
            "@odata.context": format!("{}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", ctx.base),
            "BusinessUnitId": store.org.business_unit,
            "UserId": store.org.user,
            "OrganizationId": store.org.organization,
        }),
    )
}
