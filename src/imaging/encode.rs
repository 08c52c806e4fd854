//! Encoding rasters as PNG: full-size files of exactly the stored pixels, and small 8-bit
//! previews.
//!
//! Both run on request paths, so both use the fastest deflate that still compresses
//! (`fdeflate`, the `png` crate's `Fast` setting; zlib's default level takes seconds on a 4K
//! image), and large images are filtered and compressed in bands on all cores (see
//! `png_writer`).
//!
//! Rows are filtered with the adaptive choice (`png_filter`). Measured with fast compression
//! on a 3840x2160 RGBA 8-bit raster: on gradients plus noise, `Avg` and `Adaptive` give the
//! smallest files (the same size to within 0.1%, 38-56% of raw, against 39-59% for `Sub`, `Up`
//! and `Paeth` and 100% unfiltered), `Adaptive` taking about 20% longer. On flat areas with
//! sharp edges (screenshots, diagrams) `Adaptive` gives 1.4% of raw where `Avg` gives 11.8%,
//! in less time. `Adaptive` is never far from the best and never much worse.

use super::EncodeError;
use super::png_writer::{RowSource, source_rows, write_png, write_png_from};
use crate::raster::{PixelFormat, Raster};
use std::ops::Range;

/// A PNG of exactly `raster`'s pixels, in its own pixel format, encoded fast.
///
/// 16-bit rasters give 16-bit PNGs and gray+alpha stays gray+alpha; decoding the file gives
/// back the same bytes.
///
/// Images of a megabyte or more are encoded on every core the machine offers.
pub fn encode_png(raster: &Raster) -> Result<Vec<u8>, EncodeError> {
    write_png(
        raster.pixels(),
        raster.width(),
        raster.height(),
        raster.format(),
    )
}

/// The PNG [`encode_png`] makes of a `width` x `height` image of `format`, its rows read from
/// `source` band by band by the threads that encode them (ranges [`png_source_rows`] lists),
/// handed to `emit` in the pieces it is made in, in order and each as soon as it and those
/// before it are done (a band of rows each, between the opening and closing chunks): the file
/// need not be joined, and can be sent while the bands below are still being encoded. Stops
/// at the first error of the source; what was emitted then is not a whole PNG.
pub fn encode_png_from(
    source: &dyn RowSource,
    width: u32,
    height: u32,
    format: PixelFormat,
    emit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), EncodeError> {
    write_png_from(source, width, height, format, emit)
}

/// The ranges of rows [`encode_png_from`] asks its source for, one per band (with the row
/// above it), in order: what a source that copies rows ahead of the encoder copies.
pub fn png_source_rows(width: u32, height: u32, format: PixelFormat) -> Vec<Range<usize>> {
    source_rows(width, height, format)
}

/// A raster's own rows, for [`encode_png_from`].
impl RowSource for Raster {
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        _buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError> {
        let row_len = self.width() as usize * self.format().bytes_per_pixel() as usize;
        self.pixels()
            .get(rows.start * row_len..rows.end * row_len)
            .ok_or_else(|| EncodeError(format!("rows {rows:?} are not in the image")))
    }
}

/// A small 8-bit PNG preview whose longer side is at most `max_side` pixels.
///
/// The preview keeps the aspect ratio and is never larger than the raster. It is RGB, or RGBA
/// when the raster has alpha; gray rasters are shown as gray RGB. Each preview pixel is the
/// average of the raster pixels it covers.
pub fn thumbnail_png(raster: &Raster, max_side: u32) -> Result<Vec<u8>, EncodeError> {
    let mut preview = Preview::new(raster.width(), raster.height(), raster.format(), max_side);
    let row_len = raster.width() as usize * raster.format().bytes_per_pixel() as usize;
    for row in raster.pixels().chunks_exact(row_len.max(1)) {
        preview.push_row(row);
    }
    preview.finish()
}

/// The preview [`thumbnail_png`] makes, built from an image's rows as they come (from a
/// decoder, on their way into the segment), without the whole image in memory.
#[derive(Debug)]
pub struct Preview {
    format: PixelFormat,
    source_height: usize,
    width: usize,
    height: usize,
    /// The source columns `[left, right)` each preview column covers.
    columns: Vec<(usize, usize)>,
    /// Sums of the samples of the preview row being built, per column and channel.
    sums: Vec<u64>,
    /// The preview rows made so far.
    pixels: Vec<u8>,
    /// The source rows seen so far.
    rows_seen: usize,
    /// The preview row being built.
    row: usize,
}

impl Preview {
    /// A preview of a `source_width` x `source_height` image of `format` whose longer side is
    /// at most `max_side` pixels.
    pub fn new(source_width: u32, source_height: u32, format: PixelFormat, max_side: u32) -> Self {
        let (width, height) = thumbnail_size(source_width, source_height, max_side);
        let (width, height) = (width as usize, height as usize);
        let channels = format.channels() as usize;
        let output_channels = if has_alpha(format) { 4 } else { 3 };
        Preview {
            format,
            source_height: source_height as usize,
            width,
            height,
            columns: (0..width)
                .map(|x| source_span(x, source_width as usize, width))
                .collect(),
            sums: vec![0; width * channels],
            pixels: Vec::with_capacity(width * height * output_channels),
            rows_seen: 0,
            row: 0,
        }
    }

    /// Takes the next source row (top to bottom, in a raster's byte order). Rows past the
    /// image's height are ignored.
    pub fn push_row(&mut self, row: &[u8]) {
        if self.row >= self.height {
            return;
        }
        let channels = self.format.channels() as usize;
        let sample_bytes = (self.format.bit_depth() / 8) as usize;
        let pixel_bytes = channels * sample_bytes;
        debug_assert!(
            self.columns
                .last()
                .is_none_or(|&(_, right)| row.len() >= right * pixel_bytes),
            "a preview row holds the image's whole width"
        );
        for (sum, &(left, right)) in self.sums.chunks_exact_mut(channels).zip(&self.columns) {
            let Some(span) = row.get(left * pixel_bytes..right * pixel_bytes) else {
                continue;
            };
            if sample_bytes == 1 {
                for pixel in span.chunks_exact(channels) {
                    for (total, &sample) in sum.iter_mut().zip(pixel) {
                        *total += u64::from(sample);
                    }
                }
            } else {
                for pixel in span.chunks_exact(pixel_bytes) {
                    for (total, sample) in sum.iter_mut().zip(pixel.chunks_exact(2)) {
                        *total += u64::from(u16::from_ne_bytes([sample[0], sample[1]]));
                    }
                }
            }
        }
        self.rows_seen += 1;
        let (top, bottom) = source_span(self.row, self.source_height, self.height);
        if self.rows_seen >= bottom {
            self.emit_row(bottom - top);
        }
    }

    /// Turns the sums of the `rows` source rows just seen into the next preview row.
    fn emit_row(&mut self, rows: usize) {
        let channels = self.format.channels() as usize;
        let sample_max: u64 = if self.format.bit_depth() == 8 {
            255
        } else {
            65535
        };
        for (sum, &(left, right)) in self.sums.chunks_exact(channels).zip(&self.columns) {
            let count = ((right - left) * rows) as u64;
            // Mean of the covered samples, rescaled to 0..=255, rounded to nearest.
            let divisor = count * sample_max;
            let to_8bit = |total: u64| ((total * 255 + divisor / 2) / divisor) as u8;
            match *sum {
                [gray] => self.pixels.extend_from_slice(&[to_8bit(gray); 3]),
                [gray, alpha] => {
                    let gray = to_8bit(gray);
                    self.pixels
                        .extend_from_slice(&[gray, gray, gray, to_8bit(alpha)]);
                }
                [red, green, blue] => {
                    self.pixels
                        .extend_from_slice(&[to_8bit(red), to_8bit(green), to_8bit(blue)]);
                }
                [red, green, blue, alpha] => self.pixels.extend_from_slice(&[
                    to_8bit(red),
                    to_8bit(green),
                    to_8bit(blue),
                    to_8bit(alpha),
                ]),
                _ => unreachable!("a pixel has 1 to 4 channels"),
            }
        }
        self.sums.fill(0);
        self.row += 1;
    }

    /// The preview as a PNG. Fails if fewer rows than the image has were pushed.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        if self.row < self.height {
            return Err(EncodeError(format!(
                "the preview got {} of the image's {} rows",
                self.rows_seen, self.source_height
            )));
        }
        let format = if has_alpha(self.format) {
            PixelFormat::Rgba8
        } else {
            PixelFormat::Rgb8
        };
        write_png(&self.pixels, self.width as u32, self.height as u32, format)
    }
}

fn has_alpha(format: PixelFormat) -> bool {
    matches!(format.channels(), 2 | 4)
}

/// The preview size for a `width` x `height` image: the longer side scaled down to `max_side`
/// (at least 1), the shorter in proportion (rounded, at least 1); unchanged if it already fits.
fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let max_side = max_side.max(1);
    let longer = width.max(height);
    if longer <= max_side {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(max_side) + u64::from(longer) / 2) / u64::from(longer);
        // scaled <= max_side because side <= longer, so the conversion cannot fail.
        u32::try_from(scaled).unwrap_or(max_side).max(1)
    };
    (scale(width), scale(height))
}

/// The source range `[start, end)` that output index `index` of `output_len` covers along an
/// axis of `source_len` samples. Never empty while `output_len <= source_len`.
fn source_span(index: usize, source_len: usize, output_len: usize) -> (usize, usize) {
    let start = index * source_len / output_len;
    let end = (index + 1) * source_len / output_len;
    (start, end.max(start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{DecodeLimits, decode};

    const ROOMY: DecodeLimits = DecodeLimits {
        max_pixels: 1_000_000,
    };

    fn raster_of(width: u32, height: u32, format: PixelFormat, pixels: Vec<u8>) -> Raster {
        Raster::new(width, height, format, pixels).unwrap()
    }

    fn sixteen_bit(samples: &[u16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_ne_bytes()).collect()
    }

    #[test]
    fn sizes_keep_the_aspect_ratio_and_never_grow() {
        assert_eq!(thumbnail_size(3840, 2160, 256), (256, 144));
        assert_eq!(thumbnail_size(2160, 3840, 256), (144, 256));
        assert_eq!(thumbnail_size(1000, 1000, 256), (256, 256));
        assert_eq!(thumbnail_size(100, 50, 256), (100, 50));
        assert_eq!(thumbnail_size(256, 10, 256), (256, 10));
        assert_eq!(thumbnail_size(10_000, 1, 100), (100, 1));
        assert_eq!(thumbnail_size(1, 10_000, 100), (1, 100));
        assert_eq!(thumbnail_size(300, 200, 0), (1, 1));
    }

    #[test]
    fn wide_16_bit_raster_gives_a_small_8_bit_rgb_preview() {
        let samples: Vec<u16> = (0..400 * 100 * 3)
            .map(|i| (i * 97 % 65536) as u16)
            .collect();
        let raster = raster_of(400, 100, PixelFormat::Rgb16, sixteen_bit(&samples));
        let preview = decode(&thumbnail_png(&raster, 64).unwrap(), &ROOMY).unwrap();
        assert_eq!(preview.raster.format(), PixelFormat::Rgb8);
        assert_eq!((preview.raster.width(), preview.raster.height()), (64, 16));
    }

    #[test]
    fn tall_gray_alpha_raster_keeps_its_alpha() {
        let pixels: Vec<u8> = (0..30 * 90).flat_map(|i| [(i % 256) as u8, 77]).collect();
        let raster = raster_of(30, 90, PixelFormat::La8, pixels);
        let preview = decode(&thumbnail_png(&raster, 45).unwrap(), &ROOMY).unwrap();
        assert_eq!(preview.raster.format(), PixelFormat::Rgba8);
        assert_eq!((preview.raster.width(), preview.raster.height()), (15, 45));
        for pixel in preview.raster.pixels().chunks_exact(4) {
            assert_eq!(pixel[0], pixel[1]);
            assert_eq!(pixel[1], pixel[2]);
            assert_eq!(pixel[3], 77);
        }
    }

    #[test]
    fn small_raster_is_not_upscaled_and_keeps_its_pixels() {
        let pixels: Vec<u8> = (0..20 * 10 * 4).map(|i| (i * 7 % 256) as u8).collect();
        let raster = raster_of(20, 10, PixelFormat::Rgba8, pixels.clone());
        let preview = decode(&thumbnail_png(&raster, 64).unwrap(), &ROOMY).unwrap();
        assert_eq!((preview.raster.width(), preview.raster.height()), (20, 10));
        assert_eq!(preview.raster.pixels(), pixels.as_slice());
    }

    #[test]
    fn preview_pixels_are_the_mean_of_what_they_cover() {
        // 4x2 gray 16-bit: left 2x2 block averages to 0x8000 (128 in 8 bits), right to 0xFFFF.
        let raster = raster_of(
            4,
            2,
            PixelFormat::L16,
            sixteen_bit(&[
                0x0000, 0xFFFF, 0xFFFF, 0xFFFF, 0x8000, 0x8001, 0xFFFF, 0xFFFF,
            ]),
        );
        let preview = decode(&thumbnail_png(&raster, 2).unwrap(), &ROOMY).unwrap();
        assert_eq!(preview.raster.format(), PixelFormat::Rgb8);
        assert_eq!((preview.raster.width(), preview.raster.height()), (2, 1));
        assert_eq!(preview.raster.pixels(), &[128, 128, 128, 255, 255, 255]);
    }

    #[test]
    fn png_is_compressed_with_the_fast_settings() {
        // A flat raster must shrink to a tiny file: the encoder really compresses.
        let raster = raster_of(512, 512, PixelFormat::Rgb8, vec![90; 512 * 512 * 3]);
        let png = encode_png(&raster).unwrap();
        assert!(png.len() < 20_000, "{} bytes", png.len());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}
