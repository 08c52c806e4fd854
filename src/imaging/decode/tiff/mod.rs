//! TIFF: the tags are read by the `tiff` crate (classic TIFF and BigTIFF, either byte order);
//! the strips and tiles are decompressed, unpacked and put together here.
//!
//! TIFF is a family more than a format, and the `tiff` crate's own pixel reader covers only part
//! of it (it panics on tiled images stored one plane per sample, and refuses palettes and gray
//! below 8 bits). So each chunk is decompressed on its own (see [`compression`]), and each
//! sample is read at whatever depth the file stores it and scaled into the raster:
//!
//! - 1, 2, 4 and 8-bit unsigned samples (and palette indices) become 8-bit; 9- to 32-bit
//!   unsigned samples become 16-bit, scaled to the full range (12-bit 4095 is 65535); 16-, 32-
//!   and 64-bit floats are clamped to 0..1 and become 16-bit.
//! - Signed samples: 8-bit ones are taken bit for bit, as libtiff, Pillow and ImageMagick show
//!   them; 16- and 32-bit ones are offset so the most negative value is black, as ImageMagick
//!   does.
//! - Gray (either polarity), RGB, palette (a 16-bit color map becomes 8-bit RGB, or 16-bit RGB
//!   for 16-bit indices), CMYK (converted to RGB as the `image` crate does) and JPEG-compressed
//!   YCbCr (converted by the JPEG decoder).
//! - The first extra sample is alpha when ExtraSamples says so (or, for RGB with four samples
//!   and no ExtraSamples tag, as the `image` crate always read it); premultiplied (associated)
//!   alpha is divided out. Other extra samples are skipped, and their planes never read.
//! - Chunky or planar, strips or tiles (partial tiles at the right and bottom edges cropped),
//!   horizontal and floating-point predictors, FillOrder 2 (bits reversed), the Orientation tag.
//!
//! Limits: the pixel count is checked before anything is allocated; the raster is allocated
//! once, at its exact size; each chunk's buffer is the size the chunk's rows take, and a tile
//! may not be larger than the whole picture by more than [`TILE_SLACK_BYTES`].

mod compression;

use std::io::Cursor;

use image::metadata::Orientation;
use tiff::decoder::Decoder;
use tiff::tags::Tag;
use tiff::{TiffError, TiffFormatError, TiffUnsupportedError};

use super::orientation;
use crate::imaging::{DecodeError, DecodeLimits};
use crate::raster::{PixelFormat, Raster};

const FORMAT: &str = "TIFF";

/// How much larger than the whole picture one tile's buffer may be: tiles are often larger than
/// a small picture (256x256 tiles for a 100x40 image), but never by much more than this in
/// files anyone writes.
const TILE_SLACK_BYTES: u64 = 16 * 1024 * 1024;

/// Tags the `tiff` crate has no name for.
const T4_OPTIONS: Tag = Tag::Unknown(292);
const INK_SET: Tag = Tag::Unknown(332);

/// What went wrong in a TIFF, before it becomes a [`DecodeError`].
#[derive(Debug)]
pub enum TiffProblem {
    Corrupt(String),
    Unsupported(Unsupported),
    /// A buffer the picture needs could not be allocated.
    OutOfMemory(DecodeError),
}

/// A feature of TIFF this module does not read.
#[derive(Debug)]
pub enum Unsupported {
    Compression(u16),
    Feature(String),
}

impl From<TiffError> for TiffProblem {
    fn from(error: TiffError) -> TiffProblem {
        match error {
            TiffError::UnsupportedError(TiffUnsupportedError::UnknownInterpretation) => {
                TiffProblem::Unsupported(Unsupported::Feature(
                    "a color model (PhotometricInterpretation) that is missing or unknown"
                        .to_owned(),
                ))
            }
            TiffError::UnsupportedError(unsupported) => {
                TiffProblem::Unsupported(Unsupported::Feature(unsupported.to_string()))
            }
            TiffError::IoError(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                TiffProblem::Corrupt("the data ends too early".to_owned())
            }
            TiffError::FormatError(TiffFormatError::InconsistentSizesEncountered) => {
                TiffProblem::Corrupt("its strip or tile tags do not agree with its size".to_owned())
            }
            other => TiffProblem::Corrupt(other.to_string()),
        }
    }
}

/// A zeroed buffer of `len` samples, allocated fallibly (see [`super::zeroed`]).
fn zeroed<T: bytemuck::Zeroable>(len: u64) -> Result<Vec<T>, TiffProblem> {
    super::zeroed(len).map_err(TiffProblem::OutOfMemory)
}

fn corrupt(detail: impl Into<String>) -> TiffProblem {
    TiffProblem::Corrupt(detail.into())
}

fn unsupported(feature: impl Into<String>) -> TiffProblem {
    TiffProblem::Unsupported(Unsupported::Feature(feature.into()))
}

/// Decodes the first image of a TIFF.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Raster, DecodeError> {
    match read(bytes, limits) {
        Ok(raster) => Ok(raster),
        Err(Refusal::Decode(error) | Refusal::Tiff(TiffProblem::OutOfMemory(error))) => Err(error),
        Err(Refusal::Tiff(TiffProblem::Corrupt(detail))) => Err(DecodeError::Corrupt {
            format: FORMAT,
            detail,
        }),
        Err(Refusal::Tiff(TiffProblem::Unsupported(what))) => Err(DecodeError::Unsupported {
            format: FORMAT,
            feature: match what {
                Unsupported::Compression(code) => compression::unsupported_name(code)
                    .unwrap_or("a compression scheme this server does not know")
                    .to_owned(),
                Unsupported::Feature(feature) => feature,
            },
        }),
    }
}

/// Either a finished refusal (too many pixels) or a problem with the file.
enum Refusal {
    Decode(DecodeError),
    Tiff(TiffProblem),
}

impl<T: Into<TiffProblem>> From<T> for Refusal {
    fn from(problem: T) -> Refusal {
        Refusal::Tiff(problem.into())
    }
}

/// How the samples of a file are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleKind {
    Unsigned,
    Signed,
    Float,
}

/// The color model of the stored samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Photometric {
    /// Gray; `white_is_zero` for PhotometricInterpretation 0.
    Gray {
        white_is_zero: bool,
    },
    Rgb,
    Palette,
    Cmyk,
}

/// Where one stored sample goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Into this channel of the raster.
    Channel(usize),
    /// Into the black plane kept aside for CMYK.
    Black,
    /// Nowhere: an extra sample that is not alpha.
    Skip,
}

/// Everything the tags say about the first image, checked.
struct Layout {
    width: u32,
    height: u32,
    bits: u32,
    kind: SampleKind,
    photometric: Photometric,
    samples: usize,
    planar: bool,
    alpha: Option<Alpha>,
    compression: u16,
    predictor: u16,
    reversed_bits: bool,
    group3_options: u32,
    jpeg_tables: Option<Vec<u8>>,
    color_map: Option<Vec<u16>>,
    chunk_width: u32,
    chunk_height: u32,
    tiled: bool,
    offsets: Vec<u64>,
    byte_counts: Vec<u64>,
    format: PixelFormat,
    orientation: Orientation,
    /// Whether the samples are YCbCr inside JPEG compression, to be converted to RGB.
    ycbcr: bool,
    /// Whether multi-byte samples are stored most significant byte first ("MM").
    big_endian: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpha {
    Straight,
    Premultiplied,
}

fn read(bytes: &[u8], limits: &DecodeLimits) -> Result<Raster, Refusal> {
    let mut decoder = Decoder::new(Cursor::new(bytes))?;
    let (width, height) = decoder.dimensions()?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Refusal::Decode(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
        }));
    }
    let layout = read_layout(&mut decoder, width, height)?;
    let raster = assemble(bytes, &layout)?;
    orientation::apply(raster, layout.orientation).map_err(Refusal::Decode)
}

fn read_layout(
    decoder: &mut Decoder<Cursor<&[u8]>>,
    width: u32,
    height: u32,
) -> Result<Layout, Refusal> {
    let shorts = |decoder: &mut Decoder<Cursor<&[u8]>>, tag| -> Result<Option<Vec<u16>>, Refusal> {
        Ok(decoder.find_tag_unsigned_vec::<u16>(tag)?)
    };
    let short = |decoder: &mut Decoder<Cursor<&[u8]>>, tag, default| -> Result<u16, Refusal> {
        Ok(decoder.find_tag_unsigned::<u16>(tag)?.unwrap_or(default))
    };

    let samples = usize::from(short(decoder, Tag::SamplesPerPixel, 1)?);
    let bits_per_sample = shorts(decoder, Tag::BitsPerSample)?.unwrap_or_else(|| vec![1]);
    let bits = u32::from(bits_per_sample[0]);
    if bits_per_sample.iter().any(|&b| u32::from(b) != bits) {
        return Err(unsupported(format!(
            "samples of different sizes ({bits_per_sample:?} bits)"
        ))
        .into());
    }
    let formats = shorts(decoder, Tag::SampleFormat)?.unwrap_or_else(|| vec![1]);
    if formats.iter().any(|&f| f != formats[0]) {
        return Err(unsupported(format!("samples of different types ({formats:?})")).into());
    }
    let kind = match (formats[0], bits) {
        (1 | 4, 1..=32) => SampleKind::Unsigned,
        (2, 8 | 16 | 32) => SampleKind::Signed,
        (3, 16 | 32 | 64) => SampleKind::Float,
        (format, bits) => {
            let name = match format {
                1 | 4 => "unsigned integer",
                2 => "signed integer",
                3 => "floating-point",
                5 | 6 => "complex",
                _ => "unknown",
            };
            return Err(unsupported(format!("{bits}-bit {name} samples")).into());
        }
    };

    let compression = short(decoder, Tag::Compression, compression::NONE)?;
    if compression::unsupported_name(compression).is_some() {
        return Err(Refusal::Tiff(TiffProblem::Unsupported(
            Unsupported::Compression(compression),
        )));
    }
    let photometric_tag = short(decoder, Tag::PhotometricInterpretation, 1)?;
    let (photometric, color_samples) = match photometric_tag {
        0 => (
            Photometric::Gray {
                white_is_zero: true,
            },
            1,
        ),
        1 => (
            Photometric::Gray {
                white_is_zero: false,
            },
            1,
        ),
        2 => (Photometric::Rgb, 3),
        3 => (Photometric::Palette, 1),
        5 => {
            let inks = short(decoder, INK_SET, 1)?;
            if inks != 1 {
                return Err(unsupported("inks other than CMYK (InkSet 2)").into());
            }
            (Photometric::Cmyk, 4)
        }
        // JPEG-compressed YCbCr comes out of the JPEG decoder as RGB.
        6 if compression == compression::JPEG => (Photometric::Rgb, 3),
        6 => return Err(unsupported("YCbCr samples without JPEG compression").into()),
        4 => return Err(unsupported("a transparency mask (PhotometricInterpretation 4)").into()),
        8..=10 => return Err(unsupported("CIE L*a*b* color").into()),
        32844 | 32845 => return Err(unsupported("SGI LogLuv color").into()),
        other => {
            return Err(unsupported(format!("PhotometricInterpretation {other}")).into());
        }
    };
    if samples < color_samples {
        return Err(corrupt(format!(
            "it has {samples} samples per pixel, fewer than its color model needs"
        ))
        .into());
    }
    if compression == compression::JPEG && (bits != 8 || kind != SampleKind::Unsigned) {
        return Err(unsupported(format!("JPEG compression of {bits}-bit samples")).into());
    }
    if matches!(compression, compression::FAX3 | compression::FAX4) && (bits != 1 || samples != 1) {
        return Err(corrupt("fax compression of samples that are not 1-bit gray").into());
    }
    if photometric == Photometric::Palette && (kind != SampleKind::Unsigned || bits > 16) {
        return Err(unsupported(format!("{bits}-bit palette indices")).into());
    }

    let extra_samples = shorts(decoder, Tag::ExtraSamples)?.unwrap_or_default();
    let alpha = if samples > color_samples {
        match extra_samples.first() {
            Some(1) => Some(Alpha::Premultiplied),
            Some(2) => Some(Alpha::Straight),
            None if photometric == Photometric::Rgb && samples == 4 => Some(Alpha::Straight),
            _ => None,
        }
    } else {
        None
    };

    let planar = match short(decoder, Tag::PlanarConfiguration, 1)? {
        1 => false,
        2 => samples > 1,
        other => return Err(corrupt(format!("PlanarConfiguration {other}")).into()),
    };
    let predictor = short(decoder, Tag::Predictor, 1)?;
    match predictor {
        1 => {}
        2 if kind != SampleKind::Float && matches!(bits, 8 | 16 | 32) => {}
        3 if kind == SampleKind::Float => {}
        2 | 3 => {
            return Err(
                unsupported(format!("predictor {predictor} with {bits}-bit samples")).into(),
            );
        }
        other => return Err(corrupt(format!("an unknown predictor ({other})")).into()),
    }
    let reversed_bits = match short(decoder, Tag::FillOrder, 1)? {
        1 => false,
        2 => true,
        other => return Err(corrupt(format!("FillOrder {other}")).into()),
    };
    let group3_options = decoder.find_tag_unsigned::<u32>(T4_OPTIONS)?.unwrap_or(0);
    let jpeg_tables = match compression {
        compression::JPEG => decoder
            .find_tag(Tag::JPEGTables)?
            .map(|value| value.into_u8_vec())
            .transpose()?,
        _ => None,
    };
    let color_map = match photometric {
        Photometric::Palette => {
            let map = shorts(decoder, Tag::ColorMap)?
                .ok_or_else(|| corrupt("a palette image without a ColorMap"))?;
            if map.len() != 3 << bits {
                return Err(corrupt(format!(
                    "its ColorMap has {} entries where {bits}-bit indices need {}",
                    map.len(),
                    3 << bits
                ))
                .into());
            }
            Some(map)
        }
        _ => None,
    };

    let tiled = decoder.find_tag(Tag::TileWidth)?.is_some();
    let (chunk_width, chunk_height, offsets, byte_counts) = if tiled {
        (
            decoder.get_tag_u32(Tag::TileWidth)?,
            decoder.get_tag_u32(Tag::TileLength)?,
            decoder.get_tag_u64_vec(Tag::TileOffsets)?,
            decoder.get_tag_u64_vec(Tag::TileByteCounts)?,
        )
    } else {
        let rows = decoder
            .find_tag_unsigned::<u32>(Tag::RowsPerStrip)?
            .unwrap_or(height);
        (
            width,
            rows.clamp(1, height),
            decoder.get_tag_u64_vec(Tag::StripOffsets)?,
            decoder.get_tag_u64_vec(Tag::StripByteCounts)?,
        )
    };
    if chunk_width == 0 || chunk_height == 0 {
        return Err(corrupt("its tiles are 0 pixels wide or high").into());
    }
    if tiled
        && (chunk_width % 16 != 0 || chunk_height % 16 != 0)
        && compression == compression::JPEG
    {
        return Err(corrupt("its JPEG tiles are not a multiple of 16 pixels").into());
    }

    let output_bits = match (photometric, kind, bits) {
        (_, _, _) if compression == compression::JPEG => 8,
        (Photometric::Palette, _, 16) => 16,
        (Photometric::Palette, _, _) => 8,
        (_, SampleKind::Unsigned, 1..=8) | (_, SampleKind::Signed, 8) => 8,
        _ => 16,
    };
    let channels = match photometric {
        Photometric::Gray { .. } => 1,
        Photometric::Rgb | Photometric::Palette | Photometric::Cmyk => 3,
    } + usize::from(alpha.is_some());
    let format = match (channels, output_bits) {
        (1, 8) => PixelFormat::L8,
        (2, 8) => PixelFormat::La8,
        (3, 8) => PixelFormat::Rgb8,
        (4, 8) => PixelFormat::Rgba8,
        (1, _) => PixelFormat::L16,
        (2, _) => PixelFormat::La16,
        (3, _) => PixelFormat::Rgb16,
        _ => PixelFormat::Rgba16,
    };
    let orientation = decoder
        .find_tag_unsigned::<u16>(Tag::Orientation)?
        .and_then(|value| Orientation::from_exif(u8::try_from(value).ok()?))
        .unwrap_or(Orientation::NoTransforms);

    Ok(Layout {
        width,
        height,
        bits,
        kind,
        photometric,
        samples,
        planar,
        alpha,
        compression,
        predictor,
        reversed_bits,
        group3_options,
        jpeg_tables,
        color_map,
        chunk_width,
        chunk_height,
        tiled,
        offsets,
        byte_counts,
        format,
        orientation,
        ycbcr: photometric_tag == 6,
        big_endian: decoder.byte_order() == tiff::tags::ByteOrder::BigEndian,
    })
}

impl Layout {
    /// The raster channel (or elsewhere) stored sample `sample` goes to.
    fn target(&self, sample: usize) -> Target {
        let color_samples = match self.photometric {
            Photometric::Gray { .. } | Photometric::Palette => 1,
            Photometric::Rgb => 3,
            Photometric::Cmyk => 4,
        };
        let color_channels = self.format.channels() as usize - usize::from(self.alpha.is_some());
        match sample {
            3 if self.photometric == Photometric::Cmyk => Target::Black,
            s if s < color_samples => Target::Channel(s),
            s if s == color_samples && self.alpha.is_some() => Target::Channel(color_channels),
            _ => Target::Skip,
        }
    }

    /// Samples stored per pixel in one chunk.
    fn chunk_samples(&self) -> usize {
        if self.planar { 1 } else { self.samples }
    }
}

/// Reads every chunk the raster needs and puts the picture together.
fn assemble(bytes: &[u8], layout: &Layout) -> Result<Raster, TiffProblem> {
    let (width, height) = (layout.width as usize, layout.height as usize);
    let channels = layout.format.channels() as usize;
    let sample_bytes = layout.format.bit_depth() as usize / 8;
    let raster_len = layout
        .format
        .byte_len(layout.width, layout.height)
        .ok_or_else(|| corrupt("its size overflows"))?;
    let mut pixels = zeroed::<u8>(raster_len)?;
    let mut black = match layout.photometric {
        Photometric::Cmyk => zeroed::<u16>(width as u64 * height as u64)?,
        _ => Vec::new(),
    };

    let across = layout.width.div_ceil(layout.chunk_width) as usize;
    let down = layout.height.div_ceil(layout.chunk_height) as usize;
    let per_plane = across * down;
    let planes = if layout.planar { layout.samples } else { 1 };
    if layout.offsets.len() < per_plane * planes || layout.byte_counts.len() < per_plane * planes {
        return Err(corrupt(format!(
            "it lists {} strips or tiles where its size needs {}",
            layout.offsets.len().min(layout.byte_counts.len()),
            per_plane * planes
        )));
    }

    let chunk_samples = layout.chunk_samples();
    let row_bits = u64::from(layout.chunk_width) * chunk_samples as u64 * u64::from(layout.bits);
    let row_bytes = usize::try_from(row_bits.div_ceil(8)).map_err(|_| corrupt("too large"))?;
    let whole_picture_bytes = u64::from(layout.width)
        * u64::from(layout.height)
        * layout.samples as u64
        * u64::from(layout.bits).div_ceil(8);
    let tile_bytes = row_bytes as u64 * u64::from(layout.chunk_height);
    if tile_bytes > whole_picture_bytes.saturating_add(TILE_SLACK_BYTES) {
        return Err(corrupt(format!(
            "one of its tiles ({}x{} pixels) is far larger than the whole picture",
            layout.chunk_width, layout.chunk_height
        )));
    }

    let reader = SampleReader::new(layout);
    // The common case: chunky unsigned samples at the raster's depth, every one of them a
    // channel of the raster in order, nothing to convert.
    let copies_rows = !layout.planar
        && layout.kind == SampleKind::Unsigned
        && layout.bits == layout.format.bit_depth()
        && matches!(
            layout.photometric,
            Photometric::Rgb
                | Photometric::Gray {
                    white_is_zero: false
                }
        )
        && layout.samples == channels
        && layout.alpha != Some(Alpha::Premultiplied)
        && (0..layout.samples).all(|s| layout.target(s) == Target::Channel(s));
    for plane in 0..planes {
        // Planes of extra samples nothing uses are never read (some writers leave them empty).
        if layout.planar && layout.target(plane) == Target::Skip {
            continue;
        }
        for chunk in 0..per_plane {
            let (cx, cy) = (chunk % across, chunk / across);
            let x0 = cx * layout.chunk_width as usize;
            let y0 = cy * layout.chunk_height as usize;
            let cols = (layout.chunk_width as usize).min(width - x0);
            let rows = (layout.chunk_height as usize).min(height - y0);
            // Strips hold only the rows of the picture; tiles are always whole.
            let stored_rows = if layout.tiled {
                layout.chunk_height as usize
            } else {
                rows
            };
            let index = plane * per_plane + chunk;
            let raw = chunk_bytes(bytes, layout.offsets[index], layout.byte_counts[index])?;
            let raw = if layout.reversed_bits && layout.compression != compression::JPEG {
                compression::reverse_bits(raw)
            } else {
                std::borrow::Cow::Borrowed(raw)
            };
            let decoded = match layout.compression {
                compression::JPEG => {
                    let (data, jpeg_width, jpeg_height, jpeg_channels) =
                        compression::unjpeg(&raw, layout.jpeg_tables.as_deref(), layout.ycbcr)?;
                    if (jpeg_width as usize) < cols || (jpeg_height as usize) < rows {
                        return Err(corrupt(format!(
                            "a JPEG tile of {jpeg_width}x{jpeg_height} pixels where \
                             {cols}x{rows} are needed"
                        )));
                    }
                    let stride = jpeg_width as usize * usize::from(jpeg_channels);
                    place_jpeg(
                        &data,
                        stride,
                        usize::from(jpeg_channels),
                        (x0, y0, cols, rows),
                        width,
                        channels,
                        layout,
                        &mut pixels,
                        &mut black,
                    );
                    continue;
                }
                compression::FAX3 | compression::FAX4 => compression::unfax(
                    &raw,
                    layout.compression,
                    layout.chunk_width,
                    stored_rows as u32,
                    layout.group3_options,
                )?,
                other => compression::decompress(&raw, other, row_bytes * stored_rows)?,
            };
            let mut decoded = decoded;
            for row in decoded.chunks_exact_mut(row_bytes).take(rows) {
                undo_predictor(row, layout, chunk_samples);
            }
            if copies_rows {
                // Stored exactly as the raster keeps them: copy whole rows (16-bit samples in
                // the file's byte order turned into native order).
                let bytes_per_row = cols * channels * sample_bytes;
                for (r, row) in decoded.chunks_exact(row_bytes).take(rows).enumerate() {
                    let at = ((y0 + r) * width + x0) * channels * sample_bytes;
                    let target = &mut pixels[at..at + bytes_per_row];
                    let source = &row[..bytes_per_row];
                    if sample_bytes == 1 || layout.big_endian == cfg!(target_endian = "big") {
                        target.copy_from_slice(source);
                    } else {
                        for (to, from) in target.chunks_exact_mut(2).zip(source.chunks_exact(2)) {
                            to.copy_from_slice(&[from[1], from[0]]);
                        }
                    }
                }
                continue;
            }
            for (r, row) in decoded.chunks_exact(row_bytes).take(rows).enumerate() {
                let y = y0 + r;
                for s in 0..chunk_samples {
                    let sample = if layout.planar { plane } else { s };
                    let target = layout.target(sample);
                    match target {
                        Target::Skip => {}
                        Target::Black => {
                            for x in 0..cols {
                                black[y * width + x0 + x] =
                                    reader.scaled(row, x * chunk_samples + s, false);
                            }
                        }
                        Target::Channel(channel) => {
                            let invert = channel == 0
                                && matches!(
                                    layout.photometric,
                                    Photometric::Gray {
                                        white_is_zero: true
                                    }
                                );
                            let raw_index =
                                layout.photometric == Photometric::Palette && channel == 0;
                            for x in 0..cols {
                                let value = if raw_index {
                                    reader.raw(row, x * chunk_samples + s) as u16
                                } else {
                                    reader.scaled(row, x * chunk_samples + s, invert)
                                };
                                let at = ((y * width + x0 + x) * channels + channel) * sample_bytes;
                                if sample_bytes == 1 {
                                    pixels[at] = value as u8;
                                } else {
                                    pixels[at..at + 2].copy_from_slice(&value.to_ne_bytes());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    finish_colors(&mut pixels, &black, layout);
    Raster::new(layout.width, layout.height, layout.format, pixels)
        .map_err(|error| corrupt(error.to_string()))
}

/// The stored bytes of one chunk; a chunk that runs past the end of the file is cut there (the
/// decompressor then finds out whether enough is left).
fn chunk_bytes(bytes: &[u8], offset: u64, count: u64) -> Result<&[u8], TiffProblem> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    if start >= bytes.len() && count > 0 {
        return Err(corrupt("a strip or tile starts past the end of the file"));
    }
    let end = start.saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
    Ok(&bytes[start.min(bytes.len())..end.min(bytes.len())])
}

/// Copies a decoded JPEG chunk (8-bit gray, RGB or CMYK) into the raster (and, for CMYK, the
/// black plane).
#[allow(clippy::too_many_arguments)]
fn place_jpeg(
    data: &[u8],
    stride: usize,
    jpeg_channels: usize,
    (x0, y0, cols, rows): (usize, usize, usize, usize),
    width: usize,
    channels: usize,
    layout: &Layout,
    pixels: &mut [u8],
    black: &mut [u16],
) {
    let color_channels = channels - usize::from(layout.alpha.is_some());
    let cmyk = layout.photometric == Photometric::Cmyk && jpeg_channels == 4;
    for r in 0..rows {
        for x in 0..cols {
            let source = &data[r * stride + x * jpeg_channels..][..jpeg_channels];
            let pixel = (y0 + r) * width + x0 + x;
            let at = pixel * channels;
            for c in 0..color_channels {
                pixels[at + c] = source[c.min(jpeg_channels - 1)];
            }
            if cmyk {
                black[pixel] = u16::from(source[3]);
            }
            if layout.alpha.is_some() {
                pixels[at + color_channels] = 255;
            }
        }
    }
}

/// Undoes horizontal differencing (predictor 2) or the floating-point predictor (3) in one row.
fn undo_predictor(row: &mut [u8], layout: &Layout, samples: usize) {
    let little = !layout.big_endian;
    match (layout.predictor, layout.bits) {
        (2, 8) => {
            for i in samples..row.len() {
                row[i] = row[i].wrapping_add(row[i - samples]);
            }
        }
        (2, 16) => {
            let read = |b: &[u8]| {
                if little {
                    u16::from_le_bytes([b[0], b[1]])
                } else {
                    u16::from_be_bytes([b[0], b[1]])
                }
            };
            let count = row.len() / 2;
            for i in samples..count {
                let value = read(&row[i * 2..]).wrapping_add(read(&row[(i - samples) * 2..]));
                let bytes = if little {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                row[i * 2..i * 2 + 2].copy_from_slice(&bytes);
            }
        }
        (2, 32) => {
            let read = |b: &[u8]| {
                let b = [b[0], b[1], b[2], b[3]];
                if little {
                    u32::from_le_bytes(b)
                } else {
                    u32::from_be_bytes(b)
                }
            };
            let count = row.len() / 4;
            for i in samples..count {
                let value = read(&row[i * 4..]).wrapping_add(read(&row[(i - samples) * 4..]));
                let bytes = if little {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                row[i * 4..i * 4 + 4].copy_from_slice(&bytes);
            }
        }
        (3, bits) => {
            // Bytes differenced across the row, then the samples' bytes stored by
            // significance: every sample's most significant byte first.
            for i in samples..row.len() {
                row[i] = row[i].wrapping_add(row[i - samples]);
            }
            let width = (bits / 8) as usize;
            let count = row.len() / width;
            let shuffled = row[..count * width].to_vec();
            for sample in 0..count {
                for byte in 0..width {
                    let value = shuffled[byte * count + sample];
                    // Back to the file's byte order, which the sample reader expects.
                    let position = if little { width - 1 - byte } else { byte };
                    row[sample * width + position] = value;
                }
            }
        }
        _ => {}
    }
}

/// Reads stored samples out of a row and scales them to the raster's depth.
struct SampleReader {
    bits: u32,
    kind: SampleKind,
    big_endian: bool,
    /// 8 or 16: the raster's bits per sample.
    output_bits: u32,
}

impl SampleReader {
    fn new(layout: &Layout) -> SampleReader {
        SampleReader {
            bits: layout.bits,
            kind: layout.kind,
            big_endian: layout.big_endian,
            output_bits: layout.format.bit_depth(),
        }
    }

    /// Stored sample `index` of `row`, as an unsigned number of `bits` bits.
    fn raw(&self, row: &[u8], index: usize) -> u64 {
        let bits = self.bits as usize;
        match bits {
            8 => u64::from(row[index]),
            16 | 24 | 32 | 64 => {
                let width = bits / 8;
                let bytes = &row[index * width..(index + 1) * width];
                let mut value = 0u64;
                for k in 0..width {
                    let byte = if self.big_endian {
                        bytes[k]
                    } else {
                        bytes[width - 1 - k]
                    };
                    value = (value << 8) | u64::from(byte);
                }
                value
            }
            _ => {
                // Packed most significant bit first, across byte boundaries.
                let start = index * bits;
                let mut value = 0u64;
                for bit in start..start + bits {
                    let set = (row[bit / 8] >> (7 - bit % 8)) & 1;
                    value = (value << 1) | u64::from(set);
                }
                value
            }
        }
    }

    /// Stored sample `index` of `row` at the raster's depth (`invert` for white-is-zero gray).
    fn scaled(&self, row: &[u8], index: usize, invert: bool) -> u16 {
        let raw = self.raw(row, index);
        let out_max = (1u64 << self.output_bits) - 1;
        let value = match self.kind {
            SampleKind::Unsigned => {
                let max = (1u64 << self.bits) - 1;
                if self.bits == self.output_bits {
                    raw
                } else {
                    (raw * out_max + max / 2) / max
                }
            }
            SampleKind::Signed if self.bits == 8 => raw,
            SampleKind::Signed => {
                let half = 1u64 << (self.bits - 1);
                let offset = raw ^ half;
                let max = (1u64 << self.bits) - 1;
                (offset * out_max + max / 2) / max
            }
            SampleKind::Float => {
                let value = match self.bits {
                    16 => f64::from(half::f16::from_bits(raw as u16).to_f32()),
                    32 => f64::from(f32::from_bits(raw as u32)),
                    _ => f64::from_bits(raw),
                };
                if value.is_nan() {
                    0
                } else {
                    (value.clamp(0.0, 1.0) * out_max as f64).round() as u64
                }
            }
        };
        let value = if invert { out_max - value } else { value };
        value as u16
    }
}

/// The last pass over the raster: palette indices become colors, CMYK becomes RGB, and
/// premultiplied alpha is divided out.
fn finish_colors(pixels: &mut [u8], black: &[u16], layout: &Layout) {
    let channels = layout.format.channels() as usize;
    let sixteen = layout.format.bit_depth() == 16;
    let read = |pixels: &[u8], at: usize| -> u32 {
        if sixteen {
            u32::from(u16::from_ne_bytes([pixels[at * 2], pixels[at * 2 + 1]]))
        } else {
            u32::from(pixels[at])
        }
    };
    let write = |pixels: &mut [u8], at: usize, value: u32| {
        if sixteen {
            pixels[at * 2..at * 2 + 2].copy_from_slice(&(value as u16).to_ne_bytes());
        } else {
            pixels[at] = value as u8;
        }
    };
    let max = if sixteen { 65535u32 } else { 255 };
    let count = layout.width as usize * layout.height as usize;

    if let Some(map) = &layout.color_map {
        let entries = map.len() / 3;
        // Old writers stored 8-bit values in the 16-bit map; libtiff and Pillow read those as
        // they are rather than as nearly black.
        let eight_bit_map = map.iter().all(|&v| v < 256);
        let level = |v: u16| -> u32 {
            match (sixteen, eight_bit_map) {
                (true, true) => u32::from(v) * 257,
                (true, false) => u32::from(v),
                (false, true) => u32::from(v),
                (false, false) => u32::from(v >> 8),
            }
        };
        for pixel in 0..count {
            let index = read(pixels, pixel * channels) as usize;
            let index = if index < entries { index } else { 0 };
            for c in 0..3 {
                write(
                    pixels,
                    pixel * channels + c,
                    level(map[c * entries + index]),
                );
            }
        }
    }
    if layout.photometric == Photometric::Cmyk {
        for (pixel, &ink) in black.iter().enumerate().take(count) {
            let k = 1.0 - f64::from(ink) / f64::from(max);
            for c in 0..3 {
                let ink = f64::from(read(pixels, pixel * channels + c));
                write(
                    pixels,
                    pixel * channels + c,
                    ((f64::from(max) - ink) * k) as u32,
                );
            }
        }
    }
    if layout.alpha == Some(Alpha::Premultiplied) {
        let color_channels = channels - 1;
        for pixel in 0..count {
            let alpha = read(pixels, pixel * channels + color_channels);
            for c in 0..color_channels {
                let at = pixel * channels + c;
                let value = match alpha {
                    0 => 0,
                    alpha => ((read(pixels, at) * max + alpha / 2) / alpha).min(max),
                };
                write(pixels, at, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRIP_OFFSET: u32 = u32::MAX;
    const SHORT: u16 = 3;
    const LONG: u16 = 4;

    /// A little-endian TIFF with the given (tag, type, value) entries and `data` right after
    /// the header; [`STRIP_OFFSET`] as a value stands for where `data` starts.
    fn tiff(entries: &[(u16, u16, u32)], data: &[u8]) -> Vec<u8> {
        let data_at = 8u32;
        let padded = data.len() + data.len() % 2;
        let ifd_at = data_at + padded as u32;
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&ifd_at.to_le_bytes());
        out.extend_from_slice(data);
        out.resize(8 + padded, 0);
        let mut sorted = entries.to_vec();
        sorted.sort_by_key(|entry| entry.0);
        out.extend_from_slice(&(sorted.len() as u16).to_le_bytes());
        for (tag, kind, value) in sorted {
            let value = if value == STRIP_OFFSET {
                data_at
            } else {
                value
            };
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            if kind == SHORT {
                out.extend_from_slice(&(value as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    fn gray_strip(width: u32, height: u32, bits: u32, compression: u32, data: &[u8]) -> Vec<u8> {
        tiff(
            &[
                (256, LONG, width),
                (257, LONG, height),
                (258, SHORT, bits),
                (259, SHORT, compression),
                (262, SHORT, 1),
                (273, LONG, STRIP_OFFSET),
                (277, SHORT, 1),
                (278, LONG, height),
                (279, LONG, data.len() as u32),
            ],
            data,
        )
    }

    const ROOMY: DecodeLimits = DecodeLimits {
        max_pixels: 1_000_000,
    };

    fn samples16(raster: &Raster) -> Vec<u16> {
        raster
            .pixels()
            .chunks_exact(2)
            .map(|pair| u16::from_ne_bytes([pair[0], pair[1]]))
            .collect()
    }

    #[test]
    fn gray_of_every_depth_is_scaled_to_8_or_16_bits() {
        // 2-bit: 0, 1, 2, 3 -> 0, 85, 170, 255.
        let raster = decode(&gray_strip(4, 1, 2, 1, &[0b0001_1011]), &ROOMY).unwrap();
        assert_eq!(raster.format(), PixelFormat::L8);
        assert_eq!(raster.pixels(), &[0, 85, 170, 255]);
        // 12-bit, packed across bytes: 4095 -> 65535, 2048 -> 32776 (rounded).
        let raster = decode(&gray_strip(2, 1, 12, 1, &[0xFF, 0xF8, 0x00]), &ROOMY).unwrap();
        assert_eq!(raster.format(), PixelFormat::L16);
        assert_eq!(samples16(&raster), [65535, 32776]);
        // 32-bit unsigned without a SampleFormat tag: integers, never floats.
        let data = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x80];
        let raster = decode(&gray_strip(2, 1, 32, 1, &data), &ROOMY).unwrap();
        assert_eq!(samples16(&raster), [65535, 32768]);
    }

    #[test]
    fn the_pixel_limit_is_checked_before_anything_is_read() {
        let bomb = gray_strip(100_000, 100_000, 8, 1, &[0; 16]);
        assert!(matches!(
            decode(&bomb, &ROOMY),
            Err(DecodeError::TooManyPixels {
                pixels: 10_000_000_000,
                ..
            })
        ));
    }

    #[test]
    fn a_tile_far_larger_than_the_picture_is_refused_before_it_is_allocated() {
        // A 1x1 picture in one 65536x65536 tile: 4 GiB of tile for one pixel.
        let bomb = tiff(
            &[
                (256, LONG, 1),
                (257, LONG, 1),
                (258, SHORT, 8),
                (259, SHORT, 1),
                (262, SHORT, 1),
                (277, SHORT, 1),
                (322, LONG, 65536),
                (323, LONG, 65536),
                (324, LONG, STRIP_OFFSET),
                (325, LONG, 1),
            ],
            &[7],
        );
        match decode(&bomb, &ROOMY) {
            Err(DecodeError::Corrupt { detail, .. }) => {
                assert!(detail.contains("far larger"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_strip_that_ends_early_is_corrupt_not_padded() {
        let short = gray_strip(4, 2, 8, 1, &[1, 2, 3, 4, 5]);
        match decode(&short, &ROOMY) {
            Err(DecodeError::Corrupt {
                format: "TIFF",
                detail,
            }) => assert!(detail.contains("ends too early"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_compressions_are_named() {
        match decode(&gray_strip(1, 1, 8, 34925, &[0]), &ROOMY) {
            Err(DecodeError::Unsupported {
                format: "TIFF",
                feature,
            }) => assert_eq!(feature, "LZMA compression"),
            other => panic!("{other:?}"),
        }
    }
}
