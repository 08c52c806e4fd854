//! `GET /image.png?width=N`: the segment's image at the width a page draws it.
//!
//! A page shows the image a few hundred to a few thousand pixels wide; sending it the full
//! image (12-16 MB of PNG for a 4K photo) costs the server an encode and the browser a decode
//! of pixels it throws away. So the page asks for the width it draws, and this route answers
//! with the image shrunk to that width ([`imaging::resize_to_width`], Catmull-Rom), 8 bits per
//! sample, as PNG. Widths are rounded up to one of [`WIDTHS`], so every page drawing the image
//! between 961 and 1280 pixels wide shares one resize, and each of those is made once per image
//! (sequence number) and kept in a [`ResizedCache`] of at most [`KEPT_WIDTHS`] widths. A width at
//! or above the image's own, or above the largest bucket, gets the full-size PNG of
//! [`super::image`], the same as plain `/image.png`: that one, and "Download PNG", stay full
//! size and lossless.
//!
//! The ETag is `"I-N-wW"` (the image's, plus the bucket), `Cache-Control: no-cache`;
//! `Server-Timing` says `read`, `resize` and `encode`, or `cache;desc=hit`.

use super::budget::{self, MemoryBudget};
use super::error::Reply;
use super::image::{KEPT_PIXELS_MAX, read_pixels, serve_full};
use super::timing::ServerTiming;
use super::{AppError, AppState, blocking};
use crate::imaging;
use crate::segment::Segment;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::OnceCell;

/// The widths a page may get the image at; a request is rounded up to the next one. Pages list
/// them in `srcset`.
pub const WIDTHS: [u32; 9] = [320, 480, 640, 960, 1280, 1600, 1920, 2560, 3840];

/// How many widths of one image a server keeps encoded at once (the oldest goes first).
pub const KEPT_WIDTHS: usize = 4;

/// The most pixels a resized image may have: a request that would give more gets a smaller
/// bucket (the browser scales it up the rest of the way), which bounds what a client can make
/// the server keep.
pub const MAX_RESIZED_PIXELS: u64 = 16_000_000;

/// The widest width a request may name.
pub const MAX_WIDTH: u32 = 65_535;

/// The bucket for a page that draws the image `requested` pixels wide: the smallest of
/// [`WIDTHS`] at least that wide, or `None` when it is wider than all of them (then the page
/// gets the full image).
pub fn bucket(requested: u32) -> Option<u32> {
    WIDTHS.into_iter().find(|&width| width >= requested)
}

/// What a request for one width of one image gave.
#[derive(Debug, Clone)]
enum Resized {
    /// The image shrunk to this width, as PNG.
    Png {
        seq: u64,
        png: Bytes,
        timing: Box<ServerTiming>,
    },
    /// The image is no wider than the bucket: the full-size PNG serves.
    FullSize,
}

/// One width of one image, made once for everybody asking.
#[derive(Debug)]
struct Entry {
    seq: u64,
    width: u32,
    resized: OnceCell<Resized>,
}

/// The resized PNGs of the newest image this server has been asked for.
#[derive(Debug, Default)]
pub struct ResizedCache {
    /// At most [`KEPT_WIDTHS`] entries, all for one sequence number, oldest first.
    entries: Mutex<Vec<Arc<Entry>>>,
    /// The memory the last resize read the segment's pixels into, kept for the next one.
    pixels: Mutex<Vec<u8>>,
}

impl ResizedCache {
    /// The entry for `width` of the image the segment announced as `seq`.
    fn entry(&self, seq: u64, width: u32) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Entries of older images go; an entry for this or a newer image serves.
        entries.retain(|entry| entry.seq >= seq);
        if let Some(entry) = entries.iter().find(|entry| entry.width == width) {
            return Arc::clone(entry);
        }
        if entries.len() >= KEPT_WIDTHS {
            entries.remove(0);
        }
        let entry = Arc::new(Entry {
            seq,
            width,
            resized: OnceCell::new(),
        });
        entries.push(Arc::clone(&entry));
        entry
    }

    /// Reads the segment's image (into the kept buffer), shrinks it to `width` and encodes it,
    /// with the memory for all three reserved from `budget` first. Blocks.
    fn resize_stored(
        &self,
        segment: &Segment,
        width: u32,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Resized, AppError> {
        let buffer =
            std::mem::take(&mut *self.pixels.lock().unwrap_or_else(PoisonError::into_inner));
        let mut timing = ServerTiming::new();
        // The pixels (beyond what the kept buffer holds), the resized pixels (at most
        // MAX_RESIZED_PIXELS in 8-bit RGBA) and a PNG of at most about their size.
        let len = segment.state()?.image.map_or(0, |image| {
            usize::try_from(image.byte_len).unwrap_or(usize::MAX)
        });
        let resized_bytes = MAX_RESIZED_PIXELS * 4;
        let needed = len.saturating_sub(buffer.capacity()) as u64 + 2 * resized_bytes + (1 << 20);
        let _memory = timing.time_if_long("memory", || {
            budget.reserve(needed, "resizing the image", budget::WAIT)
        })?;
        let stored = read_pixels(segment, buffer, len, &mut timing)?;
        let raster = &stored.raster;
        // The widest bucket at most `width` whose image stays within MAX_RESIZED_PIXELS.
        let fits = |bucket: u32| {
            u64::from(bucket)
                * u64::from(imaging::scaled_height(
                    raster.width(),
                    raster.height(),
                    bucket,
                ))
                <= MAX_RESIZED_PIXELS
        };
        let width = WIDTHS
            .into_iter()
            .rfind(|&bucket| bucket <= width && (bucket == WIDTHS[0] || fits(bucket)))
            .unwrap_or(WIDTHS[0]);
        let result = if width >= raster.width() {
            Ok(Resized::FullSize)
        } else {
            let started = Instant::now();
            let resized = imaging::resize_to_width(raster, width);
            timing.record_since("resize", started);
            resized
                .map_err(|error| AppError::Internal(error.to_string()))
                .and_then(|resized| {
                    let started = Instant::now();
                    let png = imaging::encode_png(&resized)?;
                    timing.record_since("encode", started);
                    Ok(Resized::Png {
                        seq: stored.info.seq,
                        png: Bytes::from(png),
                        timing: Box::new(timing),
                    })
                })
        };
        // Keep the buffer for the next read, unless it is too large to hold on to for good.
        if stored.raster.pixels().len() <= KEPT_PIXELS_MAX {
            *self.pixels.lock().unwrap_or_else(PoisonError::into_inner) =
                stored.raster.into_pixels();
        }
        result
    }
}

/// `GET /image.png?width=WIDTH`.
pub(crate) async fn serve(state: &AppState, width: &str, headers: &HeaderMap) -> Response {
    let reply = Reply::for_headers(headers);
    let requested = match width.trim().parse::<u32>() {
        Ok(width) if (1..=MAX_WIDTH).contains(&width) => width,
        _ => {
            let error = AppError::BadWidth {
                given: width.chars().take(40).collect(),
                max: MAX_WIDTH,
            };
            return reply.error(error, state);
        }
    };
    let Some(width) = bucket(requested) else {
        return serve_full(state, headers).await;
    };
    let segment = state.segment();
    let seq = segment.seq();
    if seq == 0 {
        let error = AppError::NoImage {
            segment: state.segment_name(),
        };
        return reply.error(error, state);
    }
    let incarnation = segment.incarnation();
    if if_none_match(headers, &etag(incarnation, seq, width)) {
        return (
            StatusCode::NOT_MODIFIED,
            cache_headers(&etag(incarnation, seq, width)),
        )
            .into_response();
    }
    let entry = state.resized.entry(seq, width);
    let mut resized_here = false;
    let resized = entry
        .resized
        .get_or_try_init(|| {
            resized_here = true;
            let cache = Arc::clone(&state.resized);
            let segment = Arc::clone(segment);
            let budget = Arc::clone(state.budget());
            blocking(move || cache.resize_stored(&segment, width, &budget))
        })
        .await
        .cloned();
    match resized {
        Ok(Resized::FullSize) => serve_full(state, headers).await,
        Ok(Resized::Png { seq, png, timing }) => {
            let timing = if resized_here {
                *timing
            } else {
                let mut timing = ServerTiming::new();
                timing.describe("cache", "hit");
                timing
            };
            (
                timing,
                cache_headers(&etag(incarnation, seq, width)),
                [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
                png,
            )
                .into_response()
        }
        Err(error) => reply.error(error, state),
    }
}

/// `"I-N-wW"`: the image's ETag and the width bucket.
fn etag(incarnation: u64, seq: u64, width: u32) -> String {
    format!("\"{incarnation:x}-{seq}-w{width}\"")
}

/// `ETag` and `Cache-Control: no-cache`.
fn cache_headers(etag: &str) -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::ETAG,
            HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// Whether `If-None-Match` names `etag` (weak or strong) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_up_to_a_bucket() {
        assert_eq!(bucket(1), Some(320));
        assert_eq!(bucket(320), Some(320));
        assert_eq!(bucket(321), Some(480));
        assert_eq!(bucket(1000), Some(1280));
        assert_eq!(bucket(3840), Some(3840));
        assert_eq!(bucket(3841), None);
    }

    #[test]
    fn the_cache_keeps_a_few_widths_of_the_newest_image() {
        let cache = ResizedCache::default();
        let first = cache.entry(5, 640);
        assert!(Arc::ptr_eq(&first, &cache.entry(5, 640)));
        for width in [960, 1280, 1600, 1920] {
            cache.entry(5, width);
        }
        let kept = cache.entries.lock().unwrap().len();
        assert_eq!(kept, KEPT_WIDTHS);
        assert!(
            !Arc::ptr_eq(&first, &cache.entry(5, 640)),
            "640 was dropped"
        );
        cache.entry(6, 640);
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), 1, "a new image drops the old one's widths");
        assert_eq!(entries[0].seq, 6);
    }
}
