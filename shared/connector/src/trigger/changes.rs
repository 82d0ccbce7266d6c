//! `when-record-created` and `when-record-updated`: a keyset scan, plus an overlap window.
//!
//! # Why this cursor
//!
//! Dataverse gives a poller two clocks, and each fails somewhere on its own:
//!
//! - `modifiedon`/`createdon` have whole-second precision. A `(time > last)` cursor loses every row that
//!   shares the last second but was not in the last page, and `$top` smaller than a burst guarantees
//!   such rows.
//! - `versionnumber` (SQL `rowversion`) is unique and increases with every write across the org, but it
//!   is assigned when a row is written, not when its transaction commits. A transaction that commits
//!   late (a slow synchronous plug-in) can make a row visible *below* a version the poller has passed.
//!
//! So each trigger scans by a key that is total and never reorders a change it has not seen yet, and
//! keeps a short memory for late arrivals:
//!
//! - **updated** scans by `versionnumber`: each version is one distinct change, a burst in one second is
//!   simply consecutive versions, and a row updated while the poll pages moves to a higher version, so
//!   it is met later in the same scan or the next. The cursor is the last version handled.
//! - **created** scans by `(createdon, primary key)`: creation time never changes, so updates never
//!   move a row, and the key orders a same-second burst. The cursor is the last pair handled. A row
//!   fires only once its creation second is over (before "now", the `Date` of the poll's first
//!   answer: Dataverse's own clock, the one `createdon` comes from), so no row can later appear in a
//!   second the cursor has entered, except by committing late (a delay of under a second).
//! - **the overlap window**: every poll also re-reads rows whose time is within the last
//!   `CRM_TRIGGER_OVERLAP_SECS` (60 s by default), even below the cursor. Rows found there that the
//!   trigger does not remember firing (the `seen` set holds `(id, version)`, or the id for creations,
//!   of every change handled inside the window) are late commits, and fire. Outside the window the
//!   set is pruned, so the state stays small; it is capped, and past the cap the window narrows
//!   instead of firing twice.
//!
//! Both filters are sent to Dataverse together with the user's `$filter`, which Dataverse applies:
//! `((key after cursor) or (time within window)) and (user filter)`, ordered by the key. Nothing is
//! filtered here except what the cursor and the window say, and the creations of the current second,
//! which come last in that order and end the scan.
//!
//! `when-record-updated` does not fire for a row's creation (`createdon == modifiedon`; Dataverse
//! cannot tell an update in the creation's own second from the creation). With `columns` it fires only
//! when the watched columns' values differ from the fingerprint stored for the row; a row with no
//! stored fingerprint (changed before the trigger first saw it) fires, since it may have changed.
//! The watched columns' values are kept beside the fingerprint, so its event says which of them
//! changed and what they held before (`kept.rs`).
//!
//! With `ignore_own_changes`, a change whose author (`_createdby_value` for a creation,
//! `_modifiedby_value` for an update) is the connector's own user (`WhoAmI`) is passed over like an
//! unchanged row: not published, but the cursor moves past it, and its fingerprint and kept values
//! are saved, so the connector's own write never fires later as someone else's change. A poll sees
//! only the row's last writer: someone else's change the connector wrote over before the poll is
//! passed over with it.
//! The author column is read even when `$select` leaves it out, and taken out of the row again
//! before it is published.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::time::Duration;

use dataverse::{Client, Deadline, Prefer, Query, Table};
use futures_util::TryStreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::event::{self, Fired};
use super::kept;
use super::row::{Columns, Row};
use super::{Changes, Kind, Position, Scan, Seen, SeenEntry, Step, TriggerInput, TriggerState};
use crate::CrmError;
use crate::cursor::Kept;

/// The largest page a scan asks for. Larger polls take several pages, and Dataverse builds each next
/// one while the trigger works through the last: with 1,000-row pages a 5,000-row poll overlaps four
/// fifths of its fetching with its work, for four more requests.
const AHEAD_PAGE: usize = 1000;

/// An OData date-time literal for a `$filter`.
fn literal(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The column that says who made a change of `kind`, read for `ignore_own_changes`: a creation is
/// its creator's (a row created by someone else and then touched by the connector was still created
/// by them), an update is its last writer's.
pub(super) fn author_column(kind: Kind) -> &'static str {
    match kind {
        Kind::Created => "_createdby_value",
        _ => "_modifiedby_value",
    }
}

/// Whether the author column must be asked for although the caller's `$select` leaves it out: it
/// is then taken out of the rows again before they are published.
fn author_added(kind: Kind, input: &TriggerInput) -> bool {
    input.ignore_own_changes
        && input
            .select
            .as_deref()
            .is_some_and(|select| !select.split(',').any(|c| c.trim() == author_column(kind)))
}

/// `$select` with what the scan needs added, or none (all columns) when the user chose none.
fn selection(kind: Kind, input: &TriggerInput, table: &Table) -> Option<String> {
    let user = input.select.as_deref()?;
    let mut columns: Vec<String> = user
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let needed = [
        table.primary_id_attribute.as_str(),
        "createdon",
        "modifiedon",
        "versionnumber",
    ];
    // The watched columns are needed to fingerprint a row, and the `$orderby` ones to sort the rows
    // returned.
    let sorted = input.orderby.iter().flatten().map(|(c, _)| c.as_str());
    let author = input.ignore_own_changes.then(|| author_column(kind));
    for column in needed
        .into_iter()
        .chain(input.columns.iter().map(String::as_str))
        .chain(sorted)
        .chain(author)
    {
        if !columns.iter().any(|c| c == column) {
            columns.push(column.to_owned());
        }
    }
    Some(columns.join(","))
}

/// The one column [`starting_point`] reads.
#[derive(serde::Deserialize)]
struct Version {
    versionnumber: Option<u64>,
}

/// Where a new cursor starts: the highest `versionnumber` in the table (where a new updated-trigger
/// starts), and Dataverse's time now (where a new created-trigger starts).
async fn starting_point(
    client: &Client,
    table: &Table,
    deadline: Deadline,
) -> Result<(u64, i64), CrmError> {
    let query = Query::new()
        .select("versionnumber")
        .orderby("versionnumber desc");
    let prefer = Prefer {
        max_page_size: Some(1),
        track_changes: false,
        formatted_values: false,
    };
    let page = client
        .page(&client.collection_url(table, &query)?, prefer, deadline)
        .await?;
    let now = super::server_now(&page);
    let Some(row) = page.rows.first() else {
        return Ok((0, now));
    };
    let version = serde_json::from_str::<Version>(row.get())
        .map_err(super::ScanError::Unreadable)?
        .versionnumber
        .unwrap_or(0);
    Ok((version, now))
}

/// The changes already there in the starting second `since` (and after, if a clock runs ahead),
/// remembered as seen so a cursor starting "now" does not fire them: timestamps have whole seconds,
/// so they would otherwise be indistinguishable from changes made after the start.
async fn already_there(
    kind: Kind,
    client: &Client,
    table: &Table,
    since: i64,
    start: Position,
    deadline: Deadline,
) -> Result<Seen, CrmError> {
    let pk = &table.primary_id_attribute;
    let filter = match start {
        Position::Created { .. } => format!("createdon ge {}", literal(since)),
        Position::Updated { version } => {
            format!(
                "modifiedon ge {} and versionnumber le {version}",
                literal(since)
            )
        }
    };
    let query = Query::new()
        .select(format!("{pk},createdon,modifiedon,versionnumber"))
        .filter(filter);
    let columns = Columns {
        primary_id: pk,
        watched: &[],
        sorted: &[],
        author: None,
    };
    let mut rows = pin!(client.rows(table, &query, 0, Some(dataverse::MAX_PAGE_SIZE), deadline));
    let mut seen = Seen::default();
    while let Some(raw) = rows.try_next().await? {
        let row = columns.read(raw)?;
        seen.0.push(seen_entry(kind, &row));
    }
    Ok(seen)
}

/// How a row is remembered: a creation by its id, an update by its id and version.
fn seen_entry(kind: Kind, row: &Row) -> SeenEntry {
    match kind {
        Kind::Created => SeenEntry {
            id: row.id,
            version: 0,
            at: row.created,
        },
        _ => SeenEntry {
            id: row.id,
            version: row.version,
            at: row.modified,
        },
    }
}

/// The state of a new cursor, starting now or at the payload's `since`, and Dataverse's time now
/// when it was read.
async fn new_cursor(poll: &super::Poll<'_>) -> Result<(Changes, Option<i64>), CrmError> {
    let super::Poll {
        kind,
        client,
        table,
        input,
        deadline,
        ..
    } = *poll;
    if let Some(since) = input.since {
        // The scan starts at the beginning, and the time filter does the work.
        let position = match kind {
            Kind::Created => Position::Created {
                on: since,
                id: Uuid::nil(),
            },
            _ => Position::Updated { version: 0 },
        };
        return Ok((Changes::new(since, position, Seen::default()), None));
    }
    // The newest version is read first, so that the changes remembered below are all at or under it.
    let (version, now) = starting_point(client, table, deadline).await?;
    let position = match kind {
        Kind::Created => Position::Created {
            on: now,
            id: Uuid::nil(),
        },
        _ => Position::Updated { version },
    };
    let seen = already_there(kind, client, table, now, position, deadline).await?;
    tracing::info!(trigger = kind.name(), since = now, "starting a new cursor");
    Ok((Changes::new(now, position, seen), Some(now)))
}

/// The filter and order that find the changes after `state`'s cursor, and those in its window.
fn cursor_query(
    kind: Kind,
    state: &Changes,
    input: &TriggerInput,
    table: &Table,
    overlap: Duration,
) -> Query {
    let floor = literal(state.window_floor(overlap));
    let pk = table.primary_id_attribute.as_str();
    let (cursor_filter, mut orderby) = match state.position {
        // Creations of the current second are not asked to be left out, since "now" is not known
        // until the first answer: they come last in this order, and the scan stops at them.
        Position::Created { on, id } => (
            format!(
                "(createdon gt {t} or (createdon eq {t} and {pk} gt {id}) or createdon ge {floor})",
                t = literal(on),
            ),
            format!("createdon asc,{pk} asc"),
        ),
        Position::Updated { version } => (
            format!(
                "(versionnumber gt {version} or modifiedon ge {floor}) and modifiedon ge {since}",
                since = literal(state.since)
            ),
            "versionnumber asc".to_owned(),
        ),
    };
    let filter = match &input.filter {
        Some(user) => format!("{cursor_filter} and ({user})"),
        None => cursor_filter,
    };
    // The user's `$orderby` sorts only what this poll returns, but its columns go to Dataverse after
    // the scan's own key: the key is unique, so they change nothing in the order, and Dataverse
    // refuses a column that does not exist, as it does for list-records.
    for (column, _) in input.orderby.iter().flatten() {
        orderby.push(',');
        orderby.push_str(column);
    }
    Query {
        select: selection(kind, input, table),
        filter: Some(filter),
        orderby: Some(orderby),
        expand: None,
        count: false,
        formatted_values: input.formatted_values,
    }
}

/// What a scan does with a row it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Created in the second that is not over yet: it waits, and so does everything after it.
    NotYet,
    /// Handled already: fired, or there when the cursor started.
    Remembered,
    /// Passed over: an updated trigger meeting a creation, or watched columns that did not change.
    Pass,
    /// Would fire, but the connector's own user made the change (`ignore_own_changes`).
    Own,
    Fire,
}

impl Verdict {
    fn of(
        kind: Kind,
        row: &Row,
        now: i64,
        remembered: &HashSet<(Uuid, u64)>,
        stored_fingerprints: &HashMap<Uuid, Kept>,
        own_user: Option<Uuid>,
    ) -> Self {
        if kind == Kind::Created && row.created >= now {
            return Verdict::NotYet;
        }
        let seen = seen_entry(kind, row);
        if remembered.contains(&(seen.id, seen.version)) {
            return Verdict::Remembered;
        }
        let fires = match kind {
            Kind::Created => true,
            _ if row.created == row.modified => false,
            _ => match &row.fingerprint {
                None => true,
                Some(fp) => stored_fingerprints
                    .get(&row.id)
                    .is_none_or(|kept| kept.fingerprint != *fp),
            },
        };
        match (fires, own_user) {
            (false, _) => Verdict::Pass,
            (true, Some(own)) if row.author == Some(own) => Verdict::Own,
            (true, _) => Verdict::Fire,
        }
    }
}

/// The changes left when `$top` stopped a scan: the rows still in hand that would fire (up to the
/// second that is not over), plus one for an unread next page, which holds at least one more row.
fn left_behind(rest: impl Iterator<Item = Verdict>, next_page: bool) -> u64 {
    let mut left = 0;
    for verdict in rest {
        match verdict {
            Verdict::NotYet => return left,
            Verdict::Fire => left += 1,
            Verdict::Remembered | Verdict::Pass | Verdict::Own => {}
        }
    }
    left + u64::from(next_page)
}

/// Scans for changes after the stored cursor (or starts one). Returns the state the scan started
/// from, what it found, and whether that state is new (and must be saved even if nothing fired).
pub(super) async fn scan(
    poll: &super::Poll<'_>,
    stored: Option<Changes>,
) -> Result<(TriggerState, Scan, bool), CrmError> {
    let super::Poll {
        kind,
        client,
        deps,
        key,
        table,
        input,
        deadline,
    } = *poll;
    let fresh = stored.is_none();
    let (state, mut started) = match stored {
        Some(state) => (state, None),
        None => new_cursor(poll).await?,
    };
    let initial = match kind {
        Kind::Created => TriggerState::Created(state.clone()),
        _ => TriggerState::Updated(state.clone()),
    };
    let query = cursor_query(kind, &state, input, table, deps.overlap);
    // Asked once per process, before the first page: the scan compares every row with it.
    let own_user = if input.ignore_own_changes {
        Some(deps.crm.own_user(&input.dataset, deadline).await?)
    } else {
        None
    };
    let strip_author = author_added(kind, input);
    // Rows the window re-reads take room in a page without firing, and the updated trigger also passes
    // over creations and unchanged fingerprints: pages larger than $top keep most polls to one request.
    let wanted = input.top + state.seen.0.len() + 1;
    // A large poll is asked for in pages of at most `AHEAD_PAGE`, each next one fetched while this
    // one is worked through.
    let page_size = match kind {
        Kind::Created => wanted,
        _ => wanted.max(2 * input.top),
    }
    .clamp(1, AHEAD_PAGE);
    // These are plain reads, never change tracking, so asking for annotations cannot cost the
    // delta link Dataverse was once reported to drop when both were asked.
    let prefer = Prefer {
        max_page_size: Some(page_size),
        track_changes: false,
        formatted_values: input.formatted_values,
    };
    let sorted: Vec<String> = input
        .orderby
        .iter()
        .flatten()
        .map(|(c, _)| c.clone())
        .collect();
    let columns = Columns {
        primary_id: &table.primary_id_attribute,
        watched: &input.columns,
        sorted: &sorted,
        author: input.ignore_own_changes.then(|| author_column(kind)),
    };
    let remembered = state.seen.index();
    let mut pages = client.pager(client.collection_url(table, &query)?, prefer, deadline);
    let mut scan = Scan::default();
    // Whether the last page read links a next one; `None` before the first.
    let mut more = None;
    'pages: while scan.fired() < input.top {
        if !deadline.allows(Duration::ZERO) {
            tracing::info!("out of time to fetch; publishing what was found");
            break;
        }
        let page = match pages.next().await {
            Ok(Some(page)) => page,
            Ok(None) => {
                scan.backlog = Some(0);
                break;
            }
            Err(e) => {
                scan.error = Some(e.into());
                break;
            }
        };
        more = Some(page.next_link.is_some());
        // Only when this page cannot reach `$top` even if every row fires: otherwise the next
        // page may go unread, a request spent on nothing.
        if scan.fired() + page.rows.len() < input.top {
            pages.fetch_ahead().await;
        }
        // "Now" is the first answer's time: every row in it, and in the pages after it, was
        // created before or during that second.
        let now = *started.get_or_insert_with(|| super::server_now(&page));
        let mut rows = Vec::with_capacity(page.rows.len());
        for raw in page.rows {
            match columns.read(raw) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    scan.error = Some(e.into());
                    break 'pages;
                }
            }
        }
        let stored_fingerprints = if input.columns.is_empty() {
            std::collections::HashMap::new()
        } else {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            match deps.store.within(deadline).fingerprints(key, &ids).await {
                Ok(found) => found,
                Err(e) => {
                    scan.error = Some(e.into());
                    break;
                }
            }
        };
        let judge =
            |row: &Row| Verdict::of(kind, row, now, &remembered, &stored_fingerprints, own_user);
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            let verdict = judge(&row);
            if verdict == Verdict::NotYet {
                // Its second is not over: a row created later in it could sort before this one.
                // The rest of the scan is in this second too, so nothing is left behind.
                scan.backlog = Some(0);
                break 'pages;
            }
            if scan.fired() >= input.top {
                scan.backlog = Some(left_behind(
                    std::iter::once(row).chain(rows).map(|r| judge(&r)),
                    more == Some(true),
                ));
                break 'pages;
            }
            let seen = seen_entry(kind, &row);
            let row_position = match kind {
                Kind::Created => Position::Created {
                    on: row.created,
                    id: row.id,
                },
                _ => Position::Updated {
                    version: row.version,
                },
            };
            let forward = row_position > state.position;
            if verdict == Verdict::Remembered {
                // Handled already (fired, or there when the cursor started): nothing fires, but a
                // row ahead of the cursor still moves it.
                if forward {
                    scan.steps.push(Step::Change {
                        fired: None,
                        forward: Some(row_position),
                        seen,
                        fingerprint: None,
                        skipped_own: false,
                    });
                }
                continue;
            }
            // A change passed over as the connector's own saves the row's values too: kept from
            // before it, they would come back as changed at the row's next change by anyone
            // else, and a workflow writing them again would loop. A person's change the
            // connector wrote over before this poll is passed over with it (docs/events.md).
            let fingerprint = row.fingerprint.clone().map(|fingerprint| {
                (
                    row.id,
                    Kept {
                        fingerprint,
                        values: Some(kept::keep(&input.columns, &row.watched)),
                    },
                )
            });
            if verdict == Verdict::Own {
                tracing::debug!(id = %row.id, version = row.version, "a change by the connector's own user; passed over");
            }
            let fired = if verdict == Verdict::Fire {
                if !forward {
                    tracing::info!(id = %row.id, version = row.version, "a late commit, below the cursor, fires now");
                }
                let changes = (kind == Kind::Updated && !input.columns.is_empty()).then(|| {
                    let difference = kept::difference(
                        &input.columns,
                        &row.watched,
                        stored_fingerprints
                            .get(&row.id)
                            .and_then(|k| k.values.as_deref()),
                    );
                    event::ColumnChanges {
                        changed: difference.changed,
                        previous: difference.previous,
                        previous_omitted: difference.omitted,
                    }
                });
                let record = if strip_author {
                    match super::row::without(&row.raw, author_column(kind)) {
                        Ok(record) => record,
                        Err(e) => {
                            scan.error = Some(e.into());
                            break 'pages;
                        }
                    }
                } else {
                    row.raw
                };
                let event = match event::event_for(&event::Change {
                    kind,
                    dataset: input.dataset.as_str(),
                    table,
                    id: row.id,
                    version: Some(row.version),
                    changed_on: Some(&row.modified_text),
                    record: Some(&record),
                    via: None,
                    changes: changes.as_ref(),
                }) {
                    Ok(event) => event,
                    Err(e) => {
                        scan.error = Some(e.into());
                        break 'pages;
                    }
                };
                let changed_at = match kind {
                    Kind::Created => row.created,
                    _ => row.modified,
                };
                Some(scan.fire(
                    event,
                    Fired {
                        id: row.id,
                        row: record,
                        sort_keys: row.sort_keys,
                    },
                    Some(changed_at),
                ))
            } else {
                None
            };
            scan.steps.push(Step::Change {
                fired,
                forward: forward.then_some(row_position),
                seen,
                fingerprint,
                skipped_own: verdict == Verdict::Own,
            });
        }
    }
    // Stopped by `$top` at the end of a page, or out of time: only a next page is known to be left.
    if scan.error.is_none() && scan.backlog.is_none() {
        scan.backlog = more.map(u64::from);
    }
    scan.started = started;
    Ok((initial, scan, fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_top_left_behind_up_to_the_second_not_over() {
        use Verdict::{Fire, NotYet, Own, Pass, Remembered};
        assert_eq!(
            left_behind([Fire, Pass, Fire, Remembered, Own].into_iter(), false),
            2
        );
        assert_eq!(left_behind([Fire, Fire].into_iter(), true), 3);
        assert_eq!(
            left_behind([Fire, NotYet, Fire].into_iter(), true),
            1,
            "rows of the current second, and pages after them, are not left behind"
        );
        assert_eq!(left_behind(std::iter::empty(), true), 1);
    }

    #[test]
    fn writes_date_time_literals_in_utc() {
        assert_eq!(literal(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
