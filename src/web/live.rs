//! `GET /events`: the segment's state pushed to open pages as Server-Sent Events.
//!
//! One [`SegmentWatcher`] thread per server sleeps in [`Segment::wait_for_change`] until any
//! process publishes a new image, reads the segment's state (no pixels) and publishes it into the
//! server's [`LiveFeed`], a `tokio::sync::watch` channel. Every `/events` connection subscribes
//! to that channel, so a thousand open pages cost one watcher, and each new image is serialised
//! to JSON once. Between waits the watcher also notices servers attaching and detaching.
//!
//! Events:
//!
//! - `state`: sent at once on connect, and whenever only the list of attached servers changes;
//! - `image`: a new image was published (also the first event of a reconnecting client whose
//!   `Last-Event-ID` names an older image).
//!
//! Each event's data is what `GET /api/segment` answers, and its id is `I-N`, the segment's
//! incarnation in hexadecimal and the image's sequence number, as in the image's ETag.
//!
//! On shutdown, [`LiveFeed::close`] ends every stream, so graceful shutdown is not held up by
//! open pages, and [`SegmentWatcher::stop`] joins the thread, which only ever holds a
//! [`Weak`] reference to the segment between waits, so the server can detach from it.

use super::AppState;
use super::api::SegmentJson;
use crate::segment::Segment;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::sync::watch;

/// How long the watcher sleeps on the segment at most before checking whether it should stop
/// and whether servers attached or detached. Shutdown waits at most this long for it.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How often an idle `/events` stream sends a comment, so proxies and browsers keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How soon a browser reconnects after the stream ends (a server restart, say).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The segment's state at one moment, as every `/events` stream sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Tells this segment from earlier ones of the same name (see [`Segment::incarnation`]).
    pub incarnation: u64,
    /// Sequence number of the published image; 0 when there is none.
    pub seq: u64,
    /// `GET /api/segment`'s JSON for this state.
    pub json: Arc<str>,
}

impl Snapshot {
    /// Reads the segment's state (metadata only; no pixels are copied). Blocks briefly.
    pub fn read(segment: &Segment) -> Result<Snapshot, String> {
        let state = segment.state().map_err(|error| error.to_string())?;
        let seq = state.seq;
        let json = serde_json::to_string(&SegmentJson::from(state))
            .map_err(|error| format!("cannot serialise the segment's state: {error}"))?;
        Ok(Snapshot {
            incarnation: segment.incarnation(),
            seq,
            json: json.into(),
        })
    }

    /// The event id: `I-N`, incarnation in hexadecimal and sequence number.
    pub fn id(&self) -> String {
        format!("{:x}-{}", self.incarnation, self.seq)
    }

    /// Whether this snapshot holds another image than `other`.
    fn has_new_image_since(&self, other: &Snapshot) -> bool {
        (self.incarnation, self.seq) != (other.incarnation, other.seq)
    }

    /// This snapshot as an SSE event named `kind`.
    fn event(&self, kind: EventKind) -> Event {
        Event::default()
            .event(kind.name())
            .id(self.id())
            .data(&*self.json)
    }
}

/// The two kinds of event `/events` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// The state as it is; the image is one the client has (or has not asked about).
    State,
    /// A new image was published.
    Image,
}

impl EventKind {
    fn name(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Image => "image",
        }
    }
}

/// A server's live view of its segment: the latest [`Snapshot`] and whether the server is
/// shutting down. Cheap to share; `/events` streams subscribe to it.
#[derive(Debug)]
pub struct LiveFeed {
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    closing: watch::Sender<bool>,
}

impl LiveFeed {
    /// A feed that starts with the segment's state now (or with nothing, if it cannot be read;
    /// the watcher fills it in).
    pub fn new(segment: &Segment) -> LiveFeed {
        let first = match Snapshot::read(segment) {
            Ok(snapshot) => Some(Arc::new(snapshot)),
            Err(error) => {
                tracing::warn!("cannot read the segment's state for live updates yet: {error}");
                None
            }
        };
        LiveFeed {
            latest: watch::Sender::new(first),
            closing: watch::Sender::new(false),
        }
    }

    /// The latest snapshot, if any was read.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.borrow().clone()
    }

    /// Publishes `snapshot` unless it says exactly what the latest one says. Returns whether
    /// it was published.
    pub fn publish(&self, snapshot: Snapshot) -> bool {
        self.latest.send_if_modified(|latest| {
            if latest.as_deref() == Some(&snapshot) {
                false
            } else {
                *latest = Some(Arc::new(snapshot));
                true
            }
        })
    }

    /// Ends every open `/events` stream, and any opened from now on after its first event.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// How many `/events` streams are open.
    pub fn subscribers(&self) -> usize {
        self.latest.receiver_count()
    }
}

/// The one thread per server that waits for new images in the segment and publishes them into
/// the [`LiveFeed`]. Stop it with [`SegmentWatcher::stop`] before detaching from the segment.
#[derive(Debug)]
pub struct SegmentWatcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl SegmentWatcher {
    /// Starts watching `segment` for `feed`. The thread holds the segment only weakly, and
    /// strongly only while it waits on it or reads its state.
    pub fn start(segment: &Arc<Segment>, feed: Arc<LiveFeed>) -> io::Result<SegmentWatcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let segment = Arc::downgrade(segment);
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("segment-watcher".to_owned())
            .spawn(move || watch_segment(&segment, &feed, &stopped))?;
        Ok(SegmentWatcher { stop, thread })
    }

    /// Asks the thread to stop and waits for it: at most about [`WATCH_INTERVAL`]. Afterwards
    /// it holds no reference to the segment.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the segment watcher thread panicked");
        }
    }
}

/// The watcher's loop: wait for a change (or [`WATCH_INTERVAL`]), read the state, publish it.
fn watch_segment(segment: &Weak<Segment>, feed: &LiveFeed, stop: &AtomicBool) {
    let mut seen = feed.latest().map_or(0, |snapshot| snapshot.seq);
    let mut failing = false;
    while !stop.load(Ordering::Acquire) {
        let Some(segment) = segment.upgrade() else {
            break;
        };
        let seq = segment.wait_for_change(seen, WATCH_INTERVAL);
        if stop.load(Ordering::Acquire) {
            break;
        }
        match Snapshot::read(&segment) {
            Ok(snapshot) => {
                seen = snapshot.seq;
                if feed.publish(snapshot) && seq != seen {
                    tracing::debug!(seq, "published a new image to live pages");
                }
                failing = false;
            }
            Err(error) => {
                // Do not spin on a segment that keeps failing: wait for the next change.
                seen = seq;
                if !failing {
                    tracing::warn!("live updates cannot read the segment's state: {error}");
                }
                failing = true;
            }
        }
    }
    tracing::debug!("the segment watcher stopped");
}

/// `GET /events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = state.live_feed();
    // The watcher publishes each new image a moment after it lands; a page that connects in
    // that moment (right after its own upload, say) must still start from the image there is.
    let segment = state.segment();
    if feed.latest().map(|snapshot| snapshot.seq) != Some(segment.seq()) {
        match Snapshot::read(segment) {
            Ok(snapshot) => {
                feed.publish(snapshot);
            }
            Err(error) => tracing::debug!("cannot read the segment's state for a page: {error}"),
        }
    }
    let mut latest = feed.latest.subscribe();
    let current = latest.borrow_and_update().clone();
    let resumed_from = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim);
    let first = current.map(|snapshot| {
        let kind = match resumed_from {
            Some(id) if id != snapshot.id() => EventKind::Image,
            _ => EventKind::State,
        };
        (snapshot.event(kind).retry(RECONNECT_AFTER), snapshot)
    });
    let stream = EventStream {
        first: first.as_ref().map(|(event, _)| event.clone()),
        sent: first.map(|(_, snapshot)| snapshot),
        latest,
        closing: feed.closing.subscribe(),
    };
    Sse::new(stream::unfold(stream, EventStream::next)).keep_alive(
        KeepAlive::new()
            .interval(KEEP_ALIVE)
            .text("the image has not changed"),
    )
}

/// One `/events` connection: what it sent last and where the next events come from.
struct EventStream {
    /// The event to send at once.
    first: Option<Event>,
    /// The snapshot this connection sent last.
    sent: Option<Arc<Snapshot>>,
    latest: watch::Receiver<Option<Arc<Snapshot>>>,
    closing: watch::Receiver<bool>,
}

impl EventStream {
    /// The next event, or `None` when the server shuts down.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, EventStream)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        loop {
            tokio::select! {
                changed = self.latest.changed() => changed.ok()?,
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
            let Some(snapshot) = self.latest.borrow_and_update().clone() else {
                continue;
            };
            let kind = match &self.sent {
                Some(sent) if !snapshot.has_new_image_since(sent) => EventKind::State,
                _ => EventKind::Image,
            };
            let event = snapshot.event(kind);
            self.sent = Some(snapshot);
            return Some((Ok(event), self));
        }
    }
}
