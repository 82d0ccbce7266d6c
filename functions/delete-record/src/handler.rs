use connector::input::{self, Dataset, Etag, RecordId, TableName};
use connector::{Crm, CrmError, lambda};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    table: TableName,
    id: RecordId,
    #[serde(default)]
    etag: Option<Etag>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Output {
    id: String,
    deleted: bool,
}

pub(crate) async fn handle(crm: &Crm, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let etag = input.etag.as_ref().map(Etag::as_str);
    crm.call(&input.dataset, async |client| {
        let table = client.table(&input.table, deadline).await?;
        client.delete(&table, input.id.0, etag, deadline).await
    })
    .await?;
    tracing::info!(dataset = %input.dataset, table = %input.table, id = %input.id, "deleted a record");
    Ok(Output {
        id: input.id.to_string(),
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
