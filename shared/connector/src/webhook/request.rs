//! A Lambda Function URL request and response, payload format 2.0: the parts a delivery uses.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request as a Function URL passes it to the function. Header names arrive in lower case.
#[derive(Debug, Deserialize)]
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
    /// Reads an invocation's payload; the problem, if it is not a Function URL request.
    pub fn parse(payload: Value) -> Result<Self, String> {
        let method = Envelope::deserialize(&payload)
            .map_err(|_| "not a Function URL request (payload format 2.0)".to_owned())?
            .request_context
            .http
            .method;
        let mut request = Request::deserialize(payload)
            .map_err(|_| "not a Function URL request (payload format 2.0)".to_owned())?;
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
    pub fn body(&self) -> Result<Vec<u8>, String> {
        let text = self.body.as_deref().unwrap_or("");
        if self.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "the body is marked base64 but is not".to_owned())
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
