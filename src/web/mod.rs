//! The HTTP server: one page with Qt's two buttons, an upload route, the shared image as PNG, and
//! a JSON view of the segment.
//!
//! [`app`] builds the router from an [`AppState`]; [`run`] serves it on a listener (through
//! [`serve`]) until shutdown is signalled, so tests can use a real socket or call the router
//! directly.
//!
//! - [`page`]: `GET /`, the page (askama templates in `templates/`).
//! - [`upload`]: `POST /image`, decoding an upload and writing it into the segment.
//! - [`image`]: `GET /image.png`, the segment's image encoded once per sequence number for
//!   every server (through the segment's PNG area), and started right after an upload.
//! - [`resized`]: `GET /image.png?width=N`, the image at the width a page draws it.
//! - [`api`]: `GET /api/segment` and `GET /healthz`.
//! - [`live`]: `GET /events`, new images pushed to open pages as Server-Sent Events.
//! - [`assets`]: `GET /static/…` and `/favicon.ico`, the stylesheet, the page's script and its
//!   icon, built into the binary, with caching headers.
//! - [`error`]: [`AppError`], every failure with its status and message, as HTML or JSON.
//! - [`timing`]: `Server-Timing` headers on uploads and PNG reads.
//! - [`serve`]: the accept loop: connection limits and timeouts, and a shutdown that ends.
//! - [`budget`]: the memory budget decodes and encodes reserve from.
//! - [`guard`]: the requests a server on localhost refuses, and its security headers.

pub mod api;
pub mod assets;
pub mod budget;
pub mod error;
pub mod guard;
pub mod image;
pub mod live;
pub mod page;
pub mod png_pieces;
pub mod png_stream;
pub mod resized;
pub mod serve;
mod slot_rows;
pub mod timing;
mod units;
pub mod upload;

pub use error::AppError;

use crate::segment::Segment;
use crate::timestamp;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// How long one request may take by default before the server answers 408 Request Timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a server refuses to take in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most pixels (width x height) an upload may have.
    pub max_pixels: u64,
    /// The largest request body `POST /image` reads, in bytes.
    pub max_upload_bytes: usize,
    /// How long one request may take, body included, before it is answered with 408.
    pub request_timeout: Duration,
    /// The longest header line or request target, in bytes.
    pub max_header_bytes: usize,
    /// The memory decodes and encodes may hold at once, in bytes.
    pub max_memory: u64,
}

/// What every request handler shares: the segment, the limits and the server's caches.
#[derive(Clone)]
pub struct AppState {
    segment: Arc<Segment>,
    limits: Limits,
    png: Arc<image::PngCache>,
    resized: Arc<resized::ResizedCache>,
    allowed_hosts: Arc<guard::AllowedHosts>,
    last_upload: Arc<Mutex<Option<upload::RecentUpload>>>,
    live: Arc<live::LiveFeed>,
    budget: Arc<budget::MemoryBudget>,
}

impl AppState {
    /// State for a server attached to `segment`.
    pub fn new(segment: Arc<Segment>, limits: Limits) -> AppState {
        let budget = budget::MemoryBudget::new(limits.max_memory);
        // The segment keeps its pages for every server: a server at rest that stored images
        // need not go on counting both slots and the PNG area as its own. Its next upload maps
        // the slot's pages again (see docs/PERFORMANCE.md for what that costs).
        // Weak: a shutting-down server must be able to take the segment back whole to detach
        // it, even while a rest is still planned.
        let resting = Arc::downgrade(&segment);
        budget.on_rest(move || {
            if let Some(segment) = resting.upgrade() {
                segment.drop_resident_pages_if_written();
            }
        });
        AppState {
            limits,
            png: Arc::new(image::PngCache::default()),
            resized: Arc::new(resized::ResizedCache::default()),
            allowed_hosts: Arc::new(guard::AllowedHosts::default()),
            last_upload: Arc::new(Mutex::new(None)),
            live: Arc::new(live::LiveFeed::new(&segment)),
            budget,
            segment,
        }
    }

    /// The memory budget decodes and encodes reserve from.
    pub fn budget(&self) -> &Arc<budget::MemoryBudget> {
        &self.budget
    }

    /// Also answers to the host names in `hosts` (see [`guard`]).
    pub fn with_allowed_hosts(mut self, hosts: guard::AllowedHosts) -> AppState {
        self.allowed_hosts = Arc::new(hosts);
        self
    }

    /// The host names this server answers to besides localhost and IP addresses.
    pub fn allowed_hosts(&self) -> &guard::AllowedHosts {
        &self.allowed_hosts
    }

    /// The segment this server shares.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The server's live view of the segment, which `/events` streams follow.
    pub fn live_feed(&self) -> &Arc<live::LiveFeed> {
        &self.live
    }

    /// The limits this server enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The segment's name, as users typed it.
    fn segment_name(&self) -> String {
        self.segment.name().to_string()
    }

    /// The last upload this server took from the page, if it still is the one with `seq`.
    fn recent_upload(&self, seq: u64) -> Option<upload::RecentUpload> {
        let last = self
            .last_upload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|upload| upload.info.seq == seq)
            .cloned()
    }

    /// Remembers the last upload taken from the page, to show it right after the redirect.
    fn remember_upload(&self, upload: upload::RecentUpload) {
        *self
            .last_upload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(upload);
    }
}

/// The router with every route and the layers around them: refusal of rebinding hosts and
/// cross-site writes ([`guard`]), request logs, panics turned into 500s, a request timeout, and
/// the security headers on every response.
pub fn app(state: AppState) -> Router {
    let upload_limit = DefaultBodyLimit::max(state.limits.max_upload_bytes);
    let guard = axum::middleware::from_fn_with_state(state.clone(), guard::refuse_foreign_requests);
    let time_limit = axum::middleware::from_fn_with_state(state.clone(), guard::limit_request_time);
    let encode_after_upload =
        axum::middleware::from_fn_with_state(state.clone(), image::encode_after_upload);
    let router = Router::new()
        .route("/", get(page::show))
        .route(
            "/image",
            post(upload::receive)
                .layer(upload_limit)
                .layer(encode_after_upload),
        )
        .route("/image.png", get(image::serve_png))
        .route("/api/segment", get(api::segment))
        .route("/healthz", get(api::healthz))
        .route("/events", get(live::events))
        .route("/static/{name}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .fallback(error::not_found)
        .layer(guard)
        .layer(time_limit)
        .with_state(state.clone());
    // Around the whole router (a layer on it would wrap each route before axum adds `Allow`),
    // so that a 405 is seen with its `Allow` header and given a message.
    let explain = axum::middleware::from_fn_with_state(state, error::explain_wrong_method);
    let mut router = Router::new()
        .fallback_service(router)
        .layer(explain)
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    // Outermost, so refusals, timeouts and caught panics carry the headers too.
    for (name, value) in guard::security_headers() {
        router = router.layer(SetResponseHeaderLayer::overriding(name, value));
    }
    router
}

/// Serves [`app`] on `listener` within `connection_limits` until `shutdown` is signalled, then
/// shuts down as [`serve`] says: running requests may finish within the grace period, a second
/// signal stops at once.
///
/// While it serves, a [`live::SegmentWatcher`] pushes new images to `/events` streams; when
/// shutdown begins those streams end, and the watcher has let go of the segment by the time
/// this returns.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    connection_limits: serve::ConnectionLimits,
    shutdown: serve::Shutdown,
) -> io::Result<()> {
    let feed = Arc::clone(state.live_feed());
    let watcher = live::SegmentWatcher::start(state.segment(), Arc::clone(&feed))?;
    let closing = Arc::clone(&feed);
    let overloaded = {
        let state = state.clone();
        let limit = connection_limits.max_connections;
        Arc::new(move |headers: &HeaderMap| {
            error::Reply::for_headers(headers).error(AppError::TooManyConnections { limit }, &state)
        }) as serve::Overloaded
    };
    let served = serve::serve(
        listener,
        app(state),
        connection_limits,
        overloaded,
        shutdown,
        move || closing.close(),
    )
    .await;
    feed.close();
    watcher.stop().await;
    served
}

/// Runs blocking segment or image work on tokio's blocking threads and turns a panic there into
/// an internal error instead of taking the server down.
async fn blocking<T, F>(work: F) -> Result<T, AppError>
where
    F: FnOnce() -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(AppError::Internal(format!(
            "a blocking task failed: {error}"
        ))),
    }
}
