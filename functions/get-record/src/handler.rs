use connector::input::{self, Dataset, Key, RecordId, TableName};
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
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
    #[serde(rename = "$expand", default, deserialize_with = "input::expression")]
    expand: Option<String>,
    /// Add each value's display text and each lookup's name and table (Dataverse's annotations).
    #[serde(default)]
    formatted_values: bool,
}

pub(crate) async fn handle(
    crm: &Crm,
    event: LambdaEvent<Value>,
) -> Result<Map<String, Value>, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let row = input::row(input.id.take(), input.key.take())?;
    let query = Query {
        select: input.select.take(),
        expand: input.expand.take(),
        formatted_values: input.formatted_values,
        ..Query::default()
    };
    let found = crm
        .call(&input.dataset, async |client| {
            client.fits(&query, 0)?;
            let table = client.table(&input.table, deadline).await?;
            client.get(&table, row.clone(), &query, deadline).await
        })
        .await?;
    tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, "retrieved a record");
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/get.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
