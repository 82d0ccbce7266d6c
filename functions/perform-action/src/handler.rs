use connector::input::{self, Dataset, Key, RecordId, TableName};
use connector::{Crm, CrmError, lambda};
use dataverse::{Operation, OperationKind};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    /// A function's name: sent as `GET`, its parameters as parameter aliases.
    #[serde(default)]
    function: Option<String>,
    /// An action's name: sent as `POST`, its parameters as the JSON body.
    #[serde(default)]
    action: Option<String>,
    /// With `id` or `key`: the row a bound operation is bound to.
    #[serde(default)]
    table: Option<TableName>,
    #[serde(default)]
    id: Option<RecordId>,
    #[serde(default)]
    key: Option<Key>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Dataverse's answer, without `@odata.context`; `{}` when it has none (204).
pub(crate) async fn handle(
    crm: &Crm,
    event: LambdaEvent<Value>,
) -> Result<Map<String, Value>, CrmError> {
    let (payload, context) = event.into_parts();
    let mut input: Input = input::parse(payload)?;
    let deadline = lambda::deadline(&context);
    let (kind, name, field) = match (input.function.take(), input.action.take()) {
        (Some(name), None) => (OperationKind::Function, name, "function"),
        (None, Some(name)) => (OperationKind::Action, name, "action"),
        (Some(_), Some(_)) => {
            return Err(CrmError::invalid(
                "action",
                "names an action as well as a function: give one of them",
            ));
        }
        (None, None) => {
            return Err(CrmError::invalid(
                "function",
                "is required, or action: the name of the operation to perform",
            ));
        }
    };
    let row = match (&input.table, input.id.take(), input.key.take()) {
        (None, None, None) => None,
        (Some(_), id, key) => Some(input::row(id, key)?),
        (None, _, _) => {
            return Err(CrmError::invalid(
                "table",
                "is required with id or key: a bound operation names its row's table",
            ));
        }
    };
    // Refused as this input, before anything is sent.
    let check = Operation {
        kind,
        name: &name,
        bound: None,
        parameters: &input.parameters,
    };
    check.check().map_err(|e| {
        CrmError::invalid(
            if e.parameter { "parameters" } else { field },
            e.to_string(),
        )
    })?;
    let answer = crm
        .call(&input.dataset, async |client| {
            let table = match &input.table {
                Some(name) => Some(client.table(name, deadline).await?),
                None => None,
            };
            let operation = Operation {
                kind,
                name: &name,
                bound: table.as_deref().zip(row.clone()),
                parameters: &input.parameters,
            };
            client.perform(operation, deadline).await
        })
        .await?;
    tracing::info!(dataset = %input.dataset, operation = %name, kind = field, bound = row.is_some(), "performed an operation");
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_events_are_valid_inputs() {
        for sample in [
            include_str!("../events/function.json"),
            include_str!("../events/bound-action.json"),
        ] {
            let event: Value = serde_json::from_str(sample).unwrap();
            input::parse::<Input>(event).unwrap();
        }
    }
}
