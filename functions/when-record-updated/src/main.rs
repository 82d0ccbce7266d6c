//! `when-record-updated`: fires one event per change to a row since the last poll, and returns them.
//!
//! Wiring only: the trigger engine lives in `connector::trigger`; its cursor store, event sink and
//! Dataverse clients come from the `CRM_*` variables.

use connector::trigger::{self, Kind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    trigger::serve(Kind::Updated).await
}
