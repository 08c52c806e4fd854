//! The image formats shmimage reads, in one list, and how each is recognised from its first
//! bytes.
//!
//! [`Container::ALL`] is the only list of accepted formats: the 415 message ("PNG, JPEG, ...")
//! is generated from it, so the two cannot drift apart. Formats people upload that shmimage
//! recognises but does not read (HEIC, AVIF, ...) are in [`Unreadable`], so their refusal can
//! name them instead of calling the file "not an image".
//!
//! Recognition looks at the bytes alone, never at a file name or a content type. Every format
//! but TGA starts with a signature; TGA has none, so a file is taken for TGA only if nothing else
//! claims it and its 18-byte header is consistent (see [`looks_like_tga`]).

use std::fmt::Write as _;

/// A container format shmimage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    Png,
    Jpeg,
    Gif,
    WebP,
    Bmp,
    Tiff,
    Qoi,
    Pnm,
    Tga,
    Ico,
    Cur,
    Hdr,
    OpenExr,
    Farbfeld,
    Dds,
}

impl Container {
    /// Every format shmimage reads, in the order the 415 message lists them.
    pub const ALL: [Container; 15] = [
        Container::Png,
        Container::Jpeg,
        Container::Gif,
        Container::WebP,
        Container::Bmp,
        Container::Tiff,
        Container::Qoi,
        Container::Pnm,
        Container::Tga,
        Container::Ico,
        Container::Cur,
        Container::Hdr,
        Container::OpenExr,
        Container::Farbfeld,
        Container::Dds,
    ];

    /// The name shmimage reports for the format, as in `Decoded::format` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Container::Png => "PNG",
            Container::Jpeg => "JPEG",
            Container::Gif => "GIF",
            Container::WebP => "WebP",
            Container::Bmp => "BMP",
            Container::Tiff => "TIFF",
            Container::Qoi => "QOI",
            Container::Pnm => "PNM",
            Container::Tga => "TGA",
            Container::Ico => "ICO",
            Container::Cur => "CUR",
            Container::Hdr => "Radiance HDR",
            Container::OpenExr => "OpenEXR",
            Container::Farbfeld => "farbfeld",
            Container::Dds => "DDS",
        }
    }

    /// The name as the 415 message lists it, with the variants a user may know it by.
    fn listed_name(self) -> &'static str {
        match self {
            Container::Pnm => "PNM (PBM, PGM, PPM, PAM)",
            other => other.name(),
        }
    }

    /// The format `bytes` start with, if shmimage reads it.
    pub fn detect(bytes: &[u8]) -> Option<Container> {
        let signature = |prefix: &[u8]| bytes.starts_with(prefix);
        let container = if signature(b"\x89PNG\r\n\x1a\n") {
            Container::Png
        } else if signature(&[0xFF, 0xD8, 0xFF]) {
            Container::Jpeg
        } else if signature(b"GIF87a") || signature(b"GIF89a") {
            Container::Gif
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Container::WebP
        } else if signature(b"BM") {
            Container::Bmp
        } else if signature(b"II*\0")
            || signature(b"MM\0*")
            || signature(b"II+\0")
            || signature(b"MM\0+")
        {
            // Classic TIFF (42) and BigTIFF (43), in either byte order.
            Container::Tiff
        } else if signature(b"qoif") {
            Container::Qoi
        } else if bytes.len() >= 2 && bytes[0] == b'P' && (b'1'..=b'7').contains(&bytes[1]) {
            Container::Pnm
        } else if signature(&[0, 0, 1, 0]) && looks_like_icon(bytes) {
            Container::Ico
        } else if signature(&[0, 0, 2, 0]) && looks_like_icon(bytes) {
            Container::Cur
        } else if signature(b"#?RADIANCE") || signature(b"#?RGBE") {
            Container::Hdr
        } else if signature(&[0x76, 0x2F, 0x31, 0x01]) {
            Container::OpenExr
        } else if signature(b"farbfeld") {
            Container::Farbfeld
        } else if signature(b"DDS ") {
            Container::Dds
        } else if looks_like_tga(bytes) {
            Container::Tga
        } else {
            return None;
        };
        Some(container)
    }
}

/// "PNG, JPEG, GIF, ..., farbfeld or DDS": every accepted format, for messages.
pub fn accepted_formats() -> String {
    let mut list = String::new();
    let last = Container::ALL.len() - 1;
    for (index, container) in Container::ALL.iter().enumerate() {
        let separator = match index {
            0 => "",
            _ if index == last => " or ",
            _ => ", ",
        };
        let _ = write!(list, "{separator}{}", container.listed_name());
    }
    list
}

/// A format people upload that shmimage recognises but does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Heic,
    Avif,
    JpegXl,
    Jpeg2000,
    Photoshop,
}

impl Unreadable {
    /// The format's name, for the 415 message.
    pub fn name(self) -> &'static str {
        match self {
            Unreadable::Heic => "HEIC/HEIF",
            Unreadable::Avif => "AVIF",
            Unreadable::JpegXl => "JPEG XL",
            Unreadable::Jpeg2000 => "JPEG 2000",
            Unreadable::Photoshop => "Photoshop (PSD)",
        }
    }

    /// The format `bytes` start with, if it is one of these.
    pub fn detect(bytes: &[u8]) -> Option<Unreadable> {
        if let Some(brands) = iso_media_brands(bytes) {
            // The major brand first, then the compatible ones: an AVIF file may list "mif1".
            for brand in brands.clone() {
                if matches!(brand, b"avif" | b"avis") {
                    return Some(Unreadable::Avif);
                }
            }
            for brand in brands {
                if matches!(
                    brand,
                    b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1"
                ) {
                    return Some(Unreadable::Heic);
                }
            }
            return None;
        }
        if bytes.starts_with(&[0xFF, 0x0A]) || bytes.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
            Some(Unreadable::JpegXl)
        } else if bytes.starts_with(b"\0\0\0\x0cjP  \r\n\x87\n")
            || bytes.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
        {
            Some(Unreadable::Jpeg2000)
        } else if bytes.starts_with(b"8BPS") {
            Some(Unreadable::Photoshop)
        } else {
            None
        }
    }
}

/// The brands of an ISO base media file (HEIF, AVIF, MP4): the major brand and the compatible
/// brands of its leading `ftyp` box; `None` if `bytes` do not start with one.
fn iso_media_brands(bytes: &[u8]) -> Option<impl Iterator<Item = &[u8; 4]> + Clone> {
    let size = usize::try_from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
    if bytes.get(4..8)? != b"ftyp" || size < 16 {
        return None;
    }
    let ftyp = bytes.get(8..size.min(bytes.len()))?;
    let major = ftyp.first_chunk::<4>()?;
    // After the major brand comes a 4-byte minor version, then the compatible brands.
    let compatible = ftyp.get(8..).unwrap_or_default().as_chunks::<4>().0;
    Some(std::iter::once(major).chain(compatible.iter()))
}

/// Whether an ICO or CUR signature is followed by a plausible directory: at least one entry,
/// and a first entry whose picture starts after the directory. (An uncompressed TGA without a
/// color map also starts with 0, 0, 2, 0; its next bytes make an empty directory.)
fn looks_like_icon(bytes: &[u8]) -> bool {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let (Some(count), Some(size), Some(offset)) = (u16_at(4), u32_at(6 + 8), u32_at(6 + 12)) else {
        return false;
    };
    count > 0 && size > 0 && u64::from(offset) >= 6 + 16 * u64::from(count)
}

/// Whether `bytes` start with a plausible TGA header: a known image type, a color map that is
/// either absent or fully described, a pixel depth TGA defines, a size of at least 1x1, and more
/// bytes than the header.
pub fn looks_like_tga(bytes: &[u8]) -> bool {
    let Some(header) = bytes.first_chunk::<18>() else {
        return false;
    };
    let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let color_map_type = header[1];
    let image_type = header[2];
    let color_map_entry_bits = header[7];
    let (width, height) = (u16_at(12), u16_at(14));
    let pixel_depth = header[16];
    let descriptor = header[17];
    let color_mapped = matches!(image_type, 1 | 9);
    let known_type = matches!(image_type, 1 | 2 | 3 | 9 | 10 | 11);
    let map_consistent = match color_map_type {
        0 => !color_mapped,
        1 => color_mapped && matches!(color_map_entry_bits, 15 | 16 | 24 | 32) && u16_at(5) > 0,
        _ => false,
    };
    let depth_consistent = match image_type {
        1 | 9 => pixel_depth == 8 || pixel_depth == 16,
        3 | 11 => pixel_depth == 8 || pixel_depth == 16,
        _ => matches!(pixel_depth, 15 | 16 | 24 | 32),
    };
    // Bits 6 and 7 of the descriptor (interleaving) are zero in every file written since 1991.
    known_type
        && map_consistent
        && depth_consistent
        && width > 0
        && height > 0
        && descriptor & 0xC0 == 0
        && bytes.len() > 18
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_415_list_names_every_format_once() {
        let list = accepted_formats();
        assert!(
            list.starts_with("PNG, JPEG, GIF, WebP, BMP, TIFF, "),
            "{list}"
        );
        assert!(list.ends_with(", farbfeld or DDS"), "{list}");
        for container in Container::ALL {
            assert_eq!(list.matches(container.listed_name()).count(), 1, "{list}");
        }
    }

    #[test]
    fn signatures_are_recognised() {
        let cases: [(&[u8], Container); 16] = [
            (b"\x89PNG\r\n\x1a\n....", Container::Png),
            (b"\xFF\xD8\xFF\xE0", Container::Jpeg),
            (b"GIF87a..", Container::Gif),
            (b"RIFF\x10\0\0\0WEBPVP8 ", Container::WebP),
            (b"BM......", Container::Bmp),
            (b"II*\0\x08\0\0\0", Container::Tiff),
            (b"MM\0+\0\x08\0\0", Container::Tiff),
            (b"qoif\0\0\0\x01", Container::Qoi),
            (b"P7\nWIDTH 1\n", Container::Pnm),
            (
                b"\0\0\x01\0\x01\0\x10\x10\0\0\x01\0\x20\0\x68\x04\0\0\x16\0\0\0",
                Container::Ico,
            ),
            (
                b"\0\0\x02\0\x01\0\x10\x10\0\0\x01\0\x20\0\x68\x04\0\0\x16\0\0\0",
                Container::Cur,
            ),
            (b"#?RADIANCE\n", Container::Hdr),
            (b"\x76\x2f\x31\x01\x02\0\0\0", Container::OpenExr),
            (b"farbfeld\0\0\0\x01", Container::Farbfeld),
            (b"DDS \x7c\0\0\0", Container::Dds),
            (
                b"\0\0\x02\0\0\0\0\0\0\0\0\0\x02\0\x01\0\x18\0\xff\xff\xff",
                Container::Tga,
            ),
        ];
        for (bytes, container) in cases {
            assert_eq!(Container::detect(bytes), Some(container), "{bytes:?}");
        }
    }

    #[test]
    fn text_and_noise_are_not_tga() {
        assert!(!looks_like_tga(b"Shopping list:\n- bread\n- milk\n- a PNG"));
        assert!(!looks_like_tga(&[0; 64]));
        // A color-mapped type without a color map.
        let mut header = [0u8; 20];
        header[2] = 1;
        header[12] = 1;
        header[14] = 1;
        header[16] = 8;
        assert!(!looks_like_tga(&header));
    }

    #[test]
    fn heic_and_avif_are_named() {
        let ftyp = |major: &[u8; 4], compatible: &[&[u8; 4]]| {
            let mut bytes = (16 + 4 * compatible.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(b"ftyp");
            bytes.extend_from_slice(major);
            bytes.extend_from_slice(&[0; 4]);
            for brand in compatible {
                bytes.extend_from_slice(*brand);
            }
            bytes
        };
        assert_eq!(
            Unreadable::detect(&ftyp(b"heic", &[b"mif1", b"heic"])),
            Some(Unreadable::Heic)
        );
        assert_eq!(
            Unreadable::detect(&ftyp(b"mif1", &[b"avif", b"miaf"])),
            Some(Unreadable::Avif)
        );
        assert_eq!(Unreadable::detect(&ftyp(b"isom", &[b"mp41"])), None);
        assert_eq!(
            Unreadable::detect(b"8BPS\0\x01"),
            Some(Unreadable::Photoshop)
        );
        assert_eq!(Container::detect(&ftyp(b"heic", &[])), None);
    }
}
