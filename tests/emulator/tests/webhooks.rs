//! Webhooks: registrations written through the Web API with Dataverse's rules, and the execution
//! contexts the emulator posts to them after each change, with retries and a delivery log.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::{AuthType, DeliveryState, Message, NewTable};
use reqwest::Method;
use serde_json::{Map, Value, json};
use support::receiver::Receiver;
use support::{Emulator, expect_error};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const CONTRACTS: &str = "http://schemas.microsoft.com/xrm/2011/Contracts";
/// A key with characters a query string must escape.
const KEY: &str = "Vq7 key&more=1/+";

/// The first row of a query's answer.
async fn first(emulator: &Emulator, path: &str) -> Value {
    let body = emulator.get_json(path).await;
    body["value"][0].clone()
}

async fn message_id(emulator: &Emulator, message: &str) -> String {
    let row = first(
        emulator,
        &format!("sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"),
    )
    .await;
    row["sdkmessageid"].as_str().expect(message).to_owned()
}

async fn filter_id(emulator: &Emulator, table: &str, message: &str) -> String {
    let message = message_id(emulator, message).await;
    let row = first(
        emulator,
        &format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq '{table}' and _sdkmessageid_value eq {message}"
        ),
    )
    .await;
    row["sdkmessagefilterid"].as_str().expect(table).to_owned()
}

async fn post(emulator: &Emulator, set: &str, body: &Value) -> reqwest::Response {
    emulator
        .request(Method::POST, set)
        .header("Prefer", "return=representation")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn patch(emulator: &Emulator, path: &str, body: &Value) -> reqwest::Response {
    emulator
        .request(Method::PATCH, path)
        .header("If-Match", "*")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn delete(emulator: &Emulator, path: &str) -> reqwest::Response {
    emulator.request(Method::DELETE, path).send().await.unwrap()
}

/// A `WebhookKey` endpoint at `url`; returns its id.
async fn endpoint(emulator: &Emulator, url: &str) -> String {
    endpoint_with(emulator, url, 4, KEY).await
}

async fn endpoint_with(emulator: &Emulator, url: &str, authtype: i64, authvalue: &str) -> String {
    let row = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": url, "authtype": authtype,
                "authvalue": authvalue, "messageformat": 2}),
        )
        .await;
    row["serviceendpointid"].as_str().unwrap().to_owned()
}

/// The body of an asynchronous post-operation step for `message` on `table`.
async fn step_body(emulator: &Emulator, message: &str, table: &str, endpoint: &str) -> Value {
    json!({
        "name": format!("{table} {message} webhook"),
        "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0, "asyncautodelete": false,
        "sdkmessageid@odata.bind": format!("/sdkmessages({})", message_id(emulator, message).await),
        "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({})", filter_id(emulator, table, message).await),
        "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
    })
}

/// Registers the step with `extra` columns; returns its id.
async fn step(
    emulator: &Emulator,
    message: &str,
    table: &str,
    endpoint: &str,
    extra: Value,
) -> String {
    let mut body = step_body(emulator, message, table, endpoint).await;
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let row = emulator.create("sdkmessageprocessingsteps", body).await;
    row["sdkmessageprocessingstepid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn image_body(
    step: &str,
    alias: &str,
    imagetype: i64,
    property: &str,
    attributes: Option<&str>,
) -> Value {
    json!({
        "name": alias, "entityalias": alias, "imagetype": imagetype,
        "messagepropertyname": property, "attributes": attributes,
        "sdkmessageprocessingstepid@odata.bind": format!("/sdkmessageprocessingsteps({step})"),
    })
}

async fn image(
    emulator: &Emulator,
    step: &str,
    alias: &str,
    imagetype: i64,
    property: &str,
    attributes: Option<&str>,
) -> String {
    let row = emulator
        .create(
            "sdkmessageprocessingstepimages",
            image_body(step, alias, imagetype, property, attributes),
        )
        .await;
    row["sdkmessageprocessingstepimageid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The id in an `OData-EntityId` address.
fn created_id(response: &reqwest::Response) -> String {
    let address = response.headers()["odata-entityid"].to_str().unwrap();
    address[address.rfind('(').unwrap() + 1..address.len() - 1].to_owned()
}

async fn create_row(emulator: &Emulator, set: &str, body: Value) -> String {
    let response = emulator
        .request(Method::POST, set)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "POST {set}");
    created_id(&response)
}

/// The row as the Web API returns it, without its context annotation.
async fn web_api_row(emulator: &Emulator, path: &str) -> Map<String, Value> {
    let mut row = emulator.get_json(path).await.as_object().unwrap().clone();
    row.remove("@odata.context");
    row
}

fn without_nulls(row: &Map<String, Value>) -> Map<String, Value> {
    row.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An entity of a context read back as the receiver (`shared/connector/src/webhook/context.rs`)
/// reads it: lookups as `_x_value`, data contracts as their `Value`, WCF dates as ISO 8601.
fn as_web_api_row(entity: &Value, primary_id: &str) -> Map<String, Value> {
    let mut row = Map::new();
    for pair in entity["Attributes"].as_array().unwrap() {
        let key = pair["key"].as_str().unwrap();
        let value = &pair["value"];
        let kind = value["__type"].as_str().unwrap_or_default();
        if kind.starts_with("EntityReference:") {
            row.insert(format!("_{key}_value"), value["Id"].clone());
        } else if kind.starts_with("OptionSetValue:") || kind.starts_with("Money:") {
            row.insert(key.to_owned(), value["Value"].clone());
        } else if let Some(ms) = value
            .as_str()
            .and_then(|s| s.strip_prefix("/Date("))
            .and_then(|s| s.strip_suffix(")/"))
        {
            let at =
                OffsetDateTime::from_unix_timestamp(ms.parse::<i64>().unwrap() / 1000).unwrap();
            row.insert(key.to_owned(), json!(at.format(&Rfc3339).unwrap()));
        } else {
            assert!(kind.is_empty(), "an unexpected data contract: {value}");
            row.insert(key.to_owned(), value.clone());
        }
    }
    row.entry(primary_id.to_owned())
        .or_insert_with(|| entity["Id"].clone());
    if let Some(version) = row.get("versionnumber").and_then(Value::as_u64) {
        row.insert("@odata.etag".into(), json!(format!("W/\"{version}\"")));
    }
    row
}

/// A WCF dictionary's entry.
fn entry<'a>(pairs: &'a Value, key: &str) -> &'a Value {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .map_or(&Value::Null, |p| &p["value"])
}

fn sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names
}

fn attribute_names(entity: &Value) -> Vec<&str> {
    entity["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn registrations_are_checked_as_dataverse_checks_them() {
    let emulator = Emulator::empty().await;
    let url = "http://127.0.0.1:9/hook";
    let endpoint_cases = [
        (
            json!({"name": "e", "url": url, "authtype": 4, "authvalue": "k"}),
            400,
            "contract",
        ),
        (
            json!({"name": "e", "contract": 8, "authtype": 4, "authvalue": "k"}),
            400,
            "'url'",
        ),
        (
            json!({"name": "e", "contract": 8, "url": "hook", "authtype": 4, "authvalue": "k"}),
            400,
            "absolute URL",
        ),
        (
            json!({"name": "e", "contract": 8, "url": "ftp://h/x", "authtype": 4, "authvalue": "k"}),
            400,
            "http or https",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authvalue": "k"}),
            400,
            "authtype",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authtype": 2, "authvalue": "k"}),
            400,
            "authtype",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authtype": 4}),
            400,
            "WebhookKey",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authtype": 5, "authvalue": "k"}),
            400,
            "<settings>",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authtype": 6, "authvalue": "<settings></settings>"}),
            400,
            "no <setting>",
        ),
        (
            json!({"name": "e", "contract": 8, "url": url, "authtype": 4, "authvalue": "k", "messageformat": 1}),
            400,
            "messageformat",
        ),
        (
            json!({"contract": 8, "url": url, "authtype": 4, "authvalue": "k"}),
            400,
            "'name'",
        ),
        (
            json!({"name": "e", "contract": 11, "url": url, "authtype": 4, "authvalue": "k"}),
            400,
            "outside the valid range",
        ),
    ];
    for (body, status, part) in endpoint_cases {
        let code = if part == "outside the valid range" {
            "0x80044331"
        } else {
            "0x80040203"
        };
        expect_error(
            post(&emulator, "serviceendpoints", &body).await,
            status,
            code,
            part,
        )
        .await;
    }
    // Other contracts are Dataverse features the emulator does not deliver.
    let queue = json!({"name": "q", "contract": 2, "url": "https://sb.example/q", "authtype": 2});
    expect_error(
        post(&emulator, "serviceendpoints", &queue).await,
        501,
        "0x80040216",
        "contract 2",
    )
    .await;

    // The key is never read back; whether one is set is.
    let endpoint = endpoint(&emulator, url).await;
    let row = emulator
        .get_json(&format!("serviceendpoints({endpoint})"))
        .await;
    assert_eq!(row["authvalue"], Value::Null);
    assert_eq!(row["isauthvalueset"], true);
    assert_eq!(row["messageformat"], 2);
    assert_eq!(
        row["_organizationid_value"].as_str().map(str::len),
        Some(36)
    );
    assert!(row.get("_ownerid_value").is_none() && row.get("statecode").is_none());
    let found = emulator
        .get_json("serviceendpoints?$select=name&$filter=authvalue ne null")
        .await;
    assert_eq!(
        found["value"],
        json!([]),
        "the key cannot be found by filtering on it"
    );
    // A new auth type must come with a value of its own: the stored key is no settings list.
    expect_error(
        patch(
            &emulator,
            &format!("serviceendpoints({endpoint})"),
            &json!({"authtype": 5}),
        )
        .await,
        400,
        "0x80040203",
        "<settings>",
    )
    .await;

    // The platform's own tables are read-only.
    expect_error(
        post(&emulator, "sdkmessages", &json!({"name": "Merge"})).await,
        400,
        "0x80040800",
        "'Create' method does not support entities of type 'sdkmessage'",
    )
    .await;
    let filter = filter_id(&emulator, "account", "Create").await;
    expect_error(
        delete(&emulator, &format!("sdkmessagefilters({filter})")).await,
        400,
        "0x80040800",
        "'Delete' method",
    )
    .await;
    expect_error(
        patch(
            &emulator,
            &format!("sdkmessagefilters({filter})"),
            &json!({"name": "x"}),
        )
        .await,
        400,
        "0x80040800",
        "'Update' method",
    )
    .await;

    let good = step_body(&emulator, "Update", "account", &endpoint).await;
    let with = |changes: Value| {
        let mut body = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let create_filter = filter_id(&emulator, "account", "Create").await;
    let step_cases = [
        (
            with(json!({"stage": 20})),
            400,
            "0x80040203",
            "PostOperation stage (40)",
        ),
        (
            with(json!({"stage": 10})),
            400,
            "0x80040203",
            "PostOperation stage (40)",
        ),
        (
            with(json!({"mode": 0})),
            501,
            "0x80040216",
            "synchronous steps",
        ),
        (with(json!({"stage": null})), 400, "0x80040203", "'stage'"),
        (with(json!({"name": null})), 400, "0x80040203", "'name'"),
        (
            with(json!({"eventhandler_serviceendpoint@odata.bind": null})),
            400,
            "0x80040203",
            "'eventhandler'",
        ),
        (
            with(
                json!({"sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({create_filter})")}),
            ),
            400,
            "0x80040203",
            "does not belong to the step's message 'Update'",
        ),
        (
            with(json!({"sdkmessagefilterid@odata.bind": null})),
            501,
            "0x80040216",
            "without an sdkmessagefilterid",
        ),
        (
            with(json!({"filteringattributes": "name,nosuchcolumn"})),
            400,
            "0x80040203",
            "'nosuchcolumn'",
        ),
        (
            with(json!({"filteringattributes": "_parentaccountid_value"})),
            400,
            "0x80040203",
            "'_parentaccountid_value'",
        ),
        (
            with(json!({"supporteddeployment": 1})),
            501,
            "0x80040216",
            "Outlook",
        ),
        (
            with(
                json!({"eventhandler_serviceendpoint@odata.bind": null, "eventhandler_plugintype@odata.bind": format!("/plugintypes({endpoint})")}),
            ),
            501,
            "0x80040216",
            "plugintype",
        ),
    ];
    for (body, status, code, part) in step_cases {
        expect_error(
            post(&emulator, "sdkmessageprocessingsteps", &body).await,
            status,
            code,
            part,
        )
        .await;
    }
    let update_step = step(
        &emulator,
        "Update",
        "account",
        &endpoint,
        json!({"filteringattributes": "Name, parentaccountid"}),
    )
    .await;
    let row = emulator
        .get_json(&format!("sdkmessageprocessingsteps({update_step})"))
        .await;
    assert_eq!(row["_eventhandler_value"], endpoint.as_str());
    assert_eq!(
        row["_sdkmessageid_value"],
        message_id(&emulator, "Update").await.as_str()
    );
    assert_eq!(
        (row["statecode"].clone(), row["statuscode"].clone()),
        (json!(0), json!(1))
    );

    // Disabling sets the matching status; a status of the other state is refused.
    let path = format!("sdkmessageprocessingsteps({update_step})");
    assert_eq!(
        patch(&emulator, &path, &json!({"statecode": 1}))
            .await
            .status(),
        204
    );
    let row = emulator.get_json(&path).await;
    assert_eq!(
        (row["statecode"].clone(), row["statuscode"].clone()),
        (json!(1), json!(2))
    );
    expect_error(
        patch(&emulator, &path, &json!({"statecode": 0, "statuscode": 2})).await,
        400,
        "0x80040203",
        "not a valid status code",
    )
    .await;
    // A step cannot be moved off stage 40 while asynchronous.
    expect_error(
        patch(&emulator, &path, &json!({"stage": 20})).await,
        400,
        "0x80040203",
        "PostOperation",
    )
    .await;

    let create_step = step(&emulator, "Create", "account", &endpoint, json!({})).await;
    let delete_step = step(&emulator, "Delete", "account", &endpoint, json!({})).await;
    let image_cases = [
        (
            image_body(&create_step, "pre", 0, "Target", None),
            "cannot have a pre-image",
        ),
        (
            image_body(&create_step, "both", 2, "Target", None),
            "cannot have a pre-image",
        ),
        (
            image_body(&delete_step, "post", 1, "Target", None),
            "cannot have a post-image",
        ),
        (
            image_body(&delete_step, "both", 2, "Target", None),
            "cannot have a post-image",
        ),
        (
            image_body(&update_step, "x", 2, "Id", None),
            "'Id' is not a messagepropertyname of the Update message",
        ),
        (
            image_body(&delete_step, "x", 0, "Id", None),
            "'Id' is not a messagepropertyname of the Delete message",
        ),
        (
            image_body(&create_step, "x", 1, "Target", None),
            "'Target' is not a messagepropertyname of the Create message",
        ),
        (
            image_body(&update_step, "x", 0, "Target", Some("name,bogus")),
            "'bogus'",
        ),
        (
            {
                let mut body = image_body(&update_step, "x", 0, "Target", None);
                body["entityalias"] = json!("");
                body
            },
            "'entityalias'",
        ),
    ];
    for (body, part) in image_cases {
        expect_error(
            post(&emulator, "sdkmessageprocessingstepimages", &body).await,
            400,
            "0x80040203",
            part,
        )
        .await;
    }
    for (step, kind, property) in [
        (&create_step, 1, "Id"),
        (&update_step, 2, "Target"),
        (&delete_step, 0, "Target"),
    ] {
        image(&emulator, step, "Image", kind, property, Some("name")).await;
    }
    // A step with a post-image cannot become a Delete step.
    let delete_message = message_id(&emulator, "Delete").await;
    let delete_filter = filter_id(&emulator, "account", "Delete").await;
    expect_error(
        patch(
            &emulator,
            &path,
            &json!({
                "sdkmessageid@odata.bind": format!("/sdkmessages({delete_message})"),
                "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({delete_filter})"),
            }),
        )
        .await,
        400,
        "0x80040203",
        "cannot have a post-image",
    )
    .await;
}

#[tokio::test]
async fn every_business_table_has_a_filter_for_each_message() {
    let emulator = Emulator::empty().await;
    let messages = emulator
        .get_json("sdkmessages?$select=name&$orderby=name")
        .await;
    let names: Vec<&str> = messages["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Create", "Delete", "Update"]);
    emulator
        .add_table(&NewTable::new(
            "new_project",
            "new_projects",
            "new_projectid",
            "new_name",
        ))
        .await;
    for table in ["account", "contact", "lead", "opportunity", "new_project"] {
        let filters = emulator
            .get_json(&format!("sdkmessagefilters?$select=_sdkmessageid_value,secondaryobjecttypecode&$filter=primaryobjecttypecode eq '{table}'"))
            .await;
        let filters = filters["value"].as_array().unwrap();
        assert_eq!(filters.len(), 3, "{table}");
        assert!(
            filters
                .iter()
                .all(|f| f["secondaryobjecttypecode"] == "none")
        );
    }
    let none = emulator
        .get_json("sdkmessagefilters?$filter=primaryobjecttypecode eq 'serviceendpoint'")
        .await;
    assert_eq!(
        none["value"],
        json!([]),
        "registration tables fire no steps"
    );
}

#[tokio::test]
async fn each_auth_type_presents_its_key() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    // An address with a query of its own: the key is added to it.
    let by_key = endpoint(&emulator, &format!("{}/key?tenant=a", receiver.url)).await;
    let by_header = endpoint_with(
        &emulator,
        &format!("{}/header", receiver.url),
        5,
        r#"<settings><setting name="x-crm-webhook-key" value="h&amp;1" /><setting name="x-other" value="2" /></settings>"#,
    )
    .await;
    let by_query = endpoint_with(
        &emulator,
        &format!("{}/query", receiver.url),
        6,
        r#"<settings><setting name="code" value="q k" /></settings>"#,
    )
    .await;
    for endpoint in [&by_key, &by_header, &by_query] {
        step(&emulator, "Create", "account", endpoint, json!({})).await;
    }
    create_row(&emulator, "accounts", json!({"name": "Keyed"})).await;
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 3);
    assert!(
        log.deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Delivered)
    );

    let requests = receiver.received();
    let at = |path: &str| requests.iter().find(|r| r.path() == path).expect(path);
    let key = at("/key");
    assert_eq!(
        key.query(),
        [
            ("tenant".to_owned(), "a".to_owned()),
            ("code".to_owned(), KEY.to_owned())
        ]
    );
    assert!(key.header("x-crm-webhook-key").is_none());
    let header = at("/header");
    assert_eq!(header.header("x-crm-webhook-key"), Some("h&1"));
    assert_eq!(header.header("x-other"), Some("2"));
    assert_eq!(header.query(), []);
    let query = at("/query");
    assert_eq!(query.query(), [("code".to_owned(), "q k".to_owned())]);
    for request in &requests {
        assert_eq!(request.method, "POST");
    }
}

#[tokio::test]
async fn create_update_and_delete_post_their_contexts() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &format!("{}/hook", receiver.url)).await;
    let create = step(&emulator, "Create", "account", &endpoint, json!({})).await;
    image(&emulator, &create, "Created", 1, "Id", None).await;
    let update = step(&emulator, "Update", "account", &endpoint, json!({})).await;
    image(&emulator, &update, "Before", 0, "Target", None).await;
    image(&emulator, &update, "After", 1, "Target", None).await;
    let delete_step = step(&emulator, "Delete", "account", &endpoint, json!({})).await;
    image(&emulator, &delete_step, "Gone", 0, "Target", None).await;

    let contact = create_row(
        &emulator,
        "contacts",
        json!({"firstname": "Ada", "lastname": "Lovelace"}),
    )
    .await;
    let parent = create_row(&emulator, "accounts", json!({"name": "Parent"})).await;
    assert_eq!(emulator.settled_deliveries().await.deliveries.len(), 1);
    emulator.clear_deliveries().await;
    // Settled ones are forgotten; the create of Parent was one.
    assert_eq!(emulator.settled_deliveries().await.deliveries.len(), 0);
    let received_before = receiver.received().len();

    let account = create_row(
        &emulator,
        "accounts",
        json!({"name": "Contoso", "revenue": 5000, "industrycode": 3, "creditonhold": false,
            "numberofemployees": 12, "description": null,
            "primarycontactid@odata.bind": format!("/contacts({contact})"),
            "parentaccountid@odata.bind": format!("/accounts({parent})")}),
    )
    .await;
    let created_row = web_api_row(&emulator, &format!("accounts({account})")).await;
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    assert_eq!(
        (
            delivery.message,
            delivery.table.as_str(),
            delivery.row.to_string()
        ),
        (Message::Create, "account", account.clone())
    );
    assert_eq!(delivery.step.to_string(), create);
    assert_eq!(delivery.endpoint.to_string(), endpoint);
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status, Some(200));
    assert!(!delivery.size_exceeded);
    let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
    assert_eq!(receiver.received().len(), received_before + 1);

    // Headers.
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("x-ms-dynamics-organization"),
        Some("127.0.0.1")
    );
    assert_eq!(request.header("x-ms-dynamics-entity-name"), Some("account"));
    assert_eq!(request.header("x-ms-dynamics-request-name"), Some("Create"));
    assert!(request.header("x-ms-dynamics-msg-size-exceeded").is_none());
    let context = request.json();
    assert_eq!(
        request.header("x-ms-correlation-request-id"),
        context["CorrelationId"].as_str()
    );

    // The context, member by member in WCF's order.
    let members: Vec<&str> = context
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        [
            "BusinessUnitId",
            "CorrelationId",
            "Depth",
            "InitiatingUserId",
            "InputParameters",
            "IsExecutingOffline",
            "IsInTransaction",
            "IsolationMode",
            "MessageName",
            "Mode",
            "OperationCreatedOn",
            "OperationId",
            "OrganizationId",
            "OrganizationName",
            "OutputParameters",
            "OwningExtension",
            "ParentContext",
            "PostEntityImages",
            "PreEntityImages",
            "PrimaryEntityId",
            "PrimaryEntityName",
            "RequestId",
            "SecondaryEntityName",
            "SharedVariables",
            "Stage",
            "UserId",
        ]
    );
    let who = emulator.get_json("WhoAmI").await;
    assert_eq!(context["UserId"], who["UserId"]);
    assert_eq!(context["InitiatingUserId"], who["UserId"]);
    assert_eq!(context["BusinessUnitId"], who["BusinessUnitId"]);
    assert_eq!(context["OrganizationId"], who["OrganizationId"]);
    assert_eq!(
        (
            context["MessageName"].clone(),
            context["PrimaryEntityName"].clone(),
            context["PrimaryEntityId"].clone()
        ),
        (json!("Create"), json!("account"), json!(account))
    );
    assert_eq!(
        (
            context["Stage"].clone(),
            context["Mode"].clone(),
            context["Depth"].clone()
        ),
        (json!(40), json!(1), json!(1))
    );
    assert_eq!(context["SecondaryEntityName"], "none");
    assert_eq!(context["ParentContext"], Value::Null);
    assert_eq!(context["SharedVariables"], json!([]));
    assert_eq!(
        context["OutputParameters"],
        json!([{"key": "id", "value": account}])
    );
    assert_eq!(
        context["OwningExtension"],
        json!({"Id": create, "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep", "Name": "account Create webhook", "RowVersion": null})
    );
    let created_ms = OffsetDateTime::parse(created_row["createdon"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp()
        * 1000;
    assert_eq!(
        context["OperationCreatedOn"],
        format!("/Date({created_ms})/")
    );

    // Target: what the request set, the key, each value in its data contract.
    let target = entry(&context["InputParameters"], "Target");
    let fields: Vec<&str> = target
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "__type",
            "Attributes",
            "EntityState",
            "FormattedValues",
            "Id",
            "KeyAttributes",
            "LogicalName",
            "RelatedEntities",
            "RowVersion"
        ]
    );
    assert_eq!(target["__type"], format!("Entity:{CONTRACTS}"));
    assert_eq!(
        (target["Id"].as_str(), target["LogicalName"].as_str()),
        (Some(account.as_str()), Some("account"))
    );
    assert_eq!(
        sorted(attribute_names(target)),
        [
            "accountid",
            "creditonhold",
            "description",
            "industrycode",
            "name",
            "numberofemployees",
            "parentaccountid",
            "primarycontactid",
            "revenue"
        ]
    );
    let attributes = &target["Attributes"];
    assert_eq!(entry(attributes, "name"), "Contoso");
    assert_eq!(
        entry(attributes, "revenue"),
        &json!({"__type": format!("Money:{CONTRACTS}"), "Value": 5000.0})
    );
    assert_eq!(
        entry(attributes, "industrycode"),
        &json!({"__type": format!("OptionSetValue:{CONTRACTS}"), "Value": 3})
    );
    assert_eq!(entry(attributes, "creditonhold"), false);
    assert_eq!(entry(attributes, "numberofemployees"), 12);
    assert_eq!(
        entry(attributes, "description"),
        &Value::Null,
        "a null the request wrote stays in Target"
    );
    assert_eq!(
        entry(attributes, "primarycontactid"),
        &json!({"__type": format!("EntityReference:{CONTRACTS}"), "Id": contact, "KeyAttributes": [], "LogicalName": "contact", "Name": null, "RowVersion": null})
    );
    assert_eq!(
        entry(attributes, "parentaccountid")["LogicalName"],
        "account"
    );
    assert_eq!(entry(attributes, "accountid"), account.as_str());

    // The post-image is the Web API row, minus its null columns, in WCF's shapes.
    assert_eq!(context["PreEntityImages"], json!([]));
    let created_image = entry(&context["PostEntityImages"], "Created");
    let image_attributes = &created_image["Attributes"];
    assert_eq!(
        entry(image_attributes, "ownerid")["LogicalName"],
        "systemuser"
    );
    assert_eq!(
        entry(image_attributes, "createdby")["LogicalName"],
        "systemuser"
    );
    assert_eq!(
        entry(image_attributes, "owningbusinessunit")["LogicalName"],
        "businessunit"
    );
    assert_eq!(
        entry(image_attributes, "transactioncurrencyid")["LogicalName"],
        "transactioncurrency"
    );
    assert_eq!(
        entry(image_attributes, "statecode")["__type"],
        format!("OptionSetValue:{CONTRACTS}")
    );
    assert!(entry(image_attributes, "versionnumber").is_u64());
    assert!(
        entry(image_attributes, "createdon")
            .as_str()
            .unwrap()
            .starts_with("/Date(")
    );
    assert!(
        !attribute_names(created_image).contains(&"description"),
        "nulls are left out of images"
    );
    assert_eq!(
        as_web_api_row(created_image, "accountid"),
        without_nulls(&created_row)
    );

    // An update: Target holds what was sent (even unchanged) with modifiedon; both images.
    emulator.clear_deliveries().await;
    assert_eq!(
        patch(
            &emulator,
            &format!("accounts({account})"),
            &json!({"name": "Contoso", "telephone1": "555-0100"})
        )
        .await
        .status(),
        204
    );
    let updated_row = web_api_row(&emulator, &format!("accounts({account})")).await;
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    assert_eq!(delivery.message, Message::Update);
    let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
    assert_eq!(request.header("x-ms-dynamics-request-name"), Some("Update"));
    let context = request.json();
    assert_eq!(context["OutputParameters"], json!([]));
    let target = entry(&context["InputParameters"], "Target");
    assert_eq!(
        sorted(attribute_names(target)),
        [
            "accountid",
            "modifiedby",
            "modifiedon",
            "name",
            "telephone1"
        ]
    );
    let modified_ms = OffsetDateTime::parse(updated_row["modifiedon"].as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp()
        * 1000;
    assert_eq!(
        entry(&target["Attributes"], "modifiedon"),
        &json!(format!("/Date({modified_ms})/"))
    );
    assert_eq!(
        context["OperationCreatedOn"],
        format!("/Date({modified_ms})/")
    );
    let before = entry(&context["PreEntityImages"], "Before");
    let after = entry(&context["PostEntityImages"], "After");
    assert_eq!(
        as_web_api_row(before, "accountid"),
        without_nulls(&created_row)
    );
    assert_eq!(
        as_web_api_row(after, "accountid"),
        without_nulls(&updated_row)
    );

    // A delete: Target is a reference; the pre-image is the row as it was.
    emulator.clear_deliveries().await;
    assert_eq!(
        delete(&emulator, &format!("accounts({account})"))
            .await
            .status(),
        204
    );
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
    assert_eq!(request.header("x-ms-dynamics-request-name"), Some("Delete"));
    let context = request.json();
    assert_eq!(
        entry(&context["InputParameters"], "Target"),
        &json!({"__type": format!("EntityReference:{CONTRACTS}"), "Id": account, "KeyAttributes": [], "LogicalName": "account", "Name": null, "RowVersion": null})
    );
    assert_eq!(context["PostEntityImages"], json!([]));
    assert_eq!(
        as_web_api_row(entry(&context["PreEntityImages"], "Gone"), "accountid"),
        without_nulls(&updated_row)
    );

    // A contact fires none of the account's steps.
    emulator.clear_deliveries().await;
    create_row(&emulator, "contacts", json!({"lastname": "Babbage"})).await;
    assert_eq!(emulator.settled_deliveries().await.deliveries, []);
}

#[tokio::test]
async fn an_upsert_that_creates_is_a_create() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "lead", &endpoint, json!({})).await;
    step(&emulator, "Update", "lead", &endpoint, json!({})).await;
    let id = "6d81597f-0000-4000-8000-00000000000a";
    let response = emulator
        .request(Method::PATCH, &format!("leads({id})"))
        .json(&json!({"lastname": "Upserted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let log = emulator.settled_deliveries().await;
    let messages: Vec<Message> = log.deliveries.iter().map(|d| d.message).collect();
    assert_eq!(messages, [Message::Create]);
    assert_eq!(log.deliveries[0].row.to_string(), id);
}

#[tokio::test]
async fn filtering_attributes_decide_which_updates_deliver() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    step(
        &emulator,
        "Update",
        "account",
        &endpoint,
        json!({"filteringattributes": "telephone1,parentaccountid"}),
    )
    .await;
    let account = create_row(
        &emulator,
        "accounts",
        json!({"name": "Filtered", "telephone1": "555-0100"}),
    )
    .await;
    let other = create_row(&emulator, "accounts", json!({"name": "Other"})).await;
    let path = format!("accounts({account})");

    // A column that is not listed: nothing.
    assert_eq!(
        patch(&emulator, &path, &json!({"name": "Renamed"}))
            .await
            .status(),
        204
    );
    assert_eq!(emulator.settled_deliveries().await.deliveries, []);
    // A listed column, set to the value it already has: delivered.
    assert_eq!(
        patch(&emulator, &path, &json!({"telephone1": "555-0100"}))
            .await
            .status(),
        204
    );
    // A listed lookup, written through its navigation property.
    assert_eq!(
        patch(
            &emulator,
            &path,
            &json!({"parentaccountid@odata.bind": format!("/accounts({other})")})
        )
        .await
        .status(),
        204
    );
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 2, "{log:#?}");
    let targets: Vec<Vec<String>> = log
        .deliveries
        .iter()
        .map(|d| {
            let [request] = receiver.of(&d.id.to_string()).try_into().unwrap();
            let context = request.json();
            attribute_names(entry(&context["InputParameters"], "Target"))
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert!(targets.iter().any(|t| t[0] == "telephone1"), "{targets:?}");
    assert!(
        targets.iter().any(|t| t[0] == "parentaccountid"),
        "{targets:?}"
    );
}

#[tokio::test]
async fn images_carry_the_listed_columns_or_all_of_them() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    let step = step(&emulator, "Update", "account", &endpoint, json!({})).await;
    image(
        &emulator,
        &step,
        "Listed",
        2,
        "Target",
        Some("name, Revenue,telephone1,parentaccountid"),
    )
    .await;
    image(&emulator, &step, "Everything", 1, "Target", None).await;
    let account = create_row(
        &emulator,
        "accounts",
        json!({"name": "Imaged", "revenue": 10}),
    )
    .await;
    assert_eq!(
        patch(
            &emulator,
            &format!("accounts({account})"),
            &json!({"revenue": 20, "telephone1": "555"})
        )
        .await
        .status(),
        204
    );
    let row = web_api_row(&emulator, &format!("accounts({account})")).await;

    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
    let context = request.json();
    let pre = entry(&context["PreEntityImages"], "Listed");
    let post = entry(&context["PostEntityImages"], "Listed");
    // The listed columns that hold a value, in the table's order; the null ones are left out.
    assert_eq!(attribute_names(pre), ["name", "revenue"]);
    assert_eq!(entry(&pre["Attributes"], "revenue")["Value"], 10.0);
    assert_eq!(attribute_names(post), ["name", "telephone1", "revenue"]);
    assert_eq!(entry(&post["Attributes"], "revenue")["Value"], 20.0);
    assert_eq!(
        entry(&context["PreEntityImages"], "Everything"),
        &Value::Null,
        "a post-image only"
    );
    let everything = entry(&context["PostEntityImages"], "Everything");
    assert_eq!(as_web_api_row(everything, "accountid"), without_nulls(&row));
}

#[tokio::test]
async fn a_disabled_step_delivers_nothing() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    let step = step(&emulator, "Create", "contact", &endpoint, json!({})).await;
    let path = format!("sdkmessageprocessingsteps({step})");
    assert_eq!(
        patch(&emulator, &path, &json!({"statecode": 1, "statuscode": 2}))
            .await
            .status(),
        204
    );
    create_row(&emulator, "contacts", json!({"lastname": "Quiet"})).await;
    assert_eq!(emulator.settled_deliveries().await.deliveries, []);
    assert!(receiver.received().is_empty());

    assert_eq!(
        patch(&emulator, &path, &json!({"statecode": 0}))
            .await
            .status(),
        204
    );
    create_row(&emulator, "contacts", json!({"lastname": "Heard"})).await;
    assert_eq!(emulator.settled_deliveries().await.deliveries.len(), 1);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_context_over_256_kb_comes_without_parameters_or_images() {
    let emulator = Emulator::empty().await;
    emulator
        .add_table(
            &NewTable::new(
                "new_document",
                "new_documents",
                "new_documentid",
                "new_name",
            )
            .column("new_body", "memo"),
        )
        .await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    let step = step(&emulator, "Create", "new_document", &endpoint, json!({})).await;
    image(&emulator, &step, "Created", 1, "Id", None).await;

    // Target and post-image each carry the body: about 280 KB together.
    let small = create_row(
        &emulator,
        "new_documents",
        json!({"new_name": "small", "new_body": "x".repeat(1000)}),
    )
    .await;
    let large = create_row(
        &emulator,
        "new_documents",
        json!({"new_name": "large", "new_body": "x".repeat(140 * 1024)}),
    )
    .await;
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 2);
    for delivery in &log.deliveries {
        let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
        let context = request.json();
        if delivery.row.to_string() == small {
            assert!(!delivery.size_exceeded);
            assert!(request.header("x-ms-dynamics-msg-size-exceeded").is_none());
            assert_eq!(context["PostEntityImages"].as_array().unwrap().len(), 1);
            continue;
        }
        assert_eq!(delivery.row.to_string(), large);
        assert!(delivery.size_exceeded);
        assert_eq!(
            request.header("x-ms-dynamics-msg-size-exceeded"),
            Some("true")
        );
        assert!(request.body.len() < 256 * 1024, "{}", request.body.len());
        for cut in ["InputParameters", "PreEntityImages", "PostEntityImages"] {
            assert_eq!(context[cut], json!([]), "{cut}");
        }
        assert_eq!(context["ParentContext"], Value::Null);
        assert_eq!(context["PrimaryEntityId"], large.as_str());
        assert_eq!(
            context["OutputParameters"],
            json!([{"key": "id", "value": large}])
        );
    }
}

#[tokio::test]
async fn a_503_is_retried_once_and_a_400_not_at_all() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &endpoint, json!({})).await;

    receiver.answer_with(&[503, 200]);
    create_row(&emulator, "accounts", json!({"name": "Retried"})).await;
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    assert_eq!(delivery.state, DeliveryState::Delivered);
    let statuses: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(200)]);
    // Both tries are the same delivery: one x-request-id, one body.
    let tries = receiver.of(&delivery.id.to_string());
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].body, tries[1].body);

    emulator.clear_deliveries().await;
    receiver.answer_with(&[400]);
    create_row(&emulator, "accounts", json!({"name": "Refused"})).await;
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status, Some(400));

    // Two gateway errors in a row exhaust Dataverse's single retry.
    emulator.clear_deliveries().await;
    receiver.answer_with(&[503, 504]);
    create_row(&emulator, "accounts", json!({"name": "Unlucky"})).await;
    let log = emulator.settled_deliveries().await;
    let [delivery] = log.deliveries.as_slice() else {
        panic!("{log:#?}")
    };
    assert_eq!(delivery.state, DeliveryState::Failed);
    let statuses: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(504)]);
    assert_eq!(receiver.received().len(), 5);
}

#[tokio::test]
async fn the_attempts_are_a_command_line_option() {
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--webhook-attempts",
        "4",
        "--webhook-backoff-ms",
        "0",
    ])
    .await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &endpoint, json!({})).await;
    receiver.answer_with(&[502, 503, 504, 200]);
    create_row(&emulator, "accounts", json!({"name": "Persistent"})).await;
    let log = emulator.settled_deliveries().await;
    let statuses: Vec<Option<u16>> = log.deliveries[0]
        .attempts
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [Some(502), Some(503), Some(504), Some(200)]);
    assert_eq!(log.deliveries[0].state, DeliveryState::Delivered);
}

#[tokio::test]
async fn unreachable_and_forbidden_addresses_fail_the_delivery_not_the_emulator() {
    let emulator = Emulator::empty().await;
    // A port nobody listens on: bind one, note it, let it go.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = endpoint(&emulator, &format!("http://127.0.0.1:{closed}/hook")).await;
    let public = endpoint(&emulator, "http://192.0.2.1/hook").await;
    step(&emulator, "Create", "account", &unreachable, json!({})).await;
    step(&emulator, "Create", "account", &public, json!({})).await;
    create_row(&emulator, "accounts", json!({"name": "Nowhere"})).await;

    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 2);
    for delivery in &log.deliveries {
        assert_eq!(delivery.state, DeliveryState::Failed);
        let errors: Vec<&str> = delivery
            .attempts
            .iter()
            .map(|a| a.error.as_deref().unwrap())
            .collect();
        if delivery.endpoint.to_string() == unreachable {
            // A connection that fails is worth the one retry.
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors[0].starts_with("cannot connect"), "{errors:?}");
        } else {
            assert_eq!(
                errors,
                [
                    "the emulator delivers only to https, or to http on localhost or a loopback address"
                ]
            );
        }
        assert!(delivery.attempts.iter().all(|a| a.status.is_none()));
    }
    // The emulator carries on.
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn deleting_a_step_removes_its_images_and_an_endpoint_its_steps() {
    let emulator = Emulator::empty().await;
    let endpoint = endpoint(&emulator, "http://127.0.0.1:9/hook").await;
    let kept = step(&emulator, "Update", "account", &endpoint, json!({})).await;
    let dropped = step(&emulator, "Update", "contact", &endpoint, json!({})).await;
    let kept_image = image(&emulator, &kept, "A", 0, "Target", None).await;
    image(&emulator, &dropped, "B", 0, "Target", None).await;
    image(&emulator, &dropped, "C", 1, "Target", None).await;
    let images_of = |step: String| {
        format!(
            "sdkmessageprocessingstepimages?$select=name&$filter=_sdkmessageprocessingstepid_value eq {step}"
        )
    };

    assert_eq!(
        delete(&emulator, &format!("sdkmessageprocessingsteps({dropped})"))
            .await
            .status(),
        204
    );
    assert_eq!(
        emulator.get_json(&images_of(dropped.clone())).await["value"],
        json!([])
    );
    assert_eq!(
        emulator.get_json(&images_of(kept.clone())).await["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The endpoint's steps go with it (the relationship cascades), and their images with them.
    assert_eq!(
        delete(&emulator, &format!("serviceendpoints({endpoint})"))
            .await
            .status(),
        204
    );
    assert_eq!(
        emulator
            .get(format!("sdkmessageprocessingsteps({kept})"))
            .await
            .status(),
        404
    );
    assert_eq!(
        emulator
            .get(format!("sdkmessageprocessingstepimages({kept_image})"))
            .await
            .status(),
        404
    );
    assert_eq!(
        emulator.get_json("sdkmessageprocessingsteps").await["value"],
        json!([])
    );
}

#[tokio::test]
async fn the_delivery_log_never_shows_a_key() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let by_key = endpoint(&emulator, &format!("http://127.0.0.1:{closed}/hook")).await;
    let by_header = endpoint_with(
        &emulator,
        &format!("{}/h", receiver.url),
        5,
        r#"<settings><setting name="x-crm-webhook-key" value="header-secret-1" /></settings>"#,
    )
    .await;
    let by_query = endpoint_with(
        &emulator,
        &format!("{}/q", receiver.url),
        6,
        r#"<settings><setting name="code" value="query-secret-2" /></settings>"#,
    )
    .await;
    for endpoint in [&by_key, &by_header, &by_query] {
        step(&emulator, "Create", "account", endpoint, json!({})).await;
    }
    create_row(&emulator, "accounts", json!({"name": "Secretive"})).await;
    let log = emulator.settled_deliveries().await;
    assert_eq!(log.deliveries.len(), 3);
    for delivery in &log.deliveries {
        let (kind, names) = match delivery.endpoint.to_string() {
            e if e == by_key => (AuthType::WebhookKey, ["code"]),
            e if e == by_header => (AuthType::HttpHeader, ["x-crm-webhook-key"]),
            _ => (AuthType::HttpQueryString, ["code"]),
        };
        assert_eq!(delivery.auth, Some(kind));
        assert_eq!(delivery.auth_names, names);
        assert!(!delivery.url.contains('?'), "{}", delivery.url);
    }
    let text = emulator
        .control(Method::GET, "webhooks/deliveries", Value::Null)
        .await
        .text()
        .await
        .unwrap();
    for secret in ["Vq7", "header-secret-1", "query-secret-2"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // The connection error is there, without the URL it was for.
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn control_api_rows_fire_nothing_and_registrations_go_through_the_web_api() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = endpoint(&emulator, &receiver.url).await;
    step(&emulator, "Create", "account", &endpoint, json!({})).await;
    emulator
        .insert_row("account", &json!({"name": "Late commit"}))
        .await;
    let generated = emulator
        .control(
            Method::POST,
            "tables/accounts/generate",
            json!({"count": 5}),
        )
        .await;
    assert_eq!(generated.status(), 201);
    assert_eq!(emulator.settled_deliveries().await.deliveries, []);
    assert!(receiver.received().is_empty());

    let refused = emulator
        .control(
            Method::POST,
            "tables/serviceendpoints/rows",
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Web API"));
    for bad in [
        "webhooks/deliveries?wait=maybe",
        "webhooks/deliveries?timeout_secs=0",
        "webhooks/deliveries?color=red",
    ] {
        let answer = emulator.control(Method::GET, bad, Value::Null).await;
        assert_eq!(answer.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn waiting_gives_up_after_its_timeout_and_says_so() {
    // One attempt per delivery after a long backoff would still settle quickly; a receiver that
    // never answers holds the delivery pending past a one-second wait.
    let emulator = Emulator::empty().await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = endpoint(
        &emulator,
        &format!("http://{}/hook", silent.local_addr().unwrap()),
    )
    .await;
    step(&emulator, "Create", "account", &endpoint, json!({})).await;
    create_row(&emulator, "accounts", json!({"name": "Hanging"})).await;
    let answer = emulator
        .control(
            Method::GET,
            "webhooks/deliveries?wait=true&timeout_secs=1",
            Value::Null,
        )
        .await;
    assert_eq!(answer.status(), 200);
    let log: Value = answer.json().await.unwrap();
    assert_eq!(log["timed_out"], true);
    assert_eq!(log["pending"], 1);
    assert_eq!(log["deliveries"][0]["state"], "pending");
    // Clearing keeps what is in flight.
    emulator.clear_deliveries().await;
    assert_eq!(emulator.deliveries_now().await.deliveries.len(), 1);
}
