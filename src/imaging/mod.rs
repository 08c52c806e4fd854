//! Turning uploads into rasters and rasters into PNG.
//!
//! - [`formats`] is the one list of formats shmimage reads (PNG, JPEG, GIF, WebP, BMP, TIFF,
//!   QOI, PNM, TGA, ICO, CUR, Radiance HDR, OpenEXR, farbfeld, DDS), recognised from their bytes
//!   alone, and of the ones it recognises but does not read (HEIC, AVIF, ...).
//! - [`decode`] reads an upload, refuses it before allocating pixel memory if it has more pixels
//!   than [`DecodeLimits::max_pixels`], applies its orientation (Exif or XMP) and keeps its
//!   pixel format (float images become 16-bit). A decoder that panics on a file refuses it.
//! - [`encode_png`] writes a raster back out as a PNG of exactly its pixels, quickly enough for
//!   a request path.
//! - [`thumbnail_png`] writes a small 8-bit preview of a raster.
//! - [`sniff`] tells an image from anything else by an upload's first bytes, so a non-image is
//!   refused before the rest arrives; [`decode_footprint`] says from the header how much memory
//!   decoding will take, so the server can budget it before it starts.
//! - [`resize_to_width`] shrinks a raster to the width a page draws it, with a bicubic filter.

mod decode;
mod encode;
pub mod formats;
mod png_filter;
mod png_writer;
mod resize;
mod sniff;

use crate::raster::Raster;

pub use self::decode::{
    PlainPng, SourcePng, decode, decode_ordinarily, decode_plain_png_rows, plain_png,
};
pub use self::encode::{Preview, encode_png, encode_png_from, png_source_rows, thumbnail_png};
pub use self::png_writer::{RowSource, encoder_cores};
pub use self::resize::{ResizeError, resize_to_width, scaled_height};
pub use self::sniff::{SNIFF_LEN, Sniffed, decode_footprint, sniff};

/// Fuzzing entry points: the PNG writer with its pieces made small, for the fuzz target.
///
/// [`encode_png_in_pieces`](fuzzing::encode_png_in_pieces) can also encode from a source that
/// copies each band, as the server's reader of the segment does.
#[doc(hidden)]
pub mod fuzzing {
    use super::EncodeError;
    use crate::raster::Raster;

    /// `raster` as a PNG cut into `bands` bands (0: one stream), deflate segments of
    /// `segment_len` bytes and `IDAT` chunks of `max_chunk_len` bytes; with `copied`, from a
    /// source that copies every band's rows into a buffer of its own (the same bytes).
    pub fn encode_png_in_pieces(
        raster: &Raster,
        bands: usize,
        segment_len: usize,
        max_chunk_len: usize,
        copied: bool,
    ) -> Result<Vec<u8>, EncodeError> {
        super::png_writer::write_png_in_pieces(
            raster.pixels(),
            raster.width(),
            raster.height(),
            raster.format(),
            bands,
            segment_len,
            max_chunk_len,
            copied,
        )
    }
}

/// Limits a decode enforces before it allocates.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The most pixels (width x height) an upload may have.
    pub max_pixels: u64,
}

/// A decoded upload.
#[derive(Debug)]
pub struct Decoded {
    /// The pixels, upright (EXIF orientation applied), in the upload's own pixel format.
    pub raster: Raster,
    /// The container format detected from the bytes, as [`formats::Container::name`] gives it:
    /// "PNG", "JPEG", "TIFF", "Radiance HDR", ...
    pub format: &'static str,
    /// For a plain PNG upload, where its header and image data are in the upload: a PNG of
    /// exactly [`Self::raster`]'s pixels without encoding them again (see [`SourcePng`]).
    pub source_png: Option<SourcePng>,
}

/// Why an upload could not be decoded. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The upload has no bytes at all.
    #[error("the upload is empty: choose an image file")]
    Empty,
    /// The bytes are not one of the formats shmimage reads.
    #[error(
        "the file is not an image this server can read: {}",
        formats::accepted_formats()
    )]
    NotAnImage,
    /// The bytes are an image in a format shmimage recognises but does not read (HEIC, AVIF, ...).
    #[error(
        "the file is in the {format} format, which this server does not support: convert it to \
         one of {} and upload that",
        formats::accepted_formats()
    )]
    UnreadableFormat {
        /// The format's name, as [`formats::Unreadable::name`] gives it.
        format: &'static str,
    },
    /// The file is in a format shmimage reads but uses a feature of it that the decoder does not
    /// support (a compression scheme, a color model, a sample type).
    #[error(
        "the {format} image uses {feature}, which this server cannot read: save it in another \
         form (PNG, for example) and upload that"
    )]
    Unsupported {
        /// The container format, as in [`Decoded::format`].
        format: &'static str,
        /// What the file uses, for people: "LZMA compression", "CIE L*a*b* color", ...
        feature: String,
    },
    /// The bytes start like an image of `format` but could not be decoded.
    #[error(
        "the {format} image is corrupt or truncated ({detail}); check the file and upload it again"
    )]
    Corrupt {
        /// The container format, as in [`Decoded::format`].
        format: &'static str,
        /// What the decoder reported.
        detail: String,
    },
    /// The memory for the decoded pixels could not be allocated; nothing was decoded.
    #[error(
        "the server could not allocate the {} MiB of memory the decoded image needs: try \
         again later, or make the image smaller",
        bytes.div_ceil(1024 * 1024)
    )]
    OutOfMemory {
        /// The bytes the decoder asked for.
        bytes: u64,
    },
    /// The image has more pixels than the server accepts; nothing was decoded.
    #[error(
        "the image is {width}x{height} ({pixels} pixels), more than the limit of {max_pixels} \
         pixels: make it smaller, or start the server with a larger --max-pixels"
    )]
    TooManyPixels {
        /// The width the file's header claims.
        width: u32,
        /// The height the file's header claims.
        height: u32,
        /// `width * height`.
        pixels: u64,
        /// The limit it exceeds, [`DecodeLimits::max_pixels`].
        max_pixels: u64,
    },
}

/// Why a raster could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("PNG encoding failed: {0}")]
pub struct EncodeError(String);

impl EncodeError {
    /// An encode that failed for `reason`.
    pub fn new(reason: impl Into<String>) -> EncodeError {
        EncodeError(reason.into())
    }
}

#[cfg(test)]
mod tests {
    //! Round trips through both halves of the module: raster → PNG → raster.

    use super::*;
    use crate::raster::PixelFormat;

    /// Pixel bytes for `format` where neighbouring samples differ and, for 16-bit formats, the
    /// high and low byte of every sample differ, so a byte swap or a dropped byte shows.
    fn patterned_pixels(width: u32, height: u32, format: PixelFormat) -> Vec<u8> {
        let samples = u64::from(width) * u64::from(height) * u64::from(format.channels());
        let mut pixels = Vec::new();
        for index in 0..samples {
            if format.bit_depth() == 8 {
                pixels.push((index * 37 % 251) as u8);
            } else {
                // High byte and low byte move at different rates and never coincide.
                let high = (index * 13 % 256) as u8;
                let low = high.wrapping_add(1 + (index % 254) as u8);
                pixels.extend_from_slice(&u16::from_be_bytes([high, low]).to_ne_bytes());
            }
        }
        pixels
    }

    #[test]
    fn every_pixel_format_round_trips_bit_exactly_through_png() {
        let (width, height) = (37, 23);
        for format in PixelFormat::ALL {
            let pixels = patterned_pixels(width, height, format);
            let raster = Raster::new(width, height, format, pixels.clone()).unwrap();
            let png = encode_png(&raster).unwrap();
            let decoded = decode(&png, &DecodeLimits { max_pixels: 10_000 }).unwrap();
            assert_eq!(decoded.format, "PNG", "{format}");
            assert_eq!(decoded.raster.format(), format, "{format}");
            assert_eq!(decoded.raster.width(), width, "{format}");
            assert_eq!(decoded.raster.height(), height, "{format}");
            assert!(
                decoded.raster.pixels() == pixels.as_slice(),
                "{format}: pixels differ"
            );
        }
    }

    #[test]
    fn sixteen_bit_pngs_are_written_in_the_byte_order_the_png_standard_requires() {
        // 0x1234 in native order must be read back as 0x1234 by an independent PNG reader
        // (the image crate's own loader), not as 0x3412.
        let raster = Raster::new(1, 1, PixelFormat::L16, 0x1234u16.to_ne_bytes().to_vec()).unwrap();
        let png = encode_png(&raster).unwrap();
        let loaded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
        let gray = loaded.as_luma16().expect("a 16-bit gray PNG");
        assert_eq!(gray.get_pixel(0, 0).0, [0x1234]);

        // And a 16-bit PNG written by the image crate decodes to the same native bytes.
        let reference = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(
            2,
            1,
            vec![0x0102, 0x0304, 0x0506, 0xa0b0, 0xc0d0, 0xe0f0],
        )
        .unwrap();
        let mut png = std::io::Cursor::new(Vec::new());
        reference
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let decoded = decode(png.get_ref(), &DecodeLimits { max_pixels: 2 }).unwrap();
        let expected: Vec<u8> = reference
            .as_raw()
            .iter()
            .flat_map(|s| s.to_ne_bytes())
            .collect();
        assert_eq!(decoded.raster.format(), PixelFormat::Rgb16);
        assert_eq!(decoded.raster.pixels(), expected.as_slice());
    }
}
