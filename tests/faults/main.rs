//! Faults a user must never notice, injected into real servers: writers killed mid-upload,
//! every server killed, a segment overwritten or truncated by another process, a full
//! /dev/shm. Each test talks HTTP to real `shmimage` processes, as a user would.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../segment/images.rs"]
#[allow(dead_code)]
mod images;
mod segment;

use helpers::{TestServer, fresh_segment, json_error, shm_files, spawn_program, spawn_server};
use image::{DynamicImage, ImageFormat, RgbImage};
use images::{ImageId, SplitMix, tagged_raster, verify_tagged};
use shmimage::raster::{PixelFormat, Raster};
use std::time::{Duration, Instant};

/// A tagged image (id and checksum in its pixels) as a BMP file, which decodes fast.
fn tagged_bmp(id: u64) -> (Raster, Vec<u8>) {
    let raster = tagged_raster(ImageId(id));
    assert_eq!(raster.format(), PixelFormat::Rgb8);
    let image = RgbImage::from_raw(raster.width(), raster.height(), raster.pixels().to_vec())
        .expect("an RGB raster");
    let bmp = helpers::encode(&DynamicImage::ImageRgb8(image), ImageFormat::Bmp);
    (raster, bmp)
}

/// The image a server shares, as a raster, checked whole by its checksum.
async fn shared_tagged(server: &TestServer) -> ImageId {
    let image = server.shared_image().await.into_rgb8();
    let (width, height) = image.dimensions();
    let raster = Raster::new(width, height, PixelFormat::Rgb8, image.into_raw()).unwrap();
    verify_tagged(&raster).unwrap_or_else(|torn| panic!("{} served {torn}", server.addr))
}

async fn upload_bmp(server: &TestServer, bmp: Vec<u8>) -> reqwest::StatusCode {
    server
        .client
        .post(server.url("/image"))
        .header("Content-Type", "image/bmp")
        .body(bmp)
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
}

#[tokio::test]
async fn writers_killed_mid_upload_never_leave_a_torn_image() {
    const KILLS: u64 = 50;
    const SEED: u64 = 0x5117_2026;
    let segment = fresh_segment();
    let survivor = spawn_server(&segment);
    // Three 1500x1200 images, taken in turn; ids 1 000 000 and up (see images.rs).
    let images: Vec<_> = (0..3).map(|k| tagged_bmp(1_000_000 + k)).collect();
    assert_eq!(upload_bmp(&survivor, images[0].1.clone()).await, 201);
    let mut rng = SplitMix(SEED);
    println!("seed {SEED:#x}");
    // How long an upload takes here; kills land in its second half, where the server decodes
    // and copies into the segment.
    let started = Instant::now();
    for (_, bmp) in &images {
        assert_eq!(upload_bmp(&survivor, bmp.clone()).await, 201);
    }
    let upload_ms = (started.elapsed().as_millis() as u64 / 3).max(2);
    println!("an upload takes about {upload_ms} ms");

    for round in 0..KILLS {
        let mut writer = spawn_server(&segment);
        let (_, bmp) = &images[(round % 3) as usize];
        let upload = {
            let client = writer.client.clone();
            let url = writer.url("/image");
            let bmp = bmp.clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Content-Type", "image/bmp")
                    .body(bmp)
                    .send()
                    .await
            })
        };
        let delay = upload_ms / 2 + rng.below(upload_ms / 2 + 1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        writer.stop_with(libc::SIGKILL);
        let _ = upload.await;

        // The other server answers at once and serves a whole image.
        let asked = Instant::now();
        let state = survivor.segment_state().await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "round {round}: {:?}",
            asked.elapsed()
        );
        assert_eq!(
            state["attached"].as_array().unwrap().len(),
            1,
            "round {round}"
        );
        shared_tagged(&survivor).await;
        // And the next upload succeeds.
        let (next, bmp) = &images[((round + 1) % 3) as usize];
        assert_eq!(
            upload_bmp(&survivor, bmp.clone()).await,
            201,
            "round {round}"
        );
        assert_eq!(shared_tagged(&survivor).await, verify_tagged(next).unwrap());
    }
    let recoveries = survivor.segment_state().await["lock_recoveries"]
        .as_u64()
        .unwrap();
    println!("{KILLS} writers killed at random moments; {recoveries} of them held the lock");
    let mut survivor = survivor;
    assert!(survivor.stop().success());
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "the last server removed it"
    );
}

#[tokio::test]
async fn after_every_server_is_killed_new_servers_serve_the_last_image() {
    let segment = fresh_segment();
    let mut last = None;
    for round in 0..5u64 {
        let mut a = spawn_server(&segment);
        let mut b = spawn_server(&segment);
        if let Some(id) = last {
            // The servers of this round started on what the killed ones left behind.
            assert_eq!(shared_tagged(&b).await, id, "round {round}");
        }
        let (raster, bmp) = tagged_bmp(1_000_000 + round);
        assert_eq!(upload_bmp(&a, bmp).await, 201);
        assert_eq!(shared_tagged(&b).await, verify_tagged(&raster).unwrap());
        last = Some(verify_tagged(&raster).unwrap());
        a.stop_with(libc::SIGKILL);
        b.stop_with(libc::SIGKILL);
        // The control object, one or two slots' pixels, and perhaps the PNG area's object.
        let left = shm_files(&segment);
        assert!((2..=4).contains(&left.len()), "round {round}: {left:?}");
    }
    let started = Instant::now();
    let mut c = spawn_server(&segment);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "started at once"
    );
    assert_eq!(Some(shared_tagged(&c).await), last);
    assert!(c.stop().success());
    assert_eq!(shm_files(&segment), Vec::<String>::new());
}

/// Writes `bytes` at `offset` of `/dev/shm/NAME`, as another process of the same user could.
fn scribble(object: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{object}"))
        .unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

#[tokio::test]
async fn a_segment_overwritten_or_truncated_by_another_process_gives_503_until_an_upload() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let (first, bmp) = tagged_bmp(1_000_001);
    assert_eq!(upload_bmp(&a, bmp).await, 201);
    assert_eq!(shared_tagged(&b).await, verify_tagged(&first).unwrap());
    let control = format!("shmimage.{segment}");

    // Garbage over the header, the slot records and the lock.
    let mut rng = SplitMix(7);
    let garbage: Vec<u8> = (0..6000).map(|_| rng.next() as u8).collect();
    scribble(&control, 0, &garbage);
    for path in ["/image.png", "/api/segment"] {
        let message = json_error(b.get(path).await, 503).await;
        assert!(message.contains("cannot use"), "{path}: {message}");
    }
    assert_eq!(b.get_page("/").await.status(), 503);
    // An upload repairs the segment, and both servers serve it.
    let (second, bmp) = tagged_bmp(1_000_002);
    assert_eq!(upload_bmp(&a, bmp).await, 201);
    assert_eq!(shared_tagged(&b).await, verify_tagged(&second).unwrap());
    assert_eq!(shared_tagged(&a).await, verify_tagged(&second).unwrap());

    // The published image's data object cut short: 503, and an upload recovers.
    let data = shm_files(&segment)
        .into_iter()
        .filter(|name| name != &control)
        .collect::<Vec<_>>();
    for object in &data {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{object}"))
            .unwrap()
            .set_len(4096)
            .unwrap();
    }
    // Each server either still serves the last good image (from its PNG cache) or says 503.
    for server in [&a, &b] {
        let status = server.get("/image.png").await.status();
        assert!(status == 200 || status == 503, "{}: {status}", server.addr);
    }
    let (third, bmp) = tagged_bmp(1_000_000);
    assert_eq!(upload_bmp(&b, bmp).await, 201);
    assert_eq!(shared_tagged(&a).await, verify_tagged(&third).unwrap());

    // Both servers are still up and answer.
    assert_eq!(a.get("/healthz").await.status(), 200);
    assert_eq!(b.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_full_dev_shm_answers_507_and_keeps_the_previous_image() {
    let segment = fresh_segment();
    let script = "mount -t tmpfs -o size=8m shmimage-test /dev/shm && exec \"$0\" \"$@\"";
    let probe = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m x /dev/shm",
        ])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            println!(
                "skipped: no private mount namespace with a small /dev/shm here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return;
        }
        Err(error) => {
            println!("skipped: cannot run unshare: {error}");
            return;
        }
    }
    let server = spawn_program(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            env!("CARGO_BIN_EXE_shmimage"),
            "--port",
            "0",
            "--segment",
            &segment,
        ],
        &[],
    );
    let small = helpers::encode(&helpers::rgb8(64, 64, 1), ImageFormat::Png);
    assert_eq!(
        server
            .upload(small, "small.png", "image/png")
            .await
            .status(),
        201
    );
    let before = server.shared_image().await;

    // 2000x2000 RGBA: 16 MB of pixels, twice what this /dev/shm holds.
    let large = helpers::encode(&helpers::noise_rgba8(2000, 2000), ImageFormat::Png);
    let message = json_error(server.upload(large, "large.png", "image/png").await, 507).await;
    assert!(message.contains("not enough shared memory"), "{message}");
    assert!(message.contains("/dev/shm"), "{message}");
    helpers::assert_same_pixels(&server.shared_image().await, &before);
    assert_eq!(server.get("/healthz").await.status(), 200);
}
