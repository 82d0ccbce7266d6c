//! `CRM_STATE=dynamodb:<table>`: cursors in DynamoDB, with conditional writes.
//!
//! Table layout (partition key `pk`, sort key `sk`, both strings):
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | the cursor key | `cursor` | `state`, `position`, `revision`, `lease_owner`, `lease_until` (epoch ms), `updated_at` |
//! | the cursor key | `fp#<row id>` | `fp` (a fingerprint of the watched columns), `expires_at` (TTL) |

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, PutRequest, ReturnValue, WriteRequest,
};
use uuid::Uuid;

use super::{CursorError, Lease, Record, epoch_millis};

/// Fingerprints of rows not updated for this long expire (a deleted row's would otherwise stay forever);
/// the next change to such a row fires, as for a row never seen.
const FINGERPRINT_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn error<E>(table: &str, action: &str, e: &SdkError<E>) -> CursorError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let configuration = matches!(
        e.code(),
        Some("ResourceNotFoundException" | "AccessDeniedException" | "ValidationException")
    );
    CursorError::Dynamo {
        message: format!("{action} on '{table}': {}", DisplayErrorContext(e)),
        configuration,
    }
}

/// DynamoDB kept handing back part of a batch (throttled partitions) past every retry.
fn unprocessed(count: usize) -> CursorError {
    CursorError::Dynamo {
        message: format!("{count} fingerprints stayed unprocessed after retries"),
        configuration: false,
    }
}

fn conditional_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

impl DynamoStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    pub async fn acquire(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s("cursor"))
            .update_expression("SET lease_owner = :owner, lease_until = :until")
            .condition_expression(
                "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner",
            )
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(epoch_millis(until)))
            .expression_attribute_values(":now", n(epoch_millis(SystemTime::now())))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(e) if conditional_failed(&e) => return Ok(None),
            Err(e) => return Err(error(&self.table, "taking the cursor lease", &e)),
        };
        let item = output.attributes().cloned().unwrap_or_default();
        let revision = item
            .get("revision")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let record = match (text(&item, "state"), text(&item, "position")) {
            (Some(state), Some(position)) => Some(Record { state, position }),
            _ => None,
        };
        Ok(Some(Lease {
            key: key.to_owned(),
            owner: owner.to_owned(),
            revision,
            record,
        }))
    }

    pub async fn commit(&self, lease: &Lease, record: &Record) -> Result<(), CursorError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&lease.key))
            .key("sk", s("cursor"))
            .update_expression(
                "SET #state = :state, #position = :position, revision = :next, updated_at = :at REMOVE lease_owner, lease_until",
            )
            .condition_expression(
                "lease_owner = :owner AND (attribute_not_exists(revision) OR revision = :revision) AND (attribute_not_exists(#position) OR #position <= :position)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#position", "position")
            .expression_attribute_values(":state", s(&record.state))
            .expression_attribute_values(":position", s(&record.position))
            .expression_attribute_values(":next", n(lease.revision + 1))
            .expression_attribute_values(":revision", n(lease.revision))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":at", n(epoch_millis(SystemTime::now())))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(CursorError::Lost {
                key: lease.key.clone(),
            }),
            Err(e) => Err(error(&self.table, "saving the cursor", &e)),
        }
    }

    pub async fn release(&self, lease: &Lease) -> Result<(), CursorError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&lease.key))
            .key("sk", s("cursor"))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", s(&lease.owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else holds it now: nothing of ours to release.
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(error(&self.table, "releasing the cursor lease", &e)),
        }
    }

    pub async fn fingerprints(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, CursorError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| {
                    HashMap::from([
                        ("pk".to_owned(), s(key)),
                        ("sk".to_owned(), s(&format!("fp#{id}"))),
                    ])
                })
                .collect();
            // BatchGetItem may leave keys unprocessed under load; ask again for those.
            for attempt in 0..8 {
                if keys.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| CursorError::Dynamo {
                        message: e.to_string(),
                        configuration: false,
                    })?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| error(&self.table, "reading fingerprints", &e))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let id = text(item, "sk").and_then(|sk| {
                        sk.strip_prefix("fp#").and_then(|i| Uuid::parse_str(i).ok())
                    });
                    if let (Some(id), Some(fp)) = (id, text(item, "fp")) {
                        found.insert(id, fp);
                    }
                }
                keys = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                if !keys.is_empty() {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
            }
            // Treating an unread fingerprint as absent would fire unchanged rows.
            if !keys.is_empty() {
                return Err(unprocessed(keys.len()));
            }
        }
        Ok(found)
    }

    pub async fn put_fingerprints(
        &self,
        key: &str,
        entries: &[(Uuid, String)],
    ) -> Result<(), CursorError> {
        let expires = (SystemTime::now() + FINGERPRINT_TTL)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The same row twice in one batch is an error in DynamoDB: keep the last fingerprint.
        let mut latest: HashMap<Uuid, &str> = HashMap::new();
        for (id, fp) in entries {
            latest.insert(*id, fp);
        }
        let items: Vec<(Uuid, &str)> = latest.into_iter().collect();
        for chunk in items.chunks(25) {
            let mut writes = Vec::with_capacity(chunk.len());
            for (id, fp) in chunk {
                let item = HashMap::from([
                    ("pk".to_owned(), s(key)),
                    ("sk".to_owned(), s(&format!("fp#{id}"))),
                    ("fp".to_owned(), s(fp)),
                    ("expires_at".to_owned(), n(expires)),
                ]);
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| CursorError::Dynamo {
                        message: e.to_string(),
                        configuration: false,
                    })?;
                writes.push(WriteRequest::builder().put_request(put).build());
            }
            for attempt in 0..8 {
                if writes.is_empty() {
                    break;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut writes))
                    .send()
                    .await
                    .map_err(|e| error(&self.table, "writing fingerprints", &e))?;
                writes = output
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if !writes.is_empty() {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
            }
            if !writes.is_empty() {
                return Err(unprocessed(writes.len()));
            }
        }
        Ok(())
    }
}
