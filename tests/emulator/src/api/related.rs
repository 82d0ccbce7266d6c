//! What follows a row in a path: `accounts(<row>)/<navigation property>[(<row>)][/$ref]`.
//!
//! Served, as Microsoft Learn's "Associate and disassociate table rows using the Web API" documents
//! them (rows addressed by id or by alternate key everywhere, in the URL and in `@odata.id`):
//!
//! | Request | Effect |
//! |---|---|
//! | `GET {set}({row})/{collection}` | the related rows, as a query of their table (`$select`, `$filter`, `$orderby`, `$top`, `$count`, paging) |
//! | `POST {set}({row})/{collection}/$ref` `{"@odata.id": "<url of the child>"}` | the child's lookup now points at the row |
//! | `DELETE {set}({row})/{collection}({child})/$ref` or `.../{collection}/$ref?$id=<url of the child>` | the child's lookup is cleared, if it points at the row |
//! | `PUT {set}({row})/{single}/$ref` `{"@odata.id": "<url>"}` | the row's lookup now points at the URL's row |
//! | `DELETE {set}({row})/{single}/$ref` | the row's lookup is cleared |
//!
//! Every change is an Update of the row holding the lookup, through the same path as a PATCH
//! (`super::rows::update`): its `versionnumber` and `modifiedon` move, change tracking lists it, and
//! Update steps whose filtering attributes name the lookup fire.
//!
//! Not served (501): reading a single-valued navigation property or one related row through the
//! parent, listing references (`GET .../$ref`), creating a row through a collection-valued
//! navigation property, single-property requests (`accounts(<id>)/name`), and longer paths.

use percent_encoding::percent_decode_str;
use serde_json::Value;
use uuid::Uuid;

use super::rows::{self, Scope};
use super::{Ctx, Segment, segment};
use crate::Request;
use crate::relationships::{self, Relationship};
use crate::reply::{Fail, Reply};
use crate::schema::ColumnType;
use crate::store::{Changes, Store};

/// What the segment after a row names.
#[derive(Debug)]
enum Property {
    /// A collection-valued navigation property: the relationship it stands for.
    Collection {
        referencing: usize,
        column: usize,
        nav: String,
    },
    /// A single-valued navigation property: its lookup column and the table it points at.
    Single {
        column: usize,
        target: usize,
        nav: String,
    },
}

/// `{set}({key})/{tail}`, for table `t`.
pub fn handle(
    store: &mut Store,
    req: &Request,
    ctx: &Ctx,
    t: usize,
    key: &str,
    tail: &str,
) -> Result<Reply, Fail> {
    let Segment {
        name,
        key: child,
        tail: rest,
        ..
    } = segment(tail)?;
    let is_ref = rest == "$ref";
    let property = resolve(store, t, name, is_ref)?;
    if !rest.is_empty() && !is_ref {
        return Err(Fail::not_implemented(format!(
            "the path segment '{rest}' after the navigation property '{name}'"
        )));
    }
    let method = req.method.as_str();
    match property {
        Property::Collection {
            referencing,
            column,
            nav,
        } => match (child, is_ref, method) {
            (None, false, "GET") => {
                let parent = existing(store, t, key)?;
                let scope = Scope {
                    column,
                    parent,
                    path: format!("{}({parent})/{nav}", store.tables[t].def.entity_set_name),
                };
                rows::list_in(store, ctx, referencing, Some(&scope))
            }
            (None, false, "POST") => Err(Fail::not_implemented(
                "creating a row through a collection-valued navigation property (POST the row with an @odata.bind instead)",
            )),
            (Some(_), false, _) => Err(Fail::not_implemented(
                "addressing one related row through a collection-valued navigation property",
            )),
            (None, true, "POST") => {
                let parent = existing(store, t, key)?;
                let child = reference(
                    store,
                    &body_reference(req, store, referencing)?,
                    referencing,
                )?;
                set_lookup(
                    store,
                    referencing,
                    child,
                    column,
                    Value::String(parent.to_string()),
                )
            }
            (None, true, "DELETE") => {
                let parent = existing(store, t, key)?;
                let Some(id) = ctx.options.id.as_deref() else {
                    // Emulator wording: a collection holds many references, so the one to remove
                    // must be named.
                    return Err(Fail::bad_query(format!(
                        "Removing a reference from the collection-valued navigation property '{nav}' needs the $id query option (or the related row's key after '{nav}')."
                    )));
                };
                let child = reference(store, id, referencing)
                    .map_err(|f| requery(f, id, &store.tables[referencing].def.entity_set_name))?;
                unlink(store, referencing, child, column, parent)
            }
            (Some(child), true, "DELETE") => {
                let parent = existing(store, t, key)?;
                let child = existing(store, referencing, child)?;
                unlink(store, referencing, child, column, parent)
            }
            (_, true, "PUT") => Err(Fail::bad_query(format!(
                // Emulator wording; Dataverse does not document this refusal.
                "'{nav}' is a collection-valued navigation property: add a reference to it with POST, not PUT."
            ))),
            (_, true, "GET") => Err(Fail::not_implemented("listing references (GET .../$ref)")),
            (_, _, other) => Err(Fail::method_not_allowed(other)),
        },
        Property::Single {
            column,
            target,
            nav,
        } => {
            if child.is_some() {
                return Err(Fail::bad_query("Bad Request - Error in query syntax."));
            }
            match (is_ref, method) {
                (false, "GET") => Err(Fail::not_implemented(
                    "reading a single-valued navigation property (use $expand)",
                )),
                (false, _) => Err(Fail::not_implemented(
                    "writing through a single-valued navigation property",
                )),
                (true, "PUT") => {
                    let id = existing(store, t, key)?;
                    let related = reference(store, &body_reference(req, store, target)?, target)?;
                    set_lookup(store, t, id, column, Value::String(related.to_string()))
                }
                (true, "DELETE") => {
                    let id = existing(store, t, key)?;
                    // Through `parentcustomerid_account`, a contact whose company is a contact has
                    // no account to remove: the lookup is left alone.
                    let def = &store.tables[t].def;
                    let elsewhere = match (&def.columns[column].ty, store.tables[t].rows.get(&id)) {
                        (ColumnType::Lookup { navs }, Some(row)) => row.cells[column]
                            .as_str()
                            .and_then(|v| store.lookup_target(navs, v))
                            .is_some_and(|(table, _)| table != target),
                        _ => false,
                    };
                    if elsewhere {
                        return Ok(Reply::empty(204));
                    }
                    set_lookup(store, t, id, column, Value::Null)
                }
                (true, "POST") => Err(Fail::bad_query(format!(
                    // Emulator wording; Dataverse does not document this refusal.
                    "'{nav}' is a single-valued navigation property: set its reference with PUT, not POST."
                ))),
                (true, "GET") => Err(Fail::not_implemented("listing references (GET .../$ref)")),
                (true, other) => Err(Fail::method_not_allowed(other)),
            }
        }
    }
}

/// What `name` is on table `t`: a navigation property, or why the request cannot go on.
fn resolve(store: &Store, t: usize, name: &str, is_ref: bool) -> Result<Property, Fail> {
    let def = &store.tables[t].def;
    if let Some(Relationship {
        referencing,
        column,
        nav,
        ..
    }) = relationships::collection(store, t, name)
    {
        return Ok(Property::Collection {
            referencing,
            column,
            nav: nav.relationship.clone(),
        });
    }
    if let Some((column, nav)) = def.nav(name) {
        let target = store
            .by_logical(&nav.target)
            .ok_or_else(|| Fail::not_implemented(format!("the table '{}'", nav.target)))?;
        return Ok(Property::Single {
            column,
            target,
            nav: name.to_owned(),
        });
    }
    if def.column(name).is_some() {
        if is_ref {
            // The `OData` path parser's words, as Dataverse answers `$ref` after a structural
            // property (code as reported by clients that met it).
            return Err(Fail::new(
                400,
                "0x8006088a",
                format!("The URI segment '$ref' is invalid after the segment '{name}'."),
            ));
        }
        return Err(Fail::not_implemented(
            "single-property requests on a row (accounts(<id>)/name)",
        ));
    }
    Err(Fail::bad_query(format!(
        "Could not find a property named '{name}' on type '{}'.",
        def.type_name()
    )))
}

/// The id of the row `key` addresses in table `t`, which must exist: `0x80040217` for an id,
/// `0x80060891` for alternate key values, both 404.
fn existing(store: &Store, t: usize, key: &str) -> Result<Uuid, Fail> {
    let id = rows::parse_key(store, t, key)?.existing(store, t)?;
    if !store.tables[t].rows.contains_key(&id) {
        return Err(Fail::row_not_found(&store.tables[t].def.logical_name, &id));
    }
    Ok(id)
}

/// The `@odata.id` of a `POST`/`PUT .../$ref` body, which should name a row of table `expected`.
fn body_reference(req: &Request, store: &Store, expected: usize) -> Result<String, Fail> {
    let set = &store.tables[expected].def.entity_set_name;
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
    // Emulator wording: the `OData` reader's own messages for a malformed entity reference are not
    // documented.
    let missing = || {
        Fail::payload(
            set,
            format!(
                "An entity reference must be a JSON object whose '@odata.id' is the URL of a row of '{set}', such as {{\"@odata.id\": \"{set}(00000000-0000-0000-0000-000000000000)\"}}."
            ),
        )
    };
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| missing())?;
    body.get("@odata.id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(missing)
}

/// The row a reference names: an absolute URL or a path ending in `{set}({id or key})`, where `set`
/// is table `expected`'s. 400 if it names something else; 404 if the row does not exist.
fn reference(store: &Store, text: &str, expected: usize) -> Result<Uuid, Fail> {
    let set = &store.tables[expected].def.entity_set_name;
    let wrong = || {
        Fail::payload(
            set,
            format!(
                "The reference '{text}' is not the URL of a row of '{set}', such as '{set}(00000000-0000-0000-0000-000000000000)'."
            ),
        )
    };
    // `http://host/api/data/v9.2/accounts(...)`, `/accounts(...)` and `accounts(...)` all name a row.
    let path = match text.find("/api/data/") {
        Some(at) => text[at + "/api/data/".len()..]
            .split_once('/')
            .map_or("", |(_, rest)| rest),
        None => text.trim_start_matches('/'),
    };
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| wrong())?;
    let Segment {
        name,
        key: Some(key),
        tail: "",
        ..
    } = segment(&decoded).map_err(|_| wrong())?
    else {
        return Err(wrong());
    };
    if name != set {
        return Err(wrong());
    }
    existing(store, expected, key)
}

/// A reference in `$id` is a query option, so its errors are the URI's, not the payload's.
fn requery(fail: Fail, id: &str, set: &str) -> Fail {
    if fail.status == 400 && fail.code == "0x80048d19" {
        Fail::bad_query(format!(
            "The $id '{id}' is not the URL of a row of '{set}', such as '{set}(00000000-0000-0000-0000-000000000000)'."
        ))
    } else {
        fail
    }
}

/// Writes `value` to lookup `column` of row `id` of table `t`, as a PATCH of that lookup would.
fn set_lookup(
    store: &mut Store,
    t: usize,
    id: Uuid,
    column: usize,
    value: Value,
) -> Result<Reply, Fail> {
    let mut changes = Changes {
        id: None,
        values: vec![(column, value)],
    };
    rows::update(store, t, id, &mut changes)?;
    Ok(Reply::empty(204))
}

/// Clears lookup `column` of row `child` of table `t` if it points at `parent`. When it points
/// elsewhere Dataverse's answer is not documented; the emulator answers 204 and changes nothing.
fn unlink(
    store: &mut Store,
    t: usize,
    child: Uuid,
    column: usize,
    parent: Uuid,
) -> Result<Reply, Fail> {
    let linked = store.tables[t]
        .rows
        .get(&child)
        .and_then(|r| r.cells[column].as_str())
        .is_some_and(|v| v == parent.to_string());
    if !linked {
        return Ok(Reply::empty(204));
    }
    set_lookup(store, t, child, column, Value::Null)
}
