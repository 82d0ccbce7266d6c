//! Harness for the cross-crate suites and the tour: the real function binaries, driven through a Lambda
//! Runtime API, against the Dataverse emulator and moto.

pub mod aws;
pub mod emf;
pub mod fake_eventbridge;
pub mod function_url;
pub mod idempotency;
pub mod pool;
pub mod proxy;
pub mod push;
pub mod runtime;
pub mod s3_proxy;
pub mod services;

use std::time::{Duration, Instant};

pub use runtime::{Failure, Function, bin_dir, binary, expect_error};
pub use services::{Emulator, LocalFiles, Moto, TempDir};

/// Ends the emulator's current second by moving its clock forward one second: a creation fires once
/// its `createdon` second is over, and the triggers read "now" from Dataverse's `Date`, the clock
/// `createdon` comes from, so nothing needs to wait for this machine's clock.
pub async fn settle(emulator: &Emulator) -> std::io::Result<()> {
    emulator.advance_clock(1).await.map(drop)
}

/// How long a poll's cursor lease outlives its invocation's deadline: the engine holds it until the
/// deadline (less the answer margin) plus a second, so that a killed poll's lease frees itself.
pub const LEASE_GRACE: Duration = Duration::from_secs(1);

/// Waits until the lease of a poll invoked at `invoked` with `timeout` has ended.
///
/// This is the one wait the emulator's clock cannot replace: the cursor stores' leases are wall-clock
/// (a killed poll cannot give its lease back, so only time frees it), on this machine's clock in the
/// directory store and in DynamoDB alike.
pub async fn lease_lapsed(invoked: Instant, timeout: Duration) {
    tokio::time::sleep_until((invoked + timeout + LEASE_GRACE).into()).await;
}

/// Invokes a trigger that must succeed (a panic with its logs otherwise), and returns the
/// `accountid`s it answered, in its order.
pub async fn fired_ids(function: &mut Function, payload: &serde_json::Value) -> Vec<String> {
    match function.invoke(payload).await {
        Ok(output) => output["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["accountid"].as_str().map(str::to_owned))
            .collect(),
        Err(e) => panic!("{} failed: {e}\n{}", function.name, function.logs()),
    }
}

/// Serves HTTP/1 on `listener` until the returned task is aborted, answering every request with
/// `handle`. A connection that ends in an error (a caller hanging up at its deadline, a fault closing it
/// on purpose) ends quietly: for the test servers here that is part of the job.
pub(crate) fn serve<H, Fut, B, E>(
    listener: tokio::net::TcpListener,
    handle: H,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    })
}

/// Runs the `webhooks` command (`tools/webhooks`) with `args` and these `CRM_*` variables: its JSON
/// output, or what it printed to stderr when it failed.
pub async fn webhooks_command(
    environment: &[(String, String)],
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let output = tokio::process::Command::new(binary("webhooks").map_err(|e| e.to_string())?)
        .args(args)
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// What a function needs to reach an AWS endpoint on this machine: `endpoint_variable` (one of the
/// SDK's `AWS_ENDPOINT_URL*`) set to `url`, and a region and credentials to sign with.
pub fn aws_env(endpoint_variable: &str, url: &str) -> Vec<(String, String)> {
    [
        (endpoint_variable, url),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `(name, value)` pairs for [`Function::start`].
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
