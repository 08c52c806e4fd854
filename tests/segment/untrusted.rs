//! Segment bytes another process changed: truncated data objects, slot records that claim more
//! than a reader may allocate, a state word that moves while a reader holds the lock. Each must
//! give an error a user can act on, never a crash, and the next write must recover.

use crate::images::{ImageId, tagged_raster};
use crate::support::{
    Child, Role, attach, data_object_paths, fresh_name, overwrite_control, truncate,
};
use shmimage::raster::{PixelFormat, Raster};
use shmimage::segment::SegmentError;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Byte offsets in the control object (see the table in `src/segment/mod.rs`).
const STATE: u64 = 24;
const SLOTS: u64 = 48;
const SLOT_LEN: u64 = 112;

#[test]
fn writes_recover_after_both_data_objects_were_truncated() {
    let name = fresh_name();
    let segment = attach(&name);
    // Images of one size, so that every write fits the slot it lands in. Two writes: both
    // slots have a data object, and this process has both mapped.
    let image = |id: u8| Raster::new(64, 64, PixelFormat::Rgba8, vec![id; 64 * 64 * 4]).unwrap();
    segment.write(&image(1)).unwrap();
    segment.write(&image(2)).unwrap();
    let objects = data_object_paths(&name);
    assert_eq!(objects.len(), 2, "{objects:?}");
    for object in &objects {
        truncate(object, 4096);
    }
    assert!(matches!(segment.read(), Err(SegmentError::Corrupt { .. })));
    // Every write from now on succeeds, whichever slot it lands in.
    for id in 3..=6 {
        segment
            .write(&image(id))
            .unwrap_or_else(|e| panic!("write {id} after the truncation: {e}"));
        assert_eq!(segment.read().unwrap().unwrap().raster, image(id));
    }
    let mut child = Child::spawn(&name, Role::ReadOnce);
    child.expect(&format!("read small {}", 64 * 64 * 4));
    child.wait();
}

/// Stores `value` at `offset` of the control object of segment `name`.
fn poke(name: &str, offset: u64, value: impl Into<u64>, width: usize) {
    let bytes = value.into().to_ne_bytes();
    overwrite_control(name, offset, &bytes[..width]);
}

#[test]
fn a_slot_claiming_a_terabyte_is_refused_not_allocated() {
    let name = fresh_name();
    let segment = attach(&name);
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    // A consistent slot record for 524288 x 524288 RGBA8 (1 TiB) in slot 1, backed by a sparse
    // data object of that size, and published as image 2.
    let (side, generation) = (1u32 << 19, 0x7fff_fff0u32);
    let bytes = 1u64 << 40;
    let data = format!("/dev/shm/shmimage.{name}.{generation:08x}");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    file.set_len(4096 + bytes).unwrap();
    let mut data_header = Vec::new();
    data_header.extend_from_slice(b"SHMIDATA");
    data_header.extend_from_slice(&generation.to_ne_bytes());
    data_header.extend_from_slice(&0u32.to_ne_bytes());
    data_header.extend_from_slice(&bytes.to_ne_bytes());
    file.write_all_at(&data_header, 0).unwrap();
    let slot = SLOTS + SLOT_LEN;
    poke(&name, slot, generation, 4);
    poke(&name, slot + 4, PixelFormat::Rgba8.code(), 4);
    poke(&name, slot + 8, side, 4);
    poke(&name, slot + 12, side, 4);
    poke(&name, slot + 16, bytes, 8);
    poke(&name, slot + 24, bytes, 8);
    poke(&name, slot + 32, 2u64, 8);
    poke(&name, STATE, 2u64 << 1 | 1, 8);

    // Another process (which would die of SIGABRT trying to allocate 1 TiB) gets an error.
    let mut child = Child::spawn(&name, Role::TryRead);
    child.expect(
        "read failed: the shared-memory segment \"NAME\" holds data shmimage cannot use: its \
         image is 274877906944 pixels, more than this server's limit of 100000000 pixels \
         (--max-pixels); upload an image to rewrite it, or stop every server and start again"
            .replace("NAME", &name)
            .as_str(),
    );
    let err = segment.read().unwrap_err();
    assert!(err.to_string().contains("274877906944 pixels"), "{err}");
    // A process whose limit allows it tries to allocate 1 TiB, and gets an error, not an abort.
    // (Only where the kernel refuses such an allocation up front: with overcommit_memory = 1
    // it would succeed and the copy would fill /dev/shm with the sparse object's pages.)
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
    if overcommit.trim() == "1" {
        println!("skipped the allocation failure: vm.overcommit_memory is 1");
    } else {
        let mut child = Child::spawn(&name, Role::TryReadWithoutPixelLimit);
        let said = child.expect_prefix("read failed: ");
        assert!(
            said.starts_with("this server cannot allocate 1.1 TB (1.0 TiB) to copy the image"),
            "{said}"
        );
    }
    // The next write recovers: it goes to the other slot and publishes it.
    segment.write(&tagged_raster(ImageId(3))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(3))
    );
}

#[test]
fn a_state_word_changed_under_the_lock_is_reported_as_such() {
    let name = fresh_name();
    let segment = attach(&name);
    // Two large images (64 MiB copies: each spans several scheduler time slices), image 1 in
    // slot 0 and image 2 in slot 1.
    for byte in [1, 2] {
        let pixels = vec![byte; 4096 * 4096 * 4];
        segment
            .write(&Raster::new(4096, 4096, PixelFormat::Rgba8, pixels).unwrap())
            .unwrap();
    }
    let control = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmimage.{name}"))
        .unwrap();
    // Another program keeps publishing without taking the lock: it stamps slot k % 2 with
    // image number k, then points the state word at it. Every copy, the locked one too, sees
    // the state word move on (and never come back to a value it had).
    let flipping = AtomicBool::new(true);
    let err = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut seq = 3u64;
            while flipping.load(Ordering::Relaxed) {
                let slot = seq % 2;
                control
                    .write_all_at(&seq.to_ne_bytes(), SLOTS + slot * SLOT_LEN + 32)
                    .unwrap();
                control
                    .write_all_at(&(seq << 1 | slot).to_ne_bytes(), STATE)
                    .unwrap();
                seq += 1;
            }
        });
        let err = (0..20).find_map(|_| segment.read().err());
        flipping.store(false, Ordering::Relaxed);
        err
    });
    let err = err.expect("at least one read raced the flips");
    let text = err.to_string();
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("changed from image") && text.contains("without taking the lock"),
        "{text}"
    );
}
