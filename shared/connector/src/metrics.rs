//! CloudWatch metrics in the Embedded Metric Format (EMF), written through the function's logs:
//! `docs/metrics.md` is the contract (names, units, dimensions, when each is emitted).
//!
//! At the end of every invocation, [`crate::lambda::serve`] writes one JSON object, on one line of
//! stdout, that CloudWatch Logs turns into metrics. Nothing calls CloudWatch: the line is the whole
//! cost. The line is written directly, not through `tracing`, whose JSON layout would nest it inside
//! a log record where CloudWatch does not look for it.
//!
//! What goes in it:
//!
//! - the Dataverse client's counters ([`dataverse::Usage`]), as differences over the invocation: every
//!   client [`Crm`](crate::Crm) builds is [`track`]ed, so `serve` needs no access to the handler's
//!   dependencies;
//! - what the handler recorded with [`set`] (the trigger engine, the webhook receiver): each
//!   invocation runs inside its own recorder, a task-local value `serve` sets up, so handlers take no
//!   extra parameter;
//! - on failure, `Errors` = 1 with an `ErrorType` dimension (the `Crm.*` type).
//!
//! Every metric goes out under the dimension sets `[["FunctionName"], []]`: one series per function,
//! and one across all of them (an empty set is allowed by the specification), so that a single alarm
//! covers every function. `Errors` has `[["FunctionName", "ErrorType"], ["ErrorType"]]`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use dataverse::{Counters, Usage};
use serde::Serialize;

use crate::ConfigError;

/// The variable that names the namespace.
pub const NAMESPACE_VARIABLE: &str = "CRM_METRICS_NAMESPACE";
/// The variable that turns the metrics off (`off`) or on (`on`, the default).
pub const SWITCH_VARIABLE: &str = "CRM_METRICS";
/// The namespace when [`NAMESPACE_VARIABLE`] is not set.
pub const DEFAULT_NAMESPACE: &str = "DynamicsCrm";
/// The dimension naming the function.
pub const FUNCTION_DIMENSION: &str = "FunctionName";
/// The dimension of `Errors` naming the `Crm.*` type.
pub const ERROR_DIMENSION: &str = "ErrorType";

/// CloudWatch's limits, as the specification and `PutMetricData` state them.
const MAX_NAMESPACE_CHARS: usize = 255;
const MAX_DIMENSION_VALUE_CHARS: usize = 1024;

/// Every metric the functions emit. The names are a public API: alarms and dashboards are built on
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Requests sent to the Web API in this invocation (every attempt that went on the wire).
    DataverseRequests,
    /// 429 answers among them.
    Throttles,
    /// Attempts after a request's first.
    Retries,
    /// 1 when the invocation failed (emitted with `ErrorType`).
    Errors,
    /// Events published (triggers, the webhook receiver).
    EventsFired,
    /// Events found but not published.
    EventsFailed,
    /// How long a trigger's poll took.
    PollDuration,
    /// Now (Dataverse's clock) minus the time of the oldest change a poll published.
    Lag,
    /// Changes a poll knows are left for the next one.
    Backlog,
    /// Changes passed over because the connector's own application user made them
    /// (`ignore_own_changes`): the loops a workflow would otherwise feed, counted so that an
    /// operator can see them prevented.
    OwnChangesSkipped,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::DataverseRequests,
        Metric::Throttles,
        Metric::Retries,
        Metric::Errors,
        Metric::EventsFired,
        Metric::EventsFailed,
        Metric::PollDuration,
        Metric::Lag,
        Metric::Backlog,
        Metric::OwnChangesSkipped,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Metric::DataverseRequests => "DataverseRequests",
            Metric::Throttles => "Throttles",
            Metric::Retries => "Retries",
            Metric::Errors => "Errors",
            Metric::EventsFired => "EventsFired",
            Metric::EventsFailed => "EventsFailed",
            Metric::PollDuration => "PollDuration",
            Metric::Lag => "Lag",
            Metric::Backlog => "Backlog",
            Metric::OwnChangesSkipped => "OwnChangesSkipped",
        }
    }

    /// The CloudWatch unit, one of those `MetricDatum` lists.
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::PollDuration => "Milliseconds",
            Metric::Lag => "Seconds",
            _ => "Count",
        }
    }
}

/// Where the metrics go: `None` from [`settings`] when they are off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    /// The `FunctionName` dimension's value.
    pub function_name: String,
}

/// The settings from the environment: [`SWITCH_VARIABLE`], [`NAMESPACE_VARIABLE`], and the function's
/// name (`AWS_LAMBDA_FUNCTION_NAME`, or this program's file name outside Lambda).
pub fn settings() -> Result<Option<Settings>, ConfigError> {
    let program = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()));
    settings_from(|name| std::env::var(name).ok(), program)
}

/// The settings from what `lookup` gives, every problem reported at once.
fn settings_from(
    lookup: impl Fn(&str) -> Option<String>,
    program: Option<String>,
) -> Result<Option<Settings>, ConfigError> {
    let mut problems = Vec::new();
    let on = match lookup(SWITCH_VARIABLE).as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            problems.push(format!(
                "{SWITCH_VARIABLE} is '{}', expected on or off",
                crate::excerpt(other)
            ));
            true
        }
    };
    let namespace = lookup(NAMESPACE_VARIABLE).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if on && let Some(problem) = namespace_problem(&namespace) {
        problems.push(format!(
            "{NAMESPACE_VARIABLE} is '{}': {problem}",
            crate::excerpt(&namespace)
        ));
    }
    let function_name = lookup("AWS_LAMBDA_FUNCTION_NAME")
        .or(program)
        .unwrap_or_default();
    if on && let Some(problem) = dimension_problem(&function_name) {
        problems.push(format!(
            "the function's name '{}' (AWS_LAMBDA_FUNCTION_NAME, else the program's file name) cannot be a metric dimension: {problem}",
            crate::excerpt(&function_name)
        ));
    }
    if !problems.is_empty() {
        return Err(ConfigError::Environment(problems));
    }
    Ok(on.then_some(Settings {
        namespace,
        function_name,
    }))
}

/// Why CloudWatch would refuse `namespace`: printable ASCII, 1 to 255 characters, not all spaces,
/// and not in the `AWS/` space it keeps for its own services.
fn namespace_problem(namespace: &str) -> Option<&'static str> {
    if namespace.trim().is_empty() || namespace.len() > MAX_NAMESPACE_CHARS {
        Some("a namespace has 1 to 255 characters, not all spaces")
    } else if !namespace.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Some("a namespace has printable ASCII characters only")
    } else if namespace.starts_with("AWS/") {
        Some("namespaces starting with AWS/ are AWS's own")
    } else if namespace.starts_with(':') {
        Some("a namespace cannot start with a colon")
    } else {
        None
    }
}

/// Why CloudWatch would refuse `value` as a dimension's value: printable ASCII, 1 to 1,024
/// characters, not all spaces.
fn dimension_problem(value: &str) -> Option<&'static str> {
    if value.trim().is_empty() || value.len() > MAX_DIMENSION_VALUE_CHARS {
        Some("a dimension value has 1 to 1,024 characters, not all spaces")
    } else if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Some("a dimension value has printable ASCII characters only")
    } else {
        None
    }
}

/// The process's Dataverse counters: one per client built, kept after the client is replaced, so
/// that the sum only grows and a difference over an invocation is what it sent.
static COUNTERS: Mutex<Vec<Arc<Counters>>> = Mutex::new(Vec::new());

/// Counts `counters` in every later [`usage`].
pub(crate) fn track(counters: Arc<Counters>) {
    let mut all = COUNTERS.lock().unwrap_or_else(PoisonError::into_inner);
    if !all.iter().any(|known| Arc::ptr_eq(known, &counters)) {
        all.push(counters);
    }
}

/// What every tracked client has sent so far.
pub(crate) fn usage() -> Usage {
    COUNTERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .fold(Usage::default(), |sum, counters| sum + counters.usage())
}

/// What one invocation recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    values: BTreeMap<Metric, u64>,
    /// A failure the handler answered as a success (the webhook's 5xx answers).
    error_type: Option<&'static str>,
}

tokio::task_local! {
    static CURRENT: RefCell<Recorded>;
}

/// Sets `metric` to `value` for the invocation under way; a later `set` replaces it. Outside an
/// invocation (a spawned task, a unit test) it does nothing.
pub fn set(metric: Metric, value: u64) {
    let _ = CURRENT.try_with(|current| {
        current.borrow_mut().values.insert(metric, value);
    });
}

/// Records that the invocation failed with `error_type`, though it answers normally (a webhook
/// delivery answered 5xx, which Dataverse sends again).
#[cfg_attr(not(feature = "webhook"), allow(dead_code))]
pub(crate) fn failed(error_type: &'static str) {
    let _ = CURRENT.try_with(|current| {
        current.borrow_mut().error_type = Some(error_type);
    });
}

/// Runs `work` with a recorder of its own, and returns what it recorded beside its output.
pub(crate) async fn recording<F: Future>(work: F) -> (F::Output, Recorded) {
    CURRENT
        .scope(RefCell::new(Recorded::default()), async {
            let output = work.await;
            (output, CURRENT.with(RefCell::take))
        })
        .await
}

/// What one invocation reports: its recorder, the Dataverse requests it made, and how it failed.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) recorded: Recorded,
    pub(crate) usage: Usage,
    pub(crate) error_type: Option<&'static str>,
    pub(crate) request_id: &'a str,
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "_aws")]
    aws: Metadata<'a>,
    #[serde(rename = "FunctionName")]
    function_name: &'a str,
    #[serde(rename = "ErrorType", skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    /// Not a dimension: a way from a data point back to the invocation's logs.
    #[serde(rename = "RequestId", skip_serializing_if = "str::is_empty")]
    request_id: &'a str,
    #[serde(flatten)]
    values: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata<'a> {
    timestamp: u64,
    cloud_watch_metrics: Vec<Directive<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    namespace: &'a str,
    dimensions: &'static [&'static [&'static str]],
    metrics: Vec<Definition>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Definition {
    name: &'static str,
    unit: &'static str,
}

/// One EMF document, as one line without its newline, timestamped `timestamp_ms`.
pub(crate) fn document(
    settings: &Settings,
    report: &Report<'_>,
    timestamp_ms: u64,
) -> Result<String, serde_json::Error> {
    let mut values = report.recorded.values.clone();
    values.insert(Metric::DataverseRequests, report.usage.requests);
    values.insert(Metric::Throttles, report.usage.throttles);
    values.insert(Metric::Retries, report.usage.retries);
    values.remove(&Metric::Errors);
    let mut directives = vec![Directive {
        namespace: &settings.namespace,
        dimensions: &[&[FUNCTION_DIMENSION], &[]],
        metrics: values
            .keys()
            .map(|metric| Definition {
                name: metric.name(),
                unit: metric.unit(),
            })
            .collect(),
    }];
    let error_type = report.error_type.or(report.recorded.error_type);
    if error_type.is_some() {
        values.insert(Metric::Errors, 1);
        directives.push(Directive {
            namespace: &settings.namespace,
            dimensions: &[&[FUNCTION_DIMENSION, ERROR_DIMENSION], &[ERROR_DIMENSION]],
            metrics: vec![Definition {
                name: Metric::Errors.name(),
                unit: Metric::Errors.unit(),
            }],
        });
    }
    serde_json::to_string(&Document {
        aws: Metadata {
            timestamp: timestamp_ms,
            cloud_watch_metrics: directives,
        },
        function_name: &settings.function_name,
        error_type,
        request_id: report.request_id,
        values: values
            .into_iter()
            .map(|(metric, value)| (metric.name(), value))
            .collect(),
    })
}

/// Writes the invocation's document to stdout, as one line.
pub(crate) fn emit(settings: &Settings, report: &Report<'_>) {
    let now = crate::lambda::epoch_ms(SystemTime::now());
    let mut line = match document(settings, report, now) {
        Ok(line) => line,
        Err(error) => {
            tracing::warn!(%error, "could not write the invocation's metrics");
            return;
        }
    };
    line.push('\n');
    // One write of the whole line, under the lock the log lines take too, so that the two never
    // interleave within a line.
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "could not write the invocation's metrics");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn reads_the_settings_with_their_defaults() {
        let settings =
            settings_from(env(&[("AWS_LAMBDA_FUNCTION_NAME", "get-record")]), None).unwrap();
        assert_eq!(
            settings,
            Some(Settings {
                namespace: DEFAULT_NAMESPACE.into(),
                function_name: "get-record".into()
            })
        );
        let named = settings_from(
            env(&[(NAMESPACE_VARIABLE, "Contoso/Crm")]),
            Some("list-records".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(named.namespace, "Contoso/Crm");
        assert_eq!(
            named.function_name, "list-records",
            "the program's name outside Lambda"
        );
        assert_eq!(
            settings_from(env(&[(SWITCH_VARIABLE, "off")]), None).unwrap(),
            None
        );
        let off = env(&[(SWITCH_VARIABLE, "off"), (NAMESPACE_VARIABLE, "AWS/x")]);
        assert_eq!(
            settings_from(off, None).unwrap(),
            None,
            "nothing to check when off"
        );
    }

    #[test]
    fn refuses_settings_cloudwatch_would_refuse_naming_each_variable() {
        let problems = |pairs: &[(&str, &str)]| match settings_from(env(pairs), Some("f".into())) {
            Err(ConfigError::Environment(problems)) => problems.join("; "),
            other => panic!("{other:?}"),
        };
        assert!(problems(&[(SWITCH_VARIABLE, "yes")]).starts_with("CRM_METRICS is 'yes'"));
        for bad in ["", "  ", "AWS/Lambda", ":x", "caf\u{e9}", &"n".repeat(256)] {
            assert!(
                problems(&[(NAMESPACE_VARIABLE, bad)]).starts_with("CRM_METRICS_NAMESPACE"),
                "{bad:?}"
            );
        }
        let both = problems(&[(SWITCH_VARIABLE, "1"), (NAMESPACE_VARIABLE, "AWS/x")]);
        assert!(both.contains("CRM_METRICS is") && both.contains("CRM_METRICS_NAMESPACE is"));
        assert!(problems(&[("AWS_LAMBDA_FUNCTION_NAME", "\u{1f600}")]).contains("dimension"));
    }

    #[test]
    fn writes_one_document_with_the_aws_member_first() {
        let settings = Settings {
            namespace: "DynamicsCrm".into(),
            function_name: "when-record-created".into(),
        };
        let mut recorded = Recorded::default();
        recorded.values.insert(Metric::EventsFired, 3);
        recorded.values.insert(Metric::Lag, 42);
        let report = Report {
            recorded,
            usage: Usage {
                requests: 4,
                throttles: 1,
                retries: 1,
            },
            error_type: Some("Crm.ServerError"),
            request_id: "r-1",
        };
        let line = document(&settings, &report, 1_700_000_000_000).unwrap();
        assert!(
            line.starts_with(r#"{"_aws":{"Timestamp":1700000000000,"#),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"],
            json!([
                {"Namespace": "DynamicsCrm", "Dimensions": [["FunctionName"], []], "Metrics": [
                    {"Name": "DataverseRequests", "Unit": "Count"},
                    {"Name": "Throttles", "Unit": "Count"},
                    {"Name": "Retries", "Unit": "Count"},
                    {"Name": "EventsFired", "Unit": "Count"},
                    {"Name": "Lag", "Unit": "Seconds"},
                ]},
                {"Namespace": "DynamicsCrm", "Dimensions": [["FunctionName", "ErrorType"], ["ErrorType"]], "Metrics": [
                    {"Name": "Errors", "Unit": "Count"},
                ]},
            ])
        );
        assert_eq!(value["FunctionName"], "when-record-created");
        assert_eq!(value["ErrorType"], "Crm.ServerError");
        assert_eq!(value["RequestId"], "r-1");
        assert_eq!(
            (&value["DataverseRequests"], &value["Errors"], &value["Lag"]),
            (&json!(4), &json!(1), &json!(42))
        );
    }

    #[test]
    fn a_success_has_no_errors_directive_and_no_error_type() {
        let settings = Settings {
            namespace: "N".into(),
            function_name: "f".into(),
        };
        let report = Report {
            recorded: Recorded::default(),
            usage: Usage::default(),
            error_type: None,
            request_id: "",
        };
        let value: Value = serde_json::from_str(&document(&settings, &report, 0).unwrap()).unwrap();
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(),
            1
        );
        assert!(value.get("ErrorType").is_none() && value.get("Errors").is_none());
        assert!(value.get("RequestId").is_none());
        assert_eq!(value["DataverseRequests"], 0);
    }

    #[test]
    fn records_only_inside_an_invocation() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        set(Metric::Backlog, 1);
        let ((), recorded) = runtime.block_on(recording(async {
            set(Metric::Backlog, 1);
            set(Metric::Backlog, 2);
            failed("Crm.Throttled");
        }));
        assert_eq!(recorded.values, BTreeMap::from([(Metric::Backlog, 2)]));
        assert_eq!(recorded.error_type, Some("Crm.Throttled"));
        let ((), fresh) = runtime.block_on(recording(async {}));
        assert_eq!(fresh, Recorded::default(), "each invocation starts empty");
    }

    #[test]
    fn names_and_units_are_the_documented_ones() {
        let units = ["Count", "Milliseconds", "Seconds"];
        for metric in Metric::ALL {
            assert!(units.contains(&metric.unit()), "{metric:?}");
            assert!(!metric.name().is_empty());
        }
    }
}
