//! Decoding uploads into rasters.
//!
//! The container format is recognised from the bytes alone (see [`super::formats`]), never from a
//! file name or a content type. The pixel count is checked against [`DecodeLimits::max_pixels`]
//! as soon as the decoder has read the header, before any pixel memory is allocated. The
//! decoders then run under an allocation limit made from the image's real size: its pixels in
//! the decoder's layout, plus the upload itself, plus a small allowance for tables and metadata.
//!
//! Every decoder is someone else's code reading untrusted bytes, so each runs inside a panic
//! boundary: a decoder that panics on a file has failed to read it, and the upload is refused
//! as corrupt (422), never answered with a 500.
//!
//! Most formats go through the `image` crate. Some are read here, where its decoders fall short:
//! TIFF ([`tiff`]: planes, tiles, palettes, any bit depth, fax, premultiplied alpha), JPEG
//! ([`jpeg`]: damaged picture data is refused, not filled with gray), BMP ([`bmp`]: OS/2 v2
//! headers, run-length files that skip pixels), GIF ([`gif`]: files without a color table) and
//! ICO/CUR ([`ico`]: PNG pictures in any pixel format).
//! The orientation is applied for every format that can carry one ([`orientation`]).
//!
//! The decoded image keeps its pixel format. Pixel buffers are allocated fallibly (an
//! allocation failure refuses the upload instead of aborting the process); 8-bit and 16-bit
//! buffers move into the raster without a copy; float images (TIFF, Radiance HDR, OpenEXR) are
//! clamped to 0..1 and become 16-bit, without tone mapping.

mod bmp;
mod gif;
mod ico;
mod jpeg;
mod orientation;
mod plain_png;
mod tiff;

pub use plain_png::{PlainLayout as PlainPng, SourcePng};

/// The layout of `bytes` if they are a plain PNG, one whose own image data is a PNG of exactly
/// the pixels decoded from it (see `plain_png`); `None` for anything else.
pub fn plain_png(bytes: &[u8]) -> Option<PlainPng> {
    plain_png::plain_layout(bytes)
}

/// Decodes the plain PNG `plain` of `bytes` row by row, top to bottom, each row in a raster's
/// byte order handed to `row` (to be stored straight into the segment, with no copy of the
/// whole image). `Ok(false)` when the strict reader refuses the file after all: the rows given
/// so far are to be thrown away and the file read with [`decode`], which then reads it as any
/// other PNG. A decoder that panics has failed to read the file, as in [`decode`] (and so,
/// since `row` runs inside the same boundary, does a panic of `row`'s: keep it simple).
pub fn decode_plain_png_rows(
    bytes: &[u8],
    plain: &PlainPng,
    limits: &DecodeLimits,
    row: impl FnMut(&[u8]),
) -> Result<bool, DecodeError> {
    guarded("PNG", || plain_png::decode_rows(bytes, plain, limits, row))
}

use std::io::{self, Cursor};
use std::panic::{self, AssertUnwindSafe};

use image::error::{LimitErrorKind, UnsupportedErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::formats::{Container, Unreadable};
use super::{DecodeError, DecodeLimits, Decoded};
use crate::raster::{PixelFormat, Raster, RasterError};

#[cfg(test)]
use jpeg::jpeg_is_cut_short;

/// Bytes per pixel of the widest layout a decoder can hand back: RGBA with 32-bit float samples.
const WIDEST_PIXEL_BYTES: u64 = 16;

/// What a decoder may hold besides its output and the upload itself: Huffman and LZW tables,
/// row buffers, palettes, ICC profiles and other metadata.
const DECODER_WORKING_BYTES: u64 = 16 * 1024 * 1024;

/// The PNG file signature; the IHDR chunk must follow it directly.
#[cfg(test)]
const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Detects the format from the bytes, checks the limits, decodes, applies the orientation and
/// keeps the pixel format (float images become 16-bit).
///
/// Animations (GIF, WebP, APNG) yield their first frame; multi-page TIFFs their first page; ICO
/// and CUR files their largest picture.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let Some(container) = Container::detect(bytes) else {
        return Err(unrecognised(bytes));
    };
    decode_detected(bytes, container, limits, true)
}

/// [`decode`] for a file the strict reader of plain PNGs refused (or that is no plain PNG):
/// read it the ordinary way, without trying that reader again. `source_png` is `None`.
pub fn decode_ordinarily(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let Some(container) = Container::detect(bytes) else {
        return Err(unrecognised(bytes));
    };
    decode_detected(bytes, container, limits, false)
}

/// Decodes a file whose container was detected; plain PNGs through their own reader if
/// `plain_png_first`.
fn decode_detected(
    bytes: &[u8],
    container: Container,
    limits: &DecodeLimits,
    plain_png_first: bool,
) -> Result<Decoded, DecodeError> {
    let format = container.name();
    if plain_png_first
        && container == Container::Png
        && let Some(layout) = plain_png::plain_layout(bytes)
        && let Some((raster, source_png)) =
            guarded(format, || plain_png::decode(bytes, layout, limits))?
    {
        return Ok(Decoded {
            raster,
            format,
            source_png: Some(source_png),
        });
    }
    let raster = guarded(format, || decode_container(container, bytes, limits))?;
    Ok(Decoded {
        raster,
        format,
        source_png: None,
    })
}

/// Why bytes that start no format shmimage reads are refused: a format it recognises but does
/// not read is named, anything else is not an image.
pub(super) fn unrecognised(bytes: &[u8]) -> DecodeError {
    match Unreadable::detect(bytes) {
        Some(format) => DecodeError::UnreadableFormat {
            format: format.name(),
        },
        None => DecodeError::NotAnImage,
    }
}

/// Runs `decode` inside a panic boundary: a panic means the decoder could not read the file,
/// and becomes a refusal of it as corrupt. Nothing a decoder touches is shared with the rest of
/// the server (the upload's bytes are only read), so carrying on after one is sound.
fn guarded<T>(
    format: &'static str,
    decode: impl FnOnce() -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    panic::catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::warn!(format, reason, "the decoder panicked on an upload");
        Err(DecodeError::Corrupt {
            format,
            detail: "the decoder stopped on an internal error reading it".to_owned(),
        })
    })
}

/// Decodes a file whose container is known.
fn decode_container(
    container: Container,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Raster, DecodeError> {
    match container {
        Container::Tiff => tiff::decode(bytes, limits),
        Container::Jpeg => jpeg::decode(bytes, limits),
        Container::Bmp => bmp::decode(bytes, limits),
        Container::Gif => gif::decode(bytes, limits),
        Container::Ico | Container::Cur => ico::decode(bytes, container, limits),
        other => with_image_crate(bytes, other, limits),
    }
}

/// The `image` crate's name for a container it decodes.
pub(super) fn image_format(container: Container) -> ImageFormat {
    match container {
        Container::Png => ImageFormat::Png,
        Container::Jpeg => ImageFormat::Jpeg,
        Container::Gif => ImageFormat::Gif,
        Container::WebP => ImageFormat::WebP,
        Container::Bmp => ImageFormat::Bmp,
        Container::Tiff => ImageFormat::Tiff,
        Container::Qoi => ImageFormat::Qoi,
        Container::Pnm => ImageFormat::Pnm,
        Container::Tga => ImageFormat::Tga,
        // The ICO decoder reads CUR files too: they differ only in the type field.
        Container::Ico | Container::Cur => ImageFormat::Ico,
        Container::Hdr => ImageFormat::Hdr,
        Container::OpenExr => ImageFormat::OpenExr,
        Container::Farbfeld => ImageFormat::Farbfeld,
        Container::Dds => ImageFormat::Dds,
    }
}

/// Decodes `bytes` as `container` with the `image` crate: limits, orientation, raster.
fn with_image_crate(
    bytes: &[u8],
    container: Container,
    limits: &DecodeLimits,
) -> Result<Raster, DecodeError> {
    let format = container.name();
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(container));
    reader.limits(header_limits(limits, bytes.len()));
    let mut decoder = match reader.into_decoder() {
        Ok(decoder) => decoder,
        Err(error) => {
            // The PNG decoder reads every chunk up to the image data before it reports the
            // dimensions, so a header that claims a huge image and then breaks off fails here.
            // Its IHDR still says how big the image claims to be, and that is the better answer.
            // So does the BMP decoder for a side over 65535 pixels.
            let claimed = match container {
                Container::Png => png_header_dimensions(bytes),
                Container::Bmp => bmp_header_dimensions(bytes),
                _ => None,
            };
            if let Some((width, height)) = claimed {
                check_pixel_count(width, height, limits)?;
            }
            return Err(decode_error(format, error));
        }
    };

    let (width, height) = decoder.dimensions();
    check_pixel_count(width, height, limits)?;
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt {
            format,
            detail: format!("it claims to be {width}x{height} pixels"),
        });
    }
    // Now that the real size is known, the decoder may allocate for that image and no more.
    decoder
        .set_limits(image_limits(decoder.total_bytes(), bytes.len()))
        .map_err(|error| decode_error(format, error))?;

    let orientation = orientation_of(&mut decoder);
    let mut image = image_from_decoder(format, decoder)?;
    image.apply_orientation(orientation);

    raster_from_image(image).map_err(|error| DecodeError::Corrupt {
        format,
        detail: error.to_string(),
    })
}

/// A zeroed buffer of `len` samples, allocated fallibly: when the memory cannot be had, the
/// upload is refused with [`DecodeError::OutOfMemory`] instead of the process aborting. Every
/// buffer that grows with the image's size is made here.
pub(super) fn zeroed<T: bytemuck::Zeroable>(len: u64) -> Result<Vec<T>, DecodeError> {
    let bytes = len.saturating_mul(std::mem::size_of::<T>() as u64);
    usize::try_from(len)
        .ok()
        .and_then(|len| bytemuck::allocation::try_zeroed_vec(len).ok())
        .ok_or(DecodeError::OutOfMemory { bytes })
}

/// Decodes the pixels into a buffer of the decoder's own sample type, allocated fallibly:
/// when the memory cannot be had, the upload is refused with [`DecodeError::OutOfMemory`]
/// instead of the process aborting. (`DynamicImage::from_decoder` does the same, infallibly.)
fn image_from_decoder(
    container: &'static str,
    decoder: impl ImageDecoder,
) -> Result<DynamicImage, DecodeError> {
    use image::{ColorType, ImageBuffer};

    let (width, height) = decoder.dimensions();
    let bytes = decoder.total_bytes();
    let corrupt = |error| decode_error(container, error);
    let wrong_size = || DecodeError::Corrupt {
        format: container,
        detail: "the decoder's buffer does not match the image's size".to_owned(),
    };
    macro_rules! decode_into {
        ($sample:ty, $variant:ident) => {{
            let mut samples = zeroed::<$sample>(bytes / std::mem::size_of::<$sample>() as u64)?;
            decoder
                .read_image(bytemuck::cast_slice_mut(&mut samples))
                .map_err(corrupt)?;
            DynamicImage::$variant(
                ImageBuffer::from_raw(width, height, samples).ok_or_else(wrong_size)?,
            )
        }};
    }
    Ok(match decoder.color_type() {
        ColorType::L8 => decode_into!(u8, ImageLuma8),
        ColorType::La8 => decode_into!(u8, ImageLumaA8),
        ColorType::Rgb8 => decode_into!(u8, ImageRgb8),
        ColorType::Rgba8 => decode_into!(u8, ImageRgba8),
        ColorType::L16 => decode_into!(u16, ImageLuma16),
        ColorType::La16 => decode_into!(u16, ImageLumaA16),
        ColorType::Rgb16 => decode_into!(u16, ImageRgb16),
        ColorType::Rgba16 => decode_into!(u16, ImageRgba16),
        ColorType::Rgb32F => decode_into!(f32, ImageRgb32F),
        ColorType::Rgba32F => decode_into!(f32, ImageRgba32F),
        // A layout added to the image crate later: its own conversion handles it.
        _ => DynamicImage::from_decoder(decoder).map_err(corrupt)?,
    })
}

/// The orientation a decoder's metadata gives: Exif first (with or without the `Exif\0\0`
/// prefix), then XMP. A broken metadata block must not cost the user the picture: it counts as
/// no orientation at all.
fn orientation_of(decoder: &mut impl ImageDecoder) -> Orientation {
    if let Ok(Some(exif)) = decoder.exif_metadata()
        && let Some(orientation) = orientation::from_exif(&exif)
    {
        return orientation;
    }
    if let Ok(Some(xmp)) = decoder.xmp_metadata()
        && let Some(orientation) = orientation::from_xmp(&xmp)
    {
        return orientation;
    }
    Orientation::NoTransforms
}

/// The allocation limit while a decoder reads the header, before the image's size is known:
/// room for the largest image `limits` allows in the widest layout a decoder produces (RGBA
/// 32-bit float, 16 bytes a pixel), plus the size of the upload (a decoder may buffer compressed
/// chunks, never more than the file holds), plus a fixed allowance for tables and metadata.
///
/// The pixel count is checked exactly against `max_pixels` as soon as the header is read, and
/// the limit is then lowered to [`image_limits`].
pub(super) fn header_limits(limits: &DecodeLimits, upload_len: usize) -> Limits {
    let upload_len = u64::try_from(upload_len).unwrap_or(u64::MAX);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = None;
    decoder_limits.max_image_height = None;
    decoder_limits.max_alloc = Some(
        limits
            .max_pixels
            .saturating_mul(WIDEST_PIXEL_BYTES)
            .saturating_add(upload_len)
            .saturating_add(DECODER_WORKING_BYTES),
    );
    decoder_limits
}

/// The allocation limit once the image's size is known: its pixels in the decoder's own layout
/// (`image_bytes`), plus the upload, plus the fixed allowance.
fn image_limits(image_bytes: u64, upload_len: usize) -> Limits {
    let upload_len = u64::try_from(upload_len).unwrap_or(u64::MAX);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = None;
    decoder_limits.max_image_height = None;
    decoder_limits.max_alloc = Some(
        image_bytes
            .saturating_add(upload_len)
            .saturating_add(DECODER_WORKING_BYTES),
    );
    decoder_limits
}

/// Refuses an image of `width` x `height` if it has more pixels than `limits` allow.
pub(super) fn check_pixel_count(
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// The width and height a PNG's IHDR chunk claims, read straight from the bytes; `None` if the
/// file does not start with a signature and a whole IHDR header.
pub(super) fn png_header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let chunks = bytes.strip_prefix(b"\x89PNG\r\n\x1a\n")?;
    let (length, rest) = chunks.split_first_chunk::<4>()?;
    let (chunk_type, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*length) != 13 || chunk_type != b"IHDR" {
        return None;
    }
    let (width, rest) = rest.split_first_chunk::<4>()?;
    let (height, _) = rest.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*width), u32::from_be_bytes(*height)))
}

/// The width and height a BMP's info header claims (a negative height means top-down rows);
/// `None` if the file is too short or has only the old 12-byte core header.
pub(super) fn bmp_header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let field = |at: usize| -> Option<i32> {
        Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if !bytes.starts_with(b"BM") || field(14)? < 40 {
        return None;
    }
    Some((field(18)?.unsigned_abs(), field(22)?.unsigned_abs()))
}

/// Maps what the `image` crate reports to what shmimage tells the uploader.
///
/// Called only once the container is known and, when decoding has started, the pixel count has
/// passed the limit, so a limit error here is the decoder needing more memory than an image of
/// that size should, not an image that is too large.
fn decode_error(container: &'static str, error: ImageError) -> DecodeError {
    let detail = match error {
        ImageError::Unsupported(unsupported) => {
            // A feature of the format the decoder does not read (a DDS pixel format, a TGA
            // color type): nothing the uploader can fix by uploading the same file again. The
            // container is known by now, so the refusal names it and what it uses.
            let feature = match unsupported.kind() {
                UnsupportedErrorKind::GenericFeature(feature) => feature,
                UnsupportedErrorKind::Color(image::ExtendedColorType::Unknown(bits)) => {
                    format!("{bits}-bit pixels of a layout the decoder does not know")
                }
                UnsupportedErrorKind::Color(color) => format!("{color:?} pixels"),
                UnsupportedErrorKind::Format(_) => {
                    format!("a {container} variant the decoder does not know")
                }
                _ => unsupported.to_string(),
            };
            return DecodeError::Unsupported {
                format: container,
                feature,
            };
        }
        ImageError::Decoding(decoding) => match std::error::Error::source(&decoding) {
            // The source is the decoder's own words, without the crate's "Format error" prefix.
            Some(source) => source.to_string(),
            None => decoding.to_string(),
        },
        ImageError::IoError(io_error) if io_error.kind() == io::ErrorKind::UnexpectedEof => {
            "the data ends too early".to_owned()
        }
        ImageError::IoError(io_error) => io_error.to_string(),
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::InsufficientMemory => {
                "decoding it needs more memory than an image of its size should".to_owned()
            }
            LimitErrorKind::DimensionError => {
                "its dimensions are larger than the decoder supports".to_owned()
            }
            _ => limit.to_string(),
        },
        ImageError::Parameter(parameter) => parameter.to_string(),
        ImageError::Encoding(encoding) => encoding.to_string(),
    };
    // Some decoders end their messages with a line break; the detail sits inside a sentence.
    let detail = match detail.trim() {
        "" => "the decoder gave no reason".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    DecodeError::Corrupt {
        format: container,
        detail,
    }
}

/// Moves a decoded image into a raster of the matching pixel format.
///
/// 8-bit buffers and 16-bit sample buffers (whose native-order bytes are the raster's bytes)
/// are moved without a copy; 32-bit float samples are clamped to 0..=1 and scaled to 16 bits.
fn raster_from_image(image: DynamicImage) -> Result<Raster, RasterError> {
    let (width, height) = (image.width(), image.height());
    let sixteen = |format, samples| Raster::from_samples16(width, height, format, samples);
    let (format, pixels) = match image {
        DynamicImage::ImageLuma8(buffer) => (PixelFormat::L8, buffer.into_raw()),
        DynamicImage::ImageLumaA8(buffer) => (PixelFormat::La8, buffer.into_raw()),
        DynamicImage::ImageRgb8(buffer) => (PixelFormat::Rgb8, buffer.into_raw()),
        DynamicImage::ImageRgba8(buffer) => (PixelFormat::Rgba8, buffer.into_raw()),
        DynamicImage::ImageLuma16(buffer) => return sixteen(PixelFormat::L16, buffer.into_raw()),
        DynamicImage::ImageLumaA16(buffer) => {
            return sixteen(PixelFormat::La16, buffer.into_raw());
        }
        DynamicImage::ImageRgb16(buffer) => return sixteen(PixelFormat::Rgb16, buffer.into_raw()),
        DynamicImage::ImageRgba16(buffer) => {
            return sixteen(PixelFormat::Rgba16, buffer.into_raw());
        }
        DynamicImage::ImageRgb32F(buffer) => {
            (PixelFormat::Rgb16, float_to_16bit_bytes(buffer.as_raw()))
        }
        DynamicImage::ImageRgba32F(buffer) => {
            (PixelFormat::Rgba16, float_to_16bit_bytes(buffer.as_raw()))
        }
        // A layout added to the image crate later: RGBA 16-bit holds any of them without loss
        // of anything shmimage can store.
        other => return sixteen(PixelFormat::Rgba16, other.to_rgba16().into_raw()),
    };
    Raster::new(width, height, format, pixels)
}

/// 16-bit samples as native-order bytes, as a raster stores them.
#[cfg(test)]
fn native_bytes(samples: &[u16]) -> Vec<u8> {
    let mut bytes = vec![0; samples.len() * 2];
    for (pair, sample) in bytes.chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&sample.to_ne_bytes());
    }
    bytes
}

/// Float samples as native-order 16-bit bytes; see [`float_to_16bit`].
fn float_to_16bit_bytes(samples: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0; samples.len() * 2];
    for (pair, &sample) in bytes.chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&float_to_16bit(sample).to_ne_bytes());
    }
    bytes
}

/// A float sample (nominally 0.0 to 1.0) as a 16-bit sample: clamped to that range, scaled to
/// 0..=65535 and rounded to the nearest value; NaN becomes 0. No transfer function is applied,
/// as the image crate's own conversion does.
fn float_to_16bit(sample: f32) -> u16 {
    if sample.is_nan() {
        return 0;
    }
    // In range after the clamp, so the conversion neither wraps nor saturates.
    (sample.clamp(0.0, 1.0) * f32::from(u16::MAX)).round() as u16
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::codecs::bmp::BmpEncoder;
    use image::codecs::gif::GifEncoder;
    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::png::PngEncoder;
    use image::codecs::tiff::TiffEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{
        Delay, Frame, GrayImage, ImageBuffer, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage,
    };

    use super::*;

    const ROOMY: DecodeLimits = DecodeLimits {
        max_pixels: 1_000_000,
    };

    /// An RGB picture with smooth gradients and some texture, `width` x `height`.
    fn gradient_rgb(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 255 / width.max(2)) as u8,
                (y * 255 / height.max(2)) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
    }

    /// An RGBA picture whose every sample is different from its neighbours.
    fn patterned_rgba(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, y| {
            Rgba([
                (x * 31 + y) as u8,
                (y * 17 + x * 3) as u8,
                (x ^ y) as u8,
                (200 + x + y) as u8,
            ])
        })
    }

    fn png_of(image: &RgbImage) -> Vec<u8> {
        let mut png = Vec::new();
        PngEncoder::new(&mut png)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        png
    }

    fn jpeg_of(image: &RgbImage, quality: u8) -> Vec<u8> {
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, quality)
            .encode_image(image)
            .unwrap();
        jpeg
    }

    /// A two-frame GIF animation: a red frame, then a blue one.
    fn two_frame_gif(width: u32, height: u32) -> Vec<u8> {
        let red = RgbaImage::from_pixel(width, height, Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(width, height, Rgba([0, 0, 255, 255]));
        let delay = Delay::from_numer_denom_ms(100, 1);
        let mut gif = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut gif);
            encoder
                .encode_frames([
                    Frame::from_parts(red, 0, 0, delay),
                    Frame::from_parts(blue, 0, 0, delay),
                ])
                .unwrap();
        }
        gif
    }

    fn bmp_of(image: &RgbImage) -> Vec<u8> {
        let mut bmp = Vec::new();
        BmpEncoder::new(&mut bmp)
            .encode(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        bmp
    }

    fn tiff_of(pixels: &[u8], width: u32, height: u32, color: image::ExtendedColorType) -> Vec<u8> {
        let mut tiff = Cursor::new(Vec::new());
        TiffEncoder::new(&mut tiff)
            .write_image(pixels, width, height, color)
            .unwrap();
        tiff.into_inner()
    }

    fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let total: u64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        total as f64 / a.len() as f64
    }

    /// CRC-32 as PNG chunks use it (ISO 3309, reflected, polynomial 0xEDB88320).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(chunk_type: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = Vec::new();
        chunk.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        chunk.extend_from_slice(chunk_type);
        chunk.extend_from_slice(data);
        let mut covered = chunk_type.to_vec();
        covered.extend_from_slice(data);
        chunk.extend_from_slice(&crc32(&covered).to_be_bytes());
        chunk
    }

    /// A PNG signature and an RGBA 8-bit IHDR chunk claiming `width` x `height`.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit, RGBA, deflate, adaptive, no interlace
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend(png_chunk(b"IHDR", &ihdr));
        png
    }

    /// A TIFF (Exif) block holding a single Orientation tag, big-endian.
    fn exif_orientation_block(orientation: u16) -> Vec<u8> {
        let mut exif = b"MM\x00\x2a".to_vec(); // byte order, TIFF magic 42
        exif.extend_from_slice(&8u32.to_be_bytes()); // first IFD right after the header
        exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // count
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0]); // value padding
        exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        exif
    }

    /// `jpeg` with an APP1 Exif segment carrying `exif` inserted right after its SOI marker.
    fn with_exif_app1(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
        let mut payload = b"Exif\x00\x00".to_vec();
        payload.extend_from_slice(exif);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        out.extend(payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn png_decodes_exactly() {
        let image = gradient_rgb(40, 30);
        let decoded = decode(&png_of(&image), &ROOMY).unwrap();
        assert_eq!(decoded.format, "PNG");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgb8);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (40, 30));
        assert_eq!(decoded.raster.pixels(), image.as_raw().as_slice());
    }

    #[test]
    fn jpeg_decodes_to_about_the_same_pixels() {
        let image = gradient_rgb(64, 48);
        let decoded = decode(&jpeg_of(&image, 95), &ROOMY).unwrap();
        assert_eq!(decoded.format, "JPEG");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgb8);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (64, 48));
        let difference = mean_abs_difference(decoded.raster.pixels(), image.as_raw());
        assert!(difference < 6.0, "mean difference {difference}");
    }

    #[test]
    fn gray_jpeg_stays_gray() {
        let image = GrayImage::from_fn(32, 16, |x, y| image::Luma([(x * 8 + y) as u8]));
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&image)
            .unwrap();
        let decoded = decode(&jpeg, &ROOMY).unwrap();
        assert_eq!(decoded.raster.format(), PixelFormat::L8);
        let difference = mean_abs_difference(decoded.raster.pixels(), image.as_raw());
        assert!(difference < 4.0, "mean difference {difference}");
    }

    #[test]
    fn gif_animation_decodes_to_its_first_frame() {
        let decoded = decode(&two_frame_gif(12, 8), &ROOMY).unwrap();
        assert_eq!(decoded.format, "GIF");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgba8);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (12, 8));
        for pixel in decoded.raster.pixels().chunks_exact(4) {
            // Red (first frame), not blue (second); the palette may shift a shade.
            assert!(
                pixel[0] > 240 && pixel[2] < 16 && pixel[3] == 255,
                "{pixel:?}"
            );
        }
    }

    #[test]
    fn lossless_webp_decodes_exactly() {
        let image = patterned_rgba(21, 13);
        let mut webp = Vec::new();
        WebPEncoder::new_lossless(&mut webp)
            .encode(image.as_raw(), 21, 13, image::ExtendedColorType::Rgba8)
            .unwrap();
        let decoded = decode(&webp, &ROOMY).unwrap();
        assert_eq!(decoded.format, "WebP");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgba8);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (21, 13));
        assert_eq!(decoded.raster.pixels(), image.as_raw().as_slice());
    }

    #[test]
    fn bmp_decodes_exactly() {
        let image = gradient_rgb(19, 7);
        let decoded = decode(&bmp_of(&image), &ROOMY).unwrap();
        assert_eq!(decoded.format, "BMP");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgb8);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (19, 7));
        assert_eq!(decoded.raster.pixels(), image.as_raw().as_slice());
    }

    #[test]
    fn tiff_decodes_exactly_in_16_bits() {
        let samples: Vec<u16> = (0..5 * 3 * 3u16)
            .map(|i| 0x0102u16.wrapping_add(i.wrapping_mul(0x1311)))
            .collect();
        let pixels = native_bytes(&samples);
        let tiff = tiff_of(&pixels, 5, 3, image::ExtendedColorType::Rgb16);
        let decoded = decode(&tiff, &ROOMY).unwrap();
        assert_eq!(decoded.format, "TIFF");
        assert_eq!(decoded.raster.format(), PixelFormat::Rgb16);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (5, 3));
        assert_eq!(decoded.raster.pixels(), pixels.as_slice());
    }

    #[test]
    fn float_tiff_decodes_to_16_bits() {
        let samples: [f32; 8] = [0.0, 0.5, 1.0, 1.0, 0.25, 2.0, -1.0, 0.0];
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_ne_bytes()).collect();
        let tiff = tiff_of(&bytes, 2, 1, image::ExtendedColorType::Rgba32F);
        let decoded = decode(&tiff, &ROOMY).unwrap();
        assert_eq!(decoded.raster.format(), PixelFormat::Rgba16);
        let expected = native_bytes(&[0, 32768, 65535, 65535, 16384, 65535, 0, 0]);
        assert_eq!(decoded.raster.pixels(), expected.as_slice());
    }

    #[test]
    fn float_images_become_16_bit_clamped_and_rounded() {
        let rgba = ImageBuffer::<Rgba<f32>, _>::from_raw(
            2,
            2,
            vec![
                0.0,
                1.0,
                0.5,
                1.0, //
                -0.25,
                1.5,
                f32::NAN,
                0.25, //
                1.0 / 65535.0,
                0.4999,
                0.75,
                f32::INFINITY, //
                f32::NEG_INFINITY,
                0.125,
                0.8,
                0.0,
            ],
        )
        .unwrap();
        let raster = raster_from_image(DynamicImage::ImageRgba32F(rgba)).unwrap();
        assert_eq!(raster.format(), PixelFormat::Rgba16);
        assert_eq!((raster.width(), raster.height()), (2, 2));
        let expected = native_bytes(&[
            0, 65535, 32768, 65535, //
            0, 65535, 0, 16384, //
            1, 32761, 49151, 65535, //
            0, 8192, 52428, 0,
        ]);
        assert_eq!(raster.pixels(), expected.as_slice());

        let rgb = ImageBuffer::<Rgb<f32>, _>::from_raw(1, 1, vec![0.2, 0.6, 1.2]).unwrap();
        let raster = raster_from_image(DynamicImage::ImageRgb32F(rgb)).unwrap();
        assert_eq!(raster.format(), PixelFormat::Rgb16);
        assert_eq!(
            raster.pixels(),
            native_bytes(&[13107, 39321, 65535]).as_slice()
        );
    }

    #[test]
    fn eight_bit_images_move_into_the_raster_without_a_copy() {
        let image = patterned_rgba(8, 8);
        let address = image.as_raw().as_ptr();
        let raster = raster_from_image(DynamicImage::ImageRgba8(image)).unwrap();
        assert_eq!(raster.pixels().as_ptr(), address);
    }

    #[test]
    fn jpeg_exif_orientation_6_turns_the_picture_clockwise() {
        // 32x16: left half black, right half white. Orientation 6 means "rotate 90° clockwise
        // to display", after which the left half is on top.
        let image = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        });
        let jpeg = with_exif_app1(&jpeg_of(&image, 95), &exif_orientation_block(6));
        let decoded = decode(&jpeg, &ROOMY).unwrap();
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (16, 32));
        let rows: Vec<&[u8]> = decoded.raster.pixels().chunks_exact(16 * 3).collect();
        let brightness = |rows: &[&[u8]]| {
            let sum: u64 = rows
                .iter()
                .flat_map(|r| r.iter())
                .map(|&s| u64::from(s))
                .sum();
            sum / (rows.len() as u64 * 16 * 3)
        };
        assert!(brightness(&rows[..14]) < 20, "top should be black");
        assert!(brightness(&rows[18..]) > 235, "bottom should be white");

        // Without the tag the same picture stays wide.
        let plain = decode(&jpeg_of(&image, 95), &ROOMY).unwrap();
        assert_eq!((plain.raster.width(), plain.raster.height()), (32, 16));
    }

    #[test]
    fn png_exif_orientation_8_turns_the_picture_counterclockwise_exactly() {
        let image = patterned_rgba(5, 3);
        let mut png = Vec::new();
        let mut encoder = PngEncoder::new(&mut png);
        encoder
            .set_exif_metadata(exif_orientation_block(8))
            .unwrap();
        encoder
            .write_image(image.as_raw(), 5, 3, image::ExtendedColorType::Rgba8)
            .unwrap();
        let decoded = decode(&png, &ROOMY).unwrap();
        let upright = image::imageops::rotate270(&image);
        assert_eq!((decoded.raster.width(), decoded.raster.height()), (3, 5));
        assert_eq!(decoded.raster.pixels(), upright.as_raw().as_slice());
    }

    #[test]
    fn png_bomb_is_refused_before_decoding() {
        // IHDR claims 100000x100000 RGBA (40 GB of pixels), followed by a tiny image stream.
        let mut bomb = png_header(100_000, 100_000);
        bomb.extend(png_chunk(
            b"IDAT",
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff],
        ));
        bomb.extend(png_chunk(b"IEND", &[]));
        let started = std::time::Instant::now();
        let error = decode(
            &bomb,
            &DecodeLimits {
                max_pixels: 50_000_000,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::TooManyPixels {
                    width: 100_000,
                    height: 100_000,
                    pixels: 10_000_000_000,
                    max_pixels: 50_000_000
                }
            ),
            "{error:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn png_bomb_with_nothing_after_its_header_is_refused_as_too_large() {
        let mut bomb = png_header(100_000, 100_000);
        assert!(matches!(
            decode(
                &bomb,
                &DecodeLimits {
                    max_pixels: 50_000_000
                }
            ),
            Err(DecodeError::TooManyPixels {
                pixels: 10_000_000_000,
                ..
            })
        ));
        bomb.extend(png_chunk(b"IEND", &[]));
        assert!(matches!(
            decode(
                &bomb,
                &DecodeLimits {
                    max_pixels: 50_000_000
                }
            ),
            Err(DecodeError::TooManyPixels {
                pixels: 10_000_000_000,
                ..
            })
        ));
        // A small header with nothing after it is simply truncated.
        let small = png_header(10, 10);
        assert!(matches!(
            decode(&small, &ROOMY),
            Err(DecodeError::Corrupt { format: "PNG", .. })
        ));
    }

    #[test]
    fn pixel_limit_is_exact_for_every_container() {
        let image = gradient_rgb(10, 12);
        let mut webp = Vec::new();
        WebPEncoder::new_lossless(&mut webp)
            .encode(image.as_raw(), 10, 12, image::ExtendedColorType::Rgb8)
            .unwrap();
        let files = [
            ("PNG", png_of(&image)),
            ("JPEG", jpeg_of(&image, 80)),
            ("GIF", two_frame_gif(10, 12)),
            ("WebP", webp),
            ("BMP", bmp_of(&image)),
            (
                "TIFF",
                tiff_of(image.as_raw(), 10, 12, image::ExtendedColorType::Rgb8),
            ),
        ];
        for (container, file) in files {
            let at_limit = decode(&file, &DecodeLimits { max_pixels: 120 });
            assert_eq!(at_limit.unwrap().format, container);
            let error = decode(&file, &DecodeLimits { max_pixels: 119 }).unwrap_err();
            assert!(
                matches!(
                    error,
                    DecodeError::TooManyPixels {
                        width: 10,
                        height: 12,
                        pixels: 120,
                        max_pixels: 119
                    }
                ),
                "{container}: {error:?}"
            );
        }
    }

    #[test]
    fn empty_upload_is_empty() {
        assert!(matches!(decode(&[], &ROOMY), Err(DecodeError::Empty)));
    }

    #[test]
    fn random_bytes_and_text_are_not_images() {
        let mut state: u32 = 0x9E37_79B9;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        assert!(matches!(
            decode(&noise, &ROOMY),
            Err(DecodeError::NotAnImage)
        ));

        let text = b"Shopping list:\n- bread\n- milk\n- a PNG of a cat\n";
        assert!(matches!(decode(text, &ROOMY), Err(DecodeError::NotAnImage)));

        let html = b"<!DOCTYPE html><html><body><img src=\"cat.png\"></body></html>";
        assert!(matches!(decode(html, &ROOMY), Err(DecodeError::NotAnImage)));
    }

    #[test]
    fn headers_without_pixels_of_the_newer_formats_are_corrupt_never_a_panic() {
        // QOI, farbfeld and PNM headers that promise a pixel and then stop.
        for (file, container) in [
            (
                b"qoif\x00\x00\x00\x01\x00\x00\x00\x01\x03\x00".as_slice(),
                "QOI",
            ),
            (
                b"farbfeld\x00\x00\x00\x01\x00\x00\x00\x01".as_slice(),
                "farbfeld",
            ),
            (b"P6\n1 1\n255\n".as_slice(), "PNM"),
        ] {
            match decode(file, &ROOMY) {
                Err(DecodeError::Corrupt { format, .. }) => assert_eq!(format, container),
                other => panic!("{container}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_decoder_that_panics_refuses_the_file_as_corrupt() {
        let outcome: Result<Raster, _> = guarded("TIFF", || {
            panic!("assertion failed: buf.len() >= row_stride")
        });
        match outcome {
            Err(DecodeError::Corrupt { format, detail }) => {
                assert_eq!(format, "TIFF");
                assert!(detail.contains("internal error"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heic_is_named_in_its_refusal() {
        let heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic";
        let error = decode(heic, &ROOMY).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::UnreadableFormat {
                    format: "HEIC/HEIF"
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("the HEIC/HEIF format"), "{message}");
        assert!(message.contains("does not support"), "{message}");
        assert!(message.contains(&crate::imaging::formats::accepted_formats()));
    }

    /// Cuts `file` at every length from 1 to its full length: no cut may panic, every cut before
    /// `last_byte_needed` must be refused, as `NotAnImage` while the signature is incomplete and
    /// as `Corrupt` after.
    fn check_truncations(container: &str, file: &[u8], signature_len: usize, needed: usize) {
        for cut in 1..file.len() {
            let result = decode(&file[..cut], &ROOMY);
            if cut < signature_len {
                assert!(
                    matches!(result, Err(DecodeError::NotAnImage)),
                    "{container} cut at {cut}: {result:?}"
                );
            } else if cut < needed {
                match result {
                    Err(DecodeError::Corrupt { format, ref detail }) => {
                        assert_eq!(format, container);
                        assert!(!detail.is_empty() && detail.trim() == detail, "{detail:?}");
                    }
                    other => panic!("{container} cut at {cut} of {}: {other:?}", file.len()),
                }
            }
        }
    }

    #[test]
    fn truncated_png_is_corrupt_never_a_panic() {
        let png = png_of(&gradient_rgb(48, 32));
        // IEND is the last 12 bytes; the pixels are all there before it.
        check_truncations("PNG", &png, 8, png.len() - 12);
    }

    #[test]
    fn truncated_jpeg_is_corrupt_never_a_panic() {
        let jpeg = jpeg_of(&gradient_rgb(48, 32), 90);
        // Every byte counts, up to the last one of the end-of-image marker.
        check_truncations("JPEG", &jpeg, 3, jpeg.len());
    }

    #[test]
    fn jpeg_end_marker_is_looked_for_only_after_the_metadata() {
        let jpeg = jpeg_of(&gradient_rgb(48, 32), 90);
        assert!(!jpeg_is_cut_short(&jpeg));
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"trailing bytes some cameras add");
        assert!(!jpeg_is_cut_short(&padded));

        // An Exif block that itself holds an end-of-image marker (as embedded thumbnails do)
        // must not make a cut-off scan look complete.
        let mut exif = exif_orientation_block(1);
        exif.extend_from_slice(&[0xFF, 0xD8, 0x00, 0xFF, 0xD9]);
        let with_thumbnail = with_exif_app1(&jpeg, &exif);
        assert!(!jpeg_is_cut_short(&with_thumbnail));
        let cut = &with_thumbnail[..with_thumbnail.len() - 100];
        assert!(jpeg_is_cut_short(cut));
        assert!(matches!(
            decode(cut, &ROOMY),
            Err(DecodeError::Corrupt { format: "JPEG", .. })
        ));
        assert!(decode(&with_thumbnail, &ROOMY).is_ok());
    }

    #[test]
    fn truncated_gif_is_corrupt_never_a_panic() {
        let gif = two_frame_gif(24, 16);
        // Only the first frame is needed. Both frames are the same size and the file header
        // comes before them, so the first frame ends after the middle of the file.
        check_truncations("GIF", &gif, 6, gif.len() / 2);
    }

    #[test]
    fn png_header_dimensions_reads_ihdr_only() {
        assert_eq!(png_header_dimensions(&png_header(7, 9)), Some((7, 9)));
        assert_eq!(png_header_dimensions(&png_header(7, 9)[..20]), None);
        assert_eq!(
            png_header_dimensions(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDX"),
            None
        );
        assert_eq!(png_header_dimensions(b"GIF89a"), None);
    }
}
