//! `GET /image.png`: the segment's image as a PNG, encoded once per sequence number, for every
//! server attached to the segment.
//!
//! The ETag is `"I-N"`, N being the segment's sequence number and I its incarnation (sequence
//! numbers restart when a segment is created anew), so a client that already has
//! the image gets `304 Not Modified` from the lock-free [`Segment::seq`] without a pixel being
//! read. The encoded PNG of the latest image is kept in a [`PngCache`]; requests that arrive
//! while it is being encoded wait for that one encode instead of starting their own.
//!
//! Across servers, the segment's PNG area does the same (see `segment::png_area`): a server
//! that needs the PNG of image N first copies it from the area, where the first process that
//! encoded N published it; if it is not there, it claims the encode, or waits (at most
//! [`SHARED_ENCODE_WAIT`]) for the process that claimed it. A server that encodes publishes
//! the result. A server that stores an upload starts that encode at once, in the background
//! ([`encode_after_upload`]), so that another server's first request usually finds it ready.
//! That encode writes the PNG into the memory of the pixels the upload decoded
//! ([`DecodedPixels`]), which is resident already.
//!
//! A `200` says in `Server-Timing` (see [`super::timing`]) how it was served:
//! `png;desc=shared` with `read` (the copy out of the area), and `wait` if it waited for another
//! server's encode; `png;desc=local` when this server encoded the image, with `read;desc=slot`
//! and `encode` when the encoder read the pixels band by band from the slot (see
//! [`encode_from_slot`]), or `read` (a whole copy, made when a new image was published during
//! the first attempt) and `encode`; `cache;desc=hit` when the PNG was already in this
//! server's cache, `cache;desc=wait` when it waited for another request's encode. A request
//! that encodes an image of several bands sends the PNG while it is encoded (see
//! [`PngCache::current_for_response`] and `super::png_stream`): its head then says
//! `encode;desc=streamed`, with the copy's `read` time, since the encode is not over yet.
//!
//! An encode reserves the memory it needs (the PNG, and the pixels it copies out of the slot)
//! from the server's [`super::budget`] before it reads the image.
//! A PNG encoded for a request is published in the PNG area after the reply, on another
//! blocking thread; the writer's encode of an upload publishes it first ([`Sharing`]).

use super::budget::{self, MemoryBudget, Reservation};
use super::error::Reply;
use super::png_pieces::PngPieces;
use super::png_stream::{GrowingPng, StreamHead};
use super::slot_rows::SlotRows;
use super::timing::ServerTiming;
use super::upload::PngShared;
use super::{AppError, AppState, blocking};
use crate::imaging;
use crate::segment::{ClaimedPng, ImageId, PngClaim, PngLookup, Segment, SharedPng, StoredImage};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a server waits for another process's encode of the same image before encoding it
/// itself. A claimant that dies is noticed within a tenth of a second; this bounds the wait
/// for one that is stopped or stuck.
pub const SHARED_ENCODE_WAIT: Duration = Duration::from_secs(3);

/// The largest pixel buffer kept between two reads (128 MiB: a 4K RGBA 16-bit image fits);
/// larger ones are given back to the system after their encode.
pub(super) const KEPT_PIXELS_MAX: usize = 128 * 1024 * 1024;

/// The memory an encode of an image of `len` bytes of pixels reserves before it reads it: a PNG
/// of at most about the pixels' size (a shared PNG is smaller), and the pixels, which are
/// copied out of the slot ahead of the encoder (see [`SlotRows`]), or whole if a write raced
/// that copy.
fn encode_reservation(len: usize) -> u64 {
    (len as u64).saturating_mul(2) + (1 << 20)
}

/// A PNG of the segment's image, with the image it is of.
#[derive(Debug, Clone)]
pub struct EncodedPng {
    pub image: ImageId,
    pub png: PngPieces,
    /// How long reading the pixels and encoding them took.
    pub timing: ServerTiming,
}

/// What a response sends of the PNG.
pub enum PngReply {
    /// The whole PNG, and how the request got it.
    Whole(EncodedPng, Served),
    /// The PNG being encoded by this request, sent as it is made, and what the response's
    /// head says.
    Streamed(Arc<GrowingPng>, StreamHead),
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

/// The pixels an upload decoded, once they are in the segment, with the memory the upload
/// reserved for them: lent to the PNG encode that follows the upload, which writes the PNG into
/// them instead of into fresh pieces (see [`PngCache::encode_in_background`]).
#[derive(Debug)]
pub(crate) struct DecodedPixels {
    pub(crate) pixels: Vec<u8>,
    pub(crate) memory: Reservation,
}

/// [`DecodedPixels`] carried by the answer to an upload (extensions must be `Clone`), taken
/// once by [`encode_after_upload`]. Dropped with the answer if the request is given up.
#[derive(Debug, Clone)]
pub(crate) struct LentPixels(Arc<Mutex<Option<DecodedPixels>>>);

impl LentPixels {
    pub(crate) fn new(decoded: DecodedPixels) -> LentPixels {
        LentPixels(Arc::new(Mutex::new(Some(decoded))))
    }

    fn take(&self) -> Option<DecodedPixels> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One encode, started for the image the segment published as `image`. Keyed on the image's
/// identity, not its number alone: numbers start again at 1 after the state word was found
/// overwritten, and an earlier image may have had a higher one.
#[derive(Debug)]
struct CachedPng {
    image: ImageId,
    png: OnceCell<EncodedPng>,
    /// When whoever encodes it shares it with the other servers: set by whoever made the
    /// entry (the writer's background encode, or a request), whichever request runs the encode.
    sharing: Sharing,
}

impl PngCache {
    /// The PNG of the segment's current image, which the segment published as `image`: from
    /// the cache, or read and encoded on the blocking threads once for everybody asking.
    pub async fn current(
        self: &Arc<Self>,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        image: ImageId,
    ) -> Result<(EncodedPng, Served), AppError> {
        self.fetch(segment, budget, image, Sharing::AfterReturning, None, None)
            .await
    }

    /// [`PngCache::current`] for a response: if this request encodes a large image, the
    /// PNG's pieces as they are made, from the moment the encode is certain to finish with the
    /// image it began (see [`GrowingPng`]); else the whole PNG once it is there. The encode runs
    /// to its end, and is cached and shared, even if the client goes away.
    pub async fn current_for_response(
        self: &Arc<Self>,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        image: ImageId,
    ) -> Result<PngReply, AppError> {
        if let Some(png) = self.cached(image) {
            return Ok(PngReply::Whole(png, Served::Cached));
        }
        let stream = Arc::new(GrowingPng::new());
        let mut fetch = tokio::spawn({
            let (cache, segment, budget) =
                (Arc::clone(self), Arc::clone(segment), Arc::clone(budget));
            let stream = Arc::clone(&stream);
            async move {
                let fetched = cache
                    .fetch(
                        &segment,
                        &budget,
                        image,
                        Sharing::AfterReturning,
                        Some(&stream),
                        None,
                    )
                    .await;
                stream.finish(fetched.is_ok());
                fetched
            }
        });
        tokio::select! {
            fetched = &mut fetch => match fetched {
                Ok(fetched) => fetched.map(|(png, served)| PngReply::Whole(png, served)),
                Err(error) => Err(AppError::Internal(format!("the PNG's encode failed: {error}"))),
            },
            Some(head) = stream.opened() => Ok(PngReply::Streamed(stream, head)),
        }
    }

    /// The PNG of `image` if the cache holds it already.
    fn cached(&self, image: ImageId) -> Option<EncodedPng> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let png = latest.as_ref()?.png.get()?;
        (png.image == image).then(|| png.clone())
    }

    /// [`PngCache::current`], a PNG encoded here being shared with the other servers as
    /// `sharing` says, and handed to `stream` as it is made; without a stream, written into
    /// `decoded` if given.
    async fn fetch(
        self: &Arc<Self>,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        image: ImageId,
        sharing: Sharing,
        stream: Option<&Arc<GrowingPng>>,
        decoded: Option<DecodedPixels>,
    ) -> Result<(EncodedPng, Served), AppError> {
        let entry = {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            match latest.as_ref() {
                // The entry of this image, or one whose encode found this image published.
                Some(entry)
                    if entry.image == image
                        || entry.png.get().is_some_and(|png| png.image == image) =>
                {
                    Arc::clone(entry)
                }
                _ => {
                    let entry = Arc::new(CachedPng {
                        image,
                        png: OnceCell::new(),
                        sharing,
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
        let stream = stream.cloned();
        let png = entry
            .png
            .get_or_try_init(|| {
                encoded_here = true;
                let cache = Arc::clone(self);
                let sharing = entry.sharing;
                blocking(move || {
                    cache.encode_stored(&segment, &budget, sharing, stream.as_deref(), decoded)
                })
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
    /// The PNG of the segment's image: from the segment's PNG area if another process
    /// published it, else encoded here (after waiting, within [`SHARED_ENCODE_WAIT`], for a
    /// process that claimed the encode) and published there. The memory for the pixels and the
    /// PNG is reserved from `budget` first. An encode here hands its pieces to `stream`
    /// (see [`encode_from_slot`]), or writes it into `decoded` (whose memory counts towards
    /// what it reserves). Blocks.
    fn encode_stored(
        &self,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        sharing: Sharing,
        stream: Option<&GrowingPng>,
        decoded: Option<DecodedPixels>,
    ) -> Result<EncodedPng, AppError> {
        let mut timing = ServerTiming::new();
        // A PNG of at most about the pixels' size (a shared PNG is smaller than that), and the
        // copy of the pixels an encode here makes.
        let len = segment.state()?.image.map_or(0, |image| {
            usize::try_from(image.byte_len).unwrap_or(usize::MAX)
        });
        let decoded = decoded.filter(|_| stream.is_none());
        let lent = decoded.as_ref().map_or(0, |decoded| decoded.memory.bytes());
        let needed = encode_reservation(len).saturating_sub(lent);
        let memory = timing.time_if_long("memory", || {
            budget.reserve(needed, "encoding the image as PNG", budget::WAIT)
        })?;
        let started = Instant::now();
        let seq = match segment.shared_png() {
            Ok(PngLookup::Found(shared)) => {
                timing.record_since("read", started);
                return Ok(from_area(shared, timing));
            }
            Ok(PngLookup::NoImage) => {
                return Err(AppError::NoImage {
                    segment: segment.name().to_string(),
                });
            }
            Ok(PngLookup::Missing { seq }) => Some(seq),
            Err(error) => {
                tracing::warn!(%error, "cannot look for a shared PNG; encoding the image here");
                None
            }
        };
        // Held until the PNG is published or the encode failed (or panicked): dropping it
        // gives the claim up and wakes the servers waiting for it.
        let mut claim = None;
        if let Some(seq) = seq {
            match segment.claim_png(seq) {
                PngClaim::Ours(ours) => {
                    // Someone may have published it between our look and our claim.
                    if let Ok(PngLookup::Found(shared)) = segment.shared_png() {
                        drop(ours);
                        timing.record_since("read", started);
                        return Ok(from_area(shared, timing));
                    }
                    claim = Some(ours);
                }
                PngClaim::Theirs { pid } => {
                    let waited = Instant::now();
                    let shared = segment.wait_for_png(seq, SHARED_ENCODE_WAIT);
                    timing.record_since("wait", waited);
                    match shared {
                        Ok(Some(shared)) => return Ok(from_area(shared, timing)),
                        Ok(None) => tracing::info!(
                            seq,
                            claimant = pid,
                            "no PNG from the process that claimed the encode; encoding it here"
                        ),
                        Err(error) => tracing::warn!(%error, "waiting for a shared PNG failed"),
                    }
                }
            }
        }
        let encoded = self.encode_here(segment, memory, decoded, len, timing, stream);
        if seq.is_some()
            && let Ok(png) = &encoded
        {
            drop(share_png(segment, png, claim, sharing));
        }
        encoded
    }

    /// Encodes the segment's image: its bands copied out of the slot ahead of the encoder, or,
    /// if a new image was published before they all were, from a whole copy (into the kept
    /// buffer), which a stream of writers cannot starve (see [`Segment::read_into`]). `memory`
    /// (with `decoded`'s) covers both. The pieces go to `stream` as they are made, opened once
    /// the pixels are all in memory of this server's own; else into `decoded` while it lasts.
    /// Blocks.
    fn encode_here(
        &self,
        segment: &Segment,
        memory: Reservation,
        decoded: Option<DecodedPixels>,
        len: usize,
        mut timing: ServerTiming,
        stream: Option<&GrowingPng>,
    ) -> Result<EncodedPng, AppError> {
        let _memory = memory;
        let (into, _lent) = decoded.map_or((Vec::new(), None), |decoded| {
            (decoded.pixels, Some(decoded.memory))
        });
        timing.describe("png", "local");
        let started = Instant::now();
        if let Some(encoded) = encode_from_slot(segment, stream, into, &timing)? {
            timing.describe("read", "slot");
            timing.record_since("encode", started);
            return Ok(encoded.with_timing(timing));
        }
        tracing::debug!("a new image was stored while this one was read; reading it whole");
        let buffer =
            std::mem::take(&mut *self.pixels.lock().unwrap_or_else(PoisonError::into_inner));
        let stored = read_pixels(segment, buffer, len, &mut timing)?;
        let raster = &stored.raster;
        let (width, height, format) = (raster.width(), raster.height(), raster.format());
        if let Some(stream) = stream
            && imaging::png_source_rows(width, height, format).len() > 1
        {
            let mut head = timing.clone();
            head.describe("encode", "streamed");
            stream.open(StreamHead {
                image: stored.info.id(),
                timing: head,
            });
        }
        let started = Instant::now();
        let png = encode_into_pieces(raster, width, height, format, stream, Vec::new());
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
            image: stored.info.id(),
            png,
            timing,
        })
    }

    /// Forgets the PNG of an earlier image: the segment holds a new one, whose PNG is to be
    /// found in the segment's PNG area.
    pub fn forget(&self) {
        // Even under the same number (a writer starts again at 1 when it finds the state word
        // overwritten with a huge one), what the cache holds is of an earlier image.
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Drops the buffer kept for the next read of the segment's pixels.
    fn release_kept_pixels(&self) {
        *self.pixels.lock().unwrap_or_else(PoisonError::into_inner) = Vec::new();
    }

    /// Starts, in the background, the PNG of the image just stored as the segment's newest,
    /// claiming it first: another server's first request for it then waits for this encode
    /// instead of starting its own. The PNG is written into `decoded`, the memory of the
    /// pixels the upload decoded, while it lasts: that memory is resident already, where the
    /// heap might put fresh pieces in pages it gave back earlier and hold both (measured:
    /// the writer's peak after three 3840x2160 uploads was 3.06-3.20x the image that way,
    /// 2.83-2.88x with it; docs/PERFORMANCE.md).
    pub(crate) fn encode_in_background(
        self: &Arc<Self>,
        segment: &Arc<Segment>,
        budget: &Arc<MemoryBudget>,
        decoded: Option<DecodedPixels>,
    ) {
        let image = match segment.published_image() {
            Ok(Some(image)) => image,
            Ok(None) => return,
            Err(error) => {
                tracing::info!(%error, "cannot start encoding the new image");
                return;
            }
        };
        let seq = image.seq;
        // One compare-and-swap: cheap enough before the upload is answered. The encode below
        // claims the image again (it is ours already) and gives the claim up when it is done.
        if let PngClaim::Ours(claim) = segment.claim_png(seq) {
            claim.keep();
        }
        // Whatever the cache holds is of an earlier image. The new image's entry is made here,
        // before the upload is answered, so that a request for it that comes before the task
        // below runs waits for this encode, which shares the PNG before it gives the claim up.
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(CachedPng {
            image,
            png: OnceCell::new(),
            sharing: Sharing::BeforeReturning,
        }));
        let (cache, segment, budget) = (Arc::clone(self), Arc::clone(segment), Arc::clone(budget));
        tokio::spawn(async move {
            // Shared before `fetch` returns, so that the claim given up below is given up after
            // the PNG is in the area, never before.
            let fetched = cache
                .fetch(
                    &segment,
                    &budget,
                    image,
                    Sharing::BeforeReturning,
                    None,
                    decoded,
                )
                .await;
            if let Err(error) = fetched {
                tracing::info!(seq, %error, "encoding the new image in the background failed");
            }
            // The writer encodes each image once, for every server: its read buffer would only
            // serve the next upload's encode, and a server at rest should not hold a spare
            // copy of the pixels. While uploads follow each other the allocator hands the
            // same memory out again; at rest it goes back to the system.
            cache.release_kept_pixels();
            // Normally given up by the encode already; never leave others waiting for nothing.
            segment.release_png_claim(seq);
        });
    }
}

/// Reads the segment's image into `buffer` (emptied first, and grown fallibly to `len` bytes),
/// timed as `read`: the pixels both the full-size and the resized paths start from.
pub(crate) fn read_pixels(
    segment: &Segment,
    mut buffer: Vec<u8>,
    len: usize,
    timing: &mut ServerTiming,
) -> Result<StoredImage, AppError> {
    buffer.clear();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| AppError::OutOfMemory {
            work: "reading the image",
            bytes: len as u64,
        })?;
    timing
        .time("read", || segment.read_into(buffer))?
        .ok_or_else(|| AppError::NoImage {
            segment: segment.name().to_string(),
        })
}

/// How many bands an encode whose PNG is not streamed copies ahead of its encoder threads (one
/// per core): enough that they rarely wait for the copy, which runs many times faster than
/// they do.
fn not_streamed_ahead() -> usize {
    imaging::encoder_cores().max(2)
}

/// The PNG of the segment's published image, its bands of rows copied out of the slot ahead of
/// the encoder threads that compress them (see [`SlotRows`]), handed to `stream` as they are
/// made. The stream is opened (its pieces may be sent) once every band is copied and checked,
/// with `timing` and the copy's time as its `Server-Timing`; only for an image of several
/// bands, so that a small PNG is still sent with its length. `None` if a new image was
/// published before the last band was copied: the bands copied may then not all be of one
/// image, and what was made is thrown away (the stream was not opened). Blocks.
fn encode_from_slot(
    segment: &Segment,
    stream: Option<&GrowingPng>,
    into: Vec<u8>,
    timing: &ServerTiming,
) -> Result<Option<EncodedPng>, AppError> {
    let pinned = segment.pin_image()?.ok_or_else(|| AppError::NoImage {
        segment: segment.name().to_string(),
    })?;
    let info = pinned.info();
    let source = SlotRows::new(segment, &pinned);
    let started = Instant::now();
    let copy_ahead = |ahead: usize| {
        if source.copy_ahead(ahead)
            && source.bands() > 1
            && let Some(stream) = stream
        {
            let mut timing = timing.clone();
            timing.describe("read", "slot");
            timing.record_since("read", started);
            timing.describe("encode", "streamed");
            stream.open(StreamHead {
                image: info.id(),
                timing,
            });
        }
    };
    // A stream opens once the last band is copied, so for one the copy runs as far ahead as
    // it can; an encode that is not streamed holds only a few bands' copies at once. (A write
    // published before its last band is copied then throws its work away, as it did when the
    // encoder threads read the slot themselves.)
    let ahead = if stream.is_some() {
        usize::MAX
    } else {
        not_streamed_ahead()
    };
    let png = std::thread::scope(|scope| {
        // The copy runs beside the encoder on a thread of its own, unless there is only one
        // band (or no thread to be had): then it is made first, whole.
        let copier = (source.bands() > 1)
            .then(|| {
                std::thread::Builder::new()
                    .name("png-copy".to_owned())
                    .spawn_scoped(scope, || copy_ahead(ahead))
                    .ok()
            })
            .flatten();
        if copier.is_none() {
            copy_ahead(usize::MAX);
        }
        let _stop = source.stop_when_dropped();
        encode_into_pieces(&source, info.width, info.height, info.format, stream, into)
    });
    let replaced = source.replaced();
    if let Some(error) = source.into_failure() {
        return Err(error.into());
    }
    if replaced {
        if let Some(stream) = stream {
            stream.discard();
        }
        return Ok(None);
    }
    let png = png?;
    tracing::debug!(
        seq = info.seq,
        bytes = png.len(),
        "encoded the image as PNG from its slot"
    );
    Ok(Some(EncodedPng {
        image: info.id(),
        png,
        timing: ServerTiming::new(),
    }))
}

/// The PNG of the image whose rows come from `source`, each piece handed to `stream` too as it
/// is made. Without a stream, the pieces are copied into `into` while its capacity lasts (each
/// piece's own memory then goes to the next band's), and the pieces that do not fit follow it.
fn encode_into_pieces(
    source: &dyn imaging::RowSource,
    width: u32,
    height: u32,
    format: crate::raster::PixelFormat,
    stream: Option<&GrowingPng>,
    mut into: Vec<u8>,
) -> Result<PngPieces, imaging::EncodeError> {
    into.clear();
    let mut pieces = Vec::new();
    imaging::encode_png_from(source, width, height, format, &mut |piece| {
        if stream.is_none() && pieces.is_empty() && into.capacity() - into.len() >= piece.len() {
            into.extend_from_slice(&piece);
            return;
        }
        let piece = Bytes::from(piece);
        if let Some(stream) = stream {
            stream.push(piece.clone());
        }
        pieces.push(piece);
    })?;
    if !into.is_empty() {
        // Gives the room the PNG did not use back to the heap, in place.
        into.shrink_to_fit();
        pieces.insert(0, Bytes::from(into));
    }
    Ok(PngPieces::from_bytes(pieces))
}

impl EncodedPng {
    /// The same PNG, with `timing` as how it was made.
    fn with_timing(self, timing: ServerTiming) -> EncodedPng {
        EncodedPng { timing, ..self }
    }
}

/// When a server shares a PNG it encoded with the other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// Before the encode returns.
    BeforeReturning,
    /// After: on another blocking thread, while the reply is sent (if there is a runtime to
    /// start one on). The copy into the area and the segment lock it takes are then no part
    /// of the reply.
    AfterReturning,
}

/// Publishes `png` in the segment's PNG area for the other servers, then gives up `claim`
/// (the servers waiting for it then find the PNG), when `sharing` says. Returns the thread's
/// handle when the publish is left to another thread.
fn share_png(
    segment: &Arc<Segment>,
    png: &EncodedPng,
    claim: Option<ClaimedPng>,
    sharing: Sharing,
) -> Option<tokio::task::JoinHandle<()>> {
    let publish = |segment: &Segment, seq, png: &PngPieces| {
        if let Err(error) = segment.publish_png_parts(seq, &png.pieces()) {
            tracing::warn!(%error, "cannot share the PNG with the other servers");
        }
    };
    let runtime = tokio::runtime::Handle::try_current();
    match (sharing, runtime) {
        (Sharing::AfterReturning, Ok(runtime)) => {
            // The claim goes with the thread, which gives up this claim (and no claim another
            // process took for a newer image meanwhile) once the PNG is published, or the
            // publish failed or panicked.
            // The claim's own image, which is not the PNG's if the encode found a newer one.
            let claim = claim.map(|claim| KeptClaim {
                seq: claim.keep(),
                segment: Arc::clone(segment),
            });
            let (segment, seq, png) = (Arc::clone(segment), png.image.seq, png.png.clone());
            Some(runtime.spawn_blocking(move || {
                let _claim = claim;
                publish(&segment, seq, &png);
            }))
        }
        _ => {
            publish(segment, png.image.seq, &png.png);
            drop(claim);
            None
        }
    }
}

/// A claim on the encode of image `seq` kept past its [`ClaimedPng`], given up when dropped.
struct KeptClaim {
    segment: Arc<Segment>,
    seq: u64,
}

impl Drop for KeptClaim {
    fn drop(&mut self) {
        self.segment.release_png_claim(self.seq);
    }
}

/// A PNG copied out of the segment's PNG area, with the timing so far.
fn from_area(shared: SharedPng, mut timing: ServerTiming) -> EncodedPng {
    timing.describe("png", "shared");
    EncodedPng {
        image: shared.image(),
        png: PngPieces::from(shared.png),
        timing,
    }
}

/// Middleware of `POST /image`: once an upload is stored (201, or the redirect to the page
/// that shows it), starts its PNG in the background (see [`PngCache::encode_in_background`]).
pub(crate) async fn encode_after_upload(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let decoded = response
        .extensions_mut()
        .remove::<LentPixels>()
        .and_then(|lent| lent.take());
    let stored = response.status() == StatusCode::CREATED
        || (response.status() == StatusCode::SEE_OTHER
            && response
                .headers()
                .get(header::LOCATION)
                .and_then(|location| location.to_str().ok())
                .is_some_and(|location| location.starts_with("/?loaded=")));
    if stored {
        if response.extensions().get::<PngShared>().is_some() {
            // The upload's own PNG data is the image's PNG: nothing to encode.
            state.png.forget();
        } else {
            state
                .png
                .encode_in_background(&state.segment, state.budget(), decoded);
        }
    }
    response
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
    let image = match state.segment.published_image() {
        Ok(Some(image)) => image,
        Ok(None) => {
            let error = AppError::NoImage {
                segment: state.segment_name(),
            };
            return Reply::for_headers(headers).error(error, state);
        }
        Err(error) => return Reply::for_headers(headers).error(error.into(), state),
    };
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))];
    match state
        .png
        .current_for_response(&state.segment, state.budget(), image)
        .await
    {
        Ok(PngReply::Whole(encoded, served)) => (
            served_timing(&encoded, served),
            cache_headers(incarnation, encoded.image.seq),
            content_type,
            encoded.png.body(),
        )
            .into_response(),
        Ok(PngReply::Streamed(stream, head)) => (
            head.timing,
            cache_headers(incarnation, head.image.seq),
            content_type,
            stream.body(),
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
    use crate::raster::{PixelFormat, Raster};
    use crate::segment::{SegmentConfig, SegmentName};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn segment(tag: &str) -> Arc<Segment> {
        let name = format!("u{}-{tag}", std::process::id() % 1_000_000);
        Arc::new(
            Segment::attach(SegmentConfig {
                name: SegmentName::new(&name).unwrap(),
                max_pixels: 1 << 24,
                label: "test".to_owned(),
            })
            .unwrap(),
        )
    }

    /// A photo-like RGB image whose rows are not a whole number of words (1001 pixels), large
    /// enough to be cut into several bands; `seed` makes each one different.
    fn photo(seed: usize) -> Raster {
        let (width, height) = (1001, 1400);
        let pixels = (0..width * height * 3)
            .map(|i| ((i / 3 % width + i / 3 / width) / 9 + (i * seed) % 7) as u8)
            .collect();
        Raster::new(width as u32, height as u32, PixelFormat::Rgb8, pixels).unwrap()
    }

    #[test]
    fn an_encode_from_the_slot_is_the_png_of_the_stored_pixels() {
        let segment = segment("png");
        let image = photo(3);
        let info = segment.write(&image).unwrap();
        let encoded = encode_from_slot(&segment, None, Vec::new(), &ServerTiming::new())
            .unwrap()
            .expect("nothing was written since");
        assert_eq!(encoded.image, info.id());
        // The same bytes as the encode of the pixels in memory, band for band.
        assert!(encoded.png == *imaging::encode_png(&image).unwrap());
        let decoded = image::load_from_memory(&encoded.png.to_vec())
            .unwrap()
            .into_rgb8();
        assert!(decoded.as_raw() == image.pixels());
    }

    #[test]
    fn a_png_written_into_an_uploads_pixels_is_the_same_png_whatever_room_they_leave() {
        let segment = segment("into");
        let image = photo(4);
        segment.write(&image).unwrap();
        let expected = imaging::encode_png(&image).unwrap();
        // Room for all of it, for part of it, and none.
        for room in [image.pixels().len(), expected.len() / 2, 0] {
            let encoded = encode_from_slot(
                &segment,
                None,
                Vec::with_capacity(room),
                &ServerTiming::new(),
            )
            .unwrap()
            .unwrap();
            assert!(encoded.png == *expected, "with room for {room} bytes");
            let pieces = encoded.png.pieces().len();
            if room == image.pixels().len() {
                assert_eq!(pieces, 1, "the whole PNG in the room given");
            } else {
                assert!(pieces > 1, "{pieces} pieces with room for {room} bytes");
            }
        }
    }

    /// A server that shares its PNG after the reply gives up its own claim, never the claim
    /// another process took meanwhile for a newer image (whose waiters would then stop waiting
    /// and encode it again).
    #[tokio::test]
    async fn sharing_a_png_after_the_reply_leaves_a_newer_images_claim_alone() {
        let segment = segment("claim");
        let first = segment.write(&photo(1)).unwrap();
        let PngClaim::Ours(claim) = segment.claim_png(first.seq) else {
            panic!("nobody else claims it")
        };
        let encoded = encode_from_slot(&segment, None, Vec::new(), &ServerTiming::new())
            .unwrap()
            .unwrap();
        // A newer image, and the claim on its encode (taken by this process here; any living
        // claimant is the same to the claim word's owner check).
        let second = segment.write(&photo(2)).unwrap();
        match segment.claim_png(second.seq) {
            PngClaim::Ours(newer) => assert_eq!(newer.keep(), second.seq),
            PngClaim::Theirs { pid } => panic!("claimed by {pid}"),
        }
        let sharing = share_png(&segment, &encoded, Some(claim), Sharing::AfterReturning);
        sharing.expect("published on another thread").await.unwrap();
        assert_eq!(
            segment.png_claimant(),
            Some((second.seq as u32, std::process::id()))
        );
        // The first image's PNG is not the newer image's: refused, not published.
        assert!(matches!(
            segment.shared_png().unwrap(),
            PngLookup::Missing { .. }
        ));
    }

    /// Uploads land while the image is encoded: an encode whose bands may be of two images is
    /// never served; the server encodes from a whole copy instead, and every PNG it makes is
    /// exactly the image it says it is of.
    #[test]
    fn an_image_stored_during_the_encode_is_never_mixed_into_its_png() {
        let segment = segment("race");
        let images = [photo(1), photo(2)];
        let pngs = images
            .iter()
            .map(|image| imaging::encode_png(image).unwrap())
            .collect::<Vec<_>>();
        // Odd sequence numbers hold the first image, even ones the second.
        segment.write(&images[0]).unwrap();
        // While `busy`, the writer stores one image after the other without a pause; it holds
        // `writing` for each write, so that taking it waits for the write under way.
        let (busy, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let writing = Arc::new(Mutex::new(()));
        let writer = {
            let (segment, busy, stop) =
                (Arc::clone(&segment), Arc::clone(&busy), Arc::clone(&stop));
            let (images, writing) = (images.clone(), Arc::clone(&writing));
            std::thread::spawn(move || {
                let mut next = 1;
                while !stop.load(Ordering::Relaxed) {
                    let guard = writing.lock().unwrap();
                    if !busy.load(Ordering::Relaxed) {
                        drop(guard);
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let seq = segment.write(&images[next]).unwrap().seq;
                    assert_eq!(((seq + 1) % 2) as usize, next, "image {seq}");
                    next = 1 - next;
                }
            })
        };
        let cache = PngCache::default();
        let len = images[0].pixels().len();
        // Just enough for one encode: the copy ahead and the whole copy of a raced one are
        // the same pixels, never both at once.
        let budget = MemoryBudget::new(encode_reservation(len));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let encode = |during_writes: bool| {
            if during_writes {
                // The writer at work before the encode begins: the copy ahead takes a
                // millisecond, a fraction of the writer's pause when it is idle.
                let seq = segment.seq();
                busy.store(true, Ordering::Relaxed);
                while segment.seq() < seq + 2 {
                    std::thread::yield_now();
                }
            }
            let memory = budget
                .reserve(encode_reservation(len), "test", budget::WAIT)
                .unwrap();
            let stream = Arc::new(GrowingPng::new());
            let encoded = cache
                .encode_here(
                    &segment,
                    memory,
                    None,
                    len,
                    ServerTiming::new(),
                    Some(&stream),
                )
                .unwrap();
            busy.store(false, Ordering::Relaxed);
            // No write under way from here on.
            drop(writing.lock().unwrap());
            let expected = &pngs[((encoded.image.seq + 1) % 2) as usize];
            assert!(encoded.png == **expected, "image {}", encoded.image.seq);
            // The stream was opened (the image has several bands), and what it sent is the
            // PNG of the image its head names, whether it came from the slot or a whole copy.
            let head = runtime.block_on(stream.opened()).expect("opened");
            assert_eq!(head.image, encoded.image);
            stream.finish(true);
            let sent = runtime
                .block_on(axum::body::to_bytes(stream.body(), usize::MAX))
                .unwrap();
            assert!(encoded.png == sent[..], "image {}", encoded.image.seq);
            encoded.timing.header_value()
        };
        let mut from_copy = 0;
        for _ in 0..6 {
            // With nothing written meanwhile, straight from the slot.
            let quiet = encode(false);
            assert!(quiet.contains("read;desc=slot"), "{quiet}");
            // With writes landing all the time, the bands are (nearly always) not all of one
            // image: read whole instead.
            let raced = encode(true);
            if raced.contains("read;dur=") {
                from_copy += 1;
            } else {
                assert!(raced.contains("read;desc=slot"), "{raced}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            from_copy > 0,
            "no encode found a new image stored during it"
        );
    }

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
