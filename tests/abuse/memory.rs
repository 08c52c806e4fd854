//! Memory a client controls: decompression bombs uploaded in parallel, bodies that declare far
//! more than they send, non-images that announce themselves in their first bytes, and an
//! address-space limit the decoded pixels do not fit in.

use crate::forge::{png_claiming, zlib_zeros};
use crate::helpers::{
    TestServer, encode, fresh_segment, rgb8, spawn_program, spawn_server, spawn_server_with,
};
use crate::raw::{connect_and_send, read_response, status_kib};
use crate::wire::{self, Body};
use image::ImageFormat;
use std::time::Duration;

/// A PNG of 10000x9999 RGBA 16-bit pixels, all zero: 800 MB of pixels in a few MB of file,
/// inside the default --max-pixels.
fn rgba16_bomb() -> Vec<u8> {
    let (width, height) = (10_000usize, 9_999usize);
    let row = 1 + width * 8;
    png_claiming(
        width as u32,
        height as u32,
        6,
        16,
        &zlib_zeros(row * height),
        true,
    )
}

/// The status of a raw `image/png` upload of `bytes`, or the error if no answer came.
async fn upload_status(server: &TestServer, bytes: Vec<u8>) -> Result<(u16, String), String> {
    let head = wire::head(
        "/image",
        &[("Content-Type", b"image/png")],
        Some(bytes.len()),
    );
    match wire::send(
        &server.addr,
        head,
        Body::Whole(bytes),
        Duration::from_secs(120),
    )
    .await
    {
        Ok(answer) => Ok((
            answer.status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        )),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
async fn six_concurrent_rgba16_bombs_leave_the_server_up_within_4_gb() {
    let server = spawn_server(&fresh_segment());
    let bomb = rgba16_bomb();
    let uploads = (0..6).map(|_| upload_status(&server, bomb.clone()));
    let answers = futures_util::future::join_all(uploads).await;
    let peak_kib = status_kib(server.pid(), "VmHWM");
    for answer in &answers {
        match answer {
            Ok((status, body)) => assert!(
                [201, 503, 507].contains(status),
                "answered {status}: {body}"
            ),
            Err(error) => panic!("an upload got no answer: {error}; all: {answers:?}"),
        }
    }
    assert!(
        answers.iter().any(|answer| matches!(answer, Ok((201, _)))),
        "at least one bomb inside the limits is stored: {answers:?}"
    );
    assert_eq!(
        server.get("/healthz").await.status(),
        200,
        "the server is up"
    );
    let peak_gb = peak_kib as f64 * 1024.0 / 1e9;
    assert!(peak_gb <= 4.0, "peak RSS {peak_gb:.2} GB");
    eprintln!("six bombs: {answers:?}; peak RSS {peak_gb:.2} GB");
}

#[tokio::test]
async fn a_declared_content_length_is_not_reserved_before_the_body_arrives() {
    let server = spawn_server(&fresh_segment());
    let pid = server.pid();
    let before = status_kib(pid, "VmSize");
    let head = format!(
        "POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n\
         Content-Length: {}\r\n\r\n",
        256 * 1024 * 1024 - 1
    );
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut bytes = head.clone().into_bytes();
        bytes.extend_from_slice(b"\x89PNG");
        waiting.push(connect_and_send(&server.addr, &bytes).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = status_kib(pid, "VmSize");
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 1024,
        "40 bodies of 4 bytes, each declaring 256 MiB, grew the address space by {grown_mib} MiB"
    );
    drop(waiting);
}

#[tokio::test]
async fn a_body_that_starts_like_no_image_is_refused_with_415_before_the_rest_arrives() {
    let server = spawn_server(&fresh_segment());
    let text = b"This is a shopping list, not a picture: bread, milk, eggs and tea.".to_vec();

    let head = wire::head(
        "/image",
        &[("Content-Type", b"image/png")],
        Some(50_000_000),
    );
    let answer = wire::send(
        &server.addr,
        head,
        Body::StallAfter(text.clone()),
        Duration::from_secs(10),
    )
    .await
    .expect("an answer before the 50 MB arrive");
    assert_eq!(
        answer.status,
        415,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    let boundary = "XyZzY";
    let mut start = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"list.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    start.extend_from_slice(&text);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let head = wire::head(
        "/image",
        &[("Content-Type", content_type.as_bytes())],
        Some(50_000_000),
    );
    let answer = wire::send(
        &server.addr,
        head,
        Body::StallAfter(start),
        Duration::from_secs(10),
    )
    .await
    .expect("an answer before the 50 MB arrive");
    assert_eq!(
        answer.status,
        415,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    // A real image still loads.
    let png = encode(&rgb8(8, 8, 1), ImageFormat::Png);
    assert_eq!(server.upload(png, "x.png", "image/png").await.status(), 201);
}

#[tokio::test]
async fn pixels_that_do_not_fit_the_address_space_are_refused_not_an_abort() {
    // How much address space an idle server takes here, so the limit leaves room for it but
    // not for 800 MB of decoded pixels.
    let idle = spawn_server(&fresh_segment());
    let base_kib = status_kib(idle.pid(), "VmSize");
    drop(idle);
    let limit_kib = base_kib + 400 * 1024;

    let segment = fresh_segment();
    let script = format!("ulimit -v {limit_kib} && exec \"$0\" \"$@\"");
    let server = spawn_program(
        "/bin/sh",
        &[
            "-c",
            &script,
            env!("CARGO_BIN_EXE_shmimage"),
            "--port",
            "0",
            "--segment",
            &segment,
            "--max-memory",
            "8GiB",
        ],
        &[],
    );
    let answer = upload_status(&server, rgba16_bomb()).await;
    let (status, body) = answer.expect("an answer, not a crash");
    assert!([503, 507].contains(&status), "{status}: {body}");
    assert!(body.contains("memory"), "{body}");
    assert_eq!(
        server.get("/healthz").await.status(),
        200,
        "the server is up"
    );
    let png = encode(&rgb8(8, 8, 2), ImageFormat::Png);
    assert_eq!(server.upload(png, "x.png", "image/png").await.status(), 201);

    let mut stream = connect_and_send(
        &server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        read_response(&mut stream, Duration::from_secs(5))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn bodies_being_received_count_against_the_memory_budget() {
    let server = spawn_server_with(&fresh_segment(), &["--max-memory", "64MiB"]);
    // A body of 40 MiB that stalls before its declared 60 MiB: it holds its memory.
    let mut first = format!(
        "POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n\
         Content-Length: {}\r\n\r\n",
        60 << 20
    )
    .into_bytes();
    let mut body = png_claiming(4000, 4000, 2, 8, &[], false);
    body.resize(40 << 20, 7);
    first.extend_from_slice(&body);
    let holding = connect_and_send(&server.addr, &first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The server has taken at least 30 MiB of it (the sockets buffer less than 10), so a second
    // upload of 40 MiB finds no room and is told so at once, instead of growing memory further.
    let (status, message) = upload_status(&server, body.clone())
        .await
        .expect("an answer");
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("memory"), "{message}");

    // Once the first goes away, its memory is free again.
    drop(holding);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let png = encode(&rgb8(8, 8, 4), ImageFormat::Png);
    assert_eq!(server.upload(png, "x.png", "image/png").await.status(), 201);
}
