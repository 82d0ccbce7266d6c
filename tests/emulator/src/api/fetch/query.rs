//! Reading a `FetchXML` document into a query: names resolved against the schema, conditions turned
//! into filter expressions, and everything outside the subset refused.

use uuid::Uuid;

use super::xml::Element;
use crate::api::render::RowProps;
use crate::odata::filter::{self, CmpOp, Expr, Lit, StrFn};
use crate::reply::Fail;
use crate::schema::{ColumnType, Edm, System, TableDef};
use crate::store::Store;

/// The service's page size limit, which is also `FetchXML`'s default `count`.
pub(super) const MAX_PAGE: usize = 5000;

/// One table in the query: the `<entity>` (slot 0) or a `<link-entity>`, in document order.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) table: usize,
    /// The parent's column (`to`) and this table's column (`from`) that must be equal; unused for
    /// slot 0.
    pub(super) to: usize,
    pub(super) from: usize,
    pub(super) outer: bool,
    /// Conditions on this table's rows; for a link, they decide which rows join.
    pub(super) filter: Option<Expr>,
    /// The slots linked from this one.
    pub(super) links: Vec<usize>,
}

/// A column of a result row.
#[derive(Debug)]
pub(super) struct Out {
    pub(super) slot: usize,
    pub(super) column: usize,
    /// The JSON name: the column's own for the entity, `alias.attribute` for a link.
    pub(super) key: String,
    /// For a linked column, the logical name the `AttributeName` annotation carries.
    pub(super) attribute: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Agg {
    GroupBy,
    Count,
    CountColumn { distinct: bool },
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug)]
pub(super) struct AggItem {
    pub(super) slot: usize,
    pub(super) column: usize,
    pub(super) alias: String,
    pub(super) agg: Agg,
}

#[derive(Debug)]
pub(super) struct Query {
    pub(super) top: Option<usize>,
    pub(super) count: Option<usize>,
    pub(super) page: Option<usize>,
    pub(super) cookie: Option<String>,
    pub(super) distinct: bool,
    pub(super) total: bool,
    pub(super) slots: Vec<Slot>,
    pub(super) outs: Vec<Out>,
    /// Whether the entity's columns were all asked for (`@odata.context` then names none).
    pub(super) all: bool,
    /// `<order attribute=...>` on the entity's columns, then the primary key breaks ties.
    pub(super) orders: Vec<(usize, bool)>,
    /// With `aggregate="true"`: the aggregate and group-by columns, and `<order alias=...>`.
    pub(super) aggregate: Option<Vec<AggItem>>,
    pub(super) agg_orders: Vec<(usize, bool)>,
}

/// `InvalidArgument` (`0x80040203`).
fn invalid_argument(message: impl Into<String>) -> Fail {
    Fail::new(400, "0x80040203", message)
}

/// `QueryBuilderNoAttribute` (`0x80041103`), in the service's wording.
pub(super) fn no_attribute(def: &TableDef, name: &str) -> Fail {
    Fail::new(
        400,
        "0x80041103",
        format!(
            "'{}' entity doesn't contain attribute with Name = '{name}' and NameMapping = 'Logical'.",
            def.logical_name
        ),
    )
}

/// `QueryBuilderDeserializeInvalidNode` (`0x8004111c`): an element `FetchXML` does not have there.
fn invalid_node(name: &str, parent: &str) -> Fail {
    Fail::new(
        400,
        "0x8004111c",
        format!("The element '{name}' is not valid inside '{parent}' in FetchXML."),
    )
}

fn attr_bool(el: &Element, name: &str) -> Result<bool, Fail> {
    match el.attr(name).map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(invalid_argument(format!(
            "'{v}' is not a valid value for the '{name}' attribute of '{}'.",
            el.name
        ))),
    }
}

fn attr_positive(el: &Element, name: &str) -> Result<Option<usize>, Fail> {
    let Some(v) = el.attr(name) else {
        return Ok(None);
    };
    let n: i64 = v.trim().parse().map_err(|_| {
        invalid_argument(format!(
            "'{v}' is not a valid value for the '{name}' attribute of 'fetch'."
        ))
    })?;
    if n <= 0 {
        // `QueryBuilderTopCountGreaterThanZero`.
        return Err(Fail::new(
            400,
            "0x80041127",
            format!("The '{name}' attribute of 'fetch' must be greater than zero."),
        ));
    }
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// Refuses attributes of `el` outside `known` (which the subset reads) and `ignored` (which change
/// nothing here, such as `mapping`), naming the first one as not implemented.
fn check_attrs(el: &Element, known: &[&str], ignored: &[&str]) -> Result<(), Fail> {
    match el
        .attrs
        .iter()
        .find(|(n, _)| !known.contains(&n.as_str()) && !ignored.contains(&n.as_str()))
    {
        Some((n, _)) => Err(Fail::not_implemented(format!(
            "the '{n}' attribute of FetchXML's '{}' element",
            el.name
        ))),
        None => Ok(()),
    }
}

pub(super) fn parse(store: &Store, t: usize, root: &Element) -> Result<Query, Fail> {
    if root.name != "fetch" {
        return Err(invalid_node(&root.name, "the document"));
    }
    check_attrs(
        root,
        &[
            "top",
            "count",
            "page",
            "paging-cookie",
            "distinct",
            "aggregate",
            "returntotalrecordcount",
        ],
        &["version", "mapping", "output-format", "no-lock"],
    )?;
    let top = attr_positive(root, "top")?;
    let count = attr_positive(root, "count")?;
    let page = attr_positive(root, "page")?;
    if top.is_some() && (count.is_some() || page.is_some()) {
        return Err(invalid_argument(
            "The 'top' attribute can't be specified with the paging attributes 'count' or 'page'.",
        ));
    }
    let aggregate = attr_bool(root, "aggregate")?;
    let mut query = Query {
        top,
        count,
        page,
        cookie: root
            .attr("paging-cookie")
            .filter(|c| !c.trim().is_empty())
            .map(str::to_owned),
        distinct: attr_bool(root, "distinct")?,
        total: attr_bool(root, "returntotalrecordcount")?,
        slots: Vec::new(),
        outs: Vec::new(),
        all: false,
        orders: Vec::new(),
        aggregate: aggregate.then(Vec::new),
        agg_orders: Vec::new(),
    };
    let mut entities = root.children.iter();
    let entity = match (entities.next(), entities.next()) {
        (Some(e), None) if e.name == "entity" => e,
        (Some(e), _) if e.name != "entity" => return Err(invalid_node(&e.name, "fetch")),
        _ => {
            return Err(invalid_argument(
                "A fetch must contain exactly one 'entity' element.",
            ));
        }
    };
    let def = &store.tables[t].def;
    let name = entity.attr("name").unwrap_or_default();
    if name != def.logical_name {
        // `QueryBuilderEntitiesDontMatch`.
        return Err(Fail::new(
            400,
            "0x80041128",
            format!(
                "The entity name '{name}' in the fetchXml does not match the table '{}' of the entity set '{}'.",
                def.logical_name, def.entity_set_name
            ),
        ));
    }
    query.slots.push(Slot {
        table: t,
        to: 0,
        from: 0,
        outer: false,
        filter: None,
        links: Vec::new(),
    });
    node(store, &mut query, entity, 0, 0)?;
    // The Web API returns the primary key with every row, asked for or not.
    if query.aggregate.is_none()
        && !query
            .outs
            .iter()
            .any(|o| o.slot == 0 && o.column == def.idx.id)
    {
        let at = query.outs.iter().take_while(|o| o.slot == 0).count();
        query.outs.insert(
            at,
            Out {
                slot: 0,
                column: def.idx.id,
                key: def.primary_id.clone(),
                attribute: None,
            },
        );
    }
    Ok(query)
}

/// Reads the children of `<entity>` or a `<link-entity>` (slot `slot`, `depth` links deep).
fn node(
    store: &Store,
    query: &mut Query,
    el: &Element,
    slot: usize,
    depth: usize,
) -> Result<(), Fail> {
    let t = query.slots[slot].table;
    let def = &store.tables[t].def;
    let alias = if slot == 0 {
        None
    } else {
        Some(
            el.attr("alias")
                .map_or_else(|| format!("{}{slot}", def.logical_name), str::to_owned),
        )
    };
    let mut filters = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "attribute" => attribute(query, def, child, slot, alias.as_deref())?,
            "all-attributes" => {
                if query.aggregate.is_some() {
                    return Err(Fail::new(
                        400,
                        "0x80041107",
                        "An aggregate query can't contain 'all-attributes'.",
                    ));
                }
                if slot == 0 {
                    query.all = true;
                }
                for (column, c) in def.columns.iter().enumerate() {
                    query.outs.push(out(
                        slot,
                        column,
                        c.name.as_str(),
                        c.attribute(),
                        alias.as_deref(),
                        None,
                    ));
                }
            }
            "order" => order(query, def, child, slot)?,
            "filter" => filters.push(filter(def, child)?),
            "link-entity" => link(store, query, child, slot, depth + 1)?,
            other => return Err(invalid_node(other, &el.name)),
        }
    }
    query.slots[slot].filter = match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Expr::And(filters)),
    };
    Ok(())
}

fn out(
    slot: usize,
    column: usize,
    name: &str,
    attribute: &str,
    link_alias: Option<&str>,
    alias: Option<&str>,
) -> Out {
    match (link_alias, alias) {
        (_, Some(alias)) => Out {
            slot,
            column,
            key: alias.to_owned(),
            attribute: link_alias.map(|_| attribute.to_owned()),
        },
        (None, None) => Out {
            slot,
            column,
            key: name.to_owned(),
            attribute: None,
        },
        (Some(link), None) => Out {
            slot,
            column,
            key: format!("{link}.{attribute}"),
            attribute: Some(attribute.to_owned()),
        },
    }
}

fn column_of(def: &TableDef, el: &Element, attr: &str) -> Result<usize, Fail> {
    let name = el.attr(attr).unwrap_or_default();
    def.attribute(name).ok_or_else(|| no_attribute(def, name))
}

fn attribute(
    query: &mut Query,
    def: &TableDef,
    el: &Element,
    slot: usize,
    link_alias: Option<&str>,
) -> Result<(), Fail> {
    check_attrs(
        el,
        &["name", "alias", "aggregate", "groupby", "distinct"],
        &["build", "addedby"],
    )?;
    let column = column_of(def, el, "name")?;
    let alias = el.attr("alias");
    let Some(items) = query.aggregate.as_mut() else {
        if el.attr("aggregate").is_some() || el.attr("groupby").is_some() {
            // `QueryBuilderDeserializeInvalidAggregate`.
            return Err(Fail::new(
                400,
                "0x8004111a",
                "An attribute can be aggregated or grouped only in a fetch with aggregate='true'.",
            ));
        }
        let c = &def.columns[column];
        query
            .outs
            .push(out(slot, column, &c.name, c.attribute(), link_alias, alias));
        return Ok(());
    };
    let agg = if attr_bool(el, "groupby")? {
        Agg::GroupBy
    } else {
        match el.attr("aggregate") {
            Some("count") => Agg::Count,
            Some("countcolumn") => Agg::CountColumn {
                distinct: attr_bool(el, "distinct")?,
            },
            Some("sum") => Agg::Sum,
            Some("avg") => Agg::Avg,
            Some("min") => Agg::Min,
            Some("max") => Agg::Max,
            Some(other) => {
                return Err(Fail::new(
                    400,
                    "0x8004111a",
                    format!("'{other}' is not a valid aggregate function."),
                ));
            }
            None => {
                // `QueryBuilderAttribute_With_Aggregate`.
                return Err(Fail::new(
                    400,
                    "0x80041107",
                    "An attribute in an aggregate query must have an 'aggregate' or a 'groupby' attribute.",
                ));
            }
        }
    };
    if el.attr("dategrouping").is_some() {
        return Err(Fail::not_implemented(
            "FetchXML date grouping ('dategrouping')",
        ));
    }
    if matches!(agg, Agg::Sum | Agg::Avg) && !def.columns[column].edm().is_numeric() {
        return Err(invalid_argument(format!(
            "The aggregate '{}' is not valid for the attribute '{}'.",
            el.attr("aggregate").unwrap_or_default(),
            def.columns[column].attribute()
        )));
    }
    let Some(alias) = alias.filter(|a| !a.is_empty()) else {
        // `QueryBuilderNoAlias`.
        return Err(Fail::new(
            400,
            "0x8004110b",
            "An aggregate or group-by attribute must have an alias.",
        ));
    };
    items.push(AggItem {
        slot,
        column,
        alias: alias.to_owned(),
        agg,
    });
    Ok(())
}

fn descending(el: &Element) -> Result<bool, Fail> {
    match el.attr("descending") {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(Fail::new(
            400,
            "0x80041119",
            format!("'{other}' is not a valid value for the 'descending' attribute of 'order'."),
        )),
    }
}

fn order(query: &mut Query, def: &TableDef, el: &Element, slot: usize) -> Result<(), Fail> {
    check_attrs(el, &["attribute", "alias", "descending"], &[])?;
    let desc = descending(el)?;
    if let Some(items) = &query.aggregate {
        let alias = el.attr("alias").unwrap_or_default();
        let index = items.iter().position(|i| i.alias == alias).ok_or_else(|| {
            // `QueryBuilderAlias_Does_Not_Exist`.
            Fail::new(
                400,
                "0x8004110a",
                format!("An aggregate query must order by the alias of one of its attributes; '{alias}' is not one."),
            )
        })?;
        query.agg_orders.push((index, desc));
        return Ok(());
    }
    if slot != 0 {
        return Err(Fail::not_implemented(
            "ordering by a linked table's column in FetchXML",
        ));
    }
    if el.attr("alias").is_some() {
        return Err(Fail::not_implemented(
            "ordering by an alias outside an aggregate FetchXML query",
        ));
    }
    let column = column_of(def, el, "attribute")?;
    // Dataverse sorts a lookup by the related row's name; see `render::parse_orderby`.
    if matches!(
        def.columns[column].ty,
        ColumnType::Lookup { .. } | ColumnType::System(System::Reference)
    ) {
        return Err(Fail::not_implemented(format!(
            "ordering by a lookup column ('{}'), which Dataverse sorts by the related row's name",
            def.columns[column].attribute()
        )));
    }
    query.orders.push((column, desc));
    Ok(())
}

fn link(
    store: &Store,
    query: &mut Query,
    el: &Element,
    parent: usize,
    depth: usize,
) -> Result<(), Fail> {
    if depth > 2 {
        return Err(Fail::not_implemented(
            "link-entity nested more than two levels deep",
        ));
    }
    check_attrs(
        el,
        &["name", "from", "to", "link-type", "alias"],
        &["visible", "intersect"],
    )?;
    let outer = match el.attr("link-type") {
        None | Some("inner") => false,
        Some("outer") => true,
        Some(
            other @ ("any"
            | "not any"
            | "all"
            | "not all"
            | "exists"
            | "in"
            | "matchfirstrowusingcrossapply"),
        ) => {
            return Err(Fail::not_implemented(format!(
                "the FetchXML link-type '{other}'"
            )));
        }
        Some(other) => {
            // `QueryBuilderDeserializeInvalidLinkType`.
            return Err(Fail::new(
                400,
                "0x80041117",
                format!("'{other}' is not a valid link-type."),
            ));
        }
    };
    let name = el.attr("name").unwrap_or_default();
    let Some(table) = store.by_logical(name) else {
        // `QueryBuilderNoEntity`.
        return Err(Fail::new(
            400,
            "0x80041102",
            format!(
                "The entity with a name = '{name}' with namemapping = 'Logical' was not found in the MetadataCache."
            ),
        ));
    };
    let (Some(_), Some(_)) = (el.attr("from"), el.attr("to")) else {
        return Err(Fail::not_implemented(
            "a link-entity without both 'from' and 'to'",
        ));
    };
    let from = column_of(&store.tables[table].def, el, "from")?;
    let to = column_of(&store.tables[query.slots[parent].table].def, el, "to")?;
    let slot = query.slots.len();
    query.slots.push(Slot {
        table,
        to,
        from,
        outer,
        filter: None,
        links: Vec::new(),
    });
    query.slots[parent].links.push(slot);
    node(store, query, el, slot, depth)
}

fn filter(def: &TableDef, el: &Element) -> Result<Expr, Fail> {
    check_attrs(el, &["type"], &["isquickfindfields", "hint"])?;
    let or = match el.attr("type") {
        None | Some("and") => false,
        Some("or") => true,
        Some(other) => {
            // `QueryBuilderInvalidFilterType`.
            return Err(Fail::new(
                400,
                "0x80041122",
                format!("'{other}' is not a valid filter type."),
            ));
        }
    };
    let mut terms = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "condition" => terms.push(condition(def, child)?),
            "filter" => terms.push(filter(def, child)?),
            "link-entity" => {
                return Err(Fail::not_implemented(
                    "link-entity inside a FetchXML filter",
                ));
            }
            other => return Err(invalid_node(other, "filter")),
        }
    }
    // An empty filter of either kind constrains nothing.
    Ok(match terms.len() {
        0 => Expr::And(Vec::new()),
        1 => terms.pop().unwrap_or(Expr::And(Vec::new())),
        _ if or => Expr::Or(terms),
        _ => Expr::And(terms),
    })
}

/// Every operator `FetchXML` has: those outside the subset are 501, anything else 400.
const OTHER_OPERATORS: &[&str] = &[
    "yesterday",
    "today",
    "tomorrow",
    "last-seven-days",
    "next-seven-days",
    "last-week",
    "this-week",
    "next-week",
    "last-month",
    "this-month",
    "next-month",
    "on",
    "on-or-before",
    "on-or-after",
    "last-year",
    "this-year",
    "next-year",
    "last-x-hours",
    "next-x-hours",
    "last-x-days",
    "next-x-days",
    "last-x-weeks",
    "next-x-weeks",
    "last-x-months",
    "next-x-months",
    "older-x-months",
    "older-x-years",
    "older-x-weeks",
    "older-x-days",
    "older-x-hours",
    "older-x-minutes",
    "last-x-years",
    "next-x-years",
    "eq-userid",
    "ne-userid",
    "eq-userteams",
    "eq-useroruserteams",
    "eq-useroruserhierarchy",
    "eq-useroruserhierarchyandteams",
    "eq-businessid",
    "ne-businessid",
    "eq-userlanguage",
    "this-fiscal-year",
    "this-fiscal-period",
    "next-fiscal-year",
    "next-fiscal-period",
    "last-fiscal-year",
    "last-fiscal-period",
    "last-x-fiscal-years",
    "last-x-fiscal-periods",
    "next-x-fiscal-years",
    "next-x-fiscal-periods",
    "in-fiscal-year",
    "in-fiscal-period",
    "in-fiscal-period-and-year",
    "in-or-before-fiscal-period-and-year",
    "in-or-after-fiscal-period-and-year",
    "under",
    "eq-or-under",
    "not-under",
    "above",
    "eq-or-above",
    "contain-values",
    "not-contain-values",
];

fn condition(def: &TableDef, el: &Element) -> Result<Expr, Fail> {
    if el.attr("entityname").is_some() {
        return Err(Fail::not_implemented(
            "conditions on a linked table's column from the entity's filter ('entityname')",
        ));
    }
    if el.attr("valueof").is_some() {
        return Err(Fail::not_implemented(
            "column comparisons in FetchXML ('valueof')",
        ));
    }
    check_attrs(
        el,
        &["attribute", "operator", "value"],
        &["uiname", "uitype", "uihidden"],
    )?;
    let column = column_of(def, el, "attribute")?;
    let edm = def.columns[column].edm();
    let op = el.attr("operator").unwrap_or_default();
    let mut values: Vec<&str> = el.attr("value").into_iter().collect();
    for child in &el.children {
        if child.name != "value" {
            return Err(invalid_node(&child.name, "condition"));
        }
        values.push(child.text.as_str());
    }
    let prop = || Box::new(Expr::Prop(column, edm));
    let arity = |n: usize| -> Result<(), Fail> {
        let ok = if n == usize::MAX {
            !values.is_empty()
        } else {
            values.len() == n
        };
        if ok {
            Ok(())
        } else {
            Err(invalid_argument(format!(
                "Condition for attribute '{}.{}': the operator '{op}' takes {} value(s), {} given.",
                def.logical_name,
                def.columns[column].attribute(),
                if n == usize::MAX {
                    "one or more".to_owned()
                } else {
                    n.to_string()
                },
                values.len()
            )))
        }
    };
    let cmp = |op: CmpOp, value: &str| compare(def, column, op, value);
    let not = |e: Expr| Expr::Not(Box::new(e));
    Ok(match op {
        "eq" | "ne" | "neq" | "gt" | "ge" | "lt" | "le" => {
            arity(1)?;
            let op = match op {
                "eq" => CmpOp::Eq,
                "ne" | "neq" => CmpOp::Ne,
                "gt" => CmpOp::Gt,
                "ge" => CmpOp::Ge,
                "lt" => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            cmp(op, values[0])?
        }
        "null" | "not-null" => {
            arity(0)?;
            let op = if op == "null" { CmpOp::Eq } else { CmpOp::Ne };
            Expr::Cmp(op, prop(), Box::new(Expr::Lit(Lit::Null)))
        }
        "like" | "not-like" | "begins-with" | "not-begin-with" | "ends-with" | "not-end-with" => {
            arity(1)?;
            let func = match op {
                "like" | "not-like" => None,
                "begins-with" | "not-begin-with" => Some(StrFn::StartsWith),
                _ => Some(StrFn::EndsWith),
            };
            let like = filter::like(column, edm, values[0], func);
            if op.starts_with("not-") {
                not(like)
            } else {
                like
            }
        }
        "in" => {
            arity(usize::MAX)?;
            Expr::Or(
                values
                    .iter()
                    .map(|v| cmp(CmpOp::Eq, v))
                    .collect::<Result<_, _>>()?,
            )
        }
        "not-in" => {
            arity(usize::MAX)?;
            Expr::And(
                values
                    .iter()
                    .map(|v| cmp(CmpOp::Ne, v))
                    .collect::<Result<_, _>>()?,
            )
        }
        "between" => {
            arity(2)?;
            Expr::And(vec![cmp(CmpOp::Ge, values[0])?, cmp(CmpOp::Le, values[1])?])
        }
        "not-between" => {
            arity(2)?;
            Expr::Or(vec![cmp(CmpOp::Lt, values[0])?, cmp(CmpOp::Gt, values[1])?])
        }
        other if OTHER_OPERATORS.contains(&other) => {
            return Err(Fail::not_implemented(format!(
                "the FetchXML condition operator '{other}'"
            )));
        }
        other => {
            // `QueryBuilderInvalidConditionOperator`.
            return Err(Fail::new(
                400,
                "0x80041120",
                format!("'{other}' is not a valid condition operator."),
            ));
        }
    })
}

/// `column <op> value`, with the value read as the column's type. The value becomes an `OData`
/// literal and goes through the `$filter` parser, so dates, GUIDs and numbers are normalised and
/// type-checked exactly as `$filter` does it.
fn compare(def: &TableDef, column: usize, op: CmpOp, value: &str) -> Result<Expr, Fail> {
    let c = &def.columns[column];
    let edm = c.edm();
    let v = value.trim();
    let system = match edm {
        Edm::String => "System.String",
        Edm::Int32 => "System.Int32",
        Edm::Int64 => "System.Int64",
        Edm::Decimal => "System.Decimal",
        Edm::Double => "System.Double",
        Edm::Boolean => "System.Boolean",
        Edm::DateTimeOffset | Edm::Date => "System.DateTime",
        Edm::Guid => "System.Guid",
    };
    let format_error = || {
        invalid_argument(format!(
            "An exception System.FormatException was thrown while trying to convert input value '{value}' to attribute '{}.{}'. Expected type of attribute value: {system}. Exception raised: Input string was not in a correct format.",
            def.logical_name,
            c.attribute()
        ))
    };
    let literal = match edm {
        Edm::String => format!("'{}'", value.replace('\'', "''")),
        Edm::Guid => Uuid::parse_str(v.trim_start_matches('{').trim_end_matches('}'))
            .map_err(|_| format_error())?
            .to_string(),
        Edm::Int32 | Edm::Int64 => v.parse::<i64>().map_err(|_| format_error())?.to_string(),
        Edm::Decimal | Edm::Double => {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(format_error)?;
            // The literal as written, so a decimal keeps its digits.
            if v.contains(['e', 'E']) {
                return Err(format_error());
            }
            v.to_owned()
        }
        Edm::Boolean => match v {
            "1" => "true".to_owned(),
            "0" => "false".to_owned(),
            _ if v.eq_ignore_ascii_case("true") => "true".to_owned(),
            _ if v.eq_ignore_ascii_case("false") => "false".to_owned(),
            _ => return Err(format_error()),
        },
        // FetchXML takes a date-time without an offset (as UTC here) and a bare date (midnight).
        Edm::DateTimeOffset => match v.split_once('T') {
            None => format!("{v}T00:00:00Z"),
            Some((_, time)) if !time.contains(['Z', 'z', '+', '-']) => format!("{v}Z"),
            Some(_) => v.to_owned(),
        },
        Edm::Date => v.get(..10).unwrap_or(v).to_owned(),
    };
    let text = format!("{} eq {literal}", c.name);
    match filter::parse(&text, &RowProps(def)) {
        Ok(Expr::Cmp(_, left, right)) => Ok(Expr::Cmp(op, left, right)),
        _ => Err(format_error()),
    }
}
