//! Sending chunks of rows as bulk messages, isolating the rows Dataverse refuses, and keeping the
//! report.
//!
//! On a standard table a bulk request is all or nothing: one refused row fails it, and nothing of
//! it is written. So a chunk refused for a row's content (see [`verdict`]) is split in halves and
//! each half sent again, down to single rows: the good rows are written, and each bad row gets its
//! own error. Rows come out of this in input order, since the left half is always settled before
//! the right.
//!
//! `UpdateMultiple` applies only the first of several targets naming the same row and ignores the
//! rest, and `UpsertMultiple` refuses them: a chunk is first cut where a row is named again, so
//! that each request names a row once and the rows apply in input order.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use connector::CrmError;
use dataverse::{BulkMessage, Client, Deadline, Table};
use serde::Serialize;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::rows::{At, Outcome, RowError, Status, Target};

/// The least time left worth starting a request with. A bulk request of many rows takes seconds;
/// one cut off by the deadline leaves its rows unknown, where not sending it leaves them to resume.
pub(crate) const MIN_REQUEST_TIME: Duration = Duration::from_secs(2);

/// The longest a request counts as having taken. Dataverse ends an operation at two minutes, so
/// a call that took longer spent the rest waiting: on a `Retry-After` (the client waits inside
/// the call, and only when the deadline allows the wait and a request after it) or between
/// attempts. Counting such a wait would make every later request wait for a window it does not
/// need: one 150 s wait would ask 300 s of each request after it.
pub(crate) const MAX_REQUEST_TIME: Duration = Duration::from_secs(120);

/// How long a call that took `elapsed` counts for [`time_for_a_request`].
pub(crate) fn measured(elapsed: Duration) -> Duration {
    elapsed.min(MAX_REQUEST_TIME)
}

/// Whether a request may start with `left` of the invocation (`None`: no deadline), when the
/// slowest request of this invocation took `slowest`. The next request may take as long, and
/// twice that leaves room for a slower one: a request cut off by the deadline leaves its creates
/// unknown, never to be sent again, where one not started leaves them to resume.
pub(crate) fn time_for_a_request(left: Option<Duration>, slowest: Duration) -> bool {
    left.is_none_or(|left| left >= MIN_REQUEST_TIME.max(slowest.saturating_mul(2)))
}

/// Dataverse's code for a row that does not exist (`0x80040217`): the one 404 a row can cause
/// (an update naming a missing row, a lookup bound to one). Any other 404 is about the request,
/// such as a table with no such bulk message (`0x8006088a`, "Resource not found for the segment").
const ROW_NOT_FOUND: &str = "0x80040217";

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

    /// The rows settled: written, refused, or sent with no answer.
    pub(crate) fn settled(&self) -> u64 {
        self.created + self.updated + self.upserted + self.failed + self.unknown
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
        if outcome.status == Status::NotAttempted {
            // The earliest row not sent, whatever came first: a resume from there misses none.
            let earliest = |next: Option<u64>, at: Option<u64>| match (next, at) {
                (Some(next), Some(at)) => Some(next.min(at)),
                (next, at) => next.or(at),
            };
            self.next_row = earliest(self.next_row, outcome.row);
            self.next_line = earliest(self.next_line, outcome.line);
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
    /// Refused for now, for no row's sake (credentials, privilege, throttling, a server error):
    /// nothing was written, the next request would fare no better, and a later one might.
    Refused,
    /// Refused for good, for no row's sake: the request itself cannot be carried out (the table has
    /// no such bulk message: 404; 405; 415). Halving it would only repeat the refusal.
    RequestRefused,
}

fn verdict(error: &dataverse::Error) -> Verdict {
    if error.may_have_applied() {
        return Verdict::Unknown;
    }
    match error.status() {
        // A gateway's 502, 503 or 504 says the server behind it did not answer, not that it did
        // nothing: the send loop marks them as possibly applied, and so does this.
        Some(502..=504) => Verdict::Unknown,
        Some(401 | 403 | 429) => Verdict::Refused,
        Some(404) if error.code() != Some(ROW_NOT_FOUND) => Verdict::RequestRefused,
        Some(405 | 415) => Verdict::RequestRefused,
        Some(400..=499) => Verdict::RowRefused,
        _ => Verdict::Refused,
    }
}

/// Letters that do not decompose into a base letter and marks, as the collation's accent- and
/// case-insensitive comparison matches them (after lowercasing), and the final sigma.
fn fold_letter(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' | 'ð' => "d",
        'þ' => "th",
        'ı' => "i",
        'ħ' => "h",
        'ŧ' => "t",
        'ς' => "σ",
        _ => return None,
    })
}

/// Unicode's default-ignorable code points (soft hyphen, zero-width characters, joiners,
/// direction marks, variation selectors, the byte order mark, tags): SQL Server's collations
/// give them no weight, so "A\u{AD}1" and "A1" compare equal.
fn ignorable(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A key value as Dataverse's default collation (`Latin1_General_CI_AI`: case-, accent-, width-
/// and kana-insensitive) compares it, or coarser. Text is decomposed by compatibility (NFKD:
/// fullwidth "ＡＢＣ" is "ABC", the ligature "ﬁ" is "fi"), lowercased in full, its combining marks
/// and default-ignorable characters dropped, letters that do not decompose replaced (`ß` is
/// "ss", `ø` is "o": [`fold_letter`]), katakana made hiragana, and trailing spaces trimmed (SQL
/// Server ignores them when it compares text). A number is compared by value (1 and 1.0 name one
/// row). Folding too much only cuts a chunk where it need not, which costs a request; too little
/// lets `UpdateMultiple` drop a row and report it updated.
fn fold(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let lowered: String = text.nfkd().flat_map(char::to_lowercase).collect();
            let mut folded = String::with_capacity(lowered.len());
            for c in lowered.nfkd() {
                if is_combining_mark(c) || ignorable(c) {
                    continue;
                }
                match fold_letter(c) {
                    Some(letters) => folded.push_str(letters),
                    // Katakana to hiragana: the same syllables, one block apart.
                    None if ('\u{30A1}'..='\u{30F6}').contains(&c) => {
                        folded.extend(char::from_u32(u32::from(c) - 0x60));
                    }
                    None => folded.push(c),
                }
            }
            folded.trim_end_matches(' ').to_owned()
        }
        // As a float, which equates 1 and 1.0; integers past 2^53 may fold together, which
        // only costs a request.
        Value::Number(number) => number
            .as_f64()
            .map_or_else(|| number.to_string(), |n| n.to_string()),
        other => other.to_string(),
    }
}

/// Where `targets` are cut into runs that each name a row at most once, as `(start, end)`. A row
/// is named by its id and by its key's values, compared as [`fold`] says.
fn runs(targets: &[Target]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut named = HashSet::new();
    for (i, target) in targets.iter().enumerate() {
        let identities: Vec<String> = target
            .id
            .map(|id| format!("id {id}"))
            .into_iter()
            .chain(target.key.as_ref().map(|key| {
                let values: Vec<(&String, String)> = key
                    .iter()
                    .map(|(column, value)| (column, fold(value)))
                    .collect();
                format!("key {values:?}")
            }))
            .collect();
        if identities.iter().any(|identity| named.contains(identity)) {
            runs.push((start, i));
            start = i;
            named.clear();
        }
        named.extend(identities);
    }
    if start < targets.len() {
        runs.push((start, targets.len()));
    }
    runs
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
    /// The longest a request of this invocation has taken, answered or not.
    slowest: Duration,
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
            slowest: Duration::ZERO,
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.report.stopped.is_some()
    }

    /// Whether a request may still start (see [`time_for_a_request`]).
    pub(crate) fn has_time(&self) -> bool {
        time_for_a_request(self.deadline.remaining(), self.slowest)
    }

    /// Stops here for want of time.
    pub(crate) fn out_of_time() -> RowError {
        RowError {
            kind: "Crm.ServerError",
            message: "the invocation's deadline is too near to start another request: the rows from here on were not sent; resume from next_row or next_line".into(),
        }
    }

    /// Sends one chunk: `rows` in input order, each a target or a row already refused. Returns an
    /// error only when nothing at all may have been written in this invocation and a request was
    /// refused as a whole: the invocation then fails, with that request's `Crm.*` type.
    pub(crate) async fn chunk(
        &mut self,
        rows: Vec<Result<Target, Box<Outcome>>>,
    ) -> Result<(), CrmError> {
        let stopped_before = self.stopped();
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
        // Last run first on the stack, so that the first is sent first.
        let mut pending: Vec<(usize, usize)> = runs(&targets).into_iter().rev().collect();
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
            let started = Instant::now();
            let sent = self
                .client
                .bulk(
                    self.table,
                    self.message,
                    &columns[start..end],
                    self.deadline,
                )
                .await;
            self.slowest = self.slowest.max(measured(started.elapsed()));
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
                    Verdict::RequestRefused => {
                        let error = CrmError::from(error.into_reported());
                        if !self.wrote {
                            return Err(error);
                        }
                        // A resume would be refused alike: the rows fail, with the request's error.
                        for i in start..end {
                            settled[slots[i]] = Some(Outcome {
                                id: targets[i].id,
                                key: targets[i].key.clone(),
                                ..Outcome::failed(targets[i].at, &error)
                            });
                        }
                    }
                },
            }
        }
        // Everything after the first row not sent is not sent either, rows refused before sending
        // included: a resume from `next_row` or `next_line` reads them again, and reports each once.
        let unsent_from = if stopped_before {
            Some(0)
        } else {
            settled
                .iter()
                .position(|o| o.as_ref().is_some_and(|o| o.status == Status::NotAttempted))
        };
        for (i, outcome) in settled.into_iter().enumerate() {
            let Some(outcome) = outcome else { continue };
            if unsent_from.is_some_and(|from| i >= from) && outcome.status == Status::Failed {
                self.report.push(Outcome {
                    status: Status::NotAttempted,
                    error: None,
                    ..outcome
                });
            } else {
                self.report.push(outcome);
            }
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

    fn api_code(status: u16, code: &str) -> dataverse::Error {
        dataverse::Error::Api {
            status,
            code: Some(code.into()),
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn only_a_definite_refusal_of_content_is_split() {
        for status in [400, 409, 412, 413] {
            assert_eq!(verdict(&api(status)), Verdict::RowRefused, "{status}");
        }
        // A row naming a missing row is the row's fault; any other 404 is the request's.
        assert_eq!(verdict(&api_code(404, "0x80040217")), Verdict::RowRefused);
        for error in [api(404), api_code(404, "0x8006088a"), api(405), api(415)] {
            assert_eq!(verdict(&error), Verdict::RequestRefused, "{error:?}");
        }
        for status in [401, 403, 429, 500, 501] {
            assert_eq!(verdict(&api(status)), Verdict::Refused, "{status}");
        }
        // A gateway's error, a lost answer, or a refusal after an unanswered attempt: unknown.
        for status in [502, 503, 504] {
            assert_eq!(verdict(&api(status)), Verdict::Unknown, "{status}");
        }
        assert_eq!(verdict(&api(400).after_possible_write()), Verdict::Unknown);
        let lost = dataverse::Error::Deadline {
            method: "POST".into(),
            path: "/x".into(),
        };
        assert_eq!(verdict(&lost), Verdict::Unknown);
    }

    #[test]
    fn a_request_starts_only_with_twice_the_slowest_request_left_and_at_least_two_seconds() {
        let s = Duration::from_secs;
        assert!(time_for_a_request(None, s(100)));
        assert!(time_for_a_request(Some(s(2)), Duration::ZERO));
        assert!(!time_for_a_request(
            Some(Duration::from_millis(1_999)),
            Duration::ZERO
        ));
        assert!(time_for_a_request(Some(s(2)), Duration::from_millis(900)));
        // A request took 3 s: the next needs 6 s.
        assert!(!time_for_a_request(Some(s(5)), s(3)));
        assert!(time_for_a_request(Some(s(6)), s(3)));
        assert!(!time_for_a_request(Some(s(100)), Duration::MAX));
    }

    fn target(n: u64, id: Option<&str>, key: Option<&str>) -> Target {
        Target {
            at: At::Row(n),
            columns: serde_json::Map::new(),
            id: id.map(|id| id.parse().unwrap()),
            key: key.map(|k| {
                let mut key = serde_json::Map::new();
                key.insert("accountnumber".into(), k.into());
                key
            }),
        }
    }

    #[test]
    fn a_chunk_is_cut_where_a_row_is_named_again() {
        let a = Some("3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        let b = Some("3f2504e0-4f89-41d3-9a0c-0305e82c3302");
        let targets = [
            target(0, a, None),
            target(1, b, None),
            target(2, a, None),
            target(3, None, None),
            target(4, None, None),
            target(5, b, None),
            target(6, a, None),
        ];
        assert_eq!(runs(&targets), [(0, 2), (2, 6), (6, 7)]);
        // Key values are one name whatever their case; new rows (no id, no key) never repeat.
        let keyed = [
            target(0, None, Some("A-1")),
            target(1, None, Some("a-1")),
            target(2, None, Some("B-1")),
        ];
        assert_eq!(runs(&keyed), [(0, 1), (1, 3)]);
        assert_eq!(runs(&[]), []);
    }

    #[test]
    fn key_values_dataverse_compares_as_one_name_one_row() {
        // Accents (precomposed or combining), case and trailing spaces do not tell rows apart.
        for (a, b) in [
            ("Müller", "Muller"),
            ("Mu\u{308}ller", "MULLER"),
            ("A-1", "a-1 "),
            ("Éclair  ", "eclair"),
            ("İstanbul", "istanbul"),
        ] {
            let pair = [target(0, None, Some(a)), target(1, None, Some(b))];
            assert_eq!(runs(&pair), [(0, 1), (1, 2)], "{a:?} {b:?}");
        }
        // Leading spaces and other letters do.
        for (a, b) in [(" A-1", "A-1"), ("Müller", "Miller"), ("A-1", "A-2")] {
            let pair = [target(0, None, Some(a)), target(1, None, Some(b))];
            assert_eq!(runs(&pair), [(0, 2)], "{a:?} {b:?}");
        }
        // A value that is not a string compares as written.
        assert_eq!(fold(&serde_json::json!(12)), "12");
    }

    fn one_name(a: &Value, b: &Value) -> bool {
        let keyed = |n: u64, value: &Value| {
            let mut key = serde_json::Map::new();
            key.insert("accountnumber".into(), value.clone());
            Target {
                key: Some(key),
                ..target(n, None, None)
            }
        };
        runs(&[keyed(0, a), keyed(1, b)]) == [(0, 1), (1, 2)]
    }

    #[test]
    fn key_values_the_collation_equates_width_kana_ligatures_and_letters_without_accents() {
        use serde_json::json;
        // Latin1_General_CI_AI ignores case, accents, width and kana, and gives the
        // default-ignorable characters no weight.
        for (a, b) in [
            ("Straße", "STRASSE"),
            ("ＡＢＣ-1", "abc-1"),
            ("ＡＢＣ－１", "abc-1"),
            ("Ærø", "aero"),
            ("Œuvre", "oeuvre"),
            ("ﬁle", "file"),
            ("Łódź", "lodz"),
            ("Đorđe", "dorde"),
            ("Þór", "thor"),
            ("Iıİ", "iii"),
            ("A\u{AD}1", "A1"),
            ("A\u{200B}1\u{FEFF}", "a1"),
            ("ΟΔΟΣ", "οδος"),
            ("アイウ", "あいう"),
            ("ｱｲｳ", "あいう"),
            ("A-1\u{3000}", "a-1"),
        ] {
            assert!(one_name(&json!(a), &json!(b)), "{a:?} {b:?}");
        }
        assert!(one_name(&json!(1), &json!(1.0)));
        assert!(one_name(&json!(-0.5), &json!(-0.50)));
        // Different letters, digits, numbers and leading spaces stay apart.
        for (a, b) in [
            (json!("strasse"), json!("strase")),
            (json!("abc-1"), json!("abc-2")),
            (json!("aero"), json!("aer")),
            (json!(" A1"), json!("A1")),
            (json!("あいう"), json!("あいえ")),
            (json!(1), json!(2)),
            (json!(1), json!(1.5)),
        ] {
            assert!(!one_name(&a, &b), "{a} {b}");
        }
    }

    #[test]
    fn a_call_counts_for_at_most_the_two_minutes_dataverse_gives_an_operation() {
        let s = Duration::from_secs;
        assert_eq!(measured(s(3)), s(3));
        // A call that waited out a 150 s Retry-After counts as 120 s: 240 s left is enough.
        assert_eq!(measured(s(151)), s(120));
        assert!(time_for_a_request(Some(s(240)), measured(s(151))));
        assert!(!time_for_a_request(Some(s(239)), measured(s(151))));
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
        // A resume point set before is moved back to an earlier row found not sent.
        let mut report = Report::new(Listing::Problems(10));
        report.stop_before(At::Line(9), Writer::out_of_time());
        report.push(Outcome::new(At::Line(5), Status::NotAttempted));
        assert_eq!(report.next_line, Some(5));
    }
}
