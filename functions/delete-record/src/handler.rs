use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use connector::{Crm, CrmError, lambda};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
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
    #[serde(default)]
    etag: Option<Etag>,
}

/// `{"id", "deleted": true}`, or with `key` in place of `id` when the row was named by its key
/// (Dataverse does not say which id a key-addressed delete removed).
#[derive(Debug, Serialize)]
pub(crate) struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Map<String, Value>>,
    deleted: bool,
}

pub(crate) async fn handle(crm: &Crm, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let row = input::row(input.id.take(), input.key.take())?;
    let etag = input.etag.as_ref().map(Etag::as_str);
    crm.call(&input.dataset, async |client| {
        let table = client.table(&input.table, deadline).await?;
        client.delete(&table, row.clone(), etag, deadline).await
    })
    .await?;
    tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, "deleted a record");
    let (id, key) = match &row {
        dataverse::RowRef::Id(id) => (Some(id.to_string()), None),
        dataverse::RowRef::Key(key) => (None, Some(key.to_json())),
    };
    Ok(Output {
        id,
        key,
        deleted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/delete.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
