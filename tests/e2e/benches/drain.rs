//! How fast `when-record-created` drains a backlog, and how much memory it needs doing so.
//!
//! Run with `make bench` (release binaries). A backlog of N rows is generated in the emulator, the
//! trigger starts from before it (`since`), and polls until a poll fires nothing. Peak RSS is the
//! function process's `VmHWM`; a flat figure across backlog sizes shows pages are streamed, not
//! collected.

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use e2e_tests::{Emulator, Function, LocalFiles};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// UTC to the whole second (`2025-01-31T23:59:59Z`): the payload shape the recorded figures were
/// measured with.
fn rfc3339(secs_ago: u64) -> String {
    (OffsetDateTime::now_utc() - Duration::from_secs(secs_ago))
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn drain(backlog: usize, top: usize) -> (usize, usize, Duration, u64) {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    emulator
        .post(
            "tables/account/generate",
            &json!({"count": backlog, "createdon": rfc3339(7200)}),
        )
        .await
        .unwrap();
    let files = LocalFiles::new("bench-drain", &emulator).unwrap();
    let mut environment = files.env();
    environment.push(("RUST_LOG".into(), "warn".into()));
    let mut function = Function::start("when-record-created", &environment)
        .await
        .unwrap();
    let payload =
        json!({"dataset": "contoso", "table": "accounts", "since": rfc3339(10_800), "$top": top});
    let started = Instant::now();
    let (mut fired, mut polls) = (0, 0);
    loop {
        let answer = function
            .invoke_within(&payload, Duration::from_secs(120))
            .await
            .unwrap();
        let n = answer["value"].as_array().map_or(0, Vec::len);
        if n == 0 {
            break;
        }
        fired += n;
        polls += 1;
    }
    let elapsed = started.elapsed();
    let rss = peak_rss_kib(function.pid().unwrap_or(0));
    (fired, polls, elapsed, rss)
}

#[tokio::main]
async fn main() {
    println!("Draining a backlog with when-record-created (file cursor, file sink, release build)");
    println!(
        "{:>8} {:>6} {:>7} {:>10} {:>10} {:>13}",
        "backlog", "$top", "polls", "seconds", "rows/s", "peak RSS MiB"
    );
    for (backlog, top) in [(10_000, 256), (100_000, 256), (100_000, 5_000)] {
        let (fired, polls, elapsed, rss) = drain(backlog, top).await;
        assert_eq!(fired, backlog, "every row fired once");
        #[allow(clippy::cast_precision_loss)]
        let rate = fired as f64 / elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let mib = rss as f64 / 1024.0;
        println!(
            "{backlog:>8} {top:>6} {polls:>7} {:>10.1} {rate:>10.0} {mib:>13.1}",
            elapsed.as_secs_f64()
        );
    }
}
