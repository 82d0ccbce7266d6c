//! Starts the real `dataverse-emulator` binary on a free port and talks to it over HTTP.

// Test support: a failed expectation is a failed test, so panicking is the point.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod receiver;
pub mod steps;

use dataverse_emulator::client::{DeliveryLog, EmulatorClient, Fault, NewTable};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

pub struct Emulator {
    client: EmulatorClient,
    pub url: String,
    pub http: reqwest::Client,
    client_id: String,
    client_secret: String,
    token: String,
}

impl Emulator {
    pub async fn start(args: &[&str]) -> Self {
        let client = EmulatorClient::start(env!("CARGO_BIN_EXE_dataverse-emulator"), args)
            .await
            .expect("start the emulator");
        let flag = |name: &str, default: &str| {
            args.iter()
                .position(|a| *a == name)
                .and_then(|i| args.get(i + 1))
                .map_or_else(|| default.to_owned(), |v| (*v).to_owned())
        };
        let mut emulator = Self {
            url: client.url().to_owned(),
            http: client.http().clone(),
            client,
            client_id: flag("--client-id", "local-client"),
            client_secret: flag("--client-secret", "local-secret"),
            token: String::new(),
        };
        emulator.token = emulator.fresh_token().await;
        emulator
    }

    pub async fn empty() -> Self {
        Self::start(&["--seed", "none"]).await
    }

    pub async fn demo() -> Self {
        Self::start(&["--seed", "demo"]).await
    }

    /// An empty organisation with five accounts that the query suites (`OData` and `FetchXML`) share:
    /// mixed case, a quote, a `%`, and rows without a revenue or a city.
    pub async fn accounts() -> Self {
        let emulator = Self::empty().await;
        let rows = [
            json!({"name": "Contoso Ltd", "numberofemployees": 250, "revenue": 1_000_000.5, "creditonhold": false, "address1_city": "Redmond"}),
            json!({"name": "contoso east", "numberofemployees": 40, "revenue": 20_000, "creditonhold": true, "address1_city": "Seattle"}),
            json!({"name": "O'Bryan & Sons", "numberofemployees": 12, "creditonhold": false, "address1_city": "Redmond"}),
            json!({"name": "Fabrikam", "numberofemployees": 250, "revenue": 5, "creditonhold": false}),
            json!({"name": "100% Cotton", "numberofemployees": 3, "creditonhold": true, "address1_city": "Berlin"}),
        ];
        for row in rows {
            emulator.create("accounts", row).await;
        }
        emulator
    }

    pub async fn token_response(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}/my-tenant/oauth2/v2.0/token", self.url))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    pub async fn fresh_token(&self) -> String {
        self.client
            .access_token(&self.client_id, &self.client_secret)
            .await
            .expect("a token")
    }

    /// The typed control client, for the calls this wrapper does not cover.
    pub fn client(&self) -> &EmulatorClient {
        &self.client
    }

    /// The client id the token was issued to.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn api(&self, path: &str) -> String {
        self.client.web_api(path)
    }

    /// A Web API request with a valid bearer token and the headers Dataverse asks clients to send.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.api(path))
            .bearer_auth(&self.token)
            .header("Accept", "application/json")
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0")
    }

    pub async fn get(&self, path: impl AsRef<str>) -> Response {
        self.request(Method::GET, path.as_ref())
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json")
    }

    pub async fn create(&self, set: &str, body: Value) -> Value {
        let response = self
            .request(Method::POST, set)
            .header("Prefer", "return=representation")
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201, "POST {set}");
        response.json().await.expect("json")
    }

    /// A raw control request, for tests of the control API's own answers.
    pub async fn control(&self, method: Method, path: &str, body: Value) -> Response {
        self.client
            .control_request(method, path)
            .json(&body)
            .send()
            .await
            .expect("control request")
    }

    pub async fn fault(&self, fault: Fault) {
        self.client.add_fault(&fault).await.expect("add a fault");
    }

    /// The request log as the emulator writes it.
    pub async fn requests(&self) -> Vec<Value> {
        self.client.requests_json().await.expect("request log")
    }

    /// Empties the request log, so [`Emulator::requests`] shows only what follows.
    pub async fn clear_requests(&self) {
        self.client
            .clear_requests()
            .await
            .expect("clear the request log");
    }

    pub async fn add_table(&self, table: &NewTable) {
        self.client.add_table(table).await.expect("add a table");
    }

    /// Defines an alternate key through the typed control client.
    pub async fn add_key(&self, table: &str, name: &str, columns: &[&str]) {
        self.client
            .add_key(table, name, columns)
            .await
            .expect("add a key");
    }

    /// The webhook delivery log, once no delivery is pending: how tests wait for deliveries.
    pub async fn settled_deliveries(&self) -> DeliveryLog {
        let log = self
            .client
            .webhook_deliveries(true)
            .await
            .expect("delivery log");
        assert!(!log.timed_out && log.pending == 0, "{log:#?}");
        log
    }

    /// The delivery log as it is now, pending deliveries included.
    pub async fn deliveries_now(&self) -> DeliveryLog {
        self.client
            .webhook_deliveries(false)
            .await
            .expect("delivery log")
    }

    pub async fn clear_deliveries(&self) {
        self.client
            .clear_webhook_deliveries()
            .await
            .expect("clear the delivery log");
    }

    /// Inserts a row through the control API (a late commit).
    pub async fn insert_row(&self, table: &str, row: &Value) {
        self.client
            .insert_row(table, row)
            .await
            .expect("insert a row");
    }
}

/// Asserts a failed response: the status, and the `{"error": {"code", "message"}}` envelope.
pub async fn expect_error(
    response: Response,
    status: u16,
    code: &str,
    message_part: &str,
) -> Value {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert_eq!(error["code"], code, "code in {body}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains(message_part),
        "{message:?} should contain {message_part:?}"
    );
    body
}
