//! The HTTP server: one hyper connection task per client, every request logged, the HTTP front end's
//! URL limits checked first, then faults, then service protection (when on), then routing.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;

use crate::control::{self, LogEntry, PartEntry};
use crate::reply::{Fail, Reply};
use crate::users::Caller;
use crate::{Emulator, Request, api, auth, clock, protection, webhooks};

/// The longest URL Dataverse accepts, in characters, counted whole: scheme, host, path and query
/// (Microsoft Learn, "Compose HTTP requests and handle errors", Maximum URL length).
const MAX_URL_CHARS: usize = 32_768;
/// The longest single path segment of a Web API URL (same page, Maximum OData Segment length). It is
/// HTTP.sys's default `UrlSegmentMaxLength`, so the front end refuses it, not the `OData` layer.
const MAX_SEGMENT_CHARS: usize = 260;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// What ASP.NET, in front of the Web API, refuses in a request path (its default
/// `requestPathInvalidCharacters`), checked after percent-decoding, so `%3A` is refused as `:` is.
/// A row whose alternate key value holds one of these cannot be addressed by that key in a URL
/// (Microsoft Learn, "Work with alternate keys", which lists `/` too, see `crate::api`, and lately
/// `+`, whose refusal is not documented and not emulated); a client finds such a row with `$filter`
/// on the key's columns instead.
const DANGEROUS_PATH_CHARS: [char; 8] = ['<', '>', '*', '%', '&', ':', '\\', '?'];

pub type Shared = Arc<Mutex<Emulator>>;

/// Returned by the service to make hyper close the connection without an answer (whether or not the
/// request was carried out first).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose by an injected fault")]
pub struct Dropped;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Emulator> {
    // A handler that panicked leaves consistent data behind (every write completes under the lock
    // before it can panic), so a poisoned lock is still usable.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub async fn serve(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, or a connection reset before it was accepted: the next accept
            // may well work, and every other test still needs the server.
            Err(error) => {
                eprintln!("dataverse-emulator: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            // A client hanging up mid-request is not the emulator's problem.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    shared: Shared,
    req: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    // The body comes last: the front end's checks need only the URL and the headers.
    let mut request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body: Bytes::new(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| request.path.clone(), |p| p.as_str().to_owned());
    let control = request.path.strip_prefix("/_emulator/").map(str::to_owned);

    // The front end refuses these before the service sees them, so no fault applies to them either,
    // and before reading what may be up to `MAX_BODY` of body for nothing.
    if control.is_none() {
        let authority = parts.uri.authority().map_or(request.host(), |a| a.as_str());
        if let Some(refusal) = front_end_refusal(authority, &request.path, &path_and_query) {
            let entry = log_entry(&request, &path_and_query, refusal.status, false, false);
            lock(&shared).log.push(entry);
            return Ok(to_response(refusal));
        }
    }

    request.body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(to_response(
                Fail::new(413, "0x80040216", "The request body is too large.").into_reply(),
            ));
        }
    };

    if let Some(rest) = control {
        if let Some(inner) = rest.strip_prefix("interactive/") {
            let (reply, jobs) = {
                let mut emulator = lock(&shared);
                let reply = interactive(&mut emulator, &request, inner);
                let jobs = webhooks::plan(&mut emulator, request.host());
                (reply, jobs)
            };
            for job in jobs {
                tokio::spawn(webhooks::delivery::run(Arc::clone(&shared), job));
            }
            return Ok(to_response(reply));
        }
        // Reading the delivery log may wait for deliveries to settle, which needs the lock free.
        if let Some(reply) = control::deliveries(&shared, &request, &rest).await {
            return Ok(to_response(reply));
        }
        let reply = control::handle(&mut lock(&shared), &request, &rest);
        return Ok(to_response(reply));
    }

    let log = |status: u16, fault: bool, answer_dropped: bool| {
        log_entry(&request, &path_and_query, status, fault, answer_dropped)
    };
    let fault = control::take_fault(&mut lock(&shared).faults, &request.method, &path_and_query);
    let mut drop_answer = false;
    if let Some(fault) = fault {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if fault.drop_connection {
            lock(&shared).log.push(log(0, true, false));
            return Err(Dropped);
        }
        if let Some(fail) = fault.failure() {
            lock(&shared).log.push(log(fail.status, true, false));
            return Ok(to_response(fail.into_reply()));
        }
        drop_answer = fault.drop_answer;
    }

    // Counted in flight until dropped, however this request ends. Dropping it takes the lock, so it
    // must never be dropped while this task holds the lock (it outlives the block below).
    let in_flight = match admit(&mut lock(&shared), &request, &path_and_query) {
        Ok(admitted) => admitted.map(|admitted| InFlight {
            shared: Arc::clone(&shared),
            admitted,
            started: Instant::now(),
        }),
        Err(refusal) => return Ok(to_response(refusal)),
    };

    let (mut reply, hold, jobs) = {
        let mut emulator = lock(&shared);
        // Dataverse's `Date` and its `createdon`/`modifiedon` come from one clock, and pollers rely
        // on that (they bound a scan by the answer's `Date`), so the emulator's moved clock shows
        // here too.
        let date = clock::format_http_date(emulator.store.clock.now());
        let (reply, parts, ran) = route(&mut emulator, &request);
        let reply = reply.with_header("date", date);
        // A batch executes each of its requests, so it is held once for each; a bulk message
        // once for each of its targets.
        let executed = u64::try_from(parts.len().max(1))
            .unwrap_or(u64::MAX)
            .saturating_add(ran.extra_operations);
        let hold = Duration::from_millis(
            emulator
                .protection
                .settings
                .simulated_execution_ms
                .saturating_mul(executed),
        );
        let mut entry = log(reply.status, drop_answer, drop_answer);
        entry.parts = parts;
        entry.bypass = ran.bypass;
        emulator.log.push(entry);
        // Queued under the same lock as the write, so a test that reads the delivery log after
        // this answer sees them; sent on tasks of their own, so the answer does not wait for them.
        let jobs = webhooks::plan(&mut emulator, request.host());
        (reply, hold, jobs)
    };
    for job in jobs {
        tokio::spawn(webhooks::delivery::run(Arc::clone(&shared), job));
    }
    if let Some(flight) = &in_flight {
        reply
            .headers
            .extend(flight.admitted.headers.iter().cloned());
        if !hold.is_zero() {
            // Server execution time: the request stays in flight, counted against concurrency and
            // then against the execution-time limit, while the answer waits.
            tokio::time::sleep(hold).await;
        }
    }
    if drop_answer {
        // The request was carried out and its effects stay: only the answer is lost, as when a
        // connection breaks after the service committed. This is what a client's retry logic must
        // not mistake for "never happened".
        return Err(Dropped);
    }
    Ok(to_response(reply))
}

/// A Web API request counted in flight against its user's service-protection limits until dropped,
/// however the request ends (answered, dropped, or abandoned by a client that hung up).
struct InFlight {
    shared: Shared,
    admitted: protection::Admitted,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ran = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut emulator = lock(&self.shared);
        let now = emulator.store.clock.now_ms();
        emulator.protection.end(&self.admitted, ran, now);
    }
}

/// Service protection's verdict on a request past the faults: `Ok(None)` when it has no user to
/// count against (not the Web API, or no valid token: it is answered as before); `Ok(Some(_))` when
/// admitted; the 429 when refused, already logged.
fn admit(
    em: &mut Emulator,
    request: &Request,
    path_and_query: &str,
) -> Result<Option<protection::Admitted>, Reply> {
    if !request.path.starts_with("/api/data/") {
        return Ok(None);
    }
    let now = em.store.clock.now();
    let Some(user) = em.auth.holder(request.header("authorization"), now) else {
        return Ok(None);
    };
    let user = user.to_owned();
    let now_ms = em.store.clock.now_ms();
    match em.protection.admit(&user, now_ms) {
        Ok(admitted) => Ok(Some(admitted)),
        Err(refusal) => {
            let limit = refusal.limit;
            let reply = refusal
                .into_fail()
                .into_reply()
                .with_header("date", clock::format_http_date(now));
            let mut entry = log_entry(request, path_and_query, reply.status, false, false);
            entry.throttled = Some(limit);
            em.log.push(entry);
            Err(reply)
        }
    }
}

fn log_entry(
    request: &Request,
    path_and_query: &str,
    status: u16,
    fault: bool,
    answer_dropped: bool,
) -> LogEntry {
    LogEntry {
        method: request.method.clone(),
        path: path_and_query.to_owned(),
        status,
        prefer: request.header("prefer").map(str::to_owned),
        if_match: request.header("if-match").map(str::to_owned),
        if_none_match: request.header("if-none-match").map(str::to_owned),
        fault,
        answer_dropped,
        parts: Vec::new(),
        throttled: None,
        bypass: Vec::new(),
    }
}

/// What the service's front end answers for a URL it will not pass on: too long as a whole (414), or
/// with a Web API path segment too long (400), from HTTP.sys; or with a Web API path that ASP.NET
/// finds dangerous (400, with a plain-text body: see [`DANGEROUS_PATH_CHARS`]). The URL is measured
/// as the client sent it, `http://` and the host included, percent-escapes counted as the characters
/// they are on the wire (the stricter reading: neither Dataverse nor HTTP.sys says whether escapes
/// count).
fn front_end_refusal(authority: &str, path: &str, path_and_query: &str) -> Option<Reply> {
    let url_chars = "http://".len() + authority.chars().count() + path_and_query.chars().count();
    if url_chars > MAX_URL_CHARS {
        return Some(Reply::front_end(
            414,
            "Bad Request - Request URL Too Long",
            "The request URL is too long.",
        ));
    }
    let long_segment = path.starts_with("/api/data/")
        && path
            .split('/')
            .any(|segment| segment.chars().count() > MAX_SEGMENT_CHARS);
    if long_segment {
        return Some(Reply::front_end(
            400,
            "Bad Request - Invalid URL",
            "The request URL is invalid.",
        ));
    }
    if path.starts_with("/api/data/") {
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        if let Some(c) = decoded.chars().find(|c| DANGEROUS_PATH_CHARS.contains(c)) {
            return Some(Reply::text(
                400,
                format!(
                    "A potentially dangerous Request.Path value was detected from the client ({c})."
                ),
            ));
        }
    }
    None
}

/// What a Web API request did besides its answer, for the request log and execution time.
#[derive(Debug, Default)]
struct Ran {
    /// The bypass headers that applied to it or to one of its parts.
    bypass: Vec<String>,
    /// Row operations beyond one per request (a bulk message's further targets).
    extra_operations: u64,
}

/// The answer to a request the front end passed on, and, for a `$batch`, the requests inside it.
fn route(em: &mut Emulator, req: &Request) -> (Reply, Vec<PartEntry>, Ran) {
    let Ok(path) = percent_decode_str(&req.path).decode_utf8() else {
        return (
            Fail::bad_query("The request path is not valid UTF-8.").into_reply(),
            Vec::new(),
            Ran::default(),
        );
    };
    // Exactly one leading slash: `//tenant/oauth2/...` is not the token endpoint, on Entra ID or here.
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or(&path)
        .splitn(4, '/')
        .collect();
    let reply = match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if !tenant.is_empty() => token(em, req, tenant),
        ["api", "data", version, rest] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => {
            return web_api(em, req, version, rest);
        }
        ["api", "data", version] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => {
            return web_api(em, req, version, "");
        }
        ["api", "data", other, ..] => Fail::segment_not_found(other).into_reply(),
        _ => Fail::segment_not_found(segments.first().copied().unwrap_or_default()).into_reply(),
    };
    (reply, Vec::new(), Ran::default())
}

fn web_api(
    em: &mut Emulator,
    req: &Request,
    version: &str,
    rest: &str,
) -> (Reply, Vec<PartEntry>, Ran) {
    let now = em.store.clock.now();
    let check = em.auth.check(req.header("authorization"), now);
    if !matches!(check, auth::Check::Valid) {
        let reply = auth::unauthorized(&check, &format!("http://{}", req.host())).into_reply();
        return (reply, Vec::new(), Ran::default());
    }
    // The request acts as the application user of the app registration its token was issued to.
    let client_id = em
        .auth
        .holder(req.header("authorization"), now)
        .map(str::to_owned);
    let user = match client_id.as_deref() {
        Some(client_id) => em.store.users.application(client_id),
        None => em.store.users.interactive,
    };
    em.store.caller = Caller {
        user,
        client_id,
        ..Caller::default()
    };
    // A batch is answered here rather than by `api::handle`, because its inner requests are logged
    // with it. They run through `api::handle` under this request's token.
    let (reply, parts) = if rest == "$batch" {
        api::batch::handle(&mut em.store, req, version)
    } else {
        let reply = api::handle(&mut em.store, req, version, rest).unwrap_or_else(Fail::into_reply);
        (reply, Vec::new())
    };
    let after = interactive_caller(em);
    let caller = std::mem::replace(&mut em.store.caller, after);
    let ran = Ran {
        bypass: caller.applied.into_iter().map(str::to_owned).collect(),
        extra_operations: caller.extra_operations,
    };
    (reply, parts, ran)
}

/// The caller of everything but a Web API request: the interactive user, bypassing nothing.
fn interactive_caller(em: &Emulator) -> Caller {
    Caller {
        user: em.store.users.interactive,
        ..Caller::default()
    }
}

/// `/_emulator/interactive/api/data/v9.2/...`: a Web API request made by the interactive user, as
/// somebody working in the app would make it: no token, and the same handlers, change tracking,
/// webhook steps and flow triggers as any Web API request. `$batch` is not offered here.
fn interactive(em: &mut Emulator, req: &Request, inner: &str) -> Reply {
    let Ok(path) = percent_decode_str(inner).decode_utf8() else {
        return Fail::bad_query("The request path is not valid UTF-8.").into_reply();
    };
    let segments: Vec<&str> = path.splitn(4, '/').collect();
    let (version, rest) = match segments.as_slice() {
        ["api", "data", version, rest] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => {
            (*version, *rest)
        }
        ["api", "data", version] if matches!(*version, "v9.0" | "v9.1" | "v9.2") => (*version, ""),
        _ => {
            return Reply::json(
                404,
                &serde_json::json!({"error": "expected /_emulator/interactive/api/data/v9.2/..."}),
            );
        }
    };
    if rest == "$batch" {
        return Fail::not_implemented("$batch as the interactive user").into_reply();
    }
    em.store.caller = interactive_caller(em);
    let date = clock::format_http_date(em.store.clock.now());
    let reply = api::handle(&mut em.store, req, version, rest).unwrap_or_else(Fail::into_reply);
    em.store.caller = interactive_caller(em);
    reply.with_header("date", date)
}

fn token(em: &mut Emulator, req: &Request, tenant: &str) -> Reply {
    if req.method != "POST" {
        return Reply::json(
            405,
            &serde_json::json!({"error": "invalid_request", "error_description": "AADSTS900561: The endpoint only accepts POST requests."}),
        );
    }
    let form: std::collections::HashMap<String, String> = url_form(&req.body);
    let basic = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let decode = |s: &str| {
                percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(std::borrow::Cow::into_owned)
            };
            Some((decode(id)?, decode(secret)?))
        });
    let now = em.store.clock.now();
    em.auth.token(tenant, &form, basic, req.host(), now)
}

fn url_form(body: &[u8]) -> std::collections::HashMap<String, String> {
    // `form_urlencoded` reads a pair without `=` as a name with an empty value. Such pairs are
    // dropped first, so a bare `client_secret` is answered as a missing parameter, not as a wrong one.
    body.split(|b| *b == b'&')
        .filter(|pair| pair.contains(&b'='))
        .flat_map(form_urlencoded::parse)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
