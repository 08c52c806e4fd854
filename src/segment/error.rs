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

    /// Another process held the gate that attaching and detaching go through for too long:
    /// a process stopped (SIGSTOP, a debugger) or stuck while attaching or detaching.
    #[error(
        "another process has been attaching to or detaching from the shared-memory segment \
         {name:?} for {waited:?} without finishing: it holds the segment's attach lock (byte 0 \
         of /dev/shm{os_name}); look for a stopped or stuck process (`fuser -v \
         /dev/shm{os_name}` lists those that have it open), end it, and try again"
    )]
    GateBusy {
        name: String,
        os_name: String,
        waited: Duration,
    },

    /// This process could not allocate the memory to copy the segment's image out.
    #[error(
        "this server cannot allocate {} to copy the image out of the shared-memory segment \
         {name:?}; free memory on this machine, or load a smaller image",
        human_bytes(*bytes)
    )]
    OutOfMemory { name: String, bytes: u64 },

    /// This process could not map an image's data object into its memory (its address space
    /// is limited, or the machine is out of memory); the previous image is untouched.
    #[error(
        "this server cannot map {} of the shared-memory segment {name:?} into its memory \
         ({source}): its address space is limited (ulimit -v) or the machine is out of memory; \
         raise the limit, free memory, or load a smaller image",
        human_bytes(*bytes)
    )]
    CannotMap {
        name: String,
        bytes: u64,
        #[source]
        source: io::Error,
    },

    /// The segment's bytes break the layout's rules: another program wrote them, or a
    /// different version of shmimage made the segment.
    #[error(
        "the shared-memory segment {name:?} holds data shmimage cannot use: {reason}; \
         upload an image to rewrite it, or stop every server and start again"
    )]
    Corrupt { name: String, reason: Corruption },

    /// The code that made an image's pixels gave fewer or more bytes than the image has:
    /// nothing was published. A bug in shmimage, not in the upload.
    #[error(
        "internal error: {written} bytes of pixels were made for an image of {expected} bytes, \
         so it was not stored; please report this with the file that caused it"
    )]
    IncompleteImage { expected: u64, written: u64 },

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
    #[error(
        "its image is {pixels} pixels, more than this server's limit of {max_pixels} pixels \
         (--max-pixels)"
    )]
    ExceedsPixelLimit { pixels: u64, max_pixels: u64 },
    #[error("its data generation {generation} is missing or does not match")]
    BadGeneration { generation: u32 },
    #[error("it publishes image {published} but the slot holds image {slot}")]
    SeqMismatch { published: u64, slot: u64 },
    #[error(
        "it changed from image {before} to image {after} while this server held its lock: \
         another program writes it without taking the lock"
    )]
    ChangedUnderLock { before: u64, after: u64 },
    #[error("another process truncated it under this server")]
    Truncated,
    #[error("its lock cannot be recovered")]
    LockUnrecoverable,
}

/// `bytes` for people: "512 bytes", "33.2 MB (31.6 MiB)", "1.1 TB (1.0 TiB)".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, &str); 4] = [("kB", "KiB"), ("MB", "MiB"), ("GB", "GiB"), ("TB", "TiB")];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let (mut decimal, mut binary) = (bytes as f64 / 1000.0, bytes as f64 / 1024.0);
    let mut unit = 0;
    while decimal >= 1000.0 && unit + 1 < UNITS.len() {
        decimal /= 1000.0;
        binary /= 1024.0;
        unit += 1;
    }
    format!(
        "{decimal:.1} {} ({binary:.1} {})",
        UNITS[unit].0, UNITS[unit].1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_both_units() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(33_177_600), "33.2 MB (31.6 MiB)");
        assert_eq!(human_bytes(1 << 40), "1.1 TB (1.0 TiB)");
        assert_eq!(human_bytes(u64::MAX), "18446744.1 TB (16777216.0 TiB)");
    }
}
