//! `describe-table`: a table's columns, primary id and name, and alternate keys, for building payloads.
//!
//! Wiring only: logging, configuration, the Dataverse clients, the warm instance's cache, and the
//! handler in `handler.rs`.

mod handler;

use connector::{Crm, lambda};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let deps = Crm::from_env().await.map(handler::Deps::new);
    lambda::serve(&deps, handler::handle).await
}
