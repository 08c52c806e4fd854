//! `GET /image.png`: nothing yet, caching by sequence number, headers.

use crate::helpers::{
    encode, fresh_segment, header, json_error, rgb8, spawn_server, unescape_html,
};
use image::ImageFormat;

#[tokio::test]
async fn before_any_upload_the_image_is_404_with_what_to_do() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let expected = format!("no image in shared memory segment \"{segment}\" yet: load one first");

    let message = json_error(a.get("/image.png").await, 404).await;
    assert_eq!(message, expected);

    let response = a.get_page("/image.png").await;
    assert_eq!(response.status(), 404);
    assert!(header(&response, "content-type").starts_with("text/html"));
    // The page says it as a sentence of its own.
    let sentence = format!("No image in shared memory segment \"{segment}\" yet: load one first");
    let page = unescape_html(&response.text().await.unwrap());
    assert!(page.contains(&sentence), "{page}");
}

#[tokio::test]
async fn the_etag_follows_the_sequence_number_and_a_match_is_304() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let png = encode(&rgb8(16, 16, 0), ImageFormat::Png);
    assert_eq!(a.upload(png, "one.png", "image/png").await.status(), 201);

    let first = b.get("/image.png").await;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag");
    let (incarnation, seq) = etag.trim_matches('"').split_once('-').unwrap();
    assert_eq!(seq, "1");
    assert!(u64::from_str_radix(incarnation, 16).is_ok(), "{etag}");
    assert_eq!(header(&first, "cache-control"), "no-cache");
    assert_eq!(header(&first, "x-content-type-options"), "nosniff");

    let again = b
        .client
        .get(b.url("/image.png"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let png = encode(&rgb8(16, 16, 7), ImageFormat::Png);
    assert_eq!(a.upload(png, "two.png", "image/png").await.status(), 201);
    let changed = b
        .client
        .get(b.url("/image.png"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(header(&changed, "etag"), format!("\"{incarnation}-2\""));
}

#[tokio::test]
async fn concurrent_first_requests_all_get_the_image() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let png = encode(&rgb8(300, 200, 3), ImageFormat::Png);
    assert_eq!(a.upload(png, "one.png", "image/png").await.status(), 201);

    let requests = (0..8).map(|_| {
        let client = b.client.clone();
        let url = b.url("/image.png");
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        })
    });
    let mut bodies = Vec::new();
    for request in requests {
        bodies.push(request.await.unwrap());
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
}

#[tokio::test]
async fn an_etag_from_an_earlier_segment_of_the_same_name_does_not_match() {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);
    let png = encode(&rgb8(16, 16, 1), ImageFormat::Png);
    assert_eq!(a.upload(png, "one.png", "image/png").await.status(), 201);
    let old_etag = header(&a.get("/image.png").await, "etag");
    assert!(a.stop().success());

    // The segment was removed with its last server; a new one starts again at image 1.
    let b = spawn_server(&segment);
    let png = encode(&rgb8(16, 16, 2), ImageFormat::Png);
    assert_eq!(b.upload(png, "two.png", "image/png").await.status(), 201);
    let response = b
        .client
        .get(b.url("/image.png"))
        .header("If-None-Match", &old_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the old image's ETag must not match the new image"
    );
    assert_ne!(header(&response, "etag"), old_etag);
}
