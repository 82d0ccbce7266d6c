//! How long the emulator takes to serve a 5000-row page from a 100,000-row table, over HTTP, as a client
//! sees it (request sent to body read). Run with `make bench` or `cargo bench -p dataverse-emulator`.
//!
//! The emulator must never be the bottleneck of our own benchmarks; the target is well under 100 ms.

// A benchmark program: any failure should stop it loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ROWS: usize = 100_000;
const SAMPLES: usize = 25;

struct Scenario {
    name: &'static str,
    query: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "first page, 3 columns",
        query: "$select=name,numberofemployees,address1_city",
    },
    Scenario {
        name: "first page, all columns",
        query: "",
    },
    Scenario {
        name: "filtered (~50% match)",
        query: "$select=name&$filter=numberofemployees%20lt%2025000",
    },
    Scenario {
        name: "ordered by a text column",
        query: "$select=name&$orderby=address1_city,name%20desc",
    },
];

#[tokio::main]
async fn main() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataverse-emulator"))
        .args(["--seed", "none"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    let http = reqwest::Client::new();

    let started = Instant::now();
    let generated = http
        .post(format!("{url}/_emulator/tables/account/generate"))
        .json(&json!({"count": ROWS}))
        .send()
        .await
        .expect("generate");
    assert_eq!(generated.status(), 201);
    eprintln!("generated {ROWS} accounts in {:?}", started.elapsed());

    let token: Value = http
        .post(format!("{url}/bench/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", &format!("{url}/.default")),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = token["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    println!(
        "5000-row pages from a {ROWS}-row table, {SAMPLES} samples each (request to last byte)"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>10}",
        "scenario", "min ms", "median", "p95", "body KiB"
    );
    for scenario in SCENARIOS {
        let page_url = format!("{url}/api/data/v9.2/accounts?{}", scenario.query);
        let mut times = Vec::with_capacity(SAMPLES);
        let mut size = 0;
        for i in 0..=SAMPLES {
            let t = Instant::now();
            let body = http
                .get(&page_url)
                .bearer_auth(&token)
                .header("Prefer", "odata.maxpagesize=5000")
                .send()
                .await
                .expect("page")
                .bytes()
                .await
                .expect("body");
            let elapsed = t.elapsed();
            let page: Value = serde_json::from_slice(&body).expect("page json");
            assert_eq!(page["value"].as_array().map(Vec::len), Some(5000));
            size = body.len();
            // The first request warms the connection and caches; it is not counted.
            if i > 0 {
                times.push(elapsed);
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>9.1} {:>10}",
            scenario.name,
            ms(times[0]),
            ms(times[SAMPLES / 2]),
            ms(times[SAMPLES * 95 / 100]),
            size / 1024
        );
    }

    // Walking the whole table: every page must cost about the same (keyset paging, no offset scans).
    let mut next = Some(format!("{url}/api/data/v9.2/accounts?$select=name"));
    let mut pages = Vec::new();
    while let Some(link) = next {
        let t = Instant::now();
        let page: Value = http
            .get(&link)
            .bearer_auth(&token)
            .header("Prefer", "odata.maxpagesize=5000")
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        pages.push(t.elapsed());
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    let slowest = pages.iter().max().copied().unwrap_or_default();
    println!(
        "walked all {} pages with nextLinks; slowest page {:.1} ms, total {:.0} ms",
        pages.len(),
        slowest.as_secs_f64() * 1000.0,
        pages.iter().sum::<Duration>().as_secs_f64() * 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
