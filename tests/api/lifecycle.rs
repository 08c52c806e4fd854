//! Starting, stopping and the segment's lifetime: the last server to stop removes it.

use crate::helpers::{
    assert_same_pixels, encode, fresh_segment, rgb8, shm_files, spawn_command, spawn_server,
    spawn_server_with,
};
use image::ImageFormat;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_server_announces_its_address_and_segment_on_one_line() {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);

    let port: u16 = a
        .addr
        .strip_prefix("127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a loopback address and port: {}", a.addr));
    assert_ne!(port, 0);
    assert_eq!(
        a.startup_line,
        format!("listening on http://127.0.0.1:{port} (segment \"{segment}\")")
    );

    // A signal right after the announcement still finds the handlers in place.
    let status = a.stop();
    assert!(status.success(), "{status}");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}

#[tokio::test]
async fn settings_can_come_from_the_environment() {
    let segment = fresh_segment();
    let a = spawn_command(
        &[],
        &[
            ("SHMIMAGE_PORT", "0"),
            ("SHMIMAGE_SEGMENT", &segment),
            ("SHMIMAGE_MAX_PIXELS", "100"),
        ],
    );
    assert!(
        a.startup_line
            .ends_with(&format!("(segment \"{segment}\")")),
        "{}",
        a.startup_line
    );

    let png = encode(&rgb8(20, 20, 0), ImageFormat::Png);
    assert_eq!(a.upload(png, "x.png", "image/png").await.status(), 413);
}

#[tokio::test]
async fn listening_beyond_loopback_logs_a_warning() {
    let a = spawn_server_with(&fresh_segment(), &["--bind", "0.0.0.0"]);

    assert!(
        a.startup_line.starts_with("listening on http://0.0.0.0:"),
        "{}",
        a.startup_line
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log().contains("not a loopback address") {
        assert!(Instant::now() < deadline, "no warning in:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_bad_segment_name_stops_the_server_with_a_clear_message() {
    for (name, reason) in [
        ("bad/name", "use only letters, digits"),
        ("much-too-long-for-a-segment", "at most 12"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_shmimage"))
            .args(["--port", "0", "--segment", name])
            .output()
            .expect("run shmimage");

        assert!(!output.status.success(), "{name:?} was accepted");
        assert!(output.stdout.is_empty(), "no startup line for {name:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--segment"), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
    }
}

#[tokio::test]
async fn the_image_outlives_a_stopped_server_and_the_last_one_removes_the_segment() {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);
    let mut b = spawn_server(&segment);
    let picture = rgb8(50, 40, 2);
    let response = a
        .upload(encode(&picture, ImageFormat::Png), "kept.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    assert!(
        !shm_files(&segment).is_empty(),
        "the segment is in /dev/shm"
    );

    let status = a.stop();
    assert!(status.success(), "A stops cleanly on SIGTERM: {status}");

    assert_same_pixels(&b.shared_image().await, &picture);
    assert_eq!(
        b.segment_state().await["attached"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let status = b.stop_with(libc::SIGINT);
    assert!(status.success(), "B stops cleanly on SIGINT: {status}");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}

#[tokio::test]
async fn a_server_stopped_right_after_a_large_upload_detaches_at_once() {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);
    // Large enough that its end plans the server's rest, half a second later.
    let picture = rgb8(2000, 1500, 4);
    let response = a
        .upload(encode(&picture, ImageFormat::Png), "large.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let status = a.stop();
    assert!(status.success(), "stops cleanly on SIGTERM: {status}");
    let log = a.log();
    assert!(
        log.contains("this was the last server, so the segment is gone"),
        "{log}"
    );
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}
