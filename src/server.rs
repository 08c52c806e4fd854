//! Starting and stopping one shmimage server: raise the open-file limit, bind, attach to the
//! segment, announce the address, serve until SIGINT or SIGTERM, detach.

use crate::config::Config;
use crate::segment::{Segment, SegmentConfig};
use crate::web::serve::{self, Shutdown};
use crate::web::{self, AppState, budget};
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs a server as `config` says until SIGINT or SIGTERM. The error says why it could not
/// start or keep running, in words for the person who started it.
pub async fn serve(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind((config.bind, config.port))
        .await
        .map_err(|error| {
            format!(
                "cannot listen on {}:{}: {error}; pick another --port, or 0 for a free one",
                config.bind, config.port
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot tell which address the server listens on: {error}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr}, which is not a loopback address: anyone who can reach it can \
             read and replace the shared image"
        );
    }

    // Attaching happens after binding, so the label carries the port that 0 resolved to.
    let segment = Segment::attach(SegmentConfig {
        name: config.segment.clone(),
        max_pixels: config.max_pixels,
        label: addr.to_string(),
    })
    .map_err(|error| {
        format!(
            "cannot attach to shared memory segment \"{}\": {error}",
            config.segment
        )
    })?;
    let segment = Arc::new(segment);
    let limits = config.limits(budget::available_memory());
    let state =
        AppState::new(Arc::clone(&segment), limits).with_allowed_hosts(config.allowed_hosts());
    let connection_limits = config.connection_limits(connection_cap(&config));
    tracing::info!(
        max_connections = connection_limits.max_connections,
        max_memory_mib = limits.max_memory >> 20,
        "limits"
    );

    let shutdown = Shutdown::on_signals()
        .map_err(|error| format!("cannot listen for SIGINT and SIGTERM: {error}"))?;
    let announced = announce(&format!(
        "listening on http://{addr} (segment \"{}\")",
        config.segment
    ));
    let served = match announced {
        Ok(()) => {
            tracing::info!(%addr, segment = %config.segment, "serving");
            web::run(listener, state, connection_limits, shutdown)
                .await
                .map_err(|error| format!("the server stopped: {error}"))
        }
        Err(error) => Err(format!("cannot write to stdout: {error}")),
    };
    detach(segment);
    served
}

/// How many connections the server may hold: `--max-connections`, or fewer if the limit on
/// open files (raised to its hard limit first) would not leave room for everything else.
fn connection_cap(config: &Config) -> usize {
    let files = serve::raise_open_file_limit();
    let requested = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
    let cap = serve::connection_cap(requested, files);
    if cap < requested {
        tracing::warn!(
            "serving at most {cap} connections at once, not {requested}: this process may open \
             only {} files (ulimit -n)",
            files.unwrap_or_default()
        );
    }
    cap
}

/// Prints the one line on stdout that scripts and tests wait for.
fn announce(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Detaches from the segment, or leaves that to the last request still holding it.
fn detach(segment: Arc<Segment>) {
    match Arc::try_unwrap(segment) {
        Ok(segment) => match segment.detach() {
            Ok(true) => {
                tracing::info!("detached; this was the last server, so the segment is gone")
            }
            Ok(false) => tracing::info!("detached; other servers still share the segment"),
            Err(error) => tracing::warn!("detaching from the segment failed: {error}"),
        },
        Err(_still_shared) => tracing::info!(
            "requests that timed out still hold the segment; it is detached when they finish"
        ),
    }
}
