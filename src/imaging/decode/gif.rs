//! GIF, through the `image` crate, with one repair: a GIF whose first frame has no color table
//! at all (neither a global one nor its own) is given a gray ramp, index `i` showing as gray
//! level `i`, as Pillow and other readers assume. The `image` crate refuses such files.

use std::borrow::Cow;

use super::with_image_crate;
use crate::imaging::formats::Container;
use crate::imaging::{DecodeError, DecodeLimits};
use crate::raster::Raster;

/// The logical screen descriptor ends here, 13 bytes in; a global color table follows it.
const SCREEN_END: usize = 13;

/// Decodes a GIF's first frame.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Raster, DecodeError> {
    let bytes = with_color_table(bytes);
    with_image_crate(&bytes, Container::Gif, limits)
}

/// `gif` itself, or, if its first frame has no color table to use, a copy with a 256-entry gray
/// ramp as its global color table.
fn with_color_table(gif: &[u8]) -> Cow<'_, [u8]> {
    let Some(&flags) = gif.get(10) else {
        return Cow::Borrowed(gif);
    };
    if flags & 0x80 != 0 || first_frame_has_local_table(gif) != Some(false) {
        return Cow::Borrowed(gif);
    }
    let mut repaired = Vec::with_capacity(gif.len() + 768);
    repaired.extend_from_slice(&gif[..SCREEN_END]);
    // Global color table present, 8 bits of color resolution, 2^(7+1) = 256 entries.
    repaired[10] = 0x80 | 0x70 | 7;
    for level in 0..=255u8 {
        repaired.extend_from_slice(&[level, level, level]);
    }
    repaired.extend_from_slice(&gif[SCREEN_END..]);
    Cow::Owned(repaired)
}

/// Whether the first image descriptor of a GIF without a global color table brings its own;
/// `None` if the blocks before it cannot be walked.
fn first_frame_has_local_table(gif: &[u8]) -> Option<bool> {
    let mut position = SCREEN_END;
    loop {
        match *gif.get(position)? {
            // Image descriptor: separator, 4 two-byte fields, then the flags.
            0x2C => return Some(gif.get(position + 9)? & 0x80 != 0),
            // Extension: introducer, label, then data sub-blocks up to a zero length.
            0x21 => {
                position += 2;
                loop {
                    let length = usize::from(*gif.get(position)?);
                    position += 1 + length;
                    if length == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x1 GIF87a with no color table anywhere: indices 0 and 200.
    fn tableless() -> Vec<u8> {
        let mut gif = b"GIF87a\x02\x00\x01\x00\x00\x00\x00".to_vec();
        // Image descriptor at 0,0, 2x1, no local table.
        gif.extend_from_slice(b"\x2c\x00\x00\x00\x00\x02\x00\x01\x00\x00");
        // LZW, minimum code size 8: clear (256), 0, 200, end (257), as 9-bit codes LSB first.
        let codes = [256u16, 0, 200, 257];
        let mut bits = 0u64;
        for (i, code) in codes.iter().enumerate() {
            bits |= u64::from(*code) << (i * 9);
        }
        let data = bits.to_le_bytes()[..5].to_vec();
        gif.push(8);
        gif.push(data.len() as u8);
        gif.extend_from_slice(&data);
        gif.extend_from_slice(b"\x00\x3b");
        gif
    }

    #[test]
    fn a_gif_without_any_color_table_shows_its_indices_as_gray() {
        let limits = DecodeLimits { max_pixels: 100 };
        let raster = decode(&tableless(), &limits).unwrap();
        assert_eq!(
            raster.pixels(),
            &[0, 0, 0, 255, 200, 200, 200, 255],
            "index 0 black, index 200 gray 200, both opaque"
        );
    }

    #[test]
    fn gifs_with_a_table_are_left_alone() {
        let mut gif = tableless();
        gif[10] = 0x80; // a global table of 2 entries follows
        gif.splice(13..13, [0u8, 0, 0, 255, 255, 255]);
        assert!(matches!(with_color_table(&gif), Cow::Borrowed(_)));
        assert!(matches!(with_color_table(b"GIF8"), Cow::Borrowed(_)));
    }
}
