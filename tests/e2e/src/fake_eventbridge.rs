//! A fake EventBridge that answers `PutEvents` only, slowly on purpose, and refuses chosen entries.
//!
//! moto answers in a millisecond and accepts everything, so it cannot show how many calls a trigger
//! keeps in flight, or what happens when EventBridge fails one entry of a batch while the batches around
//! it succeed. This endpoint speaks the wire protocol the SDK uses for EventBridge (AWS JSON 1.1: a
//! `POST` with `X-Amz-Target: AWSEvents.PutEvents`, answered with `FailedEntryCount` and one result per
//! entry, in request order), holds each call for a set latency, refuses the entries its [`Refuse`]
//! rules pick with an `ErrorCode` and `ErrorMessage`, and records every entry it received and the most
//! calls it held at once.
//!
//! A function reaches it through the SDK's service-specific endpoint variable,
//! `AWS_ENDPOINT_URL_EVENTBRIDGE` ([`FakeEventBridge::env`]).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use e2e_tests::fake_eventbridge::{FakeEventBridge, Refuse};
//! let fake = FakeEventBridge::start(Duration::from_millis(25)).await?;
//! // Refuse one event twice, then take it.
//! fake.refuse(Refuse::event_id("1f0c5e3a9b2d4c6e8f00112233445566").times(2));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The `X-Amz-Target` of a `PutEvents` call.
const PUT_EVENTS: &str = "AWSEvents.PutEvents";
/// EventBridge's limit on one call's entries: 256 KB.
const REQUEST_LIMIT: usize = 256 * 1024;

/// Which entries a [`Refuse`] rule picks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pick {
    /// Entries whose detail (a JSON object) has `field` equal to the string `value`: `event_id`, or
    /// `id` for a row.
    Detail { field: String, value: String },
    /// The entry at `position` (from 0) of the `call`th call (from 0, in the order calls arrived).
    Position { call: usize, position: usize },
    /// Every entry of the `call`th call.
    Call(usize),
}

/// Refuses the entries `pick` chooses, with `code` and `message`, at most `times` times (forever
/// without a count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pick: Pick,
    code: String,
    message: String,
    times: Option<usize>,
}

impl Refuse {
    pub fn new(pick: Pick) -> Self {
        Self {
            pick,
            code: "InternalFailure".into(),
            message: "refused by the test".into(),
            times: None,
        }
    }

    /// The entries carrying this `event_id`.
    pub fn event_id(event_id: &str) -> Self {
        Self::detail("event_id", event_id)
    }

    /// The entries whose detail has `field` equal to `value`.
    pub fn detail(field: &str, value: &str) -> Self {
        Self::new(Pick::Detail {
            field: field.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The entry at `position` of the `call`th call (both from 0).
    pub fn position(call: usize, position: usize) -> Self {
        Self::new(Pick::Position { call, position })
    }

    /// The error code and message the refused entries carry.
    pub fn code(mut self, code: &str, message: &str) -> Self {
        code.clone_into(&mut self.code);
        message.clone_into(&mut self.message);
        self
    }

    /// At most `entries` refusals; entries picked after that are taken.
    pub fn times(mut self, entries: usize) -> Self {
        self.times = Some(entries);
        self
    }

    fn picks(&self, call: usize, position: usize, detail: &Value) -> bool {
        match &self.pick {
            Pick::Detail { field, value } => detail[field.as_str()].as_str() == Some(value),
            Pick::Position {
                call: c,
                position: p,
            } => (*c, *p) == (call, position),
            Pick::Call(c) => *c == call,
        }
    }
}

#[derive(Debug)]
struct Active {
    rule: Refuse,
    applied: usize,
}

/// One entry of one call, as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Which call (from 0, in the order calls arrived) and where in it (from 0).
    pub call: usize,
    pub position: usize,
    pub bus: String,
    pub source: String,
    pub detail_type: String,
    /// The detail, parsed (`Null` if it was not JSON).
    pub detail: Value,
    /// `None` when accepted, or the `ErrorCode` it was refused with.
    pub refused: Option<String>,
}

impl Received {
    pub fn event_id(&self) -> &str {
        self.detail["event_id"].as_str().unwrap_or_default()
    }

    /// The row id the event is about.
    pub fn row_id(&self) -> &str {
        self.detail["id"].as_str().unwrap_or_default()
    }

    pub fn accepted(&self) -> bool {
        self.refused.is_none()
    }
}

#[derive(Debug, Default)]
struct Shared {
    latency: Mutex<Duration>,
    rules: Mutex<Vec<Active>>,
    received: Mutex<Vec<Received>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    /// Numbers a call, records its entries and decides each one: the answer's `Entries`.
    fn take(&self, entries: &[Value]) -> Vec<Value> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        let mut answers = Vec::with_capacity(entries.len());
        for (position, entry) in entries.iter().enumerate() {
            let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
            let detail = serde_json::from_str(entry["Detail"].as_str().unwrap_or_default())
                .unwrap_or(Value::Null);
            // The first rule that picks the entry and has refusals left refuses it.
            let refusal = rules
                .iter_mut()
                .find(|a| {
                    a.rule.picks(call, position, &detail)
                        && a.rule.times.is_none_or(|t| a.applied < t)
                })
                .map(|active| {
                    active.applied = active.applied.saturating_add(1);
                    (active.rule.code.clone(), active.rule.message.clone())
                });
            answers.push(match &refusal {
                None => json!({"EventId": uuid::Uuid::new_v4().to_string()}),
                Some((code, message)) => json!({"ErrorCode": code, "ErrorMessage": message}),
            });
            received.push(Received {
                call,
                position,
                bus: text("EventBusName"),
                source: text("Source"),
                detail_type: text("DetailType"),
                detail,
                refused: refusal.map(|(code, _)| code),
            });
        }
        answers
    }
}

/// Counts a call in flight for as long as it is held, even when the caller hangs up first.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake, listening on a free loopback port until dropped.
#[derive(Debug)]
pub struct FakeEventBridge {
    address: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEventBridge {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEventBridge {
    /// Starts a fake that holds every call for `latency` before answering.
    pub async fn start(latency: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            latency: Mutex::new(latency),
            ..Shared::default()
        });
        let serving = shared.clone();
        let server = crate::serve(listener, move |req| handle(serving.clone(), req));
        Ok(Self {
            address,
            url: format!("http://{address}"),
            shared,
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What a function needs to publish here: the EventBridge endpoint, and a region and credentials
    /// for the SDK to sign with (the fake does not check them).
    pub fn env(&self) -> Vec<(String, String)> {
        crate::aws_env("AWS_ENDPOINT_URL_EVENTBRIDGE", &self.url)
    }

    /// How long each later call is held before its answer.
    pub fn set_latency(&self, latency: Duration) {
        *self
            .shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = latency;
    }

    /// Adds a refusal rule; rules are tried in the order added.
    pub fn refuse(&self, rule: Refuse) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Active { rule, applied: 0 });
    }

    /// Removes every refusal rule: from now on every entry is accepted.
    pub fn clear(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Every entry received so far, accepted or refused, in the order the fake decided on them.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The entries accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .collect()
    }

    /// `PutEvents` calls received so far.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// The most `PutEvents` calls held at once since the start (or the last reset).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts counting the most calls at once afresh.
    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }
}

/// An AWS JSON 1.1 answer: the body, and the request id the SDK reads from the headers.
fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(id) = uuid::Uuid::new_v4().to_string().parse() {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// An error as the AWS JSON protocols carry it: the code in `__type`.
fn error(code: &str, message: &str) -> Response<Full<Bytes>> {
    answer(
        StatusCode::BAD_REQUEST,
        &json!({"__type": code, "message": message}),
    )
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _held = InFlight::enter(&shared);
    let body = req.into_body().collect().await?.to_bytes();
    if target != PUT_EVENTS {
        return Ok(error(
            "UnknownOperationException",
            &format!("this fake answers {PUT_EVENTS} only, not '{target}'"),
        ));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return Ok(error("SerializationException", "the body is not JSON"));
    };
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    // EventBridge's own limit: the code under test must never send more.
    if entries.is_empty() || entries.len() > 10 {
        return Ok(error(
            "ValidationException",
            &format!("{} entries: a call carries 1 to 10", entries.len()),
        ));
    }
    // Sized as AWS documents it: source, detail type, detail, and 14 bytes for the time.
    let size: usize = entries
        .iter()
        .map(|e| {
            14 + ["Source", "DetailType", "Detail"]
                .iter()
                .map(|k| e[*k].as_str().map_or(0, str::len))
                .sum::<usize>()
        })
        .sum();
    if size > REQUEST_LIMIT {
        return Ok(error(
            "ValidationException",
            &format!("{size} bytes: a call carries at most {REQUEST_LIMIT}"),
        ));
    }
    let results = shared.take(&entries);
    let latency = *shared
        .latency
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    tokio::time::sleep(latency).await;
    let failed = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Ok(answer(
        StatusCode::OK,
        &json!({"FailedEntryCount": failed, "Entries": results}),
    ))
}
