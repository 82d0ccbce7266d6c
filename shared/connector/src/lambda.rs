//! The glue between `lambda_runtime` and a handler: logging, the payload, the deadline, start-up
//! errors, and each invocation's metrics.
//!
//! Every invocation that fails does so with a `Crm.*` error type, whatever bytes it carried: the
//! runtime is handed the payload as opaque JSON (see [`PayloadLayer`]), and this module parses it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataverse::Deadline;
use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::{Context, LambdaEvent, LambdaInvocation, Runtime, layers, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{ConfigError, CrmError, metrics};

/// Time kept back from the invocation's deadline to return the answer.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(300);

/// The time an invocation gets when the deadline it was given cannot be real (see [`serve`]).
pub const UNKNOWN_DEADLINE_BUDGET: Duration = Duration::from_secs(30);

/// JSON logs when `AWS_LAMBDA_LOG_FORMAT=JSON` (SAM's `LoggingConfig`), level from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The time left before the invocation's deadline (with nothing kept back), or `None` for a
/// context without a deadline (a unit test's `Context::default()`).
pub(crate) fn time_left(context: &Context) -> Option<Duration> {
    if context.deadline == 0 {
        return None;
    }
    Some(
        context
            .deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The invocation's deadline, less a margin to answer in. A context without one has no deadline.
pub fn deadline(context: &Context) -> Deadline {
    match time_left(context) {
        None => Deadline::none(),
        Some(left) => Deadline::after(left).less(ANSWER_MARGIN),
    }
}

/// What the runtime deserialises a payload into: the payload itself, untouched, or why the bytes
/// were not JSON. `lambda_runtime` parses the payload before any handler runs, and a failure there
/// carries an error type of its own (`&lambda_runtime::deserializer::DeserializeError`), which a
/// workflow catching `Crm.*` would miss. [`PayloadLayer`] wraps every body in one of these two
/// shapes, both of which always deserialise.
#[derive(Deserialize)]
enum Wrapped {
    /// Raw JSON: `serde_json` checks its syntax without nesting limits or string decoding, so any JSON
    /// document gets through, however deep and whatever its escapes.
    #[serde(rename = "p")]
    Payload(Box<RawValue>),
    #[serde(rename = "e")]
    NotJson(String),
}

/// A `tower` layer that wraps each invocation's body as a [`Wrapped`] before the runtime reads it.
#[derive(Debug, Clone, Copy)]
struct PayloadLayer;

impl<S> Layer<S> for PayloadLayer {
    type Service = PayloadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PayloadService(inner)
    }
}

#[derive(Debug, Clone)]
struct PayloadService<S>(S);

impl<S> Service<LambdaInvocation> for PayloadService<S>
where
    S: Service<LambdaInvocation>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        invocation.body = wrap(&invocation.body);
        self.0.call(invocation)
    }
}

/// `{"p": <body>}` when the body is JSON, else `{"e": "<why not>"}`.
fn wrap(body: &[u8]) -> bytes::Bytes {
    match serde_json::from_slice::<&RawValue>(body) {
        Ok(_) => {
            let mut wrapped = Vec::with_capacity(body.len() + 6);
            wrapped.extend_from_slice(b"{\"p\":");
            wrapped.extend_from_slice(body);
            wrapped.push(b'}');
            wrapped.into()
        }
        Err(e) => {
            let why = format!(
                "is not JSON ({} at line {}, column {})",
                classify(&e),
                e.line(),
                e.column()
            );
            // A JSON string's `Display` is its quoted, escaped form, and cannot fail.
            format!("{{\"e\":{}}}", serde_json::Value::String(why))
                .into_bytes()
                .into()
        }
    }
}

fn classify(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Io | serde_json::error::Category::Data => "unreadable",
    }
}

/// Parses the payload into JSON values, with our own error for what `serde_json` refuses: nesting
/// past its limit of 128, or a string with a lone surrogate (`"\ud800"`), both valid JSON text.
fn payload(wrapped: Wrapped) -> Result<Value, CrmError> {
    let raw = match wrapped {
        Wrapped::Payload(raw) => raw,
        Wrapped::NotJson(why) => return Err(CrmError::invalid("payload", why)),
    };
    serde_json::from_str(raw.get()).map_err(|e| {
        let text = e.to_string();
        let problem = if text.starts_with("recursion limit exceeded") {
            "is nested too deeply (more than 128 levels)".to_owned()
        } else if text.contains("hex escape") {
            format!(
                "has a \\u escape that is not a whole Unicode character, such as a lone surrogate (line {}, column {})",
                e.line(),
                e.column()
            )
        } else {
            format!(
                "cannot be read as JSON values: {} (line {}, column {})",
                serde_json_problem(&e),
                e.line(),
                e.column()
            )
        };
        CrmError::invalid("payload", problem)
    })
}

/// `serde_json`'s description of a problem, without the position it appends (given separately).
fn serde_json_problem(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Replaces a deadline that cannot be real with [`UNKNOWN_DEADLINE_BUDGET`] from now.
///
/// Lambda sends the deadline as epoch milliseconds, always after the invocation arrives.
/// `cargo lambda watch` (1.9.2) sends a constant 600000, a duration, which read as an epoch time is
/// 1970: every request would be abandoned before it was sent. A deadline before this process
/// started is therefore treated as unknown, reported once, and replaced.
fn sane_deadline(context: &mut Context, started_ms: u64, reported: &AtomicBool) {
    if context.deadline == 0 || context.deadline >= started_ms {
        return;
    }
    if !reported.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            deadline_ms = context.deadline,
            budget_s = UNKNOWN_DEADLINE_BUDGET.as_secs(),
            "the runtime sent a deadline before this process started; it is not a real one, so each invocation gets a fixed budget instead"
        );
    }
    context.deadline = epoch_ms(SystemTime::now() + UNKNOWN_DEADLINE_BUDGET);
}

/// `at` in milliseconds since the epoch, as Lambda gives its deadlines.
pub(crate) fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serves invocations with `handler`. Dependencies that failed to build (bad configuration) fail every
/// invocation with `Crm.Configuration`, which a workflow can catch, instead of crashing the runtime;
/// so do metrics settings that cannot work (`crate::metrics::settings`).
///
/// Each invocation ends with its metrics line on stdout, success or failure (see [`crate::metrics`]):
/// the handler records into a recorder of the invocation's own, and the Dataverse requests are the
/// difference in the process's client counters over the invocation (Lambda runs one invocation at a
/// time per process).
pub async fn serve<D, O>(
    deps: &Result<D, ConfigError>,
    handler: impl AsyncFn(&D, LambdaEvent<Value>) -> Result<O, CrmError>,
) -> Result<(), lambda_runtime::Error>
where
    O: Serialize,
{
    let handler = &handler;
    let started_ms = epoch_ms(SystemTime::now());
    let reported = &AtomicBool::new(false);
    let metrics = &metrics::settings();
    let service = service_fn(move |event: LambdaEvent<Wrapped>| async move {
        let (wrapped, mut context) = event.into_parts();
        sane_deadline(&mut context, started_ms, reported);
        let request_id = context.request_id.clone();
        let before = metrics::usage();
        let (result, recorded) = metrics::recording(async {
            match (deps, metrics, payload(wrapped)) {
                (Err(e), _, _) | (Ok(_), Err(e), _) => Err(CrmError::from(e.clone())),
                (Ok(_), Ok(_), Err(e)) => Err(e),
                // Boxed: a trigger's future nests the SDK clients' futures deeply enough to exceed
                // the compiler's layout depth, and is large; on the heap it is neither.
                (Ok(deps), Ok(_), Ok(payload)) => {
                    Box::pin(handler(deps, LambdaEvent::new(payload, context))).await
                }
            }
        })
        .await;
        if let Err(error) = &result {
            tracing::error!(error_type = error.error_type(), error = %error.message(), "invocation failed");
        }
        if let Ok(Some(settings)) = metrics {
            let report = metrics::Report {
                recorded,
                usage: metrics::usage().since(before),
                error_type: result.as_ref().err().map(CrmError::error_type),
                request_id: &request_id,
            };
            metrics::emit(settings, &report);
        }
        result
    });
    Runtime::new(service)
        .layer(layers::TracingLayer::new())
        .layer(PayloadLayer)
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> Result<Value, CrmError> {
        let wrapped: Wrapped = serde_json::from_slice(&wrap(body)).unwrap();
        payload(wrapped)
    }

    fn problem(body: &[u8]) -> String {
        match parse(body) {
            Err(CrmError::InvalidInput { field, problem }) => {
                assert_eq!(field, "payload");
                problem
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn passes_any_json_through_untouched() {
        let body = br#"{"dataset": "contoso", "n": [1, 2.5, null], "s": "\u00e9\n"}"#;
        assert_eq!(
            parse(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
        assert_eq!(parse(b"  7 ").unwrap(), Value::from(7));
    }

    #[test]
    fn refuses_what_serde_json_cannot_hold_as_invalid_input() {
        let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(problem(deep.as_bytes()).contains("nested too deeply"));
        let deeper = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(problem(deeper.as_bytes()).contains("nested too deeply"));
        assert!(problem(br#"{"table": "\ud800"}"#).contains("lone surrogate"));
        assert!(problem(b"not json").contains("is not JSON"));
        assert!(problem(b"{\"a\":").contains("ends too early"));
        assert!(problem(b"\xff\xfe").contains("is not JSON"));
        assert!(problem(b"{\"t\": \"\xff\"}").contains("is not JSON"));
    }

    #[test]
    fn replaces_a_deadline_from_before_the_process_started() {
        let reported = AtomicBool::new(false);
        let started = epoch_ms(SystemTime::now());
        let mut context = Context::default();
        context.deadline = 600_000;
        sane_deadline(&mut context, started, &reported);
        let left = time_left(&context).unwrap();
        assert!(left > Duration::from_secs(25), "{left:?}");
        assert!(reported.load(Ordering::Relaxed));

        let real = started + 5_000;
        let mut context = Context::default();
        context.deadline = real;
        sane_deadline(&mut context, started, &reported);
        assert_eq!(context.deadline, real, "a real deadline is kept");
    }
}
