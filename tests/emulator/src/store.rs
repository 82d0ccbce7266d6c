//! The organisation's data: tables, rows, the org-wide version counter and deletion tombstones.
//!
//! Rows live in a `BTreeMap` keyed by primary key, so the default order (the primary key, as Dataverse
//! adds it when a query has none) and keyset paging over it are range scans. A second index by
//! `versionnumber` serves change tracking.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::clock::{self, Clock};
use crate::guid::SqlGuid;
use crate::keys::{self, DefineError, EntityKey, KeyIndex};
use crate::reply::Fail;
use crate::schema::{ColumnType, Edm, System, TableDef};

#[derive(Debug, Clone)]
pub struct Row {
    /// One value per column of the table, in column order.
    pub cells: Vec<Value>,
    pub version: u64,
}

/// A table's rows by primary key, in SQL Server's GUID order (Dataverse's default order).
#[derive(Debug, Default)]
pub struct Rows(BTreeMap<SqlGuid, Row>);

impl Rows {
    pub fn get(&self, id: &Uuid) -> Option<&Row> {
        self.0.get(&SqlGuid(*id))
    }

    pub fn get_mut(&mut self, id: &Uuid) -> Option<&mut Row> {
        self.0.get_mut(&SqlGuid(*id))
    }

    pub fn contains_key(&self, id: &Uuid) -> bool {
        self.0.contains_key(&SqlGuid(*id))
    }

    pub fn insert(&mut self, id: Uuid, row: Row) {
        self.0.insert(SqlGuid(id), row);
    }

    pub fn remove(&mut self, id: &Uuid) -> Option<Row> {
        self.0.remove(&SqlGuid(*id))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Row> {
        self.0.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Uuid, &Row)> {
        self.0.iter().map(|(id, row)| (id.0, row))
    }

    /// The rows after `id` in key order (all of them without one): a keyset page's range scan.
    pub fn after(&self, id: Option<Uuid>) -> impl Iterator<Item = &Row> {
        let start = id.map_or(Bound::Unbounded, |id| Bound::Excluded(SqlGuid(id)));
        self.0.range((start, Bound::Unbounded)).map(|(_, row)| row)
    }
}

#[derive(Debug)]
pub struct Table {
    pub def: TableDef,
    pub rows: Rows,
    pub by_version: BTreeMap<u64, Uuid>,
    /// Deletions by the version at which they happened; one per id, the latest, as change tracking
    /// reports a row's net change.
    pub tombstones: BTreeMap<u64, Uuid>,
    /// The version of each id's tombstone, to replace it when the id is deleted again.
    deleted_at: HashMap<Uuid, u64>,
    /// Bumped by every write, so cached orders know when they are stale.
    pub generation: u64,
    sorted: Mutex<Option<Sorted>>,
    /// The unique index of each of `def.keys`, in the same order; kept by every write below.
    pub key_index: Vec<KeyIndex>,
}

/// The table's rows in one `$orderby` order. Paging a large table in a custom order would otherwise
/// sort it again for every page; this sorts once per order until the table changes.
#[derive(Debug)]
struct Sorted {
    order: Vec<(usize, bool)>,
    generation: u64,
    ids: Arc<Vec<Uuid>>,
}

impl Table {
    pub fn new(def: TableDef) -> Self {
        Self {
            def,
            rows: Rows::default(),
            by_version: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            deleted_at: HashMap::new(),
            generation: 0,
            sorted: Mutex::new(None),
            key_index: Vec::new(),
        }
    }

    /// The ids of every row in `order`, as `cmp` orders rows; cached until the next write.
    pub fn sorted_ids(
        &self,
        order: &[(usize, bool)],
        cmp: impl Fn(&[Value], &[Value]) -> Ordering,
    ) -> Arc<Vec<Uuid>> {
        // The store is behind one lock already, so this one is never contended.
        let mut cache = self.sorted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sorted) = cache.as_ref()
            && sorted.generation == self.generation
            && sorted.order == order
        {
            return sorted.ids.clone();
        }
        let mut rows: Vec<(Uuid, &Row)> = self.rows.iter().collect();
        rows.sort_unstable_by(|a, b| cmp(&a.1.cells, &b.1.cells));
        let ids = Arc::new(rows.into_iter().map(|(id, _)| id).collect());
        *cache = Some(Sorted {
            order: order.to_vec(),
            generation: self.generation,
            ids: Arc::clone(&ids),
        });
        ids
    }
}

/// The well-known ids every row's system lookups point at.
#[derive(Debug, Clone, Copy)]
pub struct Org {
    pub organization: Uuid,
    pub business_unit: Uuid,
    pub user: Uuid,
    pub currency: Uuid,
}

#[derive(Debug)]
pub struct Store {
    pub tables: Vec<Table>,
    /// The org-wide row version; every write takes the next one.
    pub version: u64,
    pub clock: Clock,
    pub org: Org,
    /// Delta tokens below this version have been expired through the control API.
    pub delta_floor: u64,
    /// How long a delta token stays valid (Dataverse's default is 7 days).
    pub delta_ttl_secs: i64,
    /// Web API writes to business tables that registered steps may need to hear of, taken by the
    /// server once the request is answered (`crate::webhooks::plan`).
    pub committed: Vec<crate::webhooks::Change>,
    /// Each service endpoint's `authvalue`. Dataverse never returns it (the column is not valid for
    /// read), so it is kept out of the row, where `$select`, `$filter` or `$expand` could reach it.
    pub secrets: HashMap<Uuid, String>,
    /// The calling user's time zone, as minutes east of UTC: what user-local date and time
    /// values are shown in (`crate::dates`).
    pub user_offset_minutes: i32,
    /// The users of the organisation: the interactive user and each application user, with their
    /// names (what a `systemuser` lookup such as `_modifiedby_value` is named by) and the bypass
    /// privileges each holds (`crate::users`).
    pub users: crate::users::Users,
    /// Who the request being handled acts as, and what it bypasses: set by the server for each Web
    /// API request (and by `crate::bypass` for each `$batch` part), the interactive user otherwise.
    /// Every row a write creates or updates is stamped with its user.
    pub caller: crate::users::Caller,
    /// Power Automate flow triggers registered through the control API (`crate::flows`).
    pub flows: crate::flows::Flows,
    /// While a `$batch` changeset runs: how to undo what it has written so far (see
    /// [`Store::begin`]).
    journal: Option<Journal>,
}

/// What a changeset has done to the store, kept so that all of it can be undone when one of its
/// parts fails: the service runs a changeset in one database transaction.
#[derive(Debug)]
struct Journal {
    /// The org-wide version when the changeset began: a rolled-back changeset takes none of them,
    /// so no `versionnumber`, delta token or tombstone shows it ran.
    version: u64,
    /// How many webhook changes were recorded when it began; the ones after are dropped.
    committed: usize,
    /// The endpoints' secrets when it began (a handful, so copied whole).
    secrets: HashMap<Uuid, String>,
    /// Each row write, in order; undone in reverse.
    undo: Vec<Undo>,
}

/// One row write, and what undoes it.
#[derive(Debug)]
enum Undo {
    Inserted {
        t: usize,
        id: Uuid,
    },
    Updated {
        t: usize,
        id: Uuid,
        before: Row,
    },
    /// `tombstone` is the version of the tombstone the delete left; `earlier` the one it replaced.
    Deleted {
        t: usize,
        id: Uuid,
        before: Row,
        tombstone: u64,
        earlier: Option<u64>,
    },
}

/// What a POST or PATCH body sets, after validation.
#[derive(Debug, Default)]
pub struct Changes {
    pub id: Option<Uuid>,
    pub values: Vec<(usize, Value)>,
}

impl Store {
    pub fn new(delta_ttl_secs: i64) -> Self {
        let fixed = |n: u128| Uuid::from_u128(0x9f1c_0000_0000_4000_8000_0000_0000_0000 | n);
        Self {
            tables: Vec::new(),
            // Real versionnumbers are large; starting high keeps clients from assuming small ones.
            version: 1_000_000,
            clock: Clock::default(),
            org: Org {
                organization: fixed(1),
                business_unit: fixed(2),
                user: fixed(3),
                currency: fixed(4),
            },
            delta_floor: 0,
            delta_ttl_secs,
            committed: Vec::new(),
            secrets: HashMap::new(),
            user_offset_minutes: 0,
            users: crate::users::Users::new(fixed(3)),
            caller: crate::users::Caller {
                user: fixed(3),
                ..crate::users::Caller::default()
            },
            flows: crate::flows::Flows::default(),
            journal: None,
        }
    }

    /// Starts recording every row write, so that [`Store::rollback`] can undo them all. A changeset
    /// begins this way and ends in [`Store::commit`] or [`Store::rollback`]; changesets cannot be
    /// nested, so neither can these.
    pub fn begin(&mut self) {
        self.journal = Some(Journal {
            version: self.version,
            committed: self.committed.len(),
            secrets: self.secrets.clone(),
            undo: Vec::new(),
        });
    }

    /// Whether a changeset is running (between [`Store::begin`] and its end).
    pub fn in_transaction(&self) -> bool {
        self.journal.is_some()
    }

    /// Keeps everything written since [`Store::begin`].
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes everything written since [`Store::begin`]: the rows, their key indexes, the version
    /// counter, tombstones, secrets, and the writes recorded for webhook steps. Afterwards the store
    /// reads as if the changeset had never run; only the tables' cache generations move on.
    pub fn rollback(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        for undo in journal.undo.into_iter().rev() {
            match undo {
                Undo::Inserted { t, id } => {
                    let table = &mut self.tables[t];
                    if let Some(row) = table.rows.remove(&id) {
                        table.by_version.remove(&row.version);
                        index_keys(&table.def, &mut table.key_index, id, &row.cells, false);
                    }
                    table.generation += 1;
                }
                Undo::Updated { t, id, before } => {
                    let table = &mut self.tables[t];
                    if let Some(row) = table.rows.remove(&id) {
                        table.by_version.remove(&row.version);
                        index_keys(&table.def, &mut table.key_index, id, &row.cells, false);
                    }
                    index_keys(&table.def, &mut table.key_index, id, &before.cells, true);
                    table.by_version.insert(before.version, id);
                    table.rows.insert(id, before);
                    table.generation += 1;
                }
                Undo::Deleted {
                    t,
                    id,
                    before,
                    tombstone,
                    earlier,
                } => {
                    let table = &mut self.tables[t];
                    table.tombstones.remove(&tombstone);
                    match earlier {
                        Some(version) => {
                            table.tombstones.insert(version, id);
                            table.deleted_at.insert(id, version);
                        }
                        None => {
                            table.deleted_at.remove(&id);
                        }
                    }
                    index_keys(&table.def, &mut table.key_index, id, &before.cells, true);
                    table.by_version.insert(before.version, id);
                    table.rows.insert(id, before);
                    table.generation += 1;
                }
            }
        }
        self.version = journal.version;
        self.committed.truncate(journal.committed);
        self.secrets = journal.secrets;
    }

    fn journal(&mut self, undo: Undo) {
        if let Some(journal) = &mut self.journal {
            journal.undo.push(undo);
        }
    }

    pub fn by_set(&self, entity_set: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.def.entity_set_name == entity_set)
    }

    pub fn by_logical(&self, logical_name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.def.logical_name == logical_name)
    }

    /// A table named either way, for the control API's convenience.
    pub fn by_any_name(&self, name: &str) -> Option<usize> {
        self.by_logical(name).or_else(|| self.by_set(name))
    }

    pub fn add_table(&mut self, def: TableDef) {
        self.tables.push(Table::new(def));
    }

    /// Adds an alternate key to table `t` (checked by [`keys::define`]) once its unique index is
    /// built over the rows already there, which it is not when two of them share the key's values.
    pub fn add_key(&mut self, t: usize, key: EntityKey) -> Result<(), DefineError> {
        let table = &mut self.tables[t];
        let rows = table
            .rows
            .iter()
            .map(|(id, row)| (id, row.cells.as_slice()));
        let index = KeyIndex::build(&table.def, &key, rows)?;
        table.def.keys.push(key);
        table.key_index.push(index);
        Ok(())
    }

    /// The row of table `t` whose values of key `k` are `values` (as [`keys::parse_address`] gives
    /// them), matched as the key's index matches them.
    pub fn find_by_key(&self, t: usize, k: usize, values: &[(usize, Value)]) -> Option<Uuid> {
        let table = &self.tables[t];
        let tuple = keys::tuple(&table.def, &table.def.keys[k], |c| {
            values
                .iter()
                .find(|(column, _)| *column == c)
                .map_or(&Value::Null, |(_, v)| v)
        })?;
        table.key_index[k].get(&tuple)
    }

    /// Checks that writing `values` to row `id` of table `t` (over the cells of the row `stored`, or to
    /// a new row) leaves no two rows with the same values of one key: `0x80060892` if it would.
    pub fn check_keys(
        &self,
        t: usize,
        id: Uuid,
        stored: Option<&[Value]>,
        values: &[(usize, Value)],
    ) -> Result<(), Fail> {
        let table = &self.tables[t];
        // A column set twice takes its last value, as `insert` and `update` apply them in order.
        let value = |c: usize| {
            values
                .iter()
                .rev()
                .find(|(column, _)| *column == c)
                .map(|(_, v)| v)
                .or_else(|| stored.and_then(|cells| cells.get(c)))
                .unwrap_or(&Value::Null)
        };
        for (key, index) in table.def.keys.iter().zip(&table.key_index) {
            if let Some(tuple) = keys::tuple(&table.def, key, value)
                && index.get(&tuple).is_some_and(|other| other != id)
            {
                return Err(keys::duplicate(&table.def, key));
            }
        }
        Ok(())
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Validates a POST or PATCH body against the table, as the service's `OData` reader does.
    pub fn read_payload(&self, t: usize, body: &Map<String, Value>) -> Result<Changes, Fail> {
        let def = &self.tables[t].def;
        let set = def.entity_set_name.as_str();
        let mut changes = Changes::default();
        for (key, value) in body {
            if key.starts_with('@') {
                continue;
            }
            if let Some(nav) = key.strip_suffix("@odata.bind") {
                changes.values.push(self.read_bind(t, nav, value)?);
                continue;
            }
            if key.contains('@') {
                // Instance annotations such as a FormattedValue echoed back are ignored.
                continue;
            }
            let Some(column) = def.column(key) else {
                return Err(invalid_property(key, def));
            };
            let spec = &def.columns[column];
            let converted = match &spec.ty {
                ColumnType::Id => match value.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(id) => {
                        changes.id = Some(id);
                        continue;
                    }
                    None => return Err(cannot_convert(set, value, Edm::Guid)),
                },
                ColumnType::System(System::Reference) | ColumnType::Lookup { .. } => {
                    return Err(invalid_property(key, def));
                }
                ColumnType::System(_) => continue,
                ty => convert(set, def, key, ty, spec.edm(), value)?,
            };
            changes.values.push((column, converted));
        }
        Ok(changes)
    }

    fn read_bind(&self, t: usize, nav: &str, value: &Value) -> Result<(usize, Value), Fail> {
        let def = &self.tables[t].def;
        let Some((column, nav_def)) = def.nav(nav) else {
            return Err(Fail::payload(
                &def.entity_set_name,
                format!(
                    "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                ),
            ));
        };
        if value.is_null() {
            return Ok((column, Value::Null));
        }
        let target = self.by_logical(&nav_def.target).ok_or_else(|| {
            Fail::not_implemented(format!("binding to the table '{}'", nav_def.target))
        })?;
        let target_set = &self.tables[target].def.entity_set_name;
        let reference = value.as_str().unwrap_or_default();
        // Accepts "/contacts(id)", "contacts(id)" and an absolute URL ending in either.
        let tail = reference.rsplit('/').next().unwrap_or(reference);
        let id = tail
            .strip_prefix(target_set.as_str())
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| Uuid::parse_str(r).ok());
        let Some(id) = id else {
            return Err(Fail::payload(
                &def.entity_set_name,
                format!(
                    "The value '{reference}' of '{nav}@odata.bind' is not a reference to a row of '{target_set}', such as '/{target_set}(00000000-0000-0000-0000-000000000000)'."
                ),
            ));
        };
        if !self.tables[target].rows.contains_key(&id) {
            return Err(Fail::row_not_found(&nav_def.target, &id));
        }
        Ok((column, Value::String(id.to_string())))
    }

    /// Creates a row. `at` overrides `createdon`/`modifiedon` (the control API uses it to simulate a
    /// late commit); otherwise both are now, as the service sets them on create.
    pub fn insert(
        &mut self,
        t: usize,
        id: Uuid,
        values: Vec<(usize, Value)>,
        at: Option<(i64, i64)>,
    ) -> u64 {
        let now = self.clock.now();
        let (created, modified) = at.unwrap_or((now, now));
        let version = self.next_version();
        // `ownerid`, `createdby` and `modifiedby` are the caller's.
        let org = Org {
            user: self.caller.user,
            ..self.org
        };
        let table = &mut self.tables[t];
        let def = &table.def;
        let mut cells = vec![Value::Null; def.columns.len()];
        for (i, column) in def.columns.iter().enumerate() {
            cells[i] = match (&column.ty, column.name.as_str()) {
                (ColumnType::Id, _) => Value::String(id.to_string()),
                (_, "statecode") => Value::from(0),
                (_, "statuscode") => Value::from(1),
                (ColumnType::System(System::CreatedOn), _) => {
                    Value::String(clock::format_utc(created))
                }
                (ColumnType::System(System::ModifiedOn), _) => {
                    Value::String(clock::format_utc(modified))
                }
                (ColumnType::System(System::VersionNumber), _) => Value::from(version),
                (ColumnType::System(System::Reference), "_owningbusinessunit_value") => {
                    Value::String(org.business_unit.to_string())
                }
                (ColumnType::System(System::Reference), "_transactioncurrencyid_value") => {
                    Value::Null
                }
                (ColumnType::System(System::Reference), "_organizationid_value") => {
                    Value::String(org.organization.to_string())
                }
                (ColumnType::System(System::Flag), _) => Value::Bool(false),
                (ColumnType::System(System::Reference), _) => Value::String(org.user.to_string()),
                _ => Value::Null,
            };
        }
        for (column, value) in values {
            cells[column] = value;
        }
        finish_row(def, &mut cells, org);
        index_keys(def, &mut table.key_index, id, &cells, true);
        table.by_version.insert(version, id);
        table.rows.insert(id, Row { cells, version });
        table.generation += 1;
        self.journal(Undo::Inserted { t, id });
        version
    }

    pub fn update(&mut self, t: usize, id: Uuid, values: Vec<(usize, Value)>) -> u64 {
        let now = self.clock.now();
        let version = self.next_version();
        let org = self.org;
        let table = &mut self.tables[t];
        let idx = table.def.idx;
        let Some(row) = table.rows.get_mut(&id) else {
            return version;
        };
        // A copy only while a changeset runs, which may have to put it back.
        let before = self.journal.is_some().then(|| row.clone());
        table.by_version.remove(&row.version);
        index_keys(&table.def, &mut table.key_index, id, &row.cells, false);
        for (column, value) in values {
            row.cells[column] = value;
        }
        row.cells[idx.modified] = Value::String(clock::format_utc(now));
        if let Some(by) = table.def.column("_modifiedby_value") {
            row.cells[by] = Value::String(self.caller.user.to_string());
        }
        row.cells[idx.version] = Value::from(version);
        row.version = version;
        finish_row(&table.def, &mut row.cells, org);
        index_keys(&table.def, &mut table.key_index, id, &row.cells, true);
        table.by_version.insert(version, id);
        table.generation += 1;
        if let Some(before) = before {
            self.journal(Undo::Updated { t, id, before });
        }
        version
    }

    pub fn delete(&mut self, t: usize, id: Uuid) -> bool {
        let version = self.next_version();
        let table = &mut self.tables[t];
        match table.rows.remove(&id) {
            Some(row) => {
                table.by_version.remove(&row.version);
                index_keys(&table.def, &mut table.key_index, id, &row.cells, false);
                table.tombstones.insert(version, id);
                let earlier = table.deleted_at.insert(id, version);
                if let Some(earlier) = earlier {
                    table.tombstones.remove(&earlier);
                }
                table.generation += 1;
                self.journal(Undo::Deleted {
                    t,
                    id,
                    before: row,
                    tombstone: version,
                    earlier,
                });
                true
            }
            None => false,
        }
    }

    /// The table a lookup value points at, found by looking the id up in each of the lookup's targets.
    pub fn lookup_target(&self, targets: &[crate::schema::Nav], id: &str) -> Option<(usize, Uuid)> {
        let id = Uuid::parse_str(id).ok()?;
        targets.iter().find_map(|nav| {
            let t = self.by_logical(&nav.target)?;
            self.tables[t].rows.contains_key(&id).then_some((t, id))
        })
    }
}

/// Adds row `id` to (or, with `add` false, removes it from) the index of each of the table's keys.
/// Callers check [`Store::check_keys`] first, so an addition never displaces another row.
fn index_keys(def: &TableDef, index: &mut [KeyIndex], id: Uuid, cells: &[Value], add: bool) {
    for (key, index) in def.keys.iter().zip(index) {
        if let Some(tuple) = keys::tuple(def, key, |c| &cells[c]) {
            if add {
                index.insert(tuple, id);
            } else {
                index.remove(&tuple, id);
            }
        }
    }
}

/// Computed columns: `fullname` from first and last name, and the currency that money columns imply.
fn finish_row(def: &TableDef, cells: &mut [Value], org: Org) {
    if def.has_full_name() {
        let part = |name: &str| {
            def.column(name)
                .and_then(|c| cells[c].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let full = format!("{} {}", part("firstname"), part("lastname"))
            .trim()
            .to_owned();
        if let Some(c) = def.column("fullname") {
            cells[c] = if full.is_empty() {
                Value::Null
            } else {
                Value::String(full)
            };
        }
    }
    if let Some(currency) = def.column("_transactioncurrencyid_value") {
        let has_money = def
            .columns
            .iter()
            .zip(cells.iter())
            .any(|(c, v)| matches!(c.ty, ColumnType::Money) && !v.is_null());
        if has_money && cells[currency].is_null() {
            cells[currency] = Value::String(org.currency.to_string());
        }
    }
}

fn invalid_property(key: &str, def: &TableDef) -> Fail {
    Fail::new(
        400,
        "0x0",
        format!(
            "An error occurred while validating input parameters: Microsoft.Crm.CrmException: Invalid property '{key}' was found in entity '{}'. ---> Microsoft.OData.ODataException: Does not support untyped value in non-open type.",
            def.type_name()
        ),
    )
}

fn cannot_convert(set: &str, value: &Value, edm: Edm) -> Fail {
    let literal = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Fail::payload(
        set,
        format!(
            "Cannot convert the literal '{literal}' to the expected type '{}'.",
            edm.name()
        ),
    )
}

/// 1753-01-01T00:00:00Z: the earliest date and time Dataverse keeps (Microsoft Learn, *Behavior
/// and format of the date and time column*), the start of SQL Server's `datetime`.
const EARLIEST_DATE_TIME: i64 = -6_847_804_800;

/// Refuses a date or time before 1753 as Dataverse does, after the `OData` reader took it: a .NET
/// client that sends `DateTime.MinValue` for "no date" meets this (0x80040239, its message
/// misspelling "minimum" as Dataverse's does, and showing both values in `MM/dd/yyyy HH:mm:ss`).
fn not_before_1753(secs: i64) -> Result<(), Fail> {
    if secs >= EARLIEST_DATE_TIME {
        return Ok(());
    }
    let actual = clock::format_dotnet(secs);
    Err(Fail::new(
        400,
        "0x80040239",
        format!(
            "DateTime is less than minumum value supported by CrmDateTime. Actual value: {actual}, Minimum value supported: 01/01/1753 00:00:00"
        ),
    ))
}

fn convert(
    set: &str,
    def: &TableDef,
    key: &str,
    ty: &ColumnType,
    edm: Edm,
    value: &Value,
) -> Result<Value, Fail> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let bad = || cannot_convert(set, value, edm);
    let validation = |message: String| {
        Fail::new(
            400,
            "0x80044331",
            format!("A validation error occurred. {message}"),
        )
    };
    Ok(match ty {
        ColumnType::Text { max_len, .. } => {
            let s = value.as_str().ok_or_else(bad)?;
            if s.chars().count() > *max_len {
                return Err(validation(format!(
                    "The length of the '{key}' attribute of the '{}' entity exceeded the maximum allowed length of '{max_len}'.",
                    def.logical_name
                )));
            }
            Value::String(s.to_owned())
        }
        ColumnType::Whole { min, max } => {
            let n = value
                .as_i64()
                .filter(|n| (*min..=*max).contains(n))
                .ok_or_else(bad)?;
            Value::from(n)
        }
        ColumnType::BigInt => Value::from(value.as_i64().ok_or_else(bad)?),
        ColumnType::Money | ColumnType::Decimal | ColumnType::Float => {
            let n = value.as_f64().ok_or_else(bad)?;
            Value::Number(Number::from_f64(n).ok_or_else(bad)?)
        }
        ColumnType::YesNo => Value::Bool(value.as_bool().ok_or_else(bad)?),
        ColumnType::DateTime { behavior, .. } => {
            let t = value
                .as_str()
                .and_then(|text| crate::dates::read(*behavior, text))
                .ok_or_else(bad)?;
            not_before_1753(t)?;
            Value::String(clock::format_utc(t))
        }
        ColumnType::DateOnly => {
            let d = value.as_str().and_then(clock::parse_date).ok_or_else(bad)?;
            not_before_1753(d.midnight().assume_utc().unix_timestamp())?;
            Value::String(clock::format_date(d))
        }
        ColumnType::Choice { options } => {
            let n = value
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(bad)?;
            if !options.is_empty() && !options.iter().any(|o| o.value == n) {
                return Err(validation(format!(
                    "The value {n} of '{key}' on record of type '{}' is outside the valid range.",
                    def.logical_name
                )));
            }
            Value::from(n)
        }
        ColumnType::Id | ColumnType::Lookup { .. } | ColumnType::System(_) => return Err(bad()),
    })
}
