//! Segment faults seen from real servers: memory an idle server keeps mapped, data objects
//! truncated under them, a last server killed between its unlinks, a process that holds the
//! attach/detach gate.

use crate::helpers::{self, TestServer, fresh_segment, json_error, shm_files, spawn_server};
use image::ImageFormat;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An RGB image as a BMP file (fast to decode), `height` rows of 1024 pixels.
fn bmp(height: u32, seed: u8) -> Vec<u8> {
    helpers::encode(&helpers::rgb8(1024, height, seed), ImageFormat::Bmp)
}

async fn upload(server: &TestServer, bmp: Vec<u8>) -> u16 {
    server.upload_raw(bmp, "image/bmp").await.status().as_u16()
}

/// What process `pid` holds of segment `segment`'s data objects: mappings, mappings of objects
/// already removed from /dev/shm, and file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataObjectsHeld {
    mapped: usize,
    mapped_removed: usize,
    fds: usize,
}

fn data_objects_held(pid: u32, segment: &str) -> DataObjectsHeld {
    let prefix = format!("/dev/shm/shmimage.{segment}.");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let data_maps: Vec<&str> = maps.lines().filter(|l| l.contains(&prefix)).collect();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&prefix))
        .count();
    DataObjectsHeld {
        mapped: data_maps.len(),
        mapped_removed: data_maps
            .iter()
            .filter(|l| l.ends_with("(deleted)"))
            .count(),
        fds,
    }
}

#[tokio::test]
async fn an_idle_server_keeps_only_the_current_generations_mapped_across_growing_uploads() {
    const UPLOADS: u32 = 40;
    let segment = fresh_segment();
    let writer = spawn_server(&segment);
    let idle = spawn_server(&segment);
    // Each image is larger than the one two uploads before it, so every upload moves its
    // slot to a new data object (a new generation) and removes the old one.
    for k in 0..UPLOADS {
        assert_eq!(
            upload(&writer, bmp(24 * (k + 1), k as u8)).await,
            201,
            "upload {k}"
        );
    }
    assert_eq!(
        idle.segment_state().await["seq"],
        u64::from(UPLOADS),
        "the idle server saw every upload"
    );
    // Two slots and the PNG area (which the writer fills after each upload): at most three
    // generations mapped, each with its descriptors (ours and the mapping's), and none of the
    // removed ones.
    let deadline = Instant::now() + Duration::from_secs(15);
    for server in [&idle, &writer] {
        loop {
            let held = data_objects_held(server.pid(), &segment);
            if held.mapped <= 3 && held.mapped_removed == 0 && held.fds <= 6 {
                println!("{}: {held:?} after {UPLOADS} uploads", server.addr);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still holds {held:?} after {UPLOADS} uploads",
                server.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Cuts every data object of `segment` to 4096 bytes (its header only).
fn truncate_data_objects(segment: &str) {
    let control = format!("shmimage.{segment}");
    for object in shm_files(segment).into_iter().filter(|o| *o != control) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{object}"))
            .unwrap()
            .set_len(4096)
            .unwrap();
    }
}

#[tokio::test]
async fn after_both_data_objects_are_truncated_the_page_says_why_and_uploads_recover() {
    let segment = fresh_segment();
    let writer = spawn_server(&segment);
    let reader = spawn_server(&segment);
    // Two uploads of one size: both slots hold a data object, which the writer has mapped.
    assert_eq!(upload(&writer, bmp(300, 1)).await, 201);
    assert_eq!(upload(&writer, bmp(300, 2)).await, 201);
    // The reader has looked at the segment (and so mapped the image's data object).
    assert_eq!(reader.segment_state().await["seq"], 2);
    // The writer's PNG of image 2 is in the PNG area (a GET waits for the encode the upload
    // started), so it is cut short too.
    assert_eq!(writer.get("/image.png").await.status(), 200);
    truncate_data_objects(&segment);

    // "Display image from shared memory" answers like /image.png: 503 with the reason.
    let page = reader.get_page("/?show=1").await;
    assert_eq!(page.status(), 503);
    let page = page.text().await.unwrap();
    assert!(page.contains("too short"), "{page}");
    let message = json_error(reader.get("/image.png").await, 503).await;
    assert!(message.contains("too short"), "{message}");

    // Every upload from now on succeeds, and the other server serves it.
    for seed in 3..=5 {
        assert_eq!(upload(&writer, bmp(300, seed)).await, 201, "upload {seed}");
        helpers::assert_same_pixels(
            &reader.shared_image().await,
            &helpers::rgb8(1024, 300, seed),
        );
    }
    assert_eq!(reader.get_page("/?show=1").await.status(), 200);
}

/// Whether every thread of process `pid` is traced (by strace, once it has attached).
fn traced(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
    })
}

#[tokio::test]
async fn a_last_server_killed_at_any_of_its_unlinks_leaves_a_segment_the_next_one_can_use() {
    let strace_runs = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !strace_runs {
        assert!(
            std::env::var_os("SHMIMAGE_REQUIRE_STRACE").is_none(),
            "strace is required (SHMIMAGE_REQUIRE_STRACE is set) but cannot run"
        );
        println!("skipped: strace cannot run here (apt-get install strace)");
        return;
    }
    // The last server removes two data objects of pixels, the PNG area's and the control
    // object: kill it as it starts each of those unlinks.
    for unlink in 1..=4 {
        let segment = fresh_segment();
        let mut last = spawn_server(&segment);
        assert_eq!(upload(&last, bmp(100, 1)).await, 201);
        assert_eq!(upload(&last, bmp(100, 2)).await, 201);
        // Waits for the PNG the upload started encoding, and its object.
        assert_eq!(last.get("/image.png").await.status(), 200);
        assert_eq!(shm_files(&segment).len(), 4);
        let mut strace = Command::new("strace")
            .args(["-qq", "-f", "-o", "/dev/null", "-e", "trace=unlink", "-e"])
            .arg(format!("inject=unlink:signal=KILL:when={unlink}"))
            .arg("-p")
            .arg(last.pid().to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let attached = Instant::now() + Duration::from_secs(30);
        while !traced(last.pid()) {
            assert!(Instant::now() < attached, "strace did not attach");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = last.stop();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "killed at unlink {unlink}"
        );
        strace.wait().unwrap();
        let left = shm_files(&segment);
        println!("killed at unlink {unlink}: left {left:?}");

        let next = spawn_server(&segment);
        assert_eq!(next.get_page("/").await.status(), 200, "unlink {unlink}");
        let state = next.segment_state().await;
        let png = next.get("/image.png").await.status();
        match state["image"].is_null() {
            true => assert_eq!(png, 404, "unlink {unlink}: {state}"),
            false => assert_eq!(png, 200, "unlink {unlink}: {state}"),
        }
        assert_eq!(upload(&next, bmp(100, 3)).await, 201, "unlink {unlink}");
        let mut next = next;
        assert!(next.stop().success());
        assert_eq!(shm_files(&segment), Vec::<String>::new(), "unlink {unlink}");
    }
}

/// Takes the gate of `segment` (byte 0 of its control object, exclusively), as a process
/// stopped inside attach or detach holds it, until the file is dropped.
fn hold_gate(segment: &str) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmimage.{segment}"))
        .unwrap();
    // SAFETY: `struct flock` is plain data; all-zero is valid (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_len = 1;
    // SAFETY: `lock` is a valid `struct flock` for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    assert_eq!(rc, 0, "lock the gate: {}", std::io::Error::last_os_error());
    file
}

#[tokio::test]
async fn a_process_holding_the_gate_makes_starts_fail_clearly_and_lets_servers_stop() {
    let segment = fresh_segment();
    let mut running = spawn_server(&segment);
    assert_eq!(upload(&running, bmp(50, 1)).await, 201);
    let gate = hold_gate(&segment);

    let started = Instant::now();
    let mut starting = Command::new(env!("CARGO_BIN_EXE_shmimage"))
        .args(["--port", "0", "--segment", &segment])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SIGTERM completes: the server gives up on the gate and leaves the clean-up.
    assert!(running.stop().success(), "{}", running.log());
    let status = loop {
        if let Some(status) = starting.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "a start still blocked after 45 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    starting
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    println!("start and stop gave up after {:?}", started.elapsed());
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("\"{segment}\"")), "{stderr}");
    assert!(stderr.contains("another process"), "{stderr}");

    // With the gate free again, a new server starts on the segment and serves its image.
    drop(gate);
    let mut next = spawn_server(&segment);
    assert_eq!(next.get("/image.png").await.status(), 200);
    assert!(next.stop().success());
    assert_eq!(shm_files(&segment), Vec::<String>::new());
}
