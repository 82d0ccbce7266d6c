//! The state machine against the directory store, in a temporary directory: a real store, in this
//! process.

use std::cell::RefCell;
use std::path::Path;

use serde_json::json;
use tempfile::TempDir;

use super::*;

const SCOPE: &str = "create-record";

fn guard(dir: &Path) -> Idempotency {
    Idempotency::new(
        Some(Store::Directory(DirectoryStore::new(dir.join("once")))),
        SCOPE,
        Duration::from_secs(3600),
    )
}

fn store(dir: &Path) -> DirectoryStore {
    DirectoryStore::new(dir.join("once"))
}

fn payload(key: &str, name: &str) -> Value {
    json!({"dataset": "contoso", "table": "accounts", "item": {"name": name}, "idempotency_key": key})
}

/// The hash the guard takes of `payload(key, name)`.
fn hash_of(name: &str) -> String {
    payload_hash(&json!({"dataset": "contoso", "table": "accounts", "item": {"name": name}}))
}

fn now() -> u64 {
    epoch_ms(SystemTime::now())
}

/// Runs `payload` through `guard` with work that answers `answer()`; returns the outcome and, for
/// each time the work ran, whether it was told it took over.
async fn run(
    guard: &Idempotency,
    payload: Value,
    answer: impl Fn() -> Result<Value, CrmError>,
) -> (Result<Value, CrmError>, Vec<bool>) {
    let (result, seen) = run_text(guard, payload, &Context::default(), answer).await;
    let value = result.map(|text| serde_json::from_str(&text).unwrap());
    (value, seen)
}

/// [`run`] under `context`, with the answer as the text the runtime sends.
async fn run_text(
    guard: &Idempotency,
    payload: Value,
    context: &Context,
    answer: impl Fn() -> Result<Value, CrmError>,
) -> (Result<String, CrmError>, Vec<bool>) {
    let seen = RefCell::new(Vec::new());
    let (payload, once) = guard.split(payload).unwrap();
    assert!(
        payload.get(KEY_FIELD).is_none(),
        "the key reaches the input"
    );
    let result = once
        .run(context, async |attempt: Attempt| {
            seen.borrow_mut().push(attempt.takeover);
            answer()
        })
        .await;
    let text = result.map(|raw| serde_json::to_string(&raw).unwrap());
    (text, seen.into_inner())
}

/// The record of key `k` as it stands (read by a begin that cannot replace it).
async fn stored(dir: &Path) -> Record {
    let probe = Record {
        hash: "another payload".into(),
        ..record("A", Status::InProgress, "probe", now(), now() / 1000 + 60)
    };
    match store(dir)
        .begin(&format!("{SCOPE}#k"), &probe, now())
        .await
        .unwrap()
    {
        Begun::Held(Some(record)) => record,
        other => panic!("no record of k: {other:?}"),
    }
}

/// Ends the hold of key `k`'s record, as its time passing would.
async fn end_hold(dir: &Path) {
    let record = stored(dir).await;
    store(dir)
        .hold(&format!("{SCOPE}#k"), &record.token, now() - 1)
        .await
        .unwrap();
}

fn conflict_left_ms(result: Result<Value, CrmError>) -> u64 {
    match result {
        Err(CrmError::Conflict { left_ms, .. }) => left_ms,
        other => panic!("expected Crm.Conflict, got {other:?}"),
    }
}

fn invalid_field(result: Result<Value, CrmError>) -> String {
    match result {
        Err(CrmError::InvalidInput { field, .. }) => field,
        other => panic!("expected Crm.InvalidInput, got {other:?}"),
    }
}

fn api(status: u16) -> CrmError {
    CrmError::Dataverse(dataverse::Error::Api {
        status,
        code: None,
        message: "m".into(),
        retry_after: None,
    })
}

/// A record of `name`'s payload under key `k`, as a run would have left it.
fn record(name: &str, status: Status, token: &str, until: u64, expires: u64) -> Record {
    Record {
        status,
        hash: hash_of(name),
        token: token.into(),
        in_progress_until: until,
        expires,
        result: (status == Status::Completed).then(|| "{\"stored\":true}".to_owned()),
        parts: None,
    }
}

async fn put(dir: &Path, record: &Record) {
    let begun = store(dir)
        .begin(&format!("{SCOPE}#k"), record, now())
        .await
        .unwrap();
    assert!(matches!(begun, Begun::Started { .. }), "{begun:?}");
}

#[tokio::test]
async fn a_repeat_is_answered_from_the_record_without_running_again() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let (first, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 1}))).await;
    assert_eq!((first.unwrap(), seen), (json!({"n": 1}), vec![false]));
    let (again, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 2}))).await;
    assert_eq!((again.unwrap(), seen), (json!({"n": 1}), vec![]));
    // Key order and spacing are not the request.
    let reordered: Value = serde_json::from_str(
        r#"{ "idempotency_key": "k", "item": {"name": "A"}, "table": "accounts", "dataset": "contoso" }"#,
    )
    .unwrap();
    let (again, seen) = run(&guard, reordered, || Ok(json!({"n": 3}))).await;
    assert_eq!((again.unwrap(), seen), (json!({"n": 1}), vec![]));
    // Another key is another request.
    let (other, seen) = run(&guard, payload("k2", "A"), || Ok(json!({"n": 4}))).await;
    assert_eq!((other.unwrap(), seen), (json!({"n": 4}), vec![false]));
}

#[tokio::test]
async fn a_different_payload_under_a_key_is_refused_whatever_the_record_holds() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let later = now() + 60_000;
    for status in [Status::Completed, Status::InProgress] {
        let dir = temp.path().join(format!("{status:?}"));
        put(&dir, &record("A", status, "first", later, later / 1000)).await;
        let guard = super::tests::guard(&dir);
        let (result, seen) = run(&guard, payload("k", "B"), || Ok(json!({}))).await;
        assert_eq!(invalid_field(result), KEY_FIELD, "{status:?}");
        assert!(seen.is_empty());
    }
    // Lapsed too: a crashed run of another payload is not this one's to take over.
    put(
        temp.path(),
        &record("A", Status::InProgress, "first", now() - 1, later / 1000),
    )
    .await;
    let (result, seen) = run(&guard, payload("k", "B"), || Ok(json!({}))).await;
    assert_eq!(invalid_field(result), KEY_FIELD);
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_live_run_holding_the_key_is_a_conflict() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let later = now() + 60_000;
    put(
        temp.path(),
        &record("A", Status::InProgress, "first", later, later / 1000 + 3600),
    )
    .await;
    let (result, seen) = run(&guard, payload("k", "A"), || Ok(json!({}))).await;
    match result {
        Err(e @ CrmError::Conflict { .. }) => {
            assert_eq!(e.error_type(), "Crm.Conflict");
            assert!(e.message().contains("'k'"), "{}", e.message());
        }
        other => panic!("{other:?}"),
    }
    assert!(seen.is_empty());
}

#[tokio::test]
async fn a_lapsed_run_of_the_same_payload_is_taken_over_and_told_so() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let later = now() + 60_000;
    put(
        temp.path(),
        &record("A", Status::InProgress, "crashed", now() - 1, later / 1000),
    )
    .await;
    let (result, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 1}))).await;
    assert_eq!((result.unwrap(), seen), (json!({"n": 1}), vec![true]));
    let (again, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 2}))).await;
    assert_eq!((again.unwrap(), seen), (json!({"n": 1}), vec![]));
}

#[tokio::test]
async fn an_expired_record_is_forgotten_even_before_it_is_deleted() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let past = now() / 1000 - 1;
    put(
        temp.path(),
        &record("A", Status::Completed, "old", now() - 10_000, past),
    )
    .await;
    let (result, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 1}))).await;
    assert_eq!((result.unwrap(), seen), (json!({"n": 1}), vec![false]));
    // Whatever payload it held.
    let temp = tempfile::tempdir().unwrap();
    let guard = super::tests::guard(temp.path());
    put(
        temp.path(),
        &record("B", Status::InProgress, "old", now() + 60_000, past),
    )
    .await;
    let (result, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 1}))).await;
    assert_eq!((result.unwrap(), seen), (json!({"n": 1}), vec![false]));
}

#[tokio::test]
async fn a_failure_that_wrote_nothing_frees_the_key_and_one_that_may_have_is_taken_over() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let (refused, seen) = run(&guard, payload("k", "A"), || Err(api(400))).await;
    assert_eq!(refused.unwrap_err().error_type(), "Crm.BadRequest");
    assert_eq!(seen, vec![false]);
    // Freed: the next run is a fresh one, at once.
    let (lost, seen) = run(&guard, payload("k", "A"), || {
        Err(CrmError::Dataverse(dataverse::Error::Deadline {
            method: "POST".into(),
            path: "/accounts".into(),
        }))
    })
    .await;
    assert_eq!(lost.unwrap_err().error_type(), "Crm.ServerError");
    assert_eq!(seen, vec![false]);
    // Kept, and held while Dataverse may still be carrying the write out: a repeat meanwhile is a
    // conflict, and sends nothing.
    let (conflict, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 0}))).await;
    assert!(conflict_left_ms(conflict) > 120_000);
    assert!(seen.is_empty());
    // Once the hold is over, the next run takes over.
    end_hold(temp.path()).await;
    let (gateway, seen) = run(&guard, payload("k", "A"), || Err(api(504))).await;
    assert!(gateway.is_err());
    assert_eq!(seen, vec![true]);
    end_hold(temp.path()).await;
    // A takeover that fails keeps the record even for a clear refusal: the crashed run's write
    // may still be there for the next one to find.
    let (refused, seen) = run(&guard, payload("k", "A"), || Err(api(429))).await;
    assert!(refused.is_err());
    assert_eq!(seen, vec![true]);
    // That refusal wrote nothing of its own, so nothing is left under way: no wait.
    let (done, seen) = run(&guard, payload("k", "A"), || Ok(json!({"n": 1}))).await;
    assert_eq!((done.unwrap(), seen), (json!({"n": 1}), vec![true]));
}

#[tokio::test]
async fn a_run_holds_its_key_past_its_deadline_while_dataverse_may_still_be_writing() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let mut context = Context::default();
    let deadline = now() + 10_000;
    context.deadline = deadline;
    let grace = u64::try_from(SERVER_GRACE.as_millis()).unwrap();
    let holds = RefCell::new(None);
    let (payload, once) = guard.split(payload("k", "A")).unwrap();
    drop(payload);
    once.run(&context, async |_: Attempt| {
        holds.replace(Some(stored(temp.path()).await.in_progress_until));
        Ok(json!(1))
    })
    .await
    .unwrap();
    let until = holds.into_inner().unwrap();
    assert!(
        until >= deadline + grace - 1_000 && until <= deadline + grace + 1_000,
        "held until {until}, the deadline being {deadline}"
    );
    assert!(
        SERVER_GRACE >= Duration::from_secs(120),
        "Dataverse's own limit"
    );
}

#[tokio::test]
async fn a_run_that_lost_the_key_cannot_overwrite_the_record_of_the_one_that_took_it() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(temp.path());
    let pk = format!("{SCOPE}#k");
    let expires = now() / 1000 + 3600;
    put(
        temp.path(),
        &record("A", Status::InProgress, "stale", now() - 1, expires),
    )
    .await;
    let newer = record("A", Status::InProgress, "newer", now() + 60_000, expires);
    let begun = store.begin(&pk, &newer, now()).await.unwrap();
    assert!(
        matches!(begun, Begun::Started { resumes: true }),
        "{begun:?}"
    );
    assert!(!store.complete(&pk, "stale", "{}", expires).await.unwrap());
    store.release(&pk, "stale").await.unwrap();
    store.hold(&pk, "stale", now()).await.unwrap();
    let Begun::Held(Some(stored)) = store.begin(&pk, &newer, now()).await.unwrap() else {
        panic!("the newer run's record is gone");
    };
    assert_eq!(stored, newer, "untouched by the stale run");
    assert!(store.complete(&pk, "newer", "{}", expires).await.unwrap());
}

#[tokio::test]
async fn one_of_many_concurrent_runs_begins_and_the_rest_are_held() {
    let temp = tempfile::tempdir().unwrap();
    let pk = format!("{SCOPE}#k");
    let mut tasks = Vec::new();
    for i in 0..16 {
        // A store each, as separate processes would have: the file lock is what keeps them apart.
        let store = store(temp.path());
        let pk = pk.clone();
        let mine = record(
            "A",
            Status::InProgress,
            &format!("t{i}"),
            now() + 60_000,
            now() / 1000 + 60,
        );
        tasks.push(tokio::spawn(
            async move { store.begin(&pk, &mine, now()).await },
        ));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Begun::Started { .. } => started += 1,
            Begun::Held(Some(_)) => {}
            Begun::Held(None) => panic!("a held record must be read back"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn a_key_needs_a_store_and_an_event_id_without_one_runs_unguarded() {
    let off = Idempotency::new(None, SCOPE, Duration::from_secs(60));
    match off.split(payload("k", "A")) {
        Err(e) => {
            assert_eq!(e.error_type(), "Crm.Configuration");
            assert!(e.message().contains("CRM_IDEMPOTENCY"), "{}", e.message());
        }
        Ok(_) => panic!("a key without a store must fail"),
    }
    let event = json!({"id": "7bf73129-1428-4cd3-a780-95db273d1602", "source": "s", "detail-type": "d", "detail": {"dataset": "contoso"}});
    let (_, once) = off.split(event).unwrap();
    assert!(once.key().is_none());
    let (result, seen) = run(&off, json!({"dataset": "contoso"}), || Ok(json!(1))).await;
    assert_eq!((result.unwrap(), seen), (json!(1), vec![false]));
}

#[tokio::test]
async fn an_eventbridge_events_id_is_the_key_unless_its_detail_names_one() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let event = |id: &str, detail: Value| json!({"version": "0", "id": id, "source": "aws.events", "detail-type": "Scheduled Event", "detail": detail});
    let detail = json!({"dataset": "contoso", "table": "accounts"});
    let (unwrapped, once) = guard.split(event("e-1", detail.clone())).unwrap();
    assert_eq!(once.key().map(IdempotencyKey::as_str), Some("e-1"));
    assert_eq!(crate::input::unwrap_envelope(unwrapped), detail);
    let mut named = detail.clone();
    named["idempotency_key"] = json!("mine");
    let (unwrapped, once) = guard.split(event("e-1", named)).unwrap();
    assert_eq!(once.key().map(IdempotencyKey::as_str), Some("mine"));
    assert_eq!(crate::input::unwrap_envelope(unwrapped), detail);
    // A redelivery is a repeat; another event with the same detail is not.
    let (first, seen) = run(&guard, event("e-2", detail.clone()), || Ok(json!(1))).await;
    assert_eq!((first.unwrap(), seen), (json!(1), vec![false]));
    let (again, seen) = run(&guard, event("e-2", detail.clone()), || Ok(json!(2))).await;
    assert_eq!((again.unwrap(), seen), (json!(1), vec![]));
    let (other, seen) = run(&guard, event("e-3", detail), || Ok(json!(3))).await;
    assert_eq!((other.unwrap(), seen), (json!(3), vec![false]));
    // An id that cannot be a key leaves the event unguarded rather than failing it.
    let (_, once) = guard
        .split(event(&"x".repeat(MAX_KEY_CHARS + 1), json!({})))
        .unwrap();
    assert!(once.key().is_none());
}

#[test]
fn keys_are_visible_ascii_of_bounded_length() {
    let guard = Idempotency::new(None, SCOPE, Duration::from_secs(60));
    for bad in [
        json!(""),
        json!("has space"),
        json!("tab\t"),
        json!("é"),
        json!("x".repeat(MAX_KEY_CHARS + 1)),
        json!(7),
        json!(["k"]),
    ] {
        let mut payload = json!({"dataset": "contoso"});
        payload[KEY_FIELD] = bad.clone();
        match guard.split(payload) {
            Err(CrmError::InvalidInput { field, .. }) => assert_eq!(field, KEY_FIELD, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let longest = "~".repeat(MAX_KEY_CHARS);
    assert!(IdempotencyKey::parse(&longest).is_ok());
    assert_eq!(
        "a b".parse::<IdempotencyKey>(),
        Err(KeyError::Invalid { key: "a b".into() })
    );
    assert!(IdempotencyKey::parse("arn:aws:states:eu-west-1:1:execution:x:y#3'").is_ok());
    let (payload, once) = guard
        .split(json!({"dataset": "contoso", "idempotency_key": null}))
        .unwrap();
    assert!(once.key().is_none());
    assert_eq!(payload, json!({"dataset": "contoso"}));
}

#[test]
fn the_hash_ignores_key_order_and_spacing_but_not_values() {
    let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é\n"}], "a": null}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é\n","y":2}]}"#).unwrap();
    assert_eq!(payload_hash(&a), payload_hash(&b));
    let c: Value = serde_json::from_str(r#"{"a":null,"b":[{"x":"é\n","y":2},1]}"#).unwrap();
    assert_ne!(payload_hash(&a), payload_hash(&c), "array order is meaning");
    assert_ne!(
        payload_hash(&json!({"a": "1"})),
        payload_hash(&json!({"a": 1}))
    );
    assert_eq!(payload_hash(&a).len(), 64);
}

#[test]
fn envelopes_are_recognised_as_the_input_module_takes_them_off() {
    for event in [
        json!({"id": "i", "source": "s", "detail-type": "d", "detail": {"a": 1}}),
        json!({"source": "s", "detail-type": "d", "detail": {"a": 1}}),
        json!({"source": "s", "detail-type": "d", "detail": "text"}),
        json!({"source": "s", "detail": {"a": 1}}),
        json!({"a": 1}),
        json!([1]),
    ] {
        let taken_off = crate::input::unwrap_envelope(event.clone()) != event;
        assert_eq!(crate::input::is_envelope(&event), taken_off, "{event}");
    }
}

#[tokio::test]
async fn a_refusal_after_an_unanswered_attempt_keeps_the_key_and_reads_as_the_refusal() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    // A DELETE whose first attempt went unanswered, and whose retry Dataverse answered 404: the
    // row may be gone by this run's hand.
    let (result, seen) = run(&guard, payload("k", "A"), || {
        Err(CrmError::from(dataverse::Error::MayHaveApplied(Box::new(
            dataverse::Error::Api {
                status: 404,
                code: None,
                message: "m".into(),
                retry_after: None,
            },
        ))))
    })
    .await;
    assert_eq!(seen, vec![false]);
    let error = result.unwrap_err();
    assert_eq!(error.error_type(), "Crm.NotFound");
    assert!(
        matches!(error, CrmError::Dataverse(dataverse::Error::Api { .. })),
        "the caller gets the refusal as it came: {error:?}"
    );
    // Kept: the retry waits, then takes over and knows the row may be gone.
    let (conflict, _) = run(&guard, payload("k", "A"), || Ok(json!(0))).await;
    assert!(conflict_left_ms(conflict) > 120_000);
    end_hold(temp.path()).await;
    let (_, seen) = run(&guard, payload("k", "A"), || Ok(json!(1))).await;
    assert_eq!(seen, vec![true]);
}

#[tokio::test]
async fn a_replay_answers_the_stored_text_byte_for_byte() {
    let temp = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let mut first_answer: Value = serde_json::from_str(
        r#"{"sum":0.30000000000000004,"tiny":1e-7,"big":12345678901234567890,"huge":123456789012345678901234567890,"neg":-0.0}"#,
    )
    .unwrap();
    // serde_json reads this number back (without its `float_roundtrip` feature) one unit in the
    // last place off, and so would write it out again differently.
    let far: f64 = "1.0715660391465826e-75".parse().unwrap();
    first_answer["far"] = json!(far);
    let (first, _) = run_text(&guard, payload("k", "A"), &Context::default(), || {
        Ok(first_answer.clone())
    })
    .await;
    let first = first.unwrap();
    assert!(first.contains("1.0715660391465826e-75"), "{first}");
    let (again, seen) = run_text(&guard, payload("k", "A"), &Context::default(), || {
        Ok(json!(0))
    })
    .await;
    assert!(seen.is_empty());
    assert_eq!(again.unwrap(), first);
    // Whatever the text stored (written by an earlier version, or by hand), it is answered as it
    // is: never parsed into numbers and written out again.
    let text = r#"{"sum": 0.30000000000000004, "tiny": 1E-7, "big": 123456789012345678901234567890, "one": 1.0}"#;
    let mut completed = record("A", Status::Completed, "old", now(), now() / 1000 + 60);
    completed.result = Some(text.to_owned());
    let dir = temp.path().join("stored");
    put(&dir, &completed).await;
    let (replayed, seen) = run_text(
        &super::tests::guard(&dir),
        payload("k", "A"),
        &Context::default(),
        || Ok(json!(0)),
    )
    .await;
    assert!(seen.is_empty());
    assert_eq!(replayed.unwrap(), text);
}

#[test]
fn only_a_failure_dataverse_answered_or_that_was_never_sent_wrote_nothing() {
    for status in [400, 401, 403, 404, 412, 429, 500, 503] {
        assert!(wrote_nothing(&api(status)), "{status}");
    }
    for status in [502, 504] {
        assert!(!wrote_nothing(&api(status)), "{status}");
    }
    let deadline = dataverse::Error::Deadline {
        method: "POST".into(),
        path: "/x".into(),
    };
    assert!(!wrote_nothing(&CrmError::Dataverse(deadline)));
    let unread = dataverse::Error::CreatedUnread {
        id: uuid::Uuid::nil(),
        source: Box::new(dataverse::Error::NoEntityId),
    };
    assert!(!wrote_nothing(&CrmError::Dataverse(unread)));
    let part = dataverse::Error::BatchPart {
        content_id: Some(2),
        source: Box::new(dataverse::Error::Api {
            status: 412,
            code: None,
            message: "m".into(),
            retry_after: None,
        }),
    };
    assert!(wrote_nothing(&CrmError::Dataverse(part)));
    assert!(wrote_nothing(&CrmError::invalid("item", "x")));
    assert!(wrote_nothing(&CrmError::NotStarted {
        action: "POST accounts".into()
    }));
    // A refusal after an attempt that went unanswered may hide that attempt's write.
    for status in [401, 404, 429, 500] {
        let after = dataverse::Error::MayHaveApplied(Box::new(dataverse::Error::Api {
            status,
            code: None,
            message: "m".into(),
            retry_after: None,
        }));
        assert!(!wrote_nothing(&CrmError::Dataverse(after)), "{status}");
    }
}

#[tokio::test]
async fn a_damaged_record_is_a_configuration_error_naming_it() {
    let temp: TempDir = tempfile::tempdir().unwrap();
    let guard = guard(temp.path());
    let (result, _) = run(&guard, payload("k", "A"), || Ok(json!(1))).await;
    result.unwrap();
    let dir = temp.path().join("once");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::write(&path, b"{\"pk\": 1}").unwrap();
        }
    }
    let (result, seen) = run(&guard, payload("k", "A"), || Ok(json!(2))).await;
    let error = result.unwrap_err();
    assert_eq!(error.error_type(), "Crm.Configuration");
    assert!(
        error.message().contains("create-record#k"),
        "{}",
        error.message()
    );
    assert!(seen.is_empty());
}
