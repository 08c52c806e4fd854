//! The PNG area: one PNG of the published image, shared by every process attached to the
//! segment, so that an image is encoded once rather than once per server.
//!
//! The record ([`PngRecord`]) lives in the control object; the bytes live in a data object of
//! their own, created, grown, reserved, unlinked and mapped like a slot's (generations from the
//! same counter, the same [`DataHeader`](super::layout::DataHeader)). The protocol is in the
//! `segment` module docs ("The PNG area"); in short:
//!
//! - [`Segment::publish_png_parts`] writes under the lock, inside a seqlock (`version` odd
//!   while it writes), and only for the image that is still published.
//! - [`Segment::shared_png`] reads without a lock and trusts nothing: the record must name the
//!   published image (its `seq`, its `written_at_ns`, this incarnation of the segment), its
//!   sizes must fit the data object's real length and a bound derived from the image, the copy
//!   must not have raced a writer, and the bytes must look like a PNG of that image. A record
//!   that fails any check is [`PngLookup::Missing`]: the caller encodes the pixels itself.
//! - [`Segment::claim_png`], [`Segment::wait_for_png`] and [`Segment::release_png_claim`] let
//!   concurrent first requests in different processes share one encode: one claims, the others
//!   wait for a bounded time (and not at all once the claimant is gone).

use super::copy;
use super::layout::{PngRecord, SlotFields, SlotImage, unpack_state};
use super::os;
use super::{
    DataObject, ImageId, LockGuard, MAX_SLOT_CAPACITY, OPTIMISTIC_READS, ReadAttempt, Segment,
    SegmentError,
};
use crate::raster::PixelFormat;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// How often a process waiting for another's encode checks that the claimant still lives.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// A PNG copied out of the area: the image it is of, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPng {
    /// The sequence number of the image the PNG is of.
    pub seq: u64,
    /// When that image was written (its slot's `written_at_ns`): with `seq`, names it.
    pub written_at_ns: u64,
    pub png: Vec<u8>,
}

impl SharedPng {
    /// The image the PNG is of.
    pub fn image(&self) -> ImageId {
        ImageId {
            seq: self.seq,
            written_at_ns: self.written_at_ns,
        }
    }
}

/// What the PNG area holds for the published image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PngLookup {
    /// The PNG of the published image, checked.
    Found(SharedPng),
    /// The segment publishes image `seq`, and the area holds no usable PNG of it (yet).
    Missing { seq: u64 },
    /// The segment holds no image yet.
    NoImage,
}

/// The outcome of [`Segment::claim_png`].
#[derive(Debug)]
pub enum PngClaim<'a> {
    /// This process encodes the image; the others wait for it until the claim is dropped.
    Ours(ClaimedPng<'a>),
    /// Process `pid`, alive, is encoding it.
    Theirs { pid: u32 },
}

/// This process's claim on the encode of one image. Dropping it gives the claim up and wakes
/// the processes waiting for it, also when the encode panics, so that nobody waits the full
/// bound for an encode that is over.
#[must_use = "dropping the claim gives it up at once"]
pub struct ClaimedPng<'a> {
    segment: &'a Segment,
    seq: u64,
}

impl std::fmt::Debug for ClaimedPng<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedPng")
            .field("seq", &self.seq)
            .finish()
    }
}

impl ClaimedPng<'_> {
    /// Keeps the claim past this value's life: for a claim taken before work that runs
    /// elsewhere, which claims the image again (getting its own guard) or gives it up with
    /// [`Segment::release_png_claim`]. Returns the `seq` of the image claimed.
    pub fn keep(self) -> u64 {
        let seq = self.seq;
        std::mem::forget(self);
        seq
    }
}

impl Drop for ClaimedPng<'_> {
    fn drop(&mut self) {
        self.segment.release_png_claim(self.seq);
    }
}

/// The claim word for image `seq` by process `pid`.
pub fn claim_word(seq: u64, pid: u32) -> u64 {
    (seq & 0xffff_ffff) << 32 | u64::from(pid)
}

/// Splits a claim word into (image `seq` mod 2^32, pid).
pub fn split_claim(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The most bytes a PNG of `pixel_len` bytes of pixels may take in the area: twice the pixels
/// and a MiB, well above what any encoder's worst case (stored blocks) needs.
pub fn max_png_len(pixel_len: u64) -> u64 {
    pixel_len.saturating_mul(2).saturating_add(1 << 20)
}

/// The PNG record's fields, copied out for checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PngFields {
    pub seq: u64,
    pub written_at_ns: u64,
    pub incarnation: u64,
    pub generation: u32,
    pub capacity: u64,
    pub byte_len: u64,
}

/// Which image a PNG must be of: what the published slot and the segment say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngTag {
    pub seq: u64,
    pub written_at_ns: u64,
    pub incarnation: u64,
    /// Bytes of the image's pixels: bounds the PNG's length.
    pub pixel_len: u64,
}

/// Where a valid record says the PNG is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngPlace {
    pub generation: u32,
    pub capacity: u64,
    /// At most `capacity` rounded down to whole words, and fits in `usize`.
    pub byte_len: u64,
}

/// Why the area's PNG is not used for an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PngMismatch {
    #[error("the PNG area is empty")]
    Empty,
    #[error("the PNG area holds a PNG of another image")]
    OtherImage,
    #[error("the PNG area claims {len} bytes, more than {max} for an image of this size")]
    TooLong { len: u64, max: u64 },
    #[error("the PNG area's {len} bytes do not fit its data object of {capacity} bytes")]
    ExceedsCapacity { len: u64, capacity: u64 },
    #[error("the PNG area's bytes are not a PNG of the image")]
    NotAPngOfTheImage,
}

impl PngFields {
    pub fn load(record: &PngRecord) -> PngFields {
        PngFields {
            seq: record.seq.load(Ordering::Relaxed),
            written_at_ns: record.written_at_ns.load(Ordering::Relaxed),
            incarnation: record.incarnation.load(Ordering::Relaxed),
            generation: record.generation.load(Ordering::Relaxed),
            capacity: record.capacity.load(Ordering::Relaxed),
            byte_len: record.byte_len.load(Ordering::Relaxed),
        }
    }

    /// Checks that the record names a PNG of image `tag` whose bytes can be copied safely:
    /// the tag matches, the length is neither 0 nor above [`max_png_len`], and it fits the
    /// data object's capacity in whole words, which fits [`MAX_SLOT_CAPACITY`].
    pub fn validate(&self, tag: &PngTag) -> Result<PngPlace, PngMismatch> {
        if self.seq == 0 || self.generation == 0 || self.byte_len == 0 {
            return Err(PngMismatch::Empty);
        }
        if self.seq != tag.seq
            || self.written_at_ns != tag.written_at_ns
            || self.incarnation != tag.incarnation
        {
            return Err(PngMismatch::OtherImage);
        }
        let max = max_png_len(tag.pixel_len);
        if self.byte_len > max {
            return Err(PngMismatch::TooLong {
                len: self.byte_len,
                max,
            });
        }
        // Copies touch whole 8-byte words: the last, partial one must fit too.
        let covered = self.byte_len.checked_next_multiple_of(8);
        if covered.is_none_or(|covered| covered > self.capacity)
            || self.capacity > MAX_SLOT_CAPACITY
            || usize::try_from(self.capacity).is_err()
        {
            return Err(PngMismatch::ExceedsCapacity {
                len: self.byte_len,
                capacity: self.capacity,
            });
        }
        Ok(PngPlace {
            generation: self.generation,
            capacity: self.capacity,
            byte_len: self.byte_len,
        })
    }

    /// Fields from arbitrary bytes, for fuzzing the checks.
    pub fn from_bytes(bytes: &[u8]) -> PngFields {
        let word = |i: usize| {
            let mut out = [0u8; 8];
            for (k, byte) in out.iter_mut().enumerate() {
                *byte = bytes.get(i * 8 + k).copied().unwrap_or(0);
            }
            u64::from_le_bytes(out)
        };
        PngFields {
            seq: word(0),
            written_at_ns: word(1),
            incarnation: word(2),
            generation: word(3) as u32,
            capacity: word(4),
            byte_len: word(5),
        }
    }
}

/// Whether `png` looks like a complete PNG of a `width` x `height` image of `format`, as
/// shmimage writes them: the signature, an `IHDR` with those dimensions, that bit depth and
/// color type, no interlacing, and an `IEND` chunk at the very end. Catches a record whose
/// length was changed, a truncated or overwritten object, a PNG of another image.
pub fn is_png_of(png: &[u8], width: u32, height: u32, format: PixelFormat) -> bool {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    const IEND: &[u8] = b"\0\0\0\0IEND\xae\x42\x60\x82";
    let color_type = match format.channels() {
        1 => 0,
        2 => 4,
        3 => 2,
        4 => 6,
        _ => return false,
    };
    let Ok(depth) = u8::try_from(format.bit_depth()) else {
        return false;
    };
    let Some(ihdr) = png.get(8..33) else {
        return false;
    };
    png.starts_with(SIGNATURE)
        && png.len() >= 33 + IEND.len()
        && png.ends_with(IEND)
        && ihdr[..8] == *b"\0\0\0\x0dIHDR"
        && ihdr[8..12] == width.to_be_bytes()
        && ihdr[12..16] == height.to_be_bytes()
        && ihdr[16..21] == [depth, color_type, 0, 0, 0]
}

impl Segment {
    /// The PNG of the published image from the PNG area, if a process published one and it
    /// passes every check (see the module docs). Takes no lock; a PNG area that does not
    /// validate, or that writers keep changing, is [`PngLookup::Missing`], never an error.
    /// Errors are those of the segment itself (its header), and running out of memory.
    pub fn shared_png(&self) -> Result<PngLookup, SegmentError> {
        self.check_header()?;
        let mut lookup = None;
        for _ in 0..OPTIMISTIC_READS {
            if let ReadAttempt::Done(found) = self.try_shared_png()? {
                lookup = Some(found);
                break;
            }
        }
        self.prune_mappings();
        Ok(lookup.unwrap_or_else(|| match self.seq() {
            0 => PngLookup::NoImage,
            seq => PngLookup::Missing { seq },
        }))
    }

    /// Publishes a PNG of image `seq`, whose bytes are `parts` one after the other (copied into
    /// the area without being joined first), in the PNG area, unless `seq` is no longer the
    /// published image. Returns whether it did. Blocks for the lock and the copy.
    pub fn publish_png_parts(&self, seq: u64, parts: &[&[u8]]) -> Result<bool, SegmentError> {
        self.check_header()?;
        let guard = self.lock()?;
        let header = self.header();
        let (published, active) = unpack_state(header.state.load(Ordering::Acquire));
        if published != seq || seq == 0 {
            return Ok(false);
        }
        let slot = SlotFields::load(&header.slots[active])
            .validate(seq, MAX_SLOT_CAPACITY)
            .map_err(|reason| self.corrupt(reason))?;
        let tag = self.png_tag(&slot);
        let len = parts.iter().map(|part| part.len() as u64).sum::<u64>();
        if len == 0 || len > max_png_len(tag.pixel_len) {
            return Ok(false);
        }
        // A record that already names this image is overwritten too: whoever calls this
        // encoded the image because the area's PNG did not pass a reader's checks (or raced
        // another encoder, whose bytes are the same).
        let record = &header.png;
        // Odd while we write: readers that see it, or see it change, discard what they read.
        // (It may be odd already, left so by a writer that died here.)
        let version = record.version.load(Ordering::Relaxed) | 1;
        record.version.store(version, Ordering::Relaxed);
        // Orders the odd counter before every store below, for readers that see one of them.
        fence(Ordering::Release);
        record.seq.store(0, Ordering::Relaxed);
        let written = self.png_storage(&guard, len).and_then(|data| {
            // SAFETY: `png_storage` returned an object whose file and our mapping hold at
            // least DATA_OFFSET + capacity bytes, capacity >= covered_len(len), page-aligned
            // after its header. Every access to these bytes, in any process, is an aligned
            // atomic word (see `copy`); only lock holders write them, and readers check
            // `version` after their copy, so a copy that overlaps this one is discarded.
            unsafe { copy::store_from_parts(parts, data.pixels_ptr()) };
            if data.mapping.poisoned() {
                self.forget_data_object(data.generation);
                return Err(self.corrupt(super::Corruption::Truncated));
            }
            Ok(())
        });
        if written.is_ok() {
            record
                .written_at_ns
                .store(tag.written_at_ns, Ordering::Relaxed);
            record.incarnation.store(tag.incarnation, Ordering::Relaxed);
            record.byte_len.store(len, Ordering::Relaxed);
            record.seq.store(seq, Ordering::Relaxed);
        }
        // Even again: everything above happens-before a reader's acquire load that sees it.
        record
            .version
            .store(version.wrapping_add(1), Ordering::Release);
        record.notify.fetch_add(1, Ordering::Release);
        os::futex_wake_all(&record.notify);
        drop(guard);
        self.prune_mappings();
        written.map(|()| true)
    }

    /// Claims the encode of image `seq` for this process, unless a living process claimed it
    /// already. A claim for another image, or by a process that is gone, is taken over.
    /// Processes in another pid namespace look gone: they then encode the image twice, which
    /// costs time but nothing else.
    pub fn claim_png(&self, seq: u64) -> PngClaim<'_> {
        let claim = &self.header().png.claim;
        let mine = claim_word(seq, std::process::id());
        let ours = || PngClaim::Ours(ClaimedPng { segment: self, seq });
        loop {
            let current = claim.load(Ordering::Acquire);
            if current == mine {
                return ours();
            }
            let (claimed, pid) = split_claim(current);
            if pid != 0 && claimed == seq as u32 && os::process_exists(pid) {
                return PngClaim::Theirs { pid };
            }
            if claim
                .compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return ours();
            }
        }
    }

    /// Who claims the encode of which image now: (the image's `seq` mod 2^32, the claimant's
    /// pid), or `None` if nobody does. The claimant may be gone; [`Segment::claim_png`] checks.
    pub fn png_claimant(&self) -> Option<(u32, u32)> {
        let (seq, pid) = split_claim(self.header().png.claim.load(Ordering::Acquire));
        (pid != 0).then_some((seq, pid))
    }

    /// Gives up this process's claim on image `seq` (after publishing it, or failing to), and
    /// wakes processes waiting for it.
    pub fn release_png_claim(&self, seq: u64) {
        let record = &self.header().png;
        let mine = claim_word(seq, std::process::id());
        if record
            .claim
            .compare_exchange(mine, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            record.notify.fetch_add(1, Ordering::Release);
            os::futex_wake_all(&record.notify);
        }
    }

    /// Waits up to `timeout` for another process to publish the PNG of image `seq`. Returns it,
    /// or `None` as soon as waiting is pointless: the claim was given up, its process is gone,
    /// or the segment moved on to another image. Sleeps on the area's futex word, waking every
    /// [`CLAIM_POLL`] to check on the claimant.
    pub fn wait_for_png(
        &self,
        seq: u64,
        timeout: Duration,
    ) -> Result<Option<SharedPng>, SegmentError> {
        let deadline = Instant::now() + timeout;
        let record = &self.header().png;
        loop {
            let ticket = record.notify.load(Ordering::Acquire);
            match self.shared_png()? {
                PngLookup::Found(png) => return Ok(Some(png)),
                PngLookup::Missing { seq: now } if now == seq => {}
                PngLookup::Missing { .. } | PngLookup::NoImage => return Ok(None),
            }
            let (claimed, pid) = split_claim(record.claim.load(Ordering::Acquire));
            if pid == 0 || claimed != seq as u32 || !os::process_exists(pid) {
                return Ok(None);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            if left.is_zero() {
                return Ok(None);
            }
            os::futex_wait(&record.notify, ticket, left.min(CLAIM_POLL));
        }
    }

    // ----- internals -----

    /// What a PNG of the image in `slot` must be tagged with.
    fn png_tag(&self, slot: &SlotImage) -> PngTag {
        PngTag {
            seq: slot.seq,
            written_at_ns: slot.written_at_ns,
            incarnation: self.created_at_ns,
            pixel_len: slot.byte_len,
        }
    }

    /// One lock-free attempt to copy the PNG of the published image out of the area.
    fn try_shared_png(&self) -> Result<ReadAttempt<PngLookup>, SegmentError> {
        let header = self.header();
        let state = header.state.load(Ordering::Acquire);
        let slot = match self.try_published_at(state)? {
            ReadAttempt::Done(Some((slot, _))) => slot,
            ReadAttempt::Done(None) => return Ok(ReadAttempt::Done(PngLookup::NoImage)),
            ReadAttempt::Raced => return Ok(ReadAttempt::Raced),
        };
        let record = &header.png;
        let version = record.version.load(Ordering::Acquire);
        if !version.is_multiple_of(2) {
            return Ok(ReadAttempt::Raced);
        }
        // Whether no writer changed the area since `version` was loaded; what was read before
        // this is ordered before the check by the fence.
        let settled = || {
            fence(Ordering::Acquire);
            record.version.load(Ordering::Relaxed) == version
        };
        let missing = ReadAttempt::Done(PngLookup::Missing { seq: slot.seq });
        let ignore = |problem: &dyn std::fmt::Display| {
            tracing::warn!(
                segment = %self.name, seq = slot.seq, %problem,
                "ignoring the shared PNG; encoding the image here instead"
            );
        };
        let place = match PngFields::load(record).validate(&self.png_tag(&slot)) {
            Ok(place) => place,
            Err(_) if !settled() => return Ok(ReadAttempt::Raced),
            Err(PngMismatch::Empty | PngMismatch::OtherImage) => return Ok(missing),
            Err(problem) => {
                ignore(&problem);
                return Ok(missing);
            }
        };
        let data: Arc<DataObject> = match self.data_object(place.generation, place.capacity) {
            Ok(data) => data,
            Err(_) if !settled() => return Ok(ReadAttempt::Raced),
            Err(problem) => {
                ignore(&problem);
                return Ok(missing);
            }
        };
        // `validate` checked that capacity, and so byte_len, fits in usize.
        let len = place.byte_len as usize;
        if let Err(problem) = data.check_len(copy::covered_len(len) as u64, self.name.as_str()) {
            if !settled() {
                return Ok(ReadAttempt::Raced);
            }
            ignore(&problem);
            return Ok(missing);
        }
        let mut png = Vec::new();
        if png.try_reserve_exact(len).is_err() {
            return Err(SegmentError::OutOfMemory {
                name: self.name.to_string(),
                bytes: place.byte_len,
            });
        }
        // SAFETY: the source lies inside the data object's mapping (its file and our mapping
        // hold DATA_OFFSET + covered_len(len) bytes, just checked) and is page-aligned; every
        // access to these bytes, in any process, is an aligned atomic word (see `copy`), and
        // `png` has room for `len` bytes. A writer may store into them meanwhile: `settled`
        // below notices, and the copy is discarded.
        unsafe { copy::load_into(data.pixels_ptr(), len, &mut png) };
        if !settled() {
            return Ok(ReadAttempt::Raced);
        }
        if data.mapping.poisoned() {
            self.forget_data_object(data.generation);
            ignore(&super::Corruption::Truncated);
            return Ok(missing);
        }
        if !is_png_of(&png, slot.width, slot.height, slot.format) {
            ignore(&PngMismatch::NotAPngOfTheImage);
            return Ok(missing);
        }
        Ok(ReadAttempt::Done(PngLookup::Found(SharedPng {
            seq: slot.seq,
            written_at_ns: slot.written_at_ns,
            png,
        })))
    }

    /// The area's data object, with room for `len` bytes: the current one, or a new generation
    /// sized for `len` (the old one unlinked first). Called with the lock held and `version`
    /// odd.
    fn png_storage(
        &self,
        _guard: &LockGuard<'_>,
        len: u64,
    ) -> Result<Arc<DataObject>, SegmentError> {
        let record = &self.header().png;
        self.record_storage(&record.generation, &record.capacity, len, "the PNG area")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> PngTag {
        PngTag {
            seq: 7,
            written_at_ns: 1234,
            incarnation: 99,
            pixel_len: 1000,
        }
    }

    fn good() -> PngFields {
        PngFields {
            seq: 7,
            written_at_ns: 1234,
            incarnation: 99,
            generation: 3,
            capacity: 65536,
            byte_len: 500,
        }
    }

    #[test]
    fn a_record_of_the_image_passes() {
        assert_eq!(
            good().validate(&tag()),
            Ok(PngPlace {
                generation: 3,
                capacity: 65536,
                byte_len: 500
            })
        );
    }

    #[test]
    fn records_of_other_images_or_with_bad_sizes_are_refused() {
        let refused = |fields: PngFields| fields.validate(&tag()).unwrap_err();
        assert_eq!(refused(PngFields::default()), PngMismatch::Empty);
        assert_eq!(
            refused(PngFields { seq: 6, ..good() }),
            PngMismatch::OtherImage
        );
        let other_write = PngFields {
            written_at_ns: 1,
            ..good()
        };
        assert_eq!(refused(other_write), PngMismatch::OtherImage);
        let earlier_segment = PngFields {
            incarnation: 98,
            ..good()
        };
        assert_eq!(refused(earlier_segment), PngMismatch::OtherImage);
        assert!(matches!(
            refused(PngFields {
                byte_len: u64::MAX,
                ..good()
            }),
            PngMismatch::TooLong { .. }
        ));
        // The last partial word must fit too.
        let overhang = PngFields {
            capacity: 496,
            byte_len: 497,
            ..good()
        };
        assert!(matches!(
            refused(overhang),
            PngMismatch::ExceedsCapacity { .. }
        ));
        let huge_object = PngFields {
            capacity: MAX_SLOT_CAPACITY + 8,
            ..good()
        };
        assert!(matches!(
            refused(huge_object),
            PngMismatch::ExceedsCapacity { .. }
        ));
    }

    #[test]
    fn lengths_near_the_top_of_the_range_are_refused_without_overflow() {
        // Found by the segment_bytes fuzz target: rounding u64::MAX up to whole words.
        let huge = PngTag {
            pixel_len: u64::MAX,
            ..tag()
        };
        let fields = PngFields {
            byte_len: u64::MAX,
            capacity: u64::MAX,
            ..good()
        };
        assert!(matches!(
            fields.validate(&huge),
            Err(PngMismatch::ExceedsCapacity { .. })
        ));
    }

    #[test]
    fn claim_words_name_the_image_and_the_process() {
        let word = claim_word(0x1_0000_0005, 4242);
        assert_eq!(split_claim(word), (5, 4242));
        assert_eq!(split_claim(0), (0, 0));
    }

    #[test]
    fn only_a_living_process_holds_a_claim() {
        assert!(os::process_exists(std::process::id()));
        assert!(!os::process_exists(0));
        assert!(!os::process_exists(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!os::process_exists(pid), "a reaped child is gone");
    }

    #[test]
    fn a_panic_while_holding_a_claim_gives_the_claim_up() {
        let name = format!("u{}-claim", std::process::id() % 1_000_000);
        let segment = Segment::attach(super::super::SegmentConfig {
            name: super::super::SegmentName::new(&name).unwrap(),
            max_pixels: 1 << 20,
            label: "test".to_owned(),
        })
        .unwrap();
        let raster =
            crate::raster::Raster::new(4, 2, PixelFormat::Rgb8, vec![7; 4 * 2 * 3]).unwrap();
        let seq = segment.write(&raster).unwrap().seq;
        let encode = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let claim = segment.claim_png(seq);
            assert!(matches!(claim, PngClaim::Ours { .. }));
            assert_eq!(
                segment.png_claimant(),
                Some((seq as u32, std::process::id()))
            );
            panic!("the encoder panicked");
        }));
        assert!(encode.is_err());
        // Others must not wait for an encode that is over.
        assert_eq!(segment.png_claimant(), None);
        assert!(
            segment.detach().unwrap(),
            "the last process removes the segment"
        );
    }

    fn png_of(width: u32, height: u32, format: PixelFormat) -> Vec<u8> {
        let len = format.byte_len(width, height).unwrap() as usize;
        let pixels: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let raster = crate::raster::Raster::new(width, height, format, pixels).unwrap();
        crate::imaging::encode_png(&raster).unwrap()
    }

    #[test]
    fn the_png_check_accepts_shmimage_pngs_and_refuses_others() {
        for format in PixelFormat::ALL {
            let png = png_of(5, 3, format);
            assert!(is_png_of(&png, 5, 3, format), "{format}");
            assert!(!is_png_of(&png, 3, 5, format), "{format} transposed");
            assert!(
                !is_png_of(&png[..png.len() - 1], 5, 3, format),
                "{format} cut"
            );
            let mut longer = png.clone();
            longer.extend_from_slice(&[0; 8]);
            assert!(
                !is_png_of(&longer, 5, 3, format),
                "{format} with garbage after"
            );
        }
        let png = png_of(5, 3, PixelFormat::Rgb8);
        assert!(!is_png_of(&png, 5, 3, PixelFormat::Rgba8));
        assert!(!is_png_of(&png, 5, 3, PixelFormat::Rgb16));
        assert!(!is_png_of(b"", 5, 3, PixelFormat::Rgb8));
        assert!(!is_png_of(&png[..20], 5, 3, PixelFormat::Rgb8));
    }

    #[test]
    fn fuzz_inputs_decode_without_panicking() {
        for len in 0..60 {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let _ = PngFields::from_bytes(&bytes).validate(&tag());
        }
    }
}
