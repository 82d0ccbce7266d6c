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
//!   fires only once its creation second is over (`createdon lt now`), so no row can later appear in
//!   a second the cursor has entered, except by committing late (a delay of under a second).
//! - **the overlap window**: every poll also re-reads rows whose time is within the last
//!   `CRM_TRIGGER_OVERLAP_SECS` (60 s by default), even below the cursor. Rows found there that the
//!   trigger does not remember firing (the `seen` set holds `(id, version)`, or the id for creations,
//!   of every change handled inside the window) are late commits, and fire. Outside the window the
//!   set is pruned, so the state stays small; it is capped, and past the cap the window narrows
//!   instead of firing twice.
//!
//! Both filters are sent to Dataverse together with the user's `$filter`, which Dataverse applies:
//! `((key after cursor) or (time within window)) and (user filter)`, ordered by the key. Nothing is
//! filtered here except what the cursor and the window say.
//!
//! `when-record-updated` does not fire for a row's creation (`createdon == modifiedon`; Dataverse
//! cannot tell an update in the creation's own second from the creation). With `columns` it fires only
//! when the watched columns' values differ from the fingerprint stored for the row; a row with no
//! stored fingerprint (changed before the trigger first saw it) fires, since it may have changed.

use std::pin::pin;

use dataverse::{Client, Deadline, Prefer, Query, Table};
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{Changes, Kind, Position, Scan, Seen, SeenEntry, Step, TriggerInput, TriggerState};
use crate::CrmError;

/// The fields of a row the scan needs.
struct RowKey {
    id: Uuid,
    created: i64,
    modified: i64,
    modified_text: String,
    version: u64,
}

fn row_error(problem: String) -> CrmError {
    CrmError::Dataverse(dataverse::Error::Invalid {
        what: "row",
        problem,
    })
}

fn seconds(row: &Map<String, Value>, column: &str) -> Result<(i64, String), CrmError> {
    let text = row
        .get(column)
        .and_then(Value::as_str)
        .ok_or_else(|| row_error(format!("a row has no '{column}'")))?;
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| {
            row_error(format!(
                "'{column}' is not a date-time: {}",
                crate::excerpt(text)
            ))
        })?
        .unix_timestamp();
    Ok((at, text.to_owned()))
}

fn row_key(row: &Map<String, Value>, primary_id: &str) -> Result<RowKey, CrmError> {
    let id = row
        .get(primary_id)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| row_error(format!("a row has no GUID in '{primary_id}'")))?;
    let (created, _) = seconds(row, "createdon")?;
    let (modified, modified_text) = seconds(row, "modifiedon")?;
    let version = row
        .get("versionnumber")
        .and_then(Value::as_u64)
        .ok_or_else(|| row_error("a row has no 'versionnumber'".into()))?;
    Ok(RowKey {
        id,
        created,
        modified,
        modified_text,
        version,
    })
}

/// An OData date-time literal for a `$filter`.
fn literal(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The watched columns' values, hashed: equal fingerprints mean no watched column changed.
fn fingerprint(row: &Map<String, Value>, columns: &[String]) -> String {
    let values: Vec<&Value> = columns
        .iter()
        .map(|c| row.get(c).unwrap_or(&Value::Null))
        .collect();
    let digest = Sha256::digest(serde_json::to_vec(&values).unwrap_or_default());
    super::hex(&digest[..8])
}

/// `$select` with what the scan needs added, or none (all columns) when the user chose none.
fn selection(input: &TriggerInput, table: &Table) -> Option<String> {
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
    for column in needed
        .into_iter()
        .chain(input.columns.iter().map(String::as_str))
        .chain(sorted)
    {
        if !columns.iter().any(|c| c == column) {
            columns.push(column.to_owned());
        }
    }
    Some(columns.join(","))
}

/// The highest `versionnumber` in the table now: where a new updated-trigger starts.
async fn latest_version(
    client: &Client,
    table: &Table,
    deadline: Deadline,
) -> Result<u64, CrmError> {
    let query = Query::new()
        .select("versionnumber")
        .orderby("versionnumber desc");
    let mut rows = pin!(client.rows(table, &query, 0, Some(1), deadline));
    let Some(row) = rows.try_next().await? else {
        return Ok(0);
    };
    let row: Map<String, Value> =
        serde_json::from_str(row.get()).map_err(|e| row_error(e.to_string()))?;
    Ok(row
        .get("versionnumber")
        .and_then(Value::as_u64)
        .unwrap_or(0))
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
    let mut rows = pin!(client.rows(table, &query, 0, Some(dataverse::MAX_PAGE_SIZE), deadline));
    let mut seen = Seen::default();
    while let Some(raw) = rows.try_next().await? {
        let row: Map<String, Value> =
            serde_json::from_str(raw.get()).map_err(|e| row_error(e.to_string()))?;
        let key = row_key(&row, pk)?;
        seen.0.push(match kind {
            Kind::Created => SeenEntry {
                id: key.id,
                version: 0,
                at: key.created,
            },
            _ => SeenEntry {
                id: key.id,
                version: key.version,
                at: key.modified,
            },
        });
    }
    Ok(seen)
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
    let now = super::unix_now();
    let fresh = stored.is_none();
    let state = if let Some(state) = stored {
        state
    } else {
        let since = input.since.unwrap_or(now);
        // With `since` the scan starts at the beginning and the time filter does the work. Without,
        // the updated trigger starts after the newest version there is, read first so that the
        // changes remembered below are all at or under it.
        let position = match kind {
            Kind::Created => Position::Created {
                on: since,
                id: Uuid::nil(),
            },
            _ if input.since.is_some() => Position::Updated { version: 0 },
            _ => Position::Updated {
                version: latest_version(client, table, deadline).await?,
            },
        };
        let seen = if input.since.is_none() {
            already_there(kind, client, table, since, position, deadline).await?
        } else {
            Seen::default()
        };
        tracing::info!(trigger = kind.name(), since, "starting a new cursor");
        Changes {
            since,
            position,
            seen,
            seen_floor: 0,
            scanned_at: None,
        }
    };
    let initial = match kind {
        Kind::Created => TriggerState::Created(state.clone()),
        _ => TriggerState::Updated(state.clone()),
    };

    let floor = state.window_floor(now, deps.overlap);
    let pk = table.primary_id_attribute.as_str();
    let (cursor_filter, orderby) = match state.position {
        // A creation fires once its second is over (`createdon lt now`): after that no new row can
        // take that second except by committing late, which the window catches. Without this rule a
        // row created later in the cursor's own second, with a smaller key, would slip behind it.
        Position::Created { on, id } => (
            format!(
                "(createdon gt {t} or (createdon eq {t} and {pk} gt {id}) or createdon ge {f}) and createdon lt {n}",
                t = literal(on),
                f = literal(floor),
                n = literal(now)
            ),
            format!("createdon asc,{pk} asc"),
        ),
        Position::Updated { version } => (
            format!(
                "(versionnumber gt {version} or modifiedon ge {f}) and modifiedon ge {since}",
                f = literal(floor),
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
    let mut orderby = orderby;
    for (column, _) in input.orderby.iter().flatten() {
        orderby.push(',');
        orderby.push_str(column);
    }
    let query = Query {
        select: selection(input, table),
        filter: Some(filter),
        orderby: Some(orderby),
        expand: None,
        count: false,
    };
    // Rows the window re-reads take room in a page without firing, and the updated trigger also passes
    // over creations and unchanged fingerprints: pages larger than $top keep most polls to one request.
    let wanted = input.top + state.seen.0.len() + 1;
    let page_size = match kind {
        Kind::Created => wanted,
        _ => wanted.max(2 * input.top),
    }
    .clamp(1, dataverse::MAX_PAGE_SIZE);
    let prefer = Prefer {
        max_page_size: Some(page_size),
        track_changes: false,
    };
    let mut pages = pin!(client.pages(client.collection_url(table, &query)?, prefer, deadline));
    let mut scan = Scan {
        started: now,
        ..Scan::default()
    };
    'pages: while scan.fired() < input.top {
        if !deadline.allows(std::time::Duration::ZERO) {
            tracing::info!("out of time to fetch; publishing what was found");
            break;
        }
        let page = match pages.try_next().await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                scan.error = Some(e.into());
                break;
            }
        };
        let mut rows = Vec::with_capacity(page.rows.len());
        for raw in page.rows {
            let row: Map<String, Value> = match serde_json::from_str(raw.get()) {
                Ok(row) => row,
                Err(e) => {
                    scan.error = Some(row_error(e.to_string()));
                    break 'pages;
                }
            };
            match row_key(&row, pk) {
                Ok(k) => rows.push((k, row)),
                Err(e) => {
                    scan.error = Some(e);
                    break 'pages;
                }
            }
        }
        let stored_fingerprints = if input.columns.is_empty() {
            std::collections::HashMap::new()
        } else {
            let ids: Vec<Uuid> = rows.iter().map(|(k, _)| k.id).collect();
            match deps.store.within(deadline).fingerprints(key, &ids).await {
                Ok(found) => found,
                Err(e) => {
                    scan.error = Some(e.into());
                    break;
                }
            }
        };
        for (k, row) in rows {
            if scan.fired() >= input.top {
                break 'pages;
            }
            let (row_position, seen) = match kind {
                Kind::Created => (
                    Position::Created {
                        on: k.created,
                        id: k.id,
                    },
                    SeenEntry {
                        id: k.id,
                        version: 0,
                        at: k.created,
                    },
                ),
                _ => (
                    Position::Updated { version: k.version },
                    SeenEntry {
                        id: k.id,
                        version: k.version,
                        at: k.modified,
                    },
                ),
            };
            let forward = row_position > state.position;
            if state.seen.contains(seen.id, seen.version) {
                // Handled already (fired, or there when the cursor started): nothing fires, but a
                // row ahead of the cursor still moves it.
                if forward {
                    scan.steps.push(Step::Change {
                        fired: None,
                        forward: Some(row_position),
                        seen,
                        fingerprint: None,
                    });
                }
                continue;
            }
            let fingerprint =
                (!input.columns.is_empty()).then(|| fingerprint(&row, &input.columns));
            let should_fire = match kind {
                Kind::Created => true,
                _ if k.created == k.modified => false,
                _ => match &fingerprint {
                    None => true,
                    Some(fp) => stored_fingerprints.get(&k.id) != Some(fp),
                },
            };
            let fired = if should_fire {
                if !forward {
                    tracing::info!(id = %k.id, version = k.version, "a late commit, below the cursor, fires now");
                }
                let event = super::change_event(
                    kind,
                    input.dataset.as_str(),
                    table,
                    k.id,
                    Some(k.version),
                    Some(&k.modified_text),
                    Some(&row),
                );
                Some(scan.fire(event, Value::Object(row)))
            } else {
                None
            };
            scan.steps.push(Step::Change {
                fired,
                forward: forward.then_some(row_position),
                seen,
                fingerprint: fingerprint.map(|fp| (k.id, fp)),
            });
        }
    }
    Ok((initial, scan, fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_only_with_the_watched_columns() {
        let row = |name: &str, phone: &str| {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(name.into()));
            m.insert("telephone1".into(), Value::String(phone.into()));
            m
        };
        let watched = vec!["name".to_owned()];
        assert_eq!(
            fingerprint(&row("a", "1"), &watched),
            fingerprint(&row("a", "2"), &watched)
        );
        assert_ne!(
            fingerprint(&row("a", "1"), &watched),
            fingerprint(&row("b", "1"), &watched)
        );
    }

    #[test]
    fn writes_date_time_literals_in_utc() {
        assert_eq!(literal(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
