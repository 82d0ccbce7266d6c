//! Harness for the cross-crate suites and the tour: the real function binaries, driven through a Lambda
//! Runtime API, against the Dataverse emulator and moto.

pub mod aws;
pub mod proxy;
pub mod runtime;
pub mod services;

pub use runtime::{Failure, Function, bin_dir, binary, expect_error};
pub use services::{Emulator, LocalFiles, Moto, TempDir};

/// Waits for the current second to end: a creation fires once its `createdon` second is over.
pub async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

/// `(name, value)` pairs for [`Function::start`].
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
