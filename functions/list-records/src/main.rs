//! `list-records`: lists rows of a table, with `$filter`, `$orderby`, `$top` and `$skip`, into the
//! response or, with `output`, into an S3 object.
//!
//! Wiring only: logging, configuration, the Dataverse and S3 clients, and the handler in
//! `handler.rs`.

mod handler;

use connector::output::S3;
use connector::{Crm, lambda};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let crm = Crm::from_env().await;
    // Endpoint, region and credentials as every SDK client reads them (`AWS_ENDPOINT_URL_S3`),
    // loaded by the first invocation with `output`.
    let s3 = S3::from_env();
    let deps = crm.map(|crm| handler::Deps { crm, s3 });
    lambda::serve(&deps, handler::handle).await
}
