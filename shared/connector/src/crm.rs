//! Credentials per dataset, and a Dataverse client per dataset kept for the life of a warm instance.

use std::collections::HashMap;
use std::path::PathBuf;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use dataverse::{Client, Credentials, RetryPolicy};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::SecretsConfig;
use crate::input::Dataset;
use crate::{ConfigError, CrmError};

/// The field of a dataset's entry that holds its webhook key.
const WEBHOOK_KEY: &str = "webhook_key";

/// Where credentials come from (`CRM_SECRETS`).
#[derive(Debug)]
pub enum CredentialSource {
    /// One secret per dataset, named `prefix + dataset`.
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        prefix: String,
    },
    /// A JSON object mapping dataset names to credentials (local runs).
    File(PathBuf),
}

impl CredentialSource {
    pub(crate) async fn from_config(config: &SecretsConfig) -> Self {
        match config {
            SecretsConfig::SecretsManager { prefix } => Self::SecretsManager {
                client: aws_sdk_secretsmanager::Client::new(&crate::aws::sdk_config().await),
                prefix: prefix.clone(),
            },
            SecretsConfig::File(path) => Self::File(path.clone()),
        }
    }

    /// Reads the dataset's credentials, every time it is asked (the caller caches).
    pub async fn load(&self, dataset: &Dataset) -> Result<Credentials, CrmError> {
        let (location, mut entry) = self.entry(dataset).await?;
        // The webhook key shares the entry, but is not the client's to know.
        if let Value::Object(fields) = &mut entry {
            fields.remove(WEBHOOK_KEY);
        }
        Ok(credentials(dataset, &location, entry)?)
    }

    /// Reads the key webhook deliveries for the dataset must present (`webhook_key` beside its
    /// credentials), every time it is asked; `None` when the entry has none.
    pub async fn webhook_key(&self, dataset: &Dataset) -> Result<Option<SecretString>, CrmError> {
        let (location, entry) = self.entry(dataset).await?;
        match entry.get(WEBHOOK_KEY) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(key)) if !key.is_empty() => {
                Ok(Some(SecretString::from(key.clone())))
            }
            // The value is never quoted: it may be the key.
            Some(_) => Err(ConfigError::BadCredentials {
                dataset: dataset.to_string(),
                location,
                problem: format!("field `{WEBHOOK_KEY}` must be a non-empty string"),
            }
            .into()),
        }
    }

    /// The dataset's entry as JSON, and where it was found (for messages).
    async fn entry(&self, dataset: &Dataset) -> Result<(String, Value), CrmError> {
        match self {
            Self::SecretsManager { client, prefix } => {
                let id = format!("{prefix}{dataset}");
                let output = client
                    .get_secret_value()
                    .secret_id(&id)
                    .send()
                    .await
                    .map_err(|e| secret_error(dataset, &id, e))?;
                let location = format!("secret '{id}'");
                let text = output
                    .secret_string()
                    .ok_or_else(|| ConfigError::BadCredentials {
                        dataset: dataset.to_string(),
                        location: location.clone(),
                        problem:
                            "the secret has no string value (binary secrets are not supported)"
                                .into(),
                    })?;
                let value =
                    serde_json::from_str(text).map_err(|e| ConfigError::BadCredentials {
                        dataset: dataset.to_string(),
                        location: location.clone(),
                        problem: format!("not JSON (line {}, column {})", e.line(), e.column()),
                    })?;
                Ok((location, value))
            }
            Self::File(path) => {
                let location = format!("file '{}'", path.display());
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    ConfigError::NoCredentials {
                        dataset: dataset.to_string(),
                        reason: format!("cannot read {location}: {e}"),
                    }
                })?;
                let mut all: serde_json::Map<String, Value> =
                    serde_json::from_str(&text).map_err(|e| ConfigError::BadCredentials {
                        dataset: dataset.to_string(),
                        location: location.clone(),
                        problem: format!(
                            "not a JSON object mapping datasets to credentials (line {}, column {})",
                            e.line(),
                            e.column()
                        ),
                    })?;
                let value =
                    all.remove(dataset.as_str())
                        .ok_or_else(|| ConfigError::NoCredentials {
                            dataset: dataset.to_string(),
                            reason: format!("{location} has no entry for it"),
                        })?;
                Ok((location, value))
            }
        }
    }
}

/// Parses credentials JSON. Serde's messages can quote a value, and the value might be the secret, so
/// only the field and the kind of problem are reported.
fn credentials(
    dataset: &Dataset,
    location: &str,
    value: Value,
) -> Result<Credentials, ConfigError> {
    serde_path_to_error::deserialize::<_, Credentials>(value).map_err(|e| {
        let problem = match crate::input::SerdeProblem::of(e.inner()) {
            crate::input::SerdeProblem::Missing(name) => format!("missing field `{name}`"),
            crate::input::SerdeProblem::Unknown { name, .. } => format!("unknown field `{name}`"),
            crate::input::SerdeProblem::Other(_) => format!(
                "field `{}` has the wrong type (expected a string)",
                e.path()
            ),
        };
        ConfigError::BadCredentials {
            dataset: dataset.to_string(),
            location: location.to_owned(),
            problem,
        }
    })
}

fn secret_error<E>(
    dataset: &Dataset,
    id: &str,
    error: aws_sdk_secretsmanager::error::SdkError<E>,
) -> CrmError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    aws_sdk_secretsmanager::Error: From<aws_sdk_secretsmanager::error::SdkError<E>>,
{
    let dataset = dataset.to_string();
    match error.code() {
        Some("ResourceNotFoundException") => ConfigError::NoCredentials {
            dataset,
            reason: format!("the secret '{id}' does not exist"),
        }
        .into(),
        Some("AccessDeniedException") => ConfigError::NoCredentials {
            dataset,
            reason: format!("this function may not read the secret '{id}' (check its IAM policy)"),
        }
        .into(),
        Some("DecryptionFailure" | "InvalidRequestException" | "InvalidParameterException") => {
            ConfigError::BadCredentials {
                dataset,
                location: format!("secret '{id}'"),
                problem: error.message().unwrap_or("it cannot be read").to_owned(),
            }
            .into()
        }
        _ => CrmError::SecretsUnavailable {
            dataset,
            source: Box::new(error.into()),
        },
    }
}

/// The functions' door to Dataverse: credentials per dataset, and a client per dataset, both kept for
/// the life of a warm instance.
#[derive(Debug)]
pub struct Crm {
    source: CredentialSource,
    policy: RetryPolicy,
    /// Each dataset's client, and the credentials it was built from.
    clients: Mutex<HashMap<Dataset, (Client, Credentials)>>,
    /// Each dataset's own user (`WhoAmI`), asked once per process: the user the connector's own
    /// writes are recorded under, which `ignore_own_changes` skips.
    own_users: Mutex<HashMap<Dataset, Uuid>>,
}

impl Crm {
    pub fn new(source: CredentialSource) -> Self {
        Self {
            source,
            policy: RetryPolicy::default(),
            clients: Mutex::new(HashMap::new()),
            own_users: Mutex::new(HashMap::new()),
        }
    }

    /// From `CRM_SECRETS`. The error is kept and reported by each invocation.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = crate::Config::from_env()?;
        Ok(Self::new(
            CredentialSource::from_config(&config.secrets).await,
        ))
    }

    /// The key webhook deliveries for the dataset must present, read now (the caller caches).
    pub async fn webhook_key(&self, dataset: &Dataset) -> Result<Option<SecretString>, CrmError> {
        self.source.webhook_key(dataset).await
    }

    /// The dataset's client, building it (and reading its credentials) on first use.
    pub async fn client(&self, dataset: &Dataset) -> Result<Client, CrmError> {
        let mut clients = self.clients.lock().await;
        if let Some((client, _)) = clients.get(dataset) {
            return Ok(client.clone());
        }
        let credentials = self.source.load(dataset).await?;
        let client = Client::builder(credentials.clone())
            .retry(self.policy.clone())
            .build()?;
        crate::metrics::track(client.counters());
        tracing::info!(dataset = %dataset, "credentials loaded");
        clients.insert(dataset.clone(), (client.clone(), credentials));
        Ok(client)
    }

    /// The `systemuserid` the connector acts as in the dataset (`WhoAmI`), asked on first use and
    /// kept for the life of the process, bounded by `deadline`. Rotated credentials belong to the
    /// same application registration, so to the same application user.
    pub async fn own_user(
        &self,
        dataset: &Dataset,
        deadline: dataverse::Deadline,
    ) -> Result<Uuid, CrmError> {
        if let Some(user) = self.own_users.lock().await.get(dataset) {
            return Ok(*user);
        }
        let user = self
            .call(dataset, async |client| client.who_am_i(deadline).await)
            .await?;
        tracing::info!(dataset = %dataset, user = %user, "the connector's own user");
        self.own_users.lock().await.insert(dataset.clone(), user);
        Ok(user)
    }

    /// Reads the dataset's credentials again after they were refused. `Some` new client when they
    /// changed (rotated); `None` when they are what was refused, since trying them again could only
    /// be refused again.
    async fn reread(&self, dataset: &Dataset) -> Result<Option<Client>, CrmError> {
        let fresh = self.source.load(dataset).await?;
        let mut clients = self.clients.lock().await;
        let previous = clients.get(dataset);
        if previous.is_some_and(|(_, refused)| refused.same_as(&fresh)) {
            tracing::warn!(dataset = %dataset, "the credentials were refused and have not changed");
            return Ok(None);
        }
        let mut builder = Client::builder(fresh.clone()).retry(self.policy.clone());
        if let Some((client, _)) = previous {
            // The environment is the same one: what its tables are called has not changed.
            builder = builder.tables_of(client);
        }
        let client = builder.build()?;
        crate::metrics::track(client.counters());
        tracing::info!(dataset = %dataset, "rotated credentials loaded");
        clients.insert(dataset.clone(), (client.clone(), fresh));
        Ok(Some(client))
    }

    /// Runs `work` with the dataset's client. If Dataverse or the token endpoint refuses the
    /// credentials, they may have been rotated: read them again, once, and try once more if they
    /// changed. With the client's single token refresh, a refusal costs at most two Web API requests
    /// and one token request more than the work itself, and one more secret read.
    pub async fn call<T>(
        &self,
        dataset: &Dataset,
        work: impl AsyncFn(Client) -> Result<T, dataverse::Error>,
    ) -> Result<T, CrmError> {
        match work(self.client(dataset).await?).await {
            Err(e) if e.is_unauthorized() => {
                tracing::warn!(dataset = %dataset, "credentials refused; reading them again");
                match self.reread(dataset).await? {
                    Some(client) => Ok(work(client)
                        .await
                        .map_err(|again| after_refused(&e, again))?),
                    None => Err(e.into()),
                }
            }
            other => Ok(other?),
        }
    }
}

/// The error of a run made again with re-read credentials, after `refused`. The refused run may have
/// written before its credentials were refused (a repeatable write retried after a lost answer), and
/// the rerun's failure must keep saying so: an idempotency record would otherwise be released as if
/// nothing had happened.
fn after_refused(refused: &dataverse::Error, again: dataverse::Error) -> dataverse::Error {
    if refused.may_have_applied() {
        again.after_possible_write()
    } else {
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> dataverse::Error {
        dataverse::Error::Api {
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn a_rerun_keeps_saying_that_the_refused_run_may_have_written() {
        let refused = dataverse::Error::MayHaveApplied(Box::new(api(401)));
        let again = after_refused(&refused, api(404));
        assert!(again.may_have_applied());
        assert_eq!(
            again.status(),
            Some(404),
            "the caller still sees the rerun's answer"
        );

        let clean = after_refused(&api(401), api(404));
        assert!(!clean.may_have_applied());
    }
}
