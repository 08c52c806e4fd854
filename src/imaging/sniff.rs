//! Telling an image from anything else by its first bytes, before the rest of an upload has
//! arrived, and how much memory decoding an upload will take before it starts.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageReader};

use super::DecodeLimits;
use super::decode::{container_name, decoder_limits};

/// How many first bytes decide: as many as the decoder's own format detection reads.
pub const SNIFF_LEN: usize = 16;

/// What the first bytes of an upload say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// They start a format this server reads (named as in [`super::Decoded::format`]).
    Image(&'static str),
    /// They start no format this server reads: decoding would answer
    /// [`super::DecodeError::NotAnImage`].
    NotAnImage,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// Looks at the first bytes of an upload; `complete` says whether no more will come. Decides
/// the way [`super::decode`] does, so an upload refused here would be refused there.
pub fn sniff(first: &[u8], complete: bool) -> Sniffed {
    if first.is_empty() || (first.len() < SNIFF_LEN && !complete) {
        return Sniffed::NeedMore;
    }
    let head = &first[..first.len().min(SNIFF_LEN)];
    match image::guess_format(head).ok().and_then(container_name) {
        Some(container) => Sniffed::Image(container),
        None => Sniffed::NotAnImage,
    }
}

/// The most memory decoding `bytes` can take at once, in bytes: the upload itself, the decoded
/// pixels in the decoder's layout, and a second buffer where the decode needs one (float
/// samples converted to 16 bits, an EXIF rotation by 90 degrees). Reads only the header.
///
/// An upload the decoder will refuse before allocating (not an image, a header it cannot read,
/// more pixels than `limits` allow) costs only its own bytes.
pub fn decode_footprint(bytes: &[u8], limits: &DecodeLimits) -> u64 {
    let upload = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let Ok(mut reader) = ImageReader::new(Cursor::new(bytes)).with_guessed_format() else {
        return upload;
    };
    reader.limits(decoder_limits(limits, bytes.len()));
    let Ok(mut decoder) = reader.into_decoder() else {
        return upload;
    };
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return upload;
    }
    let decoded = decoder.total_bytes();
    let converted = match decoder.color_type() {
        ColorType::Rgb32F | ColorType::Rgba32F => decoded / 2,
        _ => 0,
    };
    let rotated = match decoder.orientation() {
        Ok(
            Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH,
        ) => decoded,
        _ => 0,
    };
    upload
        .saturating_add(decoded)
        .saturating_add(converted.max(rotated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_images_from_anything_else() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", false),
            Sniffed::Image("PNG")
        );
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\0", false),
            Sniffed::Image("JPEG")
        );
        assert_eq!(
            sniff(b"GIF89a\x01\0\x01\0\0\0\0;\0\0\0", false),
            Sniffed::Image("GIF")
        );
        assert_eq!(sniff(b"BM", true), Sniffed::Image("BMP"));
        assert_eq!(
            sniff(b"This is text, not a picture.", false),
            Sniffed::NotAnImage
        );
        assert_eq!(sniff(b"<!DOCTYPE html><html>", false), Sniffed::NotAnImage);
        // Formats the image crate knows but this server does not read.
        assert_eq!(
            sniff(b"qoif\0\0\0\x01\0\0\0\x01\x03\0\0\0", false),
            Sniffed::NotAnImage
        );
        // Too early to tell, unless nothing more comes.
        assert_eq!(sniff(b"\x89PN", false), Sniffed::NeedMore);
        assert_eq!(sniff(b"\x89PN", true), Sniffed::NotAnImage);
        assert_eq!(
            sniff(b"", true),
            Sniffed::NeedMore,
            "empty is for the decoder to say"
        );
    }

    #[test]
    fn the_footprint_is_the_decoded_pixels_plus_the_upload() {
        let image = image::RgbaImage::from_pixel(30, 20, image::Rgba([1, 2, 3, 4]));
        let mut png = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let roomy = DecodeLimits { max_pixels: 1000 };
        assert_eq!(
            decode_footprint(&png, &roomy),
            png.len() as u64 + 30 * 20 * 4
        );
        // Too many pixels: the decoder refuses it before allocating anything.
        let tight = DecodeLimits { max_pixels: 100 };
        assert_eq!(decode_footprint(&png, &tight), png.len() as u64);
        assert_eq!(decode_footprint(b"not an image", &roomy), 12);
    }
}
