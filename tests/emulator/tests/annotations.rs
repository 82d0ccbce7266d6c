//! Formatted values and lookup annotations: `Prefer: odata.include-annotations="..."` on every kind
//! of read, and nothing without it.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::Method;
use serde_json::{Value, json};
use support::Emulator;
use support::receiver::Receiver;

const FV: &str = "OData.Community.Display.V1.FormattedValue";
const NAV: &str = "Microsoft.Dynamics.CRM.associatednavigationproperty";
const LOGICAL: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";
const ALL: &str = "odata.include-annotations=\"*\"";

/// A GET with a `Prefer` header: the status, the `Preference-Applied` header and the body.
async fn get(emulator: &Emulator, path: &str, prefer: Option<&str>) -> (Option<String>, Value) {
    let mut request = emulator.request(Method::GET, path);
    if let Some(prefer) = prefer {
        request = request.header("Prefer", prefer);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let applied = response
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().unwrap().to_owned());
    (applied, response.json().await.unwrap())
}

fn note<'a>(row: &'a Value, column: &str, term: &str) -> &'a Value {
    &row[format!("{column}@{term}")]
}

/// The keys of a row, in the order they were written.
fn keys(row: &Value) -> Vec<String> {
    row.as_object().unwrap().keys().cloned().collect()
}

/// An account with one value of each kind, and a contact working there.
async fn org() -> (Emulator, String, String) {
    let emulator = Emulator::empty().await;
    let account = emulator
        .create(
            "accounts",
            json!({
                "name": "Contoso", "industrycode": 7, "creditonhold": true,
                "numberofemployees": 5000, "revenue": 5_000_000,
                "new_checkintime": "2024-01-31T15:30:00Z",
            }),
        )
        .await;
    let account = account["accountid"].as_str().unwrap().to_owned();
    let contact = emulator
        .create(
            "contacts",
            json!({
                "firstname": "Ada", "lastname": "Lovelace", "donotemail": true,
                "birthdate": "1990-12-10",
                "parentcustomerid_account@odata.bind": format!("/accounts({account})"),
            }),
        )
        .await;
    let contact = contact["contactid"].as_str().unwrap().to_owned();
    (emulator, account, contact)
}

#[tokio::test]
async fn without_the_preference_nothing_is_added() {
    let (emulator, account, contact) = org().await;
    for path in [
        format!("accounts({account})"),
        "accounts".to_owned(),
        format!("contacts({contact})?$expand=parentcustomerid_account($select=name)"),
    ] {
        let (applied, body) = get(&emulator, &path, None).await;
        assert_eq!(applied, None, "{path}");
        let text = body.to_string();
        assert!(
            !text.contains(FV) && !text.contains(LOGICAL),
            "{path}: {text}"
        );
    }
    // Asking for something else adds none of them either.
    let (_, body) = get(
        &emulator,
        &format!("accounts({account})"),
        Some("odata.include-annotations=\"Microsoft.PowerApps.CDS.ErrorDetails*\""),
    )
    .await;
    assert!(!body.to_string().contains(FV), "{body}");
}

#[tokio::test]
async fn every_kind_of_column_is_formatted_and_each_annotation_comes_before_its_column() {
    let (emulator, account, _) = org().await;
    let (applied, row) = get(&emulator, &format!("accounts({account})"), Some(ALL)).await;
    assert_eq!(applied.as_deref(), Some(ALL));
    for (column, shown) in [
        ("industrycode", "Consulting"),
        ("creditonhold", "Yes"),
        ("numberofemployees", "5,000"),
        ("revenue", "$5,000,000.00"),
        ("statecode", "Active"),
        ("statuscode", "Active"),
        ("new_checkintime", "1/31/2024 3:30 PM"),
        ("_transactioncurrencyid_value", "US Dollar"),
    ] {
        assert_eq!(note(&row, column, FV), shown, "{column}");
    }
    let created = row["createdon"].as_str().unwrap();
    assert!(
        note(&row, "createdon", FV).as_str().unwrap().contains(' '),
        "{created}: {row}"
    );
    // Text, ids and nulls carry nothing.
    for column in ["name", "accountid", "versionnumber", "description"] {
        assert!(note(&row, column, FV).is_null(), "{column}: {row}");
    }
    assert!(note(&row, "_parentaccountid_value", LOGICAL).is_null());
    // Dataverse writes a column's annotations right before it.
    let keys = keys(&row);
    let at = |k: &str| keys.iter().position(|x| x == k).unwrap();
    assert_eq!(at("revenue"), at(&format!("revenue@{FV}")) + 1);
    let currency = "_transactioncurrencyid_value";
    assert_eq!(
        [
            at(&format!("{currency}@{FV}")),
            at(&format!("{currency}@{NAV}")),
            at(&format!("{currency}@{LOGICAL}")),
        ],
        [at(currency) - 3, at(currency) - 2, at(currency) - 1]
    );
    assert_eq!(note(&row, currency, LOGICAL), "transactioncurrency");
    assert_eq!(note(&row, currency, NAV), "transactioncurrencyid");

    // Decimals and floating point numbers, on a custom table.
    emulator
        .add_table(
            &NewTable::new("new_measure", "new_measures", "new_measureid", "new_name")
                .column("new_weight", "decimal")
                .column("new_ratio", "double")
                .column("new_size", "choice:1=Small,2=Large"),
        )
        .await;
    let measure = emulator
        .create(
            "new_measures",
            json!({"new_name": "m", "new_weight": 1234.5, "new_ratio": -0.25, "new_size": 2}),
        )
        .await;
    let id = measure["new_measureid"].as_str().unwrap();
    let (_, row) = get(&emulator, &format!("new_measures({id})"), Some(ALL)).await;
    assert_eq!(note(&row, "new_weight", FV), "1,234.50");
    assert_eq!(note(&row, "new_ratio", FV), "-0.25");
    assert_eq!(note(&row, "new_size", FV), "Large");
}

#[tokio::test]
async fn lookups_name_the_row_its_table_and_the_navigation_property() {
    let (emulator, account, contact) = org().await;
    let (_, row) = get(&emulator, &format!("contacts({contact})"), Some(ALL)).await;
    let lookup = "_parentcustomerid_value";
    assert_eq!(note(&row, lookup, FV), "Contoso");
    assert_eq!(note(&row, lookup, LOGICAL), "account");
    assert_eq!(note(&row, lookup, NAV), "parentcustomerid_account");
    assert_eq!(note(&row, "donotemail", FV), "Do Not Allow");
    assert_eq!(note(&row, "birthdate", FV), "12/10/1990");
    // The platform's references: users, named as the organisation knows them.
    for (column, nav) in [
        ("_ownerid_value", "ownerid"),
        ("_createdby_value", "createdby"),
        ("_modifiedby_value", "modifiedby"),
    ] {
        assert_eq!(note(&row, column, LOGICAL), "systemuser", "{column}");
        assert_eq!(note(&row, column, NAV), nav, "{column}");
        assert!(note(&row, column, FV).is_string(), "{column}: {row}");
    }
    assert_eq!(
        note(&row, "_owningbusinessunit_value", LOGICAL),
        "businessunit"
    );

    // The polymorphic lookup pointed at a contact names the other navigation property.
    let child = emulator
        .create(
            "contacts",
            json!({"lastname": "Byron",
                "parentcustomerid_contact@odata.bind": format!("/contacts({contact})")}),
        )
        .await;
    let child = child["contactid"].as_str().unwrap();
    let (_, row) = get(&emulator, &format!("contacts({child})"), Some(ALL)).await;
    assert_eq!(note(&row, lookup, FV), "Ada Lovelace");
    assert_eq!(note(&row, lookup, LOGICAL), "contact");
    assert_eq!(note(&row, lookup, NAV), "parentcustomerid_contact");

    // The name follows the row it points at.
    let response = emulator
        .request(Method::PATCH, &format!("accounts({account})"))
        .json(&json!({"name": "Contoso Pharmaceuticals"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, row) = get(&emulator, &format!("contacts({contact})"), Some(ALL)).await;
    assert_eq!(note(&row, lookup, FV), "Contoso Pharmaceuticals");
}

#[tokio::test]
async fn only_the_annotations_asked_for_are_added() {
    let (emulator, _, contact) = org().await;
    let path = format!("contacts({contact})");
    let lookup = "_parentcustomerid_value";

    let only = format!("odata.include-annotations=\"{FV}\"");
    let (applied, row) = get(&emulator, &path, Some(&only)).await;
    assert_eq!(applied.as_deref(), Some(only.as_str()));
    assert_eq!(note(&row, lookup, FV), "Contoso");
    assert!(note(&row, lookup, LOGICAL).is_null() && note(&row, lookup, NAV).is_null());

    let (_, row) = get(
        &emulator,
        &path,
        Some("odata.include-annotations=\"Microsoft.Dynamics.CRM.lookup*\""),
    )
    .await;
    assert_eq!(note(&row, lookup, LOGICAL), "account");
    assert!(note(&row, lookup, FV).is_null() && note(&row, lookup, NAV).is_null());
    assert!(note(&row, "donotemail", FV).is_null());

    // Two names, as a list.
    let (_, row) = get(
        &emulator,
        &path,
        Some(&format!("odata.include-annotations=\"{FV},{NAV}\"")),
    )
    .await;
    assert_eq!(note(&row, lookup, NAV), "parentcustomerid_account");
    assert_eq!(note(&row, lookup, FV), "Contoso");
    assert!(note(&row, lookup, LOGICAL).is_null());
}

#[tokio::test]
async fn collections_expansions_and_related_rows_are_annotated() {
    let (emulator, account, contact) = org().await;
    let (applied, page) = get(
        &emulator,
        "contacts?$select=fullname,donotemail,_parentcustomerid_value",
        Some(&format!("odata.maxpagesize=10,{ALL}")),
    )
    .await;
    assert_eq!(
        applied.as_deref(),
        Some(format!("odata.maxpagesize=10,{ALL}").as_str())
    );
    let row = &page["value"][0];
    assert_eq!(note(row, "donotemail", FV), "Do Not Allow");
    assert_eq!(note(row, "_parentcustomerid_value", FV), "Contoso");

    let (_, row) = get(
        &emulator,
        &format!("contacts({contact})?$expand=parentcustomerid_account($select=name,industrycode)"),
        Some(ALL),
    )
    .await;
    let expanded = &row["parentcustomerid_account"];
    assert_eq!(note(expanded, "industrycode", FV), "Consulting");

    let (_, related) = get(
        &emulator,
        &format!("accounts({account})/contact_customer_accounts?$select=donotemail"),
        Some(ALL),
    )
    .await;
    assert_eq!(note(&related["value"][0], "donotemail", FV), "Do Not Allow");
}

#[tokio::test]
async fn written_rows_returned_with_a_representation_are_annotated() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .request(Method::POST, "accounts?$select=name,industrycode")
        .header("Prefer", format!("return=representation,{ALL}"))
        .json(&json!({"name": "Fabrikam", "industrycode": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["preference-applied"],
        format!("return=representation,{ALL}").as_str()
    );
    let row: Value = response.json().await.unwrap();
    assert_eq!(note(&row, "industrycode", FV), "Accounting");
    let id = row["accountid"].as_str().unwrap();

    let response = emulator
        .request(
            Method::PATCH,
            &format!("accounts({id})?$select=industrycode"),
        )
        .header("Prefer", format!("return=representation,{ALL}"))
        .json(&json!({"industrycode": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let row: Value = response.json().await.unwrap();
    assert_eq!(
        note(&row, "industrycode", FV),
        "Agriculture and Non-petrol Natural Resource Extraction"
    );
}

#[tokio::test]
async fn delta_pages_carry_annotations_and_keep_their_delta_link() {
    let (emulator, account, _) = org().await;
    let extra = emulator
        .create("accounts", json!({"name": "Going", "industrycode": 3}))
        .await;
    let extra = extra["accountid"].as_str().unwrap().to_owned();
    let prefer = format!("odata.track-changes,{ALL}");
    let (applied, first) = get(
        &emulator,
        "accounts?$select=name,industrycode",
        Some(&prefer),
    )
    .await;
    assert_eq!(applied.as_deref(), Some(prefer.as_str()));
    assert!(note(&first["value"][0], "industrycode", FV).is_string());
    let delta = first["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink")
        .to_owned();

    let response = emulator
        .request(Method::PATCH, &format!("accounts({account})"))
        .json(&json!({"industrycode": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = emulator
        .request(Method::DELETE, &format!("accounts({extra})"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let response = emulator
        .http
        .get(&delta)
        .bearer_auth(emulator.fresh_token().await)
        .header("Prefer", ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["preference-applied"], ALL);
    let page: Value = response.json().await.unwrap();
    let entries = page["value"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(
        note(&entries[0], "industrycode", FV),
        "Design, Direction and Creative Management"
    );
    // A tombstone carries its context, id and reason only.
    assert_eq!(keys(&entries[1]), ["@odata.context", "id", "reason"]);
    assert!(page["@odata.deltaLink"].is_string(), "{page}");
}

#[tokio::test]
async fn fetchxml_results_are_annotated_linked_columns_too() {
    let (emulator, _, _) = org().await;
    let fetch = "<fetch><entity name='contact'><attribute name='fullname'/>\
        <attribute name='donotemail'/><attribute name='parentcustomerid'/>\
        <link-entity name='account' from='accountid' to='parentcustomerid' alias='a'>\
        <attribute name='industrycode'/></link-entity></entity></fetch>";
    let path = format!("contacts?fetchXml={}", urlencoding(fetch));
    let (applied, page) = get(&emulator, &path, Some(ALL)).await;
    assert_eq!(applied.as_deref(), Some(ALL));
    let row = &page["value"][0];
    assert_eq!(note(row, "donotemail", FV), "Do Not Allow");
    assert_eq!(note(row, "_parentcustomerid_value", FV), "Contoso");
    assert_eq!(note(row, "_parentcustomerid_value", LOGICAL), "account");
    assert_eq!(note(row, "a.industrycode", FV), "Consulting");
    assert_eq!(
        row["a.industrycode@OData.Community.Display.V1.AttributeName"],
        "industrycode"
    );
    let (_, plain) = get(&emulator, &path, None).await;
    assert!(!plain.to_string().contains(FV), "{plain}");
}

#[tokio::test]
async fn batch_parts_take_their_own_preference() {
    let (emulator, account, _) = org().await;
    let part = |prefer: Option<&str>| {
        let mut text = format!(
            "--batch_A\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             GET accounts({account})?$select=industrycode HTTP/1.1\r\nAccept: application/json\r\n"
        );
        if let Some(prefer) = prefer {
            text.push_str("Prefer: ");
            text.push_str(prefer);
            text.push_str("\r\n");
        }
        text.push_str("\r\n\r\n");
        text
    };
    let body = format!("{}{}--batch_A--\r\n", part(Some(ALL)), part(None));
    let response = emulator
        .request(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=batch_A")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(note(&rows[0], "industrycode", FV), "Consulting");
    assert!(note(&rows[1], "industrycode", FV).is_null(), "{text}");
}

/// The first row of a query's answer.
async fn first(emulator: &Emulator, path: &str) -> Value {
    emulator.get_json(path).await["value"][0].clone()
}

/// The `{"key", "value"}` entry named `key` of a WCF dictionary.
fn entry<'a>(pairs: &'a Value, key: &str) -> &'a Value {
    &pairs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("{key} in {pairs}"))["value"]
}

#[tokio::test]
async fn webhook_images_carry_formatted_values_and_the_target_none() {
    let (emulator, _, _) = org().await;
    let receiver = Receiver::start().await;
    let endpoint = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": receiver.url, "authtype": 4,
                "authvalue": "key", "messageformat": 2}),
        )
        .await;
    let endpoint = endpoint["serviceendpointid"].as_str().unwrap();
    let message = first(&emulator, "sdkmessages?$filter=name eq 'Create'").await;
    let message = message["sdkmessageid"].as_str().unwrap();
    let filter = first(
        &emulator,
        &format!(
            "sdkmessagefilters?$filter=primaryobjecttypecode eq 'contact' and _sdkmessageid_value eq {message}"
        ),
    )
    .await;
    let filter = filter["sdkmessagefilterid"].as_str().unwrap();
    let step = emulator
        .create(
            "sdkmessageprocessingsteps",
            json!({"name": "contact create", "stage": 40, "mode": 1, "rank": 1,
                "supporteddeployment": 0,
                "sdkmessageid@odata.bind": format!("/sdkmessages({message})"),
                "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter})"),
                "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})")}),
        )
        .await;
    let step = step["sdkmessageprocessingstepid"].as_str().unwrap();
    emulator
        .create(
            "sdkmessageprocessingstepimages",
            json!({"name": "Created", "entityalias": "Created", "imagetype": 1,
                "messagepropertyname": "Id",
                "sdkmessageprocessingstepid@odata.bind": format!("/sdkmessageprocessingsteps({step})")}),
        )
        .await;
    let account = first(&emulator, "accounts?$select=accountid").await;
    emulator
        .create(
            "contacts",
            json!({"lastname": "Hopper", "donotemail": false, "gendercode": 2,
                "birthdate": "1906-12-09",
                "parentcustomerid_account@odata.bind": format!("/accounts({})", account["accountid"].as_str().unwrap())}),
        )
        .await;
    emulator.settled_deliveries().await;
    let posted = receiver.received();
    assert_eq!(posted.len(), 1);
    let context = posted[0].json();
    let image = entry(&context["PostEntityImages"], "Created");
    let formatted = &image["FormattedValues"];
    assert_eq!(entry(formatted, "donotemail"), "Allow");
    assert_eq!(entry(formatted, "gendercode"), "Female");
    assert_eq!(entry(formatted, "birthdate"), "12/9/1906");
    assert_eq!(entry(formatted, "parentcustomerid"), "Contoso");
    assert_eq!(entry(formatted, "statecode"), "Active");
    // Text has none.
    assert!(
        !formatted
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == "lastname"),
        "{formatted}"
    );
    let target = entry(&context["InputParameters"], "Target");
    assert_eq!(target["FormattedValues"], json!([]));
}

/// Percent-encodes a query value.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
