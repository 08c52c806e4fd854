//! The shmimage binary: parse the command line, set up logging, then run a command
//! ([`shmimage::commands::run`]) or, with none, a server ([`shmimage::server::serve`]).

use clap::Parser;
use shmimage::config::{Cli, Config};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(command) => {
            // A command's output is its result: log only what goes wrong.
            init_logging("warn");
            shmimage::commands::run(command)
        }
        None => {
            init_logging("info");
            serve(cli.server)
        }
    }
}

/// Logs to stderr at `default_level`, unless `RUST_LOG` says otherwise.
fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .init();
}

/// Runs a server until SIGINT or SIGTERM.
fn serve(config: Config) -> ExitCode {
    shmimage::allocator::configure_for_server();
    let served = tokio::runtime::Runtime::new()
        .map_err(|error| format!("cannot start the server's threads: {error}"))
        .and_then(|runtime| runtime.block_on(shmimage::server::serve(config)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shmimage: {message}");
            ExitCode::FAILURE
        }
    }
}
