//! `list-records` with `output`: every row to S3 as JSON Lines, by multipart upload, in bounded
//! memory, run as the binary it ships as, through the Lambda Runtime API, against the Dataverse
//! emulator and moto's S3.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dataverse_emulator::client::Fault;
use e2e_tests::s3_proxy::{S3Answer, S3Call, S3Fault, S3Proxy};
use e2e_tests::{Emulator, Function, LocalFiles, Moto, aws_env, expect_error};
use serde_json::{Value, json};

const BUCKET: &str = "crm-exports";

/// S3's smallest part, which the function uses for all but the last.
const PART: usize = 5 * 1024 * 1024;

/// An empty organisation, moto with a bucket, and `list-records` pointed at both.
struct Setup {
    emulator: Emulator,
    _files: LocalFiles,
    _moto: Moto,
    /// Between the function and moto, when a test injects S3 faults.
    proxy: Option<S3Proxy>,
    s3: aws_sdk_s3::Client,
    list: Function,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `fault`, the function reaches moto through an [`S3Proxy`] that injects it.
    async fn start_with(fault: Option<S3Fault>) -> Self {
        let (emulator, moto) = tokio::join!(Emulator::start(&["--seed", "none"]), Moto::start());
        let (emulator, moto) = (emulator.unwrap(), moto.unwrap());
        let files = LocalFiles::new("list-to-s3", &emulator).unwrap();
        let s3 = aws_sdk_s3::Client::new(&moto.sdk_config().await);
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        let proxy = match fault {
            Some(fault) => Some(S3Proxy::start(&moto.url, Some(fault)).await.unwrap()),
            None => None,
        };
        // The S3 endpoint by its own variable: the function's other AWS calls (none here) would
        // not go to moto.
        let endpoint = proxy.as_ref().map_or(&moto.url, |p| &p.url);
        let mut environment = aws_env("AWS_ENDPOINT_URL_S3", endpoint);
        environment.push(files.secrets_env());
        let list = Function::start("list-records", &environment).await.unwrap();
        Self {
            emulator,
            _files: files,
            _moto: moto,
            proxy,
            s3,
            list,
        }
    }

    fn calls(&self, call: S3Call) -> usize {
        self.proxy
            .as_ref()
            .map_or(0, |p| p.calls().iter().filter(|c| **c == call).count())
    }

    /// The object's text.
    async fn object(&self, key: &str) -> String {
        let object = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = object.body.collect().await.unwrap().into_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The number of parts the object was assembled from: moto, as S3, ends a multipart object's
    /// `ETag` with `-<parts>`; a single `PutObject` has none.
    async fn parts(&self, key: &str) -> usize {
        let head = self
            .s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let etag = head.e_tag().unwrap().trim_matches('"').to_owned();
        etag.split_once('-')
            .map_or(0, |(_, parts)| parts.parse().unwrap())
    }

    /// The object's CRC32 as S3 keeps it: for a multipart object, the checksum of its parts'
    /// checksums, which S3 stores only when every part carried one.
    async fn crc32(&self, key: &str) -> Option<String> {
        let head = self
            .s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        head.checksum_crc32().map(str::to_owned)
    }

    /// Every key in the bucket.
    async fn keys(&self) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// Multipart uploads started and neither completed nor aborted.
    async fn pending_uploads(&self) -> usize {
        let listed = self
            .s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        listed.uploads().len()
    }

    /// Invokes the function, which must succeed; a panic with its logs otherwise.
    async fn invoke(&mut self, payload: &Value) -> Value {
        match self
            .list
            .invoke_within(payload, Duration::from_secs(120))
            .await
        {
            Ok(answer) => answer,
            Err(e) => panic!("list-records failed: {e}\n{}", self.list.logs()),
        }
    }
}

fn listing(extra: &Value) -> Value {
    let mut payload = json!({
        "dataset": "contoso",
        "table": "accounts",
        "output": {"s3": {"bucket": BUCKET, "prefix": "exports/accounts/"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    payload
}

/// The `accountid` of each line, checking that every line is one JSON object.
fn line_ids(text: &str) -> Vec<String> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the last line ends too"
    );
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            row["accountid"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The page size (`count`) of each `FetchXML` request in the emulator's log, in order.
fn fetch_page_sizes(log: &[Value]) -> Vec<usize> {
    log.iter()
        .filter_map(|e| e["path"].as_str()?.split_once("fetchXml="))
        .map(|(_, query)| {
            let xml = percent_encoding::percent_decode_str(query).decode_utf8_lossy();
            let (_, from_count) = xml.split_once(" count=\"").unwrap();
            from_count.split_once('"').unwrap().0.parse().unwrap()
        })
        .collect()
}

/// A field of `/proc/<pid>/status`, in bytes (the kernel reports kB).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// What Lambda's build of a function keeps resident of its own code (binary and libraries,
/// `RssFile`): about 6.5 MiB for `list-records` in the release build. See the 50,000-row test.
const RELEASE_CODE: u64 = 7 * MIB;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn fifty_thousand_rows_go_to_s3_in_parts_within_32_mib() {
    let mut setup = Setup::start().await;
    setup
        .emulator
        .client()
        .generate("account", 50_000)
        .await
        .unwrap();
    let expected = setup
        .emulator
        .account_ids("$select=accountid")
        .await
        .unwrap();
    assert_eq!(expected.len(), 50_000);

    // Every row: no `$top`, no `$select`, so each line is a whole row as Dataverse sends it.
    let answer = setup.invoke(&listing(&json!({}))).await;
    let key = answer["s3"]["key"].as_str().unwrap().to_owned();
    assert_eq!(answer["s3"]["bucket"], BUCKET);
    // The prefix, then the invocation's request id (a UUID from this Runtime API).
    let name = key
        .strip_prefix("exports/accounts/")
        .and_then(|name| name.strip_suffix(".jsonl"));
    assert!(
        name.is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{key}"
    );
    assert_eq!(answer["count"], 50_000, "{answer}");
    assert!(answer.get("value").is_none() && answer.get("matched").is_none());

    // Peak RSS is the process's own memory plus the resident pages of its code. Lambda runs the
    // release build, whose code takes about 6.5 MiB (measured there: 21 to 25 MiB in all); this
    // unoptimised test build's code takes about 20 MiB. So the memory the function holds itself
    // (the peak less the code, which only grows) is checked against 32 MiB less the release
    // build's code. It holds two 5 MiB parts and a page of 1,000 rows (about 16 MiB here), where
    // collecting the rows would take more than the 47 MB they make.
    let pid = setup.list.pid().unwrap();
    let (peak, code) = (status_bytes(pid, "VmHWM"), status_bytes(pid, "RssFile"));
    let own = peak - code;
    assert!(
        own <= 32 * MIB - RELEASE_CODE,
        "the function's own memory peaked at {own} bytes (VmHWM {peak}, code {code})"
    );

    let text = setup.object(&key).await;
    assert_eq!(line_ids(&text), expected, "every row, once, in order");
    let parts = setup.parts(&key).await;
    assert_eq!(parts, text.len().div_ceil(PART), "parts of 5 MiB");
    assert!(parts > 1, "{} bytes in {parts} part(s)", text.len());
    assert!(
        setup.crc32(&key).await.is_some(),
        "every part carried its CRC32, and S3 kept the object's"
    );
    assert_eq!(setup.pending_uploads().await, 0);
    eprintln!(
        "50,000 rows: {} bytes in {parts} parts; VmHWM {peak} bytes, of which code {code}",
        text.len()
    );
}

#[tokio::test]
async fn top_skip_select_count_and_fetchxml_keep_their_meaning() {
    let mut setup = Setup::start().await;
    setup
        .emulator
        .client()
        .generate("account", 3_000)
        .await
        .unwrap();
    let all = setup
        .emulator
        .account_ids("$select=accountid")
        .await
        .unwrap();

    let answer = setup
        .invoke(&listing(&json!({
            "$top": 1_200, "$skip": 1_500, "$select": "accountid,name", "$count": true,
        })))
        .await;
    assert_eq!(answer["count"], 1_200, "{answer}");
    assert_eq!(
        answer["matched"], 3_000,
        "$count's total, under its own name"
    );
    let key = answer["s3"]["key"].as_str().unwrap();
    let text = setup.object(key).await;
    // Pages of 1,000: the skipped rows end inside the second page, the kept ones in the third.
    assert_eq!(line_ids(&text), all[1_500..2_700]);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(first.get("numberofemployees").is_none(), "{first}");
    assert!(first.get("name").is_some(), "{first}");
    assert_eq!(setup.parts(key).await, 0, "a small result is one PutObject");
    assert!(
        setup.crc32(key).await.is_some(),
        "the SDK's default checksum"
    );

    // The same rows by FetchXML; a second invocation writes an object of its own.
    let fetch = r#"<fetch><entity name="account"><attribute name="accountid"/><order attribute="name"/></entity></fetch>"#;
    setup.emulator.clear_requests().await.unwrap();
    let again = setup
        .invoke(&listing(
            &json!({"fetchXml": fetch, "$top": 1_200, "$skip": 1_500}),
        ))
        .await;
    let second = again["s3"]["key"].as_str().unwrap();
    assert_ne!(second, key);
    let by_name = setup
        .emulator
        .account_ids("$select=accountid&$orderby=name")
        .await
        .unwrap();
    assert_eq!(line_ids(&setup.object(second).await), by_name[1_500..2_700]);
    // Pages of 1,000 rows, as for the OData options, rather than the 2,700 `$skip` and `$top`
    // would allow in one.
    let sizes = fetch_page_sizes(&setup.emulator.requests().await.unwrap());
    assert_eq!(sizes, [1_000, 1_000, 1_000]);

    // Nothing matches: an empty object, still there for the reader to find.
    let none = setup
        .invoke(&listing(&json!({"$filter": "name eq 'nobody'"})))
        .await;
    assert_eq!(none["count"], 0);
    assert_eq!(setup.object(none["s3"]["key"].as_str().unwrap()).await, "");
    assert_eq!(setup.keys().await.len(), 3);
}

/// Labels must not stop after the first page (reported against another Dataverse client, whose
/// second page came without them): every page asks for them, `OData` and `FetchXML` alike.
#[tokio::test]
async fn formatted_values_come_with_every_page() {
    let mut setup = Setup::start().await;
    setup
        .emulator
        .client()
        .generate("account", 2_500)
        .await
        .unwrap();
    let fetch = r#"<fetch><entity name="account"><attribute name="statecode"/></entity></fetch>"#;
    for query in [json!({"$select": "statecode"}), json!({"fetchXml": fetch})] {
        let mut payload = listing(&query);
        payload["formatted_values"] = json!(true);
        let answer = setup.invoke(&payload).await;
        assert_eq!(answer["count"], 2_500, "{answer}");
        let text = setup.object(answer["s3"]["key"].as_str().unwrap()).await;
        let labelled = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|row| row["statecode@OData.Community.Display.V1.FormattedValue"] == "Active")
            .count();
        assert_eq!(labelled, 2_500, "every row of every page, for {query}");
    }
}

#[tokio::test]
async fn a_bad_output_is_invalid_input_naming_it_and_nothing_is_sent() {
    let mut setup = Setup::start().await;
    let cases = [
        (
            json!({"s3": {"prefix": "x/"}}),
            "output.s3.bucket: is required",
        ),
        (json!({"s3": {"bucket": "My_Bucket"}}), "output.s3.bucket: "),
        (json!({"s3": {"bucket": "ab"}}), "output.s3.bucket: "),
        (
            json!({"s3": {"bucket": "192.168.1.1"}}),
            "output.s3.bucket: ",
        ),
        (
            json!({"s3": {"bucket": BUCKET, "prefix": "p".repeat(961)}}),
            "output.s3.prefix: ",
        ),
        (
            json!({"s3": {"bucket": BUCKET, "prefx": "x/"}}),
            "output.s3.prefx: ",
        ),
        (json!({"sqs": {}}), "output.sqs: "),
        (json!({}), "output.s3: is required"),
        (json!("s3://crm-exports/x"), "output: "),
    ];
    setup.emulator.clear_requests().await.unwrap();
    for (output, start) in cases {
        let mut payload = listing(&json!({}));
        payload["output"] = output.clone();
        let (error_type, message) = expect_error(setup.list.invoke(&payload).await, "");
        assert_eq!(error_type, "Crm.InvalidInput", "{output}: {message}");
        assert!(message.starts_with(start), "{output}: {message}");
    }
    assert!(setup.emulator.requests().await.unwrap().is_empty());
    assert!(setup.keys().await.is_empty());
}

#[tokio::test]
async fn a_bucket_that_does_not_exist_is_a_configuration_error() {
    let mut setup = Setup::start().await;
    setup.emulator.create_account("Alpha").await.unwrap();
    let mut payload = listing(&json!({}));
    payload["output"] = json!({"s3": {"bucket": "no-such-bucket"}});
    let (error_type, message) = expect_error(setup.list.invoke(&payload).await, "");
    assert_eq!(error_type, "Crm.Configuration", "{message}");
    assert!(message.contains("no-such-bucket"), "{message}");
}

#[tokio::test]
async fn without_output_a_result_past_the_response_limit_names_output() {
    let mut setup = Setup::start().await;
    setup
        .emulator
        .client()
        .generate("account", 20_000)
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "$top": 20_000});
    let (error_type, message) = expect_error(
        setup
            .list
            .invoke_within(&payload, Duration::from_secs(120))
            .await,
        &setup.list.logs(),
    );
    assert_eq!(error_type, "Crm.InvalidInput", "{message}");
    assert!(message.starts_with("$top: "), "{message}");
    assert!(message.contains("with output"), "{message}");
    assert!(setup.keys().await.is_empty());
}

#[tokio::test]
async fn a_failure_midway_leaves_no_object_and_no_upload() {
    let mut setup = Setup::start().await;
    setup
        .emulator
        .client()
        .generate("account", 20_000)
        .await
        .unwrap();
    // The sixteenth page of 1,000 rows fails: two parts have gone to S3 by then. A 500 is not
    // retried, so the failure is the function's at once.
    setup
        .emulator
        .client()
        .add_fault(&Fault::status(500).path_contains("pagenumber%3D%2216%22"))
        .await
        .unwrap();
    let result = setup
        .list
        .invoke_within(&listing(&json!({})), Duration::from_secs(120))
        .await;
    let logs = setup.list.logs_with("multipart upload aborted").await;
    let (error_type, message) = expect_error(result, &logs);
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    let faulted = setup
        .emulator
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|e| e["fault"] == true)
        .count();
    assert_eq!(faulted, 1, "the fault was met");
    assert!(setup.keys().await.is_empty(), "no object");
    assert_eq!(setup.pending_uploads().await, 0, "no upload left");
    assert!(logs.contains("multipart upload aborted"), "{logs}");
}

#[tokio::test]
async fn a_part_s3_refuses_midway_aborts_the_upload() {
    // The third part fails, every attempt the SDK makes at it.
    let mut setup = Setup::start_with(Some(S3Fault {
        call: S3Call::UploadPart,
        after: 2,
        answer: S3Answer::Error(500, "InternalError"),
    }))
    .await;
    setup
        .emulator
        .client()
        .generate("account", 20_000)
        .await
        .unwrap();
    let result = setup
        .list
        .invoke_within(&listing(&json!({})), Duration::from_secs(120))
        .await;
    let logs = setup.list.logs_with("multipart upload aborted").await;
    let (error_type, message) = expect_error(result, &logs);
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("UploadPart"), "{message}");
    assert!(setup.keys().await.is_empty(), "no object");
    assert_eq!(setup.pending_uploads().await, 0, "no upload left");
    assert!(setup.calls(S3Call::UploadPart) > 2, "{logs}");
    assert_eq!(setup.calls(S3Call::AbortMultipartUpload), 1, "{logs}");
    assert_eq!(setup.calls(S3Call::CompleteMultipartUpload), 0);
}

#[tokio::test]
async fn an_s3_call_that_hangs_ends_at_the_deadline_and_the_upload_is_aborted() {
    // The second part is never answered: the invocation's deadline ends the wait, with time kept
    // back to abort.
    let mut setup = Setup::start_with(Some(S3Fault {
        call: S3Call::UploadPart,
        after: 1,
        answer: S3Answer::Hold,
    }))
    .await;
    setup
        .emulator
        .client()
        .generate("account", 12_000)
        .await
        .unwrap();
    let result = setup
        .list
        .invoke_within(&listing(&json!({})), Duration::from_secs(10))
        .await;
    let logs = setup.list.logs_with("multipart upload aborted").await;
    let (error_type, message) = expect_error(result, &logs);
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    assert!(message.contains("deadline"), "{message}");
    assert!(setup.keys().await.is_empty(), "no object");
    assert_eq!(setup.pending_uploads().await, 0, "no upload left");
    assert_eq!(setup.calls(S3Call::AbortMultipartUpload), 1, "{logs}");
}

#[tokio::test]
async fn a_complete_whose_answer_is_lost_says_the_object_may_exist() {
    // Every `CompleteMultipartUpload` reaches moto and its answer is lost: the first completes
    // the upload, the SDK's retries find it gone.
    let mut setup = Setup::start_with(Some(S3Fault {
        call: S3Call::CompleteMultipartUpload,
        after: 0,
        answer: S3Answer::Lost,
    }))
    .await;
    setup
        .emulator
        .client()
        .generate("account", 8_000)
        .await
        .unwrap();
    let result = setup
        .list
        .invoke_within(&listing(&json!({})), Duration::from_secs(120))
        .await;
    let logs = setup.list.logs_with("already completed or aborted").await;
    let (error_type, message) = expect_error(result, &logs);
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    let keys = setup.keys().await;
    assert_eq!(keys.len(), 1, "S3 completed the upload: {keys:?}");
    assert!(
        message.contains("CompleteMultipartUpload")
            && message.contains("outcome is unknown")
            && message.contains(&format!("s3://{BUCKET}/{} ", keys[0]))
            && message.contains("may exist"),
        "{message}"
    );
    assert!(!message.contains("nothing was written"), "{message}");
    let text = setup.object(&keys[0]).await;
    assert_eq!(line_ids(&text).len(), 8_000, "the object is whole");
    assert!(setup.parts(&keys[0]).await > 1);
    assert_eq!(setup.pending_uploads().await, 0, "no upload left");
    // The abort that follows finds the upload completed, which is no failure of its own.
    assert_eq!(setup.calls(S3Call::AbortMultipartUpload), 1, "{logs}");
    assert!(!logs.contains("could not be aborted"), "{logs}");
}

#[tokio::test]
async fn a_put_the_deadline_cuts_off_says_the_object_may_exist() {
    // moto writes the object, and its answer never comes back before the deadline.
    let mut setup = Setup::start_with(Some(S3Fault {
        call: S3Call::PutObject,
        after: 0,
        answer: S3Answer::AppliedThenHold,
    }))
    .await;
    setup.emulator.create_account("Alpha").await.unwrap();
    let result = setup
        .list
        .invoke_within(&listing(&json!({})), Duration::from_secs(10))
        .await;
    let (error_type, message) = expect_error(result, &setup.list.logs());
    assert_eq!(error_type, "Crm.ServerError", "{message}");
    let keys = setup.keys().await;
    assert_eq!(keys.len(), 1, "moto wrote it: {keys:?}");
    assert!(
        message.contains("PutObject")
            && message.contains("deadline")
            && message.contains("outcome is unknown")
            && message.contains(&format!("s3://{BUCKET}/{} ", keys[0])),
        "{message}"
    );
    assert!(!message.contains("nothing was written"), "{message}");
    assert_eq!(line_ids(&setup.object(&keys[0]).await).len(), 1);
}
