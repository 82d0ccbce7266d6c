//! `update-record` under Dataverse's service protection limits: 200 execution environments (one
//! process each, one invocation at a time, as Lambda runs them) update 2,000 rows, one invocation
//! per row, each setting a distinct value. Run with `make bench`, after `cargo build --release -p
//! dataverse-emulator -p update-record`.
//!
//! Each run is on a fresh emulator holding the same simulated execution time per request:
//!
//! 1. limits off: its Dataverse request count is the minimum (every environment's one table lookup,
//!    then one PATCH per row), and its wall time the baseline;
//! 2. then limits on, in three shapes ([`shapes`]): Dataverse's own numbers, where only the
//!    concurrency limit can bind; a request limit that binds once; and one that binds at three
//!    window boundaries ([`Scale::default`]).
//!
//! Each environment learns that a window is full only from a 429 of its own, so a fleet of
//! independent environments sends at least one refused request per environment and window boundary.
//! That floor is printed beside each ratio.
//!
//! An invocation that fails with `Crm.Throttled` is invoked again at once, as a Step Functions
//! `Retry` would (after its interval), and counted. Printed: requests against the minimum, 429s by
//! limit, re-invocations, the wall time against the least the limits allow (window arithmetic, see
//! [`allowed`]), and whether every row holds its new value. A lost row stops the bench with a
//! failure; the ratios are reported, not asserted.
//!
//! The scale is read from `LIMITS_REQUESTS`, `LIMITS_WINDOW_SECS`, `LIMITS_CONCURRENT`,
//! `LIMITS_EXECUTION_MS` and `LIMITS_SIMULATED_MS` when any is set: that one shape is run instead.

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dataverse_emulator::client::{ProtectionChange, Summary};
use e2e_tests::pool::Pool;
use e2e_tests::{Emulator, LocalFiles};
use serde_json::json;

const ROWS: usize = 2_000;
const ENVIRONMENTS: usize = 200;
/// `update-record`'s timeout in the template.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Invocations per row at most, re-invocations included: Step Functions' `Retry` gives up too.
const MAX_ATTEMPTS: usize = 20;
/// A run that takes longer has gone wrong (the limits allow the default scale 30 s).
const GIVE_UP: Duration = Duration::from_secs(600);

/// The limits of the second run, and the execution time of every request in both.
#[derive(Debug, Clone, Copy)]
struct Scale {
    requests: u32,
    window_secs: u64,
    concurrent: u32,
    execution_ms: u64,
    simulated_ms: u64,
}

impl Default for Scale {
    /// Dataverse's own numbers would barely bind here: 2,200 requests are well under 6,000 in five
    /// minutes and, at 20 ms each, 44 s of execution time is far under 1,200 s; only the 52
    /// concurrent requests would (and the run would last about 3 s). So the window shrinks to 10 s
    /// and the request limit to 600: 2,200 requests need four windows, which the limits let finish
    /// in no less than 30 s, and the run lands in 20 to 60 s. Concurrency stays at Dataverse's 52
    /// and execution time at its ratio to the window (4 s per second: 40,000 ms in 10 s). With
    /// 20 ms per request, 200 environments coming back together when a window frees overlap past
    /// 52, so the concurrency limit binds at each window's start; execution time does not bind.
    fn default() -> Self {
        Self {
            requests: 600,
            window_secs: 10,
            concurrent: 52,
            execution_ms: 40_000,
            simulated_ms: 20,
        }
    }
}

impl Scale {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name}: not a number"))
            })
        }
        let d = Self::default();
        Self {
            requests: var("LIMITS_REQUESTS", d.requests),
            window_secs: var("LIMITS_WINDOW_SECS", d.window_secs),
            concurrent: var("LIMITS_CONCURRENT", d.concurrent),
            execution_ms: var("LIMITS_EXECUTION_MS", d.execution_ms),
            simulated_ms: var("LIMITS_SIMULATED_MS", d.simulated_ms),
        }
    }
}

/// The least wall time the limits allow for `requests` requests, starting with an empty window.
///
/// At most [`per_window`] requests fit in any window, so request `i` (from 0)
/// can start no earlier than `floor(i / per_window)` windows in; the last window's requests then
/// run at most `concurrent` at a time. Concurrency alone needs `ceil(requests / concurrent)`
/// execution times. The larger of the two.
fn allowed(requests: u64, scale: &Scale) -> Duration {
    let per_window = per_window(scale);
    let concurrent = u64::from(scale.concurrent);
    let windows = requests.saturating_sub(1) / per_window;
    let last = requests - windows * per_window;
    let by_window = Duration::from_secs(windows * scale.window_secs)
        + Duration::from_millis(last.div_ceil(concurrent) * scale.simulated_ms);
    let by_concurrency = Duration::from_millis(requests.div_ceil(concurrent) * scale.simulated_ms);
    by_window.max(by_concurrency)
}

/// The most requests any window can hold: the request limit, or fewer when the execution-time
/// limit allows fewer requests of the simulated length.
fn per_window(scale: &Scale) -> u64 {
    scale
        .execution_ms
        .checked_div(scale.simulated_ms)
        .map_or(u64::from(scale.requests), |n| {
            n.clamp(1, u64::from(scale.requests))
        })
}

/// What one run measured.
struct Run {
    summary: Summary,
    wall: Duration,
    reinvoked: usize,
    /// Invocations that failed for good (after `MAX_ATTEMPTS`, or with another error).
    failed: Vec<String>,
    /// Rows that hold their new value, of `ROWS`.
    updated: usize,
}

/// Every account's `name`, by id, read with the limits off.
async fn names(emulator: &Emulator) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let mut path = "accounts?$select=accountid,name".to_owned();
    loop {
        let (status, page) = emulator.api_get(&path).await.unwrap();
        assert_eq!(status, 200, "{page}");
        for row in page["value"].as_array().unwrap() {
            names.insert(
                row["accountid"].as_str().unwrap().to_owned(),
                row["name"].as_str().unwrap_or_default().to_owned(),
            );
        }
        match page["@odata.nextLink"]
            .as_str()
            .and_then(|next| next.split_once("/api/data/v9.2/"))
        {
            Some((_, next)) => next.clone_into(&mut path),
            None => return names,
        }
    }
}

async fn run(label: &str, scale: &Scale, limits_on: bool) -> Run {
    let simulated = scale.simulated_ms.to_string();
    let emulator = Emulator::start(&["--seed", "none", "--simulated-execution-ms", &simulated])
        .await
        .unwrap();
    emulator
        .post("tables/account/generate", &json!({"count": ROWS}))
        .await
        .unwrap();
    let ids: Vec<String> = names(&emulator).await.into_keys().collect();
    assert_eq!(ids.len(), ROWS);
    let files = LocalFiles::new("bench-limits", &emulator).unwrap();
    let environment = [
        files.secrets_env(),
        ("RUST_LOG".to_owned(), "error".to_owned()),
    ];
    let mut pool = Pool::start("update-record", &environment, ENVIRONMENTS)
        .await
        .unwrap();
    let expected: HashMap<String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("{label} row {i}")))
        .collect();
    let payloads = ids
        .iter()
        .map(|id| {
            json!({"dataset": "contoso", "table": "accounts", "id": id, "item": {"name": expected[id]}})
        })
        .collect();
    if limits_on {
        let change = ProtectionChange {
            enabled: Some(true),
            requests: Some(scale.requests),
            execution_ms: Some(scale.execution_ms),
            concurrent: Some(scale.concurrent),
            window_secs: Some(scale.window_secs),
            simulated_execution_ms: None,
        };
        emulator
            .client()
            .set_service_protection(&change)
            .await
            .unwrap();
    }
    emulator.clear_requests().await.unwrap();

    let started = Instant::now();
    let work = pool.run(payloads, TIMEOUT, &["Crm.Throttled"], MAX_ATTEMPTS);
    let Ok(outcome) = tokio::time::timeout(GIVE_UP, work).await else {
        let summary = emulator.client().request_summary().await.unwrap();
        panic!("{label}: not done after {GIVE_UP:?}; the emulator saw {summary:?}");
    };
    let wall = started.elapsed();
    let summary = emulator.client().request_summary().await.unwrap();

    let off = ProtectionChange {
        enabled: Some(false),
        ..ProtectionChange::default()
    };
    emulator
        .client()
        .set_service_protection(&off)
        .await
        .unwrap();
    let now = names(&emulator).await;
    let updated = expected
        .iter()
        .filter(|(id, name)| now.get(*id) == Some(*name))
        .count();
    let failed = outcome
        .outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(ToString::to_string))
        .collect();
    Run {
        summary,
        wall,
        reinvoked: outcome.reinvoked,
        failed,
        updated,
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

/// The shapes `make bench` runs, unless `LIMITS_*` asks for one of its own.
fn shapes() -> Vec<(&'static str, Scale)> {
    if [
        "LIMITS_REQUESTS",
        "LIMITS_WINDOW_SECS",
        "LIMITS_CONCURRENT",
        "LIMITS_EXECUTION_MS",
        "LIMITS_SIMULATED_MS",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some())
    {
        return vec![("LIMITS_*", Scale::from_env())];
    }
    let four_windows = Scale::default();
    vec![
        // Dataverse's own numbers: only the concurrency limit can bind on 2,200 requests.
        (
            "Dataverse's",
            Scale {
                requests: 6_000,
                window_secs: 300,
                concurrent: 52,
                execution_ms: 1_200_000,
                ..four_windows
            },
        ),
        // The request count binds once: 1,200 fit in the first window, the rest in the second.
        (
            "one boundary",
            Scale {
                requests: 1_200,
                execution_ms: 80_000,
                ..four_windows
            },
        ),
        ("four windows", four_windows),
    ]
}

#[tokio::main]
async fn main() {
    let shapes = shapes();
    // Every shape shares the simulated execution time, so one baseline serves them all.
    let baseline = run("baseline", &shapes[0].1, false).await;
    let minimum = baseline.summary.web_api as u64;
    let mut limited = Vec::new();
    for (name, scale) in &shapes {
        limited.push(run(name, scale, true).await);
    }

    println!(
        "update-record, {ENVIRONMENTS} environments, {ROWS} rows, {} ms of execution per request (release build)",
        shapes[0].1.simulated_ms
    );
    println!(
        "baseline, limits off: {minimum} requests (the minimum: one table lookup per environment, one PATCH per row), {:.1} s, {}/{ROWS} rows updated",
        baseline.wall.as_secs_f64(),
        baseline.updated
    );
    for ((name, scale), run) in shapes.iter().zip(&limited) {
        let allowed = allowed(minimum, scale);
        let by = |limit: &str| run.summary.throttled.get(limit).copied().unwrap_or(0);
        // Each environment learns that a window is full only from a 429 of its own: a fleet of
        // independent environments cannot send fewer than this.
        let boundaries = minimum.saturating_sub(1) / per_window(scale);
        let floor = ratio(minimum + boundaries * ENVIRONMENTS as u64, minimum);
        println!();
        println!(
            "limits on, {name}: {} requests and {} ms of execution per {} s window, {} at once, per user",
            scale.requests, scale.execution_ms, scale.window_secs, scale.concurrent
        );
        let row = |label: &str, value: String| println!("  {label:<48} {value:>10}");
        row("Dataverse requests", run.summary.web_api.to_string());
        row(
            "429 answers: by requests / execution time / concurrency",
            format!(
                "{} / {} / {}",
                by("requests"),
                by("execution_time"),
                by("concurrency")
            ),
        );
        row(
            "re-invocations after Crm.Throttled",
            run.reinvoked.to_string(),
        );
        row(
            "requests ÷ minimum (target ≤ 1.1)",
            format!("{:.2}", ratio(run.summary.web_api as u64, minimum)),
        );
        row(
            "  least any fleet of environments can reach",
            format!("{floor:.2}"),
        );
        row(
            "wall time ÷ what the limits allow (target ≤ 1.2)",
            format!(
                "{:.1} ÷ {:.1} = {:.2}",
                run.wall.as_secs_f64(),
                allowed.as_secs_f64(),
                run.wall.as_secs_f64() / allowed.as_secs_f64()
            ),
        );
        row(
            "rows holding their new value",
            format!("{}/{ROWS}", run.updated),
        );
    }

    for (label, run) in std::iter::once(("limits off", &baseline))
        .chain(shapes.iter().map(|(name, _)| *name).zip(&limited))
    {
        assert!(
            run.failed.is_empty() && run.updated == ROWS,
            "{label}: {} rows lost; {} invocations failed for good, first: {:?}",
            ROWS - run.updated,
            run.failed.len(),
            run.failed.first()
        );
    }
}
