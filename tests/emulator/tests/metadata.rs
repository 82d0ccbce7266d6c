//! `EntityDefinitions` and routing: what clients use to resolve a table name.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

const SELECT: &str = "$select=LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,ChangeTrackingEnabled";

#[tokio::test]
async fn describes_every_builtin_table_correctly() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json(&format!("EntityDefinitions?{SELECT}"))
        .await;
    assert!(body["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("$metadata#EntityDefinitions(LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,ChangeTrackingEnabled)"));
    let tables = body["value"].as_array().unwrap();
    // The business tables track changes; the plug-in registration tables do not.
    let expected = [
        ("account", "accounts", "accountid", "name", true),
        ("contact", "contacts", "contactid", "fullname", true),
        ("lead", "leads", "leadid", "fullname", true),
        (
            "opportunity",
            "opportunities",
            "opportunityid",
            "name",
            true,
        ),
        (
            "serviceendpoint",
            "serviceendpoints",
            "serviceendpointid",
            "name",
            false,
        ),
        ("sdkmessage", "sdkmessages", "sdkmessageid", "name", false),
        (
            "sdkmessagefilter",
            "sdkmessagefilters",
            "sdkmessagefilterid",
            "name",
            false,
        ),
        (
            "sdkmessageprocessingstep",
            "sdkmessageprocessingsteps",
            "sdkmessageprocessingstepid",
            "name",
            false,
        ),
        (
            "sdkmessageprocessingstepimage",
            "sdkmessageprocessingstepimages",
            "sdkmessageprocessingstepimageid",
            "name",
            false,
        ),
    ];
    assert_eq!(tables.len(), expected.len());
    for (logical, set, id, name, tracked) in expected {
        let table = tables
            .iter()
            .find(|t| t["LogicalName"] == logical)
            .expect(logical);
        assert_eq!(table["EntitySetName"], set);
        assert_eq!(table["PrimaryIdAttribute"], id);
        assert_eq!(table["PrimaryNameAttribute"], name);
        assert_eq!(table["ChangeTrackingEnabled"], tracked, "{logical}");
        // MetadataId always comes back, selected or not; nothing unselected does.
        assert!(table["MetadataId"].is_string());
        assert!(table.get("SchemaName").is_none());
    }
}

#[tokio::test]
async fn looks_a_table_up_by_logical_name_as_a_single_object() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json(&format!(
            "EntityDefinitions(LogicalName='opportunity')?{SELECT}"
        ))
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/$entity")
    );
    assert!(body.get("value").is_none());
    assert_eq!(body["EntitySetName"], "opportunities");
    assert_eq!(body["PrimaryIdAttribute"], "opportunityid");
    let by_id = emulator
        .get_json(&format!(
            "EntityDefinitions({})?$select=LogicalName",
            body["MetadataId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_id["LogicalName"], "opportunity");
    let missing = emulator
        .get("EntityDefinitions(LogicalName='nosuch')")
        .await;
    expect_error(missing, 404, "0x80040217", "nosuch").await;
}

#[tokio::test]
async fn filters_definitions_on_entity_set_name() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json(&format!(
            "EntityDefinitions?{SELECT}&$filter=EntitySetName eq 'contacts'"
        ))
        .await;
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["LogicalName"], "contact");
    let either = emulator
        .get_json("EntityDefinitions?$select=LogicalName&$filter=LogicalName eq 'leads' or EntitySetName eq 'leads'")
        .await;
    assert_eq!(either["value"][0]["LogicalName"], "lead");
    let trackable = emulator
        .get_json("EntityDefinitions?$select=LogicalName&$filter=ChangeTrackingEnabled eq false and CanChangeTrackingBeEnabled/Value eq true")
        .await;
    assert_eq!(trackable["value"], json!([]));
}

#[tokio::test]
async fn refuses_what_metadata_queries_do_not_support() {
    let emulator = Emulator::empty().await;
    expect_error(
        emulator.get("EntityDefinitions?$top=1").await,
        400,
        "0x80060888",
        "$top is not supported",
    )
    .await;
    expect_error(
        emulator.get("EntityDefinitions?$orderby=LogicalName").await,
        400,
        "0x80060888",
        "not supported",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions?$filter=startswith(LogicalName,'a')")
            .await,
        400,
        "0x8006088a",
        "isn't supported for Metadata Entities",
    )
    .await;
    expect_error(
        emulator.get("EntityDefinitions?$select=Nope").await,
        400,
        "0x0",
        "Could not find a property named 'Nope'",
    )
    .await;
}

#[tokio::test]
async fn answers_unknown_and_miscased_entity_sets_with_the_real_404() {
    let emulator = Emulator::empty().await;
    for segment in ["Account", "account", "accountses"] {
        let body = expect_error(emulator.get(segment).await, 404, "0x8006088a", "").await;
        assert_eq!(
            body["error"]["message"],
            format!("Resource not found for the segment '{segment}'.")
        );
    }
}

#[tokio::test]
async fn serves_the_service_document_and_who_am_i() {
    let emulator = Emulator::empty().await;
    let doc = emulator.get_json("").await;
    let names: Vec<&str> = doc["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"accounts") && names.contains(&"opportunities"));
    let me = emulator.get_json("WhoAmI").await;
    assert!(me["UserId"].is_string() && me["OrganizationId"].is_string());
    let wrong_method = emulator
        .request(Method::POST, "WhoAmI")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(wrong_method, 404, "", "No HTTP resource was found").await;
}

#[tokio::test]
async fn adds_custom_tables_through_the_control_api() {
    let emulator = Emulator::empty().await;
    emulator
        .add_table(
            &NewTable::new("new_project", "new_projects", "new_projectid", "new_name")
                .column("new_budget", "money")
                .column("new_account", "lookup:account"),
        )
        .await;
    let def = emulator
        .get_json(&format!(
            "EntityDefinitions(LogicalName='new_project')?{SELECT}"
        ))
        .await;
    assert_eq!(def["EntitySetName"], "new_projects");
    assert_eq!(def["ChangeTrackingEnabled"], false);
    let row: Value = emulator
        .create(
            "new_projects",
            json!({"new_name": "Pilot", "new_budget": 1500.5}),
        )
        .await;
    assert_eq!(row["new_name"], "Pilot");
    assert!(row["new_projectid"].is_string());
    assert!(row.as_object().unwrap().contains_key("_new_account_value"));
}
