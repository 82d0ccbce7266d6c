use connector::idempotency::{Attempt, IdempotencyKey, Writer};
use connector::input::{self, Dataset, TableName};
use connector::{CrmError, excerpt};
use dataverse::{Client, Query, Table, WriteOptions};
use futures_util::TryStreamExt;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;
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
    /// A text column of the table that receives the idempotency key, so that a run taking over
    /// from one that crashed can find the row that one created.
    #[serde(default, deserialize_with = "column")]
    idempotency_column: Option<String>,
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

/// The longest column name taken: Dataverse's logical names are far shorter.
const MAX_COLUMN_NAME: usize = 128;

fn column<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.len() <= MAX_COLUMN_NAME && dataverse::is_schema_name(&name) {
        Ok(Some(name))
    } else {
        Err(de::Error::custom(format!(
            "'{}' is not a column's logical name (letters, digits and '_', such as new_idempotencykey)",
            excerpt(&name)
        )))
    }
}

/// Where the key goes in the row: the column, and the key.
type Marker = (String, IdempotencyKey);

/// Checks `idempotency_column` against the key and the item, and writes the key into the item.
fn mark(input: &mut Input, key: Option<&IdempotencyKey>) -> Result<Option<Marker>, CrmError> {
    let Some(column) = input.idempotency_column.take() else {
        return Ok(None);
    };
    let Some(key) = key else {
        return Err(CrmError::invalid(
            "idempotency_column",
            "has no key to write: give idempotency_key (or invoke from an EventBridge rule) with CRM_IDEMPOTENCY set",
        ));
    };
    match input.item.get(&column) {
        None => {}
        Some(Value::String(value)) if value == key.as_str() => {}
        Some(_) => {
            return Err(CrmError::invalid(
                "idempotency_column",
                format!(
                    "'{column}' is set by item too: leave it out of item, the key is written there"
                ),
            ));
        }
    }
    input
        .item
        .insert(column.clone(), Value::String(key.as_str().to_owned()));
    Ok(Some((column, key.clone())))
}

/// How many rows a takeover reads that carry the key in the marker column, case aside, to find the
/// one that carries it exactly. Dataverse compares text case-insensitively, and keys are not: rows
/// of keys that differ only in case (`A-1`, `a-1`) all match the lookup. Keys used with a column
/// are to be unique ignoring case too (docs/idempotency.md), so more than one such row is rare.
const LOOKUP_ROWS: usize = 10;

/// The row an earlier run created with this key in the marker column, if there is one.
async fn created_earlier(
    client: &Client,
    table: &Table,
    marker: &Marker,
    query: &Query,
    attempt: &Attempt,
) -> Result<Option<Map<String, Value>>, dataverse::Error> {
    let (column, key) = marker;
    let (select, added) = selecting(query.select.as_deref(), column);
    let lookup = Query {
        filter: Some(format!(
            "{column} eq '{}'",
            key.as_str().replace('\'', "''")
        )),
        select,
        ..Query::default()
    };
    let rows: Vec<_> = client
        .rows(table, &lookup, 0, Some(LOOKUP_ROWS), attempt.deadline)
        .try_collect()
        .await?;
    let mut read = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let row: Map<String, Value> =
            serde_json::from_str(row.get()).map_err(|source| dataverse::Error::Decode {
                path: table.entity_set_name.clone(),
                json_path: format!("value[{index}]"),
                source,
            })?;
        read.push(row);
    }
    let matched = read.len();
    let (found, exact) = carrying(read, column, key);
    if exact > 1 {
        tracing::warn!(
            column,
            rows = exact,
            "more than one row carries this idempotency key; answering with the first"
        );
    }
    if found.is_none() && matched == LOOKUP_ROWS {
        tracing::warn!(
            column,
            rows = matched,
            "many rows carry this idempotency key in another case, and none of those read carries it exactly; keys used with idempotency_column should be unique ignoring case"
        );
    }
    Ok(found.map(|mut row| {
        if added {
            row.remove(column);
        }
        row
    }))
}

/// The `$select` of the lookup: the caller's, with the marker column added when it is not named
/// (so the match can be checked), and whether it was added (so the answer leaves it out again, as
/// the create's would have). Without a `$select`, every column comes back, the marker's too.
fn selecting(select: Option<&str>, column: &str) -> (Option<String>, bool) {
    match select {
        None => (None, false),
        Some(select) if select.split(',').any(|name| name.trim() == column) => {
            (Some(select.to_owned()), false)
        }
        Some(select) => (Some(format!("{select},{column}")), true),
    }
}

/// The first of `rows` whose `column` holds `key` byte for byte, and how many do.
fn carrying(
    rows: Vec<Map<String, Value>>,
    column: &str,
    key: &IdempotencyKey,
) -> (Option<Map<String, Value>>, usize) {
    let mut exact = rows
        .into_iter()
        .filter(|row| row.get(column).and_then(Value::as_str) == Some(key.as_str()));
    let first = exact.next();
    let more = exact.count();
    let count = more + usize::from(first.is_some());
    (first, count)
}

pub(crate) async fn handle(
    writer: &Writer,
    event: LambdaEvent<Value>,
) -> Result<Box<RawValue>, CrmError> {
    let (payload, context) = event.into_parts();
    let (payload, once) = writer.idempotency.split(payload)?;
    let mut input: Input = input::parse_payload(payload)?;
    let marker = mark(&mut input, once.key())?;
    let query = Query {
        select: input.select.take(),
        ..Query::default()
    };
    once.run(&context, async |attempt: Attempt| {
        let (row, primary_id, found) = writer
            .crm
            .call(&input.dataset, async |client| {
                client.fits(&query, 0)?;
                let client = client.with_options(input.options());
                let table = client.table(&input.table, attempt.deadline).await?;
                let primary_id = table.primary_id_attribute.clone();
                // Only a takeover looks: a run that crashed after creating left no answer behind.
                if let (true, Some(marker)) = (attempt.takeover, &marker)
                    && let Some(row) =
                        created_earlier(&client, &table, marker, &query, &attempt).await?
                {
                    return Ok((row, primary_id, true));
                }
                let row = client
                    .create(&table, &input.item, &query, attempt.deadline)
                    .await?;
                Ok((row, primary_id, false))
            })
            .await?;
        let id = row
            .get(&primary_id)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if found {
            tracing::info!(dataset = %input.dataset, table = %input.table, id, "found the record an earlier run created");
        } else {
            tracing::info!(dataset = %input.dataset, table = %input.table, id, "created a record");
        }
        Ok(row)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_events_are_valid_inputs() {
        for sample in [
            include_str!("../events/create.json"),
            include_str!("../events/create-once.json"),
        ] {
            let mut event: Value = serde_json::from_str(sample).unwrap();
            if let Some(fields) = event.as_object_mut() {
                fields.remove("idempotency_key");
            }
            input::parse::<Input>(event).unwrap();
        }
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

    fn marked(payload: Value, key: Option<&str>) -> Result<(Input, Option<Marker>), CrmError> {
        let mut input: Input = input::parse(payload)?;
        let key: Option<IdempotencyKey> = key.map(|k| k.parse().unwrap());
        let marker = mark(&mut input, key.as_ref())?;
        Ok((input, marker))
    }

    fn field(result: Result<(Input, Option<Marker>), CrmError>) -> String {
        match result {
            Err(CrmError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_takeover_answers_only_a_row_carrying_the_key_byte_for_byte() {
        let key: IdempotencyKey = "Order-7".parse().unwrap();
        let row = |id: u8, marker: Value| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({"accountid": id, "description": marker}))
                .unwrap()
        };
        // Dataverse's `eq` matched all of these, case aside.
        let rows = vec![
            row(1, "ORDER-7".into()),
            row(2, "order-7".into()),
            row(3, "Order-7".into()),
            row(4, "Order-7".into()),
        ];
        let (found, exact) = carrying(rows, "description", &key);
        assert_eq!(found.unwrap()["accountid"], 3);
        assert_eq!(exact, 2);
        let others = vec![row(1, "ORDER-7".into()), row(2, Value::Null)];
        assert_eq!(carrying(others, "description", &key), (None, 0));
    }

    #[test]
    fn the_lookup_selects_the_marker_column_and_says_when_it_added_it() {
        assert_eq!(selecting(None, "description"), (None, false));
        assert_eq!(
            selecting(Some("name, description"), "description"),
            (Some("name, description".into()), false)
        );
        assert_eq!(
            selecting(Some("name,accountid"), "description"),
            (Some("name,accountid,description".into()), true)
        );
        // A column whose name merely contains the marker's is another column.
        assert_eq!(
            selecting(Some("new_description"), "description"),
            (Some("new_description,description".into()), true)
        );
    }

    #[test]
    fn the_idempotency_column_is_a_column_that_receives_the_key() {
        let base = |item: Value, column: &str| serde_json::json!({"dataset": "contoso", "table": "accounts", "item": item, "idempotency_column": column});
        for bad in ["", "new key", "new_key)", "1st"] {
            assert_eq!(
                field(marked(
                    base(serde_json::json!({"name": "x"}), bad),
                    Some("k")
                )),
                "idempotency_column",
                "{bad}"
            );
        }
        let named = base(serde_json::json!({"name": "x"}), "description");
        assert_eq!(field(marked(named.clone(), None)), "idempotency_column");
        let (input, marker) = marked(named, Some("k-1")).unwrap();
        assert_eq!(input.item["description"], "k-1");
        assert_eq!(marker.unwrap().0, "description");
        let clash = base(
            serde_json::json!({"name": "x", "description": "other"}),
            "description",
        );
        assert_eq!(field(marked(clash, Some("k-1"))), "idempotency_column");
        let same = base(
            serde_json::json!({"name": "x", "description": "k-1"}),
            "description",
        );
        assert!(marked(same, Some("k-1")).is_ok());
        let none =
            serde_json::json!({"dataset": "contoso", "table": "accounts", "item": {"name": "x"}});
        let (input, marker) = marked(none, Some("k-1")).unwrap();
        assert!(marker.is_none());
        assert_eq!(input.item.len(), 1);
    }
}
