//! Arbitrary pixels through shmimage's PNG writer, cut into small bands, segments and chunks,
//! from memory and encoded from a source that copies each band (as the server reads the
//! segment): the file must decode (with the `image` crate) to exactly the same pixels, and
//! both ways must give the same bytes; and it must pass
//! the checks a server applies before serving a PNG from the segment's PNG area (so a PNG one
//! server publishes is never refused by another).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmimage::imaging::fuzzing::encode_png_in_pieces;
use shmimage::raster::{PixelFormat, Raster};
use shmimage::segment::fuzzing::{PngFields, PngTag, is_png_of};

fuzz_target!(|data: &[u8]| {
    let [format, width, height, bands, segment, chunk, pixels @ ..] = data else {
        return;
    };
    let format = PixelFormat::ALL[*format as usize % PixelFormat::ALL.len()];
    let (width, height) = (u32::from(*width % 64) + 1, u32::from(*height % 64) + 1);
    let len = format.byte_len(width, height).unwrap() as usize;
    // Pixels from the input, repeated to fill the image (runs and noise both occur).
    let bytes: Vec<u8> = if pixels.is_empty() {
        vec![0; len]
    } else {
        pixels.iter().copied().cycle().take(len).collect()
    };
    let raster = Raster::new(width, height, format, bytes).unwrap();
    // From memory, and from a source that copies each band as the server reads the segment:
    // the same bytes.
    let [png, copied] = [false, true].map(|copied| {
        encode_png_in_pieces(
            &raster,
            usize::from(*bands % 5),
            usize::from(*segment) * 16 + 1,
            usize::from(*chunk) * 64 + 1,
            copied,
        )
        .expect("any raster encodes")
    });
    assert!(
        copied == png,
        "an encode from copied bands gives the same bytes"
    );

    // The PNG area takes it: its record validates, the bytes pass the PNG check, and the same
    // bytes cut short or with anything after them do not.
    let tag = PngTag {
        seq: 1,
        written_at_ns: 2,
        incarnation: 3,
        pixel_len: len as u64,
    };
    let record = PngFields {
        seq: 1,
        written_at_ns: 2,
        incarnation: 3,
        generation: 4,
        capacity: (png.len() as u64).next_multiple_of(65536),
        byte_len: png.len() as u64,
    };
    assert!(
        record.validate(&tag).is_ok(),
        "{record:?} for {len} bytes of pixels"
    );
    assert!(
        is_png_of(&png, width, height, format),
        "{format} {width}x{height}"
    );
    assert!(!is_png_of(&png[..png.len() - 1], width, height, format));
    let mut longer = png.clone();
    longer.push(0);
    assert!(!is_png_of(&longer, width, height, format));

    let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("the PNG decodes");
    assert_eq!((decoded.width(), decoded.height()), (width, height));
    assert_eq!(
        decoded.color().bytes_per_pixel() as u32,
        format.bytes_per_pixel()
    );
    // 16-bit samples: image keeps them in native order in memory, as rasters do.
    assert!(
        decoded.as_bytes() == raster.pixels(),
        "pixels differ for {format} {width}x{height}"
    );
});
