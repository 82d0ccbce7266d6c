use connector::CrmError;
use connector::idempotency::{Attempt, Writer};
use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use dataverse::{Query, WriteOptions};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    /// Makes it a guarded update: the row must exist at this version.
    #[serde(default)]
    etag: Option<Etag>,
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
    /// Leave out custom synchronous and asynchronous logic (`MSCRM.BypassBusinessLogicExecution`).
    #[serde(default)]
    bypass_plugins: bool,
    /// Start no Power Automate flow (`MSCRM.SuppressCallbackRegistrationExpanderJob`).
    #[serde(default)]
    suppress_flows: bool,
}

impl Input {
    fn options(&self) -> WriteOptions {
        WriteOptions {
            bypass_plugins: self.bypass_plugins,
            suppress_flows: self.suppress_flows,
        }
    }
}

/// The row as stored, with `created` beside its columns (no Dataverse column has that logical name:
/// system columns are `createdon`, `createdby`, and custom ones carry a publisher prefix).
#[derive(Debug, Serialize)]
pub(crate) struct Output {
    /// Whether the row was created rather than updated; `null` in the one case Dataverse gives no
    /// way to tell (it ignored the request to return the row).
    created: Option<bool>,
    #[serde(flatten)]
    row: Map<String, Value>,
}

/// Sends `PATCH` without `If-Match` (with the etag when given), so Dataverse updates the row if it
/// exists and creates it otherwise, in one atomic request.
pub(crate) async fn handle(
    writer: &Writer,
    event: LambdaEvent<Value>,
) -> Result<Box<RawValue>, CrmError> {
    let (payload, context) = event.into_parts();
    let (payload, once) = writer.idempotency.split(payload)?;
    let mut input: Input = input::parse_payload(payload)?;
    let target = input::row(input.id.take(), input.key.take())?;
    let etag = input.etag.as_ref().map(Etag::as_str);
    let query = Query {
        select: input.select.take(),
        ..Query::default()
    };
    once.run(&context, async |attempt: Attempt| {
        let upserted = writer
            .crm
            .call(&input.dataset, async |client| {
                client.fits(&query, 0)?;
                let client = client.with_options(input.options());
                let table = client.table(&input.table, attempt.deadline).await?;
                client
                    .upsert(&table, target.clone(), &input.item)
                    .etag(etag)
                    .query(&query)
                    .send(attempt.deadline)
                    .await
            })
            .await?;
        tracing::info!(dataset = %input.dataset, table = %input.table, row = %target, created = ?upserted.created, columns = input.item.len(), "upserted a record");
        Ok(Output {
            created: upserted.created,
            row: upserted.row,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/upsert.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
