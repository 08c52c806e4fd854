//! One segment shared by threads of one process: the optimistic read racing a writer on the same
//! mapping. This is the test ThreadSanitizer runs (see docs/RELIABILITY.md): between processes
//! the race is the same, but only within one address space can a sanitizer see both sides.

use crate::images::{ImageId, tagged_raster, verify_tagged};
use crate::support::{attach, fresh_name};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes, in a loop.
const WRITES: usize = 300;

#[test]
fn a_writer_thread_and_a_reader_thread_on_one_segment_never_tear() {
    let name = fresh_name();
    let segment = attach(&name);
    // Eight small images of every pixel format and two medium ones, so that the slots also move
    // to new generations while the reader copies.
    let images: Vec<_> = (1..=8)
        .chain(1_000_000..1_000_002)
        .map(|id| tagged_raster(ImageId(id)))
        .collect();
    segment.write(&images[0]).unwrap();
    let writing = AtomicBool::new(true);
    let (reads, last) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0u64;
            let mut buffer = Vec::new();
            while writing.load(Ordering::Acquire) || reads == 0 {
                let stored = segment.read_into(buffer).unwrap().expect("an image");
                verify_tagged(&stored.raster).expect("a whole image");
                buffer = stored.raster.into_pixels();
                reads += 1;
            }
            reads
        });
        for k in 0..WRITES {
            segment.write(&images[k % images.len()]).unwrap();
        }
        writing.store(false, Ordering::Release);
        let reads = reader.join().unwrap();
        (reads, segment.read().unwrap().expect("an image"))
    });
    println!("{WRITES} writes and {reads} verified reads on one mapping");
    assert!(reads > 0);
    assert_eq!(segment.seq(), 1 + WRITES as u64);
    assert_eq!(last.raster, images[(WRITES - 1) % images.len()]);
}
