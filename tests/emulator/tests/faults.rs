//! Throttling and faults injected through `/_emulator/faults`, and the request log.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use dataverse_emulator::client::Fault;
use reqwest::Method;
use serde_json::json;
use support::{Emulator, expect_error};

#[tokio::test]
async fn throttles_with_429_and_retry_after_the_given_number_of_times() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(Fault::status(429).retry_after(7).times(2))
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
        .fault(Fault::status(503).method("POST").path_contains("/contacts"))
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
        .fault(Fault::delay(Duration::from_millis(300)).path_contains("accounts"))
        .await;
    let started = Instant::now();
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    emulator
        .fault(Fault::drop_connection().path_contains("leads"))
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
        .fault(Fault::status(503).path_contains("oauth2").times(5))
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
    emulator.clear_requests().await;
    emulator.fault(Fault::status(429).retry_after(1)).await;
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

#[tokio::test]
async fn drop_answer_carries_the_request_out_then_closes_the_connection_unanswered() {
    let emulator = Emulator::empty().await;
    emulator.clear_requests().await;
    emulator
        .fault(
            Fault::drop_answer()
                .method("POST")
                .path_contains("/accounts"),
        )
        .await;
    let lost = emulator
        .request(Method::POST, "accounts")
        .json(&json!({"name": "landed"}))
        .send()
        .await
        .expect_err("the answer was dropped");
    assert!(!lost.is_connect(), "the request was sent: {lost:?}");

    // The create happened, once, and the fault is used up.
    let rows = emulator.get_json("accounts?$select=name").await;
    assert_eq!(rows["value"].as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows["value"][0]["name"], "landed");
    let log = emulator.requests().await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["status"], 204, "the status it would have had");
    assert_eq!(log[0]["fault"], true);
    assert_eq!(log[0]["answer_dropped"], true);
    assert_eq!(
        (
            &log[1]["status"],
            &log[1]["fault"],
            &log[1]["answer_dropped"]
        ),
        (&json!(200), &json!(false), &json!(false))
    );
}

#[tokio::test]
async fn drop_answer_keeps_a_failure_it_would_have_answered_and_honours_times() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(Fault::drop_answer().method("DELETE").times(2))
        .await;
    let id = "8e451703-c686-e711-80e5-00155db19e6d";
    for _ in 0..2 {
        let sent = emulator
            .request(Method::DELETE, &format!("accounts({id})"))
            .send()
            .await;
        assert!(sent.is_err(), "{sent:?}");
    }
    let third = emulator
        .request(Method::DELETE, &format!("accounts({id})"))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 404);
    let statuses: Vec<_> = emulator
        .requests()
        .await
        .iter()
        .filter(|e| e["method"] == "DELETE")
        .map(|e| (e["status"].as_u64().unwrap(), e["answer_dropped"] == true))
        .collect();
    assert_eq!(statuses, [(404, true), (404, true), (404, false)]);
}

#[tokio::test]
async fn refuses_drop_answer_with_an_option_that_stops_the_request_first() {
    let emulator = Emulator::empty().await;
    for spec in [
        json!({"drop_answer": true, "status": 503}),
        json!({"drop_answer": true, "drop_connection": true}),
    ] {
        let response = emulator.control(Method::POST, "faults", spec.clone()).await;
        assert_eq!(response.status(), 400, "{spec}");
    }
    emulator
        .fault(Fault::drop_answer().and_delay(Duration::from_millis(10)))
        .await;
}
