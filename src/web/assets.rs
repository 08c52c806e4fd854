//! `GET /static/…` and `GET /favicon.ico`: the stylesheet, the page's script and its icon,
//! built into the binary.
//!
//! The files of the crate's `static/` folder are embedded at compile time (`include_bytes!`), so
//! a binary copied elsewhere, or installed with `cargo install`, serves the same page as the
//! one in the source tree. Pages link them as `/static/NAME?v=VERSION` (see [`version`], a hash
//! of every asset), so a browser may keep them for [`CACHE_CONTROL`]'s hour and still fetch new
//! ones after an upgrade; after that hour it asks again with the ETag (a hash of the file) and
//! gets `304 Not Modified`.

use super::error::Reply;
use super::{AppError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

/// How long browsers may use an asset without asking: one hour.
pub const CACHE_CONTROL: &str = "public, max-age=3600";

/// One file of `static/`, as the binary carries it.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page's icon, also served as `/favicon.ico`.
const ICON: Asset = Asset {
    name: "favicon.svg",
    content_type: "image/svg+xml",
    bytes: include_bytes!("../../static/favicon.svg"),
};

/// Every file the pages use.
const ASSETS: [Asset; 3] = [
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/app.js"),
    },
    ICON,
];

/// FNV-1a, 64 bits: a fingerprint of an asset's bytes for ETags and asset URLs (not a defence
/// against anybody; the bytes are the binary's own).
const fn fingerprint(bytes: &[u8], mut hash: u64) -> u64 {
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        index += 1;
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The version pages put in asset URLs (`?v=…`): a fingerprint of every asset, so a changed
/// stylesheet or script is never taken from a cache of the old one.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let hash = ASSETS
            .iter()
            .fold(FNV_OFFSET, |hash, asset| fingerprint(asset.bytes, hash));
        format!("{:012x}", hash >> 16)
    });
    &VERSION
}

impl Asset {
    fn named(name: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|asset| asset.name == name)
    }

    /// `"…"`: the file's fingerprint.
    fn etag(&self) -> String {
        format!("\"{:016x}\"", fingerprint(self.bytes, FNV_OFFSET))
    }

    /// The file, or `304 Not Modified` when `If-None-Match` names it; [`CACHE_CONTROL`] on both.
    /// (For `HEAD`, axum drops the body.)
    fn answer(&self, headers: &HeaderMap) -> Response {
        let etag = self.etag();
        let matches = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag);
        let cache = [
            (
                header::ETAG,
                HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
        ];
        if matches {
            return (StatusCode::NOT_MODIFIED, cache).into_response();
        }
        let content_type = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        )];
        (cache, content_type, self.bytes).into_response()
    }
}

/// `GET /static/NAME`.
pub(crate) async fn serve(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match Asset::named(&name) {
        Some(asset) => asset.answer(&headers),
        None => Reply::for_headers(&headers).error(
            AppError::NotFound {
                method,
                path: format!("/static/{name}"),
            },
            &state,
        ),
    }
}

/// `GET /favicon.ico`: the page's SVG icon, for clients that ask for the old name.
pub(crate) async fn favicon(headers: HeaderMap) -> Response {
    ICON.answer(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_its_own_etag() {
        for asset in &ASSETS {
            assert!(!asset.bytes.is_empty(), "{}", asset.name);
        }
        let tags: std::collections::HashSet<String> = ASSETS.iter().map(Asset::etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
        assert_eq!(version().len(), 12);
    }
}
