//! The segment's state as JSON: one shape for `GET /api/segment`, the data of every `/events`
//! event, and what `shmimage info` and `shmimage watch` print.
//!
//! Field names and order are part of the HTTP API; the tests below pin them.

use crate::segment::{Attachment, ImageInfo, SegmentState};
use crate::timestamp::{rfc3339, unix_millis};
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
    /// The processes attached now: servers, and commands such as `shmimage watch`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::PixelFormat;
    use std::time::{Duration, UNIX_EPOCH};

    fn line(state: SegmentState) -> String {
        serde_json::to_string(&SegmentJson::from(state)).unwrap()
    }

    #[test]
    fn the_json_keeps_its_fields_names_and_order() {
        let state = SegmentState {
            name: "demo".to_owned(),
            os_name: "/shmimage.demo".to_owned(),
            slot_capacity: 65536,
            seq: 3,
            image: Some(ImageInfo {
                seq: 3,
                width: 4,
                height: 2,
                format: PixelFormat::Rgb8,
                byte_len: 24,
                written_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
                writer_pid: 42,
                writer_label: "127.0.0.1:8080".to_owned(),
            }),
            attached: vec![Attachment {
                pid: 42,
                label: "127.0.0.1:8080".to_owned(),
                is_self: true,
            }],
            lock_recoveries: 1,
        };
        let expected = [
            r#"{"name":"demo","os_name":"/shmimage.demo","slot_capacity":65536,"seq":3,"#,
            r#""image":{"width":4,"height":2,"color":"RGB 8-bit","bytes":24,"seq":3,"#,
            r#""written_at":"2023-11-14T22:13:20.250Z","written_at_unix_ms":1700000000250,"#,
            r#""writer_pid":42,"writer_label":"127.0.0.1:8080"},"#,
            r#""attached":[{"pid":42,"label":"127.0.0.1:8080","is_self":true}],"#,
            r#""lock_recoveries":1}"#,
        ];
        assert_eq!(line(state), expected.concat());
    }

    #[test]
    fn no_image_is_null() {
        let state = SegmentState {
            name: "demo".to_owned(),
            os_name: "/shmimage.demo".to_owned(),
            slot_capacity: 0,
            seq: 0,
            image: None,
            attached: Vec::new(),
            lock_recoveries: 0,
        };
        let expected = [
            r#"{"name":"demo","os_name":"/shmimage.demo","slot_capacity":0,"seq":0,"#,
            r#""image":null,"attached":[],"lock_recoveries":0}"#,
        ];
        assert_eq!(line(state), expected.concat());
    }
}
