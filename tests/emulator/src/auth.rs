//! The Microsoft Entra ID client-credentials token endpoint, and bearer-token checks on the Web API.
//!
//! Answers are shaped as Entra ID shapes them: `{"token_type","expires_in","ext_expires_in",
//! "access_token"}` on success, `{"error","error_description","error_codes",...}` on failure, with the
//! AADSTS codes a real tenant returns for the same mistake.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use uuid::Uuid;

use crate::reply::{Fail, Reply};

#[derive(Debug)]
pub struct Auth {
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_secs: i64,
    /// Issued tokens: when each expires (emulator clock, seconds) and the client it was issued to.
    issued: HashMap<String, Issued>,
}

#[derive(Debug)]
struct Issued {
    expires: i64,
    /// The app registration's client id: the application user the token acts as, which
    /// service protection (`crate::protection`) counts requests against.
    client_id: String,
}

#[derive(Debug)]
pub enum Check {
    Valid,
    Missing,
    Unknown,
    Expired,
}

impl Auth {
    pub fn new(client_id: String, client_secret: String, token_ttl_secs: i64) -> Self {
        Self {
            client_id,
            client_secret,
            token_ttl_secs,
            issued: HashMap::new(),
        }
    }

    pub fn expire_all(&mut self) {
        for issued in self.issued.values_mut() {
            issued.expires = i64::MIN;
        }
    }

    pub fn check(&self, authorization: Option<&str>, now: i64) -> Check {
        let Some(token) = bearer(authorization) else {
            return Check::Missing;
        };
        match self.issued.get(token) {
            None => Check::Unknown,
            Some(issued) if issued.expires <= now => Check::Expired,
            Some(_) => Check::Valid,
        }
    }

    /// The client id a valid bearer token was issued to: the user the request acts as. `None`
    /// for a request the Web API will refuse with 401.
    pub fn holder(&self, authorization: Option<&str>, now: i64) -> Option<&str> {
        let issued = self.issued.get(bearer(authorization)?)?;
        (issued.expires > now).then_some(issued.client_id.as_str())
    }

    /// `POST /{tenant}/oauth2/v2.0/token`.
    pub fn token(
        &mut self,
        tenant: &str,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
        host: &str,
        now: i64,
    ) -> Reply {
        let aad = |status: u16, error: &str, code: u32, description: String| {
            Reply::json(
                status,
                &json!({
                    "error": error,
                    "error_description": format!("AADSTS{code}: {description} Trace ID: {} Correlation ID: {} Timestamp: {}",
                        Uuid::new_v4(), Uuid::new_v4(), crate::clock::format_utc(now)),
                    "error_codes": [code],
                    "timestamp": crate::clock::format_utc(now),
                    "trace_id": Uuid::new_v4().to_string(),
                    "correlation_id": Uuid::new_v4().to_string(),
                }),
            )
        };
        let missing = |name: &str| {
            aad(
                400,
                "invalid_request",
                900_144,
                format!("The request body must contain the following parameter: '{name}'."),
            )
        };
        let Some(grant) = form.get("grant_type") else {
            return missing("grant_type");
        };
        if grant != "client_credentials" {
            return aad(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant}'."),
            );
        }
        let (client_id, client_secret) = match basic {
            Some(pair) => pair,
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone()),
                (None, _) => return missing("client_id"),
                (Some(_), None) => {
                    return aad(
                        401,
                        "invalid_client",
                        7_000_218,
                        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
                    );
                }
            },
        };
        if client_id != self.client_id {
            return aad(
                400,
                "unauthorized_client",
                700_016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
                ),
            );
        }
        if client_secret != self.client_secret {
            return aad(
                401,
                "invalid_client",
                7_000_215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        let Some(scope) = form.get("scope") else {
            return missing("scope");
        };
        let Some(resource) = scope.strip_suffix("/.default") else {
            return aad(
                400,
                "invalid_scope",
                1_002_012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            );
        };
        if !same_org(resource, host) {
            return aad(
                400,
                "invalid_resource",
                500_011,
                format!(
                    "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
                ),
            );
        }
        let token = mint(&client_id, tenant);
        // Saturating: a lifetime from the command line that reaches past the end of time never expires.
        self.issued.insert(
            token.clone(),
            Issued {
                expires: now.saturating_add(self.token_ttl_secs),
                client_id,
            },
        );
        Reply::json(
            200,
            &json!({
                "token_type": "Bearer",
                "expires_in": self.token_ttl_secs,
                "ext_expires_in": self.token_ttl_secs,
                "access_token": token,
            }),
        )
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A token shaped like an Entra access token (three base64url parts), unique and unguessable.
fn mint(client_id: &str, tenant: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"none"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"appid": client_id, "tid": tenant, "jti": Uuid::new_v4()}).to_string());
    let signature = URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
    format!("{header}.{claims}.{signature}")
}

/// The scope's resource must name this organisation: the host the request reached, where
/// `localhost` and `127.0.0.1` are the same machine.
fn same_org(resource: &str, host: &str) -> bool {
    let authority = |s: &str| -> Option<(String, String)> {
        let rest = s.split_once("://").map_or(s, |(_, r)| r);
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return None;
        }
        let (h, p) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let h = match h {
            "localhost" | "[::1]" => "127.0.0.1",
            other => other,
        };
        Some((h.to_ascii_lowercase(), p.to_owned()))
    };
    matches!((authority(resource), authority(host)), (Some(a), Some(b)) if a == b)
}

/// The 401 the Web API answers, with the `WWW-Authenticate` header clients use to find the tenant.
pub fn unauthorized(check: &Check, base: &str) -> Fail {
    let (code, message) = match check {
        Check::Expired => (
            "0x8004A101",
            "The ticket specified for authentication is expired",
        ),
        Check::Unknown => (
            "",
            "InvalidAuthTicket: The access token is not valid for this organization.",
        ),
        Check::Missing | Check::Valid => (
            "",
            "MissingCrmAuthenticationToken: The request is not authenticated. Send a bearer token in the Authorization header.",
        ),
    };
    Fail::new(401, code, message).with_header(
        "www-authenticate",
        format!(
            "Bearer authorization_uri={base}/{}/oauth2/authorize, resource_id={base}/",
            crate::TENANT_ID
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::same_org;

    #[test]
    fn accepts_the_org_under_either_loopback_name() {
        assert!(same_org("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_org("http://localhost:8080/", "127.0.0.1:8080"));
        assert!(!same_org("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_org(
            "https://contoso.crm.dynamics.com",
            "127.0.0.1:8080"
        ));
        assert!(!same_org("http://127.0.0.1:8080/api", "127.0.0.1:8080"));
    }
}
