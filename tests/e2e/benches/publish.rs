//! How fast `when-record-created` publishes a backlog to EventBridge when each `PutEvents` call takes
//! 25 ms: with the default number of calls in flight, and with one (`CRM_EVENTS_CONCURRENCY=1`, the
//! baseline).
//!
//! Run after `cargo build --release -p when-record-created -p dataverse-emulator`. A backlog of rows
//! is generated in the emulator, the trigger starts from before it (`since`), and polls until a poll
//! fires nothing, publishing to a fake EventBridge ([`e2e_tests::fake_eventbridge`]) that holds each
//! call for the latency. Events per second count the whole drain (fetching, publishing and saving
//! the cursor), as a workflow sees it.

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e_tests::fake_eventbridge::{FakeEventBridge, Received};
use e2e_tests::{Emulator, Function, LocalFiles, env};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

const BACKLOG: usize = 20_000;
const TOP: usize = 5_000;
const LATENCY: Duration = Duration::from_millis(25);

struct Run {
    fired: usize,
    polls: usize,
    calls: usize,
    max_in_flight: usize,
    elapsed: Duration,
}

impl Run {
    #[allow(clippy::cast_precision_loss)]
    fn rate(&self) -> f64 {
        self.fired as f64 / self.elapsed.as_secs_f64()
    }
}

/// Drains a fresh backlog with `concurrency` calls in flight (`None`: the default).
async fn drain(concurrency: Option<&str>) -> Run {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let now = emulator.advance_clock(0).await.unwrap();
    let ago = |secs: u64| {
        (now - Duration::from_secs(secs))
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    };
    emulator
        .post(
            "tables/account/generate",
            &json!({"count": BACKLOG, "createdon": ago(7200)}),
        )
        .await
        .unwrap();
    let fake = FakeEventBridge::start(LATENCY).await.unwrap();
    let files = LocalFiles::new("bench-publish", &emulator).unwrap();
    let mut environment = files.env_on_eventbridge(fake.env(), "bench");
    environment.push(("RUST_LOG".into(), "warn".into()));
    if let Some(n) = concurrency {
        environment.extend(env(&[("CRM_EVENTS_CONCURRENCY", n)]));
    }
    let mut function = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let payload =
        json!({"dataset": "contoso", "table": "accounts", "since": ago(10_800), "$top": TOP});
    let started = Instant::now();
    let (mut fired, mut polls) = (0, 0);
    loop {
        let answer = match function
            .invoke_within(&payload, Duration::from_secs(120))
            .await
        {
            Ok(answer) => answer,
            Err(e) => panic!("the poll failed: {e}\n{}", function.logs()),
        };
        let n = answer["value"].as_array().map_or(0, Vec::len);
        if n == 0 {
            break;
        }
        fired += n;
        polls += 1;
    }
    let elapsed = started.elapsed();
    let accepted = fake.accepted();
    let distinct: HashSet<&str> = accepted.iter().map(Received::event_id).collect();
    assert_eq!(
        (fired, accepted.len(), distinct.len()),
        (BACKLOG, BACKLOG, BACKLOG),
        "every row fired and published once"
    );
    Run {
        fired,
        polls,
        calls: fake.calls(),
        max_in_flight: fake.max_in_flight(),
        elapsed,
    }
}

#[tokio::main]
async fn main() {
    println!(
        "Publishing a {BACKLOG}-row backlog to EventBridge at {} ms per PutEvents call (when-record-created, $top {TOP}, release build)",
        LATENCY.as_millis()
    );
    println!(
        "{:>12} {:>6} {:>7} {:>9} {:>10} {:>10}",
        "concurrency", "polls", "calls", "in flight", "seconds", "events/s"
    );
    let mut rates = Vec::new();
    // The default, half of it for comparison, and one call at a time: the baseline.
    for (label, concurrency) in [("default", None), ("16", Some("16")), ("1", Some("1"))] {
        let run = drain(concurrency).await;
        println!(
            "{label:>12} {:>6} {:>7} {:>9} {:>10.1} {:>10.0}",
            run.polls,
            run.calls,
            run.max_in_flight,
            run.elapsed.as_secs_f64(),
            run.rate()
        );
        rates.push(run.rate());
    }
    println!(
        "default vs 1: {:.1}x; 16 vs 1: {:.1}x",
        rates[0] / rates[2],
        rates[1] / rates[2]
    );
}
