//! `GET /api/segment`, the segment's state as JSON, and `GET /healthz`.

use super::timestamp::{rfc3339, unix_millis};
use super::{AppError, AppState, blocking};
use crate::segment::{Attachment, ImageInfo, SegmentState};
use axum::Json;
use axum::extract::State;
use serde::Serialize;

/// The segment's state as `GET /api/segment` shows it.
#[derive(Debug, Serialize)]
pub struct SegmentJson {
    /// The user's name, e.g. `shmimage`.
    pub name: String,
    /// The OS name of the control object, e.g. `/shmimage.shmimage`.
    pub os_name: String,
    /// Bytes one image slot can hold now.
    pub slot_capacity: u64,
    /// Sequence number of the last completed write; 0 when none.
    pub seq: u64,
    /// The stored image, or `null`.
    pub image: Option<ImageJson>,
    /// The servers attached now.
    pub attached: Vec<AttachmentJson>,
    /// How many times a server found the segment's lock held by a process that had died, and
    /// recovered it (discarding that process's unfinished write).
    pub lock_recoveries: u32,
}

/// What the segment says about its image.
#[derive(Debug, Serialize)]
pub struct ImageJson {
    pub width: u32,
    pub height: u32,
    /// The pixel format, e.g. "RGB 8-bit".
    pub color: String,
    /// Bytes of pixels.
    pub bytes: u64,
    pub seq: u64,
    /// When the write completed, RFC 3339 in UTC.
    pub written_at: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub written_at_unix_ms: u64,
    pub writer_pid: u32,
    pub writer_label: String,
}

/// One process attached to the segment.
#[derive(Debug, Serialize)]
pub struct AttachmentJson {
    pub pid: u32,
    pub label: String,
    /// True for the server that answered.
    pub is_self: bool,
}

impl From<SegmentState> for SegmentJson {
    fn from(state: SegmentState) -> Self {
        SegmentJson {
            name: state.name,
            os_name: state.os_name,
            slot_capacity: state.slot_capacity,
            seq: state.seq,
            image: state.image.map(ImageJson::from),
            attached: state
                .attached
                .into_iter()
                .map(AttachmentJson::from)
                .collect(),
            lock_recoveries: state.lock_recoveries,
        }
    }
}

impl From<ImageInfo> for ImageJson {
    fn from(info: ImageInfo) -> Self {
        ImageJson {
            width: info.width,
            height: info.height,
            color: info.format.to_string(),
            bytes: info.byte_len,
            seq: info.seq,
            written_at: rfc3339(info.written_at),
            written_at_unix_ms: unix_millis(info.written_at),
            writer_pid: info.writer_pid,
            writer_label: info.writer_label,
        }
    }
}

impl From<Attachment> for AttachmentJson {
    fn from(attachment: Attachment) -> Self {
        AttachmentJson {
            pid: attachment.pid,
            label: attachment.label,
            is_self: attachment.is_self,
        }
    }
}

/// `GET /api/segment`.
pub(crate) async fn segment(State(state): State<AppState>) -> Result<Json<SegmentJson>, AppError> {
    let segment = state.segment.clone();
    let snapshot = blocking(move || Ok(segment.state()?)).await?;
    Ok(Json(SegmentJson::from(snapshot)))
}

/// `GET /healthz`: the server is up.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}
