//! A Lambda Function URL on this machine: an HTTP server that turns each request into the payload
//! format 2.0 event Lambda builds, invokes a function with it through the Runtime API, and answers with
//! the response the function returned, or 502 when the invocation failed, as Lambda does.
//!
//! This is how the emulator's webhook deliveries reach `dataverse-webhook` in tests and in `make run`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::Function;

/// How long one invocation may take: a webhook delivery is answered well within Dataverse's 60 s.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A function served at a URL until dropped.
pub struct FunctionUrl {
    url: String,
    function: Arc<Mutex<Function>>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FunctionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionUrl")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FunctionUrl {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FunctionUrl {
    /// Serves `function` on a free loopback port. Invocations are one at a time, as one Lambda
    /// execution environment takes them.
    pub async fn start(function: Function) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let function = Arc::new(Mutex::new(function));
        let serving = function.clone();
        let server = crate::serve(listener, move |req| invoke(serving.clone(), req));
        Ok(Self {
            url,
            function,
            server,
        })
    }

    /// The base URL, ending in `/`, like a Function URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The function, to read its logs.
    pub async fn function(&self) -> tokio::sync::MutexGuard<'_, Function> {
        self.function.lock().await
    }
}

async fn invoke(
    function: Arc<Mutex<Function>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let event = event(&parts, &body);
    let answer = function
        .lock()
        .await
        .invoke_within(&event, INVOKE_TIMEOUT)
        .await;
    let Ok(answer) = answer else {
        return Ok(respond(
            502,
            json!({"Message": "Internal Server Error"}).to_string(),
        ));
    };
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok());
    Ok(match status {
        Some(status) => respond(status, answer["body"].as_str().unwrap_or("").to_owned()),
        // A function that answers without a status: Lambda returns its answer as a 200 body.
        None => respond(200, answer.to_string()),
    })
}

fn respond(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}

/// The payload format 2.0 event for a request: lower-case header names, the query both raw and as
/// parameters, and a text body (base64 otherwise).
fn event(parts: &hyper::http::request::Parts, body: &[u8]) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers.insert(name.as_str().to_ascii_lowercase(), json!(value));
        }
    }
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let parameters: Map<String, Value> = url_pairs(&raw_query)
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "http": {"method": parts.method.as_str(), "path": parts.uri.path(), "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1", "userAgent": ""},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "timeEpoch": u64::try_from(now).unwrap_or(u64::MAX),
        },
        "body": body,
        "isBase64Encoded": encoded,
    });
    if !parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(parameters);
    }
    event
}

/// `a=1&b=%20x` as decoded pairs, as Lambda fills `queryStringParameters`.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query.split('&').filter(|p| !p.is_empty()).map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_parameters_as_lambda_does() {
        let pairs: Vec<_> = url_pairs("code=a%2Bb%3D&x=1+2&flag").collect();
        assert_eq!(
            pairs,
            [
                ("code".to_owned(), "a+b=".to_owned()),
                ("x".to_owned(), "1 2".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
    }
}
