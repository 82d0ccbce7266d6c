//! The one error type every function returns, and the `Crm.*` error types it maps to.
//!
//! Step Functions workflows match on those names (`Retry` on `Crm.Throttled`, `Catch` on
//! `Crm.NotFound`), so [`CrmError::error_type`] is a public API: change it only with a major version.

use lambda_runtime::Diagnostic;

/// Configuration that cannot work: environment variables, or the credentials for a dataset.
///
/// `Clone`, because a function that starts with a bad configuration reports it on every invocation
/// (as `Crm.Configuration`, which callers can catch) rather than crashing at start-up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// Environment variables that are missing or malformed, all of them at once.
    #[error("invalid environment: {}", .0.join("; "))]
    Environment(Vec<String>),

    /// No credentials exist for the dataset.
    #[error("no credentials for dataset '{dataset}': {reason}")]
    NoCredentials { dataset: String, reason: String },

    /// The invocation has too little time left for a trigger's poll: its function timeout is set
    /// too low. Failing says so, where an empty answer would look healthy forever.
    #[error(
        "the invocation has {left_ms} ms left, and a poll needs at least {needed_ms} ms (to read changes, publish them and save its cursor): raise the function's timeout"
    )]
    TooLittleTime { left_ms: u128, needed_ms: u128 },

    /// A table cannot serve this function as it is set up in Dataverse.
    #[error("table '{table}': {problem}")]
    Table { table: String, problem: String },

    /// An `idempotency_key` was given, but nothing is configured to remember it: running unguarded
    /// would break the promise the caller asked for.
    #[error(
        "idempotency_key was given, but this function has no idempotency store: set CRM_IDEMPOTENCY to dynamodb:<table> or file:<directory>"
    )]
    NoIdempotencyStore,

    /// Credentials exist but cannot be used. `problem` never quotes the secret.
    #[error("the credentials for dataset '{dataset}' in {location} are not usable: {problem}")]
    BadCredentials {
        dataset: String,
        location: String,
        problem: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrmError {
    /// The payload is wrong. `field` names the input (`id`, `$top`, `item`).
    #[error("{field}: {problem}")]
    InvalidInput { field: String, problem: String },

    #[error(transparent)]
    Configuration(#[from] ConfigError),

    /// Reading credentials failed for a reason that may pass (network, throttling).
    #[error("could not read the credentials for dataset '{dataset}': {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&**source))]
    SecretsUnavailable {
        dataset: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },

    #[error(transparent)]
    Dataverse(dataverse::Error),

    /// The invocation's time ran out before its first write was sent (on a token, a table's
    /// definition, an input slow to open, or a timeout too short): nothing was written, so a
    /// retry, which gets a whole invocation, is safe.
    #[error(
        "{action}: not sent, nothing written: too little of the invocation was left to start it"
    )]
    NotStarted { action: String },

    /// Another invocation with the same idempotency key and payload is still running; `left_ms` is
    /// how long it may still hold the key.
    #[error(
        "idempotency_key '{key}': an invocation with this key and payload is still running (for up to {} s more); retry after it",
        .left_ms.div_ceil(1000)
    )]
    Conflict { key: String, left_ms: u64 },

    /// The idempotency store failed, or holds a record no run could have written.
    #[cfg(feature = "idempotency")]
    #[error(transparent)]
    Idempotency(#[from] crate::idempotency::IdempotencyError),

    #[cfg(feature = "triggers")]
    #[error(transparent)]
    Cursor(#[from] crate::cursor::CursorError),

    #[cfg(feature = "triggers")]
    #[error(transparent)]
    Events(#[from] crate::events::EventError),

    /// Dataverse sent something a trigger cannot work with.
    #[cfg(feature = "triggers")]
    #[error(transparent)]
    Scan(#[from] crate::trigger::ScanError),

    /// Reading an S3 object a caller named failed (`write-records`'s `input`).
    #[cfg(feature = "s3")]
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),

    /// Writing a result to S3 failed (`list-records`'s `output`).
    #[cfg(feature = "s3")]
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

pub(crate) use dataverse::EXCERPT_CHARS as EXCERPT_LIMIT;
use dataverse::excerpt;

/// The longest message an error carries, in bytes: longer ones (a serde message quoting a value, a
/// Dataverse message echoing a query) are cut, with their length noted.
pub const MAX_MESSAGE_BYTES: usize = 1000;

/// `message`, cut at a character boundary to at most `limit` bytes with a note of what was cut.
fn bounded(message: String, limit: usize) -> String {
    if message.len() <= limit {
        return message;
    }
    let note = format!("… ({} bytes in all)", message.len());
    let mut end = limit.saturating_sub(note.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &message[..end])
}

impl From<dataverse::Error> for CrmError {
    fn from(error: dataverse::Error) -> Self {
        match error {
            // The URL is built from the caller's options: shortening one is the caller's fix.
            dataverse::Error::UrlTooLong {
                length,
                limit,
                option,
            } => {
                let (field, share) = option.map_or(("payload", String::new()), |(name, len)| {
                    (name, format!(" ({len} of them are this option, encoded)"))
                });
                CrmError::invalid(
                    field,
                    format!(
                        "makes the request URL {length} characters long{share}, and Dataverse accepts at most {limit}; shorten it"
                    ),
                )
            }
            dataverse::Error::InvalidTable { problem } => CrmError::invalid("table", problem),
            dataverse::Error::FetchXml(e) => CrmError::invalid("fetchXml", e.to_string()),
            dataverse::Error::InvalidOperation(e) => CrmError::invalid(
                if e.parameter { "parameters" } else { "name" },
                e.to_string(),
            ),
            e @ dataverse::Error::UnknownNavigation { .. } => {
                CrmError::invalid("relationship", e.to_string())
            }
            // Only a key's own columns can match several rows: they are not one of its keys.
            e @ dataverse::Error::AmbiguousKey { .. } => CrmError::invalid("key", e.to_string()),
            other => CrmError::Dataverse(other),
        }
    }
}

impl CrmError {
    /// A `Crm.InvalidInput`. The field name is quoted at most [`EXCERPT_LIMIT`] characters long (an unknown
    /// field's name is the caller's text), and the problem is bounded like every message.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: excerpt(&field.into()),
            problem: bounded(problem.into(), MAX_MESSAGE_BYTES / 2),
        }
    }

    /// The message a caller sees and the log records: never longer than [`MAX_MESSAGE_BYTES`].
    pub fn message(&self) -> String {
        bounded(self.to_string(), MAX_MESSAGE_BYTES)
    }

    /// The `errorType` of the failed invocation.
    pub fn error_type(&self) -> &'static str {
        match self {
            CrmError::InvalidInput { .. } => "Crm.InvalidInput",
            CrmError::Configuration(_) => "Crm.Configuration",
            CrmError::SecretsUnavailable { .. } => "Crm.ServerError",
            CrmError::Dataverse(e) => dataverse_error_type(e),
            // Retried with backoff by the workflows, as a Dataverse too slow to answer is.
            CrmError::NotStarted { .. } => "Crm.ServerError",
            CrmError::Conflict { .. } => "Crm.Conflict",
            #[cfg(feature = "s3")]
            CrmError::Source(e) => e.error_type(),
            #[cfg(feature = "idempotency")]
            CrmError::Idempotency(e) => e.error_type(),
            #[cfg(feature = "triggers")]
            CrmError::Cursor(e) => e.error_type(),
            #[cfg(feature = "triggers")]
            CrmError::Events(e) => e.error_type(),
            #[cfg(feature = "triggers")]
            CrmError::Scan(_) => "Crm.ServerError",
            #[cfg(feature = "s3")]
            CrmError::Output(e) => e.error_type(),
        }
    }
}

/// Maps a client error by HTTP status first: Dataverse's codes are too unreliable to branch on.
fn dataverse_error_type(error: &dataverse::Error) -> &'static str {
    use dataverse::Error;
    // Whether an earlier attempt may have applied changes what a writer does next, not what failed.
    match error.reported() {
        Error::InvalidTable { .. } | Error::UrlTooLong { .. } => "Crm.InvalidInput",
        Error::Config(_) => "Crm.Configuration",
        Error::UnknownTable { .. } => "Crm.NotFound",
        e if e.is_unauthorized() => "Crm.Unauthorized",
        // The token endpoint refusing a well-formed request (an unknown tenant, a wrong scope) means
        // the dataset's URL or tenant is wrong.
        Error::Token { status, .. } if *status < 500 && *status != 429 => "Crm.Configuration",
        e => match e.status() {
            Some(403) => "Crm.Forbidden",
            Some(404) => "Crm.NotFound",
            Some(412) => "Crm.PreconditionFailed",
            Some(429) => "Crm.Throttled",
            Some(400..=499) => "Crm.BadRequest",
            // 5xx after retries, no answer at all, or an answer we could not read.
            _ => "Crm.ServerError",
        },
    }
}

impl From<CrmError> for Diagnostic {
    fn from(error: CrmError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_long_input_as_a_short_excerpt_with_its_length() {
        assert_eq!(excerpt("accounts"), "accounts");
        let long = "é".repeat(5_000_000);
        let quoted = excerpt(&long);
        assert!(quoted.starts_with(&"é".repeat(100)));
        assert!(quoted.ends_with("(5000000 characters in all)"), "{quoted}");
        let error = CrmError::invalid(long.clone(), long);
        let message = Diagnostic::from(error).error_message;
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    }

    fn api(status: u16) -> CrmError {
        CrmError::Dataverse(dataverse::Error::Api {
            status,
            code: Some("0x0".into()),
            message: "m".into(),
            retry_after: None,
        })
    }

    #[test]
    fn maps_dataverse_statuses_to_the_public_error_types() {
        let expected = [
            (400, "Crm.BadRequest"),
            (401, "Crm.Unauthorized"),
            (403, "Crm.Forbidden"),
            (404, "Crm.NotFound"),
            (405, "Crm.BadRequest"),
            (412, "Crm.PreconditionFailed"),
            (429, "Crm.Throttled"),
            (500, "Crm.ServerError"),
            (503, "Crm.ServerError"),
        ];
        for (status, error_type) in expected {
            assert_eq!(api(status).error_type(), error_type, "{status}");
        }
    }

    #[test]
    fn maps_token_and_client_failures() {
        let token = |status: u16, error: &str| {
            CrmError::Dataverse(dataverse::Error::Token {
                status,
                error: error.into(),
                description: String::new(),
            })
            .error_type()
        };
        assert_eq!(token(401, "invalid_client"), "Crm.Unauthorized");
        assert_eq!(token(400, "unauthorized_client"), "Crm.Unauthorized");
        assert_eq!(token(400, "invalid_resource"), "Crm.Configuration");
        assert_eq!(token(503, "temporarily_unavailable"), "Crm.ServerError");
        assert_eq!(token(429, "throttled"), "Crm.Throttled");
        let unknown = CrmError::Dataverse(dataverse::Error::UnknownTable { name: "x".into() });
        assert_eq!(unknown.error_type(), "Crm.NotFound");
        let conflict = CrmError::Conflict {
            key: "k".into(),
            left_ms: 1_001,
        };
        assert_eq!(conflict.error_type(), "Crm.Conflict");
        assert!(conflict.message().contains("2 s"), "{}", conflict.message());
        let no_store = CrmError::from(ConfigError::NoIdempotencyStore);
        assert_eq!(no_store.error_type(), "Crm.Configuration");
        assert!(no_store.message().contains("CRM_IDEMPOTENCY"));
        let config = CrmError::from(ConfigError::Environment(vec![
            "CRM_STATE is not set".into(),
        ]));
        let diagnostic = Diagnostic::from(config);
        assert_eq!(diagnostic.error_type, "Crm.Configuration");
        assert_eq!(
            diagnostic.error_message,
            "invalid environment: CRM_STATE is not set"
        );
    }
}
