use std::collections::HashMap;
use std::sync::Arc;

use connector::idempotency::{Attempt, Writer};
use connector::input::{self, Dataset, Etag, Key, RecordId, TableName};
use connector::{Crm, CrmError};
use dataverse::{MAX_CHANGESET, Table, Write, WriteKind, WriteOptions, WriteTarget};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Input {
    dataset: Dataset,
    operations: Vec<Operation>,
    /// Leave out custom synchronous and asynchronous logic (`MSCRM.BypassBusinessLogicExecution`).
    #[serde(default)]
    bypass_plugins: bool,
    /// Start no Power Automate flow (`MSCRM.SuppressCallbackRegistrationExpanderJob`).
    #[serde(default)]
    suppress_flows: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Create,
    Update,
    Upsert,
    Delete,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Operation {
    op: Op,
    table: TableName,
    #[serde(default)]
    id: Option<RecordId>,
    #[serde(default)]
    key: Option<Key>,
    /// The row an earlier create (or upsert) of this changeset made: its position, counting from 1.
    #[serde(default, rename = "ref")]
    earlier: Option<u32>,
    #[serde(default, deserialize_with = "optional_columns")]
    item: Option<Map<String, Value>>,
    #[serde(default)]
    etag: Option<Etag>,
}

fn optional_columns<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    input::columns(deserializer).map(Some)
}

#[derive(Debug, Serialize)]
pub(crate) struct Output {
    operations: Vec<Outcome>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    op: &'static str,
    table: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// Checks each operation's shape, so a mistake is this input's, named by its position, before
/// anything is sent. Returns each one's target.
fn targets(operations: &mut [Operation]) -> Result<Vec<Option<WriteTarget>>, CrmError> {
    if operations.is_empty() || operations.len() > MAX_CHANGESET {
        return Err(CrmError::invalid(
            "operations",
            format!(
                "must hold 1 to {MAX_CHANGESET} operations, not {}",
                operations.len()
            ),
        ));
    }
    let mut targets = Vec::with_capacity(operations.len());
    for (i, operation) in operations.iter_mut().enumerate() {
        let field = |name: &str| format!("operations[{i}].{name}");
        let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let named = [
            operation.id.is_some(),
            operation.key.is_some(),
            operation.earlier.is_some(),
        ]
        .iter()
        .filter(|n| **n)
        .count();
        let problem = match (&operation.op, named, operation.item.is_some()) {
            (Op::Create, 0, true) if operation.etag.is_none() => None,
            (Op::Create, _, _) => Some((
                "item",
                "a create takes the table and item only (no id, key, ref or etag)",
            )),
            (Op::Delete, _, true) => Some(("item", "a delete takes no item")),
            (Op::Update | Op::Upsert, _, false) => Some(("item", "is required")),
            (_, 1, _) => None,
            _ => Some(("id", "name the row with exactly one of id, key and ref")),
        };
        if let Some((name, problem)) = problem {
            return Err(CrmError::invalid(field(name), problem));
        }
        let target = match (operation.id.take(), operation.key.take(), operation.earlier) {
            (None, None, None) => None,
            (_, _, Some(earlier)) => {
                if earlier == 0 || earlier >= position {
                    return Err(CrmError::invalid(
                        field("ref"),
                        format!(
                            "must be the position (from 1) of an earlier operation, below {position}"
                        ),
                    ));
                }
                Some(WriteTarget::Earlier(earlier))
            }
            (id, key, None) => Some(WriteTarget::Row(input::row(id, key)?)),
        };
        targets.push(target);
    }
    Ok(targets)
}

pub(crate) async fn handle(
    writer: &Writer,
    event: LambdaEvent<Value>,
) -> Result<Box<RawValue>, CrmError> {
    let (payload, context) = event.into_parts();
    let (payload, once) = writer.idempotency.split(payload)?;
    let mut input: Input = input::parse_payload(payload)?;
    let targets = targets(&mut input.operations)?;
    once.run(&context, async |attempt: Attempt| {
        changeset(&writer.crm, &input, &targets, attempt).await
    })
    .await
}

/// Sends the operations as one changeset.
async fn changeset(
    crm: &Crm,
    input: &Input,
    targets: &[Option<WriteTarget>],
    attempt: Attempt,
) -> Result<Output, CrmError> {
    let deadline = attempt.deadline;
    let written = crm
        .call(&input.dataset, async |client| {
            let client = client.with_options(WriteOptions {
                bypass_plugins: input.bypass_plugins,
                suppress_flows: input.suppress_flows,
            });
            let mut tables: HashMap<&str, Arc<Table>> = HashMap::new();
            for operation in &input.operations {
                let name = operation.table.as_str();
                if !tables.contains_key(name) {
                    tables.insert(name, client.table(&operation.table, deadline).await?);
                }
            }
            let writes: Vec<Write<'_>> = input
                .operations
                .iter()
                .zip(targets)
                .map(|(operation, target)| Write {
                    kind: match operation.op {
                        Op::Create => WriteKind::Create,
                        Op::Update => WriteKind::Update,
                        Op::Upsert => WriteKind::Upsert,
                        Op::Delete => WriteKind::Delete,
                    },
                    table: &tables[operation.table.as_str()],
                    target: target.clone(),
                    item: operation.item.as_ref(),
                    etag: operation.etag.as_ref().map(Etag::as_str),
                })
                .collect();
            client.changeset(&writes, deadline).await
        })
        .await?;
    tracing::info!(dataset = %input.dataset, operations = written.len(), "executed a changeset");
    Ok(Output {
        operations: input
            .operations
            .iter()
            .zip(written)
            .map(|(operation, done)| Outcome {
                op: operation.op.name(),
                table: operation.table.as_str().to_owned(),
                status: done.status,
                id: done.id.map(|id| id.to_string()),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_is_a_valid_input() {
        let event: Value = serde_json::from_str(include_str!("../events/changeset.json")).unwrap();
        let mut input = input::parse::<Input>(event).unwrap();
        let targets = targets(&mut input.operations).unwrap();
        assert_eq!(targets[2], Some(WriteTarget::Earlier(1)));
    }

    #[test]
    fn each_misshapen_operation_is_named_by_its_position() {
        let cases = [
            (serde_json::json!([]), "operations"),
            (
                serde_json::json!([{"op": "create", "table": "accounts", "id": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "item": {"name": "x"}}]),
                "operations[0].item",
            ),
            (
                serde_json::json!([{"op": "delete", "table": "accounts"}]),
                "operations[0].id",
            ),
            (
                serde_json::json!([{"op": "create", "table": "accounts", "item": {"name": "x"}},
                    {"op": "update", "table": "accounts", "ref": 2, "item": {"name": "y"}}]),
                "operations[1].ref",
            ),
            (
                serde_json::json!([{"op": "update", "table": "accounts", "ref": 1}]),
                "operations[0].item",
            ),
        ];
        for (operations, expected) in cases {
            let payload = serde_json::json!({"dataset": "contoso", "operations": operations});
            let mut input = input::parse::<Input>(payload).unwrap();
            match targets(&mut input.operations) {
                Err(CrmError::InvalidInput { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
