//! Undoing a TIFF chunk's compression: each strip or tile is decompressed on its own into a
//! buffer of exactly the size its rows take, never more, so a chunk that claims to expand
//! without bound (a decompression bomb) stops at its share of the picture.

use std::borrow::Cow;

use super::{TiffProblem, Unsupported, zeroed};

/// The TIFF compression schemes, by their tag value.
pub const NONE: u16 = 1;
pub const CCITT_RLE: u16 = 2;
pub const FAX3: u16 = 3;
pub const FAX4: u16 = 4;
pub const LZW: u16 = 5;
pub const OLD_JPEG: u16 = 6;
pub const JPEG: u16 = 7;
pub const DEFLATE: u16 = 8;
pub const PACKBITS: u16 = 32773;
pub const OLD_DEFLATE: u16 = 32946;

/// The name of a compression scheme this module does not undo, for the refusal.
pub fn unsupported_name(compression: u16) -> Option<&'static str> {
    Some(match compression {
        NONE | FAX3 | FAX4 | LZW | JPEG | DEFLATE | PACKBITS | OLD_DEFLATE => return None,
        CCITT_RLE => "CCITT modified Huffman (RLE) compression",
        OLD_JPEG => "old-style JPEG compression (compression 6, replaced in 1995)",
        32771 => "CCITT RLEW compression",
        32809 => "ThunderScan compression",
        32845 | 32844 => "SGI LogLuv compression",
        34676 => "SGI LogL compression",
        34925 => "LZMA compression",
        50000 => "Zstandard compression",
        50001 | 34927 => "WebP compression",
        50002 => "JPEG XL compression",
        34892 => "lossy JPEG (DNG) compression",
        34712 | 33003 | 33005 => "JPEG 2000 compression",
        _ => "a compression scheme this server does not know",
    })
}

/// Inflates `raw` into exactly `len` bytes with `compression` (one of the schemes
/// [`unsupported_name`] does not name). Fewer bytes than `len` is a truncated chunk.
pub fn decompress(raw: &[u8], compression: u16, len: usize) -> Result<Vec<u8>, TiffProblem> {
    let mut out = zeroed::<u8>(len as u64)?;
    let written = match compression {
        NONE => {
            let n = raw.len().min(len);
            out[..n].copy_from_slice(&raw[..n]);
            n
        }
        PACKBITS => unpack_bits(raw, &mut out),
        LZW => unlzw(raw, &mut out)?,
        DEFLATE | OLD_DEFLATE => inflate(raw, &mut out)?,
        other => {
            return Err(TiffProblem::Unsupported(Unsupported::Compression(other)));
        }
    };
    if written < len {
        return Err(TiffProblem::Corrupt(format!(
            "a strip or tile holds {written} of its {len} bytes: the data ends too early"
        )));
    }
    Ok(out)
}

/// PackBits (Apple's run-length scheme). Returns how many bytes were written.
fn unpack_bits(raw: &[u8], out: &mut [u8]) -> usize {
    let (mut read, mut written) = (0, 0);
    while read < raw.len() && written < out.len() {
        let header = raw[read] as i8;
        read += 1;
        if header >= 0 {
            let count = (header as usize + 1)
                .min(out.len() - written)
                .min(raw.len() - read);
            out[written..written + count].copy_from_slice(&raw[read..read + count]);
            read += header as usize + 1;
            written += count;
        } else if header != -128 {
            let Some(&value) = raw.get(read) else { break };
            read += 1;
            let count = (1 - header as isize) as usize;
            let count = count.min(out.len() - written);
            out[written..written + count].fill(value);
            written += count;
        }
    }
    written
}

/// TIFF LZW: most significant bit first with the early code-size change, or, for files from
/// before TIFF 6 ("old-style", recognised as libtiff does by their first two bytes), least
/// significant bit first without it.
fn unlzw(raw: &[u8], out: &mut [u8]) -> Result<usize, TiffProblem> {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let old_style = raw.len() >= 2 && raw[0] == 0 && raw[1] & 1 == 1;
    let mut decoder = if old_style {
        Decoder::new(BitOrder::Lsb, 8)
    } else {
        Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
    };
    let (mut read, mut written) = (0, 0);
    while written < out.len() {
        let result = decoder.decode_bytes(&raw[read..], &mut out[written..]);
        read += result.consumed_in;
        written += result.consumed_out;
        match result.status {
            Ok(LzwStatus::Ok) if result.consumed_in + result.consumed_out > 0 => {}
            // The end code, the end of the data, or no progress: what there is, is all.
            Ok(LzwStatus::Ok | LzwStatus::Done | LzwStatus::NoProgress) => break,
            // Writers often leave out the end code or garble the last code; what was decoded
            // before is good, and a chunk that really falls short is caught by the caller.
            Err(_) if written > 0 => break,
            Err(error) => return Err(TiffProblem::Corrupt(format!("LZW data: {error}"))),
        }
    }
    Ok(written)
}

/// Deflate in a zlib wrapper (Adobe's compression 8, and the older 32946).
fn inflate(raw: &[u8], out: &mut [u8]) -> Result<usize, TiffProblem> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut inflater = Decompress::new(true);
    loop {
        let before_in = inflater.total_in();
        let before_out = inflater.total_out();
        let read = usize::try_from(before_in).unwrap_or(usize::MAX);
        let written = usize::try_from(before_out).unwrap_or(usize::MAX);
        if written >= out.len() {
            return Ok(written);
        }
        let status = inflater
            .decompress(&raw[read..], &mut out[written..], FlushDecompress::Finish)
            .map_err(|error| TiffProblem::Corrupt(format!("deflate data: {error}")))?;
        let progressed = inflater.total_in() != before_in || inflater.total_out() != before_out;
        if matches!(status, Status::StreamEnd) || !progressed {
            return Ok(usize::try_from(inflater.total_out()).unwrap_or(usize::MAX));
        }
    }
}

/// Bits within each byte reversed (FillOrder 2 stores the first pixel in the lowest bit).
pub fn reverse_bits(raw: &[u8]) -> Cow<'_, [u8]> {
    Cow::Owned(raw.iter().map(|byte| byte.reverse_bits()).collect())
}

/// CCITT Group 3 (one-dimensional) or Group 4 fax data as 1-bit rows, most significant bit
/// first, each `width` pixels padded to a byte: 1 where the fax has black, 0 for white, as
/// libtiff hands them on (the PhotometricInterpretation then says which is dark).
pub fn unfax(
    raw: &[u8],
    compression: u16,
    width: u32,
    rows: u32,
    group3_options: u32,
) -> Result<Vec<u8>, TiffProblem> {
    let fax_width = u16::try_from(width).map_err(|_| {
        TiffProblem::Unsupported(Unsupported::Feature(format!(
            "fax data {width} pixels wide (fax pages are at most 65535)"
        )))
    })?;
    let mut out = FaxRows {
        bits: zeroed::<u8>(u64::from(width.div_ceil(8)) * u64::from(rows))?,
        row_bytes: width.div_ceil(8) as usize,
        rows: rows as usize,
        decoded: 0,
        width: fax_width,
    };
    let rows = rows as usize;
    let finished = if compression == FAX4 {
        fax::decoder::decode_g4(
            raw.iter().copied(),
            fax_width,
            u16::try_from(rows).ok(),
            |transitions| out.push(transitions),
        )
    } else {
        if group3_options & 1 == 1 {
            return Err(TiffProblem::Unsupported(Unsupported::Feature(
                "2-D Group 3 fax compression".to_owned(),
            )));
        }
        let bytes = raw
            .iter()
            .map(|&byte| Ok::<u8, std::convert::Infallible>(byte));
        match fax::decoder::Group3Decoder::new(bytes) {
            Err(_) => None,
            Ok(mut decoder) => loop {
                match decoder.advance() {
                    Ok(status) => {
                        out.push(decoder.transitions());
                        if status == fax::decoder::DecodeStatus::End {
                            break Some(());
                        }
                    }
                    // libtiff writes an end-of-line code before each row, not after the last:
                    // the last row's codes then run into the end of the data.
                    Err(_) if out.decoded + 1 == rows => {
                        out.push(decoder.transitions());
                        break Some(());
                    }
                    Err(_) => break None,
                }
            },
        }
    };
    let decoded = out.decoded;
    if decoded < rows {
        return Err(TiffProblem::Corrupt(match finished {
            Some(()) => format!("the fax data has {decoded} of its {rows} rows"),
            None => format!("the fax data is damaged after {decoded} of its {rows} rows"),
        }));
    }
    Ok(out.bits)
}

/// Fax rows as they are decoded, packed into bits.
struct FaxRows {
    bits: Vec<u8>,
    row_bytes: usize,
    rows: usize,
    decoded: usize,
    width: u16,
}

impl FaxRows {
    /// Adds the row whose color changes are at `transitions` (starting with white).
    fn push(&mut self, transitions: &[u16]) {
        if self.decoded >= self.rows {
            return;
        }
        let row = &mut self.bits[self.decoded * self.row_bytes..][..self.row_bytes];
        for (x, color) in fax::decoder::pels(transitions, self.width).enumerate() {
            if color == fax::Color::Black {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        self.decoded += 1;
    }
}

/// A JPEG-compressed chunk (compression 7) decoded to 8-bit samples, with its width, height
/// and samples per pixel. `tables` is the JPEGTables tag: shared tables that go in front of
/// every chunk's own data. The samples come out as they are stored (gray, RGB, CMYK), except
/// that `from_ycbcr` (PhotometricInterpretation 6) converts YCbCr to RGB: without it a
/// three-component JPEG would be taken for YCbCr, where TIFF says it holds RGB.
pub fn unjpeg(
    raw: &[u8],
    tables: Option<&[u8]>,
    from_ycbcr: bool,
) -> Result<(Vec<u8>, u32, u32, u8), TiffProblem> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    let stream: Cow<[u8]> = match tables {
        // The tables end with EOI and the chunk starts with SOI: drop both.
        Some(tables) if tables.len() >= 4 && raw.len() >= 2 => {
            let mut joined = tables[..tables.len() - 2].to_vec();
            joined.extend_from_slice(&raw[2..]);
            Cow::Owned(joined)
        }
        _ => Cow::Borrowed(raw),
    };
    let corrupt = |error: zune_jpeg::errors::DecodeErrors| {
        TiffProblem::Corrupt(format!("a JPEG-compressed tile or strip: {error:?}"))
    };
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&stream[..]), options);
    decoder.decode_headers().map_err(corrupt)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| TiffProblem::Corrupt("a JPEG tile without a size".to_owned()))?;
    let stored = decoder.input_colorspace().unwrap_or(ColorSpace::YCbCr);
    let wanted = match stored.num_components() {
        1 => ColorSpace::Luma,
        3 if from_ycbcr => ColorSpace::RGB,
        4 => ColorSpace::CMYK,
        _ => stored,
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(wanted));
    let pixels = decoder.decode().map_err(corrupt)?;
    let channels = wanted.num_components() as u8;
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    Ok((pixels, width, height, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_runs_literals_and_noops() {
        // 2 literals, a run of 3, a no-op, 1 literal.
        let raw = [1, 0xAA, 0xBB, 0xFE, 0xCC, 0x80, 0, 0xDD];
        let mut out = [0u8; 6];
        assert_eq!(unpack_bits(&raw, &mut out), 6);
        assert_eq!(out, [0xAA, 0xBB, 0xCC, 0xCC, 0xCC, 0xDD]);
        // A run longer than the room left stops at the end.
        let mut short = [0u8; 2];
        assert_eq!(unpack_bits(&[0x81, 7], &mut short), 2);
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_chunk_size() {
        let zeros = vec![0u8; 1 << 20];
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        let bomb = encoder.finish().unwrap();
        let out = decompress(&bomb, DEFLATE, 1000).unwrap();
        assert_eq!(out.len(), 1000);
        assert!(matches!(
            decompress(&bomb[..bomb.len() / 4], DEFLATE, 1 << 20),
            Err(TiffProblem::Corrupt(_))
        ));
    }

    #[test]
    fn short_data_is_corrupt_not_zero_filled() {
        assert!(matches!(
            decompress(&[1, 2, 3], NONE, 4),
            Err(TiffProblem::Corrupt(_))
        ));
        assert_eq!(decompress(&[1, 2, 3, 4, 5], NONE, 4).unwrap(), [1, 2, 3, 4]);
    }
}
