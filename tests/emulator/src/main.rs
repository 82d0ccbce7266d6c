//! `dataverse-emulator`: see `--help` and the crate documentation.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use dataverse_emulator::cli::{Options, Parsed, USAGE};
use dataverse_emulator::{Emulator, server};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let (options, parsed) = match Options::parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("dataverse-emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if parsed == Parsed::Help {
        eprintln!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let listener = match TcpListener::bind(options.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "dataverse-emulator: cannot listen on {}: {e}",
                options.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let address = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dataverse-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Mutex::new(Emulator::new(&options)));
    // The one line callers wait for; flushed at once because stdout may be a pipe.
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on http://{address}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return ExitCode::FAILURE;
    };
    tokio::select! {
        result = server::serve(listener, shared) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dataverse-emulator: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = terminate.recv() => ExitCode::SUCCESS,
    }
}
