//! `GET /static/…`: the stylesheet and the page's script, from the crate's `static/` folder.
//!
//! Pages link them as `/static/NAME?v=VERSION` (see [`VERSION`]), so a browser may keep them for
//! [`CACHE_CONTROL`]'s hour and still fetch new ones after an upgrade; after that hour it asks
//! again with the ETag and `Last-Modified` that `ServeDir` sends, and gets `304 Not Modified`.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::map_response;
use axum::response::Response;
use tower_http::services::ServeDir;

/// The version pages put in asset URLs (`?v=0.1.0`), so an upgraded server's assets are never
/// taken from a cache of the old ones.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long browsers may use an asset without asking: one hour.
pub const CACHE_CONTROL: &str = "public, max-age=3600";

/// The files of `dir`, with [`CACHE_CONTROL`] on every one that was found.
pub fn service(dir: &str) -> Router {
    Router::new()
        .fallback_service(ServeDir::new(dir))
        .layer(map_response(cacheable))
}

/// Adds [`CACHE_CONTROL`] to files and `304 Not Modified` answers, not to errors.
async fn cacheable(mut response: Response) -> Response {
    let status = response.status();
    if status.is_success() || status == axum::http::StatusCode::NOT_MODIFIED {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
    }
    response
}
