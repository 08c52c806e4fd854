//! Telling an image from anything else by its first bytes, before the rest of an upload has
//! arrived, and how much memory decoding an upload will take before it starts.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageReader};

use super::decode::{
    bmp_header_dimensions, header_limits, image_format, png_header_dimensions, unrecognised,
};
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
/// allow, costs only its own bytes: the decoder refuses it before allocating. For a file whose
/// header the `image` crate cannot read (TIFF, BMP and GIF variants that shmimage reads with
/// its own code) the size its header claims counts in the widest layout, 16-bit RGBA, plus a
/// turned copy; a file whose size cannot be read at all counts as the largest image `limits`
/// allow.
pub fn decode_footprint(bytes: &[u8], limits: &DecodeLimits) -> u64 {
    let upload = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let Some(container) = Container::detect(bytes) else {
        return upload;
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format(container));
    reader.limits(header_limits(limits, bytes.len()));
    let Ok(mut decoder) = reader.into_decoder() else {
        let pixels = match claimed_dimensions(container, bytes) {
            Some((width, height)) => u64::from(width) * u64::from(height),
            None => return upload.saturating_add(limits.max_pixels.saturating_mul(8)),
        };
        if pixels > limits.max_pixels {
            return upload;
        }
        return upload.saturating_add(pixels.saturating_mul(8 * 2));
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

/// The width and height a file's header claims, read without the `image` crate, for the files
/// only shmimage's own readers understand; `None` where the header says nothing readable.
fn claimed_dimensions(container: Container, bytes: &[u8]) -> Option<(u32, u32)> {
    match container {
        Container::Tiff => tiff::decoder::Decoder::new(Cursor::new(bytes))
            .ok()?
            .dimensions()
            .ok(),
        Container::Bmp => bmp_header_dimensions(bytes),
        Container::Png => png_header_dimensions(bytes),
        Container::Gif => {
            // The logical screen descriptor follows the 6-byte signature.
            let screen = bytes.get(6..10)?;
            let side = |at: usize| u32::from(u16::from_le_bytes([screen[at], screen[at + 1]]));
            Some((side(0), side(2)))
        }
        _ => None,
    }
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
        // A palette TIFF, which only shmimage's own reader decodes, counts by the size its
        // header claims, not as the largest image allowed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/files");
        let palette = std::fs::read(dir.join("tiff/palette8.tif")).unwrap();
        let footprint = decode_footprint(
            &palette,
            &DecodeLimits {
                max_pixels: 100_000_000,
            },
        );
        assert!(footprint < 16 * 1024 * 1024, "{footprint} bytes");
    }
}
