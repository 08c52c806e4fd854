//! ICO and CUR: the largest picture of the file. Pictures stored as PNG are decoded as the PNG
//! they are, in whatever pixel format it has (the `image` crate's ICO decoder takes only RGBA
//! ones); pictures stored as BMP go through the `image` crate's ICO decoder.

use super::with_image_crate;
use crate::imaging::formats::Container;
use crate::imaging::{DecodeError, DecodeLimits};
use crate::raster::Raster;

/// One entry of the directory.
#[derive(Debug, Clone, Copy)]
struct Entry {
    width: u32,
    height: u32,
    bits: u16,
    size: usize,
    offset: usize,
}

/// Decodes the largest picture of an ICO or CUR file (`container` says which).
pub fn decode(
    bytes: &[u8],
    container: Container,
    limits: &DecodeLimits,
) -> Result<Raster, DecodeError> {
    if let Some(entry) = largest_entry(bytes)
        && let Some(png) = bytes.get(entry.offset..entry.offset.saturating_add(entry.size))
        && png.starts_with(b"\x89PNG\r\n\x1a\n")
    {
        return with_image_crate(png, Container::Png, limits).map_err(|error| match error {
            DecodeError::Corrupt { detail, .. } => DecodeError::Corrupt {
                format: container.name(),
                detail: format!("its PNG picture: {detail}"),
            },
            other => other,
        });
    }
    with_image_crate(bytes, container, limits)
}

/// The entry with the most pixels (and, among those, the most bits per pixel); `None` if the
/// directory cannot be read.
fn largest_entry(bytes: &[u8]) -> Option<Entry> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let count = usize::from(u16_at(4)?);
    (0..count)
        .map(|index| {
            let at = 6 + index * 16;
            let side = |byte: u8| if byte == 0 { 256 } else { u32::from(byte) };
            Some(Entry {
                width: side(*bytes.get(at)?),
                height: side(*bytes.get(at + 1)?),
                bits: u16_at(at + 6)?,
                size: usize::try_from(u32_at(at + 8)?).ok()?,
                offset: usize::try_from(u32_at(at + 12)?).ok()?,
            })
        })
        .collect::<Option<Vec<Entry>>>()?
        .into_iter()
        .max_by_key(|entry| (entry.width * entry.height, entry.bits))
}
