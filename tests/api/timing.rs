//! `Server-Timing` on `POST /image` and `GET /image.png`: present, well-formed, and naming the
//! steps each request took.

use crate::helpers::{encode, fresh_segment, header, rgb8, spawn_server};
use image::ImageFormat;

/// The metrics of a `Server-Timing` value as `(name, duration in ms, description)`, failing the
/// test on anything that is not `name;dur=MS` or `name;desc=TEXT`.
fn metrics(value: &str) -> Vec<(String, Option<f64>, Option<String>)> {
    value
        .split(", ")
        .map(|metric| {
            let mut parts = metric.split(';');
            let name = parts.next().unwrap_or_default();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad metric name in {value:?}"
            );
            let (mut duration, mut description) = (None, None);
            for parameter in parts {
                match parameter.split_once('=') {
                    Some(("dur", ms)) => {
                        let ms: f64 = ms
                            .parse()
                            .unwrap_or_else(|_| panic!("bad duration in {value:?}"));
                        assert!(ms.is_finite() && ms >= 0.0, "bad duration in {value:?}");
                        duration = Some(ms);
                    }
                    Some(("desc", text)) => description = Some(text.to_owned()),
                    _ => panic!("bad parameter {parameter:?} in {value:?}"),
                }
            }
            (name.to_owned(), duration, description)
        })
        .collect()
}

/// The names of the metrics that carry a duration.
fn timed_steps(value: &str) -> Vec<String> {
    metrics(value)
        .into_iter()
        .filter(|(_, duration, _)| duration.is_some())
        .map(|(name, _, _)| name)
        .collect()
}

#[tokio::test]
async fn an_upload_reports_receive_decode_and_write() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(64, 48, 3);
    let jpeg = encode(&image, ImageFormat::Jpeg);

    let response = a.upload_raw(jpeg.clone(), "image/jpeg").await;
    assert_eq!(response.status(), 201);
    let value = header(&response, "server-timing");
    assert_eq!(
        timed_steps(&value),
        ["receive", "decode", "write"],
        "{value}"
    );

    // A form upload says the same.
    let response = a.upload(jpeg, "photo.jpg", "image/jpeg").await;
    assert_eq!(response.status(), 201);
    let value = header(&response, "server-timing");
    assert_eq!(
        timed_steps(&value),
        ["receive", "decode", "write"],
        "{value}"
    );

    // A plain PNG is decoded straight into the segment (the write is part of the decode), and
    // its own image data is shared as the image's PNG: that copy is timed too.
    let png = encode(&image, ImageFormat::Png);
    let response = a.upload(png, "photo.png", "image/png").await;
    assert_eq!(response.status(), 201);
    let value = header(&response, "server-timing");
    assert_eq!(
        timed_steps(&value),
        ["receive", "decode", "share"],
        "{value}"
    );
}

#[tokio::test]
async fn a_cold_read_reports_its_source_and_a_warm_one_a_cache_hit() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let png = encode(&rgb8(64, 48, 5), ImageFormat::Png);
    assert_eq!(a.upload_raw(png, "image/png").await.status(), 201);

    // A encodes it right after the upload and shares the PNG: B copies it, or waits for A's
    // encode and then copies it (see shared_png).
    let cold = b.get("/image.png").await;
    assert_eq!(cold.status(), 200);
    let value = header(&cold, "server-timing");
    let steps = timed_steps(&value);
    assert!(steps == ["read"] || steps == ["wait"], "{value}");
    assert!(
        metrics(&value).contains(&("png".to_owned(), None, Some("shared".to_owned()))),
        "{value}"
    );

    let warm = b.get("/image.png").await;
    assert_eq!(warm.status(), 200);
    let value = header(&warm, "server-timing");
    assert_eq!(
        metrics(&value),
        [("cache".to_owned(), None, Some("hit".to_owned()))],
        "{value}"
    );
}
