use connector::input::{self, Dataset, TableName};
use connector::output::S3;
use connector::source::{Line, MAX_LINE};
use connector::{Crm, CrmError, lambda};
use dataverse::{BulkMessage, Client, Deadline, Table, WriteOptions};
use lambda_runtime::LambdaEvent;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rows::{At, Naming, Outcome, RowError, prepare};
use crate::source::{self, S3Source};
use crate::write::{Listing, Report, Writer};

/// The rows one bulk request carries when `batch_size` is not given: where *Use bulk operation
/// messages* and *Optimize performance for bulk operations* say to start on a standard table.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 100;

/// The most rows one bulk request may carry: the top of the range those pages recommend. More rows
/// make a request that may pass Dataverse's 2-minute limit for one operation (its plug-ins
/// included), and a refused one costs more requests to isolate its bad rows.
pub(crate) const MAX_BATCH_SIZE: usize = 1000;

/// The most rows `rows` or `Items` may hold: the answer lists each, and must fit Lambda's 6 MB
/// (a failed row's entry is at most about 500 bytes).
pub(crate) const MAX_INLINE_ROWS: usize = 5000;

/// The most failed or unknown rows an answer lists for an S3 object; the rest are counted.
pub(crate) const MAX_LISTED_PROBLEMS: usize = 1000;

/// A chunk read from S3 ends before it passes this many bytes of rows, whatever `batch_size`
/// says, so that memory follows the chunk and not the rows' width.
pub(crate) const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// What the handler needs: the Dataverse clients, and S3 for `input`.
#[derive(Debug)]
pub(crate) struct Deps {
    pub(crate) crm: Crm,
    pub(crate) s3: S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Create,
    Update,
    Upsert,
}

impl Mode {
    fn message(self) -> BulkMessage {
        match self {
            Mode::Create => BulkMessage::Create,
            Mode::Update => BulkMessage::Update,
            Mode::Upsert => BulkMessage::Upsert,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Create => "create",
            Mode::Update => "update",
            Mode::Upsert => "upsert",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    table: TableName,
    mode: Mode,
    /// The rows, inline.
    #[serde(default)]
    rows: Option<Vec<Value>>,
    /// The rows, as a Distributed Map's `ItemBatcher` hands them to a child.
    #[serde(rename = "Items", default)]
    items: Option<Vec<Value>>,
    /// The rows in an S3 object of JSON Lines: `{"s3": {"bucket", "key", "start_line"}}`.
    #[serde(rename = "input", default)]
    source: Option<Value>,
    /// The first of `rows` or `Items` to write (from 0): an earlier answer's `next_row`. The rows
    /// before it are neither sent nor listed.
    #[serde(default)]
    start_row: Option<u64>,
    /// The columns of the alternate key that names each row of an update or upsert.
    #[serde(default, deserialize_with = "key_columns")]
    key: Option<Vec<String>>,
    #[serde(default, deserialize_with = "batch_size")]
    batch_size: Option<usize>,
    /// Leave out custom synchronous and asynchronous logic (`MSCRM.BypassBusinessLogicExecution`).
    #[serde(default)]
    bypass_plugins: bool,
    /// Start no Power Automate flow (`MSCRM.SuppressCallbackRegistrationExpanderJob`).
    #[serde(default)]
    suppress_flows: bool,
    /// Which rows the answer lists: every row, or only the failed and unknown ones.
    #[serde(default)]
    outcomes: Option<Outcomes>,
}

/// Which rows the answer lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcomes {
    /// Every row (the default for `rows` and `Items`).
    All,
    /// Only the failed and unknown rows; the counts and the resume point cover every row. What a
    /// workflow that keeps each round's answer in its state wants (the state holds 256 KB), and
    /// the only listing for `input`.
    Problems,
}

fn key_columns<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    if names.is_empty() || names.len() > 16 {
        return Err(de::Error::custom(
            "must list the 1 to 16 columns of one of the table's alternate keys",
        ));
    }
    for name in &names {
        if name.len() > 128 || !dataverse::is_schema_name(name) {
            return Err(de::Error::custom(format!(
                "'{}' is not a column's logical name",
                connector::excerpt(name)
            )));
        }
    }
    Ok(Some(names))
}

fn batch_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let n = u64::deserialize(deserializer)?;
    match usize::try_from(n) {
        Ok(n) if (1..=MAX_BATCH_SIZE).contains(&n) => Ok(Some(n)),
        _ => Err(de::Error::custom(format!(
            "must be a whole number from 1 to {MAX_BATCH_SIZE}"
        ))),
    }
}

/// Where the rows come from.
enum Rows {
    Inline(Vec<Value>),
    S3(S3Source),
}

/// The answer.
#[derive(Debug, Serialize)]
pub(crate) struct Output {
    table: String,
    mode: &'static str,
    #[serde(flatten)]
    report: Report,
}

/// A Distributed Map's child gets `{"Items": [...], "BatchInput": {...}}`: the options are the
/// batch input's, merged in here so that both shapes read alike. An option given in both places is
/// refused, rather than one of them silently winning.
fn merge_batch_input(payload: Value) -> Result<Value, CrmError> {
    let Value::Object(mut fields) = payload else {
        return Ok(payload);
    };
    match fields.remove("BatchInput") {
        None => {}
        Some(Value::Object(batch)) => {
            for (name, value) in batch {
                if fields.contains_key(&name) {
                    return Err(CrmError::invalid(
                        format!("BatchInput.{name}"),
                        "is given outside BatchInput too: give it once",
                    ));
                }
                fields.insert(name, value);
            }
        }
        Some(_) => {
            return Err(CrmError::invalid(
                "BatchInput",
                "must be an object of this function's inputs",
            ));
        }
    }
    Ok(Value::Object(fields))
}

pub(crate) async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let input: Input = input::parse(merge_batch_input(payload)?)?;
    let field = if input.items.is_some() {
        "Items"
    } else {
        "rows"
    };
    let rows = match (input.rows, input.items, input.source) {
        (Some(rows), None, None) | (None, Some(rows), None) => {
            if rows.is_empty() || rows.len() > MAX_INLINE_ROWS {
                return Err(CrmError::invalid(
                    field,
                    format!(
                        "must hold 1 to {MAX_INLINE_ROWS} rows, not {}; write more from an S3 object (input)",
                        rows.len()
                    ),
                ));
            }
            let start = input.start_row.unwrap_or(0);
            if start >= rows.len() as u64 {
                return Err(CrmError::invalid(
                    "start_row",
                    format!(
                        "must be less than the number of rows ({}): it is the first row to write, from 0",
                        rows.len()
                    ),
                ));
            }
            Rows::Inline(rows)
        }
        (None, None, Some(_)) if input.start_row.is_some() => {
            return Err(CrmError::invalid(
                "start_row",
                "is for rows and Items; resume an S3 object with input.s3.start_line",
            ));
        }
        (None, None, Some(source)) => Rows::S3(source::parse(source)?),
        (None, None, None) => {
            return Err(CrmError::invalid(
                "rows",
                "is required, or Items, or input (an S3 object)",
            ));
        }
        _ => {
            return Err(CrmError::invalid(
                "rows",
                "give the rows one way only: rows, Items or input",
            ));
        }
    };
    if input.outcomes == Some(Outcomes::All) && matches!(rows, Rows::S3(_)) {
        return Err(CrmError::invalid(
            "outcomes",
            "an S3 object may hold millions of rows: its answer lists only the failed and unknown ones (problems)",
        ));
    }
    let listing = match input.outcomes {
        Some(Outcomes::Problems) => Listing::Problems(MAX_INLINE_ROWS),
        _ => Listing::All,
    };
    if input.mode == Mode::Create && input.key.is_some() {
        return Err(CrmError::invalid(
            "key",
            "names the rows of an update or upsert; a create makes new rows",
        ));
    }
    let options = WriteOptions {
        bypass_plugins: input.bypass_plugins,
        suppress_flows: input.suppress_flows,
    };
    let batch = input.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    let deadline = lambda::deadline(&context);
    let job = Job {
        mode: input.mode,
        key: input.key.as_deref(),
        batch,
        deadline,
        start_row: input.start_row.unwrap_or(0),
        listing,
    };
    let (table, report) = match rows {
        Rows::Inline(rows) => {
            deps.crm
                .call(&input.dataset, async |client| {
                    let client = client.with_options(options);
                    let table = client.table(&input.table, deadline).await?;
                    Ok(job
                        .inline_rows(&client, &table, rows.clone())
                        .await
                        .map(|r| (table, r)))
                })
                .await??
        }
        Rows::S3(source) => {
            let s3 = deps.s3.client().await;
            deps.crm
                .call(&input.dataset, async |client| {
                    let client = client.with_options(options);
                    let table = client.table(&input.table, deadline).await?;
                    Ok(job
                        .s3_rows(&client, &table, s3, &source)
                        .await
                        .map(|r| (table, r)))
                })
                .await??
        }
    };
    if report.stopped.is_some() && report.settled() == 0 {
        return Err(nothing_sent(&table, input.mode));
    }
    tracing::info!(
        dataset = %input.dataset,
        table = %table.logical_name,
        mode = input.mode.name(),
        created = report.created,
        updated = report.updated,
        upserted = report.upserted,
        failed = report.failed,
        unknown = report.unknown,
        not_attempted = report.not_attempted,
        "wrote records"
    );
    Ok(Output {
        table: table.logical_name.clone(),
        mode: input.mode.name(),
        report,
    })
}

/// The error of an invocation that stopped before it settled any row: the time went before its
/// first request (on a token, the table's definition, an S3 object slow to open, or a timeout
/// too short). Nothing was sent, so a retry is safe; an answer of nothing done would send a
/// workflow that resumes from `next_row` straight back without its retry's backoff, round after
/// round. `Crm.ServerError`, the type of a Dataverse too slow to answer, which a workflow
/// retries with backoff, and whose retry gets a whole invocation's time.
fn nothing_sent(table: &Table, mode: Mode) -> CrmError {
    CrmError::NotStarted {
        action: format!(
            "POST {}/Microsoft.Dynamics.CRM.{}",
            table.entity_set_name,
            mode.message().action()
        ),
    }
}

/// The error of an invocation whose time went on reading past the lines before `start_line`
/// (`read` of them so far). Nothing was sent; a retry reads them again, so an object whose
/// skipped lines take longer than an invocation needs a longer timeout or to be split.
fn skip_too_long(table: &Table, mode: Mode, source: &S3Source, read: u64) -> CrmError {
    CrmError::NotStarted {
        action: format!(
            "POST {}/Microsoft.Dynamics.CRM.{} (reading past lines 1 to {} of {}, before input.s3.start_line {}, took the invocation's time; a retry reads them again: give the function a longer timeout, or split the object)",
            table.entity_set_name,
            mode.message().action(),
            read,
            connector::excerpt(&source.key),
            source.start_line
        ),
    }
}

/// The line to resume from when `read` lines have been read (skipped or not) and the object was
/// to be read from `start_line`. Before the first chunk no line has been read, and the lines
/// before `start_line` are not to be written: a resume from line 1 would write them again.
fn first_unread(read: u64, start_line: u64) -> u64 {
    (read + 1).max(start_line)
}

/// One invocation's work, whatever the rows' source.
struct Job<'a> {
    mode: Mode,
    key: Option<&'a [String]>,
    batch: usize,
    deadline: Deadline,
    /// The first of `rows` or `Items` to write.
    start_row: u64,
    /// Which of `rows` or `Items` the answer lists.
    listing: Listing,
}

impl Job<'_> {
    fn naming(&self) -> Naming<'_> {
        match (self.mode, self.key) {
            (Mode::Create, _) => Naming::New,
            (_, Some(columns)) => Naming::Key(columns),
            (_, None) => Naming::Id,
        }
    }

    fn writer<'c>(&self, client: &'c Client, table: &'c Table, listing: Listing) -> Writer<'c> {
        Writer::new(client, table, self.mode.message(), self.deadline, listing)
    }

    async fn inline_rows(
        &self,
        client: &Client,
        table: &Table,
        rows: Vec<Value>,
    ) -> Result<Report, CrmError> {
        let mut writer = self.writer(client, table, self.listing);
        let skip = usize::try_from(self.start_row).unwrap_or(usize::MAX);
        let mut rows = rows.into_iter().enumerate().skip(skip).peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows
                .by_ref()
                .take(self.batch)
                .map(|(i, row)| {
                    let at = At::Row(i as u64);
                    prepare(at, row, table, self.naming())
                        .map_err(|e| Box::new(Outcome::failed(at, &e)))
                })
                .collect();
            writer.chunk(chunk).await?;
        }
        tracing::debug!(requests = writer.requests, "bulk requests");
        Ok(writer.report)
    }

    async fn s3_rows(
        &self,
        client: &Client,
        table: &Table,
        s3: &connector::output::S3Client,
        source: &S3Source,
    ) -> Result<Report, CrmError> {
        let mut writer = self.writer(client, table, Listing::Problems(MAX_LISTED_PROBLEMS));
        let mut lines = source::open(s3, source, self.deadline).await?;
        let mut number = 0_u64;
        let mut done = false;
        // Where the object broke off, and why, once it has.
        let mut broke = None;
        while !done && !writer.stopped() {
            if !writer.has_time() {
                writer.report.stop_before(
                    At::Line(first_unread(number, source.start_line)),
                    Writer::out_of_time(),
                );
                break;
            }
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while chunk.len() < self.batch && bytes < MAX_CHUNK_BYTES {
                let line = match lines.next().await {
                    Ok(Some(line)) => line,
                    Ok(None) => {
                        done = true;
                        break;
                    }
                    Err(problem) => {
                        let error = CrmError::from(problem);
                        if chunk.is_empty()
                            && writer.report.created
                                + writer.report.updated
                                + writer.report.upserted
                                + writer.report.unknown
                                == 0
                        {
                            return Err(error);
                        }
                        // The rows read are written first (below); the rest waits for a resume
                        // from the line that broke off.
                        broke = Some((At::Line(number + 1), RowError::of(&error)));
                        done = true;
                        break;
                    }
                };
                number += 1;
                if number < source.start_line {
                    // Reading past lines takes time too, and nothing can be sent before they
                    // are read: stop while the invocation can still answer, saying why, rather
                    // than be cut off by Lambda.
                    if !writer.has_time() {
                        return Err(skip_too_long(table, self.mode, source, number));
                    }
                    continue;
                }
                let at = At::Line(number);
                let text = match line {
                    Line::TooLong => {
                        let error = CrmError::invalid(
                            crate::rows::field(at),
                            format!("is longer than {MAX_LINE} bytes"),
                        );
                        chunk.push(Err(Box::new(Outcome::failed(at, &error))));
                        continue;
                    }
                    Line::Text(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
                    Line::Text(text) => text,
                };
                bytes += text.len();
                let row = serde_json::from_slice::<Value>(&text)
                    .map_err(|e| {
                        CrmError::invalid(crate::rows::field(at), format!("is not JSON ({e})"))
                    })
                    .and_then(|row| prepare(at, row, table, self.naming()));
                chunk.push(row.map_err(|e| Box::new(Outcome::failed(at, &e))));
            }
            if !chunk.is_empty() {
                writer.chunk(chunk).await?;
            }
            if let Some((at, why)) = broke.take() {
                writer.report.stop_before(at, why);
            }
        }
        tracing::debug!(requests = writer.requests, lines = number, "bulk requests");
        Ok(writer.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: Value) -> Result<Input, CrmError> {
        input::parse(merge_batch_input(payload)?)
    }

    fn field(result: Result<Input, CrmError>) -> String {
        match result {
            Err(CrmError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sample_events_are_valid_inputs() {
        for sample in [
            include_str!("../events/create.json"),
            include_str!("../events/upsert-by-key.json"),
            include_str!("../events/map-batch.json"),
            include_str!("../events/from-s3.json"),
        ] {
            let input = parse(serde_json::from_str(sample).unwrap()).unwrap();
            assert_eq!(input.table.as_str(), "accounts");
        }
        let batch =
            parse(serde_json::from_str(include_str!("../events/map-batch.json")).unwrap()).unwrap();
        assert!(batch.bypass_plugins);
        assert_eq!(batch.outcomes, Some(Outcomes::Problems));
        assert_eq!(batch.items.unwrap().len(), 1);
    }

    #[test]
    fn a_resume_point_is_never_before_start_line() {
        // Stopped before reading anything: resume where this invocation was to start.
        assert_eq!(first_unread(0, 250), 250);
        assert_eq!(first_unread(0, 1), 1);
        // Stopped after reading up to line 300: resume after it.
        assert_eq!(first_unread(300, 250), 301);
    }

    #[test]
    fn each_refusal_names_its_field() {
        let base = || serde_json::json!({"dataset": "contoso", "table": "accounts", "mode": "create", "rows": [{"name": "a"}]});
        let with = |name: &str, value: Value| {
            let mut payload = base();
            payload[name] = value;
            payload
        };
        assert_eq!(field(parse(with("mode", "delete".into()))), "mode");
        assert_eq!(field(parse(with("batch_size", 0.into()))), "batch_size");
        assert_eq!(field(parse(with("batch_size", 1001.into()))), "batch_size");
        assert_eq!(
            field(parse(with("bypass_plugins", "yes".into()))),
            "bypass_plugins"
        );
        assert_eq!(
            field(parse(with("suppress_flows", 1.into()))),
            "suppress_flows"
        );
        assert_eq!(field(parse(with("key", serde_json::json!([])))), "key");
        assert_eq!(field(parse(with("key", serde_json::json!(["a b"])))), "key");
        assert_eq!(field(parse(with("rowz", serde_json::json!([])))), "rowz");
        let clash = serde_json::json!({"BatchInput": {"dataset": "contoso", "table": "accounts", "mode": "create"}, "dataset": "other", "Items": [{}]});
        assert_eq!(field(parse(clash)), "BatchInput.dataset");
        let bad = serde_json::json!({"BatchInput": [1], "Items": [{}]});
        assert_eq!(field(parse(bad)), "BatchInput");
        assert_eq!(field(parse(with("outcomes", "some".into()))), "outcomes");
        let problems = parse(with("outcomes", "problems".into())).unwrap();
        assert_eq!(problems.outcomes, Some(Outcomes::Problems));
        assert!(parse(with("batch_size", 1000.into())).is_ok());
    }
}
