//! Tests of the band-parallel PNG writer: checksums, stitching, chunk framing, and round trips
//! through independent decoders for every pixel format and many sizes.

use super::*;
use crate::imaging::encode_png;
use crate::raster::Raster;

/// Adler-32 of `data` exactly as RFC 1950 defines it, one byte at a time.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % ADLER_MODULUS;
        b = (b + a) % ADLER_MODULUS;
    }
    b << 16 | a
}

/// A layout with `bands` bands, production segments and chunks.
fn bands(bands: usize) -> Layout {
    Layout {
        bands: Some(bands),
        segment_len: SEGMENT_LEN,
        max_chunk_len: MAX_CHUNK_LEN,
    }
}

/// The layout used when stitching is not available: one stream, production chunks.
const UNSTITCHED: Layout = Layout {
    bands: None,
    segment_len: SEGMENT_LEN,
    max_chunk_len: MAX_CHUNK_LEN,
};

/// A small seeded xorshift generator, so every run tests the same cases.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `range`.
    fn below(&mut self, range: Range<usize>) -> usize {
        range.start + (self.next() % range.len() as u64) as usize
    }
}

/// What the pixels of a generated test image look like.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// Every byte random: incompressible, so bands fall back to stored blocks.
    Noise,
    /// Smooth ramps with a little noise: compresses like a photo.
    Photo,
    /// One value everywhere: long runs of zeros after filtering.
    Flat,
    /// Flat areas with random rows in between: bands of either kind.
    Mixed,
}

fn pixels_for(
    width: u32,
    height: u32,
    format: PixelFormat,
    content: Content,
    prng: &mut Prng,
) -> Vec<u8> {
    let row_len = (width * format.bytes_per_pixel()) as usize;
    let mut pixels = Vec::with_capacity(row_len * height as usize);
    let flat = prng.next() as u8;
    for y in 0..height as usize {
        let noisy_row = matches!(content, Content::Mixed) && prng.next().is_multiple_of(3);
        for x in 0..row_len {
            let byte = match content {
                Content::Noise => prng.next() as u8,
                Content::Photo => ((x / 3 + y * 2) as u8).wrapping_add((prng.next() % 5) as u8),
                Content::Flat => flat,
                Content::Mixed if noisy_row => prng.next() as u8,
                Content::Mixed => flat,
            };
            pixels.push(byte);
        }
    }
    pixels
}

/// The CRC-32 of PNG and zlib, bit by bit, independent of the crc32fast crate.
fn reference_crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Walks `png`'s chunks, checking the signature, every length and CRC, that `IHDR` comes first
/// and `IEND` last, and that the `IDAT` chunks are contiguous. Returns the `IHDR` fields and
/// the concatenated `IDAT` data.
fn parse_png(png: &[u8]) -> ([u8; 13], Vec<u8>) {
    let mut rest = png.strip_prefix(SIGNATURE).expect("PNG signature");
    let mut kinds = Vec::new();
    let mut header = None;
    let mut image_data = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(len <= MAX_CHUNK_LEN);
        let kind: [u8; 4] = rest[4..8].try_into().unwrap();
        let data = &rest[8..8 + len];
        let crc = u32::from_be_bytes(rest[8 + len..12 + len].try_into().unwrap());
        assert_eq!(crc, reference_crc32(&rest[4..8 + len]), "CRC of {kind:?}");
        match &kind {
            b"IHDR" => header = Some(<[u8; 13]>::try_from(data).expect("13-byte IHDR")),
            b"IDAT" => image_data.extend_from_slice(data),
            _ => {}
        }
        kinds.push(kind);
        rest = &rest[12 + len..];
    }
    assert_eq!(kinds.first(), Some(b"IHDR"));
    assert_eq!(kinds.last(), Some(b"IEND"));
    let idat: Vec<usize> = (0..kinds.len()).filter(|&i| &kinds[i] == b"IDAT").collect();
    assert!(!idat.is_empty());
    assert_eq!(
        idat.len(),
        idat[idat.len() - 1] - idat[0] + 1,
        "IDAT chunks contiguous"
    );
    (header.expect("IHDR"), image_data)
}

/// Checks that `zlib` is a standard zlib stream (RFC 1950): a valid header, deflate data that
/// inflates, an Adler-32 that matches the inflated bytes, nothing after it. Returns the data.
fn inflate_zlib(zlib: &[u8]) -> Vec<u8> {
    assert!(zlib.len() >= 6);
    let (cmf, flg) = (zlib[0], zlib[1]);
    assert_eq!(cmf & 0x0F, 8, "deflate");
    assert!(cmf >> 4 <= 7, "window at most 32 KiB");
    assert_eq!(
        (u16::from(cmf) << 8 | u16::from(flg)) % 31,
        0,
        "header check bits"
    );
    assert_eq!(flg & 0x20, 0, "no preset dictionary");
    // fdeflate's inflater checks the Adler-32 too and refuses trailing bytes after it.
    let data = fdeflate::decompress_to_vec(zlib).expect("inflates");
    let trailer = u32::from_be_bytes(zlib[zlib.len() - 4..].try_into().unwrap());
    assert_eq!(trailer, adler32(&data), "Adler-32");
    data
}

/// Encodes with `layout`, checks the file's structure and zlib stream,
/// and checks that the image crate decodes it to exactly `pixels`.
fn assert_round_trip(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    layout: Layout,
) -> Vec<u8> {
    let case = format!("{width}x{height} {format}, {layout:?}");
    let png = write_png_with(pixels, width, height, format, layout)
        .unwrap_or_else(|error| panic!("{case}: {error}"));
    let (header, zlib) = parse_png(&png);
    assert_eq!(header, header_fields(width, height, format), "{case}");
    let data = inflate_zlib(&zlib);
    let row_len = (width * format.bytes_per_pixel()) as usize;
    assert_eq!(data.len(), (row_len + 1) * height as usize, "{case}");

    let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap_or_else(|error| panic!("{case}: image crate: {error}"));
    assert_eq!(
        (decoded.width(), decoded.height()),
        (width, height),
        "{case}"
    );
    let expected_color = match format {
        PixelFormat::L8 => image::ColorType::L8,
        PixelFormat::La8 => image::ColorType::La8,
        PixelFormat::Rgb8 => image::ColorType::Rgb8,
        PixelFormat::Rgba8 => image::ColorType::Rgba8,
        PixelFormat::L16 => image::ColorType::L16,
        PixelFormat::La16 => image::ColorType::La16,
        PixelFormat::Rgb16 => image::ColorType::Rgb16,
        PixelFormat::Rgba16 => image::ColorType::Rgba16,
    };
    assert_eq!(decoded.color(), expected_color, "{case}");
    // 16-bit samples come back in native order, as rasters hold them.
    assert!(decoded.as_bytes() == pixels, "{case}: pixels differ");
    png
}

#[test]
fn adler32_matches_known_values() {
    assert_eq!(adler32(b""), 1);
    assert_eq!(adler32(b"a"), 0x0062_0062);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
}

#[test]
fn stored_blocks_hold_the_data_and_its_adler32() {
    let mut prng = Prng(0x5EED_0009);
    for len in [
        0,
        1,
        5,
        MAX_STORED_BLOCK - 1,
        MAX_STORED_BLOCK,
        MAX_STORED_BLOCK + 1,
        200_000,
    ] {
        let data: Vec<u8> = (0..len).map(|_| prng.next() as u8).collect();
        for ending in [Ending::Open, Ending::Final] {
            let mut stream = ZLIB_HEADER.to_vec();
            let mut blocks = StoredBlocks::new(&mut stream);
            // Written in uneven pieces, as rows are.
            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(prng.below(1..rest.len().min(70_000) + 1));
                blocks.write(piece);
                rest = tail;
            }
            let adler = blocks.finish(ending);
            assert_eq!(adler, adler32(&data), "{len} bytes");
            if ending == Ending::Open {
                stream.extend_from_slice(&EMPTY_FINAL_BLOCK);
            }
            stream.extend_from_slice(&adler.to_be_bytes());
            assert!(inflate_zlib(&stream) == data, "{len} bytes, {ending:?}");
            assert_eq!(
                stream.len(),
                2 + stored_len(len) + 4 + 2 * usize::from(ending == Ending::Open)
            );
        }
    }
}

#[test]
fn combined_adler32_equals_the_checksum_of_the_concatenation() {
    let mut prng = Prng(0x5EED_0001);
    for _ in 0..100 {
        let len = prng.below(0..100_000);
        let data: Vec<u8> = (0..len).map(|_| prng.next() as u8 | 0xF0).collect();
        let split = prng.below(0..len + 1);
        let (first, second) = data.split_at(split);
        assert_eq!(
            adler32_combine(adler32(first), adler32(second), second.len()),
            adler32(&data),
            "len {len}, split {split}"
        );
    }
}

#[test]
fn stitching_is_sound_with_this_fdeflate() {
    assert!(stitching_works());
    for first_len in 0..80 {
        assert!(stitched_pair_inflates(first_len, 200 - first_len));
    }
}

#[test]
fn every_pixel_format_and_odd_size_round_trips_in_any_number_of_bands() {
    let mut prng = Prng(0x5EED_0002);
    let sizes = [
        (1, 1),
        (1, 2),
        (1, 7),
        (1, 300),
        (2, 1),
        (300, 1),
        (3, 2),
        (5, 3),
        (13, 9),
        (37, 23),
        (97, 41),
        (255, 17),
    ];
    for format in PixelFormat::ALL {
        for (width, height) in sizes {
            for content in [Content::Photo, Content::Noise, Content::Flat] {
                let pixels = pixels_for(width, height, format, content, &mut prng);
                for layout in [1, 2, 3, 4, 8].map(bands).into_iter().chain([UNSTITCHED]) {
                    assert_round_trip(&pixels, width, height, format, layout);
                }
            }
        }
    }
}

#[test]
fn random_images_round_trip_bit_exactly() {
    let mut prng = Prng(0x5EED_0003);
    let contents = [
        Content::Noise,
        Content::Photo,
        Content::Flat,
        Content::Mixed,
    ];
    for _ in 0..250 {
        let format = PixelFormat::ALL[prng.below(0..8)];
        let width = prng.below(1..200) as u32;
        let height = prng.below(1..120) as u32;
        let content = contents[prng.below(0..4)];
        let layout = Layout {
            bands: (!prng.next().is_multiple_of(8)).then(|| prng.below(1..10)),
            segment_len: if prng.next().is_multiple_of(2) {
                prng.below(1..3000)
            } else {
                SEGMENT_LEN
            },
            max_chunk_len: if prng.next().is_multiple_of(4) {
                prng.below(1..5000)
            } else {
                MAX_CHUNK_LEN
            },
        };
        let pixels = pixels_for(width, height, format, content, &mut prng);
        assert_round_trip(&pixels, width, height, format, layout);
    }
}

#[test]
fn image_data_is_split_into_chunks_of_the_allowed_size() {
    let mut prng = Prng(0x5EED_0004);
    let pixels = pixels_for(64, 32, PixelFormat::Rgb8, Content::Photo, &mut prng);
    for max_chunk_len in [1, 2, 7, 100, 4096] {
        for layout in [bands(1), bands(3), UNSTITCHED] {
            let layout = Layout {
                max_chunk_len,
                ..layout
            };
            let png = assert_round_trip(&pixels, 64, 32, PixelFormat::Rgb8, layout);
            // Walk the chunks again for their lengths.
            let mut rest = &png[SIGNATURE.len()..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                if &rest[4..8] == b"IDAT" {
                    assert!(len <= max_chunk_len.max(6), "{len} > {max_chunk_len}");
                }
                rest = &rest[12 + len..];
            }
        }
    }
}

#[test]
fn incompressible_bands_are_stored_and_never_much_larger_than_raw() {
    let mut prng = Prng(0x5EED_0005);
    for format in [PixelFormat::Rgba8, PixelFormat::Rgb16] {
        let pixels = pixels_for(300, 200, format, Content::Noise, &mut prng);
        for layout in [bands(1), bands(2), bands(5), UNSTITCHED] {
            let png = assert_round_trip(&pixels, 300, 200, format, layout);
            let data_len = pixels.len() + 200;
            assert!(
                png.len() <= data_len + data_len / 1000 + 200,
                "{format}, {layout:?}: {} bytes for {data_len}",
                png.len()
            );
        }
    }
}

#[test]
fn rows_are_filtered_exactly_like_the_png_crate_adaptive_fast_encoder() {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType as ImageFilter, PngEncoder};

    let mut prng = Prng(0x5EED_0006);
    for format in PixelFormat::ALL {
        let (width, height) = (123, 45);
        let pixels = pixels_for(width, height, format, Content::Photo, &mut prng);
        let ours = assert_round_trip(&pixels, width, height, format, bands(1));
        let unstitched = assert_round_trip(&pixels, width, height, format, UNSTITCHED);
        let color = image::ExtendedColorType::from(format);
        let mut reference = Vec::new();
        PngEncoder::new_with_quality(&mut reference, CompressionType::Fast, ImageFilter::Adaptive)
            .write_image(&pixels, width, height, color)
            .unwrap();
        let (_, our_zlib) = parse_png(&ours);
        let (_, unstitched_zlib) = parse_png(&unstitched);
        let (_, reference_zlib) = parse_png(&reference);
        // The same filtered rows; unstitched, the very same stream; stitched, the same block
        // followed by a sync flush and a closing block.
        assert!(
            inflate_zlib(&our_zlib) == inflate_zlib(&reference_zlib),
            "{format}"
        );
        assert!(unstitched_zlib == reference_zlib, "{format}");
        assert!(our_zlib.len() <= reference_zlib.len() + 7, "{format}");
    }
}

#[test]
fn large_images_are_written_in_several_bands_through_the_public_encoder() {
    let mut prng = Prng(0x5EED_0007);
    let (width, height) = (700, 400); // 1.1 MB of RGBA: above the parallel threshold
    let pixels = pixels_for(width, height, PixelFormat::Rgba8, Content::Photo, &mut prng);
    assert!(pixels.len() >= PARALLEL_MIN_BYTES);
    let raster = Raster::new(width, height, PixelFormat::Rgba8, pixels.clone()).unwrap();
    let png = encode_png(&raster).unwrap();
    let (_, zlib) = parse_png(&png);
    inflate_zlib(&zlib);
    let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
    assert!(decoded.as_bytes() == pixels.as_slice());
    // The same file from a row source, left in its pieces: one per band between the opening
    // and the closing chunks, none of them holding on to room it did not use.
    let source = FailingAt {
        pixels: &pixels,
        row_len: width as usize * 4,
        fail_at: usize::MAX,
    };
    let mut pieces = Vec::new();
    write_png_from(&source, width, height, PixelFormat::Rgba8, &mut |piece| {
        pieces.push(piece)
    })
    .unwrap();
    assert!(pieces.concat() == png);
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|piece| piece.capacity() == piece.len()));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let one_band = write_png_with(&pixels, width, height, PixelFormat::Rgba8, bands(1)).unwrap();
    if cores > 1 {
        // Each extra band costs a block header and a sync flush, nothing more.
        assert!(png.len() > one_band.len() && png.len() < one_band.len() + cores * 200);
    } else {
        assert_eq!(png, one_band);
    }
}

#[test]
fn sizes_a_png_cannot_hold_are_refused() {
    assert!(write_png_with(&[], 0, 1, PixelFormat::L8, bands(1)).is_err());
    assert!(write_png_with(&[0; 3], 1, 1, PixelFormat::L8, bands(1)).is_err());
    assert!(write_png_with(&[], 1 << 31, 1, PixelFormat::L8, bands(1)).is_err());
}

#[test]
fn segments_choose_compression_or_storage_each_on_their_own() {
    let mut prng = Prng(0x5EED_0008);
    // Noisy rows first, flat rows after: the flat part must still be compressed after the
    // noisy part was stored and compression was skipped for a while.
    let (width, height) = (64, 400);
    let mut pixels = pixels_for(width, 100, PixelFormat::Rgba8, Content::Noise, &mut prng);
    pixels.extend(pixels_for(
        width,
        300,
        PixelFormat::Rgba8,
        Content::Flat,
        &mut prng,
    ));
    let layout = Layout {
        segment_len: 2 * (64 * 4 + 1),
        ..bands(2)
    };
    let png = assert_round_trip(&pixels, width, height, PixelFormat::Rgba8, layout);
    // Stored whole, it would be the full 400 rows; the flat rows must shrink to a fraction.
    let (noise_len, flat_len) = (100 * (64 * 4 + 1), 300 * (64 * 4 + 1));
    assert!(png.len() < noise_len + flat_len / 4, "{} bytes", png.len());

    let mut backoff = Backoff::default();
    let mut tries = Vec::new();
    for segment in 0..40 {
        let tried = backoff.should_try();
        tries.push(tried);
        if tried && segment < 30 {
            backoff.failed();
        } else if tried {
            backoff.succeeded();
        }
    }
    let tried_at: Vec<usize> = (0..40).filter(|&i| tries[i]).collect();
    assert_eq!(tried_at[..6], [0, 2, 5, 10, 19, 36]);
}

#[test]
fn an_encode_from_copied_bands_gives_the_same_bytes() {
    let mut prng = Prng(0x5EED_0011);
    for _ in 0..60 {
        let format = PixelFormat::ALL[prng.below(0..8)];
        let width = prng.below(1..150) as u32;
        let height = prng.below(1..90) as u32;
        let pixels = pixels_for(width, height, format, Content::Photo, &mut prng);
        let bands = prng.below(0..9);
        let segment_len = prng.below(1..4000);
        let chunk = prng.below(1..6000);
        let [whole, copied] = [false, true].map(|copied| {
            write_png_in_pieces(
                &pixels,
                width,
                height,
                format,
                bands,
                segment_len,
                chunk,
                copied,
            )
            .unwrap()
        });
        assert!(copied == whole, "{width}x{height} {format}, {bands} bands");
    }
}

/// Rows from memory, failing for any band that reaches row `fail_at`.
struct FailingAt<'a> {
    pixels: &'a [u8],
    row_len: usize,
    fail_at: usize,
}

impl RowSource for FailingAt<'_> {
    fn rows<'b>(
        &'b self,
        rows: Range<usize>,
        _buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], EncodeError> {
        if rows.end > self.fail_at {
            return Err(EncodeError("the image changed".to_owned()));
        }
        Ok(&self.pixels[rows.start * self.row_len..rows.end * self.row_len])
    }
}

#[test]
fn pieces_come_in_order_and_a_failing_band_stops_the_encode_before_its_end() {
    let mut prng = Prng(0x5EED_0012);
    let (width, height) = (300, 200);
    let pixels = pixels_for(width, height, PixelFormat::Rgb8, Content::Photo, &mut prng);
    let whole = write_png_with(&pixels, width, height, PixelFormat::Rgb8, bands(10)).unwrap();
    let mut pieces = Vec::new();
    let source = FailingAt {
        pixels: &pixels,
        row_len: 900,
        fail_at: usize::MAX,
    };
    write_pieces_with(
        &source,
        width,
        height,
        PixelFormat::Rgb8,
        bands(10),
        &mut |p| pieces.push(p),
    )
    .unwrap();
    // Signature and IHDR, ten bands, the closing chunks.
    assert_eq!(pieces.len(), 12);
    assert_eq!(pieces[0].len(), 33);
    assert!(pieces.concat() == whole);

    let mut sent = Vec::new();
    let source = FailingAt {
        fail_at: 130,
        ..source
    };
    let result = write_pieces_with(
        &source,
        width,
        height,
        PixelFormat::Rgb8,
        bands(10),
        &mut |p| sent.extend_from_slice(&p),
    );
    assert!(result.is_err());
    // The bands before the failing one at most, never the closing chunks.
    assert!(sent.len() >= 33 && sent.len() < whole.len());
    assert!(whole.starts_with(&sent));
    assert!(!sent.ends_with(b"IEND\xae\x42\x60\x82"));
}
