use connector::CrmError;
use connector::idempotency::{Attempt, Writer};
use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use dataverse::WriteOptions;
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
    #[serde(default)]
    etag: Option<Etag>,
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

/// Without an etag the delete is repeated safely: a row already gone is what was asked for. A
/// takeover from a run that ended unrecorded treats a missing row the same way, since that run may
/// have deleted it.
pub(crate) async fn handle(
    writer: &Writer,
    event: LambdaEvent<Value>,
) -> Result<Box<RawValue>, CrmError> {
    let (payload, context) = event.into_parts();
    let (payload, once) = writer.idempotency.split(payload)?;
    let mut input: Input = input::parse_payload(payload)?;
    let row = input::row(input.id.take(), input.key.take())?;
    let etag = input.etag.as_ref().map(Etag::as_str);
    once.run(&context, async |attempt: Attempt| {
        let deleted = writer
            .crm
            .call(&input.dataset, async |client| {
                let client = client.with_options(input.options());
                let table = client.table(&input.table, attempt.deadline).await?;
                client
                    .delete(&table, row.clone(), etag, attempt.deadline)
                    .await
            })
            .await;
        match deleted {
            Ok(()) => {
                tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, "deleted a record");
            }
            Err(CrmError::Dataverse(e)) if attempt.takeover && e.status() == Some(404) => {
                tracing::info!(dataset = %input.dataset, table = %input.table, row = %row, "the record is gone; the run this one took over from may have deleted it");
            }
            Err(e) => return Err(e),
        }
        let (id, key) = match &row {
            dataverse::RowRef::Id(id) => (Some(id.to_string()), None),
            dataverse::RowRef::Key(key) => (None, Some(key.to_json())),
        };
        Ok(Output {
            id,
            key,
            deleted: true,
        })
    })
    .await
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
