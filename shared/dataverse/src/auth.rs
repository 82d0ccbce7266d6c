//! Client credentials against Microsoft Entra ID, with a token cache.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token` with scope `{url}/.default`. The token is kept until
//! shortly before it expires; a 401 from Dataverse invalidates it so the next request fetches a fresh one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Url;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::retry::{Deadline, Repeat, RetryPolicy};
use crate::{Error, transport};

/// The credentials of an app registration allowed into one Dataverse environment.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The environment, e.g. `https://contoso.crm.dynamics.com`.
    pub url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The identity provider; Microsoft Entra ID unless set (an emulator's URL in local runs).
    #[serde(default = "default_authority")]
    pub authority: String,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".to_owned()
}

impl Credentials {
    /// Whether `other` would authenticate exactly as these do: re-read credentials that are the same
    /// are not worth another attempt.
    pub fn same_as(&self, other: &Credentials) -> bool {
        self.url == other.url
            && self.tenant_id == other.tenant_id
            && self.client_id == other.client_id
            && self.authority == other.authority
            && self.client_secret.expose_secret() == other.client_secret.expose_secret()
    }
}

/// A `reqwest` client builder on the TLS configuration every Dataverse client uses, for other HTTP
/// clients in the same process (the AWS SDK's) to share it: the system's trust roots are then read
/// once per process, when the first HTTPS handshake starts, and never for plain HTTP. Servers are
/// verified against those roots exactly as reqwest's own TLS set-up verifies them.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, Error> {
    let tls = tls_config()
        .map_err(|e| Error::Config(format!("cannot set up TLS for the HTTP client: {e}")))?;
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("authority", &self.authority)
            .finish()
    }
}

/// Parses a URL that must be an origin (scheme, host, port) and insists on HTTPS unless the host is
/// this machine: a bearer token or a client secret must never cross a network in the clear.
pub(crate) fn secure_url(field: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value.trim_end_matches('/'))
        .map_err(|e| Error::Config(format!("{field} is not a URL: {e}")))?;
    // A user name or password would travel in the token scope and print in messages: name neither.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(format!(
            "{field} must not carry a user name or password"
        )));
    }
    // The Web API path and the tenant are added here; a pasted "Web API endpoint" would double them.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(format!(
            "{field} '{value}' must be only a scheme and host, like https://contoso.crm.dynamics.com"
        )));
    }
    let loopback = url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(Error::Config(format!(
            "{field} '{value}' must use https (plain http is allowed only for loopback addresses)"
        ))),
        other => Err(Error::Config(format!(
            "{field} '{value}' has the unsupported scheme '{other}'"
        ))),
    }
}

// TLS. reqwest, left to set up TLS itself, reads and parses every trust root on the system
// (`/etc/ssl/certs`: a bundle and ~145 files) in each `Client::build`, whether or not the client will
// ever speak HTTPS; the AWS SDK's client reads its own copy as its clients are built. Here one rustls
// configuration serves every client in the process, and its verifier reads the roots on first use.

/// The TLS configuration every client shares (its session cache too), built on first use.
static TLS: OnceLock<Result<rustls::ClientConfig, rustls::Error>> = OnceLock::new();

/// The system's trust roots, read once per process, when the first handshake needs them.
static ROOTS: OnceLock<Result<Arc<WebPkiServerVerifier>, Arc<TrustError>>> = OnceLock::new();

/// Why server certificates cannot be verified on this system.
#[derive(Debug, thiserror::Error)]
enum TrustError {
    #[error(
        "no trusted root certificates were found on this system (SSL_CERT_FILE or SSL_CERT_DIR can name them)"
    )]
    NoRoots {
        #[source]
        first_problem: Option<rustls_native_certs::Error>,
    },
    #[error("the system's trusted root certificates cannot be used")]
    Unusable(#[source] rustls::client::VerifierBuilderError),
}

/// The shared TLS configuration: TLS 1.2 and 1.3 with the process's crypto provider (aws-lc-rs
/// unless another was installed), servers verified against the system's roots.
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    TLS.get_or_init(|| {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            // "Dangerous" only in name: `SystemRoots` verifies exactly as rustls's own WebPKI
            // verifier does; it only defers reading the roots.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SystemRoots { provider }))
            .with_no_client_auth();
        // reqwest is built without HTTP/2 here, so HTTP/1.1 is all it may offer, as it offers when
        // it sets up TLS itself.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    })
    .clone()
}

/// Starts reading the trust roots on another thread, once, unless they have been read: for a
/// client about to make its first HTTPS request, so that the reading overlaps the name lookup, the
/// connection and the round trip to the server's certificate. The handshake waits for it if it is
/// not done; a thread that cannot be started only means the handshake reads the roots itself.
pub(crate) fn prefetch_roots() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if ROOTS.get().is_some() || STARTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let Some(Ok(config)) = TLS.get() else {
        return;
    };
    let provider = config.crypto_provider().clone();
    let _ = std::thread::Builder::new()
        .name("trust-roots".into())
        .spawn(move || {
            let _ = system_roots(&provider);
        });
}

/// The verifier over the system's roots, reading them the first time it is asked for.
fn system_roots(
    provider: &Arc<CryptoProvider>,
) -> Result<&'static WebPkiServerVerifier, rustls::Error> {
    match ROOTS.get_or_init(|| read_system_roots(provider).map_err(Arc::new)) {
        Ok(verifier) => Ok(verifier),
        Err(e) => Err(rustls::Error::Other(rustls::OtherError(e.clone()))),
    }
}

/// What `rustls-native-certs` finds (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle
/// and directory), as reqwest's platform verifier reads it on Linux: unparsable certificates are
/// skipped; none at all is an error.
fn read_system_roots(
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TrustError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(
        added,
        ignored,
        problems = found.errors.len(),
        "read the system's trusted root certificates"
    );
    if roots.is_empty() {
        return Err(TrustError::NoRoots {
            first_problem: found.errors.into_iter().next(),
        });
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TrustError::Unusable)
}

/// Verifies servers against the system's trust roots, which it reads on the first handshake.
///
/// Certificate chains go to rustls's `WebPkiServerVerifier` over those roots; handshake signatures are
/// checked with the provider's algorithms, as that verifier checks them, so neither needs the roots.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        system_roots(&self.provider)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    /// Asked as each `ClientHello` is written: the first moment a handshake is certain, for clients
    /// that did not say so earlier (the AWS SDK's), and a round trip before the certificate arrives.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        prefetch_roots();
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

#[derive(Debug)]
pub(crate) struct TokenSource {
    endpoint: Url,
    client_id: String,
    client_secret: SecretString,
    scope: String,
    cached: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenSource {
    pub(crate) fn new(credentials: &Credentials, resource: &Url) -> Result<Self, Error> {
        let authority = secure_url("authority", &credentials.authority)?;
        let tenant = &credentials.tenant_id;
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(Error::Config(format!(
                "tenant_id '{tenant}' is not a tenant id or domain"
            )));
        }
        // A parsed URL with an empty path prints a trailing slash; a second one would make the path
        // `//{tenant}/...`, which Entra ID does not serve.
        let authority = authority.as_str().trim_end_matches('/');
        let endpoint = Url::parse(&format!("{authority}/{tenant}/oauth2/v2.0/token"))
            .map_err(|e| Error::Config(format!("cannot build the token endpoint: {e}")))?;
        Ok(Self {
            endpoint,
            client_id: credentials.client_id.clone(),
            client_secret: credentials.client_secret.clone(),
            scope: format!("{}/.default", resource.as_str().trim_end_matches('/')),
            cached: Mutex::new(None),
        })
    }

    /// Whether tokens are fetched over HTTPS (not from a loopback emulator over plain HTTP).
    pub(crate) fn uses_https(&self) -> bool {
        self.endpoint.scheme() == "https"
    }

    /// A valid token, from the cache when it is not about to expire, and whether it was issued for
    /// this call (rather than taken from the cache).
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        deadline: Deadline,
    ) -> Result<(SecretString, bool), Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok((c.token.clone(), false));
        }
        let fresh = self.fetch(http, policy, deadline).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok((token, true))
    }

    /// Forgets `stale` (a token Dataverse refused), unless another request already replaced it.
    pub(crate) async fn invalidate(&self, stale: &SecretString) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == stale.expose_secret())
        {
            *cached = None;
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        deadline: Deadline,
    ) -> Result<Cached, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.request(http, policy, deadline).await;
            let error = match result {
                Ok(cached) => return Ok(cached),
                Err(e) => e,
            };
            match policy.delay(attempt, &error, Repeat::Safe, fastrand::f64()) {
                Some(wait) if deadline.allows_retry_after(wait) => {
                    tracing::warn!(
                        attempt,
                        status = error.status(),
                        delay_ms = wait.as_millis(),
                        "token request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(error),
            }
        }
    }

    async fn request(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        deadline: Deadline,
    ) -> Result<Cached, Error> {
        let path = self.endpoint.path().to_owned();
        let timeout =
            transport::attempt_timeout(policy, deadline).ok_or_else(|| Error::Deadline {
                method: "POST".into(),
                path: path.clone(),
            })?;
        let started = Instant::now();
        let response = http
            .post(self.endpoint.clone())
            .timeout(timeout)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport::error("POST", &path, e))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport::error("POST", &path, e))?;
        if status != 200 {
            let parsed: TokenError = serde_json::from_slice(&body).unwrap_or_default();
            return Err(Error::Token {
                status,
                // A gateway or a throttle may answer in its own shape: name the status then.
                error: if parsed.error.is_empty() {
                    transport::reason(status).to_owned()
                } else {
                    parsed.error
                },
                description: parsed.error_description,
            });
        }
        let parsed: TokenResponse = transport::decode(&path, &body)?;
        // Refresh ahead of expiry: a quarter of the lifetime early, at most five minutes.
        // Entra ID issues tokens for about an hour; a day bounds an absurd answer (and the Instant).
        let lifetime = Duration::from_secs(parsed.expires_in.min(86_400));
        let margin = (lifetime / 4).min(Duration::from_secs(300));
        tracing::debug!(expires_in = parsed.expires_in, "fetched a token");
        Ok(Cached {
            token: parsed.access_token,
            refresh_at: started + lifetime.saturating_sub(margin),
        })
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    /// A server certificate for `localhost` (valid 2026 to 2126) from a CA of its own, which no
    /// system trusts.
    const UNKNOWN_ISSUER: &str = "\
-----BEGIN CERTIFICATE-----
MIIBrDCCAVOgAwIBAgIUWfAF+os0nHloE6iC4jyIIV6qLycwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPdW5rbm93biB0ZXN0IENBMCAXDTI2MTEyOTIyNTk0MVoYDzIx
MjYxMTA1MjI1OTQxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAASlB9Flj7Cw5YbpfxuADHI4eEKUagaeukKqBwmOpARBzXRS
Ui7O/2bHVODDsQiCRDTHolGSqA7kMNfFDi9qPz0xo3sweTAUBgNVHREEDTALggls
b2NhbGhvc3QwDAYDVR0TAQH/BAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAdBgNV
HQ4EFgQUTpP+SvQuj32cWUQYe5TcfiCH3QUwHwYDVR0jBBgwFoAUaVmEimPD8P8D
+nR7oYz6/1hVgTAwCgYIKoZIzj0EAwIDRwAwRAIgakUCZh4PwYljMOZrSSFWKrNz
044SKHVWuj0Rb3B93G8CIHyq5MUW+bu1F+dfAfq1a6S/xj6vqumWtiA6t7WO+bwS
-----END CERTIFICATE-----
";

    #[test]
    fn reqwest_takes_the_shared_tls_configuration_as_its_own() {
        // reqwest recognises a rustls configuration only of the rustls version it was built with;
        // any other, and it refuses to build ("unknown TLS backend").
        http_client_builder().unwrap().build().unwrap();
        let config = tls_config().unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn refuses_a_certificate_no_system_root_vouches_for() {
        let provider = tls_config().unwrap().crypto_provider().clone();
        let verifier = SystemRoots { provider };
        let certificate = CertificateDer::from_pem_slice(UNKNOWN_ISSUER.as_bytes()).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        // 2030-01-01: inside the certificate's validity, so only its issuer is wrong.
        let now = UnixTime::since_unix_epoch(Duration::from_secs(1_893_456_000));
        let result = verifier.verify_server_cert(&certificate, &[], &name, &[], now);
        assert!(
            matches!(
                result,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{result:?}"
        );
        assert_eq!(
            verifier.supported_verify_schemes(),
            system_roots(&verifier.provider)
                .unwrap()
                .supported_verify_schemes()
        );
    }

    fn refusal(value: &str) -> String {
        match secure_url("url", value) {
            Err(Error::Config(message)) => message,
            other => panic!("{value} was accepted: {other:?}"),
        }
    }

    #[test]
    fn accepts_https_origins_and_loopback_http() {
        for value in [
            "https://contoso.crm.dynamics.com",
            "https://contoso.crm.dynamics.com/",
            "https://contoso.crm4.dynamics.com:443",
            "http://127.0.0.1:8181",
            "http://localhost:8181/",
            "http://[::1]:8181",
        ] {
            assert!(secure_url("url", value).is_ok(), "{value}");
        }
    }

    #[test]
    fn refuses_plain_http_paths_queries_and_credentials_without_echoing_them() {
        assert!(refusal("http://contoso.crm.dynamics.com").contains("https"));
        assert!(
            refusal("https://contoso.crm.dynamics.com/api/data/v9.2").contains("only a scheme")
        );
        assert!(refusal("https://contoso.crm.dynamics.com/?x=1").contains("only a scheme"));
        assert!(refusal("ftp://contoso.crm.dynamics.com").contains("scheme 'ftp'"));
        let message = refusal("https://admin:hunter2@contoso.crm.dynamics.com");
        assert!(message.contains("user name or password"));
        assert!(!message.contains("hunter2"));
        assert!(!refusal("not a url at all").contains("not a url at all"));
    }
}
