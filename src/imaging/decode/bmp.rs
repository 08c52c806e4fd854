//! BMP, through the `image` crate, except where it falls short:
//!
//! - **OS/2 2.x headers** (16 to 64 bytes, other than the Windows sizes) are rewritten into the
//!   40-byte Windows header they extend, which the `image` crate reads. Their two
//!   OS/2-only compressions (Huffman 1-D and 24-bit RLE) are refused by name.
//! - **Run-length encoded files** (RLE8, RLE4, bottom-up) are decoded here: pixels the encoding
//!   skips (with a delta, or an early end of line or of file) take palette entry 0, as the BMP
//!   suite's reference pictures and Pillow show them; the `image` crate makes them black.

use std::borrow::Cow;

use super::{check_pixel_count, with_image_crate, zeroed};
use crate::imaging::formats::Container;
use crate::imaging::{DecodeError, DecodeLimits};
use crate::raster::{PixelFormat, Raster};

const FORMAT: &str = "BMP";
const FILE_HEADER: usize = 14;
const WINDOWS_HEADER: usize = 40;

fn corrupt(detail: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt {
        format: FORMAT,
        detail: detail.into(),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Decodes a BMP.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Raster, DecodeError> {
    let bytes = windows_header(bytes)?;
    if let Some(raster) = decode_rle(&bytes, limits)? {
        return Ok(raster);
    }
    with_image_crate(&bytes, Container::Bmp, limits)
}

/// `bmp` itself, or a copy whose OS/2 2.x header has become the Windows header it extends.
fn windows_header(bmp: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    let Some(size) = u32_at(bmp, FILE_HEADER) else {
        return Ok(Cow::Borrowed(bmp));
    };
    let size = size as usize;
    // 12 is OS/2 1.x (read by the `image` crate), 40, 52, 56, 108 and 124 are Windows.
    if !(16..=64).contains(&size) || matches!(size, 40 | 52 | 56) {
        return Ok(Cow::Borrowed(bmp));
    }
    let Some(header) = bmp.get(FILE_HEADER..FILE_HEADER + size) else {
        return Ok(Cow::Borrowed(bmp));
    };
    // The first 40 bytes of an OS/2 2.x header are laid out as Windows' (fields a short header
    // leaves out are zero), except for the compressions Windows does not have.
    let mut info = [0u8; WINDOWS_HEADER];
    let common = size.min(WINDOWS_HEADER);
    info[..common].copy_from_slice(&header[..common]);
    info[..4].copy_from_slice(&(WINDOWS_HEADER as u32).to_le_bytes());
    match u32_at(&info, 16) {
        Some(3) => {
            return Err(DecodeError::Unsupported {
                format: FORMAT,
                feature: "OS/2 Huffman 1-D compression".to_owned(),
            });
        }
        Some(4) => {
            return Err(DecodeError::Unsupported {
                format: FORMAT,
                feature: "OS/2 24-bit run-length compression".to_owned(),
            });
        }
        _ => {}
    }
    let pixel_offset = u32_at(bmp, 10).unwrap_or(0) as usize;
    let new_offset = (pixel_offset + WINDOWS_HEADER)
        .checked_sub(size)
        .ok_or_else(|| corrupt("its pixel data starts inside its header"))?;
    let mut rewritten = Vec::with_capacity(bmp.len() + WINDOWS_HEADER);
    rewritten.extend_from_slice(&bmp[..FILE_HEADER]);
    rewritten.extend_from_slice(&info);
    rewritten.extend_from_slice(&bmp[FILE_HEADER + size..]);
    let total = u32::try_from(rewritten.len()).unwrap_or(u32::MAX);
    rewritten[2..6].copy_from_slice(&total.to_le_bytes());
    let new_offset = u32::try_from(new_offset).unwrap_or(u32::MAX);
    rewritten[10..14].copy_from_slice(&new_offset.to_le_bytes());
    Ok(Cow::Owned(rewritten))
}

/// Decodes a bottom-up RLE8 or RLE4 BMP with a Windows header; `None` for every other BMP.
fn decode_rle(bmp: &[u8], limits: &DecodeLimits) -> Result<Option<Raster>, DecodeError> {
    let header_size = u32_at(bmp, FILE_HEADER).unwrap_or(0) as usize;
    if header_size < WINDOWS_HEADER {
        return Ok(None);
    }
    let field = |at| u32_at(bmp, FILE_HEADER + at);
    let (Some(width), Some(height), Some(bits), Some(compression)) = (
        field(4).map(|w| w as i32),
        field(8).map(|h| h as i32),
        u16_at(bmp, FILE_HEADER + 14),
        field(16),
    ) else {
        return Ok(None);
    };
    let rle4 = match (compression, bits) {
        (1, 8) => false,
        (2, 4) => true,
        _ => return Ok(None),
    };
    // Top-down run-length files are invalid; the `image` crate says so.
    if width <= 0 || height <= 0 {
        return Ok(None);
    }
    let (width, height) = (width as u32, height as u32);
    check_pixel_count(width, height, limits)?;

    let colors_used = field(32).unwrap_or(0) as usize;
    let entries = match colors_used {
        0 => 1 << bits,
        n => n.min(256),
    };
    let palette_at = FILE_HEADER + header_size;
    let palette: Vec<[u8; 3]> = (0..entries)
        .map_while(|i| {
            let entry = bmp.get(palette_at + i * 4..palette_at + i * 4 + 3)?;
            Some([entry[2], entry[1], entry[0]])
        })
        .collect();
    if palette.is_empty() {
        return Err(corrupt("it has no palette"));
    }
    let data_at = u32_at(bmp, 10).unwrap_or(0) as usize;
    let data = bmp
        .get(data_at..)
        .ok_or_else(|| corrupt("its pixel data starts past the end of the file"))?;

    let indices = expand_rle(data, width as usize, height as usize, rle4)?;
    let mut pixels = Vec::with_capacity(indices.len() * 3);
    // Rows are stored bottom-up.
    for row in indices.chunks_exact(width as usize).rev() {
        for &index in row {
            // An index past the palette shows as entry 0, as for skipped pixels.
            let color = palette.get(usize::from(index)).unwrap_or(&palette[0]);
            pixels.extend_from_slice(color);
        }
    }
    Raster::new(width, height, PixelFormat::Rgb8, pixels)
        .map(Some)
        .map_err(|error| corrupt(error.to_string()))
}

/// Runs expanded into palette indices, bottom row first; skipped pixels are index 0.
fn expand_rle(
    data: &[u8],
    width: usize,
    height: usize,
    rle4: bool,
) -> Result<Vec<u8>, DecodeError> {
    let mut indices = zeroed::<u8>(width as u64 * height as u64)?;
    let (mut x, mut y) = (0usize, 0usize);
    let mut read = 0usize;
    let bad = || corrupt("its run-length data runs past the edge of the picture");
    while y < height {
        let (Some(&count), Some(&value)) = (data.get(read), data.get(read + 1)) else {
            // Data that stops early leaves the rest skipped.
            break;
        };
        read += 2;
        if count > 0 {
            // A run; one that goes past the end of the row is cut there, as other readers do.
            let row = &mut indices[y * width..(y + 1) * width];
            for i in 0..usize::from(count) {
                if x >= width {
                    break;
                }
                row[x] = if rle4 {
                    if i % 2 == 0 { value >> 4 } else { value & 0x0F }
                } else {
                    value
                };
                x += 1;
            }
            continue;
        }
        match value {
            // End of line.
            0 => {
                x = 0;
                y += 1;
            }
            // End of bitmap.
            1 => break,
            // Delta: move right and up.
            2 => {
                let (Some(&dx), Some(&dy)) = (data.get(read), data.get(read + 1)) else {
                    break;
                };
                read += 2;
                x += usize::from(dx);
                y += usize::from(dy);
                if x > width || y > height {
                    return Err(bad());
                }
            }
            // Absolute: `value` literal indices, padded to a whole number of 16-bit words.
            literal => {
                let literal = usize::from(literal);
                let stored = if rle4 { literal.div_ceil(2) } else { literal };
                let Some(bytes) = data.get(read..read + stored) else {
                    break;
                };
                read += stored + stored % 2;
                if x + literal > width {
                    return Err(bad());
                }
                let row = &mut indices[y * width..(y + 1) * width];
                for i in 0..literal {
                    row[x + i] = if rle4 {
                        let byte = bytes[i / 2];
                        if i % 2 == 0 { byte >> 4 } else { byte & 0x0F }
                    } else {
                        bytes[i]
                    };
                }
                x += literal;
            }
        }
    }
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_pixels_are_palette_entry_zero() {
        // 4x2 RLE8: a run of 2 of index 1, a delta of (1, 0), end of line, then end of bitmap
        // (the whole top row is skipped).
        let data = [2, 1, 0, 2, 1, 0, 1, 1, 0, 0, 0, 1];
        let indices = expand_rle(&data, 4, 2, false).unwrap();
        assert_eq!(indices, [1, 1, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn rle4_nibbles_alternate() {
        // A run of 3 alternating 0x1 and 0x2, then an absolute run of 3 nibbles.
        let data = [3, 0x12, 0, 3, 0x34, 0x50, 0, 1];
        let indices = expand_rle(&data, 6, 1, true).unwrap();
        assert_eq!(indices, [1, 2, 1, 3, 4, 5]);
    }

    #[test]
    fn an_absolute_run_past_the_row_is_corrupt() {
        let data = [0, 5, 1, 2, 3, 4, 5, 0];
        assert!(matches!(
            expand_rle(&data, 4, 1, false),
            Err(DecodeError::Corrupt { .. })
        ));
    }
}
