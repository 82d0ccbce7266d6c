//! Configuration from environment variables; `docs/configuration.md` is the contract.
//!
//! | Variable | Values | Default |
//! |---|---|---|
//! | `CRM_SECRETS` | `secretsmanager:<prefix>` (secret id = prefix + dataset) or `file:<path>` | `secretsmanager:dynamics-crm/` |
//! | `CRM_STATE` | `dynamodb:<table>` or `file:<directory>` (triggers) | none |
//! | `CRM_EVENTS` | `eventbridge:<bus name or ARN>`, `file:<path.jsonl>` or `none` (triggers) | `none` |
//! | `CRM_EVENT_SOURCE` | EventBridge `Source` | `dynamics.crm` |
//! | `CRM_TRIGGER_OVERLAP_SECS` | how long after its time a late commit still fires (triggers) | `60` |
//! | `CRM_EVENTS_CONCURRENCY` | 1 to 64 `PutEvents` calls in flight at once (triggers, `eventbridge:`) | `32` |
//! | `CRM_IDEMPOTENCY` | `dynamodb:<table>` or `file:<directory>` (the writers' idempotency records) | none: no idempotency |
//! | `CRM_IDEMPOTENCY_TTL_SECS` | how long a completed write is remembered, 60 to 31,536,000 | `86400` |
//!
//! AWS endpoints are not configured here: the SDK reads `AWS_ENDPOINT_URL*` itself.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsConfig {
    SecretsManager { prefix: String },
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    DynamoDb { table: String },
    Directory(PathBuf),
}

/// Where the writers keep their idempotency records (`CRM_IDEMPOTENCY`): the same two kinds of store
/// as the cursors, in a table or directory of their own.
pub type IdempotencyConfig = StateConfig;

/// How long a completed write is remembered when `CRM_IDEMPOTENCY_TTL_SECS` is unset. A repeat comes
/// from a retry, and the longest retrier in front of these functions is EventBridge, which by
/// default delivers a failed event again for up to 24 hours (Lambda's own asynchronous retries stop
/// at 6). An hour would let a late redelivery write a second time; a record costs about a kilobyte
/// a day.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest `CRM_IDEMPOTENCY_TTL_SECS`: shorter than a retry's backoff, a record would guard
/// nothing.
pub const MIN_IDEMPOTENCY_TTL_SECS: u64 = 60;
/// The longest `CRM_IDEMPOTENCY_TTL_SECS`: a year, beyond any retry policy.
pub const MAX_IDEMPOTENCY_TTL_SECS: u64 = 365 * 24 * 3600;

/// `PutEvents` calls a poll keeps in flight when `CRM_EVENTS_CONCURRENCY` is unset. One call takes
/// tens of milliseconds, nearly all of it waiting on the network: one at a time, a poll publishes a
/// few hundred events a second. At 25 ms a call, sixteen cap publishing at 6,400 events a second, and
/// with the fetch (which publishing does not overlap) a drain stays under 5,000; thirty-two reach
/// nearly 8,000 (`tests/e2e/benches/publish.rs`) at some 1,300 calls a second, within the account's
/// `PutEvents` quota in the large regions. Where the quota is lower, throttled calls are retried, and
/// the variable lowers the pace.
pub const DEFAULT_EVENTS_CONCURRENCY: NonZeroUsize = match NonZeroUsize::new(32) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// The most `CRM_EVENTS_CONCURRENCY` may ask for: one poll should not spend a region's whole quota.
pub const MAX_EVENTS_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsConfig {
    EventBridge {
        bus: String,
        /// At most this many `PutEvents` calls at once (`CRM_EVENTS_CONCURRENCY`).
        concurrency: NonZeroUsize,
    },
    File(PathBuf),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub secrets: SecretsConfig,
    /// Only triggers need it; they report its absence as `Crm.Configuration`.
    pub state: Option<StateConfig>,
    pub events: EventsConfig,
    pub event_source: String,
    /// How far back each trigger poll re-reads, to catch transactions that committed late.
    pub trigger_overlap: Duration,
    /// The writers' idempotency store; `None` leaves writes unguarded.
    pub idempotency: Option<IdempotencyConfig>,
    /// How long a completed write's record is kept.
    pub idempotency_ttl: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses the variables `lookup` gives, reporting every problem at once.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |name: &str, value: &str, expected: &str| {
            problems.push(format!("{name} is '{value}', expected {expected}"));
        };
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let secrets = match get("CRM_SECRETS") {
            None => Some(SecretsConfig::SecretsManager {
                prefix: "dynamics-crm/".into(),
            }),
            Some(v) => match split(&v) {
                Some(("secretsmanager", prefix)) => Some(SecretsConfig::SecretsManager {
                    prefix: prefix.into(),
                }),
                Some(("file", path)) if !path.is_empty() => Some(SecretsConfig::File(path.into())),
                _ => {
                    bad("CRM_SECRETS", &v, "secretsmanager:<prefix> or file:<path>");
                    None
                }
            },
        };
        let mut store = |name: &str| match get(name) {
            None => None,
            Some(v) => match split(&v) {
                Some(("dynamodb", table)) if valid_table_name(table) => {
                    Some(StateConfig::DynamoDb {
                        table: table.into(),
                    })
                }
                Some(("file", dir)) if !dir.is_empty() => Some(StateConfig::Directory(dir.into())),
                _ => {
                    bad(name, &v, "dynamodb:<table> or file:<directory>");
                    None
                }
            },
        };
        let state = store("CRM_STATE");
        let idempotency = store("CRM_IDEMPOTENCY");
        // Read whatever the sink, so that a bad value is reported before it would matter.
        let concurrency = match get("CRM_EVENTS_CONCURRENCY") {
            None => DEFAULT_EVENTS_CONCURRENCY,
            Some(v) => match v.trim().parse::<NonZeroUsize>() {
                Ok(n) if n.get() <= MAX_EVENTS_CONCURRENCY => n,
                _ => {
                    bad(
                        "CRM_EVENTS_CONCURRENCY",
                        &v,
                        &format!("a number of calls from 1 to {MAX_EVENTS_CONCURRENCY}"),
                    );
                    DEFAULT_EVENTS_CONCURRENCY
                }
            },
        };
        let events = match get("CRM_EVENTS") {
            None => Some(EventsConfig::None),
            Some(v) if v == "none" => Some(EventsConfig::None),
            Some(v) => match split(&v) {
                Some(("eventbridge", bus)) if !bus.is_empty() => Some(EventsConfig::EventBridge {
                    bus: bus.into(),
                    concurrency,
                }),
                Some(("file", path)) if !path.is_empty() => Some(EventsConfig::File(path.into())),
                _ => {
                    bad(
                        "CRM_EVENTS",
                        &v,
                        "eventbridge:<bus>, file:<path.jsonl> or none",
                    );
                    None
                }
            },
        };
        let event_source = get("CRM_EVENT_SOURCE").unwrap_or_else(|| "dynamics.crm".into());
        if event_source.len() > 256 || event_source.starts_with("aws.") {
            bad(
                "CRM_EVENT_SOURCE",
                &event_source,
                "at most 256 characters, not starting with 'aws.'",
            );
        }
        let trigger_overlap = match get("CRM_TRIGGER_OVERLAP_SECS") {
            None => Duration::from_secs(60),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(secs) if secs <= 3600 => Duration::from_secs(secs),
                _ => {
                    bad(
                        "CRM_TRIGGER_OVERLAP_SECS",
                        &v,
                        "a number of seconds from 0 to 3600",
                    );
                    Duration::ZERO
                }
            },
        };
        let idempotency_ttl = match get("CRM_IDEMPOTENCY_TTL_SECS") {
            None => DEFAULT_IDEMPOTENCY_TTL,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(secs)
                    if (MIN_IDEMPOTENCY_TTL_SECS..=MAX_IDEMPOTENCY_TTL_SECS).contains(&secs) =>
                {
                    Duration::from_secs(secs)
                }
                _ => {
                    bad(
                        "CRM_IDEMPOTENCY_TTL_SECS",
                        &v,
                        &format!(
                            "a number of seconds from {MIN_IDEMPOTENCY_TTL_SECS} to {MAX_IDEMPOTENCY_TTL_SECS}"
                        ),
                    );
                    DEFAULT_IDEMPOTENCY_TTL
                }
            },
        };
        match (secrets, events) {
            (Some(secrets), Some(events)) if problems.is_empty() => Ok(Self {
                secrets,
                state,
                events,
                event_source,
                trigger_overlap,
                idempotency,
                idempotency_ttl,
            }),
            _ => Err(ConfigError::Environment(problems)),
        }
    }
}

fn split(value: &str) -> Option<(&str, &str)> {
    value.split_once(':')
}

/// DynamoDB table names: 3-255 characters of `[A-Za-z0-9_.-]`.
fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_to_secrets_manager_and_no_events() {
        let config = parse(&[]).unwrap();
        assert_eq!(
            config.secrets,
            SecretsConfig::SecretsManager {
                prefix: "dynamics-crm/".into()
            }
        );
        assert_eq!(config.state, None);
        assert_eq!(config.events, EventsConfig::None);
        assert_eq!(config.event_source, "dynamics.crm");
        assert_eq!(config.trigger_overlap, Duration::from_secs(60));
        assert_eq!(config.idempotency, None);
        assert_eq!(config.idempotency_ttl, DEFAULT_IDEMPOTENCY_TTL);
    }

    #[test]
    fn reads_the_idempotency_store_and_its_ttl() {
        let config = parse(&[
            ("CRM_IDEMPOTENCY", "dynamodb:crm-idempotency"),
            ("CRM_IDEMPOTENCY_TTL_SECS", " 3600 "),
        ])
        .unwrap();
        assert_eq!(
            config.idempotency,
            Some(StateConfig::DynamoDb {
                table: "crm-idempotency".into()
            })
        );
        assert_eq!(config.idempotency_ttl, Duration::from_secs(3600));
        let files = parse(&[("CRM_IDEMPOTENCY", "file:/tmp/once")]).unwrap();
        assert_eq!(
            files.idempotency,
            Some(StateConfig::Directory("/tmp/once".into()))
        );
        for (name, value) in [
            ("CRM_IDEMPOTENCY", "redis:x"),
            ("CRM_IDEMPOTENCY", "dynamodb:x"),
            ("CRM_IDEMPOTENCY_TTL_SECS", "59"),
            ("CRM_IDEMPOTENCY_TTL_SECS", "31536001"),
            ("CRM_IDEMPOTENCY_TTL_SECS", "1h"),
        ] {
            let ConfigError::Environment(problems) = parse(&[(name, value)]).unwrap_err() else {
                panic!("expected an environment error");
            };
            assert_eq!(problems.len(), 1, "{name}={value}: {problems:?}");
            assert!(
                problems[0].starts_with(&format!("{name} is '{value}'")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn reads_every_backend() {
        let config = parse(&[
            ("CRM_SECRETS", "file:/tmp/creds.json"),
            ("CRM_STATE", "dynamodb:crm-cursors"),
            (
                "CRM_EVENTS",
                "eventbridge:arn:aws:events:eu-west-1:123456789012:event-bus/crm",
            ),
            ("CRM_EVENT_SOURCE", "contoso.crm"),
        ])
        .unwrap();
        assert_eq!(
            config.secrets,
            SecretsConfig::File("/tmp/creds.json".into())
        );
        assert_eq!(
            config.state,
            Some(StateConfig::DynamoDb {
                table: "crm-cursors".into()
            })
        );
        assert_eq!(
            config.events,
            EventsConfig::EventBridge {
                bus: "arn:aws:events:eu-west-1:123456789012:event-bus/crm".into(),
                concurrency: DEFAULT_EVENTS_CONCURRENCY,
            }
        );
        let files = parse(&[
            ("CRM_STATE", "file:/var/state"),
            ("CRM_EVENTS", "file:/tmp/e.jsonl"),
        ])
        .unwrap();
        assert_eq!(
            files.state,
            Some(StateConfig::Directory("/var/state".into()))
        );
        assert_eq!(files.events, EventsConfig::File("/tmp/e.jsonl".into()));
    }

    #[test]
    fn reports_every_bad_variable_at_once() {
        let ConfigError::Environment(problems) = parse(&[
            ("CRM_SECRETS", "vault:x"),
            ("CRM_STATE", "dynamodb:"),
            ("CRM_EVENTS", "sns:topic"),
        ])
        .unwrap_err() else {
            panic!("expected an environment error");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("CRM_SECRETS is 'vault:x'"));
    }

    #[test]
    fn reads_the_publishing_concurrency() {
        let config = parse(&[
            ("CRM_EVENTS", "eventbridge:crm"),
            ("CRM_EVENTS_CONCURRENCY", " 4 "),
        ])
        .unwrap();
        assert_eq!(
            config.events,
            EventsConfig::EventBridge {
                bus: "crm".into(),
                concurrency: NonZeroUsize::new(4).unwrap(),
            }
        );
        let largest = MAX_EVENTS_CONCURRENCY.to_string();
        let config = parse(&[
            ("CRM_EVENTS", "eventbridge:crm"),
            ("CRM_EVENTS_CONCURRENCY", &largest),
        ])
        .unwrap();
        assert!(matches!(
            config.events,
            EventsConfig::EventBridge { concurrency, .. } if concurrency.get() == MAX_EVENTS_CONCURRENCY
        ));
    }

    #[test]
    fn refuses_a_concurrency_out_of_range_whatever_the_sink() {
        let too_many = (MAX_EVENTS_CONCURRENCY + 1).to_string();
        for value in ["0", "-1", "many", "2.5", too_many.as_str()] {
            for sink in ["eventbridge:crm", "file:/tmp/e.jsonl", "none"] {
                let ConfigError::Environment(problems) =
                    parse(&[("CRM_EVENTS", sink), ("CRM_EVENTS_CONCURRENCY", value)]).unwrap_err()
                else {
                    panic!("expected an environment error");
                };
                assert_eq!(problems.len(), 1, "{value}, {sink}: {problems:?}");
                assert!(
                    problems[0].starts_with(&format!("CRM_EVENTS_CONCURRENCY is '{value}'")),
                    "{problems:?}"
                );
            }
        }
    }
}
