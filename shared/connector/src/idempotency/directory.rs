//! `CRM_IDEMPOTENCY=file:<directory>`: one JSON file per key, for local runs.
//!
//! Several processes on one machine can share the directory (two `cargo lambda watch` instances, the
//! tests' concurrent repeats): every read-modify-write of a record happens under an exclusive lock
//! on a sibling `.lock` file, and every write goes to a synced temporary file renamed over the
//! record. So the check and the write of beginning are one step, as `DynamoDB`'s conditional write
//! is, and a process killed at any moment leaves the old record or the new one, never half. The
//! locks are advisory locks of the operating system: a network file system that does not honour
//! them is not supported.
//!
//! A file is named by the SHA-256 of its key, which may hold any visible character and be longer
//! than a file name may. Lock files stay after their record goes: removing one while another
//! process waits on it would let a third lock a new file of the same name.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Begun, IdempotencyError, Record, Status, hex};
use crate::excerpt;

#[derive(Debug, Clone)]
pub struct DirectoryStore {
    dir: PathBuf,
}

/// A record file: the record, and its key for whoever reads the directory.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    pk: String,
    #[serde(flatten)]
    record: Record,
}

impl DirectoryStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The record's path, without its suffix.
    fn base(&self, pk: &str) -> PathBuf {
        self.dir.join(hex(&Sha256::digest(pk.as_bytes())))
    }

    /// Runs `work` on the record (`None` when there is none) under the key's lock, on the blocking
    /// pool; `work` returns what to answer and what to leave stored (`Keep` leaves the file as it
    /// is).
    async fn locked<T: Send + 'static>(
        &self,
        pk: &str,
        work: impl FnOnce(Option<Record>) -> (T, Change) + Send + 'static,
    ) -> Result<T, IdempotencyError> {
        let base = self.base(pk);
        let dir = self.dir.clone();
        let pk = pk.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let lock_path = with_suffix(&base, ".lock");
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| io(&lock_path, e))?;
            lock.lock().map_err(|e| io(&lock_path, e))?;
            // The lock is released when `lock` is dropped, after the change is in place.
            let path = with_suffix(&base, ".json");
            let (answer, change) = work(read(&path, &pk)?);
            match change {
                Change::Keep => {}
                Change::Write(record) => write(&path, &Stored { pk, record })?,
                Change::Remove => remove(&path)?,
            }
            drop(lock);
            Ok(answer)
        })
        .await
        .map_err(|e| io(&self.dir, std::io::Error::other(e)))?
    }

    pub(crate) async fn begin(
        &self,
        pk: &str,
        record: &Record,
        now_ms: u64,
    ) -> Result<Begun, IdempotencyError> {
        let record = record.clone();
        self.locked(pk, move |stored| match stored {
            Some(existing) if !existing.replaceable(&record.hash, now_ms) => {
                (Begun::Held(Some(existing)), Change::Keep)
            }
            existing => {
                let resumes = existing.is_some_and(|e| e.resumed_by(&record.hash));
                (Begun::Started { resumes }, Change::Write(record))
            }
        })
        .await
    }

    pub(crate) async fn complete(
        &self,
        pk: &str,
        token: &str,
        result: &str,
        expires: u64,
    ) -> Result<bool, IdempotencyError> {
        let (token, result) = (token.to_owned(), result.to_owned());
        self.locked(pk, move |stored| match stored {
            Some(mut record) if record.token == token => {
                record.status = Status::Completed;
                record.result = Some(result);
                record.expires = expires;
                (true, Change::Write(record))
            }
            _ => (false, Change::Keep),
        })
        .await
    }

    pub(crate) async fn release(&self, pk: &str, token: &str) -> Result<(), IdempotencyError> {
        let token = token.to_owned();
        self.locked(pk, move |stored| match stored {
            Some(record) if record.token == token => ((), Change::Remove),
            _ => ((), Change::Keep),
        })
        .await
    }

    pub(crate) async fn hold(
        &self,
        pk: &str,
        token: &str,
        until_ms: u64,
    ) -> Result<(), IdempotencyError> {
        let token = token.to_owned();
        self.locked(pk, move |stored| match stored {
            Some(mut record) if record.token == token && record.status == Status::InProgress => {
                record.in_progress_until = until_ms;
                ((), Change::Write(record))
            }
            _ => ((), Change::Keep),
        })
        .await
    }
}

/// What a locked step leaves stored.
enum Change {
    Keep,
    Write(Record),
    Remove,
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(path: &Path, source: std::io::Error) -> IdempotencyError {
    IdempotencyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path, pk: &str) -> Result<Option<Record>, IdempotencyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Stored>(&bytes)
            .map(|stored| Some(stored.record))
            .map_err(|e| IdempotencyError::Damaged {
                key: excerpt(pk),
                attribute: "file",
                problem: format!("{} cannot be read as a record ({e})", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Writes atomically: a synced temporary file renamed over the record, then the directory synced so
/// the rename itself survives a crash. Only ever called under the record's lock, so one temporary
/// name per record is enough, and one a killed writer left is simply overwritten.
fn write(path: &Path, stored: &Stored) -> Result<(), IdempotencyError> {
    let temporary = with_suffix(path, ".tmp");
    let bytes = serde_json::to_vec(stored).map_err(|e| io(path, std::io::Error::other(e)))?;
    let mut file = File::create(&temporary).map_err(|e| io(&temporary, e))?;
    file.write_all(&bytes).map_err(|e| io(&temporary, e))?;
    file.sync_all().map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))?;
    sync_dir(path)
}

fn remove(path: &Path) -> Result<(), IdempotencyError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

fn sync_dir(path: &Path) -> Result<(), IdempotencyError> {
    match path.parent() {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e)),
        None => Ok(()),
    }
}
