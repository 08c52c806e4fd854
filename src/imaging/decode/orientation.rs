//! Which way up a picture is meant to be shown, and turning a raster that way.
//!
//! Cameras store pixels as the sensor read them and say in metadata how to turn them. The
//! orientation comes from the Exif block when it has one (also when a writer left the
//! `Exif\0\0` prefix of a JPEG APP1 segment in front of it, as many WebP writers do), and
//! otherwise from XMP's `tiff:Orientation`, as an attribute or an element.

use image::metadata::Orientation;

use super::zeroed;
use crate::imaging::DecodeError;
use crate::raster::Raster;

/// The orientation an Exif block (a TIFF structure, with or without the `Exif\0\0` prefix)
/// gives, or `None` if it gives none or cannot be read.
pub fn from_exif(exif: &[u8]) -> Option<Orientation> {
    let exif = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    Orientation::from_exif_chunk(exif)
}

/// The orientation an XMP packet gives in `tiff:Orientation`, or `None`.
///
/// The packet is searched as bytes, not parsed: the value is a single digit from 1 to 8, written
/// either as an attribute (`tiff:Orientation="6"`) or as an element
/// (`<tiff:Orientation>6</tiff:Orientation>`).
pub fn from_xmp(xmp: &[u8]) -> Option<Orientation> {
    const NAME: &[u8] = b"tiff:Orientation";
    let mut rest = xmp;
    while let Some(at) = find(rest, NAME) {
        let after = &rest[at + NAME.len()..];
        let value = match after.first() {
            // An attribute: optional spaces, '=', optional spaces, a quote, the digit.
            Some(b' ' | b'=') => {
                let after = trim_start(after);
                after
                    .strip_prefix(b"=")
                    .map(trim_start)
                    .and_then(|after| after.strip_prefix(b"\"").or(after.strip_prefix(b"'")))
                    .and_then(|after| after.first())
            }
            // An element: '>', optional spaces, the digit.
            Some(b'>') => trim_start(&after[1..]).first(),
            _ => None,
        };
        if let Some(digit @ b'1'..=b'8') = value.copied() {
            return Orientation::from_exif(digit - b'0');
        }
        rest = after;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let spaces = bytes
        .iter()
        .take_while(|byte| byte.is_ascii_whitespace())
        .count();
    &bytes[spaces..]
}

/// `raster` turned and flipped as `orientation` says, so it shows upright. The turned copy is
/// allocated fallibly.
pub fn apply(raster: Raster, orientation: Orientation) -> Result<Raster, DecodeError> {
    if orientation == Orientation::NoTransforms {
        return Ok(raster);
    }
    let (width, height, format) = (raster.width(), raster.height(), raster.format());
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (out_width, out_height) = if swaps {
        (height, width)
    } else {
        (width, height)
    };
    let pixel = format.bytes_per_pixel() as usize;
    let (w, h) = (width as usize, height as usize);
    let source = raster.into_pixels();
    let mut turned = zeroed::<u8>(source.len() as u64)?;
    for (index, target) in turned.chunks_exact_mut(pixel).enumerate() {
        let (x, y) = (index % out_width as usize, index / out_width as usize);
        // Where the pixel shown at (x, y) is stored.
        let (sx, sy) = match orientation {
            Orientation::NoTransforms => (x, y),
            Orientation::FlipHorizontal => (w - 1 - x, y),
            Orientation::Rotate180 => (w - 1 - x, h - 1 - y),
            Orientation::FlipVertical => (x, h - 1 - y),
            // Exif 5: transposed.
            Orientation::Rotate90FlipH => (y, x),
            // Exif 6: stored turned 90° counterclockwise.
            Orientation::Rotate90 => (y, h - 1 - x),
            // Exif 7: transversed.
            Orientation::Rotate270FlipH => (w - 1 - y, h - 1 - x),
            // Exif 8: stored turned 90° clockwise.
            Orientation::Rotate270 => (w - 1 - y, x),
        };
        let at = (sy * w + sx) * pixel;
        target.copy_from_slice(&source[at..at + pixel]);
    }
    Ok(Raster::new(out_width, out_height, format, turned)
        .expect("turning keeps the number of pixels and their format"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::PixelFormat;

    #[test]
    fn xmp_orientation_as_attribute_or_element() {
        let attribute = br#"<rdf:Description tiff:Orientation="6" tiff:Make="x"/>"#;
        assert_eq!(from_xmp(attribute), Some(Orientation::Rotate90));
        let spaced = b"<rdf:Description tiff:Orientation = '3'/>";
        assert_eq!(from_xmp(spaced), Some(Orientation::Rotate180));
        let element = b"<tiff:Orientation>\n 8</tiff:Orientation>";
        assert_eq!(from_xmp(element), Some(Orientation::Rotate270));
        assert_eq!(from_xmp(b"<tiff:OrientationX>6</tiff:OrientationX>"), None);
        assert_eq!(from_xmp(b"tiff:Orientation=\"9\""), None);
        assert_eq!(from_xmp(b"no orientation here"), None);
    }

    #[test]
    fn exif_with_or_without_the_jpeg_prefix() {
        let tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        assert_eq!(from_exif(tiff), Some(Orientation::Rotate90));
        let prefixed = [b"Exif\0\0".as_slice(), tiff].concat();
        assert_eq!(from_exif(&prefixed), Some(Orientation::Rotate90));
    }

    #[test]
    fn every_orientation_matches_the_image_crate() {
        // A 3x2 RGB 16-bit raster whose pixels all differ.
        let (width, height) = (3u32, 2u32);
        let samples: Vec<u16> = (0..width * height * 3).map(|i| i as u16 * 1000).collect();
        let reference = image::DynamicImage::ImageRgb16(
            image::ImageBuffer::from_raw(width, height, samples.clone()).unwrap(),
        );
        for exif in 1..=8 {
            let orientation = Orientation::from_exif(exif).unwrap();
            let bytes = samples.iter().flat_map(|s| s.to_ne_bytes()).collect();
            let raster = Raster::new(width, height, PixelFormat::Rgb16, bytes).unwrap();
            let turned = apply(raster, orientation).unwrap();
            let mut expected = reference.clone();
            expected.apply_orientation(orientation);
            assert_eq!(
                (turned.width(), turned.height()),
                (expected.width(), expected.height()),
                "orientation {exif}"
            );
            assert_eq!(turned.pixels(), expected.as_bytes(), "orientation {exif}");
        }
    }
}
