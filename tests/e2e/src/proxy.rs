//! A fault-injecting HTTP proxy between a function and moto.
//!
//! Restarting moto to make an AWS call fail would lose its in-memory tables, buses and queues, so the
//! suites point the function's `AWS_ENDPOINT_URL` at this proxy instead, and tell it which calls to
//! hold, delay, drop or answer falsely. Calls are recognised by their `X-Amz-Target` header (the AWS
//! JSON protocols name the operation there), and a [`Rule`] counts the calls it matches, so "the second
//! `UpdateItem`" is expressible without parsing bodies.
//!
//! ```no_run
//! # async fn example(moto: &e2e_tests::Moto) -> std::io::Result<()> {
//! use e2e_tests::proxy::{Fault, Operation, Proxy, Rule};
//! let proxy = Proxy::start(&moto.url).await?;
//! // Let the lease request through, then never answer any later `UpdateItem`.
//! proxy.add(Rule::new(Operation::UpdateItem, Fault::Hold).after(1));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Moto;

/// An AWS operation, as its `X-Amz-Target` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    UpdateItem,
    GetItem,
    PutItem,
    DeleteItem,
    BatchGetItem,
    BatchWriteItem,
    Query,
    Scan,
    PutEvents,
}

impl Operation {
    const ALL: [Operation; 9] = [
        Operation::UpdateItem,
        Operation::GetItem,
        Operation::PutItem,
        Operation::DeleteItem,
        Operation::BatchGetItem,
        Operation::BatchWriteItem,
        Operation::Query,
        Operation::Scan,
        Operation::PutEvents,
    ];

    /// The `X-Amz-Target` header value of a call to this operation.
    pub fn target(self) -> &'static str {
        match self {
            Operation::UpdateItem => "DynamoDB_20120810.UpdateItem",
            Operation::GetItem => "DynamoDB_20120810.GetItem",
            Operation::PutItem => "DynamoDB_20120810.PutItem",
            Operation::DeleteItem => "DynamoDB_20120810.DeleteItem",
            Operation::BatchGetItem => "DynamoDB_20120810.BatchGetItem",
            Operation::BatchWriteItem => "DynamoDB_20120810.BatchWriteItem",
            Operation::Query => "DynamoDB_20120810.Query",
            Operation::Scan => "DynamoDB_20120810.Scan",
            Operation::PutEvents => "AWSEvents.PutEvents",
        }
    }

    fn from_target(target: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.target() == target)
    }
}

/// What happens to a call a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never forwarded, never answered: the call hangs until the caller gives up or the proxy stops.
    Hold,
    /// Forwarded after this long.
    Delay(Duration),
    /// The connection is closed before the call is forwarded: it never reaches moto.
    Drop,
    /// Forwarded, so moto applies it, and then the connection is closed without the answer: the
    /// caller cannot tell whether it happened.
    LoseAnswer,
}

/// Which calls get a fault: those to `operation`, after the first `after` of them, at most `times`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    operation: Operation,
    fault: Fault,
    after: usize,
    times: Option<usize>,
}

impl Rule {
    /// Every call to `operation` gets `fault`.
    pub fn new(operation: Operation, fault: Fault) -> Self {
        Self {
            operation,
            fault,
            after: 0,
            times: None,
        }
    }

    /// The first `calls` matching calls (counted from when the rule is added) pass untouched.
    pub fn after(mut self, calls: usize) -> Self {
        self.after = calls;
        self
    }

    /// At most `calls` calls get the fault; later ones pass.
    pub fn times(mut self, calls: usize) -> Self {
        self.times = Some(calls);
        self
    }
}

#[derive(Debug)]
struct Active {
    rule: Rule,
    matched: usize,
    applied: usize,
}

impl Active {
    /// Counts a matching call, and says whether it gets the fault.
    fn pick(&mut self) -> bool {
        let index = self.matched;
        self.matched = self.matched.saturating_add(1);
        let due = index >= self.rule.after && self.rule.times.is_none_or(|t| self.applied < t);
        if due {
            self.applied = self.applied.saturating_add(1);
        }
        due
    }
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Active>>,
    calls: Mutex<HashMap<Operation, usize>>,
    faulted: Mutex<HashMap<Operation, usize>>,
}

impl Shared {
    /// Records a call and returns the fault of the first rule that picks it. Every matching rule counts
    /// the call, so each rule's `after` counts calls, not calls left over by other rules.
    fn decide(&self, operation: Option<Operation>) -> Option<Fault> {
        let operation = operation?;
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(operation)
            .or_default() += 1;
        let mut fault = None;
        for active in self
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .filter(|a| a.rule.operation == operation)
        {
            if active.pick() && fault.is_none() {
                fault = Some(active.rule.fault);
            }
        }
        if fault.is_some() {
            *self
                .faulted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(operation)
                .or_default() += 1;
        }
        fault
    }
}

/// The proxy, listening on a free loopback port until dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    /// Dropped with the proxy: held calls see it and close their connections.
    _stop: watch::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream` (moto's URL).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            faulted: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = watch::channel(());
        let serving = shared.clone();
        // A fault closes the connection by failing the call: the error is the point.
        let server = crate::serve(listener, move |req| {
            handle(serving.clone(), stopped.clone(), req)
        });
        Ok(Self {
            address,
            url: format!("http://{address}"),
            shared,
            _stop: stop,
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `moto`'s environment for a function, with the SDK's endpoint pointed at this proxy.
    pub fn env(&self, moto: &Moto) -> Vec<(String, String)> {
        moto.env()
            .into_iter()
            .map(|(k, v)| {
                if k == "AWS_ENDPOINT_URL" {
                    (k, self.url.clone())
                } else {
                    (k, v)
                }
            })
            .collect()
    }

    /// Adds a rule; it counts matching calls from now on.
    pub fn add(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Active {
                rule,
                matched: 0,
                applied: 0,
            });
    }

    /// Removes every rule (calls already held stay held).
    pub fn clear(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many calls to `operation` arrived, faulted or not.
    pub fn calls(&self, operation: Operation) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&operation)
            .copied()
            .unwrap_or(0)
    }

    /// How many calls to `operation` got a fault.
    pub fn faulted(&self, operation: Operation) -> usize {
        self.shared
            .faulted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&operation)
            .copied()
            .unwrap_or(0)
    }
}

/// Why the proxy closed a connection without answering.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("closed on purpose ({0:?})")]
    Fault(Fault),
    #[error("the proxy stopped")]
    Stopped,
    #[error("reading the call: {0}")]
    Read(#[source] hyper::Error),
    #[error("forwarding to moto: {0}")]
    Upstream(#[source] reqwest::Error),
}

async fn handle(
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let operation = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(Operation::from_target);
    let fault = shared.decide(operation);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(Closed::Read)?.to_bytes();
    match fault {
        Some(Fault::Hold) => {
            // Resolves only when the proxy is dropped (the sender goes away).
            let _ = stopped.changed().await;
            return Err(Closed::Stopped);
        }
        Some(Fault::Drop) => return Err(Closed::Fault(Fault::Drop)),
        Some(Fault::Delay(wait)) => {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => return Err(Closed::Stopped),
            }
        }
        Some(Fault::LoseAnswer) | None => {}
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let mut request = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        // reqwest sets these for the new connection; the signature does not matter to moto.
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.map_err(Closed::Upstream)?;
    if fault == Some(Fault::LoseAnswer) {
        return Err(Closed::Fault(Fault::LoseAnswer));
    }
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(Closed::Upstream)?;
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            response.headers_mut().append(name, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_lets_the_first_calls_through_and_stops_after_its_count() {
        let mut active = Active {
            rule: Rule::new(Operation::UpdateItem, Fault::Hold)
                .after(1)
                .times(2),
            matched: 0,
            applied: 0,
        };
        let picks: Vec<bool> = (0..5).map(|_| active.pick()).collect();
        assert_eq!(picks, [false, true, true, false, false]);
    }

    #[test]
    fn operations_are_recognised_by_their_target_header() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_target(op.target()), Some(op));
        }
        assert_eq!(Operation::from_target("AmazonSQS.ReceiveMessage"), None);
    }
}
