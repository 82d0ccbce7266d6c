//! The plug-in registration tables a webhook is written to, and the rules Dataverse enforces on
//! them.
//!
//! | Entity set | Logical name | What it holds |
//! |---|---|---|
//! | `serviceendpoints` | `serviceendpoint` | where to post, and how to authenticate (contract 8, Webhook) |
//! | `sdkmessages` | `sdkmessage` | the messages: `Create`, `Update`, `Delete` (read-only) |
//! | `sdkmessagefilters` | `sdkmessagefilter` | one per table and message (read-only) |
//! | `sdkmessageprocessingsteps` | `sdkmessageprocessingstep` | a message on a table, handled by an endpoint |
//! | `sdkmessageprocessingstepimages` | `sdkmessageprocessingstepimage` | the row before or after, sent with a step |
//!
//! They are written through the Web API like any table, and every write is checked against the
//! merged row (what is stored, overlaid with the request), so a PATCH cannot leave a registration
//! Dataverse would have refused. The column lists, choice values, required columns and cascades
//! follow the tables' reference pages on Microsoft Learn.

use serde_json::{Value, json};
use uuid::Uuid;

use super::Message;
use super::delivery::{Auth, parse_url};
use crate::reply::Fail;
use crate::schema::{
    ColumnType, Registration, System, TableDef, TableKind, choice, col, labeled, lookup, stable_id,
    text,
};
use crate::store::{Changes, Row, Store};

pub const ENDPOINT: &str = "serviceendpoint";
pub const MESSAGE: &str = "sdkmessage";
pub const FILTER: &str = "sdkmessagefilter";
pub const STEP: &str = "sdkmessageprocessingstep";
pub const IMAGE: &str = "sdkmessageprocessingstepimage";

/// `contract` 8.
pub const WEBHOOK: i64 = 8;
/// `messageformat` 2.
const JSON_FORMAT: i64 = 2;
/// `stage` 40.
pub const POST_OPERATION: i64 = 40;
/// `mode` 1.
pub const ASYNCHRONOUS: i64 = 1;

/// The five tables, empty.
pub fn tables() -> Vec<TableDef> {
    let registration = |def: TableDef, kind: Registration, object_type_code: i64| {
        let mut def = def.organization_owned();
        def.kind = TableKind::Registration(kind);
        def.object_type_code = object_type_code;
        def
    };
    let endpoint = TableDef::new(
        ENDPOINT,
        "serviceendpoints",
        "serviceendpointid",
        "name",
        false,
        vec![
            text("name", 256),
            text("description", 2000),
            text("url", 2000),
            choice("contract", 1..=10),
            choice("authtype", 1..=9),
            text("authvalue", 2048),
            col("isauthvalueset", ColumnType::System(System::Flag)),
            choice("messageformat", 1..=3),
            choice("connectionmode", [1, 2]),
            choice("userclaim", 1..=3),
            text("namespaceaddress", 255),
            text("path", 160),
            text("solutionnamespace", 160),
        ],
    )
    .stateless();
    let message = TableDef::new(
        MESSAGE,
        "sdkmessages",
        "sdkmessageid",
        "name",
        false,
        vec![text("name", 256)],
    )
    .stateless();
    let filter = TableDef::new(
        FILTER,
        "sdkmessagefilters",
        "sdkmessagefilterid",
        "name",
        false,
        vec![
            text("name", 256),
            lookup(
                "sdkmessageid",
                &[("sdkmessageid", MESSAGE, "sdkmessageid_sdkmessagefilter")],
            ),
            text("primaryobjecttypecode", 128),
            text("secondaryobjecttypecode", 128),
            col("iscustomprocessingstepallowed", ColumnType::YesNo),
            col(
                "availability",
                ColumnType::Whole {
                    min: i64::from(i32::MIN),
                    max: i64::from(i32::MAX),
                },
            ),
            col("isvisible", ColumnType::YesNo),
        ],
    )
    .stateless();
    // Its `statecode` (0 Enabled, 1 Disabled) and `statuscode` (1 Enabled, 2 Disabled) are the
    // defaults every table gets.
    let step = TableDef::new(
        STEP,
        "sdkmessageprocessingsteps",
        "sdkmessageprocessingstepid",
        "name",
        false,
        vec![
            text("name", 256),
            text("description", 256),
            labeled(
                "stage",
                &[
                    (10, "Pre-validation"),
                    (20, "Pre-operation"),
                    (POST_OPERATION, "Post-operation"),
                ],
            ),
            labeled(
                "mode",
                &[(0, "Synchronous"), (ASYNCHRONOUS, "Asynchronous")],
            ),
            col(
                "rank",
                ColumnType::Whole {
                    min: i64::from(i32::MIN),
                    max: i64::from(i32::MAX),
                },
            ),
            text("filteringattributes", 100_000),
            choice("supporteddeployment", [0, 1, 2]),
            col("asyncautodelete", ColumnType::YesNo),
            text("configuration", 1_073_741_823),
            lookup(
                "sdkmessageid",
                &[(
                    "sdkmessageid",
                    MESSAGE,
                    "sdkmessageid_sdkmessageprocessingstep",
                )],
            ),
            lookup(
                "sdkmessagefilterid",
                &[(
                    "sdkmessagefilterid",
                    FILTER,
                    "sdkmessagefilterid_sdkmessageprocessingstep",
                )],
            ),
            // A plug-in type handler would bind `eventhandler_plugintype`; no `plugintype` table
            // exists here, so such a bind answers 501.
            lookup(
                "eventhandler",
                &[
                    (
                        "eventhandler_serviceendpoint",
                        ENDPOINT,
                        "serviceendpoint_sdkmessageprocessingstep",
                    ),
                    (
                        "eventhandler_plugintype",
                        "plugintype",
                        "plugintype_sdkmessageprocessingstep",
                    ),
                ],
            ),
        ],
    );
    let image = TableDef::new(
        IMAGE,
        "sdkmessageprocessingstepimages",
        "sdkmessageprocessingstepimageid",
        "name",
        false,
        vec![
            text("name", 256),
            text("description", 256),
            text("entityalias", 256),
            choice("imagetype", 0..=2),
            text("messagepropertyname", 256),
            text("attributes", 100_000),
            lookup(
                "sdkmessageprocessingstepid",
                &[(
                    "sdkmessageprocessingstepid",
                    STEP,
                    "sdkmessageprocessingstepid_sdkmessageprocessingstepimage",
                )],
            ),
        ],
    )
    .stateless();
    // The object type codes are the platform's own.
    vec![
        registration(endpoint, Registration::ServiceEndpoint, 4618),
        registration(message, Registration::Message, 4606),
        registration(filter, Registration::MessageFilter, 4607),
        registration(step, Registration::Step, 4608),
        registration(image, Registration::StepImage, 4615),
    ]
}

/// The messages a webhook can be registered for, and a filter for each of them on every business
/// table. Present whatever the seed, as they are in every organisation. Their ids are derived from
/// their names, so they are the same in every run; clients should still look them up by name.
pub fn seed(store: &mut Store) {
    let Some(messages) = store.by_logical(MESSAGE) else {
        return;
    };
    let name = store.tables[messages].def.column("name");
    for message in Message::ALL {
        let values = name
            .map(|c| vec![(c, json!(message.name()))])
            .unwrap_or_default();
        store.insert(messages, message_id(message), values, None);
    }
    let business: Vec<usize> = (0..store.tables.len())
        .filter(|t| store.tables[*t].def.kind == TableKind::Ordinary)
        .collect();
    for t in business {
        add_filters(store, t);
    }
}

fn message_id(message: Message) -> Uuid {
    stable_id(&format!("sdkmessage:{}", message.name()))
}

/// Adds the `Create`, `Update` and `Delete` filters of a business table, as the platform does when a
/// table is created.
pub fn add_filters(store: &mut Store, t: usize) {
    let Some(filters) = store.by_logical(FILTER) else {
        return;
    };
    let logical = store.tables[t].def.logical_name.clone();
    for message in Message::ALL {
        let id = stable_id(&format!("sdkmessagefilter:{logical}:{}", message.name()));
        let def = &store.tables[filters].def;
        let values = [
            (
                "_sdkmessageid_value",
                json!(message_id(message).to_string()),
            ),
            ("primaryobjecttypecode", json!(logical)),
            ("secondaryobjecttypecode", json!("none")),
            ("iscustomprocessingstepallowed", json!(true)),
            ("availability", json!(0)),
            ("isvisible", json!(true)),
        ]
        .into_iter()
        .filter_map(|(name, value)| def.column(name).map(|c| (c, value)))
        .collect();
        store.insert(filters, id, values, None);
    }
}

/// What a write needs done once its row is stored.
#[derive(Debug, Default)]
#[must_use]
pub struct Accepted {
    authvalue: Secret,
}

/// What a write does to an endpoint's `authvalue`, which is kept apart from its row.
#[derive(Debug, Default)]
enum Secret {
    #[default]
    Keep,
    Set(String),
    Clear,
}

/// `0x80040203` (`InvalidArgument`): the code the platform gives a registration it refuses. The
/// wording of each refusal is the emulator's own.
fn invalid(message: impl Into<String>) -> Fail {
    Fail::new(400, "0x80040203", message)
}

/// `0x80040800`: the table has no such message (`sdkmessage` and `sdkmessagefilter` are
/// maintained by the platform and only read).
fn unsupported(method: &str, logical: &str) -> Fail {
    Fail::new(
        400,
        "0x80040800",
        format!(
            "The '{method}' method does not support entities of type '{logical}'. MessageProcessorCache returned MessageProcessor.Empty."
        ),
    )
}

/// The row a write would leave: the request's values over the stored ones.
struct Merged<'a> {
    def: &'a TableDef,
    values: &'a [(usize, Value)],
    stored: Option<&'a Row>,
}

impl Merged<'_> {
    fn get(&self, name: &str) -> &Value {
        let Some(c) = self.def.column(name) else {
            return &Value::Null;
        };
        if let Some((_, v)) = self.values.iter().rev().find(|(i, _)| *i == c) {
            return v;
        }
        self.stored.map_or(&Value::Null, |row| &row.cells[c])
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).as_str().filter(|s| !s.trim().is_empty())
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).as_i64()
    }

    fn id(&self, name: &str) -> Option<Uuid> {
        self.get(name)
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    fn require_text(&self, name: &str) -> Result<&str, Fail> {
        self.text(name).ok_or_else(|| required(self.def, name))
    }
}

fn required(def: &TableDef, column: &str) -> Fail {
    invalid(format!(
        "A value for '{column}' is required to save a '{}'.",
        def.logical_name
    ))
}

/// Checks a create (`stored` is `None`) or update of a row of table `t` and fills in the defaults a
/// new registration gets. Business tables pass untouched.
pub fn check_write(
    store: &Store,
    t: usize,
    stored: Option<&Row>,
    changes: &mut Changes,
) -> Result<Accepted, Fail> {
    let def = &store.tables[t].def;
    let TableKind::Registration(kind) = def.kind else {
        return Ok(Accepted::default());
    };
    let method = if stored.is_some() { "Update" } else { "Create" };
    let defaults: &[(&str, Value)] = match kind {
        Registration::Message | Registration::MessageFilter => {
            return Err(unsupported(method, &def.logical_name));
        }
        Registration::ServiceEndpoint => &[
            ("messageformat", json!(JSON_FORMAT)),
            ("connectionmode", json!(1)),
            ("userclaim", json!(1)),
        ],
        Registration::Step => &[
            ("rank", json!(1)),
            ("supporteddeployment", json!(0)),
            ("asyncautodelete", json!(false)),
        ],
        Registration::StepImage => &[],
    };
    if stored.is_none() {
        for (name, value) in defaults {
            if let Some(c) = def.column(name)
                && !changes.values.iter().any(|(i, _)| *i == c)
            {
                changes.values.push((c, value.clone()));
            }
        }
    }
    if kind == Registration::Step {
        pair_state_and_status(def, stored, changes)?;
    }
    let merged = Merged {
        def,
        values: &changes.values,
        stored,
    };
    let mut accepted = Accepted::default();
    match kind {
        Registration::ServiceEndpoint => {
            let id = stored
                .and_then(|r| r.cells[def.idx.id].as_str())
                .and_then(|s| Uuid::parse_str(s).ok());
            let written = def.column("authvalue").and_then(|c| {
                changes
                    .values
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == c)
                    .map(|(_, v)| v.as_str().map(str::to_owned))
            });
            let authvalue = match &written {
                Some(value) => value.clone(),
                None => id.and_then(|id| store.secrets.get(&id).cloned()),
            };
            check_endpoint(&merged, authvalue.as_deref())?;
            accepted.authvalue = match written {
                None => Secret::Keep,
                Some(Some(value)) => Secret::Set(value),
                Some(None) => Secret::Clear,
            };
        }
        Registration::Step => check_step(store, &merged, stored)?,
        Registration::StepImage => {
            let step = merged
                .id("_sdkmessageprocessingstepid_value")
                .ok_or_else(|| required(def, "sdkmessageprocessingstepid"))?;
            let message = step_message(store, step).ok_or_else(|| {
                invalid("The image's step is not registered for Create, Update or Delete.")
            })?;
            let table = step_table(store, step);
            check_image(store, &merged, message, table.as_deref())?;
        }
        Registration::Message | Registration::MessageFilter => {}
    }
    if let Some(c) = def.column("authvalue") {
        changes.values.retain(|(i, _)| *i != c);
    }
    Ok(accepted)
}

/// Stores what [`check_write`] set aside, once row `id` of table `t` is written.
pub fn commit(store: &mut Store, t: usize, id: Uuid, accepted: Accepted) {
    match accepted.authvalue {
        Secret::Keep => {}
        Secret::Set(value) => {
            store.secrets.insert(id, value);
        }
        Secret::Clear => {
            store.secrets.remove(&id);
        }
    }
    if store.tables[t].def.kind == TableKind::Registration(Registration::ServiceEndpoint) {
        let set = store.secrets.contains_key(&id);
        let table = &mut store.tables[t];
        if let Some(c) = table.def.column("isauthvalueset")
            && let Some(row) = table.rows.get_mut(&id)
        {
            row.cells[c] = Value::Bool(set);
        }
    }
}

/// A step's `statecode` and `statuscode` go in pairs (0 with 1, 1 with 2). Setting only the state
/// sets its default status, as `SetState` does.
fn pair_state_and_status(
    def: &TableDef,
    stored: Option<&Row>,
    changes: &mut Changes,
) -> Result<(), Fail> {
    let (Some(state_c), Some(status_c)) = (def.column("statecode"), def.column("statuscode"))
    else {
        return Ok(());
    };
    let written = |c: usize| {
        changes
            .values
            .iter()
            .rev()
            .find(|(i, _)| *i == c)
            .map(|(_, v)| v.as_i64())
    };
    let state = written(state_c);
    let status = written(status_c);
    let stored_state = stored.and_then(|r| r.cells[state_c].as_i64()).unwrap_or(0);
    let effective_state = state.flatten().unwrap_or(stored_state);
    let default_status = if effective_state == 1 { 2 } else { 1 };
    match status {
        None => {
            if state.is_some() {
                changes.values.push((status_c, json!(default_status)));
            }
            Ok(())
        }
        Some(Some(s)) if s == default_status => Ok(()),
        Some(other) => Err(invalid(format!(
            "{} is not a valid status code for state code {effective_state} of a '{}'.",
            other.map_or_else(|| "null".to_owned(), |s| s.to_string()),
            def.logical_name
        ))),
    }
}

fn check_endpoint(merged: &Merged<'_>, authvalue: Option<&str>) -> Result<(), Fail> {
    merged.require_text("name")?;
    let contract = merged
        .int("contract")
        .ok_or_else(|| required(merged.def, "contract"))?;
    if contract != WEBHOOK {
        return Err(Fail::not_implemented(format!(
            "service endpoints of contract {contract}; only Webhook (8) is delivered"
        )));
    }
    let url = merged
        .text("url")
        .ok_or_else(|| invalid("A Webhook service endpoint needs a 'url'."))?;
    parse_url(url).map_err(|problem| {
        invalid(format!(
            "The 'url' of a Webhook service endpoint {problem}."
        ))
    })?;
    let authtype = merged.int("authtype").ok_or_else(|| {
        invalid("A Webhook service endpoint needs an 'authtype': 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString).")
    })?;
    Auth::new(authtype, authvalue).map_err(invalid)?;
    if let Some(format) = merged.int("messageformat")
        && format != JSON_FORMAT
    {
        return Err(invalid(
            "A Webhook service endpoint posts JSON: its 'messageformat' must be 2 (Json).",
        ));
    }
    Ok(())
}

fn check_step(store: &Store, merged: &Merged<'_>, stored: Option<&Row>) -> Result<(), Fail> {
    let def = merged.def;
    merged.require_text("name")?;
    let message_id = merged
        .id("_sdkmessageid_value")
        .ok_or_else(|| required(def, "sdkmessageid"))?;
    let message = message_by_id(store, message_id)
        .ok_or_else(|| invalid("The step's message is not Create, Update or Delete."))?;
    let filter_id = merged.id("_sdkmessagefilterid_value").ok_or_else(|| {
        Fail::not_implemented("steps without an sdkmessagefilterid (a message on every table)")
    })?;
    let (filter_message, table) = filter(store, filter_id)
        .ok_or_else(|| invalid("The step's sdkmessagefilterid names no message filter."))?;
    if filter_message != message_id {
        return Err(invalid(format!(
            "The message filter {filter_id} does not belong to the step's message '{}'.",
            message.name()
        )));
    }
    if merged.id("_eventhandler_value").is_none() {
        return Err(required(def, "eventhandler"));
    }
    let stage = merged.int("stage").ok_or_else(|| required(def, "stage"))?;
    let mode = merged.int("mode").ok_or_else(|| required(def, "mode"))?;
    if mode == ASYNCHRONOUS && stage != POST_OPERATION {
        return Err(invalid(
            "An asynchronous step can only be registered in the PostOperation stage (40).",
        ));
    }
    if mode != ASYNCHRONOUS {
        return Err(Fail::not_implemented(
            "synchronous steps (mode 0); register the webhook with mode 1 and stage 40",
        ));
    }
    if merged.int("supporteddeployment") == Some(1) {
        return Err(Fail::not_implemented(
            "steps deployed only to the Dynamics 365 Client for Outlook (supporteddeployment 1)",
        ));
    }
    if let Some(attributes) = merged.text("filteringattributes") {
        let t = store.by_logical(&table).ok_or_else(|| {
            invalid(format!(
                "The message filter names the table '{table}', which does not exist."
            ))
        })?;
        unknown_attributes(&store.tables[t].def, attributes, "filteringattributes")?;
    }
    // A step's images must still suit it when its message changes.
    if let Some(row) = stored
        && let Some(step) = row.cells[def.idx.id]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
        && let Some(images) = store.by_logical(IMAGE)
    {
        let image_def = &store.tables[images].def;
        let step_c = image_def.column("_sdkmessageprocessingstepid_value");
        for image in store.tables[images].rows.values() {
            let belongs = step_c
                .and_then(|c| image.cells[c].as_str())
                .and_then(|s| Uuid::parse_str(s).ok())
                == Some(step);
            if belongs {
                let merged_image = Merged {
                    def: image_def,
                    values: &[],
                    stored: Some(image),
                };
                check_image(store, &merged_image, message, Some(&table))?;
            }
        }
    }
    Ok(())
}

fn check_image(
    store: &Store,
    merged: &Merged<'_>,
    message: Message,
    table: Option<&str>,
) -> Result<(), Fail> {
    merged.require_text("name")?;
    merged.require_text("entityalias")?;
    let kind = merged
        .int("imagetype")
        .ok_or_else(|| required(merged.def, "imagetype"))?;
    match (message, kind) {
        (Message::Create, 0 | 2) => {
            return Err(invalid(
                "A Create step cannot have a pre-image: the row does not exist before it.",
            ));
        }
        (Message::Delete, 1 | 2) => {
            return Err(invalid(
                "A Delete step cannot have a post-image: the row no longer exists after it.",
            ));
        }
        _ => {}
    }
    let property = merged.require_text("messagepropertyname")?;
    // The message property an image is taken from: `Id` (the created row's id) for Create, `Target`
    // for Update and Delete, as Microsoft's table of entity-image message properties lists them.
    let valid = match message {
        Message::Create => property == "Id",
        Message::Update | Message::Delete => property == "Target",
    };
    if !valid {
        return Err(invalid(format!(
            "'{property}' is not a messagepropertyname of the {} message.",
            message.name()
        )));
    }
    if let Some(attributes) = merged.text("attributes")
        && let Some(t) = table.and_then(|name| store.by_logical(name))
    {
        unknown_attributes(&store.tables[t].def, attributes, "attributes")?;
    }
    Ok(())
}

/// Refuses a comma-separated list naming an attribute the table does not have. Lookups go by
/// their logical names (`parentcustomerid`), not as the Web API reads them.
fn unknown_attributes(def: &TableDef, list: &str, column: &str) -> Result<(), Fail> {
    for name in split_list(list) {
        if def.attribute(&name).is_none() {
            return Err(invalid(format!(
                "'{name}' in '{column}' is not an attribute of the '{}' table.",
                def.logical_name
            )));
        }
    }
    Ok(())
}

/// `a, B ,c` as `["a", "b", "c"]`: attribute lists are logical names, which are lower case.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cell<'a>(store: &'a Store, logical: &str, id: Uuid, column: &str) -> Option<&'a Value> {
    let t = store.by_logical(logical)?;
    let table = &store.tables[t];
    let c = table.def.column(column)?;
    table.rows.get(&id).map(|r| &r.cells[c])
}

fn cell_id(store: &Store, logical: &str, id: Uuid, column: &str) -> Option<Uuid> {
    cell(store, logical, id, column)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The message a `sdkmessage` row stands for.
pub fn message_by_id(store: &Store, id: Uuid) -> Option<Message> {
    let name = cell(store, MESSAGE, id, "name")?.as_str()?;
    Message::ALL.into_iter().find(|m| m.name() == name)
}

/// A filter's message id and table logical name.
pub fn filter(store: &Store, id: Uuid) -> Option<(Uuid, String)> {
    let message = cell_id(store, FILTER, id, "_sdkmessageid_value")?;
    let table = cell(store, FILTER, id, "primaryobjecttypecode")?.as_str()?;
    Some((message, table.to_owned()))
}

fn step_message(store: &Store, step: Uuid) -> Option<Message> {
    message_by_id(store, cell_id(store, STEP, step, "_sdkmessageid_value")?)
}

fn step_table(store: &Store, step: Uuid) -> Option<String> {
    filter(
        store,
        cell_id(store, STEP, step, "_sdkmessagefilterid_value")?,
    )
    .map(|(_, t)| t)
}

/// Refuses deletes Dataverse refuses: its message and filter rows are the platform's.
pub fn check_delete(store: &Store, t: usize) -> Result<(), Fail> {
    let def = &store.tables[t].def;
    match def.kind {
        TableKind::Registration(Registration::Message | Registration::MessageFilter) => {
            Err(unsupported("Delete", &def.logical_name))
        }
        _ => Ok(()),
    }
}

/// After row `id` of table `t` is deleted: a service endpoint takes its steps with it and a step its
/// images, as the relationships' cascade rules say (both `Delete: Cascade`).
pub fn cascade(store: &mut Store, t: usize, id: Uuid) {
    let (dependent, column) = match store.tables[t].def.kind {
        TableKind::Registration(Registration::ServiceEndpoint) => {
            store.secrets.remove(&id);
            (STEP, "_eventhandler_value")
        }
        TableKind::Registration(Registration::Step) => (IMAGE, "_sdkmessageprocessingstepid_value"),
        _ => return,
    };
    let Some(d) = store.by_logical(dependent) else {
        return;
    };
    let Some(c) = store.tables[d].def.column(column) else {
        return;
    };
    let wanted = id.to_string();
    let doomed: Vec<Uuid> = store.tables[d]
        .rows
        .iter()
        .filter(|(_, row)| row.cells[c].as_str() == Some(wanted.as_str()))
        .map(|(id, _)| id)
        .collect();
    for row in doomed {
        store.delete(d, row);
        cascade(store, d, row);
    }
}
