//! Arbitrary bytes as a segment's header, slot record and PNG record: the checks must never
//! panic, and whatever they accept must be safe to copy (length matches the dimensions, fits
//! the slot, or the PNG area's object, in whole 8-byte words).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shmimage::raster::PixelFormat;
use shmimage::segment::fuzzing::{
    HeaderFields, PngFields, PngTag, SlotFields, is_png_of, max_png_len,
};

fuzz_target!(|data: &[u8]| {
    let (header, slot) = data.split_at(data.len().min(20));
    let object_len = u64::from_le_bytes(
        data.iter()
            .rev()
            .take(8)
            .copied()
            .chain(std::iter::repeat(0))
            .take(8)
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
    );
    let _ = HeaderFields::from_bytes(header).validate(object_len);

    let fields = SlotFields::from_bytes(slot);
    let max_capacity = object_len;
    if let Ok(image) = fields.validate(fields.seq, max_capacity) {
        let expected = image.format.byte_len(image.width, image.height);
        assert_eq!(expected, Some(image.byte_len));
        assert!(image.byte_len <= image.capacity && image.capacity <= max_capacity);
        // Copies touch whole 8-byte words: the last one must fit too.
        assert!(image.byte_len.next_multiple_of(8) <= image.capacity);
        assert!(image.width > 0 && image.height > 0);
        assert!(image.writer_label.len() <= 3 * 48);
    }

    // The same bytes as a PNG record, checked against an image taken from them too.
    let png = PngFields::from_bytes(slot);
    let tag = PngTag {
        seq: png.seq,
        written_at_ns: png.written_at_ns,
        incarnation: png.incarnation,
        pixel_len: object_len,
    };
    if let Ok(place) = png.validate(&tag) {
        assert!(place.byte_len > 0 && place.generation != 0);
        assert!(place.byte_len.next_multiple_of(8) <= place.capacity);
        assert!(place.capacity <= 1 << 40);
        assert!(place.byte_len <= max_png_len(object_len));
    }
    // And as PNG bytes: never a panic.
    let format = PixelFormat::ALL[usize::from(data.first().copied().unwrap_or(0)) % 8];
    let _ = is_png_of(data, fields.width, fields.height, format);
});
