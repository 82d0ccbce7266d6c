//! `write-records`: writes many rows of one table with `CreateMultiple`, `UpdateMultiple` or
//! `UpsertMultiple`, and reports each row's outcome.
//!
//! Wiring only: logging, configuration, the Dataverse and S3 clients, and the handler in
//! `handler.rs`.

mod handler;
mod rows;
mod source;
mod write;

use connector::output::S3;
use connector::{Crm, lambda};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let crm = Crm::from_env().await;
    // Loaded by the first invocation that reads its rows from S3.
    let s3 = S3::from_env();
    let deps = crm.map(|crm| handler::Deps { crm, s3 });
    lambda::serve(&deps, handler::handle).await
}
