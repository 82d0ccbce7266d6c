//! `when-record-deleted` with a `$filter`: the membership set.
//!
//! A tombstone carries only the row's id, so whether the deleted row matched the filter cannot be
//! asked of Dataverse once it is gone. The trigger therefore remembers which rows match, in the cursor
//! store beside its cursor, and fires a tombstone only for a row in that set:
//!
//! - **Snapshot.** Before the change-tracking baseline, the trigger pages through the rows matching
//!   the filter and adds each to the set. Taking it *before* the baseline means no row can match,
//!   be deleted and be missed in between: a deletion after the snapshot started is in the first delta.
//! - **Deltas.** Every row a delta page reports as created or updated is asked about again:
//!   Dataverse says which of them match now (`(<filter>) and (<key> eq … or …)`). Those join the set;
//!   members that no longer match leave it. A member that Dataverse no longer returns at all may have
//!   been deleted since the delta was read, so it is asked about once more without the filter, and
//!   stays a member unless it still exists: its tombstone comes in the next delta and must fire.
//! - **Tombstones** fire for members only. A fired member leaves the set once its event is published
//!   (see `Leased::poll`); until then a repeat of the page finds it and fires it again, never loses it.
//!
//! What this cannot know: a row created and deleted between two polls was never seen, so its
//! deletion does not fire (push mode sees it, from the Delete step's pre-image). Rows that changed
//! between the snapshot and the baseline's start keep the membership the snapshot gave them until
//! they next change.

use std::collections::HashSet;

use dataverse::{Client, Deadline, Page, Prefer, Query, Table};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::ScanError;
use crate::CrmError;
use crate::cursor::Within;

/// The most ids asked about per request: 200 `<key> eq <guid> or` terms make about 14 KB of URL.
/// A long filter leaves room for fewer (see [`Members::ids_per_query`]).
const IDS_PER_QUERY: usize = 200;

/// The membership set of one trigger, and what it needs to keep it. Without a filter (a trigger
/// with `remember_ids` alone) every row that exists is a member.
pub(super) struct Members<'a> {
    pub(super) filter: Option<&'a str>,
    pub(super) store: Within<'a>,
    pub(super) key: &'a str,
    pub(super) client: &'a Client,
    pub(super) table: &'a Table,
    pub(super) deadline: Deadline,
}

impl Members<'_> {
    fn prefer() -> Prefer {
        Prefer {
            max_page_size: Some(dataverse::MAX_PAGE_SIZE),
            track_changes: false,
            formatted_values: false,
        }
    }

    /// Reads one page of the rows matching the filter (`next` resumes a snapshot) and adds them to
    /// the set, marked `mark`. Returns the link to the next page, `None` when the snapshot is
    /// complete.
    pub(super) async fn snapshot(
        &self,
        next: Option<&str>,
        mark: u64,
    ) -> Result<Option<String>, CrmError> {
        let url = if let Some(next) = next {
            self.client.link(next)?
        } else {
            let mut query = Query::new().select(self.table.primary_id_attribute.clone());
            if let Some(filter) = self.filter {
                query = query.filter(filter);
            }
            self.client.collection_url(self.table, &query)?
        };
        let page = self
            .client
            .page(&url, Self::prefer(), self.deadline)
            .await?;
        let rows = self.add(&page, mark).await?;
        tracing::debug!(
            table = %self.table.entity_set_name,
            rows,
            "membership snapshot page"
        );
        Ok(page.next_link)
    }

    /// Adds every row of `page` to the set, marked `mark`: a snapshot's page, or with
    /// `remember_ids` and no filter a baseline's, which lists every row too. Returns how many.
    pub(super) async fn add(&self, page: &Page, mark: u64) -> Result<usize, CrmError> {
        let ids = self.ids(page)?;
        self.store.change_members(self.key, &ids, &[], mark).await?;
        Ok(ids.len())
    }

    /// Brings the set up to date for rows a delta reported as created or updated; rows that join
    /// are marked `mark`.
    pub(super) async fn refresh(&self, changed: &[Uuid], mark: u64) -> Result<(), CrmError> {
        if changed.is_empty() {
            return Ok(());
        }
        let known = self.store.members(self.key, changed).await?;
        if self.filter.is_none() {
            // Every row a delta reports as created or updated exists (or its tombstone follows,
            // which the set then loses): only the ones not known yet are written.
            let added: Vec<Uuid> = changed
                .iter()
                .filter(|id| !known.contains(id))
                .copied()
                .collect();
            self.store
                .change_members(self.key, &added, &[], mark)
                .await?;
            return Ok(());
        }
        let matching = self.existing(changed, true).await?;
        let added: Vec<Uuid> = changed
            .iter()
            .filter(|id| matching.contains(id) && !known.contains(id))
            .copied()
            .collect();
        let lapsed: Vec<Uuid> = known
            .iter()
            .filter(|id| !matching.contains(id))
            .copied()
            .collect();
        // A lapsed member Dataverse no longer has was deleted after the delta was read: keep it, so
        // that its tombstone fires.
        let still_there = self.existing(&lapsed, false).await?;
        let removed: Vec<Uuid> = lapsed
            .into_iter()
            .filter(|id| still_there.contains(id))
            .collect();
        self.store
            .change_members(self.key, &added, &removed, mark)
            .await?;
        Ok(())
    }

    /// For `remember_ids` after a new baseline: which of `candidates` (members the baseline or the
    /// snapshot did not confirm) are gone. The ones still there are confirmed again with `mark`
    /// when they match the filter (or there is none), and leave the set otherwise.
    pub(super) async fn gone(&self, candidates: &[Uuid], mark: u64) -> Result<Vec<Uuid>, CrmError> {
        let existing = self.existing(candidates, false).await?;
        let matching = if self.filter.is_some() {
            self.existing(candidates, true).await?
        } else {
            existing.clone()
        };
        let (kept, lapsed): (Vec<Uuid>, Vec<Uuid>) = candidates
            .iter()
            .filter(|id| existing.contains(id))
            .partition(|id| matching.contains(id));
        self.store
            .change_members(self.key, &kept, &lapsed, mark)
            .await?;
        Ok(candidates
            .iter()
            .filter(|id| !existing.contains(id))
            .copied()
            .collect())
    }

    /// How many ids fit in one query beside the filter, within Dataverse's URL limit. The poll
    /// checks up front that the filter leaves at least a kilobyte, room for about fifteen.
    fn ids_per_query(&self, filtered: bool) -> Result<usize, CrmError> {
        let key = &self.table.primary_id_attribute;
        let probe = match (filtered, self.filter) {
            (true, Some(filter)) => format!("({filter}) and ()"),
            _ => String::new(),
        };
        let base = self
            .client
            .collection_url(self.table, &Query::new().select(key.clone()).filter(probe))?
            .as_str()
            .len();
        // `<key>%20eq%20<guid>%20or%20`: the key and the GUID need no escaping.
        let term = key.len() + 8 + 36 + 8;
        Ok((dataverse::MAX_URL_LENGTH.saturating_sub(base) / term).clamp(1, IDS_PER_QUERY))
    }

    /// Which of `ids` exist, and match the filter when `filtered`.
    async fn existing(&self, ids: &[Uuid], filtered: bool) -> Result<HashSet<Uuid>, CrmError> {
        let key = &self.table.primary_id_attribute;
        let mut found = HashSet::new();
        if ids.is_empty() {
            return Ok(found);
        }
        for chunk in ids.chunks(self.ids_per_query(filtered)?) {
            let mut these = String::with_capacity(chunk.len() * (key.len() + 45));
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    these.push_str(" or ");
                }
                these.push_str(key);
                these.push_str(" eq ");
                these.push_str(&id.to_string());
            }
            let filter = match (filtered, self.filter) {
                // The input check guarantees the user's filter closes every group it opens, so the
                // parentheses keep it whole.
                (true, Some(filter)) => format!("({filter}) and ({these})"),
                _ => these,
            };
            let query = Query::new().select(key.clone()).filter(filter);
            let mut url = self.client.collection_url(self.table, &query)?;
            loop {
                let page = self
                    .client
                    .page(&url, Self::prefer(), self.deadline)
                    .await?;
                found.extend(self.ids(&page)?);
                match &page.next_link {
                    Some(next) => url = self.client.link(next)?,
                    None => break,
                }
            }
        }
        Ok(found)
    }

    fn ids(&self, page: &Page) -> Result<Vec<Uuid>, ScanError> {
        page.rows
            .iter()
            .map(|row| row_id(row, &self.table.primary_id_attribute))
            .collect()
    }
}

/// The key column of a row (rows here are small: the key, and whatever a delta adds).
pub(super) fn row_id(row: &RawValue, key: &str) -> Result<Uuid, ScanError> {
    let mut fields: serde_json::Map<String, Value> =
        serde_json::from_str(row.get()).map_err(ScanError::Unreadable)?;
    let value = fields.remove(key).unwrap_or(Value::Null);
    value
        .as_str()
        .and_then(|text| Uuid::parse_str(text).ok())
        .ok_or_else(|| ScanError::WrongValue {
            column: key.to_owned(),
            value: crate::excerpt(&value.to_string()),
            expected: "a GUID",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_a_guid_key_is_refused_naming_the_column() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let id = Uuid::from_u128(7);
        assert_eq!(
            row_id(&raw(&format!(r#"{{"contactid":"{id}"}}"#)), "contactid").unwrap(),
            id
        );
        for bad in [
            r#"{"contactid":7}"#,
            r#"{"other":"x"}"#,
            r#"{"contactid":"nope"}"#,
        ] {
            let error = row_id(&raw(bad), "contactid").unwrap_err();
            assert!(error.to_string().contains("'contactid'"), "{bad}: {error}");
        }
    }
}
