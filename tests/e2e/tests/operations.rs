//! `perform-action`: Dataverse functions and actions, bound and unbound, run as the binary through the
//! Lambda Runtime API against the emulator's `WhoAmI`, `RetrieveTotalRecordCount` and `QualifyLead`.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(function: &mut Function, payload: &Value) -> Value {
    match function.invoke(payload).await {
        Ok(output) => output,
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

async fn start() -> (Emulator, LocalFiles, Function) {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("operations", &emulator).unwrap();
    let function = Function::start("perform-action", &[files.secrets_env()])
        .await
        .unwrap();
    (emulator, files, function)
}

#[tokio::test]
async fn functions_are_read_with_their_parameters_as_aliases() {
    let (emulator, _files, mut perform) = start().await;
    for name in ["Alpha", "Beta"] {
        emulator.create_account(name).await.unwrap();
    }
    let me = call(
        &mut perform,
        &json!({"dataset": "contoso", "function": "WhoAmI"}),
    )
    .await;
    assert!(me["UserId"].is_string(), "{me}");
    assert!(me.get("@odata.context").is_none());

    let counted = call(
        &mut perform,
        &json!({"dataset": "contoso", "function": "RetrieveTotalRecordCount",
            "parameters": {"EntityNames": ["account", "contact"]}}),
    )
    .await;
    let counts = &counted["EntityRecordCountCollection"];
    assert_eq!(counts["Keys"], json!(["account", "contact"]), "{counted}");
    assert_eq!(counts["Values"], json!([2, 0]), "{counted}");
    // The parameter travelled as an encoded alias, not in the path.
    let logged = emulator.requests().await.unwrap();
    let path = logged
        .iter()
        .filter_map(|e| e["path"].as_str())
        .find(|p| p.contains("RetrieveTotalRecordCount"))
        .unwrap()
        .to_owned();
    assert!(
        path.contains("RetrieveTotalRecordCount(EntityNames=@p1)?@p1="),
        "{path}"
    );
}

#[tokio::test]
async fn a_bound_action_runs_on_its_row_and_answers_what_dataverse_does() {
    let (emulator, _files, mut perform) = start().await;
    let (status, lead) = emulator
        .api(
            Method::POST,
            "leads",
            Some(
                &json!({"subject": "Coffee machines", "firstname": "Grace", "lastname": "Hopper",
                "companyname": "Navy Computing"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{lead}");
    let id = lead["leadid"].as_str().unwrap().to_owned();
    let qualify = json!({"dataset": "contoso", "action": "QualifyLead", "table": "leads", "id": id,
        "parameters": {"CreateAccount": true, "CreateContact": true, "CreateOpportunity": false, "Status": 3}});
    let made = call(&mut perform, &qualify).await;
    let types: Vec<&str> = made["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["@odata.type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"#Microsoft.Dynamics.CRM.account"), "{made}");
    assert!(types.contains(&"#Microsoft.Dynamics.CRM.contact"), "{made}");
    let (_, row) = emulator
        .api_get(&format!("leads({id})?$select=statecode"))
        .await
        .unwrap();
    assert_eq!(row["statecode"], 1, "qualified");

    // An action is not repeated blindly: qualifying again is Dataverse's own refusal.
    let (error_type, message) = expect_error(perform.invoke(&qualify).await, "");
    assert_eq!(error_type, "Crm.BadRequest", "{message}");
}

#[tokio::test]
async fn every_mistake_in_naming_an_operation_is_invalid_input_and_sends_nothing() {
    let (emulator, _files, mut perform) = start().await;
    let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let cases = [
        (
            json!({"dataset": "contoso", "function": "WhoAmI", "action": "QualifyLead"}),
            "action: ",
        ),
        (json!({"dataset": "contoso"}), "function: "),
        (
            json!({"dataset": "contoso", "function": "WhoAmI()/../accounts"}),
            "function: ",
        ),
        (json!({"dataset": "contoso", "action": "x y"}), "action: "),
        (
            json!({"dataset": "contoso", "function": "WhoAmI", "parameters": {"a)/x": 1}}),
            "parameters: ",
        ),
        (
            json!({"dataset": "contoso", "action": "QualifyLead", "id": id}),
            "table: ",
        ),
        (
            json!({"dataset": "contoso", "action": "QualifyLead", "table": "leads"}),
            "id: ",
        ),
    ];
    emulator.clear_requests().await.unwrap();
    for (payload, part) in cases {
        let (error_type, message) = expect_error(perform.invoke(&payload).await, "");
        assert_eq!(error_type, "Crm.InvalidInput", "{payload}: {message}");
        assert!(message.starts_with(part), "{payload}: {message}");
    }
    let sent: Vec<Value> = emulator
        .requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/data/"))
        })
        .collect();
    assert!(sent.is_empty(), "{sent:?}");
    // A name Dataverse does not know is its own answer, typed.
    let (error_type, _) = expect_error(
        perform
            .invoke(&json!({"dataset": "contoso", "function": "NoSuchFunction"}))
            .await,
        "",
    );
    assert!(
        matches!(error_type.as_str(), "Crm.NotFound" | "Crm.BadRequest"),
        "{error_type}"
    );
}
