//! A fault-injecting HTTP proxy between a function and moto's S3.
//!
//! [`crate::proxy`] tells AWS calls apart by their `X-Amz-Target` header, which S3's REST protocol
//! does not send: an S3 call is named by its method and query (`PUT ?partNumber=2&uploadId=...` is
//! `UploadPart`). This proxy forwards every request to moto, records each call's method and query,
//! and answers the calls a [`S3Fault`] picks with an S3 error, or never, or with a body cut short.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// An S3 operation, as its method and query name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3Call {
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    /// `GET` of an object (the SDK names it in the query: `x-id=GetObject`).
    GetObject,
    Other,
}

impl S3Call {
    fn of(method: &hyper::Method, query: &str) -> Self {
        let has = |name: &str| {
            query
                .split('&')
                .any(|pair| pair == name || pair.starts_with(&format!("{name}=")))
        };
        if method == hyper::Method::GET && query.split('&').any(|pair| pair == "x-id=GetObject") {
            return S3Call::GetObject;
        }
        match (
            method.as_str(),
            has("uploads"),
            has("uploadId"),
            has("partNumber"),
        ) {
            ("POST", true, _, _) => S3Call::CreateMultipartUpload,
            ("PUT", _, true, true) => S3Call::UploadPart,
            ("POST", _, true, _) => S3Call::CompleteMultipartUpload,
            ("DELETE", _, true, _) => S3Call::AbortMultipartUpload,
            ("PUT", false, false, false) => S3Call::PutObject,
            _ => S3Call::Other,
        }
    }
}

/// What happens to the calls a fault picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Answer {
    /// An S3 error with this status and code; the call is not forwarded.
    Error(u16, &'static str),
    /// Never forwarded, never answered.
    Hold,
    /// Forwarded, so moto applies it, and the connection closed without moto's answer: what a
    /// caller sees when an answer is lost on the way back.
    Lost,
    /// Forwarded, so moto applies it, and never answered.
    AppliedThenHold,
    /// Forwarded, and moto's answer sent back with its status and headers (`Content-Length`
    /// included) but only the first this many bytes of its body, then the connection closed: a
    /// body that breaks off partway, as a reset connection leaves a `GetObject`.
    CutBody(usize),
}

/// The calls to `call` after the first `after` of them get `answer`.
#[derive(Debug, Clone, Copy)]
pub struct S3Fault {
    pub call: S3Call,
    pub after: usize,
    pub answer: S3Answer,
}

#[derive(Debug, Default)]
struct State {
    fault: Option<S3Fault>,
    seen: Vec<S3Call>,
}

/// The proxy: point a function's `AWS_ENDPOINT_URL_S3` at [`S3Proxy::url`].
#[derive(Debug)]
pub struct S3Proxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl S3Proxy {
    pub async fn start(target: &str, fault: Option<S3Fault>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            fault,
            seen: Vec::new(),
        }));
        let shared = state.clone();
        let target = target.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let server = crate::serve(listener, move |req| {
            forward(shared.clone(), http.clone(), target.clone(), req)
        });
        Ok(Self { url, state, server })
    }

    /// Replaces the fault (`None`: forward every call from now on).
    pub fn set_fault(&self, fault: Option<S3Fault>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fault = fault;
    }

    /// Every S3 call the proxy has seen, in order, faulted ones included.
    pub fn calls(&self) -> Vec<S3Call> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .clone()
    }
}

/// An answer's body: whole, or cut short after its first bytes.
#[derive(Debug)]
pub enum ProxyBody {
    Whole(Full<Bytes>),
    /// These bytes; then, once hyper has flushed them, an error, which makes hyper close the
    /// connection before the length the headers announced.
    Cut {
        bytes: Option<Bytes>,
        flushed: bool,
    },
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Whole(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Cut { bytes, flushed } => {
                if let Some(bytes) = bytes.take() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                if !*flushed {
                    // Pending once: hyper writes out what it holds before it polls again.
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err("the test proxy cut the body short".into())))
            }
        }
    }
}

async fn forward(
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    target: String,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Box<dyn std::error::Error + Send + Sync>> {
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let call = S3Call::of(&method, req.uri().query().unwrap_or(""));
    let fault = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let earlier = state.seen.iter().filter(|c| **c == call).count();
        state.seen.push(call);
        state
            .fault
            .filter(|f| f.call == call && earlier >= f.after)
            .map(|f| f.answer)
    };
    match fault {
        Some(S3Answer::Hold) => std::future::pending().await,
        Some(S3Answer::Error(status, code)) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
            );
            let mut response = Response::new(ProxyBody::Whole(Full::new(Bytes::from(body))));
            *response.status_mut() = hyper::StatusCode::from_u16(status)?;
            response
                .headers_mut()
                .insert("content-type", "application/xml".parse()?);
            Ok(response)
        }
        Some(S3Answer::CutBody(keep)) => {
            let (parts, body) = send_on(&http, &target, &path_and_query, req)
                .await?
                .into_parts();
            let whole = body.collect().await?.to_bytes();
            let mut response = Response::from_parts(
                parts,
                ProxyBody::Cut {
                    bytes: Some(whole.slice(..keep.min(whole.len()))),
                    flushed: false,
                },
            );
            // The whole body's length, so that the client knows it was cut short.
            response
                .headers_mut()
                .insert("content-length", whole.len().into());
            Ok(response)
        }
        Some(S3Answer::Lost) => {
            send_on(&http, &target, &path_and_query, req).await?;
            // An error from the service makes hyper close the connection without an answer.
            Err("the test proxy lost moto's answer".into())
        }
        Some(S3Answer::AppliedThenHold) => {
            send_on(&http, &target, &path_and_query, req).await?;
            std::future::pending().await
        }
        None => {
            let (parts, body) = send_on(&http, &target, &path_and_query, req)
                .await?
                .into_parts();
            Ok(Response::from_parts(parts, ProxyBody::Whole(body)))
        }
    }
}

/// Sends the request on to moto, and its answer back as it came.
async fn send_on(
    http: &reqwest::Client,
    target: &str,
    path_and_query: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await?.to_bytes();
    let mut outgoing = http.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes())?,
        format!("{target}{path_and_query}"),
    );
    for (name, value) in &headers {
        if name != hyper::header::HOST {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = outgoing.body(body).send().await?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(answer.status().as_u16())?;
    // Framing is hyper's to write for the body as sent on.
    let framing = ["content-length", "transfer-encoding", "connection"];
    for (name, value) in answer.headers() {
        if framing.contains(&name.as_str()) {
            continue;
        }
        response.headers_mut().append(
            name.as_str().parse::<hyper::header::HeaderName>()?,
            value.as_bytes().try_into()?,
        );
    }
    *response.body_mut() = Full::new(answer.bytes().await?);
    Ok(response)
}
