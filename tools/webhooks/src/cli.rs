//! The command line, and running a parsed command.

use std::collections::BTreeSet;

use connector::Crm;
use connector::input::Dataset;
use dataverse::{Deadline, TableName};
use serde_json::Value;
use url::Url;

use crate::registration::{self, Auth, Message, Plan, ReceiverOptions, RegistrationError};

pub const USAGE: &str = "\
webhooks: push a Dataverse table's changes to dataverse-webhook

USAGE:
    webhooks register --dataset D --table T --url U [--messages create,update,delete]
                      [--columns a,b] [--filter F] [--previous]
                      [--auth webhook-key|http-header|http-query-string] [--update-key]
                      [--ignore-own-changes] [--formatted-values]
    webhooks list     --dataset D
    webhooks remove   --dataset D --url U [--filter F] [--table T]

    --url is the receiver's Function URL (the stack's WebhookUrl output); each dataset is sent to
    <url>/<dataset>. --columns limits updates to requests that set one of those columns. --filter
    is an OData $filter the receiver applies before publishing (to a deletion, through the row's
    pre-image); each filter is an endpoint of its own, so remove names it too. The key is
    the dataset's `webhook_key`, read with its credentials through CRM_SECRETS (as the functions read
    them); it is never printed. --update-key writes it to an endpoint that already exists.
    --previous gives the update step a pre-image (of --columns, else every column), so that
    updates say which columns changed and what they held. --ignore-own-changes and
    --formatted-values turn on the receiver's options of those names; they travel beside the key
    as query-string settings, so they need --auth http-query-string, the default with them.

    Registering twice changes nothing, and registering with other flags makes the registration
    what they say; remove deletes images, steps, then the endpoint once no step uses it. Each
    command prints what it did as JSON.";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register {
        dataset: Dataset,
        table: TableName,
        url: Url,
        messages: BTreeSet<Message>,
        columns: Vec<String>,
        /// The `$filter`, checked to be one the receiver can evaluate.
        filter: Option<String>,
        auth: Auth,
        update_key: bool,
        /// A pre-image on the Update step, for `changed` and `previous`.
        previous: bool,
        options: ReceiverOptions,
    },
    List {
        dataset: Dataset,
    },
    Remove {
        dataset: Dataset,
        url: Url,
        filter: Option<String>,
        table: Option<TableName>,
    },
    Help,
}

/// Why a command line or a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),

    #[error(transparent)]
    Crm(#[from] connector::CrmError),

    #[error(transparent)]
    Registration(#[from] RegistrationError),

    #[error(
        "dataset '{0}' has no webhook_key beside its credentials: add one (a long random string) first"
    )]
    NoKey(String),
}

impl CliError {
    /// The process's exit code: 2 for a wrong command line, 1 for a failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl Command {
    /// Parses the arguments after the program's name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, CliError> {
        let mut args = args.into_iter();
        let verb = args.next().unwrap_or_default();
        if matches!(verb.as_str(), "" | "-h" | "--help" | "help") {
            return Ok(Command::Help);
        }
        let mut options = Options::default();
        while let Some(flag) = args.next() {
            let switch = match flag.as_str() {
                "--update-key" => Some(&mut options.update_key),
                "--previous" => Some(&mut options.previous),
                "--ignore-own-changes" => Some(&mut options.receiver.ignore_own_changes),
                "--formatted-values" => Some(&mut options.receiver.formatted_values),
                _ => None,
            };
            if let Some(switch) = switch {
                if std::mem::replace(switch, true) {
                    return Err(CliError::Usage(format!("{flag} is given twice")));
                }
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))?;
            let slot = match flag.as_str() {
                "--dataset" => &mut options.dataset,
                "--table" => &mut options.table,
                "--url" => &mut options.url,
                "--messages" => &mut options.messages,
                "--columns" => &mut options.columns,
                "--filter" => &mut options.filter,
                "--auth" => &mut options.auth,
                _ => return Err(CliError::Usage(format!("unknown option {flag}"))),
            };
            if slot.replace(value).is_some() {
                return Err(CliError::Usage(format!("{flag} is given twice")));
            }
        }
        options.into_command(&verb)
    }
}

#[derive(Default)]
struct Options {
    dataset: Option<String>,
    table: Option<String>,
    url: Option<String>,
    messages: Option<String>,
    columns: Option<String>,
    filter: Option<String>,
    auth: Option<String>,
    update_key: bool,
    previous: bool,
    receiver: ReceiverOptions,
}

impl Options {
    fn into_command(self, verb: &str) -> Result<Command, CliError> {
        let usage = |m: String| CliError::Usage(m);
        let dataset = || {
            let name = self
                .dataset
                .clone()
                .ok_or_else(|| usage("--dataset is required".into()))?;
            Dataset::try_from(name).map_err(|p| usage(format!("--dataset: {p}")))
        };
        let table = |name: &String| {
            TableName::try_from(name.as_str()).map_err(|e| usage(format!("--table: {e}")))
        };
        let url = || {
            let text = self
                .url
                .as_deref()
                .ok_or_else(|| usage("--url is required".into()))?;
            let url = Url::parse(text).map_err(|e| usage(format!("--url: {e}")))?;
            // Dataverse sends webhooks only over HTTPS; plain HTTP is for a receiver on this machine.
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(usage(
                    "--url must be https (http only for 127.0.0.1 or localhost)".into(),
                ));
            }
            Ok(url)
        };
        // Refused here, rather than by every delivery afterwards.
        let filter = || {
            self.filter
                .as_deref()
                .map(|text| {
                    dataverse::filter::Filter::parse(text)
                        .map(|_| text.to_owned())
                        .map_err(|e| usage(format!("--filter: {e}")))
                })
                .transpose()
        };
        // Options that shape a registration mean nothing to list or remove: refused, not ignored.
        let registration_only = || {
            if self.messages.is_some()
                || self.columns.is_some()
                || self.auth.is_some()
                || self.update_key
                || self.previous
                || self.receiver.any()
            {
                Err(usage(
                    "--messages, --columns, --auth, --update-key, --previous, --ignore-own-changes and --formatted-values are only for register".into(),
                ))
            } else {
                Ok(())
            }
        };
        match verb {
            "register" => {
                let messages = match &self.messages {
                    None => Message::ALL.into_iter().collect(),
                    Some(list) => list
                        .split(',')
                        .map(|m| Message::try_from(m.trim()))
                        .collect::<Result<BTreeSet<_>, _>>()
                        .map_err(|p| usage(format!("--messages: {p}")))?,
                };
                let columns: Vec<String> = self
                    .columns
                    .iter()
                    .flat_map(|c| c.split(','))
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                if let Some(bad) = columns.iter().find(|c| !is_column_name(c)) {
                    return Err(usage(format!(
                        "--columns: '{bad}' is not a column's logical name"
                    )));
                }
                if !columns.is_empty() && !messages.contains(&Message::Update) {
                    return Err(usage(
                        "--columns filters updates, and update is not among --messages".into(),
                    ));
                }
                if self.previous && !messages.contains(&Message::Update) {
                    return Err(usage(
                        "--previous gives the update step a pre-image, and update is not among --messages".into(),
                    ));
                }
                let options = self.receiver;
                // The receiver reads its options from the query, and only the query-string auth
                // type adds parameters of our choosing to it.
                let auth = match &self.auth {
                    None if options.any() => Auth::HttpQueryString,
                    None => Auth::WebhookKey,
                    Some(text) => {
                        Auth::try_from(text.as_str()).map_err(|p| usage(format!("--auth: {p}")))?
                    }
                };
                if options.any() && auth != Auth::HttpQueryString {
                    return Err(usage(
                        "--ignore-own-changes and --formatted-values travel as query-string settings beside the key: use --auth http-query-string, or leave --auth out".into(),
                    ));
                }
                Ok(Command::Register {
                    dataset: dataset()?,
                    table: table(
                        self.table
                            .as_ref()
                            .ok_or_else(|| usage("--table is required".into()))?,
                    )?,
                    url: url()?,
                    messages,
                    columns,
                    filter: filter()?,
                    auth,
                    update_key: self.update_key,
                    previous: self.previous,
                    options,
                })
            }
            "list" => {
                registration_only()?;
                if self.table.is_some() || self.url.is_some() || self.filter.is_some() {
                    return Err(usage("list takes only --dataset".into()));
                }
                Ok(Command::List {
                    dataset: dataset()?,
                })
            }
            "remove" => {
                registration_only()?;
                Ok(Command::Remove {
                    dataset: dataset()?,
                    url: url()?,
                    filter: filter()?,
                    table: self.table.as_ref().map(table).transpose()?,
                })
            }
            other => Err(usage(format!("unknown command '{other}'"))),
        }
    }
}

/// A logical name as Dataverse makes them: lower-case letters, digits and underscores.
fn is_column_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Runs `command` with the datasets' credentials from `crm`, and returns what it printed.
pub async fn run(crm: &Crm, command: Command, deadline: Deadline) -> Result<Value, CliError> {
    match command {
        Command::Help => Ok(Value::String(USAGE.to_owned())),
        Command::Register {
            dataset,
            table,
            url,
            messages,
            columns,
            filter,
            auth,
            update_key,
            previous,
            options,
        } => {
            let key = crm
                .webhook_key(&dataset)
                .await?
                .ok_or_else(|| CliError::NoKey(dataset.to_string()))?;
            let delete_image_columns = match filter.as_deref() {
                Some(text) => registration::image_columns(
                    &dataverse::filter::Filter::parse(text)
                        .map_err(|e| CliError::Usage(format!("--filter: {e}")))?,
                ),
                None => Vec::new(),
            };
            let endpoint_url =
                registration::endpoint_url(&url, dataset.as_str(), filter.as_deref());
            if endpoint_url.as_str().len() > registration::MAX_URL_CHARS {
                return Err(CliError::Usage(format!(
                    "--filter: the endpoint's address would be {} characters, and Dataverse keeps at most {}; shorten the filter",
                    endpoint_url.as_str().len(),
                    registration::MAX_URL_CHARS
                )));
            }
            let plan = Plan {
                endpoint_url,
                table,
                messages,
                columns,
                auth,
                update_key,
                delete_image_columns,
                previous,
                options,
            };
            let client = crm.client(&dataset).await?;
            let outcome = registration::register(&client, &key, &plan, deadline).await?;
            Ok(serde_json::json!({
                "endpoint": plan.endpoint_url.as_str(),
                "outcome": outcome.to_json(),
            }))
        }
        Command::List { dataset } => {
            let client = crm.client(&dataset).await?;
            Ok(registration::list(&client, deadline).await?)
        }
        Command::Remove {
            dataset,
            url,
            filter,
            table,
        } => {
            let endpoint = registration::endpoint_url(&url, dataset.as_str(), filter.as_deref());
            let client = crm.client(&dataset).await?;
            let outcome =
                registration::remove(&client, &endpoint, table.as_ref(), deadline).await?;
            Ok(serde_json::json!({
                "endpoint": endpoint.as_str(),
                "outcome": outcome.to_json(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, CliError> {
        Command::parse(line.split_whitespace().map(str::to_owned))
    }

    fn usage(line: &str) -> String {
        match parse(line) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn parses_register_with_defaults_and_options() {
        let Command::Register { messages, columns, auth, update_key, url, .. } =
            parse("register --dataset contoso --table account --url https://x.lambda-url.eu-west-1.on.aws/").unwrap()
        else {
            panic!()
        };
        assert_eq!(messages, Message::ALL.into_iter().collect());
        assert!(columns.is_empty() && !update_key);
        assert_eq!(auth, Auth::WebhookKey);
        assert_eq!(url.host_str(), Some("x.lambda-url.eu-west-1.on.aws"));
        let Command::Register { messages, columns, auth, .. } = parse(
            "register --dataset contoso --table account --url http://127.0.0.1:9/ --messages update --columns Name,telephone1 --auth http-header",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(messages, [Message::Update].into_iter().collect());
        assert_eq!(columns, ["name", "telephone1"]);
        assert_eq!(auth, Auth::HttpHeader);
        let line = [
            "register",
            "--dataset",
            "contoso",
            "--table",
            "account",
            "--url",
            "https://x/",
            "--filter",
            "statecode eq 0",
        ];
        let Command::Register { filter, .. } = Command::parse(line.map(str::to_owned)).unwrap()
        else {
            panic!()
        };
        assert_eq!(filter.as_deref(), Some("statecode eq 0"));
    }

    #[test]
    fn parses_the_pre_image_and_the_receivers_options() {
        let base = "register --dataset contoso --table account --url https://x/";
        let Command::Register {
            previous,
            options,
            auth,
            ..
        } = parse(base).unwrap()
        else {
            panic!()
        };
        assert!(!previous && !options.any());
        assert_eq!(auth, Auth::WebhookKey);
        let Command::Register {
            previous,
            options,
            auth,
            ..
        } = parse(&format!(
            "{base} --previous --ignore-own-changes --formatted-values"
        ))
        .unwrap()
        else {
            panic!()
        };
        assert!(previous && options.ignore_own_changes && options.formatted_values);
        assert_eq!(
            auth,
            Auth::HttpQueryString,
            "the options' auth type by default"
        );
        let Command::Register { options, .. } = parse(&format!(
            "{base} --formatted-values --auth http-query-string"
        ))
        .unwrap() else {
            panic!()
        };
        assert!(options.formatted_values && !options.ignore_own_changes);
    }

    #[test]
    fn refuses_what_would_register_the_wrong_thing() {
        let base = "register --dataset contoso --table account";
        assert!(usage(&format!("{base} --url http://example.com/")).contains("https"));
        assert!(
            usage(&format!("{base} --url https://x/ --messages create,insert")).contains("insert")
        );
        assert!(
            usage(&format!(
                "{base} --url https://x/ --messages create --columns name"
            ))
            .contains("update")
        );
        assert!(
            usage(&format!("{base} --url https://x/ --columns 'x;y'")).contains("logical name")
        );
        assert!(usage(&format!("{base} --url https://x/ --auth basic")).contains("auth"));
        // Options the chosen auth type cannot carry, a pre-image without an update step.
        for auth in ["webhook-key", "http-header"] {
            assert!(
                usage(&format!(
                    "{base} --url https://x/ --auth {auth} --ignore-own-changes"
                ))
                .contains("http-query-string")
            );
        }
        assert!(
            usage(&format!(
                "{base} --url https://x/ --messages create,delete --previous"
            ))
            .contains("update")
        );
        assert!(usage(&format!("{base} --url https://x/ --previous --previous")).contains("twice"));
        assert!(
            usage("remove --dataset contoso --url https://x/ --formatted-values")
                .contains("only for register")
        );
        assert!(usage("register --table account --url https://x/").contains("--dataset"));
        assert!(usage("list --dataset contoso --url https://x/").contains("only --dataset"));
        assert!(
            usage("remove --dataset contoso --url https://x/ --columns a")
                .contains("only for register")
        );
        // A filter the receiver could not evaluate is refused here, naming the construct.
        assert!(
            usage(&format!(
                "{base} --url https://x/ --filter parentcustomerid_account/name"
            ))
            .contains("--filter")
        );
        assert!(usage("list --dataset contoso --filter a").contains("only --dataset"));
        assert!(usage("frobnicate --dataset contoso").contains("unknown command"));
        assert!(usage("list --dataset contoso --dataset fabrikam").contains("twice"));
        assert_eq!(parse("").unwrap(), Command::Help);
    }
}
