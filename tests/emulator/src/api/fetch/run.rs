//! Running a `FetchXML` query: filter, join, sort, page (or group and aggregate), and write the
//! response with the annotations the service adds.

use std::cmp::Ordering;
use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Number, Value};

use super::query::{Agg, MAX_PAGE, Query};
use super::xml;
use crate::api::Ctx;
use crate::api::render::{cmp_rows, cmp_value, etag, write_json};
use crate::format::{self, Annotate};
use crate::odata::filter;
use crate::reply::Reply;
use crate::schema::{Edm, TableDef};
use crate::store::{Row, Store};

/// One result row before projection: a row (or none, for an outer link without a match) per slot.
type Tuple<'a> = Vec<Option<&'a Row>>;

/// Characters the service escapes in each of the two URL-encodings of the paging cookie.
const COOKIE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub(super) fn execute(store: &Store, ctx: &Ctx, t: usize, q: &Query) -> Reply {
    let table = &store.tables[t];
    let def = &table.def;
    let base = q.slots[0].filter.as_ref();
    let mut tuples: Vec<Tuple<'_>> = Vec::new();
    for row in table
        .rows
        .values()
        .filter(|r| base.is_none_or(|f| filter::matches(f, &r.cells)))
    {
        for mut rest in joins(store, q, 0, row) {
            rest[0] = Some(row);
            tuples.push(rest);
        }
    }
    if let Some(items) = &q.aggregate {
        return aggregate(store, ctx, def, q, items, &tuples);
    }

    // The `<order>` columns, then the primary key, then the linked rows' keys: a total order, so
    // pages neither repeat nor lose a row.
    tuples.sort_by(|a, b| cmp_tuples(store, def, q, a, b));
    if q.distinct {
        let mut seen = std::collections::HashSet::new();
        tuples.retain(|tuple| seen.insert(projected(q, tuple)));
    }
    let total = tuples.len();
    let (size, page) = match q.top {
        Some(top) => (top, 1),
        None => (
            q.count.unwrap_or(MAX_PAGE).min(MAX_PAGE),
            q.page.unwrap_or(1),
        ),
    };
    // The cookie is used when it is the previous page's and every row of the entity appears once;
    // otherwise, as the service does with a cookie it cannot use, the page is an offset.
    let once = !q.distinct
        && tuples.windows(2).all(|w| {
            w[0][0].map(|r| &r.cells[def.idx.id]) != w[1][0].map(|r| &r.cells[def.idx.id])
        });
    let keyset = q
        .cookie
        .as_deref()
        .filter(|_| q.top.is_none() && once)
        .and_then(|c| read_cookie(def, q, c))
        .filter(|(p, _)| p.saturating_add(1) == page);
    let start = match keyset {
        Some((_, key)) => tuples.partition_point(|tuple| {
            tuple[0].is_some_and(|r| {
                crate::api::render::cmp_key(def, &q.orders, &r.cells, &key).is_le()
            })
        }),
        None => page.saturating_sub(1).saturating_mul(size).min(total),
    };
    let end = start.saturating_add(size).min(total);
    let rows = &tuples[start..end];
    let more = q.top.is_none() && end < total;

    let annotate = Annotate::of(&ctx.prefer);
    let mut out = Vec::with_capacity(256 + rows.len() * 512);
    out.extend_from_slice(b"{\"@odata.context\":");
    let mut context = format!("{}$metadata#{}", ctx.base, def.entity_set_name);
    if !q.all {
        let names: Vec<&str> = q
            .outs
            .iter()
            .filter(|o| o.slot == 0)
            .map(|o| o.key.as_str())
            .collect();
        let _ = write!(context, "({})", names.join(","));
    }
    write_json(&mut out, &context);
    totals(&mut out, q, total);
    if more {
        let cookie = cookie(def, q, page, rows);
        out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.fetchxmlpagingcookie\":");
        write_json(&mut out, &cookie);
        out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.morerecords\":true");
    }
    out.extend_from_slice(b",\"value\":[");
    for (i, tuple) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_tuple(&mut out, store, q, tuple, annotate);
    }
    out.extend_from_slice(b"]}");
    let reply = Reply::raw_json(200, out);
    match format::applied(&ctx.prefer) {
        Some(applied) => reply.with_header("preference-applied", applied),
        None => reply,
    }
}

/// The rows linked below slot `slot` for its row `row`: one tuple per combination, with the
/// slots this subtree does not cover left empty.
fn joins<'a>(store: &'a Store, q: &Query, slot: usize, row: &'a Row) -> Vec<Tuple<'a>> {
    let mut acc: Vec<Tuple<'a>> = vec![vec![None; q.slots.len()]];
    for &link in &q.slots[slot].links {
        let s = &q.slots[link];
        let key = &row.cells[s.to];
        let mut found: Vec<Tuple<'a>> = Vec::new();
        if !key.is_null() {
            for linked in store.tables[s.table].rows.values().filter(|r| {
                r.cells[s.from] == *key
                    && s.filter
                        .as_ref()
                        .is_none_or(|f| filter::matches(f, &r.cells))
            }) {
                for mut sub in joins(store, q, link, linked) {
                    sub[link] = Some(linked);
                    found.push(sub);
                }
            }
        }
        if found.is_empty() {
            if !s.outer {
                return Vec::new();
            }
            found.push(vec![None; q.slots.len()]);
        }
        acc = acc
            .iter()
            .flat_map(|a| {
                found.iter().map(move |f| {
                    a.iter()
                        .zip(f)
                        .map(|(x, y)| x.or(*y))
                        .collect::<Tuple<'a>>()
                })
            })
            .collect();
    }
    acc
}

fn cmp_tuples(store: &Store, def: &TableDef, q: &Query, a: &Tuple<'_>, b: &Tuple<'_>) -> Ordering {
    let (Some(x), Some(y)) = (a[0], b[0]) else {
        return Ordering::Equal;
    };
    cmp_rows(def, &q.orders, &x.cells, &y.cells).then_with(|| {
        q.slots
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| {
                let id = store.tables[s.table].def.idx.id;
                let cell = |t: &Tuple<'_>| t[i].map_or(Value::Null, |r| r.cells[id].clone());
                cmp_value(&cell(a), &cell(b), Edm::Guid)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    })
}

fn projected(q: &Query, tuple: &Tuple<'_>) -> String {
    let values: Vec<&Value> = q
        .outs
        .iter()
        .map(|o| tuple[o.slot].map_or(&Value::Null, |r| &r.cells[o.column]))
        .collect();
    serde_json::to_string(&values).unwrap_or_default()
}

fn totals(out: &mut Vec<u8>, q: &Query, total: usize) {
    if q.total {
        out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.totalrecordcount\":");
        write_json(out, &total.min(MAX_PAGE));
        out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded\":");
        write_json(out, &(total > MAX_PAGE));
    }
}

/// One result row. Each column, the linked ones too, carries the formatted value and lookup
/// annotations asked for, as the Web API's own rows do (under the `alias.attribute` key for a
/// linked column, before its `AttributeName`).
fn write_tuple(out: &mut Vec<u8>, store: &Store, q: &Query, tuple: &Tuple<'_>, annotate: Annotate) {
    out.extend_from_slice(b"{\"@odata.etag\":");
    write_json(out, &etag(tuple[0].map_or(0, |r| r.version)));
    for o in &q.outs {
        out.push(b',');
        if annotate.any()
            && let Some(row) = tuple[o.slot]
        {
            let def = &store.tables[q.slots[o.slot].table].def;
            let notes = format::annotations(store, def, o.column, &row.cells[o.column], annotate);
            format::write_annotations(out, &o.key, &notes);
        }
        if let Some(attribute) = &o.attribute {
            // A linked column carries the logical name it came from, as the service annotates
            // every aliased value.
            write_json(
                out,
                &format!("{}@OData.Community.Display.V1.AttributeName", o.key),
            );
            out.push(b':');
            write_json(out, attribute);
            out.push(b',');
        }
        write_json(out, &o.key);
        out.push(b':');
        write_json(
            out,
            tuple[o.slot].map_or(&Value::Null, |r| &r.cells[o.column]),
        );
    }
    out.push(b'}');
}

/// The text of a cookie value: GUIDs uppercase in braces, as the service writes them.
fn cookie_value(value: &Value, edm: Edm) -> String {
    match value {
        Value::String(s) if edm == Edm::Guid => format!("{{{}}}", s.to_uppercase()),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        other => other.to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`: `<cookie pagenumber="N+1" pagingcookie="..."
/// istracking="False" />`, where `pagingcookie` is the `FetchXML` paging cookie
/// `<cookie page="N"><accountid last="{...}" first="{...}" /></cookie>` URL-encoded twice.
fn cookie(def: &TableDef, q: &Query, page: usize, rows: &[Tuple<'_>]) -> String {
    let first = rows.first().and_then(|t| t[0]);
    let last = rows.last().and_then(|t| t[0]);
    let mut inner = format!("<cookie page=\"{page}\">");
    let columns = q.orders.iter().map(|(c, _)| *c).chain([def.idx.id]);
    for column in columns {
        let c = &def.columns[column];
        let _ = write!(inner, "<{}", c.attribute());
        for (name, row) in [("last", last), ("first", first)] {
            match row.map(|r| &r.cells[column]) {
                None | Some(Value::Null) => {
                    let _ = write!(inner, " {name}null=\"1\"");
                }
                Some(v) => {
                    let _ = write!(inner, " {name}=\"{}\"", escape(&cookie_value(v, c.edm())));
                }
            }
        }
        inner.push_str(" />");
    }
    inner.push_str("</cookie>");
    let once = utf8_percent_encode(&inner, COOKIE).to_string();
    let twice = utf8_percent_encode(&once, COOKIE).to_string();
    format!(
        "<cookie pagenumber=\"{}\" pagingcookie=\"{twice}\" istracking=\"False\" />",
        page.saturating_add(1)
    )
}

/// The page number and the last row's key (`<order>` values, then the primary key) of a
/// `paging-cookie`, if it belongs to this query's order.
fn read_cookie(def: &TableDef, q: &Query, text: &str) -> Option<(usize, Vec<Value>)> {
    let root = xml::parse(text).ok()?;
    if root.name != "cookie" {
        return None;
    }
    let page: usize = root.attr("page")?.trim().parse().ok()?;
    let columns: Vec<usize> = q
        .orders
        .iter()
        .map(|(c, _)| *c)
        .chain([def.idx.id])
        .collect();
    if root.children.len() != columns.len() {
        return None;
    }
    let mut key = Vec::with_capacity(columns.len());
    for (el, column) in root.children.iter().zip(columns) {
        let c = &def.columns[column];
        if el.name != c.attribute() {
            return None;
        }
        if el.attr("lastnull") == Some("1") {
            key.push(Value::Null);
            continue;
        }
        let raw = el.attr("last")?;
        key.push(match c.edm() {
            Edm::Guid => Value::String(
                uuid::Uuid::parse_str(raw.trim_start_matches('{').trim_end_matches('}'))
                    .ok()?
                    .to_string(),
            ),
            Edm::Boolean => Value::Bool(raw == "1"),
            e if e.is_numeric() => serde_json::from_str::<Number>(raw)
                .ok()
                .map(Value::Number)?,
            _ => Value::String(raw.to_owned()),
        });
    }
    Some((page, key))
}

/// `aggregate="true"`: groups by the `groupby` columns, one row per group of `{alias: value}`.
fn aggregate(
    store: &Store,
    ctx: &Ctx,
    def: &TableDef,
    q: &Query,
    items: &[super::query::AggItem],
    tuples: &[Tuple<'_>],
) -> Reply {
    let edm =
        |i: &super::query::AggItem| store.tables[q.slots[i.slot].table].def.columns[i.column].edm();
    let cell = |tuple: &Tuple<'_>, i: &super::query::AggItem| -> Value {
        tuple[i.slot].map_or(Value::Null, |r| r.cells[i.column].clone())
    };
    let groups: Vec<&super::query::AggItem> =
        items.iter().filter(|i| i.agg == Agg::GroupBy).collect();
    let cmp_group = |a: &Tuple<'_>, b: &Tuple<'_>| {
        groups
            .iter()
            .map(|g| cmp_value(&cell(a, g), &cell(b, g), edm(g)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    let mut sorted: Vec<&Tuple<'_>> = tuples.iter().collect();
    sorted.sort_by(|a, b| cmp_group(a, b));
    let mut chunks: Vec<Vec<&Tuple<'_>>> = Vec::new();
    for tuple in sorted {
        match chunks.last_mut() {
            Some(chunk) if chunk.first().is_some_and(|f| cmp_group(f, tuple).is_eq()) => {
                chunk.push(tuple);
            }
            _ => chunks.push(vec![tuple]),
        }
    }
    // Without `groupby`, an aggregate over no rows is still one row.
    if groups.is_empty() && chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let mut rows: Vec<Vec<Value>> = chunks
        .iter()
        .map(|chunk| {
            items
                .iter()
                .map(|i| compute(i, edm(i), chunk, &cell))
                .collect()
        })
        .collect();
    if !q.agg_orders.is_empty() {
        rows.sort_by(|a, b| {
            q.agg_orders
                .iter()
                .map(|(index, desc)| {
                    let o = cmp_value(&a[*index], &b[*index], edm(&items[*index]));
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    let total = rows.len();
    let (size, page) = match q.top {
        Some(top) => (top, 1),
        None => (
            q.count.unwrap_or(MAX_PAGE).min(MAX_PAGE),
            q.page.unwrap_or(1),
        ),
    };
    let start = page.saturating_sub(1).saturating_mul(size).min(total);
    let end = start.saturating_add(size).min(total);
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!("{}$metadata#{}", ctx.base, def.entity_set_name),
    );
    totals(&mut out, q, total);
    if q.top.is_none() && end < total {
        out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.morerecords\":true");
    }
    let value: Vec<Value> = rows[start..end]
        .iter()
        .map(|row| {
            let mut map = Map::new();
            for (item, v) in items.iter().zip(row) {
                map.insert(item.alias.clone(), v.clone());
            }
            Value::Object(map)
        })
        .collect();
    out.extend_from_slice(b",\"value\":");
    write_json(&mut out, &value);
    out.push(b'}');
    Reply::raw_json(200, out)
}

fn compute(
    item: &super::query::AggItem,
    edm: Edm,
    chunk: &[&Tuple<'_>],
    cell: &dyn Fn(&Tuple<'_>, &super::query::AggItem) -> Value,
) -> Value {
    let values: Vec<Value> = chunk
        .iter()
        .map(|t| cell(t, item))
        .filter(|v| !v.is_null())
        .collect();
    let integral = matches!(edm, Edm::Int32 | Edm::Int64);
    let number = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match item.agg {
        Agg::GroupBy => chunk.first().map_or(Value::Null, |t| cell(t, item)),
        Agg::Count => Value::from(chunk.len()),
        Agg::CountColumn { distinct: false } => Value::from(values.len()),
        Agg::CountColumn { distinct: true } => {
            let mut sorted = values;
            sorted.sort_by(|a, b| cmp_value(a, b, edm));
            sorted.dedup_by(|a, b| cmp_value(a, b, edm).is_eq());
            Value::from(sorted.len())
        }
        Agg::Sum | Agg::Avg if values.is_empty() => Value::Null,
        Agg::Sum if integral => Value::from(values.iter().filter_map(Value::as_i64).sum::<i64>()),
        Agg::Sum => number(values.iter().filter_map(Value::as_f64).sum()),
        Agg::Avg if integral => {
            // SQL Server's AVG of an integer column is an integer, truncated.
            let sum: i64 = values.iter().filter_map(Value::as_i64).sum();
            Value::from(sum / i64::try_from(values.len()).unwrap_or(1))
        }
        Agg::Avg => {
            #[allow(clippy::cast_precision_loss)]
            let n = values.len() as f64;
            number(values.iter().filter_map(Value::as_f64).sum::<f64>() / n)
        }
        Agg::Min => values
            .into_iter()
            .min_by(|a, b| cmp_value(a, b, edm))
            .unwrap_or(Value::Null),
        Agg::Max => values
            .into_iter()
            .max_by(|a, b| cmp_value(a, b, edm))
            .unwrap_or(Value::Null),
    }
}
