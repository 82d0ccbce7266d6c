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
//! Triggers that fire on chosen columns also keep a fingerprint per row ([`Within::fingerprints`]), and
//! `when-record-deleted` with a `$filter` keeps the set of rows that match it ([`Within::members`]).
//!
//! Every call is bounded by the invocation's deadline through [`CursorStore::within`]: a store that
//! hangs makes the poll fail with `Crm.ServerError` in time to answer, and a lease taken meanwhile
//! frees itself when it ends. A stored cursor that exists but cannot be read is `Crm.Configuration`
//! ([`CursorError::Damaged`]), never a new cursor: starting again from now would lose changes.

mod directory;
mod dynamo;

use std::collections::{HashMap, HashSet};
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
    #[error("the cursor table: {action} on '{table}': {}", aws_sdk_dynamodb::error::DisplayErrorContext(&**source))]
    Dynamo {
        table: String,
        action: &'static str,
        configuration: bool,
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },

    /// DynamoDB kept handing back part of a batch (throttled partitions) past every retry.
    #[error("the cursor table '{table}': {count} per-row items stayed unprocessed after retries")]
    Unprocessed { table: String, count: usize },

    /// A DynamoDB request could not be built (a required field was missing).
    #[error("the cursor table: a request could not be built: {0}")]
    Request(#[source] aws_sdk_dynamodb::error::BuildError),

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

/// What `when-record-updated` with watched columns keeps per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// A hash of the watched columns' values: equal means no watched column changed.
    pub(crate) fingerprint: String,
    /// The watched columns' values, as the trigger wrote them (JSON text, bounded by the trigger);
    /// `None` for a row kept by a version that stored the fingerprint alone.
    pub(crate) values: Option<String>,
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
///
/// A stored cursor that cannot be read does not stop the lease being taken: the damage travels with
/// the lease and is reported by [`Lease::record`], inside the poll's scope, so the one path that gives
/// a lease back on failure serves it too.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: String,
    owner: String,
    revision: u64,
    stored: Result<Option<Record>, Damage>,
}

/// An attribute of a stored cursor that no poll could have written.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    attribute: &'static str,
    problem: String,
}

impl Lease {
    fn new(key: String, owner: String, revision: u64, record: Option<Record>) -> Self {
        Self {
            key,
            owner,
            revision,
            stored: Ok(record),
        }
    }

    /// A lease on a cursor whose stored item could not be read.
    fn damaged(key: String, owner: String, damage: Damage) -> Self {
        Self {
            key,
            owner,
            revision: 0,
            stored: Err(damage),
        }
    }

    /// What the store held: nothing for a new cursor, or the record. `Crm.Configuration` when the
    /// stored cursor is one no poll could have written, whichever store holds it: an attribute of the
    /// wrong shape, a revision that cannot advance, or a cursor saved before whose record is gone.
    pub fn record(&self) -> Result<Option<&Record>, CursorError> {
        let record = match &self.stored {
            Ok(record) => record.as_ref(),
            Err(Damage { attribute, problem }) => {
                return Err(damaged(&self.key, attribute, problem.clone()));
            }
        };
        if self.revision == u64::MAX {
            return Err(revision_exhausted(&self.key));
        }
        if record.is_none() && self.revision > 0 {
            return Err(damaged(
                &self.key,
                "record",
                format!(
                    "is missing, though the cursor was saved {} time(s)",
                    self.revision
                ),
            ));
        }
        Ok(record)
    }

    /// The revision a save writes.
    fn next_revision(&self) -> Result<u64, CursorError> {
        self.revision
            .checked_add(1)
            .ok_or_else(|| revision_exhausted(&self.key))
    }
}

pub(crate) fn damaged(key: &str, attribute: &'static str, problem: String) -> CursorError {
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
    pub(crate) async fn from_config(config: &StateConfig) -> Self {
        match config {
            StateConfig::DynamoDb { table } => Self::Dynamo(DynamoStore::new(
                &crate::aws::sdk_config().await,
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
}

/// [`CursorStore`]'s calls bounded by a deadline: a call still unanswered then fails
/// (`Crm.ServerError`), leaving time to answer the invocation.
#[derive(Debug, Clone, Copy)]
pub struct Within<'a> {
    store: &'a CursorStore,
    deadline: Deadline,
}

impl Within<'_> {
    /// Takes the lease on `key` until `until`. `None` when another invocation holds it.
    pub(crate) async fn acquire(
        self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.acquire(key, owner, until).await,
                CursorStore::Directory(s) => s.acquire(key, owner, until).await,
            }
        };
        // A lease request that was sent and then abandoned may still have taken the lease: it frees
        // itself at `until`.
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "taking the lease on")))
    }

    /// Saves `record` and releases the lease, if the lease and the revision still hold and the
    /// position does not go backwards.
    pub async fn commit(self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        if let Some(stored) = lease.record()?
            && record.position < stored.position
        {
            return Err(CursorError::Backwards {
                key: lease.key.clone(),
                stored: stored.position.clone(),
                new: record.position.clone(),
            });
        }
        if self.deadline.cap(Duration::MAX).is_none() {
            // Not started: certainly not applied.
            return Err(timed_out(&lease.key, "saving"));
        }
        match self.store {
            // It bounds each attempt by the deadline itself, and knows best what a lost answer means.
            CursorStore::Dynamo(s) => s.commit(lease, record, self.deadline).await,
            // Started and not finished: the file may have been renamed into place, or not.
            CursorStore::Directory(s) => self
                .deadline
                .run(s.commit(lease, record))
                .await
                .unwrap_or_else(|| {
                    Err(CursorError::OutcomeUnknown {
                        key: lease.key.clone(),
                        reason: "no answer before the invocation's deadline".into(),
                    })
                }),
        }
    }

    /// Gives the lease back without saving.
    pub async fn release(self, lease: &Lease) -> Result<(), CursorError> {
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.release(lease).await,
                CursorStore::Directory(s) => s.release(lease).await,
            }
        };
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(&lease.key, "releasing the lease on")))
    }

    /// Stored fingerprints (and kept values) of the given rows (rows never seen are absent).
    pub(crate) async fn fingerprints(
        self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Kept>, CursorError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.fingerprints(key, ids).await,
                CursorStore::Directory(s) => s.fingerprints(key, ids).await,
            }
        };
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "reading fingerprints of")))
    }

    pub(crate) async fn put_fingerprints(
        self,
        key: &str,
        entries: &[(Uuid, Kept)],
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
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "writing fingerprints of")))
    }
    /// Which of `ids` are in the cursor's membership set.
    pub(crate) async fn members(
        self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, CursorError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.members(key, ids).await,
                CursorStore::Directory(s) => s.members(key, ids).await,
            }
        };
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "reading the membership set of")))
    }

    /// Adds `add` to the membership set, marked with generation `mark` (a member added again takes
    /// the new mark), and takes `remove` out of it (a row in both ends out).
    pub(crate) async fn change_members(
        self,
        key: &str,
        add: &[Uuid],
        remove: &[Uuid],
        mark: u64,
    ) -> Result<(), CursorError> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.change_members(key, add, remove, mark).await,
                CursorStore::Directory(s) => s.change_members(key, add, remove, mark).await,
            }
        };
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "writing the membership set of")))
    }

    /// Up to about `limit` members marked below generation `below` (members written before marks
    /// existed count as generation 0), in no particular order.
    pub(crate) async fn stale_members(
        self,
        key: &str,
        below: u64,
        limit: usize,
    ) -> Result<Vec<Uuid>, CursorError> {
        let work = async {
            match self.store {
                CursorStore::Dynamo(s) => s.stale_members(key, below, limit).await,
                CursorStore::Directory(s) => s.stale_members(key, below, limit).await,
            }
        };
        self.deadline
            .run(work)
            .await
            .unwrap_or_else(|| Err(timed_out(key, "reading the membership set of")))
    }
}

fn timed_out(key: &str, action: &'static str) -> CursorError {
    CursorError::TimedOut {
        key: key.to_owned(),
        action,
    }
}

fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_no_time_left_a_call_is_not_started_and_says_so() {
        // Removed on drop, even when an assertion below fails.
        let temp = tempfile::tempdir().unwrap();
        let store = CursorStore::Directory(DirectoryStore::new(temp.path().join("cursors")));
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease = store
            .within(Deadline::none())
            .acquire("k", "one", later)
            .await
            .unwrap()
            .unwrap();
        let gone = store.within(Deadline::after(Duration::ZERO));
        let refused = gone.acquire("k", "one", later).await.unwrap_err();
        assert!(matches!(refused, CursorError::TimedOut { .. }), "{refused}");
        let record = Record {
            state: "{}".into(),
            position: "p".into(),
        };
        // Never started, so certainly not applied: a timeout, not an unknown outcome.
        let unsaved = gone.commit(&lease, &record).await.unwrap_err();
        assert!(matches!(unsaved, CursorError::TimedOut { .. }), "{unsaved}");
        store
            .within(Deadline::none())
            .commit(&lease, &record)
            .await
            .unwrap();
    }

    #[test]
    fn a_revision_that_cannot_advance_or_a_lost_record_is_damaged() {
        let record = Record {
            state: "{}".into(),
            position: "p".into(),
        };
        let lease = |revision, record| Lease::new("k".into(), "o".into(), revision, record);
        let error = lease(u64::MAX, Some(record.clone())).record().unwrap_err();
        assert_eq!(error.error_type(), "Crm.Configuration");
        assert!(error.to_string().contains("cannot advance"), "{error}");
        assert!(lease(u64::MAX - 1, Some(record.clone())).record().is_ok());
        let lost = lease(3, None).record().unwrap_err();
        assert!(lost.to_string().contains("'record'"), "{lost}");
        assert!(lease(0, None).record().unwrap().is_none(), "a new cursor");
        let damage = Damage {
            attribute: "state",
            problem: "is missing".into(),
        };
        let error = Lease::damaged("k".into(), "o".into(), damage)
            .record()
            .unwrap_err();
        assert!(error.to_string().contains("'state'"), "{error}");
    }
}
