//! `webhooks`: wiring only. The command line and the registration live in the library; credentials
//! come from `CRM_SECRETS`, as for the functions.

// A command-line tool: what it did goes to stdout, and why it failed to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use connector::Crm;
use dataverse::Deadline;
use webhooks::cli::{self, Command};

/// Time for a whole command: a registration is about twenty requests.
const COMMAND_TIME: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let outcome = async {
        let command = Command::parse(std::env::args().skip(1))?;
        let crm = Crm::from_env().await.map_err(connector::CrmError::from)?;
        cli::run(&crm, command, Deadline::after(COMMAND_TIME)).await
    }
    .await;
    match outcome {
        Ok(serde_json::Value::String(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            println!("{answer:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webhooks: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
