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
    /// For a collection: the rows to take out of it. For a lookup: absent, since clearing it does
    /// not depend on what it points at.
    #[serde(default)]
    related: Option<Related>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Output {
    relationship: String,
    /// `collection` (rows were taken out) or `lookup` (it was cleared).
    kind: &'static str,
    unrelated: usize,
}

pub(crate) async fn handle(crm: &Crm, event: LambdaEvent<Value>) -> Result<Output, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let row = input::row(input.id.take(), input.key.take())?;
    let related = input.related.take().map(|r| r.0);
    // The navigation's kind decides what `related` must be, so the shape is checked once the
    // definitions are read, before anything is unrelated.
    let (navigation, count) = crm
        .call(&input.dataset, async |client| {
            let table = client.table(&input.table, deadline).await?;
            let navigation = client
                .navigation(&table, &input.relationship, deadline)
                .await?;
            // An empty list clears a lookup.
            let targets: &[dataverse::RowRef] = match (&related, navigation.collection) {
                (Some(rows), true) => rows,
                (None, false) => &[],
                (None, true) => {
                    return Ok(Err(CrmError::invalid(
                        "related",
                        format!(
                            "is required: '{}' is a collection, so say which rows to take out of it",
                            navigation.name
                        ),
                    )));
                }
                (Some(_), false) => {
                    return Ok(Err(CrmError::invalid(
                        "related",
                        format!(
                            "must be left out: '{}' is a lookup, which is cleared whatever it points at",
                            navigation.name
                        ),
                    )));
                }
            };
            client
                .unrelate(&table, row.clone(), &navigation, targets, deadline)
                .await?;
            Ok(Ok((navigation, targets.len().max(1))))
        })
        .await??;
    tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, relationship = %navigation.name, unrelated = count, "unrelated records");
    Ok(Output {
        relationship: navigation.name,
        kind: if navigation.collection {
            "collection"
        } else {
            "lookup"
        },
        unrelated: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/unrelate.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
