//! Bugs the bad-upload corpus found in how the server refuses uploads, all fixed; they stay
//! here as regression tests.

use crate::corpus::{Case, Delivery};
use crate::forge;
use crate::helpers::{encode, fresh_segment, rgb8, spawn_server_with};
use crate::refusals::{Witness, deliver, load, message};
use crate::wire::{self, Body};
use image::ImageFormat;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The 408 of `--request-timeout` says why, like every other error (it once came with an empty
/// body from tower-http's timeout layer).
#[tokio::test]
async fn a_408_says_why() {
    let segment = fresh_segment();
    let server = spawn_server_with(&segment, &["--request-timeout", "2"]);
    let case = Case {
        label: "stalled/raw".to_owned(),
        delivery: Delivery::Wire {
            head: wire::head("/image", &[("Content-Type", b"image/png")], Some(1000)),
            body: Body::StallAfter(forge::PNG_SIGNATURE.to_vec()),
        },
        expect: &[408],
        message_contains: None,
        within: Duration::from_secs(10),
        as_browser: false,
    };
    let reply = deliver(&server, &case).await.expect("an answer");
    assert_eq!(reply.status, 408);
    let text = message(false, &reply).expect("a JSON message with the 408");
    assert!(text.contains("second"), "the message says how long: {text}");
}

/// A client that sends part of its request head and stops is dropped once `--header-timeout`
/// has passed. (It once was never dropped: the request timeout only starts once the head is
/// complete, and the server set no timeout for reading heads, so each such client held a
/// connection and a file descriptor for as long as it liked.)
#[tokio::test]
async fn a_client_stalled_in_its_request_head_is_dropped() {
    let segment = fresh_segment();
    let server = spawn_server_with(&segment, &["--header-timeout", "2"]);
    let mut stream = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    )
    .await
    .expect("send half a head");
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the connection was still open after {:?}",
        started.elapsed()
    );
}

/// A BMP whose header claims a side over 65535 pixels is refused by the BMP decoder itself; the
/// server must still call it too large (413), as for every other format, not corrupt (422).
#[tokio::test]
async fn a_bmp_wider_than_65535_is_too_large_not_corrupt() {
    let segment = fresh_segment();
    let server = spawn_server_with(&segment, &["--max-pixels", "1000000"]);
    let previous = rgb8(20, 10, 1);
    load(&server, &previous).await;
    let witness = Witness::start(&segment, previous).await;
    let bmp = forge::bmp_claiming(
        &encode(&rgb8(40, 30, 7), ImageFormat::Bmp),
        100_000,
        100_000,
    );
    let response = server.upload_raw(bmp, "image/bmp").await;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    witness.unchanged().await.expect("the image is unchanged");
    assert_eq!(status, 413, "{body}");
}
