//! `dataverse-webhook`: receives the changes Dataverse pushes to a registered webhook, behind a Lambda
//! Function URL, and publishes each as the matching trigger's event.
//!
//! Wiring only: the receiver lives in `connector::webhook`; its Dataverse clients, keys and event sink
//! come from the `CRM_*` variables.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    connector::webhook::serve().await
}
