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

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`, in clock ticks of
/// 10 ms (Linux's `USER_HZ` is 100 on every architecture Lambda runs).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: count fields after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The emulator's raw paging rate for the same rows: the trigger's filter on creation time and its
/// order, all columns, the largest page size, each page read and split into rows, nothing more.
async fn raw_rate(emulator: &Emulator, rows: usize, since: &str) -> f64 {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        value: Vec<&'a serde_json::value::RawValue>,
        #[serde(rename = "@odata.nextLink")]
        next: Option<String>,
    }
    let client = emulator.client();
    let token = client
        .access_token("local-client", "local-secret")
        .await
        .unwrap();
    let started = Instant::now();
    let mut url = Some(client.web_api(&format!(
        "accounts?$filter=createdon%20ge%20{since}&$orderby=createdon%20asc,accountid%20asc"
    )));
    let mut seen = 0;
    while let Some(next) = url.take() {
        let body = client
            .http()
            .get(&next)
            .bearer_auth(&token)
            .header("prefer", "odata.maxpagesize=5000")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let page: Page<'_> = serde_json::from_slice(&body).unwrap();
        seen += page.value.len();
        url = page.next;
    }
    assert_eq!(seen, rows, "the raw read saw every row");
    #[allow(clippy::cast_precision_loss)]
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    rate
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    value: Vec<&'a serde_json::value::RawValue>,
}

struct Drained {
    fired: usize,
    polls: usize,
    elapsed: Duration,
    rss_kib: u64,
    cpu: Duration,
    raw_rate: f64,
}

async fn drain(backlog: usize, top: usize) -> Drained {
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
    let since = rfc3339(10_800);
    let payload = json!({"dataset": "contoso", "table": "accounts", "since": since, "$top": top});
    let request = bytes::Bytes::from(serde_json::to_vec(&payload).unwrap());
    let started = Instant::now();
    let mut polls = 0;
    loop {
        let answer = function
            .invoke_raw(request.clone(), Duration::from_secs(120))
            .await
            .unwrap();
        // A Lambda runtime passes the answer on without reading it, and parsing 4 MB of rows here
        // would charge the harness's work to the drain: only a short answer, the empty one that ends
        // the drain, is read. The events file counts what fired, after the clock stops.
        if answer.len() < 1024
            && serde_json::from_slice::<Answer<'_>>(&answer)
                .unwrap()
                .value
                .is_empty()
        {
            break;
        }
        polls += 1;
    }
    let elapsed = started.elapsed();
    let fired = std::fs::read_to_string(files.events())
        .unwrap()
        .lines()
        .count();
    let pid = function.pid().unwrap_or(0);
    let (rss_kib, cpu) = (peak_rss_kib(pid), cpu_time(pid));
    // Measured right after, on the same emulator and rows: the baseline the drain is compared with.
    let raw_rate = raw_rate(&emulator, backlog, &since).await;
    Drained {
        fired,
        polls,
        elapsed,
        rss_kib,
        cpu,
        raw_rate,
    }
}

#[tokio::main]
async fn main() {
    println!("Draining a backlog with when-record-created (file cursor, file sink, release build)");
    println!(
        "{:>8} {:>6} {:>6} {:>8} {:>9} {:>11} {:>7} {:>10} {:>9}",
        "backlog",
        "$top",
        "polls",
        "seconds",
        "rows/s",
        "raw rows/s",
        "ratio",
        "CPU µs/row",
        "RSS MiB"
    );
    for (backlog, top) in [(10_000, 256), (100_000, 256), (100_000, 5_000)] {
        let d = drain(backlog, top).await;
        assert_eq!(d.fired, backlog, "every row fired once");
        #[allow(clippy::cast_precision_loss)]
        let (rate, cpu_per_row, mib) = (
            d.fired as f64 / d.elapsed.as_secs_f64(),
            d.cpu.as_secs_f64() * 1e6 / d.fired as f64,
            d.rss_kib as f64 / 1024.0,
        );
        println!(
            "{backlog:>8} {top:>6} {:>6} {:>8.2} {rate:>9.0} {:>11.0} {:>6.2}x {cpu_per_row:>10.1} {mib:>9.1}",
            d.polls,
            d.elapsed.as_secs_f64(),
            d.raw_rate,
            rate / d.raw_rate,
        );
    }
}
