//! Where triggers remember how far they got.
//!
//! A cursor is a small JSON document per trigger, guarded by a **lease** and a **revision**:
//!
//! - [`CursorStore::acquire`] takes the lease until the invocation's deadline, unless another live
//!   invocation holds it. Two overlapping polls (a slow poll and the next schedule) therefore never
//!   work on the same cursor; the second returns at once.
//! - [`CursorStore::commit`] writes the new state only if this invocation still holds the lease, the
//!   revision is the one it read, and the new `position` is not behind the stored one. A cursor can
//!   never be advanced twice from the same read, and never moves backwards.
//!
//! Triggers that fire on chosen columns also keep a fingerprint per row ([`CursorStore::fingerprints`]).

mod directory;
mod dynamo;

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use directory::DirectoryStore;
pub use dynamo::DynamoStore;

use crate::config::StateConfig;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Another invocation took the cursor over (this one outlived its lease).
    #[error(
        "the cursor '{key}' was taken over by another invocation; this poll's progress was not saved"
    )]
    Lost { key: String },

    /// The stored position is ahead of the one being written.
    #[error("the cursor '{key}' would move backwards (stored {stored}, new {new}); not saved")]
    Backwards {
        key: String,
        stored: String,
        new: String,
    },

    #[error("the cursor '{key}' holds a state this version cannot read: {problem}")]
    Corrupt { key: String, problem: String },

    /// DynamoDB failed. `configuration` says whether it is the deployment's fault (no such table, no
    /// permission) rather than a passing one.
    #[error("the cursor table: {message}")]
    Dynamo {
        message: String,
        configuration: bool,
    },

    #[error("the cursor directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CursorError {
    pub fn error_type(&self) -> &'static str {
        match self {
            CursorError::Corrupt { .. }
            | CursorError::Dynamo {
                configuration: true,
                ..
            } => "Crm.Configuration",
            _ => "Crm.ServerError",
        }
    }
}

/// What is stored for one trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The trigger's state, as the engine serialised it.
    pub state: String,
    /// A string that sorts as the cursor advances (see `TriggerState::position`).
    pub position: String,
}

/// A held lease, and what the store held when it was taken.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: String,
    owner: String,
    revision: u64,
    pub record: Option<Record>,
}

/// The configured store (`CRM_STATE`).
#[derive(Debug)]
pub enum CursorStore {
    Dynamo(DynamoStore),
    Directory(DirectoryStore),
}

impl CursorStore {
    pub async fn from_config(config: &StateConfig) -> Self {
        match config {
            StateConfig::DynamoDb { table } => Self::Dynamo(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&crate::aws::sdk_config().await),
                table.clone(),
            )),
            StateConfig::Directory(path) => Self::Directory(DirectoryStore::new(path.clone())),
        }
    }

    /// Takes the lease on `key` until `until`. `None` when another invocation holds it.
    pub async fn acquire(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        match self {
            Self::Dynamo(s) => s.acquire(key, owner, until).await,
            Self::Directory(s) => s.acquire(key, owner, until).await,
        }
    }

    /// Saves `record` and releases the lease, if the lease and the revision still hold and the
    /// position does not go backwards.
    pub async fn commit(&self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        if let Some(stored) = &lease.record
            && record.position < stored.position
        {
            return Err(CursorError::Backwards {
                key: lease.key.clone(),
                stored: stored.position.clone(),
                new: record.position.clone(),
            });
        }
        match self {
            Self::Dynamo(s) => s.commit(lease, record).await,
            Self::Directory(s) => s.commit(lease, record).await,
        }
    }

    /// Gives the lease back without saving (a poll that failed before publishing anything).
    pub async fn release(&self, lease: &Lease) -> Result<(), CursorError> {
        match self {
            Self::Dynamo(s) => s.release(lease).await,
            Self::Directory(s) => s.release(lease).await,
        }
    }

    /// Stored fingerprints of the given rows (rows never seen are absent).
    pub async fn fingerprints(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, CursorError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        match self {
            Self::Dynamo(s) => s.fingerprints(key, ids).await,
            Self::Directory(s) => s.fingerprints(key, ids).await,
        }
    }

    pub async fn put_fingerprints(
        &self,
        key: &str,
        entries: &[(Uuid, String)],
    ) -> Result<(), CursorError> {
        if entries.is_empty() {
            return Ok(());
        }
        match self {
            Self::Dynamo(s) => s.put_fingerprints(key, entries).await,
            Self::Directory(s) => s.put_fingerprints(key, entries).await,
        }
    }
}

fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
