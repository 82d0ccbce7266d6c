//! The client against the Dataverse emulator, over HTTP: naming, paging, CRUD semantics, retries,
//! token refresh and deadlines.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataverse::{Client, Credentials, Deadline, Error, Query, RetryPolicy, Table};
use dataverse_emulator::cli::Options;
use dataverse_emulator::{Emulator, Seed, server};
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use uuid::Uuid;

struct Org {
    url: String,
    http: reqwest::Client,
}

impl Org {
    async fn start() -> Self {
        let options = Options {
            seed: Seed::None,
            ..Options::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Emulator::new(&options)));
        tokio::spawn(server::serve(listener, shared));
        Self {
            url,
            http: reqwest::Client::new(),
        }
    }

    fn credentials(&self) -> Credentials {
        serde_json::from_value(json!({
            "url": self.url, "tenant_id": "contoso.onmicrosoft.com", "client_id": "local-client",
            "client_secret": "local-secret", "authority": self.url,
        }))
        .unwrap()
    }

    fn client(&self) -> Client {
        Client::builder(self.credentials())
            .retry(RetryPolicy {
                base_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            })
            .build()
            .unwrap()
    }

    /// A client, and the `account` table resolved through it.
    async fn accounts(&self) -> (Client, Arc<Table>) {
        let client = self.client();
        let accounts = client.table("account", deadline()).await.unwrap();
        (client, accounts)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
        self.http
            .request(method, format!("{}/_emulator/{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn fault(&self, spec: Value) {
        assert_eq!(
            self.control(reqwest::Method::POST, "faults", spec)
                .await
                .status(),
            201
        );
    }

    async fn generate(&self, table: &str, count: usize) {
        self.control(
            reqwest::Method::POST,
            &format!("tables/{table}/generate"),
            json!({"count": count}),
        )
        .await;
    }

    /// The emulator's request log since the last call, which it then clears.
    async fn take_requests(&self) -> Vec<Value> {
        let log: Vec<Value> = self
            .control(reqwest::Method::GET, "requests", json!(null))
            .await
            .json()
            .await
            .unwrap();
        self.control(reqwest::Method::DELETE, "requests", json!(null))
            .await;
        log
    }

    /// The request log since the last call, as (method, path, status).
    async fn take_log(&self) -> Vec<(String, String, u64)> {
        self.take_requests()
            .await
            .into_iter()
            .map(|e| {
                (
                    e["method"].as_str().unwrap().to_owned(),
                    e["path"].as_str().unwrap().to_owned(),
                    e["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The requests of one method since the last call, as (status, whether a `drop_answer` fault
    /// withheld the answer). Clears the log.
    async fn take_calls(&self, method: &str) -> Vec<(u64, bool)> {
        self.take_requests()
            .await
            .into_iter()
            .filter(|e| e["method"] == method)
            .map(|e| {
                (
                    e["status"].as_u64().unwrap(),
                    e["answer_dropped"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// The first `method` request matching `path_contains` is carried out, but its answer is lost.
    async fn lose_answer(&self, method: &str, path_contains: &str) {
        self.fault(json!({"drop_answer": true, "method": method, "path_contains": path_contains}))
            .await;
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn item(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test]
async fn resolves_logical_and_entity_set_names_once_per_client() {
    let org = Org::start().await;
    let client = org.client();
    let by_logical = client.table("opportunity", deadline()).await.unwrap();
    assert_eq!(by_logical.entity_set_name, "opportunities");
    assert_eq!(by_logical.primary_id_attribute, "opportunityid");
    assert!(by_logical.change_tracking_enabled);
    let by_set = client.table("opportunities", deadline()).await.unwrap();
    assert_eq!(by_set, by_logical);
    let lookups = org
        .take_log()
        .await
        .into_iter()
        .filter(|(_, path, _)| path.contains("EntityDefinitions"))
        .count();
    assert_eq!(lookups, 1, "the second name came from the cache");
    assert!(matches!(
        client.table("nosuchtable", deadline()).await,
        Err(Error::UnknownTable { .. })
    ));
}

#[tokio::test]
async fn refuses_table_names_that_could_change_the_url_without_sending_anything() {
    let org = Org::start().await;
    let client = org.client();
    org.take_log().await;
    for name in [
        "accounts/x",
        "accounts?$top=1",
        "accounts(00000000-0000-0000-0000-000000000000)",
        "",
        "a b",
    ] {
        let error = client.table(name, deadline()).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidTable { .. }),
            "{name}: {error}"
        );
    }
    assert!(org.take_log().await.is_empty());
}

#[tokio::test]
async fn skip_and_top_work_across_pages_without_sending_skip() {
    let org = Org::start().await;
    org.generate("account", 12_000).await;
    let client = org.client();
    let accounts = client.table("accounts", deadline()).await.unwrap();
    let all: Vec<String> = client
        .rows(&accounts, &Query::new().select("name"), 0, None, deadline())
        .map_ok(|r| r.get().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 12_000);
    org.take_log().await;
    let window: Vec<String> = client
        .rows(
            &accounts,
            &Query::new().select("name"),
            4_990,
            Some(5_020),
            deadline(),
        )
        .map_ok(|r| r.get().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(window, all[4_990..10_010]);
    let log = org.take_log().await;
    assert_eq!(
        log.len(),
        3,
        "three pages of 5000 cover rows up to 10,010: {log:?}"
    );
    assert!(
        log.iter()
            .all(|(_, path, _)| !path.contains("$skip=") && !path.contains("$top="))
    );
}

#[tokio::test]
async fn a_page_that_fails_while_skipping_fails_the_list_instead_of_ending_it() {
    let org = Org::start().await;
    org.generate("account", 6_000).await;
    let (client, accounts) = org.accounts().await;
    // A 403 is not retried: the second page, read only to be skipped, fails for good.
    org.fault(json!({"status": 403, "method": "GET", "path_contains": "skiptoken"}))
        .await;
    let result: Result<Vec<_>, _> = client
        .rows(
            &accounts,
            &Query::new().select("name"),
            5_500,
            Some(10),
            deadline(),
        )
        .try_collect()
        .await;
    assert_eq!(result.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn a_small_top_asks_for_a_small_page_and_stops() {
    let org = Org::start().await;
    org.generate("account", 50).await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    let rows: Vec<_> = client
        .rows(&accounts, &Query::new(), 0, Some(3), deadline())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(org.take_log().await.len(), 1);
}

#[tokio::test]
async fn encodes_filters_with_quotes_ampersands_and_plus_signs() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    for name in ["A&B + C", "O'Brien #1", "100% sure"] {
        client
            .create(
                &accounts,
                &item(json!({"name": name})),
                &Query::new(),
                deadline(),
            )
            .await
            .unwrap();
    }
    let found = |filter: &'static str| {
        let client = client.clone();
        let accounts = accounts.clone();
        async move {
            let rows: Vec<Box<serde_json::value::RawValue>> = client
                .rows(
                    &accounts,
                    &Query::new().select("name").filter(filter),
                    0,
                    None,
                    deadline(),
                )
                .try_collect()
                .await
                .unwrap();
            rows.len()
        }
    };
    assert_eq!(found("name eq 'A&B + C'").await, 1);
    assert_eq!(found("name eq 'O''Brien #1'").await, 1);
    assert_eq!(found("startswith(name,'100%')").await, 1);
}

#[tokio::test]
async fn creates_gets_updates_and_deletes_with_representations() {
    let org = Org::start().await;
    let client = org.client();
    let contacts = client.table("contacts", deadline()).await.unwrap();
    let created = client
        .create(
            &contacts,
            &item(json!({"firstname": "Ada", "lastname": "Lovelace"})),
            &Query::new().select("fullname"),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(created["fullname"], "Ada Lovelace");
    assert!(created.get("@odata.context").is_none());
    let id = Uuid::parse_str(created["contactid"].as_str().unwrap()).unwrap();
    let read = client
        .get(&contacts, id, &Query::new().select("lastname"), deadline())
        .await
        .unwrap();
    assert_eq!(read["lastname"], "Lovelace");
    let updated = client
        .update(
            &contacts,
            id,
            &item(json!({"lastname": "King"})),
            None,
            &Query::new().select("fullname"),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(updated["fullname"], "Ada King");
    client
        .delete(&contacts, id, None, deadline())
        .await
        .unwrap();
    let gone = client
        .get(&contacts, id, &Query::new(), deadline())
        .await
        .unwrap_err();
    assert_eq!(gone.status(), Some(404));
}

#[tokio::test]
async fn update_of_a_missing_row_is_not_found_and_creates_nothing() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    let id = Uuid::new_v4();
    let error = client
        .update(
            &accounts,
            id,
            &item(json!({"name": "ghost"})),
            None,
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert_eq!(error.code(), Some("0x80040217"));
    assert_eq!(
        client
            .get(&accounts, id, &Query::new(), deadline())
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

#[tokio::test]
async fn a_stale_etag_is_a_precondition_failure() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    let row = client
        .create(
            &accounts,
            &item(json!({"name": "v1"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap();
    let id = Uuid::parse_str(row["accountid"].as_str().unwrap()).unwrap();
    let etag = row["@odata.etag"].as_str().unwrap();
    client
        .update(
            &accounts,
            id,
            &item(json!({"name": "v2"})),
            Some(etag),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap();
    let stale = client
        .update(
            &accounts,
            id,
            &item(json!({"name": "v3"})),
            Some(etag),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(412));
    assert_eq!(
        client
            .delete(&accounts, id, Some(etag), deadline())
            .await
            .unwrap_err()
            .status(),
        Some(412)
    );
}

#[tokio::test]
async fn waits_out_a_429_storm_with_no_extra_calls() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.fault(json!({"status": 429, "retry_after": 1, "times": 2, "path_contains": "/accounts"}))
        .await;
    let started = Instant::now();
    let row = client
        .create(
            &accounts,
            &item(json!({"name": "patient"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After each time"
    );
    assert_eq!(row["name"], "patient");
    let log = org.take_log().await;
    let statuses: Vec<u64> = log.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(statuses, [429, 429, 201], "{log:?}");
}

/// A GET of a missing row while `fault` is in place, under `deadline`: the error, how long the
/// client took to give it, and how many requests it sent.
async fn get_throttled(fault: Value, deadline: Deadline) -> (Error, Duration, usize) {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.fault(fault).await;
    let started = Instant::now();
    let error = client
        .get(&accounts, Uuid::new_v4(), &Query::new(), deadline)
        .await
        .unwrap_err();
    (error, started.elapsed(), org.take_log().await.len())
}

#[tokio::test]
async fn gives_up_at_once_when_retry_after_ends_past_the_deadline() {
    let (error, took, requests) = get_throttled(
        json!({"status": 429, "retry_after": 60, "times": 5}),
        Deadline::after(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(error.status(), Some(429));
    assert!(took < Duration::from_secs(2));
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn does_not_wait_out_a_429_that_would_leave_no_time_to_try_again() {
    // Two seconds of waiting would leave half a second: the 429 is reported now, as a 429, rather
    // than risking an attempt that times out and reads as a server failure.
    let (error, took, requests) = get_throttled(
        json!({"status": 429, "retry_after": 2}),
        Deadline::after(Duration::from_millis(2_500)),
    )
    .await;
    assert_eq!(error.status(), Some(429));
    assert!(took < Duration::from_secs(1));
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn retries_gateway_errors_on_reads_but_never_repeats_a_create_that_reached_the_server() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.fault(json!({"status": 503, "times": 2, "method": "GET"}))
        .await;
    let rows: Vec<_> = client
        .rows(&accounts, &Query::new(), 0, Some(1), deadline())
        .try_collect()
        .await
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(
        org.take_log().await.iter().map(|e| e.2).collect::<Vec<_>>(),
        [503, 503, 200]
    );

    org.fault(json!({"status": 503, "method": "POST", "path_contains": "/accounts"}))
        .await;
    let error = client
        .create(
            &accounts,
            &item(json!({"name": "once"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(503));
    org.fault(json!({"drop_connection": true, "method": "POST", "path_contains": "/accounts"}))
        .await;
    let error = client
        .create(
            &accounts,
            &item(json!({"name": "once"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Transport { unsent: false, .. }),
        "{error:?}"
    );
    let posts = org
        .take_log()
        .await
        .into_iter()
        .filter(|e| e.0 == "POST")
        .count();
    assert_eq!(posts, 2, "each create was sent exactly once");
}

#[tokio::test]
async fn a_create_whose_connection_was_never_made_is_retried_and_reported_as_unsent() {
    // Nothing listens on this port: every attempt fails before a byte is sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let credentials: Credentials = serde_json::from_value(json!({
        "url": url, "tenant_id": "t", "client_id": "c", "client_secret": "s", "authority": url,
    }))
    .unwrap();
    let client = Client::builder(credentials)
        .retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let error = client.table("account", deadline()).await.unwrap_err();
    assert!(
        matches!(error, Error::Transport { unsent: true, .. }),
        "{error:?}"
    );
}

/// A client, the `account` table, and one account named `name`: its id and etag.
async fn one_account(org: &Org, name: &str) -> (Client, Arc<Table>, Uuid, String) {
    let (client, accounts) = org.accounts().await;
    let row = client
        .create(
            &accounts,
            &item(json!({"name": name})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap();
    let id = Uuid::parse_str(row["accountid"].as_str().unwrap()).unwrap();
    let etag = row["@odata.etag"].as_str().unwrap().to_owned();
    org.take_log().await;
    (client, accounts, id, etag)
}

#[tokio::test]
async fn deletes_a_row_only_once_even_when_the_answer_is_lost() {
    let org = Org::start().await;
    let (client, accounts, id, _) = one_account(&org, "doomed").await;
    // The first DELETE removes the row, but its answer never arrives: the retry finds the row
    // gone, which is the success the first attempt would have reported.
    org.lose_answer("DELETE", "/accounts(").await;
    client
        .delete(&accounts, id, None, deadline())
        .await
        .unwrap();
    assert_eq!(
        org.take_calls("DELETE").await,
        [(204, true), (404, false)],
        "the applied DELETE, then the retry"
    );
    assert_eq!(
        client
            .get(&accounts, id, &Query::new(), deadline())
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

#[tokio::test]
async fn an_etag_guarded_update_whose_answer_is_lost_is_not_repeated_into_a_false_412() {
    let org = Org::start().await;
    let (client, accounts, id, etag) = one_account(&org, "v1").await;
    org.lose_answer("PATCH", "/accounts(").await;
    let error = client
        .update(
            &accounts,
            id,
            &item(json!({"name": "v2"})),
            Some(&etag),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    // Sent again, the update would meet its own new version and answer 412: a caller would take
    // that for someone else's change. The honest answer is "the outcome is unknown".
    assert_ne!(error.status(), Some(412), "{error:?}");
    assert!(
        matches!(error, Error::Transport { unsent: false, .. }),
        "{error:?}"
    );
    assert_eq!(org.take_calls("PATCH").await, [(200, true)]);
    let row = client
        .get(&accounts, id, &Query::new().select("name"), deadline())
        .await
        .unwrap();
    assert_eq!(row["name"], "v2", "the lost update did land");
}

#[tokio::test]
async fn an_unconditional_update_whose_answer_is_lost_is_repeated_and_succeeds() {
    let org = Org::start().await;
    let (client, accounts, id, _) = one_account(&org, "v1").await;
    org.lose_answer("PATCH", "/accounts(").await;
    let row = client
        .update(
            &accounts,
            id,
            &item(json!({"name": "v2"})),
            None,
            &Query::new().select("name"),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(row["name"], "v2");
    // Writing the same values twice under `If-Match: *` is harmless.
    assert_eq!(org.take_calls("PATCH").await, [(200, true), (200, false)]);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_after_it_landed_is_not_repeated() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.lose_answer("POST", "/accounts").await;
    let error = client
        .create(
            &accounts,
            &item(json!({"name": "once"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Transport { unsent: false, .. }),
        "{error:?}"
    );
    assert_eq!(
        org.take_calls("POST").await,
        [(201, true)],
        "one POST, carried out, its answer lost"
    );
    let rows: Vec<_> = client
        .rows(&accounts, &Query::new().select("name"), 0, None, deadline())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one row was created");
}

#[tokio::test]
async fn refreshes_an_expired_token_once_and_carries_on() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.control(reqwest::Method::POST, "tokens/expire", json!({}))
        .await;
    client
        .create(
            &accounts,
            &item(json!({"name": "after expiry"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap();
    let log = org.take_log().await;
    let summary: Vec<(String, u64)> = log
        .iter()
        .map(|(m, p, s)| {
            (
                format!("{m} {}", if p.contains("oauth2") { "token" } else { "api" }),
                *s,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("POST api".into(), 401),
            ("POST token".into(), 200),
            ("POST api".into(), 201)
        ],
        "{log:?}"
    );
}

#[tokio::test]
async fn reports_refused_credentials_as_unauthorized() {
    let org = Org::start().await;
    let mut credentials = org.credentials();
    credentials.client_secret = "wrong".to_owned().into();
    let client = Client::builder(credentials).build().unwrap();
    let error = client.table("account", deadline()).await.unwrap_err();
    assert!(error.is_unauthorized(), "{error:?}");
    assert!(matches!(&error, Error::Token { error, .. } if error == "invalid_client"));
    assert!(
        !format!("{error} {error:?}").contains("wrong"),
        "the secret never appears"
    );
}

#[tokio::test]
async fn stops_waiting_for_a_slow_answer_at_the_deadline() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.fault(json!({"delay_ms": 3000, "times": 10, "path_contains": "/accounts("}))
        .await;
    let started = Instant::now();
    let error = client
        .get(
            &accounts,
            Uuid::new_v4(),
            &Query::new(),
            Deadline::after(Duration::from_millis(600)),
        )
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, Error::Transport { .. } | Error::Deadline { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn refuses_plain_http_outside_loopback_and_links_to_other_hosts() {
    let insecure: Credentials = serde_json::from_value(json!({
        "url": "http://contoso.crm.dynamics.com", "tenant_id": "t", "client_id": "c", "client_secret": "s",
    }))
    .unwrap();
    assert!(
        matches!(Client::builder(insecure).build(), Err(Error::Config(m)) if m.contains("https"))
    );
    let org = Org::start().await;
    let client = org.client();
    let error = client
        .page(
            "https://evil.example.com/api/data/v9.2/accounts",
            dataverse::Prefer::default(),
            deadline(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid { what: "link", .. }));
}

#[tokio::test]
async fn credentials_never_print_their_secret() {
    let org = Org::start().await;
    let credentials = org.credentials();
    let printed = format!("{credentials:?} {:?}", org.client());
    assert!(!printed.contains("local-secret"), "{printed}");
}
