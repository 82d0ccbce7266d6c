use std::pin::pin;

use connector::input::{self, Dataset, TableName};
use connector::{Crm, CrmError, lambda};
use dataverse::Query;
use futures_util::{StreamExt, TryStreamExt};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Lambda refuses a response over 6 MB; stop short of it with an error that says what to change.
const RESPONSE_LIMIT: usize = 6_000_000;

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
}

#[derive(Debug, Serialize)]
pub(crate) struct Output {
    value: Vec<Box<RawValue>>,
    /// With `$count`: how many rows match, at most 5,000 (Dataverse's cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

enum Listing {
    Rows(Vec<Box<RawValue>>, Option<u64>),
    TooLarge { rows: usize },
}

pub(crate) async fn handle(crm: &Crm, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
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
    } = input::parse(payload)?;
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
    let top = top.unwrap_or(input::DEFAULT_TOP);
    let query = Query {
        select,
        filter,
        orderby,
        expand,
        count: false,
    };
    let listing = crm
        .call(&dataset, async |client| {
            client.fits(&query, 0)?;
            let table = client.table(&table, deadline).await?;
            let total = if count {
                Some(
                    client
                        .count(&table, query.filter.as_deref(), deadline)
                        .await?,
                )
            } else {
                None
            };
            // Rows stream in page by page; skipped ones are dropped as they pass.
            let rows = match &fetch_xml {
                Some(fetch_xml) => client
                    .fetch_rows(&table, fetch_xml, skip, Some(top), deadline)
                    .left_stream(),
                None => client
                    .rows(&table, &query, skip, Some(top), deadline)
                    .right_stream(),
            };
            let mut rows = pin!(rows);
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
            tracing::info!(%dataset, %table, rows = value.len(), skip, count, "listed records");
            Ok(Output { value, count })
        }
        Listing::TooLarge { rows } => Err(CrmError::invalid(
            "$top",
            format!(
                "the first {rows} rows already fill Lambda's 6 MB response limit; lower $top, page with $skip, or name fewer columns in $select"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/list.json")).unwrap();
        let input: Input = input::parse(event).unwrap();
        assert_eq!(input.table.as_str(), "accounts");
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
}
