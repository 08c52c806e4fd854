//! What a server holds on to between requests: after large uploads, the writer gives the
//! memory of its requests back to the system, and keeps none of the segment's pages mapped.

use crate::helpers::{TestServer, encode, fresh_segment, rgb8, spawn_server};
use image::ImageFormat;
use std::time::{Duration, Instant};

/// How long a server may take to give back what a finished request freed.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// A field of the server's `/proc/PID/status`, in bytes.
fn status_bytes(server: &TestServer, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap_or_else(|error| panic!("read the server's /proc status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {field} in the server's /proc status"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Waits (at most [`SETTLE_DEADLINE`]) until `field` of the server's status is at most
/// `allowed` bytes; the last value if it never was.
async fn settles_at_most(server: &TestServer, field: &str, allowed: u64) -> Result<(), u64> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let bytes = status_bytes(server, field);
        if bytes <= allowed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(bytes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn after_three_4k_uploads_the_writer_at_rest_holds_little_more_than_its_png() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = status_bytes(&a, "VmRSS");

    let image = rgb8(3840, 2160, 11);
    let decoded = image.as_bytes().len() as u64;
    let jpeg = encode(&image, ImageFormat::Jpeg);
    let png = encode(&image, ImageFormat::Png);
    drop(image);
    for (bytes, mime) in [
        (jpeg.clone(), "image/jpeg"),
        (png, "image/png"),
        (jpeg, "image/jpeg"),
    ] {
        let response = a.upload(bytes, "photo", mime).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let response = b.client.get(b.url("/image.png")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }

    // At rest the writer keeps its PNG of the last image (at most about one decoded image),
    // not the freed bodies and decode buffers, nor the segment's pages, which it drops.
    if let Err(rss) = settles_at_most(&a, "VmRSS", idle + 3 * decoded / 2).await {
        panic!(
            "the writer holds {:.1} MB ({:.1} MB anonymous, {:.1} MB shared), more than idle \
             ({:.1} MB) plus one and a half decoded images ({:.1} MB each), {} s after its last \
             upload",
            mb(rss),
            mb(status_bytes(&a, "RssAnon")),
            mb(status_bytes(&a, "RssShmem")),
            mb(idle),
            mb(decoded),
            SETTLE_DEADLINE.as_secs()
        );
    }
}

#[tokio::test]
async fn a_writer_at_rest_keeps_none_of_the_segments_pages_mapped() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(2400, 1600, 5);
    let decoded = image.as_bytes().len() as u64;
    // A JPEG (which the writer encodes as PNG after storing it) and a PNG (whose own image
    // data is shared as it is): both slots and the PNG area are written.
    for (bytes, mime) in [
        (encode(&image, ImageFormat::Jpeg), "image/jpeg"),
        (encode(&image, ImageFormat::Png), "image/png"),
    ] {
        let response = a.upload(bytes, "photo", mime).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let response = b.client.get(b.url("/image.png")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    // The pages stay in the segment for every server; the writer, at rest, no longer counts
    // them as its own.
    if let Err(shared) = settles_at_most(&a, "RssShmem", decoded / 8).await {
        panic!(
            "the writer still maps {:.1} MB of shared memory ({:.1} MB per image) {} s after \
             its last upload",
            mb(shared),
            mb(decoded),
            SETTLE_DEADLINE.as_secs()
        );
    }
    // B, and A itself, still serve the image whole.
    for server in [&b, &a] {
        let response = server.get("/image.png").await;
        assert_eq!(response.status(), 200);
        let png = response.bytes().await.unwrap();
        let served = image::load_from_memory_with_format(&png, ImageFormat::Png).unwrap();
        assert!(served.to_rgb8().as_raw() == image.to_rgb8().as_raw());
    }
}
