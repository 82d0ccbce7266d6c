//! The DynamoDB cursor store under hostile conditions, through the real `when-record-created` binary:
//! damaged cursor items, and DynamoDB or EventBridge calls that hang or lose their answers mid-poll.
//!
//! The function reaches moto through a fault proxy ([`e2e_tests::proxy`]), so a call can fail while
//! moto keeps its tables, bus and queue. The tests' own AWS clients talk to moto directly.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use e2e_tests::aws::{Tap, cursor_table};
use e2e_tests::proxy::{Fault, Operation, Proxy, Rule};
use e2e_tests::{
    Emulator, Failure, Function, LocalFiles, Moto, env, expect_error, fired_ids, lease_lapsed,
    settle,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Value, json};

const TABLE: &str = "crm-cursors";
/// A short invocation: hung calls must end in an error well before the harness gives up on it.
const SHORT: Duration = Duration::from_secs(6);

struct Rig {
    emulator: Emulator,
    _files: LocalFiles,
    _moto: Moto,
    proxy: Proxy,
    tap: Tap,
    /// Straight to moto, past the proxy.
    dynamo: aws_sdk_dynamodb::Client,
    env: Vec<(String, String)>,
}

impl Rig {
    async fn new() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("cursor-store", &emulator).unwrap();
        let moto = Moto::start().await.unwrap();
        cursor_table(&moto, TABLE).await.unwrap();
        let tap = Tap::new(&moto, "crm-events", "contoso.crm").await.unwrap();
        let proxy = Proxy::start(&moto.url).await.unwrap();
        let mut environment = proxy.env(&moto);
        environment.push(files.secrets_env());
        environment.extend(env(&[
            ("CRM_STATE", &format!("dynamodb:{TABLE}")),
            ("CRM_EVENTS", "eventbridge:crm-events"),
            ("CRM_EVENT_SOURCE", "contoso.crm"),
        ]));
        let dynamo = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        Self {
            emulator,
            _files: files,
            _moto: moto,
            proxy,
            tap,
            dynamo,
            env: environment,
        }
    }

    async fn created(&self) -> Function {
        Function::start("when-record-created", &self.env)
            .await
            .unwrap()
    }

    async fn create(&self, name: &str) -> String {
        self.emulator.create_account(name).await.unwrap()
    }

    /// A created-trigger whose cursor `trigger` exists (its first poll fired nothing), and one row,
    /// `name`, created after it and settled: the change its next poll fires. Returns the function,
    /// the poll's payload and the row's id.
    async fn one_change(&self, trigger: &str, name: &str) -> (Function, Value, String) {
        let mut created = self.created().await;
        let payload = payload(trigger);
        assert!(fired_ids(&mut created, &payload).await.is_empty());
        let id = self.create(name).await;
        settle(&self.emulator).await.unwrap();
        (created, payload, id)
    }

    /// Sets (`Some`) or removes (`None`) one attribute of a cursor item, as a person or a bad script
    /// editing the table would.
    async fn damage(&self, key: &str, attribute: &str, value: Option<AttributeValue>) {
        let update = self
            .dynamo
            .update_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(key.to_owned()))
            .key("sk", AttributeValue::S("cursor".into()))
            .expression_attribute_names("#a", attribute);
        let update = match value {
            Some(value) => update
                .update_expression("SET #a = :v")
                .expression_attribute_values(":v", value),
            None => update.update_expression("REMOVE #a"),
        };
        update.send().await.unwrap();
    }
}

fn payload(trigger: &str) -> Value {
    json!({"dataset": "contoso", "table": "accounts", "trigger": trigger})
}

fn key(trigger: &str) -> String {
    format!("created/contoso/account/{trigger}")
}

fn n(value: &str) -> AttributeValue {
    AttributeValue::N(value.to_owned())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

#[tokio::test]
async fn a_damaged_cursor_item_is_a_configuration_error_and_publishes_nothing() {
    let rig = Rig::new().await;
    let mut created = rig.created().await;
    let damages: [(&str, &str, Option<AttributeValue>); 7] = [
        ("state-removed", "state", None),
        ("position-removed", "position", None),
        ("state-as-number", "state", Some(n("7"))),
        (
            "revision-too-large",
            "revision",
            Some(n("18446744073709551616")),
        ),
        ("revision-negative", "revision", Some(n("-1"))),
        ("revision-as-string", "revision", Some(s("3"))),
        (
            "revision-at-its-largest",
            "revision",
            Some(n("18446744073709551615")),
        ),
    ];
    for (trigger, _, _) in &damages {
        assert!(fired_ids(&mut created, &payload(trigger)).await.is_empty());
    }
    rig.create("changed after every cursor started").await;
    settle(&rig.emulator).await.unwrap();
    for (trigger, attribute, value) in &damages {
        rig.damage(&key(trigger), attribute, value.clone()).await;
    }
    let published = rig.proxy.calls(Operation::PutEvents);
    for (trigger, attribute, _) in &damages {
        let result = created.invoke(&payload(trigger)).await;
        let (error_type, message) = expect_error(result, &created.logs());
        assert_eq!(error_type, "Crm.Configuration", "{trigger}: {message}");
        assert!(message.contains(&key(trigger)), "{trigger}: {message}");
        assert!(
            message.contains(&format!("'{attribute}'")),
            "{trigger}: {message}"
        );
    }
    assert_eq!(
        rig.proxy.calls(Operation::PutEvents),
        published,
        "nothing was published"
    );
    assert!(rig.tap.drain().await.unwrap().is_empty());
}

/// A position ahead of the state made every save "move backwards" after publishing, and a time out
/// of range turned into 1970 in the query: the same events went out on every poll. Both fail before
/// anything is published, and keep failing: the lease is given back, so the next poll does not find
/// the cursor held and answer an empty success instead.
#[tokio::test]
async fn a_cursor_that_contradicts_itself_fails_before_publishing_on_every_poll() {
    let rig = Rig::new().await;
    let mut created = rig.created().await;
    for trigger in ["ahead", "far-future", "garbled"] {
        assert!(fired_ids(&mut created, &payload(trigger)).await.is_empty());
    }
    rig.create("changed after both cursors started").await;
    settle(&rig.emulator).await.unwrap();
    rig.damage(&key("ahead"), "position", Some(s("zzzz"))).await;
    let item = rig
        .dynamo
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(key("far-future")))
        .key("sk", AttributeValue::S("cursor".into()))
        .send()
        .await
        .unwrap();
    let mut state: Value =
        serde_json::from_str(item.item().unwrap()["state"].as_s().unwrap()).unwrap();
    state["since"] = json!(i64::MAX);
    rig.damage(&key("far-future"), "state", Some(s(&state.to_string())))
        .await;
    rig.damage(&key("garbled"), "state", Some(s("{\"kind\": \"crea")))
        .await;

    let published = rig.proxy.calls(Operation::PutEvents);
    for (trigger, attribute) in [
        ("ahead", "position"),
        ("far-future", "state"),
        ("garbled", "state"),
    ] {
        for attempt in 1..=2 {
            let result = created.invoke(&payload(trigger)).await;
            let (error_type, message) = expect_error(result, &created.logs());
            assert_eq!(
                error_type, "Crm.Configuration",
                "{trigger}, poll {attempt}: {message}"
            );
            assert!(
                message.contains(&format!("'{attribute}'")),
                "{trigger}, poll {attempt}: {message}"
            );
        }
    }
    assert_eq!(
        rig.proxy.calls(Operation::PutEvents),
        published,
        "nothing was published"
    );
}

#[tokio::test]
async fn a_lease_no_poll_could_have_written_does_not_keep_polls_out() {
    let rig = Rig::new().await;
    let mut created = rig.created().await;
    // An end far beyond any invocation, an owner of the wrong type on a lease that has not ended, and
    // an end that is not a number.
    let in_ten_minutes = (SystemTime::now() + Duration::from_secs(600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let leases: [(&str, AttributeValue, AttributeValue); 3] = [
        (
            "lease-until-far",
            s("someone-else"),
            n("18446744073709551615"),
        ),
        ("lease-owner-number", n("7"), n(&in_ten_minutes)),
        ("lease-until-text", s("someone-else"), s("soon")),
    ];
    for (trigger, _, _) in &leases {
        assert!(fired_ids(&mut created, &payload(trigger)).await.is_empty());
    }
    let id = rig.create("behind a broken lease").await;
    settle(&rig.emulator).await.unwrap();
    for (trigger, owner, until) in &leases {
        rig.damage(&key(trigger), "lease_owner", Some(owner.clone()))
            .await;
        rig.damage(&key(trigger), "lease_until", Some(until.clone()))
            .await;
    }
    for (trigger, _, _) in &leases {
        assert_eq!(
            fired_ids(&mut created, &payload(trigger)).await,
            std::slice::from_ref(&id),
            "{trigger}"
        );
    }
}

#[tokio::test]
async fn a_lease_request_that_hangs_is_a_server_error_within_the_deadline() {
    let rig = Rig::new().await;
    let mut created = rig.created().await;
    rig.proxy.add(Rule::new(Operation::UpdateItem, Fault::Hold));
    let result = created.invoke_within(&payload("hung-lease"), SHORT).await;
    let (error_type, message) = expect_error(result, &created.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("taking the lease on"), "{message}");
    // The held request never reached DynamoDB, so no lease stands in the way of the next poll.
    rig.proxy.clear();
    assert!(
        fired_ids(&mut created, &payload("hung-lease"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_cursor_save_that_hangs_is_a_server_error_and_the_next_poll_delivers_again() {
    let rig = Rig::new().await;
    let (mut created, payload, id) = rig
        .one_change("hung-save", "published, then the save hangs")
        .await;
    // The lease request passes; every later `UpdateItem` (the save, and its retries) hangs.
    rig.proxy
        .add(Rule::new(Operation::UpdateItem, Fault::Hold).after(1));
    let invoked = Instant::now();
    let result = created.invoke_within(&payload, SHORT).await;
    let (error_type, message) = expect_error(result, &created.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("outcome is unknown"), "{message}");
    assert!(!message.contains("taken over"), "{message}");
    rig.proxy.clear();
    // The held save never reached DynamoDB: once the lease lapses, the change is delivered again.
    // The poll could not give its lease back (that is an `UpdateItem` too, and held), and a lease in
    // DynamoDB ends on the wall clock, not on Dataverse's: this wait cannot be replaced by moving the
    // emulator's clock.
    lease_lapsed(invoked, SHORT).await;
    assert_eq!(fired_ids(&mut created, &payload).await, [id]);
    let events = rig.tap.drain().await.unwrap();
    assert_eq!(events.len(), 2, "delivered twice, at least once");
    assert_eq!(
        events[0]["detail"]["event_id"],
        events[1]["detail"]["event_id"]
    );
}

#[tokio::test]
async fn a_cursor_save_that_landed_but_lost_its_answer_is_not_reported_as_a_takeover() {
    let rig = Rig::new().await;
    let (mut created, payload, id) = rig
        .one_change("lost-answer-once", "saved, answer lost")
        .await;
    // The save reaches DynamoDB and is applied, but its answer never comes back, once.
    rig.proxy.add(
        Rule::new(Operation::UpdateItem, Fault::LoseAnswer)
            .after(1)
            .times(1),
    );
    assert_eq!(fired_ids(&mut created, &payload).await, [id]);
    assert_eq!(rig.proxy.faulted(Operation::UpdateItem), 1);
    rig.proxy.clear();
    // The cursor did advance: nothing is delivered again.
    assert!(fired_ids(&mut created, &payload).await.is_empty());
    assert_eq!(rig.tap.drain().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_cursor_save_whose_every_answer_is_lost_says_its_outcome_is_unknown() {
    let rig = Rig::new().await;
    let (mut created, payload, _) = rig
        .one_change("lost-answers", "saved, every answer lost")
        .await;
    rig.proxy
        .add(Rule::new(Operation::UpdateItem, Fault::LoseAnswer).after(1));
    let result = created.invoke_within(&payload, SHORT).await;
    let (error_type, message) = expect_error(result, &created.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("outcome is unknown"), "{message}");
    assert!(!message.contains("taken over"), "{message}");
    rig.proxy.clear();
    // The first attempt was applied: the next poll resumes from the saved cursor, delivering nothing
    // again (had it not been applied, it would deliver the change again; either way none is lost).
    assert!(fired_ids(&mut created, &payload).await.is_empty());
    assert_eq!(rig.tap.drain().await.unwrap().len(), 1);
}

#[tokio::test]
async fn put_events_that_hangs_is_reported_as_a_timeout_with_the_attempts_made() {
    let rig = Rig::new().await;
    let (mut created, payload, id) = rig.one_change("hung-put-events", "publishing hangs").await;
    rig.proxy.add(Rule::new(Operation::PutEvents, Fault::Hold));
    let result = created.invoke_within(&payload, SHORT).await;
    let (error_type, message) = expect_error(result, &created.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains("after 1 attempt"), "{message}");
    assert!(!message.contains("refused"), "{message}");
    assert_eq!(rig.proxy.calls(Operation::PutEvents), 1);
    rig.proxy.clear();
    // Nothing was accepted, so the cursor stayed and the next poll publishes the change.
    assert_eq!(fired_ids(&mut created, &payload).await, [id]);
}

/// One way to damage one attribute of a saved cursor item: `None` removes it.
fn damage() -> impl Strategy<Value = (&'static str, Option<AttributeValue>)> {
    let number = || any::<u64>().prop_map(|v| AttributeValue::N(v.to_string()));
    let text = || "[a-z0-9{}\":]{0,12}".prop_map(AttributeValue::S);
    let out_of_range = || {
        prop_oneof![
            Just("18446744073709551616".to_owned()),
            Just("18446744073709551615".to_owned()),
            Just("99999999999999999999999999999999999999".to_owned()),
            Just("-1".to_owned()),
            (1..u64::MAX).prop_map(|v| format!("-{v}")),
            Just("2.5".to_owned()),
            Just("1e30".to_owned()),
        ]
        .prop_map(AttributeValue::N)
    };
    let other = || {
        prop_oneof![
            Just(AttributeValue::Bool(true)),
            Just(AttributeValue::Null(true)),
            Just(AttributeValue::L(vec![])),
        ]
    };
    // Each attribute removed (`None`) or replaced by a value of some wrong or out-of-range shape.
    let removed_or =
        |values: BoxedStrategy<AttributeValue>| prop_oneof![Just(None), values.prop_map(Some)];
    let as_string =
        || number().prop_map(|v| AttributeValue::S(v.as_n().cloned().unwrap_or_default()));
    prop_oneof![
        (
            Just("state"),
            removed_or(prop_oneof![number(), text(), other()].boxed())
        ),
        // Not a position ahead of the stored state: that is a different defect (the engine's).
        (
            Just("position"),
            removed_or(
                prop_oneof![number(), Just(AttributeValue::S(String::new())), other()].boxed()
            )
        ),
        (
            Just("revision"),
            removed_or(prop_oneof![number(), as_string(), out_of_range(), other()].boxed())
        ),
        (
            Just("lease_owner"),
            removed_or(prop_oneof![number(), text(), other()].boxed())
        ),
        (
            Just("lease_until"),
            removed_or(
                prop_oneof![
                    text(),
                    out_of_range(),
                    Just(AttributeValue::N("0".into())),
                    other()
                ]
                .boxed()
            )
        ),
        (
            Just("updated_at"),
            removed_or(prop_oneof![text(), out_of_range(), other()].boxed())
        ),
    ]
}

/// One case: a saved cursor, two rows created after it, one attribute damaged, then polls.
async fn damaged_poll(
    rig: &Rig,
    created: &mut Function,
    trigger: &str,
    attribute: &str,
    value: Option<AttributeValue>,
) -> Result<(), TestCaseError> {
    let payload = payload(trigger);
    prop_assert!(fired_ids(created, &payload).await.is_empty());
    let made: HashSet<String> = [
        rig.create(&format!("{trigger} a")).await,
        rig.create(&format!("{trigger} b")).await,
    ]
    .into();
    settle(&rig.emulator).await.unwrap();
    rig.damage(&key(trigger), attribute, value).await;
    let published = rig.proxy.calls(Operation::PutEvents);
    rig.tap.drain().await.unwrap();
    match created.invoke(&payload).await {
        Err(Failure::Error {
            error_type,
            message,
        }) => {
            prop_assert_eq!(error_type.as_str(), "Crm.Configuration", "{}", message);
            prop_assert_eq!(rig.proxy.calls(Operation::PutEvents), published);
            prop_assert!(rig.tap.drain().await.unwrap().is_empty());
        }
        Ok(output) => {
            let mut fired: HashSet<String> = output["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["accountid"].as_str().unwrap().to_owned())
                .collect();
            loop {
                let more = fired_ids(created, &payload).await;
                if more.is_empty() {
                    break;
                }
                fired.extend(more);
            }
            prop_assert!(
                made.is_subset(&fired),
                "lost rows: {:?}",
                made.difference(&fired)
            );
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!("{other}\n{}", created.logs())));
        }
    }
    Ok(())
}

/// Random damage to one attribute of a saved cursor item: the next poll either fails as
/// `Crm.Configuration` having published nothing, or resumes without losing a row. Runs the real binary
/// per case, so few cases by default (`PROPTEST_CASES` to change).
#[test]
fn random_damage_to_a_cursor_item_never_loses_a_row_silently() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rig = runtime.block_on(Rig::new());
    let created = RefCell::new(runtime.block_on(rig.created()));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    // A fixed seed unless one is given, so CI sees the same damage every run.
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0DA3_A6ED);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 8,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let next = Cell::new(0u32);
    let result = runner.run(&damage(), |(attribute, value)| {
        let case = next.get();
        next.set(case + 1);
        let trigger = format!("damage-{case}");
        let mut function = created.borrow_mut();
        runtime.block_on(damaged_poll(
            &rig,
            &mut function,
            &trigger,
            attribute,
            value,
        ))
    });
    if let Err(e) = result {
        panic!("{e}\n{}", created.borrow().logs());
    }
}
