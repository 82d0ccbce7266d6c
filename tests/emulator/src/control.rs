//! The control API under `/_emulator/`, for tests and demos. It needs no token.
//!
//! | Request | Effect |
//! |---|---|
//! | `POST /_emulator/reset` `{"seed": "demo"\|"none"}` | empty the organisation, reload tables and seed data, clear faults and the request log |
//! | `POST /_emulator/tables` `{"logical_name","entity_set_name","primary_id","primary_name","change_tracking","columns"?,"keys"?: [{"name","columns"}]}` | add a custom table, with alternate keys |
//! | `POST /_emulator/tables/{name}/keys` `{"name": "aws_accountnumber", "columns": ["accountnumber"]}` | define an alternate key (see below) |
//! | `POST /_emulator/faults` `{"status"?,"retry_after"?,"times"?,"method"?,"path_contains"?,"delay_ms"?,"drop_connection"?,"drop_answer"?,"code"?,"message"?}` | inject a fault into the next `times` matching requests (see below) |
//! | `DELETE /_emulator/faults` | remove all faults |
//! | `GET /_emulator/requests` / `DELETE` | the request log (method, path and query, status, a few headers, `fault`, `answer_dropped`, and a `$batch`'s inner requests as `parts`) / clear it |
//! | `POST /_emulator/tokens/expire` | every issued access token is now expired |
//! | `POST /_emulator/credentials` `{"client_id"?, "client_secret"?}` | rotate the app registration's credentials |
//! | `POST /_emulator/deltatokens/expire` | every delta token issued so far is now expired |
//! | `POST /_emulator/clock` `{"advance_secs": n}` | move the clock forward |
//! | `POST /_emulator/tables/{name}/rows` `{...columns, "createdon"?, "modifiedon"?}` | insert a row with explicit timestamps (a late commit) |
//! | `POST /_emulator/tables/{name}/generate` `{"count": n, "createdon"?}` | insert n synthetic rows quickly (benchmarks) |
//! | `GET /_emulator/webhooks/deliveries` `?wait=true&timeout_secs=n` | the webhook delivery log; with `wait`, answered once none is pending (at most `timeout_secs`, default 120) |
//! | `DELETE /_emulator/webhooks/deliveries` | forget settled deliveries (pending ones stay until they settle) |
//! | `GET /_emulator/requests/summary` | Web API requests in the log counted by status, token requests, and 429s by limit |
//! | `GET /_emulator/service-protection` | the service-protection settings and each user's use of the window |
//! | `POST /_emulator/service-protection` `{"enabled"?,"requests"?,"execution_ms"?,"concurrent"?,"window_secs"?,"simulated_execution_ms"?}` | change them (see `crate::protection`) |
//!
//! A fault matches on `method` and `path_contains` (both optional) and acts in one of these ways:
//!
//! - `status` (with `retry_after`, `code`, `message`): answered at once with that error; the request
//!   is not carried out. Logged with that status and `"fault": true`.
//! - `delay_ms`: waits, then carries on (with the other options, or normally).
//! - `drop_connection`: closes the connection before the request is carried out. Logged with status 0.
//! - `drop_answer`: carries the request out as usual (its changes stay), then closes the connection
//!   instead of answering: the answer lost on the way back that makes a retry meet its own earlier
//!   success. Logged with the real status, `"fault": true` and `"answer_dropped": true`. It cannot be
//!   combined with `status` or `drop_connection`, which stop the request first.
//!
//! Rows inserted or generated here are data already in place, not operations: they fire no webhook
//! steps, and the plug-in registration tables take no rows this way (register through the Web API).
//! They still keep to the table's alternate keys, as the key's unique index would make them.
//!
//! An alternate key (`crate::keys`) names 1 to 16 columns by logical name (a lookup as `x`, not
//! `_x_value`): single lines of text, whole numbers, decimals, dates and times, lookups or choices. A
//! table has at most 10. A key is refused (400) when its name or its set of columns is taken, or when
//! rows already there share its values, where Dataverse's index job would fail. It is `Active` at once
//! and lasts until the next reset; no table has one after a reset, as on a fresh organisation.
//!
//! A custom table's `columns` map each name to a type: `string`, `memo`, `integer`, `bigint`, `money`,
//! `decimal`, `double`, `boolean`, `datetime`, `date`, `lookup:<table>`, or a choice: `choice` (any
//! whole number, no options listed), `choice:1=Red,2=Blue` (those options, with those labels), or
//! `choice:1,2,3` (each labelled with its number). Each lookup is a relationship named
//! `<target>_<table>_<column>` (see `crate::relationships`).
//!
//! Requests the front end refuses (a URL over 32,768 characters, a Web API path segment over 260, a
//! Web API path holding a character ASP.NET finds dangerous) are logged but never reach the faults.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use std::time::Duration;

use crate::protection::{Change, Limit};
use crate::reply::{Fail, Reply};
use crate::schema::{self, Column, ColumnType, TableDef, TableKind};
use crate::server::{Shared, lock};
use crate::{Emulator, Request, Seed, clock, keys, webhooks};

/// How long `GET /_emulator/webhooks/deliveries?wait=true` waits by default: longer than two
/// attempts that each run into Dataverse's 60 s timeout.
const DELIVERY_WAIT: Duration = Duration::from_secs(125);
/// The longest wait a caller may ask for.
const MAX_DELIVERY_WAIT_SECS: u64 = 3600;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
    #[serde(default = "one")]
    pub times: u32,
    pub method: Option<String>,
    pub path_contains: Option<String>,
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub drop_connection: bool,
    /// Carry the request out, then close the connection without answering.
    #[serde(default)]
    pub drop_answer: bool,
    pub code: Option<String>,
    pub message: Option<String>,
}

fn one() -> u32 {
    1
}

impl Fault {
    fn matches(&self, method: &str, path_and_query: &str) -> bool {
        self.times > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path_and_query.contains(p))
    }

    /// The error a faulted request gets, in the service's words for that status.
    pub fn failure(&self) -> Option<Fail> {
        let status = self.status?;
        let (code, message) = match status {
            429 => (
                "0x80072322",
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
            ),
            503 => (
                "0x80040216",
                "The service is temporarily unavailable. Please try again later.",
            ),
            502 => ("0x80040216", "Bad Gateway"),
            504 => ("0x80040216", "The request timed out at the gateway."),
            _ => ("0x80040216", "An unexpected error occurred."),
        };
        let mut fail = Fail::new(
            status,
            self.code.clone().unwrap_or_else(|| code.to_owned()),
            self.message.clone().unwrap_or_else(|| message.to_owned()),
        );
        if let Some(secs) = self.retry_after {
            fail = fail.with_header("retry-after", secs.to_string());
        }
        Some(fail)
    }
}

/// Takes one use of the first fault matching the request, if any.
pub fn take_fault(faults: &mut [Fault], method: &str, path_and_query: &str) -> Option<Fault> {
    let fault = faults
        .iter_mut()
        .find(|f| f.matches(method, path_and_query))?;
    fault.times -= 1;
    Some(fault.clone())
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// The status the request got, or would have got when its answer was dropped; 0 when the
    /// connection was dropped before the request was carried out.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_none_match: Option<String>,
    pub fault: bool,
    /// The request was carried out (`status` says how) but a `drop_answer` fault closed the
    /// connection instead of sending the answer.
    pub answer_dropped: bool,
    /// For a `$batch`, the requests inside it, in order. They are not requests of their own on the
    /// wire (faults never match them), so they are listed here rather than logged beside it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartEntry>,
    /// The service-protection limit that refused the request (status 429), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<Limit>,
    /// The bypass headers that applied to the request or to a part of it (`crate::bypass`):
    /// `BypassCustomPluginExecution`, `CustomSync`, `CustomAsync`,
    /// `BypassBusinessLogicExecutionStepIds`, `SuppressCallbackRegistrationExpanderJob`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<String>,
}

/// `GET /_emulator/requests/summary`: the request log counted, for a benchmark that sends thousands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Web API requests (`/api/data/...`), every status included.
    pub web_api: usize,
    /// Those by status, as strings (`"204"`, `"429"`); 0 for a dropped connection.
    pub by_status: std::collections::BTreeMap<String, usize>,
    /// Requests to the token endpoint.
    pub token: usize,
    /// Web API requests refused by each service-protection limit.
    pub throttled: std::collections::BTreeMap<String, usize>,
}

impl Summary {
    fn of(log: &[LogEntry]) -> Self {
        let mut summary = Self::default();
        for entry in log {
            let path = entry.path.split('?').next().unwrap_or_default();
            if path.starts_with("/api/data/") {
                summary.web_api += 1;
                *summary
                    .by_status
                    .entry(entry.status.to_string())
                    .or_default() += 1;
                if let Some(limit) = entry.throttled {
                    let name = match limit {
                        Limit::Concurrency => "concurrency",
                        Limit::Requests => "requests",
                        Limit::ExecutionTime => "execution_time",
                    };
                    *summary.throttled.entry(name.to_owned()).or_default() += 1;
                }
            } else if path.ends_with("/oauth2/v2.0/token") {
                summary.token += 1;
            }
        }
        summary
    }
}

/// One request inside a `$batch`, as its batch's [`LogEntry`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub method: String,
    /// The URL as the part wrote it: absolute, a path, or a `$n` reference.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// The position (from 1) among the batch's top-level parts of the changeset holding the
    /// request; none for a request outside changesets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changeset: Option<usize>,
    /// The status the request got; 0 when it never ran, because the batch stopped at an earlier
    /// failure or its changeset failed before reaching it.
    pub status: u16,
    /// It ran, but its changeset failed, so what it did was undone.
    #[serde(default)]
    pub rolled_back: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_none_match: Option<String>,
}

fn bad(message: impl Into<String>) -> Reply {
    Reply::json(400, &json!({"error": message.into()}))
}

fn body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, Reply> {
    let bytes: &[u8] = if req.body.is_empty() {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    seed: Option<Seed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableBody {
    logical_name: String,
    entity_set_name: String,
    primary_id: String,
    primary_name: String,
    #[serde(default)]
    change_tracking: bool,
    #[serde(default)]
    columns: Map<String, Value>,
    #[serde(default)]
    keys: Vec<KeyBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: String,
    columns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `POST /_emulator/timezone`: the calling user's time zone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimezoneBody {
    offset_minutes: i64,
}

fn timezone(offset_minutes: i32) -> Reply {
    Reply::json(
        200,
        &json!({
            "offset_minutes": offset_minutes,
            "offset": crate::dates::offset_text(offset_minutes),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    /// Wider than the clock's `i64`, so a number past it (a huge `u64`, say) is refused with the
    /// clock's own explanation rather than a deserialisation error. Only this body deals in it.
    advance_secs: i128,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    count: usize,
    createdon: Option<String>,
}

pub fn handle(em: &mut Emulator, req: &Request, rest: &str) -> Reply {
    match handle_inner(em, req, rest) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn handle_inner(em: &mut Emulator, req: &Request, rest: &str) -> Result<Reply, Reply> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["reset"]) => {
            let b: ResetBody = body(req)?;
            em.reset(b.seed.unwrap_or(em.seed));
            Ok(Reply::empty(204))
        }
        ("POST", ["tables"]) => add_table(em, &body(req)?),
        ("POST", ["faults"]) => {
            let fault: Fault = body(req)?;
            if fault.status.is_none()
                && fault.delay_ms.is_none()
                && !fault.drop_connection
                && !fault.drop_answer
            {
                return Err(bad(
                    "a fault needs status, delay_ms, drop_connection or drop_answer",
                ));
            }
            if fault.drop_answer && (fault.status.is_some() || fault.drop_connection) {
                // Both of those stop the request before it is carried out; there would be no answer
                // of the service's own to drop.
                return Err(bad(
                    "drop_answer carries the request out, so it cannot be combined with status or drop_connection",
                ));
            }
            if fault.times == 0 {
                return Err(bad("times must be at least 1"));
            }
            em.faults.push(fault);
            Ok(Reply::json(201, &json!({"faults": em.faults.len()})))
        }
        ("DELETE", ["faults"]) => {
            em.faults.clear();
            Ok(Reply::empty(204))
        }
        ("GET", ["requests"]) => Ok(Reply::json(200, &json!(em.log))),
        ("GET", ["requests", "summary"]) => Ok(Reply::json(200, &json!(Summary::of(&em.log)))),
        ("GET", ["service-protection"]) => {
            let now = em.store.clock.now_ms();
            Ok(Reply::json(200, &json!(em.protection.state(now))))
        }
        ("POST", ["service-protection"]) => {
            let change: Change = body(req)?;
            em.protection.change(&change).map_err(bad)?;
            let now = em.store.clock.now_ms();
            Ok(Reply::json(200, &json!(em.protection.state(now))))
        }
        ("DELETE", ["requests"]) => {
            em.log.clear();
            Ok(Reply::empty(204))
        }
        ("POST", ["tokens", "expire"]) => {
            em.auth.expire_all();
            Ok(Reply::empty(204))
        }
        ("POST", ["credentials"]) => {
            let b: CredentialsBody = body(req)?;
            if let Some(id) = b.client_id {
                em.auth.client_id = id;
            }
            if let Some(secret) = b.client_secret {
                em.auth.client_secret = secret;
            }
            Ok(Reply::empty(204))
        }
        ("POST", ["deltatokens", "expire"]) => {
            // Take a version of its own, so tokens issued from now on (even with no writes in
            // between) are newer than the floor and stay valid.
            em.store.version += 1;
            em.store.delta_floor = em.store.version;
            Ok(Reply::empty(204))
        }
        ("POST", ["clock"]) => {
            let b: ClockBody = body(req)?;
            // A number beyond i64 is far past 9999-12-31 (or, negative, a move backwards): refused
            // in the clock's own words, as the ones within i64 are.
            let advanced = match i64::try_from(b.advance_secs) {
                Ok(secs) => em.store.clock.advance(secs),
                Err(_) if b.advance_secs < 0 => Err(clock::ClockError::Backwards),
                Err(_) => Err(clock::ClockError::PastLatest),
            };
            let now = advanced.map_err(|e| bad(e.to_string()))?;
            Ok(Reply::json(200, &json!({"now": clock::format_utc(now)})))
        }
        ("GET", ["timezone"]) => Ok(timezone(em.store.user_offset_minutes)),
        ("POST", ["timezone"]) => {
            let b: TimezoneBody = body(req)?;
            let offset = i32::try_from(b.offset_minutes)
                .ok()
                .filter(|n| n.abs() <= crate::dates::MAX_OFFSET_MINUTES)
                .ok_or_else(|| {
                    bad("offset_minutes: expected minutes east of UTC from -840 to 840")
                })?;
            em.store.user_offset_minutes = offset;
            Ok(timezone(offset))
        }
        ("GET", ["users"]) => Ok(crate::users::list(em)),
        ("POST", ["users", "privileges"]) => Ok(crate::users::set_privilege(em, &body(req)?)),
        ("GET", ["flows"]) => Ok(crate::flows::list(em)),
        ("POST", ["flows"]) => Ok(crate::flows::register(em, &body(req)?)),
        ("DELETE", ["webhooks", "deliveries"]) => {
            em.webhooks.forget_settled();
            Ok(Reply::empty(204))
        }
        ("POST", ["tables", name, "rows"]) => insert_row(em, req, name),
        ("POST", ["tables", name, "keys"]) => add_key(em, name, &body(req)?),
        ("POST", ["tables", name, "generate"]) => generate(em, name, &body(req)?),
        _ => Err(Reply::json(
            404,
            &json!({"error": format!("no control endpoint {} /_emulator/{rest}", req.method)}),
        )),
    }
}

fn add_table(em: &mut Emulator, b: &TableBody) -> Result<Reply, Reply> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for (field, value) in [
        ("logical_name", &b.logical_name),
        ("entity_set_name", &b.entity_set_name),
        ("primary_id", &b.primary_id),
        ("primary_name", &b.primary_name),
    ] {
        if !valid(value) {
            return Err(bad(format!(
                "{field} must be letters, digits and underscores"
            )));
        }
    }
    if b.logical_name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(
            "logical_name must be lowercase, as Dataverse logical names are",
        ));
    }
    let taken = em.store.tables.iter().any(|t| {
        [&t.def.logical_name, &t.def.entity_set_name]
            .iter()
            .any(|n| **n == b.logical_name || **n == b.entity_set_name)
    });
    if taken {
        return Err(bad(
            "a table with that logical name or entity set name exists",
        ));
    }
    let mut columns = Vec::new();
    for (name, spec) in &b.columns {
        let spec = spec
            .as_str()
            .ok_or_else(|| bad(format!("column '{name}': the type must be a string")))?;
        let ty = schema::parse_column_type(spec, name).map_err(bad)?;
        let name = if matches!(ty, ColumnType::Lookup { .. }) {
            schema::lookup_column_name(name)
        } else {
            name.clone()
        };
        columns.push(Column::new(&name, ty));
    }
    if !columns.iter().any(|c| c.name == b.primary_name) {
        columns.insert(
            0,
            Column::new(
                &b.primary_name,
                ColumnType::Text {
                    max_len: 850,
                    memo: false,
                },
            ),
        );
    }
    let mut def = TableDef::new(
        &b.logical_name,
        &b.entity_set_name,
        &b.primary_id,
        &b.primary_name,
        b.change_tracking,
        columns,
    );
    def.is_custom = true;
    def.object_type_code = 10_000 + i64::try_from(em.store.tables.len()).unwrap_or(0);
    // All keys are checked (each against those before it) before the table is added, so a refusal
    // leaves nothing behind. Then they are taken out again, to be added with their indexes below,
    // which cannot fail: the table has no rows yet.
    for key in &b.keys {
        let defined = keys::define(&def, &key.name, &key.columns)
            .map_err(|e| bad(format!("key '{}': {e}", key.name)))?;
        def.keys.push(defined);
    }
    let key_defs = std::mem::take(&mut def.keys);
    let summary = json!({
        "LogicalName": def.logical_name,
        "EntitySetName": def.entity_set_name,
        "PrimaryIdAttribute": def.primary_id,
        "PrimaryNameAttribute": def.primary_name,
        "ChangeTrackingEnabled": def.change_tracking,
        "MetadataId": def.metadata_id,
        "Columns": def.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "Keys": key_defs.iter().map(|k| k.schema_name.clone()).collect::<Vec<_>>(),
    });
    em.store.add_table(def);
    let t = em.store.tables.len() - 1;
    for key in key_defs {
        em.store.add_key(t, key).map_err(|e| bad(e.to_string()))?;
    }
    webhooks::registration::add_filters(&mut em.store, t);
    Ok(Reply::json(201, &summary))
}

/// Defines an alternate key on a business table, as `CreateEntityKey` would, with its index built
/// at once. Answers the key as `EntityDefinitions(...)/Keys` lists it.
fn add_key(em: &mut Emulator, name: &str, b: &KeyBody) -> Result<Reply, Reply> {
    let t = table_index(em, name)?;
    let def = &em.store.tables[t].def;
    let key = keys::define(def, &b.name, &b.columns).map_err(|e| bad(e.to_string()))?;
    let answer = json!({
        "MetadataId": key.metadata_id,
        "LogicalName": key.logical_name,
        "SchemaName": key.schema_name,
        "EntityLogicalName": def.logical_name,
        "KeyAttributes": keys::attributes(def, &key),
        "EntityKeyIndexStatus": "Active",
    });
    em.store.add_key(t, key).map_err(|e| bad(e.to_string()))?;
    Ok(Reply::json(201, &answer))
}

/// A business table named either way: the registration tables are written through the Web API,
/// where their rules are checked.
fn table_index(em: &Emulator, name: &str) -> Result<usize, Reply> {
    let t = em
        .store
        .by_any_name(name)
        .ok_or_else(|| Reply::json(404, &json!({"error": format!("no table '{name}'")})))?;
    if em.store.tables[t].def.kind != TableKind::Ordinary {
        return Err(bad(format!(
            "'{name}' is a plug-in registration table: write it through the Web API"
        )));
    }
    Ok(t)
}

/// `GET /_emulator/webhooks/deliveries`, which may wait for pending deliveries to settle; `None`
/// for any other request.
pub async fn deliveries(shared: &Shared, req: &Request, rest: &str) -> Option<Reply> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if req.method != "GET" || segments != ["webhooks", "deliveries"] {
        return None;
    }
    let mut wait = false;
    let mut limit = DELIVERY_WAIT;
    for (name, value) in form_urlencoded::parse(req.query.as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("wait", "true") => wait = true,
            ("wait", "false") => wait = false,
            ("timeout_secs", secs) => match secs.parse::<u64>() {
                Ok(n) if (1..=MAX_DELIVERY_WAIT_SECS).contains(&n) => {
                    limit = Duration::from_secs(n);
                }
                _ => {
                    return Some(bad(format!(
                        "timeout_secs must be a whole number of seconds from 1 to {MAX_DELIVERY_WAIT_SECS}"
                    )));
                }
            },
            (other, _) => {
                return Some(bad(format!(
                    "unknown or invalid query option '{other}' (expected wait=true|false, timeout_secs=n)"
                )));
            }
        }
    }
    let settled = !wait || webhooks::delivery::wait_idle(shared, limit).await;
    let log = lock(shared).webhooks.log(!settled);
    Some(Reply::json(200, &json!(log)))
}

/// Inserts a row whose `createdon`/`modifiedon` are given, as a transaction that committed late would
/// leave it: older timestamps than rows already visible, but the next version number.
fn insert_row(em: &mut Emulator, req: &Request, name: &str) -> Result<Reply, Reply> {
    let t = table_index(em, name)?;
    let mut fields: Map<String, Value> = body(req)?;
    let mut stamp = |key: &str| -> Result<Option<i64>, Reply> {
        match fields.remove(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(clock::parse_datetime)
                .map(Some)
                .ok_or_else(|| bad(format!("{key} must be an ISO 8601 date-time"))),
        }
    };
    let created = stamp("createdon")?;
    let modified = stamp("modifiedon")?;
    let now = em.store.clock.now();
    let created = created.or(modified).unwrap_or(now);
    let modified = modified.unwrap_or(created);
    let changes = em
        .store
        .read_payload(t, &fields)
        .map_err(Fail::into_reply)?;
    let id = changes.id.unwrap_or_else(Uuid::new_v4);
    if em.store.tables[t].rows.contains_key(&id) {
        return Err(bad("a row with that id exists"));
    }
    em.store
        .check_keys(t, id, None, &changes.values)
        .map_err(Fail::into_reply)?;
    let version = em
        .store
        .insert(t, id, changes.values, Some((created, modified)));
    Ok(Reply::json(
        201,
        &json!({
            "id": id,
            "versionnumber": version,
            "createdon": clock::format_utc(created),
            "modifiedon": clock::format_utc(modified),
        }),
    ))
}

fn generate(em: &mut Emulator, name: &str, b: &GenerateBody) -> Result<Reply, Reply> {
    let t = table_index(em, name)?;
    let at = match b.createdon.as_deref() {
        None => None,
        Some(s) => {
            let t = clock::parse_datetime(s)
                .ok_or_else(|| bad("createdon must be an ISO 8601 date-time"))?;
            Some((t, t))
        }
    };
    crate::seed::synthetic(&mut em.store, t, b.count, at).map_err(Fail::into_reply)?;
    Ok(Reply::json(201, &json!({"count": b.count})))
}
