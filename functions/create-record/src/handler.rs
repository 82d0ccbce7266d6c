use connector::input::{self, Dataset, TableName};
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
    #[serde(deserialize_with = "input::columns")]
    item: Map<String, Value>,
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
}

pub(crate) async fn handle(
    crm: &Crm,
    event: LambdaEvent<Value>,
) -> Result<Map<String, Value>, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let query = Query {
        select: input.select.take(),
        ..Query::default()
    };
    let (row, primary_id) = crm
        .call(&input.dataset, async |client| {
            client.fits(&query, 0)?;
            let table = client.table(&input.table, deadline).await?;
            let row = client.create(&table, &input.item, &query, deadline).await?;
            Ok((row, table.primary_id_attribute.clone()))
        })
        .await?;
    let id = row
        .get(&primary_id)
        .and_then(Value::as_str)
        .unwrap_or_default();
    tracing::info!(dataset = %input.dataset, table = %input.table, id, "created a record");
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/create.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }

    #[test]
    fn refuses_an_item_that_is_not_an_object_of_columns() {
        for item in [
            serde_json::json!("name=x"),
            serde_json::json!([1]),
            serde_json::json!({}),
        ] {
            let payload =
                serde_json::json!({"dataset": "contoso", "table": "accounts", "item": item});
            match input::parse::<Input>(payload) {
                Err(CrmError::InvalidInput { field, .. }) => assert_eq!(field, "item"),
                other => panic!("{other:?}"),
            }
        }
    }
}
