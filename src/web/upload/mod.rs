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
//! The body is copied once, piece by piece, into one buffer that grows with what arrives (a
//! declared `Content-Length` is not reserved up front; see `body.rs`); a form is read in place
//! in that buffer and its image handed on as a view of it (`form.rs`). The upload is refused
//! with `415` as soon as its first bytes show it is no image this server reads. The decode
//! reserves the memory it needs from the server's [`super::budget`] first.

mod body;
mod form;

use self::body::BodyBuffer;
use self::form::FormReader;
use super::budget::{self, Reservation};
use super::error::Reply;
use super::image::{DecodedPixels, LentPixels};
use super::timing::ServerTiming;
use super::{AppError, AppState, blocking};
use crate::imaging::{self, DecodeLimits, Sniffed};
use crate::segment::{ImageInfo, STREAMED_DECODE_MAX_BYTES, Segment, SegmentError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
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

/// Marks the answer to an upload whose own image data the segment's PNG area now holds as the
/// image's PNG (a plain PNG upload, see `imaging::SourcePng`): no server needs to encode it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PngShared;

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
        Err(Refused { error, file_name }) => {
            return reply.upload_error(error, &state, file_name.as_deref());
        }
    };
    timing.record_since("receive", received);
    let upload_name = upload.file_name.clone();
    let (info, steps, png_shared, decoded) = match store(&state, upload, reply).await {
        Ok(stored) => stored,
        Err(error) => return reply.upload_error(error, &state, upload_name.as_deref()),
    };
    timing.extend(&steps);
    let mut response = answer(&state, reply, &info, upload_name.as_deref(), timing);
    if png_shared {
        response.extensions_mut().insert(PngShared);
    }
    if let Some(decoded) = decoded {
        response.extensions_mut().insert(LentPixels::new(decoded));
    }
    response
}

/// The answer to a stored upload: the redirect to the page, or `201` with the image's metadata.
fn answer(
    state: &AppState,
    reply: Reply,
    info: &ImageInfo,
    upload_name: Option<&str>,
    timing: ServerTiming,
) -> Response {
    match reply {
        Reply::Page => {
            let query = LoadedQuery {
                loaded: info.seq,
                name: upload_name,
            };
            match serde_urlencoded::to_string(&query) {
                Ok(query) => (timing, Redirect::to(&format!("/?{query}"))).into_response(),
                Err(error) => reply.error(
                    AppError::Internal(format!("cannot build the page address: {error}")),
                    state,
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

/// Decodes the upload and writes it into the segment; returns what the segment says, how long
/// decoding and writing took, whether the upload's own image data is the image's PNG in the
/// segment's PNG area now (a plain PNG, see `imaging::SourcePng`), and, if not and the pixels
/// were decoded into memory of this server's own, those pixels with their reservation, for the
/// PNG's encode.
async fn store(
    state: &AppState,
    upload: Upload,
    reply: Reply,
) -> Result<(ImageInfo, ServerTiming, bool, Option<DecodedPixels>), AppError> {
    let segment = state.segment.clone();
    let budget = Arc::clone(state.budget());
    let limits = DecodeLimits {
        max_pixels: state.limits.max_pixels,
    };
    let want_thumbnail = reply == Reply::Page;
    let bytes = upload.bytes;
    let body_memory = upload.memory;
    let (info, thumbnail, steps, png_shared, decoded) = blocking(move || {
        let mut steps = ServerTiming::new();
        // The memory the decode will take beyond the body (which holds its own) is reserved
        // before it starts, and held until the pixels are in the segment.
        let needed = imaging::decode_footprint(&bytes, &limits).saturating_sub(body_memory.bytes());
        let memory = steps.time_if_long("memory", || {
            budget.reserve(needed, "decoding the upload", budget::WAIT)
        })?;
        let plain = imaging::plain_png(&bytes);
        // Decoded straight into the segment, with its lock held: only up to a size whose
        // decode other writers can wait for.
        let streamable = plain.as_ref().filter(|plain| {
            let (width, height) = plain.dimensions();
            plain
                .format()
                .byte_len(width, height)
                .is_some_and(|len| len <= STREAMED_DECODE_MAX_BYTES)
        });
        let streamed = match streamable {
            Some(plain) => {
                store_plain_png(&segment, &bytes, plain, &limits, want_thumbnail, &mut steps)?
            }
            None => None,
        };
        let (info, preview_rows, raster, source_png) = match streamed {
            Some((info, preview_rows)) => (
                info,
                preview_rows,
                None,
                plain.map(|plain| plain.source().clone()),
            ),
            None => {
                let imaging::Decoded {
                    raster,
                    format,
                    source_png,
                } = steps.time("decode", || {
                    if streamable.is_some() {
                        // Refused by the strict reader of plain PNGs: not tried again.
                        imaging::decode_ordinarily(&bytes, &limits)
                    } else {
                        imaging::decode(&bytes, &limits)
                    }
                })?;
                tracing::debug!(format, "decoded the upload");
                let info = steps.time("write", || segment.write(&raster))?;
                (info, None, Some(raster), source_png)
            }
        };
        // A plain PNG's own image data is a PNG of exactly the stored pixels: shared as the
        // image's PNG at once (before the preview), so that no server starts encoding it.
        let png_shared = source_png.is_some_and(|source_png| {
            let started = Instant::now();
            let published = segment.publish_png_parts(info.seq, &source_png.parts(&bytes));
            steps.record_since("share", started);
            published.unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot share the upload's own PNG data");
                false
            })
        });
        drop(bytes);
        drop(body_memory);
        tracing::info!(
            seq = info.seq,
            "stored a {}x{} {} image",
            info.width,
            info.height,
            info.format
        );
        let thumbnail = match (want_thumbnail, preview_rows, &raster) {
            (false, ..) => None,
            (true, Some(rows), _) => preview(rows.finish(), info.seq),
            (true, None, Some(raster)) => {
                preview(imaging::thumbnail_png(raster, THUMBNAIL_SIDE), info.seq)
            }
            (true, None, None) => None,
        };
        // The image's PNG is encoded next, in the background (see `encode_after_upload`),
        // into the memory of the pixels decoded here, which stays reserved until then.
        let decoded = raster.filter(|_| !png_shared).map(|raster| DecodedPixels {
            pixels: raster.into_pixels(),
            memory,
        });
        Ok((info, thumbnail, steps, png_shared, decoded))
    })
    .await?;
    if want_thumbnail {
        state.remember_upload(RecentUpload {
            info: info.clone(),
            thumbnail,
            file_name: upload.file_name.clone(),
        });
    }
    Ok((info, steps, png_shared, decoded))
}

/// A plain PNG decoded row by row straight into the segment (no copy of the whole image in
/// this process), with its preview made from the same rows if `want_thumbnail`: what the
/// segment says and the preview's rows, or `None` if the strict reader refused the file after all
/// (nothing was stored; read it as any other file). Timed as `decode`: the rows are written as
/// they are decoded, so there is no `write` of its own.
fn store_plain_png(
    segment: &Segment,
    bytes: &[u8],
    plain: &imaging::PlainPng,
    limits: &DecodeLimits,
    want_thumbnail: bool,
    steps: &mut ServerTiming,
) -> Result<Option<(ImageInfo, Option<imaging::Preview>)>, AppError> {
    /// Why the write of a plain PNG's rows stopped.
    enum Stopped {
        /// The strict reader refused the file: read it as any other.
        Refused,
        Failed(AppError),
    }
    impl From<SegmentError> for Stopped {
        fn from(error: SegmentError) -> Self {
            Stopped::Failed(error.into())
        }
    }

    // The decode's own limit first: its refusal is the one every other upload gets.
    plain.check_limits(limits)?;
    let (width, height) = plain.dimensions();
    let mut preview_rows = want_thumbnail
        .then(|| imaging::Preview::new(width, height, plain.format(), THUMBNAIL_SIDE));
    let started = Instant::now();
    let written = segment.write_with(width, height, plain.format(), |pixels| {
        let read = imaging::decode_plain_png_rows(bytes, plain, limits, |row| {
            if let Some(preview) = &mut preview_rows {
                preview.push_row(row);
            }
            pixels.push(row);
        })
        .map_err(|error| Stopped::Failed(error.into()))?;
        if read { Ok(()) } else { Err(Stopped::Refused) }
    });
    steps.record_since("decode", started);
    match written {
        Ok(info) => Ok(Some((info, preview_rows))),
        Err(Stopped::Refused) => Ok(None),
        Err(Stopped::Failed(error)) => Err(error),
    }
}

/// A `data:image/png;base64,...` preview from `png`, or `None` (logged) if none could be made.
fn preview(png: Result<Vec<u8>, imaging::EncodeError>, seq: u64) -> Option<String> {
    match png {
        Ok(png) => Some(format!("data:image/png;base64,{}", STANDARD.encode(png))),
        Err(error) => {
            tracing::warn!("no preview for image {seq}: {error}");
            None
        }
    }
}

/// An upload refused while it was being received, with the file name of the form's field if
/// its head had arrived.
struct Refused {
    error: AppError,
    file_name: Option<String>,
}

impl From<AppError> for Refused {
    fn from(error: AppError) -> Refused {
        Refused {
            error,
            file_name: None,
        }
    }
}

/// The upload's bytes, from a multipart form or from the raw body.
async fn read_upload(state: &AppState, request: Request) -> Result<Upload, Refused> {
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
    let is_form = media_type == "multipart/form-data";
    if !is_form && !media_type.starts_with("image/") && media_type != "application/octet-stream" {
        return Err(AppError::UnsupportedContentType { content_type }.into());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AppError::UploadTooLarge { limit }.into());
    }
    let buffer = BodyBuffer::new(declared, limit, state.budget());
    let mut pieces = request.into_body().into_data_stream();
    if is_form {
        let content_type = content_type.as_deref().unwrap_or_default();
        let mut form = FormReader::new(content_type, IMAGE_FIELD, buffer)?;
        while let Some(piece) = pieces.next().await {
            let pushed = piece
                .map_err(unreadable_body)
                .and_then(|piece| form.push(&piece));
            match pushed {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    return Err(Refused {
                        error,
                        file_name: form.file_name().and_then(clean_file_name),
                    });
                }
            }
        }
        let file_name = form.file_name().and_then(clean_file_name);
        let field = form.finish().map_err(|error| Refused {
            error,
            file_name: file_name.clone(),
        })?;
        Ok(Upload {
            file_name,
            bytes: field.bytes,
            memory: field.memory,
        })
    } else {
        let mut body = buffer;
        let mut recognised = false;
        while let Some(piece) = pieces.next().await {
            body.append(&piece.map_err(unreadable_body)?)?;
            // Refused as soon as the first bytes show it is no image this server reads.
            if !recognised {
                match imaging::sniff(body.as_slice(), false) {
                    Sniffed::Image(_) => recognised = true,
                    Sniffed::Refused(error) => return Err(AppError::from(error).into()),
                    Sniffed::NeedMore => {}
                }
            }
        }
        let (bytes, memory) = body.into_all();
        Ok(Upload {
            file_name: None,
            bytes,
            memory,
        })
    }
}

/// A body that broke off or could not be read.
fn unreadable_body(error: axum::Error) -> AppError {
    AppError::MalformedUpload(error.to_string())
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
