//! The emulator checked against a Dataverse client written by others: dynamics-web-api (pinned in
//! `tests/interop/package.json`, installed by `make test`) runs its own request builders for an upsert by
//! alternate key, an associate, a changeset through `executeBatch`, `retrieveAll` over next links, and
//! `fetchAll` over `FetchXML` paging cookies.
//! What it did is then read back through the Web API.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use e2e_tests::Emulator;
use serde_json::Value;

#[tokio::test]
async fn dynamics_web_api_builds_requests_the_emulator_answers_as_dataverse_would() {
    let emulator = Emulator::with_account_key().await.unwrap();
    let token = emulator
        .client()
        .access_token("local-client", "local-secret")
        .await
        .unwrap();
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop");
    assert!(
        interop.join("node_modules/dynamics-web-api").is_dir(),
        "dynamics-web-api is not installed: run `make test`, which runs npm ci --prefix tests/interop"
    );
    let output = tokio::process::Command::new("node")
        .arg(interop.join("dynamics-web-api.mjs"))
        .env("EMULATOR_URL", &emulator.url)
        .env("TOKEN", token)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();

    // Upsert by key: created, with the key's value copied in.
    assert_eq!(results["upserted"]["accountnumber"], "DWA-1", "{results}");
    let account = results["upserted"]["accountid"].as_str().unwrap();
    // Associate: the contact's lookup now points at the account.
    let contact = results["contact"].as_str().unwrap();
    let (_, row) = emulator
        .api_get(&format!(
            "contacts({contact})?$select=_parentcustomerid_value"
        ))
        .await
        .unwrap();
    assert_eq!(row["_parentcustomerid_value"], account);
    // The changeset: a contact, and an account bound to it by $1.
    let batch = results["batch"].as_array().unwrap();
    assert_eq!(batch.len(), 2, "{results}");
    let (_, bound) = emulator
        .api_get(&format!(
            "accounts({})?$select=_primarycontactid_value",
            batch[1].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(bound["_primarycontactid_value"], batch[0]);
    // retrieveAll followed every next link, one row per page.
    let mut names: Vec<&str> = results["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Batched account", "Made by dynamics-web-api"]);
    // fetchAll paged one row at a time with the cookies, in the query's order.
    assert_eq!(
        results["fetched"],
        serde_json::json!(["Batched account", "Made by dynamics-web-api"])
    );
}
