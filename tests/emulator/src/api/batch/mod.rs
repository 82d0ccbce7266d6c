//! `POST /api/data/v9.x/$batch`: several requests in one, as Microsoft Learn's "Execute batch
//! operations using the Web API" describes them, in the `multipart/mixed` format of OData 4.0 (11.7
//! Batch Requests). The body is read first, whole ([`read`]); then the parts run in order, each
//! through the same handlers as a request of its own (`super::handle`), under the batch's token.
//!
//! - **Changesets are atomic.** Their parts run one by one, each seeing the writes before it; if one
//!   fails, everything the changeset wrote is undone ([`Store::rollback`]): rows, key indexes,
//!   `versionnumber`s, tombstones, and the writes webhook steps were to hear of. A changeset that
//!   succeeds reaches change tracking and the steps as ordinary writes do.
//! - **`$n`.** In a changeset, a part with `Content-ID: n` names the row it wrote; a later part of
//!   the same changeset may use `$n` as (the start of) its URL (`PATCH $1`, `$1/primarycontactid/$ref`)
//!   or as a value of `@odata.bind` or `@odata.id` in its body. A `$n` that no earlier part of the
//!   changeset declared (or whose part wrote no row, like a delete) answers 400 "Content-ID
//!   Reference: '$n' does not exist in the batch context.", as Learn records.
//! - **Errors.** By default the batch stops at the first part that fails and answers with that
//!   part's status, its body a `multipart/mixed` holding only that part's response (inside a
//!   changeset response, with its `Content-ID`, when it is in one). With `Prefer:
//!   odata.continue-on-error` every top-level part runs, the batch answers 200, and a changeset that
//!   failed answers with the one response of the part that failed it.
//! - **Unreadable bodies** run nothing: a body the `OData` library cannot read answers 400 with the
//!   error envelope (code `0x0`, the library's words); one whose structure has a line break other
//!   than CRLF, or no CRLF after its closing delimiter, answers as Dataverse does when it cannot
//!   read the last request's body: 400, a `multipart/mixed` holding one 400 response,
//!   `0x80048d19` "... Stream was not readable.".
//!
//! Each part's response is a complete HTTP response: a write `204 No Content` with `Location` and
//! `OData-EntityId` (or `201`/`200` with the row, for `Prefer: return=representation`), a read
//! `200 OK` with `odata.streaming=true` JSON, an error its envelope and a `REQ_ID`. Nothing here
//! applies the front end's URL rules (those are for the URL on the wire, and a part's URL travels in
//! the body), and injected faults apply to the `$batch` request itself, never to a part.

pub mod read;

use std::collections::HashMap;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{HOST, HeaderValue};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use uuid::Uuid;

use self::read::{Batch, Item, Media, Part, ReadError};
use crate::Request;
use crate::control::PartEntry;
use crate::odata::query::Prefer;
use crate::reply::{Fail, Reply};
use crate::store::Store;

/// The `OData` segments that start with `$` and so are not `Content-ID` references.
const SYSTEM_SEGMENTS: [&str; 9] = [
    "metadata",
    "batch",
    "entity",
    "all",
    "crossjoin",
    "root",
    "count",
    "ref",
    "value",
];

/// Answers a `$batch` request (already authenticated), and lists the requests inside it for the
/// request log.
pub fn handle(store: &mut Store, req: &Request, version: &str) -> (Reply, Vec<PartEntry>) {
    if req.method != "POST" {
        return (
            Fail::method_not_allowed(&req.method).into_reply(),
            Vec::new(),
        );
    }
    let prefer = match Prefer::parse(&req.headers_all("prefer")) {
        Ok(prefer) => prefer,
        Err(fail) => return (fail.into_reply(), Vec::new()),
    };
    let content_type = req.header("content-type").unwrap_or_default();
    let boundary = match read::media(content_type) {
        Media::Multipart(Some(boundary)) => boundary,
        Media::Multipart(None) => {
            return (
                unreadable(&ReadError::Boundary(content_type.to_owned())),
                Vec::new(),
            );
        }
        Media::Http | Media::Other => {
            // The emulator's wording and status, as for a JSON body of the wrong type.
            let fail = Fail::new(
                415,
                "0x80060888",
                format!(
                    "The content type '{content_type}' is not supported for $batch. Send multipart/mixed with a boundary."
                ),
            );
            return (fail.into_reply(), Vec::new());
        }
    };
    let batch = match read::read(&req.body, &boundary) {
        Ok(batch) => batch,
        Err(error) => return (unreadable(&error), Vec::new()),
    };
    let mut log = entries(&batch);
    if !batch.crlf {
        return (stream_not_readable(&batch, version), log);
    }
    let mut run = Run {
        store,
        outer: req,
        version,
        log: &mut log,
        next: 0,
    };
    let mut answers = Vec::with_capacity(batch.items.len());
    let mut stopped = None;
    for (position, item) in batch.items.iter().enumerate() {
        let answer = match item {
            Item::Request(part) => {
                // A request outside a changeset is a transaction of its own.
                run.store.begin();
                let reply = run.part(part, None, &HashMap::new());
                if reply.status >= 400 {
                    run.store.rollback();
                } else {
                    run.store.commit();
                }
                Answer::Single(part.content_id.clone(), reply)
            }
            Item::Changeset(parts) => run.changeset(parts, position + 1),
        };
        if answer.failed() && !prefer.continue_on_error {
            stopped = Some(answer);
            break;
        }
        answers.push(answer);
    }
    let boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = Vec::new();
    let status = if let Some(failure) = stopped {
        failure.write(&mut out, &boundary);
        failure.status()
    } else {
        for answer in &answers {
            answer.write(&mut out, &boundary);
        }
        200
    };
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut reply = Reply::empty(status).with_header(
        "content-type",
        format!("multipart/mixed; boundary={boundary}"),
    );
    if prefer.continue_on_error {
        reply = reply.with_header("preference-applied", "odata.continue-on-error");
    }
    reply.body = out;
    (reply, log)
}

/// What a top-level part answered.
#[derive(Debug)]
enum Answer {
    /// A request outside changesets, with its `Content-ID` if it had one.
    Single(Option<String>, Reply),
    /// A changeset: every part's response, or only that of the part that failed it.
    Changeset(Vec<(Option<String>, Reply)>),
}

impl Answer {
    fn failed(&self) -> bool {
        self.status() >= 400
    }

    /// The status a batch stopped by this answer takes: its failure's.
    fn status(&self) -> u16 {
        match self {
            Answer::Single(_, reply) => reply.status,
            Answer::Changeset(replies) => replies
                .iter()
                .map(|(_, r)| r.status)
                .find(|s| *s >= 400)
                .unwrap_or(200),
        }
    }

    fn write(&self, out: &mut Vec<u8>, boundary: &str) {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match self {
            Answer::Single(id, reply) => write_response(out, id.as_deref(), reply),
            Answer::Changeset(replies) => {
                let inner = format!("changesetresponse_{}", Uuid::new_v4());
                out.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary={inner}\r\n\r\n").as_bytes(),
                );
                for (id, reply) in replies {
                    out.extend_from_slice(format!("--{inner}\r\n").as_bytes());
                    write_response(out, id.as_deref(), reply);
                }
                out.extend_from_slice(format!("--{inner}--\r\n").as_bytes());
            }
        }
    }
}

/// One `application/http` part of the answer, `Content-ID` first, as Learn's examples show it.
fn write_response(out: &mut Vec<u8>, content_id: Option<&str>, reply: &Reply) {
    out.extend_from_slice(
        b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n",
    );
    if let Some(id) = content_id {
        out.extend_from_slice(format!("Content-ID: {id}\r\n").as_bytes());
    }
    let reason = hyper::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(format!("\r\nHTTP/1.1 {} {reason}\r\n", reply.status).as_bytes());
    let failed = reply.status >= 400;
    if failed {
        // Learn's error parts carry a request id first.
        out.extend_from_slice(format!("REQ_ID: {}\r\n", Uuid::new_v4()).as_bytes());
    }
    for (name, value) in &reply.headers {
        let mut value = value.clone();
        match *name {
            // A created or updated row's address, under both names, as in Learn's examples.
            "odata-entityid" => {
                out.extend_from_slice(format!("Location: {value}\r\n").as_bytes());
            }
            // Results inside a batch are written as streams.
            "content-type" if !failed && value.starts_with("application/json") => {
                value.push_str("; odata.streaming=true");
            }
            _ => {}
        }
        out.extend_from_slice(format!("{}: {value}\r\n", display_name(name)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    out.extend_from_slice(b"\r\n");
}

/// A header name as the service writes it (`OData-EntityId`, `Content-Type`, `ETag`).
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|word| match word {
            "odata" => "OData".to_owned(),
            "etag" => "ETag".to_owned(),
            "entityid" => "EntityId".to_owned(),
            word => {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A body the `OData` library cannot read: nothing runs, and the error is the whole answer.
fn unreadable(error: &ReadError) -> Reply {
    Fail::new(400, "0x0", error.to_string()).into_reply()
}

/// A body with a line break other than CRLF in its structure, or none after its closing delimiter.
/// Dataverse then cannot read the last request's body, and answers with that request's failure
/// (Learn, "Troubleshoot Dataverse Web API client errors"), naming its entity set. The emulator runs
/// none of the parts; the service would have run the ones before.
fn stream_not_readable(batch: &Batch, version: &str) -> Reply {
    let set = batch
        .items
        .iter()
        .flat_map(|item| match item {
            Item::Request(part) => std::slice::from_ref(part),
            Item::Changeset(parts) => parts.as_slice(),
        })
        .next_back()
        .map(|part| entity_set(&part.url, version))
        .unwrap_or_default();
    let fail = Fail::new(
        400,
        "0x80048d19",
        format!(
            "Error identified in Payload provided by the user for Entity :'{set}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293 ---->  InnerException : System.ArgumentException: Stream was not readable."
        ),
    );
    let boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = Vec::new();
    Answer::Single(None, fail.into_reply()).write(&mut out, &boundary);
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut reply = Reply::empty(400).with_header(
        "content-type",
        format!("multipart/mixed; boundary={boundary}"),
    );
    reply.body = out;
    reply
}

/// The first segment of a part's URL after the service root, without its key: the entity set.
fn entity_set(url: &str, version: &str) -> String {
    let (path, _) = target(url, version);
    let rest = path
        .strip_prefix("/api/data/")
        .and_then(|p| p.split_once('/'))
        .map_or(path.as_str(), |(_, rest)| rest);
    rest.split(['/', '(']).next().unwrap_or_default().to_owned()
}

/// The log's list of the parts, none of them run yet.
fn entries(batch: &Batch) -> Vec<PartEntry> {
    let entry = |part: &Part, changeset: Option<usize>| {
        let header = |name: &str| {
            part.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        PartEntry {
            method: part.method.clone(),
            url: part.url.clone(),
            content_id: part.content_id.clone(),
            changeset,
            status: 0,
            rolled_back: false,
            prefer: header("prefer"),
            if_match: header("if-match"),
            if_none_match: header("if-none-match"),
        }
    };
    let mut entries = Vec::new();
    for (position, item) in batch.items.iter().enumerate() {
        match item {
            Item::Request(part) => entries.push(entry(part, None)),
            Item::Changeset(parts) => {
                entries.extend(parts.iter().map(|p| entry(p, Some(position + 1))));
            }
        }
    }
    entries
}

/// A batch being run.
struct Run<'a> {
    store: &'a mut Store,
    outer: &'a Request,
    version: &'a str,
    log: &'a mut Vec<PartEntry>,
    /// The log entry of the next part to run.
    next: usize,
}

impl Run<'_> {
    /// Runs a changeset's parts until one fails; keeps their writes only if none does.
    fn changeset(&mut self, parts: &[Part], position: usize) -> Answer {
        let first = self.next;
        self.store.begin();
        let mut locations: HashMap<String, String> = HashMap::new();
        let mut replies = Vec::with_capacity(parts.len());
        for part in parts {
            let reply = self.part(part, Some(position), &locations);
            if reply.status >= 400 {
                self.store.rollback();
                for entry in &mut self.log[first..self.next - 1] {
                    entry.rolled_back = true;
                }
                // The parts after it never run.
                self.next = first + parts.len();
                return Answer::Changeset(vec![(part.content_id.clone(), reply)]);
            }
            if let (Some(id), Some(location)) = (&part.content_id, &reply.location) {
                locations.insert(id.clone(), location.clone());
            }
            replies.push((part.content_id.clone(), reply));
        }
        self.store.commit();
        Answer::Changeset(replies)
    }

    /// Runs one request, `locations` holding the rows its changeset's earlier parts wrote, by
    /// `Content-ID`.
    fn part(
        &mut self,
        part: &Part,
        changeset: Option<usize>,
        locations: &HashMap<String, String>,
    ) -> Reply {
        let reply = self
            .dispatch(part, locations)
            .unwrap_or_else(Fail::into_reply);
        if let Some(entry) = self.log.get_mut(self.next) {
            debug_assert_eq!(entry.changeset, changeset);
            entry.status = reply.status;
        }
        self.next += 1;
        reply
    }

    fn dispatch(
        &mut self,
        part: &Part,
        locations: &HashMap<String, String>,
    ) -> Result<Reply, Fail> {
        let url = resolve_url(&part.url, locations)?;
        let body = resolve_body(&part.body, locations)?;
        let (path, query) = target(&url, self.version);
        let Ok(decoded) = percent_decode_str(&path).decode_utf8() else {
            return Err(Fail::bad_query("The request path is not valid UTF-8."));
        };
        let decoded = decoded.into_owned();
        let segments: Vec<&str> = decoded
            .strip_prefix('/')
            .unwrap_or(&decoded)
            .splitn(4, '/')
            .collect();
        let (version, rest) = match segments.as_slice() {
            ["api", "data", version, rest] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => {
                (*version, *rest)
            }
            ["api", "data", version] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => {
                (*version, "")
            }
            ["api", "data", other, ..] => return Err(Fail::segment_not_found(other)),
            other => {
                return Err(Fail::segment_not_found(
                    other.first().copied().unwrap_or_default(),
                ));
            }
        };
        let mut headers: HeaderMap = part.headers.clone();
        // The part is answered for the host the batch reached, whatever host its URL names.
        headers.insert(
            HOST,
            HeaderValue::from_str(self.outer.host())
                .unwrap_or(HeaderValue::from_static("localhost")),
        );
        let inner = Request {
            method: part.method.clone(),
            path,
            query,
            headers,
            body,
        };
        super::handle(self.store, &inner, version, rest)
    }
}

/// `$n` at the start of a URL, for the row part `n` wrote.
fn resolve_url(url: &str, locations: &HashMap<String, String>) -> Result<String, Fail> {
    match reference(url) {
        Some((id, rest)) => Ok(format!("{}{rest}", located(id, locations)?)),
        None => Ok(url.to_owned()),
    }
}

/// `$n` as a value of `@odata.bind` or `@odata.id` anywhere in a JSON body. A body that is not JSON
/// is passed on as it is, for the handler to refuse.
fn resolve_body(body: &Bytes, locations: &HashMap<String, String>) -> Result<Bytes, Fail> {
    if !body.contains(&b'$') {
        return Ok(body.clone());
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Ok(body.clone());
    };
    if !resolve_value(&mut value, false, locations)? {
        return Ok(body.clone());
    }
    Ok(Bytes::from(value.to_string()))
}

/// Replaces references in `value` (a reference itself when `bind` says it is the value of a
/// binding); whether it replaced any.
fn resolve_value(
    value: &mut Value,
    bind: bool,
    locations: &HashMap<String, String>,
) -> Result<bool, Fail> {
    match value {
        Value::String(text) if bind => match reference(text) {
            Some((id, rest)) => {
                *text = format!("{}{rest}", located(id, locations)?);
                Ok(true)
            }
            None => Ok(false),
        },
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= resolve_value(item, bind, locations)?;
            }
            Ok(changed)
        }
        Value::Object(map) => {
            let mut changed = false;
            for (key, item) in map.iter_mut() {
                let bind = key.ends_with("@odata.bind") || key == "@odata.id";
                changed |= resolve_value(item, bind, locations)?;
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

/// `$<id>` and what follows it, when `text` starts with a `Content-ID` reference.
fn reference(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix('$')?;
    // The characters OData allows in a Content-ID reference.
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        .unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty() && !SYSTEM_SEGMENTS.contains(&id)).then(|| (id, &rest[end..]))
}

fn located<'a>(id: &str, locations: &'a HashMap<String, String>) -> Result<&'a str, Fail> {
    locations.get(id).map(String::as_str).ok_or_else(|| {
        Fail::new(
            400,
            "0x0",
            format!("Content-ID Reference: '${id}' does not exist in the batch context."),
        )
    })
}

/// The raw path and query a part's URL names: an absolute URL (whatever its host), a path, or a
/// path relative to the service root of `version`.
fn target(url: &str, version: &str) -> (String, String) {
    let url = url.split('#').next().unwrap_or(url);
    let path_and_query = match url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        Some(after_scheme) => match after_scheme.find('/') {
            Some(slash) => after_scheme[slash..].to_owned(),
            None => "/".to_owned(),
        },
        None if url.starts_with('/') => url.to_owned(),
        None => format!("/api/data/{version}/{url}"),
    };
    match path_and_query.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (path_and_query, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_id_references_but_not_system_segments() {
        assert_eq!(reference("$1"), Some(("1", "")));
        assert_eq!(
            reference("$12/contact_customer_accounts/$ref"),
            Some(("12", "/contact_customer_accounts/$ref"))
        );
        assert_eq!(reference("$metadata"), None);
        assert_eq!(reference("accounts"), None);
        assert_eq!(reference("$"), None);
    }

    #[test]
    fn reads_absolute_relative_and_rooted_urls() {
        let t = |url| target(url, "v9.2");
        assert_eq!(
            t("http://org.example/api/data/v9.2/accounts?$top=1"),
            ("/api/data/v9.2/accounts".into(), "$top=1".into())
        );
        assert_eq!(
            t("/api/data/v9.1/contacts"),
            ("/api/data/v9.1/contacts".into(), String::new())
        );
        assert_eq!(
            t("accounts(1)"),
            ("/api/data/v9.2/accounts(1)".into(), String::new())
        );
    }

    #[test]
    fn resolves_references_in_bindings_only() {
        let locations = HashMap::from([(
            "1".to_owned(),
            "http://h/api/data/v9.2/accounts(a)".to_owned(),
        )]);
        let body = Bytes::from_static(
            br#"{"name":"$1","parentcustomerid_account@odata.bind":"$1","x":{"@odata.id":"$1"}}"#,
        );
        let resolved: Value =
            serde_json::from_slice(&resolve_body(&body, &locations).unwrap()).unwrap();
        assert_eq!(resolved["name"], "$1");
        assert_eq!(
            resolved["parentcustomerid_account@odata.bind"],
            "http://h/api/data/v9.2/accounts(a)"
        );
        assert_eq!(
            resolved["x"]["@odata.id"],
            "http://h/api/data/v9.2/accounts(a)"
        );
        let unknown = Bytes::from_static(br#"{"a@odata.bind":"$2"}"#);
        assert_eq!(
            resolve_body(&unknown, &locations).unwrap_err().message,
            "Content-ID Reference: '$2' does not exist in the batch context."
        );
    }

    #[test]
    fn writes_header_names_as_the_service_does() {
        assert_eq!(display_name("odata-entityid"), "OData-EntityId");
        assert_eq!(display_name("content-type"), "Content-Type");
        assert_eq!(display_name("etag"), "ETag");
        assert_eq!(display_name("preference-applied"), "Preference-Applied");
    }
}
