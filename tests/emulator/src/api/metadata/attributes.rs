//! `AttributeMetadata`: a table's columns as `EntityDefinitions(...)/Attributes` and
//! `$expand=Attributes` describe them.
//!
//! As in Dataverse, the collection is typed `AttributeMetadata`: each column comes back as its
//! derived type (`@odata.type` says which), with that type's own properties (`MaxLength`, `Targets`,
//! `Format`, `MinValue`, ...) when no `$select` narrows it, but a `$select` or `$filter` may only
//! name the base type's properties. Casting the path to a derived type,
//! `.../Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata`, keeps the columns of that type and
//! lets `$select` name its properties; on a choice type (`Picklist`, `State`, `Status`), `$expand` of
//! `OptionSet` adds the options and their labels.
//!
//! Besides its columns, a table lists, as Dataverse does, the virtual `<lookup>name` column of each
//! lookup (`AttributeOf` names the lookup; it cannot be selected from rows). Other virtual and
//! logical columns (`<choice>name`, `<lookup>type`, `yomi...`) are not listed.

use serde_json::{Value, json};

use super::{Ctx, MetaType, Object, Ty, label, no_such, write_object};
use crate::api::render::write_json;
use crate::odata::filter::Expr;
use crate::reply::{Fail, Reply};
use crate::schema::{
    ChoiceOption, Column, ColumnType, Edm, RequiredLevel, System, TableDef, stable_id,
};
use crate::store::Store;

const NAMESPACE: &str = "Microsoft.Dynamics.CRM.";
const BASE_TYPE: &str = "AttributeMetadata";

/// The derived types of the columns the emulator has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Memo,
    Picklist,
    Lookup,
    Customer,
    Owner,
    DateTime,
    Integer,
    Money,
    Boolean,
    Decimal,
    Double,
    BigInt,
    Uniqueidentifier,
    State,
    Status,
}

const KINDS: [Kind; 16] = [
    Kind::String,
    Kind::Memo,
    Kind::Picklist,
    Kind::Lookup,
    Kind::Customer,
    Kind::Owner,
    Kind::DateTime,
    Kind::Integer,
    Kind::Money,
    Kind::Boolean,
    Kind::Decimal,
    Kind::Double,
    Kind::BigInt,
    Kind::Uniqueidentifier,
    Kind::State,
    Kind::Status,
];

/// Types Dataverse has that no column here is: casting to them is valid and finds nothing.
const OTHER_TYPES: &[&str] = &[
    "EntityNameAttributeMetadata",
    "ImageAttributeMetadata",
    "FileAttributeMetadata",
    "MultiSelectPicklistAttributeMetadata",
    "ManagedPropertyAttributeMetadata",
];

impl Kind {
    /// `AttributeType`.
    fn attribute_type(self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::Memo => "Memo",
            Kind::Picklist => "Picklist",
            Kind::Lookup => "Lookup",
            Kind::Customer => "Customer",
            Kind::Owner => "Owner",
            Kind::DateTime => "DateTime",
            Kind::Integer => "Integer",
            Kind::Money => "Money",
            Kind::Boolean => "Boolean",
            Kind::Decimal => "Decimal",
            Kind::Double => "Double",
            Kind::BigInt => "BigInt",
            Kind::Uniqueidentifier => "Uniqueidentifier",
            Kind::State => "State",
            Kind::Status => "Status",
        }
    }

    /// The derived metadata type, without the namespace. Customer and owner lookups are lookups.
    fn metadata_type(self) -> &'static str {
        match self {
            Kind::String => "StringAttributeMetadata",
            Kind::Memo => "MemoAttributeMetadata",
            Kind::Picklist => "PicklistAttributeMetadata",
            Kind::Lookup | Kind::Customer | Kind::Owner => "LookupAttributeMetadata",
            Kind::DateTime => "DateTimeAttributeMetadata",
            Kind::Integer => "IntegerAttributeMetadata",
            Kind::Money => "MoneyAttributeMetadata",
            Kind::Boolean => "BooleanAttributeMetadata",
            Kind::Decimal => "DecimalAttributeMetadata",
            Kind::Double => "DoubleAttributeMetadata",
            Kind::BigInt => "BigIntAttributeMetadata",
            Kind::Uniqueidentifier => "UniqueIdentifierAttributeMetadata",
            Kind::State => "StateAttributeMetadata",
            Kind::Status => "StatusAttributeMetadata",
        }
    }

    /// The derived type's own properties.
    fn derived(self) -> &'static [(&'static str, Ty)] {
        match self {
            Kind::String => &[
                ("MaxLength", Ty::Prim(Edm::Int32)),
                ("Format", Ty::Prim(Edm::String)),
                ("FormatName", Ty::Leaf(Edm::String)),
            ],
            Kind::Memo => &[
                ("MaxLength", Ty::Prim(Edm::Int32)),
                ("Format", Ty::Prim(Edm::String)),
            ],
            Kind::Picklist => &[("DefaultFormValue", Ty::Prim(Edm::Int32))],
            Kind::Lookup | Kind::Customer | Kind::Owner => &[("Targets", Ty::Other)],
            Kind::DateTime => &[
                ("Format", Ty::Prim(Edm::String)),
                ("DateTimeBehavior", Ty::Leaf(Edm::String)),
            ],
            Kind::Integer => &[
                ("MinValue", Ty::Prim(Edm::Int32)),
                ("MaxValue", Ty::Prim(Edm::Int32)),
                ("Format", Ty::Prim(Edm::String)),
            ],
            Kind::Money => &[
                ("MinValue", Ty::Prim(Edm::Double)),
                ("MaxValue", Ty::Prim(Edm::Double)),
                ("Precision", Ty::Prim(Edm::Int32)),
                ("PrecisionSource", Ty::Prim(Edm::Int32)),
            ],
            Kind::Decimal => &[
                ("MinValue", Ty::Prim(Edm::Decimal)),
                ("MaxValue", Ty::Prim(Edm::Decimal)),
                ("Precision", Ty::Prim(Edm::Int32)),
            ],
            Kind::Double => &[
                ("MinValue", Ty::Prim(Edm::Double)),
                ("MaxValue", Ty::Prim(Edm::Double)),
                ("Precision", Ty::Prim(Edm::Int32)),
            ],
            Kind::BigInt => &[
                ("MinValue", Ty::Prim(Edm::Int64)),
                ("MaxValue", Ty::Prim(Edm::Int64)),
            ],
            Kind::Boolean => &[("DefaultValue", Ty::Prim(Edm::Boolean))],
            Kind::Uniqueidentifier | Kind::State | Kind::Status => &[],
        }
    }

    /// Whether the type has the `OptionSet` navigation property.
    fn has_options(self) -> bool {
        matches!(self, Kind::Picklist | Kind::State | Kind::Status)
    }
}

/// `AttributeMetadata`'s own properties, which every derived type has.
fn base_props() -> Vec<(&'static str, Ty)> {
    vec![
        ("MetadataId", Ty::Prim(Edm::Guid)),
        ("LogicalName", Ty::Prim(Edm::String)),
        ("SchemaName", Ty::Prim(Edm::String)),
        ("EntityLogicalName", Ty::Prim(Edm::String)),
        ("AttributeType", Ty::Prim(Edm::String)),
        ("AttributeTypeName", Ty::Leaf(Edm::String)),
        ("AttributeOf", Ty::Prim(Edm::String)),
        ("IsPrimaryId", Ty::Prim(Edm::Boolean)),
        ("IsPrimaryName", Ty::Prim(Edm::Boolean)),
        ("IsValidForCreate", Ty::Prim(Edm::Boolean)),
        ("IsValidForUpdate", Ty::Prim(Edm::Boolean)),
        ("IsValidForRead", Ty::Prim(Edm::Boolean)),
        ("IsValidODataAttribute", Ty::Prim(Edm::Boolean)),
        ("IsCustomAttribute", Ty::Prim(Edm::Boolean)),
        ("RequiredLevel", Ty::Leaf(Edm::String)),
        ("DisplayName", Ty::Other),
        ("Description", Ty::Other),
    ]
}

/// The type a collection of attributes is read as: the base type, or the derived type a cast names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cast {
    /// `.../Attributes`.
    Base,
    /// `.../Attributes/Microsoft.Dynamics.CRM.<type>` for a type columns here can be.
    Kind(&'static str),
    /// A cast to a type no column here is (`OTHER_TYPES`).
    Other(&'static str),
}

impl Cast {
    /// The cast a path segment names: `Microsoft.Dynamics.CRM.StringAttributeMetadata`. Any other
    /// name is a segment the service does not know (404).
    fn parse(segment: &str) -> Result<Self, Fail> {
        let name = segment
            .strip_prefix(NAMESPACE)
            .ok_or_else(|| Fail::segment_not_found(segment))?;
        if let Some(kind) = KINDS.iter().find(|k| k.metadata_type() == name) {
            return Ok(Cast::Kind(kind.metadata_type()));
        }
        // `EnumAttributeMetadata` is a type, but Microsoft Learn notes that a cast to it is refused;
        // the answer is not documented, so it is refused here as an unknown segment.
        OTHER_TYPES
            .iter()
            .find(|t| **t == name)
            .map(|t| Cast::Other(t))
            .ok_or_else(|| Fail::segment_not_found(segment))
    }

    fn type_name(self) -> &'static str {
        match self {
            Cast::Base => BASE_TYPE,
            Cast::Kind(name) | Cast::Other(name) => name,
        }
    }

    fn meta_type(self) -> MetaType {
        let mut props = base_props();
        if let Cast::Kind(name) = self {
            // Customer and owner lookups share `LookupAttributeMetadata`; any of them has its props.
            if let Some(kind) = KINDS.iter().find(|k| k.metadata_type() == name) {
                props.extend(kind.derived().iter().copied());
            }
        }
        MetaType {
            name: format!("{NAMESPACE}{}", self.type_name()),
            props,
        }
    }

    fn admits(self, kind: Kind) -> bool {
        match self {
            Cast::Base => true,
            Cast::Kind(name) => kind.metadata_type() == name,
            Cast::Other(_) => false,
        }
    }

    fn has_options(self) -> bool {
        KINDS
            .iter()
            .any(|k| self.admits(*k) && self != Cast::Base && k.has_options())
    }
}

/// One attribute: its type, its properties, and (for a choice) its option set.
#[derive(Debug)]
struct Attribute {
    kind: Kind,
    object: Object,
    options: Option<Object>,
}

/// An attributes request with its options checked: the cast, `$select`, `$filter`, `$expand`.
#[derive(Debug)]
pub(super) struct Query {
    cast: Cast,
    meta: MetaType,
    select: Option<Vec<&'static str>>,
    filter: Option<Expr>,
    option_set: Option<OptionSetQuery>,
    context: String,
}

/// `$expand=OptionSet` (or `GlobalOptionSet`, always null: every choice here is local).
#[derive(Debug)]
struct OptionSetQuery {
    global: bool,
    select: Option<Vec<&'static str>>,
    context: String,
}

fn option_set_type() -> MetaType {
    MetaType {
        name: format!("{NAMESPACE}OptionSetMetadata"),
        props: vec![
            ("MetadataId", Ty::Prim(Edm::Guid)),
            ("Name", Ty::Prim(Edm::String)),
            ("DisplayName", Ty::Other),
            ("Description", Ty::Other),
            ("IsGlobal", Ty::Prim(Edm::Boolean)),
            ("IsCustomOptionSet", Ty::Prim(Edm::Boolean)),
            ("IsManaged", Ty::Prim(Edm::Boolean)),
            ("OptionSetType", Ty::Prim(Edm::String)),
            ("Options", Ty::Other),
        ],
    }
}

impl Query {
    pub(super) fn parse(
        cast: Option<Cast>,
        select: Option<&str>,
        filter: Option<&str>,
        expand: Option<&str>,
    ) -> Result<Self, Fail> {
        let cast = cast.unwrap_or(Cast::Base);
        let meta = cast.meta_type();
        let mut option_set = None;
        for item in super::parse_expand(expand)? {
            let known = matches!(item.name, "OptionSet" | "GlobalOptionSet");
            if !known || !cast.has_options() {
                return Err(no_such(item.name, &meta.name));
            }
            if item.filter.is_some() {
                return Err(Fail::not_implemented("$filter inside $expand=OptionSet"));
            }
            let selected = option_set_type().select(item.select)?;
            let context = match &selected {
                None => item.name.to_owned(),
                Some(names) => format!("{}({})", item.name, names.join(",")),
            };
            option_set = Some(OptionSetQuery {
                global: item.name == "GlobalOptionSet",
                select: selected,
                context,
            });
        }
        Ok(Self {
            cast,
            select: meta.select(select)?,
            filter: meta.filter(filter)?,
            meta,
            option_set,
            context: String::new(),
        })
    }

    pub(super) fn selected(&self) -> Option<Vec<&'static str>> {
        self.select.clone()
    }

    pub(super) fn with_context(mut self, context: String) -> Self {
        self.context = context;
        self
    }

    pub(super) fn context(&self) -> &str {
        &self.context
    }

    /// The context URL's list: selected properties and the expanded option set.
    fn context_list(&self) -> String {
        let selected = self.select.as_ref().map(|names| names.join(","));
        super::context_list(
            selected,
            self.option_set.as_ref().map(|o| o.context.as_str()),
        )
    }

    fn admits(&self, attribute: &Attribute) -> bool {
        self.cast.admits(attribute.kind)
            && self.meta.matches(self.filter.as_ref(), &attribute.object)
    }

    fn write_one(&self, out: &mut Vec<u8>, attribute: &Attribute) {
        // In a collection of the base type each entry says its own type; in a cast collection the
        // type is the collection's, so minimal metadata leaves it out.
        let annotation = (self.cast == Cast::Base)
            .then(|| format!("{NAMESPACE}{}", attribute.kind.metadata_type()));
        let mut expansions = Vec::new();
        if let Some(query) = &self.option_set {
            let mut json = Vec::new();
            match (&attribute.options, query.global) {
                (Some(options), false) => {
                    write_object(&mut json, None, options, query.select.as_deref(), &[]);
                }
                _ => json.extend_from_slice(b"null"),
            }
            let name = if query.global {
                "GlobalOptionSet"
            } else {
                "OptionSet"
            };
            expansions.push((name, json));
        }
        write_object(
            out,
            annotation.as_deref(),
            &attribute.object,
            self.select.as_deref(),
            &expansions,
        );
    }

    /// Table `t`'s attributes as a JSON array.
    pub(super) fn write_array(&self, out: &mut Vec<u8>, store: &Store, t: usize) {
        out.push(b'[');
        let mut first = true;
        for attribute in of_table(&store.tables[t].def) {
            if !self.admits(&attribute) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            self.write_one(out, &attribute);
        }
        out.push(b']');
    }
}

/// `EntityDefinitions(...)/Attributes...` for table `t`: `first` is `Attributes` or
/// `Attributes(<key>)`, `tail` what follows it.
pub(super) fn path(
    store: &Store,
    ctx: &Ctx,
    t: usize,
    first: &str,
    tail: &str,
) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    let def = &store.tables[t].def;
    let (cast_segment, deeper) = match tail.split_once('/') {
        Some((cast, deeper)) => (cast, deeper),
        None => (tail, ""),
    };
    if !deeper.is_empty() {
        return Err(Fail::not_implemented(format!(
            "the metadata path '.../{cast_segment}/{deeper}' (use $expand=OptionSet)"
        )));
    }
    let cast = (!cast_segment.is_empty())
        .then(|| Cast::parse(cast_segment))
        .transpose()?;
    let key = first
        .strip_prefix("Attributes(")
        .and_then(|k| k.strip_suffix(')'));
    let query = Query::parse(
        cast,
        opts.select.as_deref(),
        // A single attribute has no `$filter`.
        if key.is_some() {
            None
        } else {
            opts.filter.as_deref()
        },
        opts.expand.as_deref(),
    )?;
    let cast_path = match query.cast {
        Cast::Base => String::new(),
        other => format!("/{NAMESPACE}{}", other.type_name()),
    };
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    let Some(key) = key else {
        write_json(
            &mut out,
            &format!(
                "{}$metadata#EntityDefinitions('{}')/Attributes{cast_path}{}",
                ctx.base,
                def.logical_name,
                query.context_list()
            ),
        );
        out.extend_from_slice(b",\"value\":");
        query.write_array(&mut out, store, t);
        out.push(b'}');
        return Ok(Reply::raw_json(200, out));
    };
    if opts.filter.is_some() {
        return Err(Fail::bad_query(
            "The query parameter $filter is not supported on a single attribute.",
        ));
    }
    let attribute = find(def, key)?;
    if !query.cast.admits(attribute.kind) {
        // Emulator wording: the cast names a type the attribute is not.
        return Err(Fail::new(
            404,
            "0x80040217",
            format!(
                "The attribute '{}' of '{}' is not a {}.",
                logical_name(&attribute),
                def.logical_name,
                query.cast.type_name()
            ),
        ));
    }
    write_json(
        &mut out,
        &format!(
            "{}$metadata#EntityDefinitions('{}')/Attributes{cast_path}{}/$entity",
            ctx.base,
            def.logical_name,
            query.context_list()
        ),
    );
    out.push(b',');
    let mut body = Vec::new();
    query.write_one(&mut body, &attribute);
    out.extend_from_slice(&body[1..]);
    Ok(Reply::raw_json(200, out))
}

fn logical_name(attribute: &Attribute) -> &str {
    attribute
        .object
        .iter()
        .find(|(p, _)| *p == "LogicalName")
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// The attribute `Attributes(<key>)` names: `LogicalName='x'` or a `MetadataId`.
fn find(def: &TableDef, key: &str) -> Result<Attribute, Fail> {
    let wanted = match key.strip_prefix("LogicalName=") {
        Some(quoted) => quoted
            .strip_prefix('\'')
            .and_then(|q| q.strip_suffix('\''))
            .map(|name| ("LogicalName", name.to_owned())),
        None => uuid::Uuid::parse_str(key)
            .ok()
            .map(|id| ("MetadataId", id.to_string())),
    };
    let Some((property, value)) = wanted else {
        return Err(Fail::bad_query(format!(
            "Bad Request - Error in query syntax: '{key}'."
        )));
    };
    of_table(def)
        .into_iter()
        .find(|a| {
            a.object
                .iter()
                .any(|(p, v)| *p == property && v.as_str() == Some(value.as_str()))
        })
        .ok_or_else(|| {
            // Emulator wording, after the entity's own "Could not find entity with ...".
            Fail::new(
                404,
                "0x80040217",
                format!(
                    "Could not find attribute with {property} '{value}' on entity '{}'.",
                    def.logical_name
                ),
            )
        })
}

/// Every attribute of a table, in column order, each lookup followed by its virtual name column.
fn of_table(def: &TableDef) -> Vec<Attribute> {
    let mut out = Vec::with_capacity(def.columns.len() + 8);
    for (c, column) in def.columns.iter().enumerate() {
        let attribute = of_column(def, c, column);
        let lookup = matches!(attribute.kind, Kind::Lookup | Kind::Customer | Kind::Owner);
        out.push(attribute);
        if lookup {
            out.push(name_column(def, column));
        }
    }
    out
}

fn kind_of(column: &Column) -> Kind {
    match &column.ty {
        ColumnType::Id => Kind::Uniqueidentifier,
        ColumnType::Text { memo: true, .. } => Kind::Memo,
        ColumnType::Text { .. } | ColumnType::System(System::FullName) => Kind::String,
        ColumnType::Whole { .. } => Kind::Integer,
        ColumnType::BigInt | ColumnType::System(System::VersionNumber) => Kind::BigInt,
        ColumnType::Money => Kind::Money,
        ColumnType::Decimal => Kind::Decimal,
        ColumnType::Float => Kind::Double,
        ColumnType::YesNo | ColumnType::System(System::Flag) => Kind::Boolean,
        ColumnType::DateTime { .. }
        | ColumnType::DateOnly
        | ColumnType::System(System::CreatedOn | System::ModifiedOn) => Kind::DateTime,
        // Status and status reason are their own types in Dataverse, whatever the table.
        ColumnType::Choice { .. } if column.name == "statecode" => Kind::State,
        ColumnType::Choice { .. } if column.name == "statuscode" => Kind::Status,
        ColumnType::Choice { .. } => Kind::Picklist,
        ColumnType::Lookup { navs } => {
            let mut targets: Vec<&str> = navs.iter().map(|n| n.target.as_str()).collect();
            targets.sort_unstable();
            if targets == ["account", "contact"] {
                Kind::Customer
            } else {
                Kind::Lookup
            }
        }
        ColumnType::System(System::Reference) if column.name == "_ownerid_value" => Kind::Owner,
        ColumnType::System(System::Reference) => Kind::Lookup,
    }
}

/// The tables a lookup can point at. The platform's own lookups point at tables the emulator does
/// not serve (users, business units, currencies); their names are Dataverse's.
fn targets(column: &Column) -> Vec<String> {
    match &column.ty {
        ColumnType::Lookup { navs } => navs.iter().map(|n| n.target.clone()).collect(),
        _ => match column.attribute() {
            "ownerid" => vec!["systemuser".to_owned(), "team".to_owned()],
            "owningbusinessunit" => vec!["businessunit".to_owned()],
            "transactioncurrencyid" => vec!["transactioncurrency".to_owned()],
            "organizationid" => vec!["organization".to_owned()],
            _ => vec!["systemuser".to_owned()],
        },
    }
}

/// `IsValidForCreate` and `IsValidForUpdate`, as Dataverse reports them.
fn writable(column: &Column) -> (bool, bool) {
    match &column.ty {
        ColumnType::Id => (true, false),
        // The owner and the currency are set on create and changed by update (assign); the other
        // platform lookups and computed columns are not written by clients.
        ColumnType::System(System::Reference) => {
            let open = matches!(column.attribute(), "ownerid" | "transactioncurrencyid");
            (open, open)
        }
        ColumnType::System(_) => (false, false),
        // A row's state is changed by update, not set by create.
        ColumnType::Choice { .. } if column.name == "statecode" => (false, true),
        _ => (true, true),
    }
}

fn required_level(level: RequiredLevel) -> Value {
    json!({
        "Value": level.name(),
        "CanBeChanged": level != RequiredLevel::SystemRequired,
        "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
    })
}

/// `Format` of a single line of text: what the built-in columns' names say they hold.
fn string_format(def: &TableDef, column: &Column) -> &'static str {
    let name = column.name.as_str();
    if def.is_custom {
        "Text"
    } else if name.starts_with("emailaddress") {
        "Email"
    } else if name == "websiteurl" || name == "url" {
        "Url"
    } else if name.starts_with("telephone") || name == "mobilephone" {
        "Phone"
    } else {
        "Text"
    }
}

fn of_column(def: &TableDef, c: usize, column: &Column) -> Attribute {
    let kind = kind_of(column);
    let logical = column.attribute();
    let seed = format!("{}/attribute/{logical}", def.logical_name);
    let (create, update) = writable(column);
    let system = matches!(column.ty, ColumnType::Id | ColumnType::System(_))
        || matches!(column.name.as_str(), "statecode" | "statuscode");
    let mut object: Object = vec![
        ("MetadataId", json!(stable_id(&seed))),
        ("LogicalName", json!(logical)),
        ("SchemaName", json!(column.schema_name())),
        ("EntityLogicalName", json!(def.logical_name)),
        ("AttributeType", json!(kind.attribute_type())),
        (
            "AttributeTypeName",
            json!({"Value": format!("{}Type", kind.attribute_type())}),
        ),
        ("AttributeOf", Value::Null),
        ("IsPrimaryId", json!(c == def.idx.id)),
        ("IsPrimaryName", json!(column.name == def.primary_name)),
        ("IsValidForCreate", json!(create)),
        ("IsValidForUpdate", json!(update)),
        ("IsValidForRead", json!(true)),
        ("IsValidODataAttribute", json!(true)),
        (
            "IsCustomAttribute",
            json!((def.is_custom || column.custom) && !system),
        ),
        ("RequiredLevel", required_level(column.required)),
        (
            "DisplayName",
            label(Some(&column.display_name()), &format!("{seed}/display")),
        ),
        ("Description", label(None, "")),
    ];
    let derived: Vec<(&'static str, Value)> = match (&column.ty, kind) {
        (ColumnType::Text { max_len, .. }, Kind::String) => {
            let format = string_format(def, column);
            vec![
                ("MaxLength", json!(max_len)),
                ("Format", json!(format)),
                ("FormatName", json!({"Value": format})),
            ]
        }
        // `fullname` holds "first last", 160 characters in Dataverse.
        (_, Kind::String) => vec![
            ("MaxLength", json!(160)),
            ("Format", json!("Text")),
            ("FormatName", json!({"Value": "Text"})),
        ],
        (ColumnType::Text { max_len, .. }, Kind::Memo) => {
            vec![("MaxLength", json!(max_len)), ("Format", json!("TextArea"))]
        }
        (_, Kind::Picklist) => vec![("DefaultFormValue", json!(-1))],
        (_, Kind::Lookup | Kind::Customer | Kind::Owner) => {
            vec![("Targets", json!(targets(column)))]
        }
        (ColumnType::DateOnly, _) => vec![
            ("Format", json!("DateOnly")),
            ("DateTimeBehavior", json!({"Value": "DateOnly"})),
        ],
        (ColumnType::DateTime { behavior, format }, _) => vec![
            ("Format", json!(format.name())),
            ("DateTimeBehavior", json!({"Value": behavior.name()})),
        ],
        // `createdon` and `modifiedon`: user local, which cannot be changed.
        (_, Kind::DateTime) => vec![
            ("Format", json!("DateAndTime")),
            ("DateTimeBehavior", json!({"Value": "UserLocal"})),
        ],
        (ColumnType::Whole { min, max }, _) => vec![
            ("MinValue", json!(min)),
            ("MaxValue", json!(max)),
            ("Format", json!("None")),
        ],
        // Dataverse's limits for currency, decimal and floating point columns.
        (_, Kind::Money) => vec![
            ("MinValue", json!(-922_337_203_685_477.0)),
            ("MaxValue", json!(922_337_203_685_477.0)),
            ("Precision", json!(2)),
            ("PrecisionSource", json!(2)),
        ],
        (_, Kind::Decimal | Kind::Double) => vec![
            ("MinValue", json!(-100_000_000_000.0)),
            ("MaxValue", json!(100_000_000_000.0)),
            ("Precision", json!(2)),
        ],
        (_, Kind::BigInt) => vec![("MinValue", json!(i64::MIN)), ("MaxValue", json!(i64::MAX))],
        (_, Kind::Boolean) => vec![("DefaultValue", json!(false))],
        _ => Vec::new(),
    };
    object.extend(derived);
    let options = match &column.ty {
        ColumnType::Choice { options } if kind.has_options() => {
            Some(option_set(def, column, kind, options, &seed))
        }
        _ => None,
    };
    Attribute {
        kind,
        object,
        options,
    }
}

/// The virtual `<lookup>name` column Dataverse lists after a lookup: the related row's primary name.
fn name_column(def: &TableDef, lookup: &Column) -> Attribute {
    let logical = format!("{}name", lookup.attribute());
    let seed = format!("{}/attribute/{logical}", def.logical_name);
    let object: Object = vec![
        ("MetadataId", json!(stable_id(&seed))),
        ("LogicalName", json!(logical)),
        ("SchemaName", json!(format!("{}Name", lookup.schema_name()))),
        ("EntityLogicalName", json!(def.logical_name)),
        ("AttributeType", json!("String")),
        ("AttributeTypeName", json!({"Value": "StringType"})),
        ("AttributeOf", json!(lookup.attribute())),
        ("IsPrimaryId", json!(false)),
        ("IsPrimaryName", json!(false)),
        ("IsValidForCreate", json!(false)),
        ("IsValidForUpdate", json!(false)),
        ("IsValidForRead", json!(true)),
        // Not a property of the Web API's entity type: `$select` on rows does not take it.
        ("IsValidODataAttribute", json!(false)),
        ("IsCustomAttribute", json!(false)),
        ("RequiredLevel", required_level(RequiredLevel::None)),
        ("DisplayName", label(None, "")),
        ("Description", label(None, "")),
        ("MaxLength", json!(100)),
        ("Format", json!("Text")),
        ("FormatName", json!({"Value": "Text"})),
    ];
    Attribute {
        kind: Kind::String,
        object,
        options: None,
    }
}

/// A choice column's `OptionSetMetadata`. Status options say which state they belong to, and state
/// options which status a row in that state gets by default, as `StatusOptionMetadata` and
/// `StateOptionMetadata` do.
fn option_set(
    def: &TableDef,
    column: &Column,
    kind: Kind,
    options: &[ChoiceOption],
    seed: &str,
) -> Object {
    let statuses: Vec<ChoiceOption> = def
        .column("statuscode")
        .and_then(|c| match &def.columns[c].ty {
            ColumnType::Choice { options } => Some(options.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let list: Vec<Value> = options
        .iter()
        .map(|o| {
            let mut option = serde_json::Map::new();
            let odata_type = match kind {
                Kind::State => Some("StateOptionMetadata"),
                Kind::Status => Some("StatusOptionMetadata"),
                _ => None,
            };
            if let Some(odata_type) = odata_type {
                option.insert(
                    "@odata.type".to_owned(),
                    json!(format!("#{NAMESPACE}{odata_type}")),
                );
            }
            option.insert("Value".to_owned(), json!(o.value));
            option.insert(
                "Label".to_owned(),
                label(Some(&o.label), &format!("{seed}/option/{}", o.value)),
            );
            option.insert("Description".to_owned(), label(None, ""));
            option.insert("Color".to_owned(), Value::Null);
            option.insert("IsManaged".to_owned(), json!(false));
            option.insert("MetadataId".to_owned(), Value::Null);
            option.insert("HasChanged".to_owned(), Value::Null);
            match kind {
                Kind::State => {
                    let default = statuses
                        .iter()
                        .find(|s| s.state == Some(o.value))
                        .map(|s| s.value);
                    option.insert("DefaultStatus".to_owned(), json!(default));
                    option.insert("InvariantName".to_owned(), json!(o.label.replace(' ', "")));
                }
                Kind::Status => {
                    option.insert("State".to_owned(), json!(o.state));
                }
                _ => {}
            }
            Value::Object(option)
        })
        .collect();
    vec![
        ("MetadataId", json!(stable_id(&format!("{seed}/optionset")))),
        (
            "Name",
            json!(format!("{}_{}", def.logical_name, column.attribute())),
        ),
        (
            "DisplayName",
            label(Some(&column.display_name()), &format!("{seed}/optionset")),
        ),
        ("Description", label(None, "")),
        ("IsGlobal", json!(false)),
        ("IsCustomOptionSet", json!(def.is_custom)),
        ("IsManaged", json!(false)),
        ("OptionSetType", json!(kind.attribute_type())),
        ("Options", Value::Array(list)),
    ]
}
