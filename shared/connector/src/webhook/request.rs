//! A Lambda Function URL request and response, payload format 2.0: the parts a delivery uses.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why an invocation is not a usable Function URL request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("not a Function URL request (payload format 2.0)")]
    NotFunctionUrl,
    #[error("the body is marked base64 but is not")]
    NotBase64,
}

/// A request as a Function URL passes it to the function. Header names arrive in lower case.
///
/// Its headers and query hold the webhook key, so its `Debug` shows their names only.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub raw_path: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    query_string_parameters: HashMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
    #[serde(skip)]
    pub method: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("raw_path", &self.raw_path)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "query",
                &self.query_string_parameters.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    request_context: RequestContext,
}

#[derive(Deserialize)]
struct RequestContext {
    http: Http,
}

#[derive(Deserialize)]
struct Http {
    method: String,
}

impl Request {
    /// Reads an invocation's payload.
    pub fn parse(payload: Value) -> Result<Self, RequestError> {
        let method = Envelope::deserialize(&payload)
            .map_err(|_| RequestError::NotFunctionUrl)?
            .request_context
            .http
            .method;
        let mut request =
            Request::deserialize(payload).map_err(|_| RequestError::NotFunctionUrl)?;
        request.method = method;
        Ok(request)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query_string_parameters.get(name).map(String::as_str)
    }

    /// The body's bytes, decoded when the Function URL sent them in base64.
    pub fn body(&self) -> Result<Vec<u8>, RequestError> {
        let text = self.body.as_deref().unwrap_or("");
        if self.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| RequestError::NotBase64)
        } else {
            Ok(text.as_bytes().to_vec())
        }
    }
}

/// A Function URL response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status_code: u16,
    pub headers: HashMap<&'static str, &'static str>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status_code: status,
            headers: HashMap::from([("content-type", "application/json")]),
            body: body.to_string(),
        }
    }
}
