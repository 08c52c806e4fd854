//! What can go wrong with a segment, in words a user can act on.

use super::name::NameError;
use std::io;
use std::time::Duration;

/// Why a segment operation failed. Each variant says what happened and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The segment name was refused.
    #[error(transparent)]
    Name(#[from] NameError),

    /// The image has more pixels than the segment accepts.
    #[error(
        "the image is {width}x{height} ({pixels} pixels), more than the limit of {max_pixels} \
         pixels: make it smaller, or start the servers with a larger --max-pixels"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },

    /// /dev/shm has no room for the image; the previous image is untouched.
    #[error(
        "not enough shared memory: {needed} bytes could not be reserved in /dev/shm for \
         {os_name} ({source}); free space in /dev/shm or make it larger (Docker: --shm-size), \
         then upload again"
    )]
    OutOfSharedMemory {
        os_name: String,
        needed: u64,
        #[source]
        source: io::Error,
    },

    /// Another process held the segment's lock for too long.
    #[error(
        "the segment {name:?} stayed locked by another process for {waited:?}; try again, \
         and if it persists look for a stuck shmimage process"
    )]
    Busy { name: String, waited: Duration },

    /// The segment's bytes break the layout's rules: another program wrote them, or a
    /// different version of shmimage made the segment.
    #[error(
        "the shared-memory segment {name:?} holds data shmimage cannot use: {reason}; \
         upload an image to rewrite it, or stop every server and start again"
    )]
    Corrupt { name: String, reason: Corruption },

    /// A system call failed.
    #[error("{op} failed for shared-memory object {os_name}: {source}")]
    Os {
        op: &'static str,
        os_name: String,
        #[source]
        source: io::Error,
    },
}

impl SegmentError {
    /// Turns an error of system call `op` on object `os_name` into [`SegmentError::Os`], for
    /// `map_err`.
    pub(super) fn os(op: &'static str, os_name: &str) -> impl FnOnce(io::Error) -> SegmentError {
        let os_name = os_name.to_owned();
        move |source| SegmentError::Os {
            op,
            os_name,
            source,
        }
    }
}

/// The rule that segment bytes broke; see [`SegmentError::Corrupt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("its magic number is {found:#018x}, not shmimage's")]
    BadMagic { found: u64 },
    #[error("its layout version is {found}, this shmimage reads version {expected}")]
    UnsupportedVersion { found: u32, expected: u32 },
    #[error("its header says {found} bytes, this shmimage's header is {expected}")]
    HeaderSizeMismatch { found: u32, expected: u32 },
    #[error("it is {actual} bytes long, too short for the {needed} bytes it must hold")]
    TooShort { actual: u64, needed: u64 },
    #[error("it never finished initializing")]
    NotReady,
    #[error("its image has pixel format code {code}, which does not exist")]
    UnknownPixelFormat { code: u32 },
    #[error("its image is {width}x{height}, an empty image")]
    EmptyImage { width: u32, height: u32 },
    #[error("its image dimensions {width}x{height} overflow")]
    DimensionsOverflow { width: u32, height: u32 },
    #[error("its image claims {claimed} bytes but {width}x{height} pixels need {expected}")]
    LengthMismatch {
        width: u32,
        height: u32,
        claimed: u64,
        expected: u64,
    },
    #[error("its image of {len} bytes does not fit a slot of {capacity} bytes")]
    ExceedsCapacity { len: u64, capacity: u64 },
    #[error("its image is {pixels} pixels, more than the limit of {max_pixels}")]
    ExceedsPixelLimit { pixels: u64, max_pixels: u64 },
    #[error("its data generation {generation} is missing or does not match")]
    BadGeneration { generation: u32 },
    #[error("it publishes image {published} but the slot holds image {slot}")]
    SeqMismatch { published: u64, slot: u64 },
    #[error("another process truncated it under this server")]
    Truncated,
    #[error("its lock cannot be recovered")]
    LockUnrecoverable,
}
