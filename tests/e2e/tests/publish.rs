//! Publishing with several `PutEvents` calls in flight, through the real `when-record-created`
//! binary: against a fake EventBridge that answers slowly and refuses chosen entries
//! ([`e2e_tests::fake_eventbridge`]), and against moto's, read back through SQS.
//!
//! What must hold whatever the concurrency: every change is delivered, each once when nothing fails;
//! the poll answers in scan order; and when an entry is refused for good, the cursor stops just before
//! it, so the next poll delivers it and everything after it again, under the same event ids.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use e2e_tests::aws::Tap;
use e2e_tests::fake_eventbridge::{FakeEventBridge, Received, Refuse};
use e2e_tests::{Emulator, Function, LocalFiles, Moto, env, expect_error, fired_ids};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

const BUS: &str = "crm-events";

struct Rig {
    emulator: Emulator,
    files: LocalFiles,
    /// When the trigger's cursor starts: before every row the suite makes.
    since: String,
}

impl Rig {
    async fn new() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("publish", &emulator).unwrap();
        let now = emulator.advance_clock(0).await.unwrap();
        let since = (now - Duration::from_secs(3600)).format(&Rfc3339).unwrap();
        Self {
            emulator,
            files,
            since,
        }
    }

    /// Cursors in a directory, credentials in a file, events on EventBridge at `aws` (the fake's or
    /// moto's environment).
    async fn created(&self, aws: Vec<(String, String)>, extra: &[(&str, &str)]) -> Function {
        let mut environment = self.files.env_on_eventbridge(aws, BUS);
        environment.extend(env(extra));
        Function::start("when-record-created", &environment)
            .await
            .unwrap()
    }

    /// `count` accounts created ten minutes ago (long settled), and every account id in scan order:
    /// the order the trigger asks Dataverse for, asked of the emulator here.
    async fn backlog(&self, count: usize) -> Vec<String> {
        let now = self.emulator.advance_clock(0).await.unwrap();
        let then = (now - Duration::from_secs(600)).format(&Rfc3339).unwrap();
        self.emulator
            .post(
                "tables/account/generate",
                &json!({"count": count, "createdon": then}),
            )
            .await
            .unwrap();
        let order = self
            .emulator
            .account_ids("$select=accountid&$orderby=createdon asc,accountid asc")
            .await
            .unwrap();
        assert_eq!(order.len(), count);
        order
    }

    fn payload(&self) -> Value {
        json!({"dataset": "contoso", "table": "accounts", "since": self.since, "$top": 1000})
    }
}

/// How many times each row id was accepted.
fn deliveries(entries: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in entries.iter().filter(|e| e.accepted()) {
        *counts.entry(entry.row_id().to_owned()).or_default() += 1;
    }
    counts
}

/// Row id → the event id it was sent with; every entry of one row must carry the same.
fn event_ids(entries: &[Received]) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    for entry in entries {
        let id = ids
            .entry(entry.row_id().to_owned())
            .or_insert_with(|| entry.event_id().to_owned());
        assert_eq!(id, entry.event_id(), "one row, one event id");
    }
    ids
}

/// The fake answers as EventBridge does, so the SDK reads it: accepted entries with an id, refused
/// ones with their code and message, in request order. Everything else in this suite rests on it.
#[tokio::test]
async fn the_fake_speaks_the_protocol_the_sdk_reads() {
    let fake = FakeEventBridge::start(Duration::ZERO).await.unwrap();
    fake.refuse(Refuse::position(0, 1).code("ThrottlingException", "slow down"));
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(fake.url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "test", "test", None, None, "fake",
        ))
        .load()
        .await;
    let client = aws_sdk_eventbridge::Client::new(&config);
    let entry = |n: u32| {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(BUS)
            .source("contoso.crm")
            .detail_type("Record Created")
            .detail(json!({"event_id": format!("e{n}"), "id": format!("r{n}")}).to_string())
            .build()
    };
    let output = client
        .put_events()
        .entries(entry(0))
        .entries(entry(1))
        .entries(entry(2))
        .send()
        .await
        .unwrap();
    assert_eq!(output.failed_entry_count(), 1);
    let results = output.entries();
    assert_eq!(results.len(), 3);
    assert!(results[0].event_id().is_some() && results[0].error_code().is_none());
    assert_eq!(results[1].error_code(), Some("ThrottlingException"));
    assert_eq!(results[1].error_message(), Some("slow down"));
    assert!(results[2].event_id().is_some());
    let received = fake.received();
    assert_eq!(received.len(), 3);
    assert_eq!(
        (received[1].event_id(), received[1].bus.as_str()),
        ("e1", BUS)
    );
    assert_eq!(received[1].refused.as_deref(), Some("ThrottlingException"));
    // Eleven entries is more than EventBridge takes in one call: refused as a whole, as AWS does.
    let too_many = (0..11).fold(client.put_events(), |call, n| call.entries(entry(n)));
    let error = too_many.send().await.unwrap_err();
    assert_eq!(
        aws_sdk_eventbridge::error::ProvideErrorMetadata::code(&error),
        Some("ValidationException")
    );
}

#[tokio::test]
async fn a_large_backlog_is_delivered_once_with_calls_in_flight_together_in_scan_order() {
    let rig = Rig::new().await;
    let fake = FakeEventBridge::start(Duration::from_millis(20))
        .await
        .unwrap();
    let order = rig.backlog(300).await;
    let mut created = rig.created(fake.env(), &[]).await;

    let fired = fired_ids(&mut created, &rig.payload()).await;
    assert_eq!(fired, order, "the answer lists the changes in scan order");
    let received = fake.received();
    assert!(received.iter().all(Received::accepted));
    let counts = deliveries(&received);
    assert_eq!(counts.len(), 300, "every change delivered");
    assert!(counts.values().all(|&n| n == 1), "each exactly once");
    let distinct: HashSet<&str> = received.iter().map(Received::event_id).collect();
    assert_eq!(distinct.len(), 300, "one event id per change");
    assert!(
        received.iter().all(|e| e.bus == BUS
            && e.source == "contoso.crm"
            && e.detail_type == "Record Created")
    );
    assert!(
        fake.max_in_flight() > 1,
        "more than one PutEvents call in flight (at most {})\n{}",
        fake.max_in_flight(),
        created.logs()
    );
    // Each call carries a run of consecutive changes, in scan order, of at most ten.
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut calls: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for entry in &received {
        calls
            .entry(entry.call)
            .or_default()
            .push(position[entry.row_id()]);
    }
    for indexes in calls.values() {
        assert!(indexes.len() <= 10, "{indexes:?}");
        assert!(
            indexes.windows(2).all(|w| w[1] == w[0] + 1),
            "a call's entries follow scan order: {indexes:?}"
        );
    }

    assert!(fired_ids(&mut created, &rig.payload()).await.is_empty());
    assert_eq!(fake.received().len(), 300, "nothing is published twice");
}

#[tokio::test]
async fn an_entry_refused_for_good_in_a_middle_batch_stops_the_cursor_just_before_it() {
    let rig = Rig::new().await;
    let fake = FakeEventBridge::start(Duration::from_millis(20))
        .await
        .unwrap();
    // Ten batches of ten, all in flight at once; the sixth entry of the fifth is refused on every
    // attempt, while the batches after it are accepted.
    let order = rig.backlog(100).await;
    let refused = order[45].clone();
    fake.refuse(Refuse::detail("id", &refused).code("InternalFailure", "the bus is unwell"));
    let mut created = rig.created(fake.env(), &[]).await;

    let result = created.invoke(&rig.payload()).await;
    let (error_type, message) = expect_error(result, &created.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(
        message.contains("did not accept 1 event(s) after 5 attempt(s)"),
        "{message}"
    );
    assert!(message.contains("the bus is unwell"), "{message}");
    let first = fake.received();
    let tries: Vec<&Received> = first.iter().filter(|e| e.row_id() == refused).collect();
    assert_eq!(tries.len(), 5, "retried alone, as a failed entry");
    assert!(tries.iter().all(|e| !e.accepted()));
    let delivered = deliveries(&first);
    assert!(
        order[..45].iter().all(|id| delivered.get(id) == Some(&1)),
        "everything before it, once"
    );
    assert!(
        order[50..].iter().all(|id| delivered.get(id) == Some(&1)),
        "the later batches were sent alongside, and succeeded"
    );
    let ids_first = event_ids(&first);

    // EventBridge recovers: the next poll starts just before the refused change, and delivers it and
    // everything after it, under the same event ids. Nothing before it is sent again.
    fake.clear();
    let fired = fired_ids(&mut created, &rig.payload()).await;
    assert_eq!(fired, order[45..], "the cursor stopped just before it");
    let all = fake.received();
    let second = &all[first.len()..];
    assert!(second.iter().all(Received::accepted));
    let mut again: Vec<&str> = second.iter().map(Received::row_id).collect();
    again.sort_unstable();
    let mut expected: Vec<&str> = order[45..].iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(again, expected, "each once more, and only those");
    for (row, id) in event_ids(second) {
        assert_eq!(ids_first[&row], id, "a redelivery keeps its event id");
    }
    let delivered = deliveries(&all);
    assert!(
        order.iter().all(|id| delivered.contains_key(id)),
        "no change lost"
    );

    assert!(fired_ids(&mut created, &rig.payload()).await.is_empty());
    assert_eq!(fake.received().len(), all.len());
}

#[tokio::test]
async fn a_transient_refusal_is_retried_and_the_poll_delivers_each_event() {
    let rig = Rig::new().await;
    let fake = FakeEventBridge::start(Duration::from_millis(20))
        .await
        .unwrap();
    let order = rig.backlog(50).await;
    // One change throttled twice, wherever it lands, and the fourth entry of the first call once
    // (never the same entry: the change is the eighth of its batch, and a retry leads its call).
    fake.refuse(
        Refuse::detail("id", &order[27])
            .code("ThrottlingException", "Rate exceeded")
            .times(2),
    );
    fake.refuse(Refuse::position(0, 3).times(1));
    let mut created = rig.created(fake.env(), &[]).await;

    let fired = fired_ids(&mut created, &rig.payload()).await;
    assert_eq!(fired, order);
    let received = fake.received();
    let refused: Vec<&Received> = received.iter().filter(|e| !e.accepted()).collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    let counts = deliveries(&received);
    assert_eq!(counts.len(), 50, "every change delivered");
    assert!(
        counts.values().all(|&n| n == 1),
        "each exactly once: only the refused entries are sent again"
    );
    // Every entry of one change, refused or accepted, carries one event id.
    event_ids(&received);
    assert_eq!(
        received.iter().filter(|e| e.row_id() == order[27]).count(),
        3
    );
}

#[tokio::test]
async fn a_concurrent_publish_reaches_the_bus_on_moto() {
    let rig = Rig::new().await;
    let moto = Moto::start().await.unwrap();
    let tap = Tap::new(&moto, BUS, "contoso.crm").await.unwrap();
    let order = rig.backlog(300).await;
    let mut created = rig
        .created(moto.env(), &[("CRM_EVENTS_CONCURRENCY", "8")])
        .await;

    let fired = fired_ids(&mut created, &rig.payload()).await;
    assert_eq!(fired, order);
    let events = tap.drain().await.unwrap();
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = order.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "each change reached the bus once");
    assert!(
        events
            .iter()
            .all(|e| e["source"] == "contoso.crm" && e["detail-type"] == "Record Created")
    );
}
