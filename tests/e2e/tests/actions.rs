//! The five action functions, run as the binaries they ship as, through the Lambda Runtime API, against
//! the Dataverse emulator (and moto for Secrets Manager).

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e_tests::{Emulator, Failure, Function, LocalFiles, Moto, env};
use serde_json::{Value, json};

/// An emulator, and credentials for dataset `contoso` in a file.
struct Org {
    emulator: Emulator,
    files: LocalFiles,
}

impl Org {
    async fn start(seed: &str) -> Self {
        let emulator = Emulator::start(&["--seed", seed]).await.unwrap();
        let files = LocalFiles::new("actions", &emulator).unwrap();
        Self { emulator, files }
    }

    async fn function(&self, name: &str) -> Function {
        Function::start(name, &[self.files.secrets_env()])
            .await
            .unwrap()
    }

    /// `(method, path, status)` of every request since the last call.
    async fn take_log(&self) -> Vec<(String, String, u64)> {
        let log = self.emulator.client().take_requests().await.unwrap();
        log.into_iter()
            .map(|e| (e.method, e.path, u64::from(e.status)))
            .collect()
    }
}

fn expect_failure(result: Result<Value, Failure>, error_type: &str, message_part: &str) -> String {
    match result {
        Err(Failure::Error {
            error_type: t,
            message,
        }) => {
            assert_eq!(t, error_type, "{message}");
            assert!(
                message.contains(message_part),
                "{message:?} should contain {message_part:?}"
            );
            message
        }
        other => panic!("expected {error_type}, got {other:?}"),
    }
}

#[tokio::test]
async fn every_action_works_end_to_end() {
    let org = Org::start("demo").await;
    let mut create = org.function("create-record").await;
    let mut get = org.function("get-record").await;
    let mut update = org.function("update-record").await;
    let mut list = org.function("list-records").await;
    let mut delete = org.function("delete-record").await;

    let created = create
        .invoke(&json!({"dataset": "contoso", "table": "contact", "item": {"firstname": "Ada", "lastname": "Lovelace"}, "$select": "fullname"}))
        .await
        .unwrap();
    assert_eq!(created["fullname"], "Ada Lovelace");
    let id = created["contactid"].as_str().unwrap().to_owned();

    let fetched = get
        .invoke(
            &json!({"dataset": "contoso", "table": "contacts", "id": id, "$select": "lastname"}),
        )
        .await
        .unwrap();
    assert_eq!(fetched["lastname"], "Lovelace");
    assert!(fetched["@odata.etag"].is_string());

    let updated = update
        .invoke(&json!({"dataset": "contoso", "table": "contacts", "id": id, "item": {"lastname": "King"}, "$select": "fullname"}))
        .await
        .unwrap();
    assert_eq!(updated["fullname"], "Ada King");

    let listed = list
        .invoke(&json!({"dataset": "contoso", "table": "contacts", "$filter": "lastname eq 'King'", "$select": "fullname"}))
        .await
        .unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
    assert_eq!(listed["value"][0]["contactid"], id.as_str());

    let deleted = delete
        .invoke(&json!({"dataset": "contoso", "table": "contacts", "id": id}))
        .await
        .unwrap();
    assert_eq!(deleted, json!({"id": id, "deleted": true}));
    expect_failure(
        get.invoke(&json!({"dataset": "contoso", "table": "contacts", "id": id}))
            .await,
        "Crm.NotFound",
        "Does Not Exist",
    );
}

#[tokio::test]
async fn the_sample_events_run_against_the_demo_data() {
    let org = Org::start("demo").await;
    for (function, event) in [
        (
            "list-records",
            include_str!("../../../functions/list-records/events/list.json"),
        ),
        (
            "get-record",
            include_str!("../../../functions/get-record/events/get.json"),
        ),
        (
            "create-record",
            include_str!("../../../functions/create-record/events/create.json"),
        ),
        (
            "update-record",
            include_str!("../../../functions/update-record/events/update.json"),
        ),
        (
            "delete-record",
            include_str!("../../../functions/delete-record/events/delete.json"),
        ),
    ] {
        let mut f = org.function(function).await;
        let payload: Value = serde_json::from_str(event).unwrap();
        let answer = f.invoke(&payload).await;
        assert!(answer.is_ok(), "{function}: {answer:?}");
    }
}

#[tokio::test]
async fn list_records_pages_skips_filters_orders_and_selects_beyond_one_page() {
    let org = Org::start("none").await;
    org.emulator
        .post("tables/account/generate", &json!({"count": 12_000}))
        .await
        .unwrap();
    let mut list = org.function("list-records").await;
    let query = |skip: usize, top: usize| {
        json!({
            "dataset": "contoso", "table": "accounts",
            "$filter": "numberofemployees ge 1000", "$orderby": "numberofemployees desc,name",
            "$select": "name,numberofemployees", "$skip": skip, "$top": top,
        })
    };
    let everything = list.invoke(&query(0, 20_000)).await.unwrap();
    let everything = everything["value"].as_array().unwrap().clone();
    assert!(everything.len() > 10_500, "{}", everything.len());
    for pair in everything.windows(2) {
        let (a, b) = (
            pair[0]["numberofemployees"].as_i64().unwrap(),
            pair[1]["numberofemployees"].as_i64().unwrap(),
        );
        assert!(a >= b, "ordered by employees, descending");
        assert!(b >= 1000, "filtered");
    }
    let keys: Vec<&String> = everything[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "etag, the two selected columns and the key: {keys:?}"
    );
    org.take_log().await;

    let window = list.invoke(&query(5_100, 5_200)).await.unwrap();
    let window = window["value"].as_array().unwrap();
    assert_eq!(window.as_slice(), &everything[5_100..10_300]);
    let log = org.take_log().await;
    assert_eq!(log.len(), 3, "pages of 5000 up to row 10,300: {log:?}");
    assert!(
        log.iter()
            .all(|(_, path, _)| !path.contains("$skip=") && !path.contains("$top="))
    );

    let default_top = list
        .invoke(&json!({"dataset": "contoso", "table": "account", "$select": "name"}))
        .await
        .unwrap();
    assert_eq!(
        default_top["value"].as_array().unwrap().len(),
        256,
        "the connector's default $top"
    );
}

#[tokio::test]
async fn update_of_a_missing_id_is_not_found_and_creates_nothing() {
    let org = Org::start("none").await;
    let mut update = org.function("update-record").await;
    let id = "0b8c6f4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f";
    expect_failure(
        update
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": id, "item": {"name": "ghost"}}))
            .await,
        "Crm.NotFound",
        id,
    );
    let (status, _) = org
        .emulator
        .api_get(&format!("accounts({id})"))
        .await
        .unwrap();
    assert_eq!(status, 404, "no row was created");
    let log = org.take_log().await;
    let patch = log.iter().find(|(m, _, _)| m == "PATCH").unwrap();
    assert_eq!(patch.2, 404);
}

#[tokio::test]
async fn a_stale_etag_is_a_precondition_failure() {
    let org = Org::start("none").await;
    let mut create = org.function("create-record").await;
    let mut update = org.function("update-record").await;
    let mut delete = org.function("delete-record").await;
    let row = create
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "item": {"name": "v1"}}))
        .await
        .unwrap();
    let id = row["accountid"].as_str().unwrap();
    let etag = row["@odata.etag"].as_str().unwrap();
    update
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": id, "etag": etag, "item": {"name": "v2"}}))
        .await
        .unwrap();
    expect_failure(
        update
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": id, "etag": etag, "item": {"name": "v3"}}))
            .await,
        "Crm.PreconditionFailed",
        "RowVersion",
    );
    expect_failure(
        delete
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "id": id, "etag": etag}))
            .await,
        "Crm.PreconditionFailed",
        "",
    );
}

#[tokio::test]
async fn a_429_storm_is_waited_out_with_no_extra_calls() {
    let org = Org::start("demo").await;
    let mut get = org.function("get-record").await;
    let payload: Value = serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap();
    get.invoke(&payload).await.unwrap();
    org.take_log().await;
    org.emulator
        .post(
            "faults",
            &json!({"status": 429, "retry_after": 1, "times": 3, "path_contains": "/accounts("}),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let row = get.invoke(&payload).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(row["name"].is_string());
    let statuses: Vec<u64> = org.take_log().await.iter().map(|e| e.2).collect();
    assert_eq!(
        statuses,
        [429, 429, 429, 200],
        "one call per Retry-After, nothing more"
    );
}

#[tokio::test]
async fn throttling_past_the_deadline_is_reported_as_throttled() {
    let org = Org::start("demo").await;
    let mut get = org.function("get-record").await;
    let payload: Value = serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap();
    org.emulator
        .post(
            "faults",
            &json!({"status": 429, "retry_after": 300, "times": 50, "path_contains": "/api/data"}),
        )
        .await
        .unwrap();
    org.take_log().await;
    expect_failure(
        get.invoke_within(&payload, Duration::from_secs(10)).await,
        "Crm.Throttled",
        "6000",
    );
    // One attempt, answered with the 429 as it stood: a 300 s Retry-After does not fit in 10 s, so it
    // neither waited nor tried again, and said why.
    let log = org.take_log().await;
    let calls: Vec<u64> = log
        .iter()
        .filter(|(_, path, _)| path.starts_with("/api/data/"))
        .map(|e| e.2)
        .collect();
    assert_eq!(calls, [429], "{log:?}");
    let logs = get.logs();
    let gave_up = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "request failed; no time is left for another attempt")
        .unwrap_or_else(|| panic!("no word of giving up for lack of time:\n{logs}"));
    // Retry-After, and at most a second more of spread (never less).
    let delay_ms = gave_up["fields"]["delay_ms"].as_u64().unwrap_or_default();
    assert!((300_000..=301_000).contains(&delay_ms), "{gave_up}");
    assert_eq!(gave_up["fields"]["status"], 429, "{gave_up}");
    assert!(!logs.contains("request failed; retrying"), "{logs}");
}

#[tokio::test]
async fn a_token_expiring_mid_run_is_refreshed_once() {
    let org = Org::start("demo").await;
    let mut list = org.function("list-records").await;
    let payload = json!({"dataset": "contoso", "table": "leads", "$top": 2});
    list.invoke(&payload).await.unwrap();
    org.take_log().await;
    org.emulator
        .post("tokens/expire", &json!({}))
        .await
        .unwrap();
    let answer = list.invoke(&payload).await.unwrap();
    assert_eq!(answer["value"].as_array().unwrap().len(), 2);
    let log = org.take_log().await;
    let summary: Vec<(bool, u64)> = log
        .iter()
        .map(|(_, p, s)| (p.contains("oauth2"), *s))
        .collect();
    assert_eq!(
        summary,
        [(false, 401), (true, 200), (false, 200)],
        "{log:?}"
    );
}

#[tokio::test]
async fn bad_input_is_invalid_input_and_never_reaches_dataverse() {
    let org = Org::start("demo").await;
    let mut get = org.function("get-record").await;
    let mut list = org.function("list-records").await;
    let mut create = org.function("create-record").await;
    org.take_log().await;
    let get_cases = [
        (
            json!({"dataset": "contoso", "table": "accounts", "id": "not-a-guid"}),
            "id",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d)/x"}),
            "id",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "id": 42}),
            "id",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts/x", "id": "2e451703-c686-e711-80e5-00155db19e6d"}),
            "table",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts?$top=1", "id": "2e451703-c686-e711-80e5-00155db19e6d"}),
            "table",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts(x)", "id": "2e451703-c686-e711-80e5-00155db19e6d"}),
            "table",
        ),
        (
            json!({"dataset": "../other", "table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d"}),
            "dataset",
        ),
        (
            json!({"table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d"}),
            "dataset",
        ),
    ];
    for (payload, field) in get_cases {
        let message = expect_failure(get.invoke(&payload).await, "Crm.InvalidInput", field);
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    for (payload, field) in [
        (
            json!({"dataset": "contoso", "table": "accounts", "$top": "ten"}),
            "$top",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "$skip": -5}),
            "$skip",
        ),
        (
            json!({"dataset": "contoso", "table": "accounts", "$fitler": "name eq 'x'"}),
            "$fitler",
        ),
    ] {
        expect_failure(list.invoke(&payload).await, "Crm.InvalidInput", field);
    }
    expect_failure(
        create
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "item": "name=x"}))
            .await,
        "Crm.InvalidInput",
        "item",
    );
    expect_failure(
        get.invoke(&json!("just a string")).await,
        "Crm.InvalidInput",
        "payload",
    );
    assert!(
        org.take_log().await.is_empty(),
        "nothing was sent to Dataverse"
    );
}

#[tokio::test]
async fn dataverse_rejections_keep_their_code_and_message() {
    let org = Org::start("none").await;
    let mut create = org.function("create-record").await;
    let message = expect_failure(
        create
            .invoke(&json!({"dataset": "contoso", "table": "accounts", "item": {"numberofemployees": "many"}}))
            .await,
        "Crm.BadRequest",
        "Cannot convert the literal 'many'",
    );
    assert!(message.contains("0x80048d19"), "{message}");
    expect_failure(
        create
            .invoke(&json!({"dataset": "contoso", "table": "nosuchtable", "item": {"name": "x"}}))
            .await,
        "Crm.NotFound",
        "nosuchtable",
    );
}

#[tokio::test]
async fn a_missing_dataset_or_secret_is_a_configuration_error() {
    let org = Org::start("none").await;
    let mut get = org.function("get-record").await;
    let payload = json!({"dataset": "fabrikam", "table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d"});
    expect_failure(
        get.invoke(&payload).await,
        "Crm.Configuration",
        "no credentials for dataset 'fabrikam'",
    );

    let moto = Moto::start().await.unwrap();
    let mut environment = moto.env();
    environment.push(("CRM_SECRETS".into(), "secretsmanager:dynamics-crm/".into()));
    let mut from_aws = Function::start("get-record", &environment).await.unwrap();
    expect_failure(
        from_aws.invoke(&payload).await,
        "Crm.Configuration",
        "the secret 'dynamics-crm/fabrikam' does not exist",
    );

    let secrets = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    secrets
        .create_secret()
        .name("dynamics-crm/fabrikam")
        .secret_string(json!({"url": org.emulator.url, "tenant_id": "t", "client_id": "local-client", "client_secret": 12345}).to_string())
        .send()
        .await
        .unwrap();
    let message = expect_failure(
        from_aws.invoke(&payload).await,
        "Crm.Configuration",
        "client_secret",
    );
    assert!(
        !message.contains("12345"),
        "the bad value is not quoted: {message}"
    );
}

#[tokio::test]
async fn a_bad_environment_fails_every_invocation_as_configuration() {
    let mut get = Function::start("get-record", &env(&[("CRM_SECRETS", "vault:everything")]))
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "id": "2e451703-c686-e711-80e5-00155db19e6d"});
    for _ in 0..2 {
        expect_failure(
            get.invoke(&payload).await,
            "Crm.Configuration",
            "CRM_SECRETS is 'vault:everything'",
        );
    }
}

#[tokio::test]
async fn credentials_come_from_secrets_manager_and_are_read_again_after_rotation() {
    let org = Org::start("demo").await;
    let moto = Moto::start().await.unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    secrets
        .create_secret()
        .name("dynamics-crm/contoso")
        .secret_string(org.emulator.credentials().to_string())
        .send()
        .await
        .unwrap();
    let mut environment = moto.env();
    environment.push(("CRM_SECRETS".into(), "secretsmanager:dynamics-crm/".into()));
    let mut list = Function::start("list-records", &environment).await.unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "$top": 1});
    list.invoke(&payload).await.unwrap();

    // The app's secret is rotated: the old one stops working and the secret store gets the new one.
    org.emulator
        .post("credentials", &json!({"client_secret": "rotated-secret"}))
        .await
        .unwrap();
    org.emulator
        .post("tokens/expire", &json!({}))
        .await
        .unwrap();
    secrets
        .put_secret_value()
        .secret_id("dynamics-crm/contoso")
        .secret_string(
            org.emulator
                .credentials_with_secret("rotated-secret")
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    org.take_log().await;
    let answer = list.invoke(&payload).await.unwrap();
    assert_eq!(answer["value"].as_array().unwrap().len(), 1);
    assert!(
        list.logs().contains("reading them again"),
        "{}",
        list.logs()
    );
    // One refused token, one refusal of the old secret, one token from the new one; the table's
    // definition is kept across the rotation, not read again.
    let log = org.take_log().await;
    let count = |part: &str| {
        log.iter()
            .filter(|(_, path, _)| path.contains(part))
            .count()
    };
    assert_eq!(count("/oauth2/v2.0/token"), 2, "{log:?}");
    assert_eq!(count("/api/data/"), 2, "{log:?}");
    assert_eq!(count("EntityDefinitions"), 0, "{log:?}");
}

#[tokio::test]
async fn logs_are_json_and_never_hold_a_secret_a_token_or_a_row() {
    let org = Org::start("demo").await;
    let secret = "s3cr3t-value-that-must-not-leak";
    org.emulator
        .post("credentials", &json!({"client_secret": secret}))
        .await
        .unwrap();
    let moto = Moto::start().await.unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    secrets
        .create_secret()
        .name("dynamics-crm/contoso")
        .secret_string(org.emulator.credentials_with_secret(secret).to_string())
        .send()
        .await
        .unwrap();
    let mut environment = moto.env();
    environment.push(("CRM_SECRETS".into(), "secretsmanager:dynamics-crm/".into()));

    // At the default level: request id, dataset and table are there; rows are not.
    let mut get = Function::start("get-record", &environment).await.unwrap();
    let payload: Value = serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap();
    let row = get.invoke(&payload).await.unwrap();
    let name = row["name"].as_str().unwrap().to_owned();
    expect_failure(
        get.invoke(&json!({"dataset": "contoso", "table": "accounts", "id": "0b8c6f4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"})).await,
        "Crm.NotFound",
        "",
    );
    let logs = get.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let retrieved = lines
        .iter()
        .find(|l| l["fields"]["message"] == "retrieved a record")
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(retrieved["fields"]["dataset"], "contoso");
    assert_eq!(retrieved["fields"]["table"], "account");
    assert!(retrieved.to_string().contains("requestId"), "{retrieved}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["error_type"] == "Crm.NotFound"),
        "{logs}"
    );
    assert!(!logs.contains(&name), "a row's data was logged: {logs}");

    // At trace level, with every library talking, including a refused secret after rotation.
    let mut chatty_env = environment.clone();
    chatty_env.push(("RUST_LOG".into(), "trace".into()));
    let mut chatty = Function::start("get-record", &chatty_env).await.unwrap();
    chatty.invoke(&payload).await.unwrap();
    org.emulator
        .post("credentials", &json!({"client_secret": "next-one"}))
        .await
        .unwrap();
    org.emulator
        .post("tokens/expire", &json!({}))
        .await
        .unwrap();
    expect_failure(
        chatty.invoke(&payload).await,
        "Crm.Unauthorized",
        "invalid_client",
    );
    let logs = chatty.logs();
    assert!(
        logs.len() > 10_000,
        "trace logging was on: {} bytes",
        logs.len()
    );
    assert!(!logs.contains(secret), "the client secret was logged");
    assert!(!logs.contains("eyJ0eXAi"), "an access token was logged");
}

#[tokio::test]
async fn stops_retrying_before_the_lambda_deadline() {
    let org = Org::start("demo").await;
    let mut get = org.function("get-record").await;
    let payload: Value = serde_json::from_str(include_str!(
        "../../../functions/get-record/events/get.json"
    ))
    .unwrap();
    get.invoke(&payload).await.unwrap();
    org.emulator
        .post(
            "faults",
            &json!({"delay_ms": 20_000, "times": 10, "path_contains": "/accounts("}),
        )
        .await
        .unwrap();
    org.take_log().await;
    let answer = get.invoke_within(&payload, Duration::from_secs(3)).await;
    // The function's own deadline (the invocation's, less a margin) cut the slow request: the error
    // names it, and it came from the function, not from the harness giving up on a silent one.
    let message = expect_failure(answer, "Crm.ServerError", "no answer before the deadline");
    assert!(
        message.contains("GET /api/data/v9.2/accounts("),
        "{message}"
    );
    // The function did not wait for Dataverse's answer: none came (the emulator logs a request once
    // it has answered it) ...
    let log = org.take_log().await;
    assert!(
        !log.iter().any(|(_, path, _)| path.contains("/accounts(")),
        "{log:?}"
    );
    // ... and it did not start another attempt it had no time for.
    let logs = get.logs();
    assert!(
        logs.contains("request failed; no time is left for another attempt"),
        "{logs}"
    );
    assert!(!logs.contains("request failed; retrying"), "{logs}");
}

#[tokio::test]
async fn accepts_its_payload_inside_an_eventbridge_event() {
    let org = Org::start("demo").await;
    let mut get = org.function("get-record").await;
    let event = json!({
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "source": "dynamics.crm",
        "detail-type": "Record Created", "time": "2026-11-26T10:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {
            "event_id": "4b1d", "dataset": "contoso", "table": "accounts",
            "id": "dd80f824-ab1a-4647-a924-c7dc65094c4d", "version": "1000053",
            "changed_on": "2026-11-26T10:00:00Z", "record": {"name": "A. Datum & Co"}
        }
    });
    let row = get.invoke(&event).await.unwrap();
    assert_eq!(row["accountid"], "dd80f824-ab1a-4647-a924-c7dc65094c4d");
}

#[tokio::test]
async fn list_records_counts_every_match_not_only_the_rows_returned() {
    let org = Org::start("none").await;
    for name in ["Alpha", "Beta", "Gamma"] {
        org.emulator.create_account(name).await.unwrap();
    }
    let mut list = org.function("list-records").await;
    let listed = list
        .invoke(
            &json!({"dataset": "contoso", "table": "accounts", "$top": 1, "$count": true,
            "$filter": "name ne 'Gamma'"}),
        )
        .await
        .unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
    assert_eq!(listed["count"], 2, "the filter's matches, past $top");
    let plain = list
        .invoke(&json!({"dataset": "contoso", "table": "accounts"}))
        .await
        .unwrap();
    assert!(plain.get("count").is_none(), "only when asked");
    org.take_log().await;
    let (error_type, _) = match list
        .invoke(&json!({"dataset": "contoso", "table": "accounts", "$count": "yes"}))
        .await
    {
        Err(Failure::Error {
            error_type,
            message,
        }) => (error_type, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(org.take_log().await.is_empty(), "nothing sent");
}
