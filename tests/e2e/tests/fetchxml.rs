//! `list-records` with `fetchXml`: the query as `FetchXML`, paged with the paging cookie, `$top` and
//! `$skip` keeping their meaning; run as the binary through the Lambda Runtime API against the
//! emulator's `FetchXML`.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

async fn start() -> (Emulator, LocalFiles, Function) {
    let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
    let files = LocalFiles::new("fetchxml", &emulator).unwrap();
    let function = Function::start("list-records", &[files.secrets_env()])
        .await
        .unwrap();
    (emulator, files, function)
}

fn list(fetch_xml: &str, extra: Value) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts", "fetchXml": fetch_xml});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            payload[k] = v;
        }
    }
    payload
}

#[tokio::test]
async fn fetchxml_is_paged_with_the_cookie_and_top_and_skip_keep_their_meaning() {
    let (emulator, _files, mut function) = start().await;
    for name in ["Delta", "Alpha", "Echo", "Charlie", "Bravo"] {
        emulator.create_account(name).await.unwrap();
    }
    let ordered = r#"<fetch><entity name="account"><attribute name="name"/><order attribute="name"/></entity></fetch>"#;
    let answer = function
        .invoke(&list(ordered, json!({"$skip": 1, "$top": 3})))
        .await
        .unwrap();
    let names: Vec<&str> = answer["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bravo", "Charlie", "Delta"], "{answer}");

    // Past one page: 5,000 rows a page, so 5,100 rows take two, joined by the paging cookie.
    emulator.client().generate("account", 5_095).await.unwrap();
    let all = r#"<fetch><entity name="account"><attribute name="accountid"/></entity></fetch>"#;
    let answer = function
        .invoke(&list(all, json!({"$top": 6000})))
        .await
        .unwrap();
    let ids: HashSet<&str> = answer["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["accountid"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        5_100,
        "every row once, none lost at the page break"
    );
    let pages = emulator
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.contains("fetchXml=") && p.contains("paging-cookie"))
        })
        .count();
    assert_eq!(
        pages, 1,
        "the second page asked with the first page's cookie"
    );
}

#[tokio::test]
async fn a_fetchxml_the_function_cannot_page_is_invalid_input_and_sends_nothing() {
    let (emulator, _files, mut function) = start().await;
    let fetch = r#"<fetch><entity name="account"/></fetch>"#;
    let cases = [
        (
            list(
                r#"<fetch page="2"><entity name="account"/></fetch>"#,
                json!({}),
            ),
            "fetchXml: ",
        ),
        (list("<entity name=\"account\"/>", json!({})), "fetchXml: "),
        (list("<fetch><entity", json!({})), "fetchXml: "),
        (list(fetch, json!({"$filter": "name eq 'x'"})), "$filter: "),
        (list(fetch, json!({"$count": true})), "$count: "),
    ];
    emulator.clear_requests().await.unwrap();
    for (payload, part) in cases {
        let (error_type, message) = expect_error(function.invoke(&payload).await, "");
        assert_eq!(error_type, "Crm.InvalidInput", "{payload}: {message}");
        assert!(message.starts_with(part), "{payload}: {message}");
    }
    let fetched = emulator
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.contains("fetchXml")))
        .count();
    assert_eq!(fetched, 0);
}
