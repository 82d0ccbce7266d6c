//! Who makes a change: each app registration is an application user of its own, stamped on what it
//! writes and answered by `WhoAmI`; the interactive user makes "somebody else's" changes through
//! the control API.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::Message;
use reqwest::Method;
use serde_json::{Value, json};
use support::Emulator;
use support::receiver::Receiver;
use support::steps::{endpoint, step};

async fn who_am_i(emulator: &Emulator) -> String {
    emulator.get_json("WhoAmI").await["UserId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn account(emulator: &Emulator, id: &str) -> Value {
    emulator
        .get_json(&format!(
            "accounts({id})?$select=name,_createdby_value,_modifiedby_value,_ownerid_value"
        ))
        .await
}

#[tokio::test]
async fn writes_are_stamped_with_the_callers_application_user() {
    let emulator = Emulator::empty().await;
    let me = who_am_i(&emulator).await;
    let interactive = emulator
        .client()
        .interactive_user()
        .await
        .unwrap()
        .to_string();
    assert_ne!(
        me, interactive,
        "an application user is not the interactive user"
    );
    // The same client id is the same user in every run.
    let again = Emulator::empty().await;
    assert_eq!(who_am_i(&again).await, me);

    let created = emulator.create("accounts", json!({"name": "Mine"})).await;
    for column in ["_createdby_value", "_modifiedby_value", "_ownerid_value"] {
        assert_eq!(created[column], me.as_str(), "{column}");
    }
    let id = created["accountid"].as_str().unwrap();
    let response = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "Still mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        account(&emulator, id).await["_modifiedby_value"],
        me.as_str()
    );

    // What was there before (the seed, a late commit) is the interactive user's.
    emulator
        .insert_row("accounts", &json!({"name": "Old"}))
        .await;
    let old = emulator
        .get_json("accounts?$select=_createdby_value,_modifiedby_value&$filter=name eq 'Old'")
        .await;
    assert_eq!(old["value"][0]["_createdby_value"], interactive.as_str());
    assert_eq!(old["value"][0]["_modifiedby_value"], interactive.as_str());
}

#[tokio::test]
async fn the_interactive_user_makes_somebody_elses_changes() {
    let emulator = Emulator::empty().await;
    let me = who_am_i(&emulator).await;
    let client = emulator.client();
    let interactive = client.interactive_user().await.unwrap().to_string();
    let id = emulator.create("accounts", json!({"name": "Shared"})).await["accountid"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = client
        .interactive(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "Edited by someone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let row = account(&emulator, &id).await;
    assert_eq!(row["name"], "Edited by someone");
    assert_eq!(row["_modifiedby_value"], interactive.as_str());
    assert_eq!(
        row["_createdby_value"],
        me.as_str(),
        "created by the app still"
    );

    let response = client
        .interactive(Method::POST, "accounts")
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Theirs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let theirs: Value = response.json().await.unwrap();
    assert_eq!(theirs["_createdby_value"], interactive.as_str());
    assert_eq!(theirs["_ownerid_value"], interactive.as_str());

    // WhoAmI asked as the interactive user answers it.
    let whoami: Value = client
        .interactive(Method::GET, "WhoAmI")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["UserId"], interactive.as_str());

    let theirs_id = theirs["accountid"].as_str().unwrap();
    let response = client
        .interactive(Method::DELETE, &format!("accounts({theirs_id})"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        emulator
            .get(format!("accounts({theirs_id})"))
            .await
            .status(),
        404
    );
    // The app's own requests are its own again afterwards.
    assert_eq!(who_am_i(&emulator).await, me);
}

#[tokio::test]
async fn each_app_registration_is_a_user_of_its_own() {
    let emulator = Emulator::empty().await;
    let first = who_am_i(&emulator).await;
    let client = emulator.client();
    client
        .set_credentials(Some("second-app"), Some("second-secret"))
        .await
        .unwrap();
    let token = client
        .access_token("second-app", "second-secret")
        .await
        .unwrap();
    let second: Value = emulator
        .http
        .get(emulator.api("WhoAmI"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = second["UserId"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let response = emulator
        .http
        .post(emulator.api("accounts"))
        .bearer_auth(&token)
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Second's"}))
        .send()
        .await
        .unwrap();
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["_createdby_value"], second.as_str());

    let users = client.users().await.unwrap();
    let names: Vec<(String, String)> = users["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        names.contains(&(first.clone(), emulator.client_id().to_owned())),
        "{users}"
    );
    assert!(
        names.contains(&(second.clone(), "second-app".to_owned())),
        "{users}"
    );
    assert_eq!(users["interactive"]["name"], "Interactive User");
}

#[tokio::test]
async fn webhook_contexts_name_the_user_who_made_the_change() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let hook = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &hook).await;
    step(&emulator, "Update", "account", &hook).await;
    let me = who_am_i(&emulator).await;
    let interactive = emulator
        .client()
        .interactive_user()
        .await
        .unwrap()
        .to_string();

    let id = emulator.create("accounts", json!({"name": "Hooked"})).await["accountid"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = emulator
        .client()
        .interactive(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "Hooked again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 2, "{log:#?}");
    let contexts: Vec<Value> = receiver
        .received()
        .iter()
        .map(support::receiver::Received::json)
        .collect();
    let by_message = |message: &str| {
        contexts
            .iter()
            .find(|c| c["MessageName"] == message)
            .unwrap_or_else(|| panic!("a {message} context in {contexts:#?}"))
            .clone()
    };
    let created = by_message("Create");
    assert_eq!(created["UserId"], me.as_str());
    assert_eq!(created["InitiatingUserId"], me.as_str());
    let updated = by_message("Update");
    assert_eq!(updated["UserId"], interactive.as_str());
    assert_eq!(updated["InitiatingUserId"], interactive.as_str());
    assert!(
        log.deliveries.iter().any(|d| d.message == Message::Update),
        "{log:#?}"
    );
}
