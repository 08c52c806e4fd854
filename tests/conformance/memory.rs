//! Memory: decoding a small file must not cost the server much more memory than its picture.
//!
//! A 34 KB tiled TIFF (100x40 pixels, RGB 16-bit, 256x256 tiles, one plane per sample) once made
//! a server's peak resident memory jump by 58 MiB. The server's peak (`VmHWM` in
//! `/proc/PID/status`) is read after a warm-up upload and again after the TIFF; the difference
//! must stay under a few MiB, where the picture itself is 24 KB.

use crate::helpers::{encode, fresh_segment, rgb8, spawn_server};
use crate::{conformance_dir, runtime};
use image::ImageFormat;
use libtest_mimic::{Failed, Trial};

/// How much the peak may grow for that file: its pixels, the decoder's tile buffers and the
/// server's own bookkeeping fit many times over.
const ALLOWED_GROWTH_KIB: u64 = 8 * 1024;

/// The server's peak resident set size so far, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, Failed> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/PID/status".into())
}

fn tiled_tiff_costs_about_its_size() -> Result<(), Failed> {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let file = conformance_dir().join("files/tiff/pillow-tiled-planar-rgb16-lzw.tif");
    let tiff = std::fs::read(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
    runtime().block_on(async {
        // Warm up every path an upload takes with a picture of about the same size.
        let warm_up = encode(&rgb8(100, 40, 3), ImageFormat::Png);
        let status = server.upload_raw(warm_up, "image/png").await.status();
        if status != 201 {
            return Err(format!("the warm-up upload got {status}").into());
        }
        let before = peak_rss_kib(server.pid())?;
        let response = server.upload_raw(tiff, "image/tiff").await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let after = peak_rss_kib(server.pid())?;
        if status != 201 {
            return Err(format!("the tiled TIFF got {status}: {body}").into());
        }
        let growth = after.saturating_sub(before);
        if growth > ALLOWED_GROWTH_KIB {
            return Err(format!(
                "decoding a 34 KB, 100x40 TIFF raised the server's peak memory by {} KiB \
                 ({before} -> {after} KiB), more than {ALLOWED_GROWTH_KIB} KiB",
                growth
            )
            .into());
        }
        Ok(())
    })
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "memory/tiled-planar-tiff-peak-rss",
            tiled_tiff_costs_about_its_size,
        )
        .with_kind("memory"),
    ]
}
