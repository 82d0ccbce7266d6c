//! `CRM_STATE=file:<directory>`: cursors as JSON files, for local runs.
//!
//! Every read-modify-write happens under an exclusive lock on a sibling `.lock` file, and every write
//! goes to a temporary file that is synced and renamed over the old one, so a process killed at any
//! moment leaves either the old cursor or the new one, never half of one.
//!
//! Each file has one temporary, `<file>.tmp`: only the holder of the cursor's lock writes, and the
//! lock dies with its process, so a temporary a killed writer left is simply overwritten and renamed
//! into place by the next write of that file. No process id appears in the name, and none is ever
//! asked about: a dead writer's pid may belong to another live process, and says nothing across hosts
//! or containers sharing the directory.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CursorError, Kept, Lease, Record, epoch_millis};

/// What a key keeps as it is in its file name: ASCII letters, digits, `_` and `-`. Everything else
/// (`.` included, and every non-ASCII byte) becomes `%XX`, so no key can end in another key's file
/// suffix (`.json`, `.fingerprints.json`), and `%` itself is escaped, so two keys never share a name.
/// Changing this set renames every stored cursor, and a renamed cursor starts again from now.
/// The file beside a cursor holding the deleted trigger's membership set (the rows matching its
/// `$filter`), rewritten whole on each change: the directory store is for local runs.
const MEMBERS: &str = ".members.json";

const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// One row's entry in `.fingerprints.json`: the fingerprint alone, as earlier versions wrote it,
/// or with the watched columns' values beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredKept {
    Fingerprint(String),
    WithValues { fp: String, kept: String },
}

impl From<StoredKept> for Kept {
    fn from(stored: StoredKept) -> Self {
        match stored {
            StoredKept::Fingerprint(fingerprint) => Kept {
                fingerprint,
                values: None,
            },
            StoredKept::WithValues { fp, kept } => Kept {
                fingerprint: fp,
                values: Some(kept),
            },
        }
    }
}

impl From<Kept> for StoredKept {
    fn from(kept: Kept) -> Self {
        match kept.values {
            None => StoredKept::Fingerprint(kept.fingerprint),
            Some(values) => StoredKept::WithValues {
                fp: kept.fingerprint,
                kept: values,
            },
        }
    }
}

/// The membership file: a list of ids, as earlier versions wrote it, or each id with the generation
/// that last confirmed it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredMembers {
    Marked(HashMap<Uuid, u64>),
    Set(HashSet<Uuid>),
}

impl StoredMembers {
    fn marked(self) -> HashMap<Uuid, u64> {
        match self {
            StoredMembers::Marked(all) => all,
            StoredMembers::Set(ids) => ids.into_iter().map(|id| (id, 0)).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirectoryStore {
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    revision: u64,
    record: Option<Record>,
    lease: Option<Held>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Held {
    owner: String,
    until_ms: u64,
}

impl DirectoryStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The key's files, without their suffix (see [`FILE_NAME`]).
    fn base(&self, key: &str) -> PathBuf {
        self.dir
            .join(utf8_percent_encode(key, FILE_NAME).to_string())
    }

    /// Runs `work` on the blocking pool under the key's exclusive file lock.
    async fn locked<T: Send + 'static>(
        &self,
        key: &str,
        work: impl FnOnce(&Path) -> Result<T, CursorError> + Send + 'static,
    ) -> Result<T, CursorError> {
        let base = self.base(key);
        let dir = self.dir.clone();
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
            // The lock is released when `lock` is dropped, after the work.
            work(&base)
        })
        .await
        .map_err(|e| CursorError::Io {
            path: self.dir.display().to_string(),
            source: std::io::Error::other(e),
        })?
    }

    pub(crate) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.locked(&key.clone(), move |base| {
            let path = with_suffix(base, ".json");
            let mut stored: Stored = read(&path, &key)?.unwrap_or_default();
            let now = epoch_millis(SystemTime::now());
            if stored
                .lease
                .as_ref()
                .is_some_and(|held| held.until_ms > now && held.owner != owner)
            {
                return Ok(None);
            }
            stored.lease = Some(Held {
                owner: owner.clone(),
                until_ms: epoch_millis(until),
            });
            write(&path, &stored)?;
            Ok(Some(Lease::new(key, owner, stored.revision, stored.record)))
        })
        .await
    }

    pub async fn commit(&self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        let (lease, record) = (lease.clone(), record.clone());
        self.locked(&lease.key.clone(), move |base| {
            let path = with_suffix(base, ".json");
            let stored: Stored = read(&path, &lease.key)?.unwrap_or_default();
            let ours = stored
                .lease
                .as_ref()
                .is_some_and(|h| h.owner == lease.owner);
            if !ours || stored.revision != lease.revision {
                return Err(CursorError::Lost { key: lease.key });
            }
            let revision = lease.next_revision()?;
            write(
                &path,
                &Stored {
                    revision,
                    record: Some(record),
                    lease: None,
                },
            )
        })
        .await
    }

    pub async fn release(&self, lease: &Lease) -> Result<(), CursorError> {
        let lease = lease.clone();
        self.locked(&lease.key.clone(), move |base| {
            let path = with_suffix(base, ".json");
            let Some(mut stored) = read::<Stored>(&path, &lease.key)? else {
                return Ok(());
            };
            if stored
                .lease
                .as_ref()
                .is_some_and(|h| h.owner == lease.owner)
            {
                stored.lease = None;
                write(&path, &stored)?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn fingerprints(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Kept>, CursorError> {
        let (key, ids) = (key.to_owned(), ids.to_vec());
        self.locked(&key.clone(), move |base| {
            let path = with_suffix(base, ".fingerprints.json");
            let mut all: HashMap<Uuid, StoredKept> = read(&path, &key)?.unwrap_or_default();
            Ok(ids
                .into_iter()
                .filter_map(|id| all.remove(&id).map(|kept| (id, kept.into())))
                .collect())
        })
        .await
    }

    pub(crate) async fn put_fingerprints(
        &self,
        key: &str,
        entries: &[(Uuid, Kept)],
    ) -> Result<(), CursorError> {
        let (key, entries) = (key.to_owned(), entries.to_vec());
        self.locked(&key.clone(), move |base| {
            let path = with_suffix(base, ".fingerprints.json");
            let mut all: HashMap<Uuid, StoredKept> = read(&path, &key)?.unwrap_or_default();
            all.extend(entries.into_iter().map(|(id, kept)| (id, kept.into())));
            write(&path, &all)
        })
        .await
    }

    fn read_members(base: &Path, key: &str) -> Result<HashMap<Uuid, u64>, CursorError> {
        Ok(read::<StoredMembers>(&with_suffix(base, MEMBERS), key)?
            .map(StoredMembers::marked)
            .unwrap_or_default())
    }

    pub(crate) async fn members(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, CursorError> {
        let (key, ids) = (key.to_owned(), ids.to_vec());
        self.locked(&key.clone(), move |base| {
            let all = Self::read_members(base, &key)?;
            Ok(ids.into_iter().filter(|id| all.contains_key(id)).collect())
        })
        .await
    }

    pub(crate) async fn change_members(
        &self,
        key: &str,
        add: &[Uuid],
        remove: &[Uuid],
        mark: u64,
    ) -> Result<(), CursorError> {
        let (key, add, remove) = (key.to_owned(), add.to_vec(), remove.to_vec());
        self.locked(&key.clone(), move |base| {
            let mut all = Self::read_members(base, &key)?;
            all.extend(add.into_iter().map(|id| (id, mark)));
            for id in &remove {
                all.remove(id);
            }
            write(&with_suffix(base, MEMBERS), &StoredMembers::Marked(all))
        })
        .await
    }

    pub(crate) async fn stale_members(
        &self,
        key: &str,
        below: u64,
        limit: usize,
    ) -> Result<Vec<Uuid>, CursorError> {
        let key = key.to_owned();
        self.locked(&key.clone(), move |base| {
            let all = Self::read_members(base, &key)?;
            let mut stale: Vec<Uuid> = all
                .into_iter()
                .filter(|(_, mark)| *mark < below)
                .map(|(id, _)| id)
                .collect();
            // In id order, so that a poll stopped by `$top` is repeated the same way.
            stale.sort_unstable();
            stale.truncate(limit);
            Ok(stale)
        })
        .await
    }
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(path: &Path, source: std::io::Error) -> CursorError {
    CursorError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read<T: DeserializeOwned>(path: &Path, key: &str) -> Result<Option<T>, CursorError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CursorError::Corrupt {
                key: key.to_owned(),
                problem: format!("{}: {e}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Writes atomically: a synced temporary file renamed over the target, then the directory synced so
/// the rename itself survives a crash. Only ever called under the cursor's lock, which is why one
/// temporary name per file is enough, and why one left by a killed writer can be overwritten.
fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), CursorError> {
    let temporary = with_suffix(path, ".tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| io(path, std::io::Error::other(e)))?;
    let mut file = File::create(&temporary).map_err(|e| io(&temporary, e))?;
    file.write_all(&bytes).map_err(|e| io(&temporary, e))?;
    file.sync_all().map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tempfile::TempDir;

    use super::*;

    /// A store whose directory does not exist yet, as on a first run, inside a temporary directory
    /// that is removed when the test ends, failed or not. Keep the `TempDir` bound until then.
    fn store() -> (DirectoryStore, TempDir) {
        let temp = tempfile::tempdir().unwrap();
        (DirectoryStore::new(temp.path().join("cursors")), temp)
    }

    fn record(position: &str) -> Record {
        Record {
            state: format!("{{\"p\":\"{position}\"}}"),
            position: position.into(),
        }
    }

    #[tokio::test]
    async fn a_held_lease_keeps_a_second_poller_out_until_it_expires() {
        let (store, _temp) = store();
        let later = SystemTime::now() + Duration::from_secs(60);
        let first = store.acquire("k/a b", "one", later).await.unwrap();
        assert!(first.is_some());
        assert!(
            store
                .acquire("k/a b", "two", later)
                .await
                .unwrap()
                .is_none()
        );
        let expired = SystemTime::now() - Duration::from_secs(1);
        let other_store = DirectoryStore::new(store.dir.clone());
        other_store.acquire("k/x", "one", expired).await.unwrap();
        assert!(
            other_store
                .acquire("k/x", "two", later)
                .await
                .unwrap()
                .is_some(),
            "an expired lease is free"
        );
    }

    #[tokio::test]
    async fn commits_once_per_read_and_never_backwards() {
        let (store, _temp) = store();
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease = store.acquire("k", "one", later).await.unwrap().unwrap();
        store.commit(&lease, &record("0005")).await.unwrap();
        // The same read cannot be committed twice.
        assert!(matches!(
            store.commit(&lease, &record("0006")).await,
            Err(CursorError::Lost { .. })
        ));
        let lease = store.acquire("k", "two", later).await.unwrap().unwrap();
        assert_eq!(lease.record().unwrap().unwrap().position, "0005");
        let wrapped = super::super::CursorStore::Directory(store.clone());
        let within = wrapped.within(dataverse::Deadline::none());
        assert!(matches!(
            within.commit(&lease, &record("0004")).await,
            Err(CursorError::Backwards { .. })
        ));
        within.commit(&lease, &record("0007")).await.unwrap();
    }

    /// A cursor file as a writer would leave it, with `revision`.
    fn stored_at(dir: &Path, key: &str, revision: u64, owner: Option<&str>) -> PathBuf {
        let store = DirectoryStore::new(dir.to_path_buf());
        let path = with_suffix(&store.base(key), ".json");
        std::fs::create_dir_all(dir).unwrap();
        let lease = owner.map(|o| Held {
            owner: o.into(),
            until_ms: epoch_millis(SystemTime::now() + Duration::from_secs(60)),
        });
        let stored = Stored {
            revision,
            record: Some(record("0005")),
            lease,
        };
        std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
        path
    }

    #[tokio::test]
    async fn a_revision_at_its_largest_is_a_configuration_error_and_the_lease_goes_back() {
        let (store, _temp) = store();
        let path = stored_at(&store.dir, "k", u64::MAX, None);
        let before: Stored = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease = store.acquire("k", "one", later).await.unwrap().unwrap();
        let error = lease.record().unwrap_err();
        assert_eq!(error.error_type(), "Crm.Configuration");
        let message = error.to_string();
        assert!(
            message.contains("'k'") && message.contains("'revision'"),
            "{message}"
        );
        // What a poll does on any failure under the lease.
        store.release(&lease).await.unwrap();
        let after: Stored = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(after.lease.is_none(), "no lease is left held");
        assert_eq!(
            (after.revision, after.record),
            (before.revision, before.record),
            "the cursor itself is untouched"
        );
    }

    #[tokio::test]
    async fn a_saved_cursor_whose_record_is_gone_is_damaged_not_new() {
        let (store, _temp) = store();
        let path = stored_at(&store.dir, "k", 4, None);
        let mut stored: Stored = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        stored.record = None;
        std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease = store.acquire("k", "one", later).await.unwrap().unwrap();
        let error = lease.record().unwrap_err();
        assert_eq!(error.error_type(), "Crm.Configuration");
        assert!(error.to_string().contains("'record'"), "{error}");
    }

    #[tokio::test]
    async fn committing_a_revision_at_its_largest_is_a_configuration_error_not_a_panic_or_a_wrap() {
        let (store, _temp) = store();
        let path = stored_at(&store.dir, "k", u64::MAX, Some("one"));
        let lease = Lease::new("k".into(), "one".into(), u64::MAX, Some(record("0005")));
        let error = store.commit(&lease, &record("0006")).await.unwrap_err();
        assert_eq!(error.error_type(), "Crm.Configuration");
        assert!(error.to_string().contains("'revision'"), "{error}");
        let stored: Stored = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(stored.revision, u64::MAX, "not wrapped to 0");
    }

    #[tokio::test]
    async fn a_killed_writers_temporary_is_removed_by_the_next_write_of_that_cursor_only() {
        let (store, _temp) = store();
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease = store.acquire("k", "one", later).await.unwrap().unwrap();
        let cursor = with_suffix(&store.base("k"), ".json");
        let fingerprints = with_suffix(&store.base("k"), ".fingerprints.json");
        // What a kill -9 between create and rename leaves.
        let orphans = [with_suffix(&cursor, ".tmp")];
        let kept = [
            // Another cursor's (whose name only starts like this one's) and another file of this one.
            with_suffix(&store.base("k2"), ".json.tmp"),
            with_suffix(&fingerprints, ".tmp"),
            // Not a temporary this store writes.
            with_suffix(&cursor, ".tmp-notes"),
        ];
        for file in orphans.iter().chain(&kept) {
            std::fs::write(file, b"{\"half\":").unwrap();
        }
        store.commit(&lease, &record("0001")).await.unwrap();
        for orphan in &orphans {
            assert!(!orphan.exists(), "{} was left", orphan.display());
        }
        for file in &kept {
            assert!(file.exists(), "{} was removed", file.display());
        }
    }

    #[tokio::test]
    async fn a_temporary_a_live_writer_is_using_is_never_removed() {
        let (store, _temp) = store();
        let later = SystemTime::now() + Duration::from_secs(60);
        store.acquire("k", "one", later).await.unwrap();
        // A writer in another process, mid-write: it holds the lock and its temporary exists.
        let lock = OpenOptions::new()
            .write(true)
            .open(with_suffix(&store.base("k"), ".lock"))
            .unwrap();
        lock.lock().unwrap();
        let cursor = with_suffix(&store.base("k"), ".json");
        let theirs = with_suffix(&cursor, ".tmp");
        std::fs::copy(&cursor, &theirs).unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.acquire("k", "one", later).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(theirs.exists(), "removed while its writer held the lock");
        assert!(!waiting.is_finished(), "a write waits for the lock");
        // The writer renames its temporary and lets go; the waiting write then proceeds.
        std::fs::rename(&theirs, &cursor).unwrap();
        drop(lock);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn keeps_fingerprints_per_row() {
        let (store, _temp) = store();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let kept = |fp: &str, values: Option<&str>| Kept {
            fingerprint: fp.into(),
            values: values.map(Into::into),
        };
        store
            .put_fingerprints("k", &[(a, kept("aa", None))])
            .await
            .unwrap();
        store
            .put_fingerprints(
                "k",
                &[
                    (b, kept("bb", Some("{}"))),
                    (a, kept("a2", Some(r#"{"x":1}"#))),
                ],
            )
            .await
            .unwrap();
        let found = store
            .fingerprints("k", &[a, b, Uuid::new_v4()])
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&a], kept("a2", Some(r#"{"x":1}"#)));
    }

    /// Files earlier versions wrote still load: fingerprints alone, and membership as a plain list.
    #[tokio::test]
    async fn reads_what_earlier_versions_wrote_beside_a_cursor() {
        let (store, _temp) = store();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        std::fs::create_dir_all(&store.dir).unwrap();
        let base = store.base("k");
        std::fs::write(
            with_suffix(&base, ".fingerprints.json"),
            format!(r#"{{"{a}":"00ff"}}"#),
        )
        .unwrap();
        std::fs::write(with_suffix(&base, MEMBERS), format!(r#"["{a}","{b}"]"#)).unwrap();
        let found = store.fingerprints("k", &[a]).await.unwrap();
        assert_eq!(
            found[&a],
            Kept {
                fingerprint: "00ff".into(),
                values: None
            }
        );
        assert_eq!(store.members("k", &[a, b]).await.unwrap().len(), 2);
        assert_eq!(store.stale_members("k", 1, 10).await.unwrap(), [a, b]);
        store.change_members("k", &[b], &[], 3).await.unwrap();
        assert_eq!(store.stale_members("k", 3, 10).await.unwrap(), [a]);
        assert!(store.stale_members("k", 0, 10).await.unwrap().is_empty());
    }

    /// Stored cursors are found by file name, so a new escaping that renamed one would restart its
    /// trigger from now. These names were written by the hand-rolled escaping this one replaced.
    #[test]
    fn file_names_are_those_earlier_versions_wrote() {
        let store = DirectoryStore::new(PathBuf::from("/cursors"));
        let name = |key: &str| {
            store
                .base(key)
                .strip_prefix("/cursors")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        for (key, file) in [
            (
                "created/contoso/account/a1B2-c3_d4",
                "created%2Fcontoso%2Faccount%2Fa1B2-c3_d4",
            ),
            ("k/a b", "k%2Fa%20b"),
            ("..", "%2E%2E"),
            ("k.fingerprints", "k%2Efingerprints"),
            ("50%~off*", "50%25%7Eoff%2A"),
            ("~!*'()", "%7E%21%2A%27%28%29"),
            ("Zoë\0ü", "Zo%C3%AB%00%C3%BC"),
            ("\u{7f}\u{80}\t", "%7F%C2%80%09"),
            ("AZaz09_-", "AZaz09_-"),
        ] {
            assert_eq!(name(key), file, "{key:?}");
        }
        // Every ASCII character, against the rule those versions followed.
        for byte in 0..=0x7f_u8 {
            let kept = byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-');
            let expected = if kept {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            };
            assert_eq!(name(&char::from(byte).to_string()), expected, "{byte:#04x}");
        }
    }
}
