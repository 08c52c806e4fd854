//! A PNG writer that filters and compresses horizontal bands of the image on several threads
//! and stitches them into one standard PNG.
//!
//! # The file
//!
//! Signature, `IHDR`, the image data as `IDAT` chunks, `IEND`. The pixels are written as they
//! are (no palette, no interlacing), 16-bit samples big-endian as the standard requires. Each
//! row is filtered with the adaptive choice of [`png_filter`](super::png_filter) and the rows
//! are compressed with `fdeflate`, the fast deflate compressor the `png` crate uses for its
//! `Fast` setting: one block per stream with a fixed Huffman code trained on filtered PNG
//! rows, and only runs of zeros as matches.
//!
//! Each band is compressed in segments of about [`SEGMENT_LEN`] bytes, each its own deflate
//! block. A segment that compression would make larger (noise, or the low bytes of 16-bit
//! photos) is stored uncompressed instead, as the `png` crate does for a whole image; after
//! such a segment the next ones are stored without trying (1, then 2, 4, ... up to
//! [`MAX_SEGMENTS_SKIPPED`] after repeated failures, and back to trying every segment after a
//! success), which spares most of the futile compression work on incompressible images. The
//! price is bounded: at most [`MAX_SEGMENTS_SKIPPED`] segments in a row are stored that might
//! have compressed.
//!
//! # Bands and how they are stitched
//!
//! The image data of a PNG is one zlib stream: a two-byte header, deflate blocks of which only
//! the last is marked final, and the Adler-32 of the uncompressed bytes. Filtering a row needs
//! only the row above it, so bands of rows can be filtered and compressed independently, each
//! worker reading the last row of the band above as its first "previous" row. To make their
//! outputs one stream:
//!
//! 1. Each segment is compressed as its own `fdeflate` stream. Its zlib header is dropped (the
//!    first band writes the stream's one header) and its Adler-32 trailer is cut off (and
//!    remembered).
//! 2. The segment's single block is marked not final (its first header bit is cleared).
//! 3. The block ends with the end-of-block code followed by zero bits up to a byte boundary.
//!    `fdeflate`'s code for end-of-block ends with a one bit, so the highest set bit of the
//!    last byte is where it ends and the zero bits above it are padding. Those padding bits
//!    (and a zero byte if there are fewer than three) start an empty stored block, a "sync
//!    flush" completed by `00 00 FF FF`, which leaves the segment byte-aligned. Stored
//!    segments are byte-aligned anyway.
//! 4. After the last band comes an empty final block with fixed codes (`03 00`) and the
//!    Adler-32 of all the data, combined from the segments' checksums and lengths.
//!
//! # Bands, rows and memory
//!
//! A large image is cut into more bands than there are cores (about [`BAND_LEN`] bytes of
//! pixels each); workers, one per core, take the bands in order, and the calling thread hands
//! each band's bytes on as soon as it and every band above it are done: [`write_png`] joins
//! them into the file, [`write_png_from`] leaves them as pieces of it. The rows come
//! from a [`RowSource`]: a slice in memory, or a copy of each band (and the row above it) made
//! by the worker that encodes it, just before it compresses it ([`write_png_from`]). So the
//! image never has to be copied whole, and each band is read from a buffer small enough to stay
//! in the worker's cache. A source that fails (the image changed under it, say) stops the
//! encode, and the caller gets the error.
//!
//! Step 3 depends on `fdeflate`'s fixed code table, so it is checked once per process by
//! stitching and inflating a few test streams ([`stitching_works`]); if that ever fails, every
//! image is written as one `fdeflate` stream on one thread (or stored whole if that is
//! smaller), exactly as the `png` crate writes it. Each worker also frames its band as `IDAT`
//! chunks with their CRC-32, so joining the bands is a plain concatenation.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::EncodeError;
use super::png_filter::{FilterType, RowFilters};
use crate::raster::PixelFormat;

/// The PNG file signature.
const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Below this many bytes of pixels an image is written on the calling thread alone: starting
/// threads and stitching would cost more than they save.
const PARALLEL_MIN_BYTES: usize = 1 << 20;
/// The most bytes one chunk may carry (2^31 - 1, PNG specification section 5.3).
const MAX_CHUNK_LEN: usize = i32::MAX as usize;
/// The largest side a PNG may have (2^31 - 1).
const MAX_SIDE: u32 = i32::MAX as u32;
/// An empty stored block's length fields (LEN 0, NLEN 0xFFFF) that complete a sync flush.
const EMPTY_STORED_LENGTHS: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// An empty final block with fixed Huffman codes: the header bits 1, 01 and end-of-block.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
/// The largest stored block.
const MAX_STORED_BLOCK: usize = u16::MAX as usize;
/// Bytes of image data compressed as one deflate block (at least one row): small enough that
/// storing an incompressible segment loses little, large enough that block headers (about 60
/// bytes each) cost nothing.
const SEGMENT_LEN: usize = 1 << 20;
/// The most segments stored without trying compression after repeated incompressible ones.
const MAX_SEGMENTS_SKIPPED: u32 = 16;
/// About how many bytes of pixels one band of a large image holds: small enough that a
/// worker's copy of its band stays in its cache and that the workers finish together, large
/// enough that each costs nothing measurable (a block header, a sync flush and a hand-over).
pub(super) const BAND_LEN: usize = 1 << 20;

/// Where the encoder gets an image's rows from.
pub trait RowSource: Sync {
    /// The rows `rows` of the image, tightly packed: borrowed from the source, or copied into
    /// `buffer` (which the caller keeps for the next band of the same worker). An error stops
    /// the encode.
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError>;
}

/// The pixels of an image in memory.
struct InMemory<'a> {
    pixels: &'a [u8],
    row_len: usize,
}

impl RowSource for InMemory<'_> {
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        _buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError> {
        self.pixels
            .get(rows.start * self.row_len..rows.end * self.row_len)
            .ok_or_else(|| EncodeError(format!("rows {rows:?} are not in the image")))
    }
}

/// Writes `pixels` (`height` tightly packed rows of `width` pixels of `format`, 16-bit samples
/// in native byte order) as a PNG, on as many threads as the machine offers for large images.
pub(super) fn write_png(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
) -> Result<Vec<u8>, EncodeError> {
    let layout = production_layout(pixels.len());
    write_png_with(pixels, width, height, format, layout)
}

/// Writes the PNG of a `width` x `height` image of `format` whose rows come from `source`
/// (see the module docs), with the layout [`write_png`] uses, handing it to `emit` in the
/// pieces it is made in, each as soon as it and every piece before it are done: the signature
/// and `IHDR`, each band, the closing chunks. Joined in order they are the file [`write_png`]
/// makes; sent or copied as they are, they spare a copy of the whole file into memory of its
/// own. Stops at the first error of the source; what was emitted then is not a whole PNG.
pub fn write_png_from(
    source: &dyn RowSource,
    width: u32,
    height: u32,
    format: PixelFormat,
    emit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), EncodeError> {
    let layout = production_layout(pixel_len(width, height, format));
    write_pieces_with(source, width, height, format, layout, &mut |mut piece| {
        // A band's room for the worst case (stored blocks) that it did not use goes back:
        // the pieces may be kept for a long time. Shrinking happens in place.
        piece.shrink_to_fit();
        emit(piece);
    })
}

/// The ranges of rows [`write_png_from`] asks its source for, each once, for a `width` x
/// `height` image of `format`: one per band, each with the row above the band (which filtering
/// needs), in the order of the bands. A source that reads ahead can copy exactly these.
pub fn source_rows(width: u32, height: u32, format: PixelFormat) -> Vec<Range<usize>> {
    let height = height as usize;
    let layout = production_layout(pixel_len(width, height as u32, format));
    let bands = layout.bands.unwrap_or(1).clamp(1, height.max(1));
    (0..bands)
        .map(|band| {
            let rows = band_rows(band, bands, height);
            rows.start.saturating_sub(1)..rows.end
        })
        .filter(|rows| !rows.is_empty())
        .collect()
}

/// The rows of band `band` of `bands` of an image `height` rows high, computed in u64 so that
/// band * height cannot overflow a 32-bit usize.
fn band_rows(band: usize, bands: usize, height: usize) -> Range<usize> {
    let boundary = |band: usize| (band as u64 * height as u64 / bands as u64) as usize;
    boundary(band)..boundary(band + 1)
}

/// The cores the encoder uses (one band thread each), read once: the bands [`source_rows`]
/// gives and those [`write_png_from`] asks for must be cut alike, and the machine's count can
/// change (CPU affinity, a container's quota) between two calls.
pub fn encoder_cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Bytes of pixels of a `width` x `height` image of `format`, or `usize::MAX` if that does
/// not fit.
fn pixel_len(width: u32, height: u32, format: PixelFormat) -> usize {
    format
        .byte_len(width, height)
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(usize::MAX)
}

/// The layout for `len` bytes of pixels: one band for small images, else bands of about
/// [`BAND_LEN`] bytes, at least one per core; one stream if stitching does not work here.
fn production_layout(len: usize) -> Layout {
    let cores = encoder_cores();
    let bands = if !stitching_works() {
        None
    } else if len < PARALLEL_MIN_BYTES {
        Some(1)
    } else {
        Some(len.div_ceil(BAND_LEN).max(cores))
    };
    Layout {
        bands,
        segment_len: SEGMENT_LEN,
        max_chunk_len: MAX_CHUNK_LEN,
    }
}

/// [`write_png`] cut into `bands` bands (0: one unstitched stream), deflate segments of
/// `segment_len` bytes and chunks of `max_chunk_len` bytes, so that a fuzzer can reach the
/// stitching with small images. With `copied`, every band's rows are copied by its worker into
/// a buffer of its own at an offset that is not a whole word, as the segment's reader copies
/// them: the bytes must be the same.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_png_in_pieces(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    bands: usize,
    segment_len: usize,
    max_chunk_len: usize,
    copied: bool,
) -> Result<Vec<u8>, EncodeError> {
    /// The rows of `InMemory`, copied to byte 3 of the buffer.
    struct Copied<'a>(InMemory<'a>);
    impl RowSource for Copied<'_> {
        fn rows<'b>(
            &'b self,
            rows: Range<usize>,
            buffer: &'b mut Vec<u8>,
        ) -> Result<&'b [u8], EncodeError> {
            let mut unused = Vec::new();
            let rows = self.0.rows(rows, &mut unused)?;
            buffer.clear();
            buffer.extend_from_slice(&[0xA5; 3]);
            buffer.extend_from_slice(rows);
            Ok(&buffer[3..])
        }
    }
    let layout = Layout {
        bands: (bands > 0).then_some(bands),
        segment_len,
        max_chunk_len,
    };
    if !copied {
        return write_png_with(pixels, width, height, format, layout);
    }
    let row_len = format.bytes_per_pixel() as usize * width as usize;
    let source = Copied(InMemory { pixels, row_len });
    write_rows_with(&source, width, height, format, layout)
}

/// How an image's data is cut up; production uses the constants above, tests small pieces.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Bands encoded in parallel (at most one per row), or `None` for one unstitched stream.
    bands: Option<usize>,
    /// Bytes of image data per deflate block (rounded to whole rows, at least one).
    segment_len: usize,
    /// The most bytes of one `IDAT` chunk.
    max_chunk_len: usize,
}

/// [`write_png`] with the given layout.
fn write_png_with(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    layout: Layout,
) -> Result<Vec<u8>, EncodeError> {
    let geometry = Geometry::new(width, height, format)?;
    if geometry.row_len.checked_mul(geometry.height) != Some(pixels.len()) {
        return Err(EncodeError(format!(
            "{width}x{height} {format} pixels do not take {} bytes",
            pixels.len()
        )));
    }
    let source = InMemory {
        pixels,
        row_len: geometry.row_len,
    };
    write_rows_with(&source, width, height, format, layout)
}

/// The PNG of the image whose rows come from `source`, with the given layout: the pieces
/// [`write_pieces_with`] hands on, joined.
fn write_rows_with(
    source: &dyn RowSource,
    width: u32,
    height: u32,
    format: PixelFormat,
    layout: Layout,
) -> Result<Vec<u8>, EncodeError> {
    let geometry = Geometry::new(width, height, format)?;
    // Room for the worst case (stored blocks), so that appending never moves the file; the
    // capacity it does not use costs no memory, as it is never touched.
    let mut png = Vec::new();
    // Each band adds a sync flush and its chunks' framing, far less than 64 bytes.
    let bands = layout.bands.unwrap_or(1).clamp(1, geometry.height);
    png.try_reserve_exact(stored_len(geometry.height * (geometry.row_len + 1)) + 4096 + bands * 64)
        .map_err(|_| EncodeError("no memory for the PNG".to_owned()))?;
    write_pieces_with(source, width, height, format, layout, &mut |piece| {
        png.extend_from_slice(&piece);
    })?;
    // Give back the room the file did not use: the PNG may be kept for a long time, and the
    // room may be memory freed by earlier work that would stay resident with it. Shrinking
    // happens in place (or by remapping), without a copy.
    png.shrink_to_fit();
    Ok(png)
}

/// Encodes the image whose rows come from `source` with the given layout, handing its bytes
/// to `emit` in order: the signature and `IHDR`, each band as soon as it and every band above
/// it are done, then the closing `IDAT` and `IEND`. At the first error nothing more is
/// emitted, and what was is not a complete PNG.
fn write_pieces_with(
    source: &dyn RowSource,
    width: u32,
    height: u32,
    format: PixelFormat,
    layout: Layout,
    emit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), EncodeError> {
    let geometry = Geometry::new(width, height, format)?;
    let layout = Layout {
        max_chunk_len: layout.max_chunk_len.clamp(1, MAX_CHUNK_LEN),
        ..layout
    };

    let mut head = Vec::with_capacity(SIGNATURE.len() + 25);
    head.extend_from_slice(SIGNATURE);
    write_chunk(&mut head, b"IHDR", &header_fields(width, height, format));

    let Some(bands) = layout.bands else {
        let all_rows = 0..geometry.height;
        let mut buffer = Vec::new();
        let mut png = encode_band_from(
            source,
            &geometry,
            all_rows,
            BandRole::Whole,
            &head,
            layout,
            &mut buffer,
        )?;
        write_chunk(&mut png.bytes, b"IEND", &[]);
        emit(png.bytes);
        return Ok(());
    };
    emit(head);
    let bands = bands.clamp(1, geometry.height);
    let rows = |band: usize| band_rows(band, bands, geometry.height);
    let role = |band: usize| {
        if band == 0 {
            BandRole::Opening
        } else {
            BandRole::Continuing
        }
    };
    let cores = encoder_cores();
    let workers = if bands == 1 { 0 } else { cores.min(bands) };
    let next_band = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let adler = std::thread::scope(|scope| -> Result<u32, EncodeError> {
        let (done, finished) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (done, next_band, stop, geometry) = (done.clone(), &next_band, &stop, &geometry);
            let worker = std::thread::Builder::new()
                .name("png-band".to_owned())
                .spawn_scoped(scope, move || {
                    let mut buffer = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let band = next_band.fetch_add(1, Ordering::Relaxed);
                        if band >= bands {
                            break;
                        }
                        let encoded = encode_band_from(
                            source,
                            geometry,
                            rows(band),
                            role(band),
                            &[],
                            layout,
                            &mut buffer,
                        );
                        let failed = encoded.is_err();
                        if done.send((band, encoded)).is_err() || failed {
                            break;
                        }
                    }
                });
            // A worker that cannot be started leaves its bands to the others, or to this
            // thread below.
            if let Ok(worker) = worker {
                handles.push(worker);
            }
        }
        drop(done);
        let mut pending: Vec<Option<EncodedBand>> = (0..bands).map(|_| None).collect();
        let mut emitted = 0;
        let mut adler = 1; // the Adler-32 of nothing
        let mut emit_ready = |pending: &mut Vec<Option<EncodedBand>>, emitted: &mut usize| {
            while let Some(band) = pending.get_mut(*emitted).and_then(Option::take) {
                adler = adler32_combine(adler, band.adler, band.data_len);
                emit(band.bytes);
                *emitted += 1;
            }
        };
        let outcome = if handles.is_empty() {
            // No worker: every band on this thread, in order.
            let mut buffer = Vec::new();
            (0..bands).try_for_each(|band| {
                let encoded = encode_band_from(
                    source,
                    &geometry,
                    rows(band),
                    role(band),
                    &[],
                    layout,
                    &mut buffer,
                )?;
                pending[band] = Some(encoded);
                emit_ready(&mut pending, &mut emitted);
                Ok(())
            })
        } else {
            loop {
                if emitted == bands {
                    break Ok(());
                }
                match finished.recv() {
                    Ok((band, Ok(encoded))) => {
                        pending[band] = Some(encoded);
                        emit_ready(&mut pending, &mut emitted);
                    }
                    Ok((_, Err(error))) => break Err(error),
                    // Every worker is gone with bands missing: one of them panicked.
                    Err(_) => break Err(EncodeError("a PNG band encoder panicked".to_owned())),
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        // Joined here, so that a panicked worker is an error above, not a panic of the scope.
        for worker in handles {
            let _ = worker.join();
        }
        outcome.map(|()| adler)
    })?;
    let mut tail = Vec::with_capacity(32);
    let mut end = [0; 6];
    end[..2].copy_from_slice(&EMPTY_FINAL_BLOCK);
    end[2..].copy_from_slice(&adler.to_be_bytes());
    write_chunk(&mut tail, b"IDAT", &end);
    write_chunk(&mut tail, b"IEND", &[]);
    emit(tail);
    Ok(())
}

/// An image's size and row layout, checked: what every band shares.
struct Geometry {
    height: usize,
    /// Bytes of pixels in one row (without the filter-type byte).
    row_len: usize,
    bytes_per_pixel: usize,
    sixteen_bit: bool,
}

impl Geometry {
    fn new(width: u32, height: u32, format: PixelFormat) -> Result<Geometry, EncodeError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(EncodeError(format!(
                "a PNG must be 1 to {MAX_SIDE} pixels on each side, not {width}x{height}"
            )));
        }
        let bytes_per_pixel = format.bytes_per_pixel() as usize;
        let (width, height) = (width as usize, height as usize);
        let row_len = width
            .checked_mul(bytes_per_pixel)
            .filter(|row_len| row_len.checked_mul(height).is_some())
            .ok_or_else(|| {
                EncodeError(format!(
                    "{width}x{height} {format} pixels do not fit in memory"
                ))
            })?;
        Ok(Geometry {
            height,
            row_len,
            bytes_per_pixel,
            sixteen_bit: format.bit_depth() == 16,
        })
    }
}

/// Encodes `rows` as [`encode_band`] does, reading them (and the row above, which filtering
/// needs) from `source`, into `buffer` if they must be copied.
fn encode_band_from(
    source: &dyn RowSource,
    geometry: &Geometry,
    rows: Range<usize>,
    role: BandRole,
    prefix: &[u8],
    layout: Layout,
    buffer: &mut Vec<u8>,
) -> Result<EncodedBand, EncodeError> {
    let first_row = rows.start.saturating_sub(1);
    let pixels = source.rows(first_row..rows.end, buffer)?;
    if pixels.len() != (rows.end - first_row) * geometry.row_len {
        return Err(EncodeError(format!(
            "the source gave {} bytes for rows {first_row}..{}",
            pixels.len(),
            rows.end
        )));
    }
    let image = Image {
        pixels,
        first_row,
        row_len: geometry.row_len,
        bytes_per_pixel: geometry.bytes_per_pixel,
        sixteen_bit: geometry.sixteen_bit,
    };
    encode_band(&image, rows, role, prefix, layout)
}

/// The pixels being written and how their rows are laid out.
/// The rows of one band being written (and the row above it), and how rows are laid out.
struct Image<'a> {
    /// Rows `first_row..`, tightly packed.
    pixels: &'a [u8],
    /// The first row `pixels` holds.
    first_row: usize,
    /// Bytes of pixels in one row (without the filter-type byte).
    row_len: usize,
    bytes_per_pixel: usize,
    sixteen_bit: bool,
}

impl<'a> Image<'a> {
    /// Row `y` as stored in the raster (`y` at least `first_row`).
    fn row(&self, y: usize) -> &'a [u8] {
        let y = y - self.first_row;
        &self.pixels[y * self.row_len..(y + 1) * self.row_len]
    }

    /// Row `y` as the file stores it: 16-bit samples big-endian. Borrows the raster's row when
    /// no conversion is needed and fills `buffer` otherwise.
    fn file_row<'b>(&self, y: usize, buffer: &'b mut [u8]) -> &'b [u8]
    where
        'a: 'b,
    {
        let row = self.row(y);
        if !self.sixteen_bit || cfg!(target_endian = "big") {
            return row;
        }
        // Swap the bytes of each 16-bit sample, four samples per step where possible.
        let mut out_words = buffer.chunks_exact_mut(8);
        let mut row_words = row.chunks_exact(8);
        for (out, word) in (&mut out_words).zip(&mut row_words) {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(word);
            let word = u64::from_ne_bytes(bytes);
            let swapped =
                ((word >> 8) & 0x00FF_00FF_00FF_00FF) | ((word << 8) & 0xFF00_FF00_FF00_FF00);
            out.copy_from_slice(&swapped.to_ne_bytes());
        }
        for (out, sample) in out_words
            .into_remainder()
            .chunks_exact_mut(2)
            .zip(row_words.remainder().chunks_exact(2))
        {
            out[0] = sample[1];
            out[1] = sample[0];
        }
        buffer
    }

    /// Bytes of image data (filter-type byte and row) for `rows`.
    fn data_len(&self, rows: &Range<usize>) -> usize {
        rows.len() * (self.row_len + 1)
    }
}

/// Where a band sits in the zlib stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BandRole {
    /// The whole image as one unstitched stream: header, one final block, Adler-32.
    Whole,
    /// The first of several bands (or the only one): zlib header, then non-final blocks ending
    /// byte-aligned.
    Opening,
    /// Any later band: non-final blocks ending byte-aligned, no header.
    Continuing,
}

/// One band, encoded and framed as `IDAT` chunks.
struct EncodedBand {
    /// `prefix`, then the band's `IDAT` chunks.
    bytes: Vec<u8>,
    /// Adler-32 of the band's uncompressed image data.
    adler: u32,
    /// Bytes of uncompressed image data in the band.
    data_len: usize,
}

/// Filters and compresses `rows` of `image` for `role` and frames the result as `IDAT` chunks
/// after `prefix`.
fn encode_band(
    image: &Image<'_>,
    rows: Range<usize>,
    role: BandRole,
    prefix: &[u8],
    layout: Layout,
) -> Result<EncodedBand, EncodeError> {
    let data_len = image.data_len(&rows);
    let capacity = stored_len(data_len) + 64;
    let mut bytes = Vec::with_capacity(prefix.len() + capacity);
    bytes.extend_from_slice(prefix);
    let chunk_start = bytes.len();
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(b"IDAT");
    if role != BandRole::Continuing {
        bytes.extend_from_slice(&ZLIB_HEADER);
    }
    let mut scratch = RowScratch::new(image);
    let adler = match role {
        BandRole::Whole => write_whole_stream(image, rows, &mut scratch, &mut bytes),
        BandRole::Opening | BandRole::Continuing => {
            write_segments(image, rows, layout.segment_len, &mut scratch, &mut bytes)
        }
    }
    .map_err(|error| EncodeError(format!("deflate failed: {error}")))?;
    frame_chunk(&mut bytes, chunk_start, layout.max_chunk_len);
    Ok(EncodedBand {
        bytes,
        adler,
        data_len,
    })
}

/// Appends all of `rows` as one final `fdeflate` block and the Adler-32 (or as final stored
/// blocks if that is smaller), after a zlib header already in `out`: the whole stream as the
/// `png` crate writes it. Returns the Adler-32.
fn write_whole_stream(
    image: &Image<'_>,
    rows: Range<usize>,
    scratch: &mut RowScratch,
    out: &mut Vec<u8>,
) -> io::Result<u32> {
    let start = out.len();
    let adler = deflate_rows(image, rows.clone(), scratch, Ending::Final, out)?;
    if out.len() - start <= stored_len(image.data_len(&rows)) + 4 {
        return Ok(adler);
    }
    out.truncate(start);
    let adler = store_rows(image, rows, scratch, Ending::Final, out);
    out.extend_from_slice(&adler.to_be_bytes());
    Ok(adler)
}

/// Appends `rows` as non-final blocks ending byte-aligned, a segment of about `segment_len`
/// bytes of data at a time, each compressed or stored, whichever is smaller (see the module
/// docs). Returns the Adler-32 of the rows' image data.
fn write_segments(
    image: &Image<'_>,
    rows: Range<usize>,
    segment_len: usize,
    scratch: &mut RowScratch,
    out: &mut Vec<u8>,
) -> io::Result<u32> {
    let rows_per_segment = (segment_len / (image.row_len + 1)).max(1);
    let mut adler = 1; // the Adler-32 of nothing
    let mut backoff = Backoff::default();
    for segment_start in rows.clone().step_by(rows_per_segment) {
        let segment = segment_start..(segment_start + rows_per_segment).min(rows.end);
        let data_len = image.data_len(&segment);
        let start = out.len();
        let segment_adler = if backoff.should_try() {
            let compressed = deflate_rows(image, segment.clone(), scratch, Ending::Open, out)?;
            if out.len() - start <= stored_len(data_len) {
                backoff.succeeded();
                compressed
            } else {
                backoff.failed();
                out.truncate(start);
                store_rows(image, segment, scratch, Ending::Open, out)
            }
        } else {
            store_rows(image, segment, scratch, Ending::Open, out)
        };
        adler = adler32_combine(adler, segment_adler, data_len);
    }
    Ok(adler)
}

/// How a run of blocks ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// With the stream's final block.
    Final,
    /// With a non-final block, byte-aligned, so more blocks can follow.
    Open,
}

/// When to try compressing the next segment: after an incompressible segment, the next 1, 2,
/// 4, ... (at most [`MAX_SEGMENTS_SKIPPED`]) are stored without trying.
#[derive(Debug)]
struct Backoff {
    /// Segments still to store without trying.
    skipping: u32,
    /// Segments to skip after the next failure.
    next_skip: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            skipping: 0,
            next_skip: 1,
        }
    }
}

impl Backoff {
    fn should_try(&mut self) -> bool {
        if self.skipping == 0 {
            return true;
        }
        self.skipping -= 1;
        false
    }

    fn succeeded(&mut self) {
        self.next_skip = 1;
    }

    fn failed(&mut self) {
        self.skipping = self.next_skip;
        self.next_skip = (self.next_skip * 2).min(MAX_SEGMENTS_SKIPPED);
    }
}

/// Per-band working memory: the filter outputs, a row of zeros (the row above the image) and
/// two rows in file byte order for 16-bit images (row `y` lives in buffer `y % 2`).
struct RowScratch {
    filters: RowFilters,
    zeros: Vec<u8>,
    even: Vec<u8>,
    odd: Vec<u8>,
}

impl RowScratch {
    fn new(image: &Image<'_>) -> RowScratch {
        let row_len = image.row_len;
        let file_rows = if image.sixteen_bit { row_len } else { 0 };
        RowScratch {
            filters: RowFilters::new(row_len, image.bytes_per_pixel),
            zeros: vec![0; row_len],
            even: vec![0; file_rows],
            odd: vec![0; file_rows],
        }
    }
}

/// Compresses `rows` with adaptive filtering into one `fdeflate` block appended to `out`
/// (without a zlib header), ended as `ending` says: for [`Ending::Final`] the block stays final
/// and the Adler-32 follows it; for [`Ending::Open`] it is made non-final and byte-aligned.
/// Returns the Adler-32 of the rows' image data.
fn deflate_rows(
    image: &Image<'_>,
    rows: Range<usize>,
    scratch: &mut RowScratch,
    ending: Ending,
    out: &mut Vec<u8>,
) -> io::Result<u32> {
    let block_start = out.len();
    let sink = BandSink {
        out: &mut *out,
        skip: ZLIB_HEADER.len(),
    };
    let mut compressor = fdeflate::Compressor::new(sink)?;
    let RowScratch {
        filters,
        zeros,
        even,
        odd,
    } = scratch;
    if rows.start > 0 && image.sixteen_bit {
        let above = rows.start - 1;
        image.file_row(above, if above.is_multiple_of(2) { even } else { odd });
    }
    for y in rows {
        let (current_buffer, previous_buffer) = if y.is_multiple_of(2) {
            (&mut *even, &*odd)
        } else {
            (&mut *odd, &*even)
        };
        let current = image.file_row(y, current_buffer);
        let previous: &[u8] = match (y, image.sixteen_bit) {
            (0, _) => zeros,
            (_, true) => previous_buffer,
            (_, false) => image.row(y - 1),
        };
        compressor.write_data(filters.filter(previous, current))?;
    }
    compressor.finish()?;
    match ending {
        Ending::Final => {
            let trailer = out.len().checked_sub(4).filter(|&at| at > block_start);
            let trailer = trailer.ok_or_else(|| io::Error::other("fdeflate wrote no checksum"))?;
            let mut adler = [0; 4];
            adler.copy_from_slice(&out[trailer..]);
            Ok(u32::from_be_bytes(adler))
        }
        Ending::Open => end_without_closing(out, block_start),
    }
}

/// Turns the `fdeflate` stream at the end of `out`, whose single block starts at `block_start`,
/// into non-final blocks that end on a byte boundary: cuts off the Adler-32 trailer (returned),
/// clears the block's final bit and appends an empty stored block (see the module docs).
fn end_without_closing(out: &mut Vec<u8>, block_start: usize) -> io::Result<u32> {
    let unexpected = || io::Error::other("fdeflate's output is not one final block");
    let trailer = out
        .len()
        .checked_sub(4)
        .filter(|&at| at > block_start + 1)
        .ok_or_else(unexpected)?;
    let mut adler = [0; 4];
    adler.copy_from_slice(&out[trailer..]);
    out.truncate(trailer);
    let first = out[block_start];
    let last = out[trailer - 1];
    // A final block (bit 0) with dynamic codes (bits 1-2 = 2), ending in a set bit.
    if first & 0b111 != 0b101 || last == 0 {
        return Err(unexpected());
    }
    out[block_start] = first & !1;
    let padding_bits = last.leading_zeros();
    if padding_bits < 3 {
        // Too little room for the stored block's three header bits: they take a new byte.
        out.push(0);
    }
    out.extend_from_slice(&EMPTY_STORED_LENGTHS);
    Ok(u32::from_be_bytes(adler))
}

/// Appends `rows` unfiltered as stored deflate blocks, the last one final if `ending` says so,
/// and returns the Adler-32 of the rows' image data: the fallback for data that compression
/// would make larger.
fn store_rows(
    image: &Image<'_>,
    rows: Range<usize>,
    scratch: &mut RowScratch,
    ending: Ending,
    out: &mut Vec<u8>,
) -> u32 {
    let mut blocks = StoredBlocks::new(out);
    for y in rows {
        blocks.write(&[FilterType::None as u8]);
        blocks.write(image.file_row(y, &mut scratch.even));
    }
    blocks.finish(ending)
}

/// Writes data as stored deflate blocks of at most [`MAX_STORED_BLOCK`] bytes, filling in each
/// block's header when it is complete, and keeps the data's Adler-32.
struct StoredBlocks<'a> {
    out: &'a mut Vec<u8>,
    /// Where the open block's five header bytes are.
    header_at: usize,
    /// Bytes in the open block.
    block_len: usize,
    adler: simd_adler32::Adler32,
}

impl<'a> StoredBlocks<'a> {
    fn new(out: &'a mut Vec<u8>) -> StoredBlocks<'a> {
        let header_at = out.len();
        out.extend_from_slice(&[0; 5]);
        StoredBlocks {
            out,
            header_at,
            block_len: 0,
            adler: simd_adler32::Adler32::new(),
        }
    }

    fn write(&mut self, mut data: &[u8]) {
        self.adler.write(data);
        while !data.is_empty() {
            if self.block_len == MAX_STORED_BLOCK {
                self.close_block(false);
                self.header_at = self.out.len();
                self.out.extend_from_slice(&[0; 5]);
                self.block_len = 0;
            }
            let taken = data.len().min(MAX_STORED_BLOCK - self.block_len);
            self.out.extend_from_slice(&data[..taken]);
            self.block_len += taken;
            data = &data[taken..];
        }
    }

    /// Fills in the open block's header: final bit, then LEN and NLEN.
    fn close_block(&mut self, is_final: bool) {
        // block_len <= MAX_STORED_BLOCK = u16::MAX.
        let len = self.block_len as u16;
        let header = &mut self.out[self.header_at..self.header_at + 5];
        header[0] = u8::from(is_final);
        header[1..3].copy_from_slice(&len.to_le_bytes());
        header[3..5].copy_from_slice(&(!len).to_le_bytes());
    }

    /// Closes the last block and returns the Adler-32 of everything written.
    fn finish(mut self, ending: Ending) -> u32 {
        self.close_block(ending == Ending::Final);
        self.adler.finish()
    }
}

/// The zlib header `fdeflate` writes: deflate with a 32 KiB window, fastest compression.
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// The length of `data_len` bytes as stored deflate blocks.
fn stored_len(data_len: usize) -> usize {
    data_len + 5 * data_len.div_ceil(MAX_STORED_BLOCK).max(1)
}

/// An `io::Write` that appends to a vector after dropping the first `skip` bytes: the zlib
/// header of a band that continues a stream.
struct BandSink<'a> {
    out: &'a mut Vec<u8>,
    skip: usize,
}

impl Write for BandSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let skipped = self.skip.min(bytes.len());
        self.skip -= skipped;
        self.out.extend_from_slice(&bytes[skipped..]);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The 13 bytes of `IHDR`: size, bit depth, color type, and deflate, adaptive filtering and no
/// interlacing.
fn header_fields(width: u32, height: u32, format: PixelFormat) -> [u8; 13] {
    let color_type = match format.channels() {
        1 => 0, // gray
        2 => 4, // gray + alpha
        3 => 2, // RGB
        _ => 6, // RGBA
    };
    let mut fields = [0; 13];
    fields[..4].copy_from_slice(&width.to_be_bytes());
    fields[4..8].copy_from_slice(&height.to_be_bytes());
    fields[8] = format.bit_depth() as u8;
    fields[9] = color_type;
    fields
}

/// Appends a chunk: length, type, data, CRC-32 of type and data.
fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Chunks written whole are short: IHDR, the closing IDAT, IEND, and pieces of at most
    // MAX_CHUNK_LEN bytes.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let crc_start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[crc_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Completes the `IDAT` chunk whose length field starts at `chunk_start` and whose data runs
/// to the end of `out`: fills in the length and appends the CRC, or splits the data into
/// chunks of at most `max_chunk_len` bytes when it is longer.
fn frame_chunk(out: &mut Vec<u8>, chunk_start: usize, max_chunk_len: usize) {
    let data_len = out.len() - chunk_start - 8;
    if data_len <= max_chunk_len {
        // data_len <= MAX_CHUNK_LEN < 2^31.
        out[chunk_start..chunk_start + 4].copy_from_slice(&(data_len as u32).to_be_bytes());
        let crc = crc32fast::hash(&out[chunk_start + 4..]);
        out.extend_from_slice(&crc.to_be_bytes());
    } else {
        let data = out.split_off(chunk_start + 8);
        out.truncate(chunk_start);
        for piece in data.chunks(max_chunk_len) {
            write_chunk(out, b"IDAT", piece);
        }
    }
}

/// The Adler-32 modulus: the largest prime below 2^16.
const ADLER_MODULUS: u32 = 65521;

/// The Adler-32 of two byte strings one after the other, from their checksums and the length
/// of the second.
///
/// For a second string `x1..xn`: `a = a1 + a2 - 1` (both sums start at 1) and
/// `b = b1 + b2 + n * (a1 - 1)` (each of the n steps adds the first string's sum to `b`),
/// modulo 65521.
fn adler32_combine(first: u32, second: u32, second_len: usize) -> u32 {
    let modulus = u64::from(ADLER_MODULUS);
    let (a1, b1) = (u64::from(first & 0xFFFF), u64::from(first >> 16));
    let (a2, b2) = (u64::from(second & 0xFFFF), u64::from(second >> 16));
    let n = second_len as u64 % modulus;
    let a = (a1 + a2 + modulus - 1) % modulus;
    let b = (b1 + b2 + n * ((a1 + modulus - 1) % modulus)) % modulus;
    // Both are below the modulus, so they fit in 16 bits.
    ((b << 16) | a) as u32
}

/// Whether band stitching yields valid streams with the `fdeflate` in use: a few pairs of
/// bands of different lengths (so every amount of padding occurs) are stitched as
/// [`write_png_with`] does and inflated again. Checked once per process.
fn stitching_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| (0..24).all(|len| stitched_pair_inflates(len, 17 + 3 * len)))
}

/// Compresses two byte strings of the given lengths as an opening and a continuing band, closes
/// the stream, and checks that it inflates to both strings with a valid Adler-32.
fn stitched_pair_inflates(first_len: usize, second_len: usize) -> bool {
    let pattern = |len: usize, seed: usize| -> Vec<u8> {
        (0..len)
            .map(|i| {
                if i % 7 == 0 {
                    0
                } else {
                    (i * seed % 251) as u8
                }
            })
            .collect()
    };
    let (first, second) = (pattern(first_len, 31), pattern(second_len, 97));
    let mut stream = Vec::new();
    let mut adler = None;
    stream.extend_from_slice(&ZLIB_HEADER);
    for data in [&first, &second] {
        let block_start = stream.len();
        let compressed = fdeflate::Compressor::new(BandSink {
            out: &mut stream,
            skip: ZLIB_HEADER.len(),
        })
        .and_then(|mut compressor| {
            compressor.write_data(data)?;
            compressor.finish().map(drop)
        });
        let Ok(band_adler) =
            compressed.and_then(|()| end_without_closing(&mut stream, block_start))
        else {
            return false;
        };
        adler = Some(match adler {
            None => band_adler,
            Some(adler) => adler32_combine(adler, band_adler, data.len()),
        });
    }
    stream.extend_from_slice(&EMPTY_FINAL_BLOCK);
    stream.extend_from_slice(&adler.unwrap_or(0).to_be_bytes());
    let expected = [first, second].concat();
    fdeflate::decompress_to_vec(&stream).is_ok_and(|inflated| inflated == expected)
}

#[cfg(test)]
mod tests;
