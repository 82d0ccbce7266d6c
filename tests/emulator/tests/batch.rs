//! `$batch`: requests and changesets in one `multipart/mixed` body, `Content-ID` references,
//! atomic changesets (nothing of a failed one left in the rows, change tracking, `versionnumber`s or
//! webhook deliveries), stop-on-error and `odata.continue-on-error`, and the answers to bodies the
//! service cannot read.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::{Emulator, expect_error};

/// One request of a batch body.
struct Req {
    method: &'static str,
    url: String,
    content_id: Option<u32>,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

fn req(method: &'static str, url: impl Into<String>, body: Option<Value>) -> Req {
    Req {
        method,
        url: url.into(),
        content_id: None,
        headers: Vec::new(),
        body,
    }
}

fn post(url: impl Into<String>, body: Value) -> Req {
    req("POST", url, Some(body))
}

fn patch(url: impl Into<String>, body: Value) -> Req {
    req("PATCH", url, Some(body))
}

fn get(url: impl Into<String>) -> Req {
    req("GET", url, None)
}

impl Req {
    fn id(mut self, content_id: u32) -> Self {
        self.content_id = Some(content_id);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A top-level part of a batch body.
enum Piece {
    One(Req),
    Changeset(Vec<Req>),
}

fn write_request(out: &mut String, r: &Req) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = r.content_id {
        write!(out, "Content-ID: {id}\r\n").unwrap();
    }
    write!(out, "\r\n{} {} HTTP/1.1\r\n", r.method, r.url).unwrap();
    if r.body.is_some() {
        out.push_str("Content-Type: application/json; type=entry\r\n");
    }
    for (name, value) in &r.headers {
        write!(out, "{name}: {value}\r\n").unwrap();
    }
    out.push_str("\r\n");
    if let Some(body) = &r.body {
        out.push_str(&body.to_string());
    }
    out.push_str("\r\n");
}

/// A batch body with boundary `batch_T`, the way Learn's examples write one.
fn batch_body(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        out.push_str("--batch_T\r\n");
        match piece {
            Piece::One(r) => write_request(&mut out, r),
            Piece::Changeset(requests) => {
                let changeset = format!("changeset_{i}");
                write!(
                    out,
                    "Content-Type: multipart/mixed; boundary=\"{changeset}\"\r\n\r\n"
                )
                .unwrap();
                for r in requests {
                    write!(out, "--{changeset}\r\n").unwrap();
                    write_request(&mut out, r);
                }
                write!(out, "--{changeset}--\r\n").unwrap();
            }
        }
    }
    out.push_str("--batch_T--\r\n");
    out
}

/// One response of a batch answer.
#[derive(Debug)]
struct Resp {
    content_id: Option<String>,
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// The id at the end of `OData-EntityId`.
    fn id(&self) -> String {
        let address = self.header("odata-entityid").expect("OData-EntityId");
        address[address.rfind('(').unwrap() + 1..address.len() - 1].to_owned()
    }

    fn error(&self) -> (String, String) {
        let body = self.json();
        (
            body["error"]["code"].as_str().unwrap().to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }
}

/// A top-level part of a batch answer.
#[derive(Debug)]
enum Got {
    One(Resp),
    Changeset(Vec<Resp>),
}

impl Got {
    fn one(&self) -> &Resp {
        match self {
            Got::One(r) => r,
            Got::Changeset(_) => panic!("a changeset response: {self:?}"),
        }
    }

    fn changeset(&self) -> &[Resp] {
        match self {
            Got::Changeset(r) => r,
            Got::One(_) => panic!("a single response: {self:?}"),
        }
    }
}

/// The parts between `--boundary` lines, read strictly: CRLF everywhere, the CRLF before each
/// delimiter belonging to it, the closing delimiter last (followed by a CRLF at the top level; inside
/// a changeset the outer delimiter takes it).
fn parts<'a>(body: &'a str, boundary: &str, top: bool) -> Vec<&'a str> {
    let close = if top {
        format!("--{boundary}--\r\n")
    } else {
        format!("--{boundary}--")
    };
    if body == close {
        return Vec::new();
    }
    let inner = body
        .strip_suffix(&format!("\r\n{close}"))
        .unwrap_or_else(|| panic!("ends with CRLF {close:?}: {body:?}"));
    let open = format!("--{boundary}\r\n");
    let inner = inner
        .strip_prefix(&open)
        .unwrap_or_else(|| panic!("starts with {open:?}: {body:?}"));
    inner.split(&format!("\r\n{open}")).collect()
}

fn boundary(content_type: &str) -> &str {
    content_type
        .split_once("boundary=")
        .expect("a boundary")
        .1
        .trim_matches('"')
}

fn response(part: &str) -> Resp {
    let (mime, http) = part.split_once("\r\n\r\n").expect("MIME headers");
    let mime: Vec<&str> = mime.split("\r\n").collect();
    assert_eq!(mime[0], "Content-Type: application/http", "{part}");
    assert_eq!(mime[1], "Content-Transfer-Encoding: binary", "{part}");
    let content_id = mime.get(2).map(|h| {
        h.strip_prefix("Content-ID: ")
            .expect("Content-ID")
            .to_owned()
    });
    let (head, body) = http.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("a header");
            (n.to_owned(), v.to_owned())
        })
        .collect();
    Resp {
        content_id,
        status,
        status_line,
        headers,
        body: body.to_owned(),
    }
}

/// Reads a batch answer, checking its framing on the way.
fn answer_parts(content_type: &str, body: &str) -> Vec<Got> {
    assert!(
        content_type.starts_with("multipart/mixed; boundary=batchresponse_"),
        "{content_type}"
    );
    assert!(
        !body.replace("\r\n", "").contains('\n'),
        "only CRLF line breaks: {body:?}"
    );
    parts(body, boundary(content_type), true)
        .into_iter()
        .map(|part| {
            if let Some(rest) = part.strip_prefix("Content-Type: multipart/mixed; boundary=") {
                let (inner, content) = rest.split_once("\r\n\r\n").unwrap();
                assert!(inner.starts_with("changesetresponse_"), "{inner}");
                Got::Changeset(
                    parts(content, inner, false)
                        .into_iter()
                        .map(response)
                        .collect(),
                )
            } else {
                Got::One(response(part))
            }
        })
        .collect()
}

/// Sends a raw batch body; returns the status, the content type and the body.
async fn send_raw(
    emulator: &Emulator,
    content_type: &str,
    prefer: Option<&str>,
    body: String,
) -> (u16, String, String, reqwest::header::HeaderMap) {
    let mut request = emulator
        .request(Method::POST, "$batch")
        .header("Content-Type", content_type)
        .body(body);
    if let Some(prefer) = prefer {
        request = request.header("Prefer", prefer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.text().await.unwrap(),
        headers,
    )
}

/// Sends a batch; returns the status and the answer's parts.
async fn send(emulator: &Emulator, prefer: Option<&str>, pieces: &[Piece]) -> (u16, Vec<Got>) {
    let (status, content_type, body, _) = send_raw(
        emulator,
        "multipart/mixed; boundary=\"batch_T\"",
        prefer,
        batch_body(pieces),
    )
    .await;
    (status, answer_parts(&content_type, &body))
}

/// How many rows `set` has; `id` is its primary key.
async fn count(emulator: &Emulator, set: &str, id: &str) -> usize {
    let page = emulator.get_json(&format!("{set}?$select={id}")).await;
    page["value"].as_array().unwrap().len()
}

async fn names(emulator: &Emulator, set: &str) -> Vec<String> {
    let page = emulator
        .get_json(&format!("{set}?$select=name&$orderby=name"))
        .await;
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The `versionnumber` the next write takes: that of a throwaway row, created and deleted.
async fn next_version(emulator: &Emulator) -> u64 {
    let row = emulator
        .create("leads", json!({"subject": "version probe"}))
        .await;
    let id = row["leadid"].as_str().unwrap();
    let response = emulator
        .request(Method::DELETE, &format!("leads({id})"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    row["versionnumber"].as_u64().unwrap()
}

#[tokio::test]
async fn a_changeset_binds_and_patches_the_rows_its_parts_create() {
    let emulator = Emulator::empty().await;
    let base = emulator.api("");
    let (status, answer) = send(
        &emulator,
        None,
        &[Piece::Changeset(vec![
            post(emulator.api("accounts"), json!({"name": "Fabrikam"})).id(1),
            post(
                "/api/data/v9.2/contacts",
                json!({"lastname": "Birkby", "parentcustomerid_account@odata.bind": "$1"}),
            )
            .id(2),
            patch("$1", json!({"telephone1": "+1-555-0170"})).id(3),
            post("contacts", json!({"lastname": "Bell"}))
                .id(4)
                .header("Prefer", "return=representation"),
            post(
                "$1/contact_customer_accounts/$ref",
                json!({"@odata.id": "$4"}),
            )
            .id(5),
            patch("$1", json!({"primarycontactid@odata.bind": "$2"})).id(6),
        ])],
    )
    .await;
    assert_eq!(status, 200, "{answer:?}");
    let [Got::Changeset(parts)] = answer.as_slice() else {
        panic!("one changeset response: {answer:?}");
    };
    let ids: Vec<Option<&str>> = parts.iter().map(|p| p.content_id.as_deref()).collect();
    assert_eq!(
        ids,
        [
            Some("1"),
            Some("2"),
            Some("3"),
            Some("4"),
            Some("5"),
            Some("6")
        ]
    );

    // Creates and updates: 204 with the row's address, as Location and as OData-EntityId.
    let account = parts[0].id();
    let contact = parts[1].id();
    for (part, set, id) in [
        (&parts[0], "accounts", &account),
        (&parts[1], "contacts", &contact),
        (&parts[2], "accounts", &account),
    ] {
        assert_eq!(part.status_line, "HTTP/1.1 204 No Content");
        let address = format!("{base}{set}({id})");
        assert_eq!(part.header("Location"), Some(address.as_str()));
        assert_eq!(part.header("OData-EntityId"), Some(address.as_str()));
        assert_eq!(part.header("OData-Version"), Some("4.0"));
        assert_eq!(part.body, "");
    }
    // `return=representation`: 201 and the row, as a stream.
    assert_eq!(parts[3].status_line, "HTTP/1.1 201 Created");
    assert_eq!(
        parts[3].header("Content-Type"),
        Some("application/json; odata.metadata=minimal; odata.streaming=true")
    );
    let bell = parts[3].json()["contactid"].as_str().unwrap().to_owned();
    // `$ref`: 204 and no address.
    assert_eq!(parts[4].status, 204);
    assert_eq!(parts[4].header("Location"), None);
    assert_eq!(parts[5].status, 204);
    assert_eq!(parts[5].id(), account);

    let row = emulator
        .get_json(&format!(
            "accounts({account})?$select=name,telephone1,_primarycontactid_value"
        ))
        .await;
    assert_eq!(row["telephone1"], "+1-555-0170", "PATCH $1 updated it");
    assert_eq!(
        row["_primarycontactid_value"],
        contact.as_str(),
        "$2 bound it"
    );
    let children = emulator
        .get_json(&format!(
            "contacts?$select=lastname&$filter=_parentcustomerid_value eq {account}&$orderby=lastname"
        ))
        .await;
    let children: Vec<&str> = children["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contactid"].as_str().unwrap())
        .collect();
    assert_eq!(children, [bell.as_str(), contact.as_str()], "$1 bound both");
    let birkby = emulator
        .get_json(&format!("contacts({contact})?$select=lastname"))
        .await;
    assert_eq!(birkby["lastname"], "Birkby");
}

#[tokio::test]
async fn parts_outside_changesets_run_in_order_and_reads_see_earlier_writes() {
    let emulator = Emulator::empty().await;
    let (status, answer) = send(
        &emulator,
        None,
        &[
            Piece::Changeset(vec![post("accounts", json!({"name": "Alpha"})).id(1)]),
            Piece::One(post("accounts", json!({"name": "Beta"}))),
            Piece::One(get("accounts?$select=name&$orderby=name")),
            Piece::One(get(emulator.api("WhoAmI"))),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer.len(), 4);
    assert_eq!(answer[0].changeset()[0].status, 204);
    let beta = answer[1].one();
    assert_eq!(beta.status, 204);
    assert!(beta.content_id.is_none());
    let list = answer[2].one();
    assert_eq!(list.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        list.header("Content-Type"),
        Some("application/json; odata.metadata=minimal; odata.streaming=true")
    );
    let page = list.json();
    let listed: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["Alpha", "Beta"]);
    assert!(answer[3].one().json()["UserId"].is_string());

    // A read of a row that is not there stops the batch, which answers with its 404.
    let (status, answer) = send(
        &emulator,
        None,
        &[
            Piece::One(get(format!(
                "accounts({})",
                "00000000-0000-4000-8000-000000000001"
            ))),
            Piece::One(post("accounts", json!({"name": "Gamma"}))),
        ],
    )
    .await;
    assert_eq!(status, 404);
    let [Got::One(missing)] = answer.as_slice() else {
        panic!("only the failing part: {answer:?}");
    };
    assert_eq!(missing.status_line, "HTTP/1.1 404 Not Found");
    assert!(missing.header("REQ_ID").is_some());
    assert_eq!(
        missing.header("Content-Type"),
        Some("application/json; odata.metadata=minimal")
    );
    assert_eq!(missing.error().0, "0x80040217");
    assert_eq!(names(&emulator, "accounts").await, ["Alpha", "Beta"]);
}

/// Registers an asynchronous post-operation webhook step for `message` on `table`, posting to `url`.
async fn step(emulator: &Emulator, url: &str, message: &str, table: &str) {
    let first = |body: Value| body["value"][0].clone();
    let message_id = first(
        emulator
            .get_json(&format!(
                "sdkmessages?$select=sdkmessageid&$filter=name eq '{message}'"
            ))
            .await,
    )["sdkmessageid"]
        .as_str()
        .unwrap()
        .to_owned();
    let filter = first(emulator.get_json(&format!(
        "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq '{table}' and _sdkmessageid_value eq {message_id}"
    )).await)["sdkmessagefilterid"].as_str().unwrap().to_owned();
    let endpoint = emulator
        .create(
            "serviceendpoints",
            json!({"name": "hook", "contract": 8, "url": url, "authtype": 4,
                "authvalue": "key", "messageformat": 2}),
        )
        .await["serviceendpointid"]
        .as_str()
        .unwrap()
        .to_owned();
    emulator
        .create(
            "sdkmessageprocessingsteps",
            json!({
                "name": format!("{table} {message}"), "stage": 40, "mode": 1, "rank": 1,
                "supporteddeployment": 0, "asyncautodelete": false,
                "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter})"),
                "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
            }),
        )
        .await;
}

/// A change-tracking read of `path` (the deltaLink's path and query, or a first read).
async fn tracked(emulator: &Emulator, path: &str) -> Value {
    let response = emulator
        .request(Method::GET, path)
        .header("Prefer", "odata.track-changes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn when_part_7_of_10_fails_the_changeset_leaves_nothing_behind() {
    let emulator = Emulator::empty().await;
    let receiver = Receiver::start().await;
    for message in ["Create", "Update", "Delete"] {
        step(&emulator, &receiver.url, message, "account").await;
    }
    let kept = emulator
        .create("accounts", json!({"name": "Kept", "telephone1": "1"}))
        .await;
    let kept_id = kept["accountid"].as_str().unwrap().to_owned();
    let doomed = emulator.create("accounts", json!({"name": "Doomed"})).await;
    let doomed_id = doomed["accountid"].as_str().unwrap().to_owned();
    let first = tracked(&emulator, "accounts?$select=name,telephone1").await;
    let delta = first["@odata.deltaLink"].as_str().unwrap();
    let delta = delta.strip_prefix(&emulator.api("")).unwrap().to_owned();
    emulator.settled_deliveries().await;
    emulator.clear_deliveries().await;
    emulator.clear_requests().await;
    let version = next_version(&emulator).await;

    let mut parts: Vec<Req> = (1..=10)
        .map(|i| post("accounts", json!({"name": format!("New {i}")})).id(i))
        .collect();
    parts[2] = patch(format!("accounts({kept_id})"), json!({"telephone1": "2"}))
        .id(3)
        .header("If-Match", "*");
    parts[4] = req("DELETE", format!("accounts({doomed_id})"), None).id(5);
    parts[5] = patch("$1", json!({"name": "New 1, renamed"})).id(6);
    // An update never creates: If-Match: * on a row that is not there is 404.
    parts[6] = patch(
        "accounts(0bad0bad-0000-4000-8000-000000000000)",
        json!({"name": "ghost"}),
    )
    .id(7)
    .header("If-Match", "*");
    let (status, answer) = send(&emulator, None, &[Piece::Changeset(parts)]).await;

    // The batch answers with the failure, inside its changeset, and nothing else.
    assert_eq!(status, 404);
    let [Got::Changeset(failed)] = answer.as_slice() else {
        panic!("{answer:?}");
    };
    let [failure] = failed.as_slice() else {
        panic!("only the failing part: {failed:?}");
    };
    assert_eq!(failure.content_id.as_deref(), Some("7"));
    assert_eq!(failure.status_line, "HTTP/1.1 404 Not Found");
    assert_eq!(failure.error().0, "0x80040217");

    // No row made, none changed, none deleted.
    assert_eq!(names(&emulator, "accounts").await, ["Doomed", "Kept"]);
    let row = emulator
        .get_json(&format!(
            "accounts({kept_id})?$select=telephone1,versionnumber"
        ))
        .await;
    assert_eq!(row["telephone1"], "1");
    assert_eq!(row["versionnumber"], kept["versionnumber"]);
    // Change tracking saw nothing, not even a tombstone.
    let changes = tracked(&emulator, &delta).await;
    assert_eq!(changes["value"], json!([]), "{changes}");
    // No step heard of it.
    assert_eq!(emulator.settled_deliveries().await.deliveries, []);
    // The org-wide version did not move: the next write takes the number it would have taken.
    assert_eq!(next_version(&emulator).await, version + 2);

    // The request log lists the parts: six ran and were undone, one failed, three never ran.
    let log = emulator.requests().await;
    let batch = log
        .iter()
        .find(|e| e["path"] == "/api/data/v9.2/$batch")
        .unwrap();
    assert_eq!(batch["status"], 404);
    let parts = batch["parts"].as_array().unwrap();
    let statuses: Vec<(u64, bool)> = parts
        .iter()
        .map(|p| {
            (
                p["status"].as_u64().unwrap(),
                p["rolled_back"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (204, true),
            (204, true),
            (204, true),
            (204, true),
            (204, true),
            (204, true),
            (404, false),
            (0, false),
            (0, false),
            (0, false)
        ]
    );
    assert_eq!(parts[2]["if_match"], "*");
    assert_eq!(parts[5]["url"], "$1");
    assert_eq!(parts[0]["changeset"], 1);

    // The same writes without the bad part commit, and reach change tracking and the steps as
    // ordinary writes do. Enough of them to take the org-wide version past the numbers the
    // rolled-back changeset used, so a tombstone it left behind would show.
    let mut parts: Vec<Req> = (1..=7)
        .map(|i| post("accounts", json!({"name": format!("New {i}")})).id(i))
        .collect();
    parts.push(patch(format!("accounts({kept_id})"), json!({"telephone1": "2"})).id(8));
    let (status, _) = send(&emulator, None, &[Piece::Changeset(parts)]).await;
    assert_eq!(status, 200);
    let changes = tracked(&emulator, &delta).await;
    let entries = changes["value"].as_array().unwrap();
    assert_eq!(entries.len(), 8, "{changes}");
    assert!(
        entries.iter().all(|e| e.get("reason").is_none()),
        "no tombstone: {changes}"
    );
    let (status, _) = send(
        &emulator,
        None,
        &[Piece::One(req(
            "DELETE",
            format!("accounts({doomed_id})"),
            None,
        ))],
    )
    .await;
    assert_eq!(status, 200);
    // Since the first token: the eight writes and one tombstone, that of the delete that stayed.
    let changes = tracked(&emulator, &delta).await;
    let entries = changes["value"].as_array().unwrap();
    let tombstones: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("reason").is_some())
        .collect();
    assert_eq!(entries.len(), 9, "{changes}");
    assert_eq!(tombstones.len(), 1, "{changes}");
    assert_eq!(tombstones[0]["id"], doomed_id.as_str());
    let deliveries = emulator.settled_deliveries().await.deliveries;
    let mut messages: Vec<String> = deliveries
        .iter()
        .map(|d| format!("{:?}", d.message))
        .collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages, ["Create", "Delete", "Update"]);
    assert_eq!(deliveries.len(), 9);
}

#[tokio::test]
async fn a_duplicate_alternate_key_inside_a_changeset_fails_it_with_412() {
    let emulator = Emulator::empty().await;
    emulator
        .add_key("account", "aws_accountnumber", &["accountnumber"])
        .await;
    let (status, answer) = send(
        &emulator,
        None,
        &[Piece::Changeset(vec![
            post("accounts", json!({"name": "a", "accountnumber": "K-1"})).id(1),
            // Upsert by key: creates, with the key's value.
            patch("accounts(accountnumber='K-2')", json!({"name": "b"})).id(2),
            post("accounts", json!({"name": "c", "accountnumber": "k-1"})).id(3),
        ])],
    )
    .await;
    assert_eq!(status, 412);
    let failure = &answer[0].changeset()[0];
    assert_eq!(failure.content_id.as_deref(), Some("3"));
    assert_eq!(failure.status_line, "HTTP/1.1 412 Precondition Failed");
    let (code, message) = failure.error();
    assert_eq!(code, "0x80060892");
    assert!(message.contains("aws_accountnumber"), "{message}");
    assert!(names(&emulator, "accounts").await.is_empty());
    // The key's index forgot the rolled-back rows: the values are free again.
    let (status, answer) = send(
        &emulator,
        None,
        &[Piece::Changeset(vec![
            post("accounts", json!({"name": "a", "accountnumber": "K-1"})).id(1),
            patch("accounts(accountnumber='K-2')", json!({"name": "b"}))
                .id(2)
                .header("If-None-Match", "*"),
        ])],
    )
    .await;
    assert_eq!(status, 200, "{answer:?}");
    assert_eq!(names(&emulator, "accounts").await, ["a", "b"]);
}

#[tokio::test]
async fn continue_on_error_runs_every_part_and_rolls_back_only_the_failed_changeset() {
    let emulator = Emulator::empty().await;
    let pieces = || {
        [
            Piece::Changeset(vec![
                post("accounts", json!({"name": "A1"})).id(1),
                post("accounts", json!({"name": "A2"})).id(2),
            ]),
            Piece::Changeset(vec![
                post("accounts", json!({"name": "B1"})).id(1),
                post("accounts", json!({"name": "B2", "numberofemployees": -1})).id(2),
                post("accounts", json!({"name": "B3"})).id(3),
            ]),
            Piece::One(get("accounts(00000000-0000-4000-8000-000000000001)")),
            Piece::One(post("accounts", json!({"name": "C"}))),
        ]
    };
    let (status, content_type, body, headers) = send_raw(
        &emulator,
        "multipart/mixed; boundary=batch_T",
        Some("odata.continue-on-error"),
        batch_body(&pieces()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["preference-applied"], "odata.continue-on-error");
    let answer = answer_parts(&content_type, &body);
    assert_eq!(answer.len(), 4);
    let statuses: Vec<u16> = answer[0].changeset().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [204, 204]);
    let [failure] = answer[1].changeset() else {
        panic!("only the failing part: {:?}", answer[1]);
    };
    assert_eq!(
        (failure.content_id.as_deref(), failure.status),
        (Some("2"), 400)
    );
    assert_eq!(answer[2].one().status, 404);
    assert_eq!(answer[3].one().status, 204);
    assert_eq!(names(&emulator, "accounts").await, ["A1", "A2", "C"]);

    // Without the preference the batch stops at the failed changeset: the one before it stays,
    // the parts after it never run.
    let (status, answer) = send(&emulator, None, &pieces()).await;
    assert_eq!(status, 400);
    let [Got::Changeset(failed)] = answer.as_slice() else {
        panic!("{answer:?}");
    };
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].content_id.as_deref(), Some("2"));
    assert_eq!(
        names(&emulator, "accounts").await,
        ["A1", "A1", "A2", "A2", "C"]
    );
}

#[tokio::test]
async fn bodies_without_crlf_line_breaks_are_not_readable() {
    let emulator = Emulator::empty().await;
    let pieces = [
        Piece::One(post("accounts", json!({"name": "first"}))),
        Piece::Changeset(vec![post("contacts", json!({"lastname": "x"})).id(1)]),
    ];
    let crlf = batch_body(&pieces);
    for (case, body) in [
        ("LF line breaks", crlf.replace("\r\n", "\n")),
        (
            "no CRLF after the closing delimiter",
            crlf.trim_end().to_owned(),
        ),
    ] {
        let (status, content_type, body, _) =
            send_raw(&emulator, "multipart/mixed; boundary=batch_T", None, body).await;
        assert_eq!(status, 400, "{case}");
        let answer = answer_parts(&content_type, &body);
        let [Got::One(failure)] = answer.as_slice() else {
            panic!("{case}: {answer:?}");
        };
        assert_eq!(failure.status, 400);
        let (code, message) = failure.error();
        assert_eq!(code, "0x80048d19", "{case}");
        assert!(
            message.starts_with(
                "Error identified in Payload provided by the user for Entity :'contacts'"
            ),
            "{case}: {message}"
        );
        assert!(
            message.ends_with("System.ArgumentException: Stream was not readable."),
            "{case}: {message}"
        );
    }
    // Nothing ran.
    assert!(names(&emulator, "accounts").await.is_empty());
    assert_eq!(count(&emulator, "contacts", "contactid").await, 0);
    // A JSON body's own line feeds are not the batch's.
    let pretty = batch_body(&pieces).replace("{\"name\":\"first\"}", "{\n  \"name\": \"first\"\n}");
    let (status, _, _, _) =
        send_raw(&emulator, "multipart/mixed; boundary=batch_T", None, pretty).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_batches_run_nothing_and_say_why() {
    let emulator = Emulator::empty().await;
    let refused = async |content_type: &str, body: String, message: &str| {
        let response = emulator
            .request(Method::POST, "$batch")
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "0x0", message).await;
    };
    let create = || Piece::One(post("accounts", json!({"name": "never"})));
    let batch = "multipart/mixed; boundary=batch_T";

    // The boundary the header names is not the one the body uses.
    refused(
        "multipart/mixed; boundary=batch_U",
        batch_body(&[create()]),
        "Encountered an unexpected end of input while reading the batch payload.",
    )
    .await;
    refused(
        "multipart/mixed",
        batch_body(&[create()]),
        "must specify exactly one batch boundary",
    )
    .await;
    // GET in a changeset, even after a valid part.
    refused(
        batch,
        batch_body(&[create(), Piece::Changeset(vec![get("accounts").id(1)])]),
        "An invalid HTTP method 'GET' was detected for a request in a change set.",
    )
    .await;
    // A changeset in a changeset.
    let nested = batch_body(&[Piece::Changeset(vec![post("accounts", json!({})).id(1)])]).replace(
        "--changeset_0\r\nContent-Type: application/http\r\n",
        "--changeset_0\r\nContent-Type: multipart/mixed; boundary=changeset_9\r\n",
    );
    refused(
        batch,
        nested,
        "Nested change sets in a batch payload are not supported.",
    )
    .await;
    // A batch in a batch.
    refused(
        batch,
        batch_body(&[create(), Piece::One(post("$batch", json!({})))]),
        "Batches cannot be nested",
    )
    .await;
    // Two parts of a changeset with one Content-ID.
    refused(
        batch,
        batch_body(&[Piece::Changeset(vec![
            post("accounts", json!({})).id(1),
            post("accounts", json!({})).id(1),
        ])]),
        "The content ID '1' was found more than once",
    )
    .await;
    // More than 1,000 requests, counting those in changesets; exactly 1,000 is fine.
    let mut many: Vec<Piece> = (0..999).map(|_| Piece::One(get("WhoAmI"))).collect();
    many.push(Piece::Changeset(vec![
        post("accounts", json!({"name": "a"})).id(1),
        post("accounts", json!({"name": "b"})).id(2),
    ]));
    refused(
        batch,
        batch_body(&many),
        "A maximum number of '1000' requests",
    )
    .await;
    assert!(names(&emulator, "accounts").await.is_empty(), "nothing ran");
    many.pop();
    many.push(Piece::One(post("accounts", json!({"name": "a"}))));
    let (status, answer) = send(&emulator, None, &many).await;
    assert_eq!(status, 200);
    assert_eq!(answer.len(), 1000);
    assert_eq!(names(&emulator, "accounts").await, ["a"]);

    // Not multipart at all, not a POST, not authenticated.
    let response = emulator
        .request(Method::POST, "$batch")
        .json(&json!({"requests": []}))
        .send()
        .await
        .unwrap();
    expect_error(response, 415, "0x80060888", "not supported for $batch").await;
    let response = emulator.get("$batch").await;
    assert_eq!(response.status(), 405);
    let response = emulator
        .http
        .post(emulator.api("$batch"))
        .header("Content-Type", batch)
        .body(batch_body(&[create()]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(names(&emulator, "accounts").await, ["a"]);
}

#[tokio::test]
async fn a_content_id_reference_must_name_an_earlier_part_of_the_changeset() {
    let emulator = Emulator::empty().await;
    let cases = [
        // Learn's example: the reference comes before the part that declares it.
        vec![Piece::Changeset(vec![
            post(
                "contacts",
                json!({"lastname": "x", "parentcustomerid_account@odata.bind": "$1"}),
            )
            .id(2),
            post("accounts", json!({"name": "QQQQ"})).id(1),
        ])],
        // In the URL.
        vec![Piece::Changeset(vec![
            post("accounts", json!({"name": "QQQQ"})).id(2),
            patch("$1", json!({"name": "x"})).id(3),
        ])],
        // Declared, but in another changeset.
        vec![
            Piece::Changeset(vec![post("accounts", json!({"name": "QQQQ"})).id(1)]),
            Piece::Changeset(vec![patch("$1", json!({"name": "x"})).id(2)]),
        ],
        // Outside a changeset there are none.
        vec![Piece::One(patch("$1", json!({"name": "x"})))],
        // A part that wrote no row leaves nothing to name.
        vec![Piece::Changeset(vec![
            post("accounts", json!({"name": "QQQQ"})).id(1),
            req("DELETE", "$1", None).id(2),
            patch("$2", json!({"name": "x"})).id(3),
        ])],
    ];
    for (i, pieces) in cases.iter().enumerate() {
        let (status, answer) = send(&emulator, None, pieces).await;
        assert_eq!(status, 400, "case {i}: {answer:?}");
        let failure = match answer.last().unwrap() {
            Got::One(r) => r,
            Got::Changeset(r) => &r[0],
        };
        assert_eq!(failure.status, 400, "case {i}");
        let (code, message) = failure.error();
        assert_eq!(code, "0x0");
        let missing = if i == 4 { "$2" } else { "$1" };
        assert_eq!(
            message,
            format!("Content-ID Reference: '{missing}' does not exist in the batch context."),
            "case {i}"
        );
        // Clean up what case 2's first changeset committed.
        for id in emulator.get_json("accounts?$select=accountid").await["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["accountid"].as_str().unwrap().to_owned())
        {
            emulator
                .request(Method::DELETE, &format!("accounts({id})"))
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(count(&emulator, "contacts", "contactid").await, 0);
}
