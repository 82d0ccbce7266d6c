//! The bulk operation messages, bound to a table's collection (Learn, "Use bulk operation messages",
//! and the Web API reference for `CreateMultiple`, `UpdateMultiple` and `UpsertMultiple`):
//!
//! ```http
//! POST accounts/Microsoft.Dynamics.CRM.CreateMultiple
//! {"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account", "name": "A"}, ...]}
//! ```
//!
//! | Message | A target names its row by | Answer |
//! |---|---|---|
//! | `CreateMultiple` | its primary key column, or none (a new id) | 200 `{"@odata.context": ".../$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", "Ids": [...]}`, in target order |
//! | `UpdateMultiple` | its primary key column, or `@odata.id` (`accounts(<id>)`, `accounts(accountnumber='A-1')`) | 204 |
//! | `UpsertMultiple` | `@odata.id` or its primary key column; neither creates a row | 204 (the `UpsertMultipleResponse` type is documented as not returned) |
//!
//! Every target must carry `@odata.type` naming the bound table. Each target is the single-row
//! `Create` or `Update` (an upsert that creates is a `Create`): validated, stamped with the caller,
//! listed by change tracking, and heard by the `Create` and `Update` webhook steps one row at a
//! time ("Message pipelines merged"), under the request's bypass headers.
//!
//! On a standard table "any error ... causes the entire operation to roll back": the targets are
//! applied in order inside one transaction, and the first failing target's single-row error is the
//! answer (Microsoft documents no bulk-specific error body), with nothing written. `UpdateMultiple`
//! applies the first of several targets naming the same row and ignores the rest; `UpsertMultiple`
//! refuses them, both as documented. Microsoft sets no maximum number of targets for standard
//! tables ("There's no set limit"; it suggests 100 to 1,000 per request), so neither does the
//! emulator, beyond the 64 MiB body limit.

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{NAMESPACE, Param, ParamType, Params, param};
use crate::api::Ctx;
use crate::api::rows::{self, Target};
use crate::keys;
use crate::reply::{Fail, Reply};
use crate::store::{Changes, Store};

/// What a bulk message is bound to in its CSDL: the collection of any table.
pub const ANY_TABLE: &str = "crmbaseentity";

/// The one parameter of each message after the collection it is bound to.
pub const PARAMS: &[Param] = &[param("Targets", ParamType::EntityCollection, false)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Upsert,
}

/// `0x80040203` `InvalidArgument`.
fn invalid(message: impl Into<String>) -> Fail {
    Fail::new(400, "0x80040203", message)
}

/// What one target asks for, once read.
#[derive(Debug)]
struct Plan {
    id: Uuid,
    changes: Changes,
    /// Whether the row is to be created.
    create: bool,
    /// The values of the alternate key `@odata.id` named, if it named one: kept out of an update
    /// (a key cannot change the values that found the row), added to a create.
    key_values: Vec<(usize, Value)>,
}

/// Runs `CreateMultiple`, `UpdateMultiple` or `UpsertMultiple` (`name`) on table `t`.
pub fn run(
    store: &mut Store,
    ctx: &Ctx,
    t: usize,
    name: &str,
    params: &Params,
) -> Result<Reply, Fail> {
    let kind = match name {
        "CreateMultiple" => Kind::Create,
        "UpdateMultiple" => Kind::Update,
        _ => Kind::Upsert,
    };
    let targets: Vec<&Map<String, Value>> = params
        .get("Targets")
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    if targets.is_empty() {
        // Not documented: the emulator's reading of a request that would do nothing.
        return Err(invalid(format!(
            "The Targets parameter of {name} must contain at least one record."
        )));
    }
    let mut plans = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        check_type(store, t, i, target)?;
        plans.push(read(store, t, kind, i, target)?);
    }
    let plans = match kind {
        // "The operation is performed on the first record only. Any subsequent records with the
        // same key value(s) in the payload are ignored."
        Kind::Update => {
            let mut seen = HashSet::new();
            plans.into_iter().filter(|p| seen.insert(p.id)).collect()
        }
        // "When more than one record in the Targets parameter is uniquely identified by a primary or
        // alternate key, UpsertMultiple will return an error."
        Kind::Upsert => {
            let def = &store.tables[t].def;
            let mut seen = HashSet::new();
            // A row named by id, or by alternate key values no row has yet.
            let repeated = plans.iter().find(|p| {
                let identity = if p.create && !p.key_values.is_empty() {
                    keys::render(def, &p.key_values)
                } else {
                    p.id.to_string()
                };
                !seen.insert(identity)
            });
            if repeated.is_some() {
                // The refusal is documented, its wording is not.
                return Err(invalid(
                    "UpsertMultiple does not support more than one record with the same primary key or alternate key values in Targets.",
                ));
            }
            plans
        }
        Kind::Create => plans,
    };
    // In a changeset the changeset is the transaction: a failure here fails it, and it undoes
    // everything. Otherwise this request is its own transaction.
    let own = !store.in_transaction();
    if own {
        store.begin();
    }
    let count = plans.len();
    let mut ids = Vec::with_capacity(count);
    for plan in plans {
        if let Err(fail) = write(store, t, plan, &mut ids) {
            if own {
                store.rollback();
            }
            return Err(fail);
        }
    }
    if own {
        store.commit();
    }
    store.caller.extra_operations = store
        .caller
        .extra_operations
        .saturating_add(u64::try_from(count.saturating_sub(1)).unwrap_or(u64::MAX));
    Ok(match kind {
        Kind::Create => Reply::json(
            200,
            &json!({
                "@odata.context": format!(
                    "{}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                    ctx.base
                ),
                "Ids": ids,
            }),
        ),
        Kind::Update | Kind::Upsert => Reply::empty(204),
    })
}

/// The target's `@odata.type` must name the table the request is bound to.
fn check_type(store: &Store, t: usize, i: usize, target: &Map<String, Value>) -> Result<(), Fail> {
    let Some(named) = target.get("@odata.type") else {
        // Learn ("Use Web API actions"): an entity of a base type the service cannot tell, without
        // its `@odata.type`, is refused this way.
        return Err(invalid(
            "EdmEntityObject passed should have the key property value set.",
        ));
    };
    let full = named.as_str().unwrap_or_default().trim_start_matches('#');
    let unresolved = || {
        Fail::payload(
            "",
            format!(
                "A type named '{full}' could not be resolved by the model. When a model is available, each type name must resolve to a valid type."
            ),
        )
    };
    let logical = full.strip_prefix(NAMESPACE).ok_or_else(unresolved)?;
    let other = store.by_logical(logical).ok_or_else(unresolved)?;
    if other != t {
        let def = &store.tables[t].def;
        // The platform's `InvalidArgument` for a record of another table (its wording is not
        // documented).
        return Err(invalid(format!(
            "The record at index {i} of Targets is of the table '{logical}', but the request is for '{}' ({}): all the records must be of the same table.",
            def.logical_name, def.entity_set_name
        )));
    }
    Ok(())
}

/// The row `@odata.id` addresses: `accounts(<id>)` or `accounts(<alternate key>)`, relative (as
/// Learn writes it), with a leading `/`, or absolute.
fn address(store: &Store, t: usize, i: usize, value: &Value) -> Result<Target, Fail> {
    let set = &store.tables[t].def.entity_set_name;
    let text = value.as_str().unwrap_or_default();
    let mut rest = text.trim();
    if let Some(at) = rest.find("/api/data/") {
        rest = rest[at + "/api/data/".len()..]
            .split_once('/')
            .map_or("", |(_, after)| after);
    }
    let rest = rest.trim_start_matches('/');
    let key = rest
        .strip_prefix(set.as_str())
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'));
    let Some(key) = key else {
        return Err(invalid(format!(
            "The @odata.id '{text}' of the record at index {i} of Targets does not address a row of '{set}', such as '{set}(00000000-0000-0000-0000-000000000000)' or '{set}(<key>=<value>)'."
        )));
    };
    rows::parse_key(store, t, key)
}

/// Reads target `i` of a bulk message of `kind` on table `t`.
fn read(
    store: &Store,
    t: usize,
    kind: Kind,
    i: usize,
    target: &Map<String, Value>,
) -> Result<Plan, Fail> {
    let def = &store.tables[t].def;
    let changes = store.read_payload(t, target)?;
    let named = match (kind, target.get("@odata.id")) {
        (Kind::Create, _) | (_, None) => None,
        (_, Some(value)) => Some(address(store, t, i, value)?),
    };
    let (id, exists, key_values) = match named {
        Some(Target::Id(id)) => (id, store.tables[t].rows.contains_key(&id), Vec::new()),
        Some(Target::Key { values, row, .. }) => match (row, kind) {
            (Some(id), _) => (id, true, values),
            (None, Kind::Update) => return Err(keys::not_found(def)),
            (None, _) => (changes.id.unwrap_or_else(Uuid::new_v4), false, values),
        },
        None => match (changes.id, kind) {
            (Some(id), _) => (id, store.tables[t].rows.contains_key(&id), Vec::new()),
            (None, Kind::Update) => {
                // Not documented for the Web API; the platform's wording for an update without
                // the row's id.
                return Err(invalid(format!(
                    "The record at index {i} of Targets has no {} and no @odata.id: UpdateMultiple needs the row of each record.",
                    def.primary_id
                )));
            }
            (None, _) => (Uuid::new_v4(), false, Vec::new()),
        },
    };
    if changes.id.is_some_and(|body_id| body_id != id) {
        return Err(invalid(
            "Entity Id must be the same as the value set in property bag.",
        ));
    }
    let create = match kind {
        Kind::Create => true,
        Kind::Update if !exists => {
            // Learn, "Troubleshoot Dataverse client errors": "Contact With Ids = <guid> Do Not Exist".
            return Err(Fail::new(
                404,
                "0x80040217",
                format!("{} With Ids = {id} Do Not Exist", def.schema_name),
            ));
        }
        Kind::Update => false,
        Kind::Upsert => !exists,
    };
    Ok(Plan {
        id,
        changes,
        create,
        key_values,
    })
}

/// Applies one target, as the single-row `Create` or `Update` would, recording the id it wrote.
fn write(store: &mut Store, t: usize, plan: Plan, ids: &mut Vec<Uuid>) -> Result<(), Fail> {
    let Plan {
        id,
        mut changes,
        create,
        key_values,
    } = plan;
    if create {
        if store.tables[t].rows.contains_key(&id) {
            return Err(rows::duplicate());
        }
        rows::add_key_values(store, t, &mut changes, key_values)?;
        let checked = rows::check_create(store, t, id, &mut changes)?;
        rows::apply(store, checked);
    } else {
        rows::drop_key_values(&mut changes, &key_values);
        let checked = rows::check_update(store, t, id, &mut changes)?;
        rows::apply(store, checked);
    }
    ids.push(id);
    Ok(())
}
