//! How long a cold `get-record` takes against the emulator: from spawning the process to its answer,
//! with the token fetch, the table lookup and the read included. Run with `make bench`.
//!
//! The same read by a Node peer (`tests/peer`: dynamics-web-api, a client-credentials token, one GET)
//! follows in the same session, as many runs, and the ratio of the medians is printed. The peer is
//! skipped, saying why, without `node` or its packages. Ours run back to back, as this bench has
//! always run them, so that figures stay comparable with earlier ones. (Alternating with the peer
//! adds about 0.4 ms to ours on the 2-core build machine: a 50 MB Node process in between leaves the
//! CPU caches cold.)

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e_tests::{Emulator, Function, LocalFiles};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const RUNS: usize = 20;

/// Each invocation's deadline.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The sample event, read by both.
const EVENT: &str = "functions/get-record/events/get.json";

/// Why the Node peer cannot run here.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("`node` is not on PATH (the peer needs Node.js 20 or newer)")]
    NoNode,
    #[error("tests/peer/node_modules is missing: install it with `npm ci --prefix tests/peer`")]
    NoPackages,
}

/// The Node peer, when it can run here.
struct Peer {
    script: PathBuf,
    /// dynamics-web-api's version, from its installed `package.json`.
    version: String,
}

impl Peer {
    /// The peer, or why it cannot run.
    async fn find(root: &Path) -> Result<Self, Skip> {
        let dir = root.join("tests/peer");
        let node = Command::new("node").arg("--version").output().await;
        if !node.is_ok_and(|out| out.status.success()) {
            return Err(Skip::NoNode);
        }
        let package = dir.join("node_modules/dynamics-web-api/package.json");
        let text = std::fs::read_to_string(&package).map_err(|_| Skip::NoPackages)?;
        let package: Value = serde_json::from_str(&text).unwrap();
        Ok(Self {
            script: dir.join("get-record.js"),
            version: package["version"].as_str().unwrap_or("?").to_owned(),
        })
    }

    /// One cold run: from spawning `node` to the row's line on its output. The process environment
    /// is not inherited, as the function's is not.
    async fn run(&self, credentials: &Path, event: &Path) -> (Duration, Value) {
        let started = Instant::now();
        let mut child = Command::new("node")
            .arg(&self.script)
            .arg(credentials)
            .arg(event)
            .arg("accounts")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap();
        let elapsed = started.elapsed();
        let status = child.wait().await.unwrap();
        assert!(status.success(), "the peer failed: {status}");
        let row = serde_json::from_str(&line.expect("the peer printed nothing")).unwrap();
        (elapsed, row)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_row(label: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{label:<46} {:>8.1} {:>8.1} {:>8.1}",
        ms(times[0]),
        ms(median),
        ms(times[times.len() * 95 / 100])
    );
    median
}

#[tokio::main]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let emulator = Emulator::start(&["--seed", "demo"]).await.unwrap();
    let files = LocalFiles::new("bench-cold", &emulator).unwrap();
    let environment = [
        files.secrets_env(),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    let event = root.join(EVENT);
    let payload = bytes::Bytes::from(std::fs::read(&event).unwrap());
    let peer = Peer::find(&root).await;

    let mut cold = Vec::with_capacity(RUNS);
    let mut warm = Vec::with_capacity(RUNS);
    let mut row = Value::Null;
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut function = Function::start("get-record", &environment).await.unwrap();
        let answer = function.invoke_raw(payload.clone(), TIMEOUT).await.unwrap();
        cold.push(started.elapsed());
        let again = Instant::now();
        function.invoke_raw(payload.clone(), TIMEOUT).await.unwrap();
        warm.push(again.elapsed());
        function.kill().await;
        row = serde_json::from_slice(&answer).unwrap();
    }
    let mut peer_cold = Vec::with_capacity(RUNS);
    if let Ok(peer) = &peer {
        for _ in 0..RUNS {
            let (elapsed, theirs) = peer.run(files.credentials(), &event).await;
            assert_eq!(theirs["accountid"], row["accountid"], "not the same row");
            peer_cold.push(elapsed);
        }
    }

    println!("get-record against the emulator, {RUNS} runs each (release build)");
    println!("{:<46} {:>8} {:>8} {:>8}", "", "min ms", "median", "p95");
    let ours = print_row("ours, cold: spawn to answer, with token", &mut cold);
    print_row("ours, warm: next invocation", &mut warm);
    match &peer {
        Ok(peer) => {
            let theirs = print_row(
                &format!("peer, cold: node, dynamics-web-api {}", peer.version),
                &mut peer_cold,
            );
            let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
            println!(
                "ours ÷ peer, cold medians: {ratio:.4} (1/{:.0})",
                ratio.recip()
            );
        }
        Err(why) => println!("peer skipped: {why}"),
    }
}
