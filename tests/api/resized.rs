//! `GET /image.png?width=N`: the image at the width a page draws it, made once per image and
//! width bucket; plain `/image.png` stays full size and lossless.

use crate::helpers::{
    assert_same_pixels, encode, fresh_segment, header, json_error, rgb8, rgba16, spawn_server,
};
use image::{ColorType, DynamicImage, ImageFormat};

async fn png_at(server: &crate::helpers::TestServer, path: &str) -> (DynamicImage, String) {
    let response = server.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(header(&response, "content-type"), "image/png");
    let timing = header(&response, "server-timing");
    let png = response.bytes().await.unwrap();
    let image = image::load_from_memory_with_format(&png, ImageFormat::Png).expect("a PNG");
    (image, timing)
}

#[tokio::test]
async fn a_page_gets_the_image_at_the_width_it_draws_it_and_downloads_stay_full_size() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let photo = rgb8(1920, 1080, 0);
    let response = a
        .upload(encode(&photo, ImageFormat::Png), "photo.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);

    // 1000 pixels wide rounds up to the 1280 bucket, in proportion, 8-bit RGB.
    let (small, timing) = png_at(&b, "/image.png?v=x-1&width=1000").await;
    assert_eq!((small.width(), small.height()), (1280, 720));
    assert_eq!(small.color(), ColorType::Rgb8);
    assert!(timing.contains("resize"), "{timing}");
    // A proper filter: a smooth gradient stays close to the original, sampled in proportion.
    let (x, y) = (640, 360);
    let original = photo.as_rgb8().unwrap().get_pixel(x * 3 / 2, y * 3 / 2).0;
    let resized = small.as_rgb8().unwrap().get_pixel(x, y).0;
    for (o, r) in original.iter().zip(resized) {
        assert!(o.abs_diff(r) <= 6, "{original:?} against {resized:?}");
    }

    // The same bucket again comes from the cache, with its own ETag, and 304 when unchanged.
    let response = b.get("/image.png?width=1280").await;
    assert_eq!(header(&response, "server-timing"), "cache;desc=hit");
    let etag = header(&response, "etag");
    assert!(etag.ends_with("-1-w1280\""), "{etag}");
    let again = b
        .client
        .get(b.url("/image.png?width=1100"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Wider than the image, or no width: the full image, exactly its pixels.
    let (wide, _) = png_at(&b, "/image.png?width=3000").await;
    assert_same_pixels(&wide, &photo);
    assert_same_pixels(&b.shared_image().await, &photo);

    // A new image gets new resizes.
    let next = rgb8(1920, 1080, 200);
    let response = a
        .upload(encode(&next, ImageFormat::Png), "next.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let response = b.get("/image.png?width=1280").await;
    assert!(header(&response, "etag").ends_with("-2-w1280\""));
    assert!(header(&response, "server-timing").contains("resize"));
}

#[tokio::test]
async fn sixteen_bit_images_with_alpha_shrink_to_eight_bit_with_alpha() {
    let a = spawn_server(&fresh_segment());
    let deep = rgba16(800, 400);
    let response = a
        .upload(encode(&deep, ImageFormat::Png), "deep.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);

    let (small, _) = png_at(&a, "/image.png?width=320").await;
    assert_eq!((small.width(), small.height()), (320, 160));
    assert_eq!(small.color(), ColorType::Rgba8);
    assert_same_pixels(&a.shared_image().await, &deep);
}

#[tokio::test]
async fn a_width_that_is_not_a_number_of_pixels_is_refused_with_400() {
    let a = spawn_server(&fresh_segment());
    let response = a
        .upload(
            encode(&rgb8(640, 480, 1), ImageFormat::Png),
            "a.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);

    for width in ["abc", "0", "-5", "99999999999", ""] {
        let message = json_error(a.get(&format!("/image.png?width={width}")).await, 400).await;
        assert!(
            message.contains("whole number of pixels from 1 to 65535"),
            "{message}"
        );
    }
}
