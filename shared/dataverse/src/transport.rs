//! Small helpers shared by the token source and the client: error mapping, timeouts, decoding.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::retry::{Deadline, RetryPolicy, parse_retry_after};

/// A transport failure, noting whether the request provably never left (no connection was made).
pub(crate) fn error(method: &str, path: &str, source: reqwest::Error) -> Error {
    Error::Transport {
        method: method.to_owned(),
        path: path.to_owned(),
        unsent: source.is_connect(),
        source,
    }
}

/// How long the next attempt may take: the policy's limit, cut to what the deadline leaves. `None`
/// when no time is left at all.
pub(crate) fn attempt_timeout(policy: &RetryPolicy, deadline: Deadline) -> Option<Duration> {
    // A few milliseconds are not enough to send anything.
    deadline
        .cap(policy.request_timeout)
        .filter(|budget| *budget >= Duration::from_millis(10))
}

/// Decodes JSON, naming the path of the first thing that did not fit.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Error> {
    // Tracking the path costs a wrapper around every value, several percent of a large page's
    // decoding, and is only read when decoding fails: so a body is decoded plainly, and decoded again
    // with tracking only to say where it went wrong. The second pass fails where the first did.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| Error::Decode {
        path: path.to_owned(),
        json_path: e.path().to_string(),
        source: e.into_inner(),
    })
}

#[derive(Deserialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The status's canonical reason ("Too Many Requests"), for answers whose body says nothing usable.
pub(crate) fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

/// Reads Dataverse's `{"error": {"code", "message"}}` envelope; a body that is not one (a gateway's
/// HTML page, an empty 401) gives the status's reason instead, never the raw body.
///
/// A `$batch` that failed answers with the failing request's response inside a `multipart/mixed`
/// body: that response is the error, as [`Error::BatchPart`] naming the part.
pub(crate) fn api_error(status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let multipart = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::multipart::boundary);
    if let Some(boundary) = multipart
        && let Some(failed) = crate::multipart::responses(body, boundary)
            .iter()
            .find(|r| r.status >= 400)
    {
        return part_error(failed, retry_after);
    }
    let (code, message) = envelope(status, body);
    Error::Api {
        status,
        code,
        message,
        retry_after,
    }
}

/// The error a failed part of a `$batch` stands for.
pub(crate) fn part_error(
    failed: &crate::multipart::PartResponse,
    retry_after: Option<Duration>,
) -> Error {
    let (code, message) = envelope(failed.status, &failed.body);
    Error::BatchPart {
        content_id: failed.content_id,
        source: Box::new(Error::Api {
            status: failed.status,
            code,
            message,
            retry_after,
        }),
    }
}

/// The code and message of an error envelope; the status's reason when the body is not one.
fn envelope(status: u16, body: &[u8]) -> (Option<String>, String) {
    let (code, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => (Some(error.code).filter(|c| !c.is_empty()), error.message),
        Err(_) => (None, String::new()),
    };
    let message = if message.is_empty() {
        reason(status).to_owned()
    } else {
        message
    };
    (code, message)
}
