//! Loops: a Step Functions-style workflow that polls `when-record-updated` and, for each change,
//! updates the row with `update-record`, as the same application user. Without
//! `ignore_own_changes` its own update fires the trigger again, round after round; with it the
//! second poll fires nothing and the loop stops after one round, while a change by someone else (the
//! emulator's interactive user) still fires. `dataverse-webhook` passes over a delivery caused by
//! the connector's own user the same way. Every function runs as its binary, through the Runtime
//! API, against the emulator.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::emf;
use e2e_tests::function_url::FunctionUrl;
use e2e_tests::push::{StepSpec, register};
use e2e_tests::{Emulator, Function, LocalFiles, settle};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "loops-test-key";

struct Rig {
    emulator: Emulator,
    files: LocalFiles,
    trigger: Function,
    update: Function,
    /// Invocations of `trigger` so far.
    polls: usize,
}

impl Rig {
    async fn new(label: &str) -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new(label, &emulator).unwrap();
        files.set_webhook_key(&emulator, KEY).unwrap();
        let trigger = Function::start("when-record-updated", &files.env())
            .await
            .unwrap();
        let update = Function::start("update-record", &files.env())
            .await
            .unwrap();
        Self {
            emulator,
            files,
            trigger,
            update,
            polls: 0,
        }
    }

    /// A Web API write by the interactive user: somebody other than the connector.
    async fn as_someone_else(&self, method: Method, path: &str, body: &Value) -> Value {
        let response = self
            .emulator
            .client()
            .interactive(method, path)
            .header("Prefer", "return=representation")
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let row: Value = response.json().await.unwrap_or(Value::Null);
        assert!(matches!(status, 200 | 201 | 204), "{status} {row}");
        row
    }

    /// A row made by someone else, its second over.
    async fn row_by_someone_else(&self) -> String {
        let row = self
            .as_someone_else(Method::POST, "accounts", &json!({"name": "looped"}))
            .await;
        settle(&self.emulator).await.unwrap();
        row["accountid"].as_str().unwrap().to_owned()
    }

    async fn poll(&mut self, payload: &Value) -> Value {
        self.polls += 1;
        match self.trigger.invoke(payload).await {
            Ok(output) => output,
            Err(e) => panic!("the trigger failed: {e}\n{}", self.trigger.logs()),
        }
    }

    /// A metric of the trigger's last invocation, from the Embedded Metric Format line it wrote
    /// before answering (read from its output, which may arrive a moment after the answer).
    async fn last_metric(&self, name: &str) -> Option<f64> {
        let mut logs = self.trigger.logs();
        for _ in 0..10_000 {
            if logs.lines().filter(|l| l.starts_with(emf::PREFIX)).count() >= self.polls {
                break;
            }
            tokio::task::yield_now().await;
            logs = self.trigger.logs();
        }
        let documents =
            emf::documents(&logs).unwrap_or_else(|p| panic!("{}\n{logs}", p.join("\n")));
        assert_eq!(documents.len(), self.polls, "one line per poll\n{logs}");
        documents.last().and_then(|d| d.value(name))
    }

    /// One round of the workflow: poll, then update each row fired. Returns how many fired.
    async fn round(&mut self, payload: &Value) -> usize {
        let output = self.poll(payload).await;
        let fired = output["value"].as_array().unwrap().clone();
        for row in &fired {
            let id = row["accountid"].as_str().unwrap();
            let update = json!({"dataset": "contoso", "table": "accounts", "id": id,
                "item": {"description": format!("handled version {}", row["versionnumber"])}});
            if let Err(e) = self.update.invoke(&update).await {
                panic!("update-record failed: {e}\n{}", self.update.logs());
            }
        }
        fired.len()
    }
}

fn payload(extra: &Value) -> Value {
    let mut payload =
        json!({"dataset": "contoso", "table": "accounts", "$select": "name,description"});
    payload
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    payload
}

#[tokio::test]
async fn without_ignore_own_changes_the_workflow_triggers_itself_round_after_round() {
    let mut rig = Rig::new("loops-on").await;
    let payload = payload(&json!({}));
    let id = rig.row_by_someone_else().await;
    rig.poll(&payload).await;
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "changed by a person"}),
    )
    .await;
    for round in 0..4 {
        assert_eq!(
            rig.round(&payload).await,
            1,
            "round {round}: the workflow's own update fired it again"
        );
    }
}

#[tokio::test]
async fn with_ignore_own_changes_the_loop_stops_after_one_round() {
    let mut rig = Rig::new("loops-off").await;
    let payload = payload(&json!({"ignore_own_changes": true}));
    let id = rig.row_by_someone_else().await;
    rig.poll(&payload).await;
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "changed by a person"}),
    )
    .await;
    assert_eq!(rig.round(&payload).await, 1, "a person's change fires");
    let output = rig.poll(&payload).await;
    assert_eq!(
        output["value"].as_array().unwrap().len(),
        0,
        "the workflow's own update does not: {output}"
    );
    assert_eq!(output["skipped_own"], 1, "{output}");
    assert_eq!(rig.last_metric("OwnChangesSkipped").await, Some(1.0));
    assert_eq!(
        rig.poll(&payload).await["skipped_own"],
        0,
        "the cursor moved past it: it never fires later"
    );
    assert_eq!(rig.last_metric("OwnChangesSkipped").await, Some(0.0));

    // Someone else again: it fires, and the author column the trigger read to decide is not added
    // to a row whose `$select` left it out.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "changed again"}),
    )
    .await;
    let output = rig.poll(&payload).await;
    let fired = output["value"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{output}");
    assert!(fired[0].get("_modifiedby_value").is_none(), "{output}");
    let events = rig.files.published();
    let record = &events.last().unwrap()["detail"]["record"];
    assert_eq!(record["name"], "changed again");
    assert!(record.get("_modifiedby_value").is_none(), "{record}");
    assert_eq!(events.len(), 2, "one event per change by someone else");

    // With the column selected, it stays.
    let selected = self::payload(&json!({"ignore_own_changes": true,
        "$select": "name,_modifiedby_value", "trigger": "selected"}));
    rig.poll(&selected).await;
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "once more"}),
    )
    .await;
    let output = rig.poll(&selected).await;
    let someone_else = rig.emulator.client().interactive_user().await.unwrap();
    assert_eq!(
        output["value"][0]["_modifiedby_value"],
        someone_else.to_string(),
        "{output}"
    );
}

#[tokio::test]
async fn a_watched_author_column_is_read_although_it_decides_own_changes_too() {
    let mut rig = Rig::new("loops-watched-author").await;
    let payload = payload(&json!({"ignore_own_changes": true, "columns": ["_modifiedby_value"]}));
    rig.poll(&payload).await;
    // The connector's creation: no update, but its fingerprint holds the connector as author.
    let id = rig
        .emulator
        .create_account("by the connector")
        .await
        .unwrap();
    settle(&rig.emulator).await.unwrap();
    assert_eq!(rig.round(&payload).await, 0);
    // Someone else changes a column not watched: the author, which is watched, changed.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"description": "by a person"}),
    )
    .await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 1, "{output}");
    let (_, who) = rig.emulator.api_get("WhoAmI").await.unwrap();
    let own = who["UserId"].as_str().unwrap().to_owned();
    let detail = rig.files.published().last().unwrap()["detail"].clone();
    assert_eq!(detail["changed"], json!(["_modifiedby_value"]), "{detail}");
    assert_eq!(
        detail["previous"],
        json!({"_modifiedby_value": own}),
        "{detail}"
    );
}

/// The workflow's write, as `update-record` sends it: the connector's own user.
async fn write_as_the_connector(rig: &mut Rig, id: &str, item: &Value) {
    let update = json!({"dataset": "contoso", "table": "accounts", "id": id, "item": item});
    if let Err(e) = rig.update.invoke(&update).await {
        panic!("update-record failed: {e}\n{}", rig.update.logs());
    }
}

#[tokio::test]
async fn the_connectors_write_to_a_watched_column_never_fires_at_someone_elses_change() {
    let mut rig = Rig::new("loops-own-kept").await;
    let payload = payload(&json!({"ignore_own_changes": true, "columns": ["name"]}));
    rig.poll(&payload).await;
    let id = rig.row_by_someone_else().await;
    assert_eq!(
        rig.round(&payload).await,
        0,
        "a creation: its values are kept"
    );
    // The workflow writes a watched column: passed over, and its values become the row's known ones.
    write_as_the_connector(&mut rig, &id, &json!({"name": "written by the workflow"})).await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 0, "{output}");
    assert_eq!(output["skipped_own"], 1, "{output}");
    // Someone else (a plug-in stamping the row, say) changes only a column not watched: compared
    // with the connector's values, no watched column changed, so nothing fires, now or later.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"description": "stamped by a plug-in"}),
    )
    .await;
    for poll in 0..2 {
        let output = rig.poll(&payload).await;
        assert_eq!(
            output["value"].as_array().unwrap().len(),
            0,
            "poll {poll}: the connector's own write came back as a change: {output}"
        );
        assert_eq!(output["skipped_own"], 0, "{output}");
    }
    // A person's change to the watched column still fires, against the connector's value.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "renamed by a person"}),
    )
    .await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 1, "{output}");
    let detail = rig.files.published().last().unwrap()["detail"].clone();
    assert_eq!(detail["changed"], json!(["name"]), "{detail}");
    assert_eq!(
        detail["previous"],
        json!({"name": "written by the workflow"}),
        "{detail}"
    );
}

#[tokio::test]
async fn a_persons_change_the_connector_writes_over_before_the_poll_is_passed_over_with_it() {
    let mut rig = Rig::new("loops-race").await;
    let payload = payload(
        &json!({"ignore_own_changes": true, "columns": ["name", "telephone1"],
        "$select": "name,description,telephone1"}),
    );
    rig.poll(&payload).await;
    let id = rig.row_by_someone_else().await;
    assert_eq!(
        rig.round(&payload).await,
        0,
        "a creation: its values are kept"
    );
    // The documented race: a person changes a watched column, and the workflow writes the row
    // before the trigger polls again. The poll sees one row, last written by the connector.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"telephone1": "+47 555 0100"}),
    )
    .await;
    write_as_the_connector(&mut rig, &id, &json!({"name": "written by the workflow"})).await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 0, "{output}");
    assert_eq!(output["skipped_own"], 1, "{output}");
    // The person's change is not fired later either: a change to a column not watched finds the
    // watched values as the connector left them.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"description": "touched by a person"}),
    )
    .await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 0, "{output}");
    // The row's next change to watched columns fires against the values after the connector's
    // write: its name, and the telephone the person set before it.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "renamed by a person", "telephone1": "+47 555 0199"}),
    )
    .await;
    let output = rig.poll(&payload).await;
    assert_eq!(output["value"].as_array().unwrap().len(), 1, "{output}");
    let detail = rig.files.published().last().unwrap()["detail"].clone();
    assert_eq!(detail["changed"], json!(["name", "telephone1"]), "{detail}");
    assert_eq!(
        detail["previous"],
        json!({"name": "written by the workflow", "telephone1": "+47 555 0100"}),
        "{detail}"
    );
    assert_eq!(rig.round(&payload).await, 0, "and once only");
}

#[tokio::test]
async fn the_created_trigger_passes_over_rows_the_connector_created() {
    let rig = Rig::new("loops-created").await;
    let mut created = Function::start("when-record-created", &rig.files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "ignore_own_changes": true});
    created.invoke(&payload).await.unwrap();
    rig.emulator
        .create_account("by the connector")
        .await
        .unwrap();
    let by_person = rig.row_by_someone_else().await;
    let output = created.invoke(&payload).await.unwrap();
    let fired = output["value"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{output}");
    assert_eq!(fired[0]["accountid"], by_person.as_str());
    assert_eq!(output["skipped_own"], 1, "{output}");
    // The trigger asks who it is once per process.
    let asked = rig
        .emulator
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().unwrap().contains("WhoAmI"))
        .count();
    assert_eq!(asked, 1);
}

#[tokio::test]
async fn the_deleted_trigger_refuses_ignore_own_changes_naming_it() {
    let rig = Rig::new("loops-deleted").await;
    let mut deleted = Function::start("when-record-deleted", &rig.files.env())
        .await
        .unwrap();
    let payload = json!({"dataset": "contoso", "table": "accounts", "ignore_own_changes": true});
    let (error_type, message) =
        e2e_tests::expect_error(deleted.invoke(&payload).await, "ignore_own_changes");
    assert_eq!(error_type, "Crm.InvalidInput");
    assert!(message.contains("ignore_own_changes"), "{message}");
}

#[tokio::test]
async fn the_webhook_receiver_passes_over_deliveries_caused_by_the_connector() {
    let rig = Rig::new("loops-push").await;
    let receiver = FunctionUrl::start(
        Function::start("dataverse-webhook", &rig.files.env())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let url = format!("{}/contoso?ignore_own_changes=true", receiver.url());
    let step = |message| StepSpec {
        message,
        columns: None,
        pre_image: None,
        post_image: (message != "Delete").then_some(""),
    };
    register(
        &rig.emulator,
        &url,
        KEY,
        "account",
        &[step("Update"), step("Delete")],
    )
    .await
    .unwrap();
    let id = rig.row_by_someone_else().await;
    let mine = rig.emulator.create_account("mine").await.unwrap();
    settle(&rig.emulator).await.unwrap();

    // The connector's own update and deletion: answered 200, nothing published.
    let (status, _) = rig
        .emulator
        .api(
            Method::PATCH,
            &format!("accounts({id})"),
            Some(&json!({"name": "by the connector"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = rig
        .emulator
        .api(Method::DELETE, &format!("accounts({mine})"), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let log = rig
        .emulator
        .client()
        .webhook_deliveries(true)
        .await
        .unwrap();
    assert_eq!(log.deliveries.len(), 2, "{log:?}");
    assert!(
        log.deliveries
            .iter()
            .all(|d| d.attempts.last().and_then(|a| a.status) == Some(200)),
        "{log:?}"
    );
    assert!(
        rig.files.published().is_empty(),
        "{:?}",
        rig.files.published()
    );

    // Someone else's: published.
    rig.as_someone_else(
        Method::PATCH,
        &format!("accounts({id})"),
        &json!({"name": "by a person"}),
    )
    .await;
    rig.emulator
        .client()
        .webhook_deliveries(true)
        .await
        .unwrap();
    let events = rig.files.published();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["record"]["name"], "by a person");
    let logs = receiver.function().await.logs();
    assert!(logs.contains("passed over"), "{logs}");
    // Each delivery wrote its metrics before it was answered: the two passed over count 1 each.
    let skipped: Vec<Option<f64>> = emf::documents(&logs)
        .unwrap_or_else(|p| panic!("{}\n{logs}", p.join("\n")))
        .iter()
        .map(|d| d.value("OwnChangesSkipped"))
        .collect();
    assert_eq!(skipped, [Some(1.0), Some(1.0), None], "{logs}");
}
