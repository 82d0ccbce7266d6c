//! Deletions with a `$filter`, in both modes. Polled, `when-record-deleted` fires only for a row that
//! matched the filter when the trigger last saw it, with the membership set in a directory and in
//! DynamoDB (moto). Pushed, `dataverse-webhook` judges a deletion by the Delete step's pre-image.
//! Each function runs as its binary, through the Runtime API, against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use e2e_tests::aws::{CURSOR_TABLE, cursor_table, dynamodb_state, scan_items};
use e2e_tests::function_url::FunctionUrl;
use e2e_tests::proxy::{Fault, Operation, Proxy, Rule};
use e2e_tests::{Emulator, Failure, Function, LocalFiles, Moto, webhooks_command};
use reqwest::Method;
use serde_json::{Value, json};

const FILTER: &str = "address1_city eq 'Oslo'";

fn payload() -> Value {
    json!({"dataset": "contoso", "table": "accounts", "$filter": FILTER})
}

async fn create(emulator: &Emulator, name: &str, city: &str) -> String {
    let (status, row) = emulator
        .api(
            Method::POST,
            "accounts",
            Some(&json!({"name": name, "address1_city": city})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{row}");
    row["accountid"].as_str().unwrap().to_owned()
}

async fn move_to(emulator: &Emulator, id: &str, city: &str) {
    let body = json!({ "address1_city": city });
    let (status, row) = emulator
        .api(Method::PATCH, &format!("accounts({id})"), Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{row}");
}

async fn delete(emulator: &Emulator, id: &str) {
    let (status, _) = emulator
        .api(Method::DELETE, &format!("accounts({id})"), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
}

async fn poll(function: &mut Function) -> HashSet<String> {
    match function.invoke(&payload()).await {
        Ok(output) => output["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// The rows that took part, by how they stood against the filter.
struct Rows {
    /// Matched at the baseline, deleted as it was: fires.
    stayed_in: String,
    /// Never matched: does not fire.
    never_in: String,
    /// Matched at the baseline, then moved out before its deletion: does not fire.
    moved_out: String,
    /// Did not match at the baseline, then moved in: fires.
    moved_in: String,
    /// Created matching after the baseline: fires.
    new_in: String,
    /// Created not matching after the baseline: does not fire.
    new_out: String,
}

/// Runs the whole story against `deleted`, whose cursor store the caller chose, and returns the rows.
async fn story(emulator: &Emulator, deleted: &mut Function) -> Rows {
    let stayed_in = create(emulator, "stays in", "Oslo").await;
    let never_in = create(emulator, "never in", "Bergen").await;
    let moved_out = create(emulator, "moves out", "Oslo").await;
    let moved_in = create(emulator, "moves in", "Bergen").await;
    assert!(
        poll(deleted).await.is_empty(),
        "the first poll takes the baseline"
    );

    move_to(emulator, &moved_out, "Bergen").await;
    move_to(emulator, &moved_in, "Oslo").await;
    let new_in = create(emulator, "new, in", "Oslo").await;
    let new_out = create(emulator, "new, out", "Bergen").await;
    assert!(poll(deleted).await.is_empty(), "changes are not deletions");

    let rows = Rows {
        stayed_in,
        never_in,
        moved_out,
        moved_in,
        new_in,
        new_out,
    };
    for id in [
        &rows.stayed_in,
        &rows.never_in,
        &rows.moved_out,
        &rows.moved_in,
        &rows.new_in,
        &rows.new_out,
    ] {
        delete(emulator, id).await;
    }
    assert_eq!(
        poll(deleted).await,
        HashSet::from([
            rows.stayed_in.clone(),
            rows.moved_in.clone(),
            rows.new_in.clone()
        ]),
        "exactly the rows that matched when last seen"
    );
    assert!(poll(deleted).await.is_empty(), "nothing fires twice");
    rows
}

#[tokio::test]
async fn a_filtered_deleted_trigger_fires_only_for_rows_that_matched() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("deleted-filter", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let rows = story(&emulator, &mut deleted).await;
    let published: Vec<Value> = files.published();
    let ids: Vec<&str> = published
        .iter()
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&rows.never_in.as_str()));
    assert!(!ids.contains(&rows.moved_out.as_str()));
    assert!(!ids.contains(&rows.new_out.as_str()));

    // The snapshot and the checks ask Dataverse with the user's filter.
    let filtered = emulator
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .contains("address1_city%20eq%20%27Oslo%27")
        })
        .count();
    assert!(filtered >= 2, "a snapshot and at least one check");
}

#[tokio::test]
async fn an_expired_token_takes_the_snapshot_again() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("deleted-filter-expiry", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    assert!(poll(&mut deleted).await.is_empty());
    // Made and moved in while the token is stale: no delta will ever report it, so only a new
    // snapshot can make it a member.
    let joined = create(&emulator, "joins during the gap", "Bergen").await;
    emulator
        .post("deltatokens/expire", &json!({}))
        .await
        .unwrap();
    move_to(&emulator, &joined, "Oslo").await;
    assert!(poll(&mut deleted).await.is_empty(), "a new baseline");
    assert!(deleted.logs().contains("taking a new baseline"));
    delete(&emulator, &joined).await;
    assert_eq!(poll(&mut deleted).await, HashSet::from([joined]));
}

#[tokio::test]
async fn the_membership_set_lives_in_dynamodb_and_loses_fired_rows() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("deleted-filter-dynamo", &emulator).unwrap();
    let moto = Moto::start().await.unwrap();
    cursor_table(&moto, CURSOR_TABLE).await.unwrap();
    let environment = dynamodb_state(moto.env(), &files);
    let mut deleted = Function::start("when-record-deleted", &environment)
        .await
        .unwrap();
    let members = async || {
        scan_items(&moto, CURSOR_TABLE)
            .await
            .unwrap()
            .iter()
            .filter_map(|i| {
                i["sk"]
                    .as_s()
                    .unwrap()
                    .strip_prefix("in#")
                    .map(str::to_owned)
            })
            .collect::<HashSet<String>>()
    };
    story(&emulator, &mut deleted).await;
    assert!(
        members().await.is_empty(),
        "fired rows leave the set, and rows that never matched never joined it"
    );

    // A member is an item without a TTL.
    let kept = create(&emulator, "kept", "Oslo").await;
    assert!(poll(&mut deleted).await.is_empty());
    assert_eq!(members().await, HashSet::from([kept]));
}

#[tokio::test]
async fn a_membership_set_that_cannot_be_written_loses_nothing() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("deleted-filter-faults", &emulator).unwrap();
    let moto = Moto::start().await.unwrap();
    cursor_table(&moto, CURSOR_TABLE).await.unwrap();
    let proxy = Proxy::start(&moto.url).await.unwrap();
    let environment = dynamodb_state(proxy.env(&moto), &files);
    let mut deleted = Function::start("when-record-deleted", &environment)
        .await
        .unwrap();
    let stays_in = create(&emulator, "stays in", "Oslo").await;
    let moves_in = create(&emulator, "moves in", "Bergen").await;
    assert!(poll(&mut deleted).await.is_empty());

    // The row moving in must join the set, and no write reaches DynamoDB.
    move_to(&emulator, &moves_in, "Oslo").await;
    delete(&emulator, &stays_in).await;
    proxy.add(Rule::new(Operation::BatchWriteItem, Fault::Drop));
    match deleted.invoke(&payload()).await {
        Err(Failure::Error { error_type, .. }) => assert_eq!(error_type, "Crm.ServerError"),
        other => panic!("{other:?}\n{}", deleted.logs()),
    }
    assert!(files.published().is_empty(), "nothing half-done");

    // Once DynamoDB answers again, the same delta is read again, whole: as if the failed poll had
    // never run. (Had `moves_in` been deleted before this poll, no poll would ever have seen it
    // match: see "What polling cannot know" in docs/functions.md.)
    proxy.clear();
    assert_eq!(poll(&mut deleted).await, HashSet::from([stays_in]));
    delete(&emulator, &moves_in).await;
    assert_eq!(poll(&mut deleted).await, HashSet::from([moves_in]));
}

/// Waits for the emulator's pushes to be answered, and returns how many were.
async fn pushed(emulator: &Emulator) -> usize {
    let log = emulator.client().webhook_deliveries(true).await.unwrap();
    assert!(!log.timed_out && log.pending == 0, "{log:?}");
    assert!(
        log.deliveries
            .iter()
            .all(|d| d.attempts.last().and_then(|a| a.status) == Some(200)),
        "{log:?}"
    );
    log.deliveries.len()
}

#[tokio::test]
async fn pushed_and_polled_deletions_honour_the_same_filter_with_one_event_id() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("deleted-filter-push", &emulator).unwrap();
    files
        .set_webhook_key(&emulator, "a-webhook-key-for-filters")
        .unwrap();
    let receiver = FunctionUrl::start(
        Function::start("dataverse-webhook", &files.env())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let registered = webhooks_command(
        &files.env(),
        &[
            "register",
            "--dataset",
            "contoso",
            "--table",
            "account",
            "--url",
            receiver.url(),
            "--filter",
            FILTER,
        ],
    )
    .await
    .unwrap();
    let endpoint = registered["endpoint"].as_str().unwrap();
    assert!(endpoint.contains("/contoso/where/"), "{endpoint}");
    // The Delete step's pre-image holds only what the filter reads.
    let (_, images) = emulator
        .api_get("sdkmessageprocessingstepimages?$select=attributes,imagetype")
        .await
        .unwrap();
    let pre: Vec<&Value> = images["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["imagetype"] == 0)
        .collect();
    assert_eq!(pre.len(), 1, "{images}");
    assert_eq!(pre[0]["attributes"], "address1_city");

    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let stays_in = create(&emulator, "stays in", "Oslo").await;
    let never_in = create(&emulator, "never in", "Bergen").await;
    let moves_out = create(&emulator, "moves out", "Oslo").await;
    assert!(poll(&mut deleted).await.is_empty());
    move_to(&emulator, &moves_out, "Bergen").await;
    assert!(poll(&mut deleted).await.is_empty());
    // Created and deleted between two polls: only push can see that it matched.
    let fleeting = create(&emulator, "fleeting", "Oslo").await;
    for id in [&stays_in, &never_in, &moves_out, &fleeting] {
        delete(&emulator, id).await;
    }
    // 4 creations, 1 update, 4 deletions: every one answered, whether published or not.
    assert_eq!(pushed(&emulator).await, 9);
    assert_eq!(
        poll(&mut deleted).await,
        HashSet::from([stays_in.clone()]),
        "polling cannot know about the fleeting row"
    );

    let events = files.published();
    let of = |kind: &str, via: Option<&str>| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["detail-type"] == kind && e["detail"]["via"].as_str() == via)
            .map(|e| {
                (
                    e["detail"]["id"].as_str().unwrap().to_owned(),
                    e["detail"]["event_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pushed_deletions = of("Record Deleted", Some("webhook"));
    let ids: HashSet<&str> = pushed_deletions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, HashSet::from([stays_in.as_str(), fleeting.as_str()]));
    let polled = of("Record Deleted", None);
    assert_eq!(polled.len(), 1);
    assert!(
        pushed_deletions.contains(&polled[0]),
        "one change, one event id, pushed or polled"
    );
    // The filter applies to creations and updates too: only rows in Oslo were published.
    let created: HashSet<String> = of("Record Created", Some("webhook"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(created, HashSet::from([stays_in, moves_out, fleeting]));
    assert!(
        of("Record Updated", Some("webhook")).is_empty(),
        "it moved out"
    );
}
