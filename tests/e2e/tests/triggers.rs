//! The three polling triggers, run as their binaries through the Lambda Runtime API, against the
//! emulator, with cursors in a directory or in DynamoDB (moto) and events in a file or on EventBridge
//! (moto, read back through SQS).

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use e2e_tests::aws::{Tap, cursor_table};
use e2e_tests::{Emulator, Failure, Function, LocalFiles, Moto, env, settle};
use reqwest::Method;
use serde_json::{Value, json};

struct Rig {
    emulator: Emulator,
    files: LocalFiles,
    env: Vec<(String, String)>,
}

impl Rig {
    /// An empty organisation; cursors in a directory, events in a JSON-lines file.
    async fn new() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("triggers", &emulator).unwrap();
        let env = files.env();
        Self {
            emulator,
            files,
            env,
        }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &self.env).await.unwrap()
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.files.events())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn create(&self, name: &str) -> String {
        self.emulator.create_account(name).await.unwrap()
    }

    /// A row created ten minutes ago: an update to it is plainly not its creation (Dataverse cannot tell
    /// an update in the creation's own second from the creation).
    async fn create_old(&self, name: &str) -> String {
        let then = time_ago(600);
        let row = self
            .emulator
            .post(
                "tables/accounts/rows",
                &json!({"name": name, "createdon": then, "modifiedon": then}),
            )
            .await
            .unwrap();
        row["id"].as_str().unwrap().to_owned()
    }

    async fn update(&self, id: &str, body: Value) {
        let (status, _) = self
            .emulator
            .api(Method::PATCH, &format!("accounts({id})"), Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }

    async fn delete(&self, id: &str) {
        let (status, _) = self
            .emulator
            .api(Method::DELETE, &format!("accounts({id})"), None)
            .await
            .unwrap();
        assert_eq!(status, 204);
    }

    /// Every account id there is.
    async fn all_ids(&self) -> HashSet<String> {
        let mut ids = HashSet::new();
        let mut path = "accounts?$select=accountid".to_owned();
        loop {
            let (_, page) = self.emulator.api_get(&path).await.unwrap();
            ids.extend(
                page["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["accountid"].as_str().unwrap().to_owned()),
            );
            match page["@odata.nextLink"].as_str() {
                Some(next) => next
                    .split("/api/data/v9.2/")
                    .nth(1)
                    .unwrap()
                    .clone_into(&mut path),
                None => return ids,
            }
        }
    }
}

fn accounts(extra: &Value) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts"});
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    payload
}

/// A GUID rewritten so that text order is SQL Server's order (last group first, the first three groups
/// byte-swapped), worked out here independently of the code under test.
fn sql_server_order(id: &str) -> String {
    let groups: Vec<&str> = id.split('-').collect();
    let swap = |g: &str| -> String {
        g.as_bytes()
            .chunks(2)
            .rev()
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect()
    };
    format!(
        "{}{}{}{}{}",
        groups[4],
        groups[3],
        swap(groups[2]),
        swap(groups[1]),
        swap(groups[0])
    )
}

async fn poll(function: &mut Function, payload: &Value) -> Vec<Value> {
    match function.invoke(payload).await {
        Ok(output) => output["value"].as_array().unwrap().clone(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

fn ids(rows: &[Value], key: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until a poll fires nothing; returns everything fired, in order.
async fn drain(function: &mut Function, payload: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let fired = poll(function, payload).await;
        if fired.is_empty() {
            return all;
        }
        all.extend(fired);
    }
}

#[tokio::test]
async fn each_trigger_fires_once_per_change_through_the_file_sink() {
    let rig = Rig::new().await;
    let existing = rig.create_old("before the triggers").await;
    let mut created = rig.function("when-record-created").await;
    let mut updated = rig.function("when-record-updated").await;
    let mut deleted = rig.function("when-record-deleted").await;
    let payload = accounts(&json!({"$select": "name"}));
    // First polls start the cursors from now; nothing before fires.
    assert!(poll(&mut created, &payload).await.is_empty());
    assert!(poll(&mut updated, &payload).await.is_empty());
    assert!(poll(&mut deleted, &accounts(&json!({}))).await.is_empty());

    let a = rig.create("alpha").await;
    let b = rig.create("beta").await;
    settle().await;
    let fired = poll(&mut created, &payload).await;
    let fired_ids: HashSet<String> = ids(&fired, "accountid").into_iter().collect();
    assert_eq!(fired_ids, [a.clone(), b.clone()].into());
    rig.update(&existing, json!({"name": "renamed"})).await;
    rig.delete(&b).await;
    let fired = poll(&mut updated, &payload).await;
    assert_eq!(ids(&fired, "accountid"), std::slice::from_ref(&existing));
    assert_eq!(
        fired[0]["name"], "renamed",
        "the row as it is when the poll sees it"
    );
    let fired = poll(&mut deleted, &accounts(&json!({}))).await;
    assert_eq!(fired, [json!({"id": b})]);
    for (f, p) in [(&mut created, &payload), (&mut updated, &payload)] {
        assert!(poll(f, p).await.is_empty(), "nothing fires twice");
    }
    assert!(poll(&mut deleted, &accounts(&json!({}))).await.is_empty());

    let events = rig.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Record Created",
            "Record Created",
            "Record Updated",
            "Record Deleted"
        ]
    );
    let first = events
        .iter()
        .find(|e| e["detail"]["id"] == a.as_str())
        .unwrap();
    assert_eq!(first["source"], "dynamics.crm");
    let detail = &first["detail"];
    assert_eq!(detail["dataset"], "contoso");
    assert_eq!(detail["table"], "accounts");
    assert_eq!(detail["record"]["name"], "alpha");
    assert!(detail["version"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(detail["changed_on"].as_str().unwrap().ends_with('Z'));
    assert_eq!(detail["event_id"].as_str().unwrap().len(), 32);
    let deletion = &events[3]["detail"];
    assert_eq!(deletion["version"], Value::Null);
    assert!(deletion.get("record").is_none());
}

#[tokio::test]
async fn events_reach_eventbridge_and_cursors_live_in_dynamodb() {
    let rig = Rig::new().await;
    let moto = Moto::start().await.unwrap();
    cursor_table(&moto, "crm-cursors").await.unwrap();
    let tap = Tap::new(&moto, "crm-events", "contoso.crm").await.unwrap();
    let mut environment = moto.env();
    environment.push(rig.files.secrets_env());
    environment.extend(env(&[
        ("CRM_STATE", "dynamodb:crm-cursors"),
        ("CRM_EVENTS", "eventbridge:crm-events"),
        ("CRM_EVENT_SOURCE", "contoso.crm"),
    ]));
    let mut created = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let mut updated = Function::start("when-record-updated", &environment)
        .await
        .unwrap();
    let mut deleted = Function::start("when-record-deleted", &environment)
        .await
        .unwrap();
    let payload = accounts(&json!({}));
    for f in [&mut created, &mut updated, &mut deleted] {
        assert!(poll(f, &payload).await.is_empty());
    }
    let ids_made: Vec<String> =
        futures_util::future::join_all((0..12).map(|i| rig.create_named(i))).await;
    settle().await;
    assert_eq!(
        poll(&mut created, &payload).await.len(),
        12,
        "more than one PutEvents batch of 10"
    );
    let old = rig.create_old("older").await;
    rig.update(&old, json!({"name": "changed"})).await;
    rig.delete(&ids_made[1]).await;
    assert_eq!(poll(&mut updated, &payload).await.len(), 1);
    assert_eq!(poll(&mut deleted, &payload).await.len(), 1);

    let events = tap.drain().await.unwrap();
    assert_eq!(events.len(), 14);
    let count = |kind: &str| events.iter().filter(|e| e["detail-type"] == kind).count();
    assert_eq!(
        (
            count("Record Created"),
            count("Record Updated"),
            count("Record Deleted")
        ),
        (12, 1, 1)
    );
    assert!(events.iter().all(|e| e["source"] == "contoso.crm"));
    let received: HashSet<&str> = events
        .iter()
        .filter(|e| e["detail-type"] == "Record Created")
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(received, ids_made.iter().map(String::as_str).collect());

    // The cursor rows are in DynamoDB, with a revision per saved poll and no lease left behind.
    let dynamo = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let items = dynamo
        .scan()
        .table_name("crm-cursors")
        .send()
        .await
        .unwrap();
    let cursors: Vec<_> = items
        .items()
        .iter()
        .filter(|i| i["sk"].as_s().unwrap() == "cursor")
        .collect();
    assert_eq!(cursors.len(), 3);
    for cursor in cursors {
        assert_eq!(cursor["revision"].as_n().unwrap(), "2");
        assert!(!cursor.contains_key("lease_owner"));
    }
}

impl Rig {
    async fn create_named(&self, i: usize) -> String {
        self.create(&format!("account {i:03}")).await
    }
}

#[tokio::test]
async fn a_same_second_burst_larger_than_top_fires_every_row_exactly_once() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$top": 64, "$select": "name"}));
    poll(&mut created, &payload).await;
    // 500 rows inserted under one lock: they share one createdon second (or two).
    rig.emulator
        .post("tables/account/generate", &json!({"count": 500}))
        .await
        .unwrap();
    let mut fired = Vec::new();
    let mut polls = 0;
    settle().await;
    loop {
        let batch = poll(&mut created, &payload).await;
        assert!(batch.len() <= 64);
        if batch.is_empty() {
            break;
        }
        polls += 1;
        fired.extend(ids(&batch, "accountid"));
    }
    assert_eq!(polls, 8);
    let unique: HashSet<&String> = fired.iter().collect();
    assert_eq!((fired.len(), unique.len()), (500, 500));
}

#[tokio::test]
async fn each_distinct_update_fires_once_even_in_a_burst() {
    let rig = Rig::new().await;
    rig.emulator
        .post(
            "tables/account/generate",
            &json!({"count": 120, "createdon": time_ago(600)}),
        )
        .await
        .unwrap();
    let all: Vec<String> = rig.all_ids().await.into_iter().collect();
    let mut updated = rig.function("when-record-updated").await;
    let payload = accounts(&json!({"$top": 50, "$select": "name"}));
    poll(&mut updated, &payload).await;
    for (i, id) in all.iter().enumerate() {
        rig.update(id, json!({"name": format!("first {i}")})).await;
    }
    for id in all.iter().take(30) {
        rig.update(id, json!({"name": "second"})).await;
    }
    let fired = drain(&mut updated, &payload).await;
    let versions: HashSet<(String, String)> = fired
        .iter()
        .map(|r| {
            (
                r["accountid"].as_str().unwrap().to_owned(),
                r["@odata.etag"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions.len(), fired.len(), "no change fired twice");
    let rows: HashSet<&str> = fired
        .iter()
        .map(|r| r["accountid"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 120, "every updated row fired");
    for row in fired
        .iter()
        .filter(|r| all[..30].contains(&r["accountid"].as_str().unwrap().to_owned()))
    {
        assert_eq!(row["name"], "second", "the row's state as of the poll");
    }
}

#[tokio::test]
async fn rows_changing_while_a_poll_pages_are_neither_lost_nor_fired_twice() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$top": 10_000, "$select": "name"}));
    poll(&mut created, &payload).await;
    rig.emulator
        .post("tables/account/generate", &json!({"count": 6_000}))
        .await
        .unwrap();
    let before: Vec<String> = rig.all_ids().await.into_iter().collect();
    // The second page of the scan is held up; meanwhile rows are created, updated and deleted.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 1500, "path_contains": "$skiptoken", "times": 1}),
        )
        .await
        .unwrap();
    let changes = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut made = Vec::new();
        for i in 0..15 {
            made.push(rig.create(&format!("during {i}")).await);
        }
        for id in before.iter().take(10) {
            rig.update(id, json!({"name": "touched"})).await;
        }
        made
    };
    settle().await;
    let (first, made) = tokio::join!(poll(&mut created, &payload), changes);
    settle().await;
    let rest = drain(&mut created, &payload).await;
    let mut fired = ids(&first, "accountid");
    fired.extend(ids(&rest, "accountid"));
    let unique: HashSet<&String> = fired.iter().collect();
    assert_eq!(unique.len(), fired.len(), "nothing fired twice");
    let expected: HashSet<&String> = before.iter().chain(made.iter()).collect();
    let missing: Vec<_> = expected.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "every row fired: {} missing {missing:?}, {} unexpected {extra:?}; first poll {} rows",
        missing.len(),
        extra.len(),
        first.len()
    );
}

#[tokio::test]
async fn a_late_commit_below_the_cursor_still_fires_once() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let mut updated = rig.function("when-record-updated").await;
    let payload = accounts(&json!({"$select": "name,createdon,modifiedon"}));
    poll(&mut created, &payload).await;
    poll(&mut updated, &payload).await;
    // Let the cursor's start fall a few seconds behind, so a late commit can land after it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = rig.create("seen first").await;
    settle().await;
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        std::slice::from_ref(&seen)
    );
    // A transaction that started 3 seconds ago commits now: its row is older than one already fired.
    let three_ago = time_ago(3);
    let late = rig
        .emulator
        .post(
            "tables/accounts/rows",
            &json!({"name": "late", "createdon": three_ago, "modifiedon": three_ago}),
        )
        .await
        .unwrap();
    let late_id = late["id"].as_str().unwrap();
    let fired = poll(&mut created, &payload).await;
    assert_eq!(ids(&fired, "accountid"), [late_id]);
    assert!(
        poll(&mut created, &payload).await.is_empty(),
        "and only once"
    );
    // An update committed late, with a modifiedon older than changes already fired.
    let old = rig.create_old("old").await;
    rig.update(&old, json!({"name": "old, changed"})).await;
    assert_eq!(poll(&mut updated, &payload).await.len(), 1);
    let older_change = rig
        .emulator
        .post(
            "tables/accounts/rows",
            &json!({"name": "late update", "createdon": time_ago(30), "modifiedon": time_ago(2)}),
        )
        .await
        .unwrap();
    let fired = poll(&mut updated, &payload).await;
    assert_eq!(
        ids(&fired, "accountid"),
        [older_change["id"].as_str().unwrap()]
    );
    assert!(poll(&mut updated, &payload).await.is_empty());
}

fn time_ago(secs: u64) -> String {
    let at = std::time::SystemTime::now() - Duration::from_secs(secs);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Whole seconds, UTC.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil(i64::try_from(days).unwrap());
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn rows_created_and_deleted_between_polls_fire_as_deletions() {
    let rig = Rig::new().await;
    let mut deleted = rig.function("when-record-deleted").await;
    let payload = accounts(&json!({}));
    poll(&mut deleted, &payload).await;
    let fleeting = rig.create("here and gone").await;
    rig.delete(&fleeting).await;
    assert_eq!(
        poll(&mut deleted, &payload).await,
        [json!({"id": fleeting})]
    );
}

#[tokio::test]
async fn an_expired_delta_token_takes_a_new_baseline_instead_of_failing() {
    let rig = Rig::new().await;
    let keep = rig.create("keep").await;
    let gone_in_gap = rig.create("gone while the token was stale").await;
    let later = rig.create("later").await;
    let mut deleted = rig.function("when-record-deleted").await;
    let payload = accounts(&json!({}));
    poll(&mut deleted, &payload).await;
    rig.emulator
        .post("deltatokens/expire", &json!({}))
        .await
        .unwrap();
    rig.delete(&gone_in_gap).await;
    assert!(
        poll(&mut deleted, &payload).await.is_empty(),
        "a new baseline, not an error"
    );
    assert!(
        deleted.logs().contains("taking a new baseline"),
        "{}",
        deleted.logs()
    );
    rig.delete(&later).await;
    assert_eq!(poll(&mut deleted, &payload).await, [json!({"id": later})]);
    let _ = keep;
}

#[tokio::test]
async fn a_table_without_change_tracking_cannot_have_a_deleted_trigger() {
    let rig = Rig::new().await;
    rig.emulator
        .post(
            "tables",
            &json!({"logical_name": "new_note", "entity_set_name": "new_notes", "primary_id": "new_noteid", "primary_name": "new_name", "change_tracking": false}),
        )
        .await
        .unwrap();
    let mut deleted = rig.function("when-record-deleted").await;
    match deleted
        .invoke(&json!({"dataset": "contoso", "table": "new_note"}))
        .await
    {
        Err(Failure::Error {
            error_type,
            message,
        }) => {
            assert_eq!(error_type, "Crm.Configuration");
            assert!(
                message.contains("change tracking is not enabled"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_large_baseline_resumes_across_polls() {
    let rig = Rig::new().await;
    rig.emulator
        .post("tables/account/generate", &json!({"count": 12_000}))
        .await
        .unwrap();
    let mut deleted = rig.function("when-record-deleted").await;
    let payload = accounts(&json!({}));
    // Each baseline page is slow; the poll's deadline allows about one.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 1200, "path_contains": "/accounts", "times": 3}),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let answer = deleted
        .invoke_within(&payload, Duration::from_secs(3))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let baseline_requests = |log: &[Value]| {
        log.iter()
            .filter(|e| {
                e["path"].as_str().unwrap().contains("/accounts")
                    && e["prefer"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("track-changes")
            })
            .count()
    };
    let first = baseline_requests(&rig.emulator.requests().await.unwrap());
    assert!(
        (1..3).contains(&first),
        "{first} baseline pages in the first poll"
    );
    rig.emulator.clear_requests().await.unwrap();
    poll(&mut deleted, &payload).await;
    let log = rig.emulator.requests().await.unwrap();
    assert!(
        log.iter()
            .any(|e| e["path"].as_str().unwrap().contains("skiptoken")),
        "it resumed mid-baseline"
    );
    let gone = rig.all_ids().await.into_iter().next().unwrap();
    rig.delete(&gone).await;
    assert_eq!(poll(&mut deleted, &payload).await, [json!({"id": gone})]);
}

#[tokio::test]
async fn updated_with_columns_fires_only_when_a_watched_column_changes() {
    let rig = Rig::new().await;
    let id = rig.create_old("watched").await;
    let mut updated = rig.function("when-record-updated").await;
    let payload = accounts(&json!({"columns": ["telephone1"], "$select": "name,telephone1"}));
    poll(&mut updated, &payload).await;
    rig.update(&id, json!({"telephone1": "+1-555-0100"})).await;
    assert_eq!(
        poll(&mut updated, &payload).await.len(),
        1,
        "no fingerprint yet: the first change fires"
    );
    rig.update(&id, json!({"name": "renamed only"})).await;
    assert!(
        poll(&mut updated, &payload).await.is_empty(),
        "an unwatched column"
    );
    rig.update(&id, json!({"telephone1": "+1-555-0100"})).await;
    assert!(
        poll(&mut updated, &payload).await.is_empty(),
        "the same value again"
    );
    rig.update(&id, json!({"telephone1": "+1-555-0199"})).await;
    let fired = poll(&mut updated, &payload).await;
    assert_eq!(fired[0]["telephone1"], "+1-555-0199");
    let fresh = rig.create("born watched").await;
    assert!(
        poll(&mut updated, &payload).await.is_empty(),
        "a creation is not an update"
    );
    rig.update(&fresh, json!({"name": "still not watched"}))
        .await;
    assert!(
        poll(&mut updated, &payload).await.is_empty(),
        "its fingerprint was taken at creation"
    );
}

#[tokio::test]
async fn the_users_filter_is_applied_by_dataverse() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$filter": "startswith(name,'VIP')"}));
    poll(&mut created, &payload).await;
    rig.create("VIP one").await;
    rig.create("ordinary").await;
    rig.emulator.clear_requests().await.unwrap();
    settle().await;
    let fired = poll(&mut created, &payload).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["name"], "VIP one");
    let log = rig.emulator.requests().await.unwrap();
    let query = log
        .iter()
        .find(|e| {
            e["path"]
                .as_str()
                .unwrap()
                .starts_with("/api/data/v9.2/accounts?")
        })
        .unwrap();
    // The user's filter travels to Dataverse, joined to the cursor's own.
    let path = query["path"].as_str().unwrap().replace("%27", "'");
    assert!(path.contains("%20and%20(startswith(name,'VIP'))"), "{path}");
}

#[tokio::test]
async fn a_backlog_drains_in_order_over_successive_polls() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$select": "name,createdon"}));
    poll(&mut created, &payload).await;
    rig.emulator
        .post("tables/account/generate", &json!({"count": 2_000}))
        .await
        .unwrap();
    let mut fired = Vec::new();
    let mut polls = 0;
    settle().await;
    loop {
        let batch = poll(&mut created, &payload).await;
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 256, "one poll fires at most $top");
        polls += 1;
        fired.extend(batch);
    }
    assert_eq!(polls, 8);
    let keys: Vec<(String, String)> = fired
        .iter()
        .map(|r| {
            (
                r["createdon"].as_str().unwrap().to_owned(),
                sql_server_order(r["accountid"].as_str().unwrap()),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "fired in (createdon, id) order across polls, ids as SQL Server orders them"
    );
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 2_000);
}

#[tokio::test]
async fn orderby_sorts_what_one_poll_returns() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$orderby": "name desc"}));
    poll(&mut created, &payload).await;
    for name in ["b", "c", "a"] {
        rig.create(name).await;
    }
    settle().await;
    let names: Vec<String> = poll(&mut created, &payload)
        .await
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["c", "b", "a"]);
}

#[tokio::test]
async fn since_starts_a_new_cursor_in_the_past() {
    let rig = Rig::new().await;
    let old = rig.create("old").await;
    let mut created = rig.function("when-record-created").await;
    settle().await;
    let fired = poll(
        &mut created,
        &accounts(&json!({"since": time_ago(3600), "trigger": "backfill"})),
    )
    .await;
    assert_eq!(ids(&fired, "accountid"), [old]);
}

#[tokio::test]
async fn two_overlapping_invocations_never_both_advance_the_cursor() {
    let rig = Rig::new().await;
    let moto = Moto::start().await.unwrap();
    cursor_table(&moto, "crm-cursors").await.unwrap();
    let mut environment = moto.env();
    environment.extend(rig.env.iter().filter(|(k, _)| k != "CRM_STATE").cloned());
    environment.push(("CRM_STATE".into(), "dynamodb:crm-cursors".into()));
    let mut first = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let mut second = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let payload = accounts(&json!({}));
    poll(&mut first, &payload).await;
    for i in 0..5 {
        rig.create(&format!("overlap {i}")).await;
    }
    // The first poll's query is slow, so the second poll starts while the first holds the cursor.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 1500, "path_contains": "/accounts?", "times": 1}),
        )
        .await
        .unwrap();
    settle().await;
    let slow = first.invoke(&payload);
    let overlapping = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        second.invoke(&payload).await
    };
    let (a, b) = tokio::join!(slow, overlapping);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a["value"].as_array().unwrap().len(), 5);
    assert_eq!(b["value"], json!([]), "the overlapping poll did nothing");
    assert!(second.logs().contains("another poll holds this cursor"));
    assert_eq!(rig.events().len(), 5, "each change published once");
    assert!(poll(&mut second, &payload).await.is_empty());
}

#[tokio::test]
async fn a_sink_that_fails_keeps_the_cursor_and_the_next_poll_delivers_the_same_events() {
    let rig = Rig::new().await;
    let moto = Moto::start().await.unwrap();
    let mut environment = moto.env();
    environment.extend(rig.env.iter().filter(|(k, _)| k != "CRM_EVENTS").cloned());
    environment.push(("CRM_EVENTS".into(), "eventbridge:not-yet".into()));
    let mut created = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let payload = accounts(&json!({}));
    poll(&mut created, &payload).await;
    let made = [rig.create("one").await, rig.create("two").await];
    settle().await;
    // A bus that does not exist is the deployment's doing, so the workflow sees a configuration error.
    match created.invoke(&payload).await {
        Err(Failure::Error { error_type, .. }) => assert_eq!(error_type, "Crm.Configuration"),
        other => panic!("{other:?}"),
    }
    // The bus appears; the next poll publishes both changes, which the failed poll did not deliver.
    let tap = Tap::new(&moto, "not-yet", "dynamics.crm").await.unwrap();
    let fired = poll(&mut created, &payload).await;
    let fired: HashSet<String> = ids(&fired, "accountid").into_iter().collect();
    assert_eq!(fired, made.into_iter().collect());
    let events = tap.drain().await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(poll(&mut created, &payload).await.is_empty());
}

#[tokio::test]
async fn a_poll_stops_fetching_in_time_to_publish_and_checkpoint() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({"$top": 10_000, "$select": "name"}));
    poll(&mut created, &payload).await;
    rig.emulator
        .post("tables/account/generate", &json!({"count": 7_000}))
        .await
        .unwrap();
    // The second page would take longer than the invocation has.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 6000, "path_contains": "$skiptoken", "times": 1}),
        )
        .await
        .unwrap();
    settle().await;
    let started = Instant::now();
    let first = created
        .invoke_within(&payload, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered before the deadline"
    );
    assert_eq!(
        first["value"].as_array().unwrap().len(),
        5000,
        "the first page, published and saved"
    );
    settle().await;
    let rest = drain(&mut created, &payload).await;
    assert_eq!(rest.len(), 2000);
    assert_eq!(rig.events().len(), 7000);
}

#[tokio::test]
async fn killing_a_poll_at_any_moment_never_loses_a_change() {
    let rig = Rig::new().await;
    let payload_created = accounts(&json!({"$top": 40}));
    let payload_updated = accounts(&json!({"$top": 40, "trigger": "kill-updated"}));
    let mut created = rig.function("when-record-created").await;
    let mut updated = rig.function("when-record-updated").await;
    poll(&mut created, &payload_created).await;
    poll(&mut updated, &payload_updated).await;
    let mut made: Vec<String> = Vec::new();
    let mut older: Vec<String> = Vec::new();
    for i in 0..24 {
        older.push(rig.create_old(&format!("older {i}")).await);
    }
    // Every request is a little slow, so kills land before, during and after fetching and publishing.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 15, "path_contains": "/api/data", "times": 100_000}),
        )
        .await
        .unwrap();
    for run in 0..24u64 {
        for i in 0..8 {
            made.push(rig.create(&format!("run {run} row {i}")).await);
        }
        let index = usize::try_from(run).unwrap();
        rig.update(&older[index], json!({"description": format!("run {run}")}))
            .await;
        // A short invocation timeout: a killed poll's lease lapses with it.
        created.invoke_detached(&payload_created, Duration::from_secs(2));
        updated.invoke_detached(&payload_updated, Duration::from_secs(2));
        // Kill somewhere between 0 and 120 ms into the polls.
        tokio::time::sleep(Duration::from_millis((run * 37) % 120)).await;
        created.restart().await.unwrap();
        updated.restart().await.unwrap();
    }
    rig.emulator
        .control(Method::DELETE, "faults", &Value::Null)
        .await
        .unwrap();
    // Let the last killed polls' leases lapse.
    tokio::time::sleep(Duration::from_secs(4)).await;
    drain(&mut created, &payload_created).await;
    drain(&mut updated, &payload_updated).await;

    let events = rig.events();
    let mut by_change: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for event in &events {
        let detail = &event["detail"];
        let kind = event["detail-type"].as_str().unwrap().to_owned();
        let change = match kind.as_str() {
            "Record Created" => detail["id"].as_str().unwrap().to_owned(),
            _ => format!(
                "{}@{}",
                detail["id"].as_str().unwrap(),
                detail["version"].as_str().unwrap()
            ),
        };
        by_change
            .entry((kind, change))
            .or_default()
            .insert(detail["event_id"].as_str().unwrap().to_owned());
    }
    for ids in by_change.values() {
        assert_eq!(
            ids.len(),
            1,
            "a change delivered twice carries the same event id"
        );
    }
    let created_ids: HashSet<&str> = by_change
        .keys()
        .filter(|(k, _)| k == "Record Created")
        .map(|(_, c)| c.as_str())
        .collect();
    for id in &made {
        assert!(
            created_ids.contains(id.as_str()),
            "creation of {id} was lost"
        );
    }
    let updated_rows: HashSet<&str> = by_change
        .keys()
        .filter(|(k, _)| k == "Record Updated")
        .map(|(_, c)| c.split('@').next().unwrap())
        .collect();
    for id in &older {
        assert!(
            updated_rows.contains(id.as_str()),
            "update of {id} was lost"
        );
    }
}

/// Sleeps until just after the next whole second, and returns that second (Unix time).
async fn next_second() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let wait =
        Duration::from_secs(1).saturating_sub(Duration::from_nanos(u64::from(now.subsec_nanos())));
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    now.as_secs() + 1
}

fn at(unix: u64) -> String {
    let ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - unix;
    time_ago(ago)
}

#[tokio::test]
async fn a_late_commit_between_polls_farther_apart_than_the_overlap_still_fires() {
    let rig = Rig::new().await;
    let mut environment = rig.env.clone();
    environment.push(("CRM_TRIGGER_OVERLAP_SECS".into(), "3".into()));
    let mut created = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let payload = accounts(&json!({}));
    poll(&mut created, &payload).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = rig.create("seen").await;
    settle().await;
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        [seen]
    );
    // The next poll comes much later than the overlap; meanwhile a transaction that began just before
    // the last poll commits, below the cursor.
    let began = time_ago(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = rig
        .emulator
        .post(
            "tables/accounts/rows",
            &json!({"name": "late", "createdon": began, "modifiedon": began}),
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        [late["id"].as_str().unwrap()],
        "the window reaches back from the previous poll, not from now"
    );
}

#[tokio::test]
async fn rows_of_the_starting_second_fire_only_if_created_after_the_start() {
    let rig = Rig::new().await;
    let mut created = rig.function("when-record-created").await;
    let payload = accounts(&json!({}));
    let second = next_second().await;
    // Created in the starting second, before the first poll: it predates the trigger.
    let before = "00000000-0000-0000-0000-ffffffffffff";
    rig.emulator
        .post(
            "tables/accounts/rows",
            &json!({"accountid": before, "name": "before", "createdon": at(second)}),
        )
        .await
        .unwrap();
    poll(&mut created, &payload).await;
    // Created in the same second, after the first poll, with a key that sorts before the other.
    let after = "ffffffff-ffff-ffff-ffff-000000000000";
    rig.emulator
        .post(
            "tables/accounts/rows",
            &json!({"accountid": after, "name": "after", "createdon": at(second)}),
        )
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        [after]
    );
    assert!(poll(&mut created, &payload).await.is_empty());
}
