//! Lines read from an S3 object of JSON Lines (`write-records`'s `input`), the reverse of
//! [`crate::output`]: one `GetObject`, whose body is taken a piece at a time, so that memory holds
//! the line being read and not the object.
//!
//! [`Lines::open`] asks for the object; [`Lines::next`] hands out its lines in order. A failure
//! says which object, and either that nothing was read (the call itself) or from which line to
//! resume (the body broke off). No message quotes S3's answer: the SDK's error is kept as the
//! source for whoever needs more.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::{Bytes, BytesMut};
use dataverse::Deadline;

use crate::excerpt;
use crate::output::{Causes, Refusal, S3Client, answer_status};

/// The longest line taken, in bytes: a Dataverse row with every column is a few tens of KB, and a
/// longer line would have to be held whole. A longer one is [`Line::TooLong`], and is read past
/// without being kept.
pub const MAX_LINE: usize = 1024 * 1024;

/// One line of the object.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Its text, without the line break (`\n` or `\r\n`).
    Text(Bytes),
    /// Longer than [`MAX_LINE`]: skipped, not held.
    TooLong,
}

/// Reading the object failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// S3 refused the call, or it failed after the SDK's retries.
    #[error(
        "S3 {action} for s3://{bucket}/{key} failed: {}; nothing was written",
        Refusal { error: source, status: *status }
    )]
    Call {
        action: &'static str,
        bucket: String,
        key: String,
        /// The HTTP status of S3's error answer, when it sent one.
        status: Option<u16>,
        #[source]
        source: Box<aws_sdk_s3::Error>,
    },
    /// There is no object at the key (`NoSuchKey`): the caller named it, so a caller reports this
    /// as `Crm.InvalidInput` on the input that holds the key.
    #[error("s3://{bucket}/{key} does not exist; nothing was written")]
    Missing {
        bucket: String,
        key: String,
        #[source]
        source: Box<aws_sdk_s3::Error>,
    },
    /// The call had no answer before the invocation's deadline.
    #[error(
        "S3 {action} for s3://{bucket}/{key} had no answer before the invocation's deadline; nothing was written"
    )]
    Deadline {
        action: &'static str,
        bucket: String,
        key: String,
    },
    /// The object's body broke off while `line` was being read: the lines before it were read.
    #[error(
        "reading s3://{bucket}/{key} broke off at line {line}: {}; the lines before it were read, so resume from line {line}",
        Causes(source)
    )]
    Body {
        bucket: String,
        key: String,
        line: u64,
        #[source]
        source: ByteStreamError,
    },
    /// The invocation's deadline came while `line` was being read: the lines before it were read.
    #[error(
        "reading s3://{bucket}/{key} stopped at line {line}, at the invocation's deadline; the lines before it were read, so resume from line {line}"
    )]
    BodyDeadline {
        bucket: String,
        key: String,
        line: u64,
    },
}

impl SourceError {
    pub fn error_type(&self) -> &'static str {
        match self {
            // The function may not read the bucket, or it does not exist: retrying cannot help.
            SourceError::Call {
                status: Some(403), ..
            } => "Crm.Configuration",
            SourceError::Call { source, .. }
                if matches!(source.code(), Some("NoSuchBucket" | "AccessDenied")) =>
            {
                "Crm.Configuration"
            }
            SourceError::Missing { .. } => "Crm.InvalidInput",
            _ => "Crm.ServerError",
        }
    }
}

/// The object's lines, read as they arrive.
pub struct Lines {
    /// `None` once the body has ended.
    body: Option<ByteStream>,
    buffer: BytesMut,
    /// Reading past a line too long to hold, to its end.
    skipping: bool,
    /// The lines handed out so far.
    read: u64,
    bucket: String,
    key: String,
    deadline: Deadline,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl Lines {
    /// Asks S3 for the object at `key` in `bucket` (`GetObject`), within `deadline`, which bounds
    /// every later read of its body too.
    pub async fn open(
        client: &S3Client,
        bucket: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<Self, SourceError> {
        let request = client.get_object().bucket(bucket).key(key).send();
        let object = match deadline.run(request).await {
            Some(Ok(object)) => object,
            Some(Err(error)) => return Err(refused(bucket, key, error)),
            None => {
                return Err(SourceError::Deadline {
                    action: "GetObject",
                    bucket: bucket.to_owned(),
                    key: excerpt(key),
                });
            }
        };
        Ok(Self::of_body(object.body, bucket, key, deadline))
    }

    fn of_body(body: ByteStream, bucket: &str, key: &str, deadline: Deadline) -> Self {
        Self {
            body: Some(body),
            buffer: BytesMut::new(),
            skipping: false,
            read: 0,
            bucket: bucket.to_owned(),
            key: excerpt(key),
            deadline,
        }
    }

    /// The next line, or `None` at the end of the object. A last line without a line break is a
    /// line; an object that ends with a line break has no empty line after it.
    pub async fn next(&mut self) -> Result<Option<Line>, SourceError> {
        let line = self.take().await?;
        if line.is_some() {
            self.read += 1;
        }
        Ok(line)
    }

    async fn take(&mut self) -> Result<Option<Line>, SourceError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line = self.buffer.split_to(end + 1);
                if self.skipping || end > MAX_LINE {
                    self.skipping = false;
                    return Ok(Some(Line::TooLong));
                }
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                return Ok(Some(Line::Text(line.freeze())));
            }
            if self.buffer.len() > MAX_LINE {
                // Nothing of it is needed: drop what came, and read on to its end.
                self.buffer.clear();
                self.skipping = true;
            }
            let Some(body) = self.body.as_mut() else {
                if self.skipping {
                    self.skipping = false;
                    return Ok(Some(Line::TooLong));
                }
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let rest = self.buffer.split().freeze();
                return Ok(Some(Line::Text(rest)));
            };
            match self.deadline.run(body.try_next()).await {
                None => {
                    return Err(SourceError::BodyDeadline {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        line: self.read + 1,
                    });
                }
                Some(Err(source)) => {
                    return Err(SourceError::Body {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        line: self.read + 1,
                        source,
                    });
                }
                Some(Ok(None)) => self.body = None,
                Some(Ok(Some(piece))) => self.buffer.extend_from_slice(&piece),
            }
        }
    }
}

/// `GetObject`'s failure, described.
fn refused(bucket: &str, key: &str, error: SdkError<GetObjectError, HttpResponse>) -> SourceError {
    let status = answer_status(&error);
    let source = Box::new(aws_sdk_s3::Error::from(error));
    if source.code() == Some("NoSuchKey") {
        return SourceError::Missing {
            bucket: bucket.to_owned(),
            key: excerpt(key),
            source,
        };
    }
    SourceError::Call {
        action: "GetObject",
        bucket: bucket.to_owned(),
        key: excerpt(key),
        status,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_s3::error::ErrorMetadata;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::CrmError;

    fn reader(pieces: &[&[u8]]) -> Lines {
        let body: Vec<u8> = pieces.concat();
        Lines::of_body(ByteStream::from(body), "b", "k", Deadline::none())
    }

    /// Each line, or `too long` (a failure must not print a megabyte).
    async fn all(mut lines: Lines) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            out.push(match line {
                Line::Text(text) if text.len() < 100 => String::from_utf8(text.to_vec()).unwrap(),
                Line::Text(text) => format!("{} bytes", text.len()),
                Line::TooLong => "too long".into(),
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_across_pieces_and_keeps_a_last_line_without_a_break() {
        let lines = reader(&[b"{\"a\":1}\r\n{\"b\"", b":2}\n\n{\"c\":3}"]);
        assert_eq!(
            all(lines).await,
            ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"]
        );
    }

    #[tokio::test]
    async fn a_line_too_long_is_skipped_whole_and_the_next_one_read() {
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = reader(&[&long, b"\n{\"a\":1}\n", &long]);
        assert_eq!(all(lines).await, ["too long", "{\"a\":1}", "too long"]);
        let longest = vec![b'x'; MAX_LINE];
        let lines = reader(&[&longest, b"\n"]);
        assert_eq!(all(lines).await, [format!("{MAX_LINE} bytes")]);
    }

    /// A body that sends `first`, then breaks off as a reset connection does.
    fn breaking(first: &'static [u8]) -> ByteStream {
        let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(first)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )),
        ];
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        ByteStream::new(SdkBody::from_body_1_x(body))
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_says_from_which_line_to_resume_and_keeps_its_source() {
        let mut lines = Lines::of_body(breaking(b"1\n2\n3"), "b", "k", Deadline::none());
        assert_eq!(
            lines.next().await.unwrap(),
            Some(Line::Text(Bytes::from_static(b"1")))
        );
        assert!(lines.next().await.unwrap().is_some());
        let error = lines.next().await.unwrap_err();
        assert!(
            matches!(error, SourceError::Body { line: 3, .. }),
            "{error:?}"
        );
        let source = std::error::Error::source(&error).expect("the stream's error is the source");
        assert!(source.is::<ByteStreamError>(), "{source:?}");
        let error = CrmError::from(error);
        assert_eq!(error.error_type(), "Crm.ServerError");
        assert_eq!(
            error.message(),
            "reading s3://b/k broke off at line 3: streaming error (connection reset by peer); the lines before it were read, so resume from line 3"
        );
    }

    #[tokio::test]
    async fn the_deadline_stops_a_read_at_its_line() {
        let body = ByteStream::new(SdkBody::from_body_1_x(reqwest::Body::wrap_stream(
            futures_util::stream::pending::<Result<Bytes, std::io::Error>>(),
        )));
        let soon = Deadline::after(Duration::from_millis(1));
        let error = Lines::of_body(body, "b", "k", soon)
            .next()
            .await
            .unwrap_err();
        assert!(
            matches!(error, SourceError::BodyDeadline { line: 1, .. }),
            "{error:?}"
        );
        assert_eq!(error.error_type(), "Crm.ServerError");
    }

    /// S3's error answer to `GetObject`, with this status and code, its message and body holding a
    /// made-up secret.
    fn answer(status: u16, code: &str) -> SdkError<GetObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("S3 says x-amz-security-token:SECRET-TOKEN")
            .build();
        let body =
            "<Error><Code>x</Code><Message>x-amz-security-token:SECRET-TOKEN</Message></Error>";
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        SdkError::service_error(GetObjectError::generic(meta), raw)
    }

    #[test]
    fn a_refusal_says_code_and_status_only_and_keeps_the_sdk_error() {
        let error = refused("b", "k.jsonl", answer(403, "SignatureDoesNotMatch"));
        let source = std::error::Error::source(&error).expect("the SDK's error is the source");
        assert_eq!(
            source
                .downcast_ref::<Box<aws_sdk_s3::Error>>()
                .and_then(|e| e.code()),
            Some("SignatureDoesNotMatch")
        );
        let error = CrmError::from(error);
        assert_eq!(
            error.message(),
            "S3 GetObject for s3://b/k.jsonl failed: SignatureDoesNotMatch (HTTP 403); nothing was written"
        );
        let lost = ConnectorError::io(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let error = CrmError::from(refused("b", "k", SdkError::dispatch_failure(lost)));
        assert_eq!(
            error.message(),
            "S3 GetObject for s3://b/k failed: dispatch failure (connection reset by peer); nothing was written"
        );
    }

    #[test]
    fn a_refused_bucket_is_configuration_and_a_missing_key_the_callers_input() {
        let kind = |status, code| CrmError::from(refused("b", "k", answer(status, code)));
        assert_eq!(
            kind(403, "SignatureDoesNotMatch").error_type(),
            "Crm.Configuration"
        );
        assert_eq!(kind(403, "AccessDenied").error_type(), "Crm.Configuration");
        assert_eq!(kind(404, "NoSuchBucket").error_type(), "Crm.Configuration");
        assert_eq!(kind(503, "SlowDown").error_type(), "Crm.ServerError");
        assert_eq!(kind(500, "InternalError").error_type(), "Crm.ServerError");
        let missing = kind(404, "NoSuchKey");
        assert_eq!(missing.error_type(), "Crm.InvalidInput");
        assert_eq!(
            missing.message(),
            "s3://b/k does not exist; nothing was written"
        );
        let timeout = CrmError::from(refused("b", "k", SdkError::timeout_error("slow")));
        assert_eq!(timeout.error_type(), "Crm.ServerError");
        for error in [kind(403, "AccessDenied"), kind(404, "NoSuchKey")] {
            assert!(!error.message().contains("SECRET"), "{}", error.message());
            assert!(!format!("{error:?}").contains("<Error>"), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_call_with_no_answer_by_the_deadline_wrote_nothing() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let client = S3Client::from_conf(config);
        let error = Lines::open(&client, "b", "k", Deadline::after(Duration::ZERO))
            .await
            .unwrap_err();
        assert!(matches!(error, SourceError::Deadline { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "S3 GetObject for s3://b/k had no answer before the invocation's deadline; nothing was written"
        );
    }
}
