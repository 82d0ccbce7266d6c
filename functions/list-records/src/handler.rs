use std::pin::pin;
use std::sync::Arc;

use connector::input::{self, Dataset, TableName};
use connector::output::{self, Object, S3, Upload, WriteError};
use connector::{Crm, CrmError, lambda};
use dataverse::{Client, Deadline, MAX_PAGE_SIZE, Prefer, Query, Table};
use futures_util::{Stream, StreamExt, TryStreamExt};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Lambda refuses a response over 6 MB; stop short of it with an error that says what to change.
const RESPONSE_LIMIT: usize = 6_000_000;

/// The rows of one page when they go to S3. A page is held twice while it is read (its text,
/// then its rows), beside the two 5 MiB parts of the upload; 5,000 rows of a table's every
/// column made that the larger share of the function's memory, and at times passed 32 MiB.
/// Pages of 1,000 cost a request per 1,000 rows instead of 5,000, a small share of the 6,000
/// requests per 5 minutes an application user has.
const S3_PAGE_ROWS: usize = 1_000;

/// What the handler needs: the Dataverse clients, and S3 for `output`.
#[derive(Debug)]
pub(crate) struct Deps {
    pub(crate) crm: Crm,
    pub(crate) s3: S3,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    table: TableName,
    #[serde(rename = "$filter", default, deserialize_with = "input::expression")]
    filter: Option<String>,
    #[serde(rename = "$orderby", default, deserialize_with = "input::expression")]
    orderby: Option<String>,
    #[serde(rename = "$top", default, deserialize_with = "input::positive")]
    top: Option<usize>,
    #[serde(rename = "$skip", default)]
    skip: usize,
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
    #[serde(rename = "$expand", default, deserialize_with = "input::expression")]
    expand: Option<String>,
    /// Also count the rows `$filter` matches (all of them, not only those returned).
    #[serde(rename = "$count", default)]
    count: bool,
    /// The query as `FetchXML` instead of the `OData` options; `$top` and `$skip` keep their meaning.
    #[serde(rename = "fetchXml", default, deserialize_with = "input::expression")]
    fetch_xml: Option<String>,
    /// Add each value's display text and each lookup's name and table (Dataverse's annotations).
    #[serde(default)]
    formatted_values: bool,
    /// Where to write the rows instead of the response: `{"s3": {"bucket", "prefix"}}`. Read by
    /// `output::parse`, which names a problem by its whole path (`output.s3.bucket`).
    #[serde(default)]
    output: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Output {
    Rows {
        value: Vec<Box<RawValue>>,
        /// With `$count`: how many rows match, at most 5,000 (Dataverse's cap).
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// The rows went to S3.
    S3 {
        s3: Object,
        /// The rows written, one line each.
        count: u64,
        /// With `$count`: how many rows match, as `count` is without `output`. It has a name of
        /// its own because `count` here is what was written.
        #[serde(skip_serializing_if = "Option::is_none")]
        matched: Option<u64>,
    },
}

enum Listing {
    Rows(Vec<Box<RawValue>>, Option<u64>),
    TooLarge { rows: usize },
}

/// The query, whichever way its rows go.
struct List {
    table: TableName,
    query: Query,
    fetch_xml: Option<String>,
    skip: usize,
    count: bool,
}

impl List {
    /// The table, and with `$count` how many rows match.
    async fn prepare(
        &self,
        client: &Client,
        deadline: Deadline,
    ) -> Result<(Arc<Table>, Option<u64>), dataverse::Error> {
        client.fits(&self.query, 0)?;
        let table = client.table(&self.table, deadline).await?;
        let total = if self.count {
            Some(
                client
                    .count(&table, self.query.filter.as_deref(), deadline)
                    .await?,
            )
        } else {
            None
        };
        Ok((table, total))
    }

    /// The rows, as they come in pages of at most `page_rows` (for `FetchXML`, the `<fetch>`
    /// element's `count`); skipped ones are dropped as they pass.
    fn rows<'a>(
        &'a self,
        client: &'a Client,
        table: &'a Table,
        top: Option<usize>,
        page_rows: usize,
        deadline: Deadline,
    ) -> impl Stream<Item = Result<Box<RawValue>, dataverse::Error>> + 'a {
        if let Some(fetch_xml) = &self.fetch_xml {
            return client
                .fetch_rows(
                    table,
                    fetch_xml,
                    self.skip,
                    top,
                    Prefer {
                        max_page_size: Some(page_rows),
                        formatted_values: self.query.formatted_values,
                        ..Prefer::default()
                    },
                    deadline,
                )
                .left_stream();
        }
        client
            .rows_in_pages_of(table, &self.query, self.skip, top, page_rows, deadline)
            .right_stream()
    }
}

pub(crate) async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let Input {
        dataset,
        table,
        filter,
        orderby,
        top,
        skip,
        select,
        expand,
        count,
        fetch_xml,
        formatted_values,
        output,
    } = input::parse(payload)?;
    let output = output.map(output::parse).transpose()?;
    if fetch_xml.is_some() {
        // FetchXML says all of these itself; both at once would leave one of them ignored.
        for (option, given) in [
            ("$filter", filter.is_some()),
            ("$orderby", orderby.is_some()),
            ("$select", select.is_some()),
            ("$expand", expand.is_some()),
            ("$count", count),
        ] {
            if given {
                return Err(CrmError::invalid(
                    option,
                    "cannot be given with fetchXml, which says it in its own elements",
                ));
            }
        }
    }
    let deadline = lambda::deadline(&context);
    let list = List {
        table,
        query: Query {
            select,
            filter,
            orderby,
            expand,
            count: false,
            formatted_values,
        },
        fetch_xml,
        skip,
        count,
    };
    match output {
        None => {
            let top = top.unwrap_or(input::DEFAULT_TOP);
            in_response(&deps.crm, &dataset, &list, top, deadline).await
        }
        Some(location) => {
            let s3 = deps.s3.client().await;
            let upload = Upload::new(s3, &location, &context.request_id, deadline);
            // Without `$top`, every row: what writing them elsewhere is for.
            to_s3(&deps.crm, &dataset, &list, top, &upload).await
        }
    }
}

async fn in_response(
    crm: &Crm,
    dataset: &Dataset,
    list: &List,
    top: usize,
    deadline: Deadline,
) -> Result<Output, CrmError> {
    let listing = crm
        .call(dataset, async |client| {
            let (table, total) = list.prepare(&client, deadline).await?;
            let mut rows = pin!(list.rows(&client, &table, Some(top), MAX_PAGE_SIZE, deadline));
            let mut kept = Vec::new();
            let mut bytes = 0;
            while let Some(row) = rows.try_next().await? {
                bytes += row.get().len() + 1;
                if bytes > RESPONSE_LIMIT {
                    return Ok(Listing::TooLarge { rows: kept.len() });
                }
                kept.push(row);
            }
            Ok(Listing::Rows(kept, total))
        })
        .await?;
    match listing {
        Listing::Rows(value, count) => {
            tracing::info!(%dataset, table = %list.table, rows = value.len(), skip = list.skip, count, "listed records");
            Ok(Output::Rows { value, count })
        }
        Listing::TooLarge { rows } => Err(CrmError::invalid(
            "$top",
            format!(
                "the first {rows} rows already fill Lambda's 6 MB response limit; write them to S3 with output (no limit), or lower $top, page with $skip, or name fewer columns in $select"
            ),
        )),
    }
}

async fn to_s3(
    crm: &Crm,
    dataset: &Dataset,
    list: &List,
    top: Option<usize>,
    upload: &Upload<'_>,
) -> Result<Output, CrmError> {
    let deadline = upload.work_deadline();
    let outcome = crm
        .call(dataset, async |client| {
            let (table, total) = list.prepare(&client, deadline).await?;
            // A Dataverse failure is returned as such, so that refused credentials are read
            // again and the listing tried once more (the upload was aborted, and starts over).
            let rows = list.rows(&client, &table, top, S3_PAGE_ROWS, deadline);
            match upload.write(rows).await {
                Ok(written) => Ok(Ok((written, total))),
                Err(WriteError::Rows(e)) => Err(e),
                Err(WriteError::Output(e)) => Ok(Err(e)),
            }
        })
        .await?;
    let (written, matched) = outcome?;
    tracing::info!(%dataset, table = %list.table, rows = written.rows, bytes = written.bytes, parts = written.parts, skip = list.skip, matched, "listed records to S3");
    Ok(Output::S3 {
        s3: written.object,
        count: written.rows,
        matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_events_are_valid_inputs() {
        let event: Value = serde_json::from_str(include_str!("../events/list.json")).unwrap();
        let input: Input = input::parse(event).unwrap();
        assert_eq!(input.table.as_str(), "accounts");
        let event: Value = serde_json::from_str(include_str!("../events/list-to-s3.json")).unwrap();
        let input: Input = input::parse(event).unwrap();
        let location = output::parse(input.output.unwrap()).unwrap();
        assert_eq!(location.bucket, "contoso-crm-exports");
    }

    #[test]
    fn refuses_a_negative_skip_and_a_zero_top() {
        for bad in [
            serde_json::json!({"dataset": "contoso", "table": "accounts", "$skip": -1}),
            serde_json::json!({"dataset": "contoso", "table": "accounts", "$top": 0}),
            serde_json::json!({"dataset": "contoso", "table": "accounts", "$top": "10"}),
        ] {
            assert!(matches!(
                input::parse::<Input>(bad),
                Err(CrmError::InvalidInput { .. })
            ));
        }
    }

    #[test]
    fn an_answer_in_s3_says_where_and_how_many() {
        let answer = Output::S3 {
            s3: Object {
                bucket: "b".into(),
                key: "k.jsonl".into(),
            },
            count: 3,
            matched: None,
        };
        assert_eq!(
            serde_json::to_value(answer).unwrap(),
            serde_json::json!({"s3": {"bucket": "b", "key": "k.jsonl"}, "count": 3})
        );
    }
}
