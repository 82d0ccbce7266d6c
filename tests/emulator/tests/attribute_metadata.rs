//! Attribute metadata: `EntityDefinitions(...)/Attributes`, its casts to the derived types, option
//! sets with their labels, and `$expand=Attributes`, in the shapes Dataverse gives them.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["LogicalName"] == name)
        .unwrap_or_else(|| panic!("no attribute {name} in {list}"))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a["LogicalName"].as_str().unwrap())
        .collect()
}

fn label(value: &Value) -> &str {
    value["UserLocalizedLabel"]["Label"].as_str().unwrap()
}

/// `(value, label)` of each option of an `OptionSet`.
fn options(option_set: &Value) -> Vec<(i64, String)> {
    option_set["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["Value"].as_i64().unwrap(), label(&o["Label"]).to_owned()))
        .collect()
}

#[tokio::test]
async fn each_column_is_its_derived_type_with_its_own_properties() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes")
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#EntityDefinitions('account')/Attributes"),
        "{body}"
    );
    let list = &body["value"];
    let name = by_name(list, "name");
    let metadata_id = name["MetadataId"].as_str().unwrap();
    assert_eq!(
        name,
        &json!({
            "@odata.type": "#Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "MetadataId": metadata_id,
            "LogicalName": "name",
            "SchemaName": "Name",
            "EntityLogicalName": "account",
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            "AttributeOf": null,
            "IsPrimaryId": false,
            "IsPrimaryName": true,
            "IsValidForCreate": true,
            "IsValidForUpdate": true,
            "IsValidForRead": true,
            "IsValidODataAttribute": true,
            "IsCustomAttribute": false,
            "RequiredLevel": {"Value": "ApplicationRequired", "CanBeChanged": true,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"},
            "DisplayName": name["DisplayName"],
            "Description": {"LocalizedLabels": [], "UserLocalizedLabel": null},
            "MaxLength": 160,
            "Format": "Text",
            "FormatName": {"Value": "Text"},
        })
    );
    assert_eq!(label(&name["DisplayName"]), "Account Name");
    assert_eq!(
        name["DisplayName"]["LocalizedLabels"][0]["LanguageCode"],
        1033
    );
    // Every type the built-in tables use, with its AttributeType, type name and own properties.
    let expected = [
        (
            "accountid",
            "UniqueIdentifierAttributeMetadata",
            "Uniqueidentifier",
            json!({}),
        ),
        (
            "emailaddress1",
            "StringAttributeMetadata",
            "String",
            json!({"MaxLength": 100, "Format": "Email"}),
        ),
        (
            "description",
            "MemoAttributeMetadata",
            "Memo",
            json!({"MaxLength": 2000, "Format": "TextArea"}),
        ),
        (
            "revenue",
            "MoneyAttributeMetadata",
            "Money",
            json!({"Precision": 2, "MinValue": -922_337_203_685_477.0}),
        ),
        (
            "numberofemployees",
            "IntegerAttributeMetadata",
            "Integer",
            json!({"MinValue": 0, "MaxValue": 1_000_000_000}),
        ),
        (
            "industrycode",
            "PicklistAttributeMetadata",
            "Picklist",
            json!({"DefaultFormValue": -1}),
        ),
        (
            "creditonhold",
            "BooleanAttributeMetadata",
            "Boolean",
            json!({"DefaultValue": false}),
        ),
        (
            "primarycontactid",
            "LookupAttributeMetadata",
            "Lookup",
            json!({"Targets": ["contact"]}),
        ),
        (
            "ownerid",
            "LookupAttributeMetadata",
            "Owner",
            json!({"Targets": ["systemuser", "team"]}),
        ),
        ("statecode", "StateAttributeMetadata", "State", json!({})),
        ("statuscode", "StatusAttributeMetadata", "Status", json!({})),
        (
            "createdon",
            "DateTimeAttributeMetadata",
            "DateTime",
            json!({"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}}),
        ),
        (
            "versionnumber",
            "BigIntAttributeMetadata",
            "BigInt",
            json!({"MaxValue": i64::MAX}),
        ),
    ];
    for (logical, odata_type, attribute_type, own) in expected {
        let attribute = by_name(list, logical);
        assert_eq!(
            attribute["@odata.type"],
            format!("#Microsoft.Dynamics.CRM.{odata_type}"),
            "{logical}"
        );
        assert_eq!(attribute["AttributeType"], attribute_type, "{logical}");
        assert_eq!(
            attribute["AttributeTypeName"]["Value"],
            format!("{attribute_type}Type"),
            "{logical}"
        );
        for (property, value) in own.as_object().unwrap() {
            assert_eq!(&attribute[property], value, "{logical}.{property}");
        }
    }
    let id = by_name(list, "accountid");
    assert_eq!(id["IsPrimaryId"], true);
    assert_eq!(id["RequiredLevel"]["Value"], "SystemRequired");
    assert_eq!(id["RequiredLevel"]["CanBeChanged"], false);
    assert_eq!(
        (
            id["IsValidForCreate"].clone(),
            id["IsValidForUpdate"].clone()
        ),
        (json!(true), json!(false))
    );
    let created = by_name(list, "createdon");
    assert_eq!(created["IsValidForCreate"], false);
    assert_eq!(created["IsValidForUpdate"], false);
    // Each lookup is followed by its virtual name column, which is not a Web API property.
    let virtual_name = by_name(list, "primarycontactidname");
    assert_eq!(virtual_name["AttributeOf"], "primarycontactid");
    assert_eq!(virtual_name["AttributeType"], "String");
    assert_eq!(virtual_name["IsValidODataAttribute"], false);
    assert_eq!(virtual_name["IsValidForCreate"], false);
    let all = names(list);
    let at = all.iter().position(|n| *n == "primarycontactid").unwrap();
    assert_eq!(all[at + 1], "primarycontactidname");
    // The contact's and the opportunity's lookups to either table are customer lookups.
    let contact = emulator
        .get_json("EntityDefinitions(LogicalName='contact')/Attributes")
        .await;
    let customer = by_name(&contact["value"], "parentcustomerid");
    assert_eq!(customer["AttributeType"], "Customer");
    assert_eq!(customer["Targets"], json!(["account", "contact"]));
    assert_eq!(
        by_name(&contact["value"], "birthdate")["DateTimeBehavior"],
        json!({"Value": "DateOnly"})
    );
    // The computed full name is the primary name, and neither required nor writable.
    let full = by_name(&contact["value"], "fullname");
    assert_eq!(full["IsPrimaryName"], true);
    assert_eq!(full["RequiredLevel"]["Value"], "None");
    assert_eq!(full["IsValidForCreate"], false);
}

#[tokio::test]
async fn required_levels_are_the_real_tables() {
    let emulator = Emulator::empty().await;
    let required = |table: &'static str, level: &'static str| {
        let emulator = &emulator;
        async move {
            let body = emulator
                .get_json(&format!(
                    "EntityDefinitions(LogicalName='{table}')/Attributes?$select=LogicalName&$filter=RequiredLevel/Value eq Microsoft.Dynamics.CRM.AttributeRequiredLevel'{level}'"
                ))
                .await;
            names(&body["value"])
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        required("contact", "ApplicationRequired").await,
        ["lastname"]
    );
    assert_eq!(required("contact", "Recommended").await, ["firstname"]);
    assert_eq!(
        required("contact", "SystemRequired").await,
        ["contactid", "ownerid"]
    );
    assert_eq!(required("account", "ApplicationRequired").await, ["name"]);
    assert_eq!(
        required("lead", "ApplicationRequired").await,
        ["subject", "lastname"]
    );
    assert_eq!(
        required("opportunity", "ApplicationRequired").await,
        ["name"]
    );
}

#[tokio::test]
async fn select_and_filter_on_the_collection_name_only_base_properties() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName,AttributeType&$filter=AttributeType eq 'Picklist'")
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/Attributes(LogicalName,AttributeType)"),
        "{body}"
    );
    assert_eq!(
        names(&body["value"]),
        ["industrycode", "accountcategorycode"]
    );
    let first = &body["value"][0];
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["@odata.type", "LogicalName", "AttributeType", "MetadataId"]
    );
    // The documented enum form of the same filter.
    let enum_form = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName&$filter=AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'")
        .await;
    assert_eq!(
        names(&enum_form["value"]),
        ["industrycode", "accountcategorycode"]
    );
    let lookups = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName&$filter=AttributeOf eq null and AttributeTypeName/Value eq 'LookupType'")
        .await;
    assert_eq!(
        names(&lookups["value"]),
        [
            "primarycontactid",
            "parentaccountid",
            "originatingleadid",
            "transactioncurrencyid",
            "createdby",
            "modifiedby",
            "owningbusinessunit"
        ]
    );
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName,MaxLength")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'MaxLength' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes?$filter=MaxLength gt 100")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'MaxLength' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes?$filter=startswith(LogicalName,'a')")
            .await,
        400,
        "0x8006088a",
        "isn't supported for Metadata Entities",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes?$expand=OptionSet")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'OptionSet' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes?$top=1")
            .await,
        400,
        "0x80060888",
        "The query parameter $top is not supported",
    )
    .await;
}

#[tokio::test]
async fn a_cast_keeps_one_type_and_selects_its_properties() {
    let emulator = Emulator::empty().await;
    let strings = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength&$filter=AttributeOf eq null")
        .await;
    assert!(
        strings["@odata.context"].as_str().unwrap().ends_with(
            "$metadata#EntityDefinitions('account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata(LogicalName,MaxLength)"
        ),
        "{strings}"
    );
    let first = &strings["value"][0];
    // The collection's own type: no @odata.type on each entry.
    assert_eq!(
        first,
        &json!({"LogicalName": "name", "MaxLength": 160, "MetadataId": first["MetadataId"]})
    );
    assert_eq!(names(&strings["value"]).len(), 9);
    assert!(!names(&strings["value"]).contains(&"description"));
    let memos = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.MemoAttributeMetadata?$select=LogicalName,MaxLength")
        .await;
    assert_eq!(memos["value"][0]["LogicalName"], "description");
    assert_eq!(memos["value"][0]["MaxLength"], 2000);
    let lookups = emulator
        .get_json("EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets,AttributeType&$filter=AttributeType ne 'Lookup'")
        .await;
    let customer = by_name(&lookups["value"], "customerid");
    assert_eq!(customer["Targets"], json!(["account", "contact"]));
    assert_eq!(customer["AttributeType"], "Customer");
    assert_eq!(
        by_name(&lookups["value"], "ownerid")["AttributeType"],
        "Owner"
    );
    let dates = emulator
        .get_json("EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,Format,DateTimeBehavior")
        .await;
    assert_eq!(
        by_name(&dates["value"], "estimatedclosedate"),
        &json!({"LogicalName": "estimatedclosedate", "Format": "DateOnly",
            "DateTimeBehavior": {"Value": "DateOnly"},
            "MetadataId": by_name(&dates["value"], "estimatedclosedate")["MetadataId"]})
    );
    // A cast's own properties are filterable.
    let long = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName&$filter=MaxLength ge 200")
        .await;
    assert_eq!(names(&long["value"]), ["websiteurl", "address1_line1"]);
    // A type no column here has is a valid cast that finds nothing; a type Dataverse does not have
    // is not a segment.
    let images = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.ImageAttributeMetadata")
        .await;
    assert_eq!(images["value"], json!([]));
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.TextAttributeMetadata")
            .await,
        404,
        "0x8006088a",
        "Resource not found for the segment 'Microsoft.Dynamics.CRM.TextAttributeMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=Targets")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'Targets' on type 'Microsoft.Dynamics.CRM.StringAttributeMetadata'.",
    )
    .await;
}

#[tokio::test]
async fn choice_columns_expand_their_options_with_dataverse_s_labels() {
    let emulator = Emulator::empty().await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await;
    assert!(
        body["@odata.context"].as_str().unwrap().ends_with(
            "/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata(LogicalName,OptionSet(Options))"
        ),
        "{body}"
    );
    let category = by_name(&body["value"], "accountcategorycode");
    assert_eq!(
        options(&category["OptionSet"]),
        [
            (1, "Preferred Customer".to_owned()),
            (2, "Standard".to_owned())
        ]
    );
    let option = &category["OptionSet"]["Options"][0];
    assert_eq!(
        option["Label"]["LocalizedLabels"][0]["Label"],
        "Preferred Customer"
    );
    assert_eq!(option["Label"]["UserLocalizedLabel"]["LanguageCode"], 1033);
    // Only the selected option set properties, and its MetadataId.
    assert_eq!(
        category["OptionSet"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["Options", "MetadataId"]
    );
    let industry = options(&by_name(&body["value"], "industrycode")["OptionSet"]);
    assert_eq!(industry.len(), 33);
    assert_eq!(industry[0], (1, "Accounting".to_owned()));
    assert_eq!(industry[32], (33, "Wholesale".to_owned()));
    // Without a nested $select, the whole option set.
    let whole = emulator
        .get_json("EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet")
        .await;
    let gender = &by_name(&whole["value"], "gendercode")["OptionSet"];
    assert_eq!(gender["Name"], "contact_gendercode");
    assert_eq!(gender["OptionSetType"], "Picklist");
    assert_eq!(gender["IsGlobal"], false);
    assert_eq!(
        options(gender),
        [(1, "Male".to_owned()), (2, "Female".to_owned())]
    );
    // Status and status reason, each option with the state it belongs to.
    let states = emulator
        .get_json("EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM.StateAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await;
    let state = &states["value"][0];
    assert_eq!(state["LogicalName"], "statecode");
    assert_eq!(
        options(&state["OptionSet"]),
        [
            (0, "Open".to_owned()),
            (1, "Won".to_owned()),
            (2, "Lost".to_owned())
        ]
    );
    assert_eq!(state["OptionSet"]["Options"][1]["DefaultStatus"], 3);
    let statuses = emulator
        .get_json("EntityDefinitions(LogicalName='lead')/Attributes/Microsoft.Dynamics.CRM.StatusAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await;
    let reasons = &statuses["value"][0]["OptionSet"]["Options"];
    let qualified = reasons
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["Value"] == 3)
        .unwrap();
    assert_eq!(label(&qualified["Label"]), "Qualified");
    assert_eq!(qualified["State"], 1);
    assert_eq!(
        qualified["@odata.type"],
        "#Microsoft.Dynamics.CRM.StatusOptionMetadata"
    );
    // The default state and status every other table has.
    let account_state = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StatusAttributeMetadata?$expand=OptionSet")
        .await;
    assert_eq!(
        options(&account_state["value"][0]["OptionSet"]),
        [(1, "Active".to_owned()), (2, "Inactive".to_owned())]
    );
    // GlobalOptionSet is null: every choice here is local.
    let global = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=GlobalOptionSet")
        .await;
    assert_eq!(global["value"][0]["GlobalOptionSet"], Value::Null);
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet($select=Colours)")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'Colours' on type 'Microsoft.Dynamics.CRM.OptionSetMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$expand=OptionSet")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'OptionSet' on type 'Microsoft.Dynamics.CRM.StringAttributeMetadata'.",
    )
    .await;
}

#[tokio::test]
async fn one_attribute_by_logical_name_or_metadata_id() {
    let emulator = Emulator::empty().await;
    let one = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='industrycode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await;
    assert!(
        one["@odata.context"].as_str().unwrap().ends_with(
            "/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata(LogicalName,OptionSet(Options))/$entity"
        ),
        "{one}"
    );
    assert_eq!(one["LogicalName"], "industrycode");
    assert_eq!(options(&one["OptionSet"])[6], (7, "Consulting".to_owned()));
    let id = one["MetadataId"].as_str().unwrap();
    let again = emulator
        .get_json(&format!(
            "EntityDefinitions(LogicalName='account')/Attributes({id})?$select=LogicalName,AttributeType"
        ))
        .await;
    assert_eq!(
        again["@odata.type"],
        "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    );
    assert_eq!(again["AttributeType"], "Picklist");
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='nosuch')")
            .await,
        404,
        "0x80040217",
        "Could not find attribute with LogicalName 'nosuch' on entity 'account'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata")
            .await,
        404,
        "0x80040217",
        "is not a PicklistAttributeMetadata",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='industrycode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata/OptionSet")
            .await,
        501,
        "0x80040216",
        "use $expand=OptionSet",
    )
    .await;
}

#[tokio::test]
async fn attributes_expand_with_keys_on_one_table_and_all_of_them() {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "aws_accountnumber", &["accountnumber"])
        .await;
    let table = emulator
        .get_json("EntityDefinitions(LogicalName='account')?$select=LogicalName&$expand=Attributes($select=LogicalName,RequiredLevel;$filter=IsPrimaryId eq true or IsPrimaryName eq true),Keys($select=KeyAttributes)")
        .await;
    assert!(
        table["@odata.context"].as_str().unwrap().ends_with(
            "$metadata#EntityDefinitions(LogicalName,Attributes(LogicalName,RequiredLevel),Keys(KeyAttributes))/$entity"
        ),
        "{table}"
    );
    assert_eq!(names(&table["Attributes"]), ["accountid", "name"]);
    assert_eq!(
        table["Attributes"][1]["RequiredLevel"]["Value"],
        "ApplicationRequired"
    );
    assert_eq!(table["Keys"][0]["KeyAttributes"], json!(["accountnumber"]));
    // Every table's attributes at once, as some discovery code asks for them.
    let all = emulator
        .get_json("EntityDefinitions?$select=LogicalName&$filter=IsCustomEntity eq false&$expand=Attributes($select=LogicalName;$filter=IsPrimaryId eq true)")
        .await;
    for table in all["value"].as_array().unwrap() {
        let logical = table["LogicalName"].as_str().unwrap();
        assert_eq!(
            names(&table["Attributes"]),
            [format!("{logical}id")],
            "{logical}"
        );
    }
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')?$expand=Attributes($select=MaxLength)")
            .await,
        400,
        "0x80060888",
        "Could not find a property named 'MaxLength' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')?$expand=Columns")
            .await,
        400,
        "0x0",
        "Could not find a property named 'Columns' on type 'Microsoft.Dynamics.CRM.EntityMetadata'.",
    )
    .await;
    expect_error(
        emulator
            .get("EntityDefinitions(LogicalName='account')?$expand=Attributes($top=1)")
            .await,
        501,
        "0x80040216",
        "$top=1",
    )
    .await;
}

#[tokio::test]
async fn custom_tables_describe_their_columns_and_choices() {
    let emulator = Emulator::empty().await;
    emulator
        .add_table(
            &NewTable::new("new_project", "new_projects", "new_projectid", "new_name")
                .column("new_colour", "choice:1=Red,2=Blue")
                .column("new_size", "choice:10,20")
                .column("new_anything", "choice")
                .column("new_notes", "memo")
                .column("new_budget", "money")
                .column("new_due", "datetime")
                .column("new_accountid", "lookup:account"),
        )
        .await;
    let body = emulator
        .get_json("EntityDefinitions(LogicalName='new_project')/Attributes?$select=LogicalName,SchemaName,AttributeType,IsCustomAttribute,RequiredLevel&$filter=AttributeOf eq null")
        .await;
    let list = &body["value"];
    assert_eq!(
        by_name(list, "new_name")["RequiredLevel"]["Value"],
        "ApplicationRequired"
    );
    assert_eq!(by_name(list, "new_name")["IsCustomAttribute"], true);
    assert_eq!(by_name(list, "new_projectid")["IsCustomAttribute"], false);
    assert_eq!(
        by_name(list, "new_projectid")["SchemaName"],
        "New_ProjectId"
    );
    assert_eq!(by_name(list, "new_budget")["SchemaName"], "New_Budget");
    assert_eq!(by_name(list, "new_notes")["AttributeType"], "Memo");
    assert_eq!(by_name(list, "new_due")["AttributeType"], "DateTime");
    assert_eq!(by_name(list, "new_accountid")["AttributeType"], "Lookup");
    let choices = emulator
        .get_json("EntityDefinitions(LogicalName='new_project')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options,IsCustomOptionSet)")
        .await;
    let list = &choices["value"];
    assert_eq!(
        options(&by_name(list, "new_colour")["OptionSet"]),
        [(1, "Red".to_owned()), (2, "Blue".to_owned())]
    );
    assert_eq!(
        by_name(list, "new_colour")["OptionSet"]["IsCustomOptionSet"],
        true
    );
    assert_eq!(
        options(&by_name(list, "new_size")["OptionSet"]),
        [(10, "10".to_owned()), (20, "20".to_owned())]
    );
    assert_eq!(options(&by_name(list, "new_anything")["OptionSet"]), []);
    // The options are the column's values: others are refused, as Dataverse refuses them.
    let created = emulator
        .create("new_projects", json!({"new_name": "Roof", "new_colour": 2}))
        .await;
    assert_eq!(created["new_colour"], 2);
    expect_error(
        emulator
            .request(Method::POST, "new_projects")
            .json(&json!({"new_name": "Wall", "new_colour": 3}))
            .send()
            .await
            .unwrap(),
        400,
        "0x80044331",
        "outside the valid range",
    )
    .await;
    // A malformed option list is refused by the control API.
    for spec in ["choice:1=Red,1=Blue", "choice:x=Red", "choice:1="] {
        let response = emulator
            .control(
                Method::POST,
                "tables",
                json!({"logical_name": "new_bad", "entity_set_name": "new_bads",
                    "primary_id": "new_badid", "primary_name": "new_name",
                    "columns": {"new_choice": spec}}),
            )
            .await;
        assert_eq!(response.status(), 400, "{spec}");
    }
}
