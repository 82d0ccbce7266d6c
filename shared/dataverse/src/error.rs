use std::time::Duration;

/// Everything that can go wrong talking to Dataverse.
///
/// Callers branch on [`Error::status`] first: Dataverse's own `code` is frequently empty or `0x0`, and
/// the same condition has been seen with different codes, so it is kept for people, not for logic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Dataverse answered with an error status. `code` and `message` come from its
    /// `{"error": {"code", "message"}}` envelope.
    #[error("Dataverse answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },

    /// Microsoft Entra ID refused to issue a token (`invalid_client`, `unauthorized_client`, ...).
    #[error("the token endpoint answered {status} {error}: {description}")]
    Token {
        status: u16,
        error: String,
        description: String,
    },

    /// The request could not be sent, or its answer could not be read.
    #[error("{method} {path}: {}", describe(source))]
    Transport {
        method: String,
        path: String,
        /// Whether the request provably never reached the server (the connection was never made).
        unsent: bool,
        #[source]
        source: reqwest::Error,
    },

    /// The caller's deadline arrived before an answer did.
    #[error("{method} {path}: no answer before the deadline")]
    Deadline { method: String, path: String },

    /// A response did not have the expected shape. `json_path` says where.
    #[error("unexpected response from {path} at `{json_path}`: {source}")]
    Decode {
        path: String,
        json_path: String,
        #[source]
        source: serde_json::Error,
    },

    /// A link to follow that does not point at this environment (or is not a URL at all). Following
    /// it would send the bearer token elsewhere, so it is refused before anything is sent.
    #[error("link: '{link}' does not point at {origin}")]
    ForeignLink { link: String, origin: String },

    /// A request body could not be written as JSON.
    #[error("the request body could not be written as JSON: {0}")]
    Encode(#[source] serde_json::Error),

    /// A request inside a `$batch` failed, and with it the batch. `content_id` names the part.
    #[error("{}{source}", content_id.map(|id| format!("operation {id} of the changeset: ")).unwrap_or_default())]
    BatchPart {
        content_id: Option<u32>,
        source: Box<Error>,
    },

    /// A `FetchXML` query this client cannot page: refused before anything is sent.
    #[error("fetchXml {0}")]
    FetchXml(#[from] crate::client::FetchXmlError),

    /// A `$batch` answer that could not be read as one.
    #[error("the $batch answer: {0}")]
    BatchAnswer(String),

    /// An operation or parameter name that cannot go in a URL: refused before anything is sent.
    #[error(transparent)]
    InvalidOperation(#[from] crate::client::OperationNameError),

    /// A table has no navigation property of this name.
    #[error("{table} has no navigation property '{name}'; it has: {}", known.join(", "))]
    UnknownNavigation {
        table: String,
        name: String,
        known: Vec<String>,
    },

    /// A key looked up with `$filter` (its text cannot go in a URL) matches more than one row, so
    /// its columns are not one of the table's alternate keys.
    #[error(
        "the {key} of {table} matches more than one row: those columns are not one of its alternate keys"
    )]
    AmbiguousKey { table: String, key: String },

    /// A create answered 204 without saying where the new row is (`OData-EntityId`).
    #[error("a create answered 204 without an OData-EntityId header")]
    NoEntityId,

    /// The request's URL would be longer than Dataverse accepts, so it was not sent. `option` names
    /// the query option that makes up most of it, when one does.
    #[error("the request URL would be {length} characters, over Dataverse's limit of {limit}{}", option.map(|(name, len)| format!("; {name} makes up {len} of them once encoded")).unwrap_or_default())]
    UrlTooLong {
        length: usize,
        limit: usize,
        option: Option<(&'static str, usize)>,
    },

    /// A table name that cannot be one: refused before anything is sent.
    #[error("{problem}")]
    InvalidTable { problem: String },

    /// No table has this logical name or entity set name.
    #[error("no table has the logical name or entity set name '{}'", excerpt(name))]
    UnknownTable { name: String },

    /// A create succeeded, but reading the new row back failed. Kept apart from the read's own error
    /// so that nothing retries the create on its account (a 401 here must not create a second row).
    #[error("created row {id}, but could not read it back: {source}")]
    CreatedUnread {
        id: uuid::Uuid,
        #[source]
        source: Box<Error>,
    },

    /// The client cannot be built from this configuration (for example a plain-HTTP URL that is not
    /// loopback).
    #[error("{0}")]
    Config(String),

    /// A failed write that may have been carried out all the same: an earlier attempt of it went
    /// unanswered (sent, then no answer, a broken connection, or a gateway's 502 or 504) before the
    /// error inside ended the retries, or the write itself succeeded and a later step of the same
    /// call failed. It reads as the error inside (message, [`Error::status`], [`Error::code`]), so
    /// callers that map errors see no difference; [`Error::may_have_applied`] tells them apart.
    #[error(transparent)]
    MayHaveApplied(Box<Error>),
}

/// The most of a caller's text a message quotes. Inputs can be megabytes long, and a message that
/// echoes one in full costs as much again in every answer and log line that carries it.
pub const EXCERPT_CHARS: usize = 100;

/// `text`, or its first [`EXCERPT_CHARS`] characters and its length when it is longer.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!(
            "{}… ({} characters in all)",
            &text[..end],
            text.chars().count()
        ),
    }
}

/// A transport failure in a few words: what happened, and the root cause, without the URL (which
/// can be long, and is already named by the path).
fn describe(error: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = error;
    while let Some(next) = root.source() {
        root = next;
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the exchange failed"
    };
    format!("{what} ({root})")
}

impl Error {
    /// The HTTP status behind this error: Dataverse's, or the token endpoint's.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Token { status, .. } => Some(*status),
            Error::BatchPart { source, .. } | Error::MayHaveApplied(source) => source.status(),
            _ => None,
        }
    }

    /// Dataverse's error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            Error::BatchPart { source, .. } | Error::MayHaveApplied(source) => source.code(),
            _ => None,
        }
    }

    /// True when the credentials were refused: by the token endpoint, or by Dataverse even after a
    /// fresh token. A caller that can re-read rotated credentials should do so once.
    pub fn is_unauthorized(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status == 401,
            Error::Token { status, error, .. } => {
                *status == 401 || matches!(error.as_str(), "invalid_client" | "unauthorized_client")
            }
            Error::MayHaveApplied(source) => source.is_unauthorized(),
            _ => false,
        }
    }

    /// Whether the write that failed with this error may have been carried out all the same, so
    /// that repeating it, or reporting that nothing changed, could be wrong. False only where the
    /// request provably changed nothing: it was refused before it was sent, Dataverse answered it
    /// with an error (a write, and a changeset, is applied whole or not at all), and no earlier
    /// attempt of it went unanswered. A read never changes anything, and is never wrapped in
    /// [`Error::MayHaveApplied`]; a read's lost answer still says true here, as it cannot tell.
    pub fn may_have_applied(&self) -> bool {
        match self {
            // A gateway's 502 or 504 says the server behind it did not answer in time, not that it
            // did nothing.
            Error::Api { status, .. } => matches!(status, 502 | 504),
            Error::Transport { unsent, .. } => !unsent,
            // Sent, and the answer never came, or came and could not be read; or marked so.
            Error::Deadline { .. }
            | Error::Decode { .. }
            | Error::BatchAnswer(_)
            | Error::NoEntityId
            | Error::CreatedUnread { .. }
            | Error::MayHaveApplied(_) => true,
            // Refused before sending, or answered with an error; a batch that was answered had its
            // changeset rolled back with the failed part.
            Error::BatchPart { .. }
            | Error::Token { .. }
            | Error::ForeignLink { .. }
            | Error::Encode(_)
            | Error::FetchXml(_)
            | Error::InvalidOperation(_)
            | Error::UnknownNavigation { .. }
            | Error::AmbiguousKey { .. }
            | Error::UrlTooLong { .. }
            | Error::InvalidTable { .. }
            | Error::UnknownTable { .. }
            | Error::Config(_) => false,
        }
    }

    /// The error as Dataverse or the network reported it, without [`Error::MayHaveApplied`] around
    /// it.
    pub fn reported(&self) -> &Error {
        match self {
            Error::MayHaveApplied(source) => source.reported(),
            other => other,
        }
    }

    /// [`Error::reported`], owned.
    #[must_use]
    pub fn into_reported(self) -> Error {
        match self {
            Error::MayHaveApplied(source) => source.into_reported(),
            other => other,
        }
    }

    /// This error, noted as one that may hide a write that was carried out (see
    /// [`Error::MayHaveApplied`]). An error that already says so is left as it is, so that callers
    /// matching on it (a lost answer is [`Error::Transport`]) still see it.
    #[must_use]
    pub fn after_possible_write(self) -> Error {
        if self.may_have_applied() {
            self
        } else {
            Error::MayHaveApplied(Box::new(self))
        }
    }
}
