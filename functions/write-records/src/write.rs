//! Sending chunks of rows as bulk messages, isolating the rows Dataverse refuses, and keeping the
//! report.
//!
//! On a standard table a bulk request is all or nothing: one refused row fails it, and nothing of
//! it is written. So a chunk refused for a row's content (a 4xx other than 401, 403 and 429, which
//! say nothing about any one row) is split in halves and each half sent again, down to single rows:
//! the good rows are written, and each bad row gets its own error. Rows come out of this in input
//! order, since the left half is always settled before the right.

use std::time::Duration;

use connector::CrmError;
use dataverse::{BulkMessage, Client, Deadline, Table};
use serde::Serialize;

use crate::rows::{At, Outcome, RowError, Status, Target};

/// The least time left worth starting a request with. A bulk request of many rows takes seconds;
/// one cut off by the deadline leaves its rows unknown, where not sending it leaves them to resume.
pub(crate) const MIN_REQUEST_TIME: Duration = Duration::from_secs(2);

/// Which rows the answer lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Every row, in input order (`rows` and `Items`, which are bounded).
    All,
    /// Only rows that failed or whose outcome is unknown, at most this many (an S3 object may hold
    /// millions of rows; the rest are counted).
    Problems(usize),
}

/// The answer: counts, the rows listed, and where to resume when the invocation stopped early.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) created: u64,
    pub(crate) updated: u64,
    pub(crate) upserted: u64,
    pub(crate) failed: u64,
    pub(crate) unknown: u64,
    pub(crate) not_attempted: u64,
    /// The first row not attempted (`rows`/`Items`): resume by sending the rows from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_row: Option<u64>,
    /// The first line not attempted (S3): resume with `input.s3.start_line` set to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_line: Option<u64>,
    /// Why the invocation stopped before the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stopped: Option<RowError>,
    pub(crate) rows: Vec<Outcome>,
    /// Failed or unknown rows counted but not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) rows_omitted: u64,
    #[serde(skip)]
    listing: Option<Listing>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Report {
    pub(crate) fn new(listing: Listing) -> Self {
        Self {
            listing: Some(listing),
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, outcome: Outcome) {
        let count = match outcome.status {
            Status::Created => &mut self.created,
            Status::Updated => &mut self.updated,
            Status::Upserted => &mut self.upserted,
            Status::Failed => &mut self.failed,
            Status::Unknown => &mut self.unknown,
            Status::NotAttempted => &mut self.not_attempted,
        };
        *count += 1;
        if outcome.status == Status::NotAttempted
            && self.next_row.is_none()
            && self.next_line.is_none()
        {
            (self.next_row, self.next_line) = (outcome.row, outcome.line);
        }
        match self.listing.unwrap_or(Listing::All) {
            Listing::All => self.rows.push(outcome),
            Listing::Problems(most) => {
                if matches!(outcome.status, Status::Failed | Status::Unknown) {
                    if self.rows.len() < most {
                        self.rows.push(outcome);
                    } else {
                        self.rows_omitted += 1;
                    }
                }
            }
        }
    }

    /// Stops before `at`, which was not read: for an S3 object whose lines after it stay unread.
    pub(crate) fn stop_before(&mut self, at: At, why: RowError) {
        if self.stopped.is_none() {
            self.stopped = Some(why);
        }
        if self.next_row.is_none() && self.next_line.is_none() {
            match at {
                At::Row(n) => self.next_row = Some(n),
                At::Line(n) => self.next_line = Some(n),
            }
        }
    }
}

/// What a failed bulk request says about its rows.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Dataverse refused the rows' content: nothing was written, and some row is at fault.
    RowRefused,
    /// The request may have been carried out (its answer was lost).
    Unknown,
    /// Refused as a whole, for no row's sake (credentials, privilege, throttling, a server
    /// error): nothing was written, and the next request would fare no better.
    Refused,
}

fn verdict(error: &dataverse::Error) -> Verdict {
    if error.may_have_applied() {
        return Verdict::Unknown;
    }
    match error.status() {
        Some(status) if (400..500).contains(&status) && !matches!(status, 401 | 403 | 429) => {
            Verdict::RowRefused
        }
        _ => Verdict::Refused,
    }
}

/// The rows of one invocation, sent chunk by chunk.
pub(crate) struct Writer<'a> {
    pub(crate) client: &'a Client,
    pub(crate) table: &'a Table,
    pub(crate) message: BulkMessage,
    pub(crate) deadline: Deadline,
    pub(crate) report: Report,
    /// Whether anything may have been written yet: until then, a request refused as a whole fails
    /// the invocation (safe to retry), rather than answering a report of nothing done.
    wrote: bool,
    /// Requests sent, for the log.
    pub(crate) requests: u64,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        client: &'a Client,
        table: &'a Table,
        message: BulkMessage,
        deadline: Deadline,
        listing: Listing,
    ) -> Self {
        Self {
            client,
            table,
            message,
            deadline,
            report: Report::new(listing),
            wrote: false,
            requests: 0,
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.report.stopped.is_some()
    }

    /// Whether a request may still start.
    pub(crate) fn has_time(&self) -> bool {
        self.deadline
            .remaining()
            .is_none_or(|left| left >= MIN_REQUEST_TIME)
    }

    /// Stops here for want of time.
    pub(crate) fn out_of_time() -> RowError {
        RowError {
            kind: "Crm.ServerError",
            message: "the invocation's deadline is near: the rows from here on were not sent; resume from next_row or next_line".into(),
        }
    }

    /// Sends one chunk: `rows` in input order, each a target or a row already refused. Returns an
    /// error only when nothing at all may have been written in this invocation and a request was
    /// refused as a whole: the invocation then fails, with that request's `Crm.*` type.
    pub(crate) async fn chunk(
        &mut self,
        rows: Vec<Result<Target, Box<Outcome>>>,
    ) -> Result<(), CrmError> {
        let mut settled: Vec<Option<Outcome>> = Vec::with_capacity(rows.len());
        let mut targets = Vec::new();
        // Where each target's outcome goes.
        let mut slots = Vec::new();
        for row in rows {
            match row {
                Ok(target) => {
                    slots.push(settled.len());
                    settled.push(None);
                    targets.push(target);
                }
                Err(outcome) => settled.push(Some(*outcome)),
            }
        }
        let columns: Vec<_> = targets.iter().map(|t| t.columns.clone()).collect();
        let mut pending = vec![(0, targets.len())];
        while let Some((start, end)) = pending.pop() {
            if start == end {
                continue;
            }
            if !self.stopped() && !self.has_time() {
                self.report.stopped = Some(Self::out_of_time());
            }
            if self.stopped() {
                for i in start..end {
                    settled[slots[i]] = Some(Outcome::new(targets[i].at, Status::NotAttempted));
                }
                continue;
            }
            self.requests += 1;
            let sent = self
                .client
                .bulk(
                    self.table,
                    self.message,
                    &columns[start..end],
                    self.deadline,
                )
                .await;
            match sent {
                Ok(written) => {
                    self.wrote = true;
                    for i in start..end {
                        let answered = written.ids.as_ref().and_then(|ids| ids.get(i - start));
                        settled[slots[i]] = Some(self.done(&targets[i], answered.copied()));
                    }
                }
                Err(error) => match verdict(&error) {
                    Verdict::RowRefused if end - start > 1 => {
                        let middle = start + (end - start) / 2;
                        // The left half first, so that outcomes settle in input order.
                        pending.push((middle, end));
                        pending.push((start, middle));
                    }
                    Verdict::RowRefused => {
                        let error = CrmError::from(error.into_reported());
                        settled[slots[start]] = Some(Outcome {
                            id: targets[start].id,
                            key: targets[start].key.clone(),
                            ..Outcome::failed(targets[start].at, &error)
                        });
                    }
                    Verdict::Unknown => {
                        self.wrote = true;
                        let error = RowError::of(&CrmError::from(error.into_reported()));
                        for i in start..end {
                            settled[slots[i]] = Some(Outcome {
                                id: targets[i].id,
                                key: targets[i].key.clone(),
                                error: Some(error.clone()),
                                ..Outcome::new(targets[i].at, Status::Unknown)
                            });
                        }
                    }
                    Verdict::Refused => {
                        let error = CrmError::from(error.into_reported());
                        if !self.wrote {
                            return Err(error);
                        }
                        self.report.stopped = Some(RowError::of(&error));
                        pending.push((start, end));
                    }
                },
            }
        }
        for outcome in settled.into_iter().flatten() {
            self.report.push(outcome);
        }
        Ok(())
    }

    /// A written row's outcome. `answered`: the id Dataverse gave for it, if it gave ids.
    fn done(&self, target: &Target, answered: Option<uuid::Uuid>) -> Outcome {
        let status = match self.message {
            BulkMessage::Create => Status::Created,
            BulkMessage::Update => Status::Updated,
            BulkMessage::Upsert => Status::Upserted,
        };
        Outcome {
            id: answered.or(target.id),
            key: target.key.clone(),
            ..Outcome::new(target.at, status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> dataverse::Error {
        dataverse::Error::Api {
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn only_a_definite_refusal_of_content_is_split() {
        for status in [400, 404, 409, 412, 413] {
            assert_eq!(verdict(&api(status)), Verdict::RowRefused, "{status}");
        }
        for status in [401, 403, 429, 500, 503] {
            assert_eq!(verdict(&api(status)), Verdict::Refused, "{status}");
        }
        // A gateway's timeout, a lost answer, or a refusal after an unanswered attempt: unknown.
        assert_eq!(verdict(&api(504)), Verdict::Unknown);
        assert_eq!(verdict(&api(400).after_possible_write()), Verdict::Unknown);
        let lost = dataverse::Error::Deadline {
            method: "POST".into(),
            path: "/x".into(),
        };
        assert_eq!(verdict(&lost), Verdict::Unknown);
    }

    #[test]
    fn the_listing_of_problems_counts_everything_and_lists_a_bounded_few() {
        let mut report = Report::new(Listing::Problems(1));
        report.push(Outcome::new(At::Line(1), Status::Created));
        report.push(Outcome::new(At::Line(2), Status::Failed));
        report.push(Outcome::new(At::Line(3), Status::Unknown));
        report.push(Outcome::new(At::Line(4), Status::NotAttempted));
        report.push(Outcome::new(At::Line(5), Status::NotAttempted));
        assert_eq!(
            (
                report.created,
                report.failed,
                report.unknown,
                report.not_attempted
            ),
            (1, 1, 1, 2)
        );
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows_omitted, 1);
        assert_eq!(report.next_line, Some(4));
        let mut all = Report::new(Listing::All);
        all.push(Outcome::new(At::Row(0), Status::Updated));
        all.push(Outcome::new(At::Row(1), Status::NotAttempted));
        assert_eq!(all.rows.len(), 2);
        assert_eq!(all.next_row, Some(1));
    }
}
