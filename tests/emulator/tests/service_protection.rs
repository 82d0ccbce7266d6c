//! Service protection API limits (`--service-protection`, `/_emulator/service-protection`): each
//! limit answers 429 with its code, message and `Retry-After`; windows slide with the emulator's
//! clock; concurrency counts real overlapping requests; refused requests do not count; off by
//! default.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::{ProtectionChange, ProtectionState};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use support::{Emulator, expect_error};

const REQUESTS_CODE: &str = "0x80072322";
const EXECUTION_CODE: &str = "0x80072321";
const CONCURRENCY_CODE: &str = "0x80072326";

/// The whole number of seconds in `Retry-After`.
fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a whole number of seconds")
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a service-protection refusal: 429, the code, the whole message, and a `Retry-After`
/// within `retry` (inclusive). Returns the `Retry-After`.
async fn expect_throttled(
    response: Response,
    code: &str,
    message: &str,
    retry: std::ops::RangeInclusive<u64>,
) -> u64 {
    let seconds = retry_after(&response);
    assert!(
        retry.contains(&seconds),
        "Retry-After {seconds} not in {retry:?}"
    );
    assert_eq!(
        header(&response, "x-ms-ratelimit-burst-remaining-xrm-requests"),
        None
    );
    let body = expect_error(response, 429, code, message).await;
    assert_eq!(body["error"]["message"], message, "the whole message");
    seconds
}

async fn protection(emulator: &Emulator) -> ProtectionState {
    let response = emulator
        .control(Method::GET, "service-protection", json!(null))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn change(emulator: &Emulator, change: &ProtectionChange) -> Response {
    emulator
        .control(
            Method::POST,
            "service-protection",
            serde_json::to_value(change).unwrap(),
        )
        .await
}

async fn advance(emulator: &Emulator, secs: u64) {
    let response = emulator
        .control(Method::POST, "clock", json!({"advance_secs": secs}))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn off_by_default_even_with_limits_given() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--limit-requests",
        "1",
        "--limit-concurrent",
        "1",
    ])
    .await;
    for _ in 0..5 {
        let response = emulator.get("accounts").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-ms-ratelimit-burst-remaining-xrm-requests"),
            None
        );
    }
    let state = protection(&emulator).await;
    assert!(!state.settings.enabled);
    assert_eq!(state.settings.requests, 1);
    assert!(state.users.is_empty());
}

#[tokio::test]
async fn the_request_count_trips_with_its_code_message_and_retry_after() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "3",
        "--limit-window-secs",
        "60",
    ])
    .await;
    for left in ["2", "1", "0"] {
        let response = emulator.get("accounts").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-ms-ratelimit-burst-remaining-xrm-requests"),
            Some(left)
        );
        assert_eq!(
            header(&response, "x-ms-ratelimit-time-remaining-xrm-requests")
                .map(|v| v.contains('.')),
            Some(true)
        );
    }
    // The first request slides out 60 s after it arrived; a few milliseconds have passed.
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        "Number of requests exceeded the limit of 3 over time window of 60 seconds.",
        55..=60,
    )
    .await;
    // A refused request is not carried out.
    let refused = emulator
        .request(Method::POST, "accounts")
        .json(&json!({"name": "refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    advance(&emulator, 600).await;
    assert_eq!(emulator.get_json("accounts").await["value"], json!([]));
}

#[tokio::test]
async fn the_window_slides_with_the_emulator_clock() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "3",
        "--limit-window-secs",
        "60",
    ])
    .await;
    for _ in 0..3 {
        assert_eq!(emulator.get("accounts").await.status(), 200);
    }
    let message = "Number of requests exceeded the limit of 3 over time window of 60 seconds.";
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        message,
        55..=60,
    )
    .await;
    // Halfway through the window the wait is halved.
    advance(&emulator, 30).await;
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        message,
        25..=30,
    )
    .await;
    // Past it, the three have slid out; the refusals never counted.
    advance(&emulator, 31).await;
    let response = emulator.get("accounts").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-ms-ratelimit-burst-remaining-xrm-requests"),
        Some("2")
    );
}

#[tokio::test]
async fn refused_requests_do_not_count_and_retry_after_points_at_the_oldest() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "2",
        "--limit-window-secs",
        "100",
    ])
    .await;
    let message = "Number of requests exceeded the limit of 2 over time window of 100 seconds.";
    assert_eq!(emulator.get("accounts").await.status(), 200);
    advance(&emulator, 20).await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
    advance(&emulator, 30).await;
    // Admitted once the first slides out, at 100 s.
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        message,
        45..=50,
    )
    .await;
    advance(&emulator, 10).await;
    // Sent anyway, and refused: the time has not moved.
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        message,
        35..=40,
    )
    .await;
    advance(&emulator, 41).await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
    // Full again until the second (at 20 s) slides out at 120 s.
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        message,
        15..=19,
    )
    .await;
    let state = protection(&emulator).await;
    assert_eq!(state.users["local-client"].requests, 2, "{state:?}");
}

#[tokio::test]
async fn execution_time_trips_once_recorded_and_the_simulated_time_is_spent() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-execution-ms",
        "300",
        "--limit-window-secs",
        "60",
        "--simulated-execution-ms",
        "200",
    ])
    .await;
    let started = std::time::Instant::now();
    let first = emulator.get("accounts").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "x-ms-ratelimit-time-remaining-xrm-requests"),
        Some("0.30")
    );
    // 200 ms recorded, under the limit: admitted, and it overshoots.
    let second = emulator.get("accounts").await;
    assert_eq!(second.status(), 200);
    let left: f64 = header(&second, "x-ms-ratelimit-time-remaining-xrm-requests")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left <= 0.1, "{left}");
    expect_throttled(
        emulator.get("accounts").await,
        EXECUTION_CODE,
        "Combined execution time of incoming requests exceeded limit of 300 milliseconds over time window of 60 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
        50..=60,
    )
    .await;
    let state = protection(&emulator).await;
    assert!(state.users["local-client"].execution_ms >= 400, "{state:?}");
    // Once the first request's time has slid out, the rest is under the limit.
    advance(&emulator, 60).await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn concurrency_trips_on_requests_really_in_flight() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-concurrent",
        "2",
        "--simulated-execution-ms",
        "3000",
    ])
    .await;
    let slow = || {
        let request = emulator.request(Method::GET, "accounts");
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    let (a, b) = (slow(), slow());
    // Wait, through the control API, until both are in flight. They are held 3 s, so this sees
    // them long before they end; a count that never reaches 2 fails here rather than hanging.
    let mut in_flight = 0;
    for _ in 0..1_000 {
        let state = protection(&emulator).await;
        in_flight = state.users.get("local-client").map_or(0, |u| u.in_flight);
        if in_flight == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(in_flight, 2, "both slow requests are counted in flight");
    expect_throttled(
        emulator.get("accounts").await,
        CONCURRENCY_CODE,
        "Number of concurrent requests exceeded the limit of 2.",
        3..=3,
    )
    .await;
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (200, 200));
    assert_eq!(
        protection(&emulator).await.users["local-client"].in_flight,
        0
    );
    // One at a time never trips it.
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn the_control_api_turns_it_on_and_off_and_changes_the_numbers() {
    let emulator = Emulator::empty().await;
    let response = change(
        &emulator,
        &ProtectionChange {
            enabled: Some(true),
            requests: Some(1),
            window_secs: Some(10),
            ..ProtectionChange::default()
        },
    )
    .await;
    assert_eq!(response.status(), 200);
    let state: ProtectionState = response.json().await.unwrap();
    assert!(state.settings.enabled);
    assert_eq!(
        (
            state.settings.requests,
            state.settings.window_secs,
            state.settings.concurrent
        ),
        (1, 10, 52)
    );
    assert_eq!(emulator.get("accounts").await.status(), 200);
    expect_throttled(
        emulator.get("accounts").await,
        REQUESTS_CODE,
        "Number of requests exceeded the limit of 1 over time window of 10 seconds.",
        9..=10,
    )
    .await;
    assert_eq!(
        protection(&emulator).await.users["local-client"].requests,
        1
    );

    let off = ProtectionChange {
        enabled: Some(false),
        ..ProtectionChange::default()
    };
    assert_eq!(change(&emulator, &off).await.status(), 200);
    for _ in 0..3 {
        assert_eq!(emulator.get("accounts").await.status(), 200);
    }
    // Turned on again, the window starts empty.
    let on = ProtectionChange {
        enabled: Some(true),
        ..ProtectionChange::default()
    };
    assert_eq!(change(&emulator, &on).await.status(), 200);
    assert_eq!(emulator.get("accounts").await.status(), 200);

    for (body, field) in [
        (json!({"requests": 0}), "requests"),
        (json!({"window_secs": 86_401}), "window_secs"),
        (json!({"concurrent": 0}), "concurrent"),
        (
            json!({"simulated_execution_ms": 600_001}),
            "simulated_execution_ms",
        ),
        (json!({"request": 5}), "request"),
    ] {
        let response = emulator
            .control(Method::POST, "service-protection", body)
            .await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains(field), "{error}");
    }
    assert_eq!(
        protection(&emulator).await.settings.requests,
        1,
        "unchanged"
    );
}

#[tokio::test]
async fn counts_only_web_api_requests_of_a_valid_token_per_user() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "1",
    ])
    .await;
    // Token requests go to Entra ID, and a request without a valid token has no user.
    for _ in 0..3 {
        emulator.fresh_token().await;
    }
    let anonymous = emulator
        .http
        .get(emulator.api("accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert_eq!(emulator.get("accounts").await.status(), 429);

    // Another app registration is another application user, with a window of its own.
    let other = emulator
        .control(
            Method::POST,
            "credentials",
            json!({"client_id": "other-client", "client_secret": "other-secret"}),
        )
        .await;
    assert_eq!(other.status(), 204);
    let token = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "other-client"),
            ("client_secret", "other-secret"),
            ("scope", &format!("{}/.default", emulator.url)),
        ])
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = emulator
        .http
        .get(emulator.api("accounts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 200);
    // The first user's token still acts as the first user.
    assert_eq!(emulator.get("accounts").await.status(), 429);
}

#[tokio::test]
async fn a_batch_is_one_request() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "2",
    ])
    .await;
    let part = "--batch_T\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET accounts?$top=1 HTTP/1.1\r\n\r\n\r\n";
    let body = format!("{}--batch_T--\r\n", part.repeat(3));
    let batch = emulator
        .request(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=batch_T")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    assert_eq!(
        header(&batch, "x-ms-ratelimit-burst-remaining-xrm-requests"),
        Some("1")
    );
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert_eq!(emulator.get("accounts").await.status(), 429);
}

#[tokio::test]
async fn the_request_log_counts_every_request_by_status_and_limit() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "2",
    ])
    .await;
    emulator.clear_requests().await;
    emulator.fresh_token().await;
    for _ in 0..5 {
        emulator.get("accounts").await;
    }
    emulator.get("nosuchtable").await;
    let log = emulator.requests().await;
    let throttled: Vec<&Value> = log.iter().filter(|e| e["status"] == 429).collect();
    assert_eq!(throttled.len(), 4, "{log:#?}");
    assert!(throttled.iter().all(|e| e["throttled"] == "requests"));
    assert!(
        log.iter()
            .filter(|e| e["status"] == 200)
            .all(|e| e.get("throttled").is_none())
    );

    let summary = emulator
        .control(Method::GET, "requests/summary", json!(null))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        summary,
        json!({
            "web_api": 6,
            "by_status": {"200": 2, "429": 4},
            "token": 1,
            "throttled": {"requests": 4},
        })
    );
}

#[tokio::test]
async fn a_reset_empties_the_windows_and_keeps_the_settings() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--service-protection",
        "--limit-requests",
        "1",
    ])
    .await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert_eq!(emulator.get("accounts").await.status(), 429);
    let reset = emulator
        .control(Method::POST, "reset", json!({"seed": "none"}))
        .await;
    assert_eq!(reset.status(), 204);
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert_eq!(emulator.get("accounts").await.status(), 429);
}
