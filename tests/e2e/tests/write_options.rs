//! `bypass_plugins` and `suppress_flows` on every write action, run as the binaries they ship as,
//! through the Lambda Runtime API, against the Dataverse emulator: each write carries Dataverse's
//! headers, a bypassed write reaches no asynchronous step (no webhook delivery), and without the
//! privilege the write is refused as `Crm.Forbidden` and writes nothing.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use dataverse_emulator::client::Message;
use e2e_tests::{Emulator, Failure, Function, LocalFiles};
use serde_json::{Value, json};

/// The privilege `bypass_plugins` needs (`MSCRM.BypassBusinessLogicExecution`).
const PRIVILEGE: &str = "prvBypassCustomBusinessLogic";

/// What the emulator's request log names for the two options' headers.
const BYPASSED: [&str; 3] = [
    "CustomAsync",
    "CustomSync",
    "SuppressCallbackRegistrationExpanderJob",
];

struct Org {
    emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("write-options", &emulator).unwrap();
        Self { emulator, files }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &[self.files.secrets_env()])
            .await
            .unwrap()
    }

    async fn first_id(&self, path: &str, column: &str) -> String {
        let (status, body) = self.emulator.api_get(path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body["value"][0][column].as_str().expect(path).to_owned()
    }

    /// A webhook endpoint (at a loopback port nobody listens on: a delivery is recorded either
    /// way) with an asynchronous post-operation step on account for each message.
    async fn register_steps(&self, messages: &[&str]) {
        let (status, endpoint) = self
            .emulator
            .api(
                reqwest::Method::POST,
                "serviceendpoints",
                Some(
                    &json!({"name": "hook", "contract": 8, "url": "http://127.0.0.1:9/hook",
                    "authtype": 4, "authvalue": "key", "messageformat": 2}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{endpoint}");
        let endpoint = endpoint["serviceendpointid"].as_str().unwrap().to_owned();
        for message in messages {
            let message_id = self
                .first_id(
                    &format!("sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"),
                    "sdkmessageid",
                )
                .await;
            let filter_id = self
                .first_id(
                    &format!("sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq 'account' and _sdkmessageid_value eq {message_id}"),
                    "sdkmessagefilterid",
                )
                .await;
            let (status, step) = self
                .emulator
                .api(
                    reqwest::Method::POST,
                    "sdkmessageprocessingsteps",
                    Some(&json!({
                        "name": format!("account {message} webhook"),
                        "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0,
                        "asyncautodelete": false,
                        "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                        "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})"),
                        "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
                    })),
                )
                .await
                .unwrap();
            assert_eq!(status, 201, "{step}");
        }
    }

    /// The webhook deliveries since the last call, once none is pending.
    async fn take_deliveries(&self) -> Vec<(String, String)> {
        let client = self.emulator.client();
        let log = client.webhook_deliveries(true).await.unwrap();
        assert!(!log.timed_out);
        client.clear_webhook_deliveries().await.unwrap();
        log.deliveries
            .into_iter()
            .map(|d| (format!("{:?}", d.message), d.table))
            .collect()
    }

    async fn accounts(&self) -> usize {
        let (_, body) = self
            .emulator
            .api_get("accounts?$select=name")
            .await
            .unwrap();
        body["value"].as_array().map_or(0, Vec::len)
    }
}

fn succeeded(result: Result<Value, Failure>, function: &Function) -> Value {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{} failed: {e:?}\n{}", function.name, function.logs()),
    }
}

/// Every write action, with `options` merged into its payload, on the row `id`: what each sends.
fn writes(id: &str, options: &Value) -> Vec<(&'static str, Value)> {
    let with = |mut payload: Value| {
        for (name, value) in options.as_object().unwrap() {
            payload[name] = value.clone();
        }
        payload
    };
    vec![
        (
            "create-record",
            with(json!({"dataset": "contoso", "table": "account", "item": {"name": "Created"}})),
        ),
        (
            "update-record",
            with(
                json!({"dataset": "contoso", "table": "account", "id": id, "item": {"name": "Updated"}}),
            ),
        ),
        (
            "upsert-record",
            with(
                json!({"dataset": "contoso", "table": "account", "id": id, "item": {"name": "Upserted"}}),
            ),
        ),
        (
            "execute-changeset",
            with(json!({"dataset": "contoso", "operations": [
                {"op": "update", "table": "account", "id": id, "item": {"name": "In a changeset"}}
            ]})),
        ),
        (
            "write-records",
            with(
                json!({"dataset": "contoso", "table": "account", "mode": "update",
                "rows": [{"accountid": id, "name": "In bulk"}]}),
            ),
        ),
        (
            "delete-record",
            with(json!({"dataset": "contoso", "table": "account", "id": id})),
        ),
    ]
}

#[tokio::test]
async fn every_write_action_sends_the_headers_and_a_bypassed_write_reaches_no_step() {
    let org = Org::start().await;
    org.register_steps(&["Create", "Update", "Delete"]).await;
    let id = org.emulator.create_account("Before").await.unwrap();
    assert_eq!(
        org.take_deliveries().await.len(),
        1,
        "the steps deliver an ordinary write"
    );
    org.emulator.clear_requests().await.unwrap();

    let options = json!({"bypass_plugins": true, "suppress_flows": true});
    for (name, payload) in writes(&id, &options) {
        let mut function = org.function(name).await;
        let result = function.invoke(&payload).await;
        succeeded(result, &function);
        // Each write the function sent carries both headers; its reads carry none.
        let log = org.emulator.requests().await.unwrap();
        org.emulator.clear_requests().await.unwrap();
        let writes: Vec<&Value> = log
            .iter()
            .filter(|e| e["path"].as_str().unwrap().starts_with("/api/data/"))
            .filter(|e| e["method"] != "GET")
            .collect();
        assert_eq!(writes.len(), 1, "{name}: {log:?}");
        let bypass: BTreeSet<&str> = writes[0]["bypass"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(bypass, BTreeSet::from(BYPASSED), "{name}: {}", writes[0]);
        for read in log.iter().filter(|e| e["method"] == "GET") {
            assert!(read.get("bypass").is_none(), "{name}: {read}");
        }
    }
    assert_eq!(
        org.take_deliveries().await,
        Vec::<(String, String)>::new(),
        "bypassed writes reach no asynchronous step"
    );

    // The same step does fire for a write without the options (so its silence above is the
    // bypass's doing).
    let mut create = org.function("create-record").await;
    let result = create
        .invoke(&json!({"dataset": "contoso", "table": "account", "item": {"name": "Plain"}}))
        .await;
    succeeded(result, &create);
    assert_eq!(
        org.take_deliveries().await,
        vec![("Create".to_owned(), "account".to_owned())]
    );
}

#[tokio::test]
async fn without_the_privilege_a_bypassed_write_is_forbidden_and_writes_nothing() {
    let org = Org::start().await;
    let id = org.emulator.create_account("Before").await.unwrap();
    org.emulator
        .client()
        .set_privilege("local-client", PRIVILEGE, false)
        .await
        .unwrap();
    for (name, payload) in writes(&id, &json!({"bypass_plugins": true})) {
        let mut function = org.function(name).await;
        match function.invoke(&payload).await {
            Err(Failure::Error {
                error_type,
                message,
            }) => {
                assert_eq!(error_type, "Crm.Forbidden", "{name}: {message}");
                assert!(message.contains(PRIVILEGE), "{name}: {message}");
            }
            other => panic!("{name}: {other:?}\n{}", function.logs()),
        }
    }
    let (_, row) = org
        .emulator
        .api_get(&format!("accounts({id})?$select=name"))
        .await
        .unwrap();
    assert_eq!(row["name"], "Before", "nothing was written");
    assert_eq!(org.accounts().await, 1);

    // Suppressing flows needs no privilege.
    let mut create = org.function("create-record").await;
    let result = create
        .invoke(&json!({"dataset": "contoso", "table": "account", "item": {"name": "Quiet"}, "suppress_flows": true}))
        .await;
    succeeded(result, &create);
    assert_eq!(org.accounts().await, 2);
}

#[tokio::test]
async fn suppress_flows_starts_no_flow_job() {
    let org = Org::start().await;
    org.emulator
        .client()
        .register_flow("account", Message::Create)
        .await
        .unwrap();
    let mut create = org.function("create-record").await;
    for suppress in [true, false] {
        let result = create
            .invoke(&json!({"dataset": "contoso", "table": "account", "item": {"name": "x"}, "suppress_flows": suppress}))
            .await;
        succeeded(result, &create);
    }
    let flows = org.emulator.client().flows().await.unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(
        (flows[0]["jobs"].as_u64(), flows[0]["suppressed"].as_u64()),
        (Some(1), Some(1)),
        "{flows:?}"
    );
}

#[tokio::test]
async fn an_option_that_is_not_a_boolean_is_invalid_input_naming_it_and_nothing_is_sent() {
    let org = Org::start().await;
    let id = "7eb682f1-ca75-e511-80d4-00155d2a68d1";
    for option in ["bypass_plugins", "suppress_flows"] {
        // Text and numbers that read as true somewhere else, and null, which serde would take as
        // "absent" for an `Option`.
        for bad in [json!("true"), json!(1), Value::Null] {
            for (name, payload) in writes(id, &json!({ option: bad })) {
                let mut function = org.function(name).await;
                org.emulator.clear_requests().await.unwrap();
                match function.invoke(&payload).await {
                    Err(Failure::Error {
                        error_type,
                        message,
                    }) => {
                        assert_eq!(error_type, "Crm.InvalidInput", "{name}: {message}");
                        assert!(message.starts_with(option), "{name}: {message}");
                    }
                    other => panic!("{name} with {option}: {bad}: {other:?}"),
                }
                let sent = org.emulator.requests().await.unwrap();
                assert!(sent.is_empty(), "{name} sent {sent:?}");
            }
        }
    }
}
