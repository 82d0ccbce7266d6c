//! How long a cold `get-record` takes against the emulator: from spawning the process to its answer,
//! with the token fetch, the table lookup and the read included. Run with `make bench`.

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use e2e_tests::{Emulator, Function, LocalFiles};
use serde_json::Value;

const RUNS: usize = 20;

#[tokio::main]
async fn main() {
    let emulator = Emulator::start(&["--seed", "demo"]).await.unwrap();
    let files = LocalFiles::new("bench-cold", &emulator).unwrap();
    let environment = [
        files.secrets_env(),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    let payload: Value = serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap();
    let mut cold = Vec::with_capacity(RUNS);
    let mut warm = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut function = Function::start("get-record", &environment).await.unwrap();
        function.invoke(&payload).await.unwrap();
        cold.push(started.elapsed());
        let again = Instant::now();
        function.invoke(&payload).await.unwrap();
        warm.push(again.elapsed());
        function.kill().await;
    }
    cold.sort();
    warm.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("get-record against the emulator, {RUNS} runs (release build)");
    println!("{:<34} {:>8} {:>8} {:>8}", "", "min ms", "median", "p95");
    for (label, times) in [
        ("cold: spawn to answer, with token", &cold),
        ("warm: next invocation", &warm),
    ] {
        println!(
            "{label:<34} {:>8.1} {:>8.1} {:>8.1}",
            ms(times[0]),
            ms(times[RUNS / 2]),
            ms(times[RUNS * 95 / 100])
        );
    }
}
