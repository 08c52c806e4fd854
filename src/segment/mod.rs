//! The image segment: a named shared-memory store for one image, shared by every process that
//! attaches to the same name.
//!
//! It does the job of the `QSharedMemory` segment in Qt's example, without that example's
//! failures: a larger image never gets truncated, a process that dies holding the lock does not
//! hang the others, a writer that dies mid-copy never destroys the last complete image, and
//! segments left behind by killed processes are reused or cleaned up at the next start.
//!
//! # Objects
//!
//! A segment named `demo` is a handful of POSIX shared-memory objects (Linux: files in
//! `/dev/shm`, mode 0600):
//!
//! ```text
//! /shmimage.demo            control object: header, slot records, registry, lock (8192 bytes)
//! /shmimage.demo.0000000N   data object of generation N (8 lowercase hex digits): header, pixels
//! ```
//!
//! # Layout, version 3
//!
//! All integers are in the native byte order of the machine (the segment never leaves it), and
//! every field is accessed atomically with its own size, except the pthread mutex, which only
//! pthreads touches. Offsets and sizes are in bytes; "reserved" fields are written as 0 and
//! ignored. The tables are checked against the code by a unit test in `layout`.
//!
//! ## Control object: `ControlHeader` (4472 bytes), in an object of 8192 bytes
//!
//! The bytes after the header, up to 8192, are zero and unused.
//!
//! ```text
//! offset  size  type               field            meaning
//!      0     8  u64                magic            0x4547414d494d4853: "SHMIMAGE" on little-endian machines
//!      8     4  u32                version          layout version: 3
//!     12     4  u32                header_size      4472, the size of this header
//!     16     4  u32                ready            0x52454459 once initialised; anything else: not ready
//!     20     4  u32                notify           futex word: incremented after every published write
//!     24     8  u64                state            seq << 1 | active slot; seq 0: no image yet
//!     32     4  u32                next_generation  the generation the next data object gets (never 0)
//!     36     4  u32                lock_recoveries  how often a locker found the lock's holder dead
//!     40     8  u64                created_at_ns    creation time, ns since the Unix epoch: the incarnation
//!     48   224  SlotRecord[2]      slots            the two image slots
//!    272  4096  AttachmentRecord[64] attachments    the registry of attached processes
//!   4368    64  PngRecord          png              the PNG area: a PNG of the published image
//!   4432    40  pthread_mutex_t    lock             robust, process-shared mutex (glibc x86-64 layout)
//! ```
//!
//! ## `SlotRecord` (112 bytes): one image slot
//!
//! ```text
//! offset  size  type       field          meaning
//!      0     4  u32        generation     the data object holding the pixels; 0: none
//!      4     4  u32        format         pixel format code: 1 L8, 2 LA8, 3 RGB8, 4 RGBA8, 5 L16, 6 LA16, 7 RGB16, 8 RGBA16
//!      8     4  u32        width          pixels; never 0 in a published slot
//!     12     4  u32        height         pixels; never 0 in a published slot
//!     16     8  u64        capacity       bytes of pixels the data object holds: a multiple of 8 (of 65536 as shmimage writes it)
//!     24     8  u64        byte_len       width * height * bytes per pixel
//!     32     8  u64        seq            the sequence number of the write that filled the slot
//!     40     8  u64        written_at_ns  when that write completed, ns since the Unix epoch
//!     48     4  u32        writer_pid     the writer's process id
//!     52     4  u32        reserved
//!     56    56  LabelCell  writer_label   the writer's label, e.g. "127.0.0.1:8080"
//! ```
//!
//! ## `LabelCell` (56 bytes): a label of at most 48 bytes of UTF-8
//!
//! ```text
//! offset  size  type     field     meaning
//!      0     4  u32      len       bytes used; readers clamp it to 48
//!      4     4  u32      reserved
//!      8    48  u64[6]   words     the label's bytes, in order, zero-padded; invalid UTF-8 is replaced when read
//! ```
//!
//! ## `AttachmentRecord` (64 bytes): one entry of the registry
//!
//! ```text
//! offset  size  type       field     meaning
//!      0     4  u32        pid       the attached process's id; 0 once it detached
//!      4     4  u32        reserved
//!      8    56  LabelCell  label     the process's label
//! ```
//!
//! ## `PngRecord` (64 bytes): the PNG area
//!
//! ```text
//! offset  size  type  field          meaning
//!      0     8  u64   version        seqlock counter: odd while a lock holder rewrites the area
//!      8     8  u64   seq            the image the PNG is of (its slot's seq); 0: no PNG
//!     16     8  u64   written_at_ns  that image's written_at_ns, from its slot record
//!     24     8  u64   incarnation    the segment's created_at_ns when the PNG was published
//!     32     4  u32   generation     the data object holding the PNG bytes; 0: none
//!     36     4  u32   notify         futex word: incremented when a PNG is published or a claim given up
//!     40     8  u64   capacity       bytes the data object holds after its header: a multiple of 8
//!     48     8  u64   byte_len       bytes of PNG
//!     56     8  u64   claim          (seq mod 2^32) << 32 | pid of the process encoding that image; 0: nobody
//! ```
//!
//! ## Data object of generation N: `DataHeader` (24 bytes), then pixels from byte 4096
//!
//! ```text
//! offset  size  type  field       meaning
//!      0     8  u64   magic       0x41544144494d4853: "SHMIDATA" on little-endian machines
//!      8     4  u32   generation  N, as in the object's name
//!     12     4  u32   reserved
//!     16     8  u64   capacity    bytes of pixels after the header; the object is 4096 + capacity bytes
//! ```
//!
//! Pixels start at byte 4096 (page-aligned): rows top to bottom, tightly packed, samples in
//! the order of the format's name, 16-bit samples in native byte order. They are read and
//! written only as aligned 8-byte words (so a copy touches `byte_len` rounded up to a multiple
//! of 8 bytes; the padding after the image is written as zeros).
//!
//! ## Byte locks on the control object
//!
//! Open-file-description record locks (`F_OFD_SETLK`) of one byte each, released by the kernel
//! when their holder closes the object or dies:
//!
//! ```text
//! byte     lock       held by
//!    0     exclusive  the process attaching or detaching (the gate), for milliseconds
//!    1     shared     every attached process; exclusive only when it is alone
//!   64+i   exclusive  the process filling in attachments[i]
//!   64+i   shared     the process registered in attachments[i], once its pid and label are in
//! ```
//!
//! # Writing: two slots and a state word
//!
//! Each slot record names the data object that holds its pixels. The state word says which slot
//! is published. A writer takes the lock, fills the *inactive* slot (growing its data object if
//! needed: a new generation is created, reserved with `posix_fallocate`, recorded, and the old
//! one unlinked; a data object found shorter than its record says, truncated by another
//! process, is replaced the same way), writes the slot's metadata, and only then publishes with
//! one release store of `state = (seq + 1) << 1 | slot`. It then bumps `notify` and wakes futex
//! waiters. A writer that fails or dies before that store leaves the published image untouched;
//! one that dies after it has finished. Mappings never grow in place: other processes follow a
//! slot to its new generation by name, and each process keeps mapped only the generations the
//! two slots and the PNG area name (plus, for a moment, one being created).
//!
//! # Reading: optimistic copies, checked
//!
//! Readers do not lock. A reader loads `state` (acquire), validates the published slot's record
//! and data object, copies the pixels out in relaxed atomic words, then issues an acquire fence
//! and loads `state` again. Writers only ever write the inactive slot, so if `state` is
//! unchanged the copy is exactly the published image; otherwise the reader retries, and after a
//! few lost races takes the lock, which keeps writers out while it copies. Because both sides
//! copy with atomic words (see `copy`), a copy that races a writer is a discarded copy, not a
//! data race.
//!
//! Every value read from shared memory is untrusted: magic, version, sizes, pixel format,
//! dimensions (checked multiplication, and no more pixels than this process's own limit) and
//! lengths are validated against the real size of the mapped objects before any copy, and the
//! reader's buffer is allocated fallibly. A violation is a [`SegmentError`], never a panic, an
//! abort or an out-of-bounds access.
//!
//! # The PNG area: encoded once for every process
//!
//! Every server serves the image as PNG. The first process that encodes image N publishes the
//! PNG in a data object of its own (same header and naming as the pixels', generations from the
//! same counter), named by [`PngRecord`](layout::PngRecord) and tagged with the image's `seq`,
//! `written_at_ns` and the segment's incarnation; every other process copies those bytes
//! instead of encoding again (see `png_area`).
//!
//! - *Publishing* takes the lock, checks that N is still the published image, makes `version`
//!   odd, writes the bytes (growing into a new generation when they do not fit, unlinking the
//!   old one), the record, then makes `version` even again with a release store and wakes
//!   `notify` waiters.
//! - *Reading* takes no lock: load `version` (acquire; odd means a write is under way), check
//!   the record against the published slot and the sizes against the data object's real length,
//!   copy the bytes in atomic words, fence, and load `version` again; any change discards the
//!   copy. The bytes must also look like a PNG of that image (signature, `IHDR` with its width,
//!   height, bit depth and color type, `IEND` last). A record that fails a check is ignored: the
//!   reader encodes the pixels itself. It is never an error and never served.
//! - *Claiming*: a process about to encode N stores `(N mod 2^32) << 32 | pid` in `claim` with
//!   a compare-and-swap. Others that find a claim for N by a living process wait on `notify`
//!   for a bounded time, then encode themselves; a claim by a dead process is taken over.
//!
//! # The lock
//!
//! A robust, process-shared pthread mutex (see `lock`). When its holder dies, the next locker
//! gets it back at once (`EOWNERDEAD`), wakes waiters in case the dead writer had published
//! without notifying, and unlinks data objects that no slot names (a dead writer's half-made
//! generation). The lock is held only for copies (and while a plain PNG upload of at most
//! [`STREAMED_DECODE_MAX_BYTES`] of pixels is decoded straight into a slot, a second or so) and
//! never across an `.await`; waits for it are timed on the monotonic clock.
//!
//! # Lifetime
//!
//! Like `QSharedMemory`, a segment lives while any process is attached to it and is removed by
//! the last one to detach. The kernel keeps the count honest even through `kill -9`, with the
//! byte locks above. Attaching and detaching happen under the gate, which a process waits for
//! at most 10 s (polling: a process stopped while holding it must not block the others for
//! good); a start that cannot get it fails with [`SegmentError::GateBusy`], a detach leaves the
//! clean-up to the next process. At detach, a process that can upgrade its byte-1 lock to
//! exclusive is the last one: it clears `ready`, then unlinks every data object, then the
//! control object. At attach, a process that can take byte 1 exclusively is the only one: it
//! reuses a control object left by processes that were all killed, with its last image, if the
//! header is valid and ready and the published image's data object is there and matches;
//! otherwise it initialises the control object afresh (the segment holds no image). Either way
//! it unlinks the data objects no slot names.
//!
//! # Notification
//!
//! [`Segment::seq`] is one atomic load. [`Segment::wait_for_change`] sleeps on the `notify` futex
//! word until a writer in any process publishes, or a timeout passes.

mod copy;
mod error;
mod layout;
mod lock;
mod name;
mod os;
mod pinned;
mod png_area;
#[cfg(test)]
mod protocol_doc;
mod sigbus;

pub use error::{Corruption, SegmentError};
pub use layout::{CONTROL_LEN, DATA_OFFSET};
pub use name::{NameError, SegmentName};
pub use pinned::PinnedImage;
pub use png_area::{ClaimedPng, PngClaim, PngLookup, SharedPng};

/// Fuzzing entry points: the checks applied to segment bytes, exposed for the fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::layout::{HeaderFields, SlotFields};
    pub use super::png_area::{PngFields, PngTag, is_png_of, max_png_len};
}

use crate::raster::{PixelFormat, Raster};
use layout::{
    ATTACHMENT_ENTRIES, ControlHeader, DATA_MAGIC, DataFields, DataHeader, HeaderFields, READY,
    SlotFields, SlotImage, pack_state, unpack_state,
};
use lock::{LockError, LockGuard, RobustMutex};
use os::{LockKind, Mapping, OpenMode};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Byte of the control object locked exclusively while a process attaches or detaches.
const GATE_BYTE: u64 = 0;
/// Byte of the control object every attached process holds a shared lock on.
const ATTACHED_BYTE: u64 = 1;
/// Byte `REGISTRY_BYTE + i` is held by the process registered in `attachments[i]`.
const REGISTRY_BYTE: u64 = 64;
/// How long a writer waits for the lock before giving up with [`SegmentError::Busy`].
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest plain PNG upload, in bytes of pixels, that is decoded straight into a slot with
/// the lock held (see [`Segment::write_with`]): 128 MiB inflate in about a second on one core
/// here, well inside [`LOCK_TIMEOUT`] for the writers that wait. Larger ones are decoded first.
pub const STREAMED_DECODE_MAX_BYTES: u64 = 128 * 1024 * 1024;
/// How long attaching or detaching waits for the gate before giving up with
/// [`SegmentError::GateBusy`]. Holders keep it for milliseconds.
const GATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lock-free read attempts before a reader takes the lock.
const OPTIMISTIC_READS: usize = 4;
/// Data objects are sized in multiples of this.
const CAPACITY_GRANULE: u64 = 64 * 1024;
/// Sequence numbers stay below this, so that `seq << 1 | slot` cannot overflow.
const MAX_SEQ: u64 = 1 << 62;
/// No slot is trusted to be larger than this (1 TiB), whatever its record claims.
const MAX_SLOT_CAPACITY: u64 = 1 << 40;

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

/// Names one image written to the segment, for as long as this process is attached: its
/// sequence number and when it was written. The number alone does not, since a writer starts
/// counting again at 1 when it finds the state word overwritten with a huge number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageId {
    pub seq: u64,
    /// The slot record's `written_at_ns`.
    pub written_at_ns: u64,
}

impl ImageInfo {
    /// The image this describes.
    pub fn id(&self) -> ImageId {
        ImageId {
            seq: self.seq,
            written_at_ns: self
                .written_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64),
        }
    }

    fn from_slot(slot: &SlotImage) -> ImageInfo {
        ImageInfo {
            seq: slot.seq,
            width: slot.width,
            height: slot.height,
            format: slot.format,
            byte_len: slot.byte_len,
            written_at: UNIX_EPOCH + Duration::from_nanos(slot.written_at_ns),
            writer_pid: slot.writer_pid,
            writer_label: slot.writer_label.clone(),
        }
    }
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
    /// Bytes the slot of the published image can hold (0 before the first image).
    pub slot_capacity: u64,
    /// Sequence number of the last completed write; 0 when none.
    pub seq: u64,
    /// The stored image, if any.
    pub image: Option<ImageInfo>,
    /// The processes attached now.
    pub attached: Vec<Attachment>,
    /// How many times a process found the lock's holder dead and recovered the lock.
    pub lock_recoveries: u32,
}

/// A process's attachment to a named image segment. Dropping it detaches; the last process to
/// detach removes the segment.
///
/// All methods take `&self` and may be called from several threads at once; those that copy
/// pixels or take the lock block, so async code calls them through `spawn_blocking`.
pub struct Segment {
    name: SegmentName,
    control_os_name: String,
    /// Our own descriptor of the control object: it carries our record locks.
    control_file: File,
    control: Mapping,
    lock: RobustMutex,
    registry_entry: Option<usize>,
    /// When the segment was created, read once at attach: tells incarnations apart.
    created_at_ns: u64,
    max_pixels: u64,
    label: String,
    /// Mappings of data objects, by generation.
    data: Mutex<HashMap<u32, Arc<DataObject>>>,
    detached: bool,
    /// Whether this process wrote an image since it last dropped the segment's pages.
    wrote: AtomicBool,
}

// SAFETY: the raw pointers inside (`control`'s mapping and the mutex pointer into it) point into
// a MAP_SHARED mapping owned by this value, usable from any thread. Shared memory is only
// touched through atomics (header fields, and pixels in whole atomic words: see `copy`) and the
// process-shared mutex, exactly as between processes.
unsafe impl Send for Segment {}
// SAFETY: see `Send`; every `&self` method is safe to call concurrently (the data-object cache
// is behind a `Mutex`, and the robust mutex serialises writers across threads and processes).
unsafe impl Sync for Segment {}

/// A mapped data object: the pixels of one slot.
struct DataObject {
    generation: u32,
    capacity: u64,
    /// Our own descriptor, to check the object's real size before copying.
    file: File,
    mapping: Mapping,
}

impl DataObject {
    fn pixels_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least DATA_OFFSET + capacity bytes long (checked when it
        // was created or opened), so the offset stays inside it.
        unsafe { self.mapping.as_ptr().add(DATA_OFFSET as usize) }
    }

    /// Checks that the object has not been truncated under us, so that touching its first
    /// `len` pixel bytes cannot raise SIGBUS (another process could still truncate it during
    /// the copy; only a hostile process of the same user would).
    fn check_len(&self, len: u64, segment: &str) -> Result<(), SegmentError> {
        let actual = self
            .file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| SegmentError::Os {
                op: "fstat",
                os_name: format!("generation {}", self.generation),
                source,
            })?;
        let needed = DATA_OFFSET + len;
        if actual < needed || (self.mapping.len() as u64) < needed {
            return Err(SegmentError::Corrupt {
                name: segment.to_owned(),
                reason: Corruption::TooShort { actual, needed },
            });
        }
        Ok(())
    }
}

/// The outcome of one optimistic read.
enum ReadAttempt<T> {
    Done(T),
    /// A writer published while we read: try again.
    Raced,
}

/// The pixels of an image being written, given to [`Segment::write_with`]'s `fill`: bytes
/// pushed in order (rows, or the whole image at once) go straight into the slot.
#[derive(Debug)]
pub struct SlotPixels<'a> {
    sink: copy::WordSink,
    len: u64,
    /// Bytes were pushed past the image's end.
    refused: bool,
    /// Ties the value to the one call of [`Segment::write_with`] that made it (an invariant
    /// lifetime no two calls share), so that no code can swap it with another write's and
    /// store through a sink whose mapping is gone.
    _write: std::marker::PhantomData<fn(&'a ()) -> &'a ()>,
}

impl SlotPixels<'_> {
    /// Stores `bytes` after those pushed before. Bytes past the image's length are refused,
    /// and the write then fails.
    pub fn push(&mut self, bytes: &[u8]) {
        if (self.sink.pushed() + bytes.len()) as u64 > self.len || !self.sink.push(bytes) {
            self.refused = true;
        }
    }

    /// The bytes the image has.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image has no bytes (never: images have at least one pixel).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Segment {
    /// The longest label kept.
    pub const MAX_LABEL_LEN: usize = layout::LABEL_MAX;

    /// Creates the segment or attaches to the existing one.
    ///
    /// Segments left by processes that all died are reused with their last image if their
    /// header is valid, and re-initialised otherwise; their stale data objects are removed.
    pub fn attach(config: SegmentConfig) -> Result<Segment, SegmentError> {
        let os_name = config.name.control_os_name();
        let os_err = |op| SegmentError::os(op, &os_name);
        loop {
            let file =
                os::shm_open(&os_name, OpenMode::OpenOrCreate).map_err(os_err("shm_open"))?;
            lock_gate(&file, &config.name)?;
            // The last process to detach may have unlinked the name between our open and our
            // gate lock; then we hold a dead object and must start over.
            match os::shm_open(&os_name, OpenMode::OpenExisting) {
                Ok(current) if os::same_object(&file, &current).map_err(os_err("fstat"))? => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(os_err("shm_open")(e)),
            }
            let alone = os::try_lock_byte(&file, ATTACHED_BYTE, LockKind::Exclusive)
                .map_err(os_err("locking"))?;
            if alone {
                prepare_unshared(&config.name, &file)?;
            }
            let control =
                Mapping::open(&os_name).map_err(|e| os_err("mmap")(os::shmem_error(e)))?;
            if control.len() < CONTROL_LEN {
                return Err(SegmentError::Corrupt {
                    name: config.name.to_string(),
                    reason: Corruption::TooShort {
                        actual: control.len() as u64,
                        needed: CONTROL_LEN as u64,
                    },
                });
            }
            // SAFETY: the mapping is at least CONTROL_LEN >= size_of::<ControlHeader>() bytes,
            // page-aligned, and lives as long as the Segment that owns it.
            let lock = unsafe { RobustMutex::from_ptr(header_at(&control).lock.get()) };
            let created_at_ns = header_at(&control).created_at_ns.load(Ordering::Relaxed);
            let mut segment = Segment {
                name: config.name.clone(),
                control_os_name: os_name.clone(),
                control_file: file,
                control,
                lock,
                registry_entry: None,
                created_at_ns,
                max_pixels: config.max_pixels,
                label: config.label.clone(),
                data: Mutex::new(HashMap::new()),
                detached: false,
                wrote: AtomicBool::new(false),
            };
            // From here on, dropping `segment` on an error detaches it properly.
            segment.check_header()?;
            if alone {
                segment.remove_unreferenced_data_objects();
            }
            os::try_lock_byte(&segment.control_file, ATTACHED_BYTE, LockKind::Shared)
                .map_err(os_err("locking"))?;
            segment.register();
            os::try_lock_byte(&segment.control_file, GATE_BYTE, LockKind::Unlock)
                .map_err(os_err("unlocking the gate of"))?;
            return Ok(segment);
        }
    }

    /// The user's name of the segment.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// Stores `raster` as the segment's image and returns what the segment now says about it.
    /// Blocks for the copy; call it off async threads. On any error the previous image stays.
    pub fn write(&self, raster: &Raster) -> Result<ImageInfo, SegmentError> {
        self.write_with(
            raster.width(),
            raster.height(),
            raster.format(),
            |pixels: &mut SlotPixels<'_>| {
                pixels.push(raster.pixels());
                Ok(())
            },
        )
    }

    /// Stores an image of `width` x `height` pixels of `format` as the segment's image, its
    /// bytes given by `fill` (row by row, as a decoder makes them: see [`SlotPixels`]), and
    /// returns what the segment now says about it. The pixels go straight into the slot, with
    /// no copy of the whole image in this process.
    ///
    /// The lock is held while `fill` runs (other writers wait for it, at most the lock's 10 s;
    /// readers do not): `fill` must not take long, and must not write to this segment itself
    /// (it would wait for its own lock). On any
    /// error, `fill`'s own or one of the segment's, and when `fill` gives fewer or more bytes
    /// than the image has, nothing is published and the previous image stays. Blocks; call it
    /// off async threads.
    pub fn write_with<E: From<SegmentError>>(
        &self,
        width: u32,
        height: u32,
        format: PixelFormat,
        fill: impl for<'write> FnOnce(&mut SlotPixels<'write>) -> Result<(), E>,
    ) -> Result<ImageInfo, E> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(SegmentError::TooManyPixels {
                width,
                height,
                pixels,
                max_pixels: self.max_pixels,
            }
            .into());
        }
        let len = format
            .byte_len(width, height)
            .ok_or(SegmentError::TooManyPixels {
                width,
                height,
                pixels,
                max_pixels: self.max_pixels,
            })?;
        if let Err(error) = self.check_header() {
            // Another process overwrote the header: a write is how a user recovers.
            self.repair_header(error)?;
        }
        let guard = self.lock()?;
        let header = self.header();
        let (seq, active) = unpack_state(header.state.load(Ordering::Acquire));
        let target = if seq == 0 { 0 } else { 1 - active };
        // A state word overwritten with a huge number starts the count again.
        let new_seq = if seq >= MAX_SEQ { 1 } else { seq + 1 };
        let data = self.slot_storage(&guard, target, len)?;
        let covered = copy::covered_len(usize::try_from(len).unwrap_or(usize::MAX));
        // SAFETY: `slot_storage` returned an object whose file and our mapping of it hold at
        // least DATA_OFFSET + capacity bytes, with capacity >= covered_len(len), and the pixels
        // start page-aligned. Every access to a slot's pixels, in any process, is
        // an aligned atomic word (see `copy`). Only lock holders write a slot, and `target` is
        // not the published one, so no reader uses these bytes before the state word below
        // publishes them; a reader still copying from it sees `state` change and retries.
        let sink = unsafe { copy::WordSink::new(data.pixels_ptr(), covered) };
        let mut slot_pixels = SlotPixels {
            sink,
            len,
            refused: false,
            _write: std::marker::PhantomData,
        };
        let filled = fill(&mut slot_pixels);
        let written = slot_pixels.sink.finish() as u64;
        if data.mapping.poisoned() {
            // Truncated by another process while we copied: nothing was published.
            self.forget_data_object(data.generation);
            return Err(self.corrupt(Corruption::Truncated).into());
        }
        filled?;
        if slot_pixels.refused || written != len {
            return Err(SegmentError::IncompleteImage {
                expected: len,
                written,
            }
            .into());
        }
        let record = &header.slots[target];
        let written_at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        record.format.store(format.code(), Ordering::Relaxed);
        record.width.store(width, Ordering::Relaxed);
        record.height.store(height, Ordering::Relaxed);
        record.byte_len.store(len, Ordering::Relaxed);
        record.seq.store(new_seq, Ordering::Relaxed);
        record.written_at_ns.store(written_at_ns, Ordering::Relaxed);
        record
            .writer_pid
            .store(std::process::id(), Ordering::Relaxed);
        record.writer_label.store(&self.label);
        // Publish: everything above happens-before any reader's acquire load that sees this.
        header
            .state
            .store(pack_state(new_seq, target), Ordering::Release);
        self.notify_waiters();
        drop(guard);
        self.wrote.store(true, Ordering::Relaxed);
        self.prune_mappings();
        Ok(ImageInfo {
            seq: new_seq,
            width,
            height,
            format,
            byte_len: len,
            written_at: UNIX_EPOCH + Duration::from_nanos(written_at_ns),
            writer_pid: std::process::id(),
            writer_label: layout::LabelCell::truncated(&self.label).to_owned(),
        })
    }

    /// The last complete image, or `None` if nothing was written yet. Blocks for the copy.
    pub fn read(&self) -> Result<Option<StoredImage>, SegmentError> {
        self.read_into(Vec::new())
    }

    /// [`Segment::read`] into `buffer`'s memory: the returned raster owns `buffer` (get it back
    /// with [`Raster::into_pixels`] to read into it again). A caller that reads large images
    /// repeatedly saves the allocation and the page faults of fresh memory on every read.
    pub fn read_into(&self, mut buffer: Vec<u8>) -> Result<Option<StoredImage>, SegmentError> {
        self.check_header()?;
        for _ in 0..OPTIMISTIC_READS {
            if let ReadAttempt::Done(image) = self.try_read(&mut buffer)? {
                self.prune_mappings();
                return Ok(image);
            }
        }
        // Writers keep publishing faster than we can copy: keep them out while we do.
        let _guard = self.lock()?;
        let before = self.seq();
        let image = match self.try_read(&mut buffer)? {
            ReadAttempt::Done(image) => Ok(image),
            // Only a process that ignores the lock can publish now.
            ReadAttempt::Raced => Err(self.corrupt(Corruption::ChangedUnderLock {
                before,
                after: self.seq(),
            })),
        };
        self.prune_mappings();
        image
    }

    /// What the segment holds now, without copying pixels.
    pub fn state(&self) -> Result<SegmentState, SegmentError> {
        self.check_header()?;
        let mut published = None;
        for _ in 0..OPTIMISTIC_READS {
            if let ReadAttempt::Done(p) = self.try_published()? {
                published = Some(p);
                break;
            }
        }
        let published = match published {
            Some(p) => p,
            None => {
                let _guard = self.lock()?;
                let before = self.seq();
                match self.try_published()? {
                    ReadAttempt::Done(p) => p,
                    ReadAttempt::Raced => {
                        return Err(self.corrupt(Corruption::ChangedUnderLock {
                            before,
                            after: self.seq(),
                        }));
                    }
                }
            }
        };
        Ok(SegmentState {
            name: self.name.to_string(),
            os_name: self.control_os_name.clone(),
            slot_capacity: published.as_ref().map_or(0, |(slot, _)| slot.capacity),
            seq: published.as_ref().map_or(0, |(slot, _)| slot.seq),
            image: published
                .as_ref()
                .map(|(slot, _)| ImageInfo::from_slot(slot)),
            attached: self.attachments(),
            lock_recoveries: self.header().lock_recoveries.load(Ordering::Relaxed),
        })
    }

    /// Tells this incarnation of the segment from earlier ones of the same name: sequence
    /// numbers start again at 1 when a segment is created anew, so `(incarnation, seq)` names an
    /// image for good (e.g. in an HTTP ETag).
    pub fn incarnation(&self) -> u64 {
        self.created_at_ns
    }

    /// Which image the segment publishes (`None` before the first write), without copying
    /// anything: the state word and two fields of the published slot's record, read as a
    /// seqlock. Blocks (for the lock, see [`Segment::state`]) only if writers publish between
    /// every two loads.
    pub fn published_image(&self) -> Result<Option<ImageId>, SegmentError> {
        let header = self.header();
        for _ in 0..OPTIMISTIC_READS {
            let state = header.state.load(Ordering::Acquire);
            let (seq, active) = unpack_state(state);
            if seq == 0 {
                return Ok(None);
            }
            let record = &header.slots[active];
            let (slot_seq, written_at_ns) = (
                record.seq.load(Ordering::Relaxed),
                record.written_at_ns.load(Ordering::Relaxed),
            );
            // Orders the record's loads before the re-check, as in `try_published`.
            fence(Ordering::Acquire);
            if header.state.load(Ordering::Relaxed) != state {
                continue;
            }
            if slot_seq != seq {
                return Err(self.corrupt(Corruption::SeqMismatch {
                    published: seq,
                    slot: slot_seq,
                }));
            }
            return Ok(Some(ImageId { seq, written_at_ns }));
        }
        Ok(self.state()?.image.map(|image| image.id()))
    }

    /// The sequence number of the last completed write (0 before the first). One atomic load.
    pub fn seq(&self) -> u64 {
        unpack_state(self.header().state.load(Ordering::Acquire)).0
    }

    /// Blocks until the sequence number differs from `seen` or `timeout` passes; returns the
    /// sequence number then. Takes no lock: it sleeps on a futex that writers wake.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        // A timeout too long to add to the clock (Duration::MAX, say) is no deadline at all.
        let deadline = Instant::now().checked_add(timeout);
        let notify = &self.header().notify;
        loop {
            let ticket = notify.load(Ordering::Acquire);
            let seq = self.seq();
            if seq != seen {
                return seq;
            }
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return seq,
                },
                None => Duration::MAX,
            };
            os::futex_wait(notify, ticket, left);
        }
    }

    /// Detaches now, reporting whether this was the last process and removed the segment.
    pub fn detach(mut self) -> Result<bool, SegmentError> {
        self.detached = true;
        self.detach_inner()
    }

    /// Takes the segment lock and holds it until the returned guard is dropped. For tests that
    /// kill a process while it holds the lock; the product never needs it.
    #[doc(hidden)]
    pub fn lock_for_test(&self) -> Result<impl Drop + '_, SegmentError> {
        self.lock()
    }

    // ----- internals -----

    fn header(&self) -> &ControlHeader {
        header_at(&self.control)
    }

    fn corrupt(&self, reason: Corruption) -> SegmentError {
        SegmentError::Corrupt {
            name: self.name.to_string(),
            reason,
        }
    }

    /// Checks the header's identity fields, which another process could have overwritten.
    fn check_header(&self) -> Result<(), SegmentError> {
        if self.control.poisoned() {
            return Err(self.corrupt(Corruption::Truncated));
        }
        HeaderFields::load(self.header())
            .validate(self.control.len() as u64)
            .map_err(|reason| self.corrupt(reason))
    }

    /// Rewrites a header whose identity fields another process overwrote, so that the write
    /// under way can recover the segment. Gives `error` back when the header cannot be repaired
    /// (the control object was truncated under us: only new servers can use the name again).
    ///
    /// The lock is re-initialised too, since the same garbage may have hit it. A process that
    /// was inside the lock at that moment may then race one writer; that is the price of
    /// recovering from a hostile overwrite without stopping every server.
    fn repair_header(&self, error: SegmentError) -> Result<(), SegmentError> {
        if self.control.poisoned() {
            return Err(error);
        }
        let os_err = |op| SegmentError::os(op, &self.control_os_name);
        // Under the gate, so that no process attaches or detaches while the header is rebuilt.
        lock_gate(&self.control_file, &self.name)?;
        let repaired = (|| {
            if self.check_header().is_ok() {
                return Ok(()); // another process repaired it first
            }
            tracing::warn!(segment = %self.name, %error, "repairing the segment's header");
            let header = self.header();
            header.ready.store(0, Ordering::Release);
            // SAFETY: the lock lies inside our mapping of the control object; its contents are
            // garbage anyway (see above), and the gate keeps attaching processes out.
            unsafe { RobustMutex::init(header.lock.get()) }
                .map_err(os_err("initialising the lock of"))?;
            header.stamp_identity();
            header.ready.store(READY, Ordering::Release);
            self.check_header()
        })();
        let _ = os::try_lock_byte(&self.control_file, GATE_BYTE, LockKind::Unlock);
        repaired
    }

    /// Takes the segment lock; if its previous holder died, cleans up after it first.
    fn lock(&self) -> Result<LockGuard<'_>, SegmentError> {
        let guard = self.lock.lock(LOCK_TIMEOUT).map_err(|e| match e {
            LockError::TimedOut => SegmentError::Busy {
                name: self.name.to_string(),
                waited: LOCK_TIMEOUT,
            },
            LockError::Unrecoverable => self.corrupt(Corruption::LockUnrecoverable),
            LockError::Os(source) => SegmentError::os("locking", &self.control_os_name)(source),
        })?;
        if guard.previous_owner_died() {
            tracing::warn!(
                segment = %self.name,
                "a process died holding the segment lock; discarding its unfinished write"
            );
            self.header()
                .lock_recoveries
                .fetch_add(1, Ordering::Relaxed);
            // It may have published without waking anyone, and left a half-made generation.
            self.notify_waiters();
            self.remove_unreferenced_data_objects();
        }
        Ok(guard)
    }

    fn notify_waiters(&self) {
        let notify = &self.header().notify;
        notify.fetch_add(1, Ordering::Release);
        os::futex_wake_all(notify);
    }

    /// One lock-free attempt to copy the published image into `buffer`'s memory (taken on
    /// success, kept for the next attempt otherwise).
    fn try_read(
        &self,
        buffer: &mut Vec<u8>,
    ) -> Result<ReadAttempt<Option<StoredImage>>, SegmentError> {
        let header = self.header();
        let state = header.state.load(Ordering::Acquire);
        let (slot, data) = match self.try_readable_at(state)? {
            ReadAttempt::Done(Some(found)) => found,
            ReadAttempt::Done(None) => return Ok(ReadAttempt::Done(None)),
            ReadAttempt::Raced => return Ok(ReadAttempt::Raced),
        };
        // `validate` checked that byte_len fits in usize.
        let len = slot.byte_len as usize;
        buffer.clear();
        if buffer.try_reserve_exact(len).is_err() {
            return Err(SegmentError::OutOfMemory {
                name: self.name.to_string(),
                bytes: slot.byte_len,
            });
        }
        // SAFETY: the source lies inside the data object's mapping (its file and our mapping
        // hold DATA_OFFSET + covered_len(len) bytes, just checked) and is page-aligned, and
        // every access to a slot's pixels, in any process, is an aligned atomic word (see
        // `copy`); `buffer` has room for `len` bytes (reserved above). A writer may be storing
        // into these words meanwhile; that is detected below by re-checking the state word,
        // and the copy is then discarded.
        unsafe { copy::load_into(data.pixels_ptr(), len, buffer) };
        // Orders the relaxed loads of the copy before the re-check of the state word: if the
        // re-check sees no new write, no word copied came from one.
        fence(Ordering::Acquire);
        if header.state.load(Ordering::Relaxed) != state {
            return Ok(ReadAttempt::Raced);
        }
        if data.mapping.poisoned() || self.control.poisoned() {
            self.forget_data_object(data.generation);
            return Err(self.corrupt(Corruption::Truncated));
        }
        let pixels = std::mem::take(buffer);
        let raster = Raster::new(slot.width, slot.height, slot.format, pixels).map_err(|_| {
            self.corrupt(Corruption::EmptyImage {
                width: slot.width,
                height: slot.height,
            })
        })?;
        Ok(ReadAttempt::Done(Some(StoredImage {
            info: ImageInfo::from_slot(&slot),
            raster,
        })))
    }

    /// The published slot for `state` and its data object, checked as a copy of its pixels
    /// needs: besides [`Segment::try_published_at`]'s checks, no more pixels than this process
    /// accepts from an upload (refused before anything is allocated for them), and a data
    /// object long enough for every word of them.
    #[allow(clippy::type_complexity)]
    fn try_readable_at(
        &self,
        state: u64,
    ) -> Result<ReadAttempt<Option<(SlotImage, Arc<DataObject>)>>, SegmentError> {
        let (slot, data) = match self.try_published_at(state)? {
            ReadAttempt::Done(Some(found)) => found,
            other => return Ok(other),
        };
        let pixels = u64::from(slot.width) * u64::from(slot.height);
        if pixels > self.max_pixels {
            let reason = Corruption::ExceedsPixelLimit {
                pixels,
                max_pixels: self.max_pixels,
            };
            return self.unless_raced(state, self.corrupt(reason));
        }
        // `validate` checked that byte_len fits in usize and covered_len(byte_len) <= capacity.
        let covered = copy::covered_len(slot.byte_len as usize) as u64;
        if let Err(error) = data.check_len(covered, self.name.as_str()) {
            return self.unless_raced(state, error);
        }
        Ok(ReadAttempt::Done(Some((slot, data))))
    }

    /// One lock-free attempt to read the published slot's metadata.
    #[allow(clippy::type_complexity)]
    fn try_published(
        &self,
    ) -> Result<ReadAttempt<Option<(SlotImage, Arc<DataObject>)>>, SegmentError> {
        let state = self.header().state.load(Ordering::Acquire);
        let attempt = self.try_published_at(state)?;
        // The slot record was read with relaxed loads: the fence keeps them before the
        // re-check (an acquire load alone would let them move after it, on ARM say).
        fence(Ordering::Acquire);
        if self.header().state.load(Ordering::Relaxed) != state {
            return Ok(ReadAttempt::Raced);
        }
        Ok(attempt)
    }

    /// The published slot for `state` and its data object, validated.
    #[allow(clippy::type_complexity)]
    fn try_published_at(
        &self,
        state: u64,
    ) -> Result<ReadAttempt<Option<(SlotImage, Arc<DataObject>)>>, SegmentError> {
        let (seq, active) = unpack_state(state);
        if seq == 0 {
            return Ok(ReadAttempt::Done(None));
        }
        let fields = SlotFields::load(&self.header().slots[active]);
        let slot = match fields.validate(seq, MAX_SLOT_CAPACITY) {
            Ok(slot) => slot,
            Err(reason) => return self.unless_raced(state, self.corrupt(reason)),
        };
        match self.data_object(slot.generation, slot.capacity) {
            Ok(data) => Ok(ReadAttempt::Done(Some((slot, data)))),
            Err(e) => self.unless_raced(state, e),
        }
    }

    /// `Raced` if the state word moved on since `state` (the error was a writer's doing),
    /// else the error.
    fn unless_raced<T>(
        &self,
        state: u64,
        error: SegmentError,
    ) -> Result<ReadAttempt<T>, SegmentError> {
        // As in `try_published`: what led to the error was read before the re-check.
        fence(Ordering::Acquire);
        if self.header().state.load(Ordering::Relaxed) != state {
            Ok(ReadAttempt::Raced)
        } else {
            Err(error)
        }
    }

    /// The mapped data object of `generation`, from the cache or opened and validated.
    fn data_object(&self, generation: u32, capacity: u64) -> Result<Arc<DataObject>, SegmentError> {
        let cache = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(data) = cache.get(&generation)
            && data.capacity == capacity
            && !data.mapping.poisoned()
        {
            return Ok(Arc::clone(data));
        }
        drop(cache);
        let data = Arc::new(open_data_object(&self.name, generation, capacity)?);
        self.cache_data_object(&data);
        Ok(data)
    }

    /// Keeps `data` mapped for the next copy, and drops the mappings of every generation
    /// neither a slot nor the PNG area names any more. Every generation enters the cache here,
    /// so this process maps at most the three those name, plus one a writer has created but
    /// not yet recorded.
    fn cache_data_object(&self, data: &Arc<DataObject>) {
        let [slot0, slot1, png] = self.live_generations();
        let live = [slot0, slot1, png, data.generation];
        let mut cache = self.data.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|generation, _| live.contains(generation));
        cache.insert(data.generation, Arc::clone(data));
    }

    /// The data object slot `target` writes into, with room for `len` bytes of pixels: the
    /// slot's current one, or a new generation sized for `len`. Called with the lock held.
    fn slot_storage(
        &self,
        _guard: &LockGuard<'_>,
        target: usize,
        len: u64,
    ) -> Result<Arc<DataObject>, SegmentError> {
        let record = &self.header().slots[target];
        self.record_storage(
            &record.generation,
            &record.capacity,
            len,
            "an inactive slot",
        )
    }

    /// The data object a record (`generation`, `capacity`: a slot's or the PNG area's) names,
    /// if it can hold `len` bytes and is not far larger than that; otherwise a new generation
    /// sized for `len`, recorded there, the old one unlinked first. Called with the lock held,
    /// for a record no reader takes bytes from while it changes; `what` names the record in
    /// the log.
    fn record_storage(
        &self,
        generation: &AtomicU32,
        capacity: &AtomicU64,
        len: u64,
        what: &'static str,
    ) -> Result<Arc<DataObject>, SegmentError> {
        let old_generation = generation.load(Ordering::Relaxed);
        let old_capacity = capacity.load(Ordering::Relaxed);
        let wanted = len.max(1).next_multiple_of(CAPACITY_GRANULE);
        let fits = old_capacity >= copy::covered_len(len as usize) as u64
            && old_capacity <= MAX_SLOT_CAPACITY;
        // Give memory back when the bytes need far less than the object holds.
        let oversized = old_capacity > 4 * wanted && old_capacity - wanted > 16 << 20;
        if old_generation != 0 && fits && !oversized {
            // The object's real size, not just our mapping's: another process may have
            // truncated it, and writing past its end would fault.
            let usable = self
                .data_object(old_generation, old_capacity)
                .and_then(|data| {
                    data.check_len(old_capacity, self.name.as_str())?;
                    Ok(data)
                });
            match usable {
                Ok(data) => return Ok(data),
                Err(e) => tracing::warn!(
                    segment = %self.name, error = %e,
                    "replacing the unusable data object of {what}"
                ),
            }
        }
        // Nobody reads the old object through this record any more: forget it first, so that
        // its memory can come back before we reserve the new one.
        generation.store(0, Ordering::Relaxed);
        capacity.store(0, Ordering::Relaxed);
        if old_generation != 0 {
            let _ = os::shm_unlink(&self.name.data_os_name(old_generation));
            self.forget_data_object(old_generation);
        }
        let new_generation = self.take_generation();
        let data = self.create_data_object(new_generation, wanted)?;
        capacity.store(wanted, Ordering::Relaxed);
        generation.store(new_generation, Ordering::Relaxed);
        self.cache_data_object(&data);
        Ok(data)
    }

    /// The generations the slots and the PNG area name now (0 for none).
    fn live_generations(&self) -> [u32; 3] {
        let header = self.header();
        [
            header.slots[0].generation.load(Ordering::Relaxed),
            header.slots[1].generation.load(Ordering::Relaxed),
            header.png.generation.load(Ordering::Relaxed),
        ]
    }

    /// The generation number for a new data object, taken from the counter. Called with the
    /// lock held.
    fn take_generation(&self) -> u32 {
        let header = self.header();
        let generation = header.next_generation.load(Ordering::Relaxed).max(1);
        header
            .next_generation
            .store(generation.wrapping_add(1).max(1), Ordering::Relaxed);
        generation
    }

    /// Creates, reserves and maps data object `generation` with room for `capacity` bytes.
    fn create_data_object(
        &self,
        generation: u32,
        capacity: u64,
    ) -> Result<Arc<DataObject>, SegmentError> {
        let os_name = self.name.data_os_name(generation);
        let total = DATA_OFFSET + capacity;
        let file = match os::shm_open(&os_name, OpenMode::CreateNew) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Left by a writer that died before recording it: nobody uses it.
                let _ = os::shm_unlink(&os_name);
                os::shm_open(&os_name, OpenMode::CreateNew)
                    .map_err(SegmentError::os("shm_open", &os_name))?
            }
            Err(e) => return Err(SegmentError::os("shm_open", &os_name)(e)),
        };
        let reserved = file.set_len(total).and_then(|()| os::reserve(&file, total));
        if let Err(source) = reserved {
            let _ = os::shm_unlink(&os_name);
            return Err(match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::ENOMEM) => {
                    SegmentError::OutOfSharedMemory {
                        os_name,
                        needed: total,
                        source,
                    }
                }
                _ => SegmentError::os("reserving memory for", &os_name)(source),
            });
        }
        let mapping = match Mapping::open(&os_name) {
            Ok(m) if m.len() as u64 >= total => m,
            Ok(_) => {
                let _ = os::shm_unlink(&os_name);
                return Err(self.corrupt(Corruption::BadGeneration { generation }));
            }
            Err(e) => {
                let _ = os::shm_unlink(&os_name);
                let source = os::shmem_error(e);
                if source.raw_os_error() == Some(libc::ENOMEM) {
                    return Err(SegmentError::CannotMap {
                        name: self.name.to_string(),
                        bytes: total,
                        source,
                    });
                }
                return Err(SegmentError::os("mmap", &os_name)(source));
            }
        };
        // SAFETY: the mapping is at least DATA_OFFSET bytes (checked), page-aligned, and
        // DataHeader is all atomics.
        let data_header = unsafe { &*(mapping.as_ptr() as *const DataHeader) };
        data_header.generation.store(generation, Ordering::Relaxed);
        data_header.capacity.store(capacity, Ordering::Relaxed);
        data_header.magic.store(DATA_MAGIC, Ordering::Release);
        Ok(Arc::new(DataObject {
            generation,
            capacity,
            file,
            mapping,
        }))
    }

    /// Unlinks this segment's data objects that neither a slot nor the PNG area names: half-made
    /// generations of writers that died. Called with the lock held, or while no other process
    /// is attached.
    fn remove_unreferenced_data_objects(&self) {
        let referenced: Vec<String> = self
            .live_generations()
            .into_iter()
            .filter(|&g| g != 0)
            .map(|g| self.name.data_os_name(g))
            .collect();
        for os_name in data_objects_of(&self.name) {
            if !referenced.contains(&os_name) {
                tracing::info!(object = %os_name, "removing a stale data object");
                let _ = os::shm_unlink(&os_name);
            }
        }
    }

    /// Drops the pages of the segment's pixels and PNG from this process's page tables (see
    /// `os::Mapping::drop_resident_pages`): for a process that is done with the image it
    /// wrote or read, so that its resident set stops counting pages that the segment holds
    /// for every process anyway. The next read or write maps them again, at the cost of minor
    /// page faults.
    pub fn drop_resident_pages(&self) {
        let objects: Vec<Arc<DataObject>> = self
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for object in objects {
            object.mapping.drop_resident_pages();
        }
    }

    /// [`Segment::drop_resident_pages`], if this process wrote an image since it last did:
    /// for a server at rest. A process that only reads keeps its pages mapped; they cost it
    /// nothing to keep, and its next read would fault them all in again.
    pub fn drop_resident_pages_if_written(&self) {
        if self.wrote.swap(false, Ordering::Relaxed) {
            self.drop_resident_pages();
        }
    }

    /// Drops our mapping of `generation`, e.g. after it was found truncated.
    fn forget_data_object(&self, generation: u32) {
        self.data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&generation);
    }

    /// Drops our mappings of generations that no slot names any more, so their memory can be
    /// freed once every process has done the same.
    fn prune_mappings(&self) {
        let live = self.live_generations();
        self.data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|generation, _| live.contains(generation));
    }

    /// Claims a free entry of the registry of attached processes (none if all are taken).
    ///
    /// An entry's byte is locked exclusively while its owner fills it in, and shared once its
    /// pid and label are in place; readers list only entries locked shared. So a process that
    /// is still registering is not shown under the pid and label a dead one left there.
    fn register(&mut self) {
        for (i, record) in self.header().attachments.iter().enumerate() {
            let byte = REGISTRY_BYTE + i as u64;
            if let Ok(true) = os::try_lock_byte(&self.control_file, byte, LockKind::Exclusive) {
                record.label.store(&self.label);
                record.pid.store(std::process::id(), Ordering::Release);
                // Converting our own lock cannot conflict; should it fail anyway, the entry
                // stays claimed but unlisted.
                if let Err(e) = os::try_lock_byte(&self.control_file, byte, LockKind::Shared) {
                    tracing::warn!(segment = %self.name, error = %e, "cannot list this process as attached");
                }
                self.registry_entry = Some(i);
                return;
            }
        }
        tracing::warn!(segment = %self.name, "more than {ATTACHMENT_ENTRIES} processes attached; this one is not listed");
    }

    /// The processes attached now, as the kernel's record locks say.
    fn attachments(&self) -> Vec<Attachment> {
        let mut attached = Vec::new();
        for (i, record) in self.header().attachments.iter().enumerate() {
            let is_self = self.registry_entry == Some(i);
            // Entries locked exclusively are being filled in: not listed yet.
            let listed = is_self
                || matches!(
                    os::lock_held_by_other(&self.control_file, REGISTRY_BYTE + i as u64),
                    Ok(Some(LockKind::Shared))
                );
            if listed {
                attached.push(Attachment {
                    pid: record.pid.load(Ordering::Acquire),
                    label: record.label.load().decode(),
                    is_self,
                });
            }
        }
        attached
    }

    /// Detaches: gives up our registry entry and, if this is the last process, removes every
    /// object of the segment. When the gate stays taken (a process stopped inside attach or
    /// detach), gives up after [`GATE_TIMEOUT`] and leaves the clean-up to the next process
    /// to start: closing our descriptor releases our locks whatever happens.
    fn detach_inner(&mut self) -> Result<bool, SegmentError> {
        let file = &self.control_file;
        let os_err = |op| SegmentError::os(op, &self.control_os_name);
        lock_gate(file, &self.name)?;
        if let Some(i) = self.registry_entry.take() {
            let byte = REGISTRY_BYTE + i as u64;
            // Unlisted first, then cleared, then free: nobody sees our entry half-cleared.
            let _ = os::try_lock_byte(file, byte, LockKind::Exclusive);
            self.header().attachments[i].pid.store(0, Ordering::Release);
            let _ = os::try_lock_byte(file, byte, LockKind::Unlock);
        }
        let last = os::try_lock_byte(file, ATTACHED_BYTE, LockKind::Exclusive)
            .map_err(os_err("locking"))?;
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if last {
            // Should we die between the unlinks, the next process to start finds the control
            // object not ready and initialises it afresh, instead of trusting slots that name
            // data objects we already removed.
            if !self.control.poisoned() {
                self.header().ready.store(0, Ordering::Release);
            }
            for os_name in data_objects_of(&self.name) {
                let _ = os::shm_unlink(&os_name);
            }
            os::shm_unlink(&self.control_os_name).map_err(os_err("shm_unlink"))?;
        }
        // Closing our descriptor (when the Segment is dropped) releases every lock; release
        // them now so that a process waiting at the gate need not wait for the drop.
        let _ = os::try_lock_byte(file, ATTACHED_BYTE, LockKind::Unlock);
        let _ = os::try_lock_byte(file, GATE_BYTE, LockKind::Unlock);
        Ok(last)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if !self.detached
            && let Err(e) = self.detach_inner()
        {
            tracing::error!(segment = %self.name, error = %e, "detaching from the segment failed");
        }
    }
}

/// Takes the gate of segment `name` through `file` (an exclusive lock on [`GATE_BYTE`]),
/// waiting at most [`GATE_TIMEOUT`].
fn lock_gate(file: &File, name: &SegmentName) -> Result<(), SegmentError> {
    let os_name = name.control_os_name();
    match os::lock_byte_within(file, GATE_BYTE, LockKind::Exclusive, GATE_TIMEOUT) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SegmentError::GateBusy {
            name: name.to_string(),
            os_name,
            waited: GATE_TIMEOUT,
        }),
        Err(source) => Err(SegmentError::os("locking the gate of", &os_name)(source)),
    }
}

/// The control header at the start of `control`.
fn header_at(control: &Mapping) -> &ControlHeader {
    debug_assert!(control.len() >= CONTROL_LEN);
    // SAFETY: every Mapping of a control object is checked to be at least CONTROL_LEN bytes
    // before this is called (attach refuses shorter ones), mappings are page-aligned, and the
    // header consists only of atomics and an UnsafeCell, so a shared reference to it is sound
    // even though other processes change it.
    unsafe { &*(control.as_ptr() as *const ControlHeader) }
}

/// Opens and maps data object `generation` of segment `name`, and checks that it is that
/// generation and holds `capacity` bytes of pixels.
fn open_data_object(
    name: &SegmentName,
    generation: u32,
    capacity: u64,
) -> Result<DataObject, SegmentError> {
    let os_name = name.data_os_name(generation);
    let corrupt = |reason| SegmentError::Corrupt {
        name: name.to_string(),
        reason,
    };
    let file = match os::shm_open(&os_name, OpenMode::OpenExisting) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt(Corruption::BadGeneration { generation }));
        }
        Err(e) => return Err(SegmentError::os("shm_open", &os_name)(e)),
    };
    let mapping = Mapping::open(&os_name)
        .map_err(|e| SegmentError::os("mmap", &os_name)(os::shmem_error(e)))?;
    if (mapping.len() as u64) < DATA_OFFSET {
        return Err(corrupt(Corruption::BadGeneration { generation }));
    }
    // SAFETY: the mapping is at least DATA_OFFSET >= size_of::<DataHeader>() bytes and
    // page-aligned; DataHeader is all atomics, so shared mutation through it is sound.
    let data_header = unsafe { &*(mapping.as_ptr() as *const DataHeader) };
    DataFields::load(data_header)
        .validate(generation, capacity, mapping.len() as u64)
        .map_err(corrupt)?;
    Ok(DataObject {
        generation,
        capacity,
        file,
        mapping,
    })
}

/// Why the image a control object left behind publishes cannot be read, if it cannot: its
/// slot record is invalid, or its data object is missing (a last process killed while it
/// removed the segment) or does not match. `None` when it can, or when there is no image.
fn unusable_published_image(name: &SegmentName, header: &ControlHeader) -> Option<SegmentError> {
    let (seq, active) = unpack_state(header.state.load(Ordering::Acquire));
    if seq == 0 {
        return None;
    }
    let slot = match SlotFields::load(&header.slots[active]).validate(seq, MAX_SLOT_CAPACITY) {
        Ok(slot) => slot,
        Err(reason) => {
            return Some(SegmentError::Corrupt {
                name: name.to_string(),
                reason,
            });
        }
    };
    open_data_object(name, slot.generation, slot.capacity).err()
}

/// The names of every data object of segment `name` that exists now.
fn data_objects_of(name: &SegmentName) -> Vec<String> {
    let prefix = format!("{}.", name.control_os_name());
    os::list_objects(&prefix).unwrap_or_default()
}

/// Makes the control object in `file` usable while no other process is attached: keeps a
/// valid one as it is (a previous run's last image survives), and initialises a new, short or
/// unusable one, removing every data object of the segment.
fn prepare_unshared(name: &SegmentName, file: &File) -> Result<(), SegmentError> {
    let os_name = name.control_os_name();
    let os_err = |op| SegmentError::os(op, &os_name);
    let len = file.metadata().map_err(os_err("fstat"))?.len();
    if len >= CONTROL_LEN as u64 {
        let control = Mapping::open(&os_name).map_err(|e| os_err("mmap")(os::shmem_error(e)))?;
        let problem = if control.len() < CONTROL_LEN {
            None
        } else if let Err(reason) =
            HeaderFields::load(header_at(&control)).validate(control.len() as u64)
        {
            Some(SegmentError::Corrupt {
                name: name.to_string(),
                reason,
            })
        } else {
            match unusable_published_image(name, header_at(&control)) {
                None => {
                    tracing::info!(segment = %name, "reusing a segment left by processes that are gone");
                    return Ok(());
                }
                problem => problem,
            }
        };
        match problem {
            Some(problem) => tracing::warn!(
                segment = %name, %problem,
                "re-initialising an unusable segment left behind"
            ),
            None => tracing::warn!(segment = %name, "re-initialising a short segment left behind"),
        }
    }
    for data in data_objects_of(name) {
        let _ = os::shm_unlink(&data);
    }
    // Zero the object, then size and reserve it.
    file.set_len(0).map_err(os_err("ftruncate"))?;
    file.set_len(CONTROL_LEN as u64)
        .map_err(os_err("ftruncate"))?;
    os::reserve(file, CONTROL_LEN as u64).map_err(|source| SegmentError::OutOfSharedMemory {
        os_name: os_name.clone(),
        needed: CONTROL_LEN as u64,
        source,
    })?;
    let control = Mapping::open(&os_name).map_err(|e| os_err("mmap")(os::shmem_error(e)))?;
    if control.len() < CONTROL_LEN {
        return Err(SegmentError::Corrupt {
            name: name.to_string(),
            reason: Corruption::TooShort {
                actual: control.len() as u64,
                needed: CONTROL_LEN as u64,
            },
        });
    }
    let header = header_at(&control);
    // SAFETY: the lock lies inside the mapping, is aligned (repr(C) header at a page-aligned
    // address), and no other process can use it: they wait at the gate we hold.
    unsafe { RobustMutex::init(header.lock.get()) }.map_err(os_err("initialising the lock of"))?;
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    header.stamp_identity();
    header.created_at_ns.store(now_ns, Ordering::Relaxed);
    header.next_generation.store(1, Ordering::Relaxed);
    header.ready.store(READY, Ordering::Release);
    Ok(())
}
