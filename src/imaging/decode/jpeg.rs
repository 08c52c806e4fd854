//! JPEG, through zune-jpeg directly (the `image` crate's wrapper cannot say when the picture
//! data was damaged).
//!
//! zune-jpeg, left lenient, stops at the first damaged block of a scan and fills everything
//! after it with mid-gray: a wrong picture that looks like a right one. So the picture is
//! decoded strictly first. If the strict decoder finds the compressed data damaged, the upload
//! is refused as damaged (422); if it objects only to the file's structure (stray bytes
//! between segments, markers where the standard forbids them, all of which libjpeg accepts with
//! a warning), it is decoded again leniently. Well-formed files are decoded once.
//!
//! A JPEG that ends before its end-of-image marker is refused too (the lenient decoder would fill
//! in the rest). The orientation comes from the Exif block, or failing that from XMP.

use image::metadata::Orientation;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;
use zune_jpeg::errors::DecodeErrors;

use super::{check_pixel_count, orientation};
use crate::imaging::{DecodeError, DecodeLimits};
use crate::raster::{PixelFormat, Raster};

const FORMAT: &str = "JPEG";

/// Decodes a JPEG, upright, as 8-bit gray or RGB.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Raster, DecodeError> {
    let mut decoder = new_decoder(bytes, true);
    // Headers are read leniently: strictness matters for the picture data only.
    let mut headers = new_decoder(bytes, false);
    headers.decode_headers().map_err(refusal)?;
    let (width, height) = headers
        .dimensions()
        .ok_or_else(|| corrupt("it has no frame header".to_owned()))?;
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    check_pixel_count(width, height, limits)?;
    if width == 0 || height == 0 {
        return Err(corrupt(format!("it claims to be {width}x{height} pixels")));
    }
    if jpeg_is_cut_short(bytes) {
        return Err(corrupt(
            "the data ends before the end-of-image marker".to_owned(),
        ));
    }
    let orientation = headers
        .exif()
        .and_then(|exif| orientation::from_exif(exif))
        .or_else(|| headers.xmp().and_then(|xmp| orientation::from_xmp(xmp)))
        .unwrap_or(Orientation::NoTransforms);
    let (colorspace, format) = match headers.input_colorspace() {
        Some(ColorSpace::Luma) => (ColorSpace::Luma, PixelFormat::L8),
        // CMYK, YCCK and YCbCr are converted; alpha channels do not occur in JPEG files.
        _ => (ColorSpace::RGB, PixelFormat::Rgb8),
    };

    decoder.set_options(decoder.options().jpeg_set_out_colorspace(colorspace));
    let pixels = match decoder.decode() {
        Ok(pixels) => pixels,
        Err(error) if is_damage(&error) => {
            return Err(corrupt(format!(
                "its compressed picture data is damaged ({}), so part of the picture is lost",
                describe(&error)
            )));
        }
        Err(strict_error) => {
            let mut lenient = new_decoder(bytes, false);
            lenient.set_options(lenient.options().jpeg_set_out_colorspace(colorspace));
            let pixels = lenient.decode().map_err(refusal)?;
            // The lenient decoder fills what it could not decode with mid-gray: a last row of
            // exactly that gray after a strict failure means the picture was cut off.
            let row = width as usize * format.bytes_per_pixel() as usize;
            if pixels.len() >= row && pixels[pixels.len() - row..].iter().all(|&s| s == 128) {
                return Err(corrupt(format!(
                    "its compressed picture data is damaged ({}), so part of the picture is lost",
                    describe(&strict_error)
                )));
            }
            pixels
        }
    };
    let raster =
        Raster::new(width, height, format, pixels).map_err(|error| corrupt(error.to_string()))?;
    orientation::apply(raster, orientation)
}

fn new_decoder(bytes: &[u8], strict: bool) -> JpegDecoder<ZCursor<&[u8]>> {
    let options = DecoderOptions::default()
        .set_strict_mode(strict)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    JpegDecoder::new_with_options(ZCursor::new(bytes), options)
}

/// Whether a strict decode failed because the compressed data itself is damaged (rather than
/// because of how the file is put together).
///
/// Everything else a strict decode refuses (stray bytes between segments, unexpected markers
/// between scans) gets a lenient decode, whose result is checked for the gray fill.
fn is_damage(error: &DecodeErrors) -> bool {
    match error {
        DecodeErrors::HuffmanDecode(_) | DecodeErrors::ExhaustedData => true,
        DecodeErrors::MCUError(text) => !text.contains("restart boundary"),
        DecodeErrors::FormatStatic(text) => {
            text.contains("Huffman") || text.contains("Premature end")
        }
        DecodeErrors::Format(text) => text.contains("Huffman"),
        _ => false,
    }
}

fn describe(error: &DecodeErrors) -> String {
    let text = format!("{error:?}");
    text.trim_matches('"').trim().to_owned()
}

fn corrupt(detail: String) -> DecodeError {
    DecodeError::Corrupt {
        format: FORMAT,
        detail,
    }
}

fn refusal(error: DecodeErrors) -> DecodeError {
    match error {
        DecodeErrors::Unsupported(scheme) => DecodeError::Unsupported {
            format: FORMAT,
            feature: format!("{scheme:?}"),
        },
        other => corrupt(describe(&other)),
    }
}

/// Whether a JPEG stops before its end-of-image (EOI) marker.
///
/// Walks the marker segments from SOI to the first start-of-scan (SOS), skipping each by its
/// length, so an EOI inside metadata (the end of an Exif thumbnail) does not count; then looks
/// for EOI anywhere after it. Entropy-coded data cannot contain the EOI byte pair (0xFF is always
/// followed by 0x00 or a restart marker there), and tables between progressive scans do not
/// either in practice. A file whose structure this walk does not recognise is left to the
/// decoder: only a definite shortfall counts.
pub(super) fn jpeg_is_cut_short(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    const TEM: u8 = 0x01;
    const RESTART: std::ops::RangeInclusive<u8> = 0xD0..=0xD7;

    if bytes.get(..2) != Some(&[0xFF, SOI][..]) {
        return false;
    }
    let mut position = 2;
    let scan_start = loop {
        // Any number of 0xFF fill bytes may precede a marker.
        match bytes.get(position) {
            Some(0xFF) => {}
            Some(_) => return false,
            None => return true,
        }
        while bytes.get(position + 1) == Some(&0xFF) {
            position += 1;
        }
        let Some(&marker) = bytes.get(position + 1) else {
            return true;
        };
        if marker == SOS {
            break position;
        }
        if marker == EOI {
            // An image without a scan: not cut short, but the decoder will have its say.
            return false;
        }
        if marker == TEM || RESTART.contains(&marker) {
            position += 2;
            continue;
        }
        let Some(length) = bytes.get(position + 2..position + 4) else {
            return true;
        };
        position += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    };
    !bytes[scan_start..]
        .windows(2)
        .any(|pair| pair == [0xFF, EOI])
}
