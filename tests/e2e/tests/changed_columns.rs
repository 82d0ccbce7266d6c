//! `when-record-updated` with `columns`: its events say which watched columns changed (`changed`)
//! and what they held before (`previous`), from values kept beside each row's fingerprint, in a
//! directory and in DynamoDB (moto). `dataverse-webhook` says the same from an Update step's
//! pre-image. Each function runs as its binary, through the Runtime API, against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dataverse_emulator::client::NewTable;
use e2e_tests::aws::{CURSOR_TABLE, cursor_table, dynamodb_state, scan_items};
use e2e_tests::function_url::FunctionUrl;
use e2e_tests::push::{StepSpec, register};
use e2e_tests::{Emulator, Function, LocalFiles, Moto, settle};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "changed-columns-test-key";

fn payload(extra: &Value) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts",
        "columns": ["telephone1", "name"], "$select": "name,telephone1"});
    payload
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    payload
}

/// Creates an account and ends its second, so that an update after it is not taken for the creation.
async fn create(emulator: &Emulator, body: &Value) -> String {
    let (status, row) = emulator
        .api(Method::POST, "accounts", Some(body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{row}");
    settle(emulator).await.unwrap();
    row["accountid"].as_str().unwrap().to_owned()
}

async fn patch(emulator: &Emulator, set: &str, id: &str, body: &Value) {
    let (status, row) = emulator
        .api(Method::PATCH, &format!("{set}({id})"), Some(body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{row}");
}

async fn poll(function: &mut Function, payload: &Value) -> usize {
    match function.invoke(payload).await {
        Ok(output) => output["value"].as_array().unwrap().len(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// The detail of the last event published.
fn last(files: &LocalFiles) -> Value {
    files.published().last().unwrap()["detail"].clone()
}

/// The whole story against `updated`, publishing to `files`.
async fn story(emulator: &Emulator, files: &LocalFiles, updated: &mut Function, payload: &Value) {
    // There before the trigger: its first change finds nothing kept.
    let quiet = create(emulator, &json!({"name": "quiet"})).await;
    assert_eq!(poll(updated, payload).await, 0, "a new cursor starts now");
    let a = create(emulator, &json!({"name": "A", "telephone1": "1"})).await;
    assert_eq!(
        poll(updated, payload).await,
        0,
        "a creation is not an update"
    );

    patch(emulator, "accounts", &a, &json!({"telephone1": "2"})).await;
    assert_eq!(poll(updated, payload).await, 1);
    let detail = last(files);
    assert_eq!(detail["changed"], json!(["telephone1"]), "{detail}");
    assert_eq!(detail["previous"], json!({"telephone1": "1"}), "{detail}");
    assert!(detail.get("previous_omitted").is_none(), "{detail}");

    patch(
        emulator,
        "accounts",
        &a,
        &json!({"name": "B", "telephone1": "3"}),
    )
    .await;
    assert_eq!(poll(updated, payload).await, 1);
    let detail = last(files);
    assert_eq!(
        detail["changed"],
        json!(["telephone1", "name"]),
        "in the order `columns` names them: {detail}"
    );
    assert_eq!(detail["previous"], json!({"telephone1": "2", "name": "A"}));

    patch(emulator, "accounts", &quiet, &json!({"telephone1": "9"})).await;
    assert_eq!(poll(updated, payload).await, 1);
    let detail = last(files);
    assert_eq!(
        detail["changed"],
        json!(["telephone1", "name"]),
        "nothing kept: every watched column may have changed: {detail}"
    );
    assert!(detail.get("previous").is_none(), "{detail}");

    patch(emulator, "accounts", &quiet, &json!({"name": "loud"})).await;
    assert_eq!(poll(updated, payload).await, 1);
    let detail = last(files);
    assert_eq!(detail["changed"], json!(["name"]));
    assert_eq!(detail["previous"], json!({"name": "quiet"}));
    // A null earlier value is kept as null.
    patch(emulator, "accounts", &quiet, &json!({"telephone1": null})).await;
    assert_eq!(poll(updated, payload).await, 1);
    assert_eq!(last(files)["previous"], json!({"telephone1": "9"}));
}

#[tokio::test]
async fn updated_events_name_the_changed_columns_and_their_earlier_values() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("changed-columns", &emulator).unwrap();
    let mut updated = Function::start("when-record-updated", &files.env())
        .await
        .unwrap();
    story(&emulator, &files, &mut updated, &payload(&json!({}))).await;
}

async fn dynamo_env(moto: &Moto, files: &LocalFiles) -> Vec<(String, String)> {
    cursor_table(moto, CURSOR_TABLE).await.unwrap();
    dynamodb_state(moto.env(), files)
}

/// The `fp#` items under `cursor`, by row id.
async fn fingerprint_items(
    moto: &Moto,
    cursor: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    scan_items(moto, CURSOR_TABLE)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i["pk"].as_s().unwrap() == cursor && i["sk"].as_s().unwrap().starts_with("fp#"))
        .collect()
}

#[tokio::test]
async fn dynamodb_keeps_the_values_beside_the_fingerprint_and_reads_fingerprints_kept_without_them()
{
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("changed-columns-dynamo", &emulator).unwrap();
    let moto = Moto::start().await.unwrap();
    let environment = dynamo_env(&moto, &files).await;
    let mut updated = Function::start("when-record-updated", &environment)
        .await
        .unwrap();
    let payload = payload(&json!({"trigger": "kept"}));
    story(&emulator, &files, &mut updated, &payload).await;
    let cursor = "updated/contoso/account/kept";
    let items = fingerprint_items(&moto, cursor).await;
    assert_eq!(items.len(), 2, "{items:?}");
    for item in &items {
        let kept: Value = serde_json::from_str(item["kept"].as_s().unwrap()).unwrap();
        assert!(kept["telephone1"].get("v").is_some(), "{kept}");
    }

    // An item as the previous version wrote it: a fingerprint alone, which no longer matches.
    let row = create(&emulator, &json!({"name": "legacy", "telephone1": "1"})).await;
    assert_eq!(poll(&mut updated, &payload).await, 0);
    let dynamo = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    dynamo
        .put_item()
        .table_name(CURSOR_TABLE)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(cursor.into()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("fp#{row}")),
        )
        .item(
            "fp",
            aws_sdk_dynamodb::types::AttributeValue::S("0000000000000000".into()),
        )
        .send()
        .await
        .unwrap();
    patch(&emulator, "accounts", &row, &json!({"telephone1": "2"})).await;
    assert_eq!(poll(&mut updated, &payload).await, 1);
    let detail = last(&files);
    assert_eq!(detail["changed"], json!(["telephone1", "name"]), "{detail}");
    assert!(detail.get("previous").is_none(), "{detail}");
    // Saved again with its values: the next change knows what it replaced.
    patch(&emulator, "accounts", &row, &json!({"telephone1": "3"})).await;
    assert_eq!(poll(&mut updated, &payload).await, 1);
    assert_eq!(last(&files)["previous"], json!({"telephone1": "2"}));
}

#[tokio::test]
async fn a_value_past_the_budget_is_kept_as_its_hash_and_left_out_of_previous() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    emulator
        .client()
        .add_table(
            &NewTable::new("new_note", "new_notes", "new_noteid", "new_title")
                .column("new_body", "memo"),
        )
        .await
        .unwrap();
    let files = LocalFiles::new("changed-columns-budget", &emulator).unwrap();
    let mut updated = Function::start("when-record-updated", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "new_notes",
        "columns": "new_body,new_title"});
    assert_eq!(poll(&mut updated, &payload).await, 0);
    let big = "x".repeat(5000);
    let (status, row) = emulator
        .api(
            Method::POST,
            "new_notes",
            Some(&json!({"new_title": "T", "new_body": big})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{row}");
    settle(&emulator).await.unwrap();
    let id = row["new_noteid"].as_str().unwrap().to_owned();
    assert_eq!(poll(&mut updated, &payload).await, 0);

    // The same large value again, with the title changed: the hash tells it did not change.
    patch(
        &emulator,
        "new_notes",
        &id,
        &json!({"new_title": "T2", "new_body": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(poll(&mut updated, &payload).await, 1);
    let detail = last(&files);
    assert_eq!(detail["changed"], json!(["new_title"]), "{detail}");
    assert_eq!(detail["previous"], json!({"new_title": "T"}));

    patch(
        &emulator,
        "new_notes",
        &id,
        &json!({"new_title": "T3", "new_body": "short"}),
    )
    .await;
    assert_eq!(poll(&mut updated, &payload).await, 1);
    let detail = last(&files);
    assert_eq!(
        detail["changed"],
        json!(["new_body", "new_title"]),
        "{detail}"
    );
    assert_eq!(detail["previous"], json!({"new_title": "T2"}));
    assert_eq!(detail["previous_omitted"], json!(["new_body"]));
}

/// Deliveries of `emulator` settled, all answered 200.
async fn delivered(emulator: &Emulator, count: usize) {
    let log = emulator.client().webhook_deliveries(true).await.unwrap();
    assert!(!log.timed_out && log.pending == 0, "{log:?}");
    assert_eq!(log.deliveries.len(), count, "{log:?}");
    assert!(
        log.deliveries
            .iter()
            .all(|d| d.attempts.last().and_then(|a| a.status) == Some(200)),
        "{log:?}"
    );
    emulator.client().clear_webhook_deliveries().await.unwrap();
}

#[tokio::test]
async fn a_pushed_update_compares_the_pre_image_with_the_post_image() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("changed-columns-push", &emulator).unwrap();
    files.set_webhook_key(&emulator, KEY).unwrap();
    let receiver = FunctionUrl::start(
        Function::start("dataverse-webhook", &files.env())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let url = format!("{}/contoso", receiver.url());
    let with_pre_image = StepSpec {
        message: "Update",
        columns: Some("telephone1,name"),
        pre_image: Some("telephone1,name"),
        post_image: Some(""),
    };
    register(&emulator, &url, KEY, "account", &[with_pre_image])
        .await
        .unwrap();
    let id = create(&emulator, &json!({"name": "A", "telephone1": "1"})).await;
    patch(
        &emulator,
        "accounts",
        &id,
        &json!({"telephone1": "2", "description": "d"}),
    )
    .await;
    delivered(&emulator, 1).await;
    let detail = last(&files);
    assert_eq!(detail["via"], "webhook");
    assert_eq!(
        detail["changed"],
        json!(["description", "telephone1"]),
        "the columns the request set or the pre-image holds that differ: {detail}"
    );
    assert_eq!(
        detail["previous"],
        json!({"telephone1": "1", "description": null})
    );
    patch(&emulator, "accounts", &id, &json!({"name": "A"})).await;
    delivered(&emulator, 1).await;
    let detail = last(&files);
    assert_eq!(detail["changed"], json!([]), "set to what it was: {detail}");

    // A post-image of fewer columns than the pre-image: a column in neither it nor the request
    // is not known to have changed, and is not reported as changed to null.
    let narrow = StepSpec {
        message: "Update",
        columns: None,
        pre_image: Some("telephone1,name"),
        post_image: Some("telephone1,versionnumber"),
    };
    register(
        &emulator,
        &format!("{url}?narrow=1"),
        KEY,
        "account",
        &[narrow],
    )
    .await
    .unwrap();
    patch(&emulator, "accounts", &id, &json!({"telephone1": "3"})).await;
    delivered(&emulator, 2).await;
    let events = files.published();
    let narrow = events
        .iter()
        .rev()
        .take(2)
        .map(|e| &e["detail"])
        .find(|d| d["record"].get("name").is_none())
        .unwrap_or_else(|| panic!("no event from the narrow post-image: {events:#?}"));
    assert_eq!(
        narrow["changed"],
        json!(["telephone1"]),
        "the name, in neither the post-image nor the request, is left out: {narrow}"
    );
    assert_eq!(narrow["previous"], json!({"telephone1": "2"}), "{narrow}");

    // A step without a pre-image: the event cannot say, and says nothing.
    let without = StepSpec {
        message: "Update",
        columns: None,
        pre_image: None,
        post_image: Some(""),
    };
    register(&emulator, &format!("{url}?x=1"), KEY, "contact", &[without])
        .await
        .unwrap();
    let (status, contact) = emulator
        .api(Method::POST, "contacts", Some(&json!({"lastname": "L"})))
        .await
        .unwrap();
    assert_eq!(status, 201, "{contact}");
    settle(&emulator).await.unwrap();
    let contact = contact["contactid"].as_str().unwrap().to_owned();
    patch(&emulator, "contacts", &contact, &json!({"lastname": "M"})).await;
    delivered(&emulator, 1).await;
    let detail = last(&files);
    assert_eq!(detail["table"], "contacts");
    assert!(detail.get("changed").is_none(), "{detail}");
    assert!(detail.get("previous").is_none(), "{detail}");
}
