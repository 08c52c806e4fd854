//! `GET /image.png`: the segment's image as a PNG, encoded once per sequence number.
//!
//! The ETag is `"I-N"`, N being the segment's sequence number and I its incarnation (sequence
//! numbers restart when a segment is created anew), so a client that already has
//! the image gets `304 Not Modified` from the lock-free [`Segment::seq`] without a pixel being
//! read. The encoded PNG of the latest image is kept in a [`PngCache`]; requests that arrive
//! while it is being encoded wait for that one encode instead of starting their own.
//!
//! A `200` says in `Server-Timing` (see [`super::timing`]) how it was served: `read` (the copy
//! out of the segment) and `encode` when this request encoded the image, `cache;desc=hit` when
//! the PNG was already there, `cache;desc=wait` when it waited for another request's encode.
//!
//! An encode reserves the memory it needs (the pixels and the PNG) from the server's
//! [`super::budget`] before it reads the image.

use super::budget::{self, MemoryBudget};
use super::error::Reply;
use super::timing::ServerTiming;
use super::{AppError, AppState, blocking};
use crate::imaging;
use crate::segment::Segment;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::OnceCell;

/// The largest pixel buffer kept between two reads (128 MiB: a 4K RGBA 16-bit image fits);
/// larger ones are given back to the system after their encode.
pub(super) const KEPT_PIXELS_MAX: usize = 128 * 1024 * 1024;

/// A PNG of the segment's image, with the sequence number of the write that stored it.
#[derive(Debug, Clone)]
pub struct EncodedPng {
    pub seq: u64,
    pub png: Bytes,
    /// How long reading the pixels and encoding them took.
    pub timing: ServerTiming,
}

/// How a request got its PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// This request read and encoded the image.
    Encoded,
    /// The PNG was in the cache already.
    Cached,
    /// Another request was encoding it; this one waited for that.
    Waited,
}

/// The PNG of the newest image this server has been asked for.
#[derive(Debug, Default)]
pub struct PngCache {
    latest: Mutex<Option<Arc<CachedPng>>>,
    /// The memory the last encode read the segment's pixels into, kept for the next one: a
    /// fresh buffer of a large image costs more in page faults than the copy itself.
    pixels: Mutex<Vec<u8>>,
}

/// One encode, started for the image the segment announced as `seq`.
#[derive(Debug)]
struct CachedPng {
    seq: u64,
    png: OnceCell<EncodedPng>,
}

impl PngCache {
    /// The PNG of the segment's current image, which the segment announced as `seq`: from the
    /// cache, or read and encoded on the blocking threads once for everybody asking.
    pub async fn current(
        self: &Arc<Self>,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        seq: u64,
    ) -> Result<(EncodedPng, Served), AppError> {
        let entry = {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            match latest.as_ref() {
                // A cache entry for this or a newer image serves: newer is never wrong.
                Some(entry)
                    if entry.seq >= seq || entry.png.get().is_some_and(|png| png.seq == seq) =>
                {
                    Arc::clone(entry)
                }
                _ => {
                    let entry = Arc::new(CachedPng {
                        seq,
                        png: OnceCell::new(),
                    });
                    *latest = Some(Arc::clone(&entry));
                    entry
                }
            }
        };
        if let Some(png) = entry.png.get() {
            return Ok((png.clone(), Served::Cached));
        }
        let segment = Arc::clone(segment);
        let budget = Arc::clone(budget);
        let mut encoded_here = false;
        let png = entry
            .png
            .get_or_try_init(|| {
                encoded_here = true;
                let cache = Arc::clone(self);
                blocking(move || cache.encode_stored(&segment, &budget))
            })
            .await?
            .clone();
        let served = if encoded_here {
            Served::Encoded
        } else {
            Served::Waited
        };
        Ok((png, served))
    }
}

impl PngCache {
    /// Reads the segment's image (into the kept buffer) and encodes it, with the memory for
    /// both reserved from `budget` first. Blocks.
    fn encode_stored(
        &self,
        segment: &Segment,
        budget: &Arc<MemoryBudget>,
    ) -> Result<EncodedPng, AppError> {
        let mut buffer =
            std::mem::take(&mut *self.pixels.lock().unwrap_or_else(PoisonError::into_inner));
        let mut timing = ServerTiming::new();
        // The pixels (beyond what the kept buffer holds) and a PNG of at most about their size.
        let len = segment.state()?.image.map_or(0, |image| {
            usize::try_from(image.byte_len).unwrap_or(usize::MAX)
        });
        let needed = len.saturating_sub(buffer.capacity()) as u64 + len as u64 + (1 << 20);
        let _memory = timing.time_if_long("memory", || {
            budget.reserve(needed, "encoding the image as PNG", budget::WAIT)
        })?;
        buffer.clear();
        buffer
            .try_reserve_exact(len)
            .map_err(|_| AppError::OutOfMemory {
                work: "reading the image",
                bytes: len as u64,
            })?;
        let stored = timing
            .time("read", || segment.read_into(buffer))?
            .ok_or_else(|| AppError::NoImage {
                segment: segment.name().to_string(),
            })?;
        let started = Instant::now();
        let png = imaging::encode_png(&stored.raster);
        timing.record_since("encode", started);
        // Keep the buffer for the next read, unless it is too large to hold on to for good.
        if stored.raster.pixels().len() <= KEPT_PIXELS_MAX {
            *self.pixels.lock().unwrap_or_else(PoisonError::into_inner) =
                stored.raster.into_pixels();
        }
        let png = png?;
        tracing::debug!(
            seq = stored.info.seq,
            bytes = png.len(),
            "encoded the image as PNG"
        );
        Ok(EncodedPng {
            seq: stored.info.seq,
            png: Bytes::from(png),
            timing,
        })
    }
}

/// The query of `GET /image.png`: `?width=N` asks for the image at the width a page draws it
/// (see [`super::resized`]). Anything else (`seq` and `v`, which pages add so that every image
/// has its own URL) is ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PngQuery {
    width: Option<String>,
}

/// `GET /image.png`.
pub(crate) async fn serve_png(
    State(state): State<AppState>,
    query: Result<Query<PngQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    match query.width {
        Some(width) => super::resized::serve(&state, &width, &headers).await,
        None => serve_full(&state, &headers).await,
    }
}

/// The full-size PNG of the segment's image, exactly its pixels.
pub(crate) async fn serve_full(state: &AppState, headers: &HeaderMap) -> Response {
    let seq = state.segment.seq();
    if seq == 0 {
        let error = AppError::NoImage {
            segment: state.segment_name(),
        };
        return Reply::for_headers(headers).error(error, state);
    }
    let incarnation = state.segment.incarnation();
    if if_none_match(headers, incarnation, seq) {
        return (StatusCode::NOT_MODIFIED, cache_headers(incarnation, seq)).into_response();
    }
    match state.png.current(&state.segment, state.budget(), seq).await {
        Ok((encoded, served)) => (
            served_timing(&encoded, served),
            cache_headers(incarnation, encoded.seq),
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
            encoded.png,
        )
            .into_response(),
        Err(error) => Reply::for_headers(headers).error(error, state),
    }
}

/// The `Server-Timing` of a `200`: the read and encode if this request did them, else how
/// the cache served it.
fn served_timing(encoded: &EncodedPng, served: Served) -> ServerTiming {
    match served {
        Served::Encoded => encoded.timing.clone(),
        Served::Cached => cached("hit"),
        Served::Waited => cached("wait"),
    }
}

/// `cache;desc=DESCRIPTION`.
fn cached(description: &'static str) -> ServerTiming {
    let mut timing = ServerTiming::new();
    timing.describe("cache", description);
    timing
}

/// The ETag of the image written as `seq` into incarnation `incarnation` of the segment:
/// `"I-N"`, I in hexadecimal.
pub fn etag(incarnation: u64, seq: u64) -> String {
    format!("\"{incarnation:x}-{seq}\"")
}

/// `ETag` and `Cache-Control: no-cache` (keep it, but ask before using it again).
fn cache_headers(incarnation: u64, seq: u64) -> [(header::HeaderName, HeaderValue); 2] {
    let etag =
        HeaderValue::from_str(&etag(incarnation, seq)).unwrap_or(HeaderValue::from_static("\"\""));
    [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// Whether `If-None-Match` names the image written as `seq` (weak tags count, as RFC 9110 says
/// for `If-None-Match`), or is `*`.
fn if_none_match(headers: &HeaderMap, incarnation: u64, seq: u64) -> bool {
    let current = etag(incarnation, seq);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_if_none_match(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_none_match_matches_only_the_current_image() {
        assert!(if_none_match(&with_if_none_match("\"ab-7\""), 0xab, 7));
        assert!(if_none_match(&with_if_none_match("W/\"ab-7\""), 0xab, 7));
        assert!(if_none_match(
            &with_if_none_match("\"ab-1\", \"ab-7\""),
            0xab,
            7
        ));
        assert!(if_none_match(&with_if_none_match("*"), 0xab, 7));
        assert!(!if_none_match(&with_if_none_match("\"ab-6\""), 0xab, 7));
        assert!(!if_none_match(&with_if_none_match("\"ab-77\""), 0xab, 7));
        // The same sequence number in an earlier incarnation of the segment is another image.
        assert!(!if_none_match(&with_if_none_match("\"aa-7\""), 0xab, 7));
        assert!(!if_none_match(&HeaderMap::new(), 0xab, 7));
    }
}
