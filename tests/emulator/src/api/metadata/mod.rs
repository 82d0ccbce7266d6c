//! `EntityDefinitions`: the table metadata clients use to turn a logical name into an entity set name
//! and a primary key, and to describe a table. Like the real service it has no paging, `$top`,
//! `$orderby` or string functions.
//!
//! | Path | What |
//! |---|---|
//! | `EntityDefinitions`, `EntityDefinitions(LogicalName='x')`, `EntityDefinitions(<MetadataId>)` | `EntityMetadata`, with `$select`, `$filter` (on the collection) and `$expand` of the navigation properties below, each with a nested `$select` and `$filter` |
//! | `EntityDefinitions(...)/Attributes`, `.../Attributes/Microsoft.Dynamics.CRM.<type>`, `.../Attributes(LogicalName='x')[/<type>]` | the table's columns as `AttributeMetadata` ([`attributes`]) |
//! | `EntityDefinitions(...)/Keys` | its alternate keys as `EntityKeyMetadata` |
//! | `EntityDefinitions(...)/ManyToOneRelationships`, `/OneToManyRelationships`, `/ManyToManyRelationships` | its relationships ([`relationships`]) |

mod attributes;
mod relationships;

use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::render::write_json;
use crate::keys;
use crate::odata::filter::{self, Expr, Properties};
use crate::odata::query::split_top_level;
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
    // A `Label`; the emulator's tables are displayed by their schema names.
    ("DisplayName", Edm::String),
];

/// `EntityMetadata`'s collection-valued navigation properties, which `$expand` and paths reach.
const NAVIGATION: &[&str] = &[
    "Attributes",
    "Keys",
    "ManyToOneRelationships",
    "OneToManyRelationships",
    "ManyToManyRelationships",
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
            // Complex values: only `CanChangeTrackingBeEnabled/Value` can be compared.
            .filter(|i| {
                !matches!(
                    PROPERTIES[*i].0,
                    "CanChangeTrackingBeEnabled" | "DisplayName"
                )
            })
            .map(|i| (i, PROPERTIES[i].1))
            .ok_or_else(|| Fail::no_such_property(name, TYPE_NAME))
    }

    fn allows_string_functions(&self) -> bool {
        false
    }

    fn allows_enum_literals(&self) -> bool {
        true
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
        label(
            Some(&def.schema_name),
            &format!("{}/display", def.logical_name),
        ),
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

/// How a metadata property can be filtered on.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// A primitive or enum value.
    Prim(Edm),
    /// A complex value whose primitive `Value` filters reach as `Name/Value` (`RequiredLevel/Value`).
    Leaf(Edm),
    /// Labels and lists: selectable, not filterable.
    Other,
}

/// A metadata type: its qualified name and its properties, `MetadataId` first.
#[derive(Debug, Clone)]
struct MetaType {
    name: String,
    props: Vec<(&'static str, Ty)>,
}

/// One metadata object: its properties' values, in the order they are written.
type Object = Vec<(&'static str, Value)>;

/// `0x80060888`: a property the type does not have, in a `$select` or `$filter` of attribute or
/// relationship metadata.
fn no_such(name: &str, type_name: &str) -> Fail {
    Fail::bad_query(format!(
        "Could not find a property named '{name}' on type '{type_name}'."
    ))
}

impl MetaType {
    /// The properties a `$select` names, in its order (all of them without one). `MetadataId` is
    /// written whether or not it is named.
    fn select(&self, select: Option<&str>) -> Result<Option<Vec<&'static str>>, Fail> {
        let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let mut names = Vec::new();
        for name in select.split(',').map(str::trim) {
            let known = self
                .props
                .iter()
                .find(|(p, _)| *p == name)
                .map(|(p, _)| *p)
                .ok_or_else(|| no_such(name, &self.name))?;
            if !names.contains(&known) {
                names.push(known);
            }
        }
        Ok(Some(names))
    }

    fn filter(&self, filter: Option<&str>) -> Result<Option<Expr>, Fail> {
        filter
            .filter(|f| !f.trim().is_empty())
            .map(|f| filter::parse(f, &Filterable(self)))
            .transpose()
    }

    /// Whether `object` passes `expr`, whose properties index this type's.
    fn matches(&self, expr: Option<&Expr>, object: &Object) -> bool {
        let Some(expr) = expr else {
            return true;
        };
        let row: Vec<Value> = self
            .props
            .iter()
            .map(|(name, ty)| {
                let value = object
                    .iter()
                    .find(|(p, _)| p == name)
                    .map_or(&Value::Null, |(_, v)| v);
                match ty {
                    Ty::Prim(_) => value.clone(),
                    Ty::Leaf(_) => value.get("Value").cloned().unwrap_or(Value::Null),
                    Ty::Other => Value::Null,
                }
            })
            .collect();
        filter::matches(expr, &row)
    }
}

/// A metadata type's filterable properties, for the `$filter` parser.
#[derive(Debug)]
struct Filterable<'a>(&'a MetaType);

impl Properties for Filterable<'_> {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail> {
        for (i, (prop, ty)) in self.0.props.iter().enumerate() {
            match ty {
                Ty::Prim(edm) if *prop == name => return Ok((i, *edm)),
                Ty::Leaf(edm) if name.strip_suffix("/Value") == Some(prop) => {
                    return Ok((i, *edm));
                }
                _ => {}
            }
        }
        Err(no_such(name, &self.0.name))
    }

    fn allows_string_functions(&self) -> bool {
        false
    }

    fn allows_enum_literals(&self) -> bool {
        true
    }
}

/// Writes `{"@odata.type": ..., selected properties..., "MetadataId": ..., expansions...}`.
fn write_object(
    out: &mut Vec<u8>,
    odata_type: Option<&str>,
    object: &Object,
    select: Option<&[&str]>,
    expansions: &[(&str, Vec<u8>)],
) {
    out.push(b'{');
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json(out, name);
        out.push(b':');
    };
    if let Some(odata_type) = odata_type {
        field(out, "@odata.type");
        write_json(out, &format!("#{odata_type}"));
    }
    let value = |name: &str| {
        object
            .iter()
            .find(|(p, _)| *p == name)
            .map_or(&Value::Null, |(_, v)| v)
    };
    match select {
        None => {
            for (name, v) in object {
                field(out, name);
                write_json(out, v);
            }
        }
        Some(names) => {
            for name in names
                .iter()
                .chain((!names.contains(&"MetadataId")).then_some(&"MetadataId"))
            {
                field(out, name);
                write_json(out, value(name));
            }
        }
    }
    for (name, json) in expansions {
        field(out, name);
        out.extend_from_slice(json);
    }
    out.push(b'}');
}

/// A `Label`: the text in 1033, the only language the emulator has. `seed` makes its `MetadataId`.
fn label(text: Option<&str>, seed: &str) -> Value {
    match text {
        None => json!({"LocalizedLabels": [], "UserLocalizedLabel": null}),
        Some(text) => {
            let localized = json!({
                "Label": text,
                "LanguageCode": 1033,
                "IsManaged": false,
                "MetadataId": crate::schema::stable_id(&format!("label/{seed}")),
                "HasChanged": null,
            });
            json!({"LocalizedLabels": [localized.clone()], "UserLocalizedLabel": localized})
        }
    }
}

/// One `$expand` item with its nested options: `Attributes($select=LogicalName;$filter=...)`.
#[derive(Debug)]
struct ExpandItem<'a> {
    name: &'a str,
    select: Option<&'a str>,
    filter: Option<&'a str>,
}

/// Splits an `$expand` into its items and each item's `$select` and `$filter`; other nested options
/// are not implemented.
fn parse_expand(expand: Option<&str>) -> Result<Vec<ExpandItem<'_>>, Fail> {
    let Some(expand) = expand.filter(|e| !e.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for item in split_top_level(expand) {
        let (name, nested) = match item.split_once('(') {
            Some((name, rest)) => {
                let nested = rest.strip_suffix(')').ok_or_else(|| {
                    Fail::bad_query(format!("Bad Request - Error in query syntax: '{item}'."))
                })?;
                (name.trim(), nested)
            }
            None => (item, ""),
        };
        let mut parsed = ExpandItem {
            name,
            select: None,
            filter: None,
        };
        for option in nested.split(';').map(str::trim).filter(|o| !o.is_empty()) {
            match option.split_once('=') {
                Some(("$select", value)) => parsed.select = Some(value),
                Some(("$filter", value)) => parsed.filter = Some(value),
                _ => {
                    return Err(Fail::not_implemented(format!(
                        "the nested option '{option}' inside $expand on metadata"
                    )));
                }
            }
        }
        items.push(parsed);
    }
    Ok(items)
}

/// One navigation property of `EntityMetadata`, expanded or addressed by path, with its options
/// checked once for every table it is written for.
#[derive(Debug)]
enum Expansion {
    Keys {
        columns: Vec<usize>,
        context: String,
    },
    Attributes(attributes::Query),
    Relationships(relationships::Query),
}

impl Expansion {
    fn parse(item: &ExpandItem<'_>) -> Result<Self, Fail> {
        let nested = |names: Option<Vec<&str>>| match names {
            None => item.name.to_owned(),
            Some(names) => format!("{}({})", item.name, names.join(",")),
        };
        match item.name {
            "Keys" => {
                if item.filter.is_some() {
                    return Err(Fail::not_implemented("$filter on Keys"));
                }
                let (columns, names) = projection_of(KEY_PROPERTIES, KEY_TYPE_NAME, item.select)?;
                Ok(Expansion::Keys {
                    columns,
                    context: format!("Keys({})", names.unwrap_or_default()),
                })
            }
            "Attributes" => {
                let query = attributes::Query::parse(None, item.select, item.filter, None)?;
                let context = nested(query.selected());
                Ok(Expansion::Attributes(query.with_context(context)))
            }
            other => match relationships::Which::of(other) {
                Some(which) => {
                    let query = relationships::Query::parse(which, item.select, item.filter)?;
                    let context = nested(query.selected());
                    Ok(Expansion::Relationships(query.with_context(context)))
                }
                None => Err(Fail::no_such_property(other, TYPE_NAME)),
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Expansion::Keys { .. } => "Keys",
            Expansion::Attributes(_) => "Attributes",
            Expansion::Relationships(query) => query.which.name(),
        }
    }

    fn context(&self) -> &str {
        match self {
            Expansion::Keys { context, .. } => context,
            Expansion::Attributes(query) => query.context(),
            Expansion::Relationships(query) => query.context(),
        }
    }

    /// The JSON array for table `t`.
    fn write(&self, store: &Store, t: usize) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Expansion::Keys { columns, .. } => write_keys(&mut out, &store.tables[t].def, columns),
            Expansion::Attributes(query) => query.write_array(&mut out, store, t),
            Expansion::Relationships(query) => query.write_array(&mut out, store, t),
        }
        out
    }
}

/// One `EntityMetadata`, with the navigation properties `$expand` asked for.
fn write(out: &mut Vec<u8>, store: &Store, t: usize, columns: &[usize], expansions: &[Expansion]) {
    let names: Vec<&str> = PROPERTIES.iter().map(|(p, _)| *p).collect();
    out.push(b'{');
    write_props(out, &names, &values(&store.tables[t].def), columns);
    for expansion in expansions {
        out.push(b',');
        write_json(out, expansion.name());
        out.push(b':');
        out.extend_from_slice(&expansion.write(store, t));
    }
    out.push(b'}');
}

/// The table `EntityDefinitions(<key>)` names: `LogicalName='x'` or a `MetadataId`.
fn table_of(store: &Store, key: &str) -> Result<usize, Fail> {
    if let Some(quoted) = key.strip_prefix("LogicalName=") {
        let name = quoted
            .strip_prefix('\'')
            .and_then(|q| q.strip_suffix('\''))
            .ok_or_else(|| {
                Fail::bad_query(format!("Bad Request - Error in query syntax: '{key}'."))
            })?;
        return store.by_logical(name).ok_or_else(|| {
            Fail::new(
                404,
                "0x80040217",
                format!("Could not find entity with logical name '{name}'."),
            )
        });
    }
    let id = Uuid::parse_str(key)
        .map_err(|_| Fail::bad_query(format!("Bad Request - Error in query syntax: '{key}'.")))?;
    store
        .tables
        .iter()
        .position(|t| t.def.metadata_id == id)
        .ok_or_else(|| {
            Fail::new(
                404,
                "0x80040217",
                format!("Could not find entity with MetadataId '{id}'."),
            )
        })
}

/// `EntityDefinitions`, `EntityDefinitions(LogicalName='x')`, `EntityDefinitions(<MetadataId>)`, and
/// the navigation properties of one.
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
    let Some(key) = key else {
        if !rest.is_empty() {
            // A path into the collection needs a table first.
            return Err(Fail::segment_not_found(rest));
        }
        return collection(store, ctx);
    };
    let t = table_of(store, key)?;
    if !rest.is_empty() {
        return navigation(store, ctx, t, rest);
    }
    let (columns, selected) = projection(opts.select.as_deref())?;
    let expansions = expansions(opts.expand.as_deref())?;
    let context = context_list(selected, expanded_context(&expansions).as_deref());
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!("{}$metadata#EntityDefinitions{context}/$entity", ctx.base),
    );
    out.push(b',');
    let mut body = Vec::new();
    write(&mut body, store, t, &columns, &expansions);
    out.extend_from_slice(&body[1..]);
    Ok(Reply::raw_json(200, out))
}

fn expansions(expand: Option<&str>) -> Result<Vec<Expansion>, Fail> {
    parse_expand(expand)?.iter().map(Expansion::parse).collect()
}

fn expanded_context(expansions: &[Expansion]) -> Option<String> {
    (!expansions.is_empty()).then(|| {
        expansions
            .iter()
            .map(Expansion::context)
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// `EntityDefinitions`, filtered.
fn collection(store: &Store, ctx: &Ctx) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    let (columns, selected) = projection(opts.select.as_deref())?;
    let expansions = expansions(opts.expand.as_deref())?;
    let context = context_list(selected, expanded_context(&expansions).as_deref());
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
    for (t, table) in store.tables.iter().enumerate() {
        let row = values(&table.def);
        if filter.as_ref().is_some_and(|f| !filter::matches(f, &row)) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write(&mut out, store, t, &columns, &expansions);
    }
    out.extend_from_slice(b"]}");
    Ok(Reply::raw_json(200, out))
}

/// `EntityDefinitions(...)/{rest}`: one of the table's navigation properties.
fn navigation(store: &Store, ctx: &Ctx, t: usize, rest: &str) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    let logical = &store.tables[t].def.logical_name;
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let name = first.split_once('(').map_or(first, |(name, _)| name);
    if !NAVIGATION.contains(&name) {
        return Err(Fail::segment_not_found(first));
    }
    if name == "Attributes" {
        return attributes::path(store, ctx, t, first, tail);
    }
    if first != name || !tail.is_empty() {
        return Err(Fail::not_implemented(format!(
            "the metadata path '{rest}' (one key, relationship or attribute by key is not served)"
        )));
    }
    if name == "Keys" {
        if opts.filter.is_some() || opts.expand.is_some() {
            return Err(Fail::not_implemented("$filter and $expand on Keys"));
        }
        let (columns, selected) =
            projection_of(KEY_PROPERTIES, KEY_TYPE_NAME, opts.select.as_deref())?;
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"@odata.context\":");
        write_json(
            &mut out,
            &format!(
                "{}$metadata#EntityDefinitions('{logical}')/Keys{}",
                ctx.base,
                context_list(selected, None)
            ),
        );
        out.extend_from_slice(b",\"value\":");
        write_keys(&mut out, &store.tables[t].def, &columns);
        out.push(b'}');
        return Ok(Reply::raw_json(200, out));
    }
    let Some(which) = relationships::Which::of(name) else {
        return Err(Fail::segment_not_found(first));
    };
    if opts.expand.is_some() {
        return Err(Fail::not_implemented("$expand on relationship metadata"));
    }
    let query = relationships::Query::parse(which, opts.select.as_deref(), opts.filter.as_deref())?;
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    let selected = query.selected().map(|names| names.join(","));
    write_json(
        &mut out,
        &format!(
            "{}$metadata#EntityDefinitions('{logical}')/{name}{}",
            ctx.base,
            context_list(selected, None)
        ),
    );
    out.extend_from_slice(b",\"value\":");
    query.write_array(&mut out, store, t);
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
            // The caller's own user: each app registration is an application user of its own.
            "UserId": store.caller.user,
            "OrganizationId": store.org.organization,
        }),
    )
}
