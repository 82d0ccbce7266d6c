//! `formatted_values: true` on the read actions: choice labels, yes/no labels, money and number
//! formatting, and each lookup's name and table, as Dataverse annotates them, run through the Lambda
//! Runtime API against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";
const NAVIGATION: &str = "@Microsoft.Dynamics.CRM.associatednavigationproperty";

struct Org {
    _emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("formatted-values", &emulator).unwrap();
        Self {
            _emulator: emulator,
            files,
        }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &[self.files.secrets_env()])
            .await
            .unwrap()
    }
}

/// The names of the row's annotations (keys with an `@` after their first character).
fn annotations(row: &Value) -> Vec<String> {
    row.as_object()
        .unwrap()
        .keys()
        .filter(|k| k.find('@').is_some_and(|at| at > 0))
        .cloned()
        .collect()
}

/// An account with a choice, a yes/no and money set, and a contact whose company is that account.
async fn account_and_contact(org: &Org) -> (String, String) {
    let mut create = org.function("create-record").await;
    let account = create
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "item": {
            "name": "Fabrikam", "revenue": 5_000_000, "creditonhold": true, "industrycode": 1,
            "numberofemployees": 4300}}))
        .await
        .unwrap();
    let account_id = account["accountid"].as_str().unwrap().to_owned();
    let contact = create
        .invoke(&json!({"dataset": "contoso", "table": "contacts", "item": {
            "firstname": "Ada", "lastname": "Lovelace",
            "parentcustomerid_account@odata.bind": format!("/accounts({account_id})")}}))
        .await
        .unwrap();
    let contact_id = contact["contactid"].as_str().unwrap().to_owned();
    (account_id, contact_id)
}

#[tokio::test]
async fn get_record_labels_choices_money_and_lookups_only_when_asked() {
    let org = Org::start().await;
    let (account_id, contact_id) = account_and_contact(&org).await;
    let mut get = org.function("get-record").await;

    let plain = get
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": account_id}))
        .await
        .unwrap();
    assert_eq!(
        annotations(&plain),
        Vec::<String>::new(),
        "nothing unless asked"
    );

    let account = get
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": account_id,
                        "$select": "name,revenue,creditonhold,industrycode,numberofemployees,statecode",
                        "formatted_values": true}))
        .await
        .unwrap();
    assert_eq!(account[format!("statecode{FORMATTED}")], "Active");
    assert_eq!(account[format!("creditonhold{FORMATTED}")], "Yes");
    assert_eq!(account[format!("industrycode{FORMATTED}")], "Accounting");
    assert_eq!(account[format!("revenue{FORMATTED}")], "$5,000,000.00");
    assert_eq!(account[format!("numberofemployees{FORMATTED}")], "4,300");
    // The values themselves are unchanged.
    assert_eq!(account["statecode"], 0);
    assert_eq!(account["creditonhold"], true);

    let contact = get
        .invoke(
            &json!({"dataset": "contoso", "table": "contacts", "id": contact_id,
                        "$select": "fullname,_parentcustomerid_value", "formatted_values": true}),
        )
        .await
        .unwrap();
    assert_eq!(contact["_parentcustomerid_value"], account_id.as_str());
    assert_eq!(
        contact[format!("_parentcustomerid_value{FORMATTED}")],
        "Fabrikam"
    );
    assert_eq!(
        contact[format!("_parentcustomerid_value{LOOKUP_TABLE}")],
        "account"
    );
    assert_eq!(
        contact[format!("_parentcustomerid_value{NAVIGATION}")],
        "parentcustomerid_account"
    );
}

#[tokio::test]
async fn list_records_annotates_rows_expanded_rows_and_fetchxml_results() {
    let org = Org::start().await;
    let (_, contact_id) = account_and_contact(&org).await;
    let mut list = org.function("list-records").await;

    let listed = list
        .invoke(&json!({"dataset": "contoso", "table": "contacts",
                        "$select": "fullname,_parentcustomerid_value",
                        "$expand": "parentcustomerid_account($select=name,creditonhold)",
                        "formatted_values": true}))
        .await
        .unwrap();
    let row = &listed["value"][0];
    assert_eq!(row["contactid"], contact_id.as_str());
    assert_eq!(
        row[format!("_parentcustomerid_value{FORMATTED}")],
        "Fabrikam"
    );
    assert_eq!(
        row["parentcustomerid_account"][format!("creditonhold{FORMATTED}")],
        "Yes"
    );

    let fetched = list
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "formatted_values": true,
            "fetchXml": "<fetch><entity name='account'><attribute name='name'/><attribute name='industrycode'/></entity></fetch>"}))
        .await
        .unwrap();
    assert_eq!(
        fetched["value"][0][format!("industrycode{FORMATTED}")],
        "Accounting"
    );

    let plain = list
        .invoke(&json!({"dataset": "contoso", "table": "contacts"}))
        .await
        .unwrap();
    assert_eq!(annotations(&plain["value"][0]), Vec::<String>::new());
}

#[tokio::test]
async fn formatted_values_must_be_a_boolean() {
    let org = Org::start().await;
    for (function, mut payload) in [
        ("list-records", json!({})),
        (
            "get-record",
            json!({"id": "7eb682f1-ca75-e511-80d4-00155d2a68d1"}),
        ),
    ] {
        payload["dataset"] = json!("contoso");
        payload["table"] = json!("accounts");
        payload["formatted_values"] = json!("yes");
        let mut f = org.function(function).await;
        let (error_type, message) = expect_error(f.invoke(&payload).await, function);
        assert_eq!(error_type, "Crm.InvalidInput", "{message}");
        assert!(message.starts_with("formatted_values"), "{message}");
    }
}
