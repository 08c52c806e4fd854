//! Imaging throughput on photo-like images (smooth gradients plus per-pixel noise, so deflate
//! and JPEG see realistic content).
//!
//! - `encode_png/*`: shmimage's [`encode_png`] (the server's `GET /image.png`) next to the
//!   `image` crate's `PngEncoder` with `CompressionType::Fast` and `FilterType::Adaptive`, which
//!   runs on one thread: the reference the encoder is measured against. Output sizes are
//!   printed before each group. Both run in one process, so each one's large allocations
//!   change the other's: glibc raises its mmap threshold after freeing a large block, and the
//!   reference's growing output buffer then lands on the heap and is copied as it grows. This
//!   has been seen to slow the reference at 1920x1080 by up to 40%; for a clean ratio, also time
//!   each encoder in a process of its own.
//! - `decode_png/*`, `decode_jpeg/*`: [`decode`] of a PNG (written by [`encode_png`]) and of a
//!   JPEG (written by the `image` crate's `JpegEncoder` at quality 90, RGB).
//!
//! Run with `cargo bench --features bench --bench imaging`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use shmimage::imaging::{DecodeLimits, decode, encode_png};
use shmimage::raster::PixelFormat;
use support::{image_crate_fast_png, photo_like};

#[path = "support/mod.rs"]
mod support;

/// Sizes for decoding and for 8-bit encoding.
const SIZES: [(u32, u32); 3] = [(256, 256), (1920, 1080), (3840, 2160)];

const LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: 3840 * 2160,
};

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: u64) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bytes));
}

fn encoding(c: &mut Criterion) {
    let cases = SIZES
        .iter()
        .map(|&(w, h)| (w, h, PixelFormat::Rgba8))
        .chain([(3840, 2160, PixelFormat::Rgba16)]);
    for (width, height, format) in cases {
        let raster = photo_like(width, height, format);
        let raw = raster.pixels().len() as u64;
        let ours = encode_png(&raster).expect("encode_png").len();
        let reference = image_crate_fast_png(&raster).len();
        let label = format!("{width}x{height}_{}", format_label(format));
        println!(
            "encode_png/{label}: raw {raw} B; shmimage {ours} B ({:.1}% of raw); image Fast \
             1 thread {reference} B ({:.1}% of raw); size ratio {:.3}",
            100.0 * ours as f64 / raw as f64,
            100.0 * reference as f64 / raw as f64,
            ours as f64 / reference as f64,
        );
        let mut group = c.benchmark_group(format!("encode_png/{label}"));
        configure(&mut group, raw);
        group.bench_function("image_fast_1thread", |b| {
            b.iter(|| image_crate_fast_png(black_box(&raster)))
        });
        group.bench_function("shmimage", |b| {
            b.iter(|| encode_png(black_box(&raster)).expect("encode_png"))
        });
        group.finish();
    }
}

fn decoding(c: &mut Criterion) {
    for (width, height) in SIZES {
        let label = format!("{width}x{height}");
        let rgba = photo_like(width, height, PixelFormat::Rgba8);
        let png = encode_png(&rgba).expect("encode_png");
        let mut group = c.benchmark_group(format!("decode_png/{label}_rgba8"));
        configure(&mut group, rgba.pixels().len() as u64);
        group.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&png), &LIMITS).expect("decode PNG"))
        });
        group.finish();

        let rgb = photo_like(width, height, PixelFormat::Rgb8);
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90)
            .write_image(rgb.pixels(), width, height, image::ExtendedColorType::Rgb8)
            .expect("JPEG encoding");
        let mut group = c.benchmark_group(format!("decode_jpeg/{label}_rgb8_q90"));
        configure(&mut group, rgb.pixels().len() as u64);
        group.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&jpeg), &LIMITS).expect("decode JPEG"))
        });
        group.finish();
    }
}

fn format_label(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Rgba8 => "rgba8",
        PixelFormat::Rgba16 => "rgba16",
        _ => "other",
    }
}

criterion_group!(benches, encoding, decoding);
criterion_main!(benches);
