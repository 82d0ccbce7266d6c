//! `dataverse-webhook` run as its binary through the Lambda Runtime API, fed Function URL requests
//! (payload format 2.0) carrying the `RemoteExecutionContext` Dataverse posts, against the emulator,
//! with events in a file, or on a fake EventBridge that refuses on demand.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e_tests::fake_eventbridge::{FakeEventBridge, Refuse};
use e2e_tests::function_url::FunctionUrl;
use e2e_tests::{Emulator, Function, LocalFiles, settle, webhooks_command};
use reqwest::Method;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The dataset's webhook key in these tests.
const KEY: &str = "Vq7-test-webhook-key-4c1d9e";
const CONTRACTS: &str = "http://schemas.microsoft.com/xrm/2011/Contracts";

struct Rig {
    emulator: Emulator,
    files: LocalFiles,
}

impl Rig {
    /// An empty organisation whose credentials carry a webhook key; events in a JSON-lines file.
    async fn new() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("webhook", &emulator).unwrap();
        let mut entry = emulator.credentials();
        entry["webhook_key"] = json!(KEY);
        std::fs::write(
            files.credentials(),
            json!({"contoso": entry, "fabrikam": emulator.credentials()}).to_string(),
        )
        .unwrap();
        Self { emulator, files }
    }

    async fn webhook(&self) -> Function {
        Function::start("dataverse-webhook", &self.files.env())
            .await
            .unwrap()
    }

    /// The function publishing to `fake` as EventBridge.
    async fn webhook_on(&self, fake: &FakeEventBridge) -> Function {
        let environment = self.files.env_on_eventbridge(fake.env(), "crm-events");
        Function::start("dataverse-webhook", &environment)
            .await
            .unwrap()
    }

    fn events(&self) -> Vec<Value> {
        self.files.published()
    }

    /// The account as the Web API returns it now.
    async fn row(&self, id: &str) -> Map<String, Value> {
        let (status, row) = self
            .emulator
            .api_get(&format!("accounts({id})"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{row}");
        let mut row = row.as_object().unwrap().clone();
        // A single row's answer names its metadata context; rows of a collection do not.
        row.remove("@odata.context");
        row
    }

    /// A Web API write to one account, which must answer `status`.
    async fn write(&self, method: Method, id: &str, body: Option<Value>, status: u16) {
        let (code, answer) = self
            .emulator
            .api(method, &format!("accounts({id})"), body.as_ref())
            .await
            .unwrap();
        assert_eq!(code, status, "{answer}");
    }

    /// The GETs of one account the emulator answered since the log was last cleared.
    async fn reads_of(&self, id: &str) -> usize {
        let wanted = format!("/api/data/v9.2/accounts({id})");
        self.emulator
            .requests()
            .await
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "GET" && e["path"].as_str().unwrap().starts_with(&wanted))
            .count()
    }
}

/// How a delivery carries the key: the `WebhookKey` and `HttpQueryString` auth types send `?code=`,
/// `HttpHeader` sends a header.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Code(&'a str),
    Header(&'a str),
    None,
}

/// A Function URL request as Lambda passes it to the function.
fn request(path: &str, auth: Auth<'_>, headers: &[(&str, &str)], body: &str) -> Value {
    let mut all: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    all.insert("content-type".into(), json!("application/json"));
    all.insert(
        "x-request-id".into(),
        json!("8c1e5d6a-0000-4000-8000-000000000001"),
    );
    let mut query = Map::new();
    match auth {
        Auth::Code(key) => {
            query.insert("code".into(), json!(key));
        }
        Auth::Header(key) => {
            all.insert("x-crm-webhook-key".into(), json!(key));
        }
        Auth::None => {}
    }
    let raw_query = query
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": raw_query,
        "headers": all, "isBase64Encoded": false, "body": body,
        "requestContext": {"http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
            "sourceIp": "20.0.0.1", "userAgent": "Microsoft Dynamics"}, "requestId": "r-1",
            "timeEpoch": 1_764_460_800_000_u64},
    });
    if !query.is_empty() {
        request["queryStringParameters"] = Value::Object(query);
    }
    request
}

/// A Web API row as WCF's serializer writes an entity: `{key, value}` attributes, lookups as
/// `EntityReference`s, dates as `/Date(ms)/`. Null columns are left out, as Dataverse leaves them
/// out of entity images.
fn wcf_entity(row: &Map<String, Value>) -> Value {
    let mut attributes = Vec::new();
    for (name, value) in row {
        if name.starts_with('@') || value.is_null() {
            continue;
        }
        if let Some(lookup) = name
            .strip_prefix('_')
            .and_then(|n| n.strip_suffix("_value"))
        {
            attributes.push(json!({"key": lookup, "value": {
                "__type": format!("EntityReference:{CONTRACTS}"), "Id": value,
                "LogicalName": "account", "Name": null}}));
            continue;
        }
        let date = value
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
        let value = match date {
            Some(at) => json!(format!("/Date({})/", at.unix_timestamp() * 1000)),
            None => value.clone(),
        };
        attributes.push(json!({"key": name, "value": value}));
    }
    json!({"__type": format!("Entity:{CONTRACTS}"), "Attributes": attributes,
        "LogicalName": "account", "Id": row["accountid"], "FormattedValues": [], "KeyAttributes": []})
}

/// The context of a creation as Dataverse sends it with a post-image: the row as Target and image.
fn created_context(id: &str, row: &Map<String, Value>) -> String {
    context(
        "Create",
        id,
        Some(wcf_entity(row)),
        Some(wcf_entity(row)),
        None,
    )
}

/// A `RemoteExecutionContext` for `message` on account `id`, asynchronous and post-operation.
fn context(
    message: &str,
    id: &str,
    target: Option<Value>,
    post: Option<Value>,
    pre: Option<Value>,
) -> String {
    let image = |entity: Option<Value>| match entity {
        Some(e) => json!([{"key": "Image", "value": e}]),
        None => json!([]),
    };
    let target = target.unwrap_or_else(|| {
        json!({"__type": format!("EntityReference:{CONTRACTS}"), "Id": id, "LogicalName": "account"})
    });
    json!({
        "BusinessUnitId": "00000000-0000-0000-0000-0000000000b1", "CorrelationId": "c0ffee00-0000-0000-0000-000000000001",
        "Depth": 1, "InitiatingUserId": "00000000-0000-0000-0000-0000000000a1",
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": false, "IsInTransaction": false, "IsolationMode": 1,
        "MessageName": message, "Mode": 1, "OperationCreatedOn": "/Date(1764460800000)/",
        "OperationId": "00000000-0000-0000-0000-0000000000c1", "OrganizationId": "00000000-0000-0000-0000-0000000000d1",
        "OrganizationName": "contoso", "OutputParameters": [],
        "OwningExtension": {"Id": "00000000-0000-0000-0000-0000000000e1", "LogicalName": "sdkmessageprocessingstep"},
        "PostEntityImages": image(post), "PreEntityImages": image(pre),
        "PrimaryEntityId": id, "PrimaryEntityName": "account", "RequestId": null,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40,
        "UserId": "00000000-0000-0000-0000-0000000000a1"
    })
    .to_string()
}

fn dynamics_headers(message: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-ms-dynamics-organization",
            "contoso.crm.dynamics.com".to_owned(),
        ),
        ("x-ms-dynamics-entity-name", "account".to_owned()),
        ("x-ms-dynamics-request-name", message.to_owned()),
    ]
}

/// Delivers `body` for `message` with `auth` (and any extra headers) and returns the Function URL
/// response.
async fn deliver(
    webhook: &mut Function,
    auth: Auth<'_>,
    message: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Value {
    deliver_to(webhook, "/contoso", auth, message, extra, body).await
}

/// [`deliver`] to another path, as an endpoint registered with a filter has.
async fn deliver_to(
    webhook: &mut Function,
    path: &str,
    auth: Auth<'_>,
    message: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Value {
    let owned = dynamics_headers(message);
    let mut headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.extend_from_slice(extra);
    match webhook.invoke(&request(path, auth, &headers, body)).await {
        Ok(response) => response,
        Err(e) => panic!("the webhook failed: {e}\n{}", webhook.logs()),
    }
}

fn status(response: &Value) -> u64 {
    response["statusCode"].as_u64().unwrap()
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

/// The row with its null columns left out, as an image carries it.
fn without_nulls(row: &Map<String, Value>) -> Map<String, Value> {
    row.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn the_three_auth_types_are_accepted_and_a_wrong_or_missing_key_is_401() {
    let rig = Rig::new().await;
    let id = rig.emulator.create_account("Ada").await.unwrap();
    let row = rig.row(&id).await;
    let created = created_context(&id, &row);
    let mut webhook = rig.webhook().await;

    // WebhookKey and HttpQueryString (with its parameter named `code`) send the same request.
    let by_code = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &created).await;
    assert_eq!(status(&by_code), 200, "{by_code}");
    let by_header = deliver(&mut webhook, Auth::Header(KEY), "Create", &[], &created).await;
    assert_eq!(status(&by_header), 200, "{by_header}");

    let wrong = "Vq7-test-webhook-key-4c1d9X";
    for auth in [
        Auth::Code(wrong),
        Auth::Header(wrong),
        Auth::Code(""),
        Auth::None,
    ] {
        let refused = deliver(&mut webhook, auth, "Create", &[], &created).await;
        assert_eq!(status(&refused), 401, "{refused}");
    }
    // A dataset without a key refuses every delivery alike.
    let other = webhook
        .invoke(&request("/fabrikam", Auth::Code(KEY), &[], &created))
        .await
        .unwrap();
    assert_eq!(status(&other), 401, "{other}");
    // A dataset the secrets do not know is refused alike.
    let unknown = webhook
        .invoke(&request("/initech", Auth::Code(KEY), &[], &created))
        .await
        .unwrap();
    assert_eq!(status(&unknown), 401, "{unknown}");

    assert_eq!(
        rig.events().len(),
        2,
        "only the authenticated deliveries published"
    );
    let logs = webhook
        .logs_with("this dataset has no webhook key; every delivery to it is refused")
        .await;
    assert!(
        logs.contains("this dataset has no webhook key; every delivery to it is refused"),
        "{logs}"
    );
    let logs = webhook
        .logs_with("a delivery names a dataset without credentials")
        .await;
    assert!(
        logs.contains("a delivery names a dataset without credentials"),
        "{logs}"
    );
    assert!(
        !logs.contains(KEY) && !logs.contains(wrong),
        "a key reached the logs:\n{logs}"
    );
}

#[tokio::test]
async fn a_pushed_change_matches_the_polled_one_event_id_and_record() {
    let rig = Rig::new().await;
    let mut created_trigger = Function::start("when-record-created", &rig.files.env())
        .await
        .unwrap();
    let mut updated_trigger = Function::start("when-record-updated", &rig.files.env())
        .await
        .unwrap();
    let start = json!({"dataset": "contoso", "table": "accounts"});
    // Both cursors start now, before the changes.
    created_trigger.invoke(&start).await.unwrap();
    updated_trigger.invoke(&start).await.unwrap();
    settle(&rig.emulator).await.unwrap();

    let id = rig.emulator.create_account("Grace").await.unwrap();
    let mut webhook = rig.webhook().await;
    let row = rig.row(&id).await;
    let pushed = deliver(
        &mut webhook,
        Auth::Code(KEY),
        "Create",
        &[],
        &created_context(&id, &row),
    )
    .await;
    assert_eq!(status(&pushed), 200, "{pushed}");
    settle(&rig.emulator).await.unwrap();
    created_trigger.invoke(&start).await.unwrap();

    settle(&rig.emulator).await.unwrap();
    rig.write(
        Method::PATCH,
        &id,
        Some(json!({"telephone1": "555-0100"})),
        200,
    )
    .await;
    let updated_row = rig.row(&id).await;
    let pushed_update = deliver(
        &mut webhook,
        Auth::Header(KEY),
        "Update",
        &[],
        &context(
            "Update",
            &id,
            Some(json!({"Attributes": [{"key": "telephone1", "value": "555-0100"}], "Id": id, "LogicalName": "account"})),
            Some(wcf_entity(&updated_row)),
            Some(wcf_entity(&row)),
        ),
    )
    .await;
    assert_eq!(status(&pushed_update), 200, "{pushed_update}");
    settle(&rig.emulator).await.unwrap();
    updated_trigger.invoke(&start).await.unwrap();

    let events = rig.events();
    assert_eq!(events.len(), 4, "{events:#?}");
    for (kind, expected_row) in [("Record Created", &row), ("Record Updated", &updated_row)] {
        let of_kind: Vec<&Value> = events.iter().filter(|e| e["detail-type"] == kind).collect();
        let [push, poll] = of_kind.as_slice() else {
            panic!("one pushed and one polled {kind}: {events:#?}");
        };
        let (push, poll) = (&push["detail"], &poll["detail"]);
        assert_eq!(push["via"], "webhook");
        assert!(poll.get("via").is_none());
        assert_eq!(
            push["event_id"], poll["event_id"],
            "{kind}: one change, one event id"
        );
        for field in ["dataset", "table", "id", "version", "changed_on"] {
            assert_eq!(push[field], poll[field], "{kind}: {field}");
        }
        // The polled record is the row as the Web API sent it; the pushed one is the image rewritten
        // to that shape, which leaves out null columns as images do.
        assert_eq!(
            poll["record"],
            Value::Object(expected_row.clone()),
            "{kind}"
        );
        assert_eq!(
            push["record"],
            Value::Object(without_nulls(expected_row)),
            "{kind}"
        );
    }
    // The answer names the event it published.
    assert_eq!(body(&pushed)["event_id"], events[0]["detail"]["event_id"]);
}

#[tokio::test]
async fn a_replayed_delivery_keeps_its_event_id_and_a_deletion_needs_no_row() {
    let rig = Rig::new().await;
    let id = rig.emulator.create_account("Edsger").await.unwrap();
    let row = rig.row(&id).await;
    let mut webhook = rig.webhook().await;
    let created = created_context(&id, &row);
    for _ in 0..2 {
        let answer = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &created).await;
        assert_eq!(status(&answer), 200, "{answer}");
    }
    rig.write(Method::DELETE, &id, None, 204).await;
    rig.emulator.clear_requests().await.unwrap();
    let deleted = context("Delete", &id, None, None, Some(wcf_entity(&row)));
    let answer = deliver(&mut webhook, Auth::Code(KEY), "Delete", &[], &deleted).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(
        rig.reads_of(&id).await,
        0,
        "a deletion publishes without reading the row"
    );

    let events = rig.events();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["detail"]["event_id"],
        events[1]["detail"]["event_id"]
    );
    assert_eq!(events[2]["detail-type"], "Record Deleted");
    assert_eq!(events[2]["detail"]["id"], id.as_str());
    assert!(events[2]["detail"].get("record").is_none());
    assert_ne!(
        events[2]["detail"]["event_id"],
        events[0]["detail"]["event_id"]
    );
}

#[tokio::test]
async fn a_context_cut_for_size_or_without_a_usable_image_reads_the_row() {
    let rig = Rig::new().await;
    let id = rig.emulator.create_account("Barbara").await.unwrap();
    let row = rig.row(&id).await;
    let mut webhook = rig.webhook().await;
    rig.emulator.clear_requests().await.unwrap();

    // Cut for size: Dataverse sent the context without its parameters and images.
    // Cut for size: the header says the context lost its images. This one still has a stale image,
    // which must not be trusted over the header.
    let mut stale = row.clone();
    stale.insert("name".into(), json!("stale"));
    let cut = context(
        "Create",
        &id,
        Some(json!(null)),
        Some(wcf_entity(&stale)),
        None,
    );
    let answer = deliver(
        &mut webhook,
        Auth::Code(KEY),
        "Create",
        &[("x-ms-dynamics-msg-size-exceeded", "true")],
        &cut,
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(rig.reads_of(&id).await, 1, "the row was read");

    // An update with no post-image: its Target holds only what changed, and no version.
    let update = context(
        "Update",
        &id,
        Some(
            json!({"Attributes": [{"key": "name", "value": "Barbara"}], "Id": id, "LogicalName": "account"}),
        ),
        None,
        None,
    );
    let answer = deliver(&mut webhook, Auth::Code(KEY), "Update", &[], &update).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(rig.reads_of(&id).await, 2);

    // An image with a value of a shape not known here (a file column's bytes): the delivery is
    // authentic, so the row is read rather than the change refused for good.
    let mut odd = wcf_entity(&row);
    odd["Attributes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "entityimage", "value": [137, 80, 78, 71]}));
    let odd = context("Update", &id, None, Some(odd), None);
    let answer = deliver(&mut webhook, Auth::Code(KEY), "Update", &[], &odd).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(rig.reads_of(&id).await, 3);

    let events = rig.events();
    assert_eq!(events.len(), 3);
    for event in &events {
        assert_eq!(event["detail"]["record"], Value::Object(row.clone()));
    }
    assert_eq!(
        events[1]["detail"]["version"],
        row["versionnumber"].to_string().as_str()
    );

    // A row deleted before its delivery is read: nothing to publish, and nothing to retry.
    rig.write(Method::DELETE, &id, None, 204).await;
    let late = deliver(&mut webhook, Auth::Code(KEY), "Update", &[], &update).await;
    assert_eq!(status(&late), 200, "{late}");
    assert_eq!(body(&late)["published"], false);
    assert_eq!(rig.events().len(), 3);
}

#[tokio::test]
async fn an_event_bridge_refusal_answers_503_and_the_redelivery_publishes_the_same_event() {
    let rig = Rig::new().await;
    let fake = FakeEventBridge::start(Duration::ZERO).await.unwrap();
    let id = rig.emulator.create_account("Frances").await.unwrap();
    let row = rig.row(&id).await;
    let mut webhook = rig.webhook_on(&fake).await;
    // Refused until cleared: the function's own retries of the entry run out, and it answers 503.
    fake.refuse(Refuse::detail("id", &id).code("InternalFailure", "try again"));
    let created = created_context(&id, &row);

    let first = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &created).await;
    assert_eq!(status(&first), 503, "{first}");
    // Dataverse's asynchronous service sends it again, and now EventBridge takes it.
    fake.clear();
    let again = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &created).await;
    assert_eq!(status(&again), 200, "{again}");

    let received = fake.received();
    let (accepted, refused): (Vec<_>, Vec<_>) = received.iter().partition(|r| r.accepted());
    assert_eq!(accepted.len(), 1, "{received:?}");
    assert!(!refused.is_empty(), "{received:?}");
    let published = accepted[0];
    assert!(
        received
            .iter()
            .all(|r| r.event_id() == published.event_id())
    );
    assert_eq!(published.source, "contoso.crm");
    assert_eq!(published.detail_type, "Record Created");
    assert_eq!(published.detail["via"], "webhook");
    assert_eq!(body(&again)["event_id"], published.event_id());
}

#[tokio::test]
async fn malformed_deliveries_are_refused_and_publish_nothing() {
    let rig = Rig::new().await;
    let mut webhook = rig.webhook().await;
    let id = "6d81597f-0000-4000-8000-000000000001";
    // Each is refused with 400 and a message naming what was wrong.
    let cases: Vec<(String, &str)> = vec![
        ("{\"MessageName\": ".to_owned(), "not JSON"),
        (
            json!({"MessageName": "Create", "PrimaryEntityName": "account"}).to_string(),
            "missing `PrimaryEntityId`",
        ),
        (context("Assign", id, None, None, None), "'Assign'"),
        (
            context(
                "Create",
                id,
                Some(
                    json!({"Attributes": [{"key": "description", "value": "x".repeat(600 * 1024)}]}),
                ),
                None,
                None,
            ),
            "at most 524288 are read",
        ),
    ];
    for (body, names) in cases {
        let answer = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &body).await;
        assert_eq!(status(&answer), 400, "{names}: {answer}");
        let message = self::body(&answer)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(names), "{names}: {answer}");
    }
    // Not a delivery at all: another method, another path, not a Function URL request.
    let mut get = request("/contoso", Auth::Code(KEY), &[], "{}");
    get["requestContext"]["http"]["method"] = json!("GET");
    assert_eq!(status(&webhook.invoke(&get).await.unwrap()), 405);
    let nested = request("/contoso/accounts", Auth::Code(KEY), &[], "{}");
    assert_eq!(status(&webhook.invoke(&nested).await.unwrap()), 404);
    let plain = webhook
        .invoke(&json!({"dataset": "contoso"}))
        .await
        .unwrap();
    assert_eq!(status(&plain), 400);

    assert!(rig.events().is_empty(), "nothing published");
    let logs = webhook.logs_with("delivery refused").await;
    assert!(logs.contains("delivery refused"), "{logs}");
}

#[tokio::test]
async fn a_filtered_endpoint_judges_deletions_by_the_pre_image_and_publishes_in_doubt() {
    let rig = Rig::new().await;
    let mut webhook = rig.webhook().await;
    // `/contoso/where/<base64url of the filter>`, as `webhooks register --filter` makes it.
    let oslo = "/contoso/where/YWRkcmVzczFfY2l0eSBlcSAnT3Nsbyc"; // address1_city eq 'Oslo'
    let id = rig.emulator.create_account("Grace").await.unwrap();
    let mut row = rig.row(&id).await;
    let delete = |before: Option<&Map<String, Value>>| {
        context("Delete", &id, None, None, before.map(wcf_entity))
    };
    let mut send = async |path: &str, message: &str, extra: &[(&str, &str)], body: String| {
        deliver_to(&mut webhook, path, Auth::Code(KEY), message, extra, &body).await
    };

    row.insert("address1_city".into(), json!("Bergen"));
    let answer = send(oslo, "Delete", &[], delete(Some(&row))).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(body(&answer)["published"], false);
    assert_eq!(body(&answer)["matched"], false);
    assert!(rig.events().is_empty());

    // Case-insensitive, as Dataverse compares text.
    row.insert("address1_city".into(), json!("OSLO"));
    let answer = send(oslo, "Delete", &[], delete(Some(&row))).await;
    assert_eq!(body(&answer)["published"], true, "{answer}");
    assert_eq!(body(&answer)["matched"], true);

    // Cut for size, the pre-image is gone: published rather than lost, with a warning.
    let cut = [("x-ms-dynamics-msg-size-exceeded", "true")];
    let answer = send(oslo, "Delete", &cut, delete(None)).await;
    assert_eq!(body(&answer)["published"], true, "{answer}");

    // A creation is judged by the row it made.
    row.insert("address1_city".into(), json!("Bergen"));
    let answer = send(oslo, "Create", &[], created_context(&id, &row)).await;
    assert_eq!(body(&answer)["matched"], false, "{answer}");

    // Only the registration writes the path: a filter that cannot be used is this side's fault
    // (500, so Dataverse records a failed job); a path that is not a filter is no endpoint (404).
    let unusable = "/contoso/where/bmFtZS9jaXR5IGVxICd4Jw"; // name/city eq 'x': a navigation path
    let answer = send(unusable, "Delete", &[], delete(Some(&row))).await;
    assert_eq!(status(&answer), 500, "{answer}");
    assert!(
        body(&answer)["error"].as_str().unwrap().contains("filter"),
        "{answer}"
    );
    for wrong in ["/contoso/where/%%%", "/contoso/where", "/contoso/when/YQ"] {
        let answer = send(wrong, "Delete", &[], delete(Some(&row))).await;
        assert_eq!(status(&answer), 404, "{wrong}: {answer}");
    }

    let events = rig.events();
    assert_eq!(
        events.len(),
        2,
        "the matching deletion and the one in doubt"
    );
    assert_eq!(
        events[0]["detail"]["event_id"], events[1]["detail"]["event_id"],
        "one deletion"
    );
    let logs = webhook.logs_with("cannot be known").await;
    assert!(logs.contains("cannot be known; publishing it"), "{logs}");
}

/// Every row of an entity set, as the Web API lists it.
async fn rows_of(rig: &Rig, set: &str) -> Vec<Value> {
    let (status, page) = rig.emulator.api_get(set).await.unwrap();
    assert_eq!(status, 200, "{set}: {page}");
    page["value"].as_array().unwrap().clone()
}

/// How many endpoints, steps and images are registered.
async fn registered(rig: &Rig) -> [usize; 3] {
    [
        rows_of(rig, "serviceendpoints").await.len(),
        rows_of(rig, "sdkmessageprocessingsteps").await.len(),
        rows_of(rig, "sdkmessageprocessingstepimages").await.len(),
    ]
}

fn outcome_counts(answer: &Value) -> [usize; 3] {
    ["created", "updated", "deleted"].map(|k| answer["outcome"][k].as_array().unwrap().len())
}

#[tokio::test]
async fn the_webhooks_command_registers_once_lists_and_removes_without_orphans() {
    let rig = Rig::new().await;
    let env = rig.files.env();
    let receiver = "https://abc123.lambda-url.eu-west-1.on.aws/";
    let register = [
        "register",
        "--dataset",
        "contoso",
        "--table",
        "accounts",
        "--url",
        receiver,
        "--columns",
        "name,telephone1",
    ];
    let first = webhooks_command(&env, &register).await.unwrap();
    assert_eq!(first["endpoint"], format!("{receiver}contoso"));
    assert_eq!(
        outcome_counts(&first),
        [7, 0, 0],
        "an endpoint, three steps, three images: {first}"
    );
    assert_eq!(registered(&rig).await, [1, 3, 3]);
    // Each image is taken from the message property Dataverse names for its message.
    let mut kinds: Vec<(i64, String)> = rows_of(&rig, "sdkmessageprocessingstepimages")
        .await
        .iter()
        .map(|i| {
            (
                i["imagetype"].as_i64().unwrap(),
                i["messagepropertyname"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [(0, "Target".into()), (1, "Id".into()), (1, "Target".into())],
        "a pre-image for Delete, post-images for Create and Update"
    );
    let again = webhooks_command(&env, &register).await.unwrap();
    assert_eq!(
        outcome_counts(&again),
        [0, 0, 0],
        "registering twice changes nothing: {again}"
    );
    assert_eq!(registered(&rig).await, [1, 3, 3]);

    // The steps are what Dataverse needs for asynchronous post-operation webhooks.
    for step in &rows_of(&rig, "sdkmessageprocessingsteps").await {
        assert_eq!(
            (step["stage"].as_i64(), step["mode"].as_i64()),
            (Some(40), Some(1)),
            "{step}"
        );
        let is_update = step["name"].as_str().unwrap().contains("Update of account");
        assert_eq!(
            step["filteringattributes"]
                .as_str()
                .filter(|s| !s.is_empty()),
            is_update.then_some("name,telephone1"),
            "{step}"
        );
    }
    let listed = webhooks_command(&env, &["list", "--dataset", "contoso"])
        .await
        .unwrap();
    let endpoints = listed["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{listed}");
    assert_eq!(endpoints[0]["url"], format!("{receiver}contoso"));
    assert_eq!(endpoints[0]["steps"].as_array().unwrap().len(), 3);
    assert!(
        !listed.to_string().contains(KEY),
        "the key is never printed"
    );

    // Changing the filtered columns updates the one step it concerns.
    let mut narrower = register.to_vec();
    *narrower.last_mut().unwrap() = "name";
    let changed = webhooks_command(&env, &narrower).await.unwrap();
    assert_eq!(outcome_counts(&changed), [0, 1, 0], "{changed}");

    let removed = webhooks_command(&env, &["remove", "--dataset", "contoso", "--url", receiver])
        .await
        .unwrap();
    assert_eq!(outcome_counts(&removed), [0, 0, 7], "{removed}");
    assert_eq!(registered(&rig).await, [0, 0, 0], "nothing orphaned");

    // Without a webhook key there is nothing to register with.
    let refused = webhooks_command(
        &env,
        &[
            "register",
            "--dataset",
            "fabrikam",
            "--table",
            "accounts",
            "--url",
            receiver,
        ],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("no webhook_key"), "{refused}");
}

#[tokio::test]
async fn the_emulator_pushes_registered_changes_through_a_function_url() {
    let rig = Rig::new().await;
    let receiver = FunctionUrl::start(rig.webhook().await).await.unwrap();
    let env = rig.files.env();
    for auth in ["webhook-key", "http-header", "http-query-string"] {
        let id = rig
            .emulator
            .create_account(&format!("before {auth}"))
            .await
            .unwrap();
        webhooks_command(
            &env,
            &[
                "register",
                "--dataset",
                "contoso",
                "--table",
                "account",
                "--url",
                receiver.url(),
                "--columns",
                "name",
                "--auth",
                auth,
                "--update-key",
            ],
        )
        .await
        .unwrap();
        rig.emulator
            .client()
            .clear_webhook_deliveries()
            .await
            .unwrap();
        let before = rig.events().len();

        let created = rig
            .emulator
            .create_account(&format!("pushed with {auth}"))
            .await
            .unwrap();
        rig.write(
            Method::PATCH,
            &created,
            Some(json!({"name": "renamed"})),
            200,
        )
        .await;
        // telephone1 is not among the update step's columns: no delivery for this one.
        rig.write(
            Method::PATCH,
            &created,
            Some(json!({"telephone1": "555"})),
            200,
        )
        .await;
        rig.write(Method::DELETE, &id, None, 204).await;

        let log = rig
            .emulator
            .client()
            .webhook_deliveries(true)
            .await
            .unwrap();
        assert!(!log.timed_out && log.pending == 0, "{log:?}");
        assert_eq!(log.deliveries.len(), 3, "{auth}: {log:?}");
        assert!(
            log.deliveries
                .iter()
                .all(|d| d.attempts.last().and_then(|a| a.status) == Some(200)),
            "{auth}: {log:?}"
        );
        let events = rig.events();
        let new = &events[before..];
        let kinds: Vec<&str> = new
            .iter()
            .map(|e| e["detail-type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.len(), 3, "{auth}: {new:#?}");
        for kind in ["Record Created", "Record Updated", "Record Deleted"] {
            assert!(kinds.contains(&kind), "{auth}: {kinds:?}");
        }
        assert!(new.iter().all(|e| e["detail"]["via"] == "webhook"));
        let updated = new
            .iter()
            .find(|e| e["detail-type"] == "Record Updated")
            .unwrap();
        assert_eq!(updated["detail"]["record"]["name"], "renamed");
        assert!(
            updated["detail"]["record"].get("telephone1").is_none(),
            "the row as the rename left it, not as the later update did"
        );
        // The post-image is the row as that update left it, before the next one.
        assert_eq!(
            updated["detail"]["version"],
            updated["detail"]["record"]["versionnumber"]
                .to_string()
                .as_str()
        );
    }
    let logs = receiver.function().await.logs();
    assert!(!logs.contains(KEY), "{logs}");
}

#[tokio::test]
async fn a_receiver_without_an_event_sink_answers_500_rather_than_drop_deliveries() {
    let rig = Rig::new().await;
    let environment: Vec<(String, String)> = rig
        .files
        .env()
        .into_iter()
        .filter(|(k, _)| k != "CRM_EVENTS")
        .collect();
    let mut webhook = Function::start("dataverse-webhook", &environment)
        .await
        .unwrap();
    let id = rig.emulator.create_account("Radia").await.unwrap();
    let row = rig.row(&id).await;
    let created = created_context(&id, &row);
    let answer = deliver(&mut webhook, Auth::Code(KEY), "Create", &[], &created).await;
    assert_eq!(status(&answer), 500, "{answer}");
    let logs = webhook.logs_with("CRM_EVENTS is not set").await;
    assert!(logs.contains("CRM_EVENTS is not set"), "{logs}");
}
