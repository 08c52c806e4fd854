//! Loading images into one server and reading the same pixels from another.

use crate::helpers::{
    assert_same_pixels, encode, fresh_segment, gray_alpha8, header, rgb8, rgba16, spawn_server,
};
use image::ImageFormat;

#[tokio::test]
async fn a_jpeg_loaded_into_a_comes_out_of_b_with_the_same_pixels() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let jpeg = encode(&rgb8(64, 48, 0), ImageFormat::Jpeg);
    let decoded_jpeg = image::load_from_memory(&jpeg).unwrap();

    let response = a.upload(jpeg, "photo.jpg", "image/jpeg").await;

    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location"), "/image.png");
    let stored: serde_json::Value = response.json().await.unwrap();
    assert_eq!(stored["segment"], segment.as_str());
    assert_eq!(stored["width"], 64);
    assert_eq!(stored["height"], 48);
    assert_eq!(stored["color"], "RGB 8-bit");
    assert_eq!(stored["bytes"], 64 * 48 * 3);
    assert_eq!(stored["seq"], 1);
    assert_same_pixels(&b.shared_image().await, &decoded_jpeg);
}

#[tokio::test]
async fn pngs_keep_their_color_type_and_bit_depth_from_a_to_b() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);

    for (picture, color) in [
        (rgb8(33, 17, 5), "RGB 8-bit"),
        (rgba16(40, 30), "RGBA 16-bit"),
        (gray_alpha8(25, 35), "Gray+Alpha 8-bit"),
    ] {
        let response = a
            .upload(
                encode(&picture, ImageFormat::Png),
                "picture.png",
                "image/png",
            )
            .await;
        assert_eq!(response.status(), 201, "upload of a {color} PNG");
        let stored: serde_json::Value = response.json().await.unwrap();
        assert_eq!(stored["color"], color);

        assert_same_pixels(&b.shared_image().await, &picture);
    }
}

#[tokio::test]
async fn a_raw_body_with_an_image_content_type_is_loaded() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let picture = rgb8(20, 10, 9);

    let response = a
        .upload_raw(encode(&picture, ImageFormat::Png), "image/png")
        .await;

    assert_eq!(response.status(), 201);
    assert_same_pixels(&b.shared_image().await, &picture);

    let octets = rgb8(12, 12, 3);
    let response = b
        .upload_raw(
            encode(&octets, ImageFormat::Png),
            "application/octet-stream",
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_same_pixels(&a.shared_image().await, &octets);
}

#[tokio::test]
async fn a_larger_image_after_a_smaller_one_is_served_whole() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let small = rgb8(8, 8, 1);
    let large = rgba16(640, 480);

    let response = a
        .upload(encode(&small, ImageFormat::Png), "small.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    assert_same_pixels(&a.shared_image().await, &small);

    let response = b
        .upload(encode(&large, ImageFormat::Png), "large.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let stored: serde_json::Value = response.json().await.unwrap();
    assert_eq!(stored["seq"], 2);

    assert_same_pixels(&a.shared_image().await, &large);
}

#[tokio::test]
async fn an_image_that_holds_its_forms_boundary_followed_by_other_bytes_is_stored_whole() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(96, 64, 5);
    // A PNG with a private ancillary chunk (which decoders skip) that holds the form's
    // boundary after a line break, followed by other bytes: data, not the end of the part.
    let png = encode(&image, ImageFormat::Png);
    let boundary = "XyZzY";
    let data = b"\r\n--XyZzY-not-the-end\r\n--XyZzYX";
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"shMi");
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
    let mut with_chunk = png[..33].to_vec();
    with_chunk.extend_from_slice(&chunk);
    with_chunk.extend_from_slice(&png[33..]);
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&with_chunk);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let response = a
        .upload_raw(body, &format!("multipart/form-data; boundary={boundary}"))
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_same_pixels(&b.shared_image().await, &image);
}
