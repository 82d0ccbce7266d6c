//! Webhook registrations written straight into the emulator's registration tables, for suites that
//! need what `webhooks register` does not make: an endpoint address with options in its own query
//! (the tool writes them as query-string settings), or an Update step whose pre-image holds other
//! columns than the step watches.

use reqwest::Method;
use serde_json::{Value, json};

use crate::Emulator;

/// One step to register on the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec<'a> {
    /// `Create`, `Update` or `Delete`.
    pub message: &'a str,
    /// `filteringattributes`, for an Update.
    pub columns: Option<&'a str>,
    /// A pre-image with these attributes (`Some("")` for all columns).
    pub pre_image: Option<&'a str>,
    /// A post-image with these attributes (`Some("")` for all columns).
    pub post_image: Option<&'a str>,
}

async fn write(emulator: &Emulator, set: &str, body: &Value) -> Result<Value, String> {
    let (status, row) = emulator
        .api(Method::POST, set, Some(body))
        .await
        .map_err(|e| e.to_string())?;
    if status == 201 {
        Ok(row)
    } else {
        Err(format!("{set}: {status} {row}"))
    }
}

async fn first_id(emulator: &Emulator, path: &str, column: &str) -> Result<String, String> {
    let (status, page) = emulator.api_get(path).await.map_err(|e| e.to_string())?;
    page["value"][0][column]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{path}: {status} {page}"))
}

/// Registers a Webhook endpoint at `url` (any query kept: Dataverse appends `code=<key>` to it)
/// with the `WebhookKey` auth type and `key`, and `steps` on `table` (a logical name).
pub async fn register(
    emulator: &Emulator,
    url: &str,
    key: &str,
    table: &str,
    steps: &[StepSpec<'_>],
) -> Result<(), String> {
    let endpoint = write(
        emulator,
        "serviceendpoints",
        &json!({"name": format!("test: {url}"), "contract": 8, "url": url, "authtype": 4,
            "authvalue": key, "messageformat": 2}),
    )
    .await?;
    let endpoint = endpoint["serviceendpointid"]
        .as_str()
        .ok_or("no endpoint id")?
        .to_owned();
    for (i, step) in steps.iter().enumerate() {
        let message = first_id(
            emulator,
            &format!(
                "sdkmessages?$select=sdkmessageid&$filter=name%20eq%20%27{}%27",
                step.message
            ),
            "sdkmessageid",
        )
        .await?;
        let filter = first_id(
            emulator,
            &format!(
                "sdkmessagefilters?$select=sdkmessagefilterid&$filter=_sdkmessageid_value%20eq%20{message}%20and%20primaryobjecttypecode%20eq%20%27{table}%27"
            ),
            "sdkmessagefilterid",
        )
        .await?;
        let mut body = json!({
            "name": format!("test step {i}: {}", step.message), "stage": 40, "mode": 1, "rank": 1,
            "supporteddeployment": 0, "asyncautodelete": true,
            "sdkmessageid@odata.bind": format!("/sdkmessages({message})"),
            "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter})"),
            "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
        });
        if let Some(columns) = step.columns {
            body["filteringattributes"] = json!(columns);
        }
        let created = write(emulator, "sdkmessageprocessingsteps", &body).await?;
        let step_id = created["sdkmessageprocessingstepid"]
            .as_str()
            .ok_or("no step id")?
            .to_owned();
        let property = if step.message == "Create" {
            "Id"
        } else {
            "Target"
        };
        for (kind, alias, attributes) in [
            (0, "PreImage", step.pre_image),
            (1, "PostImage", step.post_image),
        ] {
            let Some(attributes) = attributes else {
                continue;
            };
            let mut image = json!({
                "name": alias, "entityalias": alias, "imagetype": kind,
                "messagepropertyname": property,
                "sdkmessageprocessingstepid@odata.bind": format!("/sdkmessageprocessingsteps({step_id})"),
            });
            if !attributes.is_empty() {
                image["attributes"] = json!(attributes);
            }
            write(emulator, "sdkmessageprocessingstepimages", &image).await?;
        }
    }
    Ok(())
}
