//! `webhooks register` with `--previous`, `--ignore-own-changes` and `--formatted-values`: the rows it
//! writes into the emulator's registration tables, what the emulator then delivers to
//! `dataverse-webhook` (its binary, through the Lambda Runtime API, behind a local Function URL),
//! and the events that come of it. Registering again with the same flags changes nothing, with
//! other flags makes the registration what they say, and `remove` leaves nothing behind.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e_tests::function_url::FunctionUrl;
use e2e_tests::{Emulator, Function, LocalFiles, settle, webhooks_command};
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "webhook-register-test-key";
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

struct Rig {
    emulator: Emulator,
    files: LocalFiles,
    receiver: FunctionUrl,
}

impl Rig {
    async fn new(label: &str) -> Self {
        let emulator = Emulator::start(&["--seed", "none"]).await.unwrap();
        let files = LocalFiles::new(label, &emulator).unwrap();
        files.set_webhook_key(&emulator, KEY).unwrap();
        let receiver = FunctionUrl::start(
            Function::start("dataverse-webhook", &files.env())
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        Self {
            emulator,
            files,
            receiver,
        }
    }

    /// `webhooks register` for accounts at the receiver, with `flags`; it must succeed.
    async fn register(&self, flags: &[&str]) -> Value {
        let mut args = vec![
            "register",
            "--dataset",
            "contoso",
            "--table",
            "account",
            "--url",
            self.receiver.url(),
        ];
        args.extend_from_slice(flags);
        match webhooks_command(&self.files.env(), &args).await {
            Ok(answer) => answer,
            Err(e) => panic!("register {flags:?} failed: {e}"),
        }
    }

    /// An account made, and its second over, before any step is registered.
    async fn account(&self, body: &Value) -> String {
        let (status, row) = self
            .emulator
            .api(Method::POST, "accounts", Some(body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{row}");
        settle(&self.emulator).await.unwrap();
        row["accountid"].as_str().unwrap().to_owned()
    }

    /// An update by the connector's own application user, the one the credentials sign in as.
    async fn update_as_connector(&self, id: &str, body: &Value) {
        let (status, answer) = self
            .emulator
            .api(Method::PATCH, &format!("accounts({id})"), Some(body))
            .await
            .unwrap();
        assert!(matches!(status, 200 | 204), "{status} {answer}");
    }

    /// An update by the emulator's interactive user: somebody other than the connector.
    async fn update_as_someone_else(&self, id: &str, body: &Value) {
        let response = self
            .emulator
            .client()
            .interactive(Method::PATCH, &format!("accounts({id})"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(matches!(status, 200 | 204), "{status}");
    }

    /// Waits for the deliveries in flight, checks there were `count`, each answered 200, and forgets
    /// them; returns the query parameter names the auth added to each.
    async fn delivered(&self, count: usize) -> Vec<Vec<String>> {
        let client = self.emulator.client();
        let log = client.webhook_deliveries(true).await.unwrap();
        assert!(!log.timed_out && log.pending == 0, "{log:?}");
        assert_eq!(log.deliveries.len(), count, "{log:?}");
        assert!(
            log.deliveries
                .iter()
                .all(|d| d.attempts.last().and_then(|a| a.status) == Some(200)),
            "{log:?}"
        );
        client.clear_webhook_deliveries().await.unwrap();
        log.deliveries.into_iter().map(|d| d.auth_names).collect()
    }

    fn events(&self) -> Vec<Value> {
        self.files.published()
    }

    /// Every row of an entity set, as the Web API lists it.
    async fn rows_of(&self, set: &str) -> Vec<Value> {
        let (status, page) = self.emulator.api_get(set).await.unwrap();
        assert_eq!(status, 200, "{set}: {page}");
        page["value"].as_array().unwrap().clone()
    }

    /// How many endpoints, steps and images are registered.
    async fn registered(&self) -> [usize; 3] {
        [
            self.rows_of("serviceendpoints").await.len(),
            self.rows_of("sdkmessageprocessingsteps").await.len(),
            self.rows_of("sdkmessageprocessingstepimages").await.len(),
        ]
    }

    /// The registered images as `(imagetype, attributes)`, sorted.
    async fn images(&self) -> Vec<(i64, String)> {
        let mut images: Vec<(i64, String)> = self
            .rows_of("sdkmessageprocessingstepimages")
            .await
            .iter()
            .map(|i| {
                (
                    i["imagetype"].as_i64().unwrap(),
                    i["attributes"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        images.sort();
        images
    }
}

fn outcome_counts(answer: &Value) -> [usize; 3] {
    ["created", "updated", "deleted"].map(|k| answer["outcome"][k].as_array().unwrap().len())
}

/// Whether a record carries any annotation (formatted value, lookup table).
fn annotated(record: &Value) -> bool {
    record
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.contains('@') && k != "@odata.etag")
}

#[tokio::test]
async fn a_registration_with_every_flag_pushes_changes_labels_and_skips_own_changes() {
    let rig = Rig::new("register-flags").await;
    let id = rig
        .account(&json!({"name": "Contoso", "telephone1": "1"}))
        .await;
    let flags = [
        "--columns",
        "name,telephone1",
        "--previous",
        "--ignore-own-changes",
        "--formatted-values",
    ];
    let first = rig.register(&flags).await;
    assert_eq!(
        outcome_counts(&first),
        [8, 0, 0],
        "an endpoint, three steps, four images: {first}"
    );
    assert_eq!(rig.registered().await, [1, 3, 4]);
    assert_eq!(
        rig.images().await,
        [
            (0, String::new()),
            (0, "name,telephone1".to_owned()),
            (1, String::new()),
            (1, String::new()),
        ],
        "the Delete step's pre-image of every column, the Update step's of its watched columns, two post-images"
    );
    let endpoint = &rig.rows_of("serviceendpoints").await[0];
    assert_eq!(endpoint["authtype"], 6, "HttpQueryString: {endpoint}");

    // Someone else's update: published, with what changed, what it was, and the labels.
    rig.update_as_someone_else(&id, &json!({"telephone1": "2"}))
        .await;
    let names = rig.delivered(1).await;
    assert_eq!(
        names[0],
        ["code", "ignore_own_changes", "formatted_values"],
        "the options travel beside the key"
    );
    let events = rig.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let detail = &events[0]["detail"];
    assert_eq!(detail["via"], "webhook");
    assert_eq!(detail["changed"], json!(["telephone1"]), "{detail}");
    assert_eq!(detail["previous"], json!({"telephone1": "1"}), "{detail}");
    assert_eq!(
        detail["record"][format!("statecode{FORMATTED}")],
        "Active",
        "{detail}"
    );

    // The connector's own update: delivered, answered, and passed over.
    rig.update_as_connector(&id, &json!({"name": "Contoso by the connector"}))
        .await;
    rig.delivered(1).await;
    assert_eq!(rig.events().len(), 1, "{:#?}", rig.events());
    let logs = rig.receiver.function().await.logs();
    assert!(logs.contains("passed over"), "{logs}");

    // The same flags again: nothing to do.
    let again = rig.register(&flags).await;
    assert_eq!(outcome_counts(&again), [0, 0, 0], "{again}");
    assert_eq!(rig.registered().await, [1, 3, 4]);
    let listed = webhooks_command(&rig.files.env(), &["list", "--dataset", "contoso"])
        .await
        .unwrap();
    let description = listed["endpoints"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("ignore_own_changes=true, formatted_values=true"),
        "{listed}"
    );
    assert!(
        !listed.to_string().contains(KEY),
        "the key is never printed"
    );

    let removed = webhooks_command(
        &rig.files.env(),
        &[
            "remove",
            "--dataset",
            "contoso",
            "--url",
            rig.receiver.url(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcome_counts(&removed), [0, 0, 8], "{removed}");
    assert_eq!(rig.registered().await, [0, 0, 0], "nothing orphaned");
}

#[tokio::test]
async fn registering_with_other_flags_updates_the_registration_in_place() {
    let rig = Rig::new("register-changes").await;
    let id = rig
        .account(&json!({"name": "Fabrikam", "telephone1": "1"}))
        .await;
    let plain = rig.register(&["--columns", "name"]).await;
    assert_eq!(outcome_counts(&plain), [7, 0, 0], "{plain}");
    let endpoint_id = rig.rows_of("serviceendpoints").await[0]["serviceendpointid"].clone();

    // Turned on for the same endpoint: its auth value rewritten, the Update step given a pre-image.
    let richer = rig
        .register(&["--columns", "name", "--previous", "--formatted-values"])
        .await;
    assert_eq!(outcome_counts(&richer), [1, 1, 0], "{richer}");
    assert_eq!(richer["outcome"]["updated"][0]["table"], "serviceendpoint");
    assert_eq!(
        richer["outcome"]["created"][0]["table"],
        "sdkmessageprocessingstepimage"
    );
    let endpoints = rig.rows_of("serviceendpoints").await;
    assert_eq!(endpoints.len(), 1, "the same endpoint, not a second");
    assert_eq!(endpoints[0]["serviceendpointid"], endpoint_id);
    assert_eq!(endpoints[0]["authtype"], 6);

    // The connector's own update is published: ignore_own_changes was not asked for.
    rig.update_as_connector(&id, &json!({"name": "Fabrikam 2"}))
        .await;
    let names = rig.delivered(1).await;
    assert_eq!(names[0], ["code", "formatted_values"]);
    let detail = rig.events().last().unwrap()["detail"].clone();
    assert_eq!(detail["changed"], json!(["name"]), "{detail}");
    assert_eq!(detail["previous"], json!({"name": "Fabrikam"}), "{detail}");
    assert!(annotated(&detail["record"]), "{detail}");

    // More watched columns: the step and its pre-image follow.
    let wider = rig
        .register(&[
            "--columns",
            "name,telephone1",
            "--previous",
            "--formatted-values",
        ])
        .await;
    assert_eq!(outcome_counts(&wider), [0, 2, 0], "{wider}");
    assert!(
        rig.images()
            .await
            .contains(&(0, "name,telephone1".to_owned())),
        "{:?}",
        rig.images().await
    );
    rig.update_as_connector(&id, &json!({"telephone1": "2"}))
        .await;
    rig.delivered(1).await;
    let detail = rig.events().last().unwrap()["detail"].clone();
    assert_eq!(detail["previous"], json!({"telephone1": "1"}), "{detail}");

    // One more option on the same auth type: Dataverse does not return the auth value, so it is the
    // description that tells the endpoint must be rewritten.
    let own = rig
        .register(&[
            "--columns",
            "name,telephone1",
            "--previous",
            "--formatted-values",
            "--ignore-own-changes",
        ])
        .await;
    assert_eq!(outcome_counts(&own), [0, 1, 0], "{own}");
    assert_eq!(own["outcome"]["updated"][0]["table"], "serviceendpoint");
    let published = rig.events().len();
    rig.update_as_connector(&id, &json!({"telephone1": "3"}))
        .await;
    assert_eq!(
        rig.delivered(1).await[0],
        ["code", "ignore_own_changes", "formatted_values"]
    );
    assert_eq!(rig.events().len(), published, "the connector's own change");

    // Back to the plain registration: the options and the pre-image go, the rest stays.
    let back = rig.register(&["--columns", "name,telephone1"]).await;
    assert_eq!(outcome_counts(&back), [0, 1, 1], "{back}");
    assert_eq!(
        back["outcome"]["deleted"][0]["table"],
        "sdkmessageprocessingstepimage"
    );
    assert_eq!(rig.registered().await, [1, 3, 3]);
    assert_eq!(rig.rows_of("serviceendpoints").await[0]["authtype"], 4);
    rig.update_as_connector(&id, &json!({"name": "Fabrikam 3"}))
        .await;
    assert_eq!(rig.delivered(1).await[0], ["code"]);
    let detail = rig.events().last().unwrap()["detail"].clone();
    assert_eq!(detail["record"]["name"], "Fabrikam 3");
    assert!(detail.get("changed").is_none(), "{detail}");
    assert!(detail.get("previous").is_none(), "{detail}");
    assert!(!annotated(&detail["record"]), "{detail}");

    // Options the chosen auth type cannot carry are refused, and nothing is written.
    let refused = webhooks_command(
        &rig.files.env(),
        &[
            "register",
            "--dataset",
            "contoso",
            "--table",
            "account",
            "--url",
            rig.receiver.url(),
            "--auth",
            "http-header",
            "--ignore-own-changes",
        ],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("http-query-string"), "{refused}");
    assert_eq!(rig.rows_of("serviceendpoints").await[0]["authtype"], 4);

    let removed = webhooks_command(
        &rig.files.env(),
        &[
            "remove",
            "--dataset",
            "contoso",
            "--url",
            rig.receiver.url(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(outcome_counts(&removed), [0, 0, 7], "{removed}");
    assert_eq!(rig.registered().await, [0, 0, 0], "nothing orphaned");
}
