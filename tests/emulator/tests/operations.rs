//! Web API functions and actions: `WhoAmI`, `RetrieveTotalRecordCount` with inline parameters and
//! parameter aliases, the unbound action `PublishAllXml`, and the bound action `QualifyLead`, with the
//! service's answers to every way of calling them wrong.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::Message;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::{Emulator, expect_error};

/// The message an operation called with the wrong method gets, for `path` (and its query).
const NO_RESOURCE: &str = "No HTTP resource was found that matches the request URI";

async fn send(emulator: &Emulator, method: Method, path: &str, body: Option<&Value>) -> Response {
    let request = emulator.request(method, path);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    request.send().await.unwrap()
}

async fn get(emulator: &Emulator, path: &str) -> Response {
    send(emulator, Method::GET, path, None).await
}

async fn post(emulator: &Emulator, path: &str, body: &Value) -> Response {
    send(emulator, Method::POST, path, Some(body)).await
}

async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The ids of `set`'s rows.
async fn ids(emulator: &Emulator, set: &str, id: &str) -> Vec<String> {
    let body = emulator.get_json(&format!("{set}?$select={id}")).await;
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[id].as_str().unwrap().to_owned())
        .collect()
}

/// How many rows accounts, contacts and opportunities have.
async fn made(emulator: &Emulator) -> [usize; 3] {
    [
        ids(emulator, "accounts", "accountid").await.len(),
        ids(emulator, "contacts", "contactid").await.len(),
        ids(emulator, "opportunities", "opportunityid").await.len(),
    ]
}

fn grace() -> Value {
    json!({"subject": "Coffee machines for the fleet", "firstname": "Grace", "lastname": "Hopper",
        "companyname": "Navy Computing", "emailaddress1": "grace@navy.example.com",
        "telephone1": "+1-555-0100", "leadqualitycode": 1, "estimatedvalue": 25000,
        "estimatedclosedate": "2027-03-01", "description": "Wants a demo."})
}

/// Creates a lead; returns its id.
async fn lead(emulator: &Emulator, body: Value) -> String {
    let row = emulator.create("leads", body).await;
    row["leadid"].as_str().unwrap().to_owned()
}

fn flags(account: bool, contact: bool, opportunity: bool) -> Value {
    json!({"CreateAccount": account, "CreateContact": contact, "CreateOpportunity": opportunity,
        "Status": 3})
}

async fn qualify(emulator: &Emulator, key: &str, body: &Value) -> Response {
    post(
        emulator,
        &format!("leads({key})/Microsoft.Dynamics.CRM.QualifyLead"),
        body,
    )
    .await
}

/// The state, status and version of a lead: what must not move when qualifying it fails.
async fn lead_state(emulator: &Emulator, id: &str) -> (Value, Value, Value) {
    let row = emulator
        .get_json(&format!(
            "leads({id})?$select=statecode,statuscode,versionnumber"
        ))
        .await;
    (
        row["statecode"].clone(),
        row["statuscode"].clone(),
        row["versionnumber"].clone(),
    )
}

#[tokio::test]
async fn who_am_i_answers_with_or_without_parentheses_and_only_to_get() {
    let emulator = Emulator::empty().await;
    let bare = ok_json(get(&emulator, "WhoAmI").await).await;
    let called = ok_json(get(&emulator, "WhoAmI()").await).await;
    assert_eq!(bare, called);
    assert!(
        called["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
        "{called}"
    );
    for field in ["BusinessUnitId", "UserId", "OrganizationId"] {
        assert!(called[field].is_string(), "{called}");
    }
    // A function is not posted to: ASP.NET finds no route, and says so with the URL it was given.
    let posted = expect_error(
        post(&emulator, "WhoAmI()", &json!({})).await,
        404,
        "",
        NO_RESOURCE,
    )
    .await;
    assert!(
        posted["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("/api/data/v9.2/WhoAmI()'."),
        "{posted}"
    );
    // A parameter it does not declare: no function of that name takes it.
    expect_error(
        get(&emulator, "WhoAmI(UserId=@p)?@p=1").await,
        404,
        "0x8006088a",
        "Resource not found for the segment 'WhoAmI'.",
    )
    .await;
    // Nothing follows a non-composable function.
    expect_error(
        get(&emulator, "WhoAmI()/UserId").await,
        400,
        "0x8006088a",
        "The segment 'WhoAmI' must be the last segment in the URI",
    )
    .await;
}

#[tokio::test]
async fn retrieve_total_record_count_counts_each_table_through_aliases_or_inline() {
    let emulator = Emulator::empty().await;
    for name in ["Alpha", "Beta"] {
        emulator.create("accounts", json!({"name": name})).await;
    }
    emulator
        .create("contacts", json!({"lastname": "Lovelace"}))
        .await;
    let expected = json!({"Count": 2, "IsReadOnly": false, "Keys": ["account", "contact"],
        "Values": [2, 1]});
    // Learn's example: the alias's value a JSON array, percent-encoded in the query string.
    let body = ok_json(
        get(
            &emulator,
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%5B%22account%22%2C%22contact%22%5D",
        )
        .await,
    )
    .await;
    assert!(
        body["@odata.context"].as_str().unwrap().ends_with(
            "/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse"
        ),
        "{body}"
    );
    assert_eq!(body["EntityRecordCountCollection"], expected);
    // The same, unencoded where a client leaves it so, with single quotes, with another alias name,
    // and inline in the path.
    for path in [
        r#"RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","contact"]"#,
        "RetrieveTotalRecordCount(EntityNames=@names)?@names=['account', 'contact']",
        "RetrieveTotalRecordCount(EntityNames=['account','contact'])",
        r#"RetrieveTotalRecordCount(EntityNames=["account","contact"])"#,
        "RetrieveTotalRecordCount( EntityNames = @p1 )?$select=x&@p1=['account','contact']",
    ] {
        let body = ok_json(get(&emulator, path).await).await;
        assert_eq!(body["EntityRecordCountCollection"], expected, "{path}");
    }
    // The count is live, not a day-old snapshot: a new row shows at once.
    emulator.create("accounts", json!({"name": "Gamma"})).await;
    let body = ok_json(
        get(
            &emulator,
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=['account','account','lead']",
        )
        .await,
    )
    .await;
    assert_eq!(
        body["EntityRecordCountCollection"],
        json!({"Count": 2, "IsReadOnly": false, "Keys": ["account", "lead"], "Values": [3, 0]})
    );
    let body = ok_json(get(&emulator, "RetrieveTotalRecordCount(EntityNames=[])").await).await;
    assert_eq!(
        body["EntityRecordCountCollection"],
        json!({"Count": 0, "IsReadOnly": false, "Keys": [], "Values": []})
    );
    // A table the organisation does not have.
    expect_error(
        get(&emulator, "RetrieveTotalRecordCount(EntityNames=['account','incident'])").await,
        404,
        "0x80041102",
        "The entity with a name = 'incident' with namemapping = 'Logical' was not found in the MetadataCache.",
    )
    .await;
}

#[tokio::test]
async fn function_parameters_are_refused_as_the_odata_library_refuses_them() {
    let emulator = Emulator::empty().await;
    let not_found = "Resource not found for the segment 'RetrieveTotalRecordCount'.";
    let cases: [(&str, u16, &str, &str); 17] = [
        // A name the function does not declare, alone or beside the one it does: no overload fits.
        (
            "RetrieveTotalRecordCount(Names=@p1)?@p1=['account']",
            404,
            "0x8006088a",
            not_found,
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1,Extra=1)?@p1=['account']",
            404,
            "0x8006088a",
            not_found,
        ),
        // A value without a name is read as a key, which a function has not.
        (
            "RetrieveTotalRecordCount(['account'])",
            400,
            "0x8006088a",
            "The request URI is not valid. The segment 'RetrieveTotalRecordCount' cannot include key predicates, however it may end with empty parenthesis.",
        ),
        // No value for the required parameter: none given, an alias the query string does not give,
        // null, or a bare name in an alias.
        (
            "RetrieveTotalRecordCount",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        (
            "RetrieveTotalRecordCount()",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p2=['account']",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=null)",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=account",
            400,
            "0x80060888",
            "Request message has unresolved parameters.",
        ),
        // Literals of the wrong type.
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1='account'",
            400,
            "0x80060888",
            "Expression of type 'Edm.String' cannot be converted to type 'Collection(Edm.String)'.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=5)",
            400,
            "0x80060888",
            "Expression of type 'Edm.Int32' cannot be converted to type 'Collection(Edm.String)'.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=['account',1]",
            400,
            "0x80060888",
            "Cannot convert the literal '1' to the expected type 'Edm.String'.",
        ),
        // A bare name inline is a property path, which no parameter can hold.
        (
            "RetrieveTotalRecordCount(EntityNames=account)",
            400,
            "0x80060888",
            "The parameter 'EntityNames=account' is not in scope.",
        ),
        // Literals that do not parse.
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=%22account%22",
            400,
            "0x80060888",
            "Syntax error: character '\"' is not valid at position 0 in '\"account\"'.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1='acc",
            400,
            "0x80060888",
            "There is an unterminated string literal at position 4 in ''acc'.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=['account',]",
            400,
            "0x80060888",
            "Syntax error at position 11 in '['account',]'.",
        ),
        (
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=",
            400,
            "0x80060888",
            "Expression expected at position 0 in ''.",
        ),
    ];
    for (path, status, code, message) in cases {
        let response = get(&emulator, path).await;
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(body["error"]["message"], message, "{path}");
    }
    // A function is read with GET; the path is parsed first, so a good one meets the router's 404.
    expect_error(
        post(
            &emulator,
            "RetrieveTotalRecordCount(EntityNames=@p1)?@p1=['account']",
            &json!({}),
        )
        .await,
        404,
        "",
        NO_RESOURCE,
    )
    .await;
}

#[tokio::test]
async fn names_the_service_does_not_have_are_not_found() {
    let emulator = Emulator::empty().await;
    for (method, path, segment) in [
        (Method::GET, "NoSuchFunction()", "NoSuchFunction"),
        (Method::POST, "NoSuchAction", "NoSuchAction"),
        // Unbound operations are named without the namespace.
        (
            Method::GET,
            "Microsoft.Dynamics.CRM.WhoAmI()",
            "Microsoft.Dynamics.CRM.WhoAmI",
        ),
        (
            Method::POST,
            "Microsoft.Dynamics.CRM.PublishAllXml",
            "Microsoft.Dynamics.CRM.PublishAllXml",
        ),
    ] {
        expect_error(
            send(&emulator, method, path, Some(&json!({}))).await,
            404,
            "0x8006088a",
            &format!("Resource not found for the segment '{segment}'."),
        )
        .await;
    }
}

#[tokio::test]
async fn publish_all_xml_is_an_unbound_action_with_nothing_to_publish() {
    let emulator = Emulator::empty().await;
    for (path, body) in [
        ("PublishAllXml", None),
        ("PublishAllXml", Some(json!({}))),
        ("PublishAllXml()", Some(json!({}))),
    ] {
        let response = send(&emulator, Method::POST, path, body.as_ref()).await;
        assert_eq!(response.status(), 204, "{path}");
        assert!(response.text().await.unwrap().is_empty());
    }
    expect_error(get(&emulator, "PublishAllXml").await, 404, "", NO_RESOURCE).await;
    expect_error(
        post(&emulator, "PublishAllXml", &json!({"ParameterXml": "<x/>"})).await,
        400,
        "0x80048d19",
        "The parameter 'ParameterXml' in the request payload is not a valid parameter for the operation 'PublishAllXml'.",
    )
    .await;
    expect_error(
        post(&emulator, "PublishAllXml(ParameterXml='x')", &json!({})).await,
        400,
        "0x8006088a",
        "The segment 'PublishAllXml' cannot include key predicates",
    )
    .await;
    expect_error(
        post(&emulator, "PublishAllXml/x", &json!({})).await,
        400,
        "0x8006088a",
        "The segment 'PublishAllXml' must be the last segment in the URI",
    )
    .await;
}

#[tokio::test]
async fn qualify_lead_makes_the_rows_links_them_and_closes_the_lead() {
    let emulator = Emulator::empty().await;
    let id = lead(&emulator, grace()).await;
    let body = ok_json(qualify(&emulator, &id, &flags(true, true, true)).await).await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/data/v9.2/$metadata#Collection(Microsoft.Dynamics.CRM.crmbaseentity)"),
        "{body}"
    );
    let value = body["value"].as_array().unwrap();
    let types: Vec<&str> = value
        .iter()
        .map(|r| r["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "#Microsoft.Dynamics.CRM.account",
            "#Microsoft.Dynamics.CRM.contact",
            "#Microsoft.Dynamics.CRM.opportunity"
        ]
    );
    for row in value {
        assert_eq!(row.as_object().unwrap().len(), 2, "type and id: {row}");
    }
    let account = value[0]["accountid"].as_str().unwrap();
    let contact = value[1]["contactid"].as_str().unwrap();
    let opportunity = value[2]["opportunityid"].as_str().unwrap();

    let row = emulator.get_json(&format!("accounts({account})")).await;
    assert_eq!(row["name"], "Navy Computing");
    assert_eq!(row["emailaddress1"], "grace@navy.example.com");
    assert_eq!(row["telephone1"], "+1-555-0100");
    assert_eq!(row["_originatingleadid_value"], id.as_str());
    assert_eq!(row["_primarycontactid_value"], contact);

    let row = emulator.get_json(&format!("contacts({contact})")).await;
    assert_eq!(row["fullname"], "Grace Hopper");
    assert_eq!(row["emailaddress1"], "grace@navy.example.com");
    assert_eq!(row["_parentcustomerid_value"], account);
    assert_eq!(row["_originatingleadid_value"], id.as_str());

    let row = emulator
        .get_json(&format!("opportunities({opportunity})"))
        .await;
    assert_eq!(row["name"], "Coffee machines for the fleet");
    assert_eq!(row["estimatedvalue"], 25000.0);
    assert_eq!(row["estimatedclosedate"], "2027-03-01");
    assert_eq!(row["description"], "Wants a demo.");
    assert_eq!(row["opportunityratingcode"], 1);
    assert_eq!(row["_customerid_value"], account);
    assert_eq!(row["_parentaccountid_value"], account);
    assert_eq!(row["_parentcontactid_value"], contact);
    assert_eq!(row["_originatingleadid_value"], id.as_str());
    assert_eq!(row["statecode"], 0, "the opportunity is open");

    let row = emulator.get_json(&format!("leads({id})")).await;
    assert_eq!(row["statecode"], 1);
    assert_eq!(row["statuscode"], 3);
    assert_eq!(row["_parentaccountid_value"], account);
    assert_eq!(row["_parentcontactid_value"], contact);
    assert_eq!(row["_qualifyingopportunityid_value"], opportunity);
    // The links are relationships like any other: the lead lists what it originated.
    let originated = emulator
        .get_json(&format!(
            "leads({id})/contact_originating_lead?$select=contactid"
        ))
        .await;
    assert_eq!(originated["value"][0]["contactid"], contact);
}

#[tokio::test]
async fn qualify_lead_makes_exactly_the_rows_asked_for() {
    let emulator = Emulator::empty().await;
    for bits in 0..8u8 {
        let (account, contact, opportunity) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
        let before = made(&emulator).await;
        let id = lead(&emulator, grace()).await;
        let body =
            ok_json(qualify(&emulator, &id, &flags(account, contact, opportunity)).await).await;
        let types: Vec<&str> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["@odata.type"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = [
            (account, "#Microsoft.Dynamics.CRM.account"),
            (contact, "#Microsoft.Dynamics.CRM.contact"),
            (opportunity, "#Microsoft.Dynamics.CRM.opportunity"),
        ]
        .iter()
        .filter(|(asked, _)| *asked)
        .map(|(_, t)| *t)
        .collect();
        assert_eq!(types, expected, "{bits:03b}");
        let after = made(&emulator).await;
        assert_eq!(
            after,
            [
                before[0] + usize::from(account),
                before[1] + usize::from(contact),
                before[2] + usize::from(opportunity)
            ],
            "{bits:03b}"
        );
        let row = emulator.get_json(&format!("leads({id})")).await;
        assert_eq!(row["statecode"], 1, "{bits:03b}");
        let id_of = |t: &str, column: &str| {
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["@odata.type"] == t)
                .map_or(Value::Null, |r| r[column].clone())
        };
        let account_id = id_of("#Microsoft.Dynamics.CRM.account", "accountid");
        let contact_id = id_of("#Microsoft.Dynamics.CRM.contact", "contactid");
        assert_eq!(row["_parentaccountid_value"], account_id, "{bits:03b}");
        assert_eq!(row["_parentcontactid_value"], contact_id, "{bits:03b}");
        if opportunity {
            let opportunity_id = id_of("#Microsoft.Dynamics.CRM.opportunity", "opportunityid");
            let made = emulator
                .get_json(&format!(
                    "opportunities({})",
                    opportunity_id.as_str().unwrap()
                ))
                .await;
            // The customer is the new account, else the new contact, else nobody.
            let customer = if account { &account_id } else { &contact_id };
            assert_eq!(made["_customerid_value"], *customer, "{bits:03b}");
            assert_eq!(row["_qualifyingopportunityid_value"], opportunity_id);
        } else {
            assert_eq!(row["_qualifyingopportunityid_value"], Value::Null);
        }
    }
}

#[tokio::test]
async fn qualify_lead_takes_a_lead_by_key_an_existing_customer_a_currency_and_the_default_status() {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("lead", "new_leademail", &["emailaddress1"])
        .await;
    let customer = emulator
        .create("accounts", json!({"name": "Existing Customer"}))
        .await["accountid"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = lead(&emulator, grace()).await;
    // The organisation's currency: the one rows with money get.
    let currency = emulator
        .get_json(&format!("leads({id})?$select=_transactioncurrencyid_value"))
        .await["_transactioncurrencyid_value"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"CreateAccount": false, "CreateContact": true, "CreateOpportunity": true,
        "Status": -1,
        "OpportunityCustomerId": {"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": customer},
        "OpportunityCurrencyId": {"transactioncurrencyid": currency},
        "SourceCampaignId": null, "SuppressDuplicateDetection": true});
    let answer =
        ok_json(qualify(&emulator, "emailaddress1='grace@navy.example.com'", &body).await).await;
    let opportunity = answer["value"][1]["opportunityid"].as_str().unwrap();
    let row = emulator
        .get_json(&format!("opportunities({opportunity})"))
        .await;
    assert_eq!(row["_customerid_value"], customer.as_str());
    assert_eq!(row["_transactioncurrencyid_value"], currency.as_str());
    assert_eq!(row["_parentaccountid_value"], Value::Null);
    let row = emulator.get_json(&format!("leads({id})")).await;
    // -1 is the Qualified state's default status reason.
    assert_eq!(
        (row["statecode"].clone(), row["statuscode"].clone()),
        (json!(1), json!(3))
    );
}

#[tokio::test]
async fn a_closed_lead_cannot_be_qualified() {
    let emulator = Emulator::empty().await;
    let id = lead(&emulator, grace()).await;
    ok_json(qualify(&emulator, &id, &flags(true, false, false)).await).await;
    let before = (made(&emulator).await, lead_state(&emulator, &id).await);
    expect_error(
        qualify(&emulator, &id, &flags(true, true, true)).await,
        400,
        "0x80040519",
        "The lead is already closed.",
    )
    .await;
    assert_eq!(
        (made(&emulator).await, lead_state(&emulator, &id).await),
        before
    );
    // A disqualified lead is closed too.
    let lost = lead(&emulator, grace()).await;
    let response = emulator
        .request(Method::PATCH, &format!("leads({lost})"))
        .json(&json!({"statecode": 2, "statuscode": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    expect_error(
        qualify(&emulator, &lost, &flags(false, false, true)).await,
        400,
        "0x80040519",
        "The lead is already closed.",
    )
    .await;
}

#[tokio::test]
async fn a_refused_part_leaves_nothing_behind() {
    let emulator = Emulator::empty().await;
    // The contact would break a key another contact holds: the account, checked first, is not made.
    emulator
        .add_key("contact", "new_contactemail", &["emailaddress1"])
        .await;
    emulator
        .create(
            "contacts",
            json!({"lastname": "Hopper", "emailaddress1": "grace@navy.example.com"}),
        )
        .await;
    let id = lead(&emulator, grace()).await;
    let before = (made(&emulator).await, lead_state(&emulator, &id).await);
    expect_error(
        qualify(&emulator, &id, &flags(true, true, true)).await,
        412,
        "0x80060892",
        "Entity Key new_contactemail violated",
    )
    .await;
    assert_eq!(
        (made(&emulator).await, lead_state(&emulator, &id).await),
        before
    );
    // The opportunity, made last, would break a key: neither the account nor the contact is made.
    emulator
        .add_key("opportunity", "new_opportunityname", &["name"])
        .await;
    emulator
        .create(
            "opportunities",
            json!({"name": "Coffee machines for the fleet"}),
        )
        .await;
    let before = (made(&emulator).await, lead_state(&emulator, &id).await);
    expect_error(
        qualify(&emulator, &id, &flags(true, false, true)).await,
        412,
        "0x80060892",
        "Entity Key new_opportunityname violated",
    )
    .await;
    assert_eq!(
        (made(&emulator).await, lead_state(&emulator, &id).await),
        before
    );
    // Without the opportunity it goes through.
    ok_json(qualify(&emulator, &id, &flags(true, false, false)).await).await;
    assert_eq!(lead_state(&emulator, &id).await.0, 1);
}

#[tokio::test]
async fn qualify_lead_is_a_create_and_an_update_to_change_tracking_and_webhook_steps() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    let endpoint = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": format!("{}/hook", receiver.url),
                "authtype": 4, "authvalue": "key", "messageformat": 2}),
        )
        .await["serviceendpointid"]
        .as_str()
        .unwrap()
        .to_owned();
    for (message, table) in [("Create", "account"), ("Update", "lead")] {
        let message_id = emulator
            .get_json(&format!(
                "sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"
            ))
            .await["value"][0]["sdkmessageid"]
            .as_str()
            .unwrap()
            .to_owned();
        let filter_id = emulator
            .get_json(&format!(
                "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq '{table}' and _sdkmessageid_value eq {message_id}"
            ))
            .await["value"][0]["sdkmessagefilterid"]
            .as_str()
            .unwrap()
            .to_owned();
        emulator
            .create(
                "sdkmessageprocessingsteps",
                json!({"name": format!("{table} {message}"), "stage": 40, "mode": 1,
                    "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                    "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})"),
                    "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})")}),
            )
            .await;
    }
    let id = lead(&emulator, grace()).await;
    let delta = emulator
        .request(Method::GET, "accounts?$select=name")
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = ok_json(qualify(&emulator, &id, &flags(true, true, false)).await).await;
    let account = body["value"][0]["accountid"].as_str().unwrap();

    let changes = emulator
        .http
        .get(&delta)
        .bearer_auth(emulator.fresh_token().await)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(changes["value"].as_array().unwrap().len(), 1, "{changes}");
    assert_eq!(changes["value"][0]["accountid"], account);
    assert_eq!(changes["value"][0]["name"], "Navy Computing");

    let log = emulator.settled_deliveries().await;
    let mut seen: Vec<(Message, String, String)> = log
        .deliveries
        .iter()
        .map(|d| (d.message, d.table.clone(), d.row.to_string()))
        .collect();
    seen.sort_by_key(|(_, table, _)| table.clone());
    assert_eq!(
        seen,
        [
            (Message::Create, "account".to_owned(), account.to_owned()),
            (Message::Update, "lead".to_owned(), id.clone())
        ]
    );
    let update = receiver
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|c| c["MessageName"] == "Update")
        .unwrap();
    let target = update["InputParameters"][0]["value"]["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    for column in [
        "statecode",
        "statuscode",
        "parentaccountid",
        "parentcontactid",
    ] {
        assert!(target.iter().any(|k| k == column), "{column} in {target:?}");
    }
}

#[tokio::test]
async fn bound_operations_are_named_and_addressed_as_dataverse_wants() {
    let emulator = Emulator::empty().await;
    let id = lead(&emulator, grace()).await;
    let account = emulator
        .create("accounts", json!({"name": "Elsewhere"}))
        .await["accountid"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = flags(true, true, true);
    // Without the namespace: Learn's documented answer.
    expect_error(
        post(&emulator, &format!("leads({id})/QualifyLead"), &body).await,
        400,
        "0x80060888",
        "Request message has unresolved parameters.",
    )
    .await;
    // Bound to a lead, not to an account, nor to the collection of leads.
    for path in [
        format!("accounts({account})/Microsoft.Dynamics.CRM.QualifyLead"),
        "leads/Microsoft.Dynamics.CRM.QualifyLead".to_owned(),
        format!("leads({id})/Microsoft.Dynamics.CRM.WhoAmI"),
    ] {
        let segment = path.rsplit('/').next().unwrap();
        expect_error(
            post(&emulator, &path, &body).await,
            404,
            "0x8006088a",
            &format!("Resource not found for the segment '{segment}'."),
        )
        .await;
    }
    // An action is posted to.
    let path = format!("leads({id})/Microsoft.Dynamics.CRM.QualifyLead");
    expect_error(get(&emulator, &path).await, 404, "", NO_RESOURCE).await;
    // Parameters travel in the body, and nothing follows an action.
    expect_error(
        post(&emulator, &format!("{path}(CreateAccount=true)"), &body).await,
        400,
        "0x8006088a",
        "The segment 'Microsoft.Dynamics.CRM.QualifyLead' cannot include key predicates",
    )
    .await;
    expect_error(
        post(&emulator, &format!("{path}/value"), &body).await,
        400,
        "0x8006088a",
        "The segment 'Microsoft.Dynamics.CRM.QualifyLead' must be the last segment in the URI",
    )
    .await;
    // A lead that is not there, by id or by key.
    let missing = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    expect_error(
        qualify(&emulator, missing, &body).await,
        404,
        "0x80040217",
        &format!("Entity 'lead' With Id = {missing} Does Not Exist"),
    )
    .await;
    emulator
        .add_key("lead", "new_leademail", &["emailaddress1"])
        .await;
    expect_error(
        qualify(&emulator, "emailaddress1='nobody@example.com'", &body).await,
        404,
        "0x80060891",
        "A record with the specified key values does not exist in lead entity",
    )
    .await;
    // Real operations the emulator does not have.
    for path in [
        format!("leads({id})/Microsoft.Dynamics.CRM.CalculateRollupField"),
        "accounts/Microsoft.Dynamics.CRM.DeleteMultiple".to_owned(),
    ] {
        expect_error(
            post(&emulator, &path, &json!({})).await,
            501,
            "0x80040216",
            "The Dataverse emulator does not implement",
        )
        .await;
    }
    assert_eq!(lead_state(&emulator, &id).await.0, 0, "still open");
    assert_eq!(made(&emulator).await, [1, 0, 0]);
}

#[tokio::test]
async fn qualify_lead_parameters_are_read_as_the_odata_library_reads_them() {
    let emulator = Emulator::empty().await;
    let id = lead(&emulator, grace()).await;
    let contact = emulator
        .create("contacts", json!({"lastname": "Babbage"}))
        .await["contactid"]
        .as_str()
        .unwrap()
        .to_owned();
    let with = |extra: Value| {
        let mut body = flags(true, true, true);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let payload = |inner: &str| {
        format!(
            "Error identified in Payload provided by the user for Entity :'' ----> InnerException : Microsoft.OData.ODataException: {inner}"
        )
    };
    let missing = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let cases: Vec<(Value, u16, &str, String)> = vec![
        (
            json!({"CreateAccount": true}),
            400,
            "0x80048d19",
            payload(
                "One or more parameters of the operation 'QualifyLead' are missing from the request payload. The missing parameters are: CreateContact,CreateOpportunity,Status.",
            ),
        ),
        (
            with(json!({"CreateAccounts": true})),
            400,
            "0x80048d19",
            payload(
                "The parameter 'CreateAccounts' in the request payload is not a valid parameter for the operation 'QualifyLead'.",
            ),
        ),
        (
            with(json!({"CreateAccount": "yes"})),
            400,
            "0x80048d19",
            payload("Cannot convert the literal 'yes' to the expected type 'Edm.Boolean'."),
        ),
        (
            with(json!({"Status": "3"})),
            400,
            "0x80048d19",
            payload("Cannot convert the literal '3' to the expected type 'Edm.Int32'."),
        ),
        (
            with(json!({"CreateOpportunity": null})),
            400,
            "0x80048d19",
            payload(
                "A null value was found with the expected type 'Edm.Boolean[Nullable=False]'. The expected type 'Edm.Boolean[Nullable=False]' does not allow null values.",
            ),
        ),
        // A parameter is no property: `@odata.bind` does not name its row.
        (
            with(json!({"OpportunityCustomerId@odata.bind": format!("/accounts({missing})")})),
            400,
            "0x80048d19",
            payload(
                "One or more property annotations for property 'OpportunityCustomerId' were found in a parameter payload without the property to annotate. Parameter payloads must not contain property annotations for properties that are not in the payload.",
            ),
        ),
        // A status reason of another state.
        (
            with(json!({"Status": 1})),
            400,
            "0x80048408",
            format!(
                "1 is not a valid status code for state code LeadState.Qualified on lead with Id {id}."
            ),
        ),
        // A `crmbaseentity` needs its type.
        (
            with(json!({"OpportunityCustomerId": {"accountid": missing}})),
            400,
            "0x80040203",
            "EdmEntityObject passed should have the key property value set.".to_owned(),
        ),
        (
            with(
                json!({"OpportunityCustomerId": {"@odata.type": "Microsoft.Dynamics.CRM.account",
                "accountid": missing}}),
            ),
            404,
            "0x80040217",
            format!("Entity 'account' With Id = {missing} Does Not Exist"),
        ),
        (
            with(
                json!({"OpportunityCustomerId": {"@odata.type": "#Microsoft.Dynamics.CRM.lead",
                "leadid": id}}),
            ),
            400,
            "0x80040203",
            "OpportunityCustomerId must be an account or a contact, not a lead.".to_owned(),
        ),
        (
            with(json!({"OpportunityCurrencyId": {"transactioncurrencyid": missing}})),
            404,
            "0x80040217",
            format!("Entity 'transactioncurrency' With Id = {missing} Does Not Exist"),
        ),
        (
            with(json!({"SourceCampaignId": {"campaignid": missing}})),
            501,
            "0x80040216",
            "The Dataverse emulator does not implement QualifyLead's SourceCampaignId".to_owned(),
        ),
    ];
    for (body, status, code, message) in cases {
        let response = qualify(&emulator, &id, &body).await;
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let text = answer["error"]["message"].as_str().unwrap();
        assert!(text.starts_with(&message), "{body}: {text}");
    }
    assert_eq!(lead_state(&emulator, &id).await.0, 0, "still open");
    assert_eq!(made(&emulator).await, [0, 1, 0]);
    // The customer as a contact, typed: accepted.
    let body = with(json!({"CreateAccount": false,
        "OpportunityCustomerId": {"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": contact}}));
    let answer = ok_json(qualify(&emulator, &id, &body).await).await;
    let opportunity = answer["value"][1]["opportunityid"].as_str().unwrap();
    let row = emulator
        .get_json(&format!("opportunities({opportunity})"))
        .await;
    assert_eq!(row["_customerid_value"], contact.as_str());
}
