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
mod input;
mod order;
mod state;

use std::time::{Duration, Instant, SystemTime};

use dataverse::{Deadline, Table};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use input::{Kind, TriggerInput};
pub use order::OrderBy;
pub use state::{Changes, Deletions, Phase, Position, Seen, SeenEntry, TriggerState};

use crate::config::Config;
use crate::cursor::{CursorError, CursorStore, Record};
use crate::events::{Event, EventSink};
use crate::{ConfigError, Crm, CrmError, lambda};

/// Lambda refuses a response over 6 MB: past this budget, returned rows are cut to their id.
const RESPONSE_BUDGET: usize = 5_500_000;
/// Time kept after publishing to save fingerprints and the cursor.
const COMMIT_RESERVE: Duration = Duration::from_secs(1);
/// EventBridge refuses an entry over 256 KB: past this, an event's record is cut to its id.
const DETAIL_BUDGET: usize = 250_000;
/// The least invocation time a poll can do its work in: the answer margin (0.3 s), the reserve
/// [`fetch_deadline`] keeps to publish and save (at least a second), and a little over a second to
/// fetch in. With less, a poll would find nothing every time and still answer as if all were well.
pub const MIN_POLL_TIME: Duration = Duration::from_millis(2500);
/// Room kept in the URL for what the cursor adds to the user's query (its filter, the key columns
/// added to `$select`, its order), when checking up front that the query fits.
const CURSOR_URL_RESERVE: usize = 1024;

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

/// `{"value": [...]}`: the changes this poll fired.
#[derive(Debug, Default, Serialize)]
pub struct Output {
    pub value: Vec<Value>,
}

/// One thing a scan did, applied to the cursor only if every change fired before it was published.
#[derive(Debug)]
pub(crate) enum Step {
    /// A row handled by `when-record-created/updated`: fired (as change `fired`) or skipped.
    Change {
        fired: Option<usize>,
        /// Set for rows beyond the cursor: the cursor moves to it.
        forward: Option<Position>,
        seen: SeenEntry,
        fingerprint: Option<(Uuid, String)>,
    },
    /// `when-record-deleted`: after this step the state is `state`.
    Deletion {
        fired: Option<usize>,
        state: Deletions,
    },
}

impl Step {
    fn fired(&self) -> Option<usize> {
        match self {
            Step::Change { fired, .. } | Step::Deletion { fired, .. } => *fired,
        }
    }
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

/// What a scan found, and how far it got before an error, if one stopped it.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// When the scan began (Unix seconds): the next poll's overlap window reaches back from it.
    started: i64,
    /// One event per change found, in order...
    events: Vec<Event>,
    /// ...and, at the same index, what the poll returns for it.
    outputs: Vec<Value>,
    steps: Vec<Step>,
    error: Option<CrmError>,
}

impl Scan {
    fn fire(&mut self, event: Event, output: Value) -> usize {
        self.events.push(event);
        self.outputs.push(output);
        self.events.len() - 1
    }

    fn fired(&self) -> usize {
        self.events.len()
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The event id: stable for the same change, so a redelivery carries the same one. A creation and a
/// deletion happen once per row, so their identity leaves the version out; an update is one version.
pub(crate) fn event_id(
    dataset: &str,
    table: &str,
    id: Uuid,
    version: Option<u64>,
    kind: Kind,
) -> String {
    let version = version.map(|v| v.to_string()).unwrap_or_default();
    let digest = Sha256::digest(format!("{dataset}|{table}|{id}|{version}|{}", kind.short()));
    hex(&digest[..16])
}

/// Builds the event for a change (`docs/events.md`), cutting a record EventBridge would refuse down to
/// its id.
pub(crate) fn change_event(
    kind: Kind,
    dataset: &str,
    table: &Table,
    id: Uuid,
    version: Option<u64>,
    changed_on: Option<&str>,
    record: Option<&Map<String, Value>>,
) -> Event {
    /// The detail, serialised straight from borrowed parts (the record is not copied).
    #[derive(Serialize)]
    struct Detail<'a> {
        event_id: &'a str,
        dataset: &'a str,
        table: &'a str,
        id: Uuid,
        version: Option<String>,
        changed_on: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        record: Option<&'a Map<String, Value>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    }
    let event_version = if kind == Kind::Updated { version } else { None };
    let event_id = event_id(dataset, &table.entity_set_name, id, event_version, kind);
    let mut detail = Detail {
        event_id: &event_id,
        dataset,
        table: &table.entity_set_name,
        id,
        version: version.map(|v| v.to_string()),
        changed_on,
        record,
        truncated: false,
    };
    // Serialising maps of JSON values cannot fail.
    let mut text = serde_json::to_string(&detail).unwrap_or_default();
    let key_only: Map<String, Value>;
    if text.len() > DETAIL_BUDGET {
        key_only = Map::from_iter([(
            table.primary_id_attribute.clone(),
            Value::String(id.to_string()),
        )]);
        detail.record = Some(&key_only);
        detail.truncated = true;
        text = serde_json::to_string(&detail).unwrap_or_default();
    }
    Event {
        detail_type: kind.detail_type(),
        detail: RawValue::from_string(text).unwrap_or_else(|_| empty_detail()),
    }
}

fn empty_detail() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
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

/// Applies the steps of the published prefix to the state, and collects the fingerprints to save.
fn settle(
    initial: TriggerState,
    scan: &Scan,
    accepted: usize,
    overlap: Duration,
) -> (TriggerState, Vec<(Uuid, String)>) {
    let steps = &scan.steps;
    let mut state = initial;
    let mut fingerprints = Vec::new();
    for step in steps {
        if step.fired().is_some_and(|i| i >= accepted) {
            break;
        }
        match (step, &mut state) {
            (
                Step::Change {
                    forward,
                    seen,
                    fingerprint,
                    ..
                },
                TriggerState::Created(c) | TriggerState::Updated(c),
            ) => {
                if let Some(position) = forward {
                    c.position = c.position.max(*position);
                }
                if !c.seen.contains(seen.id, seen.version) {
                    c.seen.0.push(*seen);
                }
                fingerprints.extend(fingerprint.clone());
            }
            (Step::Deletion { state: next, .. }, TriggerState::Deleted(d)) => *d = next.clone(),
            _ => {}
        }
    }
    if let TriggerState::Created(c) | TriggerState::Updated(c) = &mut state {
        // The next poll re-reads from this scan's start less the overlap: keep what that needs.
        c.scanned_at = Some(scan.started);
        let floor = c.window_floor(scan.started, overlap);
        let kept_from = c.seen.prune(floor);
        if kept_from > floor {
            tracing::warn!(
                kept_from,
                "the overlap window holds too many changes; it is narrowed to stay bounded"
            );
            c.seen_floor = kept_from;
        }
    }
    (state, fingerprints)
}

/// Cuts returned rows down to their id once the response would outgrow Lambda's limit.
fn fit_response(values: Vec<Value>, primary_id: &str) -> Vec<Value> {
    let mut used = 0;
    values
        .into_iter()
        .map(|value| {
            let size = value.to_string().len();
            used += size;
            if used <= RESPONSE_BUDGET {
                return value;
            }
            let id = value
                .get(primary_id)
                .or_else(|| value.get("id"))
                .cloned()
                .unwrap_or(Value::Null);
            json!({ primary_id: id, "truncated": true })
        })
        .collect()
}

/// One poll of a trigger: see the module documentation.
pub async fn poll(
    kind: Kind,
    deps: &TriggerDeps,
    event: LambdaEvent<Value>,
) -> Result<Output, CrmError> {
    let started = Instant::now();
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
    };
    let table = deps
        .crm
        .call(&input.dataset, async |client| {
            client.fits(&user_query, CURSOR_URL_RESERVE)?;
            client.table(input.table.as_str(), deadline).await
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
                changes::scan(&poll, stored).await?
            }
            Kind::Deleted => {
                let stored = match stored {
                    None => None,
                    Some(TriggerState::Deleted(d)) => Some(d),
                    Some(_) => return Err(other_kind().into()),
                };
                deleted::scan(&poll, stored).await?
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
        let (state, fingerprints) = settle(initial, &scan, published.accepted, deps.overlap);
        store.put_fingerprints(key, &fingerprints).await?;
        let record = Record {
            state: serde_json::to_string(&state).map_err(|e| CursorError::Corrupt {
                key: key.to_owned(),
                problem: format!("the new state cannot be written: {e}"),
            })?,
            position: state.position(),
        };
        store.commit(lease, &record).await?;
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
        let mut value = scan.outputs;
        value.truncate(published.accepted);
        if let Some(orderby) = &input.orderby {
            order::sort(&mut value, orderby);
        }
        let output = Output {
            value: fit_response(value, &table.primary_id_attribute),
        };
        Ok((output, after_save))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_per_change() {
        let id = Uuid::from_u128(7);
        let a = event_id("contoso", "accounts", id, Some(5), Kind::Updated);
        assert_eq!(
            a,
            event_id("contoso", "accounts", id, Some(5), Kind::Updated)
        );
        assert_ne!(
            a,
            event_id("contoso", "accounts", id, Some(6), Kind::Updated)
        );
        assert_ne!(
            a,
            event_id("contoso", "accounts", id, Some(5), Kind::Created)
        );
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn settling_stops_at_the_first_change_not_published() {
        let initial = TriggerState::Updated(Changes {
            since: 0,
            position: Position::Updated { version: 10 },
            seen: Seen::default(),
            seen_floor: 0,
            scanned_at: None,
        });
        let now = unix_now();
        let step = |fired: Option<usize>, version: u64| Step::Change {
            fired,
            forward: Some(Position::Updated { version }),
            seen: SeenEntry {
                id: Uuid::from_u128(u128::from(version)),
                version,
                at: now,
            },
            fingerprint: None,
        };
        let scan = Scan {
            started: now,
            steps: vec![
                step(Some(0), 11),
                step(None, 12),
                step(Some(1), 13),
                step(Some(2), 14),
            ],
            ..Scan::default()
        };
        let (state, _) = settle(initial.clone(), &scan, 1, Duration::from_secs(60));
        let TriggerState::Updated(c) = state else {
            panic!()
        };
        assert_eq!(
            c.position,
            Position::Updated { version: 12 },
            "past the skipped row, not past change 1"
        );
        assert_eq!(c.seen.0.len(), 2);
        let (all, _) = settle(initial, &scan, 3, Duration::from_secs(60));
        let TriggerState::Updated(c) = all else {
            panic!()
        };
        assert_eq!(c.position, Position::Updated { version: 14 });
    }

    #[test]
    fn oversized_records_are_cut_to_their_id() {
        let table = Table {
            logical_name: "account".into(),
            entity_set_name: "accounts".into(),
            primary_id_attribute: "accountid".into(),
            primary_name_attribute: None,
            change_tracking_enabled: true,
        };
        let mut record = Map::new();
        record.insert("description".into(), Value::String("x".repeat(300_000)));
        let id = Uuid::from_u128(1);
        let event = change_event(
            Kind::Created,
            "contoso",
            &table,
            id,
            Some(3),
            None,
            Some(&record),
        );
        let detail: Value = serde_json::from_str(event.detail.get()).unwrap();
        assert_eq!(detail["truncated"], true);
        assert_eq!(detail["record"], json!({"accountid": id}));
        assert!(event.size("dynamics.crm") < 256 * 1024);
        let small = change_event(Kind::Deleted, "contoso", &table, id, None, None, None);
        let detail: Value = serde_json::from_str(small.detail.get()).unwrap();
        assert!(detail.get("record").is_none());
        assert!(detail.get("truncated").is_none());
        assert_eq!(detail["version"], Value::Null);
    }
}
