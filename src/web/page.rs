//! `GET /`: the page with Qt's two buttons, a status line, the image and the segment's state.
//!
//! The page needs no JavaScript. "Load image from file" is a plain multipart form posting to
//! `/image`, which redirects back here with `?loaded=SEQ&name=FILE`; "Display image from shared
//! memory" is a plain form asking for `/?show=1`, which shows `/image.png?seq=N`; it answers as
//! `/image.png` would (503 with the reason when the segment's pixels cannot be read).
//!
//! With JavaScript, `static/app.js` enhances it: live updates from `/events`, upload progress,
//! drag-and-drop and paste. The page tells the script which image it shows (`data-image-id`,
//! `I-N` as in the ETag and the event ids) and the segment's incarnation (`data-incarnation`).

use super::resized;
use super::timestamp::{readable, rfc3339};
use super::{AppError, AppState, blocking};
use crate::segment::{ImageInfo, SegmentState};
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

/// The page's query string. Everything is optional and read leniently: a bad value is ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    /// Present when "Display image from shared memory" was pressed.
    show: Option<String>,
    /// The sequence number of the image just loaded from a file. (The link also carries the
    /// file's `name`, for the address bar; the page takes the name from what the server
    /// received, never from the link.)
    loaded: Option<String>,
}

/// The page.
#[derive(Template)]
#[template(path = "page.html")]
struct Page {
    segment: String,
    /// The segment's incarnation in hexadecimal, for the script's image URLs.
    incarnation: String,
    status: Status,
    picture: Option<Picture>,
    facts: SegmentFacts,
}

/// The status line: what just happened, or what to do.
struct Status {
    /// `idle`, `ok` or `error`; the stylesheet colors each.
    kind: &'static str,
    text: String,
}

/// The image the page shows.
struct Picture {
    /// A URL or a `data:` URI.
    src: String,
    /// The image at the widths of [`resized::WIDTHS`] below its own, and in full, for the
    /// browser to choose from by the width it draws and the screen's density; `None` for a
    /// preview or an image too small to shrink.
    srcset: Option<String>,
    /// The width the image will be drawn at, for `srcset`: the column, or the image's own width
    /// if that is less. The stylesheet also fits it to the window's height.
    sizes: String,
    /// The full-size image.
    full: String,
    alt: String,
    caption: String,
    /// The size to draw it at (`width` and `height` attributes, so the layout does not jump):
    /// its own, or enlarged for a tiny image; `None` for a preview.
    drawn: Option<(u32, u32)>,
    /// A tiny image, enlarged with sharp pixels (`image-rendering: pixelated`).
    tiny: bool,
    /// `I-N`: which image this is, as `/events` names it.
    image_id: String,
}

/// Images whose longer side is less than this many pixels are drawn enlarged, by a whole
/// factor, so that a 1x1 image is a visible square and not a dot. The page's script does the
/// same (`TINY_SIDE` in `static/app.js`).
pub const TINY_SIDE: u32 = 64;

/// The whole factor a `width` x `height` image is enlarged by: 1 unless it is tiny.
pub fn enlargement(width: u32, height: u32) -> u32 {
    let longer = width.max(height).max(1);
    if longer >= TINY_SIDE {
        1
    } else {
        TINY_SIDE.div_ceil(longer)
    }
}

/// The segment's state, ready to print.
struct SegmentFacts {
    os_name: String,
    seq: u64,
    slot_capacity: String,
    image: Option<ImageFacts>,
    attached: Vec<AttachedServer>,
}

/// The stored image's metadata, ready to print.
struct ImageFacts {
    size: String,
    color: String,
    bytes: String,
    /// RFC 3339, for the `datetime` attribute.
    written_at: String,
    /// What the page shows without JavaScript: `2024-05-01 12:30:05 UTC`.
    written_at_readable: String,
    writer: String,
}

/// One server attached to the segment.
struct AttachedServer {
    label: String,
    pid: u32,
    is_self: bool,
}

/// `GET /`.
pub(crate) async fn show(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(query)| query).unwrap_or_default();
    let segment_name = state.segment_name();
    let segment = state.segment.clone();
    let snapshot = match blocking(move || Ok(segment.state()?)).await {
        Ok(snapshot) => snapshot,
        Err(error) => return error.into_page(&segment_name),
    };

    let loaded = query
        .loaded
        .as_deref()
        .and_then(|seq| seq.parse::<u64>().ok());
    // "Display image from shared memory" shows /image.png: answer as it would (503 with the
    // reason when the pixels cannot be read), and have the PNG ready for the page's request.
    if loaded.is_none()
        && query.show.is_some()
        && let Some(info) = &snapshot.image
        && let Err(error) = state
            .png
            .current(&state.segment, state.budget(), info.id())
            .await
    {
        return error.into_page(&segment_name);
    }
    let view = match loaded {
        Some(seq) => loaded_view(&state, &snapshot, seq),
        None if query.show.is_some() => display_view(&snapshot, state.segment.incarnation()),
        None => idle_view(&snapshot),
    };
    let (code, status, picture) = view;
    let page = Page {
        segment: segment_name.clone(),
        incarnation: format!("{:x}", state.segment.incarnation()),
        status,
        picture,
        facts: SegmentFacts::from(&snapshot),
    };
    match page.render() {
        Ok(html) => (code, Html(html)).into_response(),
        Err(error) => AppError::from(error).into_page(&segment_name),
    }
}

/// What the page shows: its status code, status line and image.
type View = (StatusCode, Status, Option<Picture>);

/// After "Load image from file": what was loaded, with a preview.
fn loaded_view(state: &AppState, snapshot: &SegmentState, seq: u64) -> View {
    let recent = state.recent_upload(seq);
    let name = recent
        .as_ref()
        .and_then(|recent| recent.file_name.as_deref())
        .unwrap_or("the image");
    let current = snapshot.image.as_ref().filter(|info| info.seq == seq);
    let Some(info) = current.or(recent.as_ref().map(|recent| &recent.info)) else {
        if snapshot.seq > seq {
            let text = format!(
                "Loaded {name} into shared memory segment \"{}\" as image #{seq}; it has since \
                 been replaced by image #{}",
                snapshot.name, snapshot.seq
            );
            return (StatusCode::OK, Status { kind: "ok", text }, None);
        }
        return idle_view(snapshot);
    };
    let text = format!(
        "Loaded {name} ({}) into shared memory segment \"{}\"",
        describe(info),
        snapshot.name
    );
    let incarnation = state.segment.incarnation();
    let picture = if current.is_some() {
        let full = image_url(seq);
        Some(
            match recent.as_ref().and_then(|recent| recent.thumbnail.clone()) {
                Some(thumbnail) => Picture {
                    src: thumbnail,
                    srcset: None,
                    sizes: String::new(),
                    alt: format!("Preview of {name}"),
                    caption: format!("Preview of image #{seq}, {}", describe(info)),
                    full,
                    drawn: None,
                    tiny: false,
                    image_id: image_id(incarnation, seq),
                },
                None => full_picture(info, incarnation, format!("{name}, image #{seq}")),
            },
        )
    } else {
        None
    };
    let status = Status { kind: "ok", text };
    (StatusCode::OK, status, picture)
}

/// After "Display image from shared memory": the segment's image, or why there is none.
fn display_view(snapshot: &SegmentState, incarnation: u64) -> View {
    match &snapshot.image {
        Some(info) => {
            let text = format!(
                "Displaying image #{} ({}) from shared memory segment \"{}\", written by {}",
                info.seq,
                describe(info),
                snapshot.name,
                writer(info)
            );
            let alt = format!("Image #{} from shared memory", info.seq);
            let picture = full_picture(info, incarnation, alt);
            (StatusCode::OK, Status { kind: "ok", text }, Some(picture))
        }
        None => {
            let text = AppError::NoImage {
                segment: snapshot.name.clone(),
            }
            .to_string();
            (
                StatusCode::NOT_FOUND,
                Status {
                    kind: "error",
                    text,
                },
                None,
            )
        }
    }
}

/// The page before any button was pressed.
fn idle_view(snapshot: &SegmentState) -> View {
    let text = match &snapshot.image {
        Some(info) => format!(
            "Shared memory segment \"{}\" holds image #{} ({}): press \"Display image from shared \
             memory\" to see it, or load another from a file",
            snapshot.name,
            info.seq,
            describe(info)
        ),
        None => format!(
            "Shared memory segment \"{}\" holds no image yet: choose a file and press \"Load \
             image from file\"",
            snapshot.name
        ),
    };
    (StatusCode::OK, Status { kind: "idle", text }, None)
}

/// The image behind `/image.png`, offered at the widths the page may draw it.
fn full_picture(info: &ImageInfo, incarnation: u64, alt: String) -> Picture {
    let factor = enlargement(info.width, info.height);
    let full = image_url(info.seq);
    let smaller: Vec<u32> = resized::WIDTHS
        .into_iter()
        .filter(|&width| width < info.width)
        .collect();
    let srcset = (!smaller.is_empty()).then(|| {
        smaller
            .iter()
            .map(|width| format!("{full}&width={width} {width}w"))
            .chain([format!("{full} {}w", info.width)])
            .collect::<Vec<_>>()
            .join(", ")
    });
    let caption = if factor > 1 {
        format!(
            "Image #{}, {}, drawn {factor} times its size",
            info.seq,
            describe(info)
        )
    } else {
        format!("Image #{}, {}", info.seq, describe(info))
    };
    Picture {
        image_id: image_id(incarnation, info.seq),
        src: full.clone(),
        srcset,
        // The column's width, or the width that the window's height leaves (less about 13rem
        // above the image), whichever is less: never less than the room, so the stylesheet's
        // fit decides, but rarely much more.
        sizes: format!(
            "min({}px, calc(100vw - 2rem), 62rem, calc((100vh - 13rem) * {:.4}))",
            info.width,
            f64::from(info.width) / f64::from(info.height.max(1))
        ),
        full,
        alt,
        caption,
        drawn: Some((info.width * factor, info.height * factor)),
        tiny: factor > 1,
    }
}

/// `/image.png?seq=N`: a distinct URL per image, so browsers never show a stale one.
fn image_url(seq: u64) -> String {
    format!("/image.png?seq={seq}")
}

/// `I-N`, the image's name in `/events` ids and ETags (without the quotes).
fn image_id(incarnation: u64, seq: u64) -> String {
    format!("{incarnation:x}-{seq}")
}

/// "1920x1080, RGB 8-bit".
fn describe(info: &ImageInfo) -> String {
    format!("{}x{}, {}", info.width, info.height, info.format)
}

/// "127.0.0.1:8080 (pid 4242)".
fn writer(info: &ImageInfo) -> String {
    format!("{} (pid {})", info.writer_label, info.writer_pid)
}

impl From<&SegmentState> for SegmentFacts {
    fn from(snapshot: &SegmentState) -> Self {
        SegmentFacts {
            os_name: snapshot.os_name.clone(),
            seq: snapshot.seq,
            slot_capacity: byte_count(snapshot.slot_capacity),
            image: snapshot.image.as_ref().map(|info| ImageFacts {
                size: format!("{}x{}", info.width, info.height),
                color: info.format.to_string(),
                bytes: byte_count(info.byte_len),
                written_at: rfc3339(info.written_at),
                written_at_readable: readable(info.written_at),
                writer: writer(info),
            }),
            attached: snapshot
                .attached
                .iter()
                .map(|attachment| AttachedServer {
                    label: attachment.label.clone(),
                    pid: attachment.pid,
                    is_self: attachment.is_self,
                })
                .collect(),
        }
    }
}

/// "6220800 bytes (5.9 MiB)".
fn byte_count(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({value:.1} {})", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_images_are_enlarged_by_a_whole_factor_to_at_least_64_pixels() {
        assert_eq!(enlargement(1, 1), 64);
        assert_eq!(enlargement(3, 2), 22);
        assert_eq!(enlargement(40, 30), 2);
        assert_eq!(enlargement(64, 1), 1);
        assert_eq!(enlargement(1920, 1080), 1);
        assert_eq!(enlargement(0, 0), 64);
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(byte_count(0), "0 bytes");
        assert_eq!(byte_count(1023), "1023 bytes");
        assert_eq!(byte_count(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(byte_count(6_220_800), "6220800 bytes (5.9 MiB)");
    }
}
