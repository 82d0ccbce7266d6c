//! The glue between `lambda_runtime` and a handler: logging, the deadline, and start-up errors.

use std::time::{Duration, SystemTime};

use dataverse::Deadline;
use lambda_runtime::{Context, LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::Value;

use crate::{ConfigError, CrmError};

/// Time kept back from the invocation's deadline to return the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(300);

/// JSON logs when `AWS_LAMBDA_LOG_FORMAT=JSON` (SAM's `LoggingConfig`), level from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The invocation's deadline, less a margin to answer in. A context without one (a unit test's
/// `Context::default()`) has no deadline.
pub fn deadline(context: &Context) -> Deadline {
    if context.deadline == 0 {
        return Deadline::none();
    }
    let left = context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Deadline::after(left).less(ANSWER_MARGIN)
}

/// Serves invocations with `handler`. Dependencies that failed to build (bad configuration) fail every
/// invocation with `Crm.Configuration`, which a workflow can catch, instead of crashing the runtime.
pub async fn serve<D, O>(
    deps: &Result<D, ConfigError>,
    handler: impl AsyncFn(&D, LambdaEvent<Value>) -> Result<O, CrmError>,
) -> Result<(), lambda_runtime::Error>
where
    O: Serialize,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deps = deps.as_ref().map_err(|e| CrmError::from(e.clone()))?;
        // Boxed: a trigger's future nests the SDK clients' futures deeply enough to exceed the
        // compiler's layout depth, and is large; on the heap it is neither.
        let result = Box::pin(handler(deps, event)).await;
        if let Err(error) = &result {
            tracing::error!(error_type = error.error_type(), error = %error, "invocation failed");
        }
        result
    }))
    .await
}
