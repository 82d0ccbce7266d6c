//! What a scan found, and how the cursor moves once its events are published: past exactly the
//! steps before the first change that was not.

use std::time::Duration;

use uuid::Uuid;

use super::event::Fired;
use super::{Deletions, Position, SeenEntry, TriggerState};
use crate::CrmError;
use crate::cursor::Kept;
use crate::events::Event;

/// One thing a scan did, applied to the cursor only if every change fired before it was published.
#[derive(Debug)]
pub(super) enum Step {
    /// A row handled by `when-record-created/updated`: fired (as change `fired`) or skipped.
    Change {
        fired: Option<usize>,
        /// Set for rows beyond the cursor: the cursor moves to it.
        forward: Option<Position>,
        seen: SeenEntry,
        /// The row's fingerprint and kept values, to save.
        fingerprint: Option<(Uuid, Kept)>,
        /// Passed over as a change by the connector's own user (`ignore_own_changes`).
        skipped_own: bool,
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

/// What a scan found, and how far it got before an error, if one stopped it.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// When the scan began by Dataverse's clock (Unix seconds), if it got an answer: the next
    /// poll's overlap window reaches back from it.
    pub(super) started: Option<i64>,
    /// One event per change found, in order...
    pub(super) events: Vec<Event>,
    /// ...and, at the same index, what the poll returns for it...
    pub(super) fired: Vec<Fired>,
    /// ...and when the change happened (Unix seconds, Dataverse's clock), if the change says.
    pub(super) changed_at: Vec<Option<i64>>,
    pub(super) steps: Vec<Step>,
    pub(super) error: Option<CrmError>,
    /// Changes the scan knows it left for the next poll, when `$top` or the time to fetch stopped
    /// it: those it had received and would have fired, plus one for a next page it did not read
    /// (Dataverse links one only when more rows match). `Some(0)` when it reached the end of what
    /// has changed; `None` when it cannot say (an error stopped it first).
    pub(super) backlog: Option<u64>,
}

impl Scan {
    pub(super) fn fire(&mut self, event: Event, fired: Fired, changed_at: Option<i64>) -> usize {
        self.events.push(event);
        self.fired.push(fired);
        self.changed_at.push(changed_at);
        self.events.len() - 1
    }

    pub(super) fn fired(&self) -> usize {
        self.events.len()
    }
}

/// What the published prefix of a scan changes.
#[derive(Debug)]
pub(super) struct Settled {
    pub(super) state: TriggerState,
    /// Fingerprints to save, for `when-record-updated` with watched columns.
    pub(super) fingerprints: Vec<(Uuid, Kept)>,
    /// Changes passed over as the connector's own, which the cursor moved past.
    pub(super) skipped_own: u64,
    /// Rows whose deletion was published: they leave a filtered trigger's membership set.
    pub(super) deleted: Vec<Uuid>,
}

/// Applies the steps of the published prefix (the first `accepted` changes) to the state, and
/// collects the fingerprints to save and the deletions published.
pub(super) fn settle(
    initial: TriggerState,
    scan: &Scan,
    accepted: usize,
    overlap: Duration,
) -> Settled {
    let mut state = initial;
    let mut fingerprints = Vec::new();
    let mut deleted = Vec::new();
    let mut skipped_own = 0;
    let mut remembered = match &state {
        TriggerState::Created(c) | TriggerState::Updated(c) => c.seen.index(),
        TriggerState::Deleted(_) => std::collections::HashSet::new(),
    };
    for step in &scan.steps {
        if step.fired().is_some_and(|i| i >= accepted) {
            break;
        }
        match (step, &mut state) {
            (
                Step::Change {
                    forward,
                    seen,
                    fingerprint,
                    skipped_own: own,
                    ..
                },
                TriggerState::Created(c) | TriggerState::Updated(c),
            ) => {
                skipped_own += u64::from(*own);
                if let Some(position) = forward {
                    c.position = c.position.max(*position);
                }
                if remembered.insert((seen.id, seen.version)) {
                    c.seen.0.push(*seen);
                }
                fingerprints.extend(fingerprint.clone());
            }
            (Step::Deletion { state: next, fired }, TriggerState::Deleted(d)) => {
                *d = next.clone();
                deleted.extend(fired.and_then(|i| scan.fired.get(i)).map(|f| f.id));
            }
            _ => {}
        }
    }
    if let (TriggerState::Created(c) | TriggerState::Updated(c), Some(started)) =
        (&mut state, scan.started)
    {
        // The next poll re-reads from this scan's start less the overlap: keep what that needs.
        c.scanned_at = Some(started);
        let floor = c.window_floor(overlap);
        let kept_from = c.seen.prune(floor);
        if kept_from > floor {
            tracing::warn!(
                kept_from,
                "the overlap window holds too many changes; it is narrowed to stay bounded"
            );
            c.seen_floor = kept_from;
        }
    }
    Settled {
        state,
        fingerprints,
        skipped_own,
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Changes, Seen};
    use super::*;

    #[test]
    fn settling_stops_at_the_first_change_not_published() {
        let initial = TriggerState::Updated(Changes {
            since: 0,
            position: Position::Updated { version: 10 },
            seen: Seen::default(),
            seen_floor: 0,
            scanned_at: None,
        });
        let now = 1_700_000_000;
        let step = |fired: Option<usize>, version: u64| Step::Change {
            fired,
            forward: Some(Position::Updated { version }),
            seen: SeenEntry {
                id: Uuid::from_u128(u128::from(version)),
                version,
                at: now,
            },
            fingerprint: None,
            skipped_own: false,
        };
        let scan = Scan {
            started: Some(now),
            steps: vec![
                step(Some(0), 11),
                step(None, 12),
                step(Some(1), 13),
                step(Some(2), 14),
            ],
            ..Scan::default()
        };
        let settled = settle(initial.clone(), &scan, 1, Duration::from_secs(60));
        let TriggerState::Updated(c) = settled.state else {
            panic!()
        };
        assert_eq!(
            c.position,
            Position::Updated { version: 12 },
            "past the skipped row, not past change 1"
        );
        assert_eq!(c.seen.0.len(), 2);
        assert_eq!(c.scanned_at, Some(now));
        let all = settle(initial, &scan, 3, Duration::from_secs(60));
        let TriggerState::Updated(c) = all.state else {
            panic!()
        };
        assert_eq!(c.position, Position::Updated { version: 14 });
    }
}
