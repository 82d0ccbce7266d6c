//! Hostile and unlucky invocations, through the Runtime API as Lambda delivers them: payloads a caller
//! should never send, inputs too large for a URL, credentials refused over and over, and too little
//! time. Each failure must be a `Crm.*` error that says what is wrong, bounded in size, and cost no
//! more requests than the README promises.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

const ACTIONS: [&str; 12] = [
    "list-records",
    "get-record",
    "create-record",
    "update-record",
    "upsert-record",
    "delete-record",
    "relate-records",
    "unrelate-records",
    "describe-table",
    "perform-action",
    "execute-changeset",
    "write-records",
];
const TRIGGERS: [&str; 3] = [
    "when-record-created",
    "when-record-updated",
    "when-record-deleted",
];

/// A row id that exists in no table.
const SOME_ID: &str = "0bad0bad-0000-4000-8000-000000000000";

struct Org {
    emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::start(&["--seed", "demo"]).await.unwrap();
        let files = LocalFiles::new("hostile", &emulator).unwrap();
        Self { emulator, files }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &self.files.env()).await.unwrap()
    }

    /// `(method, path)` of every request since the last call.
    async fn take_log(&self) -> Vec<(String, String)> {
        let log = self.emulator.client().take_requests().await.unwrap();
        log.into_iter().map(|e| (e.method, e.path)).collect()
    }
}

/// A failure this suite's invocations must end in (a reported `Crm.*` error, never a crash).
fn failure(result: Result<Value, e2e_tests::Failure>) -> (String, String) {
    expect_error(result, "")
}

/// The minimal valid payload of each function, which a test then spoils.
fn base(function: &str) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts"});
    match function {
        "get-record" | "delete-record" => payload["id"] = json!(SOME_ID),
        "create-record" => payload["item"] = json!({"name": "x"}),
        "update-record" | "upsert-record" => {
            payload["id"] = json!(SOME_ID);
            payload["item"] = json!({"name": "x"});
        }
        "perform-action" => {
            payload = json!({"dataset": "contoso", "function": "WhoAmI"});
        }
        "execute-changeset" => {
            payload = json!({"dataset": "contoso", "operations": [
                {"op": "create", "table": "accounts", "item": {"name": "x"}}]});
        }
        "write-records" => {
            payload["mode"] = json!("create");
            payload["rows"] = json!([{"name": "x"}]);
        }
        "relate-records" | "unrelate-records" => {
            payload["id"] = json!(SOME_ID);
            payload["relationship"] = json!("contact_customer_accounts");
            payload["related"] = json!({"id": SOME_ID});
        }
        _ => {}
    }
    payload
}

#[tokio::test]
async fn an_option_too_long_for_a_url_is_invalid_input_naming_it_and_nothing_is_sent() {
    let org = Org::start().await;
    let long_filter = format!("name eq '{}'", "x".repeat(70_000));
    let megabyte = "a".repeat(1 << 20);
    let cases: Vec<(&str, &str, Value)> = vec![
        ("list-records", "$filter", json!(long_filter)),
        ("list-records", "$select", json!(megabyte)),
        ("list-records", "$orderby", json!(megabyte)),
        ("list-records", "$expand", json!(megabyte)),
        ("get-record", "$select", json!(megabyte)),
        ("get-record", "$expand", json!(megabyte)),
        ("create-record", "$select", json!(megabyte)),
        ("update-record", "$select", json!(megabyte)),
        ("upsert-record", "$select", json!(megabyte)),
        ("when-record-created", "$filter", json!(long_filter)),
        ("when-record-created", "$select", json!(megabyte)),
        ("when-record-updated", "$orderby", json!(megabyte)),
    ];
    org.take_log().await;
    for (name, option, value) in cases {
        let mut function = org.function(name).await;
        let mut payload = base(name);
        payload[option] = value;
        let (error_type, message) = failure(function.invoke(&payload).await);
        assert_eq!(error_type, "Crm.InvalidInput", "{name} {option}: {message}");
        assert!(
            message.starts_with(&format!("{option}: ")) && message.contains("32768"),
            "{name} {option}: {message}"
        );
        assert!(message.len() < 1024, "{name} {option}: {}", message.len());
        let log = org.take_log().await;
        assert!(log.is_empty(), "{name} {option} sent {log:?}");
    }
}

/// Valid JSON that `serde_json` will not turn into values, and bytes that are not JSON: Lambda's own
/// runtime library would fail these with an error type of its own, which no `Crm.*` catch matches.
#[tokio::test]
async fn every_payload_that_cannot_be_read_fails_as_invalid_input() {
    let org = Org::start().await;
    let deep = format!(
        r#"{{"dataset": "contoso", "table": "accounts", "$filter": {}1{}}}"#,
        "[".repeat(128),
        "]".repeat(128)
    );
    let bodies: [(&str, Bytes); 5] = [
        ("nested 128 deep", Bytes::from(deep)),
        (
            "a lone surrogate",
            Bytes::from_static(br#"{"dataset": "contoso", "table": "\ud800"}"#),
        ),
        ("not JSON", Bytes::from_static(b"dataset=contoso")),
        ("not UTF-8", Bytes::from_static(b"{\"table\": \"\xff\"}")),
        ("empty", Bytes::new()),
    ];
    for name in ACTIONS.into_iter().chain(TRIGGERS) {
        let mut function = org.function(name).await;
        for (what, body) in &bodies {
            let (error_type, message) = failure(
                function
                    .invoke_bytes(body.clone(), Duration::from_secs(30))
                    .await,
            );
            assert_eq!(error_type, "Crm.InvalidInput", "{name}, {what}: {message}");
            assert!(
                message.starts_with("payload: "),
                "{name}, {what}: {message}"
            );
        }
        // The process survived every one of them and still answers.
        let (error_type, _) = failure(function.invoke(&json!({})).await);
        assert_eq!(error_type, "Crm.InvalidInput");
    }
    assert!(org.take_log().await.is_empty());
}

#[tokio::test]
async fn huge_input_is_echoed_only_as_a_short_excerpt_in_errors_and_logs() {
    let org = Org::start().await;
    let huge = "t".repeat(5 << 20);
    for name in ACTIONS.into_iter().chain(TRIGGERS) {
        let mut function = org.function(name).await;
        let mut spoiled = Vec::new();
        let takes_top = name == "list-records" || TRIGGERS.contains(&name);
        let fields = if takes_top {
            &["table", "dataset", "$top"][..]
        } else if name == "execute-changeset" {
            // Its tables are inside each operation.
            &["dataset"][..]
        } else {
            &["table", "dataset"][..]
        };
        let guarded: &[&str] = match name {
            "create-record" => &["idempotency_key", "idempotency_column"],
            "update-record" | "upsert-record" | "delete-record" | "execute-changeset" => {
                &["idempotency_key"]
            }
            _ => &[],
        };
        for field in fields.iter().chain(guarded) {
            let mut payload = base(name);
            payload[field] = json!(huge);
            spoiled.push(((*field).to_owned(), payload));
        }
        let mut unknown = base(name);
        unknown[huge.as_str()] = json!(1);
        spoiled.push(("an unknown field".to_owned(), unknown));
        for (what, payload) in spoiled {
            let (error_type, message) = failure(function.invoke(&payload).await);
            assert_eq!(error_type, "Crm.InvalidInput", "{name}, {what}");
            assert!(
                message.len() < 1024,
                "{name}, {what}: {} bytes",
                message.len()
            );
            assert!(
                message.contains("5242880 characters"),
                "{name}, {what}: the length is said: {message}"
            );
        }
        let longest = function.logs().lines().map(str::len).max().unwrap_or(0);
        assert!(longest < 4096, "{name} logged a line of {longest} bytes");
    }
}

fn count(log: &[(String, String)], part: &str) -> usize {
    log.iter().filter(|(_, path)| path.contains(part)).count()
}

/// The README promises one token refresh and one re-read of the credentials. A token issued for the
/// request that was refused is not refreshed (the credentials are the problem), and credentials that
/// read back unchanged are not tried again.
#[tokio::test]
async fn refused_credentials_cost_one_refresh_and_one_reread_at_most() {
    let org = Org::start().await;
    let mut get = org.function("get-record").await;
    let payload = json!({"dataset": "contoso", "table": "accounts", "id": SOME_ID});
    let refuse_all = json!({"status": 401, "times": 1000, "path_contains": "/api/data/"});

    // Cold: the first token is refused at once, and the credentials have not changed.
    org.emulator.post("faults", &refuse_all).await.unwrap();
    org.take_log().await;
    let (error_type, _) = failure(get.invoke(&payload).await);
    assert_eq!(error_type, "Crm.Unauthorized");
    let log = org.take_log().await;
    assert_eq!(count(&log, "/oauth2/v2.0/token"), 1, "{log:?}");
    assert_eq!(count(&log, "/api/data/"), 1, "{log:?}");

    // Warm: a cached token refused is replaced once; then the unchanged credentials give up.
    org.emulator
        .control(reqwest::Method::DELETE, "faults", &Value::Null)
        .await
        .unwrap();
    let (error_type, _) = failure(get.invoke(&payload).await);
    assert_eq!(error_type, "Crm.NotFound", "a warm-up that caches a token");
    org.emulator.post("faults", &refuse_all).await.unwrap();
    org.take_log().await;
    let (error_type, _) = failure(get.invoke(&payload).await);
    assert_eq!(error_type, "Crm.Unauthorized");
    let log = org.take_log().await;
    assert_eq!(count(&log, "/oauth2/v2.0/token"), 1, "{log:?}");
    assert_eq!(count(&log, "/api/data/"), 2, "{log:?}");
    assert_eq!(count(&log, "EntityDefinitions"), 0, "{log:?}");
}

#[tokio::test]
async fn a_trigger_with_too_little_time_fails_and_says_how_much_it_needs() {
    let org = Org::start().await;
    for name in TRIGGERS {
        let mut trigger = org.function(name).await;
        let result = trigger
            .invoke_within(&base(name), Duration::from_millis(2000))
            .await;
        let (error_type, message) = failure(result);
        assert_eq!(error_type, "Crm.Configuration", "{name}: {message}");
        assert!(
            message.contains("needs at least 2500 ms") && message.contains("timeout"),
            "{name}: {message}"
        );
    }
    assert!(org.take_log().await.is_empty());
}

#[tokio::test]
async fn a_trigger_refuses_an_orderby_column_that_does_not_exist_as_list_records_does() {
    let org = Org::start().await;
    let mut list = org.function("list-records").await;
    let mut listing = base("list-records");
    listing["$orderby"] = json!("nosuchcolumn desc");
    let (expected, _) = failure(list.invoke(&listing).await);
    assert_eq!(expected, "Crm.BadRequest");
    for name in ["when-record-created", "when-record-updated"] {
        let mut trigger = org.function(name).await;
        let mut payload = base(name);
        payload["$orderby"] = json!("nosuchcolumn desc");
        let (error_type, message) = failure(trigger.invoke(&payload).await);
        assert_eq!(error_type, expected, "{name}: {message}");
        assert!(message.contains("nosuchcolumn"), "{name}: {message}");
        // A column that exists is fine, and the cursor was not spoiled by the refusal.
        payload["$orderby"] = json!("name desc");
        trigger.invoke(&payload).await.unwrap();
    }
}
