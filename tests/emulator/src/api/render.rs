//! Parsing `$select`/`$orderby`/`$expand` against a table, ordering rows, and writing them as JSON.

use std::cmp::Ordering;

use serde_json::Value;

use crate::format::{self, Annotate};
use crate::odata::filter::{self, Properties};
use crate::odata::query::split_top_level;
use crate::reply::Fail;
use crate::schema::{ColumnType, Edm, System, TableDef};
use crate::store::{Row, Store};

/// Resolves `$filter` property names against a table's columns.
#[derive(Debug)]
pub struct RowProps<'a>(pub &'a TableDef);

impl Properties for RowProps<'_> {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail> {
        self.0
            .column(name)
            .map(|c| (c, self.0.columns[c].edm()))
            .ok_or_else(|| Fail::no_such_property(name, &self.0.type_name()))
    }
}

/// The columns a response carries, in order. The primary key is always among them.
#[derive(Debug)]
pub struct Projection {
    pub columns: Vec<usize>,
    /// The `(a,b)` part of `@odata.context`, empty without `$select`.
    pub context: String,
}

pub fn parse_select(def: &TableDef, select: Option<&str>) -> Result<Projection, Fail> {
    let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
        return Ok(Projection {
            columns: (0..def.columns.len()).collect(),
            context: String::new(),
        });
    };
    let mut columns = Vec::new();
    let mut names = Vec::new();
    for name in select.split(',').map(str::trim) {
        let column = def
            .column(name)
            .ok_or_else(|| Fail::no_such_property(name, &def.type_name()))?;
        if !columns.contains(&column) {
            columns.push(column);
            names.push(name);
        }
    }
    // Selecting a money column also returns the row's currency, as the service does.
    let selects_money = columns
        .iter()
        .any(|c| matches!(def.columns[*c].ty, ColumnType::Money));
    if let Some(currency) = def.column("_transactioncurrencyid_value")
        && selects_money
        && !columns.contains(&currency)
    {
        columns.push(currency);
    }
    if !columns.contains(&def.idx.id) {
        columns.push(def.idx.id);
    }
    Ok(Projection {
        columns,
        context: format!("({})", names.join(",")),
    })
}

pub fn parse_orderby(def: &TableDef, orderby: Option<&str>) -> Result<Vec<(usize, bool)>, Fail> {
    let Some(orderby) = orderby.filter(|s| !s.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut order = Vec::new();
    for item in orderby.split(',') {
        let mut words = item.split_whitespace();
        let name = words.next().unwrap_or_default();
        let desc = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(Fail::bad_query(format!(
                    "Syntax error at position {} in '{orderby}'.",
                    orderby.find(item).unwrap_or(0) + item.trim_end().len()
                )));
            }
        };
        if words.next().is_some() {
            return Err(Fail::bad_query(format!(
                "Syntax error in '$orderby={orderby}'."
            )));
        }
        if name.contains('/') {
            return Err(Fail::not_implemented(format!(
                "ordering by a related table's column ('{name}')"
            )));
        }
        let column = def
            .column(name)
            .ok_or_else(|| Fail::no_such_property(name, &def.type_name()))?;
        // Dataverse sorts a lookup by the related row's primary name; sorting by the GUID here would
        // let a client that depends on the order pass against the emulator and fail against the real
        // service, so the emulator says it does not do it.
        if matches!(
            def.columns[column].ty,
            ColumnType::Lookup { .. } | ColumnType::System(System::Reference)
        ) {
            return Err(Fail::not_implemented(format!(
                "ordering by a lookup column ('{name}'), which Dataverse sorts by the related row's name"
            )));
        }
        order.push((column, desc));
    }
    Ok(order)
}

/// One `$expand` item: a single-valued navigation property and the related row's projection.
#[derive(Debug)]
pub struct Expand {
    pub nav: String,
    pub column: usize,
    pub target: usize,
    pub projection: Projection,
}

pub fn parse_expand(
    store: &Store,
    def: &TableDef,
    expand: Option<&str>,
) -> Result<Vec<Expand>, Fail> {
    let Some(expand) = expand.filter(|s| !s.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let items = split_top_level(expand);
    if items.len() > 15 {
        return Err(Fail::bad_query(
            "The number of $expand options in the query exceeds the limit of 15.",
        ));
    }
    let mut out = Vec::new();
    for item in items {
        let (nav, nested) = match item.split_once('(') {
            Some((nav, rest)) => (nav.trim(), rest.strip_suffix(')').unwrap_or(rest)),
            None => (item, ""),
        };
        let Some((column, nav_def)) = def.nav(nav) else {
            return Err(Fail::no_such_property(nav, &def.type_name()));
        };
        let target = store.by_logical(&nav_def.target).ok_or_else(|| {
            Fail::not_implemented(format!("expanding to the table '{}'", nav_def.target))
        })?;
        let mut select = None;
        for option in nested.split(';').map(str::trim).filter(|o| !o.is_empty()) {
            match option.split_once('=') {
                Some(("$select", value)) => select = Some(value),
                _ => {
                    return Err(Fail::not_implemented(format!(
                        "the nested option '{option}' inside $expand"
                    )));
                }
            }
        }
        out.push(Expand {
            nav: nav.to_owned(),
            column,
            target,
            projection: parse_select(&store.tables[target].def, select)?,
        });
    }
    Ok(out)
}

/// Orders values as SQL Server does: nulls first, text case-insensitively, GUIDs by byte group.
pub fn cmp_value(a: &Value, b: &Value, edm: Edm) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(x), Value::String(y)) if edm == Edm::String => filter::compare_text(x, y),
        (Value::String(x), Value::String(y)) if edm == Edm::Guid => crate::guid::compare_text(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&y.as_f64().unwrap_or(0.0)),
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Compares two rows by the `$orderby` columns, then by primary key, so every order is total and
/// keyset paging never skips or repeats a row.
pub fn cmp_rows(def: &TableDef, order: &[(usize, bool)], a: &[Value], b: &[Value]) -> Ordering {
    for (column, desc) in order {
        let ordering = cmp_value(&a[*column], &b[*column], def.columns[*column].edm());
        if ordering != Ordering::Equal {
            return if *desc { ordering.reverse() } else { ordering };
        }
    }
    cmp_value(&a[def.idx.id], &b[def.idx.id], Edm::Guid)
}

/// Compares a row with a paging cookie's key (`$orderby` values, then the primary key).
pub fn cmp_key(def: &TableDef, order: &[(usize, bool)], row: &[Value], key: &[Value]) -> Ordering {
    for ((column, desc), value) in order.iter().zip(key) {
        let ordering = cmp_value(&row[*column], value, def.columns[*column].edm());
        if ordering != Ordering::Equal {
            return if *desc { ordering.reverse() } else { ordering };
        }
    }
    key.get(order.len()).map_or(Ordering::Greater, |id| {
        cmp_value(&row[def.idx.id], id, Edm::Guid)
    })
}

pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Writes one row as a JSON object: `@odata.etag`, the projected columns (each after the
/// annotations `annotate` asks for, see [`format`]), and expansions, annotated alike.
pub fn write_row(
    out: &mut Vec<u8>,
    store: &Store,
    def: &TableDef,
    row: &Row,
    projection: &Projection,
    expand: &[Expand],
    annotate: Annotate,
) {
    out.extend_from_slice(b"{\"@odata.etag\":");
    write_json(out, &etag(row.version));
    for column in &projection.columns {
        out.push(b',');
        let name = def.columns[*column].name.as_str();
        if annotate.any() {
            let notes = format::annotations(store, def, *column, &row.cells[*column], annotate);
            format::write_annotations(out, name, &notes);
        }
        write_json(out, name);
        out.push(b':');
        write_json(out, &row.cells[*column]);
    }
    for item in expand {
        out.push(b',');
        write_json(out, item.nav.as_str());
        out.push(b':');
        let related = row.cells[item.column]
            .as_str()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .and_then(|id| store.tables[item.target].rows.get(&id));
        match related {
            Some(related) => write_row(
                out,
                store,
                &store.tables[item.target].def,
                related,
                &item.projection,
                &[],
                annotate,
            ),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

pub fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}
