//! `formatted_values: true` on the triggers and on `dataverse-webhook` endpoints: events carry the
//! Web API's formatted-value and lookup annotations beside each column. The triggers ask for them on
//! plain reads only, never beside change tracking; the receiver turns a context's `FormattedValues`
//! and lookups into the same annotations. Each function runs as its binary, through the Runtime API,
//! against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dataverse_emulator::client::NewTable;
use e2e_tests::function_url::FunctionUrl;
use e2e_tests::push::{StepSpec, register};
use e2e_tests::{Emulator, Function, LocalFiles, expect_error, settle};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "formatted-events-test-key";
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

async fn create(emulator: &Emulator, set: &str, body: &Value) -> Value {
    let (status, row) = emulator.api(Method::POST, set, Some(body)).await.unwrap();
    assert_eq!(status, 201, "{row}");
    row
}

async fn invoke(function: &mut Function, payload: &Value) -> Value {
    match function.invoke(payload).await {
        Ok(output) => output,
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

#[tokio::test]
async fn trigger_events_carry_formatted_values_and_lookup_annotations() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("formatted-triggers", &emulator).unwrap();
    let mut created = Function::start("when-record-created", &files.env())
        .await
        .unwrap();
    let mut updated = Function::start("when-record-updated", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "contacts", "formatted_values": true,
        "$select": "lastname,statecode,_parentcustomerid_value", "ignore_own_changes": false});
    invoke(&mut created, &payload).await;
    invoke(&mut updated, &payload).await;
    let account = create(&emulator, "accounts", &json!({"name": "Contoso"})).await;
    let account = account["accountid"].as_str().unwrap();
    let contact = create(
        &emulator,
        "contacts",
        &json!({"lastname": "Lovelace",
            "parentcustomerid_account@odata.bind": format!("/accounts({account})")}),
    )
    .await;
    let contact = contact["contactid"].as_str().unwrap().to_owned();
    settle(&emulator).await.unwrap();
    emulator.clear_requests().await.unwrap();
    let fired = invoke(&mut created, &payload).await;
    assert_eq!(fired["value"].as_array().unwrap().len(), 1, "{fired}");
    let record = files.published().last().unwrap()["detail"]["record"].clone();
    assert_eq!(
        record[format!("statecode{FORMATTED}")],
        "Active",
        "{record}"
    );
    assert_eq!(
        record[format!("_parentcustomerid_value{FORMATTED}")],
        "Contoso",
        "{record}"
    );
    assert_eq!(
        record[format!("_parentcustomerid_value{LOOKUP_TABLE}")],
        "account"
    );

    let (status, _) = emulator
        .api(
            Method::PATCH,
            &format!("contacts({contact})"),
            Some(&json!({"statecode": 1, "statuscode": 2})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let fired = invoke(&mut updated, &payload).await;
    assert_eq!(
        fired["value"][0][format!("statecode{FORMATTED}")],
        "Inactive",
        "{fired}"
    );

    // Asked on every page read, never beside change tracking.
    let requests = emulator.requests().await.unwrap();
    let asked = |e: &&Value| {
        e["prefer"]
            .as_str()
            .is_some_and(|p| p.contains("include-annotations"))
    };
    assert!(requests.iter().filter(asked).count() >= 2, "{requests:#?}");
    assert!(
        !requests
            .iter()
            .filter(asked)
            .any(|e| e["prefer"].as_str().unwrap().contains("track-changes")),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn the_author_column_read_for_ignore_own_changes_leaves_with_its_annotations() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("formatted-own", &emulator).unwrap();
    let mut created = Function::start("when-record-created", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "formatted_values": true,
        "$select": "name", "ignore_own_changes": true});
    invoke(&mut created, &payload).await;
    let response = emulator
        .client()
        .interactive(Method::POST, "accounts")
        .json(&json!({"name": "by a person"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    settle(&emulator).await.unwrap();
    let fired = invoke(&mut created, &payload).await;
    let row = &fired["value"][0];
    assert_eq!(row["name"], "by a person", "{fired}");
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| !k.starts_with("_createdby_value")),
        "{keys:?}"
    );
    let record = files.published().last().unwrap()["detail"]["record"].clone();
    assert!(
        record
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("_createdby_value")),
        "{record}"
    );
}

#[tokio::test]
async fn the_deleted_trigger_refuses_formatted_values_naming_it() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("formatted-deleted", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "formatted_values": true});
    let (error_type, message) = expect_error(deleted.invoke(&payload).await, "formatted_values");
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.contains("formatted_values"), "{message}");
}

#[tokio::test]
async fn an_oversized_annotated_row_is_still_cut_to_its_key() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    emulator
        .client()
        .add_table(
            &NewTable::new("new_note", "new_notes", "new_noteid", "new_title")
                .column("new_body", "memo")
                .column("new_colour", "choice:1=Red,2=Blue"),
        )
        .await
        .unwrap();
    let files = LocalFiles::new("formatted-size", &emulator).unwrap();
    let mut created = Function::start("when-record-created", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "new_notes", "formatted_values": true});
    invoke(&mut created, &payload).await;
    let row = create(
        &emulator,
        "new_notes",
        &json!({"new_title": "big", "new_body": "x".repeat(300_000), "new_colour": 2}),
    )
    .await;
    let small = create(
        &emulator,
        "new_notes",
        &json!({"new_title": "small", "new_colour": 1}),
    )
    .await;
    settle(&emulator).await.unwrap();
    let fired = invoke(&mut created, &payload).await;
    assert_eq!(fired["value"].as_array().unwrap().len(), 2, "{fired}");
    let events = files.published();
    let detail =
        |id: &Value| events.iter().find(|e| e["detail"]["id"] == *id).unwrap()["detail"].clone();
    let big = detail(&row["new_noteid"]);
    assert_eq!(big["truncated"], true, "{big}");
    assert_eq!(big["record"], json!({"new_noteid": row["new_noteid"]}));
    let small = detail(&small["new_noteid"]);
    assert_eq!(small["record"][format!("new_colour{FORMATTED}")], "Red");
}

#[tokio::test]
async fn pushed_events_carry_the_contexts_formatted_values() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("formatted-push", &emulator).unwrap();
    files.set_webhook_key(&emulator, KEY).unwrap();
    let receiver = FunctionUrl::start(
        Function::start("dataverse-webhook", &files.env())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let create_step = StepSpec {
        message: "Create",
        columns: None,
        pre_image: None,
        post_image: Some(""),
    };
    register(
        &emulator,
        &format!("{}/contoso?formatted_values=true", receiver.url()),
        KEY,
        "contact",
        &[create_step],
    )
    .await
    .unwrap();
    let account = create(&emulator, "accounts", &json!({"name": "Contoso"})).await;
    let account = account["accountid"].as_str().unwrap();
    create(
        &emulator,
        "contacts",
        &json!({"lastname": "Lovelace",
            "parentcustomerid_account@odata.bind": format!("/accounts({account})")}),
    )
    .await;
    let log = emulator.client().webhook_deliveries(true).await.unwrap();
    assert_eq!(log.deliveries.len(), 1, "{log:?}");
    let events = files.published();
    let record = &events.last().unwrap()["detail"]["record"];
    assert_eq!(
        record[format!("statecode{FORMATTED}")],
        "Active",
        "{record}"
    );
    assert_eq!(
        record[format!("_parentcustomerid_value{LOOKUP_TABLE}")],
        "account",
        "{record}"
    );
    assert_eq!(
        record[format!("_parentcustomerid_value{FORMATTED}")],
        "Contoso",
        "{record}"
    );
}
