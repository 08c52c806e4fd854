//! The accept loop: every connection a client opens, and every second and byte it holds, has a
//! limit.
//!
//! Connections are served by hyper's HTTP/1.1 connection with a timer, so its own limits apply:
//! request heads of at most [`ConnectionLimits::max_head_bytes`] (431 above; 414 for a request
//! target hyper cannot hold) and at most 100 header lines (431). On top of that, each
//! connection's task follows what its connection is doing (see [`connections`]) and closes it
//! when
//!
//! - its request head has not arrived within [`ConnectionLimits::header_timeout`] (counted from
//!   the connection's start, or from the first byte of the next request on a kept-alive one),
//! - it has idled between requests for [`ConnectionLimits::keep_alive_timeout`],
//! - a response has waited for the client to read it for [`ConnectionLimits::send_timeout`].
//!
//! At most [`ConnectionLimits::max_connections`] connections are open at once, a number kept
//! below the process's limit on open files (whose soft limit [`raise_open_file_limit`] raises to
//! the hard one at start). At the cap, a new connection takes the place of the connection idle
//! longest (or, if none idles, the one that has been sending its head longest), as nginx reuses
//! idle keep-alive connections; if every connection is handling a request, the newcomer is
//! answered `503` with `Retry-After`. Running out of file descriptors makes the loop close an
//! idle connection and try again, never stop.
//!
//! On shutdown the listener closes at once, connections that are not handling a request close,
//! the others finish their request within [`ConnectionLimits::shutdown_grace`]; then, or on a
//! second signal, every connection is dropped.

pub mod connections;
mod shutdown;

pub use self::shutdown::{Shutdown, ShutdownTrigger};

use self::connections::{Connection, InFlight, Phase, Registry, TrackedIo};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// File descriptors kept free of connections: for the segment's objects, the static files,
/// the process's own files, and the short-lived connections answered `503` at the cap.
pub const RESERVED_FDS: u64 = 128;

/// How many connections may be waiting for their `503` at the cap at once; beyond that, new
/// connections are closed at once.
const MAX_REFUSING: usize = 64;

/// How long the accept loop pauses after running out of file descriptors.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(20);

/// What a client may hold: connections, time and head bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long a connection may idle between two requests.
    pub keep_alive_timeout: Duration,
    /// How long a response may wait for the client to read it.
    pub send_timeout: Duration,
    /// The most connections open at once (already below the open-file limit).
    pub max_connections: usize,
    /// The largest request head (request line and headers), in bytes.
    pub max_head_bytes: usize,
    /// How long running requests may go on after the first shutdown signal.
    pub shutdown_grace: Duration,
}

/// How the server answers a request it has no room for: `503` with `Retry-After`, in the form
/// the request's headers ask for.
pub type Overloaded = Arc<dyn Fn(&HeaderMap) -> Response<Body> + Send + Sync>;

/// Raises the soft limit on open files to the hard limit and returns the limit now in force
/// (`None` if it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!("cannot raise the limit on open files: {error}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// `requested` connections, or fewer if the open-file limit `fds` would not leave
/// [`RESERVED_FDS`] descriptors for everything else (at least half the limit, at least 1).
pub fn connection_cap(requested: usize, fds: Option<u64>) -> usize {
    let Some(fds) = fds else {
        return requested;
    };
    let room = fds.saturating_sub(RESERVED_FDS).max(fds / 2).max(1);
    requested.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `router` on `listener` within `limits` until `shutdown` has been signalled, then
/// shuts down as the module documentation says. `on_draining` runs when the listener has
/// closed and running requests are being let finish (to end streams that never finish).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    overloaded: Overloaded,
    shutdown: Shutdown,
    on_draining: impl FnOnce(),
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The connection's task enforces the header and keep-alive timeouts exactly; hyper's
        // own timer, covering both, is the second line.
        .header_read_timeout(limits.header_timeout + limits.keep_alive_timeout)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry::default());
    let tasks = TaskTracker::new();
    let draining = CancellationToken::new();
    let closing = CancellationToken::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut fd_warned: Option<Instant> = None;

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.signalled(1) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_out_of_descriptors(&error) => {
                if fd_warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        open = registry.len(),
                        "out of file descriptors ({error}): closing idle connections to make \
                         room; raise the limit (ulimit -n) or lower --max-connections"
                    );
                    fd_warned = Some(Instant::now());
                }
                registry.evict_one();
                tokio::time::sleep(FD_EXHAUSTED_PAUSE).await;
                continue;
            }
            Err(error) => {
                tracing::debug!("accepting a connection failed: {error}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if registry.len() >= limits.max_connections && !registry.evict_one() {
            refuse(
                stream,
                &builder,
                &tasks,
                &refusing,
                Arc::clone(&overloaded),
                closing.clone(),
            );
            continue;
        }
        let registered = registry.open();
        let connection = ConnectionTask {
            builder: Arc::clone(&builder),
            limits,
            draining: draining.clone(),
            closing: closing.clone(),
        };
        let router = router.clone();
        tasks.spawn(async move {
            let service = Tracked {
                router,
                connection: Arc::clone(registered.connection()),
            };
            connection
                .run(stream, Arc::clone(registered.connection()), service)
                .await;
            drop(registered);
        });
    }

    drop(listener);
    on_draining();
    draining.cancel();
    tasks.close();
    let open = registry.len();
    if open > 0 {
        tracing::info!(
            open,
            "no longer accepting connections; letting running requests finish for up to {:?}",
            limits.shutdown_grace
        );
    }
    tokio::select! {
        () = tasks.wait() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => tracing::info!(
            open = registry.len(),
            "the shutdown grace period is over: closing the connections still open"
        ),
        () = shutdown.signalled(2) => tracing::info!(
            open = registry.len(),
            "closing the connections still open"
        ),
    }
    closing.cancel();
    tasks.wait().await;
    Ok(())
}

/// Whether accepting failed because the process or the system has no file descriptor left.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Answers a connection there is no room for with `503`, unless too many such answers are
/// pending already (then it is closed at once).
fn refuse(
    stream: TcpStream,
    builder: &Arc<http1::Builder>,
    tasks: &TaskTracker,
    refusing: &Arc<AtomicUsize>,
    overloaded: Overloaded,
    closing: CancellationToken,
) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!("at the connection cap with every connection busy: closing a newcomer");
        return;
    }
    let builder = Arc::clone(builder);
    let refusing = Arc::clone(refusing);
    tasks.spawn(async move {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = overloaded(request.headers());
            async move { Ok::<_, Infallible>(response) }
        });
        let mut builder = (*builder).clone();
        builder.keep_alive(false);
        let serving = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = serving => {}
            () = closing.cancelled() => {}
        }
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// What one connection's task needs besides its socket.
struct ConnectionTask {
    builder: Arc<http1::Builder>,
    limits: ConnectionLimits,
    draining: CancellationToken,
    closing: CancellationToken,
}

impl ConnectionTask {
    /// Serves one connection until it ends, times out, is evicted or shutdown drops it.
    async fn run(self, stream: TcpStream, connection: Arc<Connection>, service: Tracked) {
        let io = TokioIo::new(TrackedIo::new(stream, Arc::clone(&connection)));
        let serving = self.builder.serve_connection(io, service);
        tokio::pin!(serving);
        let mut draining = false;
        loop {
            let (limit, left) = self.time_left(&connection);
            tokio::select! {
                result = serving.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!("connection ended: {error}");
                    }
                    return;
                }
                () = connection.changed() => {
                    if connection.is_evicted() {
                        tracing::debug!("closing a connection to make room for a new one");
                        return;
                    }
                }
                () = sleep_for(left) => {
                    if self.time_left(&connection).1 == Some(Duration::ZERO) {
                        tracing::debug!("closing a connection: {limit}");
                        return;
                    }
                }
                () = self.draining.cancelled(), if !draining => {
                    draining = true;
                    serving.as_mut().graceful_shutdown();
                }
                () = self.closing.cancelled() => return,
            }
            if draining && connection.phase() != Phase::Busy {
                return;
            }
        }
    }

    /// Which limit applies to the connection now and how much of it is left (`None`: no limit
    /// runs, as while a request is handled).
    fn time_left(&self, connection: &Connection) -> (&'static str, Option<Duration>) {
        let limits = &self.limits;
        let (limit, allowed, used) = match connection.phase() {
            Phase::Fresh | Phase::Head => (
                "its request head took too long",
                limits.header_timeout,
                connection.phase_age(),
            ),
            Phase::Idle => (
                "it idled for the keep-alive timeout",
                limits.keep_alive_timeout,
                connection.phase_age(),
            ),
            Phase::Busy => match connection.write_blocked_for() {
                Some(waited) => (
                    "the client stopped reading its response",
                    limits.send_timeout,
                    waited,
                ),
                None => return ("", None),
            },
        };
        (limit, Some(allowed.saturating_sub(used)))
    }
}

/// Sleeps for `duration`, or forever when there is none.
async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// The router as hyper's service for one connection: each request holds an [`InFlight`] until
/// its response body is done, so the connection is known to be busy until then.
#[derive(Clone)]
struct Tracked {
    router: Router,
    connection: Arc<Connection>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.connection);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request [`InFlight`] until hyper has sent it and drops it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(
            connection_cap(10_000, Some(1024)),
            1024 - RESERVED_FDS as usize
        );
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(50, Some(1024)), 50);
        assert_eq!(connection_cap(10_000, Some(100)), 50);
        assert_eq!(connection_cap(10_000, Some(1)), 1);
        assert_eq!(connection_cap(10_000, None), 10_000);
    }
}
