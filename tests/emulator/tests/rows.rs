//! Create, retrieve, update (upsert) and delete, with the service's conditional-request rules, and the
//! system columns every row carries.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

fn id_from_entity_id(header: &str) -> String {
    let start = header.rfind('(').expect("(") + 1;
    header[start..header.len() - 1].to_owned()
}

#[tokio::test]
async fn create_answers_204_with_the_new_rows_address() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .request(Method::POST, "accounts")
        .json(&json!({"name": "Sample Account", "creditonhold": false, "revenue": 5_000_000, "accountcategorycode": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let entity_id = response.headers()["odata-entityid"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        entity_id.starts_with(&emulator.api("accounts(")),
        "{entity_id}"
    );
    assert!(response.text().await.unwrap().is_empty());
    let row = emulator
        .get_json(&format!("accounts({})", id_from_entity_id(&entity_id)))
        .await;
    assert_eq!(row["name"], "Sample Account");
    assert_eq!(row["revenue"], 5_000_000.0);
}

#[tokio::test]
async fn create_with_return_representation_answers_201_with_the_selected_row() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .request(Method::POST, "accounts?$select=name,createdon")
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Represented"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("odata-entityid").is_none());
    assert_eq!(
        response.headers()["preference-applied"],
        "return=representation"
    );
    let row: Value = response.json().await.unwrap();
    assert!(
        row["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts(name,createdon)/$entity")
    );
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "@odata.context",
            "@odata.etag",
            "name",
            "createdon",
            "accountid"
        ]
    );
}

#[tokio::test]
async fn retrieve_returns_selected_columns_and_404s_for_missing_rows() {
    let emulator = Emulator::empty().await;
    let created = emulator
        .create(
            "contacts",
            json!({"firstname": "Ada", "lastname": "O'Bryan"}),
        )
        .await;
    let id = created["contactid"].as_str().unwrap();
    let row = emulator
        .get_json(&format!("contacts({id})?$select=fullname,lastname"))
        .await;
    assert_eq!(row["fullname"], "Ada O'Bryan");
    assert_eq!(row["contactid"], id);
    assert!(row.get("firstname").is_none());
    let missing = "00000000-0000-0000-0000-000000000001";
    let body = expect_error(
        emulator.get(&format!("contacts({missing})")).await,
        404,
        "0x80040217",
        "Does Not Exist",
    )
    .await;
    assert_eq!(
        body["error"]["message"],
        format!("Entity 'contact' With Id = {missing} Does Not Exist")
    );
    expect_error(
        emulator.get("contacts(not-a-guid)").await,
        400,
        "0x80060888",
        "",
    )
    .await;
    expect_error(
        emulator.get("contacts(emailaddress1='a@b.c')").await,
        400,
        "0x80060890",
        "not a defined key",
    )
    .await;
}

#[tokio::test]
async fn patch_without_conditions_upserts_a_missing_row() {
    let emulator = Emulator::empty().await;
    let id = "2e451703-c686-e711-80e5-00155db19e6d";
    let response = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .json(&json!({"name": "Created by PATCH"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        response.headers()["odata-entityid"]
            .to_str()
            .unwrap()
            .ends_with(&format!("accounts({id})"))
    );
    assert_eq!(
        emulator.get_json(&format!("accounts({id})")).await["name"],
        "Created by PATCH"
    );
    let represented = emulator
        .request(
            Method::PATCH,
            "accounts(3e451703-c686-e711-80e5-00155db19e6d)",
        )
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Also created"}))
        .send()
        .await
        .unwrap();
    assert_eq!(represented.status(), 201);
    let updated = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Updated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    assert!(updated.headers().contains_key("etag"));
}

#[tokio::test]
async fn patch_with_if_match_star_never_creates_a_row() {
    let emulator = Emulator::empty().await;
    let id = "5e451703-c686-e711-80e5-00155db19e6d";
    let response = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .header("If-Match", "*")
        .json(&json!({"name": "Ghost"}))
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        404,
        "0x80040217",
        &format!("Entity 'account' With Id = {id} Does Not Exist"),
    )
    .await;
    assert_eq!(emulator.get(&format!("accounts({id})")).await.status(), 404);
}

#[tokio::test]
async fn patch_with_if_none_match_star_refuses_an_existing_row() {
    let emulator = Emulator::empty().await;
    let row = emulator
        .create("accounts", json!({"name": "Existing"}))
        .await;
    let id = row["accountid"].as_str().unwrap();
    let response = emulator
        .request(Method::PATCH, &format!("accounts({id})"))
        .header("If-None-Match", "*")
        .json(&json!({"name": "Overwrite"}))
        .send()
        .await
        .unwrap();
    expect_error(response, 412, "0x80040237", "already exists").await;
    let fresh = emulator
        .request(
            Method::PATCH,
            "accounts(6e451703-c686-e711-80e5-00155db19e6d)",
        )
        .header("If-None-Match", "*")
        .json(&json!({"name": "New"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 204);
}

#[tokio::test]
async fn etags_give_optimistic_concurrency_on_update_and_delete() {
    let emulator = Emulator::empty().await;
    let row = emulator.create("accounts", json!({"name": "v1"})).await;
    let id = row["accountid"].as_str().unwrap();
    let etag = row["@odata.etag"].as_str().unwrap().to_owned();
    let update = |tag: String, name: &'static str| {
        emulator
            .request(Method::PATCH, &format!("accounts({id})"))
            .header("If-Match", tag)
            .json(&json!({"name": name}))
            .send()
    };
    assert_eq!(update(etag.clone(), "v2").await.unwrap().status(), 204);
    // The first update moved the version on, so the same etag is now stale.
    expect_error(
        update(etag.clone(), "v3").await.unwrap(),
        412,
        "0x80060882",
        "doesn't match the RowVersion",
    )
    .await;
    let delete_stale = emulator
        .request(Method::DELETE, &format!("accounts({id})"))
        .header("If-Match", etag)
        .send()
        .await
        .unwrap();
    expect_error(delete_stale, 412, "0x80060882", "").await;
    let current = emulator.get_json(&format!("accounts({id})")).await;
    assert_eq!(current["name"], "v2");
}

#[tokio::test]
async fn delete_answers_204_then_404() {
    let emulator = Emulator::empty().await;
    let row = emulator.create("leads", json!({"lastname": "Gone"})).await;
    let path = format!("leads({})", row["leadid"].as_str().unwrap());
    let first = emulator
        .request(Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 204);
    let second = emulator
        .request(Method::DELETE, &path)
        .send()
        .await
        .unwrap();
    expect_error(second, 404, "0x80040217", "Does Not Exist").await;
    expect_error(
        emulator
            .request(Method::DELETE, "leads")
            .send()
            .await
            .unwrap(),
        405,
        "0x80060888",
        "does not support http method 'DELETE'",
    )
    .await;
}

#[tokio::test]
async fn validates_bodies_as_the_odata_reader_does() {
    let emulator = Emulator::empty().await;
    let post = |body: Value| {
        emulator
            .request(Method::POST, "accounts")
            .json(&body)
            .send()
    };
    expect_error(
        post(json!({"Name": "x"})).await.unwrap(),
        400,
        "0x0",
        "Invalid property 'Name'",
    )
    .await;
    expect_error(
        post(json!({"numberofemployees": "many"})).await.unwrap(),
        400,
        "0x80048d19",
        "Cannot convert the literal 'many' to the expected type 'Edm.Int32'",
    )
    .await;
    expect_error(
        post(json!({"name": "x".repeat(161)})).await.unwrap(),
        400,
        "0x80044331",
        "maximum allowed length of '160'",
    )
    .await;
    expect_error(
        post(json!({"industrycode": 999})).await.unwrap(),
        400,
        "0x80044331",
        "outside the valid range",
    )
    .await;
    expect_error(
        post(json!({"_primarycontactid_value": "6d81597f-0000-0000-0000-000000000000"}))
            .await
            .unwrap(),
        400,
        "0x0",
        "Invalid property",
    )
    .await;
    expect_error(
        post(json!(["not", "an", "object"])).await.unwrap(),
        400,
        "0x80048d19",
        "",
    )
    .await;
    let bad_json = emulator
        .request(Method::POST, "accounts")
        .header("Content-Type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    expect_error(bad_json, 400, "0x80048d19", "Invalid JSON").await;
}

#[tokio::test]
async fn binds_lookups_with_odata_bind_and_returns_them_as_value_columns() {
    let emulator = Emulator::empty().await;
    let account = emulator.create("accounts", json!({"name": "Parent"})).await;
    let account_id = account["accountid"].as_str().unwrap();
    let contact = emulator
        .create("contacts", json!({"lastname": "Child", "parentcustomerid_account@odata.bind": format!("/accounts({account_id})")}))
        .await;
    assert_eq!(contact["_parentcustomerid_value"], account_id);
    let expanded = emulator
        .get_json(&format!(
            "contacts({})?$select=lastname&$expand=parentcustomerid_account($select=name)",
            contact["contactid"].as_str().unwrap()
        ))
        .await;
    assert_eq!(expanded["parentcustomerid_account"]["name"], "Parent");
    let undeclared = emulator
        .request(Method::POST, "contacts")
        .json(&json!({"lastname": "x", "parentcustomerid@odata.bind": format!("/accounts({account_id})")}))
        .send()
        .await
        .unwrap();
    expect_error(
        undeclared,
        400,
        "0x80048d19",
        "An undeclared property 'parentcustomerid'",
    )
    .await;
    let dangling = emulator
        .request(Method::POST, "contacts")
        .json(&json!({"lastname": "x", "parentcustomerid_account@odata.bind": "/accounts(7e451703-c686-e711-80e5-00155db19e6d)"}))
        .send()
        .await
        .unwrap();
    expect_error(dangling, 404, "0x80040217", "Does Not Exist").await;
}

fn is_whole_utc_second(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && !s.contains('.')
}

#[tokio::test]
async fn system_columns_track_time_and_a_monotonic_version() {
    let emulator = Emulator::empty().await;
    let a = emulator.create("accounts", json!({"name": "A"})).await;
    let b = emulator.create("contacts", json!({"lastname": "B"})).await;
    for row in [&a, &b] {
        let created = row["createdon"].as_str().unwrap();
        assert!(is_whole_utc_second(created), "{created}");
        assert_eq!(
            row["modifiedon"], row["createdon"],
            "modifiedon is set on create"
        );
        let version = row["versionnumber"].as_u64().unwrap();
        assert_eq!(row["@odata.etag"], format!("W/\"{version}\""));
    }
    // The version counter is org-wide: the contact's is above the account's.
    assert!(b["versionnumber"].as_u64() > a["versionnumber"].as_u64());
    // Writes ignore attempts to set system columns, and every update moves version and modifiedon.
    emulator
        .control(Method::POST, "clock", json!({"advance_secs": 5}))
        .await;
    let updated: Value = emulator
        .request(
            Method::PATCH,
            &format!("accounts({})", a["accountid"].as_str().unwrap()),
        )
        .header("Prefer", "return=representation")
        .json(&json!({"name": "A2", "versionnumber": 1, "createdon": "2001-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(updated["versionnumber"].as_u64() > b["versionnumber"].as_u64());
    assert_eq!(updated["createdon"], a["createdon"]);
    assert!(updated["modifiedon"].as_str() > a["modifiedon"].as_str());
    assert!(is_whole_utc_second(updated["modifiedon"].as_str().unwrap()));
}

#[tokio::test]
async fn answers_a_conditional_get_with_304_while_the_row_is_unchanged() {
    let emulator = Emulator::empty().await;
    let row = emulator.create("accounts", json!({"name": "Cached"})).await;
    let path = format!("accounts({})", row["accountid"].as_str().unwrap());
    let etag = row["@odata.etag"].as_str().unwrap();
    let cached = emulator
        .request(Method::GET, &path)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    emulator
        .request(Method::PATCH, &path)
        .json(&json!({"name": "Changed"}))
        .send()
        .await
        .unwrap();
    let fresh = emulator
        .request(Method::GET, &path)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
}

#[tokio::test]
async fn demo_seed_holds_a_few_hundred_linked_rows() {
    let emulator = Emulator::demo().await;
    let mut total = 0;
    for set in ["accounts", "contacts", "leads", "opportunities"] {
        let n = emulator.get_json(&format!("{set}?$select=createdon")).await["value"]
            .as_array()
            .unwrap()
            .len();
        assert!(n >= 50, "{set}: {n}");
        total += n;
    }
    assert!((300..1000).contains(&total), "{total}");
    let contacts = emulator
        .get_json("contacts?$select=fullname,_parentcustomerid_value&$expand=parentcustomerid_account($select=name)&$top=10")
        .await;
    for contact in contacts["value"].as_array().unwrap() {
        assert!(contact["_parentcustomerid_value"].is_string());
        assert!(
            contact["parentcustomerid_account"]["name"].is_string(),
            "{contact}"
        );
    }
    let opportunities = emulator
        .get_json("opportunities?$select=_customerid_value&$filter=_customerid_value ne null")
        .await;
    assert_eq!(opportunities["value"].as_array().unwrap().len(), 90);
}

#[tokio::test]
async fn serves_concurrent_clients_without_losing_or_duplicating_writes() {
    let emulator = Emulator::empty().await;
    let writers = (0..16).map(|w| {
        let emulator = &emulator;
        async move {
            let mut versions = Vec::new();
            for i in 0..25 {
                let row = emulator
                    .create("accounts", json!({"name": format!("w{w}-{i}")}))
                    .await;
                versions.push(row["versionnumber"].as_u64().unwrap());
            }
            versions
        }
    });
    let mut versions: Vec<u64> = join_all(writers).await.into_iter().flatten().collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 16 * 25, "every write took its own version");
    let count = emulator.get("accounts/$count").await.text().await.unwrap();
    assert_eq!(count.trim_start_matches('\u{feff}'), "400");
}
