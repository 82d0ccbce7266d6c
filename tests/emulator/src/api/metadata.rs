//! `EntityDefinitions`: the table metadata clients use to turn a logical name into an entity set name
//! and a primary key. Like the real service it has no paging, `$top`, `$orderby` or string functions.
//!
//! Of the navigation properties, only `Keys` (the table's alternate keys, as `EntityKeyMetadata`) is
//! served: `EntityDefinitions(LogicalName='account')/Keys` and `$expand=Keys`, with or without a nested
//! `$select`.

use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::render::write_json;
use crate::keys;
use crate::odata::filter::{self, Properties};
use crate::reply::{Fail, Reply};
use crate::schema::{Edm, TableDef, TableKind};
use crate::store::Store;

const TYPE_NAME: &str = "Microsoft.Dynamics.CRM.EntityMetadata";
const KEY_TYPE_NAME: &str = "Microsoft.Dynamics.CRM.EntityKeyMetadata";

/// `EntityKeyMetadata` properties, `MetadataId` first (always returned).
const KEY_PROPERTIES: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntityLogicalName",
    "KeyAttributes",
    "EntityKeyIndexStatus",
];

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

/// The properties a `$select` of `properties` (whose first is `MetadataId`) picks, and the list the
/// context URL names; every property and no list without one.
fn projection_of(
    properties: &[&str],
    type_name: &str,
    select: Option<&str>,
) -> Result<(Vec<usize>, Option<String>), Fail> {
    let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
        return Ok(((0..properties.len()).collect(), None));
    };
    let mut columns = Vec::new();
    let mut names = Vec::new();
    for name in select.split(',').map(str::trim) {
        let i = properties
            .iter()
            .position(|p| *p == name)
            .ok_or_else(|| Fail::no_such_property(name, type_name))?;
        if !columns.contains(&i) {
            columns.push(i);
            names.push(name);
        }
    }
    // MetadataId is always returned.
    if !columns.contains(&0) {
        columns.push(0);
    }
    Ok((columns, Some(names.join(","))))
}

fn projection(select: Option<&str>) -> Result<(Vec<usize>, Option<String>), Fail> {
    let names: Vec<&str> = PROPERTIES.iter().map(|(p, _)| *p).collect();
    projection_of(&names, TYPE_NAME, select)
}

/// `$expand=Keys` or `$expand=Keys($select=...)`: the key properties to write, and the context URL's
/// part for them. Other expansions are not implemented.
fn expand_keys(expand: Option<&str>) -> Result<Option<(Vec<usize>, String)>, Fail> {
    let Some(expand) = expand.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let nested = match expand.strip_prefix("Keys") {
        Some("") => None,
        Some(rest) => match rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .map(|r| r.strip_prefix("$select="))
        {
            Some(Some(select)) => Some(select),
            _ => {
                return Err(Fail::not_implemented(format!(
                    "the $expand '{expand}' (Keys and Keys($select=...) are served)"
                )));
            }
        },
        None => {
            return Err(Fail::not_implemented(
                "attribute and relationship metadata (EntityDefinitions/Attributes, $expand other than Keys)",
            ));
        }
    };
    let (columns, names) = projection_of(KEY_PROPERTIES, KEY_TYPE_NAME, nested)?;
    Ok(Some((
        columns,
        format!("Keys({})", names.unwrap_or_default()),
    )))
}

/// The context URL's select list: `(A,B)`, `(A,Keys(C))`, or nothing.
fn context_list(selected: Option<String>, expanded: Option<&str>) -> String {
    match (selected, expanded) {
        (None, None) => String::new(),
        (Some(s), None) => format!("({s})"),
        (None, Some(e)) => format!("({e})"),
        (Some(s), Some(e)) => format!("({s},{e})"),
    }
}

fn write_props(out: &mut Vec<u8>, names: &[&str], row: &[Value], columns: &[usize]) {
    for (n, i) in columns.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json(out, names[*i]);
        out.push(b':');
        write_json(out, &row[*i]);
    }
}

/// One `EntityMetadata`, with its `Keys` when they are expanded.
fn write(out: &mut Vec<u8>, def: &TableDef, columns: &[usize], keys: Option<&[usize]>) {
    let names: Vec<&str> = PROPERTIES.iter().map(|(p, _)| *p).collect();
    out.push(b'{');
    write_props(out, &names, &values(def), columns);
    if let Some(key_columns) = keys {
        out.extend_from_slice(b",\"Keys\":");
        write_keys(out, def, key_columns);
    }
    out.push(b'}');
}

/// A table's keys as a JSON array of `EntityKeyMetadata`.
fn write_keys(out: &mut Vec<u8>, def: &TableDef, columns: &[usize]) {
    out.push(b'[');
    for (n, key) in def.keys.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let row = [
            json!(key.metadata_id.to_string()),
            json!(key.logical_name),
            json!(key.schema_name),
            json!(def.logical_name),
            json!(keys::attributes(def, key)),
            // The index is built at once (see `crate::keys`), so no key is ever Pending here.
            json!("Active"),
        ];
        out.push(b'{');
        write_props(out, KEY_PROPERTIES, &row, columns);
        out.push(b'}');
    }
    out.push(b']');
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
    let keys_path = rest == "Keys" && key.is_some();
    if !rest.is_empty() && !keys_path {
        return Err(Fail::not_implemented(
            "attribute and relationship metadata (EntityDefinitions/Attributes, $expand other than Keys)",
        ));
    }
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
        if keys_path {
            return keys_of(ctx, &def.def);
        }
        let (columns, selected) = projection(opts.select.as_deref())?;
        let expanded = expand_keys(opts.expand.as_deref())?;
        let context = context_list(selected, expanded.as_ref().map(|(_, e)| e.as_str()));
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"@odata.context\":");
        write_json(
            &mut out,
            &format!("{}$metadata#EntityDefinitions{context}/$entity", ctx.base),
        );
        out.push(b',');
        let mut body = Vec::new();
        write(
            &mut body,
            &def.def,
            &columns,
            expanded.as_ref().map(|(k, _)| k.as_slice()),
        );
        out.extend_from_slice(&body[1..]);
        return Ok(Reply::raw_json(200, out));
    }
    let (columns, selected) = projection(opts.select.as_deref())?;
    let expanded = expand_keys(opts.expand.as_deref())?;
    let context = context_list(selected, expanded.as_ref().map(|(_, e)| e.as_str()));
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
        write(
            &mut out,
            &table.def,
            &columns,
            expanded.as_ref().map(|(k, _)| k.as_slice()),
        );
    }
    out.extend_from_slice(b"]}");
    Ok(Reply::raw_json(200, out))
}

/// `EntityDefinitions(LogicalName='account')/Keys`: the table's alternate keys, with `$select`.
fn keys_of(ctx: &Ctx, def: &TableDef) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    if opts.filter.is_some() || opts.expand.is_some() {
        return Err(Fail::not_implemented("$filter and $expand on Keys"));
    }
    let (columns, selected) = projection_of(KEY_PROPERTIES, KEY_TYPE_NAME, opts.select.as_deref())?;
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!(
            "{}$metadata#EntityDefinitions('{}')/Keys{}",
            ctx.base,
            def.logical_name,
            context_list(selected, None)
        ),
    );
    out.extend_from_slice(b",\"value\":");
    write_keys(&mut out, def, &columns);
    out.push(b'}');
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
