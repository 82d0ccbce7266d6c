//! `when-record-deleted` with `remember_ids: true`: when the delta token expires, the new baseline
//! is followed by a sweep that fires a deletion for every remembered row that is gone, exactly those,
//! with the event id any deletion of that row has; without it the gap's deletions are lost, as the
//! warning says. A cursor that starts remembering lists every row's id and still fires the deletions
//! its saved delta holds. Ids are kept in a directory and in DynamoDB (moto). Each function runs as its
//! binary, through the Runtime API, against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::aws::{CURSOR_TABLE, cursor_table, dynamodb_state, scan_items};
use e2e_tests::fake_eventbridge::{FakeEventBridge, Received, Refuse};
use e2e_tests::{Emulator, Function, LocalFiles, Moto};
use reqwest::Method;
use serde_json::{Value, json};

fn payload(extra: &Value) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts"});
    payload
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    payload
}

async fn delete(emulator: &Emulator, id: &str) {
    let (status, _) = emulator
        .api(Method::DELETE, &format!("accounts({id})"), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
}

async fn poll(function: &mut Function, payload: &Value) -> HashSet<String> {
    match function.invoke(payload).await {
        Ok(output) => output["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// The rows of the story.
struct Rows {
    /// There at the baseline, still there.
    kept: String,
    /// There at the baseline, deleted while the token was stale.
    gone: String,
    /// Created after the baseline (learnt from a delta), deleted while the token was stale.
    gone_later: String,
    /// There at the baseline, deleted after the new one.
    after: String,
}

/// Baseline, a delta, rows deleted, the token expired: returns what the poll after that fired.
async fn story(
    emulator: &Emulator,
    deleted: &mut Function,
    payload: &Value,
) -> (Rows, HashSet<String>) {
    let kept = emulator.create_account("kept").await.unwrap();
    let gone = emulator.create_account("gone").await.unwrap();
    let after = emulator.create_account("after").await.unwrap();
    assert!(poll(deleted, payload).await.is_empty(), "the baseline");
    let gone_later = emulator.create_account("gone later").await.unwrap();
    assert!(
        poll(deleted, payload).await.is_empty(),
        "a creation is no deletion"
    );

    delete(emulator, &gone).await;
    delete(emulator, &gone_later).await;
    emulator.client().expire_delta_tokens().await.unwrap();
    let fired = poll(deleted, payload).await;
    let rows = Rows {
        kept,
        gone,
        gone_later,
        after,
    };
    (rows, fired)
}

/// After the story: nothing fires twice, and deletions fire from the new delta as before.
async fn then_tracking_goes_on(
    emulator: &Emulator,
    deleted: &mut Function,
    payload: &Value,
    rows: &Rows,
) {
    assert!(
        poll(deleted, payload).await.is_empty(),
        "nothing fires twice"
    );
    delete(emulator, &rows.after).await;
    assert_eq!(
        poll(deleted, payload).await,
        HashSet::from([rows.after.clone()])
    );
}

#[tokio::test]
async fn an_expired_token_fires_exactly_the_deletions_it_hid() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let payload = payload(&json!({"remember_ids": true}));
    let (rows, fired) = story(&emulator, &mut deleted, &payload).await;
    assert_eq!(
        fired,
        HashSet::from([rows.gone.clone(), rows.gone_later.clone()]),
        "the remembered rows that are gone, and nothing else"
    );
    assert!(!fired.contains(&rows.kept));
    let logs = deleted.logs();
    assert!(logs.contains("found from the remembered ids"), "{logs}");
    then_tracking_goes_on(&emulator, &mut deleted, &payload, &rows).await;
    let events = files.published();
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(events.iter().all(|e| e["detail-type"] == "Record Deleted"));
}

#[tokio::test]
async fn without_remember_ids_the_gap_is_lost_with_a_warning() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids-off", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let payload = payload(&json!({}));
    let (rows, fired) = story(&emulator, &mut deleted, &payload).await;
    assert!(fired.is_empty(), "{fired:?}");
    assert!(
        deleted
            .logs()
            .contains("deletions since the last successful poll cannot be reported"),
        "{}",
        deleted.logs()
    );
    then_tracking_goes_on(&emulator, &mut deleted, &payload, &rows).await;
}

#[tokio::test]
async fn remembered_ids_live_in_dynamodb_one_item_each() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids-dynamo", &emulator).unwrap();
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
                let id = i["sk"].as_s().unwrap().strip_prefix("in#")?.to_owned();
                assert!(i["g"].as_n().is_ok(), "each member carries its mark: {i:?}");
                // DynamoDB's item size: attribute names and values (a small number is a few
                // bytes). docs/events.md counts about 85 bytes a row.
                let size: usize = i
                    .iter()
                    .map(|(name, value)| {
                        name.len()
                            + value
                                .as_s()
                                .map(String::len)
                                .or_else(|_| value.as_n().map(String::len))
                                .unwrap()
                    })
                    .sum();
                assert!(size <= 90, "{size} bytes: {i:?}");
                Some(id)
            })
            .collect::<HashSet<String>>()
    };
    let payload = payload(&json!({"remember_ids": true, "trigger": "remembers"}));
    let (rows, fired) = story(&emulator, &mut deleted, &payload).await;
    assert_eq!(
        fired,
        HashSet::from([rows.gone.clone(), rows.gone_later.clone()])
    );
    assert_eq!(
        members().await,
        HashSet::from([rows.kept.clone(), rows.after.clone()]),
        "fired rows leave the set"
    );
    then_tracking_goes_on(&emulator, &mut deleted, &payload, &rows).await;
    assert_eq!(members().await, HashSet::from([rows.kept.clone()]));

    // A cursor saved without remember_ids lists every row's id when it is asked to remember.
    let named = payload_named("was-forgetful");
    let mut forgetful = Function::start("when-record-deleted", &environment)
        .await
        .unwrap();
    assert!(poll(&mut forgetful, &named(false)).await.is_empty());
    assert!(poll(&mut forgetful, &named(true)).await.is_empty());
    assert!(
        forgetful
            .logs()
            .contains("remember_ids is new to this cursor"),
        "{}",
        forgetful.logs()
    );
    let fresh = emulator.create_account("fresh").await.unwrap();
    emulator.client().expire_delta_tokens().await.unwrap();
    delete(&emulator, &rows.kept).await;
    assert_eq!(
        poll(&mut forgetful, &named(true)).await,
        HashSet::from([rows.kept.clone()]),
        "a quiet row, learnt from the listing"
    );
    let _ = fresh;
}

#[tokio::test]
async fn turning_remember_ids_on_keeps_the_deletions_waiting_in_the_saved_delta() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids-upgrade", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let named = payload_named("upgraded");
    let waiting = emulator.create_account("waiting").await.unwrap();
    let quiet = emulator.create_account("quiet").await.unwrap();
    let last = emulator.create_account("last").await.unwrap();
    assert!(
        poll(&mut deleted, &named(false)).await.is_empty(),
        "the baseline"
    );
    delete(&emulator, &waiting).await;
    assert_eq!(
        poll(&mut deleted, &named(true)).await,
        HashSet::from([waiting.clone()]),
        "the deletion in the saved delta fires although the cursor starts remembering"
    );
    let logs = deleted.logs();
    assert!(
        logs.contains("remember_ids is new to this cursor"),
        "{logs}"
    );
    assert!(poll(&mut deleted, &named(true)).await.is_empty());
    // The quiet row never changed: only the listing can have taught the cursor its id.
    emulator.client().expire_delta_tokens().await.unwrap();
    delete(&emulator, &quiet).await;
    assert_eq!(
        poll(&mut deleted, &named(true)).await,
        HashSet::from([quiet.clone()]),
        "a quiet row, learnt from the listing"
    );

    // Off, a deletion fires and its id stays in the set, which is no longer kept; on again, that
    // id is dropped before the listing, so no later sweep fires it a second time.
    assert!(poll(&mut deleted, &named(false)).await.is_empty());
    delete(&emulator, &last).await;
    assert_eq!(
        poll(&mut deleted, &named(false)).await,
        HashSet::from([last.clone()])
    );
    assert!(poll(&mut deleted, &named(true)).await.is_empty());
    emulator.client().expire_delta_tokens().await.unwrap();
    assert!(
        poll(&mut deleted, &named(true)).await.is_empty(),
        "a deletion fired while ids were not kept does not fire again"
    );
    let events = files.published();
    assert_eq!(events.len(), 3, "{events:#?}");
}

fn payload_named(name: &str) -> impl Fn(bool) -> Value + '_ {
    move |remember| payload(&json!({"trigger": name, "remember_ids": remember}))
}

#[tokio::test]
async fn a_sweep_stopped_by_a_refused_event_fires_the_same_event_again() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids-retry", &emulator).unwrap();
    let fake = FakeEventBridge::start(Duration::ZERO).await.unwrap();
    let environment = files.env_on_eventbridge(fake.env(), "crm-events");
    let mut deleted = Function::start("when-record-deleted", &environment)
        .await
        .unwrap();
    let payload = payload(&json!({"remember_ids": true}));
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for name in ["one", "two", "three"] {
            ids.push(emulator.create_account(name).await.unwrap());
        }
        ids
    };
    assert!(poll(&mut deleted, &payload).await.is_empty());
    for id in &ids {
        delete(&emulator, id).await;
    }
    emulator.client().expire_delta_tokens().await.unwrap();
    fake.refuse(Refuse::detail("id", &ids[1]).code("InternalFailure", "try again"));
    let failed = deleted.invoke(&payload).await;
    assert!(failed.is_err(), "{failed:?}");
    fake.clear();
    let mut fired = poll(&mut deleted, &payload).await;
    fired.extend(poll(&mut deleted, &payload).await);
    assert!(fired.contains(&ids[1]), "{fired:?}");
    let received = fake.received();
    let accepted: Vec<_> = received.iter().filter(|r| r.accepted()).collect();
    let rows: HashSet<&str> = accepted.iter().map(|r| r.row_id()).collect();
    assert_eq!(
        rows,
        ids.iter().map(String::as_str).collect(),
        "{received:?}"
    );
    for id in &ids {
        let event_ids: HashSet<&str> = received
            .iter()
            .filter(|r| r.row_id() == id)
            .map(Received::event_id)
            .collect();
        assert_eq!(
            event_ids.len(),
            1,
            "one event id per deleted row: {received:?}"
        );
    }
}

#[tokio::test]
async fn with_a_filter_only_remembered_members_that_are_gone_fire() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("remember-ids-filter", &emulator).unwrap();
    let mut deleted = Function::start("when-record-deleted", &files.env())
        .await
        .unwrap();
    let payload = payload(&json!({"remember_ids": true, "$filter": "address1_city eq 'Oslo'"}));
    let account = async |city: &str| {
        let (status, row) = emulator
            .api(
                Method::POST,
                "accounts",
                Some(&json!({"name": city, "address1_city": city})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{row}");
        row["accountid"].as_str().unwrap().to_owned()
    };
    let member_gone = account("Oslo").await;
    let never_member = account("Bergen").await;
    let moved_out = account("Oslo").await;
    assert!(poll(&mut deleted, &payload).await.is_empty());
    emulator.client().expire_delta_tokens().await.unwrap();
    delete(&emulator, &member_gone).await;
    delete(&emulator, &never_member).await;
    let (status, _) = emulator
        .api(
            Method::PATCH,
            &format!("accounts({moved_out})"),
            Some(&json!({"address1_city": "Bergen"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        poll(&mut deleted, &payload).await,
        HashSet::from([member_gone]),
        "a member that is gone; not a row that never matched, nor one that stopped matching"
    );
    delete(&emulator, &moved_out).await;
    assert!(
        poll(&mut deleted, &payload).await.is_empty(),
        "it left the set when the sweep found it no longer matching"
    );
}
