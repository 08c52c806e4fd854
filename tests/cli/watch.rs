//! `shmimage watch`: one JSON line per new image, written through any server or by `put`,
//! until interrupted; it detaches on SIGINT, SIGTERM and when its reader goes away.

use crate::command::{COMMAND_PATIENCE, Watcher, run, scratch_file};
use crate::helpers::{TestServer, encode, fresh_segment, rgb8, shm_files, spawn_server};
use image::ImageFormat;
use std::thread;
use std::time::{Duration, Instant};

/// Waits until `server` lists process `pid` as attached (or, with `attached` false, no longer
/// lists it); fails the test after [`COMMAND_PATIENCE`].
async fn wait_until_listed(server: &TestServer, pid: u32, attached: bool) {
    let deadline = Instant::now() + COMMAND_PATIENCE;
    loop {
        let state = server.segment_state().await;
        let listed = state["attached"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["pid"] == pid && entry["label"] == "shmimage watch");
        if listed == attached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is {} listed as attached: {state}",
            if attached { "not" } else { "still" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn upload(server: &TestServer, seed: u8) {
    let response = server
        .upload(
            encode(&rgb8(16, 12, seed), ImageFormat::Png),
            "f.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn watch_prints_a_line_for_each_upload_and_each_put() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let watcher = Watcher::spawn(&["--segment", &segment]);
    wait_until_listed(&server, watcher.pid(), true).await;

    upload(&server, 1).await;
    let first = watcher.next_json();
    let file = scratch_file("watch-put", "next.png");
    std::fs::write(&file, encode(&rgb8(7, 5, 2), ImageFormat::Png)).unwrap();
    run(
        &["put", file.to_str().unwrap(), "--segment", &segment],
        None,
    )
    .assert_success();
    let second = watcher.next_json();

    assert_eq!(first["name"], segment.as_str());
    assert_eq!(first["seq"], 1);
    assert_eq!(first["image"]["width"], 16);
    assert_eq!(first["image"]["writer_label"], server.addr.as_str());
    assert_eq!(second["seq"], 2);
    assert_eq!(second["image"]["width"], 7);
    assert_eq!(second["image"]["writer_label"], "shmimage put");
    assert_eq!(
        watcher.printed_within(Duration::from_millis(300)),
        None,
        "one line per image"
    );
}

#[tokio::test]
async fn watch_since_and_count_wait_for_the_next_image_without_a_race() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    upload(&server, 1).await;

    // The image is already there: --since 0 prints it at once, and --count 1 then exits.
    let done = run(
        &[
            "watch",
            "--segment",
            &segment,
            "--since",
            "0",
            "--count",
            "1",
        ],
        None,
    );
    done.assert_success();
    let line: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(line["seq"], 1);

    // --since 1 waits for the image after 1, even if it arrives before watch starts waiting.
    let watcher = Watcher::spawn(&["--segment", &segment, "--since", "1", "--count", "1"]);
    upload(&server, 2).await;
    assert_eq!(watcher.next_json()["seq"], 2);
    let (status, stderr) = watcher.finish();
    assert!(status.success(), "{status}: {stderr}");
    wait_until_listed_gone(&server).await;
}

async fn wait_until_listed_gone(server: &TestServer) {
    let deadline = Instant::now() + COMMAND_PATIENCE;
    while server.segment_state().await["attached"]
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "watch is still attached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watch_with_a_timeout_fails_when_no_image_comes() {
    let segment = fresh_segment();
    let _server = spawn_server(&segment);

    let watch = run(&["watch", "--segment", &segment, "--timeout", "1"], None);

    let stderr = watch.assert_failure();
    assert!(stderr.contains("no new image"), "{stderr}");
    assert!(stderr.contains("1 second"), "{stderr}");
}

#[tokio::test]
async fn sigint_and_sigterm_stop_watch_and_it_detaches() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let watcher = Watcher::spawn(&["--segment", &segment]);
        wait_until_listed(&server, watcher.pid(), true).await;
        let pid = watcher.pid();

        watcher.signal(signal);

        let (status, stderr) = watcher.finish();
        assert!(status.success(), "signal {signal}: {status}: {stderr}");
        wait_until_listed(&server, pid, false).await;
    }
}

#[test]
fn the_last_watch_to_stop_removes_the_segment() {
    let segment = fresh_segment();
    let watcher = Watcher::spawn(&["--segment", &segment]);
    let deadline = Instant::now() + COMMAND_PATIENCE;
    while shm_files(&segment).is_empty() {
        assert!(Instant::now() < deadline, "watch never created the segment");
        thread::sleep(Duration::from_millis(10));
    }

    watcher.signal(libc::SIGINT);

    let (status, stderr) = watcher.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(shm_files(&segment), Vec::<String>::new());
}

#[tokio::test]
async fn watch_stops_when_its_reader_goes_away() {
    let segment = fresh_segment();
    let server = spawn_server(&segment);
    let mut watcher = Watcher::spawn_unread(&["--segment", &segment]);
    wait_until_listed(&server, watcher.pid(), true).await;
    let pid = watcher.pid();

    watcher.close_stdout();
    upload(&server, 3).await;

    let (status, stderr) = watcher.finish();
    assert!(
        status.success(),
        "a closed pipe is a normal end: {status}: {stderr}"
    );
    assert_eq!(stderr, "", "no complaint about the closed pipe");
    wait_until_listed(&server, pid, false).await;
}
