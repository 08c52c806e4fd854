//! PNG files of the plain kind, read with their own image data kept for the PNG a server
//! hands out.
//!
//! A PNG upload already is a PNG: when the pixels a decoder gets from its image data are
//! exactly the pixels shmimage stores, the servers can hand out that same compressed data (in a
//! file of their own: signature, the upload's `IHDR`, its `IDAT` chunks, `IEND`) instead of
//! encoding the pixels again. That takes the encode out of sharing a PNG, and the file is the
//! size the uploader's encoder made it (usually smaller than shmimage's fast deflate).
//!
//! That holds for a *plain* PNG ([`plain_layout`]): 8 or 16 bits per sample; gray, gray and
//! alpha, RGB or RGBA; not interlaced (a server checks that every PNG it serves from the segment
//! is not); no `tRNS` chunk (which turns such a file into one with alpha); no orientation
//! (`eXIf`, or XMP in an `iTXt` chunk: the pixels are turned upright, the data is not); not
//! animated; no critical chunk this reader does not know; the `IDAT` chunks one after the other;
//! and image data no larger than the pixels themselves. Those files are decoded here with the
//! `png` crate and no transformations, its checks of every chunk's CRC and of the image data's
//! Adler-32 turned on (the `image` crate skips the latter), so data a strict decoder would
//! refuse is never handed out. What the `png` crate still lets through is what libpng lets
//! through too: bytes after the end of the compressed stream, and a stream whose last pixel
//! row is complete but whose checksum is missing.
//!
//! Every other PNG, and any plain one this reader refuses, goes through the `image` crate as
//! before and is encoded by the servers as any other image.

use std::io::Cursor;
use std::ops::Range;

use super::{DecodeError, check_pixel_count, zeroed};
use crate::imaging::DecodeLimits;
use crate::raster::{PixelFormat, Raster};

/// The PNG file signature.
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The `IEND` chunk: no data, and its CRC.
const IEND: &[u8] = b"\0\0\0\0IEND\xae\x42\x60\x82";

/// The largest chunk length the PNG specification allows.
const MAX_CHUNK_LEN: u32 = (1 << 31) - 1;

/// Where a plain PNG's header and image data are, in the upload: together with the fixed
/// signature and `IEND`, the PNG of exactly the pixels decoded from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePng {
    /// The whole `IHDR` chunk: length, type, 13 bytes of header, CRC.
    ihdr: Range<usize>,
    /// Every `IDAT` chunk, whole, from the first one's length to the last one's CRC.
    idat: Range<usize>,
}

impl SourcePng {
    /// The PNG file, as pieces of `upload` (the bytes this was read from) between the fixed
    /// signature and `IEND`.
    ///
    /// # Panics
    ///
    /// If `upload` is not the file this was read from and is shorter than it.
    pub fn parts<'a>(&self, upload: &'a [u8]) -> [&'a [u8]; 4] {
        [
            SIGNATURE,
            &upload[self.ihdr.clone()],
            &upload[self.idat.clone()],
            IEND,
        ]
    }

    /// The length of the PNG file [`Self::parts`] make.
    pub fn len(&self) -> usize {
        SIGNATURE.len() + self.ihdr.len() + self.idat.len() + IEND.len()
    }

    /// Never: a PNG has a signature.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A plain PNG's layout, read from its chunks without decoding anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainLayout {
    width: u32,
    height: u32,
    format: PixelFormat,
    source: SourcePng,
}

/// The layout of `bytes` if they are a plain PNG (see the module docs), else `None`. Reads the
/// chunk headers only; CRCs are checked by the decoder.
pub fn plain_layout(bytes: &[u8]) -> Option<PlainLayout> {
    let mut at = SIGNATURE.len();
    if bytes.get(..at)? != SIGNATURE {
        return None;
    }
    let mut header = None;
    let mut idat: Option<Range<usize>> = None;
    let mut idat_ended = false;
    loop {
        let (length, kind) = chunk_head(bytes, at)?;
        let data = at + 8;
        let end = data.checked_add(length as usize)?.checked_add(4)?;
        if end > bytes.len() {
            return None;
        }
        match &kind {
            b"IHDR" if header.is_none() && at == SIGNATURE.len() && length == 13 => {
                header = Some(plain_header(&bytes[data..data + 13])?);
            }
            // The first chunk must be the header, and there is only one.
            _ if header.is_none() => return None,
            b"IHDR" => return None,
            b"IDAT" if idat_ended => return None,
            b"IDAT" => {
                idat = Some(idat.map_or(at..end, |found| found.start..end));
            }
            b"IEND" => break,
            // Transparency, orientation, animation: the data alone is not the stored image.
            b"tRNS" | b"eXIf" | b"iTXt" | b"acTL" | b"fcTL" | b"fdAT" => return None,
            // A suggested palette changes nothing for these color types.
            b"PLTE" => {}
            // A critical chunk this reader does not know.
            [first, ..] if first.is_ascii_uppercase() => return None,
            _ => {}
        }
        if idat.is_some() && kind != *b"IDAT" {
            idat_ended = true;
        }
        at = end;
    }
    let (width, height, format) = header?;
    let idat = idat?;
    // Image data larger than the pixels is poorly compressed: an encode does better.
    let pixel_len = format.byte_len(width, height)?;
    if (idat.len() as u64) > pixel_len {
        return None;
    }
    Some(PlainLayout {
        width,
        height,
        format,
        source: SourcePng {
            ihdr: SIGNATURE.len()..SIGNATURE.len() + 25,
            idat,
        },
    })
}

/// A chunk's length and type at `at`, if the bytes hold them and the length is allowed.
fn chunk_head(bytes: &[u8], at: usize) -> Option<(u32, [u8; 4])> {
    let head = bytes.get(at..at.checked_add(8)?)?;
    let length = u32::from_be_bytes(head[..4].try_into().ok()?);
    let kind: [u8; 4] = head[4..].try_into().ok()?;
    (length <= MAX_CHUNK_LEN && kind.iter().all(u8::is_ascii_alphabetic)).then_some((length, kind))
}

/// The size and pixel format an `IHDR`'s 13 bytes give, if they describe a plain image.
fn plain_header(ihdr: &[u8]) -> Option<(u32, u32, PixelFormat)> {
    let width = u32::from_be_bytes(ihdr[0..4].try_into().ok()?);
    let height = u32::from_be_bytes(ihdr[4..8].try_into().ok()?);
    let [depth, color_type, compression, filter, interlace] = ihdr[8..13] else {
        return None;
    };
    let format = match (color_type, depth) {
        (0, 8) => PixelFormat::L8,
        (4, 8) => PixelFormat::La8,
        (2, 8) => PixelFormat::Rgb8,
        (6, 8) => PixelFormat::Rgba8,
        (0, 16) => PixelFormat::L16,
        (4, 16) => PixelFormat::La16,
        (2, 16) => PixelFormat::Rgb16,
        (6, 16) => PixelFormat::Rgba16,
        _ => return None,
    };
    let plain = width > 0 && height > 0 && (compression, filter, interlace) == (0, 0, 0);
    plain.then_some((width, height, format))
}

impl PlainLayout {
    /// The image's size.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixel format the image is stored in.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Where the file's header and image data are.
    pub fn source(&self) -> &SourcePng {
        &self.source
    }

    /// Refuses the image if it has more pixels than `limits` allow, as every decode does.
    pub fn check_limits(&self, limits: &DecodeLimits) -> Result<(), DecodeError> {
        check_pixel_count(self.width, self.height, limits)
    }
}

/// Decodes the plain PNG in `bytes` whose layout [`plain_layout`] read, row by row: each row,
/// top to bottom, in a raster's byte order (16-bit samples in the machine's order), goes to
/// `row`. `Ok(false)` if the `png` crate refuses the file with its checks on (the caller then
/// reads it as any other PNG, and its data is not handed out; rows given so far are to be
/// thrown away); errors are the limits'.
pub(super) fn decode_rows(
    bytes: &[u8],
    layout: &PlainLayout,
    limits: &DecodeLimits,
    mut row: impl FnMut(&[u8]),
) -> Result<bool, DecodeError> {
    let (width, height, format) = (layout.width, layout.height, layout.format);
    check_pixel_count(width, height, limits)?;
    let row_len = u64::from(width) * u64::from(format.bytes_per_pixel());
    let Ok(row_len) = usize::try_from(row_len) else {
        return Ok(false);
    };
    let mut options = png::DecodeOptions::default();
    options.set_ignore_adler32(false);
    options.set_ignore_crc(false);
    // Text and ICC profiles are not kept: no need to inflate them.
    options.set_ignore_text_chunk(true);
    options.set_ignore_iccp_chunk(true);
    let mut decoder = png::Decoder::new_with_options(Cursor::new(bytes), options);
    // The decoder's own buffers: a few rows, and the chunks it reads.
    decoder.set_limits(png::Limits {
        bytes: row_len.saturating_mul(8).saturating_add(1 << 20),
    });
    decoder.set_transformations(png::Transformations::IDENTITY);
    let Ok(mut reader) = decoder.read_info() else {
        return Ok(false);
    };
    if reader.info().size() != (width, height) || reader.output_line_size(width) != Some(row_len) {
        return Ok(false);
    }
    // 16-bit rows are turned into the machine's byte order here.
    let mut native = if format.bit_depth() == 16 {
        zeroed::<u8>(row_len as u64)?
    } else {
        Vec::new()
    };
    for _ in 0..height {
        let Ok(Some(decoded)) = reader.next_row() else {
            return Ok(false);
        };
        let data = decoded.data();
        if data.len() != row_len {
            return Ok(false);
        }
        if native.is_empty() {
            row(data);
        } else {
            for (out, sample) in native.chunks_exact_mut(2).zip(data.chunks_exact(2)) {
                let value = u16::from_be_bytes([sample[0], sample[1]]);
                out.copy_from_slice(&value.to_ne_bytes());
            }
            row(&native);
        }
    }
    // The rest of the image data, its Adler-32 and every chunk up to IEND are checked too.
    Ok(reader.finish().is_ok())
}

/// Decodes the plain PNG in `bytes` into a raster (see [`decode_rows`]). `Ok(None)` if the
/// `png` crate refuses it with its checks on; errors are the limits'.
pub(super) fn decode(
    bytes: &[u8],
    layout: PlainLayout,
    limits: &DecodeLimits,
) -> Result<Option<(Raster, SourcePng)>, DecodeError> {
    check_pixel_count(layout.width, layout.height, limits)?;
    let Some(len) = layout.format.byte_len(layout.width, layout.height) else {
        return Ok(None);
    };
    let mut pixels = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|len| pixels.try_reserve_exact(len).ok())
        .ok_or(DecodeError::OutOfMemory { bytes: len })?;
    if !decode_rows(bytes, &layout, limits, |row| pixels.extend_from_slice(row))? {
        return Ok(None);
    }
    let Ok(raster) = Raster::new(layout.width, layout.height, layout.format, pixels) else {
        return Ok(None);
    };
    Ok(Some((raster, layout.source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `pixels` written by the `png` crate, with `extra` chunks written after the
    /// header, and `idat_pieces` IDAT chunks.
    fn png_of(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        pixels: &[u8],
        extra: &[(&[u8; 4], &[u8])],
    ) -> Vec<u8> {
        let mut file = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut file, width, height);
            encoder.set_color(color);
            encoder.set_depth(depth);
            let mut writer = encoder.write_header().unwrap();
            for (kind, data) in extra {
                writer
                    .write_chunk(png::chunk::ChunkType(**kind), data)
                    .unwrap();
            }
            writer.write_image_data(pixels).unwrap();
        }
        file
    }

    fn gradient(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_pixels: 1 << 24,
        }
    }

    /// The PNG the parts make.
    fn joined(source: &SourcePng, upload: &[u8]) -> Vec<u8> {
        let png = source.parts(upload).concat();
        assert_eq!(png.len(), source.len());
        png
    }

    #[test]
    fn every_plain_format_decodes_and_its_data_decodes_to_the_same_pixels() {
        use png::{BitDepth, ColorType};
        let cases = [
            (ColorType::Grayscale, BitDepth::Eight, PixelFormat::L8),
            (ColorType::GrayscaleAlpha, BitDepth::Eight, PixelFormat::La8),
            (ColorType::Rgb, BitDepth::Eight, PixelFormat::Rgb8),
            (ColorType::Rgba, BitDepth::Eight, PixelFormat::Rgba8),
            (ColorType::Grayscale, BitDepth::Sixteen, PixelFormat::L16),
            (
                ColorType::GrayscaleAlpha,
                BitDepth::Sixteen,
                PixelFormat::La16,
            ),
            (ColorType::Rgb, BitDepth::Sixteen, PixelFormat::Rgb16),
            (ColorType::Rgba, BitDepth::Sixteen, PixelFormat::Rgba16),
        ];
        for (color, depth, format) in cases {
            let (width, height) = (37, 23);
            let len = format.byte_len(width, height).unwrap() as usize;
            let file = png_of(width, height, color, depth, &gradient(len), &[]);
            let layout = plain_layout(&file).expect("a plain PNG");
            let (raster, source) = decode(&file, layout, &limits()).unwrap().unwrap();
            assert_eq!(raster.format(), format);
            // The image crate reads the file and the PNG made of its parts alike.
            let expected = image::load_from_memory(&file).unwrap();
            assert_eq!(raster.pixels(), expected.as_bytes(), "{format}");
            let again = image::load_from_memory(&joined(&source, &file)).unwrap();
            assert_eq!(again.as_bytes(), expected.as_bytes(), "{format}");
        }
    }

    #[test]
    fn the_data_of_a_file_in_many_idat_chunks_with_metadata_is_kept_whole() {
        let (width, height) = (300, 200);
        let pixels = gradient(width as usize * height as usize * 3);
        let mut file = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut file, width, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder
                .add_text_chunk("Comment".into(), "kept out".into())
                .unwrap();
            let mut writer = encoder.write_header().unwrap();
            let mut stream = writer.stream_writer_with_size(100).unwrap();
            std::io::Write::write_all(&mut stream, &pixels).unwrap();
            stream.finish().unwrap();
        }
        let layout = plain_layout(&file).expect("a plain PNG");
        let (raster, source) = decode(&file, layout, &limits()).unwrap().unwrap();
        assert_eq!(raster.pixels(), &pixels[..]);
        let png = joined(&source, &file);
        assert!(png.windows(4).filter(|w| w == b"IDAT").count() > 3);
        assert!(
            !png.windows(4).any(|w| w == b"tEXt"),
            "metadata is left out"
        );
        let again = image::load_from_memory(&png).unwrap();
        assert_eq!(again.as_bytes(), &pixels[..]);
    }

    #[test]
    fn files_whose_data_alone_is_not_the_stored_image_are_not_plain() {
        let pixels = gradient(16 * 16 * 3);
        let rgb = |extra: &[(&[u8; 4], &[u8])]| {
            png_of(
                16,
                16,
                png::ColorType::Rgb,
                png::BitDepth::Eight,
                &pixels,
                extra,
            )
        };
        assert!(plain_layout(&rgb(&[])).is_some());
        // Transparency, orientation, XMP, animation, an unknown critical chunk.
        assert!(plain_layout(&rgb(&[(b"tRNS", &[0, 1, 0, 2, 0, 3])])).is_none());
        assert!(plain_layout(&rgb(&[(b"eXIf", b"MM\0*\0\0\0\x08\0\0")])).is_none());
        assert!(plain_layout(&rgb(&[(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0x")])).is_none());
        assert!(plain_layout(&rgb(&[(b"acTL", &[0, 0, 0, 1, 0, 0, 0, 0])])).is_none());
        assert!(plain_layout(&rgb(&[(b"ZZZZ", b"")])).is_none());
        // Palettes, low bit depths, interlacing.
        let palette = {
            let mut file = Vec::new();
            let mut encoder = png::Encoder::new(&mut file, 4, 4);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_palette(vec![0u8; 3 * 256]);
            encoder
                .write_header()
                .unwrap()
                .write_image_data(&[0; 16])
                .unwrap();
            file
        };
        assert!(plain_layout(&palette).is_none());
        let gray4 = png_of(
            8,
            2,
            png::ColorType::Grayscale,
            png::BitDepth::Four,
            &[0x12; 8],
            &[],
        );
        assert!(plain_layout(&gray4).is_none());
        let mut interlaced = rgb(&[]);
        interlaced[8 + 8 + 12] = 1;
        assert!(plain_layout(&interlaced).is_none());
    }

    #[test]
    fn image_data_larger_than_the_pixels_is_left_to_the_encoder() {
        let (width, height) = (64, 64);
        let noise: Vec<u8> = (0..width * height * 3)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut file = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut file, width, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_compression(png::Compression::NoCompression);
            encoder
                .write_header()
                .unwrap()
                .write_image_data(&noise)
                .unwrap();
        }
        assert!(plain_layout(&file).is_none());
    }

    #[test]
    fn a_wrong_checksum_or_crc_is_refused_here_and_left_to_the_other_reader() {
        let pixels = gradient(40 * 30 * 4);
        let file = png_of(
            40,
            30,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &pixels,
            &[],
        );
        let layout = plain_layout(&file).unwrap();
        let idat_end = layout.source.idat.end;

        // The Adler-32 is the last four bytes of the last IDAT's data.
        let mut adler = file.clone();
        adler[idat_end - 5] ^= 1;
        // Keep the CRC right, so that only the checksum is wrong.
        let data_start = layout.source.idat.start + 4;
        let crc = crc32fast::hash(&adler[data_start..idat_end - 4]);
        adler[idat_end - 4..idat_end].copy_from_slice(&crc.to_be_bytes());
        let layout = plain_layout(&adler).unwrap();
        assert_eq!(decode(&adler, layout, &limits()).unwrap(), None);
        // The image crate does not check it, and reads the pixels.
        assert_eq!(
            image::load_from_memory(&adler).unwrap().as_bytes(),
            &pixels[..]
        );

        let mut crc = file.clone();
        crc[idat_end - 1] ^= 1;
        let layout = plain_layout(&crc).unwrap();
        assert_eq!(decode(&crc, layout, &limits()).unwrap(), None);
    }

    #[test]
    fn broken_chunk_structure_is_not_plain() {
        let pixels = gradient(8 * 8 * 3);
        let file = png_of(
            8,
            8,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &pixels,
            &[],
        );
        for cut in [0, 7, 8, 20, 33, 40, file.len() - 12, file.len() - 1] {
            assert!(plain_layout(&file[..cut]).is_none(), "cut at {cut}");
        }
        // A length that runs past the end.
        let mut long = file.clone();
        long[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(plain_layout(&long).is_none());
        // IDAT chunks that are not together.
        let idat = plain_layout(&file).unwrap().source.idat;
        let mut split = file[..idat.start].to_vec();
        split.extend_from_slice(&file[idat.clone()]);
        split.extend_from_slice(b"\0\0\0\0teXt\0\0\0\0");
        split.extend_from_slice(&file[idat.clone()]);
        split.extend_from_slice(IEND);
        assert!(plain_layout(&split).is_none());
    }
}
