//! What every Dynamics CRM function shares.
//!
//! - [`input`]: payloads, named as in the Logic Apps connector, validated into types;
//! - [`CrmError`]: the error every function returns, with the public `Crm.*` error types;
//! - [`Config`]: the `CRM_*` environment variables;
//! - [`Crm`]: credentials per dataset (Secrets Manager or a file) and a client per dataset;
//! - [`lambda`]: logging, the invocation deadline, serving a handler;
//! - [`metrics`]: the CloudWatch metrics each invocation writes to its logs;
//! - with the `triggers` feature, the cursor store, the event sink and the trigger engine;
//! - with the `idempotency` feature, the writers' idempotency records ([`idempotency`]);
//! - with the `webhook` feature, the receiver of the changes Dataverse pushes;
//! - with the `s3` feature, results written to S3 as JSON Lines ([`output`]), and rows read from
//!   an S3 object of JSON Lines ([`source`]).

pub mod aws;
pub mod config;
pub mod crm;
#[cfg(feature = "triggers")]
pub mod cursor;
mod error;
#[cfg(feature = "triggers")]
pub mod events;
#[cfg(feature = "idempotency")]
pub mod idempotency;
pub mod input;
pub mod lambda;
pub mod metrics;
#[cfg(feature = "s3")]
pub mod output;
#[cfg(feature = "s3")]
pub mod source;
#[cfg(feature = "triggers")]
pub mod trigger;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use config::Config;
pub use crm::{CredentialSource, Crm};
pub use dataverse::excerpt;
pub use error::{ConfigError, CrmError, MAX_MESSAGE_BYTES};

/// Lower-case hex of `bytes`: the digests in event ids, fingerprints, cursor names and
/// idempotency records.
#[cfg(any(feature = "triggers", feature = "idempotency"))]
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
