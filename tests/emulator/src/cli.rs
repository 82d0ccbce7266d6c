//! Command-line options.

use std::net::SocketAddr;

use crate::Seed;

pub const USAGE: &str = "\
dataverse-emulator: a local Dataverse Web API for tests and demos

USAGE:
    dataverse-emulator [--listen ADDR] [--seed demo|none] [--client-id ID --client-secret SECRET]
                       [--token-ttl SECS] [--delta-token-ttl SECS]
                       [--webhook-attempts N] [--webhook-backoff-ms MS]
                       [--service-protection] [--limit-requests N] [--limit-execution-ms MS]
                       [--limit-concurrent N] [--limit-window-secs SECS]
                       [--simulated-execution-ms MS] [--user-timezone-offset-minutes MIN]

OPTIONS:
    --listen ADDR            address to listen on [default: 127.0.0.1:0]
    --seed demo|none         demo data or empty tables [default: demo]
    --client-id ID           the client id the token endpoint accepts [default: local-client]
    --client-secret SECRET   its secret [default: local-secret]
    --token-ttl SECS         access token lifetime [default: 3599]
    --delta-token-ttl SECS   change-tracking token retention [default: 604800, i.e. 7 days]
    --webhook-attempts N     tries in all for a webhook delivery that fails with 502, 503, 504, a
                             timeout or a lost connection (1 to 10) [default: 2, as Dataverse]
    --webhook-backoff-ms MS  the wait before the first retry; each later one doubles it
                             (0 to 600000) [default: 100]
    --service-protection     enforce Dataverse's service protection limits per user: 429 with
                             Retry-After past a limit [default: off]
    --limit-requests N       requests per user in the window [default: 6000]
    --limit-execution-ms MS  combined execution time per user in the window [default: 1200000]
    --limit-concurrent N     requests per user in flight at once [default: 52]
    --limit-window-secs SECS the sliding window (1 to 86400) [default: 300]
    --simulated-execution-ms MS
                             hold each Web API request this long before answering, as server
                             execution time, limits on or off (0 to 600000) [default: 0]
    --user-timezone-offset-minutes MIN
                             the calling user's time zone, minutes east of UTC (-840 to 840),
                             for user-local formatted dates [default: 0, UTC]
    -h, --help               print this help

When ready it prints one line to stdout: `listening on http://127.0.0.1:<port>`.";

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub seed: Seed,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_secs: i64,
    pub delta_token_ttl_secs: i64,
    /// Tries in all for a webhook delivery whose failure is worth retrying.
    pub webhook_attempts: u32,
    /// The wait before a webhook delivery's first retry.
    pub webhook_backoff_ms: u64,
    /// Service protection: whether it is on, its limits, and the simulated execution time.
    pub protection: crate::protection::Settings,
    /// The calling user's time zone, minutes east of UTC (`crate::dates`).
    pub user_offset_minutes: i32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: Seed::Demo,
            client_id: "local-client".into(),
            client_secret: "local-secret".into(),
            token_ttl_secs: 3599,
            delta_token_ttl_secs: 7 * 24 * 3600,
            // Dataverse sends a delivery that met a gateway error or a network failure once more.
            webhook_attempts: 2,
            webhook_backoff_ms: 100,
            protection: crate::protection::Settings::default(),
            user_offset_minutes: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run,
    Help,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("unknown argument '{0}'")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag}: {problem}")]
    Invalid { flag: String, problem: String },
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<(Self, Parsed), CliError> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Ok((options, Parsed::Help));
            }
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (flag, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| CliError::MissingValue(flag.clone()))
            };
            let invalid = |problem: &str| CliError::Invalid {
                flag: flag.clone(),
                problem: problem.to_owned(),
            };
            match flag.as_str() {
                "--listen" => {
                    options.listen = value()?
                        .parse()
                        .map_err(|_| invalid("expected an address such as 127.0.0.1:8080"))?;
                }
                "--seed" => {
                    options.seed = match value()?.as_str() {
                        "demo" => Seed::Demo,
                        "none" => Seed::None,
                        _ => return Err(invalid("expected demo or none")),
                    };
                }
                "--client-id" => options.client_id = value()?,
                "--client-secret" => options.client_secret = value()?,
                "--token-ttl" => {
                    options.token_ttl_secs = value()?
                        .parse()
                        .ok()
                        .filter(|n: &i64| *n > 0)
                        .ok_or_else(|| invalid("expected a positive number of seconds"))?;
                }
                "--delta-token-ttl" => {
                    options.delta_token_ttl_secs =
                        value()?
                            .parse()
                            .ok()
                            .filter(|n: &i64| *n > 0)
                            .ok_or_else(|| invalid("expected a positive number of seconds"))?;
                }
                "--webhook-attempts" => {
                    options.webhook_attempts = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u32| (1..=10).contains(n))
                        .ok_or_else(|| invalid("expected a number of tries from 1 to 10"))?;
                }
                "--webhook-backoff-ms" => {
                    options.webhook_backoff_ms = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u64| *n <= 600_000)
                        .ok_or_else(|| invalid("expected milliseconds from 0 to 600000"))?;
                }
                "--service-protection" => {
                    if inline.is_some() {
                        return Err(invalid("takes no value"));
                    }
                    options.protection.enabled = true;
                }
                "--limit-requests" => {
                    options.protection.requests = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u32| *n > 0)
                        .ok_or_else(|| invalid("expected a positive number of requests"))?;
                }
                "--limit-execution-ms" => {
                    options.protection.execution_ms = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u64| *n > 0)
                        .ok_or_else(|| invalid("expected a positive number of milliseconds"))?;
                }
                "--limit-concurrent" => {
                    options.protection.concurrent = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u32| *n > 0)
                        .ok_or_else(|| invalid("expected a positive number of requests"))?;
                }
                "--limit-window-secs" => {
                    options.protection.window_secs = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u64| (1..=crate::protection::MAX_WINDOW_SECS).contains(n))
                        .ok_or_else(|| invalid("expected seconds from 1 to 86400"))?;
                }
                "--simulated-execution-ms" => {
                    options.protection.simulated_execution_ms = value()?
                        .parse()
                        .ok()
                        .filter(|n: &u64| *n <= crate::protection::MAX_SIMULATED_MS)
                        .ok_or_else(|| invalid("expected milliseconds from 0 to 600000"))?;
                }
                "--user-timezone-offset-minutes" => {
                    options.user_offset_minutes = value()?
                        .parse()
                        .ok()
                        .filter(|n: &i32| n.abs() <= crate::dates::MAX_OFFSET_MINUTES)
                        .ok_or_else(|| invalid("expected minutes east of UTC from -840 to 840"))?;
                }
                _ => return Err(CliError::Unknown(flag)),
            }
        }
        Ok((options, Parsed::Run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Options, Parsed), CliError> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn reads_every_flag_in_both_spellings() {
        let (o, p) = parse(&[
            "--listen=127.0.0.1:9",
            "--seed",
            "none",
            "--client-id",
            "a",
            "--client-secret=b",
            "--token-ttl",
            "5",
            "--webhook-attempts=4",
            "--webhook-backoff-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(p, Parsed::Run);
        assert_eq!(o.listen.port(), 9);
        assert_eq!(o.seed, Seed::None);
        assert_eq!((o.client_id.as_str(), o.client_secret.as_str()), ("a", "b"));
        assert_eq!(o.token_ttl_secs, 5);
        assert_eq!((o.webhook_attempts, o.webhook_backoff_ms), (4, 0));
        let (defaults, _) = parse(&[]).unwrap();
        assert_eq!(
            (defaults.webhook_attempts, defaults.webhook_backoff_ms),
            (2, 100)
        );
        assert_eq!(defaults.protection, crate::protection::Settings::default());
        assert!(!defaults.protection.enabled);
    }

    #[test]
    fn reads_the_service_protection_flags() {
        let (o, _) = parse(&[
            "--service-protection",
            "--limit-requests=500",
            "--limit-execution-ms",
            "40000",
            "--limit-concurrent",
            "8",
            "--limit-window-secs=10",
            "--simulated-execution-ms",
            "25",
        ])
        .unwrap();
        assert_eq!(
            o.protection,
            crate::protection::Settings {
                enabled: true,
                requests: 500,
                execution_ms: 40_000,
                concurrent: 8,
                window_secs: 10,
                simulated_execution_ms: 25,
            }
        );
        for bad in [
            &["--service-protection=yes"][..],
            &["--limit-requests", "0"],
            &["--limit-concurrent", "-1"],
            &["--limit-window-secs", "86401"],
            &["--simulated-execution-ms", "600001"],
        ] {
            assert!(
                matches!(parse(bad), Err(CliError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn explains_bad_arguments() {
        assert_eq!(
            parse(&["--bogus"]).unwrap_err(),
            CliError::Unknown("--bogus".into())
        );
        assert!(matches!(
            parse(&["--token-ttl", "-1"]),
            Err(CliError::Invalid { .. })
        ));
        assert!(matches!(parse(&["--seed"]), Err(CliError::MissingValue(_))));
        for bad in [
            ["--webhook-attempts", "0"],
            ["--webhook-attempts", "11"],
            ["--webhook-backoff-ms", "-1"],
            ["--webhook-backoff-ms", "600001"],
        ] {
            assert!(
                matches!(parse(&bad), Err(CliError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }
}
