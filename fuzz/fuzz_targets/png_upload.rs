//! PNG uploads, well-formed and damaged, through shmimage's decoder: whenever it keeps a plain
//! PNG's own image data as the image's PNG, that PNG must decode (with the `image` crate) to
//! exactly the pixels stored, and pass the checks a server applies before serving a PNG from the
//! segment's PNG area.
//!
//! The input chooses the pixels, the size, the pixel format, the encoder's compression and
//! filter, how the image data is cut into `IDAT` chunks, and bytes of the file to change.

#![no_main]

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use libfuzzer_sys::fuzz_target;
use shmimage::imaging::{DecodeLimits, decode};
use shmimage::raster::PixelFormat;
use shmimage::segment::fuzzing::is_png_of;

fuzz_target!(|data: &[u8]| {
    let [
        format,
        width,
        height,
        settings,
        damage_at,
        damage,
        pixels @ ..,
    ] = data
    else {
        return;
    };
    let format = PixelFormat::ALL[*format as usize % PixelFormat::ALL.len()];
    let (width, height) = (u32::from(*width % 48) + 1, u32::from(*height % 48) + 1);
    let len = format.byte_len(width, height).unwrap() as usize;
    let samples: Vec<u8> = if pixels.is_empty() {
        vec![0; len]
    } else {
        pixels.iter().copied().cycle().take(len).collect()
    };
    let color = image::ExtendedColorType::from(format);
    let compression = [
        CompressionType::Fast,
        CompressionType::Default,
        CompressionType::Best,
    ][usize::from(settings % 3)];
    let filter = [
        FilterType::NoFilter,
        FilterType::Sub,
        FilterType::Up,
        FilterType::Avg,
        FilterType::Paeth,
        FilterType::Adaptive,
    ][usize::from(settings / 3 % 6)];
    let mut file = Vec::new();
    PngEncoder::new_with_quality(&mut file, compression, filter)
        .write_image(&samples, width, height, color)
        .expect("any image encodes");
    // Cut the image data into small chunks: the kept data must be every one of them.
    if settings & 0x80 != 0 {
        file = rechunked(&file, usize::from(*damage_at % 32) + 1);
    }
    // Change one byte, or none.
    if *damage != 0 {
        let at = usize::from(*damage_at) * file.len() / 256;
        file[at] ^= *damage;
    }

    let limits = DecodeLimits {
        max_pixels: 1 << 20,
    };
    let Ok(decoded) = decode(&file, &limits) else {
        return;
    };
    let Some(source) = decoded.source_png else {
        return;
    };
    let raster = decoded.raster;
    let png = source.parts(&file).concat();
    assert_eq!(png.len(), source.len());
    assert!(
        is_png_of(&png, raster.width(), raster.height(), raster.format()),
        "the PNG area takes it"
    );
    let again = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("the kept image data decodes");
    assert_eq!(
        (again.width(), again.height()),
        (raster.width(), raster.height())
    );
    assert!(
        again.as_bytes() == raster.pixels(),
        "the kept image data decodes to the stored pixels"
    );
});

/// `png` with its image data in `IDAT` chunks of at most `size` bytes.
fn rechunked(png: &[u8], size: usize) -> Vec<u8> {
    let mut data = Vec::new();
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let chunk = &png[at..at + 12 + len];
        match &chunk[4..8] {
            b"IDAT" => data.extend_from_slice(&chunk[8..8 + len]),
            _ if data.is_empty() => head.extend_from_slice(chunk),
            _ => tail.extend_from_slice(chunk),
        }
        at += 12 + len;
    }
    let mut out = png[..8].to_vec();
    out.extend_from_slice(&head);
    for piece in data.chunks(size) {
        out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(b"IDAT");
        out.extend_from_slice(piece);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out.extend_from_slice(&tail);
    out
}

/// The CRC-32 PNG chunks carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
