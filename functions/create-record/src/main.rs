//! `create-record`: creates a row and returns it, once per idempotency key.
//!
//! Wiring only: logging, configuration, the Dataverse clients, the idempotency store, and the
//! handler in `handler.rs`.

mod handler;

use connector::idempotency::Writer;
use connector::lambda;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let writer = Writer::from_env(env!("CARGO_BIN_NAME")).await;
    lambda::serve(&writer, handler::handle).await
}
