//! Webhook registrations for the suites that count deliveries (`callers`, `bypass`, `bulk`): a
//! Webhook-key service endpoint and asynchronous post-operation steps, written through the Web API.

use serde_json::{Value, json};

use super::Emulator;

async fn first(emulator: &Emulator, path: &str) -> Value {
    emulator.get_json(path).await["value"][0].clone()
}

async fn message_id(emulator: &Emulator, message: &str) -> String {
    let row = first(
        emulator,
        &format!("sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"),
    )
    .await;
    row["sdkmessageid"].as_str().expect(message).to_owned()
}

async fn filter_id(emulator: &Emulator, table: &str, message: &str) -> String {
    let message = message_id(emulator, message).await;
    let row = first(
        emulator,
        &format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq '{table}' and _sdkmessageid_value eq {message}"
        ),
    )
    .await;
    row["sdkmessagefilterid"].as_str().expect(table).to_owned()
}

/// A Webhook endpoint (key auth) at `url`; returns its id.
pub async fn endpoint(emulator: &Emulator, url: &str) -> String {
    let row = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": url, "authtype": 4,
                "authvalue": "key", "messageformat": 2}),
        )
        .await;
    row["serviceendpointid"].as_str().expect("id").to_owned()
}

/// An enabled asynchronous post-operation step for `message` on `table` (a logical name) that
/// delivers to `endpoint`; returns its id.
pub async fn step(emulator: &Emulator, message: &str, table: &str, endpoint: &str) -> String {
    let body = json!({
        "name": format!("{table} {message} webhook"),
        "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0, "asyncautodelete": false,
        "sdkmessageid@odata.bind": format!("/sdkmessages({})", message_id(emulator, message).await),
        "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({})", filter_id(emulator, table, message).await),
        "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
    });
    let row = emulator.create("sdkmessageprocessingsteps", body).await;
    row["sdkmessageprocessingstepid"]
        .as_str()
        .expect("id")
        .to_owned()
}
