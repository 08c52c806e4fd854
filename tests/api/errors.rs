//! Uploads that fail say why, with the right status, and leave the segment's image alone.

use crate::helpers::{
    BROWSER_ACCEPT, TestServer, assert_same_pixels, encode, form_with, fresh_segment, header,
    json_error, noise_rgba8, rgb8, spawn_server, spawn_server_with, unescape_html,
};
use image::{DynamicImage, ImageFormat};
use reqwest::multipart::Form;

/// Servers A and B on a fresh segment that already holds an image, loaded through B.
async fn loaded_pair(a_args: &[&str]) -> (TestServer, TestServer, DynamicImage) {
    let segment = fresh_segment();
    let a = spawn_server_with(&segment, a_args);
    let b = spawn_server(&segment);
    let picture = rgb8(10, 10, 42);
    let response = b
        .upload(
            encode(&picture, ImageFormat::Png),
            "before.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);
    (a, b, picture)
}

/// B still serves `previous`, and the segment is still at its first write.
async fn assert_unchanged(b: &TestServer, previous: &DynamicImage) {
    assert_same_pixels(&b.shared_image().await, previous);
    assert_eq!(b.segment_state().await["seq"], 1);
}

#[tokio::test]
async fn a_file_that_is_not_an_image_is_refused_with_415() {
    let (a, b, previous) = loaded_pair(&[]).await;

    let response = a
        .upload(b"just some text".to_vec(), "notes.txt", "text/plain")
        .await;
    let message = json_error(response, 415).await;
    // The message lists every format the server reads.
    assert!(
        message.contains("not an image this server can read: PNG, JPEG, GIF, WebP, BMP, TIFF, "),
        "{message}"
    );
    for format in [
        "QOI",
        "PNM",
        "TGA",
        "ICO",
        "CUR",
        "Radiance HDR",
        "OpenEXR",
        "DDS",
    ] {
        assert!(message.contains(format), "{format} missing from {message}");
    }

    let response = a
        .upload_form(
            form_with("image", b"%PDF-1.7".to_vec(), "doc.pdf", "application/pdf"),
            Some(BROWSER_ACCEPT),
        )
        .await;
    assert_eq!(response.status(), 415);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let page = unescape_html(&response.text().await.unwrap());
    assert!(page.contains("not an image this server can read"), "{page}");
    assert!(
        page.contains("Load image from file"),
        "the error page offers the form again"
    );

    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn a_truncated_image_is_refused_with_422() {
    let (a, b, previous) = loaded_pair(&[]).await;
    let png = encode(&noise_rgba8(64, 64), ImageFormat::Png);
    let truncated = png[..png.len() / 2].to_vec();

    let response = a.upload(truncated, "cut.png", "image/png").await;

    let message = json_error(response, 422).await;
    assert!(message.contains("corrupt or truncated"), "{message}");
    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn an_empty_upload_or_a_missing_field_is_refused_with_400() {
    let (a, b, previous) = loaded_pair(&[]).await;

    let message = json_error(a.upload(Vec::new(), "", "image/png").await, 400).await;
    assert!(message.contains("empty"), "{message}");

    let message = json_error(a.upload_raw(Vec::new(), "image/png").await, 400).await;
    assert!(message.contains("empty"), "{message}");

    let png = encode(&rgb8(4, 4, 0), ImageFormat::Png);
    let form = form_with("file", png, "wrong-field.png", "image/png");
    let message = json_error(a.upload_form(form, None).await, 400).await;
    assert!(
        message.contains("\"image\""),
        "names the field it expects: {message}"
    );

    let form = Form::new().text("comment", "no file at all");
    let message = json_error(a.upload_form(form, None).await, 400).await;
    assert!(message.contains("\"image\""), "{message}");

    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn a_body_that_is_neither_a_form_nor_an_image_is_refused_with_415() {
    let (a, b, previous) = loaded_pair(&[]).await;

    let response = a.upload_raw(b"hello".to_vec(), "text/plain").await;

    let message = json_error(response, 415).await;
    assert!(message.contains("multipart/form-data"), "{message}");
    assert!(message.contains("text/plain"), "{message}");
    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn an_image_with_too_many_pixels_is_refused_with_413() {
    let (a, b, previous) = loaded_pair(&["--max-pixels", "1000"]).await;

    let response = a
        .upload(
            encode(&rgb8(40, 40, 0), ImageFormat::Png),
            "big.png",
            "image/png",
        )
        .await;

    let message = json_error(response, 413).await;
    assert!(message.contains("1600 pixels"), "{message}");
    assert!(message.contains("--max-pixels"), "{message}");
    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn an_upload_over_the_byte_limit_is_refused_with_413() {
    let (a, b, previous) = loaded_pair(&["--max-upload-bytes", "10000"]).await;
    let png = encode(&noise_rgba8(60, 60), ImageFormat::Png);
    assert!(png.len() > 10_000);

    let message = json_error(a.upload(png.clone(), "big.png", "image/png").await, 413).await;
    assert!(message.contains("--max-upload-bytes"), "{message}");

    let message = json_error(a.upload_raw(png.clone(), "image/png").await, 413).await;
    assert!(message.contains("--max-upload-bytes"), "{message}");

    let response = a
        .upload_form(
            form_with("image", png, "big.png", "image/png"),
            Some(BROWSER_ACCEPT),
        )
        .await;
    assert_eq!(response.status(), 413);
    let page = unescape_html(&response.text().await.unwrap());
    assert!(page.contains("--max-upload-bytes"), "{page}");

    assert_unchanged(&b, &previous).await;
}

#[tokio::test]
async fn unknown_paths_answer_404_with_directions() {
    let a = spawn_server(&fresh_segment());

    let message = json_error(a.get("/nowhere").await, 404).await;

    assert!(message.contains("/image.png"), "{message}");
}
