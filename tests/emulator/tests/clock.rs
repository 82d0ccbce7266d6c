//! The emulator's clock, moved through `/_emulator/clock`.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::clock;
use reqwest::Method;
use serde_json::{Value, json};
use support::Emulator;

/// Advances the clock by `secs` (any JSON number) and returns the status and the body.
async fn advance(emulator: &Emulator, secs: Value) -> (u16, Value) {
    let response = emulator
        .control(Method::POST, "clock", json!({"advance_secs": secs}))
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// [`advance`] with the number written out as JSON text, for integers wider than a `Value` holds.
async fn advance_by_text(emulator: &Emulator, secs: &str) -> (u16, Value) {
    let response = emulator
        .http
        .post(format!("{}/_emulator/clock", emulator.url))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"advance_secs": {secs}}}"#))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn refuses_an_advance_past_year_9999_and_keeps_the_clock_where_it_was() {
    let emulator = Emulator::empty().await;
    let (status, before) = advance(&emulator, json!(0)).await;
    assert_eq!(status, 200);
    let before = before["now"].as_str().unwrap().to_owned();
    assert!(before.starts_with("20"), "{before}");

    // 2^62 seconds, twice: once used to leave an unformattable clock, twice to overflow and kill
    // the connection task.
    for _ in 0..2 {
        let (status, body) = advance(&emulator, json!(4_611_686_018_427_387_904_i64)).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("past 9999-12-31T23:59:59Z"), "{error}");
    }
    let (status, after) = advance(&emulator, json!(0)).await;
    assert_eq!(status, 200);
    let after = after["now"].as_str().unwrap();
    assert!(after.starts_with(&before[..4]), "{before} then {after}");
    // The Web API still works with the unchanged clock.
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn answers_every_integer_without_dropping_the_connection() {
    let emulator = Emulator::empty().await;
    for secs in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(i64::MAX - 1),
        json!(-1),
        json!(clock::LATEST_SECS),
    ] {
        let (status, body) = advance(&emulator, secs.clone()).await;
        assert_eq!(status, 400, "{secs}: {body}");
        assert!(body["error"].is_string(), "{secs}: {body}");
    }
    let (status, body) = advance(&emulator, json!(-1)).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("the clock only moves forward"))
    );
    // Wider than the clock's i64: still the clock's own answers.
    let (u64_max, i128_min) = (u64::MAX.to_string(), i128::MIN.to_string());
    for (secs, answer) in [
        (u64_max.as_str(), "past 9999-12-31T23:59:59Z"),
        ("18446744073709551616", "past 9999-12-31T23:59:59Z"),
        ("-9223372036854775809", "the clock only moves forward"),
        (i128_min.as_str(), "the clock only moves forward"),
    ] {
        let (status, body) = advance_by_text(&emulator, secs).await;
        assert_eq!(status, 400, "{secs}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(answer), "{secs}: {error}");
    }
}

#[tokio::test]
async fn can_reach_the_last_representable_second_and_still_format_it() {
    let emulator = Emulator::empty().await;
    let (_, now) = advance(&emulator, json!(0)).await;
    let now = clock::parse_datetime(now["now"].as_str().unwrap()).unwrap();
    // Up to half a minute before the end; the other half minute is more than is left.
    let (status, body) = advance(&emulator, json!(clock::LATEST_SECS - now - 30)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["now"]
            .as_str()
            .unwrap()
            .starts_with("9999-12-31T23:59:"),
        "{body}"
    );
    let (status, body) = advance(&emulator, json!(60)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = advance(&emulator, json!(1)).await;
    assert_eq!(status, 200, "{body}");
    // A token issued now is valid (its expiry lies past the end of time), and timestamps written
    // now still format. Built by hand, not with `Emulator::create`: the row must be written with a
    // token issued after the move.
    let response = emulator
        .http
        .post(emulator.api("accounts"))
        .bearer_auth(emulator.fresh_token().await)
        .header("Prefer", "return=representation")
        .json(&json!({"name": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let row: Value = response.json().await.unwrap();
    assert!(
        row["createdon"]
            .as_str()
            .unwrap()
            .starts_with("9999-12-31T23:59:"),
        "{row}"
    );
}
