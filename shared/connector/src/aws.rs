//! The one place the AWS SDK configuration is loaded, and the HTTP client the SDK sends with.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use tokio::sync::OnceCell;

/// Region, credentials and endpoints from the environment, as every AWS SDK reads them; in tests
/// `AWS_ENDPOINT_URL` points the clients at moto.
///
/// Loaded once per process: a trigger's three clients (secrets, cursors, events) share it, and with
/// it one credentials cache and one HTTP client, instead of each reading the environment and the
/// profile files again.
pub async fn sdk_config() -> SdkConfig {
    static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();
    CONFIG.get_or_init(|| loader().load()).await.clone()
}

/// The SDK's defaults with our HTTP client, which the functions' builds depend on: their SDK crates
/// are built without a default client of their own (see `Cargo.toml`).
fn loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(SdkHttp::default())
}

/// The SDK's HTTP client: reqwest, on the TLS configuration the Dataverse clients use.
///
/// The SDK's default client builds its TLS connector as each service client is built, and reads
/// and parses every trust root on the system for it, even for a plain-HTTP endpoint (moto); the
/// Dataverse client then read them all again. Sharing one configuration, whose roots are read on
/// the first HTTPS handshake, makes that once per process, and never before a handshake.
#[derive(Debug, Default)]
struct SdkHttp {
    /// A connector per pair of connect and read timeouts the SDK asks for (a single one in
    /// practice), each a reqwest client with its own connection pool.
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

type Timeouts = (Option<Duration>, Option<Duration>);

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, connector)) = connectors.iter().find(|(t, _)| *t == timeouts) {
            return connector.clone();
        }
        let connector = match reqwest_client(timeouts) {
            Ok(http) => SharedHttpConnector::new(Connector { http }),
            // Every call then fails with the reason, as a connection that cannot be made would.
            Err(e) => SharedHttpConnector::new(Unavailable(Arc::new(e))),
        };
        connectors.push((timeouts, connector.clone()));
        connector
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new(
            "reqwest",
            Some(Cow::Borrowed("0.13")),
        ))
    }
}

/// Why the SDK's HTTP client could not be set up.
#[derive(Debug, thiserror::Error)]
enum SdkHttpError {
    #[error("cannot set up TLS for AWS calls")]
    Tls(#[source] dataverse::Error),
    #[error("cannot build the HTTP client for AWS calls")]
    Build(#[source] reqwest::Error),
}

/// A reqwest client as the SDK's own would be: no redirects followed (the SDK sees every answer),
/// no proxy (the SDK's default uses none unless configured), and the SDK's timeouts.
fn reqwest_client((connect, read): Timeouts) -> Result<reqwest::Client, SdkHttpError> {
    let mut builder = dataverse::http_client_builder()
        .map_err(SdkHttpError::Tls)?
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(connect) = connect {
        builder = builder.connect_timeout(connect);
    }
    if let Some(read) = read {
        builder = builder.read_timeout(read);
    }
    builder.build().map_err(SdkHttpError::Build)
}

#[derive(Debug)]
struct Connector {
    http: reqwest::Client,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(e.into()))
            .and_then(|request| {
                reqwest::Request::try_from(request.map(reqwest::Body::wrap))
                    .map_err(|e| ConnectorError::user(e.into()))
            });
        let request = match request {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(e)),
        };
        let http = self.http.clone();
        HttpConnectorFuture::new(async move {
            let response = http.execute(request).await.map_err(connector_error)?;
            let response = http::Response::<reqwest::Body>::from(response);
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK retries what it sees as timeouts and I/O errors: a connection refused, reset or closed
/// early, a name that did not resolve, a TLS handshake that failed. A request reqwest could not
/// build is the caller's error; anything else is passed on unclassified.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else if error.is_builder() {
        ConnectorError::user(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

/// The connector when the client could not be built: every call fails with why.
#[derive(Debug)]
struct Unavailable(Arc<SdkHttpError>);

impl HttpConnector for Unavailable {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        HttpConnectorFuture::ready(Err(ConnectorError::other(Box::new(self.0.clone()), None)))
    }
}

/// The longest one `DynamoDB` attempt may take, for the cursor and idempotency stores. `DynamoDB`
/// answers in milliseconds: an attempt this slow is a dead connection, better retried (by the SDK)
/// than waited on.
#[cfg(any(feature = "triggers", feature = "idempotency"))]
pub(crate) const DYNAMODB_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A `DynamoDB` client on `config` whose every attempt is cut off at [`DYNAMODB_ATTEMPT_TIMEOUT`], so
/// that one stuck connection cannot spend the whole invocation.
#[cfg(any(feature = "triggers", feature = "idempotency"))]
pub(crate) fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(DYNAMODB_ATTEMPT_TIMEOUT)
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use aws_smithy_types::byte_stream::ByteStream;

    use super::*;

    fn connector() -> Connector {
        Connector {
            http: reqwest_client((Some(Duration::from_secs(2)), Some(Duration::from_secs(2))))
                .unwrap(),
        }
    }

    fn request(url: &str, body: &str) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from(body));
        request.set_uri(url).unwrap();
        request.set_method("POST").unwrap();
        request
            .headers_mut()
            .insert("x-amz-target", "secretsmanager.GetSecretValue");
        request
    }

    #[tokio::test]
    async fn the_sdk_is_configured_with_this_http_client() {
        let config = loader()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        assert!(config.http_client().is_some());
    }

    #[tokio::test]
    async fn sends_the_request_as_built_and_hands_back_the_answer_as_it_came() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut buffer = [0; 4096];
            while !received.ends_with(b"{\"SecretId\":\"x\"}") {
                let n = stream.read(&mut buffer).unwrap();
                assert!(n > 0, "the request ended early");
                received.extend_from_slice(&buffer[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nx-amzn-requestid: r-1\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
            String::from_utf8(received).unwrap()
        });

        let response = connector()
            .call(request(&url, "{\"SecretId\":\"x\"}"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(response.headers().get("x-amzn-requestid"), Some("r-1"));
        let body = ByteStream::new(response.into_body())
            .collect()
            .await
            .unwrap();
        assert_eq!(body.into_bytes().as_ref(), b"{}");

        let received = server.join().unwrap().to_ascii_lowercase();
        assert!(received.starts_with("post / http/1.1\r\n"), "{received}");
        assert!(
            received.contains("x-amz-target: secretsmanager.getsecretvalue\r\n"),
            "{received}"
        );
        assert!(received.contains("content-length: 16\r\n"), "{received}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_which_the_sdk_retries() {
        // A port that was free a moment ago: nothing listens on it.
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = connector()
            .call(request(&format!("http://{address}/"), "{}"))
            .await
            .unwrap_err();
        assert!(error.is_io(), "{error:?}");
    }
}
