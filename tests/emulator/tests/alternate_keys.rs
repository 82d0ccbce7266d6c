//! Alternate keys: defined through the control API, listed in `EntityDefinitions`, enforced on every
//! write, and usable in place of the id in a row's URL, with the upsert rules Dataverse documents and
//! the characters its front end refuses in a path.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::{Message, NewTable};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::{Emulator, expect_error};

/// An organisation whose accounts have a key on `accountnumber` and whose contacts have one on
/// `firstname` and `emailaddress1` together.
async fn org() -> Emulator {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "aws_accountnumber", &["accountnumber"])
        .await;
    emulator
        .add_key(
            "contacts",
            "aws_name_email",
            &["firstname", "emailaddress1"],
        )
        .await;
    emulator
}

/// A custom table with a whole-number key, a lookup key and a decimal-and-date key.
fn things() -> NewTable {
    NewTable::new("new_thing", "new_things", "new_thingid", "new_name")
        .with_change_tracking()
        .column("new_code", "integer")
        .column("new_account", "lookup:account")
        .column("new_rate", "decimal")
        .column("new_day", "date")
        .key("new_code_key", &["new_code"])
        .key("new_account_key", &["new_account"])
        .key("new_rate_day_key", &["new_rate", "new_day"])
}

async fn send(
    emulator: &Emulator,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Response {
    let mut request = emulator.request(method, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn patch(emulator: &Emulator, path: &str, headers: &[(&str, &str)], body: Value) -> Response {
    send(emulator, Method::PATCH, path, headers, Some(body)).await
}

const REPRESENTATION: (&str, &str) = ("Prefer", "return=representation");

async fn control_error(response: Response, status: u16, part: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(part),
        "{message:?} should contain {part:?}"
    );
}

#[tokio::test]
async fn keys_are_listed_in_entity_definitions_as_entity_key_metadata() {
    let emulator = org().await;
    emulator.add_table(&things()).await;

    let keys = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Keys")
        .await;
    assert!(
        keys["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#EntityDefinitions('account')/Keys"),
        "{keys}"
    );
    let key = &keys["value"][0];
    assert_eq!(keys["value"].as_array().unwrap().len(), 1);
    assert_eq!(key["SchemaName"], "aws_accountnumber");
    assert_eq!(key["LogicalName"], "aws_accountnumber");
    assert_eq!(key["EntityLogicalName"], "account");
    assert_eq!(key["KeyAttributes"], json!(["accountnumber"]));
    assert_eq!(key["EntityKeyIndexStatus"], "Active");
    assert_eq!(key["MetadataId"].as_str().unwrap().len(), 36);

    // A lookup is listed by its logical name, keys in the order they were defined.
    let things = emulator
        .get_json("EntityDefinitions(LogicalName='new_thing')/Keys?$select=KeyAttributes")
        .await;
    let attributes: Vec<&Value> = things["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["KeyAttributes"])
        .collect();
    assert_eq!(
        attributes,
        [
            &json!(["new_code"]),
            &json!(["new_account"]),
            &json!(["new_rate", "new_day"])
        ]
    );
    assert_eq!(
        things["value"][0].as_object().unwrap().keys().count(),
        2,
        "the selected property and MetadataId: {things}"
    );

    // `$expand=Keys`, as Microsoft Learn's "which tables have keys" query writes it.
    let all = emulator
        .get_json("EntityDefinitions?$select=SchemaName&$expand=Keys($select=KeyAttributes)")
        .await;
    assert!(
        all["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#EntityDefinitions(SchemaName,Keys(KeyAttributes))")
    );
    let tables = all["value"].as_array().unwrap();
    let of = |schema: &str| {
        tables
            .iter()
            .find(|t| t["SchemaName"] == schema)
            .unwrap()
            .clone()
    };
    assert_eq!(
        of("Contact")["Keys"][0]["KeyAttributes"],
        json!(["firstname", "emailaddress1"])
    );
    assert_eq!(of("Lead")["Keys"], json!([]));
    assert!(of("Account")["Keys"][0]["MetadataId"].is_string());
    assert!(of("Account")["Keys"][0].get("SchemaName").is_none());

    let one = emulator
        .get_json("EntityDefinitions(LogicalName='account')?$select=LogicalName&$expand=Keys")
        .await;
    assert_eq!(one["Keys"][0]["SchemaName"], "aws_accountnumber");
    assert_eq!(one["Keys"][0]["EntityKeyIndexStatus"], "Active");

    // A reset leaves no key behind, as on a fresh organisation.
    emulator
        .control(Method::POST, "reset", json!({"seed": "none"}))
        .await;
    let keys = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Keys")
        .await;
    assert_eq!(keys["value"], json!([]));
}

/// `POST /_emulator/tables/{table}/keys`, answered as it is.
async fn define(emulator: &Emulator, table: &str, name: &str, columns: &[&str]) -> Response {
    let body = json!({"name": name, "columns": columns});
    emulator
        .control(Method::POST, &format!("tables/{table}/keys"), body)
        .await
}

#[tokio::test]
async fn definitions_dataverse_would_refuse_are_refused() {
    let emulator = org().await;
    let refusals: &[(&str, &str, &[&str], &str)] = &[
        (
            "account",
            "k",
            &["nosuch"],
            "'account' has no column 'nosuch'",
        ),
        (
            "account",
            "k",
            &["revenue"],
            "'revenue' is a currency column",
        ),
        ("account", "k", &["creditonhold"], "a yes/no column"),
        ("account", "k", &["statecode"], "a status column"),
        ("account", "k", &["accountid"], "the primary key"),
        (
            "account",
            "k",
            &["createdon"],
            "a column the platform maintains",
        ),
        ("contact", "k", &["fullname"], "a computed column"),
        (
            "account",
            "k",
            &["_primarycontactid_value"],
            "by its logical name, 'primarycontactid'",
        ),
        ("account", "k", &["name", "name"], "names 'name' twice"),
        ("account", "k", &[], "1 to 16 columns, not 0"),
        (
            "account",
            "has space",
            &["name"],
            "letters, digits and underscores",
        ),
        (
            "account",
            "AWS_AccountNumber",
            &["name"],
            "'account' already has a key named 'AWS_AccountNumber'",
        ),
        (
            "contact",
            "again",
            &["emailaddress1", "firstname"],
            "the key 'aws_name_email' already has these columns",
        ),
        (
            "sdkmessageprocessingsteps",
            "k",
            &["name"],
            "registration table",
        ),
    ];
    for (table, name, columns, part) in refusals {
        control_error(define(&emulator, table, name, columns).await, 400, part).await;
    }
    let seventeen: Vec<String> = (0..17).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = seventeen.iter().map(String::as_str).collect();
    control_error(
        define(&emulator, "account", "k", &refs).await,
        400,
        "not 17",
    )
    .await;
    control_error(
        define(&emulator, "nosuch", "k", &["name"]).await,
        404,
        "no table 'nosuch'",
    )
    .await;

    // Rows already there that share values (compared as the index compares text, ignoring case):
    // the index cannot be built, so the key is refused, naming both rows.
    let first = emulator
        .create("leads", json!({"subject": "Same", "lastname": "One"}))
        .await;
    let second = emulator
        .create("leads", json!({"subject": "SAME", "lastname": "Two"}))
        .await;
    let response = define(&emulator, "lead", "aws_subject", &["subject"]).await;
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("share the values of (subject)"),
        "{message}"
    );
    for row in [&first, &second] {
        assert!(
            message.contains(row["leadid"].as_str().unwrap()),
            "{message}"
        );
    }
    // A null key value is not in the index, so rows without one do not collide.
    emulator.create("leads", json!({"lastname": "Three"})).await;
    emulator.create("leads", json!({"lastname": "Four"})).await;
    assert_eq!(
        define(&emulator, "lead", "aws_companyname", &["companyname"])
            .await
            .status(),
        201
    );

    // Ten keys at most.
    for i in 0..9 {
        let column = [
            "name",
            "telephone1",
            "emailaddress1",
            "websiteurl",
            "address1_line1",
            "address1_city",
            "address1_postalcode",
            "address1_country",
            "numberofemployees",
        ][i];
        assert_eq!(
            define(&emulator, "accounts", &format!("k{i}"), &[column])
                .await
                .status(),
            201,
            "{column}"
        );
    }
    control_error(
        define(&emulator, "account", "k10", &["industrycode"]).await,
        400,
        "already has 10 keys",
    )
    .await;

    // A custom table's keys are checked before the table is added: a refusal adds nothing.
    let refused = emulator
        .control(
            Method::POST,
            "tables",
            json!({"logical_name": "new_bad", "entity_set_name": "new_bads", "primary_id": "new_badid",
                "primary_name": "new_name", "columns": {"new_flag": "boolean"},
                "keys": [{"name": "new_flag_key", "columns": ["new_flag"]}]}),
        )
        .await;
    control_error(
        refused,
        400,
        "key 'new_flag_key': 'new_flag' is a yes/no column",
    )
    .await;
    expect_error(
        emulator.get("new_bads").await,
        404,
        "0x8006088a",
        "Resource not found for the segment 'new_bads'.",
    )
    .await;
}

#[tokio::test]
async fn rows_are_read_updated_and_deleted_by_a_one_column_key() {
    let emulator = org().await;
    let created = emulator
        .create("accounts", json!({"name": "Keyed", "accountnumber": "A-1"}))
        .await;
    let id = created["accountid"].as_str().unwrap();

    let row = emulator
        .get_json("accounts(accountnumber='A-1')?$select=name")
        .await;
    assert_eq!(row["accountid"], id);
    assert_eq!(row["name"], "Keyed");
    assert!(
        row["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts(name)/$entity")
    );
    // The key's index compares text as SQL Server's collation does: case does not matter.
    let row = emulator.get_json("accounts(accountnumber='a-1')").await;
    assert_eq!(row["accountid"], id);
    // The primary key may be named too.
    let row = emulator
        .get_json(&format!("accounts(accountid={id})?$select=name"))
        .await;
    assert_eq!(row["name"], "Keyed");

    let response = patch(
        &emulator,
        "accounts(accountnumber='A-1')",
        &[("If-Match", "*")],
        json!({"telephone1": "555-0100"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    let row = emulator.get_json(&format!("accounts({id})")).await;
    assert_eq!(row["telephone1"], "555-0100");
    assert_eq!(row["accountnumber"], "A-1");

    let response = send(
        &emulator,
        Method::DELETE,
        "accounts(accountnumber='A-1')",
        &[],
        None,
    )
    .await;
    assert_eq!(response.status(), 204);
    expect_error(
        emulator.get(format!("accounts({id})")).await,
        404,
        "0x80040217",
        "Does Not Exist",
    )
    .await;
    let body = expect_error(
        emulator.get("accounts(accountnumber='A-1')").await,
        404,
        "0x80060891",
        "",
    )
    .await;
    assert_eq!(
        body["error"]["message"],
        "A record with the specified key values does not exist in account entity"
    );
    let response = send(
        &emulator,
        Method::DELETE,
        "accounts(accountnumber='A-1')",
        &[],
        None,
    )
    .await;
    expect_error(
        response,
        404,
        "0x80060891",
        "does not exist in account entity",
    )
    .await;
}

#[tokio::test]
async fn multi_column_number_decimal_date_and_lookup_keys_match_in_any_order() {
    let emulator = org().await;
    emulator.add_table(&things()).await;
    let joe = emulator
        .create(
            "contacts",
            json!({"firstname": "Joe", "lastname": "One", "emailaddress1": "abc@example.com"}),
        )
        .await;
    emulator
        .create(
            "contacts",
            json!({"firstname": "Joe", "lastname": "Two", "emailaddress1": "other@example.com"}),
        )
        .await;
    for path in [
        "contacts(firstname='Joe',emailaddress1='abc@example.com')",
        "contacts(emailaddress1='ABC@example.com',firstname='joe')",
    ] {
        let row = emulator.get_json(path).await;
        assert_eq!(row["contactid"], joe["contactid"], "{path}");
    }

    let account = emulator.create("accounts", json!({"name": "Owner"})).await;
    let account_id = account["accountid"].as_str().unwrap();
    let thing = emulator
        .create(
            "new_things",
            json!({"new_name": "Thing", "new_code": 42, "new_rate": 1.5, "new_day": "2024-01-31",
                "new_account@odata.bind": format!("/accounts({account_id})")}),
        )
        .await;
    let upper = account_id.to_ascii_uppercase();
    for path in [
        "new_things(new_code=42)".to_owned(),
        format!("new_things(_new_account_value={upper})"),
        "new_things(new_day=2024-01-31,new_rate=1.5)".to_owned(),
        "new_things(new_rate=1.50,new_day=2024-01-31)".to_owned(),
    ] {
        let row = emulator.get_json(&path).await;
        assert_eq!(row["new_thingid"], thing["new_thingid"], "{path}");
    }
    expect_error(
        emulator.get("new_things(new_code=43)").await,
        404,
        "0x80060891",
        "does not exist in new_thing entity",
    )
    .await;
    // Part of a key is not a key.
    expect_error(
        emulator.get("new_things(new_rate=1.5)").await,
        400,
        "0x80060890",
        "",
    )
    .await;
    // An upsert by a lookup key copies the reference in, once it names a row.
    let other = emulator.create("accounts", json!({"name": "Other"})).await;
    let other_id = other["accountid"].as_str().unwrap();
    let response = patch(
        &emulator,
        &format!("new_things(_new_account_value={other_id})"),
        &[REPRESENTATION],
        json!({"new_name": "By lookup"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["_new_account_value"], other_id);
    let missing = "6d81597f-0000-4000-8000-0000000000ff";
    let response = patch(
        &emulator,
        &format!("new_things(_new_account_value={missing})"),
        &[],
        json!({"new_name": "Dangling"}),
    )
    .await;
    expect_error(
        response,
        404,
        "0x80040217",
        &format!("Entity 'account' With Id = {missing} Does Not Exist"),
    )
    .await;
    // A lookup is addressed by its `_x_value` property, not its navigation property.
    expect_error(
        emulator
            .get(format!("new_things(new_account={account_id})"))
            .await,
        400,
        "0x80060890",
        "",
    )
    .await;
}

#[tokio::test]
async fn quotes_and_percent_encoded_unicode_address_their_rows() {
    let emulator = org().await;
    for number in ["O'Brien", "Zürich", "東京"] {
        emulator
            .create("accounts", json!({"name": number, "accountnumber": number}))
            .await;
    }
    for (path, name) in [
        ("accounts(accountnumber='O''Brien')", "O'Brien"),
        // The same, with the quotes percent-encoded as a careful client sends them.
        ("accounts(accountnumber=%27O%27%27Brien%27)", "O'Brien"),
        ("accounts(accountnumber='Z%C3%BCrich')", "Zürich"),
        ("accounts(accountnumber='Z%C3%9CRICH')", "Zürich"),
        ("accounts(accountnumber='%E6%9D%B1%E4%BA%AC')", "東京"),
    ] {
        let row = emulator.get_json(path).await;
        assert_eq!(row["name"], name, "{path}");
    }
    // A lone quote ends the literal early.
    expect_error(
        emulator.get("accounts(accountnumber='O'Brien')").await,
        400,
        "0x80060888",
        "Bad Request - Error in query syntax.",
    )
    .await;
}

#[tokio::test]
async fn malformed_and_undefined_keys_get_the_services_errors() {
    let emulator = org().await;
    let body = expect_error(
        emulator.get("accounts(name='x')").await,
        400,
        "0x80060890",
        "",
    )
    .await;
    assert_eq!(
        body["error"]["message"],
        "The specified key attributes are not a defined key for the account entity"
    );
    for undefined in [
        "accounts(accountnumber='A',name='x')",
        "accounts(nosuch='x')",
        "contacts(firstname='Joe')",
    ] {
        expect_error(emulator.get(undefined).await, 400, "0x80060890", "").await;
    }
    for (malformed, part) in [
        (
            "accounts(accountnumber='A-1)",
            "Bad Request - Error in query syntax.",
        ),
        (
            "accounts(accountnumber=)",
            "Bad Request - Error in query syntax.",
        ),
        (
            "accounts(accountnumber='A',)",
            "Bad Request - Error in query syntax.",
        ),
        (
            "accounts(accountnumber=42)",
            "not a valid Edm.String literal",
        ),
        (
            "accounts(accountnumber='a',accountnumber='b')",
            "appears more than once",
        ),
        ("accounts(accountid='x')", "not a valid Edm.Guid literal"),
        ("accounts(not-a-guid)", "not a valid Edm.Guid literal"),
    ] {
        expect_error(emulator.get(malformed).await, 400, "0x80060888", part).await;
    }
}

#[tokio::test]
async fn an_upsert_by_key_creates_with_the_urls_values_or_updates_without_them() {
    let emulator = org().await;
    let (_, delta) = track(
        &emulator,
        &emulator.api("accounts?$select=name,accountnumber"),
    )
    .await;

    // Created: the URL's key value is copied into the new row.
    let response = patch(
        &emulator,
        "accounts(accountnumber='U-1')",
        &[],
        json!({"name": "New"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["odata-entityid"],
        emulator.api("accounts(accountnumber='U-1')").as_str()
    );
    let row = emulator.get_json("accounts(accountnumber='U-1')").await;
    assert_eq!(row["name"], "New");
    assert_eq!(row["accountnumber"], "U-1");
    let id = row["accountid"].as_str().unwrap().to_owned();
    let version: u64 = row["versionnumber"].as_u64().unwrap();

    // Updated: the body's value of the key's column is ignored, the rest applied.
    let response = patch(
        &emulator,
        "accounts(accountnumber='u-1')?$select=name,accountnumber",
        &[REPRESENTATION],
        json!({"name": "Renamed", "accountnumber": "CHANGED"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("odata-entityid").is_none());
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["accountid"], id.as_str());
    assert_eq!(row["name"], "Renamed");
    assert_eq!(row["accountnumber"], "U-1");
    assert_eq!(row["@odata.etag"], etag.as_str());
    let updated = emulator.get_json(&format!("accounts({id})")).await;
    assert!(updated["versionnumber"].as_u64().unwrap() > version);

    // Without `return=representation` an update answers 204 with the key form too.
    let response = patch(
        &emulator,
        "accounts(accountnumber='U-1')",
        &[],
        json!({"telephone1": "1"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["odata-entityid"],
        emulator.api("accounts(accountnumber='U-1')").as_str()
    );

    // Created again, but the body's own key value wins over the URL's.
    let response = patch(
        &emulator,
        "accounts(accountnumber='U-2')",
        &[REPRESENTATION],
        json!({"name": "Body wins", "accountnumber": "U-3"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["accountnumber"], "U-3");
    expect_error(
        emulator.get("accounts(accountnumber='U-2')").await,
        404,
        "0x80060891",
        "",
    )
    .await;

    // The text in `OData-EntityId` is percent-encoded, quotes doubled.
    let response = patch(
        &emulator,
        "accounts(accountnumber='O''Z%C3%BC')",
        &[],
        json!({"name": "Encoded"}),
    )
    .await;
    assert_eq!(
        response.headers()["odata-entityid"],
        emulator
            .api("accounts(accountnumber='O%27%27Z%C3%BC')")
            .as_str()
    );

    // Change tracking sees the upserts as it sees any write: three new rows, one changed twice.
    let (changes, _) = track(&emulator, &delta).await;
    let numbers: Vec<&str> = changes
        .iter()
        .map(|r| r["accountnumber"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["U-1", "U-3", "O'Zü"]);
}

/// Follows a change-tracking link to its end: the rows, and the next delta link.
async fn track(emulator: &Emulator, url: &str) -> (Vec<Value>, String) {
    let response = emulator
        .http
        .get(url)
        .bearer_auth(emulator.fresh_token().await)
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let rows = body["value"].as_array().unwrap().clone();
    let next = body["@odata.deltaLink"].as_str().unwrap().to_owned();
    (rows, next)
}

#[tokio::test]
async fn conditional_headers_limit_an_upsert_by_key_to_an_update_or_a_create() {
    let emulator = org().await;
    // `If-Match: *`: update only, so a missing row is 404 and nothing is created.
    let response = patch(
        &emulator,
        "accounts(accountnumber='C-1')",
        &[("If-Match", "*")],
        json!({"name": "Never"}),
    )
    .await;
    expect_error(
        response,
        404,
        "0x80060891",
        "A record with the specified key values does not exist in account entity",
    )
    .await;
    assert_eq!(emulator.get_json("accounts").await["value"], json!([]));

    // `If-None-Match: *`: create only.
    let response = patch(
        &emulator,
        "accounts(accountnumber='C-1')",
        &[("If-None-Match", "*"), REPRESENTATION],
        json!({"name": "Created"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let response = patch(
        &emulator,
        "accounts(accountnumber='C-1')",
        &[("If-None-Match", "*")],
        json!({"name": "Again"}),
    )
    .await;
    expect_error(
        response,
        412,
        "0x80040237",
        "A record with matching key values already exists.",
    )
    .await;

    let response = patch(
        &emulator,
        "accounts(accountnumber='C-1')",
        &[("If-Match", "*")],
        json!({"name": "Updated"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    // The ETag from before the update is stale now, for PATCH and DELETE alike.
    let response = patch(
        &emulator,
        "accounts(accountnumber='C-1')",
        &[("If-Match", &etag)],
        json!({"name": "Stale"}),
    )
    .await;
    expect_error(response, 412, "0x80060882", "doesn't match the RowVersion").await;
    let response = send(
        &emulator,
        Method::DELETE,
        "accounts(accountnumber='C-1')",
        &[("If-Match", &etag)],
        None,
    )
    .await;
    expect_error(response, 412, "0x80060882", "").await;
    let row = emulator.get_json("accounts(accountnumber='C-1')").await;
    assert_eq!(row["name"], "Updated");
    let fresh = row["@odata.etag"].as_str().unwrap();
    let response = send(
        &emulator,
        Method::DELETE,
        "accounts(accountnumber='C-1')",
        &[("If-Match", fresh)],
        None,
    )
    .await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn no_write_leaves_two_rows_with_the_same_key_values() {
    let emulator = org().await;
    let first = emulator
        .create("accounts", json!({"name": "First", "accountnumber": "D-1"}))
        .await;
    let first_id = first["accountid"].as_str().unwrap();

    // Create, case aside.
    let response = send(
        &emulator,
        Method::POST,
        "accounts",
        &[],
        Some(json!({"name": "Second", "accountnumber": "d-1"})),
    )
    .await;
    let body = expect_error(response, 412, "0x80060892", "").await;
    assert_eq!(
        body["error"]["message"],
        "Entity Key aws_accountnumber violated. A record with the same value for accountnumber already exists. A duplicate record cannot be created. Select one or more unique values and try again."
    );

    // Update by id, and an upsert by id that would create.
    let second = emulator
        .create(
            "accounts",
            json!({"name": "Second", "accountnumber": "D-2"}),
        )
        .await;
    let second_id = second["accountid"].as_str().unwrap();
    let response = patch(
        &emulator,
        &format!("accounts({second_id})"),
        &[("If-Match", "*")],
        json!({"accountnumber": "D-1"}),
    )
    .await;
    expect_error(
        response,
        412,
        "0x80060892",
        "Entity Key aws_accountnumber violated",
    )
    .await;
    let response = patch(
        &emulator,
        "accounts(6d81597f-0000-4000-8000-000000000099)",
        &[],
        json!({"accountnumber": "D-1"}),
    )
    .await;
    expect_error(response, 412, "0x80060892", "").await;
    // Contacts keep to their two-column key.
    let response = patch(
        &emulator,
        "contacts(firstname='Ann',emailaddress1='ann@example.com')",
        &[],
        json!({"lastname": "A"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    let contact_path = "contacts(firstname='Bob',emailaddress1='bob@example.com')";
    let response = patch(&emulator, contact_path, &[], json!({"lastname": "B"})).await;
    assert_eq!(response.status(), 204);
    let response = send(
        &emulator,
        Method::POST,
        "contacts",
        &[],
        Some(json!({"firstname": "ANN", "emailaddress1": "Ann@Example.com"})),
    )
    .await;
    expect_error(
        response,
        412,
        "0x80060892",
        "Entity Key aws_name_email violated. A record with the same value for firstname, emailaddress1 already exists.",
    )
    .await;
    // An upsert by key that creates, with the body's values (which win) colliding with another row.
    let response = patch(
        &emulator,
        "contacts(firstname='Cy',emailaddress1='cy@example.com')",
        &[],
        json!({"firstname": "ann", "emailaddress1": "ANN@example.com"}),
    )
    .await;
    expect_error(response, 412, "0x80060892", "").await;
    // An upsert by key that updates Bob, with a body that would give him Ann's email: the body's
    // key values are ignored for an existing row, so this is no collision and changes nothing.
    let response = patch(
        &emulator,
        contact_path,
        &[("If-Match", "*")],
        json!({"emailaddress1": "ann@example.com", "lastname": "Bee"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    let bob = emulator.get_json(contact_path).await;
    assert_eq!(bob["emailaddress1"], "bob@example.com");
    assert_eq!(bob["lastname"], "Bee");
    // And through the control API's late commits.
    let response = emulator
        .control(
            Method::POST,
            "tables/account/rows",
            json!({"name": "Late", "accountnumber": "D-1"}),
        )
        .await;
    expect_error(response, 412, "0x80060892", "").await;

    // Writing a row's own values again is no collision.
    let response = patch(
        &emulator,
        &format!("accounts({first_id})"),
        &[("If-Match", "*")],
        json!({"accountnumber": "D-1", "name": "Same"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    // A row with a null key column is not constrained.
    for _ in 0..2 {
        emulator
            .create("accounts", json!({"name": "No number"}))
            .await;
        emulator
            .create(
                "contacts",
                json!({"firstname": "Ann", "lastname": "No email"}),
            )
            .await;
    }
    // A key value freed by a change or a delete can be taken again.
    let response = patch(
        &emulator,
        &format!("accounts({first_id})"),
        &[("If-Match", "*")],
        json!({"accountnumber": "D-9"}),
    )
    .await;
    assert_eq!(response.status(), 204);
    emulator
        .create(
            "accounts",
            json!({"name": "Took D-1", "accountnumber": "D-1"}),
        )
        .await;
    let response = send(
        &emulator,
        Method::DELETE,
        "accounts(accountnumber='D-9')",
        &[],
        None,
    )
    .await;
    assert_eq!(response.status(), 204);
    emulator
        .create(
            "accounts",
            json!({"name": "Took D-9", "accountnumber": "D-9"}),
        )
        .await;
    let rows = emulator
        .get_json("accounts?$select=accountnumber&$filter=accountnumber ne null")
        .await;
    let mut numbers: Vec<&str> = rows["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["accountnumber"].as_str().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["D-1", "D-2", "D-9"]);
}

#[tokio::test]
async fn characters_the_front_end_refuses_cannot_address_a_row_by_key() {
    let emulator = org().await;
    let awkward = "A/1 & B:2?";
    emulator
        .create(
            "accounts",
            json!({"name": "Awkward", "accountnumber": awkward}),
        )
        .await;
    for (encoded, c) in [
        ("%3C", '<'),
        ("%3E", '>'),
        ("%2A", '*'),
        ("*", '*'),
        ("%25", '%'),
        ("%26", '&'),
        ("&", '&'),
        ("%3A", ':'),
        (":", ':'),
        ("%5C", '\\'),
        ("%3F", '?'),
    ] {
        // Refused before anything else, credentials included.
        let response = emulator
            .http
            .get(emulator.api(&format!("accounts(accountnumber='a{encoded}b')")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{encoded}");
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(
            response.text().await.unwrap(),
            format!(
                "A potentially dangerous Request.Path value was detected from the client ({c})."
            )
        );
    }
    // The first such character is the one named.
    let response = emulator
        .get("accounts(accountnumber='A%2F1%20%26%20B%3A2%3F')")
        .await;
    assert_eq!(
        response.text().await.unwrap(),
        "A potentially dangerous Request.Path value was detected from the client (&)."
    );
    // A `/`, even percent-encoded, splits the path.
    for slash in ["a%2Fb", "a/b"] {
        let body = expect_error(
            emulator
                .get(format!("accounts(accountnumber='{slash}')"))
                .await,
            400,
            "0x80060888",
            "",
        )
        .await;
        assert_eq!(
            body["error"]["message"],
            "Bad Request - Error in query syntax."
        );
    }
    // Such a row is found with `$filter` instead.
    let rows = emulator
        .get_json("accounts?$select=name&$filter=accountnumber%20eq%20'A%2F1%20%26%20B%3A2%3F'")
        .await;
    assert_eq!(rows["value"][0]["name"], "Awkward");
}

async fn sdk_id(emulator: &Emulator, path: &str, column: &str) -> String {
    let body = emulator.get_json(path).await;
    body["value"][0][column].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn writes_by_key_reach_webhook_steps_as_writes_by_id_do() {
    let emulator = org().await;
    let receiver = Receiver::start().await;
    let endpoint = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": receiver.url, "authtype": 4,
                "authvalue": "key", "messageformat": 2}),
        )
        .await["serviceendpointid"]
        .as_str()
        .unwrap()
        .to_owned();
    for message in ["Create", "Update", "Delete"] {
        let message_id = sdk_id(
            &emulator,
            &format!("sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"),
            "sdkmessageid",
        )
        .await;
        let filter_id = sdk_id(
            &emulator,
            &format!("sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq 'account' and _sdkmessageid_value eq {message_id}"),
            "sdkmessagefilterid",
        )
        .await;
        emulator
            .create(
                "sdkmessageprocessingsteps",
                json!({
                    "name": format!("account {message}"),
                    "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0,
                    "asyncautodelete": false,
                    "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                    "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})"),
                    "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
                }),
            )
            .await;
    }
    let path = "accounts(accountnumber='W-1')";
    assert_eq!(
        patch(&emulator, path, &[], json!({"name": "Hooked"}))
            .await
            .status(),
        204
    );
    assert_eq!(
        patch(&emulator, path, &[], json!({"name": "Rehooked"}))
            .await
            .status(),
        204
    );
    assert_eq!(
        send(&emulator, Method::DELETE, path, &[], None)
            .await
            .status(),
        204
    );
    let log = emulator.settled_deliveries().await;
    let messages: Vec<Message> = log.deliveries.iter().map(|d| d.message).collect();
    assert_eq!(
        messages,
        [Message::Create, Message::Update, Message::Delete]
    );
    let rows: Vec<_> = log.deliveries.iter().map(|d| d.row).collect();
    assert!(rows.iter().all(|r| *r == rows[0]), "{rows:?}");
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn generated_rows_keep_to_the_keys_or_are_not_generated() {
    let emulator = org().await;
    emulator.add_key("account", "aws_name", &["name"]).await;
    let generate =
        || emulator.control(Method::POST, "tables/account/generate", json!({"count": 3}));
    assert_eq!(generate().await.status(), 201);
    // A second batch repeats the first one's names: refused whole, so no row is added.
    expect_error(
        generate().await,
        412,
        "0x80060892",
        "Entity Key aws_name violated",
    )
    .await;
    let rows = emulator.get_json("accounts?$select=name").await;
    assert_eq!(rows["value"].as_array().unwrap().len(), 3);
}
