//! Results written to S3 instead of the response (`output: {"s3": {"bucket", "prefix"}}`).
//!
//! A Lambda response holds at most 6 MB and a Step Functions state 256 KB; a listing of every row
//! of a table holds neither. Rows go to one S3 object as JSON Lines, for a Distributed Map's
//! `ItemReader` to read. They are streamed: a part fills while the part before it uploads, so
//! memory holds two parts and the Dataverse page being read, whatever the size of the result.
//!
//! The object appears whole or not at all: a result smaller than one part is a single
//! `PutObject`, a larger one a multipart upload that S3 assembles only on
//! `CompleteMultipartUpload`. Any failure on the way aborts the upload, so no parts are left
//! behind to be billed (a bucket lifecycle rule that aborts incomplete uploads catches what an
//! abort with no time left could not). Only when the call that makes the object was sent and its
//! outcome never came back ([`OutputError::Unknown`]) may the object exist after an error.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use bytes::{Bytes, BytesMut};
use dataverse::Deadline;
use futures_util::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::input::SerdeProblem;
use crate::{CrmError, excerpt};

/// The S3 client the functions write with.
pub use aws_sdk_s3::Client as S3Client;

/// The S3 client, made from [`crate::aws::sdk_config`] when first asked for. Loading the SDK's
/// configuration looks for a region, and without `AWS_REGION` (a local run, not Lambda) asks the
/// instance metadata service and waits for it: a function that lists into its response never
/// needs S3, and should not pay for it at every cold start.
#[derive(Debug, Default)]
pub struct S3 {
    client: tokio::sync::OnceCell<S3Client>,
}

impl S3 {
    /// A client made from the SDK's configuration on first use.
    pub fn from_env() -> Self {
        Self::default()
    }

    pub async fn client(&self) -> &S3Client {
        self.client
            .get_or_init(async || S3Client::new(&crate::aws::sdk_config().await))
            .await
    }
}

/// The size of every part but the last: S3's minimum, so that memory stays as small as it can.
/// With S3's 10,000 parts that allows objects of nearly 49 GiB, more than one invocation can read.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// S3's limit on the parts of one upload.
const MAX_PARTS: i32 = 10_000;

/// Time kept back from the work (reading rows, uploading) to abort the upload when the work fails,
/// the deadline included.
pub const ABORT_RESERVE: Duration = Duration::from_secs(2);

/// The longest prefix: S3 keys hold 1,024 bytes, and the name after the prefix takes up to 64.
pub const MAX_PREFIX_BYTES: usize = 960;

/// The longest part of the request id kept in the object's name.
const MAX_NAME_ID: usize = 58;

/// Where the rows go: a bucket, and a prefix for the object's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

/// `output` as the caller writes it. `s3` is the one destination there is; naming it leaves room
/// for others without changing what a payload means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputInput {
    s3: S3Input,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Input {
    bucket: Bucket,
    #[serde(default)]
    prefix: Prefix,
}

#[derive(Debug)]
struct Bucket(String);

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match bucket_problem(&name) {
            None => Ok(Self(name)),
            Some(problem) => Err(serde::de::Error::custom(format!(
                "'{}' is not a bucket name: {problem}",
                excerpt(&name)
            ))),
        }
    }
}

#[derive(Debug, Default)]
struct Prefix(String);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let prefix = String::deserialize(deserializer)?;
        match prefix_problem(&prefix) {
            None => Ok(Self(prefix)),
            Some(problem) => Err(serde::de::Error::custom(problem)),
        }
    }
}

/// Why `name` cannot be a general purpose bucket's name, by S3's naming rules; `None` when it can.
///
/// The suffixes S3 reserves (`-s3alias`, `--ol-s3`, `--x-s3`...) are accepted: they keep bucket
/// names from looking like access point aliases, which are written to exactly as buckets are.
/// The prefixes S3 reserves are refused: no bucket or alias can have one.
pub fn bucket_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Some("it must be 3 to 63 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
    {
        return Some("use lowercase letters, digits, '.' and '-' only");
    }
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alphanumeric) || !bytes.last().is_some_and(alphanumeric) {
        return Some("it must begin and end with a letter or a digit");
    }
    if name.contains("..") {
        return Some("it must not hold two periods in a row");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("it must not be an IP address");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|reserved| name.starts_with(reserved))
    {
        return Some("S3 reserves its prefix");
    }
    None
}

/// Why `prefix` cannot start an object key; `None` when it can.
fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.len() > MAX_PREFIX_BYTES {
        return Some(format!(
            "is {} bytes long, and at most {MAX_PREFIX_BYTES} leave room for the object's name in S3's 1,024-byte keys",
            prefix.len()
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Some("holds a control character, which S3's XML listings cannot carry".to_owned());
    }
    // Keys with these segments are read back differently by tools that resolve them as paths.
    if prefix
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("holds a '.' or '..' path segment".to_owned());
    }
    None
}

/// Parses `output` (the value of the input of that name) into where the rows go. A problem is
/// `Crm.InvalidInput` naming its place in full: `output.s3.bucket`, `output.s3.prefx`.
pub fn parse(output: Value) -> Result<S3Location, CrmError> {
    if !output.is_object() {
        return Err(CrmError::invalid(
            "output",
            "must be an object such as {\"s3\": {\"bucket\": \"my-bucket\", \"prefix\": \"exports/\"}}",
        ));
    }
    let parsed: OutputInput = serde_path_to_error::deserialize(output).map_err(|e| {
        let path = e.path().to_string();
        let at = |name: &str| {
            if path == "." {
                format!("output.{name}")
            } else {
                format!("output.{path}.{name}")
            }
        };
        match SerdeProblem::of(e.inner()) {
            SerdeProblem::Missing(name) => CrmError::invalid(at(&name), "is required"),
            // The path of an unknown field ends with its name already.
            SerdeProblem::Unknown { name: _, expected } => CrmError::invalid(
                format!("output.{path}"),
                format!(
                    "is not an option of output (expected {})",
                    expected.replace('`', "")
                ),
            ),
            SerdeProblem::Other(message) => CrmError::invalid(
                if path == "." {
                    "output".to_owned()
                } else {
                    format!("output.{path}")
                },
                strip_position(&message),
            ),
        }
    })?;
    Ok(S3Location {
        bucket: parsed.s3.bucket.0,
        prefix: parsed.s3.prefix.0,
    })
}

/// serde's message without the position it appends.
fn strip_position(message: &str) -> String {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
        .to_owned()
}

impl S3Location {
    /// The object's key for the invocation with this request id: the prefix, then the id. Lambda
    /// gives a retry of the same request the same id, so a retried invocation writes the same key
    /// and leaves no second copy; any other invocation writes a key of its own.
    pub fn key(&self, request_id: &str) -> String {
        let id: String = request_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(MAX_NAME_ID)
            .collect();
        // Only a runtime that sends no request id gets here; its retries cannot be recognised.
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            id
        };
        format!("{}{id}.jsonl", self.prefix)
    }
}

/// Where the rows went, as the function answers: `{"bucket", "key"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object {
    pub bucket: String,
    pub key: String,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub object: Object,
    pub rows: u64,
    pub bytes: u64,
    /// 0 for a single `PutObject`, else the parts of the multipart upload.
    pub parts: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// S3 refused a call, or it failed after the SDK's retries, and the object was not written.
    #[error("S3 {action} for s3://{bucket}/{key} failed: {}", Reason { error: source, status: *status })]
    Call {
        action: &'static str,
        bucket: String,
        key: String,
        /// The HTTP status of S3's error answer, when it sent one.
        status: Option<u16>,
        #[source]
        source: Box<aws_sdk_s3::Error>,
    },
    /// A call had no answer (or no time left to start) before the invocation's deadline, and the
    /// object was not written.
    #[error(
        "S3 {action} for s3://{bucket}/{key} did not finish before the invocation's deadline; nothing was written"
    )]
    Deadline {
        action: &'static str,
        bucket: String,
        key: String,
    },
    /// `PutObject` or `CompleteMultipartUpload` was sent, and ended (the deadline, a lost answer, a
    /// failed retry) without saying whether S3 applied it: the object may exist.
    #[error(
        "S3 {action} for s3://{bucket}/{key} {}; S3 may still have applied it, so the outcome is unknown and the object may exist at that key (a retry of this request by Lambda writes the same key again)",
        Ended { source: source.as_deref(), status: *status }
    )]
    Unknown {
        action: &'static str,
        bucket: String,
        key: String,
        status: Option<u16>,
        /// The SDK's error; `None` when the deadline cut the call off.
        #[source]
        source: Option<Box<aws_sdk_s3::Error>>,
    },
    #[error(
        "the rows pass S3's limit of {MAX_PARTS} parts of {PART_SIZE} bytes for one object; narrow the query with $filter or $top"
    )]
    TooManyParts,
}

impl OutputError {
    pub fn error_type(&self) -> &'static str {
        match self {
            // The function may not write to the bucket, or it does not exist: retrying cannot
            // help. (A 404 for the upload itself, `NoSuchUpload`, is not the deployment's fault.)
            OutputError::Call {
                status: Some(403), ..
            } => "Crm.Configuration",
            OutputError::Call { source, .. }
                if matches!(source.code(), Some("NoSuchBucket" | "AccessDenied")) =>
            {
                "Crm.Configuration"
            }
            _ => "Crm.ServerError",
        }
    }

    /// S3's error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            OutputError::Call { source, .. } => source.code(),
            OutputError::Unknown { source, .. } => source.as_deref().and_then(|s| s.code()),
            _ => None,
        }
    }
}

/// Why an S3 call failed, in a few words: S3's code, status and message, or what went wrong on the
/// way and its root cause. Never the SDK's debug text, which holds the raw answer (S3's
/// `SignatureDoesNotMatch` body echoes the signed request, session token included), nor a URL.
struct Reason<'a> {
    error: &'a aws_sdk_s3::Error,
    status: Option<u16>,
}

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let refusal = Refusal {
            error: self.error,
            status: self.status,
        };
        write!(f, "{refusal}")?;
        if self.error.code().is_none() && self.status.is_none() {
            return Ok(());
        }
        match self.error.message() {
            Some(message) if !message.is_empty() => write!(f, ": {}", excerpt(message)),
            _ => Ok(()),
        }
    }
}

/// Why an S3 call failed, without S3's message: its code and status, or what went wrong on the way
/// and its root cause. For messages that must not carry any of S3's answer text.
pub(crate) struct Refusal<'a> {
    pub(crate) error: &'a aws_sdk_s3::Error,
    pub(crate) status: Option<u16>,
}

impl std::fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.error.code(), self.status) {
            (Some(code), Some(status)) => write!(f, "{code} (HTTP {status})"),
            (Some(code), None) => f.write_str(code),
            (None, Some(status)) => write!(f, "HTTP {status}"),
            // No answer from S3: the SDK says what kind of failure (its first source: "dispatch
            // failure", "response error"...), the root cause what happened.
            (None, None) => match std::error::Error::source(self.error) {
                Some(kind) => write!(f, "{}", Causes(kind)),
                None => f.write_str("no answer from S3"),
            },
        }
    }
}

/// An error by its own text and, when it has one, its root cause's: `dispatch failure (could not
/// connect)`. Each told as [`Root`] tells it.
pub(crate) struct Causes<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut root = self.0;
        while let Some(next) = root.source() {
            root = next;
        }
        if std::ptr::addr_eq(self.0, root) {
            write!(f, "{}", Root(self.0))
        } else {
            write!(f, "{} ({})", Root(self.0), Root(root))
        }
    }
}

/// A cause by its own text, except reqwest's, which names the URL.
pub(crate) struct Root<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Root<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.downcast_ref::<reqwest::Error>() {
            Some(e) if e.is_timeout() => f.write_str("timed out"),
            Some(e) if e.is_connect() => f.write_str("could not connect"),
            Some(_) => f.write_str("the exchange failed"),
            None => write!(f, "{}", excerpt(&self.0.to_string())),
        }
    }
}

/// How a call whose outcome is unknown ended.
struct Ended<'a> {
    source: Option<&'a aws_sdk_s3::Error>,
    status: Option<u16>,
}

impl std::fmt::Display for Ended<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Some(error) => write!(
                f,
                "failed: {}",
                Reason {
                    error,
                    status: self.status
                }
            ),
            None => f.write_str("had no answer before the invocation's deadline"),
        }
    }
}

/// Why writing the rows failed: reading them, or S3.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    #[error(transparent)]
    Rows(E),
    #[error(transparent)]
    Output(OutputError),
}

/// One object being written. Build it, read the rows within [`Upload::work_deadline`], and hand
/// them to [`Upload::write`].
#[derive(Debug)]
pub struct Upload<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// The invocation's deadline (less the margin to answer): the abort's.
    deadline: Deadline,
}

type PartFuture = Pin<Box<dyn Future<Output = Result<CompletedPart, OutputError>> + Send>>;

/// A multipart upload under way.
struct Multipart {
    id: String,
    done: Vec<CompletedPart>,
    /// The part uploading while the next one fills, at most one.
    in_flight: Option<PartFuture>,
}

impl Multipart {
    /// Records the part in flight as uploaded. Its buffer is freed rather than kept for the next
    /// part: a new buffer is resident only as far as it is filled, and peaks measured lower.
    fn landed(&mut self, part: CompletedPart) {
        self.in_flight = None;
        self.done.push(part);
    }
}

impl<'a> Upload<'a> {
    pub fn new(
        client: &'a aws_sdk_s3::Client,
        location: &S3Location,
        request_id: &str,
        deadline: Deadline,
    ) -> Self {
        Self {
            client,
            bucket: location.bucket.clone(),
            key: location.key(request_id),
            deadline,
        }
    }

    pub fn object(&self) -> Object {
        Object {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        }
    }

    /// The deadline for the work, reading the rows included: the invocation's, less the time
    /// kept to abort the upload if the work fails.
    pub fn work_deadline(&self) -> Deadline {
        self.deadline.less(ABORT_RESERVE)
    }

    /// Writes every row of `rows` to the object, one line each, and returns what was written.
    /// On any failure, of the rows or of S3, the multipart upload (if one was started) is aborted
    /// before this returns, so no parts are left; the object exists after a failure only when the
    /// error is [`OutputError::Unknown`], and then may.
    pub async fn write<S, E>(&self, rows: S) -> Result<Written, WriteError<E>>
    where
        S: Stream<Item = Result<Box<RawValue>, E>>,
    {
        let mut multipart = None;
        let result = self.stream(pin!(rows), &mut multipart).await;
        if result.is_err()
            && let Some(Multipart { id, in_flight, .. }) = multipart
        {
            // Stop the part in flight first: one that landed after the abort would stay, and be
            // billed, until another abort.
            drop(in_flight);
            self.abort(&id).await;
        }
        result
    }

    async fn stream<S, E>(
        &self,
        mut rows: Pin<&mut S>,
        multipart: &mut Option<Multipart>,
    ) -> Result<Written, WriteError<E>>
    where
        S: Stream<Item = Result<Box<RawValue>, E>>,
    {
        let mut buffer = BytesMut::with_capacity(PART_SIZE);
        let mut count = 0_u64;
        let mut bytes = 0_u64;
        loop {
            // While a part uploads, the next one fills: wait for whichever comes first, the
            // upload or the next row. A stream keeps its place when its `try_next` is dropped.
            let in_flight = multipart.as_mut().and_then(|m| m.in_flight.as_mut());
            let next = match in_flight {
                Some(part) => {
                    tokio::select! {
                        done = part => Err(done),
                        next = rows.try_next() => Ok(next),
                    }
                }
                None => Ok(rows.try_next().await),
            };
            let row = match next {
                Err(done) => {
                    let part = done.map_err(WriteError::Output)?;
                    if let Some(m) = multipart.as_mut() {
                        m.landed(part);
                    }
                    continue;
                }
                Ok(Err(e)) => return Err(WriteError::Rows(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(row))) => row,
            };
            count += 1;
            let line = line(&row);
            bytes += line.len() as u64 + 1;
            // The newline is one more byte to place; a row may span parts.
            self.fill(&mut buffer, multipart, &line)
                .await
                .map_err(WriteError::Output)?;
            self.fill(&mut buffer, multipart, b"\n")
                .await
                .map_err(WriteError::Output)?;
        }
        let parts = if multipart.is_none() {
            self.put(buffer.freeze())
                .await
                .map_err(WriteError::Output)?;
            0
        } else {
            if !buffer.is_empty() {
                self.send_part(multipart, buffer.freeze())
                    .await
                    .map_err(WriteError::Output)?;
            }
            self.complete(multipart).await.map_err(WriteError::Output)?
        };
        tracing::info!(bucket = %self.bucket, key = %self.key, rows = count, bytes, parts, "rows written to S3");
        Ok(Written {
            object: self.object(),
            rows: count,
            bytes,
            parts,
        })
    }

    /// Appends `data` to the part filling, and sends each part it fills.
    async fn fill(
        &self,
        buffer: &mut BytesMut,
        multipart: &mut Option<Multipart>,
        mut data: &[u8],
    ) -> Result<(), OutputError> {
        while !data.is_empty() {
            let take = (PART_SIZE - buffer.len()).min(data.len());
            buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buffer.len() == PART_SIZE {
                // A new buffer of exactly one part: growing one by doubling would reserve more.
                let full = std::mem::replace(buffer, BytesMut::with_capacity(PART_SIZE));
                self.send_part(multipart, full.freeze()).await?;
            }
        }
        Ok(())
    }

    /// Starts the upload of a full part, once the part before it (if any) has finished.
    async fn send_part(
        &self,
        multipart: &mut Option<Multipart>,
        body: Bytes,
    ) -> Result<(), OutputError> {
        let m = match multipart {
            Some(m) => m,
            None => multipart.insert(self.create().await?),
        };
        if let Some(previous) = m.in_flight.take() {
            let part = previous.await?;
            m.landed(part);
        }
        let number = i32::try_from(m.done.len() + 1).unwrap_or(i32::MAX);
        if number > MAX_PARTS {
            return Err(OutputError::TooManyParts);
        }
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&m.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body));
        let (bucket, key, deadline) = (self.bucket.clone(), self.key.clone(), self.work_deadline());
        m.in_flight = Some(Box::pin(async move {
            let done = bounded(
                "UploadPart",
                Effect::Upload,
                &bucket,
                &key,
                deadline,
                Box::pin(request.send()),
            )
            .await?;
            // The part's checksum goes back in `CompleteMultipartUpload`, as S3 asks of an
            // upload created with a checksum algorithm.
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag().map(str::to_owned))
                .set_checksum_crc32(done.checksum_crc32().map(str::to_owned))
                .build())
        }));
        Ok(())
    }

    async fn create(&self) -> Result<Multipart, OutputError> {
        let created = self
            .call(
                "CreateMultipartUpload",
                Effect::Upload,
                Box::pin(
                    self.client
                        .create_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .content_type(CONTENT_TYPE)
                        // Each part's CRC32 is checked by S3 as it lands, and the object keeps the
                        // checksum of checksums for readers to verify.
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .send(),
                ),
            )
            .await?;
        let id = created.upload_id().unwrap_or_default().to_owned();
        tracing::debug!(bucket = %self.bucket, key = %self.key, upload_id = %id, "multipart upload started");
        Ok(Multipart {
            id,
            done: Vec::new(),
            in_flight: None,
        })
    }

    async fn complete(&self, multipart: &mut Option<Multipart>) -> Result<u32, OutputError> {
        let Some(m) = multipart.as_mut() else {
            return Ok(0);
        };
        if let Some(last) = m.in_flight.take() {
            let part = last.await?;
            m.landed(part);
        }
        let parts = u32::try_from(m.done.len()).unwrap_or(u32::MAX);
        self.call(
            "CompleteMultipartUpload",
            Effect::Object,
            Box::pin(
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&m.id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(m.done.clone()))
                            .build(),
                    )
                    .send(),
            ),
        )
        .await?;
        Ok(parts)
    }

    async fn put(&self, body: Bytes) -> Result<(), OutputError> {
        self.call(
            "PutObject",
            Effect::Object,
            Box::pin(
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(CONTENT_TYPE)
                    .body(ByteStream::from(body))
                    .send(),
            ),
        )
        .await
        .map(drop)
    }

    /// Aborts the upload, within the invocation's deadline; a failure is only logged, with the
    /// upload's id for whoever cleans up (the bucket's lifecycle rule, at the latest).
    async fn abort(&self, upload_id: &str) {
        let result = bounded(
            "AbortMultipartUpload",
            Effect::Upload,
            &self.bucket,
            &self.key,
            self.deadline,
            Box::pin(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(upload_id)
                    .send(),
            ),
        )
        .await;
        match result {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, key = %self.key, upload_id, "multipart upload aborted");
            }
            // Completed by a `CompleteMultipartUpload` whose answer was lost, or aborted already:
            // no parts are left either way.
            Err(error) if error.code() == Some("NoSuchUpload") => {
                tracing::info!(bucket = %self.bucket, key = %self.key, upload_id, "the multipart upload was already completed or aborted");
            }
            Err(error) => {
                tracing::warn!(bucket = %self.bucket, key = %self.key, upload_id, error = %error, "the multipart upload could not be aborted; its parts stay until it is");
            }
        }
    }

    async fn call<T, E>(
        &self,
        action: &'static str,
        effect: Effect,
        send: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, OutputError>
    where
        aws_sdk_s3::Error: From<SdkError<E, HttpResponse>>,
    {
        bounded(
            action,
            effect,
            &self.bucket,
            &self.key,
            self.work_deadline(),
            send,
        )
        .await
    }
}

/// The object's content type: JSON Lines has no registered one, and this is the one tools know.
const CONTENT_TYPE: &str = "application/x-ndjson";

/// What a call does to the object, which says what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Nothing a reader can see: the upload's own calls, which the abort undoes.
    Upload,
    /// Writes the object (`PutObject`, `CompleteMultipartUpload`): once sent, S3 may have applied
    /// it even when no answer says so.
    Object,
}

/// `send`, bounded by `deadline`, its failure described. The S3 client's request futures are 20
/// to 40 KB, so callers box them where they are made, and the futures that wait on them stay small.
async fn bounded<T, E>(
    action: &'static str,
    effect: Effect,
    bucket: &str,
    key: &str,
    deadline: Deadline,
    send: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, OutputError>
where
    aws_sdk_s3::Error: From<SdkError<E, HttpResponse>>,
{
    // With no time left the call is never sent, and cannot have written anything.
    let has_time = deadline.remaining() != Some(Duration::ZERO);
    match deadline.run(send).await {
        Some(Ok(output)) => Ok(output),
        Some(Err(error)) => Err(failure(action, effect, bucket, key, error)),
        None if effect == Effect::Object && has_time => Err(OutputError::Unknown {
            action,
            bucket: bucket.to_owned(),
            key: excerpt(key),
            status: None,
            source: None,
        }),
        None => Err(OutputError::Deadline {
            action,
            bucket: bucket.to_owned(),
            key: excerpt(key),
        }),
    }
}

/// The SDK's error, as a call with this effect failed.
fn failure<E>(
    action: &'static str,
    effect: Effect,
    bucket: &str,
    key: &str,
    error: SdkError<E, HttpResponse>,
) -> OutputError
where
    aws_sdk_s3::Error: From<SdkError<E, HttpResponse>>,
{
    let status = answer_status(&error);
    let refused_before_sending = matches!(error, SdkError::ConstructionFailure(_));
    let source = Box::new(aws_sdk_s3::Error::from(error));
    let settled = refused_before_sending || says_not_applied(status, source.code());
    if effect == Effect::Object && !settled {
        return OutputError::Unknown {
            action,
            bucket: bucket.to_owned(),
            key: excerpt(key),
            status,
            source: Some(source),
        };
    }
    OutputError::Call {
        action,
        bucket: bucket.to_owned(),
        key: excerpt(key),
        status,
        source,
    }
}

/// The HTTP status of S3's error answer. Only for S3's own error answers: a 2xx answer the SDK
/// could not read says nothing.
pub(crate) fn answer_status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    match error {
        SdkError::ServiceError(context) => Some(context.raw().status().as_u16()),
        _ => None,
    }
}

/// Whether S3's answer says a write was not applied: a refusal (4xx) the SDK does not retry. After
/// a timeout, a lost answer or a 5xx the SDK sends the call again, and the answer to a later
/// attempt says nothing of an earlier one. Of the refusals, `NoSuchUpload` to
/// `CompleteMultipartUpload` is what a retry gets once an earlier attempt completed the upload,
/// and `RequestTimeout` (400) and 408 and 429 are retried.
fn says_not_applied(status: Option<u16>, code: Option<&str>) -> bool {
    status.is_some_and(|s| (400..500).contains(&s) && !matches!(s, 408 | 429))
        && !matches!(code, Some("NoSuchUpload" | "RequestTimeout"))
}

/// A row as one line: the text Dataverse sent, with any line break between its tokens (JSON
/// strings cannot hold a raw one) made a space, so that a row is always exactly one line.
fn line(row: &RawValue) -> std::borrow::Cow<'_, [u8]> {
    let text = row.get().as_bytes();
    if text.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        std::borrow::Cow::Owned(
            text.iter()
                .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use serde_json::json;

    use super::*;

    fn refusal(output: Value) -> (String, String) {
        match parse(output) {
            Err(CrmError::InvalidInput { field, problem }) => (field, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_a_bucket_and_a_prefix() {
        let location =
            parse(json!({"s3": {"bucket": "my-exports.2024", "prefix": "crm/accounts/"}})).unwrap();
        assert_eq!(location.bucket, "my-exports.2024");
        assert_eq!(
            location.key("8476a536-e9f4-11e8-9739-2dfe598c3fcd"),
            "crm/accounts/8476a536-e9f4-11e8-9739-2dfe598c3fcd.jsonl"
        );
        let bare = parse(json!({"s3": {"bucket": "abc"}})).unwrap();
        assert_eq!(bare.prefix, "");
    }

    #[test]
    fn names_the_field_in_full() {
        let cases = [
            (
                json!({"s3": {"prefix": "x/"}}),
                "output.s3.bucket",
                "is required",
            ),
            (json!({}), "output.s3", "is required"),
            (
                json!({"s3": {"bucket": "abc", "prefx": "x"}}),
                "output.s3.prefx",
                "not an option",
            ),
            (json!({"s4": {}}), "output.s4", "not an option"),
            (
                json!({"s3": {"bucket": "Upper"}}),
                "output.s3.bucket",
                "lowercase",
            ),
            (
                json!({"s3": {"bucket": 7}}),
                "output.s3.bucket",
                "invalid type",
            ),
            (json!({"s3": "abc"}), "output.s3", "invalid type"),
            (
                json!({"s3": {"bucket": "abc", "prefix": "a\nb"}}),
                "output.s3.prefix",
                "control",
            ),
            (json!("s3://abc"), "output", "must be an object"),
        ];
        for (output, field, part) in cases {
            let (got, problem) = refusal(output.clone());
            assert_eq!(got, field, "{output}: {problem}");
            assert!(problem.contains(part), "{output}: {problem}");
        }
    }

    #[test]
    fn keeps_to_the_bucket_naming_rules() {
        for good in [
            "abc",
            "a.b-c",
            "my-ap-abcdefghijklmnop-s3alias",
            &"a".repeat(63),
        ] {
            assert_eq!(bucket_problem(good), None, "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "my_bucket",
            "MyBucket",
            "-abc",
            "abc.",
            "a..b",
            "192.168.5.4",
            "xn--abc",
            "sthree-abc",
            "amzn-s3-demo-bucket",
            "abc/def",
        ] {
            assert!(bucket_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn bounds_the_prefix_so_the_key_fits() {
        let longest = "p".repeat(MAX_PREFIX_BYTES);
        assert_eq!(prefix_problem(&longest), None);
        let location = S3Location {
            bucket: "abc".into(),
            prefix: longest,
        };
        assert!(location.key(&"r".repeat(500)).len() <= 1024);
        assert!(prefix_problem(&"é".repeat(MAX_PREFIX_BYTES / 2 + 1)).is_some());
        assert!(prefix_problem("a/../b/").is_some());
        assert!(prefix_problem("./a").is_some());
        assert_eq!(prefix_problem("a.b/..c/"), None);
    }

    #[test]
    fn a_key_is_the_request_id_and_nothing_a_runtime_could_inject() {
        let location = S3Location {
            bucket: "abc".into(),
            prefix: "x/".into(),
        };
        assert_eq!(location.key("id-1"), "x/id-1.jsonl");
        assert_eq!(location.key("../a b"), "x/ab.jsonl");
        assert_ne!(
            location.key(""),
            location.key(""),
            "no id: a name of its own"
        );
    }

    #[test]
    fn a_row_is_one_line() {
        let row = RawValue::from_string("{\n  \"a\": \"x\\ny\"\r\n}".to_owned()).unwrap();
        let line = line(&row);
        assert_eq!(&*line, b"{   \"a\": \"x\\ny\"  }");
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["a"], "x\ny");
    }

    /// S3's error answer to `PutObject`, with this status, code and body.
    fn answer(status: u16, code: &str, body: &str) -> SdkError<PutObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message(format!("S3 says {code}"))
            .build();
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        SdkError::service_error(PutObjectError::generic(meta), raw)
    }

    fn put(effect: Effect, error: SdkError<PutObjectError, HttpResponse>) -> OutputError {
        failure("PutObject", effect, "b", "k.jsonl", error)
    }

    /// A connection that ended before its answer, as the SDK's HTTP client reports it.
    fn lost() -> ConnectorError {
        ConnectorError::io(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )))
    }

    #[test]
    fn a_refused_bucket_is_configuration_and_a_lost_answer_a_server_error() {
        let refused = |status, code| put(Effect::Object, answer(status, code, "")).error_type();
        assert_eq!(refused(403, "SignatureDoesNotMatch"), "Crm.Configuration");
        assert_eq!(refused(404, "NoSuchBucket"), "Crm.Configuration");
        assert_eq!(refused(503, "SlowDown"), "Crm.ServerError");
        assert_eq!(
            put(Effect::Upload, answer(404, "NoSuchUpload", "")).error_type(),
            "Crm.ServerError"
        );
        assert_eq!(
            put(Effect::Object, SdkError::dispatch_failure(lost())).error_type(),
            "Crm.ServerError"
        );
    }

    #[test]
    fn a_write_s3_may_have_applied_is_not_reported_as_nothing_written() {
        let unknown = |e: &OutputError| matches!(e, OutputError::Unknown { .. });
        // S3 refused it: nothing was written.
        let refused = put(Effect::Object, answer(403, "AccessDenied", ""));
        assert!(matches!(refused, OutputError::Call { .. }), "{refused}");
        assert!(!unknown(&put(
            Effect::Object,
            answer(400, "InvalidPart", "")
        )));
        // Sent, and no answer says whether it was applied.
        for error in [
            SdkError::dispatch_failure(lost()),
            SdkError::timeout_error("no answer"),
            answer(500, "InternalError", ""),
            answer(400, "RequestTimeout", ""),
        ] {
            let e = put(Effect::Object, error);
            assert!(unknown(&e), "{e}");
            let message = e.to_string();
            assert!(
                message.contains("outcome is unknown")
                    && message.contains("may exist at that key")
                    && message.contains("s3://b/k.jsonl")
                    && !message.contains("nothing was written"),
                "{message}"
            );
        }
        // The answer to a retried `CompleteMultipartUpload` whose first attempt completed it.
        let gone = SdkError::service_error(
            CompleteMultipartUploadError::generic(
                ErrorMetadata::builder().code("NoSuchUpload").build(),
            ),
            HttpResponse::new(StatusCode::try_from(404).unwrap(), SdkBody::empty()),
        );
        let e = failure("CompleteMultipartUpload", Effect::Object, "b", "k", gone);
        assert!(unknown(&e), "{e}");
        // A part's failure leaves no object: the upload is aborted.
        let part = put(Effect::Upload, SdkError::dispatch_failure(lost()));
        assert!(matches!(part, OutputError::Call { .. }), "{part}");
    }

    #[tokio::test]
    async fn a_write_the_deadline_cuts_off_may_have_happened_unless_it_never_started() {
        let never = || {
            Box::pin(std::future::pending::<
                Result<(), SdkError<PutObjectError, HttpResponse>>,
            >())
        };
        let soon = Deadline::after(Duration::from_millis(1));
        let cut = bounded("PutObject", Effect::Object, "b", "k", soon, never()).await;
        assert!(
            matches!(cut, Err(OutputError::Unknown { source: None, .. })),
            "{cut:?}"
        );
        let message = cut.unwrap_err().to_string();
        assert!(
            message.contains("deadline") && message.contains("may exist"),
            "{message}"
        );
        let part = bounded("UploadPart", Effect::Upload, "b", "k", soon, never()).await;
        assert!(
            matches!(part, Err(OutputError::Deadline { .. })),
            "{part:?}"
        );
        let passed = Deadline::after(Duration::ZERO);
        let unsent = bounded("PutObject", Effect::Object, "b", "k", passed, never()).await;
        assert!(
            matches!(unsent, Err(OutputError::Deadline { .. })),
            "{unsent:?}"
        );
    }

    #[tokio::test]
    async fn a_failure_names_s3s_answer_and_keeps_the_sdk_error_but_no_secret_or_url() {
        // S3's `SignatureDoesNotMatch` answer echoes the signed request, session token included.
        let body = "<Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>x-amz-security-token:SECRET-TOKEN</CanonicalRequest></Error>";
        let e = put(Effect::Object, answer(403, "SignatureDoesNotMatch", body));
        assert_eq!(
            e.to_string(),
            "S3 PutObject for s3://b/k.jsonl failed: SignatureDoesNotMatch (HTTP 403): S3 says SignatureDoesNotMatch"
        );
        let source = std::error::Error::source(&e).expect("the SDK's error is the source");
        assert_eq!(
            source
                .downcast_ref::<Box<aws_sdk_s3::Error>>()
                .and_then(|e| e.code()),
            Some("SignatureDoesNotMatch")
        );
        assert!(!format!("{e:?}").contains("SECRET-TOKEN"), "{e:?}");

        // A request that never reached S3, to a URL as a presigned one would be.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{port}/b/k?X-Amz-Signature=SECRET-SIGNATURE"
            ))
            .send()
            .await
            .unwrap_err();
        // reqwest's own text names the URL: a cause that is reqwest's is told by its kind.
        assert_eq!(Root(&refused).to_string(), "could not connect");
        let e = put(
            Effect::Upload,
            SdkError::dispatch_failure(ConnectorError::io(refused.into())),
        );
        let message = e.to_string();
        assert!(
            message.starts_with("S3 PutObject for s3://b/k.jsonl failed: dispatch failure ("),
            "{message}"
        );
        assert!(!message.contains("SECRET-SIGNATURE"), "{message}");
    }
}
