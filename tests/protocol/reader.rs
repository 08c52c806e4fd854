//! The Python reader against real segments: every pixel format as the servers serve it, a
//! publish during its copy caught by its race check, no torn image under a stream of writes,
//! the futex wait, and the version rule.

use crate::helpers::{encode, fresh_segment, noise_rgba8, rgb8, rgba16, spawn_server};
use crate::python::{Running, python, run};
use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma};
use shmimage::raster::{PixelFormat, Raster};
use shmimage::segment::{Segment, SegmentConfig, SegmentName};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

/// This test process, attached to `segment` as a writer.
pub fn attach(segment: &str) -> Segment {
    Segment::attach(SegmentConfig {
        name: SegmentName::new(segment).unwrap(),
        max_pixels: 100_000_000,
        label: "protocol test".to_owned(),
    })
    .expect("attach to the segment")
}

/// An RGBA image of `side` x `side` pixels filled with `value`, different for every value.
pub fn filled(side: u32, value: u8) -> Raster {
    let len = (side * side * 4) as usize;
    let pixels = (0..len)
        .map(|i| value.wrapping_add((i % 251) as u8))
        .collect();
    Raster::new(side, side, PixelFormat::Rgba8, pixels).unwrap()
}

fn gray8(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(width, height, |x, y| {
        Luma([(x * 9 + y * 5) as u8])
    }))
}

fn gray16(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(width, height, |x, y| {
        Luma([(x * 3001 + y * 17) as u16])
    }))
}

#[tokio::test]
async fn the_python_reader_sees_every_pixel_format_as_the_servers_serve_it() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("protocol-{segment}.raw"));

    for (seq, (picture, format)) in [
        (rgb8(33, 17, 5), "RGB 8-bit"),
        (noise_rgba8(21, 13), "RGBA 8-bit"),
        (rgba16(19, 11), "RGBA 16-bit"),
        (gray8(27, 9), "Gray 8-bit"),
        (gray16(14, 15), "Gray 16-bit"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = a
            .upload(encode(&picture, ImageFormat::Png), "p.png", "image/png")
            .await;
        assert_eq!(response.status(), 201, "upload of a {format} PNG");
        let png_url = b.url("/image.png");

        let compared = run(
            python,
            &[
                "compare",
                "--segment",
                &segment,
                "--png-url",
                &png_url,
                "--out",
            ]
            .into_iter()
            .chain([out.to_str().unwrap()])
            .collect::<Vec<_>>(),
        );

        let line = compared.only_line();
        assert_eq!(line["same_as_png"], true, "{format}: {line}");
        assert_eq!(line["format"], format);
        assert_eq!(line["width"], picture.width());
        assert_eq!(line["height"], picture.height());
        assert_eq!(line["seq"], seq as u64 + 1);
        assert_eq!(line["writer_label"], a.addr.as_str());
        assert_eq!(line["writer_pid"], a.pid());
        let pixels = std::fs::read(&out).unwrap();
        assert!(
            pixels == picture.as_bytes(),
            "{format}: the reader's pixels are the uploaded ones ({} bytes)",
            pixels.len()
        );
    }
}

#[test]
fn a_publish_during_the_python_reader_s_copy_is_caught_by_its_race_check() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    writer.write(&filled(64, 1)).unwrap();
    let mut reader = Running::start(
        python,
        &["read", "--segment", &segment, "--pause-after-copy"],
    );
    let paused = reader.next_line();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["seq"], 1, "it copied image 1");

    // Two writes: the slot it copied from is overwritten, and the state word moves on.
    writer.write(&filled(64, 2)).unwrap();
    let newest = filled(64, 3);
    writer.write(&newest).unwrap();
    reader.send_line();

    let read = reader.next_line();
    assert_eq!(
        read["seq"], 3,
        "it noticed the publish and read again: {read}"
    );
    assert_eq!(read["attempts"], 2);
    assert_eq!(read["crc32"], crc32fast::hash(newest.pixels()));
    assert_eq!(read["writer_label"], "protocol test");
    assert!(reader.succeeded());
}

#[test]
fn the_python_reader_never_returns_a_torn_image_while_a_writer_publishes() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = Arc::new(attach(&segment));
    let images: Vec<Raster> = (0..3).map(|i| filled(512, i * 80)).collect();
    let digests: Vec<u32> = images
        .iter()
        .map(|image| crc32fast::hash(image.pixels()))
        .collect();
    writer.write(&images[0]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (writer, stop) = (Arc::clone(&writer), Arc::clone(&stop));
        thread::spawn(move || {
            // Write n (image n) holds images[(n - 1) % 3]; the first is written above.
            let mut writes = 1usize;
            while !stop.load(Ordering::Relaxed) {
                writer.write(&images[writes % 3]).unwrap();
                writes += 1;
            }
            writes - 1
        })
    };

    let reads = run(python, &["read", "--segment", &segment, "--count", "150"]);
    stop.store(true, Ordering::Relaxed);
    let writes = publisher.join().unwrap();

    assert!(reads.success, "{}", reads.stderr);
    assert_eq!(reads.lines.len(), 150);
    let mut raced = 0;
    let mut last_seq = 0;
    for read in &reads.lines {
        let crc = read["crc32"].as_u64().unwrap() as u32;
        let seq = read["seq"].as_u64().unwrap();
        assert!(
            digests.contains(&crc),
            "read {read} is none of the written images: torn"
        );
        let expected = digests[((seq - 1) % 3) as usize];
        assert_eq!(crc, expected, "image {seq} has the pixels of write {seq}");
        assert!(seq >= last_seq, "sequence numbers never go back");
        last_seq = seq;
        if read["attempts"].as_u64().unwrap() > 1 {
            raced += 1;
        }
    }
    eprintln!(
        "150 reads during {writes} writes of 1 MiB images; {raced} reads lost a race and retried"
    );
}

#[tokio::test]
async fn the_python_reader_sleeps_on_the_futex_until_the_next_image() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let png = encode(&rgb8(8, 8, 1), ImageFormat::Png);
    assert_eq!(
        server
            .upload(png.clone(), "1.png", "image/png")
            .await
            .status(),
        201
    );

    // Image 1 is there: `--since 0` returns at once, `--since 1` sleeps until image 2.
    let at_once = run(python, &["wait", "--segment", &segment, "--since", "0"]);
    assert_eq!(at_once.only_line()["seq"], 1);
    let waiting = Running::start(python, &["wait", "--segment", &segment, "--since", "1"]);
    assert_eq!(waiting.next_line()["waiting"], 1, "it is about to sleep");
    assert_eq!(server.upload(png, "2.png", "image/png").await.status(), 201);
    assert_eq!(waiting.next_line()["seq"], 2);
    assert!(waiting.succeeded());
}

#[test]
fn the_python_reader_refuses_a_version_it_does_not_know_and_a_missing_segment() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    writer.write(&filled(8, 1)).unwrap();
    let control = format!("/dev/shm/shmimage.{segment}");
    let original = std::fs::read(&control).unwrap();
    let mut newer = original.clone();
    newer[8..12].copy_from_slice(&4u32.to_ne_bytes());
    std::fs::write(&control, &newer).unwrap();

    let refused = run(python, &["read", "--segment", &segment]);

    std::fs::write(&control, &original).unwrap();
    assert!(!refused.success);
    assert!(
        refused.lines.is_empty(),
        "nothing read: {:?}",
        refused.lines
    );
    assert!(
        refused
            .stderr
            .contains("unsupported layout version 4: this reader reads version 3"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        run(python, &["read", "--segment", &segment]).only_line()["seq"],
        1
    );
    drop(writer);

    let missing = run(python, &["read", "--segment", &segment]);
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
}
