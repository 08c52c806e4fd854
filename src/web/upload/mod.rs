//! `POST /image`: take an image from a form or a raw body, decode it and write it into the
//! segment.
//!
//! A browser form gets `303 See Other` back to the page, which then says what was loaded; other
//! clients get `201 Created` with the image's metadata as JSON. A failed upload never changes the
//! segment: nothing is written until the image has been decoded within the limits.
//!
//! Both answers carry a `Server-Timing` header (see [`super::timing`]) with the time spent
//! receiving the body, waiting for memory, decoding it and writing the pixels into the segment.
//!
//! The body is read into a buffer that grows with what arrives (a declared `Content-Length` is
//! not reserved up front), and refused with `415` as soon as its first bytes show it is no image
//! this server reads. The decode reserves the memory it needs from the server's
//! [`super::budget`] first.

use super::budget::{self, MemoryBudget, Reservation};
use super::error::Reply;
use super::timing::ServerTiming;
use super::{AppError, AppState, blocking};
use crate::imaging::{self, DecodeLimits, Sniffed};
use crate::raster::Raster;
use crate::segment::ImageInfo;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures_util::StreamExt as _;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// The form field that carries the file.
pub const IMAGE_FIELD: &str = "image";

/// The longer side of the preview the page shows right after an upload, in pixels.
const THUMBNAIL_SIDE: u32 = 320;

/// The longest file name kept for the status line, in characters.
const MAX_FILE_NAME_CHARS: usize = 100;

/// The bytes of one upload, the memory they hold, and the file name the browser gave, if any.
#[derive(Debug)]
struct Upload {
    file_name: Option<String>,
    bytes: Bytes,
    memory: Reservation,
}

/// The last upload a server took from its page, kept so the page shown after the redirect can
/// say what was loaded and show a preview without another request.
#[derive(Debug, Clone)]
pub(crate) struct RecentUpload {
    /// What the segment said about the image when it was written.
    pub info: ImageInfo,
    /// A `data:image/png;base64,...` preview, if one could be made.
    pub thumbnail: Option<String>,
    /// The file name the browser gave, cleaned.
    pub file_name: Option<String>,
}

/// What `POST /image` answers API clients with.
#[derive(Debug, Serialize)]
struct Stored {
    segment: String,
    width: u32,
    height: u32,
    color: String,
    bytes: u64,
    seq: u64,
}

/// Where the browser goes after an upload: the page, told what was loaded.
#[derive(Debug, Serialize)]
struct LoadedQuery<'a> {
    loaded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// `POST /image`.
pub(crate) async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let reply = Reply::for_headers(request.headers());
    let mut timing = ServerTiming::new();
    let received = Instant::now();
    let upload = match read_upload(&state, request).await {
        Ok(upload) => upload,
        Err(error) => return reply.upload_error(error, &state, None),
    };
    timing.record_since("receive", received);
    let upload_name = upload.file_name.clone();
    let (info, steps) = match store(&state, upload, reply).await {
        Ok(stored) => stored,
        Err(error) => return reply.upload_error(error, &state, upload_name.as_deref()),
    };
    timing.extend(&steps);
    match reply {
        Reply::Page => {
            let query = LoadedQuery {
                loaded: info.seq,
                name: upload_name.as_deref(),
            };
            match serde_urlencoded::to_string(&query) {
                Ok(query) => (timing, Redirect::to(&format!("/?{query}"))).into_response(),
                Err(error) => reply.error(
                    AppError::Internal(format!("cannot build the page address: {error}")),
                    &state,
                ),
            }
        }
        Reply::Json => {
            let stored = Stored {
                segment: state.segment_name(),
                width: info.width,
                height: info.height,
                color: info.format.to_string(),
                bytes: info.byte_len,
                seq: info.seq,
            };
            (
                StatusCode::CREATED,
                timing,
                [(header::LOCATION, "/image.png")],
                Json(stored),
            )
                .into_response()
        }
    }
}

/// Decodes the upload and writes it into the segment; returns what the segment says and how
/// long decoding and writing took.
async fn store(
    state: &AppState,
    upload: Upload,
    reply: Reply,
) -> Result<(ImageInfo, ServerTiming), AppError> {
    let segment = state.segment.clone();
    let budget = Arc::clone(state.budget());
    let limits = DecodeLimits {
        max_pixels: state.limits.max_pixels,
    };
    let want_thumbnail = reply == Reply::Page;
    let bytes = upload.bytes;
    let body_memory = upload.memory;
    let (info, thumbnail, steps) = blocking(move || {
        let mut steps = ServerTiming::new();
        // The memory the decode will take beyond the body (which holds its own) is reserved
        // before it starts, and held until the pixels are in the segment.
        let needed = imaging::decode_footprint(&bytes, &limits).saturating_sub(body_memory.bytes());
        let _memory = steps.time_if_long("memory", || {
            budget.reserve(needed, "decoding the upload", budget::WAIT)
        })?;
        let decoded = steps.time("decode", || imaging::decode(&bytes, &limits))?;
        // The upload's bytes are not needed any more: free them before the copy.
        drop(bytes);
        drop(body_memory);
        let info = steps.time("write", || segment.write(&decoded.raster))?;
        tracing::info!(
            seq = info.seq,
            format = decoded.format,
            "stored a {}x{} {} image",
            info.width,
            info.height,
            info.format
        );
        let thumbnail = if want_thumbnail {
            preview(&decoded.raster, info.seq)
        } else {
            None
        };
        Ok((info, thumbnail, steps))
    })
    .await?;
    if want_thumbnail {
        state.remember_upload(RecentUpload {
            info: info.clone(),
            thumbnail,
            file_name: upload.file_name.clone(),
        });
    }
    Ok((info, steps))
}

/// A `data:image/png;base64,...` preview of `raster`, or `None` (logged) if none can be made.
fn preview(raster: &Raster, seq: u64) -> Option<String> {
    match imaging::thumbnail_png(raster, THUMBNAIL_SIDE) {
        Ok(png) => Some(format!("data:image/png;base64,{}", STANDARD.encode(png))),
        Err(error) => {
            tracing::warn!("no preview for image {seq}: {error}");
            None
        }
    }
}

/// The upload's bytes, from a multipart form or from the raw body.
async fn read_upload(state: &AppState, request: Request) -> Result<Upload, AppError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let media_type = content_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let limit = state.limits.max_upload_bytes;

    if media_type == "multipart/form-data" {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| AppError::MalformedUpload(rejection.body_text()))?;
        while let Some(mut field) = form
            .next_field()
            .await
            .map_err(|error| multipart_error(error, limit))?
        {
            if field.name() == Some(IMAGE_FIELD) {
                let file_name = field.file_name().and_then(clean_file_name);
                let mut received = Received::new(None, state.budget());
                while let Some(piece) = field
                    .chunk()
                    .await
                    .map_err(|error| multipart_error(error, limit))?
                {
                    received.add(&piece, limit)?;
                }
                let (bytes, memory) = received.finish();
                return Ok(Upload {
                    file_name,
                    bytes,
                    memory,
                });
            }
        }
        Err(AppError::MissingImageField)
    } else if media_type.starts_with("image/") || media_type == "application/octet-stream" {
        let (bytes, memory) = read_body(request, limit, state.budget()).await?;
        Ok(Upload {
            file_name: None,
            bytes,
            memory,
        })
    } else {
        Err(AppError::UnsupportedContentType { content_type })
    }
}

/// A raw body of at most `limit` bytes.
///
/// Each piece is copied into one buffer and let go as it arrives, so the body is in memory
/// once, not as a list of pieces plus a contiguous copy of them.
async fn read_body(
    request: Request,
    limit: usize,
    budget: &Arc<MemoryBudget>,
) -> Result<(Bytes, Reservation), AppError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AppError::UploadTooLarge { limit });
    }
    let mut body = request.into_body().into_data_stream();
    let mut received = Received::new(declared, budget);
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|error| AppError::MalformedUpload(error.to_string()))?;
        received.add(&piece, limit)?;
    }
    Ok(received.finish())
}

/// An upload's bytes as they arrive: checked against the limit, recognised (or refused) as an
/// image from the first bytes, in a buffer that grows with what has arrived and whose memory is
/// reserved from the budget as it grows.
struct Received {
    bytes: Vec<u8>,
    memory: Reservation,
    /// The length the request declared, if any: the buffer never grows past it unasked.
    declared: Option<u64>,
    /// Whether the first bytes were found to start an image.
    recognised: bool,
}

impl Received {
    fn new(declared: Option<u64>, budget: &Arc<MemoryBudget>) -> Received {
        Received {
            bytes: Vec::new(),
            memory: budget.nothing(),
            declared,
            recognised: false,
        }
    }

    /// Adds `piece`; refuses the upload once it is over `limit` or its first bytes start no
    /// image this server reads (without waiting for the rest).
    fn add(&mut self, piece: &[u8], limit: usize) -> Result<(), AppError> {
        let needed = self.bytes.len() + piece.len();
        if needed > limit {
            return Err(AppError::UploadTooLarge { limit });
        }
        if needed > self.bytes.capacity() {
            // Grow fourfold, so a large body is copied about once in all, but never to more
            // than the declared length or the limit: a length that was declared but not sent
            // costs nothing.
            let ceiling = self
                .declared
                .and_then(|declared| usize::try_from(declared).ok())
                .unwrap_or(limit)
                .min(limit);
            let target = needed.max(self.bytes.len().saturating_mul(4).min(ceiling));
            let more = target - self.bytes.capacity();
            self.memory.grow(more as u64, "receiving the upload")?;
            self.bytes
                .try_reserve_exact(target - self.bytes.len())
                .map_err(|_| AppError::OutOfMemory {
                    work: "receiving the upload",
                    bytes: target as u64,
                })?;
        }
        self.bytes.extend_from_slice(piece);
        if !self.recognised {
            match imaging::sniff(&self.bytes, false) {
                Sniffed::Image(_) => self.recognised = true,
                Sniffed::Refused(error) => return Err(error.into()),
                Sniffed::NeedMore => {}
            }
        }
        Ok(())
    }

    fn finish(self) -> (Bytes, Reservation) {
        (Bytes::from(self.bytes), self.memory)
    }
}

/// A multipart failure: too large becomes 413, anything else a malformed upload.
fn multipart_error(error: axum::extract::multipart::MultipartError, limit: usize) -> AppError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::UploadTooLarge { limit }
    } else {
        AppError::MalformedUpload(error.body_text())
    }
}

/// The last path component of a browser's file name, shortened; `None` when nothing is left.
fn clean_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name).trim();
    let short: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILE_NAME_CHARS)
        .collect();
    (!short.is_empty()).then_some(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_their_folders_and_control_characters() {
        assert_eq!(clean_file_name("photo.jpg").as_deref(), Some("photo.jpg"));
        assert_eq!(
            clean_file_name("C:\\Users\\me\\photo.jpg").as_deref(),
            Some("photo.jpg")
        );
        assert_eq!(clean_file_name("../../etc/x.png").as_deref(), Some("x.png"));
        assert_eq!(clean_file_name("a\nb.png").as_deref(), Some("ab.png"));
        assert_eq!(clean_file_name(""), None);
        assert_eq!(clean_file_name("dir/"), None);
        assert_eq!(
            clean_file_name(&"x".repeat(500)).map(|n| n.chars().count()),
            Some(MAX_FILE_NAME_CHARS)
        );
    }
}
