//! `shmimage get OUT.png|-`: the image uploaded through any server, as the same PNG the servers
//! serve; no image yet is an error that leaves OUT alone.

use crate::command::{run, scratch_file};
use crate::helpers::{
    assert_same_pixels, encode, fresh_segment, gray_alpha8, rgb8, rgba16, spawn_server,
};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma};

/// A 16-bit gray picture.
fn gray16(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(width, height, |x, y| {
        Luma([(x * 2000 + y * 7) as u16])
    }))
}

#[tokio::test]
async fn get_writes_the_png_a_server_serves_for_an_image_uploaded_through_another() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let out = scratch_file("get-file", "shared.png");

    for (picture, color) in [
        (rgb8(33, 17, 5), "RGB 8-bit"),
        (rgba16(40, 30), "RGBA 16-bit"),
        (gray_alpha8(25, 35), "Gray+Alpha 8-bit"),
        (gray16(19, 23), "Gray 16-bit"),
    ] {
        let response = a
            .upload(
                encode(&picture, ImageFormat::Png),
                "picture.png",
                "image/png",
            )
            .await;
        assert_eq!(response.status(), 201, "upload of a {color} PNG");

        let get = run(&["get", out.to_str().unwrap(), "--segment", &segment], None);

        get.assert_success();
        let line = get.stdout_text();
        assert_eq!(line.lines().count(), 1, "one line: {line:?}");
        assert!(line.contains(color), "{line}");
        let png = std::fs::read(&out).expect("get wrote the file");
        let served = b.get("/image.png").await.bytes().await.unwrap();
        assert!(
            png == served,
            "{color}: get's PNG is byte for byte what /image.png serves"
        );
        let written = image::load_from_memory_with_format(&png, ImageFormat::Png).unwrap();
        assert_same_pixels(&written, &picture);
    }
}

#[tokio::test]
async fn get_dash_writes_the_png_to_standard_output() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let picture = rgba16(12, 9);
    let response = server
        .upload(encode(&picture, ImageFormat::Png), "p.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);

    let get = run(&["get", "-", "--segment", &segment], None);

    get.assert_success();
    let written = image::load_from_memory_with_format(&get.stdout, ImageFormat::Png)
        .expect("a PNG on stdout");
    assert_same_pixels(&written, &picture);
    assert_eq!(get.stderr, "", "nothing but the PNG");
}

#[tokio::test]
async fn get_without_an_image_fails_with_a_message_and_leaves_out_alone() {
    let segment = fresh_segment();
    let _server = spawn_server(&segment);
    let out = scratch_file("get-none", "keep.png");
    std::fs::write(&out, b"what was here before").unwrap();

    let get = run(&["get", out.to_str().unwrap(), "--segment", &segment], None);

    let stderr = get.assert_failure();
    assert!(
        stderr.contains(&format!(
            "no image in shared memory segment \"{segment}\" yet: load one first"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"what was here before");
    let folder = out.parent().unwrap();
    let entries: Vec<_> = std::fs::read_dir(folder).unwrap().collect();
    assert_eq!(entries.len(), 1, "no half-written file next to OUT");

    let to_stdout = run(&["get", "-", "--segment", &segment], None);
    to_stdout.assert_failure();
    assert!(to_stdout.stdout.is_empty());
}
