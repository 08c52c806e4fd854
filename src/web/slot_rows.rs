//! The published image's rows for the PNG encoder, copied out of their slot ahead of it.
//!
//! The encoder asks for its bands of rows (each with the row above it, see
//! `imaging::png_source_rows`) from several threads. [`SlotRows::copy_ahead`] copies those
//! bands out of the slot one after the other with the pinned read of `segment::pinned`, each
//! checked against the state word as it is copied, into memory of this request's own; an
//! encoder thread that asks for a band not copied yet waits for it. A copy runs at memory
//! speed, many times faster than compression, so the encoder rarely waits.
//!
//! The encoder takes each band's copy as it starts on it, and the copy of the band it finished
//! goes back to the copy for the next band: a band's memory lives only from its copy to its
//! compression. How far the copy may run ahead of the encoder is the caller's choice: all the
//! way for a response that streams the PNG (whose sending waits for the last band's check), a
//! few bands for an encode nobody waits on, which then holds a few megabytes of copies instead
//! of the whole image.
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
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// How many buffers of bands the encoder is done with are kept for the copy's next bands.
const SPARE_BUFFERS: usize = 4;

/// The rows of a pinned image, copied ahead of the encoder band by band.
pub(super) struct SlotRows<'a> {
    segment: &'a Segment,
    pinned: &'a PinnedImage,
    row_len: usize,
    /// The ranges of rows the encoder asks for, in the order they are copied.
    bands: Vec<Range<usize>>,
    copies: Mutex<Copies>,
    /// Signalled when a band is copied or taken, and when the copy ends or is stopped.
    changed: Condvar,
    /// Set when the encode is over: no more bands are needed.
    stop: AtomicBool,
    /// The segment's answer when a band could not be read (a truncated data object, say),
    /// kept whole for the reply.
    failure: Mutex<Option<SegmentError>>,
}

/// Stops a [`SlotRows`]'s copy when dropped (see [`SlotRows::stop_when_dropped`]).
pub(super) struct StopWhenDropped<'s, 'a>(&'s SlotRows<'a>);

impl Drop for StopWhenDropped<'_, '_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Where the copy and each band are.
struct Copies {
    progress: Progress,
    bands: Vec<Band>,
    /// Bands copied and not yet taken.
    held: usize,
    /// The most bands held at once.
    most_held: usize,
    /// Buffers of bands the encoder is done with, for the next bands' copies.
    spare: Vec<Vec<u8>>,
}

/// One band's copy.
enum Band {
    Pending,
    /// The buffer, and where the band's bytes begin in it.
    Copied(Vec<u8>, usize),
    /// Handed to the encoder.
    Taken,
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
            copies: Mutex::new(Copies {
                progress: Progress::Copying,
                bands: bands.iter().map(|_| Band::Pending).collect(),
                held: 0,
                most_held: 0,
                spare: Vec::new(),
            }),
            bands,
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// How many bands the encoder reads.
    pub(super) fn bands(&self) -> usize {
        self.bands.len()
    }

    fn copies(&self) -> MutexGuard<'_, Copies> {
        self.copies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(&self, copies: MutexGuard<'g, Copies>) -> MutexGuard<'g, Copies> {
        self.changed
            .wait(copies)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn end_copy(&self, end: Progress) -> bool {
        let mut copies = self.copies();
        copies.progress = end;
        // Nobody takes a spare any more.
        copies.spare = Vec::new();
        drop(copies);
        self.changed.notify_all();
        end == Progress::Copied
    }

    /// Copies every band, in order, each checked as it is copied, waiting whenever `ahead`
    /// bands (at least one) are copied and not yet taken by the encoder; so it must be
    /// `usize::MAX` when the encoder runs on this same thread, after the copy. `true` once all
    /// of them are copied and are the pinned image's; `false` if a write was published first
    /// (see [`SlotRows::replaced`]), a band could not be read ([`SlotRows::into_failure`]) or
    /// the encode stopped ([`SlotRows::stop`]). A panic ends the copy too, so that no encoder
    /// thread waits for a band that will not come.
    pub(super) fn copy_ahead(&self, ahead: usize) -> bool {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.copy_bands(ahead))) {
            Ok(copied) => copied,
            Err(panic) => {
                self.end_copy(Progress::Failed);
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn copy_bands(&self, ahead: usize) -> bool {
        let ahead = ahead.max(1);
        for (band, rows) in self.bands.iter().enumerate() {
            let mut buffer = {
                let mut copies = self.copies();
                while copies.held >= ahead && !self.stop.load(Ordering::Relaxed) {
                    copies = self.wait(copies);
                }
                if self.stop.load(Ordering::Relaxed) {
                    drop(copies);
                    return self.end_copy(Progress::Failed);
                }
                copies.spare.pop().unwrap_or_default()
            };
            let (offset, len) = (rows.start * self.row_len, rows.len() * self.row_len);
            match self
                .segment
                .read_pinned(self.pinned, offset, len, &mut buffer)
            {
                Ok(Some(at)) => {
                    let mut copies = self.copies();
                    copies.bands[band] = Band::Copied(buffer, at);
                    copies.held += 1;
                    copies.most_held = copies.most_held.max(copies.held);
                    drop(copies);
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

    /// Stops the copy when the guard is dropped: when the encode returns, or unwinds (a copy
    /// waiting for room would otherwise wait for ever).
    pub(super) fn stop_when_dropped(&self) -> StopWhenDropped<'_, 'a> {
        StopWhenDropped(self)
    }

    /// Stops the copy: the encode is over, or failed.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Taken, so that a copy between its look at `stop` and its wait cannot miss this.
        drop(self.copies());
        self.changed.notify_all();
    }

    /// Whether a write was published before the last band was copied.
    pub(super) fn replaced(&self) -> bool {
        self.copies().progress == Progress::Replaced
    }

    /// The most bands that were copied and not yet taken by the encoder at once.
    #[cfg(test)]
    fn most_held(&self) -> usize {
        self.copies().most_held
    }

    /// The segment's error, if a band could not be read.
    pub(super) fn into_failure(self) -> Option<SegmentError> {
        self.failure
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes band `band`'s copy once it is made, swapping it into `buffer`, whose old content
    /// goes to the copy's next band; where the band's bytes begin in it. An error if the copy
    /// ended without it.
    fn take(&self, band: usize, buffer: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let mut copies = self.copies();
        loop {
            match std::mem::replace(&mut copies.bands[band], Band::Taken) {
                Band::Copied(copy, at) => {
                    let done = std::mem::replace(buffer, copy);
                    copies.held -= 1;
                    if copies.progress == Progress::Copying
                        && copies.spare.len() < SPARE_BUFFERS
                        && done.capacity() > 0
                    {
                        copies.spare.push(done);
                    }
                    drop(copies);
                    // Room for one more band ahead.
                    self.changed.notify_all();
                    return Ok(at);
                }
                Band::Taken => {
                    return Err(EncodeError::new(format!(
                        "rows {:?} were asked for twice",
                        self.bands[band]
                    )));
                }
                // Not copied yet: put back, and wait below.
                Band::Pending => copies.bands[band] = Band::Pending,
            }
            match copies.progress {
                Progress::Copying => copies = self.wait(copies),
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
    /// The rows of one of the bands [`png_source_rows`] gives, each asked for once (as the
    /// encoder does); any other range is an error.
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError> {
        let band = self
            .bands
            .iter()
            .position(|band| *band == rows)
            .ok_or_else(|| EncodeError::new(format!("rows {rows:?} are not one of the bands")))?;
        let at = self.take(band, buffer)?;
        Ok(&buffer[at..at + rows.len() * self.row_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{self, RowSource};
    use crate::raster::{PixelFormat, Raster};
    use crate::segment::{SegmentConfig, SegmentName};

    /// A segment holding a 2048x2048 RGB image (twelve bands of about a megabyte), and that
    /// image.
    fn stored(tag: &str) -> (Segment, Raster) {
        let name = format!("r{}{tag}", std::process::id() % 1_000_000);
        let segment = Segment::attach(SegmentConfig {
            name: SegmentName::new(&name).unwrap(),
            max_pixels: 1 << 24,
            label: "test".to_owned(),
        })
        .unwrap();
        let side = 2048;
        let pixels = (0..side * side * 3)
            .map(|i| ((i / 3 % side + i / 3 / side) / 16 + i % 5) as u8)
            .collect();
        let image = Raster::new(side as u32, side as u32, PixelFormat::Rgb8, pixels).unwrap();
        segment.write(&image).unwrap();
        (segment, image)
    }

    /// The PNG of the rows of `source`, encoded while `copy` runs on a thread of its own.
    fn encode(
        source: &SlotRows<'_>,
        image: &Raster,
        copy: impl FnOnce() -> bool + Send,
    ) -> Vec<u8> {
        let mut png = Vec::new();
        std::thread::scope(|scope| {
            let copier = scope.spawn(copy);
            let stop = source.stop_when_dropped();
            imaging::encode_png_from(
                source,
                image.width(),
                image.height(),
                image.format(),
                &mut |piece| png.extend_from_slice(&piece),
            )
            .unwrap();
            drop(stop);
            assert!(copier.join().unwrap(), "every band was copied");
        });
        png
    }

    #[test]
    fn a_copy_held_back_holds_only_that_many_bands_and_gives_the_images_png() {
        let (segment, image) = stored("h");
        let pinned = segment.pin_image().unwrap().unwrap();
        let source = SlotRows::new(&segment, &pinned);
        assert!(source.bands() >= 10, "{} bands", source.bands());
        let png = encode(&source, &image, || source.copy_ahead(3));
        assert!(
            source.most_held() <= 3,
            "{} bands were held at once",
            source.most_held()
        );
        assert!(png == *imaging::encode_png(&image).unwrap());
    }

    #[test]
    fn a_copy_let_run_ahead_copies_every_band_before_the_encoder_needs_them() {
        let (segment, image) = stored("a");
        let pinned = segment.pin_image().unwrap().unwrap();
        let source = SlotRows::new(&segment, &pinned);
        // Made whole first, as when no thread can be had for it.
        assert!(source.copy_ahead(usize::MAX));
        assert_eq!(source.most_held(), source.bands());
        let png = encode(&source, &image, || true);
        assert!(png == *imaging::encode_png(&image).unwrap());
    }

    #[test]
    fn rows_that_are_no_band_or_a_band_asked_for_twice_are_refused() {
        let (segment, _image) = stored("r");
        let pinned = segment.pin_image().unwrap().unwrap();
        let source = SlotRows::new(&segment, &pinned);
        assert!(source.copy_ahead(usize::MAX));
        let first = source.bands[0].clone();
        let mut buffer = Vec::new();
        let rows = source.rows(first.clone(), &mut buffer).unwrap();
        assert_eq!(rows.len(), first.len() * 2048 * 3);
        let mut other = Vec::new();
        let twice = source.rows(first.clone(), &mut other).unwrap_err();
        assert!(twice.to_string().contains("asked for twice"), "{twice}");
        let mut other = Vec::new();
        let odd = source
            .rows(first.start..first.end + 1, &mut other)
            .unwrap_err();
        assert!(odd.to_string().contains("not one of the bands"), "{odd}");
    }

    #[test]
    fn an_encode_that_panics_stops_a_copy_waiting_for_room() {
        let (segment, _image) = stored("p");
        let pinned = segment.pin_image().unwrap().unwrap();
        let source = SlotRows::new(&segment, &pinned);
        std::thread::scope(|scope| {
            let copier = scope.spawn(|| source.copy_ahead(1));
            let encode = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _stop = source.stop_when_dropped();
                let first = source.bands[0].clone();
                source.rows(first, &mut Vec::new()).unwrap();
                panic!("an encoder thread failed");
            }));
            assert!(encode.is_err());
            // Without the guard's stop the copy would wait for room for ever.
            assert!(
                !copier.join().unwrap(),
                "the copy ends before its last band"
            );
        });
        assert!(!source.replaced());
    }

    #[test]
    fn a_write_before_the_last_band_is_copied_fails_the_bands_not_copied() {
        let (segment, image) = stored("w");
        let pinned = segment.pin_image().unwrap().unwrap();
        let source = SlotRows::new(&segment, &pinned);
        // Published twice, so that the pinned image's slot is written over too.
        segment.write(&image).unwrap();
        segment.write(&image).unwrap();
        assert!(!source.copy_ahead(usize::MAX));
        assert!(source.replaced());
        let last = source.bands.last().unwrap().clone();
        let error = source.rows(last, &mut Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("new image was stored"),
            "{error}"
        );
    }
}
