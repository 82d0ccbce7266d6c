//! AWS resources on moto for the trigger suites: a cursor table, and an event bus whose events land
//! in an SQS queue the tests can read.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use serde_json::Value;

use crate::{LocalFiles, Moto};

/// Creates the cursor table exactly as `infra/template.yaml` declares it.
pub async fn cursor_table(moto: &Moto, name: &str) -> Result<(), aws_sdk_dynamodb::Error> {
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .send()
        .await?;
    Ok(())
}

/// The cursor table the trigger suites keep their state in on moto.
pub const CURSOR_TABLE: &str = "crm-cursors";

/// A trigger's variables with its state in DynamoDB: `endpoint` (moto's, or a proxy's in front of
/// it), then `files`' variables with `CRM_STATE` naming [`CURSOR_TABLE`], which the caller creates.
pub fn dynamodb_state(
    endpoint: Vec<(String, String)>,
    files: &LocalFiles,
) -> Vec<(String, String)> {
    let mut environment = endpoint;
    environment.extend(files.env().into_iter().filter(|(k, _)| k != "CRM_STATE"));
    environment.push(("CRM_STATE".into(), format!("dynamodb:{CURSOR_TABLE}")));
    environment
}

/// Every item of `table` on moto, for tests that look at what a trigger stored.
pub async fn scan_items(
    moto: &Moto,
    table: &str,
) -> Result<Vec<HashMap<String, AttributeValue>>, aws_sdk_dynamodb::Error> {
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let page = client.scan().table_name(table).send().await?;
    Ok(page.items.unwrap_or_default())
}

/// An event bus with a rule sending every `source` event to a new SQS queue.
#[derive(Debug)]
pub struct Tap {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Tap {
    pub async fn new(
        moto: &Moto,
        bus: &str,
        source: &str,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let config = moto.sdk_config().await;
        let events = aws_sdk_eventbridge::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{bus}-tap"))
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?;
        let queue_arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        events.create_event_bus().name(bus).send().await?;
        events
            .put_rule()
            .name(format!("{bus}-all"))
            .event_bus_name(bus)
            .event_pattern(serde_json::json!({"source": [source]}).to_string())
            .send()
            .await?;
        events
            .put_targets()
            .rule(format!("{bus}-all"))
            .event_bus_name(bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("tap")
                    .arn(queue_arn)
                    .build()?,
            )
            .send()
            .await?;
        Ok(Self { sqs, queue_url })
    }

    /// Every event delivered so far (the envelope EventBridge built), removed from the queue.
    pub async fn drain(&self) -> Result<Vec<Value>, aws_sdk_sqs::Error> {
        let mut events = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await?;
            let messages = output.messages();
            if messages.is_empty() {
                return Ok(events);
            }
            for message in messages {
                if let Some(body) = message.body() {
                    events.push(serde_json::from_str(body).unwrap_or(Value::Null));
                }
                if let Some(handle) = message.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
