//! Client credentials against Microsoft Entra ID, with a token cache.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token` with scope `{url}/.default`. The token is kept until
//! shortly before it expires; a 401 from Dataverse invalidates it so the next request fetches a fresh one.

use std::time::Duration;

use reqwest::Url;
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
    use super::*;

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
