//! The emulator's clock, moved through `/_emulator/clock`.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::clock;
use reqwest::Method;
use serde_json::{Value, json};
use support::Emulator;

/// 9999-12-31T23:59:59Z, the last second Dataverse's date-times (and the emulator) can hold.
const LATEST: i64 = 253_402_300_799;

/// Advances the clock by `secs` (any JSON number) and returns the status and the body.
async fn advance(emulator: &Emulator, secs: Value) -> (u16, Value) {
    let response = emulator
        .control(Method::POST, "clock", json!({"advance_secs": secs}))
        .await;
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
        json!(253_402_300_799_i64),
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
}

#[tokio::test]
async fn can_reach_the_last_representable_second_and_still_format_it() {
    let emulator = Emulator::empty().await;
    let (_, now) = advance(&emulator, json!(0)).await;
    let now = clock::parse_datetime(now["now"].as_str().unwrap()).unwrap();
    // Up to half a minute before the end; the other half minute is more than is left.
    let (status, body) = advance(&emulator, json!(LATEST - now - 30)).await;
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
    // now still format.
    let row: Value = emulator
        .http
        .post(emulator.api("accounts"))
        .bearer_auth(emulator.fresh_token().await)
        .header("Prefer", "return=representation")
        .json(&json!({"name": "late"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        row["createdon"]
            .as_str()
            .unwrap()
            .starts_with("9999-12-31T23:59:"),
        "{row}"
    );
}
