use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use connector::input::{self, Dataset, TableName};
use connector::{Crm, CrmError, lambda};
use dataverse::TableDescription;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::Value;

/// How long a warm instance reuses a description. Table definitions change only when someone
/// customizes the table, and a Step Functions author who just did can wait this long.
const FRESH_FOR: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    table: TableName,
}

/// Descriptions already read, by dataset and table name as asked, with when they were read.
type Cache = HashMap<(Dataset, String), (Instant, Arc<TableDescription>)>;

/// The function's dependencies: the Dataverse clients, and descriptions already read.
pub(crate) struct Deps {
    crm: Crm,
    cache: Mutex<Cache>,
}

impl Deps {
    pub(crate) fn new(crm: Crm) -> Self {
        Self {
            crm,
            cache: Mutex::default(),
        }
    }
}

pub(crate) async fn handle(
    deps: &Deps,
    event: LambdaEvent<Value>,
) -> Result<Arc<TableDescription>, CrmError> {
    let (payload, context) = event.into_parts();
    let input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let key = (input.dataset.clone(), input.table.as_str().to_owned());
    let cached = deps
        .cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .filter(|(read, _)| read.elapsed() < FRESH_FOR)
        .map(|(_, description)| description.clone());
    if let Some(description) = cached {
        tracing::info!(dataset = %input.dataset, table = %input.table, cached = true, "described a table");
        return Ok(description);
    }
    let description = deps
        .crm
        .call(&input.dataset, async |client| {
            let table = client.table(&input.table, deadline).await?;
            client.describe(&table, deadline).await
        })
        .await?;
    let description = Arc::new(description);
    deps.cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, (Instant::now(), description.clone()));
    tracing::info!(dataset = %input.dataset, table = %input.table, columns = description.columns.len(), cached = false, "described a table");
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/describe.json")).unwrap();
        input::parse::<Input>(event).unwrap();
    }
}
