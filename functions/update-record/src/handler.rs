use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use connector::{Crm, CrmError, lambda};
use dataverse::Query;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    table: TableName,
    #[serde(default)]
    id: Option<RecordId>,
    /// An alternate key's values, instead of `id`.
    #[serde(default)]
    key: Option<Key>,
    #[serde(deserialize_with = "input::columns")]
    item: Map<String, Value>,
    #[serde(default)]
    etag: Option<Etag>,
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
}

/// Sends `If-Match` (the etag, or `*`), so a missing row is `Crm.NotFound` and never a new one.
pub(crate) async fn handle(
    crm: &Crm,
    event: LambdaEvent<Value>,
) -> Result<Map<String, Value>, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let target = input::row(input.id.take(), input.key.take())?;
    let etag = input.etag.as_ref().map(Etag::as_str);
    let query = Query {
        select: input.select.take(),
        ..Query::default()
    };
    let row = crm
        .call(&input.dataset, async |client| {
            client.fits(&query, 0)?;
            let table = client.table(&input.table, deadline).await?;
            client
                .update(&table, target.clone(), &input.item)
                .etag(etag)
                .query(&query)
                .send(deadline)
                .await
        })
        .await?;
    tracing::info!(dataset = %input.dataset, table = %input.table, row = %target, columns = input.item.len(), "updated a record");
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/update.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
