//! `dataverse-webhook`: changes Dataverse pushes, published as the polling triggers' events.
//!
//! Dataverse posts a `RemoteExecutionContext` to a registered webhook after each Create, Update or
//! Delete step it runs (`docs/push.md`). The function sits behind a Lambda Function URL, at
//! `/<dataset>`, or `/<dataset>/where/<filter>` for an endpoint registered with a `$filter`, and for
//! each delivery:
//!
//! 1. checks the key the delivery presents (`?code=` or the `x-crm-webhook-key` header) against the
//!    dataset's `webhook_key`, in constant time; a missing or wrong key is 401;
//! 2. reads the context (400 if it is not one, or names another message);
//! 3. takes the row from the context's image, or reads it from Dataverse when the context was cut for
//!    size or carries none;
//! 4. with a filter, publishes only a change whose row matches it: the row as the change left it, or
//!    for a deletion the row before it (the Delete step's pre-image);
//! 5. publishes the event the matching trigger would, with the same `event_id`, plus
//!    `"via": "webhook"`, and answers 200 only once it was accepted. Anything that may pass answers
//!    503, so that Dataverse's asynchronous service sends it again.

mod context;
mod request;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataverse::filter::Filter;
use dataverse::{Deadline, Query, Table};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use tracing::Instrument as _;

pub use self::context::{Context, ContextError};
pub use self::request::{Request, RequestError, Response};
use crate::config::Config;
use crate::events::EventSink;
use crate::input::{Dataset, TableName};
use crate::metrics::{self, Metric};
use crate::trigger::{Change, ColumnChanges, Kind, change_id, event_for};
use crate::{ConfigError, Crm, CrmError, lambda};

/// The most a delivery may carry. Dataverse cuts a context down past 256 KB; twice that leaves room
/// for its JSON escaping and stops anything far larger before it is parsed.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// How old a remembered key must be before a delivery it refuses causes the key to be read again
/// (it may have been rotated). Refused deliveries cannot make the function read secrets faster.
const KEY_REREAD_AFTER: Duration = Duration::from_secs(60);
/// How long a remembered key is trusted even while deliveries match it: a key rotated because it
/// leaked stops working on a warm instance within this, whether or not a delivery with the new key
/// arrives there.
const KEY_MAX_AGE: Duration = Duration::from_secs(600);
/// How many datasets without credentials may be looked up in a minute. Any name fits the path, so
/// without a bound every request naming a new one would cost a Secrets Manager call.
const UNKNOWN_LOOKUPS_PER_MINUTE: usize = 20;
/// The header a delivery registered with the `HttpHeader` auth type carries its key in.
pub const KEY_HEADER: &str = "x-crm-webhook-key";
/// The query parameter of the `WebhookKey` auth type (and of `HttpQueryString`, named so).
pub const KEY_PARAMETER: &str = "code";
/// The path segment before an endpoint's filter: `/<dataset>/where/<filter>`.
const FILTER_SEGMENT: &str = "where";
/// The query parameter that makes an endpoint pass over changes by the connector's own user.
pub const IGNORE_OWN_CHANGES: &str = "ignore_own_changes";
/// The query parameter that makes an endpoint's events carry formatted values and lookup
/// annotations.
pub const FORMATTED_VALUES: &str = "formatted_values";
/// Columns an update always sets, which say nothing about what the caller changed.
const BOOKKEEPING: [&str; 5] = [
    "@odata.etag",
    "modifiedon",
    "_modifiedby_value",
    "_modifiedonbehalfby_value",
    "versionnumber",
];

/// An endpoint's options, from its address's query (`?ignore_own_changes=true`): registered with
/// the endpoint's URL, or as settings of the `HttpQueryString` auth type, they come back with every
/// delivery, as the key does.
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    ignore_own_changes: bool,
    formatted_values: bool,
}

impl Options {
    fn read(request: &Request) -> Result<Self, Refused> {
        let flag = |name: &str| match request.query(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(Refused {
                error_type: Some("Crm.Configuration"),
                ..Refused::new(
                    500,
                    format!("the endpoint's option '{name}' must be true or false"),
                )
            }),
        };
        Ok(Self {
            ignore_own_changes: flag(IGNORE_OWN_CHANGES)?,
            formatted_values: flag(FORMATTED_VALUES)?,
        })
    }
}

/// Which columns an update changed, from the row before it (the step's pre-image) and after it.
/// The columns compared are those the pre-image holds and those the request set, less the
/// bookkeeping columns every update sets; named in alphabetical order. An image leaves out columns
/// that are empty, so a column the pre-image lacks was null before. A column absent from both the
/// row after and the `Target` is not compared: the request did not set it, and a post-image
/// registered for fewer columns than the pre-image lacks it without saying it is empty now.
fn changed_columns(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    target: Option<&Map<String, Value>>,
    primary_id: &str,
) -> ColumnChanges {
    let mut columns: Vec<&String> = before
        .keys()
        .chain(target.into_iter().flat_map(Map::keys))
        .filter(|c| *c != primary_id && !BOOKKEEPING.contains(&c.as_str()) && !c.contains('@'))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    // The pre-image holds every compared column's earlier value, so none is ever omitted.
    let mut changed = Vec::new();
    let mut previous = Map::new();
    for column in columns {
        let was = before.get(column).unwrap_or(&Value::Null);
        let Some(now) = after
            .get(column)
            .or_else(|| target.and_then(|t| t.get(column)))
        else {
            continue;
        };
        if was != now {
            changed.push(column.clone());
            previous.insert(column.clone(), was.clone());
        }
    }
    ColumnChanges {
        changed,
        previous: Some(previous),
        previous_omitted: Vec::new(),
    }
}

/// The path, after the Function URL, of `dataset`'s endpoint, with `filter` when given.
///
/// Dataverse sends a delivery to the URL registered and nothing else it could carry per endpoint, so
/// the filter travels in the path. It is base64url-encoded there: the auth types add query
/// parameters, and an encoded path cannot be read two ways by the proxies in between.
pub fn endpoint_path(dataset: &str, filter: Option<&str>) -> String {
    match filter {
        None => dataset.to_owned(),
        Some(filter) => format!(
            "{dataset}/{FILTER_SEGMENT}/{}",
            URL_SAFE_NO_PAD.encode(filter)
        ),
    }
}

/// Reads a delivery's path: the dataset, and the filter's text if the endpoint has one. `None` for
/// a path no endpoint has.
fn read_path(raw_path: &str) -> Option<(Dataset, Option<String>)> {
    let mut parts = raw_path.trim_matches('/').split('/');
    let dataset = Dataset::try_from(parts.next()?.to_owned()).ok()?;
    let filter = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some(FILTER_SEGMENT), Some(encoded), None) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            Some(String::from_utf8(bytes).ok()?)
        }
        _ => return None,
    };
    Some((dataset, filter))
}

/// What the webhook function needs.
#[derive(Debug)]
pub struct WebhookDeps {
    pub crm: Crm,
    pub sink: EventSink,
    keys: Mutex<Keys>,
}

/// The datasets' keys as last read.
#[derive(Debug, Default)]
struct Keys {
    /// Each dataset with credentials: its key (`None` when it has none), and when it was read.
    known: HashMap<Dataset, (Option<SecretString>, Instant)>,
    /// When names without credentials were looked up, within the last minute.
    unknown: std::collections::VecDeque<Instant>,
}

impl WebhookDeps {
    pub fn new(crm: Crm, sink: EventSink) -> Self {
        Self {
            crm,
            sink,
            keys: Mutex::new(Keys::default()),
        }
    }

    /// From the `CRM_*` variables.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        // Without a sink every delivery would be answered "published" and dropped.
        if matches!(config.events, crate::config::EventsConfig::None) {
            return Err(ConfigError::Environment(vec![
                "CRM_EVENTS is not set: the webhook receiver needs an event sink (eventbridge:<bus> or file:<path>)".into(),
            ]));
        }
        Ok(Self::new(
            Crm::new(crate::CredentialSource::from_config(&config.secrets).await),
            EventSink::from_config(&config.events, &config.event_source).await,
        ))
    }

    /// Whether `presented` is the dataset's key. A refusal by a key remembered for over a minute
    /// reads the key again first, so a rotation takes effect without a cold start; a match is
    /// trusted for ten minutes at most. Errors are the secret's: unreadable (`Crm.Configuration`) or
    /// unreachable.
    async fn authentic(&self, dataset: &Dataset, presented: &str) -> Result<bool, CrmError> {
        let mut keys = self.keys.lock().await;
        if let Some((key, read)) = keys.known.get(dataset) {
            let age = read.elapsed();
            if age < KEY_MAX_AGE && matches(key.as_ref(), presented) {
                return Ok(true);
            }
            if age < KEY_REREAD_AFTER {
                return Ok(false);
            }
        } else {
            keys.unknown
                .retain(|at| at.elapsed() < Duration::from_secs(60));
            if keys.unknown.len() >= UNKNOWN_LOOKUPS_PER_MINUTE {
                tracing::warn!(dataset = %crate::excerpt(dataset.as_str()), "too many deliveries for datasets without credentials this minute; refused without a lookup");
                return Ok(false);
            }
        }
        let fresh = match self.crm.webhook_key(dataset).await {
            Ok(key) => key,
            Err(CrmError::Configuration(ConfigError::NoCredentials { reason, .. })) => {
                keys.unknown.push_back(Instant::now());
                tracing::error!(dataset = %crate::excerpt(dataset.as_str()), %reason, "a delivery names a dataset without credentials; refused");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if fresh.is_none() {
            tracing::error!(dataset = %dataset, "this dataset has no webhook key; every delivery to it is refused (add `webhook_key` to its credentials)");
        }
        let verdict = matches(fresh.as_ref(), presented);
        keys.known.insert(dataset.clone(), (fresh, Instant::now()));
        Ok(verdict)
    }
}

/// Compares digests, not the keys themselves, so that neither the time taken nor an early exit on
/// length tells a caller how much of a guess was right.
fn matches(expected: Option<&SecretString>, presented: &str) -> bool {
    let Some(expected) = expected else {
        return false;
    };
    let want = Sha256::digest(expected.expose_secret().as_bytes());
    let got = Sha256::digest(presented.as_bytes());
    want.ct_eq(&got).into()
}

/// The webhook function's whole life: logging, its dependencies from the `CRM_*` variables, then one
/// [`receive`] per delivery.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    // A configuration failure is answered as an HTTP 500 like any other, not as a failed
    // invocation: a Function URL turns those into 502, which Dataverse takes for a network fault.
    let deps = Ok::<_, ConfigError>(WebhookDeps::from_env().await);
    lambda::serve(&deps, async move |deps, event| match deps {
        Ok(deps) => {
            let deadline = lambda::deadline(&event.context);
            Ok(receive(deps, event.payload, deadline).await)
        }
        Err(e) => {
            tracing::error!(error = %e, "the webhook receiver is misconfigured");
            metrics::set(Metric::EventsFailed, 1);
            metrics::failed(CrmError::from(e.clone()).error_type());
            Ok(Response::json(
                500,
                &json!({"error": "the receiver is misconfigured; see its logs"}),
            ))
        }
    })
    .await
}

/// Why a delivery was not published, as the status Dataverse is answered with.
#[derive(Debug)]
struct Refused {
    status: u16,
    /// Said to the caller and logged; never the key, never a value from the body.
    message: String,
    /// For a failure on this side (5xx), the `Crm.*` type it counts under in the metrics.
    error_type: Option<&'static str>,
}

impl Refused {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            error_type: (status >= 500).then_some("Crm.ServerError"),
        }
    }

    /// A failure on the way to publishing: 503 when sending the delivery again may succeed (Dataverse
    /// retries a failed asynchronous delivery), 500 when this side is misconfigured.
    fn from_error(error: &CrmError) -> Self {
        let status = match error.error_type() {
            "Crm.ServerError" | "Crm.Throttled" => 503,
            _ => 500,
        };
        Self {
            error_type: Some(error.error_type()),
            ..Self::new(status, error.message())
        }
    }

    /// A failure while checking the key: the caller is not yet known, so it learns only that the
    /// check could not be made; the log has the cause.
    fn unchecked(error: &CrmError) -> Self {
        let refused = Self::from_error(error);
        tracing::error!(status = refused.status, error = %refused.message, "the webhook key could not be read");
        Self {
            message: "the key could not be checked".into(),
            ..refused
        }
    }
}

/// Answers one delivery: a Function URL request (payload format 2.0).
pub async fn receive(deps: &WebhookDeps, request: Value, deadline: Deadline) -> Response {
    metrics::set(Metric::EventsFired, 0);
    metrics::set(Metric::EventsFailed, 0);
    let request = match Request::parse(request) {
        Ok(request) => request,
        Err(problem) => {
            tracing::warn!(status = 400, %problem, "not a Function URL request");
            return Response::json(400, &json!({"error": problem.to_string()}));
        }
    };
    // Both come from an unauthenticated caller: bounded before they reach a log line.
    let request_id = crate::excerpt(request.header("x-request-id").unwrap_or(""));
    let span = tracing::info_span!(
        "delivery",
        request_id = %request_id,
        path = %crate::excerpt(&request.raw_path)
    );
    match deliver(deps, &request, deadline).instrument(span).await {
        Ok(handled) => {
            tracing::info!(request_id = %request_id, status = 200, event_id = %handled.event_id, published = handled.published, "delivery handled");
            metrics::set(Metric::EventsFired, u64::from(handled.published));
            if handled.own {
                metrics::set(Metric::OwnChangesSkipped, 1);
            }
            Response::json(200, &handled.answer())
        }
        Err(refused) => {
            // A refusal (4xx) is no event; a failure (5xx) is one that Dataverse will send again.
            if let Some(error_type) = refused.error_type {
                metrics::set(Metric::EventsFailed, 1);
                metrics::failed(error_type);
            }
            if refused.status >= 500 {
                tracing::error!(request_id = %request_id, status = refused.status, problem = %refused.message, "delivery failed; Dataverse will send it again");
            } else {
                tracing::warn!(request_id = %request_id, status = refused.status, problem = %refused.message, "delivery refused");
            }
            Response::json(refused.status, &json!({"error": refused.message}))
        }
    }
}

/// What a handled delivery answers.
struct Handled {
    event_id: String,
    /// False when there was nothing to publish (the row was deleted before it could be read, or
    /// does not match the endpoint's filter).
    published: bool,
    /// Whether the row matched the endpoint's filter; `None` without one.
    matched: Option<bool>,
    /// Passed over as a change by the connector's own user (`ignore_own_changes`).
    own: bool,
}

impl Handled {
    fn answer(&self) -> Value {
        let mut answer = json!({"event_id": self.event_id, "published": self.published});
        if let Some(matched) = self.matched {
            answer["matched"] = json!(matched);
        }
        if self.own {
            answer["skipped_own"] = json!(true);
        }
        answer
    }
}

/// Whether `row` matches the endpoint's filter; `Err` says why that cannot be known (no image, or
/// a value the filter cannot compare).
fn judge(filter: &Filter, row: Option<&Map<String, Value>>) -> Result<bool, String> {
    let row =
        row.ok_or("the delivery carries no image of the row (cut for size, or none registered)")?;
    filter.matches(row).map_err(|e| e.to_string())
}

async fn deliver(
    deps: &WebhookDeps,
    request: &Request,
    deadline: Deadline,
) -> Result<Handled, Refused> {
    if request.method != "POST" {
        return Err(Refused::new(405, "deliveries are POSTed"));
    }
    let (dataset, filter) = read_path(&request.raw_path).ok_or_else(|| {
        Refused::new(
            404,
            "the path must be /<dataset> or /<dataset>/where/<filter>",
        )
    })?;
    // The key is checked before the body is looked at: nothing unauthenticated is parsed.
    let presented = request
        .header(KEY_HEADER)
        .or_else(|| request.query(KEY_PARAMETER))
        .ok_or_else(|| {
            Refused::new(
                401,
                "no key: expected ?code= or the x-crm-webhook-key header",
            )
        })?;
    // An unknown dataset looks like a wrong key from outside; the log says which it was.
    match deps.authentic(&dataset, presented).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Refused::new(
                401,
                "the key is not this dataset's webhook key",
            ));
        }
        Err(e) => return Err(Refused::unchecked(&e)),
    }
    // Only the registration writes the path, so a filter that does not parse is this side's
    // misconfiguration: Dataverse records the failed job, and the log says why.
    let filter = filter
        .map(|text| Filter::parse(&text))
        .transpose()
        .map_err(|e| Refused {
            error_type: Some("Crm.Configuration"),
            ..Refused::new(500, format!("the endpoint's filter cannot be used: {e}"))
        })?;
    let options = Options::read(request)?;
    let body = request
        .body()
        .map_err(|problem| Refused::new(400, problem.to_string()))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(Refused::new(
            400,
            format!(
                "the body is {} bytes; at most {MAX_BODY_BYTES} are read",
                body.len()
            ),
        ));
    }
    let context = Context::parse(&body).map_err(|e| Refused::new(400, e.to_string()))?;
    let kind = context
        .kind()
        .map_err(|e| Refused::new(400, e.to_string()))?;
    let size_exceeded = request.header("x-ms-dynamics-msg-size-exceeded").is_some();
    tracing::info!(
        dataset = %dataset,
        sdk_message = %crate::excerpt(&context.message_name),
        entity = %context.primary_entity_name,
        id = %context.primary_entity_id,
        depth = context.depth,
        size_exceeded,
        "delivery"
    );
    let logical = TableName::try_from(context.primary_entity_name.clone())
        .map_err(|problem| Refused::new(400, format!("PrimaryEntityName: {problem}")))?;
    let table = deps
        .crm
        .call(&dataset, async |client| {
            client.table(&logical, deadline).await
        })
        .await
        .map_err(|e| Refused::from_error(&e))?;
    // An event carries the row's version (an update's identity): an image without one is no use.
    // Nor is one with a value of a shape not known here: the delivery is authentic, so the row is
    // read rather than the change refused for good.
    let carried = if kind == Kind::Deleted || size_exceeded {
        None
    } else {
        match context.row(&table.primary_id_attribute, options.formatted_values) {
            Ok(row) => row.filter(|r| version(r).is_some()),
            Err(e) => {
                tracing::warn!(problem = %e, "the context's row cannot be rewritten; reading the row instead");
                None
            }
        }
    };
    if options.ignore_own_changes {
        // Decided before the row is read: a change passed over costs no request but the first
        // delivery's `WhoAmI`.
        let own = deps
            .crm
            .own_user(&dataset, deadline)
            .await
            .map_err(|e| Refused::from_error(&e))?;
        if context.caller() == Some(own) {
            let change = change(
                kind,
                &dataset,
                &table,
                &context,
                carried.as_ref().and_then(version),
                None,
            );
            tracing::info!(id = %context.primary_entity_id, "a change by the connector's own user; passed over");
            return Ok(Handled {
                event_id: change_id(&change),
                published: false,
                matched: None,
                own: true,
            });
        }
    }
    let row = if kind == Kind::Deleted {
        None
    } else if carried.is_some() {
        carried
    } else if let Some(row) = read_row(
        deps,
        &dataset,
        &table,
        &context,
        options.formatted_values,
        deadline,
    )
    .await?
    {
        Some(row)
    } else {
        let change = change(kind, &dataset, &table, &context, None, None);
        tracing::info!(id = %context.primary_entity_id, "the row no longer exists; nothing to publish");
        return Ok(Handled {
            event_id: change_id(&change),
            published: false,
            matched: None,
            own: false,
        });
    };
    // An update compared with the step's pre-image: which columns changed, and what they held.
    // Without a pre-image the event says nothing about it, as it cannot know.
    let changes = match (&row, kind) {
        (Some(after), Kind::Updated) => match (
            context.before(&table.primary_id_attribute),
            context.target(&table.primary_id_attribute),
        ) {
            (Ok(Some(before)), Ok(target)) => Some(changed_columns(
                &before,
                after,
                target.as_ref(),
                &table.primary_id_attribute,
            )),
            (Ok(None), _) => None,
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(problem = %e, "the pre-image or the target cannot be rewritten; the event does not say which columns changed");
                None
            }
        },
        _ => None,
    };
    // A creation or update is judged on the row it left, a deletion on the row before it.
    // A change whose match cannot be known passes, with a warning: published in doubt, it is at
    // worst one event too many for a consumer to ignore; dropped in doubt, it is lost.
    let matched = filter.as_ref().map(|filter| {
        let judged = match &row {
            Some(row) => judge(filter, Some(row)),
            None => context
                .before(&table.primary_id_attribute)
                .map_err(|e| e.to_string())
                .and_then(|before| judge(filter, before.as_ref())),
        };
        judged.unwrap_or_else(|problem| {
            tracing::warn!(%problem, "whether the row matches the endpoint's filter cannot be known; publishing it");
            true
        })
    });
    let record = row
        .as_ref()
        .map(serde_json::value::to_raw_value)
        .transpose()
        .map_err(|e| Refused::new(500, format!("could not write the record as JSON: {e}")))?;
    let version = row.as_ref().and_then(version);
    let changed_on = row
        .as_ref()
        .and_then(|r| r.get("modifiedon"))
        .and_then(Value::as_str);
    let change = Change {
        record: record.as_deref(),
        changes: changes.as_ref(),
        ..change(kind, &dataset, &table, &context, version, changed_on)
    };
    let event_id = change_id(&change);
    if matched == Some(false) {
        tracing::info!(id = %context.primary_entity_id, "the row does not match the endpoint's filter; nothing to publish");
        return Ok(Handled {
            event_id,
            published: false,
            matched,
            own: false,
        });
    }
    let event = event_for(&change).map_err(|e| Refused::new(500, e.to_string()))?;
    let published = deps
        .sink
        .publish(std::slice::from_ref(&event), deadline)
        .await;
    if published.accepted == 1 {
        return Ok(Handled {
            event_id,
            published: true,
            matched,
            own: false,
        });
    }
    let refused = Refused::new(503, "the event was not accepted");
    Err(match published.error.map(CrmError::from) {
        Some(error) => Refused {
            message: error.message(),
            error_type: Some(error.error_type()),
            ..refused
        },
        None => refused,
    })
}

/// The change a context stands for, without its record.
fn change<'a>(
    kind: Kind,
    dataset: &'a Dataset,
    table: &'a Table,
    context: &Context,
    version: Option<u64>,
    changed_on: Option<&'a str>,
) -> Change<'a> {
    Change {
        kind,
        dataset: dataset.as_str(),
        table,
        id: context.primary_entity_id,
        version,
        changed_on,
        record: None,
        via: Some("webhook"),
        changes: None,
    }
}

fn version(row: &Map<String, Value>) -> Option<u64> {
    row.get("versionnumber").and_then(Value::as_u64)
}

/// The row as it is now, for a context that carries none; `None` if it no longer exists.
async fn read_row(
    deps: &WebhookDeps,
    dataset: &Dataset,
    table: &Table,
    context: &Context,
    formatted_values: bool,
    deadline: Deadline,
) -> Result<Option<Map<String, Value>>, Refused> {
    let id = context.primary_entity_id;
    let query = Query::new().formatted_values(formatted_values);
    let read = deps
        .crm
        .call(dataset, async |client| {
            client.get(table, id, &query, deadline).await
        })
        .await;
    match read {
        Ok(row) => Ok(Some(row)),
        Err(CrmError::Dataverse(e)) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(Refused::from_error(&e)),
    }
}
