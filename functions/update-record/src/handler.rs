use connector::CrmError;
use connector::idempotency::{Attempt, Writer};
use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use dataverse::{Query, WriteOptions};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
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

/// Sends `If-Match` (the etag, or `*`), so a missing row is `Crm.NotFound` and never a new one.
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
        let row: Map<String, Value> = writer
            .crm
            .call(&input.dataset, async |client| {
                client.fits(&query, 0)?;
                let client = client.with_options(input.options());
                let table = client.table(&input.table, attempt.deadline).await?;
                client
                    .update(&table, target.clone(), &input.item)
                    .etag(etag)
                    .query(&query)
                    .send(attempt.deadline)
                    .await
            })
            .await?;
        tracing::info!(dataset = %input.dataset, table = %input.table, row = %target, columns = input.item.len(), "updated a record");
        Ok(row)
    })
    .await
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
