//! The processes the functions talk to: the Dataverse emulator and moto (AWS), each on a free port and
//! stopped when dropped.

use std::io::{Error, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dataverse_emulator::client::{ControlError, EmulatorClient};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::runtime::binary;

/// The Dataverse emulator binary, started for one test or one tour: the shared control client, with
/// the calls these suites make in the shapes they make them.
#[derive(Debug)]
pub struct Emulator {
    client: EmulatorClient,
    pub url: String,
}

/// An I/O error carrying the control client's: suites and the tour report these as they are.
fn io_error(error: ControlError) -> Error {
    let kind = match &error {
        ControlError::Spawn { source, .. } => source.kind(),
        ControlError::NotReady(_) => ErrorKind::TimedOut,
        _ => ErrorKind::Other,
    };
    Error::new(kind, error)
}

impl Emulator {
    /// Starts `dataverse-emulator` with `args` and waits for its `listening on` line.
    pub async fn start(args: &[&str]) -> std::io::Result<Self> {
        let args: Vec<&str> = ["--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let client = EmulatorClient::start(binary("dataverse-emulator")?, &args)
            .await
            .map_err(io_error)?;
        Ok(Self {
            url: client.url().to_owned(),
            client,
        })
    }

    /// An empty organisation whose accounts have an alternate key on `accountnumber`
    /// (`aws_accountnumber`), for the suites that name rows by key.
    pub async fn with_account_key() -> std::io::Result<Self> {
        let emulator = Self::start(&["--seed", "none"]).await?;
        emulator
            .client
            .add_key("account", "aws_accountnumber", &["accountnumber"])
            .await
            .map_err(io_error)?;
        Ok(emulator)
    }

    /// The typed control client, for what the calls below do not cover (faults, the clock, ...).
    pub fn client(&self) -> &EmulatorClient {
        &self.client
    }

    /// Credentials JSON for this emulator, as a dataset's secret holds it.
    pub fn credentials(&self) -> Value {
        self.credentials_with_secret("local-secret")
    }

    pub fn credentials_with_secret(&self, secret: &str) -> Value {
        json!({
            "url": self.url,
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "local-client",
            "client_secret": secret,
            "authority": self.url,
        })
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.client
            .control_request(method, path)
            .json(body)
            .send()
            .await
    }

    /// `POST /_emulator/{path}`, expecting success.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.client.post(path, body).await.map_err(io_error)
    }

    /// The request log since the last clear.
    pub async fn requests(&self) -> Result<Vec<Value>, Error> {
        self.client.requests_json().await.map_err(io_error)
    }

    pub async fn clear_requests(&self) -> Result<(), Error> {
        self.client.clear_requests().await.map_err(io_error)
    }

    /// Moves the emulator's clock forward by `secs` and returns its new now, so a suite reaches a
    /// token's, a delta token's or a cursor's expiry without waiting for it.
    pub async fn advance_clock(&self, secs: u64) -> Result<time::OffsetDateTime, Error> {
        self.client.advance_clock(secs).await.map_err(io_error)
    }

    /// A Web API request with a fresh token, for setting up and checking what the functions did:
    /// `(status, body)`. Writes ask for the row back.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        let token = self
            .client
            .access_token("local-client", "local-secret")
            .await
            .map_err(io_error)?;
        let mut request = self
            .client
            .http()
            .request(method, self.client.web_api(path))
            .bearer_auth(token)
            .header("Prefer", "return=representation");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(Error::other)?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Creates an account named `name` through the Web API and returns its id.
    pub async fn create_account(&self, name: &str) -> Result<String, Error> {
        let (status, row) = self
            .api(
                reqwest::Method::POST,
                "accounts",
                Some(&json!({"name": name})),
            )
            .await?;
        match row["accountid"].as_str() {
            Some(id) if status == 201 => Ok(id.to_owned()),
            _ => Err(Error::other(format!("creating an account: {status} {row}"))),
        }
    }

    /// A Web API GET: `(status, body)`.
    pub async fn api_get(&self, path: &str) -> Result<(u16, Value), Error> {
        self.api(reqwest::Method::GET, path, None).await
    }

    /// The `accountid` of every row a query of `accounts` returns, in its order, following its next
    /// links: `query` is what follows `accounts?`, and must select `accountid`.
    pub async fn account_ids(&self, query: &str) -> Result<Vec<String>, Error> {
        let mut ids = Vec::new();
        let mut path = format!("accounts?{query}");
        loop {
            let (status, page) = self.api_get(&path).await?;
            let rows = page["value"].as_array().filter(|_| status == 200);
            let Some(rows) = rows else {
                return Err(Error::other(format!("listing accounts: {status} {page}")));
            };
            ids.extend(
                rows.iter()
                    .filter_map(|r| r["accountid"].as_str().map(str::to_owned)),
            );
            match page["@odata.nextLink"]
                .as_str()
                .and_then(|next| next.split_once("/api/data/v9.2/"))
            {
                Some((_, next)) => next.clone_into(&mut path),
                None => return Ok(ids),
            }
        }
    }
}

/// moto's server: real AWS wire protocols for Secrets Manager, DynamoDB, EventBridge and SQS.
#[derive(Debug)]
pub struct Moto {
    _child: Child,
    pub url: String,
}

impl Moto {
    /// Starts `moto_server` (from `MOTO_SERVER`, the project's `.venv`, or `PATH`) on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let program = moto_program();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "cannot start {}: {e} (install the Python tools with `make tools`, or set MOTO_SERVER)",
                        program.display()
                    ),
                )
            })?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("{url}/moto-api/"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(Self { _child: child, url });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::new(
            ErrorKind::TimedOut,
            "moto did not start within 10 s",
        ))
    }

    /// The environment a function needs to reach this moto through the SDK's standard variables.
    pub fn env(&self) -> Vec<(String, String)> {
        crate::aws_env("AWS_ENDPOINT_URL", &self.url)
    }

    /// SDK configuration for the tests' own clients.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .load()
            .await
    }
}

fn moto_program() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("moto_server")
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("crm-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `file` in the directory and returns its path.
    pub fn write(&self, file: &str, contents: &str) -> std::io::Result<PathBuf> {
        let path = self.0.join(file);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a function reads and writes when it runs outside AWS, in one temporary directory: credentials
/// for dataset `contoso` in a file, cursors in a directory, events in a JSON-lines file.
#[derive(Debug)]
pub struct LocalFiles {
    dir: TempDir,
    credentials: PathBuf,
}

impl LocalFiles {
    pub fn new(label: &str, emulator: &Emulator) -> std::io::Result<Self> {
        let dir = TempDir::new(label)?;
        let credentials = dir.write(
            "credentials.json",
            &json!({"contoso": emulator.credentials()}).to_string(),
        )?;
        Ok(Self { dir, credentials })
    }

    pub fn credentials(&self) -> &Path {
        &self.credentials
    }

    /// Gives dataset `contoso` a `webhook_key`, the key `dataverse-webhook` checks deliveries against.
    pub fn set_webhook_key(&self, emulator: &Emulator, key: &str) -> std::io::Result<()> {
        let mut entry = emulator.credentials();
        entry["webhook_key"] = json!(key);
        std::fs::write(&self.credentials, json!({"contoso": entry}).to_string())
    }

    pub fn events(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// The events published to the file sink so far, one per line; a line that is not JSON reads
    /// as `null`, for the assertion that meets it to show.
    pub fn published(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events())
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or(Value::Null))
            .collect()
    }

    /// [`LocalFiles::env`] publishing to EventBridge bus `bus` instead of the file, with source
    /// `contoso.crm`; `aws` reaches the endpoint (a fake's or moto's environment).
    pub fn env_on_eventbridge(
        &self,
        aws: Vec<(String, String)>,
        bus: &str,
    ) -> Vec<(String, String)> {
        let mut environment = aws;
        environment.extend(self.env().into_iter().filter(|(k, _)| k != "CRM_EVENTS"));
        environment.push(("CRM_EVENTS".to_owned(), format!("eventbridge:{bus}")));
        environment.push(("CRM_EVENT_SOURCE".to_owned(), "contoso.crm".to_owned()));
        environment
    }

    /// `CRM_SECRETS` alone: all an action needs.
    pub fn secrets_env(&self) -> (String, String) {
        (
            "CRM_SECRETS".to_owned(),
            format!("file:{}", self.credentials.display()),
        )
    }

    /// `CRM_SECRETS`, `CRM_STATE` and `CRM_EVENTS`, all pointing into the directory.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            self.secrets_env(),
            (
                "CRM_STATE".to_owned(),
                format!("file:{}", self.dir.path().join("state").display()),
            ),
            (
                "CRM_EVENTS".to_owned(),
                format!("file:{}", self.events().display()),
            ),
        ]
    }
}
