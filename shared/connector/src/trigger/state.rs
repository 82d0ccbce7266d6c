//! What a trigger remembers between polls.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Changes fired within the overlap window are remembered, at most this many. Each takes 32 bytes,
/// so the set stays far below DynamoDB's 400 KB item limit.
pub(crate) const SEEN_CAP: usize = 6000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerState {
    Created(Changes),
    Updated(Changes),
    Deleted(Deletions),
}

/// The state of `when-record-created` and `when-record-updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Changes before this time (Unix seconds) never fire: the first poll's time, or the payload's
    /// `since`.
    pub since: i64,
    /// How far the forward scan got.
    pub position: Position,
    /// Changes handled within the overlap window, so a late commit below `position` is told apart
    /// from one already fired.
    pub seen: Seen,
    /// When the seen set overflowed, the time below which it no longer remembers (the overlap window
    /// shrinks to it rather than fire twice).
    #[serde(default)]
    pub seen_floor: i64,
    /// When the last scan began. The overlap window reaches back from it, not from now, so a change
    /// that commits late between two polls, however far apart, is still within reach.
    #[serde(default)]
    pub scanned_at: Option<i64>,
}

impl Changes {
    /// A cursor that has not scanned yet.
    pub fn new(since: i64, position: Position, seen: Seen) -> Self {
        Self {
            since,
            position,
            seen,
            seen_floor: 0,
            scanned_at: None,
        }
    }

    /// Where the window starts: `overlap` before the previous scan, never before `since`, nor below
    /// what an overflowed seen set still remembers. A cursor that has not scanned yet starts its
    /// window at `since`: every change after it is ahead of the cursor anyway.
    ///
    /// Reaching back from the previous scan rather than from now needs no clock here, and a change
    /// that commits late between two polls, however far apart, is still within reach.
    pub(crate) fn window_floor(&self, overlap: std::time::Duration) -> i64 {
        let overlap = i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX);
        let reference = self.scanned_at.unwrap_or(self.since);
        self.since
            .max(reference.saturating_sub(overlap))
            .max(self.seen_floor)
    }
}

/// The forward scan's position: the last change handled, in scan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// `(createdon, primary key)` of the last row handled: creation time never changes, and the key
    /// orders rows created in the same second.
    Created { on: i64, id: Uuid },
    /// The `versionnumber` of the last change handled: unique and increasing across the org.
    Updated { version: u64 },
}

/// Positions compare as Dataverse orders the rows: a creation's key as SQL Server orders GUIDs.
impl Ord for Position {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Position::Created { on: a, id: x }, Position::Created { on: b, id: y }) => {
                a.cmp(b).then_with(|| sql_order(x).cmp(&sql_order(y)))
            }
            (Position::Updated { version: a }, Position::Updated { version: b }) => a.cmp(b),
            (Position::Created { .. }, Position::Updated { .. }) => std::cmp::Ordering::Less,
            (Position::Updated { .. }, Position::Created { .. }) => std::cmp::Ordering::Greater,
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A GUID's bytes in the order SQL Server compares `uniqueidentifier` values (last group first, the
/// first three groups byte-swapped; see `System.Data.SqlTypes.SqlGuid`). Dataverse evaluates
/// `accountid gt <guid>` and orders by primary key this way, so the cursor must too, or it would
/// step back over rows it has passed.
pub(super) fn sql_order(id: &Uuid) -> [u8; 16] {
    let u = id.as_bytes();
    [
        u[10], u[11], u[12], u[13], u[14], u[15], u[8], u[9], u[7], u[6], u[5], u[4], u[3], u[2],
        u[1], u[0],
    ]
}

/// The state of `when-record-deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletions {
    /// Counts baselines and delta passes, so positions keep increasing across them.
    pub generation: u64,
    /// Tombstones fired in this generation.
    pub fired: u64,
    pub phase: Phase,
    /// Whether this cursor keeps the ids of the rows it knows (`remember_ids`). A cursor saved
    /// without it that is now asked to remember first lists every row's id ([`Phase::Learn`]), so
    /// that its set holds quiet rows too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remembers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// With a `$filter`: paging through the rows that match it, to fill the membership set before
    /// the baseline; `next` is where to resume.
    Members { next: Option<String> },
    /// Paging through the initial change-tracking result to reach its delta link; `next` is where
    /// to resume if the poll ran out of time.
    Baseline { next: Option<String> },
    /// Following a delta: `link` is the page to (re)read, `after` the last tombstone fired from it.
    Tracking { link: String, after: Option<Uuid> },
    /// `remember_ids` turned on for a cursor without a filter that did not remember ids: the ids
    /// left from an earlier time it remembered are dropped, then every row's id is listed into the
    /// set (`next` resumes the listing), and the cursor carries on with `then`, the phase it was
    /// in, so the deletions its saved delta holds still fire.
    Learn {
        next: Option<String>,
        then: Box<Phase>,
    },
    /// With `remember_ids`, after a new baseline: remembered rows the baseline (or the membership
    /// snapshot) did not confirm, those marked below generation `below`, are asked about, and
    /// each one gone fires as a deletion. `link` is the delta to follow afterwards.
    Sweep { link: String, below: u64 },
}

/// The latest time a `$filter` literal can spell: 9999-12-31T23:59:59Z.
pub(crate) const LATEST: i64 = 253_402_300_799;

impl TriggerState {
    /// Why this state cannot be a real one, if it cannot: a time outside 1970 to 9999 (a damaged or
    /// hand-edited cursor), which no query could express and no position could order.
    pub fn damage(&self) -> Option<String> {
        let (TriggerState::Created(c) | TriggerState::Updated(c)) = self else {
            return None;
        };
        let on = match c.position {
            Position::Created { on, .. } => Some(on),
            Position::Updated { .. } => None,
        };
        let times = [
            ("since", Some(c.since)),
            ("position", on),
            ("seen_floor", Some(c.seen_floor)),
            ("scanned_at", c.scanned_at),
        ]
        .into_iter()
        .chain(c.seen.0.iter().map(|e| ("seen", Some(e.at))));
        for (field, time) in times {
            if let Some(t) = time
                && !(0..=LATEST).contains(&t)
            {
                return Some(format!(
                    "its {field} time, {t}, is not between 1970 and 9999"
                ));
            }
        }
        None
    }

    /// A string that sorts as the trigger advances, which the store refuses to see go backwards.
    pub fn position(&self) -> String {
        match self {
            TriggerState::Created(c) | TriggerState::Updated(c) => match c.position {
                Position::Created { on, id } => {
                    format!("c{:012}{}", on.max(0), super::hex(&sql_order(&id)))
                }
                Position::Updated { version } => format!("u{version:020}"),
            },
            TriggerState::Deleted(d) => format!("d{:010}{:012}", d.generation, d.fired),
        }
    }
}

/// One change remembered in the overlap window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenEntry {
    pub id: Uuid,
    /// The version fired (0 for creations, which are identified by the row alone).
    pub version: u64,
    /// The change's time (Unix seconds), for pruning.
    pub at: i64,
}

/// The overlap window's memory, stored as base64 of 32-byte entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen(pub Vec<SeenEntry>);

impl Seen {
    /// The set's `(id, version)` pairs, for the many lookups of one poll: a page holds up to 5,000
    /// rows and the set up to [`SEEN_CAP`] entries, too many to compare one by one.
    pub(crate) fn index(&self) -> std::collections::HashSet<(Uuid, u64)> {
        self.0.iter().map(|e| (e.id, e.version)).collect()
    }

    /// Forgets entries older than `floor`; if more than [`SEEN_CAP`] remain, forgets the oldest and
    /// returns the new floor (the oldest time still fully remembered).
    pub(crate) fn prune(&mut self, floor: i64) -> i64 {
        self.0.retain(|e| e.at >= floor);
        if self.0.len() <= SEEN_CAP {
            return floor;
        }
        self.0.sort_by_key(|e| e.at);
        let excess = self.0.len() - SEEN_CAP;
        // Drop whole seconds, so no time is half remembered.
        let cut = self.0[excess].at + 1;
        self.0.retain(|e| e.at >= cut);
        cut
    }
}

impl Serialize for Seen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 32);
        for entry in &self.0 {
            bytes.extend_from_slice(entry.id.as_bytes());
            bytes.extend_from_slice(&entry.version.to_be_bytes());
            bytes.extend_from_slice(&entry.at.to_be_bytes());
        }
        serializer.serialize_str(&STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Seen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 32 != 0 {
            return Err(serde::de::Error::custom(
                "the seen set is not a whole number of entries",
            ));
        }
        let entries = bytes
            .chunks_exact(32)
            .map(|chunk| {
                let mut id = [0u8; 16];
                let mut version = [0u8; 8];
                let mut at = [0u8; 8];
                id.copy_from_slice(&chunk[..16]);
                version.copy_from_slice(&chunk[16..24]);
                at.copy_from_slice(&chunk[24..]);
                SeenEntry {
                    id: Uuid::from_bytes(id),
                    version: u64::from_be_bytes(version),
                    at: i64::from_be_bytes(at),
                }
            })
            .collect();
        Ok(Self(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64) -> SeenEntry {
        SeenEntry {
            id: Uuid::new_v4(),
            version: u64::try_from(at).unwrap_or(0),
            at,
        }
    }

    #[test]
    fn a_listing_saved_halfway_keeps_the_phase_it_returns_to() {
        let state = TriggerState::Deleted(Deletions {
            generation: 3,
            fired: 0,
            phase: Phase::Learn {
                next: Some("next-page".into()),
                then: Box::new(Phase::Tracking {
                    link: "delta".into(),
                    after: Some(Uuid::from_u128(9)),
                }),
            },
            remembers: true,
        });
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<TriggerState>(&text).unwrap(), state);
    }

    #[test]
    fn positions_order_guids_as_sql_server_does() {
        let at = |text: &str| Position::Created {
            on: 5,
            id: Uuid::parse_str(text).unwrap(),
        };
        assert!(
            at("ffffffff-ffff-ffff-ffff-000000000000") < at("00000000-0000-0000-0000-000000000001")
        );
        assert!(
            at("00000000-0000-0100-0000-000000000000") < at("00000000-0000-0001-0000-000000000000")
        );
        assert!(
            at("01000000-0000-0000-0000-000000000000") < at("00000001-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn round_trips_through_json() {
        let state = TriggerState::Updated(Changes {
            since: 1_700_000_000,
            position: Position::Updated { version: 42 },
            seen: Seen(vec![entry(1_700_000_010), entry(1_700_000_011)]),
            seen_floor: 0,
            scanned_at: Some(1_700_000_020),
        });
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<TriggerState>(&json).unwrap(), state);
    }

    #[test]
    fn positions_sort_as_the_cursor_advances() {
        let created = |on: i64, id: u128| {
            TriggerState::Created(Changes {
                since: 0,
                position: Position::Created {
                    on,
                    id: Uuid::from_u128(id),
                },
                seen: Seen::default(),
                seen_floor: 0,
                scanned_at: None,
            })
            .position()
        };
        assert!(created(1_700_000_000, 9) < created(1_700_000_001, 1));
        assert!(created(1_700_000_001, 1) < created(1_700_000_001, 2));
        // Within a second, in SQL Server's GUID order: the last group decides before the first.
        let first_group = 0xff00_0000_0000_0000_0000_0000_0000_0000;
        assert!(created(1_700_000_001, first_group) < created(1_700_000_001, 1));
        let deleted = |generation, fired| {
            TriggerState::Deleted(Deletions {
                generation,
                fired,
                phase: Phase::Baseline { next: None },
                remembers: false,
            })
            .position()
        };
        assert!(deleted(1, 999) < deleted(2, 0));
    }

    #[test]
    fn the_window_reaches_back_from_the_previous_scan_not_from_now() {
        let mut changes = Changes {
            since: 1_000,
            position: Position::Updated { version: 1 },
            seen: Seen::default(),
            seen_floor: 0,
            scanned_at: None,
        };
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(
            changes.window_floor(minute),
            1_000,
            "a new cursor: from since"
        );
        // Polls five minutes apart: the window covers the whole gap, plus a minute.
        changes.scanned_at = Some(10_000);
        assert_eq!(changes.window_floor(minute), 9_940);
        changes.scanned_at = Some(1_010);
        assert_eq!(changes.window_floor(minute), 1_000, "never before since");
        changes.scanned_at = Some(10_000);
        changes.seen_floor = 9_990;
        assert_eq!(
            changes.window_floor(minute),
            9_990,
            "nor below an overflowed memory"
        );
    }

    #[test]
    fn pruning_forgets_old_entries_and_whole_seconds_past_the_cap() {
        let mut seen = Seen((0..10).map(|i| entry(100 + i)).collect());
        assert_eq!(seen.prune(105), 105);
        assert_eq!(seen.0.len(), 5);
        let mut crowded = Seen(
            (0..SEEN_CAP + 10)
                .map(|i| entry(1000 + i64::try_from(i / 100).unwrap()))
                .collect(),
        );
        let floor = crowded.prune(0);
        assert!(crowded.0.len() <= SEEN_CAP);
        assert!(crowded.0.iter().all(|e| e.at >= floor));
        assert!(floor > 1000);
    }
}
