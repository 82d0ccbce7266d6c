//! `execute-changeset`: writes that all succeed or all fail, in one `$batch` changeset, run as the binary
//! through the Lambda Runtime API against the emulator, which applies changesets atomically.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

struct Org {
    emulator: Emulator,
    _files: LocalFiles,
    function: Function,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::with_account_key().await.unwrap();
        let files = LocalFiles::new("changeset", &emulator).unwrap();
        let function = Function::start("execute-changeset", &[files.secrets_env()])
            .await
            .unwrap();
        Self {
            emulator,
            _files: files,
            function,
        }
    }

    async fn run(&mut self, operations: Value) -> Result<Value, e2e_tests::Failure> {
        self.function
            .invoke(&json!({"dataset": "contoso", "operations": operations}))
            .await
    }

    async fn rows(&self, query: &str) -> Vec<Value> {
        let (status, page) = self.emulator.api_get(query).await.unwrap();
        assert_eq!(status, 200, "{page}");
        page["value"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn a_changeset_applies_every_write_in_order_with_references_to_new_rows() {
    let mut org = Org::start().await;
    let sample: Value = serde_json::from_str(include_str!(
        "../../../functions/execute-changeset/events/changeset.json"
    ))
    .unwrap();
    let done = match org.run(sample["operations"].clone()).await {
        Ok(done) => done,
        Err(e) => panic!("{e}\n{}", org.function.logs()),
    };
    let outcomes = done["operations"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(|o| o["status"].as_u64().unwrap() < 300));
    let account = outcomes[0]["id"].as_str().unwrap().to_owned();
    let contact = outcomes[1]["id"].as_str().unwrap().to_owned();
    let (_, row) = org
        .emulator
        .api_get(&format!(
            "contacts({contact})?$select=lastname,_parentcustomerid_value"
        ))
        .await
        .unwrap();
    assert_eq!(
        row["_parentcustomerid_value"], account,
        "$1 bound the new account"
    );
    let (_, row) = org
        .emulator
        .api_get(&format!("accounts({account})?$select=telephone1"))
        .await
        .unwrap();
    assert_eq!(row["telephone1"], "+1-555-0170", "ref 1 updated it");

    // Upsert and delete, by key, in one more changeset.
    let done = org
        .run(json!([
            {"op": "upsert", "table": "accounts", "key": {"accountnumber": "ACC-07002"}, "item": {"name": "New"}},
            {"op": "delete", "table": "accounts", "key": {"accountnumber": "ACC-07001"}}
        ]))
        .await
        .unwrap();
    assert_eq!(done["operations"][1]["op"], "delete");
    let names: Vec<Value> = org
        .rows("accounts?$select=name")
        .await
        .into_iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("New")]);
}

#[tokio::test]
async fn when_operation_7_of_10_fails_nothing_is_left_behind() {
    let mut org = Org::start().await;
    let mut operations: Vec<Value> = (0..10)
        .map(|i| json!({"op": "create", "table": "accounts", "item": {"name": format!("row {i}")}}))
        .collect();
    // The seventh updates a row that does not exist: an update never creates.
    operations[6] = json!({"op": "update", "table": "accounts",
        "id": "0bad0bad-0000-4000-8000-000000000000", "item": {"name": "ghost"}});
    let (error_type, message) = expect_error(org.run(json!(operations)).await, "");
    assert_eq!(error_type, "Crm.NotFound", "{message}");
    assert!(message.contains("operation 7"), "{message}");
    assert!(
        org.rows("accounts?$select=name").await.is_empty(),
        "the six creates before it were rolled back"
    );

    // A key made twice in one changeset: the second fails on uniqueness, and the first goes too.
    let (error_type, message) = expect_error(
        org.run(json!([
            {"op": "create", "table": "accounts", "item": {"name": "a", "accountnumber": "K"}},
            {"op": "create", "table": "accounts", "item": {"name": "b", "accountnumber": "k"}}
        ]))
        .await,
        "",
    );
    assert_eq!(error_type, "Crm.PreconditionFailed", "{message}");
    assert!(message.contains("operation 2"), "{message}");
    assert!(org.rows("accounts?$select=name").await.is_empty());

    // A misshapen operation is this input's mistake, named by position, and nothing is sent.
    let (error_type, message) = expect_error(
        org.run(json!([
            {"op": "create", "table": "accounts", "item": {"name": "fine"}},
            {"op": "delete", "table": "accounts"}
        ]))
        .await,
        "",
    );
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.starts_with("operations[1].id: "), "{message}");
    assert!(org.rows("accounts?$select=name").await.is_empty());
}
