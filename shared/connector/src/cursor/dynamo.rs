//! `CRM_STATE=dynamodb:<table>`: cursors in DynamoDB, with conditional writes.
//!
//! Table layout (partition key `pk`, sort key `sk`, both strings):
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | the cursor key | `cursor` | `state`, `position`, `revision`, `lease_owner`, `lease_until` (epoch ms), `updated_at` |
//! | the cursor key | `fp#<row id>` | `fp` (a fingerprint of the watched columns), `kept` (their values, JSON, bounded by the trigger; absent on items earlier versions wrote), `expires_at` (TTL) |
//! | the cursor key | `in#<row id>` | `g`: the deleted trigger's generation that last confirmed the row (absent on items earlier versions wrote). The row matched the trigger's `$filter` when last seen, or, with `remember_ids` and no filter, existed |
//!
//! Membership items have no TTL: a row that matches and then goes unchanged for years must still fire
//! when it is deleted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use dataverse::Deadline;
use uuid::Uuid;

use super::{CursorError, Damage, Kept, Lease, Record, damaged, epoch_millis};

/// Fingerprints of rows not updated for this long expire (a deleted row's would otherwise stay forever);
/// the next change to such a row fires, as for a row never seen.
const FINGERPRINT_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Sort-key prefixes of the per-row items kept beside a cursor.
const FINGERPRINT: &str = "fp#";
const MEMBER: &str = "in#";

use crate::aws::DYNAMODB_ATTEMPT_TIMEOUT as ATTEMPT_TIMEOUT;

/// Attempts at saving the cursor. The save retries itself rather than through the SDK: a retry after
/// an attempt that was applied but whose answer was lost fails its condition, and only the save
/// knows how to tell that from a takeover (see [`DynamoStore::commit`]).
const SAVE_ATTEMPTS: u32 = 4;

/// The least time worth starting another save attempt with.
const MIN_SAVE_ATTEMPT: Duration = Duration::from_millis(200);

/// No poll takes a lease longer than Lambda's 15-minute limit (and a second): a stored lease ending
/// later than this from now was not written by a poll.
const LONGEST_LEASE: Duration = Duration::from_secs(3600);

/// When the lease request may take the lease. Besides a lease that is free, lapsed or already ours, a
/// lease no poll could have written (an end that is not a number or lies too far ahead, an owner that
/// is missing or not a string) is taken over: it holds nothing, and honouring it would keep every poll
/// out, each reporting that another poll holds the cursor. The type tests come before the
/// comparisons, so no backend is asked to compare a string with a number.
const LEASE_FREE: &str = "attribute_not_exists(lease_until) OR NOT attribute_type(lease_until, :number) \
    OR lease_until < :now OR lease_until > :far \
    OR attribute_not_exists(lease_owner) OR NOT attribute_type(lease_owner, :string) \
    OR lease_owner = :owner";

/// The attributes a save writes; an item with none of them is a cursor never saved.
const SAVED: [&str; 4] = ["state", "position", "revision", "updated_at"];

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

fn error<E, R>(table: &str, action: &'static str, e: SdkError<E, R>) -> CursorError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    let configuration = matches!(
        e.code(),
        Some("ResourceNotFoundException" | "AccessDeniedException" | "ValidationException")
    );
    CursorError::Dynamo {
        table: table.to_owned(),
        action,
        configuration,
        source: Box::new(e.into()),
    }
}

fn unprocessed(table: &str, count: usize) -> CursorError {
    CursorError::Unprocessed {
        table: table.to_owned(),
        count,
    }
}

fn conditional_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// The item as it stood when an `UpdateItem` condition failed (asked for with
/// `ReturnValuesOnConditionCheckFailure`).
fn item_on_failure(e: &SdkError<UpdateItemError>) -> Option<&HashMap<String, AttributeValue>> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(failed)) => failed.item(),
        _ => None,
    }
}

/// Per-call settings for the save: one attempt per call, [`DynamoStore::commit`] retries it.
fn single_attempt() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default().retry_config(RetryConfig::disabled())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// What kind of value `value` is, for messages.
fn kind(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "a string",
        AttributeValue::N(_) => "a number",
        AttributeValue::B(_) => "binary",
        AttributeValue::Bool(_) => "a boolean",
        AttributeValue::Null(_) => "null",
        AttributeValue::L(_) => "a list",
        AttributeValue::M(_) => "a map",
        AttributeValue::Ss(_) => "a string set",
        AttributeValue::Ns(_) => "a number set",
        AttributeValue::Bs(_) => "a binary set",
        _ => "of an unknown type",
    }
}

fn required_string(
    key: &str,
    item: &HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<String, CursorError> {
    match item.get(attribute) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        Some(other) => Err(damaged(
            key,
            attribute,
            format!("is {}, not a string", kind(other)),
        )),
        None => Err(damaged(key, attribute, "is missing".into())),
    }
}

/// The stored revision: a whole number (whether it can still advance is the lease's question).
fn revision(key: &str, item: &HashMap<String, AttributeValue>) -> Result<u64, CursorError> {
    match item.get("revision") {
        Some(AttributeValue::N(value)) => match value.parse::<u64>() {
            Ok(revision) => Ok(revision),
            Err(_) => Err(damaged(
                key,
                "revision",
                format!("is {value}, not a whole number from 0 to {}", u64::MAX),
            )),
        },
        Some(other) => Err(damaged(
            key,
            "revision",
            format!("is {}, not a number", kind(other)),
        )),
        None => Err(damaged(key, "revision", "is missing".into())),
    }
}

/// The revision and record of a cursor item (as the lease request returned it). An item with none of
/// the attributes a save writes is a cursor never saved; one with any of them was saved, and must
/// have them all, well formed.
fn read_cursor(
    key: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<(u64, Option<Record>), CursorError> {
    if !SAVED.iter().any(|attribute| item.contains_key(*attribute)) {
        return Ok((0, None));
    }
    let state = required_string(key, item, "state")?;
    let position = required_string(key, item, "position")?;
    let revision = revision(key, item)?;
    // `updated_at` is only informative and is overwritten by the next save: its shape does not matter.
    Ok((revision, Some(Record { state, position })))
}

/// Whether `item` is this save applied: the revision it wrote, with its state and position. (Another
/// poll takes over only after this lease ends, and its save would carry its own state.)
fn applied(item: &HashMap<String, AttributeValue>, next: u64, record: &Record) -> bool {
    item.get("revision")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<u64>().ok())
        == Some(next)
        && text(item, "state").as_deref() == Some(record.state.as_str())
        && text(item, "position").as_deref() == Some(record.position.as_str())
}

/// What a failed save attempt says about the save.
enum Failed {
    /// It was not applied, and another attempt may work (throttled).
    NotApplied,
    /// It may have been applied (no answer, an unreadable one, a server error).
    Maybe,
    /// It was refused for good.
    Refused,
}

fn classify(e: &SdkError<UpdateItemError>) -> Failed {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failed::Maybe
        }
        SdkError::ServiceError(service) => {
            if matches!(
                e.code(),
                Some(
                    "ProvisionedThroughputExceededException"
                        | "ThrottlingException"
                        | "RequestLimitExceeded"
                        | "TransactionConflictException"
                )
            ) {
                Failed::NotApplied
            } else if service.raw().status().is_server_error() {
                Failed::Maybe
            } else {
                Failed::Refused
            }
        }
        _ => Failed::Refused,
    }
}

impl DynamoStore {
    /// A store on `table`. Every call's attempts are cut off at [`ATTEMPT_TIMEOUT`] (the SDK then
    /// retries them); the save sets its own attempts (see [`DynamoStore::commit`]).
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: crate::aws::dynamodb_client(config),
            table,
        }
    }

    pub(crate) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        until: SystemTime,
    ) -> Result<Option<Lease>, CursorError> {
        let now = SystemTime::now();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s("cursor"))
            .update_expression("SET lease_owner = :owner, lease_until = :until")
            .condition_expression(LEASE_FREE)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(epoch_millis(until)))
            .expression_attribute_values(":now", n(epoch_millis(now)))
            .expression_attribute_values(
                ":far",
                n(now
                    .checked_add(LONGEST_LEASE)
                    .map_or(u64::MAX, epoch_millis)),
            )
            .expression_attribute_values(":number", s("N"))
            .expression_attribute_values(":string", s("S"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(e) if conditional_failed(&e) => return Ok(None),
            Err(e) => return Err(error(&self.table, "taking the cursor lease", e)),
        };
        let empty = HashMap::new();
        let item = output.attributes().unwrap_or(&empty);
        // The lease was taken before the item could be read: a damaged item comes back on the
        // lease, and the poll reports it, and gives the lease back, like any failure under it.
        Ok(Some(match read_cursor(key, item) {
            Ok((revision, record)) => {
                Lease::new(key.to_owned(), owner.to_owned(), revision, record)
            }
            Err(CursorError::Damaged {
                attribute, problem, ..
            }) => Lease::damaged(
                key.to_owned(),
                owner.to_owned(),
                Damage { attribute, problem },
            ),
            Err(other) => return Err(other),
        }))
    }

    /// Saves the cursor if this lease still holds, the revision is the one read and the position does
    /// not move back.
    ///
    /// A save attempt can be applied and its answer lost. A second attempt then fails its condition,
    /// which alone would read as a takeover; so every attempt asks for the item as it stands when the
    /// condition fails: if it holds exactly this save, an earlier attempt was applied. When that
    /// cannot be seen (no answer at all, or the cursor changed again since), the error says the
    /// outcome is unknown rather than guessing.
    pub async fn commit(
        &self,
        lease: &Lease,
        record: &Record,
        deadline: Deadline,
    ) -> Result<(), CursorError> {
        let next = lease.next_revision()?;
        let unknown = |reason: String| CursorError::OutcomeUnknown {
            key: lease.key.clone(),
            reason,
        };
        // Why an earlier attempt may have been applied.
        let mut maybe_applied: Option<String> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let Some(budget) = deadline.cap(ATTEMPT_TIMEOUT) else {
                return Err(match maybe_applied {
                    Some(reason) => unknown(reason),
                    None => super::timed_out(&lease.key, "saving"),
                });
            };
            let call = self
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
                .expression_attribute_values(":next", n(next))
                .expression_attribute_values(":revision", n(lease.revision))
                .expression_attribute_values(":owner", s(&lease.owner))
                .expression_attribute_values(":at", n(epoch_millis(SystemTime::now())))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .customize()
                .config_override(single_attempt())
                .send();
            // The last failure that is known not to be a lost answer, for the report.
            let mut failure = None;
            match tokio::time::timeout(budget, call).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if conditional_failed(&e) => {
                    if item_on_failure(&e).is_some_and(|item| applied(item, next, record)) {
                        if maybe_applied.is_some() {
                            tracing::info!(cursor = %lease.key, attempt, "an earlier attempt of this save was applied; its answer was lost");
                        }
                        return Ok(());
                    }
                    return Err(match maybe_applied {
                        Some(reason) => unknown(format!(
                            "{reason}, and by attempt {attempt} the cursor had changed again"
                        )),
                        None => CursorError::Lost {
                            key: lease.key.clone(),
                        },
                    });
                }
                Ok(Err(e)) => match classify(&e) {
                    Failed::Refused => {
                        return Err(match maybe_applied {
                            Some(reason) => unknown(format!(
                                "{reason}, then attempt {attempt} failed: {}",
                                DisplayErrorContext(&e)
                            )),
                            None => error(&self.table, "saving the cursor", e),
                        });
                    }
                    Failed::Maybe => {
                        maybe_applied = Some(format!(
                            "attempt {attempt} failed without a clear answer: {}",
                            DisplayErrorContext(&e)
                        ));
                    }
                    Failed::NotApplied => failure = Some(e),
                },
                Err(_) => {
                    maybe_applied = Some(format!(
                        "attempt {attempt} had no answer within {} ms",
                        budget.as_millis()
                    ));
                }
            }
            let wait = Duration::from_millis(50).saturating_mul(2u32.saturating_pow(attempt));
            if attempt >= SAVE_ATTEMPTS || !deadline.allows(wait.saturating_add(MIN_SAVE_ATTEMPT)) {
                return Err(match (maybe_applied, failure) {
                    (Some(reason), _) => unknown(reason),
                    (None, Some(e)) => error(&self.table, "saving the cursor", e),
                    (None, None) => super::timed_out(&lease.key, "saving"),
                });
            }
            tracing::warn!(
                cursor = %lease.key,
                attempt,
                maybe_applied = maybe_applied.is_some(),
                "a cursor save attempt failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    pub async fn release(&self, lease: &Lease) -> Result<(), CursorError> {
        let (key, owner) = (&lease.key, &lease.owner);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .key("sk", s("cursor"))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else holds it now (or a retried attempt already released it): nothing of ours
            // to release.
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(error(&self.table, "releasing the cursor lease", e)),
        }
    }

    /// The items under `key` whose sort keys are `prefix` + each id, read consistently, by id.
    async fn items_of(
        &self,
        key: &str,
        prefix: &str,
        ids: &[Uuid],
        action: &'static str,
    ) -> Result<HashMap<Uuid, HashMap<String, AttributeValue>>, CursorError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(100) {
            // BatchGetItem refuses a key asked twice in one request.
            let unique: std::collections::HashSet<&Uuid> = chunk.iter().collect();
            let mut keys: Vec<HashMap<String, AttributeValue>> = unique
                .into_iter()
                .map(|id| {
                    HashMap::from([
                        ("pk".to_owned(), s(key)),
                        ("sk".to_owned(), s(&format!("{prefix}{id}"))),
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
                    .map_err(CursorError::Request)?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| error(&self.table, action, e))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let id = text(item, "sk").and_then(|sk| {
                        sk.strip_prefix(prefix)
                            .and_then(|i| Uuid::parse_str(i).ok())
                    });
                    if let Some(id) = id {
                        found.insert(id, item.clone());
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
            // Treating an unread item as absent would fire unchanged rows, or skip deletions.
            if !keys.is_empty() {
                return Err(unprocessed(&self.table, keys.len()));
            }
        }
        Ok(found)
    }

    /// Sends `writes` (at most one per item) in batches of 25, asking again for what DynamoDB
    /// leaves unprocessed under load.
    async fn write_all(
        &self,
        writes: Vec<WriteRequest>,
        action: &'static str,
    ) -> Result<(), CursorError> {
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let mut batch: Vec<WriteRequest> = writes.by_ref().take(25).collect();
            for attempt in 0..8 {
                if batch.is_empty() {
                    break;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut batch))
                    .send()
                    .await
                    .map_err(|e| error(&self.table, action, e))?;
                batch = output
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if !batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
            }
            if !batch.is_empty() {
                return Err(unprocessed(&self.table, batch.len()));
            }
        }
        Ok(())
    }

    pub(crate) async fn fingerprints(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Kept>, CursorError> {
        let items = self
            .items_of(key, FINGERPRINT, ids, "reading fingerprints")
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(id, item)| {
                text(&item, "fp").map(|fingerprint| {
                    let values = text(&item, "kept");
                    (
                        id,
                        Kept {
                            fingerprint,
                            values,
                        },
                    )
                })
            })
            .collect())
    }

    pub(crate) async fn put_fingerprints(
        &self,
        key: &str,
        entries: &[(Uuid, Kept)],
    ) -> Result<(), CursorError> {
        let expires = (SystemTime::now() + FINGERPRINT_TTL)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The same row twice in one batch is an error in DynamoDB: keep the last fingerprint.
        let mut latest: HashMap<Uuid, &Kept> = HashMap::new();
        for (id, kept) in entries {
            latest.insert(*id, kept);
        }
        let mut writes = Vec::with_capacity(latest.len());
        for (id, kept) in latest {
            let mut item = HashMap::from([
                ("pk".to_owned(), s(key)),
                ("sk".to_owned(), s(&format!("{FINGERPRINT}{id}"))),
                ("fp".to_owned(), s(&kept.fingerprint)),
                ("expires_at".to_owned(), n(expires)),
            ]);
            if let Some(values) = &kept.values {
                item.insert("kept".to_owned(), s(values));
            }
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(CursorError::Request)?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        self.write_all(writes, "writing fingerprints").await
    }

    pub(crate) async fn members(
        &self,
        key: &str,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, CursorError> {
        let items = self
            .items_of(key, MEMBER, ids, "reading the membership set")
            .await?;
        Ok(items.into_keys().collect())
    }

    pub(crate) async fn change_members(
        &self,
        key: &str,
        add: &[Uuid],
        remove: &[Uuid],
        mark: u64,
    ) -> Result<(), CursorError> {
        // One write per row: a row both added and removed in one call ends removed.
        let removed: HashSet<&Uuid> = remove.iter().collect();
        let added: HashSet<&Uuid> = add.iter().filter(|id| !removed.contains(id)).collect();
        let mut writes = Vec::with_capacity(added.len() + removed.len());
        let item_key = |id: &Uuid| {
            HashMap::from([
                ("pk".to_owned(), s(key)),
                ("sk".to_owned(), s(&format!("{MEMBER}{id}"))),
            ])
        };
        for id in added {
            let mut item = item_key(id);
            item.insert("g".to_owned(), n(mark));
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(CursorError::Request)?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        for id in removed {
            let delete = DeleteRequest::builder()
                .set_key(Some(item_key(id)))
                .build()
                .map_err(CursorError::Request)?;
            writes.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.write_all(writes, "writing the membership set").await
    }

    /// Members marked below `below` (or not marked at all), read consistently, a page of the
    /// cursor's items at a time until about `limit` are found or the items run out.
    pub(crate) async fn stale_members(
        &self,
        key: &str,
        below: u64,
        limit: usize,
    ) -> Result<Vec<Uuid>, CursorError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :member)")
                .filter_expression("attribute_not_exists(g) OR g < :below")
                .projection_expression("sk")
                .expression_attribute_values(":pk", s(key))
                .expression_attribute_values(":member", s(MEMBER))
                .expression_attribute_values(":below", n(below))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error(&self.table, "reading the membership set", e))?;
            found.extend(output.items().iter().filter_map(|item| {
                text(item, "sk").and_then(|sk| {
                    sk.strip_prefix(MEMBER)
                        .and_then(|i| Uuid::parse_str(i).ok())
                })
            }));
            match output.last_evaluated_key() {
                Some(last) if found.len() < limit => start = Some(last.clone()),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s("k")),
            ("sk".to_owned(), s("cursor")),
            ("lease_owner".to_owned(), s("me")),
            ("lease_until".to_owned(), n(1)),
        ]);
        item.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        item
    }

    fn saved() -> HashMap<String, AttributeValue> {
        item(&[
            ("state", s("{}")),
            ("position", s("0005")),
            ("revision", n(3)),
            ("updated_at", n(1)),
        ])
    }

    fn damage_of(item: &HashMap<String, AttributeValue>) -> (&'static str, String) {
        match read_cursor("k", item) {
            Err(CursorError::Damaged {
                attribute, problem, ..
            }) => (attribute, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_item_holding_only_a_lease_is_a_cursor_never_saved() {
        assert_eq!(read_cursor("k", &item(&[])).unwrap(), (0, None));
        let (revision, record) = read_cursor("k", &saved()).unwrap();
        assert_eq!(revision, 3);
        assert_eq!(record.unwrap().position, "0005");
    }

    #[test]
    fn a_saved_item_missing_or_mistyping_an_attribute_is_damaged_naming_it() {
        for attribute in ["state", "position", "revision"] {
            let mut removed = saved();
            removed.remove(attribute);
            assert_eq!(damage_of(&removed), (attribute, "is missing".to_owned()));
        }
        let mut retyped = saved();
        retyped.insert("state".into(), n(7));
        assert_eq!(
            damage_of(&retyped),
            ("state", "is a number, not a string".to_owned())
        );
        retyped = saved();
        retyped.insert("position".into(), AttributeValue::Bool(true));
        assert_eq!(damage_of(&retyped).0, "position");
        // Any attribute a save writes proves the cursor was saved: the others must be there.
        let only_updated_at = item(&[("updated_at", n(1))]);
        assert_eq!(damage_of(&only_updated_at).0, "state");
        // `updated_at` itself is informative only.
        let mut informative = saved();
        informative.insert("updated_at".into(), s("yesterday"));
        assert!(read_cursor("k", &informative).is_ok());
    }

    #[test]
    fn a_revision_that_is_not_a_u64_that_can_advance_is_damaged() {
        for bad in ["18446744073709551616", "-1", "2.5", "1e3", ""] {
            let mut item = saved();
            item.insert("revision".into(), AttributeValue::N(bad.into()));
            assert_eq!(damage_of(&item).0, "revision", "{bad}");
        }
        let mut item = saved();
        item.insert("revision".into(), s("3"));
        assert_eq!(
            damage_of(&item),
            ("revision", "is a string, not a number".to_owned())
        );
        // The largest revision reads, and the lease refuses it (for every store): see
        // `a_revision_that_cannot_advance_or_a_lost_record_is_damaged` in mod.rs.
        item.insert("revision".into(), n(u64::MAX));
        assert_eq!(read_cursor("k", &item).unwrap().0, u64::MAX);
    }

    #[test]
    fn a_save_is_recognised_as_applied_by_its_revision_state_and_position() {
        let record = Record {
            state: "{\"p\":6}".into(),
            position: "0006".into(),
        };
        let after = item(&[
            ("state", s(&record.state)),
            ("position", s(&record.position)),
            ("revision", n(4)),
        ]);
        assert!(applied(&after, 4, &record));
        assert!(!applied(&after, 5, &record), "a later save");
        assert!(!applied(&saved(), 4, &record), "not applied");
        let mut other = after.clone();
        other.insert("state".into(), s("{\"p\":7}"));
        assert!(!applied(&other, 4, &record), "another poll's save");
    }

    #[test]
    fn the_lease_condition_tests_types_before_comparing() {
        let type_test = LEASE_FREE.find("NOT attribute_type(lease_until").unwrap();
        let comparison = LEASE_FREE.find("lease_until <").unwrap();
        assert!(type_test < comparison);
        assert!(!LEASE_FREE.contains("  "), "{LEASE_FREE}");
    }
}
