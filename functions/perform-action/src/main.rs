//! `perform-action`: performs a Dataverse function (`GET`) or action (`POST`), bound to a row or not,
//! and returns what Dataverse returns.
//!
//! Wiring only: logging, configuration, the Dataverse clients, and the handler in `handler.rs`.

mod handler;

use connector::{Crm, lambda};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let crm = Crm::from_env().await;
    lambda::serve(&crm, handler::handle).await
}
