use connector::input::{self, Dataset, Key, RecordId, Related, TableName};
use connector::{Crm, CrmError, lambda};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The navigation property (a relationship's name on this table's side).
    relationship: String,
    /// The rows of the other table to relate: one, or a list (a lookup takes exactly one).
    related: Related,
}

#[derive(Debug, Serialize)]
pub(crate) struct Output {
    relationship: String,
    /// `collection` (rows were added) or `lookup` (it was bound).
    kind: &'static str,
    related: usize,
}

/// Relates each row in turn. A failure stops there, naming how many were related before it: relating
/// again is harmless, so the caller can simply retry the whole call.
pub(crate) async fn handle(crm: &Crm, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let row = input::row(input.id.take(), input.key.take())?;
    let navigation = crm
        .call(&input.dataset, async |client| {
            let table = client.table(&input.table, deadline).await?;
            let navigation = client
                .navigation(&table, &input.relationship, deadline)
                .await?;
            if !navigation.collection && input.related.0.len() != 1 {
                return Ok(Err(navigation));
            }
            client
                .relate(&table, row.clone(), &navigation, &input.related.0, deadline)
                .await?;
            Ok(Ok(navigation))
        })
        .await?
        .map_err(|lookup| {
            CrmError::invalid(
                "related",
                format!(
                    "'{}' is a lookup, which points at one row: give exactly one",
                    lookup.name
                ),
            )
        })?;
    tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, relationship = %navigation.name, related = input.related.0.len(), "related records");
    Ok(Output {
        relationship: navigation.name,
        kind: if navigation.collection {
            "collection"
        } else {
            "lookup"
        },
        related: input.related.0.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/relate.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
