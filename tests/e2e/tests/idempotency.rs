//! Idempotent writes (`idempotency_key`, `CRM_IDEMPOTENCY`), through the five writer binaries and the
//! Runtime API, against the emulator and moto's `DynamoDB` behind the fault proxy.
//!
//! For each writer: a repeat answers from the record and sends nothing to Dataverse (the emulator's
//! request log stays empty), from a warm process or a fresh one; a changed payload under the key is
//! `Crm.InvalidInput`; a repeat while the first run is still in Dataverse (held up by the emulator's
//! `delay_ms`) is `Crm.Conflict`; an EventBridge event's id is the key by default; an expired record
//! lets the key run again; and a run that died after writing (its record edited to what that leaves)
//! is taken over, `create-record` finding the row it made by the key column.
//!
//! Time is never waited on: what expiry or a passed deadline would do, the tests do to the record.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use e2e_tests::idempotency::{Records, idempotency_table};
use e2e_tests::proxy::{Fault, Operation, Proxy, Rule};
use e2e_tests::{Emulator, Function, LocalFiles, Moto, TempDir, env, expect_error};
use serde_json::{Value, json};

const TABLE: &str = "crm-idempotency";

/// How long the first of two concurrent runs is held up in Dataverse: ample for the second to
/// begin meanwhile, which it does as soon as the first's record is seen.
const SLOW: Duration = Duration::from_secs(3);

struct Rig {
    emulator: Emulator,
    _files: LocalFiles,
    _moto: Moto,
    proxy: Proxy,
    records: Records,
    env: Vec<(String, String)>,
}

impl Rig {
    async fn new(label: &str) -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new(label, &emulator).unwrap();
        let moto = Moto::start().await.unwrap();
        idempotency_table(&moto, TABLE).await.unwrap();
        let proxy = Proxy::start(&moto.url).await.unwrap();
        let mut environment = proxy.env(&moto);
        environment.push(files.secrets_env());
        environment.extend(env(&[("CRM_IDEMPOTENCY", &format!("dynamodb:{TABLE}"))]));
        let records = Records::new(&moto, TABLE).await;
        Self {
            emulator,
            _files: files,
            _moto: moto,
            proxy,
            records,
            env: environment,
        }
    }

    async fn start(&self, function: &str) -> Function {
        Function::start(function, &self.env).await.unwrap()
    }

    /// The requests Dataverse answered since the last call, as `(method, path and query)`.
    async fn take_log(&self) -> Vec<(String, String)> {
        let log = self.emulator.requests().await.unwrap();
        self.emulator.clear_requests().await.unwrap();
        log.iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap_or_default().to_owned(),
                    r["path"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    async fn rows_named(&self, name: &str) -> usize {
        self.emulator
            .account_ids(&format!("$select=accountid&$filter=name eq '{name}'"))
            .await
            .unwrap()
            .len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Create,
    Update,
    Upsert,
    Delete,
    Changeset,
}

impl Writer {
    fn function(self) -> &'static str {
        match self {
            Writer::Create => "create-record",
            Writer::Update => "update-record",
            Writer::Upsert => "upsert-record",
            Writer::Delete => "delete-record",
            Writer::Changeset => "execute-changeset",
        }
    }

    /// The method of its write to Dataverse, and the path it goes to.
    fn write(self) -> (&'static str, &'static str) {
        match self {
            Writer::Create => ("POST", "/api/data/v9.2/accounts"),
            Writer::Update | Writer::Upsert => ("PATCH", "/api/data/v9.2/accounts("),
            Writer::Delete => ("DELETE", "/api/data/v9.2/accounts("),
            Writer::Changeset => ("POST", "/api/data/v9.2/$batch"),
        }
    }

    /// How many of the logged requests are its write.
    fn writes(self, log: &[(String, String)]) -> usize {
        let (method, path) = self.write();
        log.iter()
            .filter(|(m, p)| m == method && p.starts_with(path))
            .count()
    }

    /// A payload writing an account named `name`, on a row of its own where it needs one.
    async fn payload(self, emulator: &Emulator, name: &str) -> Value {
        let existing = || async {
            emulator
                .create_account(&format!("{name} (before)"))
                .await
                .unwrap()
        };
        match self {
            Writer::Create => json!({
                "dataset": "contoso", "table": "accounts", "item": {"name": name},
                "idempotency_column": "description"
            }),
            Writer::Update => json!({
                "dataset": "contoso", "table": "accounts", "id": existing().await, "item": {"name": name}
            }),
            Writer::Upsert => json!({
                "dataset": "contoso", "table": "accounts", "id": uuid::Uuid::new_v4().to_string(),
                "item": {"name": name}
            }),
            Writer::Delete => {
                json!({"dataset": "contoso", "table": "accounts", "id": existing().await})
            }
            Writer::Changeset => json!({
                "dataset": "contoso",
                "operations": [{"op": "create", "table": "accounts", "item": {"name": name}}]
            }),
        }
    }
}

fn keyed(payload: &Value, key: &str) -> Value {
    let mut payload = payload.clone();
    payload["idempotency_key"] = json!(key);
    payload
}

/// `detail` as an EventBridge rule delivers it.
fn event(id: &str, detail: &Value) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "Order Placed", "source": "contoso.orders",
        "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "eu-west-1",
        "resources": [], "detail": detail
    })
}

async fn succeeds(function: &mut Function, payload: &Value) -> Value {
    match function.invoke(payload).await {
        Ok(answer) => answer,
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// Every guarantee, for one writer.
async fn guards(writer: Writer) {
    let rig = Rig::new(writer.function()).await;
    let name = writer.function();
    let mut function = rig.start(name).await;

    // A repeat answers from the record: nothing reaches Dataverse, not even a token request, warm
    // or after a cold start.
    let payload = writer.payload(&rig.emulator, "repeat").await;
    rig.take_log().await;
    let first = succeeds(&mut function, &keyed(&payload, "k-repeat")).await;
    assert_eq!(writer.writes(&rig.take_log().await), 1);
    let again = succeeds(&mut function, &keyed(&payload, "k-repeat")).await;
    assert_eq!(again, first);
    function.restart().await.unwrap();
    let cold = succeeds(&mut function, &keyed(&payload, "k-repeat")).await;
    assert_eq!(cold, first);
    assert_eq!(rig.take_log().await, vec![], "a repeat reached Dataverse");
    assert_eq!(
        rig.records
            .text(name, "k-repeat", "status")
            .await
            .as_deref(),
        Some("COMPLETED")
    );

    // Another payload under the same key is refused, and sends nothing.
    let other = writer.payload(&rig.emulator, "other").await;
    rig.take_log().await;
    let (error_type, message) = expect_error(
        function.invoke(&keyed(&other, "k-repeat")).await,
        &function.logs(),
    );
    assert_eq!(error_type, "Crm.InvalidInput", "{message}");
    assert!(message.starts_with("idempotency_key: "), "{message}");
    assert_eq!(rig.take_log().await, vec![]);

    // A repeat while the first run is still in Dataverse is a conflict, and then a replay.
    let busy = writer.payload(&rig.emulator, "busy").await;
    let (method, path) = writer.write();
    rig.emulator
        .post(
            "faults",
            &json!({"delay_ms": SLOW.as_millis(), "method": method, "path_contains": path}),
        )
        .await
        .unwrap();
    rig.take_log().await;
    let mut second = rig.start(name).await;
    let busy = keyed(&busy, "k-busy");
    let (first, conflict) = tokio::join!(function.invoke(&busy), async {
        assert!(
            rig.records.reaches(name, "k-busy", "INPROGRESS").await,
            "the first run never began"
        );
        second.invoke(&busy).await
    });
    let first = first.unwrap_or_else(|e| panic!("{e}\n{}", function.logs()));
    let (error_type, message) = expect_error(conflict, &second.logs());
    assert_eq!(error_type, "Crm.Conflict", "{message}");
    assert!(message.contains("'k-busy'"), "{message}");
    let replayed = succeeds(&mut second, &busy).await;
    assert_eq!(replayed, first);
    assert_eq!(writer.writes(&rig.take_log().await), 1);

    // An EventBridge event's id is the key: a redelivery is a repeat, another event is not.
    let detail = writer.payload(&rig.emulator, "event").await;
    rig.take_log().await;
    let id = uuid::Uuid::new_v4().to_string();
    let delivered = succeeds(&mut function, &event(&id, &detail)).await;
    assert_eq!(writer.writes(&rig.take_log().await), 1);
    let redelivered = succeeds(&mut function, &event(&id, &detail)).await;
    assert_eq!(redelivered, delivered);
    assert_eq!(rig.take_log().await, vec![]);
    assert!(rig.records.get(name, &id).await.is_some());
    // (A delete of the row the first event deleted is a `Crm.NotFound`; it was sent all the same.)
    let _ = function
        .invoke(&event(&uuid::Uuid::new_v4().to_string(), &detail))
        .await;
    assert_eq!(
        writer.writes(&rig.take_log().await),
        1,
        "another event is another request"
    );

    // An expired record is forgotten, though `DynamoDB` has not deleted it yet.
    let payload = writer.payload(&rig.emulator, "expiry").await;
    succeeds(&mut function, &keyed(&payload, "k-expiry")).await;
    rig.take_log().await;
    rig.records.expire(name, "k-expiry").await;
    let _ = function.invoke(&keyed(&payload, "k-expiry")).await;
    assert_eq!(
        writer.writes(&rig.take_log().await),
        1,
        "an expired key ran again"
    );

    // A run that died after its write, before recording the answer, is taken over once its
    // deadline has passed; and the taking over is recorded.
    let payload = writer.payload(&rig.emulator, "crash").await;
    let crashed = succeeds(&mut function, &keyed(&payload, "k-crash")).await;
    rig.take_log().await;
    rig.records.crash(name, "k-crash").await;
    let resumed = succeeds(&mut function, &keyed(&payload, "k-crash")).await;
    let log = rig.take_log().await;
    match writer {
        Writer::Create => {
            assert_eq!(resumed["accountid"], crashed["accountid"], "{resumed}");
            assert_eq!(writer.writes(&log), 0, "created a second row: {log:?}");
            assert!(
                log.iter()
                    .any(|(m, p)| m == "GET" && p.contains("description")),
                "{log:?}"
            );
            assert_eq!(rig.rows_named("crash").await, 1);
        }
        Writer::Delete => {
            // Sent again, and the row it finds gone is what was asked for.
            assert_eq!(writer.writes(&log), 1, "{log:?}");
            assert_eq!(resumed, crashed);
        }
        // Sent again: an update or upsert of the same values leaves the same row; a changeset of
        // creates makes its rows again (docs/idempotency.md).
        Writer::Update | Writer::Upsert | Writer::Changeset => {
            assert_eq!(writer.writes(&log), 1, "{log:?}");
        }
    }
    rig.take_log().await;
    let after = succeeds(&mut function, &keyed(&payload, "k-crash")).await;
    assert_eq!(after, resumed);
    assert_eq!(rig.take_log().await, vec![]);
}

#[tokio::test]
async fn create_record_runs_once_per_key() {
    guards(Writer::Create).await;
}

#[tokio::test]
async fn update_record_runs_once_per_key() {
    guards(Writer::Update).await;
}

#[tokio::test]
async fn upsert_record_runs_once_per_key() {
    guards(Writer::Upsert).await;
}

#[tokio::test]
async fn delete_record_runs_once_per_key() {
    guards(Writer::Delete).await;
}

#[tokio::test]
async fn execute_changeset_runs_once_per_key() {
    guards(Writer::Changeset).await;
}

/// `DynamoDB` calls that fail between the function and moto, at every step of `create-record`:
/// never a second row.
#[tokio::test]
async fn a_failing_idempotency_table_never_makes_a_second_row() {
    let rig = Rig::new("idempotency-faults").await;
    let mut create = rig.start("create-record").await;

    // The begin is applied and its answer lost: the SDK sends it again, which finds the record
    // holding this run's own token.
    let lost_begin = Writer::Create.payload(&rig.emulator, "lost begin").await;
    rig.proxy
        .add(Rule::new(Operation::PutItem, Fault::LoseAnswer).times(1));
    let first = succeeds(&mut create, &keyed(&lost_begin, "k-lost-begin")).await;
    assert_eq!(rig.proxy.faulted(Operation::PutItem), 1);

    // The record of the answer is applied and its answer lost: sent again, on the same condition.
    let lost_answer = Writer::Create.payload(&rig.emulator, "lost answer").await;
    rig.proxy
        .add(Rule::new(Operation::UpdateItem, Fault::LoseAnswer).times(1));
    let second = succeeds(&mut create, &keyed(&lost_answer, "k-lost-answer")).await;
    assert_eq!(rig.proxy.faulted(Operation::UpdateItem), 1);
    rig.proxy.clear();
    rig.take_log().await;
    assert_eq!(
        succeeds(&mut create, &keyed(&lost_begin, "k-lost-begin")).await,
        first
    );
    assert_eq!(
        succeeds(&mut create, &keyed(&lost_answer, "k-lost-answer")).await,
        second
    );
    assert_eq!(rig.take_log().await, vec![]);

    // The record of the answer never lands: the invocation still answers with the row it made, and
    // once its deadline has passed a retry finds that row by its key column.
    let unrecorded = Writer::Create.payload(&rig.emulator, "unrecorded").await;
    rig.proxy.add(Rule::new(Operation::UpdateItem, Fault::Hold));
    let made = create
        .invoke_within(&keyed(&unrecorded, "k-unrecorded"), Duration::from_secs(8))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", create.logs()));
    rig.proxy.clear();
    assert_eq!(
        rig.records
            .text("create-record", "k-unrecorded", "status")
            .await
            .as_deref(),
        Some("INPROGRESS")
    );
    rig.records.lapse("create-record", "k-unrecorded").await;
    rig.take_log().await;
    let found = succeeds(&mut create, &keyed(&unrecorded, "k-unrecorded")).await;
    assert_eq!(found["accountid"], made["accountid"]);
    assert_eq!(Writer::Create.writes(&rig.take_log().await), 0);

    // The begin never reaches the table: nothing is written to Dataverse, and the retry writes once.
    let dropped = Writer::Create.payload(&rig.emulator, "dropped begin").await;
    rig.proxy.add(Rule::new(Operation::PutItem, Fault::Drop));
    let (error_type, message) = expect_error(
        create
            .invoke_within(&keyed(&dropped, "k-dropped"), Duration::from_secs(8))
            .await,
        &create.logs(),
    );
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("idempotency"), "{message}");
    rig.proxy.clear();
    assert_eq!(Writer::Create.writes(&rig.take_log().await), 0);
    succeeds(&mut create, &keyed(&dropped, "k-dropped")).await;

    for name in ["lost begin", "lost answer", "unrecorded", "dropped begin"] {
        assert_eq!(rig.rows_named(name).await, 1, "{name}");
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// A gateway gives up on a create that Dataverse may still be carrying out. The key stays held
/// until Dataverse must have finished, so a retry does not look for the row before it is there;
/// then the retry takes over, and answers only with a row carrying its key exactly, although
/// Dataverse's lookup matches another key's row that differs only in case.
#[tokio::test]
async fn a_lost_answer_holds_the_key_and_a_takeover_answers_only_its_own_row() {
    let rig = Rig::new("idempotency-lost-answer").await;
    let mut create = rig.start("create-record").await;
    let upper = keyed(
        &Writer::Create.payload(&rig.emulator, "upper").await,
        "K-CASE",
    );
    let other = succeeds(&mut create, &upper).await;
    let payload = keyed(
        &Writer::Create.payload(&rig.emulator, "lower").await,
        "k-case",
    );
    rig.emulator
        .post(
            "faults",
            &json!({"status": 502, "method": "POST", "path_contains": "/api/data/v9.2/accounts"}),
        )
        .await
        .unwrap();
    let (error_type, message) = expect_error(create.invoke(&payload).await, &create.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    let until = rig
        .records
        .number("create-record", "k-case", "in_progress_until")
        .await
        .unwrap();
    assert!(
        until > now_ms() + 120_000,
        "held past Dataverse's 2-minute limit: {until}"
    );
    rig.take_log().await;
    let (error_type, message) = expect_error(create.invoke(&payload).await, &create.logs());
    assert_eq!(error_type, "Crm.Conflict", "{message}");
    assert_eq!(
        rig.take_log().await,
        vec![],
        "a retry meanwhile sent something"
    );

    rig.records.lapse("create-record", "k-case").await;
    let made = succeeds(&mut create, &payload).await;
    let log = rig.take_log().await;
    assert!(
        log.iter()
            .any(|(m, p)| m == "GET" && p.contains("description")),
        "the takeover did not look for its row: {log:?}"
    );
    assert_ne!(
        made["accountid"], other["accountid"],
        "answered with the row of another key"
    );
    assert_eq!(made["description"], "k-case");
    assert_eq!(Writer::Create.writes(&log), 1);
    assert_eq!(rig.rows_named("lower").await, 1);
    assert_eq!(rig.rows_named("upper").await, 1);
}

/// A delete carried out with its answer lost, whose retry in the same invocation is refused: the
/// key is kept, so a later run takes over and reports the row gone, instead of running afresh into
/// a `Crm.NotFound` that would stand for ever.
#[tokio::test]
async fn a_delete_refused_after_its_answer_was_lost_keeps_its_key() {
    let rig = Rig::new("idempotency-delete-lost").await;
    let mut delete = rig.start("delete-record").await;
    let payload = keyed(
        &Writer::Delete.payload(&rig.emulator, "doomed").await,
        "k-doomed",
    );
    let (method, path) = Writer::Delete.write();
    for fault in [
        json!({"drop_answer": true, "method": method, "path_contains": path}),
        json!({"status": 500, "method": method, "path_contains": path}),
    ] {
        rig.emulator.post("faults", &fault).await.unwrap();
    }
    rig.take_log().await;
    let (error_type, message) = expect_error(delete.invoke(&payload).await, &delete.logs());
    assert_eq!(
        error_type, "Crm.ServerError",
        "the 500, as it came: {message}"
    );
    assert_eq!(Writer::Delete.writes(&rig.take_log().await), 2);
    let (error_type, message) = expect_error(delete.invoke(&payload).await, &delete.logs());
    assert_eq!(error_type, "Crm.Conflict", "{message}");
    rig.records.lapse("delete-record", "k-doomed").await;
    let done = succeeds(&mut delete, &payload).await;
    assert_eq!(done["deleted"], true, "{done}");
}

/// A begin that `DynamoDB` applied without the function hearing back: the record it left does not
/// hold the key, so a retry runs at once (as a takeover) instead of meeting `Crm.Conflict`.
#[tokio::test]
async fn a_begin_left_without_an_answer_does_not_hold_the_key() {
    let rig = Rig::new("idempotency-begin-lost").await;
    let mut create = rig.start("create-record").await;
    let payload = keyed(
        &Writer::Create
            .payload(&rig.emulator, "unanswered begin")
            .await,
        "k-begin",
    );
    rig.proxy
        .add(Rule::new(Operation::PutItem, Fault::LoseAnswer).times(1));
    rig.proxy
        .add(Rule::new(Operation::PutItem, Fault::Hold).after(1));
    rig.take_log().await;
    let (error_type, message) = expect_error(
        create.invoke_within(&payload, Duration::from_secs(8)).await,
        &create.logs(),
    );
    rig.proxy.clear();
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("idempotency"), "{message}");
    assert_eq!(Writer::Create.writes(&rig.take_log().await), 0);
    assert_eq!(
        rig.records
            .text("create-record", "k-begin", "status")
            .await
            .as_deref(),
        Some("INPROGRESS"),
        "the begin was to land"
    );
    let until = rig
        .records
        .number("create-record", "k-begin", "in_progress_until")
        .await
        .unwrap();
    assert!(until <= now_ms(), "still held until {until}");
    succeeds(&mut create, &payload).await;
    assert_eq!(rig.rows_named("unanswered begin").await, 1);
}

/// An answer over `DynamoDB`'s 400 KB item limit: kept in parts, replayed whole.
#[tokio::test]
async fn an_answer_too_large_for_one_item_is_kept_in_parts_and_replayed_whole() {
    let rig = Rig::new("idempotency-large").await;
    rig.emulator
        .client()
        .add_table(
            &dataverse_emulator::client::NewTable::new(
                "new_note",
                "new_notes",
                "new_noteid",
                "new_name",
            )
            .column("new_body", "memo"),
        )
        .await
        .unwrap();
    let mut create = rig.start("create-record").await;
    let payload = json!({
        "dataset": "contoso", "table": "new_notes",
        "item": {"new_name": "large", "new_body": "é".repeat(400_000)},
        "idempotency_key": "k-large"
    });
    let first = succeeds(&mut create, &payload).await;
    assert!(first.to_string().len() > 800_000);
    let record = rig.records.get("create-record", "k-large").await.unwrap();
    assert!(!record.contains_key("result"), "{:?}", record.keys());
    let parts: usize = record["parts"].as_n().unwrap().parse().unwrap();
    assert!(parts >= 3, "{parts}");
    rig.take_log().await;
    let again = succeeds(&mut create, &payload).await;
    assert_eq!(again, first);
    assert_eq!(rig.take_log().await, vec![]);
}

/// `CRM_IDEMPOTENCY=file:<directory>`, shared by two processes: the same guarantees.
#[tokio::test]
async fn the_directory_store_keeps_two_processes_to_one_write() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("idempotency-files", &emulator).unwrap();
    let dir = TempDir::new("idempotency-records").unwrap();
    let environment = vec![
        files.secrets_env(),
        (
            "CRM_IDEMPOTENCY".to_owned(),
            format!("file:{}", dir.path().display()),
        ),
    ];
    let mut first = Function::start("create-record", &environment)
        .await
        .unwrap();
    let mut second = Function::start("create-record", &environment)
        .await
        .unwrap();
    let payload = keyed(
        &Writer::Create.payload(&emulator, "two processes").await,
        "k-two",
    );
    emulator
        .post(
            "faults",
            &json!({"delay_ms": SLOW.as_millis(), "method": "POST", "path_contains": "/api/data/v9.2/accounts"}),
        )
        .await
        .unwrap();
    let began = async {
        for _ in 0..3000 {
            let records = std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "json"));
            if records {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    let (made, conflict) = tokio::join!(first.invoke(&payload), async {
        assert!(began.await, "the first run never began");
        second.invoke(&payload).await
    });
    let made = made.unwrap_or_else(|e| panic!("{e}\n{}", first.logs()));
    let (error_type, message) = expect_error(conflict, &second.logs());
    assert_eq!(error_type, "Crm.Conflict", "{message}");
    assert_eq!(succeeds(&mut second, &payload).await, made);
    let (error_type, _) = expect_error(
        second
            .invoke(&keyed(
                &Writer::Create.payload(&emulator, "else").await,
                "k-two",
            ))
            .await,
        &second.logs(),
    );
    assert_eq!(error_type, "Crm.InvalidInput");
    let ids = emulator
        .account_ids("$select=accountid&$filter=name eq 'two processes'")
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn without_a_store_a_key_is_refused_and_an_event_runs_unguarded() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("idempotency-off", &emulator).unwrap();
    let mut create = Function::start("create-record", &[files.secrets_env()])
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "item": {"name": "unguarded"}});
    let (error_type, message) =
        expect_error(create.invoke(&keyed(&payload, "k")).await, &create.logs());
    assert_eq!(error_type, "Crm.Configuration", "{message}");
    assert!(message.contains("CRM_IDEMPOTENCY"), "{message}");
    let delivery = event(&uuid::Uuid::new_v4().to_string(), &payload);
    succeeds(&mut create, &delivery).await;
    succeeds(&mut create, &delivery).await;
    let ids = emulator
        .account_ids("$select=accountid&$filter=name eq 'unguarded'")
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "without a store an event is not guarded");
}

/// A run held up in Dataverse past the end of its hold, whose key another run took meanwhile: what
/// it does after (record its answer, or give the key back after a refusal) is conditional on its own
/// token, so it cannot touch the other run's record.
#[tokio::test]
async fn a_run_that_lost_its_key_cannot_change_the_record_of_the_run_that_took_it() {
    let rig = Rig::new("idempotency-fencing").await;
    let mut stale = rig.start("create-record").await;
    let mut taker = rig.start("create-record").await;
    // Both warm (a token, the table's definition), so the taker is quick.
    for function in [&mut stale, &mut taker] {
        let warm = Writer::Create.payload(&rig.emulator, "warm").await;
        succeeds(function, &keyed(&warm, &uuid::Uuid::new_v4().to_string())).await;
    }
    let slow_create = |status: Option<u16>| {
        let mut fault = json!({
            "delay_ms": SLOW.as_millis(), "method": "POST", "path_contains": "/api/data/v9.2/accounts"
        });
        if let Some(status) = status {
            fault["status"] = json!(status);
        }
        fault
    };

    // Its answer: its hold ends while it waits on Dataverse, and another run of the same payload
    // takes over and records its own answer first.
    let payload = keyed(
        &Writer::Create.payload(&rig.emulator, "fenced answer").await,
        "k-answer",
    );
    rig.emulator
        .post("faults", &slow_create(None))
        .await
        .unwrap();
    let (late, took_over) = tokio::join!(stale.invoke(&payload), async {
        assert!(
            rig.records
                .reaches("create-record", "k-answer", "INPROGRESS")
                .await
        );
        rig.records.lapse("create-record", "k-answer").await;
        succeeds(&mut taker, &payload).await
    });
    let late = late.unwrap_or_else(|e| panic!("{e}\n{}", stale.logs()));
    assert_ne!(
        late["accountid"], took_over["accountid"],
        "the takeover was to run while the first run waited"
    );
    assert!(
        stale
            .logs_with("took this idempotency key over")
            .await
            .contains("took this idempotency key over")
    );
    assert_eq!(succeeds(&mut stale, &payload).await, took_over);

    // Its failure: its record expires while it waits on Dataverse, which then refuses it; another
    // payload has taken the key meanwhile, and keeps it.
    let refused = keyed(
        &Writer::Create.payload(&rig.emulator, "refused").await,
        "k-refused",
    );
    let other = keyed(
        &Writer::Create.payload(&rig.emulator, "kept").await,
        "k-refused",
    );
    rig.emulator
        .post("faults", &slow_create(Some(400)))
        .await
        .unwrap();
    let (failed, kept) = tokio::join!(stale.invoke(&refused), async {
        assert!(
            rig.records
                .reaches("create-record", "k-refused", "INPROGRESS")
                .await
        );
        rig.records.expire("create-record", "k-refused").await;
        succeeds(&mut taker, &other).await
    });
    let (error_type, _) = expect_error(failed, &stale.logs());
    assert_eq!(error_type, "Crm.BadRequest");
    rig.take_log().await;
    assert_eq!(succeeds(&mut stale, &other).await, kept);
    assert_eq!(Writer::Create.writes(&rig.take_log().await), 0);
}
