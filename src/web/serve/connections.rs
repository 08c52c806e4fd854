//! Every open connection, what it is doing, and since when: the facts the accept loop needs to
//! time connections out and to choose which one to close when the cap is reached.
//!
//! A connection is in one [`Phase`] at a time:
//!
//! - `Fresh`: accepted, nothing received yet;
//! - `Head`: bytes of a request head have arrived, the head is not complete;
//! - `Busy`: a request is being handled or its response is being sent;
//! - `Idle`: kept alive between two requests, nothing received since the last response.
//!
//! [`TrackedIo`] (the socket) moves `Fresh`/`Idle` to `Head` when bytes arrive and notes when a
//! write has been waiting for the client; [`InFlight`] (held by a request until its response
//! body is done) moves to `Busy` and back to `Idle`. Each change wakes the connection's task,
//! which closes the connection when its phase has lasted too long.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What a connection is doing; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Fresh = 0,
    Head = 1,
    Busy = 2,
    Idle = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Fresh,
            1 => Phase::Head,
            2 => Phase::Busy,
            _ => Phase::Idle,
        }
    }
}

/// One open connection, shared by its task, its socket and its requests.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds since `epoch` when the phase began.
    since_ms: AtomicU64,
    /// Milliseconds since `epoch` when a write began waiting for the client; 0 when none waits.
    write_blocked_ms: AtomicU64,
    /// Requests of this connection not done yet (a pipelined one may overlap the last).
    in_flight: AtomicU64,
    /// Woken when the phase changes, a write starts waiting, or the connection must close.
    changed: Notify,
    /// Set when the connection is to be closed at once.
    evicted: AtomicU8,
}

impl Connection {
    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 can mean "not set".
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// How long the current phase has lasted.
    pub fn phase_age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.since_ms.load(Ordering::Acquire)),
        )
    }

    /// How long the oldest write still waiting for the client has waited, if one waits.
    pub fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }

    /// Whether the connection was told to close at once.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire) != 0
    }

    /// Resolves when anything about the connection changed (see [`Connection::changed`]).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: a fresh or idle connection is now reading a head.
    fn received(&self) {
        let phase = self.phase();
        if (phase == Phase::Fresh || phase == Phase::Idle)
            && self
                .phase
                .compare_exchange(
                    phase as u8,
                    Phase::Head as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.since_ms.store(self.now_ms(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self) {
        if self
            .write_blocked_ms
            .compare_exchange(0, self.now_ms(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn write_progressed(&self) {
        self.write_blocked_ms.store(0, Ordering::Release);
    }

    /// Tells the connection's task to close it now.
    pub fn evict(&self) {
        self.evicted.store(1, Ordering::Release);
        self.changed.notify_one();
    }
}

/// A request of `connection` in progress: the connection is `Busy` until every one is dropped
/// (with the response body it travels in), then `Idle`.
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl InFlight {
    /// Marks a request of `connection` as started.
    pub fn start(connection: &Arc<Connection>) -> InFlight {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.enter(Phase::Busy);
        InFlight(Arc::clone(connection))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(Phase::Idle);
        }
    }
}

/// The open connections of one server.
#[derive(Debug)]
pub struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl Registry {
    /// Registers a connection just accepted. It is forgotten when the returned guard drops.
    pub fn open(self: &Arc<Self>) -> Registered {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            phase: AtomicU8::new(Phase::Fresh as u8),
            since_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            changed: Notify::new(),
            evicted: AtomicU8::new(0),
        });
        connection
            .since_ms
            .store(connection.now_ms(), Ordering::Release);
        self.connections()
            .insert(connection.id, Arc::clone(&connection));
        Registered {
            registry: Arc::clone(self),
            connection,
        }
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.connections().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the connection that is least useful to keep, to make room for a new one: the one
    /// idle longest between requests, else the one that has been sending its head longest (or
    /// sent nothing). Connections handling a request are never chosen. Returns whether one was.
    pub fn evict_one(&self) -> bool {
        let connections = self.connections();
        let rank = |connection: &Connection| match connection.phase() {
            Phase::Idle => Some((0, std::cmp::Reverse(connection.phase_age()))),
            Phase::Fresh | Phase::Head => Some((1, std::cmp::Reverse(connection.phase_age()))),
            Phase::Busy => None,
        };
        let victim = connections
            .values()
            .filter(|connection| !connection.is_evicted())
            .filter_map(|connection| rank(connection).map(|rank| (rank, connection)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, connection)| Arc::clone(connection));
        drop(connections);
        match victim {
            Some(connection) => {
                connection.evict();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the [`Registry`], given up on drop.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Registered {
    /// The connection.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.connections().remove(&self.connection.id);
    }
}

/// A socket that tells its [`Connection`] when bytes arrive and when writes wait for the client.
#[derive(Debug)]
pub struct TrackedIo<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, connection: Arc<Connection>) -> TrackedIo<S> {
        TrackedIo { inner, connection }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> TrackedIo<S> {
    fn track<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &polled {
            Poll::Pending => self.connection.write_blocked(),
            Poll::Ready(_) => self.connection.write_progressed(),
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_make_a_connection_busy_until_their_responses_are_done() {
        let registry = Arc::new(Registry::default());
        let registered = registry.open();
        let connection = Arc::clone(registered.connection());
        assert_eq!(connection.phase(), Phase::Fresh);
        connection.received();
        assert_eq!(connection.phase(), Phase::Head);
        let first = InFlight::start(&connection);
        let pipelined = InFlight::start(&connection);
        connection.received();
        assert_eq!(
            connection.phase(),
            Phase::Busy,
            "bytes during a request change nothing"
        );
        drop(first);
        assert_eq!(connection.phase(), Phase::Busy);
        drop(pipelined);
        assert_eq!(connection.phase(), Phase::Idle);
        connection.received();
        assert_eq!(connection.phase(), Phase::Head);
        drop(registered);
        assert!(registry.is_empty());
    }

    #[test]
    fn idle_connections_are_closed_first_and_busy_ones_never() {
        let registry = Arc::new(Registry::default());
        let busy = registry.open();
        let _request = InFlight::start(busy.connection());
        let stalled = registry.open();
        stalled.connection().received();
        let idle = registry.open();
        drop(InFlight::start(idle.connection()));

        assert!(registry.evict_one());
        assert!(idle.connection().is_evicted());
        assert!(registry.evict_one());
        assert!(stalled.connection().is_evicted());
        assert!(!registry.evict_one(), "only a busy connection is left");
        assert!(!busy.connection().is_evicted());
    }
}
