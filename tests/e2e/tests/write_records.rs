//! `write-records`: many rows of one table through `CreateMultiple`, `UpdateMultiple` and
//! `UpsertMultiple`, run as the binary it ships as, through the Lambda Runtime API, against the
//! Dataverse emulator (and moto's S3 for an object of JSON Lines).

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::time::Duration;

use dataverse_emulator::client::Fault;
use e2e_tests::s3_proxy::{S3Answer, S3Call, S3Fault, S3Proxy};
use e2e_tests::{Emulator, Function, LocalFiles, Moto, aws_env, expect_error};
use serde_json::{Value, json};

const BUCKET: &str = "crm-imports";

struct Org {
    emulator: Emulator,
    _files: LocalFiles,
    write: Function,
}

impl Org {
    /// Accounts with an alternate key on `accountnumber`, and `write-records`; with `s3`, moto's
    /// S3 with a bucket, for `input.s3`.
    async fn start(moto: Option<&Moto>) -> Self {
        Self::start_with_s3(moto.map(|m| m.url.as_str())).await
    }

    /// With `s3`, the S3 endpoint the function calls (moto's, or a proxy's in front of it).
    async fn start_with_s3(s3: Option<&str>) -> Self {
        let emulator = Emulator::with_account_key().await.unwrap();
        let files = LocalFiles::new("write-records", &emulator).unwrap();
        let mut environment = s3.map_or_else(Vec::new, |url| aws_env("AWS_ENDPOINT_URL_S3", url));
        environment.push(files.secrets_env());
        let write = Function::start("write-records", &environment)
            .await
            .unwrap();
        Self {
            emulator,
            _files: files,
            write,
        }
    }

    async fn invoke(&mut self, payload: &Value) -> Value {
        match self.write.invoke(payload).await {
            Ok(answer) => answer,
            Err(e) => panic!("write-records failed: {e:?}\n{}", self.write.logs()),
        }
    }

    /// The bulk requests sent since the last call: `(action, status)`.
    async fn bulk_requests(&self) -> Vec<(String, u64)> {
        let log = self.emulator.requests().await.unwrap();
        self.emulator.clear_requests().await.unwrap();
        log.iter()
            .filter_map(|e| {
                let path = e["path"].as_str()?;
                let action = path.split("Microsoft.Dynamics.CRM.").nth(1)?;
                Some((action.to_owned(), e["status"].as_u64()?))
            })
            .collect()
    }

    /// `name` of every account, sorted.
    async fn names(&self) -> Vec<String> {
        let (_, body) = self
            .emulator
            .api_get("accounts?$select=name")
            .await
            .unwrap();
        let mut names: Vec<String> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect()
}

/// `name` of every account, unsorted and with repeats, as a count per name.
async fn name_counts(org: &Org) -> std::collections::BTreeMap<String, usize> {
    let (_, body) = org.emulator.api_get("accounts?$select=name").await.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for row in body["value"].as_array().unwrap() {
        *counts
            .entry(row["name"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

fn base(mode: &str, rows: Value) -> Value {
    let mut payload = json!({"dataset": "contoso", "table": "accounts", "mode": mode});
    payload["rows"] = rows;
    payload
}

#[tokio::test]
async fn creates_updates_and_upserts_and_reports_every_row_in_order() {
    let mut org = Org::start(None).await;
    let created = org
        .invoke(&base(
            "create",
            json!([{"name": "A", "accountnumber": "A-1"}, {"name": "B", "accountnumber": "B-1"}]),
        ))
        .await;
    assert_eq!(statuses(&created), ["created", "created"], "{created}");
    assert_eq!(
        (created["created"].as_u64(), created["failed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(created["table"], "account");
    let ids: Vec<String> = created["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created["rows"][1]["row"], 1);
    assert_eq!(
        org.bulk_requests().await,
        [("CreateMultiple".to_owned(), 200)]
    );

    let updated = org
        .invoke(&base(
            "update",
            json!([{"accountid": ids[0], "name": "A2"}, {"accountid": ids[1], "name": "B2"}]),
        ))
        .await;
    assert_eq!(statuses(&updated), ["updated", "updated"], "{updated}");
    assert_eq!(updated["rows"][0]["id"], ids[0].as_str());
    assert_eq!(org.names().await, ["A2", "B2"]);

    // Upsert by the alternate key: one row exists, one is new.
    let upserted = org
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "mode": "upsert",
            "key": ["accountnumber"],
            "rows": [{"accountnumber": "A-1", "name": "A3"}, {"accountnumber": "C-1", "name": "C"}]}))
        .await;
    assert_eq!(statuses(&upserted), ["upserted", "upserted"], "{upserted}");
    assert_eq!(upserted["rows"][1]["key"], json!({"accountnumber": "C-1"}));
    assert_eq!(org.names().await, ["A3", "B2", "C"]);
    assert_eq!(
        org.bulk_requests().await,
        [
            ("UpdateMultiple".to_owned(), 204),
            ("UpsertMultiple".to_owned(), 204)
        ]
    );
}

#[tokio::test]
async fn takes_a_distributed_map_batch_with_its_batch_input() {
    let mut org = Org::start(None).await;
    let answer = org
        .invoke(&json!({
            "BatchInput": {"dataset": "contoso", "table": "account", "mode": "create"},
            "Items": [{"name": "From a map", "@odata.etag": "W/\"1\""}]
        }))
        .await;
    assert_eq!(statuses(&answer), ["created"], "{answer}");
    assert_eq!(org.names().await, ["From a map"]);
}

#[tokio::test]
async fn a_bad_row_in_a_chunk_is_isolated_and_the_others_are_written() {
    let mut org = Org::start(None).await;
    let rows = json!([
        {"name": "r0"}, {"name": "r1"}, {"name": "r2", "nosuchcolumn": 1}, {"name": "r3"}, {"name": "r4"}
    ]);
    let mut payload = base("create", rows);
    payload["batch_size"] = json!(5);
    let answer = org.invoke(&payload).await;
    assert_eq!(
        statuses(&answer),
        ["created", "created", "failed", "created", "created"],
        "{answer}"
    );
    assert_eq!(
        answer["rows"][2]["error"]["type"], "Crm.BadRequest",
        "{answer}"
    );
    assert_eq!(org.names().await, ["r0", "r1", "r3", "r4"]);
    // All five refused; then [0,2) written, [2,5) refused, [2,3) refused alone, [3,5) written.
    let sent = org.bulk_requests().await;
    let statuses: Vec<u64> = sent.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [400, 200, 400, 400, 200], "{sent:?}");
}

#[tokio::test]
async fn an_update_without_its_key_is_refused_and_not_sent() {
    let mut org = Org::start(None).await;
    let answer = org
        .invoke(&base("update", json!([{"name": "no id"}])))
        .await;
    assert_eq!(statuses(&answer), ["failed"]);
    assert_eq!(answer["rows"][0]["error"]["type"], "Crm.InvalidInput");
    assert!(
        answer["rows"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rows[0]: names no row"),
        "{answer}"
    );
    assert_eq!(org.bulk_requests().await, []);
    // A key named by `key` must be in the row too.
    let answer = org
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "mode": "upsert", "key": ["accountnumber"],
            "rows": [{"name": "no number"}]}))
        .await;
    assert_eq!(statuses(&answer), ["failed"], "{answer}");
    assert_eq!(org.bulk_requests().await, []);
}

#[tokio::test]
async fn sends_chunks_of_batch_size_rows() {
    let mut org = Org::start(None).await;
    let rows: Vec<Value> = (0..7).map(|i| json!({"name": format!("n{i}")})).collect();
    let mut payload = base("create", Value::Array(rows));
    payload["batch_size"] = json!(3);
    let answer = org.invoke(&payload).await;
    assert_eq!(answer["created"], 7, "{answer}");
    // Three requests (3, 3 and 1 rows), each answering its rows' ids.
    let sent = org.bulk_requests().await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(org.names().await.len(), 7);
    let ids: std::collections::BTreeSet<&str> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 7, "{answer}");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_unknown_and_not_sent_again() {
    let mut org = Org::start(None).await;
    org.emulator
        .client()
        .add_fault(&Fault::drop_answer().path_contains("CreateMultiple"))
        .await
        .unwrap();
    let mut payload = base(
        "create",
        json!([{"name": "x"}, {"name": "y"}, {"name": "z"}]),
    );
    payload["batch_size"] = json!(2);
    let answer = org.invoke(&payload).await;
    assert_eq!(
        statuses(&answer),
        ["unknown", "unknown", "created"],
        "{answer}"
    );
    assert_eq!(answer["unknown"], 2);
    // Sent once each: the lost one was carried out, and not repeated.
    let sent = org.bulk_requests().await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(org.names().await, ["x", "y", "z"]);
}

#[tokio::test]
async fn near_the_deadline_it_stops_and_says_where_to_resume() {
    let mut org = Org::start(None).await;
    org.emulator
        .client()
        .add_fault(
            &Fault::delay(Duration::from_millis(2_500))
                .path_contains("CreateMultiple")
                .times(2),
        )
        .await
        .unwrap();
    let mut rows: Vec<Value> = (0..5).map(|i| json!({"name": format!("d{i}")})).collect();
    // Row 3 is refused before sending; after the stop it is not attempted like the others, so
    // that each row is reported once over the invocation and its resume.
    rows[3] = json!(["not", "a", "row"]);
    let mut payload = base("create", Value::Array(rows));
    payload["batch_size"] = json!(1);
    let answer = match org
        .write
        .invoke_within(&payload, Duration::from_secs(6))
        .await
    {
        Ok(answer) => answer,
        Err(e) => panic!("{e:?}\n{}", org.write.logs()),
    };
    // The first request took 2.5 s: the next one starts only with 5 s left, which the 6 s
    // invocation no longer has (with 2 s, it would have started, and might have been cut off).
    assert_eq!(
        statuses(&answer),
        [
            "created",
            "not_attempted",
            "not_attempted",
            "not_attempted",
            "not_attempted"
        ],
        "{answer}"
    );
    assert_eq!(answer["next_row"], 1, "{answer}");
    assert!(
        answer["stopped"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline")
    );
    assert_eq!(org.names().await, ["d0"]);

    // A resume from next_row writes the rest, each once, and lists only its own rows.
    payload["start_row"] = answer["next_row"].clone();
    let rest = org.invoke(&payload).await;
    assert_eq!(
        statuses(&rest),
        ["created", "created", "failed", "created"],
        "{rest}"
    );
    assert_eq!(rest["rows"][0]["row"], 1, "{rest}");
    assert_eq!(org.names().await, ["d0", "d1", "d2", "d4"]);
    payload["start_row"] = json!(5);
    let (error_type, message) = expect_error(org.write.invoke(&payload).await, &org.write.logs());
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.starts_with("start_row"), "{message}");
}

#[tokio::test]
async fn an_update_naming_a_row_twice_applies_both_in_input_order() {
    let mut org = Org::start(None).await;
    let created = org
        .invoke(&base("create", json!([{"name": "v0"}, {"name": "other"}])))
        .await;
    let (a, b) = (
        created["rows"][0]["id"].as_str().unwrap().to_owned(),
        created["rows"][1]["id"].as_str().unwrap().to_owned(),
    );
    org.bulk_requests().await;
    // UpdateMultiple applies only the first target naming a row: one request would leave v1.
    let answer = org
        .invoke(&base(
            "update",
            json!([{"accountid": a, "name": "v1"}, {"accountid": b, "name": "other2"},
                   {"accountid": a, "name": "v2"}]),
        ))
        .await;
    assert_eq!(
        statuses(&answer),
        ["updated", "updated", "updated"],
        "{answer}"
    );
    assert_eq!(org.names().await, ["other2", "v2"]);
    let sent = org.bulk_requests().await;
    assert_eq!(
        sent,
        [
            ("UpdateMultiple".to_owned(), 204),
            ("UpdateMultiple".to_owned(), 204)
        ]
    );
    // UpsertMultiple refuses such a request: cut alike, both rows apply, the later last.
    let answer = org
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "mode": "upsert",
            "key": ["accountnumber"],
            "rows": [{"accountnumber": "K-1", "name": "k1"}, {"accountnumber": "k-1", "name": "k2"}]}))
        .await;
    assert_eq!(statuses(&answer), ["upserted", "upserted"], "{answer}");
    assert_eq!(org.names().await, ["k2", "other2", "v2"]);
    assert_eq!(org.bulk_requests().await.len(), 2);
}

#[tokio::test]
async fn a_refusal_of_the_request_itself_is_not_split() {
    let mut org = Org::start(None).await;
    // A 404 that names no row (the table has no such message) refuses every half alike.
    org.emulator
        .client()
        .add_fault(
            &Fault::status(404)
                .code("0x8006088a")
                .message("Resource not found for the segment 'CreateMultiple'.")
                .path_contains("CreateMultiple"),
        )
        .await
        .unwrap();
    let rows: Vec<Value> = (0..8).map(|i| json!({"name": format!("r{i}")})).collect();
    let mut payload = base("create", Value::Array(rows));
    payload["batch_size"] = json!(4);
    let (error_type, _) = expect_error(org.write.invoke(&payload).await, &org.write.logs());
    assert_eq!(error_type, "Crm.NotFound");
    assert_eq!(
        org.bulk_requests().await,
        [("CreateMultiple".to_owned(), 404)]
    );
    // After a chunk was written, a 405 fails the next chunk's rows with one request.
    // Faults are taken in the order they were added: the first request passes, the second is
    // refused.
    org.emulator
        .client()
        .add_fault(
            &Fault::delay(Duration::ZERO)
                .path_contains("CreateMultiple")
                .times(1),
        )
        .await
        .unwrap();
    org.emulator
        .client()
        .add_fault(&Fault::status(405).path_contains("CreateMultiple").times(1))
        .await
        .unwrap();
    let answer = org.invoke(&payload).await;
    assert_eq!(
        (answer["created"].as_u64(), answer["failed"].as_u64()),
        (Some(4), Some(4)),
        "{answer}"
    );
    assert_eq!(
        answer["rows"][4]["error"]["type"], "Crm.BadRequest",
        "{answer}"
    );
    let statuses: Vec<u64> = org.bulk_requests().await.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [200, 405], "not split");
}

#[tokio::test]
async fn a_gateways_503_leaves_a_create_unknown_and_not_sent_again() {
    let mut org = Org::start(None).await;
    org.emulator
        .client()
        .add_fault(&Fault::status(503).path_contains("CreateMultiple").times(5))
        .await
        .unwrap();
    let answer = org
        .invoke(&base("create", json!([{"name": "x"}, {"name": "y"}])))
        .await;
    assert_eq!(statuses(&answer), ["unknown", "unknown"], "{answer}");
    assert_eq!(
        answer["rows"][0]["error"]["type"], "Crm.ServerError",
        "{answer}"
    );
    assert_eq!(org.bulk_requests().await.len(), 1, "sent once");
}

#[tokio::test]
async fn a_refusal_of_the_whole_first_request_fails_the_invocation() {
    let mut org = Org::start(None).await;
    org.emulator
        .client()
        .add_fault(
            &Fault::status(429)
                .retry_after(300)
                .path_contains("CreateMultiple"),
        )
        .await
        .unwrap();
    // Nothing was written, so the invocation fails with the request's type, which a workflow
    // retries (a report of rows "not attempted" would look like success to it).
    let result = org
        .write
        .invoke(&base("create", json!([{"name": "x"}])))
        .await;
    let (error_type, _) = expect_error(result, &org.write.logs());
    assert_eq!(error_type, "Crm.Throttled");
    assert_eq!(org.names().await, Vec::<String>::new());
}

#[tokio::test]
async fn reads_rows_from_an_s3_object_of_json_lines() {
    let moto = Moto::start().await.unwrap();
    let s3 = aws_sdk_s3::Client::new(&moto.sdk_config().await);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let mut lines = String::new();
    for i in 0..250 {
        writeln!(
            lines,
            "{{\"name\": \"s{i:03}\", \"@odata.etag\": \"W/\\\"1\\\"\"}}"
        )
        .unwrap();
        if i == 100 {
            lines.push_str("not json\n\n");
        }
    }
    s3.put_object()
        .bucket(BUCKET)
        .key("import/rows.jsonl")
        .body(lines.into_bytes().into())
        .send()
        .await
        .unwrap();
    let mut org = Org::start(Some(&moto)).await;
    let answer = org
        .invoke(
            &json!({"dataset": "contoso", "table": "accounts", "mode": "create",
            "input": {"s3": {"bucket": BUCKET, "key": "import/rows.jsonl"}}}),
        )
        .await;
    assert_eq!(
        (answer["created"].as_u64(), answer["failed"].as_u64()),
        (Some(250), Some(1)),
        "{answer}"
    );
    // Only the problems are listed, by line.
    assert_eq!(answer["rows"].as_array().unwrap().len(), 1);
    assert_eq!(answer["rows"][0]["line"], 102, "{answer}");
    assert_eq!(org.names().await.len(), 250);
    let sent = org.bulk_requests().await;
    assert_eq!(sent.len(), 3, "100 rows a request by default: {sent:?}");

    // A resume from a line writes from there on.
    let answer = org
        .invoke(
            &json!({"dataset": "contoso", "table": "accounts", "mode": "create",
            "input": {"s3": {"bucket": BUCKET, "key": "import/rows.jsonl", "start_line": 250}}}),
        )
        .await;
    assert_eq!(answer["created"], 3, "{answer}");

    let result = org
        .write
        .invoke(
            &json!({"dataset": "contoso", "table": "accounts", "mode": "create",
            "input": {"s3": {"bucket": BUCKET, "key": "import/none.jsonl"}}}),
        )
        .await;
    let (error_type, message) = expect_error(result, &org.write.logs());
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.starts_with("input.s3.key"), "{message}");
}

#[tokio::test]
async fn an_s3_body_that_breaks_off_writes_what_was_read_and_resumes_from_the_break() {
    let moto = Moto::start().await.unwrap();
    let s3 = aws_sdk_s3::Client::new(&moto.sdk_config().await);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    // 250 lines of 17 bytes each; the body breaks off 5 bytes into line 151.
    let mut lines = String::new();
    for i in 1..=250 {
        writeln!(lines, "{{\"name\": \"c{i:03}\"}}").unwrap();
    }
    assert_eq!(lines.len(), 250 * 17);
    s3.put_object()
        .bucket(BUCKET)
        .key("import/cut.jsonl")
        .body(lines.into_bytes().into())
        .send()
        .await
        .unwrap();
    let proxy = S3Proxy::start(
        &moto.url,
        Some(S3Fault {
            call: S3Call::GetObject,
            after: 0,
            answer: S3Answer::CutBody(150 * 17 + 5),
        }),
    )
    .await
    .unwrap();
    let mut org = Org::start_with_s3(Some(&proxy.url)).await;
    let payload = json!({"dataset": "contoso", "table": "accounts", "mode": "create",
        "input": {"s3": {"bucket": BUCKET, "key": "import/cut.jsonl"}}});
    let answer = org.invoke(&payload).await;
    assert_eq!(proxy.calls(), [S3Call::GetObject]);
    // The 50 lines read of the second chunk are written before the invocation stops.
    assert_eq!(answer["created"], 150, "{answer}");
    assert_eq!(answer["next_line"], 151, "{answer}");
    assert_eq!(answer["stopped"]["type"], "Crm.ServerError", "{answer}");
    let next = answer["next_line"].as_u64().unwrap();
    let written = name_counts(&org).await;
    for i in 1..=250 {
        let name = format!("c{i:03}");
        assert_eq!(
            written.contains_key(&name),
            i < next,
            "line {i}: every row is written or at or after next_line {next}"
        );
    }

    // A resume from next_line completes the object, and writes no row twice.
    proxy.set_fault(None);
    let mut resume = payload.clone();
    resume["input"]["s3"]["start_line"] = json!(next);
    let answer = org.invoke(&resume).await;
    assert_eq!(answer["created"], 100, "{answer}");
    assert!(answer.get("next_line").is_none(), "{answer}");
    let written = name_counts(&org).await;
    assert_eq!(written.len(), 250);
    assert!(written.values().all(|n| *n == 1), "{written:?}");
}

#[tokio::test]
async fn with_no_time_left_for_a_first_request_it_fails_retryably_and_sends_nothing() {
    let moto = Moto::start().await.unwrap();
    let s3 = aws_sdk_s3::Client::new(&moto.sdk_config().await);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let mut lines = String::new();
    for i in 1..=9 {
        writeln!(lines, "{{\"name\": \"t{i}\"}}").unwrap();
    }
    s3.put_object()
        .bucket(BUCKET)
        .key("import/late.jsonl")
        .body(lines.into_bytes().into())
        .send()
        .await
        .unwrap();
    let mut org = Org::start(Some(&moto)).await;
    let inline = base("create", json!([{"name": "t1"}, {"name": "t2"}]));
    let from_s3 = json!({"dataset": "contoso", "table": "accounts", "mode": "create",
        "input": {"s3": {"bucket": BUCKET, "key": "import/late.jsonl", "start_line": 5}}});
    // Less than the 2 s a request needs, from the start: an answer of nothing done would send
    // a workflow straight back to the same rows; an error gets its retry's backoff, and says
    // that nothing was written.
    for payload in [&inline, &from_s3] {
        let result = org
            .write
            .invoke_within(payload, Duration::from_millis(1_500))
            .await;
        let (error_type, message) = expect_error(result, &org.write.logs());
        assert_eq!(error_type, "Crm.ServerError", "{message}");
        assert!(message.contains("nothing written"), "{message}");
    }
    assert_eq!(org.bulk_requests().await, []);
    assert!(org.names().await.is_empty());
    // With time, the S3 object is written from start_line, each line once.
    let answer = org.invoke(&from_s3).await;
    assert_eq!(answer["created"], 5, "{answer}");
    assert_eq!(org.names().await, ["t5", "t6", "t7", "t8", "t9"]);
}

#[tokio::test]
async fn outcomes_problems_lists_only_the_failed_and_unknown_rows() {
    let moto = Moto::start().await.unwrap();
    let mut org = Org::start(Some(&moto)).await;
    let mut rows: Vec<Value> = (0..5).map(|i| json!({"name": format!("p{i}")})).collect();
    rows[3] = json!(["not", "a", "row"]);
    let mut payload = base("create", Value::Array(rows));
    payload["outcomes"] = json!("problems");
    let answer = org.invoke(&payload).await;
    assert_eq!(
        (answer["created"].as_u64(), answer["failed"].as_u64()),
        (Some(4), Some(1)),
        "{answer}"
    );
    assert_eq!(statuses(&answer), ["failed"], "{answer}");
    assert_eq!(answer["rows"][0]["row"], 3, "{answer}");
    // An S3 object's answer lists only problems: asking for every row is refused.
    let all = json!({"dataset": "contoso", "table": "accounts", "mode": "create", "outcomes": "all",
        "input": {"s3": {"bucket": BUCKET, "key": "import/x.jsonl"}}});
    let (error_type, message) = expect_error(org.write.invoke(&all).await, &org.write.logs());
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.starts_with("outcomes"), "{message}");
}

/// An S3 endpoint whose `GetObject` answers `body` a line at a time, one line every `pace`: an
/// object slow to read, as a large one is. It answers every request alike (only `GetObject` is
/// sent to it).
async fn trickling_s3(body: String, pace: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nETag: \"1\"\r\n\r\n",
                    body.len()
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut ticks = tokio::time::interval(pace);
                for line in body.split_inclusive('\n') {
                    ticks.tick().await;
                    if socket.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn reading_past_the_lines_before_start_line_stops_before_the_deadline() {
    // 2,000 lines read at one every 5 ms take 10 s; the invocation has 4. Reading past the lines
    // before start_line must watch the deadline too: it stops while it can still say why, and
    // sends nothing, rather than read on until Lambda or the read's own deadline cuts it off.
    let mut lines = String::new();
    for i in 1..=2_000 {
        writeln!(lines, "{{\"name\": \"k{i}\"}}").unwrap();
    }
    let s3 = trickling_s3(lines, Duration::from_millis(5)).await;
    let mut org = Org::start_with_s3(Some(&s3)).await;
    let payload = json!({"dataset": "contoso", "table": "accounts", "mode": "create",
        "input": {"s3": {"bucket": BUCKET, "key": "import/large.jsonl", "start_line": 1_990}}});
    let result = org
        .write
        .invoke_within(&payload, Duration::from_secs(4))
        .await;
    let (error_type, message) = expect_error(result, &org.write.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("nothing written"), "{message}");
    assert!(
        message.contains("before input.s3.start_line 1990"),
        "{message}"
    );
    assert_eq!(org.bulk_requests().await, []);
    assert!(org.names().await.is_empty());
}
