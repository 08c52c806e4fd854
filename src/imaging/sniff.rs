//! Telling an image from anything else by its first bytes, before the rest of an upload has
//! arrived, and how much memory decoding an upload will take before it starts.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageReader};

use super::decode::{header_limits, image_format, unrecognised};
use super::formats::Container;
use super::{DecodeError, DecodeLimits};

/// How many first bytes decide: enough for every signature and header check in
/// [`Container::detect`] (an ICO directory entry, a TGA header) and for the brands of a HEIF
/// or AVIF file's first box, so that a decision on these bytes is the one the whole file gets.
pub const SNIFF_LEN: usize = 64;

/// What the first bytes of an upload say.
#[derive(Debug)]
pub enum Sniffed {
    /// They start a format this server reads (named as in [`super::Decoded::format`]).
    Image(&'static str),
    /// They start no format this server reads: decoding would refuse the upload with this
    /// error ([`DecodeError::NotAnImage`], or [`DecodeError::UnreadableFormat`] naming it).
    Refused(DecodeError),
    /// Too few bytes to tell yet.
    NeedMore,
}

/// Looks at the first bytes of an upload; `complete` says whether no more will come. Decides
/// the way [`super::decode`] does, so an upload refused here would be refused there, with the
/// same message.
pub fn sniff(first: &[u8], complete: bool) -> Sniffed {
    if first.is_empty() || (first.len() < SNIFF_LEN && !complete) {
        return Sniffed::NeedMore;
    }
    let head = &first[..first.len().min(SNIFF_LEN)];
    match Container::detect(head) {
        Some(container) => Sniffed::Image(container.name()),
        None => Sniffed::Refused(unrecognised(head)),
    }
}

/// The most memory decoding `bytes` can take at once, in bytes: the upload itself, the decoded
/// pixels in the decoder's layout, and a second buffer where the decode needs one (float
/// samples converted to 16 bits, an EXIF rotation by 90 degrees). Reads only the header.
///
/// An upload that is no image this server reads, or that claims more pixels than `limits`
/// allow, costs only its own bytes: the decoder refuses it before allocating. An image whose
/// header the `image` crate cannot read (some of the TIFF, BMP and GIF variants shmimage reads
/// with its own code) is counted as the largest image `limits` allow, at 8 bytes a pixel plus a
/// turned copy, so that such files never decode beside more than the budget holds.
pub fn decode_footprint(bytes: &[u8], limits: &DecodeLimits) -> u64 {
    let upload = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let Some(container) = Container::detect(bytes) else {
        return upload;
    };
    let largest = limits.max_pixels.saturating_mul(8).saturating_mul(2);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(container));
    reader.limits(header_limits(limits, bytes.len()));
    let Ok(mut decoder) = reader.into_decoder() else {
        return upload.saturating_add(largest);
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

    fn named(sniffed: Sniffed) -> Option<&'static str> {
        match sniffed {
            Sniffed::Image(name) => Some(name),
            _ => None,
        }
    }

    #[test]
    fn the_first_bytes_tell_images_from_anything_else() {
        let padded = |start: &[u8]| {
            let mut bytes = start.to_vec();
            bytes.resize(SNIFF_LEN, 0);
            bytes
        };
        assert_eq!(
            named(sniff(&padded(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), false)),
            Some("PNG")
        );
        assert_eq!(
            named(sniff(&padded(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), false)),
            Some("JPEG")
        );
        assert_eq!(
            named(sniff(&padded(b"GIF89a\x01\0\x01\0"), false)),
            Some("GIF")
        );
        assert_eq!(named(sniff(b"BM", true)), Some("BMP"));
        assert_eq!(
            named(sniff(&padded(b"qoif\0\0\0\x01\0\0\0\x01\x03\0"), false)),
            Some("QOI")
        );
        let text = b"This is text, not a picture, and it goes on for more than sixty-four bytes.";
        assert!(matches!(
            sniff(text, false),
            Sniffed::Refused(DecodeError::NotAnImage)
        ));
        let html = padded(b"<!DOCTYPE html><html>");
        assert!(matches!(
            sniff(&html, false),
            Sniffed::Refused(DecodeError::NotAnImage)
        ));
        // A format this server recognises but does not read is named, as decoding names it.
        let heic = padded(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic");
        assert!(matches!(
            sniff(&heic, false),
            Sniffed::Refused(DecodeError::UnreadableFormat { .. })
        ));
        // Too early to tell, unless nothing more comes.
        assert!(matches!(sniff(b"\x89PN", false), Sniffed::NeedMore));
        assert!(matches!(
            sniff(b"\x89PN", true),
            Sniffed::Refused(DecodeError::NotAnImage)
        ));
        assert!(
            matches!(sniff(b"", true), Sniffed::NeedMore),
            "empty is for the decoder to say"
        );
    }

    #[test]
    fn the_first_bytes_decide_as_the_whole_file_does() {
        // Every file of the conformance corpus gets the same answer from its first bytes as
        // from all of them.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/files");
        let mut checked = 0;
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                let whole = Container::detect(&bytes).map(Container::name);
                let first = named(sniff(
                    &bytes[..bytes.len().min(SNIFF_LEN)],
                    bytes.len() <= SNIFF_LEN,
                ));
                assert_eq!(first, whole, "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} corpus files found");
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
