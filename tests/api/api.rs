//! `GET /api/segment` and `GET /healthz`.

use crate::helpers::{encode, fresh_segment, rgb8, spawn_server};
use image::ImageFormat;

#[tokio::test]
async fn the_segment_api_lists_both_servers_and_then_the_image() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);

    let state = a.segment_state().await;
    assert_eq!(state["name"], segment.as_str());
    assert_eq!(state["os_name"], format!("/shmimage.{segment}"));
    assert_eq!(state["seq"], 0);
    assert!(state["image"].is_null());
    let attached = state["attached"].as_array().expect("a list of servers");
    assert_eq!(attached.len(), 2, "{state}");
    let labels: Vec<&str> = attached
        .iter()
        .map(|server| server["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&a.addr.as_str()), "{labels:?}");
    assert!(labels.contains(&b.addr.as_str()), "{labels:?}");
    let own: Vec<_> = attached.iter().filter(|s| s["is_self"] == true).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["label"], a.addr.as_str());

    let png = encode(&rgb8(30, 20, 0), ImageFormat::Png);
    assert_eq!(a.upload(png, "x.png", "image/png").await.status(), 201);

    let state = b.segment_state().await;
    assert_eq!(state["seq"], 1);
    let image = &state["image"];
    assert_eq!(image["width"], 30);
    assert_eq!(image["height"], 20);
    assert_eq!(image["color"], "RGB 8-bit");
    assert_eq!(image["bytes"], 30 * 20 * 3);
    assert_eq!(image["seq"], 1);
    assert_eq!(image["writer_label"], a.addr.as_str());
    assert!(image["writer_pid"].as_u64().unwrap() > 0);
    let written_at = image["written_at"].as_str().unwrap();
    assert!(
        written_at.ends_with('Z') && written_at.len() == 24,
        "{written_at}"
    );
    assert!(state["slot_capacity"].as_u64().unwrap() >= 30 * 20 * 3);
}

#[tokio::test]
async fn healthz_says_ok() {
    let a = spawn_server(&fresh_segment());

    let response = a.get("/healthz").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}
