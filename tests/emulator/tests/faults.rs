//! Throttling and faults injected through `/_emulator/faults`, and the request log.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{Emulator, expect_error};

#[tokio::test]
async fn throttles_with_429_and_retry_after_the_given_number_of_times() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(json!({"status": 429, "retry_after": 7, "times": 2}))
        .await;
    for _ in 0..2 {
        let response = emulator.get("accounts").await;
        assert_eq!(response.headers()["retry-after"], "7");
        expect_error(
            response,
            429,
            "0x80072322",
            "Number of requests exceeded the limit of 6000",
        )
        .await;
    }
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn matches_faults_by_method_and_path() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(json!({"status": 503, "method": "POST", "path_contains": "/contacts"}))
        .await;
    assert_eq!(emulator.get("contacts").await.status(), 200, "wrong method");
    let other_path = emulator
        .request(Method::POST, "accounts")
        .json(&json!({"name": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_path.status(), 204, "wrong path");
    let hit = emulator
        .request(Method::POST, "contacts")
        .json(&json!({"lastname": "a"}))
        .send()
        .await
        .unwrap();
    expect_error(hit, 503, "0x80040216", "temporarily unavailable").await;
    let body = emulator.get_json("contacts").await;
    assert_eq!(
        body["value"],
        json!([]),
        "the faulted create did not happen"
    );
}

#[tokio::test]
async fn delays_and_drops_connections_on_request() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(json!({"delay_ms": 300, "path_contains": "accounts"}))
        .await;
    let started = Instant::now();
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    emulator
        .fault(json!({"drop_connection": true, "path_contains": "leads"}))
        .await;
    let dropped = emulator.request(Method::GET, "leads").send().await;
    let error = dropped.expect_err("the connection was dropped");
    assert!(
        error.is_request() || error.is_connect() || error.is_body(),
        "{error:?}"
    );
    assert_eq!(emulator.get("leads").await.status(), 200);
}

#[tokio::test]
async fn faults_the_token_endpoint_too_and_clears_on_delete() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(json!({"status": 503, "path_contains": "oauth2", "times": 5}))
        .await;
    let response = emulator
        .token_response(&[("grant_type", "client_credentials")])
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        emulator
            .control(Method::DELETE, "faults", json!(null))
            .await
            .status(),
        204
    );
    emulator.fresh_token().await;
}

#[tokio::test]
async fn logs_every_request_with_its_status() {
    let emulator = Emulator::empty().await;
    emulator
        .control(Method::DELETE, "requests", json!(null))
        .await;
    emulator
        .fault(json!({"status": 429, "retry_after": 1}))
        .await;
    emulator.get("accounts?$top=1").await;
    emulator.get("accounts?$top=1").await;
    emulator
        .request(
            Method::PATCH,
            "accounts(8e451703-c686-e711-80e5-00155db19e6d)",
        )
        .header("If-Match", "*")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let log = emulator.requests().await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0]["path"], "/api/data/v9.2/accounts?$top=1");
    assert_eq!(
        (log[0]["status"].as_u64(), log[0]["fault"].as_bool()),
        (Some(429), Some(true))
    );
    assert_eq!(
        (log[1]["status"].as_u64(), log[1]["fault"].as_bool()),
        (Some(200), Some(false))
    );
    assert_eq!(log[2]["method"], "PATCH");
    assert_eq!(log[2]["status"], 404);
    assert_eq!(log[2]["if_match"], "*");
}

#[tokio::test]
async fn refuses_meaningless_fault_specs() {
    let emulator = Emulator::empty().await;
    assert_eq!(
        emulator
            .control(Method::POST, "faults", json!({"times": 2}))
            .await
            .status(),
        400
    );
    assert_eq!(
        emulator
            .control(Method::POST, "faults", json!({"status": 429, "bogus": 1}))
            .await
            .status(),
        400
    );
    assert_eq!(
        emulator
            .control(Method::POST, "reset", json!({"seed": "none"}))
            .await
            .status(),
        204
    );
}
