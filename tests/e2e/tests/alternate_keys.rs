//! Rows named by an alternate key (`key` in place of `id`) in `get-record`, `update-record` and
//! `delete-record`, and `upsert-record`, run as their binaries through the Lambda Runtime API
//! against the emulator, which resolves and enforces keys as Dataverse does.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

/// An organisation whose accounts have an alternate key on `accountnumber`.
struct Org {
    emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::with_account_key().await.unwrap();
        let files = LocalFiles::new("alternate-keys", &emulator).unwrap();
        Self { emulator, files }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &[self.files.secrets_env()])
            .await
            .unwrap()
    }

    /// Every account's `(name, accountnumber)`.
    async fn accounts(&self) -> Vec<(String, String)> {
        let (_, page) = self
            .emulator
            .api_get("accounts?$select=name,accountnumber")
            .await
            .unwrap();
        page["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["accountnumber"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

async fn call(function: &mut Function, payload: Value) -> Value {
    match function.invoke(&payload).await {
        Ok(output) => output,
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

fn on(key: &str, extra: Value) -> Value {
    let mut payload =
        json!({"dataset": "contoso", "table": "accounts", "key": {"accountnumber": key}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            payload[k] = v;
        }
    }
    payload
}

/// Key values with a quote, non-ASCII text, and one with characters Dataverse refuses in a URL path
/// (so the functions find that row with `$filter` instead).
const KEYS: [&str; 3] = ["O'Brien-Zürich-東京", "plain-42", "A/1 & B:2?"];

#[tokio::test]
async fn rows_are_read_updated_and_deleted_by_their_alternate_key() {
    let org = Org::start().await;
    let mut create = org.function("create-record").await;
    let mut get = org.function("get-record").await;
    let mut update = org.function("update-record").await;
    let mut delete = org.function("delete-record").await;
    for key in KEYS {
        let made = call(
            &mut create,
            json!({"dataset": "contoso", "table": "accounts",
                "item": {"name": format!("made {key}"), "accountnumber": key}}),
        )
        .await;
        let id = made["accountid"].as_str().unwrap().to_owned();

        let found = call(&mut get, on(key, json!({"$select": "name,accountnumber"}))).await;
        assert_eq!(found["accountid"], id.as_str(), "{key}");
        assert_eq!(found["accountnumber"], key);
        // Keys match as Dataverse's index does: text without regard to case.
        let upper = call(&mut get, on(&key.to_uppercase(), json!({}))).await;
        assert_eq!(upper["accountid"], id.as_str(), "{key}");

        let updated = call(
            &mut update,
            on(
                key,
                json!({"item": {"name": format!("renamed {key}")}, "$select": "name"}),
            ),
        )
        .await;
        assert_eq!(updated["name"], format!("renamed {key}"));
        assert_eq!(updated["accountid"], id.as_str());

        let deleted = call(&mut delete, on(key, json!({}))).await;
        assert_eq!(
            deleted,
            json!({"key": {"accountnumber": key}, "deleted": true})
        );
        let (error_type, message) = expect_error(get.invoke(&on(key, json!({}))).await, key);
        assert_eq!(error_type, "Crm.NotFound", "{key}: {message}");
        // Nothing else was touched.
        assert!(org.accounts().await.is_empty(), "{key}");
    }
    // Updating by a key that matches nothing never creates a row.
    let (error_type, _) = expect_error(
        update
            .invoke(&on("nobody", json!({"item": {"name": "x"}})))
            .await,
        "",
    );
    assert_eq!(error_type, "Crm.NotFound");
    assert!(org.accounts().await.is_empty());
}

#[tokio::test]
async fn upsert_record_creates_then_updates_and_says_which() {
    let org = Org::start().await;
    let mut upsert = org.function("upsert-record").await;
    for key in KEYS {
        let first = call(
            &mut upsert,
            on(
                key,
                json!({"item": {"name": "first"}, "$select": "name,accountnumber"}),
            ),
        )
        .await;
        assert_eq!(first["created"], true, "{key}: {first}");
        assert_eq!(first["name"], "first");
        assert_eq!(
            first["accountnumber"], key,
            "the key's values are copied into the new row"
        );
        let second = call(
            &mut upsert,
            on(key, json!({"item": {"name": "second"}, "$select": "name"})),
        )
        .await;
        assert_eq!(second["created"], false, "{key}: {second}");
        assert_eq!(second["accountid"], first["accountid"]);
        assert_eq!(second["name"], "second");

        // An etag makes it a guarded update.
        let etag = second["@odata.etag"].as_str().unwrap().to_owned();
        let guarded = call(
            &mut upsert,
            on(key, json!({"item": {"name": "third"}, "etag": etag})),
        )
        .await;
        assert_eq!(guarded["created"], false);
        let (error_type, _) = expect_error(
            upsert
                .invoke(&on(key, json!({"item": {"name": "stale"}, "etag": etag})))
                .await,
            key,
        );
        assert_eq!(error_type, "Crm.PreconditionFailed", "{key}");
    }
    let (error_type, _) = expect_error(
        upsert
            .invoke(&on(
                "missing",
                json!({"item": {"name": "x"}, "etag": "W/\"1\""}),
            ))
            .await,
        "",
    );
    assert_eq!(error_type, "Crm.NotFound", "a guarded upsert never creates");
    let mut rows = org.accounts().await;
    rows.sort();
    let mut expected: Vec<(String, String)> = KEYS
        .iter()
        .map(|k| ("third".to_owned(), (*k).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(rows, expected, "one row per key, never a duplicate");

    // By id: a new id creates the row with that id.
    let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let payload = json!({"dataset": "contoso", "table": "accounts", "id": id,
        "item": {"name": "by id", "accountnumber": "by-id"}});
    let made = call(&mut upsert, payload.clone()).await;
    assert_eq!(
        (made["created"].clone(), made["accountid"].clone()),
        (json!(true), json!(id))
    );
    let again = call(&mut upsert, payload).await;
    assert_eq!(again["created"], false);
}

#[tokio::test]
async fn a_row_must_be_named_once_and_by_a_defined_key() {
    let org = Org::start().await;
    let mut get = org.function("get-record").await;
    let mut upsert = org.function("upsert-record").await;
    let mut create = org.function("create-record").await;
    let id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let cases = [
        (
            json!({"dataset": "contoso", "table": "accounts", "id": id, "key": {"accountnumber": "A"}}),
            "Crm.InvalidInput",
            "key",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts"}),
            "Crm.InvalidInput",
            "id",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "key": {}}),
            "Crm.InvalidInput",
            "key",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "key": {"accountnumber": null}}),
            "Crm.InvalidInput",
            "key",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "key": {"_parentaccountid_value": "x"}}),
            "Crm.InvalidInput",
            "key",
        ),
        // Not one of the table's keys: Dataverse refuses it (0x80060890).
        (
            json!({"dataset": "contoso", "table": "accounts", "key": {"name": "x"}}),
            "Crm.BadRequest",
            "not a defined key",
        ),
    ];
    for (payload, error_type, part) in cases {
        let (found, message) = expect_error(get.invoke(&payload).await, &payload.to_string());
        assert_eq!(found, error_type, "{payload}: {message}");
        assert!(message.contains(part), "{payload}: {message}");
    }
    // A key is unique: a second row with the same value is refused, whoever makes it.
    call(
        &mut create,
        json!({"dataset": "contoso", "table": "accounts", "item": {"name": "one", "accountnumber": "K-1"}}),
    )
    .await;
    let (error_type, _) = expect_error(
        create
            .invoke(&json!({"dataset": "contoso", "table": "accounts",
                "item": {"name": "two", "accountnumber": "k-1"}}))
            .await,
        "",
    );
    assert_eq!(error_type, "Crm.PreconditionFailed");
    let (error_type, _) = expect_error(
        upsert
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": id,
                "item": {"name": "three", "accountnumber": "K-1"}}))
            .await,
        "",
    );
    assert_eq!(error_type, "Crm.PreconditionFailed");
    assert_eq!(org.accounts().await.len(), 1);
}
