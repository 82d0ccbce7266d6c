//! Dates through the actions, both ways, for each of Dataverse's three date and time behaviours, in
//! more than one user time zone. The functions pass values through untouched: what a caller sends is
//! what Dataverse gets, and what Dataverse answers is what the caller gets. These tests pin what that
//! means for each behaviour, day-early trap included, against the emulator's model of the service.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::{Emulator, Function, LocalFiles, expect_error};
use serde_json::{Value, json};

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

struct Org {
    emulator: Emulator,
    create: Function,
    update: Function,
    get: Function,
    list: Function,
    _files: LocalFiles,
}

impl Org {
    async fn start() -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new("dates", &emulator).unwrap();
        let env = [files.secrets_env()];
        let (create, update, get, list) = tokio::join!(
            Function::start("create-record", &env),
            Function::start("update-record", &env),
            Function::start("get-record", &env),
            Function::start("list-records", &env),
        );
        Self {
            emulator,
            create: create.unwrap(),
            update: update.unwrap(),
            get: get.unwrap(),
            list: list.unwrap(),
            _files: files,
        }
    }

    /// The calling user's time zone, in minutes east of UTC: what user-local values are shown in.
    async fn time_zone(&self, minutes: i32) {
        self.emulator
            .client()
            .set_user_timezone(minutes)
            .await
            .unwrap();
    }

    async fn create(&mut self, table: &str, item: Value) -> Value {
        self.create
            .invoke(&json!({"dataset": "contoso", "table": table, "item": item}))
            .await
            .unwrap()
    }

    async fn update(&mut self, table: &str, id: &str, item: Value) -> Result<Value, String> {
        self.update
            .invoke(&json!({"dataset": "contoso", "table": table, "id": id, "item": item}))
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// The column's raw value and its formatted value, as `get-record` returns them.
    async fn read(&mut self, table: &str, id: &str, column: &str) -> (Value, Value) {
        let row = self
            .get
            .invoke(&json!({"dataset": "contoso", "table": table, "id": id,
                            "$select": column, "formatted_values": true}))
            .await
            .unwrap();
        (
            row[column].clone(),
            row[format!("{column}{FORMATTED}")].clone(),
        )
    }
}

#[tokio::test]
async fn date_only_values_are_days_whatever_the_time_zone() {
    let mut org = Org::start().await;
    org.time_zone(10 * 60).await;
    let created = org
        .create(
            "contacts",
            json!({"lastname": "Lovelace", "birthdate": "1990-05-17"}),
        )
        .await;
    assert_eq!(created["birthdate"], "1990-05-17");
    let id = created["contactid"].as_str().unwrap().to_owned();

    for minutes in [10 * 60, 0, -8 * 60] {
        org.time_zone(minutes).await;
        assert_eq!(
            org.read("contacts", &id, "birthdate").await,
            (json!("1990-05-17"), json!("5/17/1990")),
            "at {minutes} minutes from UTC"
        );
    }

    org.update("contacts", &id, json!({"birthdate": "1990-05-18"}))
        .await
        .unwrap();
    let found = org
        .list
        .invoke(&json!({"dataset": "contoso", "table": "contacts",
                        "$filter": "birthdate eq 1990-05-18", "$select": "birthdate"}))
        .await
        .unwrap();
    assert_eq!(found["value"].as_array().unwrap().len(), 1, "{found}");

    // A date and time is not a date: Dataverse refuses it, and nothing is written.
    let refused = org
        .update
        .invoke(&json!({"dataset": "contoso", "table": "contacts", "id": id,
                        "item": {"birthdate": "1990-05-19T00:00:00Z"}}))
        .await;
    let (error_type, message) = expect_error(refused, "a date and time in a date-only column");
    assert_eq!(error_type, "Crm.BadRequest", "{message}");
    assert!(message.contains("Edm.Date"), "{message}");
    assert_eq!(org.read("contacts", &id, "birthdate").await.0, "1990-05-18");
}

#[tokio::test]
async fn user_local_values_are_instants_and_a_date_can_show_a_day_early() {
    let mut org = Org::start().await;
    // A user at +01:00 picks 31 January: the app stores their midnight, which is the 30th in UTC.
    org.time_zone(60).await;
    let created = org
        .create(
            "accounts",
            json!({"name": "Renewing", "new_renewaldate": "2024-01-31T00:00:00+01:00"}),
        )
        .await;
    assert_eq!(created["new_renewaldate"], "2024-01-30T23:00:00Z");
    let id = created["accountid"].as_str().unwrap().to_owned();
    assert_eq!(
        org.read("accounts", &id, "new_renewaldate").await,
        (json!("2024-01-30T23:00:00Z"), json!("1/31/2024"))
    );
    // The same instant, to a user in UTC: the day before.
    org.time_zone(0).await;
    assert_eq!(
        org.read("accounts", &id, "new_renewaldate").await.1,
        "1/30/2024"
    );

    // Without an offset a value is taken as UTC, not as the user's time.
    org.time_zone(-5 * 60).await;
    org.update(
        "accounts",
        &id,
        json!({"new_renewaldate": "2024-02-29T00:00:00"}),
    )
    .await
    .unwrap();
    assert_eq!(
        org.read("accounts", &id, "new_renewaldate").await,
        (json!("2024-02-29T00:00:00Z"), json!("2/28/2024"))
    );
    // The way to land on a day for a user is to send that user's midnight with its offset.
    org.update(
        "accounts",
        &id,
        json!({"new_renewaldate": "2024-02-29T00:00:00-05:00"}),
    )
    .await
    .unwrap();
    assert_eq!(
        org.read("accounts", &id, "new_renewaldate").await,
        (json!("2024-02-29T05:00:00Z"), json!("2/29/2024"))
    );

    // A bare date is not a date and time: refused, the value unchanged.
    let refused = org
        .update("accounts", &id, json!({"new_renewaldate": "2024-03-01"}))
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("Crm.BadRequest")),
        "{refused:?}"
    );
    assert_eq!(
        org.read("accounts", &id, "new_renewaldate").await.0,
        "2024-02-29T05:00:00Z"
    );
}

#[tokio::test]
async fn time_zone_independent_values_keep_their_wall_clock_time() {
    let mut org = Org::start().await;
    org.time_zone(5 * 60 + 30).await;
    let created = org
        .create(
            "accounts",
            json!({"name": "Hotel", "new_checkintime": "2024-01-31T19:30:00Z"}),
        )
        .await;
    // Marked `Z` by the service, but a time on the wall, not an instant.
    assert_eq!(created["new_checkintime"], "2024-01-31T19:30:00Z");
    let id = created["accountid"].as_str().unwrap().to_owned();
    for minutes in [5 * 60 + 30, 0, -8 * 60] {
        org.time_zone(minutes).await;
        assert_eq!(
            org.read("accounts", &id, "new_checkintime").await,
            (json!("2024-01-31T19:30:00Z"), json!("1/31/2024 7:30 PM")),
            "at {minutes} minutes from UTC"
        );
    }

    // No conversion: an offset is not applied, the wall-clock time is kept.
    org.update(
        "accounts",
        &id,
        json!({"new_checkintime": "2024-02-01T08:00:00+05:30"}),
    )
    .await
    .unwrap();
    assert_eq!(
        org.read("accounts", &id, "new_checkintime").await,
        (json!("2024-02-01T08:00:00Z"), json!("2/1/2024 8:00 AM"))
    );
}
