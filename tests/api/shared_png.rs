//! The PNG encoded once for every server: the segment's PNG area, across real processes.
//!
//! The server that stores an upload encodes it in the background and publishes the PNG next
//! to the pixels; another server's first `GET /image.png` serves those bytes
//! (`Server-Timing: png;desc=shared`). Whatever another process leaves in the area (a wrong
//! length, another image's number, a truncated object, a claim by a process that is gone or
//! stuck) gives a fresh, correct encode (`png;desc=local`), never wrong bytes.
//!
//! The tests change the area's bytes in /dev/shm directly, at the offsets docs/PROTOCOL.md
//! gives (x86-64: the record at byte 4368 of the control object).

use crate::helpers::{
    TestServer, assert_same_pixels, encode, fresh_segment, header, noise_rgba8, rgb8, shm_files,
    spawn_server,
};
use image::{DynamicImage, GenericImageView, ImageFormat};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the PNG record lies in the control object, and its fields' offsets in it.
const PNG_RECORD: u64 = 4368;
const SEQ: u64 = 8;
const WRITTEN_AT: u64 = 16;
const GENERATION: u64 = 32;
const CAPACITY: u64 = 40;
const BYTE_LEN: u64 = 48;
const CLAIM: u64 = 56;
/// Where the bytes start in a data object.
const DATA_OFFSET: u64 = 4096;

fn control(segment: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmimage.{segment}"))
        .expect("open the control object")
}

fn read_u64(segment: &str, field: u64) -> u64 {
    let mut bytes = [0u8; 8];
    control(segment)
        .read_exact_at(&mut bytes, PNG_RECORD + field)
        .unwrap();
    u64::from_ne_bytes(bytes)
}

fn write_u64(segment: &str, field: u64, value: u64) {
    control(segment)
        .write_all_at(&value.to_ne_bytes(), PNG_RECORD + field)
        .unwrap();
}

/// The generation of the area's data object (the low half of the word at 32).
fn png_generation(segment: &str) -> u32 {
    read_u64(segment, GENERATION) as u32
}

fn png_object(segment: &str) -> String {
    format!(
        "/dev/shm/shmimage.{segment}.{:08x}",
        png_generation(segment)
    )
}

/// How `response` says its PNG was made: `shared` or `local` (`png;desc=...`), or `other`.
fn origin(response: &reqwest::Response) -> &'static str {
    let timing = header(response, "server-timing");
    if timing.contains("png;desc=shared") {
        "shared"
    } else if timing.contains("png;desc=local") {
        "local"
    } else {
        "other"
    }
}

/// `GET /image.png`: (how it was made, Server-Timing, the bytes). Fails unless it is a 200.
async fn get_png(server: &TestServer) -> (&'static str, String, Vec<u8>) {
    let response = server.get("/image.png").await;
    assert_eq!(response.status(), 200, "{}", server.log());
    let origin = origin(&response);
    let timing = header(&response, "server-timing");
    // Sent with its length, unless this server is encoding it and sends it as it is made.
    let length = header(&response, "content-length");
    let streamed = timing.contains("encode;desc=streamed");
    if streamed {
        assert_eq!(origin, "local", "{timing}");
        assert_eq!(
            header(&response, "transfer-encoding"),
            "chunked",
            "{timing}"
        );
    }
    let body = response.bytes().await.unwrap().to_vec();
    if !streamed {
        assert_eq!(length, body.len().to_string(), "{timing}");
    }
    (origin, timing, body)
}

fn decode(png: &[u8]) -> DynamicImage {
    image::load_from_memory_with_format(png, ImageFormat::Png).expect("a valid PNG")
}

/// Uploads `image` to `server` as PNG and waits until the PNG area holds its PNG (the upload
/// starts that encode in the background; a GET on the same server waits for it).
async fn upload_and_publish(server: &TestServer, image: &DynamicImage) -> u64 {
    let response = server
        .upload_raw(encode(image, ImageFormat::Png), "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let seq = response.json::<serde_json::Value>().await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    let (_, _, png) = get_png(server).await;
    assert_same_pixels(&decode(&png), image);
    seq
}

/// `shmimage put FILE` into `segment`, as a program without a server would write it: nobody
/// encodes it until a request asks.
fn put(segment: &str, image: &DynamicImage) {
    let dir = tempdir();
    let file = format!("{dir}/put.png");
    std::fs::write(&file, encode(image, ImageFormat::Png)).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_shmimage"))
        .args(["put", &file, "--segment", segment])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!(
        "shmimage-shared-png-{}-{}",
        std::process::id(),
        fresh_segment()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_second_server_serves_the_png_the_uploading_server_published() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(640, 480, 21);
    upload_and_publish(&a, &image).await;

    let (origin, timing, png) = get_png(&b).await;
    assert_eq!(origin, "shared", "B's cold GET: {timing}");
    assert!(timing.contains("read;dur="), "{timing}");
    assert!(!timing.contains("encode"), "{timing}");
    assert_same_pixels(&decode(&png), &image);
    // Byte for byte what A serves.
    let (_, _, from_a) = get_png(&a).await;
    assert_eq!(png, from_a);
    // The area's object is there, beside the control object and the slot's.
    assert!(std::path::Path::new(&png_object(&segment)).exists());
}

#[tokio::test]
async fn concurrent_first_requests_on_two_servers_share_one_encode() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(1280, 720, 3);
    put(&segment, &image);

    let ((from_a, timing_a, png_a), (from_b, timing_b, png_b)) =
        tokio::join!(get_png(&a), get_png(&b));
    let mut origins = [from_a, from_b];
    origins.sort();
    assert_eq!(
        origins,
        ["local", "shared"],
        "one encodes, the other serves its PNG: A {timing_a} / B {timing_b}"
    );
    assert_eq!(png_a, png_b);
    assert_same_pixels(&decode(&png_a), &image);
}

/// A's background encode of a large upload takes long enough for B to ask while it runs: B
/// waits for it and serves A's PNG (A gives its claim up only once the PNG is in the area).
#[tokio::test]
async fn a_second_server_asking_during_the_uploads_encode_serves_that_encode() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    // Large enough that the encode takes a while, small enough that it stays well within the
    // bound B waits for it (SHARED_ENCODE_WAIT, 3 s) in an unoptimised build on a busy machine.
    let image = rgb8(1600, 1000, 8);
    let jpeg = encode(&image, ImageFormat::Jpeg);
    for round in 0..3 {
        let response = a.upload_raw(jpeg.clone(), "image/jpeg").await;
        assert_eq!(response.status(), 201);
        let (origin, timing, png) = get_png(&b).await;
        assert_eq!(origin, "shared", "round {round}: {timing}");
        assert_eq!(decode(&png).dimensions(), (1600, 1000));
    }
}

/// A server that encodes the image for a request shares its PNG after the reply: the other
/// server, asking right after that reply, serves the same PNG; it does not encode again.
#[tokio::test]
async fn a_server_that_encoded_for_a_request_shares_its_png_with_the_next_server() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(2400, 1600, 9);
    for round in 0..3 {
        put(&segment, &image);
        let (origin_a, timing_a, png_a) = get_png(&a).await;
        assert_eq!(
            origin_a, "local",
            "round {round}: nobody else encoded it: {timing_a}"
        );
        let (origin_b, timing_b, png_b) = get_png(&b).await;
        assert_eq!(origin_b, "shared", "round {round}: {timing_b}");
        assert!(png_a == png_b, "round {round}: the same bytes");
    }
    assert_same_pixels(&decode(&get_png(&b).await.2), &image);
}

#[tokio::test]
async fn a_hostile_or_broken_png_area_gives_a_fresh_correct_encode() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(400, 300, 9);
    let seq = upload_and_publish(&a, &image).await;
    let len = read_u64(&segment, BYTE_LEN);
    let capacity = read_u64(&segment, CAPACITY);
    let written_at = read_u64(&segment, WRITTEN_AT);

    type Damage = Box<dyn Fn(&str)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "a length past the object",
            Box::new(|s: &str| write_u64(s, BYTE_LEN, 1 << 40)),
        ),
        (
            "a length up to the end of the object",
            Box::new(move |s: &str| write_u64(s, BYTE_LEN, capacity - 3)),
        ),
        (
            "a PNG cut short",
            Box::new(move |s: &str| write_u64(s, BYTE_LEN, len - 1)),
        ),
        (
            "garbage after the PNG",
            Box::new(move |s: &str| write_u64(s, BYTE_LEN, len + 5)),
        ),
        (
            "the next image's number",
            Box::new(move |s: &str| write_u64(s, SEQ, seq + 1)),
        ),
        (
            "another write's time",
            Box::new(move |s: &str| write_u64(s, WRITTEN_AT, written_at ^ 1)),
        ),
        (
            "a capacity the object does not have",
            Box::new(|s: &str| write_u64(s, CAPACITY, 1 << 30)),
        ),
        (
            "a missing object",
            Box::new(|s: &str| {
                let word = read_u64(s, GENERATION);
                write_u64(s, GENERATION, (word & !0xffff_ffff) | 0x00ff_fff0);
            }),
        ),
        (
            "a truncated object",
            Box::new(|s: &str| {
                let object = OpenOptions::new().write(true).open(png_object(s)).unwrap();
                object.set_len(DATA_OFFSET + 100).unwrap();
            }),
        ),
        (
            "overwritten bytes",
            Box::new(|s: &str| {
                let object = OpenOptions::new().write(true).open(png_object(s)).unwrap();
                object.write_all_at(&[0u8; 64], DATA_OFFSET).unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage(&segment);
        // A server with nothing cached: it must look at the area.
        let cold = spawn_server(&segment);
        let (origin, timing, png) = get_png(&cold).await;
        assert_eq!(origin, "local", "{what}: {timing}");
        assert_same_pixels(&decode(&png), &image);
        assert!(
            cold.log().contains("ignoring the shared PNG")
                || what.contains("number")
                || what.contains("time"),
            "{what}: the server says why it encoded: {}",
            cold.log()
        );
        // Its encode repaired the area: the next server serves it again.
        let next = spawn_server(&segment);
        let (origin, timing, png) = get_png(&next).await;
        assert_eq!(origin, "shared", "after {what}: {timing}");
        assert_same_pixels(&decode(&png), &image);
    }
    let mut a = a;
    assert!(a.try_wait().is_none(), "A is still running");
}

#[tokio::test]
async fn the_png_area_grows_and_shrinks_without_leaking_objects_or_mappings() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    // Noise for 4K, so that its PNG is about as large as its pixels (33 MB).
    let sizes = [(64, 48), (3840, 2160), (64, 48), (1920, 1080)];
    let mut generations = Vec::new();
    for (i, (width, height)) in sizes.into_iter().enumerate() {
        let image = match width {
            3840 => noise_rgba8(width, height),
            _ => rgb8(width, height, i as u8),
        };
        upload_and_publish(&a, &image).await;
        let (origin, timing, png) = get_png(&b).await;
        assert_eq!(origin, "shared", "{width}x{height}: {timing}");
        assert_same_pixels(&decode(&png), &image);
        generations.push(png_generation(&segment));
        // The control object, two slots' objects and the area's: nothing else stays.
        let files = shm_files(&segment);
        assert!(files.len() <= 4, "after {width}x{height}: {files:?}");
        for pid in [a.pid(), b.pid()] {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            let mapped: std::collections::BTreeSet<&str> = maps
                .lines()
                .filter_map(|line| line.split_once("/dev/shm/"))
                .map(|(_, name)| name)
                .filter(|name| name.starts_with(&format!("shmimage.{segment}")))
                .collect();
            assert!(
                mapped.len() <= 4 && !mapped.iter().any(|name| name.contains("(deleted)")),
                "process {pid} after {width}x{height} maps {mapped:?}"
            );
        }
    }
    // 64x48 to 4K needs a larger object; 4K down to 64x48 gives the memory back.
    assert_ne!(generations[0], generations[1], "{generations:?}");
    assert_ne!(generations[1], generations[2], "{generations:?}");
}

/// A process that exists until killed: a claimant that is stuck.
fn stuck_process() -> std::process::Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

#[tokio::test]
async fn a_claim_by_a_process_that_is_gone_is_taken_over_at_once() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(300, 200, 1);
    put(&segment, &image);
    let seq = a.segment_state().await["seq"].as_u64().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    write_u64(&segment, CLAIM, (seq << 32) | u64::from(pid));

    let (origin, timing, png) = get_png(&a).await;
    assert_eq!(origin, "local", "{timing}");
    assert!(!timing.contains("wait"), "nobody to wait for: {timing}");
    // The pixels read band by band from the slot by the encoder, timed with the encode.
    assert!(
        timing.contains("read;desc=slot") && timing.contains("encode;dur="),
        "{timing}"
    );
    assert_same_pixels(&decode(&png), &image);
}

#[tokio::test]
async fn a_stuck_claimant_is_waited_for_within_a_bound_then_the_server_encodes() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(300, 200, 2);
    put(&segment, &image);
    let seq = a.segment_state().await["seq"].as_u64().unwrap();
    let mut stuck = stuck_process();
    write_u64(&segment, CLAIM, (seq << 32) | u64::from(stuck.id()));

    let started = Instant::now();
    let (origin, timing, png) = get_png(&a).await;
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "closed within 45 s"
    );
    assert_eq!(origin, "local", "{timing}");
    assert!(timing.contains("wait;dur="), "it waited first: {timing}");
    assert_same_pixels(&decode(&png), &image);
    stuck.kill().unwrap();
    stuck.wait().unwrap();
}

#[tokio::test]
async fn a_claimant_killed_while_others_wait_lets_them_encode() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(300, 200, 4);
    put(&segment, &image);
    let seq = a.segment_state().await["seq"].as_u64().unwrap();
    let mut claimant = stuck_process();
    write_u64(&segment, CLAIM, (seq << 32) | u64::from(claimant.id()));

    let request = get_png(&a);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        claimant.kill().unwrap();
        claimant.wait().unwrap();
    };
    let ((origin, timing, png), ()) = tokio::join!(request, kill);
    assert_eq!(origin, "local", "{timing}");
    assert!(timing.contains("wait;dur="), "{timing}");
    assert_same_pixels(&decode(&png), &image);
}

#[tokio::test]
async fn servers_and_get_serve_the_bytes_in_the_area() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let image = rgb8(500, 400, 77);
    upload_and_publish(&a, &image).await;
    // Another PNG of the same pixels, from another encoder: if it comes back, it came from the
    // area.
    let other = encode(&image, ImageFormat::Png);
    let capacity = read_u64(&segment, CAPACITY);
    assert!((other.len() as u64) < capacity, "it fits the area");
    let object = OpenOptions::new()
        .write(true)
        .open(png_object(&segment))
        .unwrap();
    object.write_all_at(&other, DATA_OFFSET).unwrap();
    write_u64(&segment, BYTE_LEN, other.len() as u64);

    let cold = spawn_server(&segment);
    let (origin, timing, png) = get_png(&cold).await;
    assert_eq!(origin, "shared", "{timing}");
    assert!(png == other, "the server serves the area's bytes");

    let dir = tempdir();
    let out = format!("{dir}/got.png");
    let got = Command::new(env!("CARGO_BIN_EXE_shmimage"))
        .args(["get", &out, "--segment", &segment])
        .output()
        .unwrap();
    assert!(got.status.success(), "{got:?}");
    assert!(
        std::fs::read(&out).unwrap() == other,
        "get saves the area's bytes"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The chunks of a PNG file: (type, the whole chunk's byte range).
fn chunks(png: &[u8]) -> Vec<([u8; 4], std::ops::Range<usize>)> {
    let mut found = Vec::new();
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into().unwrap();
        found.push((kind, at..at + 12 + len));
        at += 12 + len;
    }
    found
}

/// `png` with a chunk of `kind` and `data` right after its `IHDR`.
fn with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    let mut file = png[..33].to_vec();
    file.extend_from_slice(&chunk);
    file.extend_from_slice(&png[33..]);
    file
}

/// The signature, `IHDR`, `IDAT` chunks and `IEND` of `png`, and nothing else.
fn image_data_only(png: &[u8]) -> Vec<u8> {
    let mut file = png[..8].to_vec();
    for (kind, range) in chunks(png) {
        if [*b"IHDR", *b"IDAT", *b"IEND"].contains(&kind) {
            file.extend_from_slice(&png[range]);
        }
    }
    file
}

/// Uploads `file` to `server` as a raw body; returns the answer's `Server-Timing`.
async fn upload_file(server: &TestServer, file: Vec<u8>) -> String {
    let response = server.upload_raw(file, "image/png").await;
    assert_eq!(response.status(), 201, "{}", server.log());
    header(&response, "server-timing")
}

#[tokio::test]
async fn a_plain_png_upload_is_served_as_its_own_image_data_by_every_server() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(640, 480, 5);
    // A PNG as an editor saves it, with a comment that must not be handed on.
    let file = with_chunk(
        &encode(&image, ImageFormat::Png),
        b"tEXt",
        b"Comment\0made by hand",
    );
    let timing = upload_file(&a, file.clone()).await;
    assert!(timing.contains("share;dur="), "{timing}");

    let (origin, timing, png) = get_png(&b).await;
    assert_eq!(origin, "shared", "B's cold GET: {timing}");
    assert!(
        !timing.contains("wait"),
        "ready before the upload's answer: {timing}"
    );
    assert!(
        png == image_data_only(&file),
        "B serves the upload's own image data ({} bytes, the upload has {})",
        png.len(),
        file.len()
    );
    assert_same_pixels(&decode(&png), &image);
    let (_, _, from_a) = get_png(&a).await;
    assert!(from_a == png, "A serves the same bytes");
}

#[tokio::test]
async fn png_uploads_whose_image_data_is_not_the_stored_image_are_encoded_afresh() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let image = rgb8(120, 80, 8);
    let plain = encode(&image, ImageFormat::Png);

    // Turned upright by its orientation (6: the picture is rotated 90° clockwise to be shown).
    let exif = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let rotated = with_chunk(&plain, b"eXIf", exif);
    // A transparent color: stored as RGBA.
    let transparent = with_chunk(&plain, b"tRNS", &[0, 0, 0, 0, 0, 0]);
    // A wrong Adler-32 at the end of the compressed data (the chunk's CRC made to match): read
    // as before, but not handed on to decoders that check it.
    let mut unchecked = plain.clone();
    let (_, idat) = chunks(&plain)
        .into_iter()
        .rfind(|(kind, _)| kind == b"IDAT")
        .unwrap();
    unchecked[idat.end - 5] ^= 0x01;
    let crc = crc32fast::hash(&unchecked[idat.start + 4..idat.end - 4]);
    unchecked[idat.end - 4..idat.end].copy_from_slice(&crc.to_be_bytes());

    for (what, file, expected) in [
        ("rotated", rotated, image.rotate90()),
        ("transparent", transparent, image.to_rgba8().into()),
        ("checksum", unchecked, image.clone()),
    ] {
        let timing = upload_file(&a, file.clone()).await;
        assert!(!timing.contains("share"), "{what}: {timing}");
        let (_, timing, png) = get_png(&b).await;
        assert!(!timing.contains("png;desc=other"), "{what}: {timing}");
        assert!(
            png != image_data_only(&file),
            "{what}: not the upload's data"
        );
        assert_same_pixels(&decode(&png), &expected);
    }
}

/// Where the state word lies in the control object, and slot 0's `seq` (docs/PROTOCOL.md).
const STATE: u64 = 24;
const SLOT0_SEQ: u64 = 48 + 32;

fn write_control_u64(segment: &str, offset: u64, value: u64) {
    control(segment)
        .write_all_at(&value.to_ne_bytes(), offset)
        .unwrap();
}

#[tokio::test]
async fn after_the_sequence_numbers_restart_a_server_serves_the_new_image_not_its_cached_one() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let first = rgb8(200, 150, 31);
    upload_and_publish(&a, &first).await;
    // Another process overwrites the state word with a huge number (and the slot's number to
    // match, so that the image still reads): B caches the image under that number.
    let huge = 1u64 << 62;
    write_control_u64(&segment, SLOT0_SEQ, huge);
    write_control_u64(&segment, STATE, huge << 1);
    let (_, _, png) = get_png(&b).await;
    assert_same_pixels(&decode(&png), &first);

    // The next write starts counting again at 1: a number below the one B cached.
    let second = rgb8(120, 90, 77);
    let response = a
        .upload_raw(encode(&second, ImageFormat::Png), "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let seq = response.json::<serde_json::Value>().await.unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(seq, 1, "the writer starts again at 1");
    let (_, timing, png) = get_png(&b).await;
    assert_same_pixels(&decode(&png), &second);
    assert!(!timing.contains("cache;desc=hit"), "{timing}");
}

/// A large image that nobody encoded yet: the server sends its PNG while it encodes it (no
/// length in advance, chunked), once the pixels are all copied out of the slot; the file is
/// exactly the image, and the next request gets the same file, now with its length, from the
/// cache.
#[tokio::test]
async fn a_large_image_encoded_for_a_request_is_sent_while_it_is_encoded() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    // 2.8 MB of pixels: several bands.
    let image = rgb8(1280, 720, 5);
    put(&segment, &image);

    let response = a.get("/image.png").await;
    assert_eq!(response.status(), 200, "{}", a.log());
    let timing = header(&response, "server-timing");
    assert!(
        timing.contains("png;desc=local")
            && timing.contains("read;desc=slot")
            && timing.contains("read;dur=")
            && timing.contains("encode;desc=streamed"),
        "{timing}"
    );
    assert_eq!(header(&response, "transfer-encoding"), "chunked");
    assert_eq!(header(&response, "content-length"), "");
    let etag = header(&response, "etag");
    assert!(etag.ends_with("-1\""), "{etag}");
    let streamed = response.bytes().await.unwrap().to_vec();
    assert_same_pixels(&decode(&streamed), &image);

    let (origin, timing, cached) = get_png(&a).await;
    assert_eq!(origin, "other", "{timing}");
    assert!(timing.contains("cache;desc=hit"), "{timing}");
    assert_eq!(cached, streamed);
}

/// Images stored one after the other while a server encodes each for a request: every
/// response is whole, and is the PNG of exactly the image its ETag names, whether the server
/// streamed it from the bands copied ahead or read the image whole after a write raced the copy.
#[tokio::test]
async fn images_stored_while_the_server_streams_their_pngs_never_mix() {
    let segment = fresh_segment();
    let b = spawn_server(&segment);
    let images = [rgb8(1280, 720, 1), rgb8(1280, 720, 2)];
    put(&segment, &images[0]);
    let writer = {
        let (segment, images) = (segment.clone(), images.clone());
        std::thread::spawn(move || {
            // Image 1 was the first; odd numbers are the first image, even ones the second.
            for round in 1..=8 {
                put(&segment, &images[round % 2]);
            }
        })
    };
    let mut responses = 0;
    while !writer.is_finished() || responses == 0 {
        let response = b.get("/image.png").await;
        assert_eq!(response.status(), 200, "{}", b.log());
        let etag = header(&response, "etag");
        let seq: usize = etag
            .trim_matches('"')
            .split_once('-')
            .and_then(|(_, seq)| seq.parse().ok())
            .unwrap_or_else(|| panic!("{etag}"));
        let png = response.bytes().await.expect("the whole PNG");
        assert_same_pixels(&decode(&png), &images[(seq + 1) % 2]);
        responses += 1;
    }
    writer.join().unwrap();
    assert!(responses > 1, "{responses} responses");
}
