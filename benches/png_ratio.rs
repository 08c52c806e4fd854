//! The speed and size of `encode_png` against the `image` crate's fast PNG encoder on one
//! thread, each timed in a process of its own so neither's allocations affect the other.
//!
//! Run with `cargo bench --features bench --bench png_ratio`. The bench starts itself once per encoder and
//! image (`png_ratio --child ENCODER CASE`), each child encodes the image a few times and
//! reports the median time and the file size, and the parent prints a table with the ratios.

use std::process::Command;
use std::time::Instant;

use shmimage::imaging::encode_png;
use shmimage::raster::{PixelFormat, Raster};
use support::{image_crate_fast_png, photo_like};

#[path = "support/mod.rs"]
mod support;

/// The images compared: label, width, height, format.
const CASES: [(&str, u32, u32, PixelFormat); 3] = [
    ("1920x1080 RGBA8", 1920, 1080, PixelFormat::Rgba8),
    ("3840x2160 RGBA8", 3840, 2160, PixelFormat::Rgba8),
    ("3840x2160 RGBA16", 3840, 2160, PixelFormat::Rgba16),
];

/// The encoders compared, by the name a child is given.
const ENCODERS: [&str; 2] = ["image_fast_1thread", "shmimage"];

/// Timed encodes per child; the median is reported.
const RUNS: usize = 9;

fn encode(encoder: &str, raster: &Raster) -> Vec<u8> {
    match encoder {
        "shmimage" => encode_png(raster).expect("encode_png"),
        _ => image_crate_fast_png(raster),
    }
}

/// In a child: encodes case `case` with `encoder` (one warm-up, then `RUNS` timed) and prints
/// "median_ms bytes".
fn child(encoder: &str, case: usize) {
    let (_, width, height, format) = CASES[case];
    let raster = photo_like(width, height, format);
    let mut len = encode(encoder, &raster).len();
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            len = encode(encoder, &raster).len();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{} {len}", times[RUNS / 2]);
}

/// Runs a child and parses its "median_ms bytes" line.
fn run_child(encoder: &str, case: usize) -> (f64, usize) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let output = Command::new(exe)
        .args(["--child", encoder, &case.to_string()])
        .output()
        .expect("start a child bench");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let median = fields.next().and_then(|f| f.parse().ok());
    let len = fields.next().and_then(|f| f.parse().ok());
    match (median, len) {
        (Some(median), Some(len)) => (median, len),
        _ => panic!(
            "child {encoder} {case} said {text:?}, {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--child") {
        let case = args
            .get(at + 2)
            .and_then(|c| c.parse().ok())
            .expect("a case");
        child(&args[at + 1], case);
        return;
    }
    // `cargo bench` passes "--bench"; `cargo test --benches` does not: then only check it runs.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("median of {RUNS} encodes, each encoder in its own process, {cores} cores");
    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7}",
        "image", "ref ms", "ref bytes", "ours ms", "ours bytes", "speed", "size"
    );
    for (case, (label, ..)) in CASES.iter().enumerate() {
        let [(reference_ms, reference_len), (ours_ms, ours_len)] =
            ENCODERS.map(|encoder| run_child(encoder, case));
        println!(
            "{label:<18} {reference_ms:>12.1} {reference_len:>12} {ours_ms:>12.1} {ours_len:>12} \
             {:>6.2}x {:>7.4}",
            reference_ms / ours_ms,
            ours_len as f64 / reference_len as f64
        );
    }
}
