//! `shmimage put FILE|-`: an image written straight into the segment is what every server
//! serves, at once; bad input is refused with the server's own message and changes nothing.

use crate::command::{run, scratch_file};
use crate::helpers::{
    TestServer, assert_same_pixels, encode, fresh_segment, gray_alpha8, json_error, noise_rgba8,
    rgb8, rgba16, shm_files, spawn_server, spawn_server_with,
};
use image::{DynamicImage, ImageFormat};
use std::time::{Duration, Instant};

#[tokio::test]
async fn put_a_file_and_every_server_serves_its_pixels() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let picture = rgb8(64, 48, 9);
    let file = scratch_file("put-file", "photo.png");
    std::fs::write(&file, encode(&picture, ImageFormat::Png)).unwrap();

    let put = run(
        &["put", file.to_str().unwrap(), "--segment", &segment],
        None,
    );

    put.assert_success();
    let line = put.stdout_text();
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    assert!(line.contains("64x48"), "{line}");
    assert!(line.contains("RGB 8-bit"), "{line}");
    assert!(line.contains("image 1"), "{line}");
    assert!(line.contains(&format!("\"{segment}\"")), "{line}");
    assert_same_pixels(&a.shared_image().await, &picture);
    assert_same_pixels(&b.shared_image().await, &picture);
    let state = a.segment_state().await;
    assert_eq!(state["seq"], 1);
    assert_eq!(state["image"]["writer_label"], "shmimage put");
    // put detached: only the two servers are attached now.
    assert_eq!(state["attached"].as_array().unwrap().len(), 2, "{state}");
}

#[tokio::test]
async fn put_reads_standard_input_and_keeps_the_pixel_format() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);

    for (seq, (picture, color)) in [
        (rgba16(40, 30), "RGBA 16-bit"),
        (gray_alpha8(25, 35), "Gray+Alpha 8-bit"),
    ]
    .into_iter()
    .enumerate()
    {
        let put = run(
            &["put", "-", "--segment", &segment],
            Some(encode(&picture, ImageFormat::Png)),
        );
        put.assert_success();
        let line = put.stdout_text();
        assert!(line.contains(color), "{line}");
        assert!(line.contains(&format!("image {}", seq + 1)), "{line}");
        assert_same_pixels(&server.shared_image().await, &picture);
    }
}

/// One SSE event's name from an open `/events` stream, skipping others, within 10 s.
async fn next_image_event(
    events: &mut reqwest::Response,
    buffer: &mut String,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|line| line == "event: image") {
                let data = block
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .expect("an event with data");
                return serde_json::from_str(data).expect("JSON event data");
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, events.chunk())
            .await
            .expect("an image event within 10 s")
            .expect("read the event stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_server_s_live_page_shows_an_image_put_into_the_segment() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let mut events = server
        .client
        .get(server.url("/events"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let file = scratch_file("put-live", "frame.bmp");
    std::fs::write(&file, encode(&rgb8(20, 10, 1), ImageFormat::Bmp)).unwrap();

    run(
        &["put", file.to_str().unwrap(), "--segment", &segment],
        None,
    )
    .assert_success();

    let event = next_image_event(&mut events, &mut String::new()).await;
    assert_eq!(event["seq"], 1);
    assert_eq!(event["image"]["width"], 20);
    assert_eq!(event["image"]["writer_label"], "shmimage put");
}

/// Servers A (with the limits in `limits`) and B on a fresh segment holding one image.
async fn loaded_pair(limits: &[&str]) -> (String, TestServer, TestServer, DynamicImage) {
    let segment = fresh_segment();
    let a = spawn_server_with(&segment, limits);
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
    (segment, a, b, picture)
}

#[tokio::test]
async fn bad_input_is_refused_with_the_server_s_message_and_the_segment_unchanged() {
    let limits = ["--max-pixels", "2000", "--max-upload-bytes", "30000"];
    let (segment, a, b, previous) = loaded_pair(&limits).await;
    let png = encode(&noise_rgba8(40, 40), ImageFormat::Png);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not an image", b"just some text".to_vec(), 415),
        ("a truncated PNG", png[..png.len() / 2].to_vec(), 422),
        ("an empty file", Vec::new(), 400),
        (
            "too many pixels",
            encode(&rgb8(50, 50, 0), ImageFormat::Png),
            413,
        ),
        (
            "too many bytes",
            encode(&noise_rgba8(100, 100), ImageFormat::Bmp),
            413,
        ),
    ];
    for (what, bytes, status) in cases {
        let server_says = json_error(a.upload_raw(bytes.clone(), "image/png").await, status).await;
        let file = scratch_file("put-bad", "upload.bin");
        std::fs::write(&file, &bytes).unwrap();

        let mut put_args = vec!["put", file.to_str().unwrap(), "--segment", &segment];
        put_args.extend_from_slice(&limits);
        let from_file = run(&put_args, None);
        let mut stdin_args = vec!["put", "-", "--segment", &segment];
        stdin_args.extend_from_slice(&limits);
        let from_stdin = run(&stdin_args, Some(bytes));

        for put in [from_file, from_stdin] {
            let stderr = put.assert_failure();
            assert!(
                stderr.contains(&server_says),
                "{what}: put should say what the server says ({server_says:?}), but said \
                 {stderr:?}"
            );
            assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr:?}");
            assert!(put.stdout.is_empty(), "{what}: nothing on stdout");
        }
        assert_same_pixels(&b.shared_image().await, &previous);
        assert_eq!(
            b.segment_state().await["seq"],
            1,
            "{what}: nothing was written"
        );
    }
}

#[tokio::test]
async fn a_missing_file_is_refused_with_its_name() {
    let (segment, _a, b, previous) = loaded_pair(&[]).await;
    let missing = scratch_file("put-missing", "nowhere.png");

    let put = run(
        &["put", missing.to_str().unwrap(), "--segment", &segment],
        None,
    );

    let stderr = put.assert_failure();
    assert!(stderr.contains("nowhere.png"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
    assert_same_pixels(&b.shared_image().await, &previous);
}

#[tokio::test]
async fn put_without_a_server_says_the_image_went_with_the_segment() {
    let segment = fresh_segment();
    let file = scratch_file("put-alone", "alone.png");
    std::fs::write(&file, encode(&rgb8(8, 8, 3), ImageFormat::Png)).unwrap();

    let put = run(
        &["put", file.to_str().unwrap(), "--segment", &segment],
        None,
    );

    put.assert_success();
    assert!(
        put.stdout_text().contains("image 1"),
        "{}",
        put.stdout_text()
    );
    assert!(
        put.stderr.contains("no other process is attached"),
        "put warns that nobody kept the image: {:?}",
        put.stderr
    );
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "nothing is left in /dev/shm"
    );
}
