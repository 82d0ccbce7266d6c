//! The three date and time behaviours: what each accepts, stores and returns, how each is shown in
//! the user's time zone, the metadata that describes them, and the time zone setting.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use dataverse_emulator::client::NewTable;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

const FV: &str = "OData.Community.Display.V1.FormattedValue";

/// An empty organisation with a custom table holding a column of each kind.
async fn org(args: &[&str]) -> Emulator {
    let mut all = vec!["--seed", "none"];
    all.extend_from_slice(args);
    let emulator = Emulator::start(&all).await;
    emulator
        .add_table(
            &NewTable::new("new_event", "new_events", "new_eventid", "new_name")
                .column("new_start", "datetime")
                .column("new_day", "datetime:dateonly")
                .column("new_doors", "datetime:independent")
                .column("new_anniversary", "date"),
        )
        .await;
    emulator
}

async fn set_timezone(emulator: &Emulator, minutes: i64) -> Value {
    let response = emulator
        .control(Method::POST, "timezone", json!({"offset_minutes": minutes}))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Writes `body` to a new row of `set` and reads the row back with formatted values.
async fn write_and_read(emulator: &Emulator, set: &str, id_column: &str, body: Value) -> String {
    let row = emulator.create(set, body).await;
    row[id_column].as_str().unwrap().to_owned()
}

async fn read(emulator: &Emulator, path: &str) -> Value {
    let response = emulator
        .request(Method::GET, path)
        .header("Prefer", format!("odata.include-annotations=\"{FV}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn shown<'a>(row: &'a Value, column: &str) -> &'a Value {
    &row[format!("{column}@{FV}")]
}

#[tokio::test]
async fn user_local_values_are_utc_instants_shown_in_the_users_zone() {
    let emulator = org(&[]).await;
    let with_offset = write_and_read(
        &emulator,
        "new_events",
        "new_eventid",
        json!({"new_name": "a", "new_start": "2024-01-31T09:00:00+01:00"}),
    )
    .await;
    let bare = write_and_read(
        &emulator,
        "new_events",
        "new_eventid",
        json!({"new_name": "b", "new_start": "2024-01-31T09:00:00.123"}),
    )
    .await;
    let row = read(&emulator, &format!("new_events({with_offset})")).await;
    // The offset is applied; the value comes back as UTC.
    assert_eq!(row["new_start"], "2024-01-31T08:00:00Z");
    assert_eq!(shown(&row, "new_start"), "1/31/2024 8:00 AM");
    // Without an offset the Web API takes the value as UTC, not as the user's local time.
    let row = read(&emulator, &format!("new_events({bare})")).await;
    assert_eq!(row["new_start"], "2024-01-31T09:00:00Z");

    // The user's time zone moves what is shown, never the value.
    set_timezone(&emulator, 60).await;
    let row = read(&emulator, &format!("new_events({bare})")).await;
    assert_eq!(row["new_start"], "2024-01-31T09:00:00Z");
    assert_eq!(shown(&row, "new_start"), "1/31/2024 10:00 AM");
    set_timezone(&emulator, -600).await;
    let row = read(&emulator, &format!("new_events({bare})")).await;
    assert_eq!(shown(&row, "new_start"), "1/30/2024 11:00 PM");
    // `createdon` is user local too.
    assert!(
        shown(&row, "createdon").as_str().unwrap().ends_with('M'),
        "{row}"
    );
}

#[tokio::test]
async fn a_user_local_date_is_a_day_early_in_the_raw_value_east_of_utc() {
    // A user one hour east of UTC picks 31 January in a user-local column shown as a date: the
    // app stores midnight of their day, which is 23:00 the day before in UTC.
    let emulator = org(&["--user-timezone-offset-minutes", "60"]).await;
    let id = write_and_read(
        &emulator,
        "new_events",
        "new_eventid",
        json!({"new_name": "renewal", "new_day": "2024-01-30T23:00:00Z"}),
    )
    .await;
    let row = read(&emulator, &format!("new_events({id})")).await;
    assert_eq!(row["new_day"], "2024-01-30T23:00:00Z");
    assert_eq!(shown(&row, "new_day"), "1/31/2024");
    // A reader in UTC sees the day before, as does anyone who takes the raw value's date.
    set_timezone(&emulator, 0).await;
    let row = read(&emulator, &format!("new_events({id})")).await;
    assert_eq!(shown(&row, "new_day"), "1/30/2024");

    // The seeded account column behaves the same way.
    let account = emulator
        .create(
            "accounts",
            json!({"name": "Contoso", "new_renewaldate": "2024-01-30T23:00:00Z"}),
        )
        .await;
    assert_eq!(account["new_renewaldate"], "2024-01-30T23:00:00Z");
}

#[tokio::test]
async fn time_zone_independent_values_keep_their_wall_clock_and_come_back_with_a_z() {
    let emulator = org(&["--user-timezone-offset-minutes", "-300"]).await;
    let id = write_and_read(
        &emulator,
        "new_events",
        "new_eventid",
        json!({"new_name": "show", "new_doors": "2024-01-31T19:30:00+05:30"}),
    )
    .await;
    let row = read(&emulator, &format!("new_events({id})")).await;
    assert_eq!(row["new_doors"], "2024-01-31T19:30:00Z");
    assert_eq!(shown(&row, "new_doors"), "1/31/2024 7:30 PM");
    set_timezone(&emulator, 600).await;
    let row = read(&emulator, &format!("new_events({id})")).await;
    assert_eq!(shown(&row, "new_doors"), "1/31/2024 7:30 PM");

    let account = emulator
        .create(
            "accounts",
            json!({"name": "Hotel", "new_checkintime": "2024-02-01T15:00:00"}),
        )
        .await;
    assert_eq!(account["new_checkintime"], "2024-02-01T15:00:00Z");
}

#[tokio::test]
async fn date_only_values_are_days_shown_as_is() {
    let emulator = org(&["--user-timezone-offset-minutes", "-720"]).await;
    let contact = emulator
        .create(
            "contacts",
            json!({"lastname": "Lovelace", "birthdate": "1815-12-10"}),
        )
        .await;
    let id = contact["contactid"].as_str().unwrap();
    let row = read(&emulator, &format!("contacts({id})")).await;
    assert_eq!(row["birthdate"], "1815-12-10");
    assert_eq!(shown(&row, "birthdate"), "12/10/1815");
    set_timezone(&emulator, 840).await;
    let row = read(&emulator, &format!("contacts({id})")).await;
    assert_eq!(shown(&row, "birthdate"), "12/10/1815");

    let event = write_and_read(
        &emulator,
        "new_events",
        "new_eventid",
        json!({"new_name": "x", "new_anniversary": "2024-02-29"}),
    )
    .await;
    let row = read(&emulator, &format!("new_events({event})")).await;
    assert_eq!(row["new_anniversary"], "2024-02-29");
}

#[tokio::test]
async fn values_of_the_wrong_shape_are_refused_by_the_odata_reader() {
    let emulator = org(&[]).await;
    for (set, column, value, edm) in [
        ("contacts", "birthdate", "2024-01-31T00:00:00Z", "Edm.Date"),
        ("contacts", "birthdate", "31/01/2024", "Edm.Date"),
        (
            "new_events",
            "new_anniversary",
            "2024-01-31T10:00:00",
            "Edm.Date",
        ),
        (
            "new_events",
            "new_start",
            "2024-01-31",
            "Edm.DateTimeOffset",
        ),
        ("new_events", "new_day", "2024-01-31", "Edm.DateTimeOffset"),
        ("new_events", "new_doors", "tomorrow", "Edm.DateTimeOffset"),
    ] {
        let mut body = json!({ column: value });
        if set == "contacts" {
            body["lastname"] = json!("x");
        }
        let response = emulator
            .request(Method::POST, set)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(
            response,
            400,
            "0x80048d19",
            &format!("Cannot convert the literal '{value}' to the expected type '{edm}'."),
        )
        .await;
    }
}

/// .NET's `DateTime.MinValue` (`0001-01-01`), sent for "no date", is the usual way to meet this.
#[tokio::test]
async fn dates_before_1753_are_refused_and_1753_is_not() {
    let emulator = org(&[]).await;
    for (column, value, actual) in [
        ("new_start", "0001-01-01T00:00:00Z", "01/01/0001 00:00:00"),
        ("new_doors", "1752-12-31T23:59:59Z", "12/31/1752 23:59:59"),
        ("new_anniversary", "1752-12-31", "12/31/1752 00:00:00"),
    ] {
        let response = emulator
            .request(Method::POST, "new_events")
            .json(&json!({ column: value }))
            .send()
            .await
            .unwrap();
        expect_error(
            response,
            400,
            "0x80040239",
            &format!(
                "DateTime is less than minumum value supported by CrmDateTime. Actual value: {actual}, Minimum value supported: 01/01/1753 00:00:00"
            ),
        )
        .await;
    }
    let row = emulator
        .create(
            "new_events",
            json!({"new_start": "1753-01-01T00:00:00Z", "new_anniversary": "1753-01-01"}),
        )
        .await;
    assert_eq!(row["new_start"], "1753-01-01T00:00:00Z");
    assert_eq!(row["new_anniversary"], "1753-01-01");
}

#[tokio::test]
async fn attribute_metadata_describes_each_behaviour() {
    let emulator = org(&[]).await;
    let select = "$select=LogicalName,Format,DateTimeBehavior";
    let dates = |table: &str| {
        format!(
            "EntityDefinitions(LogicalName='{table}')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?{select}"
        )
    };
    let described = |list: &Value, name: &str| {
        let found = list["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["LogicalName"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .clone();
        (
            found["DateTimeBehavior"]["Value"]
                .as_str()
                .unwrap()
                .to_owned(),
            found["Format"].as_str().unwrap().to_owned(),
        )
    };
    let pair = |b: &str, f: &str| (b.to_owned(), f.to_owned());
    let events = emulator.get_json(&dates("new_event")).await;
    assert_eq!(
        described(&events, "new_start"),
        pair("UserLocal", "DateAndTime")
    );
    assert_eq!(described(&events, "new_day"), pair("UserLocal", "DateOnly"));
    assert_eq!(
        described(&events, "new_doors"),
        pair("TimeZoneIndependent", "DateAndTime")
    );
    assert_eq!(
        described(&events, "new_anniversary"),
        pair("DateOnly", "DateOnly")
    );
    let accounts = emulator.get_json(&dates("account")).await;
    assert_eq!(
        described(&accounts, "new_renewaldate"),
        pair("UserLocal", "DateOnly")
    );
    assert_eq!(
        described(&accounts, "new_checkintime"),
        pair("TimeZoneIndependent", "DateAndTime")
    );
    assert_eq!(
        described(&accounts, "createdon"),
        pair("UserLocal", "DateAndTime")
    );
    let contacts = emulator.get_json(&dates("contact")).await;
    assert_eq!(
        described(&contacts, "birthdate"),
        pair("DateOnly", "DateOnly")
    );

    // The two added to the built-in account table are a customizer's columns.
    let custom = emulator
        .get_json("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_checkintime')?$select=IsCustomAttribute,SchemaName")
        .await;
    assert_eq!(custom["IsCustomAttribute"], true);
    assert_eq!(custom["SchemaName"], "new_CheckInTime");
}

#[tokio::test]
async fn the_time_zone_is_a_setting_of_the_emulator() {
    let emulator = org(&["--user-timezone-offset-minutes", "330"]).await;
    let now: Value = emulator
        .control(Method::GET, "timezone", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now, json!({"offset_minutes": 330, "offset": "+05:30"}));
    assert_eq!(
        set_timezone(&emulator, -480).await,
        json!({"offset_minutes": -480, "offset": "-08:00"})
    );
    for bad in [
        json!({"offset_minutes": 841}),
        json!({"offset_minutes": -841}),
        json!({"hours": 1}),
    ] {
        let response = emulator
            .control(Method::POST, "timezone", bad.clone())
            .await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    // A reset keeps it, as it keeps the command line's settings.
    let response = emulator
        .control(Method::POST, "reset", json!({"seed": "none"}))
        .await;
    assert!(response.status().is_success());
    let now: Value = emulator
        .control(Method::GET, "timezone", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["offset_minutes"], -480);
}
