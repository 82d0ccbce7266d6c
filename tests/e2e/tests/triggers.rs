//! The three polling triggers, run as their binaries through the Lambda Runtime API, against the
//! emulator, with cursors in a directory or in DynamoDB (moto) and events in a file or on EventBridge
//! (moto, read back through SQS).

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_tests::aws::{Tap, cursor_table};
use e2e_tests::{
    Emulator, Failure, Function, LocalFiles, Moto, TempDir, env, lease_lapsed, settle,
};
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
        self.files.published()
    }

    async fn create(&self, name: &str) -> String {
        self.emulator.create_account(name).await.unwrap()
    }

    /// Dataverse's now: the emulator's clock, which tests move forward, not this machine's.
    async fn now(&self) -> i64 {
        self.emulator
            .advance_clock(0)
            .await
            .unwrap()
            .unix_timestamp()
    }

    /// `secs` before Dataverse's now, as a `createdon`/`modifiedon` value.
    async fn ago(&self, secs: i64) -> String {
        utc(self.now().await - secs)
    }

    /// Ends the current second on Dataverse's clock (see [`settle`]).
    async fn settle(&self) {
        settle(&self.emulator).await.unwrap();
    }

    /// The request log since the last clear: `(path, status)` of each answered request.
    async fn requests(&self) -> Vec<(String, u64)> {
        self.emulator
            .requests()
            .await
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_owned(),
                    e["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// A row created ten minutes ago: an update to it is plainly not its creation (Dataverse cannot tell
    /// an update in the creation's own second from the creation).
    async fn create_old(&self, name: &str) -> String {
        let then = self.ago(600).await;
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
        let ids = self.emulator.account_ids("$select=accountid").await;
        ids.unwrap().into_iter().collect()
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

/// Whether a logged path is a trigger's scan of accounts (not a `$skiptoken` page after the first).
fn is_scan(path: &str) -> bool {
    path.starts_with("/api/data/v9.2/accounts?") && !path.contains("skiptoken")
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
    rig.settle().await;
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
    rig.settle().await;
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
    rig.settle().await;
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
            &json!({"count": 120, "createdon": rig.ago(600).await}),
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
    // The second page of the scan is held up; meanwhile rows are created and updated.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 500, "path_contains": "$skiptoken", "times": 1}),
        )
        .await
        .unwrap();
    rig.settle().await;
    rig.emulator.clear_requests().await.unwrap();
    let changes = async {
        // Once the first page is answered, the poll is paging: the request log says so, and a
        // request is logged when it is answered.
        while !rig.requests().await.iter().any(|(path, _)| is_scan(path)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut made = Vec::new();
        for i in 0..15 {
            made.push(rig.create(&format!("during {i}")).await);
        }
        for id in before.iter().take(10) {
            rig.update(id, json!({"name": "touched"})).await;
        }
        // Every change landed between the two pages, or this test proved nothing.
        let log = rig.requests().await;
        assert!(
            !log.iter().any(|(path, _)| path.contains("skiptoken")),
            "the second page was answered before the changes were all made: {log:?}"
        );
        made
    };
    let (first, made) = tokio::join!(poll(&mut created, &payload), changes);
    rig.settle().await;
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
    // The cursors' start falls a few seconds behind Dataverse's now, so a late commit can land after it.
    rig.emulator.advance_clock(4).await.unwrap();
    let seen = rig.create("seen first").await;
    rig.settle().await;
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        std::slice::from_ref(&seen)
    );
    // A transaction that started 3 seconds ago commits now: its row is older than one already fired.
    let three_ago = rig.ago(3).await;
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
            &json!({"name": "late update", "createdon": rig.ago(30).await, "modifiedon": rig.ago(2).await}),
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

/// Unix seconds as Dataverse writes a date-time: whole seconds, UTC.
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    let (y, m, d) = civil(days);
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
    // The first two baseline pages are slow; the poll's deadline allows one.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 1200, "path_contains": "/accounts", "times": 2}),
        )
        .await
        .unwrap();
    let answer = deleted
        .invoke_within(&payload, Duration::from_secs(3))
        .await;
    assert!(answer.is_ok(), "{answer:?}\n{}", deleted.logs());
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
    // It answered with the first page's progress saved, without the second page's answer (the
    // emulator logs a request once it has answered it), and said it stopped for lack of time.
    let first = baseline_requests(&rig.emulator.requests().await.unwrap());
    assert_eq!(first, 1, "baseline pages answered in the first poll");
    let logs = deleted.logs();
    let stopped = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["message"] == "the poll stopped early; the rest waits for the next poll"
        })
        .unwrap_or_else(|| panic!("no word of stopping early:\n{logs}"));
    assert!(
        stopped["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("no answer before the deadline"),
        "{stopped}"
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
    rig.settle().await;
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
    rig.settle().await;
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
    rig.settle().await;
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
    rig.settle().await;
    let fired = poll(
        &mut created,
        &accounts(&json!({"since": rig.ago(3600).await, "trigger": "backfill"})),
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
    // The first poll's query is slow, so it holds the cursor while the second poll runs.
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": 500, "path_contains": "/accounts?", "times": 1}),
        )
        .await
        .unwrap();
    rig.settle().await;
    rig.emulator.clear_requests().await.unwrap();
    let dynamo = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let mut slow = std::pin::pin!(first.invoke(&payload));
    // The second poll starts once DynamoDB shows the first holding the cursor's lease.
    tokio::select! {
        a = &mut slow => panic!("the first poll ended before it was seen holding the cursor: {a:?}"),
        () = leased(&dynamo, "crm-cursors") => {}
    }
    let b = second.invoke(&payload).await.unwrap();
    // It ended while the first was still waiting for its query's answer (a request is logged once
    // answered): the two polls overlapped from the lease on.
    let log = rig.requests().await;
    assert!(!log.iter().any(|(path, _)| is_scan(path)), "{log:?}");
    let a = slow.await.unwrap();
    assert_eq!(a["value"].as_array().unwrap().len(), 5);
    assert_eq!(b["value"], json!([]), "the overlapping poll did nothing");
    assert!(second.logs().contains("another poll holds this cursor"));
    assert_eq!(rig.events().len(), 5, "each change published once");
    assert!(poll(&mut second, &payload).await.is_empty());
}

/// Waits until a cursor in DynamoDB `table` is leased.
async fn leased(dynamo: &aws_sdk_dynamodb::Client, table: &str) {
    loop {
        let items = dynamo.scan().table_name(table).send().await.unwrap();
        if items.items().iter().any(|i| i.contains_key("lease_owner")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    rig.settle().await;
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
    rig.settle().await;
    rig.emulator.clear_requests().await.unwrap();
    let first = created
        .invoke_within(&payload, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(
        first["value"].as_array().unwrap().len(),
        1000,
        "the first page (a scan reads 1,000 rows a page), published and saved"
    );
    // It gave up on the second page rather than wait for it: that page was never answered (the
    // emulator logs a request once it has answered it), and the fetch deadline is what stopped it.
    let log = rig.requests().await;
    assert_eq!(
        log.iter().filter(|(path, _)| is_scan(path)).count(),
        1,
        "{log:?}"
    );
    assert!(
        !log.iter().any(|(path, _)| path.contains("skiptoken")),
        "{log:?}"
    );
    let logs = created.logs();
    assert!(
        logs.contains("the poll stopped early; the rest waits for the next poll")
            && logs.contains("no answer before the deadline"),
        "{logs}"
    );
    rig.settle().await;
    let rest = drain(&mut created, &payload).await;
    assert_eq!(rest.len(), 6000);
    assert_eq!(rig.events().len(), 7000);
}

/// Where a poll is killed. Each moment is recognised from what the poll has done (its requests in the
/// emulator's log, its cursor file, its events file) and held open by a slow request or by the
/// store's lock, never reached by waiting a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// Its token came back, and its next request (the table's definition) is held up: it holds no
    /// lease yet.
    BeforeTheLease,
    /// It holds the lease (its cursor file changed), and its scan is held up: it has published
    /// nothing.
    HoldingTheLease,
    /// It published, and waits to save: the test took the cursor store's lock once the lease was
    /// written, and the poll needs that lock to save.
    Published,
}

/// The least invocation time a poll accepts (`MIN_POLL_TIME`, 2.5 s), and a little more: the kill
/// comes long before, and the lease a killed poll leaves behind ends soon after.
const DOOMED_TIMEOUT: Duration = Duration::from_millis(2600);

/// How many changes a doomed poll fires at most.
const TOP: usize = 4;

/// A trigger with a cursor store and an events file of its own, so that what one kill left behind is
/// judged on its own.
struct Doomed {
    moment: Moment,
    function: Function,
    payload: Value,
    dir: TempDir,
}

impl Doomed {
    async fn new(rig: &Rig, name: &str, moment: Moment) -> Self {
        let dir = TempDir::new("doomed").unwrap();
        let mut environment = vec![rig.files.secrets_env()];
        environment.extend(env(&[
            (
                "CRM_STATE",
                &format!("file:{}", dir.path().join("state").display()),
            ),
            (
                "CRM_EVENTS",
                &format!("file:{}", dir.path().join("events.jsonl").display()),
            ),
        ]));
        Self {
            moment,
            function: Function::start(name, &environment).await.unwrap(),
            payload: accounts(&json!({"$top": TOP})),
            dir,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Runs one poll on a cold process and kills it at its moment; returns when it was invoked.
    async fn kill(&mut self, rig: &Rig) -> Instant {
        // A cold process asks for its token and the table's definition again; the invalid payload
        // only gets it ready to take the poll at once, so the poll has all of its time.
        self.function.restart().await.unwrap();
        assert!(self.function.invoke(&json!({})).await.is_err());
        // The request after the moment is slow, so the poll is still at its moment when killed.
        let slow = match self.moment {
            Moment::BeforeTheLease => "EntityDefinitions",
            Moment::HoldingTheLease | Moment::Published => "/accounts?",
        };
        rig.emulator
            .post(
                "faults",
                &json!({"delay_ms": 150, "path_contains": slow, "times": 1}),
            )
            .await
            .unwrap();
        rig.emulator.clear_requests().await.unwrap();
        let state = self.dir.path().join("state");
        let events = self.dir.path().join("events.jsonl");
        let files = cursor_files(&state);
        let moment = self.moment;
        let reached = async {
            if moment == Moment::BeforeTheLease {
                while !rig
                    .requests()
                    .await
                    .iter()
                    .any(|(path, _)| path.contains("/oauth2/"))
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                return None;
            }
            while cursor_files(&state) == files {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if moment == Moment::HoldingTheLease {
                return None;
            }
            let lock = lock_store(&state).await;
            // All of `$top`: there are more changes than that.
            while std::fs::read_to_string(&events)
                .unwrap_or_default()
                .matches('\n')
                .count()
                < TOP
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Some(lock)
        };
        let invoked = Instant::now();
        let lock = tokio::select! {
            answer = self.function.invoke_within(&self.payload, DOOMED_TIMEOUT) => {
                panic!("{} answered before {moment:?}: {answer:?}\n{}", self.function.name, self.function.logs());
            }
            lock = reached => lock,
        };
        self.function.kill().await;
        drop(lock);
        // The killed poll may not have got as far as the slow request.
        rig.emulator
            .control(Method::DELETE, "faults", &Value::Null)
            .await
            .unwrap();
        invoked
    }

    /// Polls until nothing more fires, on a fresh process.
    async fn drain(&mut self, rig: &Rig) {
        self.function.restart().await.unwrap();
        loop {
            rig.emulator.clear_requests().await.unwrap();
            let fired = poll(&mut self.function, &self.payload).await;
            assert!(
                rig.requests().await.iter().any(|(path, _)| is_scan(path)),
                "{} ({:?}) found its cursor still held after the killed poll's deadline",
                self.function.name,
                self.moment
            );
            if fired.is_empty() {
                return;
            }
        }
    }
}

/// The contents of the cursor files in a directory store (its `.json` files; not the lock, nor a
/// temporary about to be renamed).
fn cursor_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path, bytes)
        })
        .collect()
}

/// Takes the exclusive lock a directory store holds on its one cursor's `.lock` file for every
/// read-modify-write: until it is dropped, that cursor cannot be saved.
async fn lock_store(dir: &Path) -> std::fs::File {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "lock"))
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.lock().unwrap();
        file
    })
    .await
    .unwrap()
}

/// `(kind, change)` of each event, to the event ids it went out under.
fn event_ids(events: &[Value]) -> HashMap<(String, String), HashSet<String>> {
    let mut by_change: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for event in events {
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
    by_change
}

#[tokio::test]
async fn killing_a_poll_at_any_moment_never_loses_a_change() {
    let rig = Rig::new().await;
    // Those that leave a lease behind first: the wait for it to end overlaps the rest.
    let moments = [
        Moment::HoldingTheLease,
        Moment::Published,
        Moment::BeforeTheLease,
    ];
    let mut doomed = Vec::new();
    for moment in moments {
        for name in ["when-record-created", "when-record-updated"] {
            doomed.push(Doomed::new(&rig, name, moment).await);
        }
    }
    let mut older: Vec<String> = Vec::new();
    for i in 0..5 {
        older.push(rig.create_old(&format!("older {i}")).await);
    }
    for d in &mut doomed {
        assert!(poll(&mut d.function, &d.payload).await.is_empty());
    }
    let mut made: Vec<String> = Vec::new();
    for i in 0..10 {
        made.push(rig.create(&format!("row {i}")).await);
    }
    for (i, id) in older.iter().enumerate() {
        rig.update(id, json!({"description": format!("change {i}")}))
            .await;
    }
    rig.settle().await;
    let mut last_lease = None;
    let mut published_before_the_kill = Vec::new();
    for d in &mut doomed {
        let invoked = d.kill(&rig).await;
        let published = d.events();
        let expected = if d.moment == Moment::Published {
            TOP
        } else {
            0
        };
        assert_eq!(
            published.len(),
            expected,
            "{} killed {:?}: what it had published",
            d.function.name,
            d.moment
        );
        published_before_the_kill.push(published);
        if d.moment == Moment::BeforeTheLease {
            continue;
        }
        last_lease = Some(invoked);
        // The kill landed under the lease: a poll now finds the cursor held, and does nothing.
        d.function.restart().await.unwrap();
        rig.emulator.clear_requests().await.unwrap();
        assert!(poll(&mut d.function, &d.payload).await.is_empty());
        assert!(
            !rig.requests().await.iter().any(|(path, _)| is_scan(path)),
            "{} killed {:?} left no lease behind",
            d.function.name,
            d.moment
        );
    }
    // A killed poll cannot give its lease back, so only its end frees the cursor, and that end is on
    // this machine's clock, in the directory store: moving Dataverse's clock cannot stand in for it.
    lease_lapsed(last_lease.unwrap(), DOOMED_TIMEOUT).await;

    for (d, before_the_kill) in doomed.iter_mut().zip(&published_before_the_kill) {
        d.drain(&rig).await;
        let context = format!("{} killed {:?}", d.function.name, d.moment);
        let events = d.events();
        let by_change = event_ids(&events);
        for ids in by_change.values() {
            assert_eq!(
                ids.len(),
                1,
                "{context}: a change delivered twice carries the same event id"
            );
        }
        // What went out before the kill was not saved as done, so it went out again.
        for early in before_the_kill {
            let id = &early["detail"]["event_id"];
            let times = events
                .iter()
                .filter(|e| e["detail"]["event_id"] == *id)
                .count();
            assert_eq!(times, 2, "{context}: {early} was not delivered again");
        }
        let (kind, expected) = if d.function.name == "when-record-created" {
            ("Record Created", &made)
        } else {
            ("Record Updated", &older)
        };
        let delivered: HashSet<&str> = by_change
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, c)| c.split('@').next().unwrap())
            .collect();
        for id in expected {
            assert!(
                delivered.contains(id.as_str()),
                "{context}: the change to {id} was lost"
            );
        }
    }
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
    rig.emulator.advance_clock(2).await.unwrap();
    let seen = rig.create("seen").await;
    rig.settle().await;
    assert_eq!(
        ids(&poll(&mut created, &payload).await, "accountid"),
        [seen]
    );
    // The next poll comes much later than the overlap; meanwhile a transaction that began just before
    // the last poll commits, below the cursor.
    let began = rig.ago(2).await;
    rig.emulator.advance_clock(5).await.unwrap();
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
    // The row created before the first poll must share its second, the second of that poll's first
    // answer. Dataverse's clock cannot be stopped, only moved on, so when it turned a second in
    // between, the attempt is spent and another cursor tries again.
    for attempt in 0..5u8 {
        let payload = accounts(&json!({"trigger": format!("start-{attempt}")}));
        let second = rig.now().await;
        // Created in the starting second, before the first poll: it predates the trigger.
        let before = format!("00000000-0000-0000-0000-ffffffffff{attempt:02x}");
        rig.emulator
            .post(
                "tables/accounts/rows",
                &json!({"accountid": before, "name": "before", "createdon": utc(second)}),
            )
            .await
            .unwrap();
        poll(&mut created, &payload).await;
        if rig.now().await != second {
            continue;
        }
        // Created in the same second, after the first poll, with a key that sorts before the other.
        let after = format!("ffffffff-ffff-ffff-ffff-0000000000{attempt:02x}");
        rig.emulator
            .post(
                "tables/accounts/rows",
                &json!({"accountid": after, "name": "after", "createdon": utc(second)}),
            )
            .await
            .unwrap();
        rig.settle().await;
        assert_eq!(
            ids(&poll(&mut created, &payload).await, "accountid"),
            [after]
        );
        assert!(poll(&mut created, &payload).await.is_empty());
        return;
    }
    panic!("Dataverse's second turned during every attempt's first poll");
}
