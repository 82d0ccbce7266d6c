//! `GET {entity set}?fetchXml=...`: attributes, conditions, order, paging cookies, link-entity,
//! aggregates, and the errors the service gives.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Response;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn urldecode(s: &str) -> String {
    percent_decode(s)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn fetch(emulator: &Emulator, set: &str, xml: &str) -> Response {
    emulator
        .get(format!("{set}?fetchXml={}", urlencode(xml)))
        .await
}

async fn fetch_json(emulator: &Emulator, set: &str, xml: &str) -> Value {
    let response = fetch(emulator, set, xml).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The `name` of each row, in order.
async fn names(emulator: &Emulator, xml: &str) -> Vec<String> {
    let body = fetch_json(emulator, "accounts", xml).await;
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Names of the accounts matching one condition (or filter body), sorted.
async fn matching(emulator: &Emulator, filter: &str) -> Vec<String> {
    let mut found = names(
        emulator,
        &format!(
            "<fetch><entity name='account'><attribute name='name'/><filter>{filter}</filter></entity></fetch>"
        ),
    )
    .await;
    found.sort();
    found
}

#[tokio::test]
async fn returns_the_named_attributes_with_key_etag_and_context() {
    let emulator = Emulator::accounts().await;
    let body = fetch_json(
        &emulator,
        "accounts",
        "<fetch><entity name='account'><attribute name='name'/><attribute name='numberofemployees'/><order attribute='name'/></entity></fetch>",
    )
    .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts(name,numberofemployees,accountid)"),
        "{body}"
    );
    let first = body["value"][0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["@odata.etag", "name", "numberofemployees", "accountid"]
    );
    assert_eq!(first["name"], "100% Cotton");
    assert!(body.get("@Microsoft.Dynamics.CRM.morerecords").is_none());

    // All attributes: every column, lookups by their `_x_value` names.
    let body = fetch_json(
        &emulator,
        "accounts",
        "<fetch><entity name='account'><all-attributes/></entity></fetch>",
    )
    .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#accounts")
    );
    let row = body["value"][0].as_object().unwrap();
    assert!(row.contains_key("_primarycontactid_value"));
    assert!(row.contains_key("revenue"));
    assert_eq!(body["value"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn compares_like_filter_does() {
    let emulator = Emulator::accounts().await;
    let cond = |op: &str, value: &str| {
        format!("<condition attribute='name' operator='{op}' value='{value}'/>")
    };
    assert_eq!(
        matching(&emulator, &cond("eq", "CONTOSO LTD")).await,
        ["Contoso Ltd"]
    );
    assert_eq!(
        matching(&emulator, &cond("ne", "contoso ltd")).await.len(),
        4
    );
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='numberofemployees' operator='gt' value='40'/>"
        )
        .await,
        ["Contoso Ltd", "Fabrikam"]
    );
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='numberofemployees' operator='ge' value='40'/>"
        )
        .await,
        ["Contoso Ltd", "Fabrikam", "contoso east"]
    );
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='numberofemployees' operator='lt' value='12'/>"
        )
        .await,
        ["100% Cotton"]
    );
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='numberofemployees' operator='le' value='12'/>"
        )
        .await,
        ["100% Cotton", "O'Bryan & Sons"]
    );
    // The like family: SQL wildcards, case-insensitive.
    assert_eq!(
        matching(&emulator, &cond("like", "%TOSO%")).await,
        ["Contoso Ltd", "contoso east"]
    );
    assert_eq!(
        matching(&emulator, &cond("like", "c_ntoso ltd")).await,
        ["Contoso Ltd"]
    );
    assert_eq!(
        matching(&emulator, &cond("not-like", "%o%")).await,
        ["Fabrikam"]
    );
    assert_eq!(
        matching(&emulator, &cond("begins-with", "CON")).await,
        ["Contoso Ltd", "contoso east"]
    );
    assert_eq!(
        matching(&emulator, &cond("not-begin-with", "con"))
            .await
            .len(),
        3
    );
    assert_eq!(
        matching(&emulator, &cond("ends-with", "SONS")).await,
        ["O'Bryan & Sons"]
    );
    assert_eq!(
        matching(&emulator, &cond("not-end-with", "s")).await.len(),
        4
    );
    // Entities inside the attribute value.
    assert_eq!(
        matching(&emulator, &cond("eq", "O&apos;Bryan &amp; Sons")).await,
        ["O'Bryan & Sons"]
    );
    // null, not-null.
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='address1_city' operator='null'/>"
        )
        .await,
        ["Fabrikam"]
    );
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='revenue' operator='not-null'/>"
        )
        .await,
        ["Contoso Ltd", "Fabrikam", "contoso east"]
    );
    // in, not-in, between, not-between, with `<value>` children.
    assert_eq!(
        matching(&emulator, "<condition attribute='address1_city' operator='in'><value>redmond</value><value>Berlin</value></condition>").await,
        ["100% Cotton", "Contoso Ltd", "O'Bryan & Sons"]
    );
    assert_eq!(
        matching(&emulator, "<condition attribute='numberofemployees' operator='not-in'><value>250</value><value>3</value></condition>").await,
        ["O'Bryan & Sons", "contoso east"]
    );
    assert_eq!(
        matching(&emulator, "<condition attribute='numberofemployees' operator='between'><value>12</value><value>40</value></condition>").await,
        ["O'Bryan & Sons", "contoso east"]
    );
    assert_eq!(
        matching(&emulator, "<condition attribute='numberofemployees' operator='not-between'><value>12</value><value>249</value></condition>").await,
        ["100% Cotton", "Contoso Ltd", "Fabrikam"]
    );
    // Yes/no columns take 1/0 or true/false.
    assert_eq!(
        matching(
            &emulator,
            "<condition attribute='creditonhold' operator='eq' value='1'/>"
        )
        .await,
        ["100% Cotton", "contoso east"]
    );
}

#[tokio::test]
async fn nests_and_and_or_filters() {
    let emulator = Emulator::accounts().await;
    let found = matching(
        &emulator,
        "<condition attribute='address1_city' operator='eq' value='Redmond'/>\
         <filter type='or'>\
           <condition attribute='numberofemployees' operator='gt' value='100'/>\
           <filter type='and'><condition attribute='name' operator='like' value='O%'/><condition attribute='creditonhold' operator='eq' value='0'/></filter>\
         </filter>",
    )
    .await;
    assert_eq!(found, ["Contoso Ltd", "O'Bryan & Sons"]);
    let found = names(
        &emulator,
        "<fetch><entity name='account'><attribute name='name'/><filter type='or'>\
           <condition attribute='name' operator='eq' value='Fabrikam'/><condition attribute='numberofemployees' operator='eq' value='3'/>\
         </filter><order attribute='name'/></entity></fetch>",
    )
    .await;
    assert_eq!(found, ["100% Cotton", "Fabrikam"]);
}

#[tokio::test]
async fn orders_ascending_and_descending_then_by_key() {
    let emulator = Emulator::accounts().await;
    let asc = names(
        &emulator,
        "<fetch><entity name='account'><attribute name='name'/><order attribute='name'/></entity></fetch>",
    )
    .await;
    assert_eq!(
        asc,
        [
            "100% Cotton",
            "contoso east",
            "Contoso Ltd",
            "Fabrikam",
            "O'Bryan & Sons"
        ]
    );
    let desc = names(
        &emulator,
        "<fetch><entity name='account'><attribute name='name'/><order attribute='numberofemployees' descending='true'/><order attribute='name' descending='false'/></entity></fetch>",
    )
    .await;
    assert_eq!(
        desc,
        [
            "Contoso Ltd",
            "Fabrikam",
            "contoso east",
            "O'Bryan & Sons",
            "100% Cotton"
        ]
    );
}

/// The `paging-cookie` for the next request: the annotation's `pagingcookie` attribute, URL-decoded
/// twice, as the documentation tells clients to do.
fn next_cookie(body: &Value) -> String {
    let annotation = body["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
        .as_str()
        .expect("a paging cookie");
    assert!(
        annotation.starts_with("<cookie pagenumber=\""),
        "{annotation}"
    );
    assert!(
        annotation.ends_with(" istracking=\"False\" />"),
        "{annotation}"
    );
    let start = annotation.find("pagingcookie=\"").unwrap() + "pagingcookie=\"".len();
    let len = annotation[start..].find('"').unwrap();
    urldecode(&urldecode(&annotation[start..start + len]))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn pages_with_count_page_and_paging_cookie() {
    let emulator = Emulator::accounts().await;
    for name in ["Adatum", "Litware"] {
        emulator.create("accounts", json!({"name": name})).await;
    }
    let query = |page: usize, cookie: Option<&str>| {
        let cookie = cookie.map_or_else(String::new, |c| {
            format!(" paging-cookie=\"{}\"", xml_escape(c))
        });
        format!(
            "<fetch count='3' page='{page}'{cookie} returntotalrecordcount='true'><entity name='account'><attribute name='name'/><order attribute='name' descending='true'/></entity></fetch>"
        )
    };
    let mut seen = Vec::new();
    let first = fetch_json(&emulator, "accounts", &query(1, None)).await;
    assert_eq!(first["@Microsoft.Dynamics.CRM.morerecords"], true);
    assert_eq!(first["@Microsoft.Dynamics.CRM.totalrecordcount"], 7);
    assert_eq!(
        first["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"],
        false
    );
    let cookie = next_cookie(&first);
    assert!(
        cookie.starts_with("<cookie page=\"1\"><name last=\"")
            && cookie.contains("<accountid last=\"{")
            && cookie.ends_with(" /></cookie>"),
        "{cookie}"
    );
    let page_names = |body: &Value| -> Vec<String> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    seen.extend(page_names(&first));
    let second = fetch_json(&emulator, "accounts", &query(2, Some(&cookie))).await;
    assert_eq!(second["@Microsoft.Dynamics.CRM.morerecords"], true);
    assert!(next_cookie(&second).starts_with("<cookie page=\"2\">"));
    seen.extend(page_names(&second));
    // A row added before the cursor between pages does not shift the next page: the cookie is a key.
    emulator
        .create("accounts", json!({"name": "Zzz new"}))
        .await;
    let third = fetch_json(
        &emulator,
        "accounts",
        &query(3, Some(&next_cookie(&second))),
    )
    .await;
    assert!(third.get("@Microsoft.Dynamics.CRM.morerecords").is_none());
    assert!(
        third
            .get("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie")
            .is_none()
    );
    seen.extend(page_names(&third));
    assert_eq!(
        seen,
        [
            "O'Bryan & Sons",
            "Litware",
            "Fabrikam",
            "Contoso Ltd",
            "contoso east",
            "Adatum",
            "100% Cotton"
        ]
    );
    // Without a cookie, a page is an offset (of the eight rows there are now).
    let offset = fetch_json(&emulator, "accounts", &query(2, None)).await;
    assert_eq!(
        page_names(&offset),
        ["Fabrikam", "Contoso Ltd", "contoso east"]
    );
}

#[tokio::test]
async fn top_limits_rows_and_cannot_be_combined_with_paging() {
    let emulator = Emulator::accounts().await;
    let found = names(
        &emulator,
        "<fetch top='2'><entity name='account'><attribute name='name'/><order attribute='name'/></entity></fetch>",
    )
    .await;
    assert_eq!(found, ["100% Cotton", "contoso east"]);
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch top='2' count='2'><entity name='account'><attribute name='name'/></entity></fetch>",
        )
        .await,
        400,
        "0x80040203",
        "'top'",
    )
    .await;
}

async fn linked() -> Emulator {
    let emulator = Emulator::accounts().await;
    let ann = emulator
        .create("contacts", json!({"firstname": "Ann", "lastname": "Lee"}))
        .await;
    let bob = emulator
        .create("contacts", json!({"firstname": "Bob", "lastname": "Ray"}))
        .await;
    let ann_id = ann["contactid"].as_str().unwrap();
    let bob_id = bob["contactid"].as_str().unwrap();
    emulator
        .create(
            "accounts",
            json!({"name": "Linked A", "primarycontactid@odata.bind": format!("/contacts({ann_id})")}),
        )
        .await;
    emulator
        .create(
            "accounts",
            json!({"name": "Linked B", "primarycontactid@odata.bind": format!("/contacts({bob_id})")}),
        )
        .await;
    emulator
}

#[tokio::test]
async fn links_inner_and_outer_through_a_lookup_with_an_alias() {
    let emulator = linked().await;
    let query = |link_type: &str, filter: &str| {
        format!(
            "<fetch><entity name='account'><attribute name='name'/><order attribute='name'/>\
             <link-entity name='contact' from='contactid' to='primarycontactid' link-type='{link_type}' alias='c'>\
             <attribute name='fullname'/>{filter}</link-entity></entity></fetch>"
        )
    };
    let inner = fetch_json(&emulator, "accounts", &query("inner", "")).await;
    let rows = inner["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{inner}");
    assert_eq!(rows[0]["name"], "Linked A");
    assert_eq!(rows[0]["c.fullname"], "Ann Lee");
    assert_eq!(
        rows[0]["c.fullname@OData.Community.Display.V1.AttributeName"],
        "fullname"
    );
    assert_eq!(rows[1]["c.fullname"], "Bob Ray");

    // A condition inside the link applies to the linked rows.
    let filtered = fetch_json(
        &emulator,
        "accounts",
        &query(
            "inner",
            "<filter><condition attribute='firstname' operator='eq' value='bob'/></filter>",
        ),
    )
    .await;
    assert_eq!(filtered["value"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["value"][0]["name"], "Linked B");

    let outer = fetch_json(
        &emulator,
        "accounts",
        &query(
            "outer",
            "<filter><condition attribute='firstname' operator='eq' value='bob'/></filter>",
        ),
    )
    .await;
    let rows = outer["value"].as_array().unwrap();
    assert_eq!(rows.len(), 7, "{outer}");
    let a = rows.iter().find(|r| r["name"] == "Linked A").unwrap();
    assert_eq!(a["c.fullname"], Value::Null);
    let b = rows.iter().find(|r| r["name"] == "Linked B").unwrap();
    assert_eq!(b["c.fullname"], "Bob Ray");

    // The other direction (1:N): contacts with the accounts naming them as primary contact.
    let reverse = fetch_json(
        &emulator,
        "contacts",
        "<fetch><entity name='contact'><attribute name='fullname'/><order attribute='fullname'/>\
         <link-entity name='account' from='primarycontactid' to='contactid' alias='a'><attribute name='name'/></link-entity>\
         </entity></fetch>",
    )
    .await;
    let rows = reverse["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["fullname"], "Ann Lee");
    assert_eq!(rows[0]["a.name"], "Linked A");
}

#[tokio::test]
async fn aggregates_with_and_without_groupby() {
    let emulator = Emulator::accounts().await;
    let body = fetch_json(
        &emulator,
        "accounts",
        "<fetch aggregate='true'><entity name='account'>\
         <attribute name='accountid' alias='n' aggregate='count'/>\
         <attribute name='revenue' alias='revenues' aggregate='countcolumn'/>\
         <attribute name='numberofemployees' alias='total' aggregate='sum'/>\
         <attribute name='numberofemployees' alias='average' aggregate='avg'/>\
         <attribute name='numberofemployees' alias='least' aggregate='min'/>\
         <attribute name='revenue' alias='most' aggregate='max'/>\
         </entity></fetch>",
    )
    .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#accounts")
    );
    assert_eq!(
        body["value"],
        json!([{"n": 5, "revenues": 3, "total": 555, "average": 111, "least": 3, "most": 1_000_000.5}])
    );
    let grouped = fetch_json(
        &emulator,
        "accounts",
        "<fetch aggregate='true'><entity name='account'>\
         <attribute name='address1_city' alias='city' groupby='true'/>\
         <attribute name='accountid' alias='n' aggregate='count'/>\
         <attribute name='numberofemployees' alias='staff' aggregate='sum'/>\
         <order alias='staff' descending='true'/>\
         </entity></fetch>",
    )
    .await;
    assert_eq!(
        grouped["value"],
        json!([
            {"city": "Redmond", "n": 2, "staff": 262},
            {"city": null, "n": 1, "staff": 250},
            {"city": "Seattle", "n": 1, "staff": 40},
            {"city": "Berlin", "n": 1, "staff": 3},
        ])
    );
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch aggregate='true'><entity name='account'><attribute name='name'/></entity></fetch>",
        )
        .await,
        400,
        "0x80041107",
        "aggregate",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch aggregate='true'><entity name='account'><attribute name='revenue' aggregate='sum'/></entity></fetch>",
        )
        .await,
        400,
        "0x8004110b",
        "alias",
    )
    .await;
}

#[tokio::test]
async fn refuses_what_the_service_refuses() {
    let emulator = Emulator::accounts().await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><attribute name='name'></entity></fetch>",
        )
        .await,
        400,
        "0x80040201",
        "Invalid XML.",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><attribute name='nme'/></entity></fetch>",
        )
        .await,
        400,
        "0x80041103",
        "'account' entity doesn't contain attribute with Name = 'nme'",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><filter><condition attribute='x' operator='eq' value='1'/></filter></entity></fetch>",
        )
        .await,
        400,
        "0x80041103",
        "Name = 'x'",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='contact'><all-attributes/></entity></fetch>",
        )
        .await,
        400,
        "0x80041128",
        "'contact'",
    )
    .await;
    expect_error(
        emulator
            .get(format!(
                "accounts?$select=name&fetchXml={}",
                urlencode("<fetch><entity name='account'><all-attributes/></entity></fetch>")
            ))
            .await,
        400,
        "0x80060888",
        "$select",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><filter><condition attribute='name' operator='equals' value='x'/></filter></entity></fetch>",
        )
        .await,
        400,
        "0x80041120",
        "'equals'",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><filter><condition attribute='numberofemployees' operator='eq' value='many'/></filter></entity></fetch>",
        )
        .await,
        400,
        "0x80040203",
        "System.Int32",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><filter><condition attribute='createdon' operator='today'/></filter></entity></fetch>",
        )
        .await,
        501,
        "0x80040216",
        "The Dataverse emulator does not implement the FetchXML condition operator 'today'",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><link-entity name='contact' from='contactid' to='primarycontactid'>\
             <link-entity name='account' from='accountid' to='parentcustomerid'>\
             <link-entity name='contact' from='contactid' to='primarycontactid'/>\
             </link-entity></link-entity></entity></fetch>",
        )
        .await,
        501,
        "0x80040216",
        "more than two levels",
    )
    .await;
    expect_error(
        fetch(
            &emulator,
            "accounts",
            "<fetch><entity name='account'><![CDATA[x]]></entity></fetch>",
        )
        .await,
        501,
        "0x80040216",
        "CDATA",
    )
    .await;
}
