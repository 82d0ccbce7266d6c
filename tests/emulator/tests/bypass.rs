//! The request headers that bypass custom logic and flows: read strictly, checked against the
//! caller's privileges, and honoured by webhook steps and flow triggers.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::Message;
use reqwest::Method;
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::steps::{endpoint, step};
use support::{Emulator, expect_error};

const PLUGINS: &str = "MSCRM.BypassCustomPluginExecution";
const LOGIC: &str = "MSCRM.BypassBusinessLogicExecution";
const STEPS: &str = "MSCRM.BypassBusinessLogicExecutionStepIds";
const FLOWS: &str = "MSCRM.SuppressCallbackRegistrationExpanderJob";

/// Creates an account named `name` with `headers`; the response.
async fn create(emulator: &Emulator, name: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = emulator.request(Method::POST, "accounts");
    for (header, value) in headers {
        request = request.header(*header, *value);
    }
    request.json(&json!({"name": name})).send().await.unwrap()
}

async fn created(emulator: &Emulator, name: &str, headers: &[(&str, &str)]) -> String {
    let response = create(emulator, name, headers).await;
    assert_eq!(response.status(), 204, "{name} {headers:?}");
    let address = response.headers()["odata-entityid"].to_str().unwrap();
    address[address.rfind('(').unwrap() + 1..address.len() - 1].to_owned()
}

async fn accounts(emulator: &Emulator) -> usize {
    emulator.get_json("accounts?$select=name").await["value"]
        .as_array()
        .unwrap()
        .len()
}

/// A create: its name, its headers, whether the step hears of it, and the request log's `bypass`.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool, Value);

/// The `bypass` of the last request in the log.
async fn logged_bypass(emulator: &Emulator) -> Value {
    let log = emulator.requests().await;
    log.last()
        .unwrap()
        .get("bypass")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn bypass_headers_are_read_strictly() {
    let emulator = Emulator::empty().await;
    let step_id = "45e0c603-0d0b-466e-a286-d7fc1cda8361";
    let four = [step_id; 4]
        .iter()
        .enumerate()
        .map(|(i, _)| format!("45e0c603-0d0b-466e-a286-d7fc1cda836{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for (header, value) in [
        (PLUGINS, "yes"),
        (PLUGINS, ""),
        (LOGIC, "CustomSync;CustomAsync"),
        (LOGIC, "customsync"),
        (LOGIC, "CustomSync,"),
        (STEPS, "not-a-step"),
        (STEPS, four.as_str()),
        (FLOWS, "1"),
    ] {
        let response = create(&emulator, "refused", &[(header, value)]).await;
        expect_error(response, 400, "0x80040203", header).await;
    }
    assert_eq!(accounts(&emulator).await, 0, "nothing was written");

    // Each documented value is taken, the step ids also quoted as Learn writes them.
    for (header, value) in [
        (PLUGINS, "true"),
        (PLUGINS, "false"),
        (LOGIC, "CustomSync"),
        (LOGIC, "CustomAsync"),
        (LOGIC, "CustomSync,CustomAsync"),
        (STEPS, step_id),
        (
            STEPS,
            "\"45e0c603-0d0b-466e-a286-d7fc1cda8361, d5370603-e4b9-4b92-b765-5966492a4fd7\"",
        ),
        (FLOWS, "true"),
    ] {
        created(&emulator, "taken", &[(header, value)]).await;
    }
    // A read is not a write: its headers are not read.
    let response = emulator
        .request(Method::GET, "accounts?$select=name")
        .header(PLUGINS, "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn custom_async_and_step_ids_skip_asynchronous_steps_and_sync_bypasses_do_not() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&emulator, &receiver.url).await;
    let step_id = step(&emulator, "Create", "account", &hook).await;
    let other_step = "d5370603-e4b9-4b92-b765-5966492a4fd7";

    let cases: [Case; 8] = [
        ("plain", vec![], true, Value::Null),
        (
            "async",
            vec![(LOGIC, "CustomAsync")],
            false,
            json!(["CustomAsync"]),
        ),
        (
            "both",
            vec![(LOGIC, "CustomSync,CustomAsync")],
            false,
            json!(["CustomAsync", "CustomSync"]),
        ),
        (
            "sync",
            vec![(LOGIC, "CustomSync")],
            true,
            json!(["CustomSync"]),
        ),
        (
            "plugins",
            vec![(PLUGINS, "true")],
            true,
            json!(["BypassCustomPluginExecution"]),
        ),
        (
            "this step",
            vec![(STEPS, step_id.as_str())],
            false,
            json!(["BypassBusinessLogicExecutionStepIds"]),
        ),
        (
            "another step",
            vec![(STEPS, other_step)],
            true,
            json!(["BypassBusinessLogicExecutionStepIds"]),
        ),
        (
            "flows only",
            vec![(FLOWS, "true")],
            true,
            json!(["SuppressCallbackRegistrationExpanderJob"]),
        ),
    ];
    let mut expected = Vec::new();
    for (name, headers, fires, logged) in &cases {
        let id = created(&emulator, name, headers).await;
        assert_eq!(&logged_bypass(&emulator).await, logged, "{name}");
        expected.push((id, *fires, *name));
    }
    let log = emulator.settled_deliveries().await;
    for (id, fires, name) in expected {
        let delivered = log
            .deliveries
            .iter()
            .filter(|d| d.row.to_string() == id)
            .count();
        assert_eq!(delivered, usize::from(fires), "{name}: {log:#?}");
    }
}

#[tokio::test]
async fn a_bypass_needs_its_privilege() {
    let emulator = Emulator::empty().await;
    let client = emulator.client();
    let me = emulator.get_json("WhoAmI").await["UserId"]
        .as_str()
        .unwrap()
        .to_owned();
    let users = client.users().await.unwrap();
    assert_eq!(
        users["applications"][0]["privileges"],
        json!({"prvBypassCustomBusinessLogic": true, "prvBypassCustomPlugins": true}),
        "an application user is a system administrator: {users}"
    );

    client
        .set_privilege(emulator.client_id(), "prvBypassCustomPlugins", false)
        .await
        .unwrap();
    let body = expect_error(
        create(&emulator, "denied", &[(PLUGINS, "true")]).await,
        403,
        "0x80040220",
        "is missing prvBypassCustomPlugins privilege (Id=148a9eaf-d0c4-4196-9852-c3a38e35f6a1) on OTC=1 for entity 'account'",
    )
    .await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("Principal user (Id={me}, ")),
        "{message}"
    );
    // Not asking for it, or asking for what the other privilege covers, is fine.
    created(&emulator, "not asked", &[(PLUGINS, "false")]).await;
    created(&emulator, "other privilege", &[(LOGIC, "CustomSync")]).await;
    // Suppressing flows needs no privilege at all.
    client
        .set_privilege(emulator.client_id(), "prvBypassCustomBusinessLogic", false)
        .await
        .unwrap();
    for headers in [
        [(LOGIC, "CustomAsync")],
        [(STEPS, "d5370603-e4b9-4b92-b765-5966492a4fd7")],
    ] {
        expect_error(
            create(&emulator, "denied", &headers).await,
            403,
            "0x80040220",
            "is missing prvBypassCustomBusinessLogic privilege (Id=0ea552b0-a491-4470-9a1b-82068deccf66)",
        )
        .await;
    }
    created(&emulator, "flows", &[(FLOWS, "true")]).await;
    assert_eq!(
        accounts(&emulator).await,
        3,
        "the refused requests wrote nothing"
    );

    // The interactive user is not an application user: its privileges are not taken away.
    let response = client
        .interactive(Method::POST, "accounts")
        .header(PLUGINS, "true")
        .json(&json!({"name": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    client
        .set_privilege(emulator.client_id(), "prvBypassCustomPlugins", true)
        .await
        .unwrap();
    created(&emulator, "granted again", &[(PLUGINS, "true")]).await;
    let users = client.users().await.unwrap();
    assert_eq!(
        users["applications"][0]["privileges"],
        json!({"prvBypassCustomBusinessLogic": false, "prvBypassCustomPlugins": true})
    );
    // A refusal of the control API's own.
    let response = emulator
        .control(
            Method::POST,
            "users/privileges",
            json!({"client_id": "x", "privilege": "prvSomethingElse", "granted": false}),
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn suppressing_callback_registrations_starts_no_flow_jobs() {
    let emulator = Emulator::empty().await;
    let client = emulator.client();
    client
        .register_flow("account", Message::Create)
        .await
        .unwrap();
    client
        .register_flow("accounts", Message::Update)
        .await
        .unwrap();
    let counts = || async {
        client
            .flows()
            .await
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["message"].as_str().unwrap().to_owned(),
                    f["jobs"].as_u64().unwrap(),
                    f["suppressed"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };

    let id = created(&emulator, "starts a flow", &[]).await;
    assert_eq!(
        counts().await,
        [("Create".into(), 1, 0), ("Update".into(), 0, 0)]
    );
    created(&emulator, "suppressed", &[(FLOWS, "true")]).await;
    created(&emulator, "not suppressed", &[(FLOWS, "false")]).await;
    assert_eq!(
        counts().await,
        [("Create".into(), 2, 1), ("Update".into(), 0, 0)]
    );
    // Custom-logic bypasses leave flows alone ("excluding Power Automate Flows").
    created(
        &emulator,
        "custom only",
        &[(LOGIC, "CustomSync,CustomAsync")],
    )
    .await;
    let response = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "updated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Somebody else's change starts flows too; a late commit through the control API does not.
    let response = client
        .interactive(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "updated again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    emulator
        .insert_row("accounts", &json!({"name": "late"}))
        .await;
    assert_eq!(
        counts().await,
        [("Create".into(), 3, 1), ("Update".into(), 2, 0)]
    );
    let unknown = emulator
        .control(
            Method::POST,
            "flows",
            json!({"table": "nothing", "message": "Create"}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn batch_parts_carry_their_own_bypass_headers() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &hook).await;
    let part = |name: &str, header: Option<&str>| {
        let extra = header.map_or(String::new(), |h| format!("{h}\r\n"));
        format!(
            "--batch_T\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPOST accounts HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n{extra}\r\n{}\r\n",
            json!({"name": name})
        )
    };
    let body = format!(
        "{}{}{}--batch_T--\r\n",
        part("fires", None),
        part(
            "skipped",
            Some("MSCRM.BypassBusinessLogicExecution: CustomAsync")
        ),
        part("refused", Some("MSCRM.BypassCustomPluginExecution: maybe")),
    );
    let response = emulator
        .request(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=batch_T")
        .header("Prefer", "odata.continue-on-error")
        // The batch's own headers are not its parts'.
        .header(LOGIC, "CustomAsync")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("0x80040203"), "{text}");
    let names: Vec<String> = emulator.get_json("accounts?$select=name").await["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 1, "{log:#?}");
    let log = emulator.requests().await;
    let batch = log
        .iter()
        .find(|entry| entry["path"].as_str().unwrap().ends_with("$batch"))
        .unwrap();
    assert_eq!(batch["bypass"], json!(["CustomAsync"]), "{batch}");
}
