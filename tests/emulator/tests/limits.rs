//! The limits the service's HTTP front end puts on URLs, before a request reaches the `OData` layer.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::Fault;
use support::Emulator;

/// A query URL exactly `len` characters long as the client sends it, `http://host:port` included.
/// The padding is leading zeros of a number, so the filter stays valid at any length.
fn url_of_length(emulator: &Emulator, len: usize) -> String {
    let head = emulator.api("accounts?$select=name&$filter=numberofemployees%20ne%20");
    let url = format!("{head}{}1", "0".repeat(len - head.len() - 1));
    assert_eq!(url.len(), len);
    url
}

/// A GET of `url` as is (`Emulator::get` builds the URL itself).
async fn get(emulator: &Emulator, token: &str, url: &str) -> reqwest::Response {
    emulator
        .http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Asserts an HTML refusal from the front end, and returns its body.
async fn expect_front_end_refusal(response: reqwest::Response, status: u16, title: &str) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = response.text().await.unwrap();
    assert!(body.contains(title), "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_err(),
        "not the OData error envelope: {body}"
    );
    body
}

#[tokio::test]
async fn accepts_a_url_of_exactly_32768_characters_counting_scheme_and_host() {
    let emulator = Emulator::empty().await;
    let token = emulator.fresh_token().await;
    let response = get(&emulator, &token, &url_of_length(&emulator, 32_768)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn refuses_a_url_of_32769_characters_with_the_front_ends_414_page_and_logs_it() {
    let emulator = Emulator::empty().await;
    let token = emulator.fresh_token().await;
    emulator.clear_requests().await;
    let url = url_of_length(&emulator, 32_769);
    let body = expect_front_end_refusal(
        get(&emulator, &token, &url).await,
        414,
        "Bad Request - Request URL Too Long",
    )
    .await;
    assert!(
        body.contains("HTTP Error 414. The request URL is too long."),
        "{body}"
    );
    let log = emulator.requests().await;
    assert_eq!(log.len(), 1, "one request logged");
    assert_eq!(log[0]["status"], 414);
    assert_eq!(log[0]["fault"], false);
    assert!(
        log[0]["path"].as_str().unwrap() == &url[emulator.url.len()..],
        "the path and query as received"
    );
}

#[tokio::test]
async fn refuses_a_web_api_path_segment_over_260_characters_as_an_invalid_url() {
    let emulator = Emulator::empty().await;
    emulator.clear_requests().await;
    // 260 characters pass the front end and reach the OData layer, which knows no such set.
    let at_limit = emulator.get("a".repeat(260)).await;
    assert_eq!(at_limit.status(), 404);
    let envelope: serde_json::Value = at_limit.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "0x8006088a");

    // One character over: `accounts(` and `)` around 251, a segment of 261.
    let over = format!("accounts({})", "a".repeat(251));
    assert_eq!(over.len(), 261);
    let over = emulator.get(over).await;
    let body = expect_front_end_refusal(over, 400, "Bad Request - Invalid URL").await;
    assert!(
        body.contains("HTTP Error 400. The request URL is invalid."),
        "{body}"
    );
    let statuses: Vec<u64> = emulator
        .requests()
        .await
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [404, 400]);
}

#[tokio::test]
async fn refuses_long_urls_before_any_fault_can_match_them() {
    let emulator = Emulator::empty().await;
    emulator
        .fault(Fault::status(503).path_contains("accounts"))
        .await;
    let token = emulator.fresh_token().await;
    let url = url_of_length(&emulator, 40_000);
    assert_eq!(get(&emulator, &token, &url).await.status(), 414);
    // The fault is still armed for the next request that reaches the service.
    assert_eq!(emulator.get("accounts").await.status(), 503);
}

#[tokio::test]
async fn refuses_a_long_url_without_waiting_for_the_body_and_logs_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let emulator = Emulator::empty().await;
    emulator.clear_requests().await;
    let url = url_of_length(&emulator, 32_769);
    let host = emulator.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    // A megabyte of body announced and never sent: an emulator that read the body before looking
    // at the URL would wait for it, and never answer. The timeout below only keeps such a failure
    // from hanging the suite; it measures nothing (the answer comes at once, or never).
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
        &url[emulator.url.len()..]
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");

    let log = emulator.requests().await;
    assert_eq!(log.len(), 1, "one request logged");
    assert_eq!(
        (&log[0]["method"], &log[0]["status"]),
        (&"POST".into(), &414.into())
    );
}
