//! The metrics every function writes at the end of each invocation (`docs/metrics.md`): one
//! CloudWatch Embedded Metric Format line on stdout, read here from the process's output, checked
//! against the specification (`e2e_tests::emf`) and against what the emulator saw. Also the client's
//! throttle gate, which carries a `Retry-After` from one invocation to the next in the same process.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e_tests::emf::{self, Emf};
use e2e_tests::{Emulator, Function, LocalFiles, env, expect_error};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The documented metrics and their units.
const UNITS: [(&str, &str); 10] = [
    ("DataverseRequests", "Count"),
    ("Throttles", "Count"),
    ("Retries", "Count"),
    ("Errors", "Count"),
    ("EventsFired", "Count"),
    ("EventsFailed", "Count"),
    ("PollDuration", "Milliseconds"),
    ("Lag", "Seconds"),
    ("Backlog", "Count"),
    ("OwnChangesSkipped", "Count"),
];
const CLIENT_METRICS: [&str; 3] = ["DataverseRequests", "Throttles", "Retries"];
const NAMESPACE: &str = "DynamicsCrm";

fn epoch_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An emulator, credentials in a file, and the EMF lines each function has written so far.
struct Rig {
    emulator: Emulator,
    files: LocalFiles,
    /// When the test began (for the documents' timestamps), in epoch milliseconds.
    began_ms: u64,
}

impl Rig {
    async fn new(seed: &str) -> Self {
        let began_ms = epoch_ms();
        let emulator = Emulator::start(&["--seed", seed]).await.unwrap();
        let files = LocalFiles::new("metrics", &emulator).unwrap();
        Self {
            emulator,
            files,
            began_ms,
        }
    }

    async fn action(&self, name: &str, extra: &[(&str, &str)]) -> Function {
        let mut environment = vec![self.files.secrets_env()];
        environment.extend(env(extra));
        Function::start(name, &environment).await.unwrap()
    }

    /// The Web API requests the emulator answered since the last call (token requests are not
    /// Dataverse's): `(method, path, status)`.
    async fn web_api_calls(&self) -> Vec<(String, String, u16)> {
        self.emulator
            .client()
            .take_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.path.starts_with("/api/data/"))
            .map(|e| (e.method, e.path, e.status))
            .collect()
    }

    /// Dataverse's now, by the emulator's clock.
    async fn now(&self) -> i64 {
        self.emulator
            .advance_clock(0)
            .await
            .unwrap()
            .unix_timestamp()
    }
}

/// The `n`th EMF document (from 1) the function wrote, once it is there: every line checked against
/// the specification first. The pipe readers may not have had their turn when the answer arrives, so
/// they are given turns until it shows up.
async fn document(function: &Function, n: usize) -> Emf {
    let mut logs = function.logs();
    for _ in 0..10_000 {
        if logs.lines().filter(|l| l.starts_with(emf::PREFIX)).count() >= n {
            break;
        }
        tokio::task::yield_now().await;
        logs = function.logs();
    }
    let documents =
        emf::documents(&logs).unwrap_or_else(|problems| panic!("{}\n{logs}", problems.join("\n")));
    assert_eq!(
        documents.len(),
        n,
        "one document per invocation, and no more\n{logs}"
    );
    documents[n - 1].clone()
}

/// What every document of `function` must be, beyond the specification: our namespace, timestamp,
/// dimensions and units, the client's counters always, and `Errors` exactly when `failed` names the
/// error type.
fn conforms(emf: &Emf, rig: &Rig, function: &str, failed: Option<&str>) {
    assert!(
        (rig.began_ms..=epoch_ms()).contains(&emf.timestamp()),
        "the timestamp is milliseconds of now: {}",
        emf.timestamp()
    );
    assert_eq!(emf.text("FunctionName"), Some(function));
    assert!(emf.text("RequestId").is_some_and(|id| !id.is_empty()));
    let directives = emf.directives();
    assert!(directives.iter().all(|d| d.namespace == NAMESPACE));
    assert_eq!(directives[0].dimensions, [vec!["FunctionName"], vec![]]);
    for name in emf.metric_names() {
        let unit = UNITS.iter().find(|(n, _)| *n == name).map(|(_, u)| *u);
        assert_eq!(emf.unit(&name).as_deref(), unit, "{name} is documented");
    }
    for name in CLIENT_METRICS {
        assert!(emf.value(name).is_some(), "{name} is always there");
    }
    match failed {
        None => {
            assert_eq!(directives.len(), 1);
            assert!(emf.text("ErrorType").is_none() && emf.value("Errors").is_none());
        }
        Some(error_type) => {
            assert_eq!(directives.len(), 2);
            assert_eq!(
                directives[1].dimensions,
                [vec!["FunctionName", "ErrorType"], vec!["ErrorType"]]
            );
            assert_eq!(
                directives[1].metrics,
                [("Errors".into(), Some("Count".into()))]
            );
            assert_eq!(emf.text("ErrorType"), Some(error_type));
            assert_eq!(emf.value("Errors"), Some(1.0));
        }
    }
}

/// `(DataverseRequests, Throttles, Retries)`.
fn client_counts(emf: &Emf) -> (f64, f64, f64) {
    let [requests, throttles, retries] = CLIENT_METRICS.map(|m| emf.value(m).unwrap());
    (requests, throttles, retries)
}

fn count(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap())
}

fn get_payload() -> Value {
    serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap()
}

#[tokio::test]
async fn an_action_reports_its_requests_throttles_retries_and_errors_by_type() {
    let rig = Rig::new("demo").await;
    let mut get = rig.action("get-record", &[]).await;
    let payload = get_payload();

    // Success: the table's definition and the row, each counted once.
    rig.web_api_calls().await;
    get.invoke(&payload).await.unwrap();
    let calls = rig.web_api_calls().await;
    let first = document(&get, 1).await;
    conforms(&first, &rig, "get-record", None);
    assert_eq!(
        client_counts(&first),
        (count(calls.len()), 0.0, 0.0),
        "{calls:?}"
    );
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        BTreeSet::from_iter(first.metric_names()),
        BTreeSet::from(CLIENT_METRICS.map(str::to_owned)),
        "an action reports the client's counters only"
    );

    // Not found: one request (the table is known now), and the error by type.
    let mut missing = payload.clone();
    missing["id"] = json!("00000000-0000-4000-8000-00000000abcd");
    let (error_type, _) = expect_error(get.invoke(&missing).await, &get.logs());
    assert_eq!(error_type, "Crm.NotFound");
    let calls = rig.web_api_calls().await;
    let second = document(&get, 2).await;
    conforms(&second, &rig, "get-record", Some("Crm.NotFound"));
    assert_eq!(client_counts(&second), (count(calls.len()), 0.0, 0.0));
    assert_eq!(calls.len(), 1, "{calls:?}");

    // Invalid input: nothing sent, and still a document.
    let (error_type, _) = expect_error(
        get.invoke(&json!({"dataset": "contoso", "id": "x"})).await,
        &get.logs(),
    );
    assert_eq!(error_type, "Crm.InvalidInput");
    let third = document(&get, 3).await;
    conforms(&third, &rig, "get-record", Some("Crm.InvalidInput"));
    assert_eq!(client_counts(&third), (0.0, 0.0, 0.0));
    assert!(rig.web_api_calls().await.is_empty());

    // Throttled once, then answered: two requests, one of them a retry.
    rig.emulator
        .post(
            "faults",
            &json!({"status": 429, "retry_after": 1, "times": 1, "path_contains": "/accounts("}),
        )
        .await
        .unwrap();
    get.invoke(&payload).await.unwrap();
    let calls = rig.web_api_calls().await;
    let statuses: Vec<u16> = calls.iter().map(|c| c.2).collect();
    assert_eq!(statuses, [429, 200]);
    let fourth = document(&get, 4).await;
    conforms(&fourth, &rig, "get-record", None);
    assert_eq!(client_counts(&fourth), (2.0, 1.0, 1.0));
}

#[tokio::test]
async fn the_namespace_comes_from_its_variable_metrics_can_be_off_and_bad_settings_are_refused() {
    let rig = Rig::new("demo").await;
    let payload = get_payload();

    let mut named = rig
        .action("get-record", &[("CRM_METRICS_NAMESPACE", "Contoso/Crm")])
        .await;
    named.invoke(&payload).await.unwrap();
    let emf = document(&named, 1).await;
    assert!(
        emf.directives()
            .iter()
            .all(|d| d.namespace == "Contoso/Crm")
    );

    // Two failures: each logs "invocation failed" just before its metrics line would be written,
    // so once the second is read, the first invocation's line would have been read too.
    let mut off = rig.action("get-record", &[("CRM_METRICS", "off")]).await;
    let invalid = json!({"dataset": "contoso"});
    for _ in 0..2 {
        expect_error(off.invoke(&invalid).await, &off.logs());
    }
    let mut logs = off.logs();
    for _ in 0..10_000 {
        if logs.matches("invocation failed").count() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
        logs = off.logs();
    }
    assert_eq!(logs.matches("invocation failed").count(), 2, "{logs}");
    assert!(
        !logs.contains("_aws"),
        "no metrics line when they are off\n{logs}"
    );

    for (variable, value) in [
        ("CRM_METRICS", "yes"),
        ("CRM_METRICS_NAMESPACE", "AWS/Lambda"),
    ] {
        let mut bad = rig.action("get-record", &[(variable, value)]).await;
        let (error_type, message) = expect_error(bad.invoke(&payload).await, &bad.logs());
        assert_eq!(error_type, "Crm.Configuration");
        assert!(message.contains(variable), "{message}");
    }
}

#[tokio::test]
async fn a_retry_after_holds_for_the_next_invocation_of_the_same_process() {
    let rig = Rig::new("demo").await;
    let mut get = rig.action("get-record", &[]).await;
    let payload = get_payload();
    // Warm: the token and the table's definition are cached, so each invocation below makes one
    // request, for the row.
    get.invoke(&payload).await.unwrap();
    document(&get, 1).await;
    rig.web_api_calls().await;

    // A Retry-After far past the deadline: the first invocation fails with the 429 it got...
    rig.emulator
        .post(
            "faults",
            &json!({"status": 429, "retry_after": 300, "times": 1, "path_contains": "/accounts("}),
        )
        .await
        .unwrap();
    let short = Duration::from_secs(10);
    let (error_type, _) = expect_error(get.invoke_within(&payload, short).await, &get.logs());
    assert_eq!(error_type, "Crm.Throttled");
    assert_eq!(rig.web_api_calls().await.len(), 1);
    let throttled = document(&get, 2).await;
    conforms(&throttled, &rig, "get-record", Some("Crm.Throttled"));
    assert_eq!(client_counts(&throttled), (1.0, 1.0, 0.0));

    // ...and the next one, though the service would now answer, sends nothing: it was told to wait.
    let (error_type, message) = expect_error(get.invoke_within(&payload, short).await, &get.logs());
    assert_eq!(error_type, "Crm.Throttled");
    assert!(
        message.contains("6000"),
        "the 429 as Dataverse said it: {message}"
    );
    let calls = rig.web_api_calls().await;
    assert!(calls.is_empty(), "nothing reached Dataverse: {calls:?}");
    let held = document(&get, 3).await;
    conforms(&held, &rig, "get-record", Some("Crm.Throttled"));
    assert_eq!(client_counts(&held), (0.0, 0.0, 0.0));
}

#[tokio::test]
async fn the_next_invocation_waits_out_a_retry_after_when_its_deadline_allows() {
    let rig = Rig::new("demo").await;
    let mut get = rig.action("get-record", &[]).await;
    let payload = get_payload();
    get.invoke(&payload).await.unwrap();
    rig.web_api_calls().await;

    let retry_after = Duration::from_secs(3);
    rig.emulator
        .post(
            "faults",
            &json!({"status": 429, "retry_after": retry_after.as_secs(), "times": 1, "path_contains": "/accounts("}),
        )
        .await
        .unwrap();
    let before_the_429 = Instant::now();
    // Three seconds less the answer margin leave no attempt after a three-second wait.
    let (error_type, _) = expect_error(
        get.invoke_within(&payload, Duration::from_secs(3)).await,
        &get.logs(),
    );
    assert_eq!(error_type, "Crm.Throttled");
    assert_eq!(rig.web_api_calls().await.len(), 1);

    // The next invocation has the time: it waits until the server said it may come back, then
    // sends once, and is answered.
    let row = get.invoke(&payload).await.unwrap();
    assert!(row["name"].is_string());
    assert!(
        before_the_429.elapsed() >= retry_after,
        "it went out only after the Retry-After had run"
    );
    let statuses: Vec<u16> = rig.web_api_calls().await.iter().map(|c| c.2).collect();
    assert_eq!(statuses, [200]);
    let logs = get
        .logs_with("asked this client to wait (Retry-After); waiting")
        .await;
    assert!(
        logs.contains("asked this client to wait (Retry-After); waiting"),
        "{logs}"
    );
    let emf = document(&get, 3).await;
    conforms(&emf, &rig, "get-record", None);
    assert_eq!(client_counts(&emf), (1.0, 0.0, 0.0));
}

fn utc(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn a_trigger_reports_events_duration_lag_and_the_backlog_top_left() {
    let rig = Rig::new("none").await;
    let mut created = Function::start("when-record-created", &rig.files.env())
        .await
        .unwrap();
    // Seven rows created an hour ago, a second apart, so that `$top` leaves some behind.
    let hour_ago = rig.now().await - 3600;
    for i in 0..7 {
        rig.emulator
            .post(
                "tables/accounts/rows",
                &json!({"name": format!("row {i}"), "createdon": utc(hour_ago + i), "modifiedon": utc(hour_ago + i)}),
            )
            .await
            .unwrap();
    }
    let payload =
        json!({"dataset": "contoso", "table": "accounts", "$top": 3, "since": utc(hour_ago - 10)});
    rig.web_api_calls().await;

    // First poll: three fire. The page held one more that would have fired (pages are `$top` + 1
    // long here), and links a next page: a backlog of two known.
    let clock_before = rig.now().await;
    let fired = poll(&mut created, &payload).await;
    let clock_after = rig.now().await;
    assert_eq!(fired.len(), 3);
    let calls = rig.web_api_calls().await;
    let first = document(&created, 1).await;
    conforms(&first, &rig, "when-record-created", None);
    assert_eq!(
        client_counts(&first),
        (count(calls.len()), 0.0, 0.0),
        "{calls:?}"
    );
    assert_eq!(first.value("EventsFired"), Some(3.0));
    assert_eq!(first.value("EventsFailed"), Some(0.0));
    assert_eq!(first.value("Backlog"), Some(2.0));
    assert!(first.value("PollDuration").is_some());
    // Lag is Dataverse's now (its clock at the poll's first answer) less the oldest row fired.
    let lag = first.value("Lag").unwrap();
    let oldest = f64::from(i32::try_from(clock_before - hour_ago).unwrap());
    let newest = f64::from(i32::try_from(clock_after - hour_ago).unwrap());
    assert!(
        (oldest..=newest).contains(&lag),
        "{lag} not in {oldest}..={newest}"
    );

    // Second poll: three more; one left, on the last page.
    assert_eq!(poll(&mut created, &payload).await.len(), 3);
    let second = document(&created, 2).await;
    conforms(&second, &rig, "when-record-created", None);
    assert_eq!(second.value("Backlog"), Some(1.0));
    let lag = second.value("Lag").unwrap();
    assert!(lag >= oldest - 3.0, "the oldest fired now is row 3: {lag}");

    // Third: the last one, and nothing is left.
    assert_eq!(poll(&mut created, &payload).await.len(), 1);
    let third = document(&created, 3).await;
    assert_eq!(third.value("EventsFired"), Some(1.0));
    assert_eq!(third.value("Backlog"), Some(0.0));

    // Fourth: nothing fires, so there is no lag to speak of.
    assert!(poll(&mut created, &payload).await.is_empty());
    let fourth = document(&created, 4).await;
    conforms(&fourth, &rig, "when-record-created", None);
    assert_eq!(fourth.value("EventsFired"), Some(0.0));
    assert_eq!(fourth.value("Backlog"), Some(0.0));
    assert!(fourth.value("Lag").is_none());
    assert_eq!(rig.files.published().len(), 7);

    // A poll that fails still reports its duration and what it fired, with the error's type.
    let (error_type, _) = expect_error(
        created
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "$top": 0}))
            .await,
        &created.logs(),
    );
    assert_eq!(error_type, "Crm.InvalidInput");
    let failed = document(&created, 5).await;
    conforms(
        &failed,
        &rig,
        "when-record-created",
        Some("Crm.InvalidInput"),
    );
    assert_eq!(failed.value("EventsFired"), Some(0.0));
    assert!(failed.value("PollDuration").is_some());
}

#[tokio::test]
async fn a_deletion_trigger_reports_the_tombstones_top_left_and_no_lag() {
    let rig = Rig::new("none").await;
    let mut deleted = Function::start("when-record-deleted", &rig.files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "$top": 2});
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            rig.emulator
                .create_account(&format!("gone {i}"))
                .await
                .unwrap(),
        );
    }
    // The baseline: nothing fires, and nothing is known to be waiting.
    assert!(poll(&mut deleted, &payload).await.is_empty());
    let baseline = document(&deleted, 1).await;
    conforms(&baseline, &rig, "when-record-deleted", None);
    assert_eq!(baseline.value("EventsFired"), Some(0.0));
    assert_eq!(baseline.value("Backlog"), Some(0.0));
    for id in &ids {
        let (status, _) = rig
            .emulator
            .api(reqwest::Method::DELETE, &format!("accounts({id})"), None)
            .await
            .unwrap();
        assert_eq!(status, 204);
    }
    // Five tombstones on one delta page: `$top` fires two and leaves three, which it saw.
    for (n, (fired, left)) in [(2, 3), (2, 1), (1, 0)].into_iter().enumerate() {
        assert_eq!(poll(&mut deleted, &payload).await.len(), fired);
        let emf = document(&deleted, n + 2).await;
        conforms(&emf, &rig, "when-record-deleted", None);
        assert_eq!(emf.value("EventsFired"), Some(count(fired)));
        assert_eq!(emf.value("Backlog"), Some(count(left)));
        assert!(emf.value("Lag").is_none(), "a tombstone has no time");
    }
}

async fn poll(function: &mut Function, payload: &Value) -> Vec<Value> {
    match function.invoke(payload).await {
        Ok(output) => output["value"].as_array().unwrap().clone(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// A Function URL request delivering a deletion of `id` to dataset `contoso`'s endpoint, with `key`.
fn deletion_delivery(id: &str, key: &str) -> Value {
    let context = json!({
        "MessageName": "Delete", "PrimaryEntityName": "account", "PrimaryEntityId": id,
        "InputParameters": [{"key": "Target", "value": {"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": id, "LogicalName": "account"}}],
        "PostEntityImages": [], "PreEntityImages": [], "Depth": 1, "Mode": 1, "Stage": 40,
        "OrganizationName": "contoso", "UserId": "00000000-0000-0000-0000-0000000000a1",
        "CorrelationId": "c0ffee00-0000-0000-0000-000000000001", "OperationCreatedOn": "/Date(1764460800000)/",
    });
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/contoso", "rawQueryString": format!("code={key}"),
        "queryStringParameters": {"code": key},
        "headers": {"content-type": "application/json", "x-ms-dynamics-request-name": "Delete",
            "x-ms-dynamics-entity-name": "account"},
        "isBase64Encoded": false, "body": context.to_string(),
        "requestContext": {"http": {"method": "POST", "path": "/contoso", "protocol": "HTTP/1.1",
            "sourceIp": "20.0.0.1", "userAgent": "Microsoft Dynamics"}, "requestId": "r-1",
            "timeEpoch": 1_764_460_800_000_u64},
    })
}

#[tokio::test]
async fn the_webhook_receiver_reports_events_published_and_failed() {
    let rig = Rig::new("none").await;
    let key = "metrics-key";
    rig.files.set_webhook_key(&rig.emulator, key).unwrap();
    let delivery = deletion_delivery("6d81597f-0000-4000-8000-000000000001", key);

    let mut webhook = Function::start("dataverse-webhook", &rig.files.env())
        .await
        .unwrap();
    let answer = webhook.invoke(&delivery).await.unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let published = document(&webhook, 1).await;
    conforms(&published, &rig, "dataverse-webhook", None);
    assert_eq!(published.value("EventsFired"), Some(1.0));
    assert_eq!(published.value("EventsFailed"), Some(0.0));

    // A refused delivery (the wrong key) is no event, and no failure on this side.
    let wrong = deletion_delivery("6d81597f-0000-4000-8000-000000000001", "guess");
    let answer = webhook.invoke(&wrong).await.unwrap();
    assert_eq!(answer["statusCode"], 401, "{answer}");
    let refused = document(&webhook, 2).await;
    conforms(&refused, &rig, "dataverse-webhook", None);
    assert_eq!(refused.value("EventsFired"), Some(0.0));
    assert_eq!(refused.value("EventsFailed"), Some(0.0));

    // A sink that cannot take the event: answered 503 (Dataverse sends it again), counted as a
    // failed event and an error of its type.
    let mut environment: Vec<(String, String)> = rig
        .files
        .env()
        .into_iter()
        .filter(|(k, _)| k != "CRM_EVENTS")
        .collect();
    let nowhere = rig
        .files
        .events()
        .with_file_name("missing-dir/events.jsonl");
    environment.push(("CRM_EVENTS".into(), format!("file:{}", nowhere.display())));
    let mut broken = Function::start("dataverse-webhook", &environment)
        .await
        .unwrap();
    let answer = broken.invoke(&delivery).await.unwrap();
    assert_eq!(answer["statusCode"], 503, "{answer}");
    let failed = document(&broken, 1).await;
    let error_type = failed.text("ErrorType").unwrap_or_default().to_owned();
    assert!(error_type.starts_with("Crm."), "{error_type:?}");
    conforms(&failed, &rig, "dataverse-webhook", Some(&error_type));
    assert_eq!(failed.value("EventsFired"), Some(0.0));
    assert_eq!(failed.value("EventsFailed"), Some(1.0));
}

/// Not a test of the functions: the checker itself refuses a document the moment one rule is broken,
/// so the suites above cannot pass on a checker that accepts anything.
#[test]
fn the_checker_refuses_what_the_specification_forbids() {
    let good = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"M":1}"#;
    assert!(emf::check(good).is_ok());
    for bad in [
        good.replace("\"Count\"", "\"count\""),
        good.replace("\"M\":1", "\"M\":[1,\"2\"]"),
        good.replace(r#""Dimensions":[[]],"#, ""),
        good.replace("[[]]", "[[\"D\"]]"),
    ] {
        assert!(emf::check(&bad).is_err(), "{bad}");
    }
}
