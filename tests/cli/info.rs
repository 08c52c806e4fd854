//! `shmimage info`: what `GET /api/segment` answers, as JSON, read straight from the segment.

use crate::command::run;
use crate::helpers::{encode, fresh_segment, rgb8, spawn_server};
use image::ImageFormat;

/// `shmimage info --segment SEGMENT`, parsed.
fn info(segment: &str) -> serde_json::Value {
    let info = run(&["info", "--segment", segment], None);
    info.assert_success();
    serde_json::from_slice(&info.stdout)
        .unwrap_or_else(|e| panic!("info prints JSON ({e}): {}", info.stdout_text()))
}

#[tokio::test]
async fn info_says_what_the_api_says() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let response = server
        .upload(
            encode(&rgb8(30, 20, 4), ImageFormat::Png),
            "a.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);
    let api = server.segment_state().await;

    let info = info(&segment);

    for field in [
        "name",
        "os_name",
        "slot_capacity",
        "seq",
        "image",
        "lock_recoveries",
    ] {
        assert_eq!(
            info[field], api[field],
            "{field}: info {info} and the API {api}"
        );
    }
    assert_eq!(info["image"]["width"], 30);
    assert_eq!(info["image"]["color"], "RGB 8-bit");
    let attached = info["attached"]
        .as_array()
        .expect("a list of attached processes");
    assert_eq!(attached.len(), 2, "the server and info itself: {info}");
    let server_entry = attached
        .iter()
        .find(|entry| entry["pid"] == server.pid())
        .expect("the server is listed");
    assert_eq!(server_entry["label"], server.addr.as_str());
    assert_eq!(server_entry["is_self"], false);
    let own = attached
        .iter()
        .find(|entry| entry["is_self"] == true)
        .expect("info lists itself");
    assert_eq!(own["label"], "shmimage info");
}

#[tokio::test]
async fn info_on_a_segment_without_an_image_says_null() {
    let segment = fresh_segment();
    let _server = spawn_server(&segment);

    let info = info(&segment);

    assert_eq!(info["name"], segment.as_str());
    assert_eq!(info["os_name"], format!("/shmimage.{segment}"));
    assert_eq!(info["seq"], 0);
    assert!(info["image"].is_null(), "{info}");
}
