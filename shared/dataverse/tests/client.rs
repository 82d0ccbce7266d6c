//! The client against the Dataverse emulator, over HTTP: naming, paging, CRUD semantics, retries,
//! token refresh and deadlines.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataverse::{Client, Credentials, Deadline, Error, Query, RetryPolicy, Table, TableName};
use dataverse_emulator::Seed;
use dataverse_emulator::cli::Options;
use dataverse_emulator::client::{EmulatorClient, Fault, LogEntry};
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// An empty organisation, served from this process: the emulator's binary is not built for a
/// dependent's tests.
struct Org {
    emulator: EmulatorClient,
}

impl Org {
    async fn start() -> Self {
        let options = Options {
            seed: Seed::None,
            ..Options::default()
        };
        Self {
            emulator: EmulatorClient::serve(&options).await.unwrap(),
        }
    }

    fn credentials(&self) -> Credentials {
        let url = self.emulator.url();
        serde_json::from_value(json!({
            "url": url, "tenant_id": "contoso.onmicrosoft.com", "client_id": "local-client",
            "client_secret": "local-secret", "authority": url,
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
        let accounts = client.table(&table("account"), deadline()).await.unwrap();
        (client, accounts)
    }

    async fn fault(&self, fault: Fault) {
        self.emulator.add_fault(&fault).await.unwrap();
    }

    async fn generate(&self, table: &str, count: usize) {
        self.emulator.generate(table, count).await.unwrap();
    }

    /// The emulator's request log since the last call, which it then clears.
    async fn take_log(&self) -> Vec<LogEntry> {
        self.emulator.take_requests().await.unwrap()
    }

    /// The requests of one method since the last call, as (status, whether a `drop_answer` fault
    /// withheld the answer). Clears the log.
    async fn take_calls(&self, method: &str) -> Vec<(u16, bool)> {
        self.take_log()
            .await
            .into_iter()
            .filter(|e| e.method == method)
            .map(|e| (e.status, e.answer_dropped))
            .collect()
    }

    /// The first `method` request matching `path_contains` is carried out, but its answer is lost.
    async fn lose_answer(&self, method: &str, path_contains: &str) {
        self.fault(
            Fault::drop_answer()
                .method(method)
                .path_contains(path_contains),
        )
        .await;
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

/// A table name the test knows to be valid.
fn table(name: &str) -> TableName {
    TableName::try_from(name).unwrap()
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
    let by_logical = client
        .table(&table("opportunity"), deadline())
        .await
        .unwrap();
    assert_eq!(by_logical.entity_set_name, "opportunities");
    assert_eq!(by_logical.primary_id_attribute, "opportunityid");
    assert!(by_logical.change_tracking_enabled);
    let by_set = client
        .table(&table("opportunities"), deadline())
        .await
        .unwrap();
    assert_eq!(by_set, by_logical);
    let lookups = org
        .take_log()
        .await
        .into_iter()
        .filter(|e| e.path.contains("EntityDefinitions"))
        .count();
    assert_eq!(lookups, 1, "the second name came from the cache");
    assert!(matches!(
        client.table(&table("nosuchtable"), deadline()).await,
        Err(Error::UnknownTable { .. })
    ));
}

#[tokio::test]
async fn refuses_table_names_that_could_change_the_url_without_sending_anything() {
    let org = Org::start().await;
    org.take_log().await;
    for name in [
        "accounts/x",
        "accounts?$top=1",
        "accounts(00000000-0000-0000-0000-000000000000)",
        "",
        "a b",
    ] {
        let error = TableName::try_from(name).unwrap_err();
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
    let accounts = client.table(&table("accounts"), deadline()).await.unwrap();
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
            .all(|e| !e.path.contains("$skip=") && !e.path.contains("$top="))
    );
}

#[tokio::test]
async fn a_page_that_fails_while_skipping_fails_the_list_instead_of_ending_it() {
    let org = Org::start().await;
    org.generate("account", 6_000).await;
    let (client, accounts) = org.accounts().await;
    // A 403 is not retried: the second page, read only to be skipped, fails for good.
    org.fault(Fault::status(403).method("GET").path_contains("skiptoken"))
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

/// A pager over the names of `accounts` ordered by name, two rows a page.
async fn pager_of_two(org: &Org) -> dataverse::Pager {
    let (client, accounts) = org.accounts().await;
    let query = Query::new().select("name").orderby("name asc");
    let prefer = dataverse::Prefer {
        max_page_size: Some(2),
        track_changes: false,
        formatted_values: false,
    };
    client.pager(
        client.collection_url(&accounts, &query).unwrap(),
        prefer,
        deadline(),
    )
}

/// The names on each page of [`pager_of_two`], read fetching ahead after every page; and the
/// requests that made them.
async fn pages_fetched_ahead(org: &Org) -> (Result<Vec<Vec<String>>, Error>, Vec<LogEntry>) {
    let mut fetched = pager_of_two(org).await;
    org.take_log().await;
    let mut pages = Vec::new();
    let outcome = loop {
        match fetched.next().await {
            Ok(Some(page)) => {
                // Asked twice: the second call must not fetch the page again.
                fetched.fetch_ahead().await;
                fetched.fetch_ahead().await;
                pages.push(
                    page.rows
                        .iter()
                        .map(|r| {
                            serde_json::from_str::<Value>(r.get()).unwrap()["name"].to_string()
                        })
                        .collect(),
                );
            }
            Ok(None) => break Ok(pages),
            Err(e) => break Err(e),
        }
    };
    (outcome, org.take_log().await)
}

#[tokio::test]
async fn a_pager_fetching_ahead_returns_every_page_once_and_in_order() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    for name in ["e", "c", "a", "d", "b"] {
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
    let (pages, log) = pages_fetched_ahead(&org).await;
    let expected = [
        vec!["\"a\"", "\"b\""],
        vec!["\"c\"", "\"d\""],
        vec!["\"e\""],
    ];
    assert_eq!(pages.unwrap(), expected);
    assert_eq!(log.len(), 3, "one request a page: {log:?}");
}

#[tokio::test]
async fn a_page_fetched_ahead_that_fails_fails_the_read() {
    let org = Org::start().await;
    org.generate("account", 5).await;
    // A 403 is not retried: the second page, fetched ahead, fails for good, and says so when read.
    org.fault(Fault::status(403).method("GET").path_contains("skiptoken"))
        .await;
    let (pages, _) = pages_fetched_ahead(&org).await;
    assert_eq!(pages.unwrap_err().status(), Some(403));

    // A failed page is asked for again, never taken for the end of the pages.
    let mut fetched = pager_of_two(&org).await;
    let first = fetched.next().await.unwrap().unwrap();
    org.fault(Fault::status(403).method("GET").path_contains("skiptoken"))
        .await;
    assert_eq!(fetched.next().await.unwrap_err().status(), Some(403));
    let second = fetched
        .next()
        .await
        .unwrap()
        .expect("the failed page, read again");
    assert_eq!(first.rows.len() + second.rows.len(), 4);
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
    let contacts = client.table(&table("contacts"), deadline()).await.unwrap();
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
        .update(&contacts, id, &item(json!({"lastname": "King"})))
        .query(&Query::new().select("fullname"))
        .send(deadline())
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
        .update(&accounts, id, &item(json!({"name": "ghost"})))
        .send(deadline())
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
        .update(&accounts, id, &item(json!({"name": "v2"})))
        .etag(Some(etag))
        .send(deadline())
        .await
        .unwrap();
    let stale = client
        .update(&accounts, id, &item(json!({"name": "v3"})))
        .etag(Some(etag))
        .send(deadline())
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
    org.fault(
        Fault::status(429)
            .retry_after(1)
            .times(2)
            .path_contains("/accounts"),
    )
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
    let statuses: Vec<u16> = log.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [429, 429, 201], "{log:?}");
}

/// A GET of a missing row while `fault` is in place, under `deadline`: the error, and the statuses of
/// the requests the client sent for it.
async fn get_throttled(fault: Fault, deadline: Deadline) -> (Error, Vec<u16>) {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.fault(fault).await;
    let error = client
        .get(&accounts, Uuid::new_v4(), &Query::new(), deadline)
        .await
        .unwrap_err();
    let statuses = org.take_log().await.iter().map(|e| e.status).collect();
    (error, statuses)
}

/// Whether `error` is the 429 itself, with the `Retry-After` it gave.
fn throttled_for(error: &Error, secs: u64) -> bool {
    matches!(
        error,
        Error::Api { status: 429, retry_after: Some(wait), .. } if *wait == Duration::from_secs(secs)
    )
}

#[tokio::test]
async fn gives_up_at_once_when_retry_after_ends_past_the_deadline() {
    let (error, statuses) = get_throttled(
        Fault::status(429).retry_after(60).times(5),
        Deadline::after(Duration::from_secs(5)),
    )
    .await;
    // A client that waited would have nothing to show for it but a deadline error, or a second
    // request: the throttling answer of the one request sent is what giving up at once leaves.
    assert!(throttled_for(&error, 60), "{error:?}");
    assert_eq!(statuses, [429]);
}

#[tokio::test]
async fn does_not_wait_out_a_429_that_would_leave_no_time_to_try_again() {
    // Two seconds of waiting would leave half a second: the 429 is reported now, as a 429, rather
    // than risking an attempt that times out and reads as a server failure. Had the client waited,
    // its second request would show in the log (and, the fault used up, answer 404).
    let (error, statuses) = get_throttled(
        Fault::status(429).retry_after(2),
        Deadline::after(Duration::from_millis(2_500)),
    )
    .await;
    assert!(throttled_for(&error, 2), "{error:?}");
    assert_eq!(statuses, [429]);
}

#[tokio::test]
async fn retries_gateway_errors_on_reads_but_never_repeats_a_create_that_reached_the_server() {
    let org = Org::start().await;
    let (client, accounts) = org.accounts().await;
    org.take_log().await;
    org.fault(Fault::status(503).times(2).method("GET")).await;
    let rows: Vec<_> = client
        .rows(&accounts, &Query::new(), 0, Some(1), deadline())
        .try_collect()
        .await
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(
        org.take_log()
            .await
            .iter()
            .map(|e| e.status)
            .collect::<Vec<_>>(),
        [503, 503, 200]
    );

    org.fault(Fault::status(503).method("POST").path_contains("/accounts"))
        .await;
    let error = failed_create(&client, &accounts).await;
    assert_eq!(error.status(), Some(503));
    org.fault(
        Fault::drop_connection()
            .method("POST")
            .path_contains("/accounts"),
    )
    .await;
    let error = failed_create(&client, &accounts).await;
    assert!(
        matches!(error, Error::Transport { unsent: false, .. }),
        "{error:?}"
    );
    let posts = org
        .take_log()
        .await
        .into_iter()
        .filter(|e| e.method == "POST")
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
    let error = client
        .table(&table("account"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Transport { unsent: true, .. }),
        "{error:?}"
    );
}

/// A client, the `account` table, and one account named `name`: its id and etag.
/// Creates `{"name": "once"}`, which the test has arranged to fail, and returns the error.
async fn failed_create(client: &Client, accounts: &Table) -> Error {
    client
        .create(
            accounts,
            &item(json!({"name": "once"})),
            &Query::new(),
            deadline(),
        )
        .await
        .unwrap_err()
}

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

/// A DELETE carried out with its answer lost, then a retry that `refusal` turns away: the error
/// reads as the refusal, and says the delete may have happened.
async fn delete_refused_after_a_lost_answer(refusal: Fault, status: u16) {
    let org = Org::start().await;
    let (client, accounts, id, _) = one_account(&org, "doomed").await;
    org.lose_answer("DELETE", "/accounts(").await;
    org.fault(refusal.method("DELETE")).await;
    let error = client
        .delete(
            &accounts,
            id,
            None,
            Deadline::after(Duration::from_secs(10)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(status), "{error:?}");
    assert!(error.may_have_applied(), "{error:?}");
    assert!(
        matches!(error.reported(), Error::Api { .. }),
        "reads as the refusal itself: {error:?}"
    );
    let calls = org.take_calls("DELETE").await;
    assert_eq!(calls, [(204, true), (status, false)]);
    // Read on a client of its own: a 429 keeps this one's gate closed.
    let (reader, accounts) = org.accounts().await;
    assert_eq!(
        reader
            .get(&accounts, id, &Query::new(), deadline())
            .await
            .unwrap_err()
            .status(),
        Some(404),
        "the first DELETE did remove the row"
    );
}

#[tokio::test]
async fn a_delete_refused_after_its_answer_was_lost_says_it_may_have_applied() {
    delete_refused_after_a_lost_answer(Fault::status(500), 500).await;
    // A 429 whose wait does not fit the deadline ends the retries as it is.
    delete_refused_after_a_lost_answer(Fault::status(429).retry_after(60), 429).await;
    delete_refused_after_a_lost_answer(Fault::status(403), 403).await;
}

#[tokio::test]
async fn a_retry_the_throttle_gate_refuses_after_a_lost_answer_says_it_may_have_applied() {
    let org = Org::start().await;
    let (_, accounts, id, _) = one_account(&org, "doomed").await;
    // A backoff of 2 to 4 s after the lost answer: time for another request to close the gate.
    let client = Client::builder(org.credentials())
        .retry(RetryPolicy {
            base_delay: Duration::from_secs(4),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let other = client.clone();
    org.lose_answer("DELETE", "/accounts(").await;
    let deleting = tokio::spawn({
        let accounts = accounts.clone();
        async move { client.delete(&accounts, id, None, deadline()).await }
    });
    // Once the first DELETE has landed, a read on the same client is throttled for a minute,
    // longer than the delete's deadline allows it to wait.
    let mut landed = false;
    for _ in 0..1000 {
        if org.take_log().await.iter().any(|e| e.method == "DELETE") {
            landed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(landed, "the DELETE never arrived");
    org.fault(Fault::status(429).retry_after(60).method("GET"))
        .await;
    let throttled = other
        .get(&accounts, id, &Query::new(), deadline())
        .await
        .unwrap_err();
    assert_eq!(throttled.status(), Some(429));
    assert!(!throttled.may_have_applied(), "a read changes nothing");
    let error = deleting.await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(429), "{error:?}");
    assert!(error.may_have_applied(), "{error:?}");
    assert!(
        org.take_log().await.iter().all(|e| e.method != "DELETE"),
        "the gate sent nothing more"
    );
}

#[tokio::test]
async fn an_etag_guarded_update_whose_answer_is_lost_is_not_repeated_into_a_false_412() {
    let org = Org::start().await;
    let (client, accounts, id, etag) = one_account(&org, "v1").await;
    org.lose_answer("PATCH", "/accounts(").await;
    let error = client
        .update(&accounts, id, &item(json!({"name": "v2"})))
        .etag(Some(&etag))
        .send(deadline())
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
        .update(&accounts, id, &item(json!({"name": "v2"})))
        .query(&Query::new().select("name"))
        .send(deadline())
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
    let error = failed_create(&client, &accounts).await;
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
    org.emulator.expire_tokens().await.unwrap();
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
    let summary: Vec<(String, u16)> = log
        .iter()
        .map(|e| {
            let to = if e.path.contains("oauth2") {
                "token"
            } else {
                "api"
            };
            (format!("{} {to}", e.method), e.status)
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
    let error = client
        .table(&table("account"), deadline())
        .await
        .unwrap_err();
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
    org.take_log().await;
    // The answer (a 404) comes 20 s after the request, well inside the policy's 30 s per-request
    // limit: only the deadline can stop the client before it.
    org.fault(
        Fault::delay(Duration::from_secs(20))
            .times(10)
            .path_contains("/accounts("),
    )
    .await;
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
        matches!(error, Error::Transport { .. } | Error::Deadline { .. }),
        "{error:?}"
    );
    // The emulator logs a request when it answers it: the client had given up before that.
    let answered: Vec<LogEntry> = org
        .take_log()
        .await
        .into_iter()
        .filter(|e| e.path.contains("/accounts("))
        .collect();
    assert!(answered.is_empty(), "{answered:?}");
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
        .link("https://evil.example.com/api/data/v9.2/accounts")
        .unwrap_err();
    assert!(matches!(error, Error::ForeignLink { .. }), "{error:?}");
}

#[tokio::test]
async fn credentials_never_print_their_secret() {
    let org = Org::start().await;
    let credentials = org.credentials();
    let printed = format!("{credentials:?} {:?}", org.client());
    assert!(!printed.contains("local-secret"), "{printed}");
}
