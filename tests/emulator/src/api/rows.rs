//! Entity sets and rows: queries with keyset paging, and create/retrieve/update/delete with the
//! service's conditional-request rules.

use percent_encoding::utf8_percent_encode;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::render::{
    Expand, Projection, RowProps, cmp_key, cmp_rows, etag, parse_expand, parse_orderby,
    parse_select, write_json, write_row,
};
use super::{Ctx, URL};
use crate::Request;
use crate::format::{self, Annotate};
use crate::keys::{self, Address};
use crate::odata::cookie::Cursor;
use crate::odata::filter;
use crate::reply::{Fail, Reply};
use crate::schema::{ColumnType, Edm};
use crate::store::{Changes, Row, Store};
use crate::webhooks::{self, Message, registration};

/// The service's page size limit, which is also the default.
pub const MAX_PAGE: usize = 5000;

pub fn list(store: &Store, ctx: &Ctx, t: usize) -> Result<Reply, Fail> {
    list_in(store, ctx, t, None)
}

/// The rows of a collection-valued navigation property, `accounts(<id>)/contact_customer_accounts`:
/// the rows of the referencing table whose lookup `column` holds `parent`.
#[derive(Debug)]
pub struct Scope {
    pub column: usize,
    pub parent: Uuid,
    /// The path paging links repeat: `accounts(<id>)/contact_customer_accounts`, the parent by id
    /// however the request addressed it.
    pub path: String,
}

/// A page of table `t`, or of the part of it `scope` names.
pub fn list_in(store: &Store, ctx: &Ctx, t: usize, scope: Option<&Scope>) -> Result<Reply, Fail> {
    let opts = &ctx.options;
    let prefer = &ctx.prefer;
    if let Some(fetch) = opts.pairs.iter().find(|p| p.name == super::fetch::PARAM) {
        if scope.is_some() {
            return Err(Fail::not_implemented(
                "fetchXml on a collection-valued navigation property",
            ));
        }
        return super::fetch::run(store, ctx, t, &fetch.value);
    }
    if opts.apply.is_some() {
        return Err(Fail::not_implemented("$apply aggregation"));
    }
    if scope.is_some() && (opts.deltatoken.is_some() || prefer.track_changes) {
        return Err(Fail::not_implemented(
            "change tracking on a collection-valued navigation property",
        ));
    }
    if opts.deltatoken.is_some() {
        return super::delta::read(store, ctx, t);
    }
    let table = &store.tables[t];
    let def = &table.def;
    let path = scope.map_or(def.entity_set_name.as_str(), |s| s.path.as_str());
    let parent = scope.map(|s| (s.column, s.parent.to_string()));
    let tracking = prefer.track_changes && def.change_tracking;
    if tracking {
        super::delta::refuse_options(opts)?;
    }
    let projection = parse_select(def, opts.select.as_deref())?;
    let expand = parse_expand(store, def, opts.expand.as_deref())?;
    let filter = opts
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| filter::parse(f, &RowProps(def)))
        .transpose()?;
    let order = parse_orderby(def, opts.orderby.as_deref())?;
    let count = opts.count()?;
    let top = opts.top()?;
    // `$top` is ignored when a page size is asked for, as documented; without either, pages are 5000.
    let (page_size, paged) = match (prefer.max_page_size, top) {
        (Some(n), _) => (n.min(MAX_PAGE), true),
        (None, Some(n)) => (n.min(MAX_PAGE), false),
        (None, None) => (MAX_PAGE, true),
    };
    let (page, last, tracking_version) = match opts.skiptoken.as_deref() {
        None => (0, None, tracking.then_some(store.version)),
        Some(token) => match Cursor::decode(token)? {
            Cursor::Keyset {
                page,
                last,
                tracking: t_version,
            } => {
                let expected: Vec<&str> = order
                    .iter()
                    .map(|(c, _)| def.columns[*c].name.as_str())
                    .chain([def.primary_id.as_str()])
                    .collect();
                let names: Vec<&str> = last.iter().map(|(n, _)| n.as_str()).collect();
                if names != expected || t_version.is_some() != tracking {
                    return Err(Fail::bad_query(
                        "The $skiptoken does not belong to this query.",
                    ));
                }
                let key: Vec<Value> = last.into_iter().map(|(_, v)| v).collect();
                (page, Some(key), t_version)
            }
            Cursor::Delta { .. } => {
                return Err(Fail::bad_query(
                    "The $skiptoken does not belong to this query.",
                ));
            }
        },
    };

    let matches = |row: &Row| {
        parent
            .as_ref()
            .is_none_or(|(column, id)| row.cells[*column].as_str() == Some(id.as_str()))
            && filter
                .as_ref()
                .is_none_or(|f| filter::matches(f, &row.cells))
    };
    let mut rows: Vec<&Row> = if order.is_empty() {
        // The primary key order is the map's own order: a range scan from the cookie's key.
        let after = match last.as_ref().and_then(|k| k.last()).and_then(Value::as_str) {
            Some(id) => Some(Uuid::parse_str(id).map_err(|_| {
                Fail::bad_query("The $skiptoken value is not a valid paging cookie.")
            })?),
            None => None,
        };
        table
            .rows
            .after(after)
            .filter(|r| matches(r))
            .take(page_size + 1)
            .collect()
    } else {
        // The order is sorted once per table version; a page is a binary search for the cookie's
        // key and a walk forward from it.
        let ids = table.sorted_ids(&order, |a, b| cmp_rows(def, &order, a, b));
        let row_of = |id: &Uuid| table.rows.get(id).map(|r| &r.cells);
        let mut start = match &last {
            None => 0,
            Some(key) => ids.partition_point(|id| {
                row_of(id).is_some_and(|cells| cmp_key(def, &order, cells, key).is_le())
            }),
        };
        // An index seek: a filter that bounds the leading ascending sort columns from below (such as
        // the keyset form `(a, b) > (x, y)`) starts the walk there, as a database's range scan does.
        let mut leading: Vec<(usize, Edm)> = order
            .iter()
            .take_while(|(_, descending)| !descending)
            .map(|(c, _)| (*c, def.columns[*c].edm()))
            .collect();
        // The primary key breaks ties last, so it extends the key only when every column before it
        // is ascending.
        if leading.len() == order.len() {
            leading.push((def.idx.id, Edm::Guid));
        }
        if let Some(bound) = filter.as_ref().and_then(|f| filter::key_bound(f, &leading)) {
            let seek = ids.partition_point(|id| {
                row_of(id).is_some_and(|cells| filter::before_bound(cells, &bound, &leading))
            });
            start = start.max(seek);
        }
        ids[start..]
            .iter()
            .filter_map(|id| table.rows.get(id))
            .filter(|r| matches(r))
            .take(page_size + 1)
            .collect()
    };
    let more = rows.len() > page_size;
    rows.truncate(page_size);

    let annotate = Annotate::of(prefer);
    let mut out = Vec::with_capacity(256 + rows.len() * 512);
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!(
            "{}$metadata#{}{}",
            ctx.base, def.entity_set_name, projection.context
        ),
    );
    if count {
        // One past the cap tells "exactly 5000" from "more than 5000".
        let counted = table
            .rows
            .values()
            .filter(|r| matches(r))
            .take(MAX_PAGE + 1)
            .count();
        let total = counted.min(MAX_PAGE);
        out.extend_from_slice(b",\"@odata.count\":");
        write_json(&mut out, &total);
        if prefer.wants_annotation("Microsoft.Dynamics.CRM.totalrecordcount") {
            out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.totalrecordcount\":");
            write_json(&mut out, &total);
            out.extend_from_slice(b",\"@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded\":");
            write_json(&mut out, &(counted > MAX_PAGE));
        }
    }
    out.extend_from_slice(b",\"value\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_row(&mut out, store, def, row, &projection, &expand, annotate);
    }
    out.push(b']');
    if more && paged {
        let last_row = rows.last().map(|r| &r.cells);
        let key = last_row.map(|cells| {
            order
                .iter()
                .map(|(c, _)| (def.columns[*c].name.clone(), cells[*c].clone()))
                .chain([(def.primary_id.clone(), cells[def.idx.id].clone())])
                .collect()
        });
        let cursor = Cursor::Keyset {
            page: page.saturating_add(1),
            last: key.unwrap_or_default(),
            tracking: tracking_version,
        };
        out.extend_from_slice(b",\"@odata.nextLink\":");
        write_json(
            &mut out,
            &link(ctx, path, "$skiptoken", &cursor.encode(), |_| true),
        );
    } else if let Some(version) = tracking_version {
        let token = super::delta::token(version, store.clock.now());
        out.extend_from_slice(b",\"@odata.deltaLink\":");
        write_json(
            &mut out,
            &link(ctx, &def.entity_set_name, "$deltatoken", &token, |n| {
                n == "$select"
            }),
        );
    }
    out.push(b'}');

    let mut reply = Reply::raw_json(200, out);
    let mut applied = Vec::new();
    if tracking {
        applied.push("odata.track-changes".to_owned());
    }
    if let Some(n) = prefer.max_page_size {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    format::push_applied(&mut applied, prefer);
    if !applied.is_empty() {
        reply = reply.with_header("preference-applied", applied.join(","));
    }
    Ok(reply)
}

/// `{base}{path}?{the request's options}&{name}={value}`, with the value URL-encoded.
pub fn link(ctx: &Ctx, path: &str, name: &str, value: &str, keep: impl Fn(&str) -> bool) -> String {
    let carried = ctx.options.carried(keep);
    let separator = if carried.is_empty() { "" } else { "&" };
    format!(
        "{}{path}?{carried}{separator}{name}={}",
        ctx.base,
        utf8_percent_encode(value, URL)
    )
}

pub fn count(store: &Store, ctx: &Ctx, t: usize) -> Result<Reply, Fail> {
    let table = &store.tables[t];
    if ctx.options.deltatoken.is_some() {
        return Err(Fail::not_implemented("$count on a delta link"));
    }
    let filter = ctx
        .options
        .filter
        .as_deref()
        .map(|f| filter::parse(f, &RowProps(&table.def)))
        .transpose()?;
    let total = table
        .rows
        .values()
        .filter(|r| filter.as_ref().is_none_or(|f| filter::matches(f, &r.cells)))
        .take(MAX_PAGE)
        .count();
    // The service prefixes this plain-text body with a UTF-8 byte order mark.
    Ok(Reply::text(200, format!("\u{feff}{total}")))
}

/// What `accounts(...)` addresses.
#[derive(Debug)]
pub enum Target {
    /// A primary key, whether or not a row has it.
    Id(Uuid),
    /// The values of alternate key `key` (see [`keys::Address::Key`]), and the row that has them.
    Key {
        key: usize,
        values: Vec<(usize, Value)>,
        row: Option<Uuid>,
    },
}

impl Target {
    /// The id of the row to read or delete. A key that matched no row is `0x80060891` here; an id
    /// is passed on, for the handler's own "Does Not Exist".
    pub fn existing(&self, store: &Store, t: usize) -> Result<Uuid, Fail> {
        match self {
            Target::Id(id) | Target::Key { row: Some(id), .. } => Ok(*id),
            Target::Key { row: None, .. } => Err(keys::not_found(&store.tables[t].def)),
        }
    }
}

/// Parses the key in `accounts(<key>)` (a GUID, or an alternate key's values) and finds its row.
pub fn parse_key(store: &Store, t: usize, key: &str) -> Result<Target, Fail> {
    Ok(match keys::parse_address(&store.tables[t].def, key)? {
        Address::Id(id) => Target::Id(id),
        Address::Key { key, values } => {
            let row = store.find_by_key(t, key, &values);
            Target::Key { key, values, row }
        }
    })
}

fn row_reply(
    store: &Store,
    ctx: &Ctx,
    t: usize,
    row: &Row,
    status: u16,
    projection: &Projection,
    expand: &[Expand],
) -> Reply {
    let def = &store.tables[t].def;
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!(
            "{}$metadata#{}{}/$entity",
            ctx.base, def.entity_set_name, projection.context
        ),
    );
    out.push(b',');
    let mut body = Vec::with_capacity(1024);
    let annotate = Annotate::of(&ctx.prefer);
    write_row(&mut body, store, def, row, projection, expand, annotate);
    // Splice the row's fields after the context.
    out.extend_from_slice(&body[1..]);
    Reply::raw_json(status, out).with_header("etag", etag(row.version))
}

pub fn retrieve(
    store: &Store,
    req: &Request,
    ctx: &Ctx,
    t: usize,
    id: Uuid,
) -> Result<Reply, Fail> {
    let def = &store.tables[t].def;
    let projection = parse_select(def, ctx.options.select.as_deref())?;
    let expand = parse_expand(store, def, ctx.options.expand.as_deref())?;
    let row = store.tables[t]
        .rows
        .get(&id)
        .ok_or_else(|| Fail::row_not_found(&def.logical_name, &id))?;
    // A conditional GET answers 304, except with $expand or annotations, as documented.
    if let Some(tag) = req.header("if-none-match")
        && expand.is_empty()
        && ctx.prefer.annotations.is_none()
        && parse_etag(tag) == Some(row.version)
    {
        return Ok(Reply::empty(304).with_header("etag", etag(row.version)));
    }
    let reply = row_reply(store, ctx, t, row, 200, &projection, &expand);
    Ok(match format::applied(&ctx.prefer) {
        Some(applied) => reply.with_header("preference-applied", applied),
        None => reply,
    })
}

fn body_object(req: &Request, set: &str) -> Result<Map<String, Value>, Fail> {
    if let Some(content_type) = req.header("content-type")
        && !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    {
        return Err(Fail::new(
            415,
            "0x80060888",
            format!("The content type '{content_type}' is not supported. Send application/json."),
        ));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Fail::payload(
            set,
            "A node of type 'StartArray' or a primitive value was read from the JSON reader when a 'StartObject' node was expected.",
        )),
        Err(e) => Err(Fail::payload(set, format!("Invalid JSON. {e}"))),
    }
}

pub fn create(store: &mut Store, req: &Request, ctx: &Ctx, t: usize) -> Result<Reply, Fail> {
    let set = store.tables[t].def.entity_set_name.clone();
    let body = body_object(req, &set)?;
    let mut changes = store.read_payload(t, &body)?;
    let def = &store.tables[t].def;
    let projection = parse_select(def, ctx.options.select.as_deref())?;
    let id = changes.id.unwrap_or_else(Uuid::new_v4);
    if store.tables[t].rows.contains_key(&id) {
        return Err(duplicate());
    }
    insert(store, t, id, &mut changes)?;
    Ok(written(store, ctx, t, id, 201, &projection, None))
}

/// Creates row `id` through the Web API: the registration rules first, then the write, then what
/// the registered webhook steps need to hear of it.
fn insert(store: &mut Store, t: usize, id: Uuid, changes: &mut Changes) -> Result<(), Fail> {
    let checked = check_create(store, t, id, changes)?;
    apply(store, checked);
    Ok(())
}

/// Updates row `id` of table `t` through the Web API: the registration rules first, then the keys,
/// then the write, then what the registered webhook steps need to hear of it. A PATCH and every
/// associate or disassociate end here, so all of them are an Update to change tracking and steps.
pub fn update(store: &mut Store, t: usize, id: Uuid, changes: &mut Changes) -> Result<(), Fail> {
    let checked = check_update(store, t, id, changes)?;
    apply(store, checked);
    Ok(())
}

/// A write that passed every check ([`check_create`], [`check_update`]): applying it cannot fail. An
/// operation that writes several rows (`QualifyLead`) checks them all before it applies any, so a
/// refusal leaves nothing behind, as the service's transaction does.
#[derive(Debug)]
#[must_use]
pub struct Checked {
    t: usize,
    id: Uuid,
    values: Vec<(usize, Value)>,
    accepted: registration::Accepted,
    create: bool,
}

/// Checks the creation of row `id` of table `t` with `changes`: the registration rules, which may
/// add defaults to `changes`, then the alternate keys.
pub fn check_create(
    store: &Store,
    t: usize,
    id: Uuid,
    changes: &mut Changes,
) -> Result<Checked, Fail> {
    let accepted = registration::check_write(store, t, None, changes)?;
    store.check_keys(t, id, None, &changes.values)?;
    Ok(Checked {
        t,
        id,
        values: std::mem::take(&mut changes.values),
        accepted,
        create: true,
    })
}

/// Checks an update of row `id` of table `t` with `changes`, over the row as stored.
pub fn check_update(
    store: &Store,
    t: usize,
    id: Uuid,
    changes: &mut Changes,
) -> Result<Checked, Fail> {
    let stored = store.tables[t].rows.get(&id);
    let accepted = registration::check_write(store, t, stored, changes)?;
    store.check_keys(t, id, stored.map(|r| r.cells.as_slice()), &changes.values)?;
    Ok(Checked {
        t,
        id,
        values: std::mem::take(&mut changes.values),
        accepted,
        create: false,
    })
}

/// Writes a checked row, and records it for the registered webhook steps.
pub fn apply(store: &mut Store, checked: Checked) {
    let Checked {
        t,
        id,
        values,
        accepted,
        create,
    } = checked;
    let watching = webhooks::watching(store, t);
    let set = watching.then(|| values.clone());
    if create {
        store.insert(t, id, values, None);
        registration::commit(store, t, id, accepted);
        if let Some(set) = set {
            webhooks::record(store, Message::Create, t, id, set, None);
        }
    } else {
        let before = watching
            .then(|| store.tables[t].rows.get(&id).map(|r| r.cells.clone()))
            .flatten();
        store.update(t, id, values);
        registration::commit(store, t, id, accepted);
        // An update of a row that is not there writes nothing, so there is nothing to tell.
        if let (Some(set), Some(before)) = (set, before) {
            webhooks::record(store, Message::Update, t, id, set, Some(before));
        }
    }
}

pub(crate) fn duplicate() -> Fail {
    Fail::new(
        412,
        "0x80040237",
        "A record with matching key values already exists.",
    )
}

/// The answer to a successful create or update: the row with `return=representation`, else 204 and
/// the row's address in `OData-EntityId`: by id, or in the key form the request used (`by_key`, as
/// [`keys::render`] writes it).
fn written(
    store: &Store,
    ctx: &Ctx,
    t: usize,
    id: Uuid,
    status_with_body: u16,
    projection: &Projection,
    by_key: Option<String>,
) -> Reply {
    let set = &store.tables[t].def.entity_set_name;
    let location = format!("{}{set}({id})", ctx.base);
    // The row was written under the same lock, so it is there.
    if ctx.prefer.return_representation
        && let Some(row) = store.tables[t].rows.get(&id)
    {
        let mut applied = vec!["return=representation".to_owned()];
        format::push_applied(&mut applied, &ctx.prefer);
        return row_reply(store, ctx, t, row, status_with_body, projection, &[])
            .with_header("preference-applied", applied.join(","))
            .with_location(location);
    }
    let address = by_key.unwrap_or_else(|| id.to_string());
    Reply::empty(204)
        .with_header("odata-entityid", format!("{}{set}({address})", ctx.base))
        .with_location(location)
}

pub fn parse_etag(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').parse().ok()
}

enum Precondition {
    None,
    Any,
    Version(Option<u64>),
}

fn if_match(req: &Request) -> Precondition {
    match req.header("if-match").map(str::trim) {
        None => Precondition::None,
        Some("*") => Precondition::Any,
        Some(tag) => Precondition::Version(parse_etag(tag)),
    }
}

fn version_mismatch() -> Fail {
    Fail::new(
        412,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )
}

/// PATCH: an upsert unless `If-Match` demands an existing row or `If-None-Match: *` a new one.
///
/// Addressed by alternate key, it follows the documented Upsert: an existing row is updated with the
/// body's values of the key's columns left out (a key cannot change the values that found the row);
/// a new row gets the URL's key values wherever the body has none of its own.
pub fn patch(
    store: &mut Store,
    req: &Request,
    ctx: &Ctx,
    t: usize,
    target: Target,
) -> Result<Reply, Fail> {
    let set = store.tables[t].def.entity_set_name.clone();
    let logical = store.tables[t].def.logical_name.clone();
    let body = body_object(req, &set)?;
    let mut changes = store.read_payload(t, &body)?;
    let version_of = |store: &Store, id: &Uuid| store.tables[t].rows.get(id).map(|r| r.version);
    let (id, by_key) = match target {
        Target::Id(id) => (id, None),
        Target::Key { key, values, row } => (
            row.or(changes.id).unwrap_or_else(Uuid::new_v4),
            Some((key, values, row.is_some())),
        ),
    };
    if changes.id.is_some_and(|body_id| body_id != id) {
        return Err(Fail::new(
            400,
            "0x80040203",
            "Entity Id must be the same as the value set in property bag.",
        ));
    }
    // For a key that found no row, `id` is the new row's; a row already holding an id the body gave
    // is not the one the key addresses.
    let current = match &by_key {
        Some((_, _, false)) => None,
        _ => version_of(store, &id),
    };
    if req.header("if-none-match").map(str::trim) == Some("*") && current.is_some() {
        return Err(duplicate());
    }
    match (if_match(req), current) {
        (Precondition::Any | Precondition::Version(_), None) => {
            return Err(match by_key {
                Some(_) => keys::not_found(&store.tables[t].def),
                None => Fail::row_not_found(&logical, &id),
            });
        }
        (Precondition::Version(expected), Some(version)) if expected != Some(version) => {
            return Err(version_mismatch());
        }
        _ => {}
    }
    if current.is_none() && version_of(store, &id).is_some() {
        return Err(duplicate());
    }
    let projection = parse_select(&store.tables[t].def, ctx.options.select.as_deref())?;
    let address = by_key
        .as_ref()
        .map(|(_, values, _)| keys::render(&store.tables[t].def, values));
    let status = if current.is_some() {
        if let Some((_, values, _)) = &by_key {
            drop_key_values(&mut changes, values);
        }
        update(store, t, id, &mut changes)?;
        200
    } else {
        if let Some((_, values, _)) = by_key {
            add_key_values(store, t, &mut changes, values)?;
        }
        // An upsert that creates is a Create, for the steps as for everything else.
        insert(store, t, id, &mut changes)?;
        201
    };
    Ok(written(store, ctx, t, id, status, &projection, address))
}

/// Adds to a create the alternate key's values the body did not set itself, as an upsert or bulk
/// `UpsertMultiple` by key that creates a row does.
pub(crate) fn add_key_values(
    store: &Store,
    t: usize,
    changes: &mut Changes,
    values: Vec<(usize, Value)>,
) -> Result<(), Fail> {
    for (c, value) in values {
        if changes.values.iter().any(|(set, _)| *set == c) {
            continue;
        }
        // A lookup's key value becomes a reference, which must name a row, as a bind must.
        if let ColumnType::Lookup { navs } = &store.tables[t].def.columns[c].ty
            && let Some(target) = value.as_str()
            && store.lookup_target(navs, target).is_none()
        {
            let table = navs.first().map_or("", |n| n.target.as_str());
            let id = Uuid::parse_str(target).unwrap_or_default();
            return Err(Fail::row_not_found(table, &id));
        }
        changes.values.push((c, value));
    }
    Ok(())
}

/// Leaves out of an update the columns of the key that found the row: they address it and are not
/// written.
pub(crate) fn drop_key_values(changes: &mut Changes, values: &[(usize, Value)]) {
    changes
        .values
        .retain(|(c, _)| !values.iter().any(|(k, _)| k == c));
}

pub fn delete(store: &mut Store, req: &Request, t: usize, id: Uuid) -> Result<Reply, Fail> {
    let logical = store.tables[t].def.logical_name.clone();
    let Some(version) = store.tables[t].rows.get(&id).map(|r| r.version) else {
        return Err(Fail::row_not_found(&logical, &id));
    };
    if let Precondition::Version(expected) = if_match(req)
        && expected != Some(version)
    {
        return Err(version_mismatch());
    }
    registration::check_delete(store, t)?;
    let before = webhooks::watching(store, t)
        .then(|| store.tables[t].rows.get(&id).map(|r| r.cells.clone()))
        .flatten();
    store.delete(t, id);
    registration::cascade(store, t, id);
    if before.is_some() {
        webhooks::record(store, Message::Delete, t, id, Vec::new(), before);
    }
    Ok(Reply::empty(204))
}

#[cfg(test)]
mod tests {
    use super::parse_etag;

    #[test]
    fn reads_weak_and_strong_etags() {
        assert_eq!(parse_etag("W/\"12345\""), Some(12345));
        assert_eq!(parse_etag("\"7\""), Some(7));
        assert_eq!(parse_etag("W/\"x\""), None);
    }
}
