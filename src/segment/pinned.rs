//! Reading the published image in pieces, straight from its slot: for an encoder that copies
//! each band of rows into a small buffer of its own just before it compresses it, instead of
//! copying the whole image first.
//!
//! [`Segment::pin_image`] checks the published slot as a whole read does (its record, the pixel
//! limit, the data object's real length) and remembers the state word it saw.
//! [`Segment::read_pinned`] then copies a range of the pixels with the atomic word copy and,
//! after an acquire fence, compares the state word with the remembered one. Equal means no
//! write was published since the pin; the only writer that can be at work then fills the
//! *other* slot (a writer fills the unpublished slot, and the one after it, which would fill
//! ours, starts only once that write is published and the state word has moved). So a range
//! that passes the check holds exactly the pinned image's bytes; one that does not may be torn
//! and must be thrown away, as must everything made of the image since: the image is gone.

use super::copy;
use super::{Corruption, DataObject, ImageInfo, OPTIMISTIC_READS, ReadAttempt, Segment};
use super::{SegmentError, layout::SlotImage};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

/// The image the segment published when [`Segment::pin_image`] was called, ready to be read
/// in pieces with [`Segment::read_pinned`].
pub struct PinnedImage {
    /// The state word of the pin: a read is good while it is unchanged.
    state: u64,
    slot: SlotImage,
    data: Arc<DataObject>,
    info: ImageInfo,
}

impl std::fmt::Debug for PinnedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedImage")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PinnedImage {
    /// What the segment said about the image when it was pinned.
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }
}

impl Segment {
    /// Pins the published image (`None` if there is none) for reading it in pieces, after the
    /// checks a whole read makes; copies nothing.
    pub fn pin_image(&self) -> Result<Option<PinnedImage>, SegmentError> {
        self.check_header()?;
        for _ in 0..OPTIMISTIC_READS {
            if let ReadAttempt::Done(pinned) = self.try_pin()? {
                return Ok(pinned);
            }
        }
        // Writers keep publishing between our loads: pin under the lock. The pin still holds
        // only until the next write is published, like any other.
        let _guard = self.lock()?;
        let before = self.seq();
        match self.try_pin()? {
            ReadAttempt::Done(pinned) => Ok(pinned),
            ReadAttempt::Raced => Err(self.corrupt(Corruption::ChangedUnderLock {
                before,
                after: self.seq(),
            })),
        }
    }

    /// Copies `len` bytes of the pinned image's pixels from byte `offset` into `buffer`
    /// (replacing its contents, grown fallibly) and returns where in `buffer` they begin, or
    /// `None` if a write was published since the pin: the bytes may then belong to another
    /// image, and the image pinned is gone.
    pub fn read_pinned(
        &self,
        pinned: &PinnedImage,
        offset: usize,
        len: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<Option<usize>, SegmentError> {
        let byte_len = pinned.slot.byte_len as usize;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= byte_len)
            .ok_or_else(|| SegmentError::Corrupt {
                name: self.name.to_string(),
                reason: Corruption::LengthMismatch {
                    width: pinned.slot.width,
                    height: pinned.slot.height,
                    claimed: pinned.slot.byte_len,
                    expected: (offset as u64).saturating_add(len as u64),
                },
            })?;
        // Whole aligned words only (see `copy`): from the word `offset` falls in to the word
        // after the last byte.
        let first_word = offset - offset % 8;
        let words_len = copy::covered_len(end) - first_word;
        buffer.clear();
        if buffer.try_reserve_exact(words_len).is_err() {
            return Err(SegmentError::OutOfMemory {
                name: self.name.to_string(),
                bytes: words_len as u64,
            });
        }
        // SAFETY: `pin_image` checked that the data object's file and our mapping of it hold
        // DATA_OFFSET + covered_len(byte_len) bytes, and `first_word + words_len` is at most
        // covered_len(byte_len) (end <= byte_len), so the source lies inside the mapping; it
        // starts on a word boundary (the pixels are page-aligned and first_word is a multiple
        // of 8). Every access to a slot's pixels, in any process, is an aligned atomic word
        // (see `copy`); `buffer` has room for `words_len` bytes. A writer may store into these
        // words meanwhile: the re-check of the state word below notices, and the copy is
        // discarded.
        unsafe { copy::load_into(pinned.data.pixels_ptr().add(first_word), words_len, buffer) };
        // Orders the relaxed loads of the copy before the re-check of the state word.
        fence(Ordering::Acquire);
        if self.header().state.load(Ordering::Relaxed) != pinned.state {
            return Ok(None);
        }
        if pinned.data.mapping.poisoned() || self.control.poisoned() {
            self.forget_data_object(pinned.data.generation);
            return Err(self.corrupt(Corruption::Truncated));
        }
        Ok(Some(offset - first_word))
    }

    /// One lock-free attempt to pin the published image.
    fn try_pin(&self) -> Result<ReadAttempt<Option<PinnedImage>>, SegmentError> {
        let state = self.header().state.load(Ordering::Acquire);
        let (slot, data) = match self.try_readable_at(state)? {
            ReadAttempt::Done(Some(found)) => found,
            ReadAttempt::Done(None) => return Ok(ReadAttempt::Done(None)),
            ReadAttempt::Raced => return Ok(ReadAttempt::Raced),
        };
        // The slot record was read with relaxed loads: order them before the re-check.
        fence(Ordering::Acquire);
        if self.header().state.load(Ordering::Relaxed) != state {
            return Ok(ReadAttempt::Raced);
        }
        let info = ImageInfo::from_slot(&slot);
        Ok(ReadAttempt::Done(Some(PinnedImage {
            state,
            slot,
            data,
            info,
        })))
    }
}
