//! Where the rows are: `input`, parsed into an S3 object's location. Its lines are read by
//! [`connector::source::Lines`].

use connector::output::{S3Client, bucket_problem};
use connector::source::{Lines, SourceError};
use connector::{CrmError, excerpt};
use dataverse::Deadline;
use serde::Deserialize;
use serde_json::Value;

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
    // The rules `output` checks its bucket by: a name S3 could not have is the caller's mistake.
    if let Some(problem) = bucket_problem(&bucket) {
        return Err(CrmError::invalid(
            "input.s3.bucket",
            format!("'{}' is not a bucket name: {problem}", excerpt(&bucket)),
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

/// Opens the object for reading. An object that does not exist is `Crm.InvalidInput` on
/// `input.s3.key`, which named it; every other failure is the typed [`SourceError`].
pub(crate) async fn open(
    client: &S3Client,
    source: &S3Source,
    deadline: Deadline,
) -> Result<Lines, CrmError> {
    Lines::open(client, &source.bucket, &source.key, deadline)
        .await
        .map_err(|e| match e {
            SourceError::Missing { .. } => CrmError::invalid("input.s3.key", e.to_string()),
            e => e.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
