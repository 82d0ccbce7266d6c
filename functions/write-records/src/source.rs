//! Rows from an S3 object of JSON Lines, read as a stream: one `GetObject`, whose body is taken a
//! piece at a time, so memory holds the chunk being written and not the object.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use connector::output::S3Client;
use connector::{CrmError, excerpt};
use dataverse::Deadline;
use serde::Deserialize;
use serde_json::Value;

/// The longest line taken, in bytes: a Dataverse row with every column is a few tens of KB, and a
/// longer line would be held whole. A longer one fails as its own row, and is skipped unread.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// `input` as the caller writes it: `{"s3": {"bucket", "key", "start_line"}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceInput {
    s3: S3Input,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Input {
    bucket: String,
    key: String,
    #[serde(default)]
    start_line: Option<u64>,
}

/// Where the rows are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Source {
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// The first line to write (from 1); the lines before it are read past.
    pub(crate) start_line: u64,
}

/// Reads `input`. A problem is `Crm.InvalidInput` naming its place in full (`input.s3.key`).
pub(crate) fn parse(input: Value) -> Result<S3Source, CrmError> {
    let parsed: SourceInput = serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "input".to_owned()
        } else {
            format!("input.{path}")
        };
        let message = e.inner().to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at])
            .to_owned();
        CrmError::invalid(field, message)
    })?;
    let S3Input {
        bucket,
        key,
        start_line,
    } = parsed.s3;
    let plain = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
    if !(3..=63).contains(&bucket.len()) || !plain {
        return Err(CrmError::invalid(
            "input.s3.bucket",
            format!(
                "'{}' is not a bucket name: 3 to 63 lowercase letters, digits, '.' and '-'",
                excerpt(&bucket)
            ),
        ));
    }
    if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
        return Err(CrmError::invalid(
            "input.s3.key",
            "must be an object key: 1 to 1,024 bytes, no control characters",
        ));
    }
    if start_line == Some(0) {
        return Err(CrmError::invalid(
            "input.s3.start_line",
            "counts from 1 (the object's first line)",
        ));
    }
    Ok(S3Source {
        bucket,
        key,
        start_line: start_line.unwrap_or(1),
    })
}

/// One line of the object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Its text, without the line break.
    Text(Bytes),
    /// Longer than [`MAX_LINE`]: skipped, not held.
    TooLong,
}

/// The object's lines, read as they arrive.
pub(crate) struct Lines {
    body: Option<ByteStream>,
    buffer: BytesMut,
    /// Reading past a line too long to hold, to its end.
    skipping: bool,
    source: S3Source,
    deadline: Deadline,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Lines {
    /// Asks S3 for the object.
    pub(crate) async fn open(
        client: &S3Client,
        source: &S3Source,
        deadline: Deadline,
    ) -> Result<Self, CrmError> {
        let request = client
            .get_object()
            .bucket(&source.bucket)
            .key(&source.key)
            .send();
        let object = deadline
            .run(request)
            .await
            .ok_or_else(|| CrmError::Source {
                message: format!(
                    "S3 GetObject for s3://{}/{} had no answer before the invocation's deadline; nothing was written",
                    source.bucket,
                    excerpt(&source.key)
                ),
                configuration: false,
            })?
            .map_err(|e| refused(source, &e))?;
        Ok(Self {
            body: Some(object.body),
            buffer: BytesMut::new(),
            skipping: false,
            source: source.clone(),
            deadline,
        })
    }

    #[cfg(test)]
    fn of(pieces: &[&'static [u8]]) -> Self {
        let body: Vec<u8> = pieces.concat();
        Self {
            body: Some(ByteStream::from(body)),
            buffer: BytesMut::new(),
            skipping: false,
            source: S3Source {
                bucket: "b".into(),
                key: "k".into(),
                start_line: 1,
            },
            deadline: Deadline::none(),
        }
    }

    /// The next line, or `None` at the end of the object. An error says what failed reading it.
    pub(crate) async fn next(&mut self) -> Result<Option<Line>, String> {
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
                if self.buffer.len() > MAX_LINE {
                    self.buffer.clear();
                    return Ok(Some(Line::TooLong));
                }
                let rest = self.buffer.split().freeze();
                return Ok(Some(Line::Text(rest)));
            };
            match self.deadline.run(body.try_next()).await {
                None => {
                    return Err(format!(
                        "reading s3://{}/{} had no answer before the invocation's deadline",
                        self.source.bucket,
                        excerpt(&self.source.key)
                    ));
                }
                Some(Err(e)) => {
                    return Err(format!(
                        "reading s3://{}/{} failed: {}",
                        self.source.bucket,
                        excerpt(&self.source.key),
                        excerpt(&e.to_string())
                    ));
                }
                Some(Ok(None)) => self.body = None,
                Some(Ok(Some(piece))) => self.buffer.extend_from_slice(&piece),
            }
        }
    }
}

/// `GetObject` refused, or failed on the way.
fn refused<E>(
    source: &S3Source,
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> CrmError
where
    E: ProvideErrorMetadata,
{
    let status = match error {
        aws_sdk_s3::error::SdkError::ServiceError(context) => Some(context.raw().status().as_u16()),
        _ => None,
    };
    let code = error.code();
    if code == Some("NoSuchKey") {
        return CrmError::invalid(
            "input.s3.key",
            format!(
                "s3://{}/{} does not exist",
                source.bucket,
                excerpt(&source.key)
            ),
        );
    }
    let reason = match (code, status) {
        (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
        (Some(code), None) => code.to_owned(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "no answer from S3".to_owned(),
    };
    let message = error
        .message()
        .map(|m| format!(": {}", excerpt(m)))
        .unwrap_or_default();
    CrmError::Source {
        message: format!(
            "S3 GetObject for s3://{}/{} failed: {reason}{message}; nothing was written",
            source.bucket,
            excerpt(&source.key)
        ),
        configuration: status == Some(403) || matches!(code, Some("NoSuchBucket" | "AccessDenied")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn text(s: &str) -> String {
        s.to_owned()
    }

    #[tokio::test]
    async fn splits_lines_across_pieces_and_keeps_a_last_line_without_a_break() {
        let lines = Lines::of(&[b"{\"a\":1}\r\n{\"b\"", b":2}\n\n{\"c\":3}"]);
        assert_eq!(
            all(lines).await,
            vec![
                text("{\"a\":1}"),
                text("{\"b\":2}"),
                text(""),
                text("{\"c\":3}")
            ]
        );
    }

    #[tokio::test]
    async fn a_line_too_long_is_skipped_whole_and_the_next_one_read() {
        let long: &'static [u8] = Box::leak(vec![b'x'; MAX_LINE + 10].into_boxed_slice());
        let lines = Lines::of(&[long, b"\n{\"a\":1}\n", long]);
        assert_eq!(
            all(lines).await,
            vec![text("too long"), text("{\"a\":1}"), text("too long")]
        );
    }

    #[test]
    fn the_source_names_each_problem_in_full() {
        let field = |input: Value| match parse(input) {
            Err(CrmError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(serde_json::json!({"s3": {"bucket": "b"}})),
            "input.s3"
        );
        assert_eq!(
            field(serde_json::json!({"s3": {"bucket": "Bad_Bucket", "key": "k"}})),
            "input.s3.bucket"
        );
        assert_eq!(
            field(serde_json::json!({"s3": {"bucket": "bucket", "key": ""}})),
            "input.s3.key"
        );
        assert_eq!(
            field(serde_json::json!({"s3": {"bucket": "bucket", "key": "k", "start_line": 0}})),
            "input.s3.start_line"
        );
        assert_eq!(
            field(serde_json::json!({"s3": {"bucket": "bucket", "key": "k", "prefix": "x"}})),
            "input.s3.prefix"
        );
        let source =
            parse(serde_json::json!({"s3": {"bucket": "my-bucket", "key": "a/b.jsonl"}})).unwrap();
        assert_eq!(source.start_line, 1);
    }
}
