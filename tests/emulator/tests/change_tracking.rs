//! Change tracking: `Prefer: odata.track-changes`, delta links, tombstones and token expiry.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

async fn track(
    emulator: &Emulator,
    url: &str,
    page_size: Option<usize>,
) -> (Value, Option<String>) {
    let prefer = match page_size {
        Some(n) => format!("odata.track-changes,odata.maxpagesize={n}"),
        None => "odata.track-changes".to_owned(),
    };
    let response = emulator
        .http
        .get(url)
        .bearer_auth(emulator.fresh_token().await)
        .header("Prefer", prefer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let applied = response
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.json().await.unwrap(), applied)
}

/// Follows nextLinks to the end of an initial sync or a delta; returns all entries and the deltaLink.
async fn drain(emulator: &Emulator, url: &str, page_size: Option<usize>) -> (Vec<Value>, String) {
    let mut entries = Vec::new();
    let mut url = url.to_owned();
    loop {
        let (body, _) = track(emulator, &url, page_size).await;
        entries.extend(body["value"].as_array().unwrap().iter().cloned());
        if let Some(next) = body["@odata.nextLink"].as_str() {
            assert!(body.get("@odata.deltaLink").is_none());
            next.clone_into(&mut url);
            continue;
        }
        let delta = body["@odata.deltaLink"]
            .as_str()
            .expect("deltaLink on the last page")
            .to_owned();
        return (entries, delta);
    }
}

#[tokio::test]
async fn initial_sync_returns_every_row_and_ends_with_a_delta_link() {
    let emulator = Emulator::empty().await;
    emulator
        .control(Method::POST, "tables/account/generate", json!({"count": 7}))
        .await;
    let (first, applied) = track(&emulator, &emulator.api("accounts?$select=name"), Some(3)).await;
    assert_eq!(
        applied.as_deref(),
        Some("odata.track-changes,odata.maxpagesize=3")
    );
    assert!(first["@odata.nextLink"].is_string());
    let (rows, delta) = drain(&emulator, &emulator.api("accounts?$select=name"), Some(3)).await;
    assert_eq!(rows.len(), 7);
    assert!(
        delta.starts_with(&emulator.api("accounts?$select=name&$deltatoken=")),
        "{delta}"
    );
    // The token has the shape real ones have: <version>!<MM/dd/yyyy HH:mm:ss>, URL-encoded.
    let token = delta.split("$deltatoken=").nth(1).unwrap();
    assert!(
        token.contains("%21") && token.contains("%2F") && token.contains("%3A"),
        "{token}"
    );
}

#[tokio::test]
async fn a_delta_returns_changed_rows_then_tombstones_and_a_new_link() {
    let emulator = Emulator::empty().await;
    let kept = emulator.create("accounts", json!({"name": "Kept"})).await;
    let changed = emulator
        .create("accounts", json!({"name": "Changed"}))
        .await;
    let removed = emulator
        .create("accounts", json!({"name": "Removed"}))
        .await;
    let (_, delta) = drain(&emulator, &emulator.api("accounts?$select=name"), None).await;

    let id = |row: &Value| row["accountid"].as_str().unwrap().to_owned();
    emulator
        .request(Method::PATCH, &format!("accounts({})", id(&changed)))
        .json(&json!({"name": "Changed twice"}))
        .send()
        .await
        .unwrap();
    let fresh = emulator.create("accounts", json!({"name": "Fresh"})).await;
    emulator
        .request(Method::DELETE, &format!("accounts({})", id(&removed)))
        .send()
        .await
        .unwrap();
    // Created and deleted between two polls: still reported as a deletion.
    let fleeting = emulator
        .create("accounts", json!({"name": "Fleeting"}))
        .await;
    emulator
        .request(Method::DELETE, &format!("accounts({})", id(&fleeting)))
        .send()
        .await
        .unwrap();

    let (body, _) = track(&emulator, &delta, None).await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts(name)/$delta")
    );
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 4, "{value:?}");
    // Updated and created rows look alike and come first, in version order, with current state.
    assert_eq!(value[0]["accountid"], id(&changed));
    assert_eq!(value[0]["name"], "Changed twice");
    assert_eq!(value[1]["accountid"], id(&fresh));
    for (tombstone, row) in value[2..].iter().zip([&removed, &fleeting]) {
        assert_eq!(
            tombstone,
            &json!({
                "@odata.context": emulator.api("$metadata#accounts/$deletedEntity"),
                "id": id(row),
                "reason": "deleted",
            })
        );
    }
    assert!(value.iter().all(|v| v["accountid"] != id(&kept)));
    let next = body["@odata.deltaLink"].as_str().unwrap();
    assert_ne!(next, delta);
    // Nothing changed since: an empty delta with yet another link.
    let (empty, _) = track(&emulator, next, None).await;
    assert_eq!(empty["value"], json!([]));
    assert!(empty["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn an_id_deleted_twice_between_polls_is_one_tombstone() {
    let emulator = Emulator::empty().await;
    let (_, delta) = drain(&emulator, &emulator.api("accounts?$select=name"), None).await;
    // Dataverse accepts a caller-chosen primary key, so the same id can be created again.
    let id = "6f2b5a8e-1c3d-4e5f-9a0b-1c2d3e4f5a6b";
    for name in ["first life", "second life"] {
        emulator
            .create("accounts", json!({"accountid": id, "name": name}))
            .await;
        emulator
            .request(Method::DELETE, &format!("accounts({id})"))
            .send()
            .await
            .unwrap();
    }
    let (entries, _) = drain(&emulator, &delta, None).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], id);
}

#[tokio::test]
async fn a_large_delta_pages_and_changes_made_meanwhile_wait_for_the_next_pass() {
    let emulator = Emulator::empty().await;
    let (_, delta) = drain(&emulator, &emulator.api("accounts?$select=name"), None).await;
    emulator
        .control(Method::POST, "tables/account/generate", json!({"count": 5}))
        .await;
    let (first, _) = track(&emulator, &delta, Some(2)).await;
    assert_eq!(first["value"].as_array().unwrap().len(), 2);
    // A row created while the client pages through this pass.
    emulator.create("accounts", json!({"name": "Late"})).await;
    let (rest, next_delta) = drain(
        &emulator,
        first["@odata.nextLink"].as_str().unwrap(),
        Some(2),
    )
    .await;
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|r| r["name"] != "Late"));
    let (after, _) = drain(&emulator, &next_delta, None).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["name"], "Late");
}

#[tokio::test]
async fn refuses_filter_orderby_top_and_expand_with_change_tracking() {
    let emulator = Emulator::empty().await;
    for (option, name) in [
        ("$filter=name%20eq%20'x'", "$filter"),
        ("$orderby=name", "$orderby"),
        ("$top=5", "$top"),
        ("$expand=primarycontactid", "$expand"),
    ] {
        let response = emulator
            .request(Method::GET, &format!("accounts?{option}"))
            .header("Prefer", "odata.track-changes")
            .send()
            .await
            .unwrap();
        expect_error(
            response,
            400,
            "0x80060888",
            &format!(
                "The \"{name}\" query parameter isn't supported when Change Tracking is enabled."
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn gives_no_delta_link_for_tables_without_change_tracking() {
    let emulator = Emulator::empty().await;
    emulator
        .add_table(&NewTable::new(
            "new_note",
            "new_notes",
            "new_noteid",
            "new_name",
        ))
        .await;
    emulator.create("new_notes", json!({"new_name": "n"})).await;
    let (body, applied) = track(
        &emulator,
        &emulator.api("new_notes?$filter=new_name%20ne%20null"),
        None,
    )
    .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert!(body.get("@odata.deltaLink").is_none());
    assert_eq!(applied, None, "the preference was not applied");
}

#[tokio::test]
async fn unknown_and_expired_delta_tokens_are_errors() {
    let emulator = Emulator::empty().await;
    let (_, delta) = drain(&emulator, &emulator.api("accounts?$select=name"), None).await;
    let garbage = emulator.get("accounts?$deltatoken=not-a-token").await;
    expect_error(
        garbage,
        400,
        "0x80044352",
        "Version stamp associated with the client has expired",
    )
    .await;
    let future = emulator
        .get("accounts?$deltatoken=999999999%2101%2F01%2F2020%2000%3A00%3A00")
        .await;
    expect_error(future, 400, "0x80044352", "").await;

    // Expired through the control API...
    assert_eq!(
        emulator
            .control(Method::POST, "deltatokens/expire", json!({}))
            .await
            .status(),
        204
    );
    let response = emulator
        .http
        .get(&delta)
        .bearer_auth(emulator.fresh_token().await)
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "0x80044352", "Please perform a full sync.").await;

    // ...and by age: the default retention is seven days.
    let (_, fresh) = drain(&emulator, &emulator.api("accounts?$select=name"), None).await;
    emulator
        .control(Method::POST, "clock", json!({"advance_secs": 6 * 86_400}))
        .await;
    let young = emulator
        .http
        .get(&fresh)
        .bearer_auth(emulator.fresh_token().await)
        .send()
        .await
        .unwrap();
    assert_eq!(young.status(), 200);
    emulator
        .control(Method::POST, "clock", json!({"advance_secs": 2 * 86_400}))
        .await;
    let old = emulator
        .http
        .get(&fresh)
        .bearer_auth(emulator.fresh_token().await)
        .send()
        .await
        .unwrap();
    expect_error(old, 400, "0x80044352", "").await;
}

#[tokio::test]
async fn the_retention_period_is_configurable() {
    let emulator = Emulator::start(&["--seed", "none", "--delta-token-ttl", "60"]).await;
    let (_, delta) = drain(&emulator, &emulator.api("accounts"), None).await;
    emulator
        .control(Method::POST, "clock", json!({"advance_secs": 61}))
        .await;
    let response = emulator
        .http
        .get(&delta)
        .bearer_auth(emulator.fresh_token().await)
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "0x80044352", "").await;
}
