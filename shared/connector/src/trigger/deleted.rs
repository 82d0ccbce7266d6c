//! `when-record-deleted`: Dataverse change tracking.
//!
//! Deletions leave no row to poll, so this trigger follows delta links:
//!
//! - **Baseline.** The first poll asks for the table with `Prefer: odata.track-changes` (only the
//!   primary key) and pages through the whole result to reach the `@odata.deltaLink` on its last page.
//!   A large table can take several polls: the next page's link is the saved state, so the baseline
//!   resumes where it stopped. Deletions from the moment the baseline began are reported later.
//! - **Deltas.** Each later poll follows the saved link. Changed rows are passed over; each
//!   `$deletedEntity` tombstone fires, including rows created and deleted between two polls. At `$top`
//!   the state keeps the page's link and the last tombstone fired, so the next poll re-reads that page
//!   and carries on after it (if that tombstone has vanished, the whole page fires again: a duplicate,
//!   with the same event id, never a loss). The last page's new delta link is saved for the next pass.
//! - **Expiry.** Delta tokens expire (7 days by default) or become invalid after metadata changes.
//!   Dataverse then answers a 4xx; the trigger logs a warning and takes a new baseline instead of
//!   failing forever. Deletions during the gap are unknowable, and the warning says so.
//!
//! - **Filter.** With a `$filter`, a tombstone fires only for a row known to match it; the set of
//!   those rows is kept beside the cursor and taken before the baseline (see `members.rs`).
//!
//! A tombstone carries only the id, so a deletion's event has no record and no version.

use dataverse::{Change, Prefer, Query, classify};

use super::event::{self, Fired};
use super::members::{Members, row_id};
use super::{Deletions, Kind, Phase, Scan, ScanError, Step, TriggerState};
use crate::{ConfigError, CrmError};

/// Whether a failed delta request means the token can no longer be used (as opposed to a failure
/// worth retrying later: throttling, auth, the server).
fn token_unusable(error: &dataverse::Error) -> bool {
    matches!(error.status(), Some(status) if (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429))
}

pub(super) async fn scan(
    poll: &super::Poll<'_>,
    stored: Option<Deletions>,
) -> Result<(TriggerState, Scan, bool), CrmError> {
    let super::Poll {
        client,
        deps,
        key,
        input,
        table,
        deadline,
        ..
    } = *poll;
    let members = input.filter.as_deref().map(|filter| Members {
        filter,
        store: deps.store.within(deadline),
        key,
        client,
        table,
        deadline,
    });
    // With a filter, every baseline starts with the membership snapshot.
    let first = || match members {
        Some(_) => Phase::Members { next: None },
        None => Phase::Baseline { next: None },
    };
    let fresh = stored.is_none();
    let initial = stored.unwrap_or_else(|| Deletions {
        generation: 0,
        fired: 0,
        phase: first(),
    });
    let mut current = initial.clone();
    let mut scan = Scan::default();
    let dataset = input.dataset.as_str();
    'polls: while scan.fired() < input.top && deadline.allows(std::time::Duration::ZERO) {
        match current.phase.clone() {
            Phase::Members { next } => {
                let Some(members) = &members else {
                    // Only a filtered cursor is ever saved in this phase, and the filter is part
                    // of the cursor's key; should one turn up without it, the baseline is next.
                    current.phase = Phase::Baseline { next: None };
                    continue;
                };
                current.phase = match members.snapshot(next.as_deref()).await {
                    Ok(Some(next)) => Phase::Members { next: Some(next) },
                    Ok(None) => Phase::Baseline { next: None },
                    Err(e) => {
                        scan.error = Some(e);
                        break;
                    }
                };
                scan.steps.push(Step::Deletion {
                    fired: None,
                    state: current.clone(),
                });
            }
            Phase::Baseline { next } => {
                let url = match next {
                    Some(next) => client.link(&next)?,
                    None => client.collection_url(
                        table,
                        &Query::new().select(table.primary_id_attribute.clone()),
                    )?,
                };
                let prefer = Prefer {
                    max_page_size: Some(dataverse::MAX_PAGE_SIZE),
                    track_changes: true,
                    formatted_values: false,
                };
                let page = match client.page(&url, prefer, deadline).await {
                    Ok(page) => page,
                    Err(e) => {
                        scan.error = Some(e.into());
                        break;
                    }
                };
                current.phase = match (page.next_link, page.delta_link) {
                    (Some(next), _) => Phase::Baseline { next: Some(next) },
                    (None, Some(delta)) => {
                        tracing::info!(table = %table.entity_set_name, "baseline taken; deletions from now on will fire");
                        current.generation += 1;
                        current.fired = 0;
                        Phase::Tracking {
                            link: delta,
                            after: None,
                        }
                    }
                    (None, None) => {
                        scan.error = Some(
                            ConfigError::Table {
                                table: table.logical_name.clone(),
                                problem: "Dataverse returned no delta link, so change tracking is not enabled for it".into(),
                            }
                            .into(),
                        );
                        break;
                    }
                };
                scan.steps.push(Step::Deletion {
                    fired: None,
                    state: current.clone(),
                });
            }
            Phase::Tracking { link, after } => {
                let prefer = Prefer {
                    max_page_size: Some(dataverse::MAX_PAGE_SIZE),
                    track_changes: false,
                    formatted_values: false,
                };
                let page = match client.page(&client.link(&link)?, prefer, deadline).await {
                    Ok(page) => page,
                    Err(e) if token_unusable(&e) => {
                        tracing::warn!(
                            table = %table.entity_set_name,
                            error = %e,
                            "the delta link can no longer be used (expired or invalidated); taking a new baseline: deletions since the last successful poll cannot be reported"
                        );
                        current = Deletions {
                            generation: current.generation + 1,
                            fired: 0,
                            phase: first(),
                        };
                        scan.steps.push(Step::Deletion {
                            fired: None,
                            state: current.clone(),
                        });
                        continue;
                    }
                    Err(e) => {
                        scan.error = Some(e.into());
                        break;
                    }
                };
                let mut tombstones = Vec::new();
                let mut changed = Vec::new();
                for entry in page.rows {
                    match classify(entry) {
                        Change::Deleted(id) => tombstones.push(id),
                        // Only a filter needs to know which rows changed.
                        Change::Upserted(row) if members.is_some() => {
                            match row_id(&row, &table.primary_id_attribute) {
                                Ok(id) => changed.push(id),
                                Err(e) => {
                                    scan.error = Some(e.into());
                                    break 'polls;
                                }
                            }
                        }
                        Change::Upserted(_) => {}
                    }
                }
                if let Some(members) = &members {
                    let kept = match members.refresh(&changed).await {
                        Ok(()) => members.store.members(key, &tombstones).await,
                        Err(e) => {
                            scan.error = Some(e);
                            break;
                        }
                    };
                    match kept {
                        Ok(kept) => tombstones.retain(|id| kept.contains(id)),
                        Err(e) => {
                            scan.error = Some(e.into());
                            break;
                        }
                    }
                }
                // Resume after the last tombstone fired from this page, if it is still there.
                let start = after
                    .and_then(|a| tombstones.iter().position(|id| *id == a))
                    .map_or(0, |i| i + 1);
                for (i, id) in tombstones[start..].iter().enumerate() {
                    if scan.fired() >= input.top {
                        // More on this page: stay on it.
                        let left = tombstones.len() - start - i;
                        scan.backlog = Some(
                            u64::try_from(left).unwrap_or(u64::MAX)
                                + u64::from(page.next_link.is_some()),
                        );
                        break 'polls;
                    }
                    // A tombstone carries only the id.
                    let built = event::event_for(&event::Change {
                        kind: Kind::Deleted,
                        dataset,
                        table,
                        id: *id,
                        version: None,
                        changed_on: None,
                        record: None,
                        via: None,
                    })
                    .and_then(|e| Ok((e, event::deletion(*id)?)));
                    let (event, row) = match built {
                        Ok(built) => built,
                        Err(e) => {
                            scan.error = Some(e.into());
                            break 'polls;
                        }
                    };
                    // A tombstone says when nothing: a deletion has no time to measure lag by.
                    let fired = scan.fire(
                        event,
                        Fired {
                            id: *id,
                            row,
                            sort_keys: Vec::new(),
                        },
                        None,
                    );
                    current.fired += 1;
                    current.phase = Phase::Tracking {
                        link: link.clone(),
                        after: Some(*id),
                    };
                    scan.steps.push(Step::Deletion {
                        fired: Some(fired),
                        state: current.clone(),
                    });
                }
                match (page.next_link, page.delta_link) {
                    (Some(next), _) => {
                        current.phase = Phase::Tracking {
                            link: next,
                            after: None,
                        };
                        scan.steps.push(Step::Deletion {
                            fired: None,
                            state: current.clone(),
                        });
                    }
                    (None, Some(delta)) => {
                        // One pass per poll: the next delta is the next poll's.
                        current.generation += 1;
                        current.fired = 0;
                        current.phase = Phase::Tracking {
                            link: delta,
                            after: None,
                        };
                        scan.steps.push(Step::Deletion {
                            fired: None,
                            state: current.clone(),
                        });
                        scan.backlog = Some(0);
                        break;
                    }
                    (None, None) => {
                        scan.error = Some(ScanError::DeltaWithoutEnd.into());
                        break;
                    }
                }
            }
        }
    }
    // Stopped by `$top` at the end of a page of a delta: its next page is known to be left. Out of
    // time elsewhere (a baseline, the membership snapshot), nothing is known.
    if scan.error.is_none()
        && scan.backlog.is_none()
        && scan.fired() >= input.top
        && matches!(current.phase, Phase::Tracking { after: None, .. })
    {
        scan.backlog = Some(1);
    }
    Ok((TriggerState::Deleted(initial), scan, fresh))
}
