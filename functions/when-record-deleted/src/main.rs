//! `when-record-deleted`: fires one event per row deleted since the last poll, and returns them.
//!
//! Wiring only: the trigger engine lives in `connector::trigger`; its cursor store, event sink and
//! Dataverse clients come from the `CRM_*` variables.

use connector::lambda;
use connector::trigger::{self, Kind, TriggerDeps};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let deps = TriggerDeps::from_env().await;
    lambda::serve(&deps, async |deps, event| {
        trigger::poll(Kind::Deleted, deps, event).await
    })
    .await
}
