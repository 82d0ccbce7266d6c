//! Idempotent writes: a request carrying a key runs once; a repeat gets the first run's answer.
//!
//! `docs/idempotency.md` is the contract. The record of a key (`CRM_IDEMPOTENCY`) moves through two
//! states, as in Powertools for AWS Lambda's idempotency utility, with what that utility leaves out:
//!
//! 1. **Begin.** One conditional write creates the record `INPROGRESS`, holding the payload's hash, a
//!    token naming this run, and `in_progress_until` (the invocation's deadline). It succeeds only
//!    where no record is, where the record has expired (checked here: `DynamoDB`'s TTL deletes late),
//!    or where a run of the *same* payload held it and can no longer be running (a crashed run: this
//!    one takes over, and is told so). Otherwise the record as it stands decides, and its hash is
//!    compared first, on every path: a different payload is `Crm.InvalidInput` on `idempotency_key`;
//!    a completed record is replayed without calling Dataverse; a live one is `Crm.Conflict`.
//! 2. **Complete.** The answer is stored, on condition that the token is still this run's: a run
//!    that outlived its hold cannot overwrite the record of the run that took over.
//!
//! A failure that provably changed nothing removes the record (on the same condition), so a retry
//! runs afresh. A failure that may have written (the answer was lost) keeps the record, held for
//! [`SERVER_GRACE`] more (Dataverse may still be carrying the write out), so the retry after that is
//! a takeover, which for `create-record` looks for the row first.

mod directory;
mod dynamo;

use std::time::{Duration, SystemTime};

use dataverse::Deadline;
use lambda_runtime::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub use directory::DirectoryStore;
pub use dynamo::DynamoStore;

use crate::config::{Config, IdempotencyConfig};
pub(crate) use crate::hex;
use crate::{ConfigError, CredentialSource, Crm, CrmError, excerpt};

/// The input carrying the key, taken out of the payload before the function reads it.
pub const KEY_FIELD: &str = "idempotency_key";

/// The longest key, in characters. An EventBridge event's id is 36; a Step Functions execution ARN,
/// the longest thing a workflow is likely to build a key from, is under 250.
pub const MAX_KEY_CHARS: usize = 256;

/// How long a run whose deadline is unknown holds its key: Lambda's longest invocation.
const LONGEST_INVOCATION: Duration = Duration::from_secs(15 * 60);

/// How long after a run gave up on Dataverse its write may still be carried out there. Dataverse
/// goes on with a request whose client has stopped waiting, until its own limit: "a hard 2-minute
/// time limit for a Dataverse message operation to complete", synchronous plug-ins included, after
/// which it rolls the operation back (Microsoft Learn, *Analyze plug-in performance*,
/// `power-apps/developer/data-platform/analyze-performance`). Thirty seconds more cover a request
/// that waited in Dataverse's front end before it started, and the clocks of two Lambda hosts
/// disagreeing. A run is held until its deadline plus this, and a run that lost Dataverse's answer
/// holds the key for this long after: a retry meanwhile gets `Crm.Conflict`, where as a takeover its
/// look for the first run's row could come before that row is committed, and create a second. The
/// cost: the retry of a run that crashed waits this long more before it may take over.
pub const SERVER_GRACE: Duration = Duration::from_secs(150);

/// Kept back from the work's deadline, beyond the usual margin to answer, to record the result.
const RECORD_MARGIN: Duration = Duration::from_millis(200);

/// Kept back from the invocation's deadline by the store's calls, to answer after them.
const STORE_MARGIN: Duration = Duration::from_millis(100);

/// Kept back from the store's deadline by beginning, to end the hold of a record that a begin
/// without an answer may have written ([`Run::abandon`]). `DynamoDB` answers in milliseconds.
const UNDO_MARGIN: Duration = Duration::from_millis(500);

/// How many times beginning is tried when the record changes between the write and the read.
const BEGIN_ROUNDS: u32 = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// `DynamoDB` failed. `configuration` says whether it is the deployment's fault (no such table,
    /// no permission) rather than a passing one.
    #[error("the idempotency table: {action} on '{table}': {}", aws_sdk_dynamodb::error::DisplayErrorContext(&**source))]
    Dynamo {
        table: String,
        action: &'static str,
        configuration: bool,
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },

    #[error("the idempotency directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A stored record no run could have written (edited by hand or by a script). It only guards
    /// repeats, so deleting it is always safe; guessing what it meant is not.
    #[error(
        "the idempotency record '{key}' is damaged: its '{attribute}' {problem}; delete the record to let the key run again"
    )]
    Damaged {
        key: String,
        attribute: &'static str,
        problem: String,
    },

    /// An answer larger than any a function can give, so not recorded (Lambda refuses to return
    /// it, and a repeat could not be answered with it either).
    #[error(
        "the answer of '{key}' is {bytes} bytes, over the {limit} a function can answer; not recorded"
    )]
    TooLarge {
        key: String,
        bytes: usize,
        limit: usize,
    },

    /// A store call had no answer before the invocation's deadline.
    #[error(
        "{action} the idempotency record '{key}' did not finish before the invocation's deadline"
    )]
    TimedOut { key: String, action: &'static str },
}

impl IdempotencyError {
    pub fn error_type(&self) -> &'static str {
        match self {
            IdempotencyError::Damaged { .. }
            | IdempotencyError::Dynamo {
                configuration: true,
                ..
            } => "Crm.Configuration",
            _ => "Crm.ServerError",
        }
    }
}

/// Why a text is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty, longer than [`MAX_KEY_CHARS`], or holding a character that is not visible ASCII.
    /// `key` is an excerpt of the text.
    #[error(
        "'{key}' is not an idempotency key: use 1 to {MAX_KEY_CHARS} visible ASCII characters (letters, digits, punctuation; no spaces)"
    )]
    Invalid { key: String },
}

/// A caller's idempotency key: 1 to [`MAX_KEY_CHARS`] visible ASCII characters (no spaces or
/// control characters), so that it can sit in a `DynamoDB` key, a log line and an OData string
/// literal as it is. Compared byte for byte: `A-1` and `a-1` are two keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let visible = text.bytes().all(|b| b.is_ascii_graphic());
        if (1..=MAX_KEY_CHARS).contains(&text.len()) && visible {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeyError::Invalid { key: excerpt(text) })
        }
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::parse(text)
    }
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    #[serde(rename = "INPROGRESS")]
    InProgress,
    #[serde(rename = "COMPLETED")]
    Completed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "INPROGRESS",
            Status::Completed => "COMPLETED",
        }
    }
}

/// The record of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) status: Status,
    /// The hash of the payload (see [`payload_hash`]).
    pub(crate) hash: String,
    /// Names the run that wrote it: every later write of that run is conditional on it.
    pub(crate) token: String,
    /// Epoch milliseconds until which the run holding it may still be running.
    pub(crate) in_progress_until: u64,
    /// Epoch seconds after which the record is forgotten.
    pub(crate) expires: u64,
    /// The answer, as JSON text, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<String>,
    /// Where an answer too large for a `DynamoDB` item is kept instead (the directory store keeps
    /// every answer whole).
    #[serde(skip)]
    pub(crate) parts: Option<Parts>,
}

/// An answer kept in part items: how many, and the SHA-256 of the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parts {
    pub(crate) count: u32,
    pub(crate) hash: String,
}

impl Record {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires.saturating_mul(1000) <= now_ms
    }

    /// Whether a new run of the payload hashed `hash` may replace this record: it has expired, or a
    /// run of the same payload held it and can no longer be running. (`DynamoStore` asks the same
    /// in its condition expression.)
    pub(crate) fn replaceable(&self, hash: &str, now_ms: u64) -> bool {
        self.expired(now_ms)
            || (self.status == Status::InProgress
                && self.in_progress_until <= now_ms
                && self.hash == hash)
    }

    /// Whether a run replacing this record takes over from a run of the same payload that may have
    /// written before it ended, expired or not: worth checking for what it wrote.
    pub(crate) fn resumed_by(&self, hash: &str) -> bool {
        self.status == Status::InProgress && self.hash == hash
    }
}

/// What beginning found.
#[derive(Debug)]
pub(crate) enum Begun {
    /// The record is this run's. `resumes`: it took over from a run of the same payload.
    Started { resumes: bool },
    /// Another record stands (`None`: it was gone by the time it was read).
    Held(Option<Record>),
}

/// The configured store (`CRM_IDEMPOTENCY`).
#[derive(Debug)]
pub enum Store {
    Dynamo(DynamoStore),
    Directory(DirectoryStore),
}

impl Store {
    pub async fn from_config(config: &IdempotencyConfig) -> Self {
        match config {
            IdempotencyConfig::DynamoDb { table } => Self::Dynamo(DynamoStore::new(
                &crate::aws::sdk_config().await,
                table.clone(),
            )),
            IdempotencyConfig::Directory(path) => {
                Self::Directory(DirectoryStore::new(path.clone()))
            }
        }
    }

    async fn begin(
        &self,
        pk: &str,
        record: &Record,
        now_ms: u64,
    ) -> Result<Begun, IdempotencyError> {
        match self {
            Store::Dynamo(s) => s.begin(pk, record, now_ms).await,
            Store::Directory(s) => s.begin(pk, record, now_ms).await,
        }
    }

    /// The stored answer of a completed record.
    async fn result(&self, pk: &str, record: &Record) -> Result<String, IdempotencyError> {
        match self {
            Store::Dynamo(s) => s.result(pk, record).await,
            Store::Directory(_) => record.result.clone().ok_or_else(|| missing_result(pk)),
        }
    }

    /// Stores the answer if `token` still holds the record; `false` when it does not.
    async fn complete(
        &self,
        pk: &str,
        token: &str,
        result: &str,
        expires: u64,
    ) -> Result<bool, IdempotencyError> {
        match self {
            Store::Dynamo(s) => s.complete(pk, token, result, expires).await,
            Store::Directory(s) => s.complete(pk, token, result, expires).await,
        }
    }

    /// Removes the record if `token` still holds it.
    async fn release(&self, pk: &str, token: &str) -> Result<(), IdempotencyError> {
        match self {
            Store::Dynamo(s) => s.release(pk, token).await,
            Store::Directory(s) => s.release(pk, token).await,
        }
    }

    /// Moves the end of the hold to `until_ms`, keeping the record `INPROGRESS`, if `token` still
    /// holds it.
    async fn hold(&self, pk: &str, token: &str, until_ms: u64) -> Result<(), IdempotencyError> {
        match self {
            Store::Dynamo(s) => s.hold(pk, token, until_ms).await,
            Store::Directory(s) => s.hold(pk, token, until_ms).await,
        }
    }
}

pub(crate) fn missing_result(pk: &str) -> IdempotencyError {
    IdempotencyError::Damaged {
        key: excerpt(pk),
        attribute: "result",
        problem: "is missing from a completed record".into(),
    }
}

/// Idempotency for one function: its store (if any), the scope its keys live in, and how long a
/// completed write is remembered.
#[derive(Debug)]
pub struct Idempotency {
    store: Option<Store>,
    /// The function's name: records are kept per function, so functions sharing a table never
    /// answer each other's keys.
    scope: String,
    ttl: Duration,
}

impl Idempotency {
    pub fn new(store: Option<Store>, scope: impl Into<String>, ttl: Duration) -> Self {
        Self {
            store,
            scope: scope.into(),
            ttl,
        }
    }

    pub async fn from_config(config: &Config, scope: impl Into<String>) -> Self {
        let store = match &config.idempotency {
            Some(store) => Some(Store::from_config(store).await),
            None => None,
        };
        Self::new(store, scope, config.idempotency_ttl)
    }

    /// Takes the payload out of an EventBridge event's envelope, and `idempotency_key` out of the
    /// payload, so the function's own input never sees it; read what is returned with
    /// [`crate::input::parse_payload`]. Without a key, an EventBridge event's `id` is the key, when a
    /// store is configured: EventBridge delivers at least once, and a repeated delivery keeps its
    /// id. The payload's hash is taken as the function will read it, less the key.
    pub fn split(&self, event: Value) -> Result<(Value, Once<'_>), CrmError> {
        let event_id = envelope_id(&event).map(str::to_owned);
        let mut payload = crate::input::unwrap_envelope(event);
        let given = take_key(&mut payload)?;
        let key = match (given, event_id) {
            (Some(_), _) if self.store.is_none() => {
                return Err(ConfigError::NoIdempotencyStore.into());
            }
            (Some(key), _) => Some(key),
            (None, Some(id)) if self.store.is_some() => {
                let key = IdempotencyKey::parse(&id).ok();
                if key.is_none() {
                    tracing::warn!(
                        event_id = %excerpt(&id),
                        "the EventBridge event's id cannot be an idempotency key; running unguarded"
                    );
                }
                key
            }
            _ => None,
        };
        let hash = key.as_ref().map(|_| payload_hash(&payload));
        Ok((
            payload,
            Once {
                guard: self,
                key,
                hash: hash.unwrap_or_default(),
            },
        ))
    }
}

/// An EventBridge event's `id`, when `event` is one.
fn envelope_id(event: &Value) -> Option<&str> {
    if crate::input::is_envelope(event) {
        event.get("id").and_then(Value::as_str)
    } else {
        None
    }
}

/// Removes and checks the key from the payload's object. A `null` key is no key.
fn take_key(payload: &mut Value) -> Result<Option<IdempotencyKey>, CrmError> {
    let Value::Object(fields) = payload else {
        return Ok(None);
    };
    match fields.remove(KEY_FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => IdempotencyKey::parse(&text)
            .map(Some)
            .map_err(|problem| CrmError::invalid(KEY_FIELD, problem.to_string())),
        Some(other) => Err(CrmError::invalid(
            KEY_FIELD,
            format!(
                "must be a string, not {}",
                match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            ),
        )),
    }
}

/// The SHA-256 of the payload in a canonical form: keys sorted at every level, no whitespace.
/// Two payloads that differ only in key order or spacing are the same request.
pub(crate) fn payload_hash(payload: &Value) -> String {
    let mut text = Vec::new();
    canonical(payload, &mut text);
    hex(&Sha256::digest(&text))
}

fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (name, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A key is written as the JSON string it is, with no copy of it made.
                let _ = serde_json::to_writer(&mut *out, name);
                out.push(b':');
                canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

fn scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a string, number, boolean or null to a vector cannot fail.
    let _ = serde_json::to_writer(out, value);
}

pub(crate) use crate::lambda::epoch_ms;

/// What the work of a guarded invocation is told.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The deadline for its Dataverse calls: the invocation's, less the time to record and answer.
    pub deadline: Deadline,
    /// The key, when the invocation has one.
    pub key: Option<IdempotencyKey>,
    /// A run of the same payload held the key before and ended without recording an answer (it
    /// crashed, timed out, or lost Dataverse's answer): what it wrote may be there already.
    pub takeover: bool,
}

/// One invocation's key and payload hash, ready to guard its work.
#[derive(Debug)]
pub struct Once<'a> {
    guard: &'a Idempotency,
    key: Option<IdempotencyKey>,
    hash: String,
}

impl Once<'_> {
    /// The key this invocation runs under, if any: given, or the EventBridge event's id.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        self.key.as_ref()
    }

    /// Runs `work` at most once per key: the first time, or again after a failure that wrote
    /// nothing. The answer is JSON text, the very text that is stored, so a replay answers byte for
    /// byte what the first run did (nothing parses it and writes it again).
    pub async fn run<O: Serialize>(
        self,
        context: &Context,
        work: impl AsyncFn(Attempt) -> Result<O, CrmError>,
    ) -> Result<Box<RawValue>, CrmError> {
        let (Some(key), Some(store)) = (self.key, self.guard.store.as_ref()) else {
            let attempt = Attempt {
                deadline: crate::lambda::deadline(context),
                key: None,
                takeover: false,
            };
            return answer(work(attempt).await.map_err(reported)?);
        };
        let left = crate::lambda::time_left(context);
        let invocation = left.map_or_else(Deadline::none, Deadline::after);
        let until = epoch_ms(
            SystemTime::now()
                + left
                    .unwrap_or(LONGEST_INVOCATION)
                    .saturating_add(SERVER_GRACE),
        );
        let run = Run {
            store,
            pk: format!("{}#{}", self.guard.scope, key.as_str()),
            key,
            hash: self.hash,
            token: uuid::Uuid::new_v4().to_string(),
            ttl: self.guard.ttl,
            deadline: invocation.less(STORE_MARGIN),
        };
        let takeover = match run.begin(until).await? {
            Begin::Run { takeover } => takeover,
            Begin::Replay(answer) => return Ok(answer),
        };
        let attempt = Attempt {
            deadline: invocation.less(crate::lambda::ANSWER_MARGIN + RECORD_MARGIN),
            key: Some(run.key.clone()),
            takeover,
        };
        match work(attempt).await {
            Ok(output) => {
                let text = answer(output)?;
                run.complete(&text).await;
                Ok(text)
            }
            Err(error) => {
                run.failed(&error, takeover).await;
                Err(reported(error))
            }
        }
    }
}

/// The answer as JSON text. Through a `Value` first, so its members are in the order they have
/// always been answered in, whatever the output's own order.
fn answer<O: Serialize>(output: O) -> Result<Box<RawValue>, CrmError> {
    serde_json::to_value(output)
        .and_then(|value| serde_json::value::to_raw_value(&value))
        .map_err(|e| {
            CrmError::from(dataverse::Error::Decode {
                path: "the answer".into(),
                json_path: ".".into(),
                source: e,
            })
        })
}

/// The error as the caller gets it: a Dataverse error without the note that its write may have
/// been carried out ([`dataverse::Error::MayHaveApplied`]), which is for [`wrote_nothing`] alone,
/// so that the error's type is the one the error inside has always had.
fn reported(error: CrmError) -> CrmError {
    match error {
        CrmError::Dataverse(e) => CrmError::from(e.into_reported()),
        other => other,
    }
}

/// What the record said at the start.
enum Begin {
    /// Run the work; `takeover` as in [`Attempt::takeover`].
    Run { takeover: bool },
    /// A completed run's answer, as stored.
    Replay(Box<RawValue>),
}

/// One guarded run of one key.
struct Run<'a> {
    store: &'a Store,
    pk: String,
    key: IdempotencyKey,
    hash: String,
    token: String,
    ttl: Duration,
    /// Bounds every store call.
    deadline: Deadline,
}

impl Run<'_> {
    fn timed_out(&self, action: &'static str) -> IdempotencyError {
        IdempotencyError::TimedOut {
            key: excerpt(&self.pk),
            action,
        }
    }

    /// Takes the key until `until` (epoch ms), or finds why not.
    async fn begin(&self, until: u64) -> Result<Begin, CrmError> {
        let expires = (until / 1000).saturating_add(self.ttl.as_secs());
        let record = Record {
            status: Status::InProgress,
            hash: self.hash.clone(),
            token: self.token.clone(),
            in_progress_until: until,
            expires,
            result: None,
            parts: None,
        };
        for _ in 0..BEGIN_ROUNDS {
            let now = epoch_ms(SystemTime::now());
            let begun = match self
                .deadline
                .less(UNDO_MARGIN)
                .run(self.store.begin(&self.pk, &record, now))
                .await
            {
                Some(Ok(begun)) => begun,
                // Read from a record no run could have written: nothing of ours was written.
                Some(Err(e @ IdempotencyError::Damaged { .. })) => return Err(e.into()),
                Some(Err(e)) => {
                    self.abandon().await;
                    return Err(e.into());
                }
                None => {
                    self.abandon().await;
                    return Err(self.timed_out("taking").into());
                }
            };
            let existing = match begun {
                Begun::Started { resumes } => {
                    if resumes {
                        tracing::warn!(key = %excerpt(self.key.as_str()), "taking over an idempotency key from a run that ended without recording its answer");
                    }
                    return Ok(Begin::Run { takeover: resumes });
                }
                // Removed between the write and the read: try again.
                Begun::Held(None) => continue,
                Begun::Held(Some(existing)) => existing,
            };
            if existing.expired(now) {
                // Forgotten since the condition was checked: try again.
                continue;
            }
            // The hash next, whatever the state: a different request must never get this one's
            // answer, or be told to wait for it.
            if existing.hash != self.hash {
                return Err(CrmError::invalid(
                    KEY_FIELD,
                    format!(
                        "'{}' was used for a different payload within the last {} s: give each distinct request its own key",
                        excerpt(self.key.as_str()),
                        self.ttl.as_secs()
                    ),
                ));
            }
            if existing.token == self.token {
                // An attempt of this very write was applied and its answer lost: the record is
                // ours, and what it replaced is unknown, so look for earlier work.
                return Ok(Begin::Run { takeover: true });
            }
            if existing.replaceable(&self.hash, now) {
                // Its hold ended since the condition was checked: try again.
                continue;
            }
            return match existing.status {
                Status::Completed => {
                    let text = self
                        .deadline
                        .run(self.store.result(&self.pk, &existing))
                        .await
                        .ok_or_else(|| self.timed_out("reading"))??;
                    // Checked, not parsed: the text itself is the answer.
                    let stored =
                        RawValue::from_string(text).map_err(|e| IdempotencyError::Damaged {
                            key: excerpt(&self.pk),
                            attribute: "result",
                            problem: format!("is not JSON ({e})"),
                        })?;
                    tracing::info!(key = %excerpt(self.key.as_str()), "a repeat: answering with the stored result");
                    Ok(Begin::Replay(stored))
                }
                Status::InProgress => Err(CrmError::Conflict {
                    key: excerpt(self.key.as_str()),
                    left_ms: existing.in_progress_until.saturating_sub(now),
                }),
            };
        }
        // The record kept changing under us: other runs are busy with this key. A second is a
        // guess at how soon it settles.
        Err(CrmError::Conflict {
            key: excerpt(self.key.as_str()),
            left_ms: 1000,
        })
    }

    /// After a begin that failed without an answer (timed out, or the store's error after
    /// attempts that may have landed): a record holding this run's token may stand, `INPROGRESS`
    /// until this run's deadline and [`SERVER_GRACE`] after, turning every retry meanwhile into a
    /// `Crm.Conflict` although nothing was sent to Dataverse. End its hold now, if time remains.
    ///
    /// Not removed: what the begin replaced is unknown, and may have been the record of a run
    /// that crashed after writing, whose row a takeover must look for. Ended, the record makes the
    /// next run a takeover, as a begin whose answer was lost and that was sent again does. Best
    /// effort: the store failed a moment ago, and a begin still on the way can land after this.
    async fn abandon(&self) {
        let now = epoch_ms(SystemTime::now());
        let outcome = self
            .deadline
            .run(self.store.hold(&self.pk, &self.token, now))
            .await;
        if !matches!(outcome, Some(Ok(()))) {
            let problem = match outcome {
                Some(Err(e)) => e.to_string(),
                _ => "no answer before the deadline".into(),
            };
            tracing::warn!(
                key = %excerpt(self.key.as_str()),
                problem,
                "taking the idempotency key failed, and the hold of a record it may have left could not be ended; a retry may get Crm.Conflict until that hold ends"
            );
        }
    }

    /// Records the answer. A failure here is logged, not returned: the write is done, and failing
    /// would only invite a retry to write again.
    async fn complete(&self, answer: &RawValue) {
        let text = answer.get();
        let expires = epoch_ms(SystemTime::now())
            .saturating_div(1000)
            .saturating_add(self.ttl.as_secs());
        let key = excerpt(self.key.as_str());
        match self
            .deadline
            .run(self.store.complete(&self.pk, &self.token, text, expires))
            .await
        {
            Some(Ok(true)) => {}
            Some(Ok(false)) => tracing::warn!(
                key = %key,
                "another run took this idempotency key over before the answer was recorded; the answer stands, unrecorded"
            ),
            Some(Err(e)) => tracing::error!(
                key = %key,
                error = %e,
                "the answer could not be recorded; a repeat after this invocation's deadline runs again"
            ),
            None => tracing::error!(
                key = %key,
                "recording the answer did not finish before the deadline; a repeat after it runs again"
            ),
        }
    }

    /// After a failed run: remove the record when nothing was written, so a retry runs afresh.
    /// Otherwise keep it, so a retry knows to look for what was written: held [`SERVER_GRACE`]
    /// from now when this run's write may still be under way in Dataverse (rather than until this
    /// invocation's deadline and the grace after), or its hold ended now when this run, a takeover,
    /// was refused and so wrote nothing itself.
    async fn failed(&self, error: &CrmError, takeover: bool) {
        let now = epoch_ms(SystemTime::now());
        let clean = wrote_nothing(error);
        // A takeover keeps the record whatever happened: the crashed run's write may still be
        // there, and the next run must look for it too.
        let release = !takeover && clean;
        let until = if clean {
            now
        } else {
            now.saturating_add(u64::try_from(SERVER_GRACE.as_millis()).unwrap_or(u64::MAX))
        };
        let call = async {
            if release {
                self.store.release(&self.pk, &self.token).await
            } else {
                self.store.hold(&self.pk, &self.token, until).await
            }
        };
        let outcome = self.deadline.run(call).await;
        if !matches!(outcome, Some(Ok(()))) {
            let problem = match outcome {
                Some(Err(e)) => e.to_string(),
                _ => "no answer before the deadline".into(),
            };
            tracing::warn!(
                key = %excerpt(self.key.as_str()),
                release,
                problem,
                "the idempotency record could not be updated after the failure; a retry waits for this invocation's deadline"
            );
        }
    }
}

/// Whether a failed run provably changed nothing in Dataverse: refused before sending, or answered
/// with an error (Dataverse applies a write, and a changeset, whole or not at all), with no earlier
/// attempt of it unanswered ([`dataverse::Error::may_have_applied`] knows the client's errors). Any
/// error this code does not know may hide a write.
fn wrote_nothing(error: &CrmError) -> bool {
    match error {
        CrmError::Dataverse(e) => !e.may_have_applied(),
        CrmError::InvalidInput { .. }
        | CrmError::Configuration(_)
        | CrmError::SecretsUnavailable { .. }
        | CrmError::NotStarted { .. }
        | CrmError::Conflict { .. } => true,
        _ => false,
    }
}

/// What a writer function needs: the Dataverse clients and its idempotency store.
#[derive(Debug)]
pub struct Writer {
    pub crm: Crm,
    pub idempotency: Idempotency,
}

impl Writer {
    /// From the environment. Records are scoped by `AWS_LAMBDA_FUNCTION_NAME`, or by `name` (the
    /// binary's) where that is unset, as in local runs.
    pub async fn from_env(name: &str) -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let scope = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| crate::input::is_plain_name(n, 140))
            .unwrap_or_else(|| name.to_owned());
        Ok(Self {
            crm: Crm::new(CredentialSource::from_config(&config.secrets).await),
            idempotency: Idempotency::from_config(&config, scope).await,
        })
    }
}

#[cfg(test)]
mod tests;
