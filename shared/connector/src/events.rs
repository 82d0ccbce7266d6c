//! Where triggers publish: EventBridge, a JSON-lines file, or nowhere (`CRM_EVENTS`).
//!
//! Publishing reports how many events, from the first, were accepted. The trigger advances its cursor
//! only past those: an event that was not accepted is fetched and published again by the next poll,
//! with the same `event_id`. EventBridge calls run several at a time (`CRM_EVENTS_CONCURRENCY`), but
//! their outcomes are read in event order, so "accepted" is still a prefix (see
//! `publish_eventbridge`).

use std::io::Write as _;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use dataverse::Deadline;
use futures_util::{StreamExt as _, stream};

use crate::config::EventsConfig;

/// EventBridge's limit for one `PutEvents` request, entries included: 256 KB.
const REQUEST_LIMIT: usize = 256 * 1024;
/// Attempts at entries EventBridge reported as failed.
const ATTEMPTS: u32 = 5;

/// One change, ready to publish.
#[derive(Debug, Clone)]
pub struct Event {
    pub detail_type: &'static str,
    /// The detail, a JSON object as text: built once per change, sent as it is.
    pub detail: String,
}

impl Event {
    /// What EventBridge counts toward the 256 KB entry limit: source, detail type, detail, and 14
    /// bytes for the time (the calculation AWS documents for `PutEvents` entry sizes).
    pub fn size(&self, source: &str) -> usize {
        14 + source.len() + self.detail_type.len() + self.detail.len()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The last attempt failed (EventBridge failed entries, or the call failed) and no retry was left
    /// or had time.
    #[error("EventBridge did not accept {failed} event(s) after {attempts} attempt(s): {last}")]
    Rejected {
        failed: usize,
        attempts: u32,
        #[source]
        last: Box<Refusal>,
    },
    /// The last attempt had no answer before the deadline: its events may or may not have been
    /// delivered.
    #[error(
        "PutEvents timed out: no answer before the deadline, after {attempts} attempt(s); {pending} event(s) may or may not have been delivered, and the next poll publishes them again with the same event ids"
    )]
    TimedOut { pending: usize, attempts: u32 },
    /// The bus is missing or the role may not publish to it: retrying will not help.
    #[error("PutEvents to '{bus}' is refused: {}", DisplayErrorContext(&**source))]
    Unusable {
        bus: String,
        #[source]
        source: Box<aws_sdk_eventbridge::Error>,
    },
    #[error("writing events to {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the deadline arrived before every event was published")]
    Deadline,
    /// An event could not be written as JSON.
    #[error("an event could not be written as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Why EventBridge did not take an event, on the last attempt.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The `PutEvents` call itself failed.
    #[error("{}", DisplayErrorContext(.0))]
    Call(#[source] aws_sdk_eventbridge::Error),
    /// The call succeeded, but this entry failed (`ThrottlingException`, `InternalFailure`...).
    #[error("{code}: {message}")]
    Entry { code: String, message: String },
    /// The answer had fewer results than entries sent.
    #[error("the answer did not report on every entry")]
    Unreported,
}

impl EventError {
    pub fn error_type(&self) -> &'static str {
        match self {
            EventError::Unusable { .. } => "Crm.Configuration",
            _ => "Crm.ServerError",
        }
    }
}

/// The outcome of a publish: the first `accepted` events are delivered; `error` says why the rest
/// are not.
#[derive(Debug)]
pub struct Published {
    pub accepted: usize,
    pub error: Option<EventError>,
}

#[derive(Debug)]
pub enum EventSink {
    EventBridge {
        client: aws_sdk_eventbridge::Client,
        bus: String,
        source: String,
        /// At most this many `PutEvents` calls in flight (`CRM_EVENTS_CONCURRENCY`).
        concurrency: NonZeroUsize,
    },
    File {
        path: PathBuf,
        source: String,
    },
    None,
}

impl EventSink {
    pub(crate) async fn from_config(config: &EventsConfig, source: &str) -> Self {
        match config {
            EventsConfig::EventBridge { bus, concurrency } => Self::EventBridge {
                client: aws_sdk_eventbridge::Client::new(&crate::aws::sdk_config().await),
                bus: bus.clone(),
                source: source.to_owned(),
                concurrency: *concurrency,
            },
            EventsConfig::File(path) => Self::File {
                path: path.clone(),
                source: source.to_owned(),
            },
            EventsConfig::None => Self::None,
        }
    }

    /// Publishes `events` in order, stopping at the first that cannot be delivered.
    pub(crate) async fn publish(&self, events: &[Event], deadline: Deadline) -> Published {
        match self {
            Self::None => Published {
                accepted: events.len(),
                error: None,
            },
            Self::File { path, source } => publish_file(path, source, events).await,
            Self::EventBridge {
                client,
                bus,
                source,
                concurrency,
            } => {
                let target = Target {
                    client,
                    bus,
                    source,
                    events,
                    deadline,
                };
                publish_eventbridge(target, *concurrency).await
            }
        }
    }
}

async fn publish_file(path: &std::path::Path, source: &str, events: &[Event]) -> Published {
    // Each line is `{"source":…,"detail-type":…,"detail":{…}}`: the detail is already JSON, so the
    // line is assembled around it rather than serialised again, into a buffer sized up front.
    let size: usize = events.iter().map(|e| e.size(source) + 40).sum();
    let mut text = Vec::with_capacity(size);
    let mut lines = 0;
    let mut unwritable = None;
    for event in events {
        text.extend_from_slice(b"{\"source\":");
        let named = serde_json::to_writer(&mut text, source).and_then(|()| {
            text.extend_from_slice(b",\"detail-type\":");
            serde_json::to_writer(&mut text, event.detail_type)
        });
        if let Err(e) = named {
            unwritable = Some(e);
            break;
        }
        text.extend_from_slice(b",\"detail\":");
        text.extend_from_slice(event.detail.as_bytes());
        text.extend_from_slice(b"}\n");
        lines += 1;
    }
    // Only whole lines are written: a line that could not be built stops the events after it.
    text.truncate(text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
    let target = path.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)?;
        file.write_all(&text)?;
        file.sync_data()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match written {
        Ok(()) => Published {
            accepted: lines,
            error: unwritable.map(EventError::Encode),
        },
        // A partial append may hold some of the lines; the next poll writes them again, with the same
        // event ids, which is the at-least-once contract.
        Err(e) => Published {
            accepted: 0,
            error: Some(EventError::File {
                path: path.display().to_string(),
                source: e,
            }),
        },
    }
}

/// Splits events into `PutEvents` requests of at most 10 entries and 256 KB.
fn batches(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        if i > start && (i - start == 10 || bytes + size > REQUEST_LIMIT) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// A batch that was not delivered in full: `first` is the index (into the events) of its first
/// event EventBridge did not take, and `error` says why.
#[derive(Debug)]
struct Failed {
    first: usize,
    error: EventError,
}

/// What every `PutEvents` call of one publish shares.
#[derive(Clone, Copy)]
struct Target<'a> {
    client: &'a aws_sdk_eventbridge::Client,
    bus: &'a str,
    source: &'a str,
    events: &'a [Event],
    deadline: Deadline,
}

/// Publishes `events` with up to `concurrency` `PutEvents` calls in flight.
///
/// Order is kept by the stream, not by the calls: batches are started in event order, at most
/// `concurrency` at a time, and their outcomes are taken in that same order (`buffered`), whichever
/// call answers first. So the first failed outcome seen is the earliest batch that failed, every batch
/// before it was delivered in full, and `accepted` is exactly the prefix the cursor may pass. Batches
/// after it may have been delivered too: they count as not accepted, and the next poll publishes them
/// again under the same event ids (at least once, never lost).
///
/// Memory stays bounded: `buffered` holds at most `concurrency` batches, running or finished and
/// waiting for an earlier one, and builds each call's entries only when it starts.
async fn publish_eventbridge(target: Target<'_>, concurrency: NonZeroUsize) -> Published {
    let events = target.events;
    let sizes: Vec<usize> = events.iter().map(|e| e.size(target.source)).collect();
    let batches = batches(&sizes);
    let batch_count = batches.len();
    // The first index known not to be delivered, once a batch has failed for good: no batch at or past
    // it is started, since its events would be published again by the next poll anyway. Batches
    // already in flight finish or are dropped with the stream. An atomic, not a `Cell`, so that the
    // poll's future stays `Send`.
    let stop = AtomicUsize::new(usize::MAX);
    let stop = &stop;
    let started = batches
        .into_iter()
        .take_while(|range| range.start < stop.load(Ordering::Relaxed));
    let mut outcomes = stream::iter(started)
        .map(|range| async move {
            let outcome = put_batch(target, range).await;
            if let Err(failed) = &outcome {
                stop.fetch_min(failed.first, Ordering::Relaxed);
            }
            outcome
        })
        .buffered(concurrency.get());
    while let Some(outcome) = outcomes.next().await {
        if let Err(Failed { first, error }) = outcome {
            // Dropping the stream abandons the calls still in flight: whatever they deliver is a
            // duplicate the next poll sends again, which the at-least-once contract allows.
            return Published {
                accepted: first,
                error: Some(error),
            };
        }
    }
    tracing::debug!(
        events = events.len(),
        batches = batch_count,
        concurrency = concurrency.get(),
        "published to EventBridge"
    );
    Published {
        accepted: events.len(),
        error: None,
    }
}

/// Delivers the events of one batch, retrying the entries EventBridge reports as failed (and only
/// those: the others are delivered, and sending them again would deliver them twice).
async fn put_batch(target: Target<'_>, range: Range<usize>) -> Result<(), Failed> {
    let Target {
        client,
        bus,
        source,
        events,
        deadline,
    } = target;
    // Nothing is sent once the deadline has come: what was accepted before it is kept, and the caller
    // saves the cursor past it.
    if !deadline.allows(Duration::ZERO) {
        return Err(Failed {
            first: range.start,
            error: EventError::Deadline,
        });
    }
    // Indices (into `events`) still to deliver in this batch.
    let mut pending: Vec<usize> = range.clone().collect();
    let mut last: Option<Refusal> = None;
    // Calls actually made (the reports count these, not the attempts allowed).
    let mut attempts: u32 = 0;
    let mut timed_out = false;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let wait = Duration::from_millis(100 << attempt);
            if !deadline.allows(wait) {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let entries = pending
            .iter()
            .map(|&i| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(bus)
                    .source(source)
                    .detail_type(events[i].detail_type)
                    .detail(events[i].detail.as_str())
                    .build()
            })
            .collect();
        let call = client.put_events().set_entries(Some(entries)).send();
        attempts = attempts.saturating_add(1);
        // A call cut short by the deadline may have delivered its batch or not: it counts as not
        // delivered, and a redelivery carries the same event ids.
        let output = match deadline.run(call).await {
            Some(Ok(output)) => output,
            Some(Err(e)) => {
                tracing::warn!(
                    batch = range.start,
                    attempt,
                    error = %DisplayErrorContext(&e),
                    "PutEvents failed"
                );
                let unusable = matches!(
                    e.code(),
                    Some("ResourceNotFoundException" | "AccessDeniedException")
                );
                let error = aws_sdk_eventbridge::Error::from(e);
                if unusable {
                    return Err(Failed {
                        first: pending.iter().min().copied().unwrap_or(range.start),
                        error: EventError::Unusable {
                            bus: bus.to_owned(),
                            source: Box::new(error),
                        },
                    });
                }
                last = Some(Refusal::Call(error));
                continue;
            }
            None => {
                tracing::warn!(
                    batch = range.start,
                    attempt,
                    "PutEvents had no answer before the deadline"
                );
                timed_out = true;
                break;
            }
        };
        // Entries answer in request order; a failed one carries an error code.
        let results = output.entries();
        let mut failed = Vec::new();
        for (position, &index) in pending.iter().enumerate() {
            match results.get(position) {
                Some(entry) if entry.error_code().is_none() && entry.event_id().is_some() => {}
                Some(entry) => {
                    last = Some(Refusal::Entry {
                        code: entry.error_code().unwrap_or("unknown").to_owned(),
                        message: entry.error_message().unwrap_or_default().to_owned(),
                    });
                    failed.push(index);
                }
                None => {
                    last = Some(Refusal::Unreported);
                    failed.push(index);
                }
            }
        }
        if let (false, Some(reason)) = (failed.is_empty(), &last) {
            tracing::warn!(
                batch = range.start,
                attempt,
                failed = failed.len(),
                %reason,
                "EventBridge refused some entries; retrying them"
            );
        }
        pending = failed;
        if pending.is_empty() {
            return Ok(());
        }
    }
    let first = pending.iter().min().copied().unwrap_or(range.start);
    let error = match last {
        _ if timed_out => EventError::TimedOut {
            pending: pending.len(),
            attempts,
        },
        None => EventError::Deadline,
        Some(last) => EventError::Rejected {
            failed: pending.len(),
            attempts,
            last: Box::new(last),
        },
    };
    Err(Failed { first, error })
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn batches_hold_at_most_ten_entries_and_256_kb() {
        assert_eq!(batches(&[1; 23]), vec![0..10, 10..20, 20..23]);
        let big = 100 * 1024;
        assert_eq!(batches(&[big, big, big, 1]), vec![0..2, 2..4]);
        assert_eq!(batches(&[]), Vec::<std::ops::Range<usize>>::new());
    }
}
