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
//! - **`remember_ids`.** The trigger keeps the same set (every row it knows without a filter, the
//!   matching ones with one), each member marked with the generation that last confirmed it: the
//!   baseline's pages (or the filter's snapshot) mark every row they list, and deltas add the rows
//!   they report. After a new baseline taken because the token expired, members the baseline did not
//!   mark are asked about (the sweep): each one gone fires as a deletion, with the event id any
//!   deletion of that row has, so a repeated sweep publishes the same event again, never another.
//!   A cursor that starts remembering lists every row's id first and then follows its saved delta,
//!   whose deletions a new baseline would have thrown away.
//!
//! A tombstone carries only the id, so a deletion's event has no record and no version.

use std::collections::HashSet;

use dataverse::{Change, Prefer, Query, Table, classify};
use uuid::Uuid;

use super::event::{self, Fired};
use super::members::{Members, row_id};
use super::{Deletions, Kind, Phase, Scan, ScanError, Step, TriggerState};
use crate::{ConfigError, CrmError};

/// Remembered members asked about per round of the sweep: a few `$filter` requests' worth.
const SWEEP_CHUNK: usize = 1000;

/// Adds the deletion of `id` to what the scan fires. A deletion's event id depends on the row
/// alone, so a tombstone and a sweep that both report it publish one event to a consumer.
fn fire(scan: &mut Scan, dataset: &str, table: &Table, id: Uuid) -> Result<usize, ScanError> {
    // A tombstone carries only the id.
    let event = event::event_for(&event::Change {
        kind: Kind::Deleted,
        dataset,
        table,
        id,
        version: None,
        changed_on: None,
        record: None,
        via: None,
        changes: None,
    })?;
    let row = event::deletion(id)?;
    // A deletion says when nothing: there is no time to measure lag by.
    Ok(scan.fire(
        event,
        Fired {
            id,
            row,
            sort_keys: Vec::new(),
        },
        None,
    ))
}

/// Drops the members marked below `generation`: ids kept the last time the cursor remembered
/// them, since when the rows they name may have been deleted and their deletions fired. Kept, they
/// would fire again in a later sweep.
async fn forget_earlier(members: &Members<'_>, key: &str, generation: u64) -> Result<(), CrmError> {
    loop {
        let stale = members
            .store
            .stale_members(key, generation, SWEEP_CHUNK)
            .await?;
        if stale.is_empty() {
            return Ok(());
        }
        members
            .store
            .change_members(key, &[], &stale, generation)
            .await?;
    }
}

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
    let members = (input.filter.is_some() || input.remember_ids).then(|| Members {
        filter: input.filter.as_deref(),
        store: deps.store.within(deadline),
        key,
        client,
        table,
        deadline,
    });
    // With a filter, every baseline starts with the membership snapshot.
    let first = || match input.filter {
        Some(_) => Phase::Members { next: None },
        None => Phase::Baseline { next: None },
    };
    let fresh = stored.is_none();
    let initial = stored.unwrap_or_else(|| Deletions {
        generation: 0,
        fired: 0,
        phase: first(),
        remembers: input.remember_ids,
    });
    let mut current = initial.clone();
    let mut scan = Scan::default();
    if input.remember_ids && !current.remembers && input.filter.is_none() {
        // Its set lacks the rows that did not change since its baseline. A new baseline would list
        // them but throw away the saved delta, and the deletions waiting in it: list the ids
        // instead, then carry on where the cursor was. (A filtered cursor already keeps the set of
        // the rows that match.)
        tracing::info!(table = %table.entity_set_name, "remember_ids is new to this cursor; listing every row's id before following the saved delta");
        current = Deletions {
            generation: current.generation + 1,
            fired: 0,
            phase: Phase::Learn {
                next: None,
                then: Box::new(current.phase),
            },
            remembers: true,
        };
        scan.steps.push(Step::Deletion {
            fired: None,
            state: current.clone(),
        });
    }
    current.remembers = input.remember_ids;
    let dataset = input.dataset.as_str();
    let mut fired_here = HashSet::new();
    'polls: while scan.fired() < input.top && deadline.allows(std::time::Duration::ZERO) {
        match current.phase.clone() {
            Phase::Members { next } => {
                let Some(members) = members.as_ref().filter(|m| m.filter.is_some()) else {
                    // Only a filtered cursor is ever saved in this phase, and the filter is part
                    // of the cursor's key; should one turn up without it, the baseline is next.
                    current.phase = Phase::Baseline { next: None };
                    continue;
                };
                current.phase = match members.snapshot(next.as_deref(), current.generation).await {
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
            Phase::Learn { next, then } => {
                let Some(members) = members.as_ref().filter(|m| m.filter.is_none()) else {
                    // Saved by a poll that remembered ids, read by one that does not: nothing to learn.
                    current.phase = *then;
                    continue;
                };
                if next.is_none()
                    && let Err(e) = forget_earlier(members, key, current.generation).await
                {
                    scan.error = Some(e);
                    break;
                }
                current.phase = match members.snapshot(next.as_deref(), current.generation).await {
                    Ok(Some(next)) => Phase::Learn {
                        next: Some(next),
                        then,
                    },
                    Ok(None) => *then,
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
                // With `remember_ids` and no filter, the baseline lists every row: each is a
                // member, confirmed by this generation.
                if let Some(members) = members.as_ref().filter(|m| m.filter.is_none())
                    && let Err(e) = members.add(&page, current.generation).await
                {
                    scan.error = Some(e);
                    break;
                }
                current.phase = match (page.next_link, page.delta_link) {
                    (Some(next), _) => Phase::Baseline { next: Some(next) },
                    (None, Some(delta)) => {
                        tracing::info!(table = %table.entity_set_name, "baseline taken; deletions from now on will fire");
                        let below = current.generation;
                        current.generation += 1;
                        current.fired = 0;
                        // A first baseline has nothing remembered before it to ask about.
                        if input.remember_ids && below > 0 {
                            Phase::Sweep { link: delta, below }
                        } else {
                            Phase::Tracking {
                                link: delta,
                                after: None,
                            }
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
                        if input.remember_ids {
                            tracing::warn!(
                                table = %table.entity_set_name,
                                error = %e,
                                "the delta link can no longer be used (expired or invalidated); taking a new baseline: deletions since the last successful poll are found from the remembered ids once it is taken"
                            );
                        } else {
                            tracing::warn!(
                                table = %table.entity_set_name,
                                error = %e,
                                "the delta link can no longer be used (expired or invalidated); taking a new baseline: deletions since the last successful poll cannot be reported"
                            );
                        }
                        current = Deletions {
                            generation: current.generation + 1,
                            fired: 0,
                            phase: first(),
                            remembers: input.remember_ids,
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
                        // Only the membership set (a filter, or `remember_ids`) needs to know
                        // which rows changed.
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
                    if let Err(e) = members.refresh(&changed, current.generation).await {
                        scan.error = Some(e);
                        break;
                    }
                    // Without a filter every tombstone fires, a row created and deleted between
                    // two polls too: remembering ids only adds the sweep.
                    if input.filter.is_some() {
                        match members.store.members(key, &tombstones).await {
                            Ok(kept) => tombstones.retain(|id| kept.contains(id)),
                            Err(e) => {
                                scan.error = Some(e.into());
                                break;
                            }
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
                    let fired = match fire(&mut scan, dataset, table, *id) {
                        Ok(fired) => fired,
                        Err(e) => {
                            scan.error = Some(e.into());
                            break 'polls;
                        }
                    };
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
            Phase::Sweep { link, below } => {
                let Some(members) = &members else {
                    // Saved by a poll that remembered ids, read by one that does not: nothing to ask.
                    current.phase = Phase::Tracking { link, after: None };
                    continue;
                };
                // Members fired in this poll stay in the set until the cursor is saved, so the
                // listing passes over them.
                let asked = fired_here.len() + SWEEP_CHUNK;
                let listed = match members.store.stale_members(key, below, asked).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        scan.error = Some(e.into());
                        break;
                    }
                };
                let exhausted = listed.len() < asked;
                let candidates: Vec<Uuid> = listed
                    .into_iter()
                    .filter(|id| !fired_here.contains(id))
                    .collect();
                let gone = match members.gone(&candidates, current.generation).await {
                    Ok(gone) => gone,
                    Err(e) => {
                        scan.error = Some(e);
                        break;
                    }
                };
                if !gone.is_empty() {
                    tracing::info!(table = %table.entity_set_name, rows = gone.len(), "remembered rows gone while the delta token was unusable; their deletions fire");
                }
                for (i, id) in gone.iter().enumerate() {
                    if scan.fired() >= input.top {
                        scan.backlog = Some(u64::try_from(gone.len() - i).unwrap_or(u64::MAX));
                        break 'polls;
                    }
                    let fired = match fire(&mut scan, dataset, table, *id) {
                        Ok(fired) => fired,
                        Err(e) => {
                            scan.error = Some(e.into());
                            break 'polls;
                        }
                    };
                    fired_here.insert(*id);
                    current.fired += 1;
                    scan.steps.push(Step::Deletion {
                        fired: Some(fired),
                        state: current.clone(),
                    });
                }
                if exhausted {
                    current.phase = Phase::Tracking { link, after: None };
                    scan.steps.push(Step::Deletion {
                        fired: None,
                        state: current.clone(),
                    });
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
