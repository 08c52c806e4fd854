//! The image segment: a named shared-memory store for one image (API skeleton; the
//! implementation lands next).

mod error;
mod name;

pub use error::SegmentError;
pub use name::SegmentName;

use crate::raster::{PixelFormat, Raster};
use std::time::{Duration, SystemTime};

/// Settings for [`Segment::attach`].
#[derive(Debug, Clone)]
pub struct SegmentConfig {
    /// The user's name for the segment, e.g. `demo`.
    pub name: SegmentName,
    /// The largest image, in pixels, this process will write (default 100 M).
    pub max_pixels: u64,
    /// How this process introduces itself to the others, e.g. `127.0.0.1:8080`. At most
    /// [`Segment::MAX_LABEL_LEN`] bytes are kept.
    pub label: String,
}

/// What the segment says about the image it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Sequence number of the write that stored this image (1 for the first write).
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes of pixels: `width * height * format.bytes_per_pixel()`.
    pub byte_len: u64,
    /// When the write completed.
    pub written_at: SystemTime,
    /// Process id of the writer.
    pub writer_pid: u32,
    /// The writer's label (see [`SegmentConfig::label`]).
    pub writer_label: String,
}

/// An image read from the segment: its pixels and what the segment says about them.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub info: ImageInfo,
    pub raster: Raster,
}

/// One process attached to the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub pid: u32,
    pub label: String,
    /// True for the process that asked.
    pub is_self: bool,
}

/// A snapshot of the segment's state, for status pages and the JSON API.
#[derive(Debug, Clone)]
pub struct SegmentState {
    /// The user's name, e.g. `demo`.
    pub name: String,
    /// The OS name of the control object, e.g. `/shmimage.demo`.
    pub os_name: String,
    /// Bytes one image slot can hold now (grows on demand).
    pub slot_capacity: u64,
    /// Sequence number of the last completed write; 0 when none.
    pub seq: u64,
    /// The stored image, if any.
    pub image: Option<ImageInfo>,
    /// The processes attached now.
    pub attached: Vec<Attachment>,
}

/// A process's attachment to a named image segment. Dropping it detaches; the last process to
/// detach removes the segment.
pub struct Segment {
    _private: (),
}

impl Segment {
    /// The longest label kept.
    pub const MAX_LABEL_LEN: usize = 48;

    /// Creates the segment or attaches to the existing one.
    pub fn attach(_config: SegmentConfig) -> Result<Segment, SegmentError> {
        todo!()
    }

    /// The user's name of the segment.
    pub fn name(&self) -> &SegmentName {
        todo!()
    }

    /// Stores `raster` as the segment's image and returns what the segment now says about it.
    /// Blocks for the copy; call it off async threads.
    pub fn write(&self, _raster: &Raster) -> Result<ImageInfo, SegmentError> {
        todo!()
    }

    /// The last complete image, or `None` if nothing was written yet. Blocks for the copy.
    pub fn read(&self) -> Result<Option<StoredImage>, SegmentError> {
        todo!()
    }

    /// What the segment holds now, without copying pixels.
    pub fn state(&self) -> Result<SegmentState, SegmentError> {
        todo!()
    }

    /// The sequence number of the last completed write (0 before the first). Lock-free.
    pub fn seq(&self) -> u64 {
        todo!()
    }

    /// Blocks until the sequence number differs from `seen` or `timeout` passes; returns the
    /// sequence number then.
    pub fn wait_for_change(&self, _seen: u64, _timeout: Duration) -> u64 {
        todo!()
    }

    /// Detaches now, reporting whether this was the last process and removed the segment.
    pub fn detach(self) -> Result<bool, SegmentError> {
        todo!()
    }
}
