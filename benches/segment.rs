//! Segment throughput: writing and reading raw pixels through a shared-memory segment, next to
//! plain copies of the same bytes in the same run.
//!
//! Cases: 256x256, 1920x1080 and 3840x2160 RGBA 8-bit, and 3840x2160 RGBA 16-bit. For each:
//!
//! - `write`: [`Segment::write`] of the raster (lock, copy into the inactive slot, publish).
//! - `read`: [`Segment::read`], which returns a freshly allocated raster each time.
//! - `read_into`: [`Segment::read_into`] a kept buffer, as `GET /image.png` reads: no
//!   allocation and no page faults of fresh memory.
//! - `memcpy`: `copy_from_slice` into a preallocated buffer: the floor for any copy.
//! - `memcpy_alternating`: the same into two preallocated buffers in turn, as `write`
//!   alternates between the segment's two slots. For images that fit the cache (up to about
//!   1920x1080 here) `memcpy` keeps its one target cached and is the harder bar; for 3840x2160
//!   every case streams through memory and the two agree.
//! - `alloc_copy`: `to_vec()`, a fresh allocation plus the copy, which is what a read has to do
//!   besides its checks. `alloc_copy - memcpy` is the price of allocating and page-faulting new
//!   memory.
//!
//! The segment gets a name unique to this process and is detached at the end, which removes
//! it from `/dev/shm`.
//!
//! Run with `cargo bench --bench segment`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmimage::raster::{PixelFormat, Raster};
use shmimage::segment::{Segment, SegmentConfig, SegmentName};

/// The images measured: label, width, height, format.
const CASES: [(&str, u32, u32, PixelFormat); 4] = [
    ("256x256_rgba8", 256, 256, PixelFormat::Rgba8),
    ("1920x1080_rgba8", 1920, 1080, PixelFormat::Rgba8),
    ("3840x2160_rgba8", 3840, 2160, PixelFormat::Rgba8),
    ("3840x2160_rgba16", 3840, 2160, PixelFormat::Rgba16),
];

/// A segment name no other process uses: "b" and this process id in base 36 (at most 8
/// characters for any 32-bit id).
fn unique_segment_name() -> String {
    let mut pid = std::process::id();
    let mut digits = Vec::new();
    loop {
        let digit = pid % 36;
        digits.push(char::from_digit(digit, 36).unwrap_or('0'));
        pid /= 36;
        if pid == 0 {
            break;
        }
    }
    std::iter::once('b')
        .chain(digits.into_iter().rev())
        .collect()
}

/// Pixel bytes that are not all alike, so nothing can shortcut the copy.
fn pixels(width: u32, height: u32, format: PixelFormat) -> Vec<u8> {
    let len = format.byte_len(width, height).expect("bench sizes fit") as usize;
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn segment_copies(c: &mut Criterion) {
    let name = SegmentName::new(&unique_segment_name()).expect("a valid segment name");
    let segment = Segment::attach(SegmentConfig {
        name,
        max_pixels: 3840 * 2160,
        label: "segment bench".to_owned(),
    })
    .expect("attach the bench segment");

    for (label, width, height, format) in CASES {
        let raster = Raster::new(width, height, format, pixels(width, height, format))
            .expect("a valid raster");
        let bytes = raster.pixels().len() as u64;
        let mut group = c.benchmark_group(format!("segment/{label}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .throughput(Throughput::Bytes(bytes));

        group.bench_function("write", |b| {
            b.iter(|| segment.write(black_box(&raster)).expect("segment write"))
        });
        segment.write(&raster).expect("segment write");
        group.bench_function("read", |b| {
            b.iter(|| segment.read().expect("segment read").expect("an image"))
        });
        let mut kept = Some(Vec::new());
        group.bench_function("read_into", |b| {
            b.iter(|| {
                let buffer = kept.take().unwrap_or_default();
                let stored = segment
                    .read_into(buffer)
                    .expect("segment read")
                    .expect("an image");
                kept = Some(stored.raster.into_pixels());
            })
        });
        let source = raster.pixels();
        let mut target = vec![0u8; source.len()];
        group.bench_function("memcpy", |b| {
            b.iter(|| target.copy_from_slice(black_box(source)))
        });
        let mut targets = [vec![0u8; source.len()], vec![0u8; source.len()]];
        let mut next = 0;
        group.bench_function("memcpy_alternating", |b| {
            b.iter(|| {
                next ^= 1;
                targets[next].copy_from_slice(black_box(source))
            })
        });
        group.bench_function("alloc_copy", |b| b.iter(|| black_box(source).to_vec()));
        group.finish();
    }

    segment.detach().expect("detach the bench segment");
}

criterion_group!(benches, segment_copies);
criterion_main!(benches);
