//! The published image's rows for the PNG encoder, copied out of their slot ahead of it.
//!
//! The encoder asks for its bands of rows (each with the row above it, see
//! `imaging::png_source_rows`) from several threads. [`SlotRows::copy_ahead`] copies those
//! bands out of the slot one after the other with the pinned read of `segment::pinned`, each
//! checked against the state word as it is copied, into memory of this request's own; an
//! encoder thread that asks for a band not copied yet waits for it. A copy runs at memory
//! speed, many times faster than compression, so the encoder rarely waits.
//!
//! Once the last band is copied and checked, every pixel of the PNG is the pinned image's and
//! none is read from the segment again: whatever a writer does from then on, the encode
//! finishes with the image it began. That is when a response may start sending the PNG while
//! the bands below are still being compressed (see `web::png_stream`). If a write is published
//! before then, the bands copied may not all be of one image: the copy stops, the encoder's
//! next request for a band fails, and the caller starts again from a whole read.

use crate::imaging::{EncodeError, png_source_rows};
use crate::segment::{PinnedImage, Segment, SegmentError};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// The rows of a pinned image, copied ahead of the encoder band by band.
pub(super) struct SlotRows<'a> {
    segment: &'a Segment,
    pinned: &'a PinnedImage,
    row_len: usize,
    /// The ranges of rows the encoder asks for, in the order they are copied.
    bands: Vec<Range<usize>>,
    /// Each band's copy once it is made: the buffer, and where the band's bytes begin in it.
    copies: Vec<OnceLock<(Vec<u8>, usize)>>,
    progress: Mutex<Progress>,
    /// Signalled when a band is copied or the copy ends.
    changed: Condvar,
    /// Set when the encode is over: no more bands are needed.
    stop: AtomicBool,
    /// The segment's answer when a band could not be read (a truncated data object, say),
    /// kept whole for the reply.
    failure: Mutex<Option<SegmentError>>,
}

/// How far the copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Copying,
    /// Every band is copied, and all of them are the pinned image's.
    Copied,
    /// A write was published before the last band was copied: the image pinned is gone.
    Replaced,
    /// A band could not be read, or the encode stopped the copy.
    Failed,
}

impl<'a> SlotRows<'a> {
    /// The rows of `pinned`, nothing copied yet.
    pub(super) fn new(segment: &'a Segment, pinned: &'a PinnedImage) -> SlotRows<'a> {
        let info = pinned.info();
        let bands = png_source_rows(info.width, info.height, info.format);
        SlotRows {
            segment,
            pinned,
            row_len: info.format.bytes_per_pixel() as usize * info.width as usize,
            copies: bands.iter().map(|_| OnceLock::new()).collect(),
            bands,
            progress: Mutex::new(Progress::Copying),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// How many bands the encoder reads.
    pub(super) fn bands(&self) -> usize {
        self.bands.len()
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn end_copy(&self, end: Progress) -> bool {
        *self.progress() = end;
        self.changed.notify_all();
        end == Progress::Copied
    }

    /// Copies every band, in order, each checked as it is copied. `true` once all of them are
    /// copied and are the pinned image's; `false` if a write was published first (see
    /// [`SlotRows::replaced`]), a band could not be read ([`SlotRows::into_failure`]) or the
    /// encode stopped ([`SlotRows::stop`]).
    pub(super) fn copy_ahead(&self) -> bool {
        for (band, rows) in self.bands.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return self.end_copy(Progress::Failed);
            }
            let (offset, len) = (rows.start * self.row_len, rows.len() * self.row_len);
            let mut buffer = Vec::new();
            match self
                .segment
                .read_pinned(self.pinned, offset, len, &mut buffer)
            {
                Ok(Some(at)) => {
                    let _ = self.copies[band].set((buffer, at));
                    // Taken, so that a reader between its look and its wait cannot miss this.
                    drop(self.progress());
                    self.changed.notify_all();
                }
                Ok(None) => return self.end_copy(Progress::Replaced),
                Err(error) => {
                    *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    return self.end_copy(Progress::Failed);
                }
            }
        }
        self.end_copy(Progress::Copied)
    }

    /// Stops the copy: the encode is over, or failed.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a write was published before the last band was copied.
    pub(super) fn replaced(&self) -> bool {
        *self.progress() == Progress::Replaced
    }

    /// The segment's error, if a band could not be read.
    pub(super) fn into_failure(self) -> Option<SegmentError> {
        self.failure
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Band `band`'s copy, once it is made; an error if the copy ended without it.
    fn copy_of(&self, band: usize) -> Result<&(Vec<u8>, usize), EncodeError> {
        if let Some(copy) = self.copies[band].get() {
            return Ok(copy);
        }
        let mut progress = self.progress();
        loop {
            if let Some(copy) = self.copies[band].get() {
                return Ok(copy);
            }
            match *progress {
                Progress::Copying => {
                    progress = self
                        .changed
                        .wait(progress)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Progress::Replaced => {
                    return Err(EncodeError::new(
                        "a new image was stored while this one was read",
                    ));
                }
                Progress::Copied | Progress::Failed => {
                    return Err(EncodeError::new("the image could not be read"));
                }
            }
        }
    }
}

impl crate::imaging::RowSource for SlotRows<'_> {
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError> {
        let row_len = self.row_len;
        if let Some(band) = self.bands.iter().position(|band| *band == rows) {
            let (copy, at) = self.copy_of(band)?;
            return Ok(&copy[*at..*at + rows.len() * row_len]);
        }
        // Rows the copy did not cut out as one band (the encoder asks for none such): joined
        // from the bands that hold them, never read from the slot again.
        buffer.clear();
        let mut row = rows.start;
        while row < rows.end {
            let band = self
                .bands
                .iter()
                .position(|band| band.contains(&row))
                .ok_or_else(|| EncodeError::new(format!("row {row} is not in the image")))?;
            let (copy, at) = self.copy_of(band)?;
            let held = &self.bands[band];
            let until = held.end.min(rows.end);
            let from = at + (row - held.start) * row_len;
            buffer.extend_from_slice(&copy[from..from + (until - row) * row_len]);
            row = until;
        }
        Ok(buffer)
    }
}
