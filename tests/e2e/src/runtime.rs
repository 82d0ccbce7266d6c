//! A Lambda Runtime API of our own, and the function binaries it drives.
//!
//! The three routes of the Runtime API (`invocation/next`, `.../response`, `.../error`) are enough to run
//! a `provided.al2023` bootstrap exactly as Lambda runs it: the binary long-polls for an event, gets the
//! request id and deadline in headers, and posts its answer or its error. Tests get the same process
//! that ships, with its stdout and stderr captured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

/// How a function answered an invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The function reported an error (`errorType` and `errorMessage`).
    #[error("{error_type}: {message}")]
    Error { error_type: String, message: String },
    /// No answer within the time given.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The process exited (or was killed) before answering.
    #[error("the function exited before answering")]
    Exited,
}

/// The `(errorType, errorMessage)` of an invocation that must have failed with an error it reported,
/// not a timeout or a crash; otherwise a panic naming what happened, with `context` (a function's
/// logs, say).
pub fn expect_error(result: Result<Value, Failure>, context: &str) -> (String, String) {
    match result {
        Err(Failure::Error {
            error_type,
            message,
        }) => (error_type, message),
        other => panic!("expected a reported error, got {other:?}\n{context}"),
    }
}

impl Failure {
    pub fn error_type(&self) -> &str {
        match self {
            Failure::Error { error_type, .. } => error_type,
            Failure::Timeout(_) => "Timeout",
            Failure::Exited => "Exited",
        }
    }
}

struct Invocation {
    id: String,
    payload: Bytes,
    deadline_ms: u64,
}

/// An answer as the function sent it: parsed by whoever waits for it, so a benchmark can skip that.
type Outcome = Result<Bytes, Failure>;

struct State {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

/// The Runtime API endpoint one function process talks to.
struct RuntimeApi {
    address: SocketAddr,
    sender: mpsc::UnboundedSender<Invocation>,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue: tokio::sync::Mutex::new(receiver),
            pending: Mutex::new(HashMap::new()),
        });
        let shared = state.clone();
        let server = crate::serve(listener, move |req| route(shared.clone(), req));
        Ok(Self {
            address,
            sender,
            state,
            server,
        })
    }

    fn submit(&self, payload: Bytes, timeout: Duration) -> oneshot::Receiver<Outcome> {
        let id = uuid::Uuid::new_v4().to_string();
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (tx, rx) = oneshot::channel();
        self.state
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        // The receiver lives as long as the server task; a send can only fail after drop.
        let _ = self.sender.send(Invocation {
            id,
            payload,
            deadline_ms,
        });
        rx
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

async fn route(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["2018-06-01", "runtime", "invocation", "next"] => {
            let next = state.queue.lock().await.recv().await;
            let Some(invocation) = next else {
                return Ok(reply(StatusCode::GONE, Bytes::new()));
            };
            let mut response = reply(StatusCode::OK, invocation.payload);
            let headers = response.headers_mut();
            let values = [
                ("lambda-runtime-aws-request-id", invocation.id),
                (
                    "lambda-runtime-deadline-ms",
                    invocation.deadline_ms.to_string(),
                ),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:local".to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000".to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ];
            for (name, value) in values {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            Ok(response)
        }
        [
            "2018-06-01",
            "runtime",
            "invocation",
            id,
            kind @ ("response" | "error"),
        ] => {
            let id = (*id).to_owned();
            let is_error = *kind == "error";
            let body = req.into_body().collect().await?.to_bytes();
            let outcome = if is_error {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Err(Failure::Error {
                    error_type: value["errorType"].as_str().unwrap_or_default().to_owned(),
                    message: value["errorMessage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                })
            } else {
                Ok(body)
            };
            let sender = state
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if let Some(sender) = sender {
                let _ = sender.send(outcome);
            }
            Ok(reply(
                StatusCode::ACCEPTED,
                Bytes::from_static(b"{\"status\":\"OK\"}"),
            ))
        }
        ["2018-06-01", "runtime", "init", "error"] => Ok(reply(StatusCode::ACCEPTED, Bytes::new())),
        _ => Ok(reply(StatusCode::NOT_FOUND, Bytes::new())),
    }
}

/// The directory holding the workspace's binaries: `CRM_BIN_DIR`, or the one this program runs from
/// (`target/debug`, also for test programs in `target/debug/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// A workspace binary, or a message saying how to build it.
pub fn binary(name: &str) -> Result<PathBuf, std::io::Error> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} does not exist: build the binaries first (`cargo build --workspace --bins`; `make test` does it)",
                path.display()
            ),
        ))
    }
}

/// A function binary running against its own Runtime API.
pub struct Function {
    pub name: String,
    child: Option<Child>,
    api: RuntimeApi,
    logs: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("runtime_api", &self.api.address)
            .finish_non_exhaustive()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

impl Function {
    /// Starts `name` (a workspace binary) with `env` on top of what the Lambda runtime sets. The
    /// process environment is not inherited, so a developer's AWS settings never leak into a test.
    pub async fn start(name: &str, env: &[(String, String)]) -> std::io::Result<Self> {
        let api = RuntimeApi::start().await?;
        let mut function = Self {
            name: name.to_owned(),
            child: None,
            api,
            logs: Arc::new(Mutex::new(String::new())),
            env: env.to_vec(),
        };
        function.spawn()?;
        Ok(function)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut command = Command::new(binary(&self.name)?);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", self.api.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let echo = std::env::var_os("CRM_ECHO_LOGS").is_some();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = self.logs.clone();
            let name = self.name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if echo {
                        eprintln!("[{name}] {line}");
                    }
                    let mut logs = logs.lock().unwrap_or_else(PoisonError::into_inner);
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        self.child = Some(child);
        Ok(())
    }

    /// Invokes the function with a 30-second deadline.
    pub async fn invoke(&mut self, payload: &Value) -> Result<Value, Failure> {
        self.invoke_within(payload, Duration::from_secs(30)).await
    }

    /// Invokes the function with the given deadline, and waits that long (plus a little) for its
    /// answer, or until the process exits.
    pub async fn invoke_within(
        &mut self,
        payload: &Value,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let body = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
        self.invoke_bytes(body, timeout).await
    }

    /// Invokes the function with exactly these bytes as its payload (JSON or not).
    pub async fn invoke_bytes(&mut self, body: Bytes, timeout: Duration) -> Result<Value, Failure> {
        let answer = self.invoke_raw(body, timeout).await?;
        Ok(serde_json::from_slice(&answer).unwrap_or(Value::Null))
    }

    /// Invokes the function and returns its answer as the bytes it sent, unparsed.
    pub async fn invoke_raw(&mut self, body: Bytes, timeout: Duration) -> Result<Bytes, Failure> {
        let answer = self.api.submit(body, timeout);
        let Some(child) = self.child.as_mut() else {
            return Err(Failure::Exited);
        };
        tokio::select! {
            outcome = answer => outcome.unwrap_or(Err(Failure::Exited)),
            _ = child.wait() => Err(Failure::Exited),
            () = tokio::time::sleep(timeout + Duration::from_secs(2)) => Err(Failure::Timeout(timeout)),
        }
    }

    /// Starts an invocation and returns without waiting for it (for kill tests).
    pub fn invoke_detached(&self, payload: &Value, timeout: Duration) {
        let body = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
        drop(self.api.submit(body, timeout));
    }

    /// Kills the process at once (SIGKILL) and waits for it to go.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts a fresh process of the same function (a cold start), after a kill.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.kill().await;
        // Invocations queued for the dead process stay queued; the new one must not pick them up.
        self.api = RuntimeApi::start().await?;
        self.spawn()
    }

    /// Everything the process printed so far, stdout and stderr.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The logs once they contain `needle`, or as they stand when they still do not after the
    /// output readers have had many turns. A function writes its log lines before it answers, but the
    /// tasks reading its pipes may not have run yet when the answer arrives: this gives them their
    /// turns without waiting on a clock.
    pub async fn logs_with(&self, needle: &str) -> String {
        for _ in 0..10_000 {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            tokio::task::yield_now().await;
        }
        self.logs()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}
