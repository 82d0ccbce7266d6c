//! `CRM_IDEMPOTENCY=dynamodb:<table>`: records in `DynamoDB`, with conditional writes.
//!
//! Table layout: partition key `pk` (string), TTL on `expires` (epoch seconds). The calls are
//! `GetItem`, `PutItem`, `UpdateItem` and `DeleteItem`, nothing else.
//!
//! | pk | attributes |
//! |---|---|
//! | `<function>#<key>` | `status` (`INPROGRESS`, `COMPLETED`), `hash`, `token`, `in_progress_until` (epoch ms), `expires`, and once completed `result` (JSON text), or `parts` and `result_hash` |
//! | `#part#<token>#<n>` | `data` (binary), `expires`: part `n` (from 0) of a result too large for its record |
//!
//! An item may hold 400 KB. A larger answer (a row with long text columns; Lambda answers up to
//! 6 MB) is split over part items, written before the record says `COMPLETED`, and checked against
//! `result_hash` when read back: a repeat still answers without calling Dataverse. A part's key
//! starts with `#`, which no function name does, and carries the token of the run that wrote it,
//! so parts never meet another key's or another run's.
//!
//! Every write is conditional on the record's `token` where it touches a record, so the SDK may
//! retry any of them: a retried begin whose first attempt was applied finds the record holding its
//! own token, and the others apply the same values again or find nothing of theirs to change.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures_util::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest, Sha256};

use super::{Begun, IdempotencyError, Parts, Record, Status, hex, missing_result};
use crate::excerpt;

/// The longest answer kept in the record itself, in bytes, leaving room in the 400 KB item for the
/// key and the other attributes.
const INLINE_LIMIT: usize = 350_000;

/// The bytes of a result in one part item.
const PART_BYTES: usize = 350_000;

/// The largest answer a function can give: Lambda refuses a response over 6 MB (6 MiB).
const LARGEST_ANSWER: usize = 6 * 1024 * 1024;

/// The most parts an answer can need. A record naming more was not written by a run, and reading
/// what it names (up to 2^32 parts of 350 KB) could exhaust the function's memory first.
const MAX_PARTS: usize = LARGEST_ANSWER.div_ceil(PART_BYTES);

/// How many part items are read or written at once: a few, for speed, without a request per part
/// in flight.
const PART_CONCURRENCY: usize = 4;

/// When beginning may replace the stored record: there is none, it has expired, or a run of the
/// same payload held it and can no longer be running (`Record::replaceable`).
const REPLACEABLE: &str = "attribute_not_exists(pk) OR #e <= :now_s OR (#s = :in_progress AND #u <= :now_ms AND #h = :hash)";

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

fn conditional_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn part_key(token: &str, index: usize) -> String {
    format!("#part#{token}#{index}")
}

/// The item as it stood when the begin's condition failed.
fn item_on_failure(e: &SdkError<PutItemError>) -> Option<&HashMap<String, AttributeValue>> {
    match e.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(failed)) => failed.item(),
        _ => None,
    }
}

fn damaged(pk: &str, attribute: &'static str, problem: impl Into<String>) -> IdempotencyError {
    IdempotencyError::Damaged {
        key: excerpt(pk),
        attribute,
        problem: problem.into(),
    }
}

fn string<'a>(
    pk: &str,
    item: &'a HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<Option<&'a str>, IdempotencyError> {
    match item.get(attribute) {
        None => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(damaged(pk, attribute, "is not a string")),
    }
}

fn required_string<'a>(
    pk: &str,
    item: &'a HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<&'a str, IdempotencyError> {
    string(pk, item, attribute)?.ok_or_else(|| damaged(pk, attribute, "is missing"))
}

fn number(
    pk: &str,
    item: &HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<Option<u64>, IdempotencyError> {
    match item.get(attribute) {
        None => Ok(None),
        Some(AttributeValue::N(value)) => value.parse().map(Some).map_err(|_| {
            damaged(
                pk,
                attribute,
                format!("is {value}, not a whole number from 0 to {}", u64::MAX),
            )
        }),
        Some(_) => Err(damaged(pk, attribute, "is not a number")),
    }
}

fn required_number(
    pk: &str,
    item: &HashMap<String, AttributeValue>,
    attribute: &'static str,
) -> Result<u64, IdempotencyError> {
    number(pk, item, attribute)?.ok_or_else(|| damaged(pk, attribute, "is missing"))
}

/// A stored item as a record, or what is wrong with it.
fn read_record(
    pk: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Record, IdempotencyError> {
    let status = match required_string(pk, item, "status")? {
        "INPROGRESS" => Status::InProgress,
        "COMPLETED" => Status::Completed,
        other => {
            return Err(damaged(
                pk,
                "status",
                format!("is '{}', not INPROGRESS or COMPLETED", excerpt(other)),
            ));
        }
    };
    let parts = match (number(pk, item, "parts")?, string(pk, item, "result_hash")?) {
        (None, _) => None,
        (Some(count), Some(hash)) => Some(Parts {
            count: usize::try_from(count)
                .ok()
                .filter(|count| (1..=MAX_PARTS).contains(count))
                .and_then(|count| u32::try_from(count).ok())
                .ok_or_else(|| {
                    damaged(
                        pk,
                        "parts",
                        format!(
                            "is {count}, where an answer Lambda can give takes 1 to {MAX_PARTS}"
                        ),
                    )
                })?,
            hash: hash.to_owned(),
        }),
        (Some(_), None) => return Err(damaged(pk, "result_hash", "is missing beside parts")),
    };
    Ok(Record {
        status,
        hash: required_string(pk, item, "hash")?.to_owned(),
        token: required_string(pk, item, "token")?.to_owned(),
        in_progress_until: required_number(pk, item, "in_progress_until")?,
        expires: required_number(pk, item, "expires")?,
        result: string(pk, item, "result")?.map(str::to_owned),
        parts,
    })
}

impl DynamoStore {
    /// A store on `table`, each attempt cut off at `crate::aws::DYNAMODB_ATTEMPT_TIMEOUT` (the SDK then
    /// retries it).
    pub fn new(config: &aws_config::SdkConfig, table: String) -> Self {
        Self {
            client: crate::aws::dynamodb_client(config),
            table,
        }
    }

    fn error<E, R>(&self, action: &'static str, e: SdkError<E, R>) -> IdempotencyError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
    {
        let configuration = matches!(
            e.code(),
            Some("ResourceNotFoundException" | "AccessDeniedException" | "ValidationException")
        );
        IdempotencyError::Dynamo {
            table: self.table.clone(),
            action,
            configuration,
            source: Box::new(e.into()),
        }
    }

    pub(crate) async fn begin(
        &self,
        pk: &str,
        record: &Record,
        now_ms: u64,
    ) -> Result<Begun, IdempotencyError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("status", s(record.status.as_str()))
            .item("hash", s(&record.hash))
            .item("token", s(&record.token))
            .item("in_progress_until", n(record.in_progress_until))
            .item("expires", n(record.expires))
            .condition_expression(REPLACEABLE)
            .expression_attribute_names("#e", "expires")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#u", "in_progress_until")
            .expression_attribute_names("#h", "hash")
            .expression_attribute_values(":now_s", n(now_ms / 1000))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":in_progress", s(Status::InProgress.as_str()))
            .expression_attribute_values(":hash", s(&record.hash))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                // What was replaced, read leniently: it is gone, and only says whether to look
                // for what a crashed run wrote.
                let resumes = output.attributes().is_some_and(|old| {
                    old.get("status")
                        .and_then(|v| v.as_s().ok())
                        .map(String::as_str)
                        == Some(Status::InProgress.as_str())
                        && old.get("hash").and_then(|v| v.as_s().ok()) == Some(&record.hash)
                });
                Ok(Begun::Started { resumes })
            }
            Err(e) if conditional_failed(&e) => {
                if let Some(item) = item_on_failure(&e) {
                    return read_record(pk, item).map(|r| Begun::Held(Some(r)));
                }
                // No item came back with the refusal: read it.
                Ok(Begun::Held(self.get(pk).await?))
            }
            Err(e) => Err(self.error("taking the key", e)),
        }
    }

    async fn get(&self, pk: &str) -> Result<Option<Record>, IdempotencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("reading the record", e))?;
        output.item().map(|item| read_record(pk, item)).transpose()
    }

    /// The answer of a completed record: in the record, or put together from its parts.
    pub(crate) async fn result(
        &self,
        pk: &str,
        record: &Record,
    ) -> Result<String, IdempotencyError> {
        if let Some(result) = &record.result {
            return Ok(result.clone());
        }
        let Some(parts) = &record.parts else {
            return Err(missing_result(pk));
        };
        let count = usize::try_from(parts.count).unwrap_or(usize::MAX);
        let reads = (0..count).map(|index| async move {
            let key = part_key(&record.token, index);
            let output = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(&key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.error("reading a part of the result", e))?;
            match output.item().and_then(|item| item.get("data")) {
                Some(AttributeValue::B(data)) => Ok(data.clone().into_inner()),
                _ => Err(damaged(
                    pk,
                    "parts",
                    format!("names {count} parts, and part {index} is missing or not binary"),
                )),
            }
        });
        let bytes: Vec<Vec<u8>> = futures_util::stream::iter(reads)
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        let bytes = bytes.concat();
        if hex(&Sha256::digest(&bytes)) != parts.hash {
            return Err(damaged(
                pk,
                "result_hash",
                "does not match the result's parts",
            ));
        }
        String::from_utf8(bytes).map_err(|_| damaged(pk, "parts", "do not hold UTF-8 text"))
    }

    pub(crate) async fn complete(
        &self,
        pk: &str,
        token: &str,
        result: &str,
        expires: u64,
    ) -> Result<bool, IdempotencyError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .condition_expression("#t = :token")
            .expression_attribute_names("#t", "token")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#e", "expires")
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":completed", s(Status::Completed.as_str()))
            .expression_attribute_values(":expires", n(expires));
        let update = if result.len() <= INLINE_LIMIT {
            update
                .update_expression(
                    "SET #s = :completed, #r = :result, #e = :expires REMOVE #p, #rh",
                )
                .expression_attribute_names("#r", "result")
                .expression_attribute_names("#p", "parts")
                .expression_attribute_names("#rh", "result_hash")
                .expression_attribute_values(":result", s(result))
        } else {
            if result.len() > LARGEST_ANSWER {
                // Lambda will refuse to return it, and a record of it would read as damaged.
                return Err(IdempotencyError::TooLarge {
                    key: excerpt(pk),
                    bytes: result.len(),
                    limit: LARGEST_ANSWER,
                });
            }
            // The parts first: a record saying `COMPLETED` always has its whole answer.
            let writes = result
                .as_bytes()
                .chunks(PART_BYTES)
                .enumerate()
                .map(|(index, chunk)| {
                    self.client
                        .put_item()
                        .table_name(&self.table)
                        .item("pk", s(&part_key(token, index)))
                        .item("data", AttributeValue::B(Blob::new(chunk)))
                        .item("expires", n(expires))
                        .send()
                });
            let written: Vec<_> = futures_util::stream::iter(writes)
                .buffer_unordered(PART_CONCURRENCY)
                .try_collect()
                .await
                .map_err(|e| self.error("writing a part of the result", e))?;
            update
                .update_expression(
                    "SET #s = :completed, #p = :parts, #rh = :hash, #e = :expires REMOVE #r",
                )
                .expression_attribute_names("#r", "result")
                .expression_attribute_names("#p", "parts")
                .expression_attribute_names("#rh", "result_hash")
                .expression_attribute_values(":parts", n(written.len() as u64))
                .expression_attribute_values(":hash", s(&hex(&Sha256::digest(result.as_bytes()))))
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(self.error("recording the answer", e)),
        }
    }

    pub(crate) async fn release(&self, pk: &str, token: &str) -> Result<(), IdempotencyError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .condition_expression("#t = :token")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            // Gone already, or another run's now: nothing of ours to remove.
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(self.error("removing the record", e)),
        }
    }

    pub(crate) async fn hold(
        &self,
        pk: &str,
        token: &str,
        until_ms: u64,
    ) -> Result<(), IdempotencyError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .update_expression("SET #u = :until")
            .condition_expression("#t = :token AND #s = :in_progress")
            .expression_attribute_names("#u", "in_progress_until")
            .expression_attribute_names("#t", "token")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":in_progress", s(Status::InProgress.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(self.error("moving the end of the hold on the record", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s("f#k")),
            ("status".to_owned(), s("INPROGRESS")),
            ("hash".to_owned(), s("h")),
            ("token".to_owned(), s("t")),
            ("in_progress_until".to_owned(), n(5)),
            ("expires".to_owned(), n(9)),
        ]);
        item.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        item
    }

    #[test]
    fn reads_a_stored_record() {
        let record = read_record("f#k", &item(&[])).unwrap();
        assert_eq!(record.status, Status::InProgress);
        assert_eq!((record.in_progress_until, record.expires), (5, 9));
        let completed = read_record(
            "f#k",
            &item(&[("status", s("COMPLETED")), ("result", s("{}"))]),
        )
        .unwrap();
        assert_eq!(completed.result.as_deref(), Some("{}"));
        let split = read_record(
            "f#k",
            &item(&[
                ("status", s("COMPLETED")),
                ("parts", n(3)),
                ("result_hash", s("ab")),
            ]),
        )
        .unwrap();
        assert_eq!(split.parts.unwrap().count, 3);
    }

    #[test]
    fn a_parts_count_no_answer_could_need_is_damaged_before_anything_is_read() {
        assert_eq!(MAX_PARTS, 18, "6 MiB in parts of 350,000 bytes");
        let parts = |count: u64| {
            read_record(
                "f#k",
                &item(&[
                    ("status", s("COMPLETED")),
                    ("parts", n(count)),
                    ("result_hash", s("ab")),
                ]),
            )
        };
        assert_eq!(parts(18).unwrap().parts.unwrap().count, 18);
        assert_eq!(parts(1).unwrap().parts.unwrap().count, 1);
        for count in [0, 19, u64::from(u32::MAX), u64::MAX] {
            match parts(count) {
                Err(IdempotencyError::Damaged { attribute, .. }) => {
                    assert_eq!(attribute, "parts", "{count}");
                }
                other => panic!("{count}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_record_no_run_could_have_written_is_damaged_naming_the_attribute() {
        let cases: [(&str, Option<AttributeValue>); 6] = [
            ("status", Some(s("DONE"))),
            ("hash", None),
            ("token", Some(n(1))),
            ("in_progress_until", Some(s("soon"))),
            ("expires", Some(AttributeValue::N("-1".into()))),
            ("parts", Some(n(2))),
        ];
        for (attribute, value) in cases {
            let mut broken = item(&[]);
            match value {
                Some(value) => broken.insert(attribute.to_owned(), value),
                None => broken.remove(attribute),
            };
            let expected = if attribute == "parts" {
                "result_hash"
            } else {
                attribute
            };
            match read_record("f#k", &broken) {
                Err(IdempotencyError::Damaged { attribute, .. }) => {
                    assert_eq!(attribute, expected);
                }
                other => panic!("{attribute}: {other:?}"),
            }
        }
    }
}
