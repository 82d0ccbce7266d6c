//! How long a change takes to reach the events sink when Dataverse pushes it, beside how long the
//! polling trigger takes. Run with `make bench` (release binaries).
//!
//! Push: the emulator delivers each change to `dataverse-webhook` behind a local Function URL, as
//! Dataverse's asynchronous service delivers to a registered webhook, and the function publishes to a
//! file sink. The latency of one change runs from just before the Web API write to the moment its
//! event is in the file. Poll: the same change found by one `when-record-created` poll, whose latency
//! is the wait for the schedule plus the poll itself; the poll's own duration is measured, and the
//! wait is the schedule's (`PollRate`, 5 minutes by default, at least 1 minute).

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::function_url::FunctionUrl;
use e2e_tests::{Emulator, Function, LocalFiles, settle, webhooks_command};
use serde_json::json;

const CHANGES: usize = 100;
const KEY: &str = "bench-webhook-key-2d7e0b19c4a6";

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Waits until the file has `n` lines. A bench measures wall time, so it watches the file closely
/// rather than moving a clock.
async fn until_lines(path: &Path, n: usize) {
    let started = Instant::now();
    while lines(path) < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no event after a minute"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("bench-push", &emulator).unwrap();
    files.set_webhook_key(&emulator, KEY).unwrap();
    let receiver = FunctionUrl::start(
        Function::start("dataverse-webhook", &files.env())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    webhooks_command(
        &files.env(),
        &[
            "register",
            "--dataset",
            "contoso",
            "--table",
            "account",
            "--url",
            receiver.url(),
            "--messages",
            "create",
        ],
    )
    .await
    .unwrap();
    let events = files.events();

    // The first change pays the function's cold start and the first token: not counted.
    emulator.create_account("warm-up").await.unwrap();
    until_lines(&events, 1).await;
    let mut push = Vec::with_capacity(CHANGES);
    for n in 0..CHANGES {
        let started = Instant::now();
        emulator
            .create_account(&format!("pushed {n}"))
            .await
            .unwrap();
        until_lines(&events, n + 2).await;
        push.push(started.elapsed());
    }
    push.sort();

    // The same kind of change found by a poll: the poll's own time, measured as many times.
    let mut trigger = Function::start("when-record-created", &files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts"});
    trigger.invoke(&payload).await.unwrap();
    let mut poll = Vec::with_capacity(CHANGES);
    for n in 0..CHANGES {
        emulator
            .create_account(&format!("polled {n}"))
            .await
            .unwrap();
        settle(&emulator).await.unwrap();
        let started = Instant::now();
        let fired = trigger.invoke(&payload).await.unwrap();
        poll.push(started.elapsed());
        assert_eq!(fired["value"].as_array().map(Vec::len), Some(1));
    }
    poll.sort();

    println!("A change reaching the events sink ({CHANGES} changes, release build, file sink)");
    println!("{:<34} {:>9} {:>9} {:>9}", "", "p50 ms", "p95 ms", "max ms");
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>9.1}",
        "push: write to event in the sink",
        ms(percentile(&push, 0.5)),
        ms(percentile(&push, 0.95)),
        ms(percentile(&push, 1.0))
    );
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>9.1}",
        "poll: the poll alone",
        ms(percentile(&poll, 0.5)),
        ms(percentile(&poll, 0.95)),
        ms(percentile(&poll, 1.0))
    );
    let schedule = Duration::from_secs(60);
    println!(
        "poll with the shortest schedule (rate(1 minute)): waits 30,000 ms on average, up to 60,000, plus the poll;\npush p95 ÷ that mean: 1/{:.0}",
        (schedule / 2 + percentile(&poll, 0.5)).as_secs_f64()
            / percentile(&push, 0.95).as_secs_f64()
    );
}
