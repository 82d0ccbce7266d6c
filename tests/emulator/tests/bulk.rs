//! `CreateMultiple`, `UpdateMultiple` and `UpsertMultiple`: their request and answer shapes, their
//! refusals, all or nothing on a standard table, and the single-row steps they fire per target.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::Message;
use reqwest::Method;
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::steps::{endpoint, step};
use support::{Emulator, expect_error};

const ACCOUNT: &str = "Microsoft.Dynamics.CRM.account";

async fn bulk(emulator: &Emulator, path: &str, targets: Value) -> reqwest::Response {
    bulk_with(emulator, path, json!({ "Targets": targets }), &[]).await
}

async fn bulk_with(
    emulator: &Emulator,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = emulator.request(Method::POST, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.json(&body).send().await.unwrap()
}

/// `{name: accountnumber}` of every account, sorted by name.
async fn table(emulator: &Emulator) -> Vec<(String, Value)> {
    let body = emulator
        .get_json("accounts?$select=name,accountnumber&$orderby=name")
        .await;
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["accountnumber"].clone(),
            )
        })
        .collect()
}

async fn account_id(emulator: &Emulator, name: &str, number: &str) -> String {
    emulator
        .create("accounts", json!({"name": name, "accountnumber": number}))
        .await["accountid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn create_multiple_answers_the_new_ids_in_target_order() {
    let emulator = Emulator::empty().await;
    let me = emulator.get_json("WhoAmI").await["UserId"].clone();
    let chosen = "8f4c3f92-312b-ee11-bdf4-000d3a993550";
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json!([
            {"@odata.type": ACCOUNT, "name": "one"},
            {"@odata.type": ACCOUNT, "name": "two", "accountid": chosen},
            {"@odata.type": format!("#{ACCOUNT}"), "name": "three"},
        ]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"),
        "{body}"
    );
    let ids = body["Ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], chosen);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    for (id, name) in ids.iter().zip(["one", "two", "three"]) {
        let row = emulator
            .get_json(&format!(
                "accounts({})?$select=name,_createdby_value",
                id.as_str().unwrap()
            ))
            .await;
        assert_eq!(row["name"], name);
        assert_eq!(row["_createdby_value"], me);
    }
}

#[tokio::test]
async fn update_multiple_names_rows_by_id_or_alternate_key() {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "new_accountnumber", &["accountnumber"])
        .await;
    let first = account_id(&emulator, "a", "A-1").await;
    account_id(&emulator, "b", "B-1").await;
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpdateMultiple",
        json!([
            {"@odata.type": ACCOUNT, "accountid": first, "name": "a updated"},
            {"@odata.type": ACCOUNT, "@odata.id": "accounts(accountnumber='B-1')", "name": "b updated"},
            // The same row again: "performed on the first record only", the rest ignored.
            {"@odata.type": ACCOUNT, "@odata.id": format!("accounts({first})"), "name": "ignored"},
        ]),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(
        table(&emulator).await,
        [
            ("a updated".to_owned(), json!("A-1")),
            ("b updated".to_owned(), json!("B-1"))
        ]
    );
}

#[tokio::test]
async fn upsert_multiple_creates_or_updates_each_target() {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "new_accountnumber", &["accountnumber"])
        .await;
    let existing = account_id(&emulator, "old name", "A-1").await;
    let new_id = "904c3f92-312b-ee11-bdf4-000d3a993550";
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        json!([
            {"@odata.type": ACCOUNT, "name": "updated by key", "@odata.id": "accounts(accountnumber='A-1')"},
            {"@odata.type": ACCOUNT, "name": "created by key", "@odata.id": "accounts(accountnumber='A-2')"},
            {"@odata.type": ACCOUNT, "name": "created by id", "accountid": new_id},
            {"@odata.type": ACCOUNT, "name": "created", "accountnumber": "A-3"},
        ]),
    )
    .await;
    assert_eq!(
        response.status(),
        204,
        "UpsertMultipleResponse is not returned"
    );
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(
        table(&emulator).await,
        [
            ("created".to_owned(), json!("A-3")),
            ("created by id".to_owned(), Value::Null),
            ("created by key".to_owned(), json!("A-2")),
            ("updated by key".to_owned(), json!("A-1")),
        ]
    );
    let row = emulator
        .get_json(&format!("accounts({existing})?$select=name"))
        .await;
    assert_eq!(row["name"], "updated by key");
    assert_eq!(
        emulator.get(format!("accounts({new_id})")).await.status(),
        200
    );

    // Two targets naming one row are refused, and nothing is written.
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        json!([
            {"@odata.type": ACCOUNT, "name": "x", "@odata.id": "accounts(accountnumber='A-9')"},
            {"@odata.type": ACCOUNT, "name": "y", "@odata.id": "accounts(accountnumber='A-9')"},
        ]),
    )
    .await;
    expect_error(
        response,
        400,
        "0x80040203",
        "same primary key or alternate key",
    )
    .await;
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        json!([
            {"@odata.type": ACCOUNT, "name": "x", "accountid": existing},
            {"@odata.type": ACCOUNT, "name": "y", "@odata.id": "accounts(accountnumber='A-1')"},
        ]),
    )
    .await;
    expect_error(
        response,
        400,
        "0x80040203",
        "same primary key or alternate key",
    )
    .await;
    assert_eq!(table(&emulator).await.len(), 4);
}

#[tokio::test]
async fn malformed_requests_are_refused_with_dataverses_errors() {
    let emulator = Emulator::empty().await;
    let id = account_id(&emulator, "only", "O-1").await;
    let create = "accounts/Microsoft.Dynamics.CRM.CreateMultiple";
    let update = "accounts/Microsoft.Dynamics.CRM.UpdateMultiple";
    let cases: Vec<(&str, Value, u16, &str, String)> = vec![
        (
            create,
            json!({"Targets": [{"name": "untyped"}]}),
            400,
            "0x80040203",
            "EdmEntityObject passed should have the key property value set.".to_owned(),
        ),
        (
            create,
            json!({"Targets": [{"@odata.type": ACCOUNT, "name": "ok"}, {"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": "other"}]}),
            400,
            "0x80040203",
            "The record at index 1 of Targets is of the table 'contact'".to_owned(),
        ),
        (
            create,
            json!({"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.nothing", "name": "x"}]}),
            400,
            "0x80048d19",
            "A type named 'Microsoft.Dynamics.CRM.nothing' could not be resolved by the model."
                .to_owned(),
        ),
        (
            create,
            json!({"Targets": []}),
            400,
            "0x80040203",
            "must contain at least one record".to_owned(),
        ),
        (
            create,
            json!({}),
            400,
            "0x80048d19",
            "The missing parameters are: Targets.".to_owned(),
        ),
        (
            create,
            json!({"Targets": [{"@odata.type": ACCOUNT, "name": "x"}], "Other": 1}),
            400,
            "0x80048d19",
            "The parameter 'Other' in the request payload is not a valid parameter for the operation 'CreateMultiple'."
                .to_owned(),
        ),
        (
            create,
            json!({"Targets": [{"@odata.type": ACCOUNT, "nosuchcolumn": 1}]}),
            400,
            "0x0",
            "Invalid property 'nosuchcolumn' was found".to_owned(),
        ),
        (
            update,
            json!({"Targets": [{"@odata.type": ACCOUNT, "name": "no key"}]}),
            400,
            "0x80040203",
            "has no accountid and no @odata.id".to_owned(),
        ),
        (
            update,
            json!({"Targets": [{"@odata.type": ACCOUNT, "accountid": "00000000-0000-0000-0000-000000000001", "name": "gone"}]}),
            404,
            "0x80040217",
            "Account With Ids = 00000000-0000-0000-0000-000000000001 Do Not Exist".to_owned(),
        ),
        (
            update,
            json!({"Targets": [{"@odata.type": ACCOUNT, "@odata.id": "contacts(00000000-0000-0000-0000-000000000001)", "name": "x"}]}),
            400,
            "0x80040203",
            "does not address a row of 'accounts'".to_owned(),
        ),
        (
            update,
            json!({"Targets": [{"@odata.type": ACCOUNT, "@odata.id": format!("accounts({id})"), "accountid": "00000000-0000-0000-0000-000000000002"}]}),
            400,
            "0x80040203",
            "Entity Id must be the same as the value set in property bag.".to_owned(),
        ),
        (
            create,
            json!({"Targets": [{"@odata.type": ACCOUNT, "accountid": id, "name": "again"}]}),
            412,
            "0x80040237",
            "A record with matching key values already exists.".to_owned(),
        ),
    ];
    for (path, body, status, code, message) in cases {
        let response = bulk_with(&emulator, path, body.clone(), &[]).await;
        expect_error(response, status, code, &message).await;
    }
    // Bound to the collection, not to a row; an action, so POST only.
    expect_error(
        bulk(
            &emulator,
            &format!("accounts({id})/Microsoft.Dynamics.CRM.CreateMultiple"),
            json!([{"@odata.type": ACCOUNT, "name": "x"}]),
        )
        .await,
        404,
        "0x8006088a",
        "Resource not found for the segment 'Microsoft.Dynamics.CRM.CreateMultiple'.",
    )
    .await;
    let response = emulator.get(create).await;
    expect_error(response, 404, "", "No HTTP resource was found").await;
    assert_eq!(table(&emulator).await, [("only".to_owned(), json!("O-1"))]);
}

#[tokio::test]
async fn a_bad_target_in_the_middle_leaves_the_table_unchanged() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &hook).await;
    step(&emulator, "Update", "account", &hook).await;
    emulator
        .add_key("account", "new_accountnumber", &["accountnumber"])
        .await;
    let id = account_id(&emulator, "kept", "K-1").await;
    let marker = emulator.create("accounts", json!({"name": "marker"})).await["versionnumber"]
        .as_u64()
        .unwrap();
    emulator.settled_deliveries().await;
    emulator.clear_deliveries().await;
    let before = table(&emulator).await;
    let version_path = format!("accounts({id})?$select=versionnumber");
    let version_before = emulator.get_json(&version_path).await["versionnumber"].clone();
    let too_long = "x".repeat(161);
    let cases = [
        (
            "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
            json!([
                {"@odata.type": ACCOUNT, "name": "first"},
                {"@odata.type": ACCOUNT, "name": too_long},
                {"@odata.type": ACCOUNT, "name": "third"},
            ]),
            400,
            "0x80044331",
        ),
        (
            // Two new rows sharing an alternate key's values.
            "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
            json!([
                {"@odata.type": ACCOUNT, "name": "first", "accountnumber": "D-1"},
                {"@odata.type": ACCOUNT, "name": "second", "accountnumber": "D-1"},
            ]),
            412,
            "0x80060892",
        ),
        (
            "accounts/Microsoft.Dynamics.CRM.UpdateMultiple",
            json!([
                {"@odata.type": ACCOUNT, "accountid": id, "name": "changed"},
                {"@odata.type": ACCOUNT, "accountid": "00000000-0000-0000-0000-000000000009", "name": "gone"},
            ]),
            404,
            "0x80040217",
        ),
        (
            "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
            json!([
                {"@odata.type": ACCOUNT, "@odata.id": format!("accounts({id})"), "name": "changed"},
                {"@odata.type": ACCOUNT, "name": "new", "numberofemployees": "many"},
            ]),
            400,
            "0x80048d19",
        ),
        (
            "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
            json!([
                {"@odata.type": ACCOUNT, "@odata.id": format!("accounts({id})"), "name": "changed"},
                {"@odata.type": ACCOUNT, "name": "steals the key", "accountnumber": "K-1"},
            ]),
            412,
            "0x80060892",
        ),
    ];
    for (path, targets, status, code) in cases {
        let response = bulk(&emulator, path, targets).await;
        expect_error(response, status, code, "").await;
        assert_eq!(table(&emulator).await, before, "{path}");
        assert_eq!(
            emulator.get_json(&version_path).await["versionnumber"],
            version_before,
            "{path}"
        );
    }
    let log = emulator.settled_deliveries().await;
    assert!(log.deliveries.is_empty(), "{log:#?}");
    // The org-wide version did not move: the next write takes the one the failures gave back.
    let next = emulator.create("accounts", json!({"name": "next"})).await["versionnumber"]
        .as_u64()
        .unwrap();
    assert_eq!(next, marker + 1);
}

#[tokio::test]
async fn each_target_fires_the_single_row_steps_and_flows() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &hook).await;
    step(&emulator, "Update", "account", &hook).await;
    let client = emulator.client();
    client
        .register_flow("account", Message::Create)
        .await
        .unwrap();
    client
        .register_flow("account", Message::Update)
        .await
        .unwrap();
    let existing = account_id(&emulator, "existing", "E-1").await;
    emulator.settled_deliveries().await;
    emulator.clear_deliveries().await;

    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json!([
            {"@odata.type": ACCOUNT, "name": "c1"},
            {"@odata.type": ACCOUNT, "name": "c2"},
            {"@odata.type": ACCOUNT, "name": "c3"},
        ]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
        json!([
            {"@odata.type": ACCOUNT, "accountid": existing, "name": "existing updated"},
            {"@odata.type": ACCOUNT, "name": "u1"},
        ]),
    )
    .await;
    assert_eq!(response.status(), 204);
    let log = emulator.settled_deliveries().await;
    let count = |message: Message| {
        log.deliveries
            .iter()
            .filter(|d| d.message == message)
            .count()
    };
    assert_eq!(
        (count(Message::Create), count(Message::Update)),
        (4, 1),
        "{log:#?}"
    );
    let contexts: Vec<Value> = receiver
        .received()
        .iter()
        .map(support::receiver::Received::json)
        .collect();
    assert!(
        contexts
            .iter()
            .all(|c| c["MessageName"] == "Create" || c["MessageName"] == "Update"),
        "single-row messages: {contexts:#?}"
    );
    emulator.clear_deliveries().await;

    // Under the bypass headers: no asynchronous step, no flow job.
    let response = bulk_with(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.UpdateMultiple",
        json!({"Targets": [
            {"@odata.type": ACCOUNT, "accountid": existing, "name": "quiet"},
        ]}),
        &[
            ("MSCRM.BypassBusinessLogicExecution", "CustomAsync"),
            ("MSCRM.SuppressCallbackRegistrationExpanderJob", "true"),
        ],
    )
    .await;
    assert_eq!(response.status(), 204);
    let log = emulator.settled_deliveries().await;
    assert!(log.deliveries.is_empty(), "{log:#?}");
    let flows = client.flows().await.unwrap();
    let counts: Vec<(u64, u64)> = flows
        .iter()
        .map(|f| {
            (
                f["jobs"].as_u64().unwrap(),
                f["suppressed"].as_u64().unwrap(),
            )
        })
        .collect();
    // Create: the existing row, three created, one upserted; Update: one upserted, one suppressed.
    assert_eq!(counts, [(5, 0), (1, 1)]);
    let requests = emulator.requests().await;
    let last = requests
        .iter()
        .rev()
        .find(|r| r["path"].as_str().unwrap().contains("UpdateMultiple"))
        .unwrap();
    assert_eq!(
        last["bypass"],
        json!(["CustomAsync", "SuppressCallbackRegistrationExpanderJob"])
    );
}

#[tokio::test]
async fn a_bulk_message_is_one_request_to_service_protection() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .control(Method::POST, "service-protection", json!({"enabled": true}))
        .await;
    assert_eq!(response.status(), 200);
    let targets: Vec<Value> = (0..50)
        .map(|i| json!({"@odata.type": ACCOUNT, "name": format!("row {i}")}))
        .collect();
    let response = bulk(
        &emulator,
        "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json!(targets),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-ms-ratelimit-burst-remaining-xrm-requests"],
        "5999"
    );
    let state: Value = emulator
        .control(Method::GET, "service-protection", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        state["users"][emulator.client_id()]["requests"],
        1,
        "{state}"
    );
}

#[tokio::test]
async fn a_bulk_message_in_a_changeset_is_undone_with_it() {
    let emulator = Emulator::empty().await;
    let create = json!({"Targets": [
        {"@odata.type": ACCOUNT, "name": "in the changeset"},
        {"@odata.type": ACCOUNT, "name": "and another"},
    ]});
    let part = |content_id: u32, method: &str, url: &str, body: &Value| {
        format!(
            "--changeset_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {content_id}\r\n\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}\r\n"
        )
    };
    let body = format!(
        "--batch_T\r\nContent-Type: multipart/mixed; boundary=\"changeset_1\"\r\n\r\n{}{}--changeset_1--\r\n--batch_T--\r\n",
        part(
            1,
            "POST",
            &emulator.api("accounts/Microsoft.Dynamics.CRM.CreateMultiple"),
            &create
        ),
        // Fails: the changeset, the bulk message in it included, is undone.
        part(
            2,
            "POST",
            &emulator.api("accounts"),
            &json!({"nosuchcolumn": 1})
        ),
    );
    let response = emulator
        .request(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=batch_T")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(table(&emulator).await.is_empty());
}
