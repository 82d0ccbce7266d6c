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
//!
//! Every call is bounded by the invocation's deadline through [`CursorStore::within`]: a store that
//! hangs makes the poll fail with `Crm.ServerError` in time to answer, and a lease taken meanwhile
//! frees itself when it ends. A stored cursor that exists but cannot be read is `Crm.Configuration`
//! ([`CursorError::Damaged`]), never a new cursor: starting again from now would lose changes.

mod directory;
mod dynamo;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use dataverse::Deadline;
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

    /// A stored cursor that exists but cannot be used as it is: an attribute is missing, of the wrong
    /// type or out of range (edited by hand or by a script). Guessing would restart the trigger from
    /// now, losing changes, or make every save fail after publishing.
    #[error(
        "the cursor '{key}' is damaged: its '{attribute}' {problem}; repair it, or delete it to start the cursor again from now"
    )]
    Damaged {
        key: String,
        attribute: &'static str,
        problem: String,
    },

    /// A call had no answer (or no time left to start) before the invocation's deadline. It is not a
    /// save (see `OutcomeUnknown`): a lease it may have taken frees itself when the lease ends.
    #[error("{action} the cursor '{key}' did not finish before the invocation's deadline")]
    TimedOut { key: String, action: &'static str },

    /// A save was sent but its answer never came (or came too late): it may or may not have been
    /// applied. Either way nothing is lost: the next poll starts from whichever cursor is stored.
    #[error(
        "saving the cursor '{key}': {reason}; the save's outcome is unknown: the next poll resumes from whichever cursor is stored, delivering again (with the same event ids) anything published after it"
    )]
    OutcomeUnknown { key: String, reason: String },

    /// DynamoDB failed. `configuration` says whether it is the deployment's fault (no such table, no
    /// permission) rather than a passing one.
    #[error("the cursor table: {message}")]
    Dynamo {
        message: String,
        configuration: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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
            | CursorError::Damaged { .. }
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
    /// What bounds [`CursorStore::commit`] and [`CursorStore::release`] on this lease: the deadline it
    /// was acquired [`within`](CursorStore::within), or the lease's own end.
    bound: Deadline,
}

impl Lease {
    fn new(key: String, owner: String, revision: u64, record: Option<Record>) -> Self {
        Self {
            key,
            owner,
            revision,
            record,
            bound: Deadline::none(),
        }
    }
}

fn damaged(key: &str, attribute: &'static str, problem: String) -> CursorError {
    CursorError::Damaged {
        key: key.to_owned(),
        attribute,
        problem,
    }
}

/// Why a revision cannot advance.
fn revision_exhausted(key: &str) -> CursorError {
    damaged(
        key,
        "revision",
        format!("is {}, the largest there is: it cannot advance", u64::MAX),
    )
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

    /// The store's calls, each bounded by `deadline` (the invocation's, less the margin to answer).
    pub fn within(&self, deadline: Deadline) -> Within<'_> {
        Within {
            store: self,
            deadline,
        }
    }

    /// Takes the lease on `key` until `until`. `None` when another invocation holds it.
    ///
    /// Bounded by the lease's end only; [`Within::acquire`] is bounded by the invocation's deadline.
    pub async fn acquire(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.within(Deadline::after(left))
            .acquire(key, owner, until)
            .await
    }

    /// Saves `record` and releases the lease, if the lease and the revision still hold and the
    /// position does not go backwards. Bounded as the lease was acquired.
    pub async fn commit(&self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        self.within(lease.bound).commit(lease, record).await
    }

    /// Gives the lease back without saving (a poll that failed before publishing anything). Bounded
    /// as the lease was acquired.
    pub async fn release(&self, lease: &Lease) -> Result<(), CursorError> {
        self.within(lease.bound).release(lease).await
    }

    /// Stored fingerprints of the given rows (rows never seen are absent). Not bounded by a deadline
    /// (each DynamoDB attempt still is); prefer [`Within::fingerprints`].
    pub async fn fingerprints(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, CursorError> {
        self.within(Deadline::none()).fingerprints(key, ids).await
    }

    /// Not bounded by a deadline (each DynamoDB attempt still is); prefer
    /// [`Within::put_fingerprints`].
    pub async fn put_fingerprints(
        &self,
        key: &str,
        entries: &[(Uuid, String)],
    ) -> Result<(), CursorError> {
        self.within(Deadline::none())
            .put_fingerprints(key, entries)
            .await
    }
}

/// [`CursorStore`]'s calls bounded by a deadline: a call still unanswered then fails
/// (`Crm.ServerError`), leaving time to answer the invocation.
#[derive(Debug, Clone, Copy)]
pub struct Within<'a> {
    store: &'a CursorStore,
    deadline: Deadline,
}

impl Within<'_> {
    /// Takes the lease on `key` until `until`. `None` when another invocation holds it. The lease
    /// remembers this deadline for [`CursorStore::commit`] and [`CursorStore::release`].
    pub async fn acquire(
        self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.acquire(key, owner, until, self.deadline).await,
                CursorStore::Directory(s) => s.acquire(key, owner, until).await,
            }
        };
        // A lease request that was sent and then abandoned may still have taken the lease: it frees
        // itself at `until`.
        let lease = bounded(self.deadline, work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "taking the lease on")))?;
        Ok(lease.map(|lease| Lease {
            bound: self.deadline,
            ..lease
        }))
    }

    /// Saves `record` and releases the lease, if the lease and the revision still hold and the
    /// position does not go backwards.
    pub async fn commit(self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        if let Some(stored) = &lease.record
            && record.position < stored.position
        {
            return Err(CursorError::Backwards {
                key: lease.key.clone(),
                stored: stored.position.clone(),
                new: record.position.clone(),
            });
        }
        if self.deadline.remaining().is_some_and(|left| left.is_zero()) {
            return Err(timed_out(&lease.key, "saving"));
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.commit(lease, record, self.deadline).await,
                CursorStore::Directory(s) => s.commit(lease, record).await,
            }
        };
        // Started and not finished: it may have been applied (a file renamed, a request answered
        // too late).
        bounded(self.deadline, work).await.unwrap_or_else(|| {
            Err(CursorError::OutcomeUnknown {
                key: lease.key.clone(),
                reason: "no answer before the invocation's deadline".into(),
            })
        })
    }

    /// Gives the lease back without saving.
    pub async fn release(self, lease: &Lease) -> Result<(), CursorError> {
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.release(lease).await,
                CursorStore::Directory(s) => s.release(lease).await,
            }
        };
        bounded(self.deadline, work)
            .await
            .unwrap_or_else(|| Err(timed_out(&lease.key, "releasing the lease on")))
    }

    /// Stored fingerprints of the given rows (rows never seen are absent).
    pub async fn fingerprints(
        self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, CursorError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.fingerprints(key, ids).await,
                CursorStore::Directory(s) => s.fingerprints(key, ids).await,
            }
        };
        bounded(self.deadline, work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "reading fingerprints of")))
    }

    pub async fn put_fingerprints(
        self,
        key: &str,
        entries: &[(Uuid, String)],
    ) -> Result<(), CursorError> {
        if entries.is_empty() {
            return Ok(());
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.put_fingerprints(key, entries).await,
                CursorStore::Directory(s) => s.put_fingerprints(key, entries).await,
            }
        };
        bounded(self.deadline, work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "writing fingerprints of")))
    }
}

fn timed_out(key: &str, action: &'static str) -> CursorError {
    CursorError::TimedOut {
        key: key.to_owned(),
        action,
    }
}

/// `work`'s result, or `None` when the deadline comes first. With no time left, `work` is not started.
async fn bounded<T>(
    deadline: Deadline,
    work: impl Future<Output = Result<T, CursorError>>,
) -> Option<Result<T, CursorError>> {
    match deadline.remaining() {
        None => Some(work.await),
        Some(left) if left.is_zero() => None,
        Some(left) => tokio::time::timeout(left, work).await.ok(),
    }
}

fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
