//! `execute-changeset`: up to 1,000 creates, updates, upserts and deletes that all succeed or all fail.
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
