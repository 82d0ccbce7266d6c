//! The token endpoint answers as Entra ID does, and the Web API demands a valid, unexpired bearer
//! token.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

#[tokio::test]
async fn issues_client_credentials_tokens_shaped_like_entra_ids() {
    let emulator = Emulator::empty().await;
    let scope = format!("{}/.default", emulator.url);
    let response = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
}

/// A token request form, the status and `error` expected, and the AADSTS code.
type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str, u64);

#[tokio::test]
async fn refuses_bad_credentials_grants_and_scopes_with_aadsts_codes() {
    let emulator = Emulator::empty().await;
    let scope = format!("{}/.default", emulator.url);
    let cases: [Case<'_>; 5] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "local-client"),
                ("client_secret", "wrong"),
                ("scope", &scope),
            ],
            401,
            "invalid_client",
            7_000_215,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone"),
                ("client_secret", "local-secret"),
                ("scope", &scope),
            ],
            400,
            "unauthorized_client",
            700_016,
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "local-client"),
                ("client_secret", "local-secret"),
                ("scope", &scope),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "local-client"),
                ("client_secret", "local-secret"),
                (
                    "scope",
                    "https://contoso.crm.dynamics.com/user_impersonation",
                ),
            ],
            400,
            "invalid_scope",
            1_002_012,
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "local-client"),
                ("client_secret", "local-secret"),
                ("scope", "https://contoso.crm.dynamics.com/.default"),
            ],
            400,
            "invalid_resource",
            500_011,
        ),
    ];
    for (form, status, error, code) in cases {
        let response = emulator.token_response(form).await;
        assert_eq!(response.status(), status, "{error}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"], json!([code]));
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}:"))
        );
    }
}

#[tokio::test]
async fn accepts_client_credentials_in_a_basic_authorization_header() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .http
        .post(format!("{}/t/oauth2/v2.0/token", emulator.url))
        .basic_auth("local-client", Some("local-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", &format!("{}/.default", emulator.url)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn assert_challenged(response: reqwest::Response, emulator: &Emulator, code: &str) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer authorization_uri="),
        "{challenge}"
    );
    assert!(
        challenge.ends_with(&format!("resource_id={}/", emulator.url)),
        "{challenge}"
    );
    expect_error(response, 401, code, "").await;
}

#[tokio::test]
async fn challenges_requests_without_a_valid_bearer_token() {
    let emulator = Emulator::empty().await;
    let missing = emulator
        .http
        .get(emulator.api("accounts"))
        .send()
        .await
        .unwrap();
    assert_challenged(missing, &emulator, "").await;
    let forged = emulator
        .http
        .get(emulator.api("accounts"))
        .bearer_auth("eyJ.forged.token")
        .send()
        .await
        .unwrap();
    assert_challenged(forged, &emulator, "").await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
}

#[tokio::test]
async fn expires_every_issued_token_on_request() {
    let emulator = Emulator::empty().await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
    assert_eq!(
        emulator
            .control(Method::POST, "tokens/expire", json!({}))
            .await
            .status(),
        204
    );
    let response = emulator.get("accounts").await;
    assert_challenged(response, &emulator, "0x8004A101").await;
    // A new token works again.
    let token = emulator.fresh_token().await;
    let response = emulator
        .http
        .get(emulator.api("accounts"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn honours_the_token_ttl_option() {
    let emulator = Emulator::start(&["--seed", "none", "--token-ttl", "30"]).await;
    let scope = format!("{}/.default", emulator.url);
    let body: Value = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", &scope),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 30);
    assert_eq!(emulator.get("accounts").await.status(), 200);
    // Thirty-one seconds later, by the emulator's clock, the token has lapsed.
    emulator
        .control(Method::POST, "clock", json!({"advance_secs": 31}))
        .await;
    assert_challenged(emulator.get("accounts").await, &emulator, "0x8004A101").await;
}

#[tokio::test]
async fn uses_the_client_id_and_secret_given_on_the_command_line() {
    // `start` fetches its token with the credentials given here, so reaching the API proves they work.
    let emulator = Emulator::start(&[
        "--seed",
        "none",
        "--client-id",
        "app",
        "--client-secret",
        "s3cret",
    ])
    .await;
    assert_eq!(emulator.get("accounts").await.status(), 200);
    let scope = format!("{}/.default", emulator.url);
    let defaults = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(defaults.status(), 400);
}

#[tokio::test]
async fn rotates_the_client_secret_through_the_control_api() {
    let emulator = Emulator::empty().await;
    let response = emulator
        .control(
            Method::POST,
            "credentials",
            json!({"client_secret": "rotated"}),
        )
        .await;
    assert_eq!(response.status(), 204);
    // Tokens already issued still work; new ones need the new secret.
    assert_eq!(emulator.get("accounts").await.status(), 200);
    let scope = format!("{}/.default", emulator.url);
    let old = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(old.status(), 401);
    let new = emulator
        .token_response(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "rotated"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(new.status(), 200);
}

#[tokio::test]
async fn serves_the_token_endpoint_only_at_its_exact_path() {
    let emulator = Emulator::empty().await;
    let scope = format!("{}/.default", emulator.url);
    let response = emulator
        .http
        .post(format!("{}//contoso/oauth2/v2.0/token", emulator.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-client"),
            ("client_secret", "local-secret"),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "a doubled slash is another path");
}
