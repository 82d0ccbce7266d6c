//! The writers' idempotency table on moto, and the edits the suites make to its records to stand for
//! what only time or a crash would otherwise bring about: an expired record, a run that died holding
//! its key.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};

use crate::Moto;

/// Creates the idempotency table as the template declares it: partition key `pk`, TTL on `expires`.
pub async fn idempotency_table(moto: &Moto, name: &str) -> Result<(), aws_sdk_dynamodb::Error> {
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .send()
        .await?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires")
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

/// The records of one idempotency table, read and edited straight on moto.
#[derive(Debug, Clone)]
pub struct Records {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A stored item.
pub type Item = HashMap<String, AttributeValue>;

impl Records {
    pub async fn new(moto: &Moto, table: &str) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(&moto.sdk_config().await),
            table: table.to_owned(),
        }
    }

    /// The record of `key` under `function` (records are kept per function).
    pub async fn get(&self, function: &str, key: &str) -> Option<Item> {
        self.get_pk(&format!("{function}#{key}")).await
    }

    pub async fn get_pk(&self, pk: &str) -> Option<Item> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .ok()?
            .item()
            .cloned()
    }

    /// A record's string attribute.
    pub async fn text(&self, function: &str, key: &str, attribute: &str) -> Option<String> {
        self.get(function, key)
            .await?
            .get(attribute)
            .and_then(|v| v.as_s().ok())
            .cloned()
    }

    /// A record's numeric attribute (`in_progress_until`, `expires`).
    pub async fn number(&self, function: &str, key: &str, attribute: &str) -> Option<u64> {
        self.get(function, key)
            .await?
            .get(attribute)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
    }

    /// Waits until the record of `key` says `status` (another process is writing it), for at most
    /// 30 s of polling; whether it got there.
    pub async fn reaches(&self, function: &str, key: &str, status: &str) -> bool {
        for _ in 0..3000 {
            if self.text(function, key, "status").await.as_deref() == Some(status) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn update(&self, function: &str, key: &str, expression: &str, values: &[(&str, &str)]) {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("{function}#{key}")))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)");
        for (name, value) in values {
            update =
                update.expression_attribute_values(*name, AttributeValue::N((*value).to_owned()));
        }
        if let Err(e) = update.send().await {
            panic!(
                "editing the record of {function}#{key}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            );
        }
    }

    /// Makes the record expired, as its TTL passing would; `DynamoDB` deletes expired items only
    /// eventually, so it stays readable.
    pub async fn expire(&self, function: &str, key: &str) {
        self.update(function, key, "SET expires = :past", &[(":past", "1")])
            .await;
    }

    /// Makes the record what a run that died after writing to Dataverse, and before recording its
    /// answer, leaves once its deadline has passed: `INPROGRESS`, its hold over, no answer.
    pub async fn crash(&self, function: &str, key: &str) {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("{function}#{key}")))
            .update_expression(
                "SET #s = :in_progress, in_progress_until = :past REMOVE #r, parts, result_hash",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#r", "result")
            .expression_attribute_values(":in_progress", AttributeValue::S("INPROGRESS".into()))
            .expression_attribute_values(":past", AttributeValue::N("1".into()));
        if let Err(e) = update.send().await {
            panic!(
                "editing the record of {function}#{key}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            );
        }
    }

    /// Ends the hold of a run still `INPROGRESS`, as its deadline passing would.
    pub async fn lapse(&self, function: &str, key: &str) {
        self.update(
            function,
            key,
            "SET in_progress_until = :past",
            &[(":past", "1")],
        )
        .await;
    }
}
