//! `make run`: a scripted tour of the connector on the embedded Dataverse emulator.
//!
//! It starts the emulator with demo data, runs every function as the binary it ships as, through the
//! Lambda Runtime API, and prints each input and output. It exits 0 only if every step answered as
//! expected, so it doubles as a smoke test of a fresh build.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use e2e_tests::function_url::FunctionUrl;
use e2e_tests::{Emulator, Failure, Function, LocalFiles, settle, webhooks_command};
use serde_json::{Value, json};

/// What a step should answer.
enum Expect {
    Ok,
    /// `{"value": [...]}` with this many rows.
    Fires(usize),
    Error(&'static str),
}

struct Tour {
    functions: Vec<Function>,
    failures: usize,
    step: usize,
    out: std::io::Stdout,
}

impl Tour {
    async fn function(
        &mut self,
        name: &str,
        environment: &[(String, String)],
    ) -> Result<usize, String> {
        if let Some(i) = self.functions.iter().position(|f| f.name == name) {
            return Ok(i);
        }
        let function = Function::start(name, environment)
            .await
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.functions.push(function);
        Ok(self.functions.len() - 1)
    }

    fn say(&mut self, text: &str) {
        // The tour's output is its purpose; a closed stdout leaves nothing to do.
        let _ = writeln!(self.out, "{text}");
    }

    async fn step(
        &mut self,
        name: &str,
        environment: &[(String, String)],
        what: &str,
        input: &Value,
        expect: Expect,
    ) -> Result<Value, String> {
        self.step += 1;
        let i = self.function(name, environment).await?;
        self.say(&format!("\n━━ {}. {name}: {what}", self.step));
        self.say(&indent("input ", input, usize::MAX));
        let answer = self.functions[i].invoke(input).await;
        let (shown, ok, value) = match (&answer, &expect) {
            (Ok(output), Expect::Ok) => (indent("output", output, 24), true, output.clone()),
            (Ok(output), Expect::Fires(n)) => (
                indent("output", output, 24),
                output["value"].as_array().map(Vec::len) == Some(*n),
                output.clone(),
            ),
            (
                Err(Failure::Error {
                    error_type,
                    message,
                }),
                Expect::Error(wanted),
            ) => (
                format!("  error  {error_type}: {message}"),
                error_type == wanted,
                Value::Null,
            ),
            (Ok(output), Expect::Error(wanted)) => (
                format!("{}\n  ✗ expected {wanted}", indent("output", output, 24)),
                false,
                Value::Null,
            ),
            (Err(failure), _) => (format!("  error  {failure}"), false, Value::Null),
        };
        self.say(&shown);
        if !ok {
            self.failures += 1;
            self.say("  ✗ not the expected answer");
        }
        Ok(value)
    }
}

/// Pretty JSON under a label, cut after `max_lines` lines.
fn indent(label: &str, value: &Value, max_lines: usize) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::new();
    for (n, line) in lines.iter().take(max_lines).enumerate() {
        let prefix = if n == 0 { label } else { "" };
        let _ = writeln!(out, "  {prefix:<6} {line}");
    }
    if lines.len() > max_lines {
        let _ = writeln!(out, "         … {} more lines", lines.len() - max_lines);
    }
    out.trim_end().to_owned()
}

fn sample(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

async fn actions(tour: &mut Tour, environment: &[(String, String)]) -> Result<(), String> {
    tour.step(
        "list-records",
        environment,
        "the biggest US accounts (functions/list-records/events/list.json)",
        &sample(include_str!(
            "../../../../functions/list-records/events/list.json"
        )),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "get-record",
        environment,
        "one account, with its primary contact expanded",
        &sample(include_str!(
            "../../../../functions/get-record/events/get.json"
        )),
        Expect::Ok,
    )
    .await?;
    let created = tour
        .step(
            "create-record",
            environment,
            "a contact bound to that account",
            &sample(include_str!(
                "../../../../functions/create-record/events/create.json"
            )),
            Expect::Ok,
        )
        .await?;
    let once = sample(include_str!(
        "../../../../functions/create-record/events/create-once.json"
    ));
    let first = tour
        .step(
            "create-record",
            environment,
            "an account, once: an idempotency_key, kept in the column `description` too",
            &once,
            Expect::Ok,
        )
        .await?;
    let again = tour
        .step(
            "create-record",
            environment,
            "the same request again (an at-least-once retry): the first answer, nothing sent to Dataverse",
            &once,
            Expect::Ok,
        )
        .await?;
    if first["accountid"].is_null() || first["accountid"] != again["accountid"] {
        tour.failures += 1;
        tour.say("  ✗ the repeat should answer with the first run's row");
    }
    let id = created["contactid"].as_str().unwrap_or_default().to_owned();
    let etag = created["@odata.etag"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tour.step(
        "update-record",
        environment,
        "her job title, guarded by the etag create-record returned",
        &json!({"dataset": "contoso", "table": "contacts", "id": id, "etag": etag,
                "item": {"jobtitle": "Computer Scientist"}, "$select": "fullname,jobtitle"}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "update-record",
        environment,
        "again with the same, now stale, etag",
        &json!({"dataset": "contoso", "table": "contacts", "id": id, "etag": etag, "item": {"jobtitle": "Admiral"}}),
        Expect::Error("Crm.PreconditionFailed"),
    )
    .await?;
    tour.step(
        "list-records",
        environment,
        "contacts named Hopper, with their account",
        &json!({"dataset": "contoso", "table": "contact", "$filter": "lastname eq 'Hopper'",
                "$select": "fullname,jobtitle", "$expand": "parentcustomerid_account($select=name)"}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "list-records",
        environment,
        "the same contacts with formatted_values: labels, and the company's name and table",
        &json!({"dataset": "contoso", "table": "contact", "$filter": "lastname eq 'Hopper'",
                "$select": "fullname,statecode,_parentcustomerid_value", "formatted_values": true}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "delete-record",
        environment,
        "the contact",
        &json!({"dataset": "contoso", "table": "contacts", "id": id}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "get-record",
        environment,
        "the deleted contact",
        &json!({"dataset": "contoso", "table": "contacts", "id": id}),
        Expect::Error("Crm.NotFound"),
    )
    .await?;
    tour.step(
        "update-record",
        environment,
        "a row that does not exist (an update never creates one)",
        &json!({"dataset": "contoso", "table": "accounts", "id": "0b8c6f4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f", "item": {"name": "Ghost"}}),
        Expect::Error("Crm.NotFound"),
    )
    .await?;
    tour.step(
        "write-records",
        environment,
        "two accounts in one CreateMultiple request (functions/write-records/events/create.json)",
        &sample(include_str!(
            "../../../../functions/write-records/events/create.json"
        )),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "write-records",
        environment,
        "two more, one of them refused: the other is still written, each with its own outcome",
        &json!({"dataset": "contoso", "table": "accounts", "mode": "create",
                "rows": [{"name": "Proseware"}, {"name": "Bad", "revenue": "lots"}]}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "get-record",
        environment,
        "an id that is not a GUID",
        &json!({"dataset": "contoso", "table": "accounts", "id": "../../WhoAmI"}),
        Expect::Error("Crm.InvalidInput"),
    )
    .await?;
    Ok(())
}

async fn triggers(
    tour: &mut Tour,
    emulator: &Emulator,
    environment: &[(String, String)],
    events: &Path,
) -> Result<(), String> {
    tour.say("\nTriggers: each poll fires what changed since its cursor, and publishes one event per change.");
    let contacts = json!({"dataset": "contoso", "table": "contacts", "$select": "fullname,jobtitle", "trigger": "tour"});
    let deletions = json!({"dataset": "contoso", "table": "contacts", "trigger": "tour"});
    let watched = json!({"dataset": "contoso", "table": "contacts", "$select": "fullname,jobtitle",
                         "columns": ["jobtitle"], "trigger": "tour"});
    for (name, payload) in [
        ("when-record-created", &contacts),
        ("when-record-updated", &watched),
        ("when-record-deleted", &deletions),
    ] {
        tour.step(
            name,
            environment,
            "the first poll starts the cursor from now",
            payload,
            Expect::Fires(0),
        )
        .await?;
    }
    let mut ids = Vec::new();
    for (first, last) in [("Katherine", "Johnson"), ("Margaret", "Hamilton")] {
        let row = tour
            .step(
                "create-record",
                environment,
                "a new contact",
                &json!({"dataset": "contoso", "table": "contacts", "item": {"firstname": first, "lastname": last}, "$select": "fullname"}),
                Expect::Ok,
            )
            .await?;
        ids.push(row["contactid"].as_str().unwrap_or_default().to_owned());
    }
    // A creation fires once its createdon second is over, on Dataverse's clock: the emulator's
    // moves on at once instead of the tour waiting for this machine's.
    settle(emulator)
        .await
        .map_err(|e| format!("cannot move the emulator's clock: {e}"))?;
    tour.step(
        "when-record-created",
        environment,
        "fires the two new contacts",
        &contacts,
        Expect::Fires(2),
    )
    .await?;
    tour.step(
        "when-record-created",
        environment,
        "and never twice",
        &contacts,
        Expect::Fires(0),
    )
    .await?;
    let seeded = "ef0d20a1-c3f1-4a09-9067-9ee60d8ae7c3";
    tour.step(
        "update-record",
        environment,
        "a demo contact's job title",
        &json!({"dataset": "contoso", "table": "contacts", "id": seeded, "item": {"jobtitle": "Flight Director"}, "$select": "fullname,jobtitle"}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "when-record-updated",
        environment,
        "fires the change to a watched column",
        &watched,
        Expect::Fires(1),
    )
    .await?;
    tour.step(
        "update-record",
        environment,
        "the same contact's phone, a column the trigger does not watch",
        &json!({"dataset": "contoso", "table": "contacts", "id": seeded, "item": {"telephone1": "+1-555-0142"}}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "when-record-updated",
        environment,
        "stays quiet",
        &watched,
        Expect::Fires(0),
    )
    .await?;
    tour.step(
        "delete-record",
        environment,
        "one of the new contacts",
        &json!({"dataset": "contoso", "table": "contacts", "id": ids[0]}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "when-record-deleted",
        environment,
        "fires the deletion",
        &deletions,
        Expect::Fires(1),
    )
    .await?;
    let events = std::fs::read_to_string(events).unwrap_or_default();
    tour.say(
        "\nThe events the triggers published (CRM_EVENTS=file:...; EventBridge when deployed):",
    );
    for line in events.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let detail = &event["detail"];
        tour.say(&format!(
            "  {:<15} id {}  version {:<8}  event_id {}",
            event["detail-type"].as_str().unwrap_or_default(),
            detail["id"].as_str().unwrap_or_default(),
            detail["version"].as_str().unwrap_or("-"),
            detail["event_id"].as_str().unwrap_or_default(),
        ));
    }
    if events.lines().count() != 4 {
        tour.failures += 1;
        tour.say("  ✗ expected four events");
    }
    Ok(())
}

/// The key the tour's webhook deliveries present.
const WEBHOOK_KEY: &str = "tour-webhook-key-5f0a8c3e91d2";

/// Push mode: a webhook registered with the `webhooks` command, the emulator delivering each change
/// to `dataverse-webhook` behind a local Function URL, and the events it publishes.
async fn push(tour: &mut Tour, emulator: &Emulator, files: &LocalFiles) -> Result<(), String> {
    files
        .set_webhook_key(emulator, WEBHOOK_KEY)
        .map_err(|e| format!("cannot write the webhook key: {e}"))?;
    let mut environment = files.env();
    environment.push(("RUST_LOG".into(), "warn".into()));
    let function = Function::start("dataverse-webhook", &environment)
        .await
        .map_err(|e| format!("cannot start dataverse-webhook: {e}"))?;
    let receiver = FunctionUrl::start(function)
        .await
        .map_err(|e| format!("cannot serve dataverse-webhook at a URL: {e}"))?;
    tour.step += 1;
    tour.say(&format!(
        "\n━━ {}. webhooks register: push contact changes to dataverse-webhook at {}",
        tour.step,
        receiver.url()
    ));
    let registered = webhooks_command(
        &environment,
        &[
            "register",
            "--dataset",
            "contoso",
            "--table",
            "contact",
            "--url",
            receiver.url(),
        ],
    )
    .await
    .map_err(|e| format!("webhooks register failed: {e}"))?;
    tour.say(&indent("output", &registered, 12));
    let before = files.published().len();

    tour.step += 1;
    tour.say(&format!(
        "\n━━ {}. the Web API: create, update and delete a contact; the emulator pushes each change",
        tour.step
    ));
    let (status, row) = emulator
        .api(
            reqwest::Method::POST,
            "contacts",
            Some(&json!({"firstname": "Pushed", "lastname": "Contact"})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let id = row["contactid"].as_str().unwrap_or_default().to_owned();
    let path = format!("contacts({id})");
    let (updated, _) = emulator
        .api(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({"jobtitle": "Tester"})),
        )
        .await
        .map_err(|e| e.to_string())?;
    let (deleted, _) = emulator
        .api(reqwest::Method::DELETE, &path, None)
        .await
        .map_err(|e| e.to_string())?;
    tour.say(&format!(
        "  POST contacts → {status}, PATCH {path} → {updated}, DELETE {path} → {deleted}"
    ));
    let log = emulator
        .client()
        .webhook_deliveries(true)
        .await
        .map_err(|e| format!("cannot read the delivery log: {e}"))?;
    for delivery in &log.deliveries {
        let last = delivery.attempts.last();
        tour.say(&format!(
            "  delivery {:?} of {} → {}",
            delivery.message,
            delivery.row,
            last.and_then(|a| a.status)
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
        ));
    }
    tour.say(
        "\nThe events dataverse-webhook published (the same shape and event ids as the triggers'):",
    );
    let mut pushed = 0;
    for event in files.published().iter().skip(before) {
        let detail = &event["detail"];
        if detail["via"] == "webhook" {
            pushed += 1;
        }
        tour.say(&format!(
            "  {:<15} id {}  via {}  event_id {}",
            event["detail-type"].as_str().unwrap_or_default(),
            detail["id"].as_str().unwrap_or_default(),
            detail["via"].as_str().unwrap_or("-"),
            detail["event_id"].as_str().unwrap_or_default(),
        ));
    }
    if status != 201 || updated != 200 || deleted != 204 || pushed != 3 || log.timed_out {
        tour.failures += 1;
        tour.say("  ✗ expected three changes, each pushed and published once");
    }
    Ok(())
}

/// Alternate keys: rows named by their account number instead of their id, and upserts.
async fn keys(
    tour: &mut Tour,
    emulator: &Emulator,
    environment: &[(String, String)],
) -> Result<(), String> {
    // In Dataverse a key is a customization of the table; the emulator defines it on request.
    emulator
        .client()
        .add_key("account", "aws_accountnumber", &["accountnumber"])
        .await
        .map_err(|e| format!("cannot define the alternate key: {e}"))?;
    tour.say("\n(the emulator now has an alternate key on account.accountnumber)");
    tour.step(
        "upsert-record",
        environment,
        "an account by its account number: it exists, so it is updated",
        &sample(include_str!(
            "../../../../functions/upsert-record/events/upsert.json"
        )),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "upsert-record",
        environment,
        "an account number nobody has yet: the row is created, key included",
        &json!({"dataset": "contoso", "table": "accounts", "key": {"accountnumber": "ACC-09001"},
                "item": {"name": "Northwind Traders"}, "$select": "name,accountnumber"}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "get-record",
        environment,
        "that account, by its key",
        &json!({"dataset": "contoso", "table": "accounts", "key": {"accountnumber": "ACC-09001"},
                "$select": "name,accountnumber"}),
        Expect::Ok,
    )
    .await?;
    tour.step(
        "execute-changeset",
        environment,
        "an account, a contact bound to it by $1, and an update of $1, all or nothing",
        &sample(include_str!(
            "../../../../functions/execute-changeset/events/changeset.json"
        )),
        Expect::Ok,
    )
    .await?;
    Ok(())
}

async fn run(tour: &mut Tour) -> Result<(), String> {
    let emulator = Emulator::start(&["--seed", "demo"])
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let files = LocalFiles::new("tour", &emulator)
        .map_err(|e| format!("cannot write the tour's files: {e}"))?;
    tour.say(&format!(
        "Dataverse emulator at {} (demo data); credentials for dataset 'contoso' in {}",
        emulator.url,
        files.credentials().display()
    ));
    let mut environment = files.env();
    environment.push(("RUST_LOG".into(), "warn".into()));
    // The writers' idempotency records, beside the cursors (DynamoDB when deployed).
    environment.push((
        "CRM_IDEMPOTENCY".into(),
        format!(
            "file:{}",
            files.events().with_file_name("idempotency").display()
        ),
    ));
    actions(tour, &environment).await?;
    keys(tour, &emulator, &environment).await?;
    triggers(tour, &emulator, &environment, &files.events()).await?;
    push(tour, &emulator, &files).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut tour = Tour {
        functions: Vec::new(),
        failures: 0,
        step: 0,
        out: std::io::stdout(),
    };
    tour.say("A tour of the Dynamics CRM connector: each function runs as its Lambda binary.");
    if let Err(e) = run(&mut tour).await {
        eprintln!("crm-tour: {e}");
        return ExitCode::FAILURE;
    }
    if tour.failures > 0 {
        eprintln!(
            "\ncrm-tour: {} step(s) did not answer as expected",
            tour.failures
        );
        return ExitCode::FAILURE;
    }
    tour.say(&format!("\nAll {} steps answered as expected.", tour.step));
    ExitCode::SUCCESS
}
