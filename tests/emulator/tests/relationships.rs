//! Relationships: the 1:N relationships behind every lookup, their metadata, the collection-valued
//! navigation properties that list related rows, and associating and disassociating rows through
//! `$ref`, as Microsoft Learn's "Associate and disassociate table rows using the Web API" documents.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::{Emulator, expect_error};

/// An account and two contacts, Ann at the account and Bob at none; alternate keys on both tables.
struct World {
    emulator: Emulator,
    account: String,
    other: String,
    ann: String,
    bob: String,
}

async fn world() -> World {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "aws_accountnumber", &["accountnumber"])
        .await;
    emulator
        .add_key("contact", "aws_email", &["emailaddress1"])
        .await;
    let id = |row: &Value, column: &str| row[column].as_str().unwrap().to_owned();
    let account = emulator
        .create(
            "accounts",
            json!({"name": "Contoso", "accountnumber": "A-1"}),
        )
        .await;
    let other = emulator
        .create(
            "accounts",
            json!({"name": "Fabrikam", "accountnumber": "A-2"}),
        )
        .await;
    let ann = emulator
        .create(
            "contacts",
            json!({"lastname": "Ann", "emailaddress1": "ann@example.com",
                "parentcustomerid_account@odata.bind": format!("/accounts({})", id(&account, "accountid"))}),
        )
        .await;
    let bob = emulator
        .create(
            "contacts",
            json!({"lastname": "Bob", "emailaddress1": "bob@example.com"}),
        )
        .await;
    World {
        account: id(&account, "accountid"),
        other: id(&other, "accountid"),
        ann: id(&ann, "contactid"),
        bob: id(&bob, "contactid"),
        emulator,
    }
}

async fn send(emulator: &Emulator, method: Method, path: &str, body: Option<Value>) -> Response {
    let request = emulator.request(method, path);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

async fn expect_204(emulator: &Emulator, method: Method, path: &str, body: Option<Value>) {
    let response = send(emulator, method.clone(), path, body).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 204, "{method} {path}: {text}");
    assert!(text.is_empty(), "{text}");
}

/// A contact's `_parentcustomerid_value` and `versionnumber`.
async fn parent_of(emulator: &Emulator, contact: &str) -> (Value, i64) {
    let row = emulator
        .get_json(&format!(
            "contacts({contact})?$select=_parentcustomerid_value,versionnumber"
        ))
        .await;
    (
        row["_parentcustomerid_value"].clone(),
        row["versionnumber"].as_i64().unwrap(),
    )
}

/// Moves the emulator's clock a second on, so a write's `modifiedon` differs from the last one's.
async fn advance_clock(emulator: &Emulator) {
    let response = emulator
        .control(Method::POST, "clock", json!({"advance_secs": 1}))
        .await;
    assert_eq!(response.status(), 200);
}

fn schema_names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["SchemaName"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_lookup_is_a_relationship_with_dataverse_s_names() {
    let emulator = Emulator::empty().await;
    let list = |table: &'static str, which: &'static str| {
        let emulator = &emulator;
        async move {
            emulator
                .get_json(&format!(
                    "EntityDefinitions(LogicalName='{table}')/{which}?$select=SchemaName"
                ))
                .await["value"]
                .clone()
        }
    };
    assert_eq!(
        schema_names(&list("account", "OneToManyRelationships").await),
        [
            "account_parent_account",
            "contact_customer_accounts",
            "lead_parent_account",
            "opportunity_customer_accounts",
            "opportunity_parent_account"
        ]
    );
    assert_eq!(
        schema_names(&list("contact", "OneToManyRelationships").await),
        [
            "account_primary_contact",
            "contact_customer_contacts",
            "lead_parent_contact",
            "opportunity_customer_contacts",
            "opportunity_parent_contact"
        ]
    );
    assert_eq!(
        schema_names(&list("account", "ManyToOneRelationships").await),
        [
            "account_primary_contact",
            "account_parent_account",
            "account_originating_lead"
        ]
    );
    assert_eq!(
        schema_names(&list("contact", "ManyToOneRelationships").await),
        [
            "contact_customer_accounts",
            "contact_customer_contacts",
            "contact_originating_lead"
        ]
    );
    assert_eq!(
        schema_names(&list("lead", "ManyToOneRelationships").await),
        [
            "lead_parent_account",
            "lead_parent_contact",
            "lead_qualifying_opportunity"
        ]
    );
    assert_eq!(
        schema_names(&list("opportunity", "ManyToOneRelationships").await),
        [
            "opportunity_customer_accounts",
            "opportunity_customer_contacts",
            "opportunity_parent_account",
            "opportunity_parent_contact",
            "opportunity_originating_lead"
        ]
    );
    // The rows `QualifyLead` makes point back at their lead, and the lead at its opportunity.
    assert_eq!(
        schema_names(&list("lead", "OneToManyRelationships").await),
        [
            "account_originating_lead",
            "contact_originating_lead",
            "opportunity_originating_lead"
        ]
    );
    assert_eq!(
        schema_names(&list("opportunity", "OneToManyRelationships").await),
        ["lead_qualifying_opportunity"]
    );
    // The registration tables' lookups are relationships too; the plug-in type the emulator does
    // not have is not.
    assert_eq!(
        schema_names(&list("sdkmessageprocessingstep", "ManyToOneRelationships").await),
        [
            "sdkmessageid_sdkmessageprocessingstep",
            "sdkmessagefilterid_sdkmessageprocessingstep",
            "serviceendpoint_sdkmessageprocessingstep"
        ]
    );
    // No many-to-many relationships.
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='account')/ManyToManyRelationships")
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#EntityDefinitions('account')/ManyToManyRelationships"),
        "{body}"
    );
    assert_eq!(body["value"], json!([]));
}

#[tokio::test]
async fn relationship_metadata_has_the_one_to_many_shape() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='contact')/ManyToOneRelationships")
        .await;
    let first = &body["value"][0];
    let metadata_id = first["MetadataId"].as_str().unwrap().to_owned();
    let mut first = first.clone();
    first.as_object_mut().unwrap().remove("MetadataId");
    assert_eq!(
        first,
        json!({
            "SchemaName": "contact_customer_accounts",
            "RelationshipType": "OneToManyRelationship",
            "IsCustomRelationship": false,
            "IsValidForAdvancedFind": true,
            "ReferencedEntity": "account",
            "ReferencedAttribute": "accountid",
            "ReferencingEntity": "contact",
            "ReferencingAttribute": "parentcustomerid",
            "ReferencedEntityNavigationPropertyName": "contact_customer_accounts",
            "ReferencingEntityNavigationPropertyName": "parentcustomerid_account",
            "IsHierarchical": false,
        })
    );
    // The same relationship, seen from the account, is the same object.
    let from_account = emulator
        .get_json("EntityDefinitions(LogicalName='account')/OneToManyRelationships?$filter=ReferencingEntity eq 'contact'")
        .await;
    assert_eq!(from_account["value"].as_array().unwrap().len(), 1);
    assert_eq!(from_account["value"][0]["MetadataId"], metadata_id);
    let parent = emulator
        .get_json("EntityDefinitions(LogicalName='account')/ManyToOneRelationships?$select=SchemaName,IsHierarchical&$filter=ReferencedEntity eq 'account'")
        .await;
    assert_eq!(
        parent["value"],
        json!([{"SchemaName": "account_parent_account", "IsHierarchical": true,
            "MetadataId": parent["value"][0]["MetadataId"]}])
    );
    // As an expansion of the table, each with its own $select, alongside the other navigation
    // properties.
    let table = emulator
        .get_json("EntityDefinitions(LogicalName='contact')?$select=LogicalName&$expand=ManyToOneRelationships($select=SchemaName,ReferencedEntity),OneToManyRelationships($select=SchemaName;$filter=ReferencingEntity eq 'lead'),ManyToManyRelationships,Keys")
        .await;
    assert!(
        table["@odata.context"].as_str().unwrap().ends_with(
            "$metadata#EntityDefinitions(LogicalName,ManyToOneRelationships(SchemaName,ReferencedEntity),OneToManyRelationships(SchemaName),ManyToManyRelationships,Keys())/$entity"
        ),
        "{table}"
    );
    assert_eq!(
        schema_names(&table["ManyToOneRelationships"]),
        [
            "contact_customer_accounts",
            "contact_customer_contacts",
            "contact_originating_lead"
        ]
    );
    assert_eq!(
        table["ManyToOneRelationships"][1]["ReferencedEntity"],
        "contact"
    );
    assert!(
        table["ManyToOneRelationships"][0]
            .get("ReferencingEntity")
            .is_none()
    );
    assert_eq!(
        schema_names(&table["OneToManyRelationships"]),
        ["lead_parent_contact"]
    );
    assert_eq!(table["ManyToManyRelationships"], json!([]));
    assert_eq!(table["Keys"], json!([]));
    // A property the type does not have.
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/OneToManyRelationships?$select=Name")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')?$expand=ManyToManyRelationships($select=ReferencedEntity)")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'ReferencedEntity' on type 'Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Relationships")
            .await,
        404,
        "0x8006088a",
        "Resource not found for the segment 'Relationships'.",
    )
    .await;
}

#[tokio::test]
async fn a_custom_lookup_gets_a_derived_relationship_and_collection() {
    let emulator = Emulator::empty().await;
    emulator
        .add_table(
            &NewTable::new("new_project", "new_projects", "new_projectid", "new_name")
                .column("new_accountid", "lookup:account"),
        )
        .await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='new_project')/ManyToOneRelationships")
        .await;
    let relationship = &body["value"][0];
    assert_eq!(
        relationship["SchemaName"],
        "account_new_project_new_accountid"
    );
    assert_eq!(
        relationship["ReferencedEntityNavigationPropertyName"],
        "account_new_project_new_accountid"
    );
    assert_eq!(
        relationship["ReferencingEntityNavigationPropertyName"],
        "new_accountid"
    );
    assert_eq!(relationship["IsCustomRelationship"], true);
    let account = emulator
        .create("accounts", json!({"name": "Contoso"}))
        .await["accountid"]
        .as_str()
        .unwrap()
        .to_owned();
    let project = emulator
        .create("new_projects", json!({"new_name": "Roof"}))
        .await["new_projectid"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_204(
        &emulator,
        Method::POST,
        &format!("accounts({account})/account_new_project_new_accountid/$ref"),
        Some(json!({"@odata.id": format!("new_projects({project})")})),
    )
    .await;
    let related = emulator
        .get_json(&format!(
            "accounts({account})/account_new_project_new_accountid?$select=new_name"
        ))
        .await;
    assert_eq!(related["value"][0]["new_name"], "Roof");
}

#[tokio::test]
async fn a_collection_valued_navigation_property_lists_the_related_rows() {
    let w = world().await;
    let e = &w.emulator;
    for name in ["Cy", "Di", "Ed"] {
        e.create(
            "contacts",
            json!({"lastname": name,
                "parentcustomerid_account@odata.bind": format!("/accounts({})", w.account)}),
        )
        .await;
    }
    // A contact at another account, and one whose company is a contact, are not listed.
    e.create(
        "contacts",
        json!({"lastname": "Elsewhere",
            "parentcustomerid_account@odata.bind": format!("/accounts({})", w.other)}),
    )
    .await;
    e.create(
        "contacts",
        json!({"lastname": "Under Ann",
            "parentcustomerid_contact@odata.bind": format!("/contacts({})", w.ann)}),
    )
    .await;
    let names = |body: &Value| -> Vec<String> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["lastname"].as_str().unwrap().to_owned())
            .collect()
    };
    let path = format!("accounts({})/contact_customer_accounts", w.account);
    let body = e
        .get_json(&format!(
            "{path}?$select=lastname&$orderby=lastname&$count=true"
        ))
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#contacts(lastname)"),
        "{body}"
    );
    assert_eq!(names(&body), ["Ann", "Cy", "Di", "Ed"]);
    assert_eq!(body["@odata.count"], 4);
    let filtered = e
        .get_json(&format!(
            "{path}?$select=lastname&$filter=lastname ne 'Ann'&$orderby=lastname desc&$top=2"
        ))
        .await;
    assert_eq!(names(&filtered), ["Ed", "Di"]);
    // By alternate key, the same rows.
    let by_key = e
        .get_json("accounts(accountnumber='A-1')/contact_customer_accounts?$select=lastname&$orderby=lastname")
        .await;
    assert_eq!(names(&by_key), ["Ann", "Cy", "Di", "Ed"]);
    // Paged: the nextLink stays on the navigation property.
    let mut url = e.api(&format!("{path}?$select=lastname&$orderby=lastname"));
    let mut pages = Vec::new();
    loop {
        let response = e
            .http
            .get(&url)
            .bearer_auth(e.fresh_token().await)
            .header("Prefer", "odata.maxpagesize=3")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        pages.push(names(&body));
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&e.api(&format!("{path}?"))), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, [vec!["Ann", "Cy", "Di"], vec!["Ed"]]);
    // The rows of a contact's own collection.
    let under = e
        .get_json(&format!(
            "contacts({})/contact_customer_contacts?$select=lastname",
            w.ann
        ))
        .await;
    assert_eq!(names(&under), ["Under Ann"]);
    // A parent that does not exist, by id and by key.
    expect_error(
        e.get("accounts(00000000-0000-0000-0000-000000000001)/contact_customer_accounts")
            .await,
        404,
        "0x80040217",
        "Entity 'account' With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist",
    )
    .await;
    expect_error(
        e.get("accounts(accountnumber='nope')/contact_customer_accounts")
            .await,
        404,
        "0x80060891",
        "A record with the specified key values does not exist in account entity",
    )
    .await;
    // A filter on a property the related table does not have.
    expect_error(
        e.get(format!("{path}?$filter=name eq 'x'")).await,
        400,
        "0x0",
        "Could not find a property named 'name' on type 'Microsoft.Dynamics.CRM.contact'.",
    )
    .await;
    // Change tracking is not offered on a navigation property.
    let tracked = e
        .request(Method::GET, &path)
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap();
    expect_error(tracked, 501, "0x80040216", "change tracking").await;
}

#[tokio::test]
async fn associating_through_a_collection_updates_the_child() {
    let w = world().await;
    let e = &w.emulator;
    let (parent, version) = parent_of(e, &w.bob).await;
    assert_eq!(parent, Value::Null);
    let before = e
        .get_json(&format!("contacts({})?$select=modifiedon", w.bob))
        .await["modifiedon"]
        .clone();
    advance_clock(e).await;
    // An absolute URL, as Microsoft Learn's example sends it.
    expect_204(
        e,
        Method::POST,
        &format!("accounts({})/contact_customer_accounts/$ref", w.account),
        Some(json!({"@odata.id": e.api(&format!("contacts({})", w.bob))})),
    )
    .await;
    let (parent, after) = parent_of(e, &w.bob).await;
    assert_eq!(parent, w.account.as_str());
    assert!(after > version, "{after} > {version}");
    let modified = e
        .get_json(&format!("contacts({})?$select=modifiedon", w.bob))
        .await["modifiedon"]
        .clone();
    assert_ne!(modified, before);
    // Associating a child that already has another parent moves it.
    expect_204(
        e,
        Method::POST,
        &format!("accounts({})/contact_customer_accounts/$ref", w.other),
        Some(json!({"@odata.id": format!("/contacts({})", w.bob)})),
    )
    .await;
    assert_eq!(parent_of(e, &w.bob).await.0, w.other.as_str());
    // Both sides by alternate key: the parent in the URL, the child in @odata.id.
    expect_204(
        e,
        Method::POST,
        "accounts(accountnumber='A-1')/contact_customer_accounts/$ref",
        Some(json!({"@odata.id": "contacts(emailaddress1='bob@example.com')"})),
    )
    .await;
    assert_eq!(parent_of(e, &w.bob).await.0, w.account.as_str());
}

#[tokio::test]
async fn an_association_is_a_change_to_change_tracking() {
    let w = world().await;
    let e = &w.emulator;
    let response = e
        .request(
            Method::GET,
            "contacts?$select=lastname,_parentcustomerid_value",
        )
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let delta = body["@odata.deltaLink"].as_str().unwrap().to_owned();
    expect_204(
        e,
        Method::POST,
        &format!("accounts({})/contact_customer_accounts/$ref", w.account),
        Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
    )
    .await;
    let response = e
        .http
        .get(&delta)
        .bearer_auth(e.fresh_token().await)
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap();
    let changes: Value = response.json().await.unwrap();
    let rows = changes["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{changes}");
    assert_eq!(rows[0]["contactid"], w.bob.as_str());
    assert_eq!(rows[0]["_parentcustomerid_value"], w.account.as_str());
}

#[tokio::test]
async fn disassociating_from_a_collection_clears_the_child_s_lookup_only_if_it_is_the_parent_s() {
    let w = world().await;
    let e = &w.emulator;
    // Ann is Contoso's; removing her from Fabrikam changes nothing.
    let (_, version) = parent_of(e, &w.ann).await;
    expect_204(
        e,
        Method::DELETE,
        &format!(
            "accounts({})/contact_customer_accounts({})/$ref",
            w.other, w.ann
        ),
        None,
    )
    .await;
    assert_eq!(parent_of(e, &w.ann).await, (json!(w.account), version));
    // From Contoso, by the child's key in the path.
    expect_204(
        e,
        Method::DELETE,
        &format!(
            "accounts({})/contact_customer_accounts({})/$ref",
            w.account, w.ann
        ),
        None,
    )
    .await;
    let (parent, after) = parent_of(e, &w.ann).await;
    assert_eq!(parent, Value::Null);
    assert!(after > version);
    // With $id, an absolute URL, and both rows by alternate key.
    for path in [
        format!(
            "accounts({})/contact_customer_accounts/$ref?$id={}",
            w.account,
            e.api(&format!("contacts({})", w.bob))
        ),
        "accounts(accountnumber='A-1')/contact_customer_accounts/$ref?$id=contacts(emailaddress1='bob@example.com')".to_owned(),
        "accounts(accountnumber='A-1')/contact_customer_accounts(emailaddress1='bob@example.com')/$ref".to_owned(),
    ] {
        expect_204(
            e,
            Method::POST,
            &format!("accounts({})/contact_customer_accounts/$ref", w.account),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
        )
        .await;
        assert_eq!(parent_of(e, &w.bob).await.0, w.account.as_str());
        expect_204(e, Method::DELETE, &path, None).await;
        assert_eq!(parent_of(e, &w.bob).await.0, Value::Null, "{path}");
    }
}

#[tokio::test]
async fn a_single_valued_navigation_property_is_set_with_put_and_cleared_with_delete() {
    let w = world().await;
    let e = &w.emulator;
    let (_, version) = parent_of(e, &w.bob).await;
    expect_204(
        e,
        Method::PUT,
        &format!("contacts({})/parentcustomerid_account/$ref", w.bob),
        Some(json!({"@odata.id": format!("accounts({})", w.other)})),
    )
    .await;
    let (parent, after) = parent_of(e, &w.bob).await;
    assert_eq!(parent, w.other.as_str());
    assert!(after > version);
    // By alternate key on both sides, and to the lookup's other table.
    expect_204(
        e,
        Method::PUT,
        "contacts(emailaddress1='bob@example.com')/parentcustomerid_contact/$ref",
        Some(json!({"@odata.id": e.api("contacts(emailaddress1='ann@example.com')")})),
    )
    .await;
    assert_eq!(parent_of(e, &w.bob).await.0, w.ann.as_str());
    // Bob's company is a contact: through the account-typed property there is nothing to remove.
    let (_, version) = parent_of(e, &w.bob).await;
    expect_204(
        e,
        Method::DELETE,
        &format!("contacts({})/parentcustomerid_account/$ref", w.bob),
        None,
    )
    .await;
    assert_eq!(parent_of(e, &w.bob).await, (json!(w.ann), version));
    expect_204(
        e,
        Method::DELETE,
        "contacts(emailaddress1='bob@example.com')/parentcustomerid_contact/$ref",
        None,
    )
    .await;
    let (parent, after) = parent_of(e, &w.bob).await;
    assert_eq!(parent, Value::Null);
    assert!(after > version);
    // The account's own lookups, self-referencing included.
    expect_204(
        e,
        Method::PUT,
        &format!("accounts({})/parentaccountid/$ref", w.other),
        Some(json!({"@odata.id": format!("accounts({})", w.account)})),
    )
    .await;
    let children = e
        .get_json(&format!(
            "accounts({})/account_parent_account?$select=name",
            w.account
        ))
        .await;
    assert_eq!(children["value"][0]["name"], "Fabrikam");
}

/// A request, and the status, code and part of the message it is refused with.
type Refusal = (Method, String, Option<Value>, u16, &'static str, String);

#[tokio::test]
async fn refused_references_answer_as_dataverse_does() {
    let w = world().await;
    let e = &w.emulator;
    let account = format!("accounts({})", w.account);
    let missing = "00000000-0000-0000-0000-000000000001";
    let cases: Vec<Refusal> = vec![
        (
            Method::POST,
            format!("{account}/contact_customers/$ref"),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
            400,
            "0x80060888",
            "Could not find a property named 'contact_customers' on type 'Microsoft.Dynamics.CRM.account'.".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}/nosuch"),
            None,
            400,
            "0x80060888",
            "Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.account'.".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/primarycontactid/$ref"),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
            400,
            "0x80060888",
            "single-valued navigation property: set its reference with PUT".to_owned(),
        ),
        (
            Method::PUT,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
            400,
            "0x80060888",
            "collection-valued navigation property: add a reference to it with POST".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"id": format!("contacts({})", w.bob)})),
            400,
            "0x80048d19",
            "'@odata.id'".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": format!("accounts({})", w.other)})),
            400,
            "0x80048d19",
            "is not the URL of a row of 'contacts'".to_owned(),
        ),
        (
            Method::PUT,
            format!("contacts({})/parentcustomerid_account/$ref", w.bob),
            Some(json!({"@odata.id": format!("contacts({})", w.ann)})),
            400,
            "0x80048d19",
            "is not the URL of a row of 'accounts'".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": "contacts"})),
            400,
            "0x80048d19",
            "is not the URL of a row of 'contacts'".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": format!("contacts({missing})")})),
            404,
            "0x80040217",
            format!("Entity 'contact' With Id = {missing} Does Not Exist"),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": "contacts(emailaddress1='nobody@example.com')"})),
            404,
            "0x80060891",
            "A record with the specified key values does not exist in contact entity".to_owned(),
        ),
        (
            Method::POST,
            format!("accounts({missing})/contact_customer_accounts/$ref"),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
            404,
            "0x80040217",
            format!("Entity 'account' With Id = {missing} Does Not Exist"),
        ),
        (
            Method::PUT,
            "contacts(emailaddress1='nobody@example.com')/parentcustomerid_account/$ref".to_owned(),
            Some(json!({"@odata.id": account.clone()})),
            404,
            "0x80060891",
            "A record with the specified key values does not exist in contact entity".to_owned(),
        ),
        (
            Method::DELETE,
            format!("{account}/contact_customer_accounts({missing})/$ref"),
            None,
            404,
            "0x80040217",
            format!("Entity 'contact' With Id = {missing} Does Not Exist"),
        ),
        (
            Method::DELETE,
            format!("{account}/contact_customer_accounts/$ref"),
            None,
            400,
            "0x80060888",
            "needs the $id query option".to_owned(),
        ),
        (
            Method::DELETE,
            format!("{account}/contact_customer_accounts/$ref?$id=leads({missing})"),
            None,
            400,
            "0x80060888",
            "is not the URL of a row of 'contacts'".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}?$id=contacts({})", w.bob),
            None,
            400,
            "0x80060888",
            "The query parameter $id is not supported".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/name/$ref"),
            Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
            400,
            "0x8006088a",
            "The URI segment '$ref' is invalid after the segment 'name'.".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}/contact_customer_accounts/$ref"),
            None,
            501,
            "0x80040216",
            "listing references".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}/primarycontactid"),
            None,
            501,
            "0x80040216",
            "reading a single-valued navigation property".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}/name"),
            None,
            501,
            "0x80040216",
            "single-property requests".to_owned(),
        ),
        (
            Method::GET,
            format!("{account}/contact_customer_accounts({})", w.ann),
            None,
            501,
            "0x80040216",
            "one related row".to_owned(),
        ),
        (
            Method::POST,
            format!("{account}/contact_customer_accounts"),
            Some(json!({"lastname": "New"})),
            501,
            "0x80040216",
            "creating a row through a collection-valued navigation property".to_owned(),
        ),
    ];
    for (method, path, body, status, code, message) in cases {
        let response = send(e, method.clone(), &path, body).await;
        assert_eq!(response.status(), status, "{method} {path}");
        expect_error(response, status, code, &message).await;
    }
    // None of that changed a row.
    assert_eq!(parent_of(e, &w.bob).await.0, Value::Null);
    assert_eq!(parent_of(e, &w.ann).await.0, w.account.as_str());
}

#[tokio::test]
async fn an_association_fires_update_steps_that_filter_on_the_lookup() {
    let w = world().await;
    let e = &w.emulator;
    let receiver = Receiver::start().await;
    let endpoint = e
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": receiver.url, "authtype": 4,
                "authvalue": "key", "messageformat": 2}),
        )
        .await["serviceendpointid"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = e
        .get_json("sdkmessages?$select=sdkmessageid&$filter=name eq 'Update'")
        .await["value"][0]["sdkmessageid"]
        .as_str()
        .unwrap()
        .to_owned();
    let filter = e
        .get_json(&format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq 'contact' and _sdkmessageid_value eq {message}"
        ))
        .await["value"][0]["sdkmessagefilterid"]
        .as_str()
        .unwrap()
        .to_owned();
    let step = |filtering: &str| {
        json!({
            "name": format!("contact Update on {filtering}"),
            "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0, "asyncautodelete": false,
            "filteringattributes": filtering,
            "sdkmessageid@odata.bind": format!("/sdkmessages({message})"),
            "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter})"),
            "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
        })
    };
    e.create("sdkmessageprocessingsteps", step("parentcustomerid"))
        .await;
    e.create("sdkmessageprocessingsteps", step("telephone1"))
        .await;
    expect_204(
        e,
        Method::POST,
        &format!("accounts({})/contact_customer_accounts/$ref", w.account),
        Some(json!({"@odata.id": format!("contacts({})", w.bob)})),
    )
    .await;
    expect_204(
        e,
        Method::DELETE,
        &format!("contacts({})/parentcustomerid_account/$ref", w.bob),
        None,
    )
    .await;
    let log = e.settled_deliveries().await;
    // One delivery per change, each from the step that filters on the lookup.
    assert_eq!(log.deliveries.len(), 2, "{log:#?}");
    let mut values = Vec::new();
    for delivery in &log.deliveries {
        let [request] = receiver.of(&delivery.id.to_string()).try_into().unwrap();
        let context = request.json();
        assert_eq!(context["MessageName"], "Update");
        assert_eq!(context["PrimaryEntityId"], w.bob.as_str());
        let target = context["InputParameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["key"] == "Target")
            .unwrap()["value"]
            .clone();
        let attributes = target["Attributes"].as_array().unwrap();
        let names: Vec<&str> = attributes
            .iter()
            .map(|a| a["key"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"parentcustomerid"), "{names:?}");
        let value = attributes
            .iter()
            .find(|a| a["key"] == "parentcustomerid")
            .unwrap()["value"]
            .clone();
        values.push(value);
    }
    assert!(
        values.iter().any(|v| v["Id"] == w.account.as_str()),
        "{values:?}"
    );
    assert!(values.iter().any(Value::is_null), "{values:?}");
}
