//! A running emulator and a typed client for its control API (see [`crate::control`]): the one way the
//! emulator's own tests, the `dataverse` client's tests and the cross-crate suites start an emulator and
//! steer it.
//!
//! Behind the `client` feature, so the emulator binary does not link reqwest.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub use crate::control::{Fault, LogEntry, PartEntry, Summary};
pub use crate::protection::{Change as ProtectionChange, Limit, State as ProtectionState, Usage};
pub use crate::webhooks::{Attempt, AuthType, Delivery, DeliveryLog, DeliveryState, Message};
use crate::{Emulator, Seed, cli, server};

/// How long a started binary may take to say where it listens. Generous: on a loaded CI machine
/// the first start also pays for the page cache.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot start {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the emulator's stdout is not a pipe")]
    NoStdout,
    #[error("cannot read the emulator's first line")]
    Ready(#[source] std::io::Error),
    #[error("the emulator did not say where it listens within {0:?}")]
    NotReady(Duration),
    #[error("the emulator's first line is not `listening on <url>`: {0:?}")]
    FirstLine(String),
    #[error("cannot listen for an in-process emulator")]
    Listen(#[source] std::io::Error),
    #[error("{method} {path}")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{method} {path} answered a body this client cannot read")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the emulator's clock reads {now:?}, which is not RFC 3339")]
    Clock {
        now: String,
        #[source]
        source: time::error::Parse,
    },
}

/// What keeps the emulator running; stopping it is dropping it.
#[derive(Debug)]
enum Server {
    Process(Child),
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
}

impl Drop for Server {
    fn drop(&mut self) {
        match self {
            // Not waited for: tokio reaps the child in the background, and a test's drop must not
            // block its runtime.
            Self::Process(child) => {
                let _ = child.start_kill();
            }
            Self::Task(task) => task.abort(),
        }
    }
}

/// A running emulator, stopped when dropped, and typed calls to its control API.
#[derive(Debug)]
pub struct EmulatorClient {
    url: String,
    http: reqwest::Client,
    _server: Server,
}

/// The body of a control call that sends none.
const NO_BODY: Option<&()> = None;

impl EmulatorClient {
    /// Starts the emulator binary at `binary` with `args` and waits for its `listening on <url>` line.
    pub async fn start(binary: impl AsRef<Path>, args: &[&str]) -> Result<Self, ControlError> {
        let binary = binary.as_ref();
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ControlError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let stdout = child.stdout.take().ok_or(ControlError::NoStdout)?;
        let mut line = String::new();
        tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
            .await
            .map_err(|_| ControlError::NotReady(READY_TIMEOUT))?
            .map_err(ControlError::Ready)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| ControlError::FirstLine(line.clone()))?
            .to_owned();
        Ok(Self::new(url, Server::Process(child)))
    }

    /// Serves an emulator from this process, on a task of the current tokio runtime. For suites
    /// outside this crate that cannot name its binary: a dependency's binaries are not built for
    /// them.
    pub async fn serve(options: &cli::Options) -> Result<Self, ControlError> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(ControlError::Listen)?;
        let address = listener.local_addr().map_err(ControlError::Listen)?;
        let shared = Arc::new(Mutex::new(Emulator::new(options)));
        let task = tokio::spawn(server::serve(listener, shared));
        Ok(Self::new(format!("http://{address}"), Server::Task(task)))
    }

    fn new(url: String, server: Server) -> Self {
        Self {
            url,
            http: reqwest::Client::new(),
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP client the control calls use, for Web API calls of the caller's own.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The Web API URL of `path`, e.g. `accounts?$top=1`.
    pub fn web_api(&self, path: &str) -> String {
        format!("{}/api/data/v9.2/{path}", self.url)
    }

    /// An access token for the Web API, from the token endpoint.
    pub async fn access_token(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<String, ControlError> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let path = format!("/{}/oauth2/v2.0/token", crate::TENANT_ID);
        let scope = format!("{}/.default", self.url);
        let request = self.http.post(format!("{}{path}", self.url)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("scope", &scope),
        ]);
        let body = self.send(request, Method::POST, &path).await?;
        let token: Token = decode(&body, Method::POST, &path)?;
        Ok(token.access_token)
    }

    /// A request to `/_emulator/{path}`, for what the typed calls do not cover: a test of the
    /// control API's own refusals, say.
    pub fn control_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/_emulator/{path}", self.url))
    }

    /// `POST /_emulator/{path}` with a JSON body, expecting success: its answer, `null` when empty.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ControlError> {
        let answer = self.call(Method::POST, path, Some(body)).await?;
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        decode(&answer, Method::POST, path)
    }

    /// Empties the organisation and loads `seed`; faults and the request log are cleared too.
    pub async fn reset(&self, seed: Seed) -> Result<(), ControlError> {
        let seed = match seed {
            Seed::Demo => "demo",
            Seed::None => "none",
        };
        self.call(Method::POST, "reset", Some(&json!({"seed": seed})))
            .await?;
        Ok(())
    }

    /// Adds a custom table.
    pub async fn add_table(&self, table: &NewTable) -> Result<(), ControlError> {
        self.call(Method::POST, "tables", Some(table)).await?;
        Ok(())
    }

    /// Defines an alternate key named `name` (a schema name such as `aws_accountnumber`) on `table` (a
    /// logical or entity set name), over `columns` (logical names; a lookup as `x`, not `_x_value`).
    /// The emulator refuses what Dataverse would refuse, rows that already break the key included.
    pub async fn add_key(
        &self,
        table: &str,
        name: &str,
        columns: &[&str],
    ) -> Result<(), ControlError> {
        let path = format!("tables/{table}/keys");
        let body = json!({"name": name, "columns": columns});
        self.call(Method::POST, &path, Some(&body)).await?;
        Ok(())
    }

    /// Injects `fault`; returns how many faults are now in place.
    pub async fn add_fault(&self, fault: &Fault) -> Result<usize, ControlError> {
        #[derive(Deserialize)]
        struct Added {
            faults: usize,
        }
        let answer = self.call(Method::POST, "faults", Some(fault)).await?;
        let added: Added = decode(&answer, Method::POST, "faults")?;
        Ok(added.faults)
    }

    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        self.call(Method::DELETE, "faults", NO_BODY).await?;
        Ok(())
    }

    /// The request log since it was last cleared, oldest first.
    pub async fn requests(&self) -> Result<Vec<LogEntry>, ControlError> {
        let answer = self.call(Method::GET, "requests", NO_BODY).await?;
        decode(&answer, Method::GET, "requests")
    }

    /// [`EmulatorClient::requests`] as the emulator wrote it, for checks of the log's JSON itself.
    pub async fn requests_json(&self) -> Result<Vec<Value>, ControlError> {
        let answer = self.call(Method::GET, "requests", NO_BODY).await?;
        decode(&answer, Method::GET, "requests")
    }

    pub async fn clear_requests(&self) -> Result<(), ControlError> {
        self.call(Method::DELETE, "requests", NO_BODY).await?;
        Ok(())
    }

    /// The request log, then clears it: each call sees what happened since the previous one.
    pub async fn take_requests(&self) -> Result<Vec<LogEntry>, ControlError> {
        let log = self.requests().await?;
        self.clear_requests().await?;
        Ok(log)
    }

    /// The request log counted: Web API requests by status, token requests, and 429s by limit.
    pub async fn request_summary(&self) -> Result<Summary, ControlError> {
        let answer = self.call(Method::GET, "requests/summary", NO_BODY).await?;
        decode(&answer, Method::GET, "requests/summary")
    }

    /// The service-protection settings and what each user has used of the window.
    pub async fn service_protection(&self) -> Result<ProtectionState, ControlError> {
        let answer = self
            .call(Method::GET, "service-protection", NO_BODY)
            .await?;
        decode(&answer, Method::GET, "service-protection")
    }

    /// Changes the service-protection settings (the fields given); returns them as they now are.
    pub async fn set_service_protection(
        &self,
        change: &ProtectionChange,
    ) -> Result<ProtectionState, ControlError> {
        let answer = self
            .call(Method::POST, "service-protection", Some(change))
            .await?;
        decode(&answer, Method::POST, "service-protection")
    }

    /// Every access token issued so far is expired.
    pub async fn expire_tokens(&self) -> Result<(), ControlError> {
        self.call(Method::POST, "tokens/expire", NO_BODY).await?;
        Ok(())
    }

    /// Rotates the app registration's credentials; `None` keeps that one.
    pub async fn set_credentials(
        &self,
        client_id: Option<&str>,
        client_secret: Option<&str>,
    ) -> Result<(), ControlError> {
        let body = json!({"client_id": client_id, "client_secret": client_secret});
        self.call(Method::POST, "credentials", Some(&body)).await?;
        Ok(())
    }

    /// Every delta token issued so far is expired.
    pub async fn expire_delta_tokens(&self) -> Result<(), ControlError> {
        self.call(Method::POST, "deltatokens/expire", NO_BODY)
            .await?;
        Ok(())
    }

    /// Moves the emulator's clock forward by `secs`; returns its new now.
    pub async fn advance_clock(&self, secs: u64) -> Result<OffsetDateTime, ControlError> {
        #[derive(Deserialize)]
        struct Now {
            now: String,
        }
        let body = json!({"advance_secs": secs});
        let answer = self.call(Method::POST, "clock", Some(&body)).await?;
        let Now { now } = decode(&answer, Method::POST, "clock")?;
        OffsetDateTime::parse(&now, &Rfc3339).map_err(|source| ControlError::Clock { now, source })
    }

    /// Sets the calling user's time zone, in minutes east of UTC (-840 to 840): what user-local
    /// formatted dates are shown in.
    pub async fn set_user_timezone(&self, offset_minutes: i32) -> Result<(), ControlError> {
        let body = json!({"offset_minutes": offset_minutes});
        self.call(Method::POST, "timezone", Some(&body)).await?;
        Ok(())
    }

    /// Inserts a row into `table` (a logical or entity set name) as a late commit would leave it:
    /// `row` holds its columns and may hold `createdon` and `modifiedon`, older than rows already
    /// there.
    pub async fn insert_row(
        &self,
        table: &str,
        row: &impl Serialize,
    ) -> Result<InsertedRow, ControlError> {
        let path = format!("tables/{table}/rows");
        let answer = self.call(Method::POST, &path, Some(row)).await?;
        decode(&answer, Method::POST, &path)
    }

    /// Inserts `count` synthetic rows into `table`.
    pub async fn generate(&self, table: &str, count: usize) -> Result<(), ControlError> {
        let path = format!("tables/{table}/generate");
        self.call(Method::POST, &path, Some(&json!({"count": count})))
            .await?;
        Ok(())
    }

    /// The webhook delivery log, oldest first. With `wait`, the answer comes once no delivery is
    /// pending (the emulator gives up after about two minutes and says so in
    /// [`DeliveryLog::timed_out`]): the way to wait for deliveries without sleeping.
    pub async fn webhook_deliveries(&self, wait: bool) -> Result<DeliveryLog, ControlError> {
        let path = if wait {
            "webhooks/deliveries?wait=true"
        } else {
            "webhooks/deliveries"
        };
        let answer = self.call(Method::GET, path, NO_BODY).await?;
        decode(&answer, Method::GET, path)
    }

    /// Forgets the settled deliveries; pending ones stay until they settle.
    pub async fn clear_webhook_deliveries(&self) -> Result<(), ControlError> {
        self.call(Method::DELETE, "webhooks/deliveries", NO_BODY)
            .await?;
        Ok(())
    }

    /// The interactive user's `systemuser` id: who control API writes (and
    /// [`EmulatorClient::interactive`] requests) are made by, "somebody else" to every app.
    pub async fn interactive_user(&self) -> Result<Uuid, ControlError> {
        #[derive(Deserialize)]
        struct User {
            id: Uuid,
        }
        #[derive(Deserialize)]
        struct Users {
            interactive: User,
        }
        let answer = self.call(Method::GET, "users", NO_BODY).await?;
        let users: Users = decode(&answer, Method::GET, "users")?;
        Ok(users.interactive.id)
    }

    /// `GET /_emulator/users`: the interactive user, and each application user with the bypass
    /// privileges it holds.
    pub async fn users(&self) -> Result<Value, ControlError> {
        let answer = self.call(Method::GET, "users", NO_BODY).await?;
        decode(&answer, Method::GET, "users")
    }

    /// Takes a bypass privilege (`prvBypassCustomPlugins`, `prvBypassCustomBusinessLogic`) away
    /// from the application user of `client_id` (`granted` false), or gives it back.
    pub async fn set_privilege(
        &self,
        client_id: &str,
        privilege: &str,
        granted: bool,
    ) -> Result<(), ControlError> {
        let body = json!({"client_id": client_id, "privilege": privilege, "granted": granted});
        self.call(Method::POST, "users/privileges", Some(&body))
            .await?;
        Ok(())
    }

    /// A Web API request (`path` after `/api/data/v9.2/`) made by the interactive user: no token,
    /// and heard by change tracking, webhook steps and flow triggers like any Web API write.
    pub fn interactive(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(
            method,
            format!("{}/_emulator/interactive/api/data/v9.2/{path}", self.url),
        )
    }

    /// Registers a flow trigger on `table` for `message`; the emulator counts the jobs it would
    /// start (see [`EmulatorClient::flows`]).
    pub async fn register_flow(
        &self,
        table: &str,
        message: Message,
    ) -> Result<Value, ControlError> {
        self.post("flows", &json!({"table": table, "message": message}))
            .await
    }

    /// `GET /_emulator/flows`: each trigger with `jobs` started and `suppressed` writes.
    pub async fn flows(&self) -> Result<Vec<Value>, ControlError> {
        let answer = self.call(Method::GET, "flows", NO_BODY).await?;
        let body: Value = decode(&answer, Method::GET, "flows")?;
        Ok(body["flows"].as_array().cloned().unwrap_or_default())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Bytes, ControlError> {
        let mut request = self.control_request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, method, &format!("/_emulator/{path}"))
            .await
    }

    /// The body of a successful answer to `request`.
    async fn send(
        &self,
        request: RequestBuilder,
        method: Method,
        path: &str,
    ) -> Result<Bytes, ControlError> {
        let http = |source| ControlError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let body = response.bytes().await.map_err(http)?;
        if !status.is_success() {
            return Err(ControlError::Status {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], method: Method, path: &str) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|source| ControlError::Decode {
        method,
        path: path.to_owned(),
        source,
    })
}

/// What [`EmulatorClient::insert_row`] inserted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InsertedRow {
    pub id: Uuid,
    pub versionnumber: u64,
    pub createdon: String,
    pub modifiedon: String,
}

/// A custom table for [`EmulatorClient::add_table`].
#[derive(Debug, Clone, Serialize)]
pub struct NewTable {
    pub logical_name: String,
    pub entity_set_name: String,
    pub primary_id: String,
    pub primary_name: String,
    pub change_tracking: bool,
    /// `(name, type)`, in the order the table lists them: `("new_budget", "money")`,
    /// `("new_account", "lookup:account")`, `("new_colour", "choice:1=Red,2=Blue")`.
    #[serde(serialize_with = "in_order")]
    pub columns: Vec<(String, String)>,
    /// Alternate keys, defined with the table (see [`EmulatorClient::add_key`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<NewKey>,
}

/// An alternate key of a [`NewTable`].
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub name: String,
    pub columns: Vec<String>,
}

fn in_order<S: Serializer>(columns: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(columns.iter().map(|(name, ty)| (name, ty)))
}

impl NewTable {
    /// A table without change tracking and with only its primary name column.
    pub fn new(
        logical_name: &str,
        entity_set_name: &str,
        primary_id: &str,
        primary_name: &str,
    ) -> Self {
        Self {
            logical_name: logical_name.to_owned(),
            entity_set_name: entity_set_name.to_owned(),
            primary_id: primary_id.to_owned(),
            primary_name: primary_name.to_owned(),
            change_tracking: false,
            columns: Vec::new(),
            keys: Vec::new(),
        }
    }

    pub fn with_change_tracking(mut self) -> Self {
        self.change_tracking = true;
        self
    }

    pub fn column(mut self, name: &str, ty: &str) -> Self {
        self.columns.push((name.to_owned(), ty.to_owned()));
        self
    }

    /// An alternate key over `columns` (logical names; a lookup as `x`).
    pub fn key(mut self, name: &str, columns: &[&str]) -> Self {
        self.keys.push(NewKey {
            name: name.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        });
        self
    }
}

/// Faults as tests write them: `Fault::status(429).retry_after(7).times(2)`. Each starts as a fault
/// on the next request of any method and path.
impl Fault {
    fn on_next() -> Self {
        Self {
            status: None,
            retry_after: None,
            times: 1,
            method: None,
            path_contains: None,
            delay_ms: None,
            drop_connection: false,
            drop_answer: false,
            code: None,
            message: None,
        }
    }

    /// Answers with `status` (in the service's words for it) without carrying the request out.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::on_next()
        }
    }

    /// Waits `delay`, then carries on as usual.
    pub fn delay(delay: Duration) -> Self {
        Self::on_next().and_delay(delay)
    }

    /// Closes the connection before the request is carried out.
    pub fn drop_connection() -> Self {
        Self {
            drop_connection: true,
            ..Self::on_next()
        }
    }

    /// Carries the request out, then closes the connection instead of answering.
    pub fn drop_answer() -> Self {
        Self {
            drop_answer: true,
            ..Self::on_next()
        }
    }

    /// Waits `delay` first, then acts.
    pub fn and_delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Applies to the next `times` matching requests instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Only requests of this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path and query contain `part`.
    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.to_owned());
        self
    }

    /// The `Retry-After` seconds of a [`Fault::status`] answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error code of a [`Fault::status`] answer, instead of the service's usual one.
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The error message of a [`Fault::status`] answer, instead of the service's usual one.
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }
}

/// Reads the request log back. A remote definition rather than a derive on [`LogEntry`], which
/// the server only writes; it still names every field, so the two cannot drift apart unnoticed.
#[derive(Deserialize)]
#[serde(remote = "LogEntry")]
struct LogEntryDef {
    method: String,
    path: String,
    status: u16,
    prefer: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    fault: bool,
    answer_dropped: bool,
    #[serde(default)]
    parts: Vec<PartEntry>,
    #[serde(default)]
    throttled: Option<crate::protection::Limit>,
    #[serde(default)]
    bypass: Vec<String>,
}

impl<'de> Deserialize<'de> for LogEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LogEntryDef::deserialize(deserializer)
    }
}
