//! The shmimage server binary: configuration, logging, then [`shmimage::server::serve`].

use clap::Parser;
use shmimage::config::Config;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match shmimage::server::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shmimage: {message}");
            ExitCode::FAILURE
        }
    }
}
