//! The checks the document asks of a reader before it copies, against slots that real writers
//! would never leave: a capacity without room for the image's last whole pixel word, and an
//! image larger than the reader is prepared to hold. The Python reader refuses both, as
//! shmimage's own reader does.

use crate::helpers::fresh_segment;
use crate::python::{python, run};
use crate::reader::{attach, filled};
use shmimage::raster::{PixelFormat, Raster};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

/// Offsets from docs/PROTOCOL.md: the state word, slot records and their fields, and the data
/// header's capacity.
const STATE: u64 = 24;
const SLOTS: u64 = 48;
const SLOT_SIZE: u64 = 112;
const SLOT_CAPACITY: u64 = 16;
const DATA_CAPACITY: u64 = 16;
const DATA_OFFSET: u64 = 4096;

fn read_u64(file: &std::fs::File, offset: u64) -> u64 {
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset).unwrap();
    u64::from_ne_bytes(bytes)
}

#[test]
fn the_python_reader_refuses_a_slot_without_room_for_its_last_whole_pixel_word() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    // 3x1 RGB 8-bit: 9 bytes of pixels, two whole words (16 bytes) to copy.
    let pixels = vec![10, 20, 30, 40, 50, 60, 70, 80, 90];
    writer
        .write(&Raster::new(3, 1, PixelFormat::Rgb8, pixels).unwrap())
        .unwrap();
    assert_eq!(
        run(python, &["read", "--segment", &segment]).only_line()["bytes"],
        9,
        "the image as written reads"
    );

    // Shrink the published slot to 12 bytes: room for its 9 bytes, not for its second word.
    let control_path = format!("/dev/shm/shmimage.{segment}");
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&control_path)
        .unwrap();
    let slot = SLOTS + SLOT_SIZE * (read_u64(&control, STATE) & 1);
    let mut generation = [0u8; 4];
    control.read_exact_at(&mut generation, slot).unwrap();
    let generation = u32::from_ne_bytes(generation);
    let data_path = format!("{control_path}.{generation:08x}");
    let data = OpenOptions::new().write(true).open(&data_path).unwrap();
    data.write_all_at(&12u64.to_ne_bytes(), DATA_CAPACITY)
        .unwrap();
    data.set_len(DATA_OFFSET + 12).unwrap();
    control
        .write_all_at(&12u64.to_ne_bytes(), slot + SLOT_CAPACITY)
        .unwrap();

    let refused = run(python, &["read", "--segment", &segment]);

    assert!(!refused.success, "read: {:?}", refused.lines);
    assert!(
        refused.lines.is_empty(),
        "nothing read: {:?}",
        refused.lines
    );
    assert!(
        refused.stderr.contains(
            "9 bytes of pixels take 16 bytes of whole words, which do not fit a slot of 12"
        ),
        "{}",
        refused.stderr
    );
    // shmimage's own reader refuses it too.
    let own = writer.read().map(|image| image.map(|image| image.info));
    assert!(own.is_err(), "shmimage read {own:?}");
}

#[test]
fn the_python_reader_refuses_an_image_above_its_pixel_limit_before_copying() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    writer.write(&filled(64, 7)).unwrap();

    let refused = run(
        python,
        &["read", "--segment", &segment, "--max-pixels", "4095"],
    );
    let within = run(
        python,
        &["read", "--segment", &segment, "--max-pixels", "4096"],
    );

    assert!(!refused.success, "read: {:?}", refused.lines);
    assert!(
        refused.lines.is_empty(),
        "nothing read: {:?}",
        refused.lines
    );
    assert!(
        refused.stderr.contains(
            "the image is 64x64, 4096 pixels, more than this reader's limit of 4095 (--max-pixels)"
        ),
        "{}",
        refused.stderr
    );
    let line = within.only_line();
    assert_eq!(line["seq"], 1);
    assert_eq!(line["crc32"], crc32fast::hash(filled(64, 7).pixels()));
}
