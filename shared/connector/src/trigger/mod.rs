//! The polling triggers: `when-record-created`, `when-record-updated`, `when-record-deleted`.
//!
//! One poll:
//!
//! 1. takes the trigger's cursor lease (an overlapping poll returns at once, firing nothing);
//! 2. asks Dataverse what changed since the cursor, page by page, until `$top` changes are found, the
//!    changes run out, or the time to fetch is up (a reserve is kept to publish and checkpoint);
//! 3. publishes one event per change, in order;
//! 4. advances the cursor past exactly the changes that were published, and saves it;
//! 5. returns `{"value": [...]}` with what it fired.
//!
//! A process killed anywhere in this sequence has not moved the cursor past anything unpublished, so the
//! next poll delivers those changes again, under the same `event_id`. How each kind finds its changes,
//! and why that loses none, is explained in `changes.rs` and `deleted.rs`.

mod changes;
mod deleted;
mod event;
mod input;
mod kept;
mod members;
mod order;
mod row;
mod settle;
mod state;

use std::time::{Duration, Instant, SystemTime};

use dataverse::{Deadline, Table};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

#[cfg(feature = "webhook")]
pub(crate) use event::change_id;
pub(crate) use event::hex;
#[cfg(feature = "webhook")]
pub(crate) use event::{Change, ColumnChanges, event_for};
pub use input::{Kind, TriggerInput};
pub use order::OrderBy;
pub use state::{Changes, Deletions, Phase, Position, Seen, SeenEntry, TriggerState};

use self::settle::{Scan, Step, settle};
use crate::config::Config;
use crate::cursor::{CursorError, CursorStore, Record};
use crate::events::EventSink;
use crate::metrics::{self, Metric};
use crate::{ConfigError, Crm, CrmError, lambda};

/// Time kept after publishing to save fingerprints and the cursor.
const COMMIT_RESERVE: Duration = Duration::from_secs(1);
/// The least invocation time a poll can do its work in: the answer margin (0.3 s), the reserve
/// [`fetch_deadline`] keeps to publish and save (at least a second), and a little over a second to
/// fetch in. With less, a poll would find nothing every time and still answer as if all were well.
pub const MIN_POLL_TIME: Duration = Duration::from_millis(2500);
/// Room kept in the URL for what the cursor adds to the user's query (its filter, the key columns
/// added to `$select`, its order), when checking up front that the query fits.
const CURSOR_URL_RESERVE: usize = 1024;

/// What Dataverse sent that a trigger cannot work with. Each is a fault on Dataverse's side (or
/// between it and us), not the caller's: the poll stops there, and the cursor stays where it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A row that is not a JSON object.
    #[error("a row is not a JSON object: {0}")]
    Unreadable(#[source] serde_json::Error),

    /// A row whose key column (id, times, version) is missing or of the wrong kind.
    #[error("a row's '{column}' is {value}, where {expected} was expected")]
    WrongValue {
        column: String,
        value: String,
        expected: &'static str,
    },

    /// A change-tracking page that ends neither in a next link nor in a delta link.
    #[error("a delta page had neither a next link nor a delta link")]
    DeltaWithoutEnd,

    /// An event or the answer could not be written as JSON.
    #[error("could not write JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

/// What a trigger function needs.
#[derive(Debug)]
pub struct TriggerDeps {
    pub crm: Crm,
    pub store: CursorStore,
    pub sink: EventSink,
    /// How long a late commit can be caught (`CRM_TRIGGER_OVERLAP_SECS`).
    pub overlap: Duration,
}

impl TriggerDeps {
    /// From the `CRM_*` variables; a trigger needs `CRM_STATE`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let Some(state) = &config.state else {
            return Err(ConfigError::Environment(vec![
                "CRM_STATE is not set: a trigger needs a cursor store (dynamodb:<table> or file:<directory>)".into(),
            ]));
        };
        Ok(Self {
            crm: Crm::new(crate::CredentialSource::from_config(&config.secrets).await),
            store: CursorStore::from_config(state).await,
            sink: EventSink::from_config(&config.events, &config.event_source).await,
            overlap: config.trigger_overlap,
        })
    }
}

/// A trigger function's whole life: logging, its dependencies from the `CRM_*` variables, then one
/// [`poll`] per invocation. The three trigger binaries differ only in `kind`.
pub async fn serve(kind: Kind) -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let deps = TriggerDeps::from_env().await;
    lambda::serve(&deps, async move |deps, event| {
        poll(kind, deps, event).await
    })
    .await
}

/// `{"value": [...]}`: the changes this poll fired, each row as Dataverse sent it; with
/// `ignore_own_changes`, also how many changes by the connector's own user it passed over.
#[derive(Debug, Default, Serialize)]
pub struct Output {
    pub value: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_own: Option<u64>,
}

/// What both scans need to know about the poll.
#[derive(Clone, Copy)]
pub(crate) struct Poll<'a> {
    kind: Kind,
    client: &'a dataverse::Client,
    deps: &'a TriggerDeps,
    key: &'a str,
    table: &'a Table,
    input: &'a TriggerInput,
    /// When fetching must stop, to leave time to publish and save the cursor.
    deadline: Deadline,
}

/// Dataverse's time when it sent `page`, in Unix seconds. Row timestamps come from the same clock,
/// so comparing them with this is free of any skew between Lambda and Dataverse. An answer without a
/// `Date` (a proxy that strips it) falls back to this machine's clock, which is what a poll would use
/// without one, and says so.
fn server_now(page: &dataverse::Page) -> i64 {
    let at = page.date.unwrap_or_else(|| {
        tracing::warn!("Dataverse's answer has no Date header; using this machine's clock");
        SystemTime::now()
    });
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How long to keep for publishing and saving the cursor: a fifth of the time left, between 1 and
/// 10 seconds.
fn fetch_deadline(deadline: Deadline) -> Deadline {
    match deadline.remaining() {
        None => deadline,
        Some(left) => {
            deadline.less((left / 5).clamp(Duration::from_secs(1), Duration::from_secs(10)))
        }
    }
}

/// One poll of a trigger: see the module documentation. Every poll records `PollDuration`,
/// `EventsFired` and `EventsFailed` for the invocation's metrics, whatever its outcome; `Lag` and
/// `Backlog` when it got as far as publishing (`docs/metrics.md`).
pub async fn poll(
    kind: Kind,
    deps: &TriggerDeps,
    event: LambdaEvent<Value>,
) -> Result<Output, CrmError> {
    let started = Instant::now();
    metrics::set(Metric::EventsFired, 0);
    metrics::set(Metric::EventsFailed, 0);
    let result = poll_once(kind, deps, event, started).await;
    metrics::set(
        Metric::PollDuration,
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    result
}

async fn poll_once(
    kind: Kind,
    deps: &TriggerDeps,
    event: LambdaEvent<Value>,
    started: Instant,
) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let input = TriggerInput::parse(kind, payload)?;
    if let Some(left) = lambda::time_left(&context)
        && left < MIN_POLL_TIME
    {
        return Err(ConfigError::TooLittleTime {
            left_ms: left.as_millis(),
            needed_ms: MIN_POLL_TIME.as_millis(),
        }
        .into());
    }
    let deadline = lambda::deadline(&context);
    let user_query = dataverse::Query {
        select: input.select.clone(),
        filter: input.filter.clone(),
        orderby: input.orderby_text.clone(),
        expand: None,
        count: false,
        formatted_values: false,
    };
    let table = deps
        .crm
        .call(&input.dataset, async |client| {
            client.fits(&user_query, CURSOR_URL_RESERVE)?;
            client.table(&input.table, deadline).await
        })
        .await?;
    if kind == Kind::Deleted && !table.change_tracking_enabled {
        return Err(ConfigError::Table {
            table: table.logical_name.clone(),
            problem: "change tracking is not enabled, and when-record-deleted needs it: turn on 'Track changes' in the table's properties".into(),
        }
        .into());
    }
    let key = input.cursor_key(kind, &table.logical_name);
    let owner = if context.request_id.is_empty() {
        Uuid::new_v4().to_string()
    } else {
        context.request_id.clone()
    };
    // Lambda ends the invocation at its deadline, so the lease need not outlive it (a second covers
    // the answer margin); a killed poll's lease frees itself then.
    let hold = deadline.remaining().unwrap_or(Duration::from_secs(900)) + Duration::from_secs(1);
    let store = deps.store.within(deadline);
    let Some(lease) = store
        .acquire(&key, &owner, SystemTime::now() + hold)
        .await?
    else {
        tracing::info!(trigger = kind.name(), cursor = %key, "another poll holds this cursor; nothing to do");
        return Ok(Output::default());
    };
    // One exit path for everything done under the lease: any failure before the cursor is saved
    // gives the lease back, so the next poll reports the same failure instead of finding the cursor
    // held and answering an empty success until the deadline.
    let leased = Leased {
        kind,
        deps,
        input: &input,
        table: &table,
        key: &key,
        lease: &lease,
        deadline,
    };
    let (output, after_save) = match leased.poll().await {
        Ok(done) => done,
        Err(e) => {
            if let Err(release) = store.release(&lease).await {
                tracing::warn!(error = %release, "could not release the cursor lease; it expires at the deadline");
            }
            return Err(e);
        }
    };
    tracing::info!(
        trigger = kind.name(),
        dataset = %input.dataset,
        table = %table.entity_set_name,
        fired = output.value.len(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "poll done"
    );
    match after_save {
        Some(error) => Err(error),
        None => Ok(output),
    }
}

/// A poll that holds its cursor's lease.
struct Leased<'a> {
    kind: Kind,
    deps: &'a TriggerDeps,
    input: &'a TriggerInput,
    table: &'a Table,
    key: &'a str,
    lease: &'a crate::cursor::Lease,
    deadline: Deadline,
}

impl Leased<'_> {
    /// Reads, scans, publishes and saves. An `Err` means nothing was saved (the caller releases the
    /// lease); once saved, an error that still needs reporting comes back beside the output.
    async fn poll(&self) -> Result<(Output, Option<CrmError>), CrmError> {
        let Leased {
            kind,
            deps,
            input,
            table,
            key,
            lease,
            deadline,
        } = *self;
        let store = deps.store.within(deadline);
        let stored = match lease.record()? {
            None => None,
            Some(record) => Some(stored_state(key, record)?),
        };
        let client = deps.crm.client(&input.dataset).await?;
        let poll = Poll {
            kind,
            client: &client,
            deps,
            key,
            table,
            input,
            deadline: fetch_deadline(deadline),
        };
        let other_kind = || CursorError::Corrupt {
            key: key.to_owned(),
            problem: "it belongs to another kind of trigger".into(),
        };
        let (initial, mut scan, fresh) = match kind {
            Kind::Created | Kind::Updated => {
                let stored = match stored {
                    None => None,
                    Some(TriggerState::Created(c)) if kind == Kind::Created => Some(c),
                    Some(TriggerState::Updated(c)) if kind == Kind::Updated => Some(c),
                    Some(_) => return Err(other_kind().into()),
                };
                Box::pin(changes::scan(&poll, stored)).await?
            }
            Kind::Deleted => {
                let stored = match stored {
                    None => None,
                    Some(TriggerState::Deleted(d)) => Some(d),
                    Some(_) => return Err(other_kind().into()),
                };
                Box::pin(deleted::scan(&poll, stored)).await?
            }
        };
        // Nothing found and nothing new to save: give the cursor back untouched.
        if scan.steps.is_empty()
            && !fresh
            && let Some(error) = scan.error.take()
        {
            return Err(error);
        }

        // Publishing stops short of the deadline by enough to save the cursor afterwards.
        let published = deps
            .sink
            .publish(&scan.events, deadline.less(COMMIT_RESERVE))
            .await;
        record_published(&scan, published.accepted);
        let settled = settle(initial, &scan, published.accepted, deps.overlap);
        let state = settled.state;
        store.put_fingerprints(key, &settled.fingerprints).await?;
        let record = Record {
            state: serde_json::to_string(&state).map_err(|e| CursorError::Corrupt {
                key: key.to_owned(),
                problem: format!("the new state cannot be written: {e}"),
            })?,
            position: state.position(),
        };
        store.commit(lease, &record).await?;
        if (input.filter.is_some() || input.remember_ids) && kind == Kind::Deleted {
            // After the save: a deletion published but still a member would only fire again (same
            // event id) if the save were lost and its page read again. Left behind, it costs one
            // item and fires nothing, since a deleted row's id never returns.
            if let Err(error) = store.change_members(key, &[], &settled.deleted, 0).await {
                tracing::warn!(error = %error, rows = settled.deleted.len(), "could not take deleted rows out of the membership set; they stay as harmless leftovers");
            }
        }
        tracing::debug!(
            found = scan.fired(),
            examined = scan.steps.len(),
            "cursor saved"
        );
        let mut after_save = published.error.map(CrmError::from);
        if let Some(error) = scan.error {
            if scan.steps.is_empty() {
                after_save = after_save.or(Some(error));
            } else {
                // Progress was made and saved: the rest waits for the next poll, which starts here.
                tracing::warn!(error = %error.message(), "the poll stopped early; the rest waits for the next poll");
            }
        }
        let mut fired = scan.fired;
        fired.truncate(published.accepted);
        if let Some(orderby) = &input.orderby {
            order::sort(&mut fired, orderby);
        }
        // The cursor is saved: a failure from here on is reported beside what was done, never
        // instead of it.
        let value = match event::fit_response(fired, &table.primary_id_attribute) {
            Ok(value) => value,
            Err(error) => {
                after_save = after_save.or(Some(error.into()));
                Vec::new()
            }
        };
        if settled.skipped_own > 0 {
            tracing::info!(
                skipped_own = settled.skipped_own,
                "changes by the connector's own user passed over"
            );
        }
        if input.ignore_own_changes {
            metrics::set(Metric::OwnChangesSkipped, settled.skipped_own);
        }
        let output = Output {
            value,
            skipped_own: input.ignore_own_changes.then_some(settled.skipped_own),
        };
        Ok((output, after_save))
    }
}

/// The poll's metrics once its events went out: what was published and what was not, how old the
/// oldest change published was by Dataverse's clock (when the scan read one), and what is left.
fn record_published(scan: &Scan, accepted: usize) {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let unpublished = scan.fired().saturating_sub(accepted);
    metrics::set(Metric::EventsFired, count(accepted));
    metrics::set(Metric::EventsFailed, count(unpublished));
    let oldest = scan.changed_at[..accepted.min(scan.changed_at.len())]
        .iter()
        .flatten()
        .min();
    if let (Some(oldest), Some(now)) = (oldest, scan.started) {
        // A change time after Dataverse's own "now" can only come from a clock that moved back.
        metrics::set(
            Metric::Lag,
            u64::try_from(now.saturating_sub(*oldest)).unwrap_or(0),
        );
    }
    if let Some(left) = scan.backlog {
        // Changes found but not published are found again by the next poll: left as well.
        metrics::set(Metric::Backlog, left.saturating_add(count(unpublished)));
    }
}

/// The stored state, refused unless it is one a poll could have saved: it parses, its times are in
/// range, and the position kept beside it (which the store orders saves by) is the state's own. A
/// position ahead of the state would make every save "move backwards" after publishing, so the same
/// events would go out on every poll; it fails here, before anything is published.
fn stored_state(key: &str, record: &Record) -> Result<TriggerState, CursorError> {
    let damaged = |attribute, problem| crate::cursor::damaged(key, attribute, problem);
    let state = serde_json::from_str::<TriggerState>(&record.state)
        .map_err(|e| damaged("state", crate::excerpt(&e.to_string())))?;
    if let Some(problem) = state.damage() {
        return Err(damaged("state", problem));
    }
    if state.position() != record.position {
        return Err(damaged(
            "position",
            format!(
                "'{}' is not the position of the stored state ('{}')",
                crate::excerpt(&record.position),
                state.position()
            ),
        ));
    }
    Ok(state)
}
