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

use super::timestamp::rfc3339;
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
    /// The sequence number of the image just loaded from a file.
    loaded: Option<String>,
    /// The file name of the image just loaded.
    name: Option<String>,
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
    /// The full-size image.
    full: String,
    alt: String,
    caption: String,
    /// Intrinsic size, when `src` is the full image, so the layout does not jump.
    size: Option<(u32, u32)>,
    /// `I-N`: which image this is, as `/events` names it.
    image_id: String,
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
    written_at: String,
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
        && let Err(error) = state.png.current(&state.segment, info.seq).await
    {
        return error.into_page(&segment_name);
    }
    let view = match loaded {
        Some(seq) => loaded_view(&state, &snapshot, seq, query.name.as_deref()),
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
fn loaded_view(state: &AppState, snapshot: &SegmentState, seq: u64, name: Option<&str>) -> View {
    let name = name.filter(|name| !name.is_empty()).unwrap_or("the image");
    let recent = state.recent_upload(seq);
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
                    alt: format!("Preview of {name}"),
                    caption: format!(
                        "Preview of image #{seq}: open the full {}x{} image",
                        info.width, info.height
                    ),
                    full,
                    size: None,
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

/// The full image behind `/image.png`.
fn full_picture(info: &ImageInfo, incarnation: u64, alt: String) -> Picture {
    Picture {
        image_id: image_id(incarnation, info.seq),
        src: image_url(info.seq),
        full: image_url(info.seq),
        alt,
        caption: format!("Image #{}, {}", info.seq, describe(info)),
        size: Some((info.width, info.height)),
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
    fn byte_counts_read_well() {
        assert_eq!(byte_count(0), "0 bytes");
        assert_eq!(byte_count(1023), "1023 bytes");
        assert_eq!(byte_count(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(byte_count(6_220_800), "6220800 bytes (5.9 MiB)");
    }
}
