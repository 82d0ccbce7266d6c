//! Sending deliveries: the steps a change reaches, the request each one becomes, retries, and the
//! delivery log the control API shows.
//!
//! Dataverse reads only the status of the answer and waits at most 60 s for it. A 2xx is success.
//! A 502, 503 or 504, a timeout or a connection that fails is worth another try; Dataverse makes
//! exactly one, and so does the emulator by default (`--webhook-attempts 2`). Any other status
//! fails the delivery at once. Retries back off exponentially from `--webhook-backoff-ms`.
//!
//! A delivery goes only to `https` or to plain `http` on loopback (`localhost`, `127.0.0.0/8`,
//! `::1`); any other address fails it without a request, so a test cannot post rows to the network
//! by mistake. Redirects are not followed: a 3xx is a failure, as for any non-2xx.
//!
//! The log never holds a key: it names the auth type and the header or parameter names it adds,
//! never their values, and a transport error's text leaves the URL (and so `?code=`) out.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::context::Built;
use super::registration::{self, ASYNCHRONOUS, IMAGE, POST_OPERATION, STEP, split_list};
use super::{Change, Message};
use crate::clock;
use crate::server::{Shared, lock};
use crate::store::Store;

/// How long Dataverse waits for a webhook's answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a delivery authenticates, from the endpoint's `authtype` and `authvalue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `authtype` 4: the value as `?code=`.
    Key(String),
    /// `authtype` 5: each setting as a header.
    Headers(Vec<(String, String)>),
    /// `authtype` 6: each setting as a query parameter.
    Query(Vec<(String, String)>),
}

/// The auth types a webhook can use, as the log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    WebhookKey,
    HttpHeader,
    HttpQueryString,
}

impl Auth {
    /// Reads an endpoint's auth; the error says what is wrong, never quoting the value.
    pub fn new(authtype: i64, authvalue: Option<&str>) -> Result<Self, String> {
        let value = authvalue.filter(|v| !v.trim().is_empty());
        match authtype {
            4 => value.map(|v| Auth::Key(v.to_owned())).ok_or_else(|| {
                "A Webhook service endpoint with authtype 4 (WebhookKey) needs the key as its 'authvalue'.".to_owned()
            }),
            5 | 6 => {
                let kind = if authtype == 5 { "HttpHeader" } else { "HttpQueryString" };
                let xml = value.ok_or_else(|| {
                    format!("A Webhook service endpoint with authtype {authtype} ({kind}) needs an 'authvalue' of the form <settings><setting name=\"...\" value=\"...\" /></settings>.")
                })?;
                let pairs = settings(xml).map_err(|problem| {
                    format!("The 'authvalue' of an {kind} endpoint is not a <settings> list: {problem}.")
                })?;
                if pairs.is_empty() {
                    return Err(format!(
                        "The 'authvalue' of an {kind} endpoint has no <setting>."
                    ));
                }
                if authtype == 5 {
                    for (name, value) in &pairs {
                        if HeaderName::from_bytes(name.as_bytes()).is_err() {
                            return Err(format!("'{name}' is not an HTTP header name."));
                        }
                        if HeaderValue::from_str(value).is_err() {
                            return Err(format!("The value of the header '{name}' cannot be sent in an HTTP header."));
                        }
                    }
                    Ok(Auth::Headers(pairs))
                } else {
                    Ok(Auth::Query(pairs))
                }
            }
            other => Err(format!(
                "A Webhook service endpoint's 'authtype' must be 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString), not {other}."
            )),
        }
    }

    fn kind(&self) -> AuthType {
        match self {
            Auth::Key(_) => AuthType::WebhookKey,
            Auth::Headers(_) => AuthType::HttpHeader,
            Auth::Query(_) => AuthType::HttpQueryString,
        }
    }

    /// The names the auth adds, which the log may show.
    fn names(&self) -> Vec<String> {
        match self {
            Auth::Key(_) => vec!["code".to_owned()],
            Auth::Headers(pairs) | Auth::Query(pairs) => {
                pairs.iter().map(|(n, _)| n.clone()).collect()
            }
        }
    }
}

/// Reads `<settings><setting name="a" value="b" />...</settings>`, the list the `HttpHeader` and
/// `HttpQueryString` auth types keep in `authvalue`. The error says where it went wrong, without
/// quoting it.
pub fn settings(xml: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Cursor(xml.trim());
    p.open("settings")?;
    let mut pairs = Vec::new();
    loop {
        p.skip_space();
        if p.eat("</settings") {
            p.skip_space();
            p.expect(">")?;
            if !p.0.trim().is_empty() {
                return Err("text follows </settings>".into());
            }
            return Ok(pairs);
        }
        if !p.eat("<setting") || !p.0.starts_with(|c: char| c.is_whitespace() || c == '/') {
            return Err("expected <setting .../> or </settings>".into());
        }
        let (mut name, mut value) = (None, None);
        loop {
            p.skip_space();
            if p.eat("/>") {
                break;
            }
            if p.eat(">") {
                p.skip_space();
                p.expect("</setting")?;
                p.skip_space();
                p.expect(">")?;
                break;
            }
            let (attribute, text) = p.attribute()?;
            match attribute {
                "name" => name = Some(text),
                "value" => value = Some(text),
                _ => {}
            }
        }
        match (name, value) {
            (Some(n), Some(v)) if !n.is_empty() => pairs.push((n, v)),
            _ => return Err("a <setting> needs a name and a value".into()),
        }
    }
}

struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        self.0 = self.0.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        match self.0.strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected {token}"))
        }
    }

    fn open(&mut self, tag: &str) -> Result<(), String> {
        self.expect(&format!("<{tag}"))?;
        self.skip_space();
        self.expect(">")
    }

    /// `name="text"` or `name='text'`, the text unescaped.
    fn attribute(&mut self) -> Result<(&'a str, String), String> {
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')))
            .unwrap_or(self.0.len());
        if end == 0 {
            return Err("expected an attribute".into());
        }
        let name = &self.0[..end];
        self.0 = &self.0[end..];
        self.skip_space();
        self.expect("=")?;
        self.skip_space();
        let quote = self
            .0
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
            .ok_or("an attribute value must be quoted")?;
        let body = &self.0[1..];
        let close = body.find(quote).ok_or("an attribute value is not closed")?;
        let text = unescape(&body[..close])?;
        self.0 = &body[close + 1..];
        Ok((name, text))
    }
}

/// XML's five named entities and character references.
fn unescape(raw: &str) -> Result<String, String> {
    if raw.contains('<') {
        return Err("'<' inside an attribute value".into());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("an '&' that starts no entity")?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32).ok_or("an unknown entity")?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An endpoint `url` as a delivery address: absolute, `http` or `https`.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("is not an absolute URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some() => Ok(parsed),
        "http" | "https" => Err("has no host".into()),
        _ => Err("must be http or https".into()),
    }
}

/// `https` anywhere, `http` only on loopback.
fn allowed(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
                || host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .and_then(|h| h.parse::<Ipv6Addr>().ok())
                    .is_some_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Where and how a step delivers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub auth: Result<Auth, String>,
}

/// An image a step asked for.
#[derive(Debug, Clone)]
pub struct Image {
    pub alias: String,
    pub pre: bool,
    pub post: bool,
    /// The columns to send; `None` for all of them.
    pub columns: Option<Vec<usize>>,
}

/// An enabled asynchronous post-operation step a change reaches.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: Uuid,
    pub name: String,
    pub rank: i64,
    pub endpoint: Endpoint,
    pub images: Vec<Image>,
}

/// The steps `change` fires, by rank: enabled (`statecode` 0), asynchronous, post-operation, for
/// its message on its table, and for an update whose `filteringattributes` are empty or name a
/// column the request set.
pub fn matching_steps(store: &Store, change: &Change) -> Vec<Step> {
    let Some(s) = store.by_logical(STEP) else {
        return Vec::new();
    };
    let steps = &store.tables[s];
    let def = &steps.def;
    let table = &store.tables[change.table].def;
    let read = |row: &[serde_json::Value], name: &str| {
        def.column(name)
            .map_or(serde_json::Value::Null, |c| row[c].clone())
    };
    let id_of = |row: &[serde_json::Value], name: &str| {
        read(row, name)
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    let set: Vec<&str> = change
        .set
        .iter()
        .map(|(c, _)| table.columns[*c].attribute())
        .collect();
    let mut found = Vec::new();
    for (id, row) in steps.rows.iter() {
        let cells = row.cells.as_slice();
        let enabled = read(cells, "statecode").as_i64() == Some(0)
            && read(cells, "mode").as_i64() == Some(ASYNCHRONOUS)
            && read(cells, "stage").as_i64() == Some(POST_OPERATION);
        let for_message = id_of(cells, "_sdkmessageid_value")
            .and_then(|m| registration::message_by_id(store, m))
            == Some(change.message);
        let for_table = id_of(cells, "_sdkmessagefilterid_value")
            .and_then(|f| registration::filter(store, f))
            .is_some_and(|(_, t)| t == table.logical_name);
        if !(enabled && for_message && for_table) {
            continue;
        }
        if change.message == Message::Update {
            let wanted = split_list(read(cells, "filteringattributes").as_str().unwrap_or(""));
            if !wanted.is_empty() && !wanted.iter().any(|w| set.contains(&w.as_str())) {
                continue;
            }
        }
        let Some(endpoint) = id_of(cells, "_eventhandler_value").and_then(|e| endpoint(store, e))
        else {
            continue;
        };
        found.push(Step {
            id,
            name: read(cells, "name").as_str().unwrap_or_default().to_owned(),
            rank: read(cells, "rank").as_i64().unwrap_or(1),
            endpoint,
            images: images(store, id, change.table),
        });
    }
    found.sort_by_key(|s| s.rank);
    found
}

fn endpoint(store: &Store, id: Uuid) -> Option<Endpoint> {
    let t = store.by_logical(registration::ENDPOINT)?;
    let table = &store.tables[t];
    let row = table.rows.get(&id)?;
    let read = |name: &str| table.def.column(name).map(|c| &row.cells[c]);
    let url = read("url")?.as_str().unwrap_or_default().to_owned();
    let authtype = read("authtype")?.as_i64().unwrap_or(0);
    Some(Endpoint {
        id,
        url,
        auth: Auth::new(authtype, store.secrets.get(&id).map(String::as_str)),
    })
}

fn images(store: &Store, step: Uuid, business: usize) -> Vec<Image> {
    let Some(t) = store.by_logical(IMAGE) else {
        return Vec::new();
    };
    let table = &store.tables[t];
    let def = &table.def;
    let business = &store.tables[business].def;
    let wanted = step.to_string();
    let mut found = Vec::new();
    for row in table.rows.values() {
        let read = |name: &str| def.column(name).map(|c| &row.cells[c]);
        if read("_sdkmessageprocessingstepid_value").and_then(|v| v.as_str())
            != Some(wanted.as_str())
        {
            continue;
        }
        let kind = read("imagetype").and_then(serde_json::Value::as_i64);
        let listed = read("attributes")
            .and_then(|v| v.as_str())
            .map(split_list)
            .filter(|names| !names.is_empty());
        found.push(Image {
            alias: read("entityalias")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            pre: matches!(kind, Some(0 | 2)),
            post: matches!(kind, Some(1 | 2)),
            // In the table's order, as an image of all columns has them.
            columns: listed.map(|names| {
                let mut columns: Vec<usize> =
                    names.iter().filter_map(|n| business.attribute(n)).collect();
                columns.sort_unstable();
                columns.dedup();
                columns
            }),
        });
    }
    found
}

/// One delivery in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Also its `x-request-id`, the same on every attempt.
    pub id: Uuid,
    pub step: Uuid,
    pub endpoint: Uuid,
    pub message: Message,
    /// The table's logical name.
    pub table: String,
    pub row: Uuid,
    /// The endpoint's `url`, without what the auth adds.
    pub url: String,
    pub auth: Option<AuthType>,
    /// The header or query parameter names the auth adds (never their values).
    pub auth_names: Vec<String>,
    pub size_exceeded: bool,
    pub state: DeliveryState,
    /// When the change was made, by the emulator's clock.
    pub queued_at: String,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// One try: the status the endpoint answered, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the try ended, by the emulator's clock.
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// `GET /_emulator/webhooks/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryLog {
    /// Oldest first.
    pub deliveries: Vec<Delivery>,
    /// How many are still pending (in flight or waiting to retry).
    pub pending: usize,
    /// A `wait=true` request gave up waiting with deliveries still pending.
    pub timed_out: bool,
}

/// A delivery to run: everything it needs, taken under the lock when the change was made.
#[derive(Debug)]
pub struct Job {
    id: Uuid,
    url: Result<Url, String>,
    headers: Vec<(String, String)>,
    body: Bytes,
    attempts: u32,
    backoff: Duration,
    http: Option<reqwest::Client>,
}

/// The deliveries and how they are made.
#[derive(Debug)]
pub struct Webhooks {
    log: Vec<Delivery>,
    /// Tries in all for a delivery whose failures are worth retrying.
    attempts: u32,
    /// The wait before the first retry; each later one waits twice as long as the one before.
    backoff: Duration,
    http: Option<reqwest::Client>,
    /// Bumped whenever a delivery is queued or settles, for those waiting on the log.
    changed: Arc<watch::Sender<u64>>,
}

impl Webhooks {
    pub fn new(attempts: u32, backoff: Duration) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .ok();
        Self {
            log: Vec::new(),
            attempts: attempts.max(1),
            backoff,
            http,
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Logs a delivery of `built` to `step` as pending and returns the job that makes it.
    pub fn queue(
        &mut self,
        store: &Store,
        change: &Change,
        step: &Step,
        built: Built,
        correlation: Uuid,
        organization: &str,
    ) -> Job {
        let id = Uuid::new_v4();
        let table = store.tables[change.table].def.logical_name.clone();
        let endpoint = &step.endpoint;
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-request-id".to_owned(), id.to_string()),
            (
                "x-ms-dynamics-organization".to_owned(),
                organization.to_owned(),
            ),
            ("x-ms-dynamics-entity-name".to_owned(), table.clone()),
            (
                "x-ms-dynamics-request-name".to_owned(),
                change.message.name().to_owned(),
            ),
            (
                "x-ms-correlation-request-id".to_owned(),
                correlation.to_string(),
            ),
        ];
        if built.size_exceeded {
            headers.push((
                "x-ms-dynamics-msg-size-exceeded".to_owned(),
                "true".to_owned(),
            ));
        }
        let url = endpoint.auth.clone().and_then(|auth| {
            let mut url =
                parse_url(&endpoint.url).map_err(|p| format!("the endpoint's url {p}"))?;
            match auth {
                Auth::Key(key) => {
                    url.query_pairs_mut().append_pair("code", &key);
                }
                Auth::Query(pairs) => {
                    let mut query = url.query_pairs_mut();
                    for (name, value) in &pairs {
                        query.append_pair(name, value);
                    }
                }
                Auth::Headers(pairs) => headers.extend(pairs),
            }
            Ok(url)
        });
        self.log.push(Delivery {
            id,
            step: step.id,
            endpoint: endpoint.id,
            message: change.message,
            table,
            row: change.id,
            url: endpoint.url.clone(),
            auth: endpoint.auth.as_ref().ok().map(Auth::kind),
            auth_names: endpoint.auth.as_ref().map(Auth::names).unwrap_or_default(),
            size_exceeded: built.size_exceeded,
            state: DeliveryState::Pending,
            queued_at: clock::format_utc(change.at),
            attempts: Vec::new(),
        });
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        Job {
            id,
            url,
            headers,
            body: Bytes::from(built.body),
            attempts: self.attempts,
            backoff: self.backoff,
            http: self.http.clone(),
        }
    }

    /// The log, oldest first.
    pub fn log(&self, timed_out: bool) -> DeliveryLog {
        DeliveryLog {
            deliveries: self.log.clone(),
            pending: self.pending(),
            timed_out,
        }
    }

    pub fn pending(&self) -> usize {
        self.log
            .iter()
            .filter(|d| d.state == DeliveryState::Pending)
            .count()
    }

    /// Forgets settled deliveries. Pending ones stay until they settle, so a cleared log still
    /// shows what is in flight and waiting on it still waits for them.
    pub fn forget_settled(&mut self) {
        self.log.retain(|d| d.state == DeliveryState::Pending);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn settle(&mut self, id: Uuid, attempt: Attempt, state: DeliveryState) {
        if let Some(delivery) = self.log.iter_mut().find(|d| d.id == id) {
            delivery.attempts.push(attempt);
            delivery.state = state;
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What one try came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Failed { error: String, retryable: bool },
}

/// What to do after try number `attempt` (from 1) of at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Delivered,
    Retry,
    GiveUp,
}

fn next(outcome: &Outcome, attempt: u32, max: u32) -> Next {
    let retryable = match outcome {
        Outcome::Status(status) if (200..300).contains(status) => return Next::Delivered,
        Outcome::Status(status) => matches!(status, 502..=504),
        Outcome::Failed { retryable, .. } => *retryable,
    };
    if retryable && attempt < max {
        Next::Retry
    } else {
        Next::GiveUp
    }
}

/// The wait before retry number `retry` (from 1): `first`, then twice as long each time.
fn backoff(first: Duration, retry: u32) -> Duration {
    let factor = 1_u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// Makes a delivery: tries, retries, and records each try in the log.
pub async fn run(shared: Shared, job: Job) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = send(&job).await;
        let decision = next(&outcome, attempt, job.attempts);
        {
            let mut em = lock(&shared);
            let at = clock::format_utc(em.store.clock.now());
            let record = match &outcome {
                Outcome::Status(status) => Attempt {
                    at,
                    status: Some(*status),
                    error: None,
                },
                Outcome::Failed { error, .. } => Attempt {
                    at,
                    status: None,
                    error: Some(error.clone()),
                },
            };
            let state = match decision {
                Next::Delivered => DeliveryState::Delivered,
                Next::Retry => DeliveryState::Pending,
                Next::GiveUp => DeliveryState::Failed,
            };
            em.webhooks.settle(job.id, record, state);
        }
        if decision != Next::Retry {
            return;
        }
        tokio::time::sleep(backoff(job.backoff, attempt)).await;
    }
}

async fn send(job: &Job) -> Outcome {
    let refuse = |error: String| Outcome::Failed {
        error,
        retryable: false,
    };
    let url = match &job.url {
        Ok(url) => url,
        Err(problem) => return refuse(problem.clone()),
    };
    if !allowed(url) {
        return refuse(
            "the emulator delivers only to https, or to http on localhost or a loopback address"
                .to_owned(),
        );
    }
    let Some(http) = &job.http else {
        return refuse("the emulator could not build its HTTP client".to_owned());
    };
    let mut request = http.post(url.clone()).body(job.body.clone());
    for (name, value) in &job.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send().await {
        Ok(response) => Outcome::Status(response.status().as_u16()),
        Err(error) => {
            let retryable = error.is_timeout() || error.is_connect() || error.is_request();
            let described = if error.is_timeout() {
                format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
            } else {
                describe(&error)
            };
            Outcome::Failed {
                error: described,
                retryable: retryable && !error.is_builder(),
            }
        }
    }
}

/// An error and its causes, without the URL (which may carry `?code=`).
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&e.to_string());
        cause = e.source();
    }
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_builder() {
        "cannot build the request"
    } else {
        "the request failed"
    };
    if text.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {text}")
    }
}

/// Waits until no delivery is pending, or `limit` has passed; true when none is.
pub async fn wait_idle(shared: &Shared, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    // Subscribe before looking, so a delivery settling in between still wakes this up.
    let mut changes = lock(shared).webhooks.changed.subscribe();
    loop {
        if lock(shared).webhooks.pending() == 0 {
            return true;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return lock(shared).webhooks.pending() == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_lists_and_refuses_broken_ones() {
        assert_eq!(
            settings(
                r#"<settings><setting name="x-crm-webhook-key" value="a&amp;b" /></settings>"#
            ),
            Ok(vec![("x-crm-webhook-key".into(), "a&b".into())])
        );
        assert_eq!(
            settings(
                "  <settings>\n <setting value='2' name='b'/><setting name=\"c\" value=\"&#x41;&#66;\"></setting></settings> "
            ),
            Ok(vec![("b".into(), "2".into()), ("c".into(), "AB".into())])
        );
        assert_eq!(settings("<settings></settings>"), Ok(vec![]));
        for broken in [
            "the-key",
            "<settings><setting name=\"a\" /></settings>",
            "<settings><setting name=\"a\" value=\"b\" />",
            "<settings><setting name=a value=b /></settings>",
            "<settings><setting name=\"a\" value=\"&bogus;\" /></settings>",
            "<settings><setting name=\"a\" value=\"b\" /></settings>tail",
            "<settings><settingx name=\"a\" value=\"b\" /></settings>",
        ] {
            assert!(settings(broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn each_auth_type_reads_its_value_and_the_others_are_refused() {
        assert_eq!(Auth::new(4, Some("k")), Ok(Auth::Key("k".into())));
        assert!(Auth::new(4, Some(" ")).is_err());
        let xml = r#"<settings><setting name="x-key" value="v" /></settings>"#;
        assert_eq!(
            Auth::new(5, Some(xml)),
            Ok(Auth::Headers(vec![("x-key".into(), "v".into())]))
        );
        assert_eq!(
            Auth::new(6, Some(xml)),
            Ok(Auth::Query(vec![("x-key".into(), "v".into())]))
        );
        let bad_header = r#"<settings><setting name="bad header" value="v" /></settings>"#;
        assert!(Auth::new(5, Some(bad_header)).is_err());
        assert!(Auth::new(6, Some(bad_header)).is_ok());
        let message = Auth::new(2, Some("secret")).unwrap_err();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn only_https_and_loopback_http_are_reached() {
        for url in [
            "https://example.com/hook",
            "http://127.0.0.1:9/x",
            "http://127.1.2.3/x",
            "http://localhost:8/x",
            "http://[::1]:7/x",
        ] {
            assert!(allowed(&parse_url(url).unwrap()), "{url}");
        }
        for url in [
            "http://example.com/x",
            "http://10.0.0.1/x",
            "http://[::2]/x",
        ] {
            assert!(!allowed(&parse_url(url).unwrap()), "{url}");
        }
        assert!(parse_url("ftp://example.com").is_err());
        assert!(parse_url("/relative").is_err());
    }

    #[test]
    fn gateway_errors_and_lost_connections_are_retried_until_the_attempts_run_out() {
        let lost = Outcome::Failed {
            error: "x".into(),
            retryable: true,
        };
        assert_eq!(next(&Outcome::Status(204), 1, 2), Next::Delivered);
        for retried in [
            Outcome::Status(502),
            Outcome::Status(503),
            Outcome::Status(504),
            lost,
        ] {
            assert_eq!(next(&retried, 1, 2), Next::Retry);
            assert_eq!(next(&retried, 2, 2), Next::GiveUp);
        }
        for final_status in [400, 401, 404, 500, 302] {
            assert_eq!(next(&Outcome::Status(final_status), 1, 5), Next::GiveUp);
        }
        let refused = Outcome::Failed {
            error: "x".into(),
            retryable: false,
        };
        assert_eq!(next(&refused, 1, 5), Next::GiveUp);
    }

    #[test]
    fn backoff_doubles_from_the_first_wait() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_millis(200));
        assert_eq!(backoff(first, 4), Duration::from_millis(800));
        assert_eq!(backoff(first, 200), Duration::from_secs(3600));
    }
}
