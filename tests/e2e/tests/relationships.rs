//! `relate-records`, `unrelate-records` and `describe-table`, run as their binaries through the Lambda
//! Runtime API against the emulator, which keeps relationships and table definitions as Dataverse
//! does.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use reqwest::Method;
use serde_json::{Value, json};

struct Org {
    emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::with_account_key().await.unwrap();
        let files = LocalFiles::new("relationships", &emulator).unwrap();
        Self { emulator, files }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &[self.files.secrets_env()])
            .await
            .unwrap()
    }

    async fn create(&self, set: &str, body: Value) -> String {
        let (status, row) = self
            .emulator
            .api(Method::POST, set, Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{row}");
        let key = if set == "accounts" {
            "accountid"
        } else {
            "contactid"
        };
        row[key].as_str().unwrap().to_owned()
    }

    /// The account a contact's `parentcustomerid` points at, if any.
    async fn parent_of(&self, contact: &str) -> Option<String> {
        let (_, row) = self
            .emulator
            .api_get(&format!(
                "contacts({contact})?$select=_parentcustomerid_value"
            ))
            .await
            .unwrap();
        row["_parentcustomerid_value"].as_str().map(str::to_owned)
    }
}

async fn call(function: &mut Function, payload: &Value) -> Value {
    match function.invoke(payload).await {
        Ok(output) => output,
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

#[tokio::test]
async fn rows_join_and_leave_a_collection_and_a_lookup_is_bound_and_cleared() {
    let org = Org::start().await;
    let account = org
        .create(
            "accounts",
            json!({"name": "Contoso", "accountnumber": "A-1"}),
        )
        .await;
    let ada = org
        .create("contacts", json!({"lastname": "Lovelace"}))
        .await;
    let alan = org.create("contacts", json!({"lastname": "Turing"})).await;
    let mut relate = org.function("relate-records").await;
    let mut unrelate = org.function("unrelate-records").await;

    // The account's collection of contacts, the account named by its key.
    let related = call(
        &mut relate,
        &json!({"dataset": "contoso", "table": "accounts", "key": {"accountnumber": "A-1"},
            "relationship": "contact_customer_accounts", "related": [{"id": ada}, {"id": alan}]}),
    )
    .await;
    assert_eq!(
        related,
        json!({"relationship": "contact_customer_accounts", "kind": "collection", "related": 2})
    );
    assert_eq!(org.parent_of(&ada).await.as_deref(), Some(account.as_str()));
    assert_eq!(
        org.parent_of(&alan).await.as_deref(),
        Some(account.as_str())
    );
    let out = call(
        &mut unrelate,
        &json!({"dataset": "contoso", "table": "accounts", "id": account,
            "relationship": "contact_customer_accounts", "related": {"id": ada}}),
    )
    .await;
    assert_eq!(out["unrelated"], 1);
    assert_eq!(org.parent_of(&ada).await, None);
    assert_eq!(
        org.parent_of(&alan).await.as_deref(),
        Some(account.as_str()),
        "only the row named leaves"
    );

    // The contact's lookup, bound to an account named by its key, then cleared.
    let bound = call(
        &mut relate,
        &json!({"dataset": "contoso", "table": "contacts", "id": ada,
            "relationship": "parentcustomerid_account", "related": {"key": {"accountnumber": "A-1"}}}),
    )
    .await;
    assert_eq!(bound["kind"], "lookup");
    assert_eq!(org.parent_of(&ada).await.as_deref(), Some(account.as_str()));
    let cleared = call(
        &mut unrelate,
        &json!({"dataset": "contoso", "table": "contacts", "id": ada,
            "relationship": "parentcustomerid_account"}),
    )
    .await;
    assert_eq!(cleared["kind"], "lookup");
    assert_eq!(org.parent_of(&ada).await, None);
}

#[tokio::test]
async fn each_mistake_is_a_typed_error_and_changes_nothing() {
    let org = Org::start().await;
    let account = org
        .create(
            "accounts",
            json!({"name": "Contoso", "accountnumber": "A-1"}),
        )
        .await;
    let ada = org
        .create("contacts", json!({"lastname": "Lovelace"}))
        .await;
    let ghost = "0bad0bad-0000-4000-8000-000000000000";
    let mut relate = org.function("relate-records").await;
    let mut unrelate = org.function("unrelate-records").await;
    let base = |relationship: &str, related: Value| {
        json!({"dataset": "contoso", "table": "contacts", "id": ada,
            "relationship": relationship, "related": related})
    };
    let cases = [
        (
            true,
            base("no_such_thing", json!({"id": account})),
            "Crm.InvalidInput",
            "relationship: ",
        ),
        (
            true,
            base(
                "parentcustomerid_account",
                json!([{"id": account}, {"id": account}]),
            ),
            "Crm.InvalidInput",
            "related: ",
        ),
        (
            true,
            base("parentcustomerid_account", json!({"id": ghost})),
            "Crm.NotFound",
            "",
        ),
        (
            true,
            base("parentcustomerid_account", json!([])),
            "Crm.InvalidInput",
            "related: ",
        ),
        (
            false,
            base("parentcustomerid_account", json!({"id": account})),
            "Crm.InvalidInput",
            "related: ",
        ),
    ];
    for (relating, payload, error_type, part) in cases {
        let function = if relating { &mut relate } else { &mut unrelate };
        let (found, message) = expect_error(function.invoke(&payload).await, "");
        assert_eq!(found, error_type, "{payload}: {message}");
        assert!(message.starts_with(part), "{payload}: {message}");
    }
    // A collection needs to be told which rows leave it.
    let (found, message) = expect_error(
        unrelate
            .invoke(
                &json!({"dataset": "contoso", "table": "accounts", "id": account,
                "relationship": "contact_customer_accounts"}),
            )
            .await,
        "",
    );
    assert_eq!(found, "Crm.InvalidInput", "{message}");
    assert_eq!(org.parent_of(&ada).await, None, "nothing was related");
}

#[tokio::test]
async fn describe_table_gives_columns_choices_targets_and_keys_and_remembers_them() {
    let org = Org::start().await;
    let mut describe = org.function("describe-table").await;
    let payload = json!({"dataset": "contoso", "table": "accounts"});
    let described = call(&mut describe, &payload).await;
    assert_eq!(described["logical_name"], "account");
    assert_eq!(described["entity_set_name"], "accounts");
    assert_eq!(described["primary_id"], "accountid");
    assert_eq!(described["primary_name"], "name");
    assert_eq!(
        described["keys"],
        json!([{"name": "aws_accountnumber", "columns": ["accountnumber"]}])
    );
    let column = |name: &str| {
        described["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["logical_name"] == name)
            .unwrap_or_else(|| panic!("no column {name}: {described}"))
            .clone()
    };
    let name = column("name");
    assert_eq!(name["type"], "String");
    assert_eq!(name["required_level"], "ApplicationRequired");
    assert!(name["max_length"].as_u64().is_some_and(|n| n > 0), "{name}");
    let contact = column("primarycontactid");
    assert_eq!(contact["type"], "Lookup");
    assert_eq!(contact["targets"], json!(["contact"]));
    let state = column("statecode");
    let choices = state["choices"].as_array().unwrap();
    assert!(
        choices
            .iter()
            .any(|c| c["value"] == 0 && c["label"].is_string()),
        "{state}"
    );

    // A warm instance answers again from what it read.
    org.emulator.clear_requests().await.unwrap();
    assert_eq!(call(&mut describe, &payload).await, described);
    assert!(
        org.emulator.requests().await.unwrap().is_empty(),
        "no request for a table described a moment ago"
    );
    let (error_type, _) = expect_error(
        describe
            .invoke(&json!({"dataset": "contoso", "table": "nosuchtable"}))
            .await,
        "",
    );
    assert_eq!(error_type, "Crm.NotFound");
}
