//! HTTP/1.1 as RFC 9112 says: one Host, no more, no less; the authority of an absolute-form
//! request counts; heads and header lines have limits. Plus the headers that keep the image to
//! this origin, and a page that says only what the server knows.

use crate::helpers::{
    BROWSER_ACCEPT, encode, form_with, fresh_segment, header, rgb8, spawn_server,
};
use crate::raw::{exchange, status_of};
use image::ImageFormat;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_request_without_host_or_with_two_is_400() {
    let server = spawn_server(&fresh_segment());
    let no_host = exchange(
        &server.addr,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        PATIENCE,
    )
    .await;
    assert_eq!(status_of(&no_host), 400, "{no_host}");
    assert!(
        no_host.contains("Host"),
        "the answer says what is missing: {no_host}"
    );

    let two_hosts = exchange(
        &server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        PATIENCE,
    )
    .await;
    assert_eq!(status_of(&two_hosts), 400, "{two_hosts}");

    let bad_host = exchange(
        &server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        PATIENCE,
    )
    .await;
    assert_eq!(status_of(&bad_host), 400, "{bad_host}");

    // HTTP/1.0 had no Host header; such a request is still served.
    let old = exchange(&server.addr, b"GET /healthz HTTP/1.0\r\n\r\n", PATIENCE).await;
    assert_eq!(status_of(&old), 200, "{old}");
}

#[tokio::test]
async fn the_authority_of_an_absolute_form_request_is_the_one_checked() {
    let server = spawn_server(&fresh_segment());
    let foreign = exchange(
        &server.addr,
        b"GET http://evil.example/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        PATIENCE,
    )
    .await;
    assert_eq!(status_of(&foreign), 421, "{foreign}");
    assert!(foreign.contains("evil.example"), "{foreign}");

    let own = format!(
        "GET http://{}/healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let own = exchange(&server.addr, own.as_bytes(), PATIENCE).await;
    assert_eq!(status_of(&own), 200, "{own}");
}

#[tokio::test]
async fn heads_and_header_lines_over_their_limits_are_refused() {
    let server = spawn_server(&fresh_segment());
    // One 100 KB header line.
    let long_line = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = exchange(&server.addr, long_line.as_bytes(), PATIENCE).await;
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        &answer[..answer.len().min(300)]
    );

    // A header line just over 8 KiB says which header and the limit.
    let over = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Over: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(9000)
    );
    let answer = exchange(&server.addr, over.as_bytes(), PATIENCE).await;
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.contains("x-over") || answer.contains("X-Over"),
        "{answer}"
    );

    // Forty lines of 7 KB: each line is fine, the head (280 KB) is not.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for index in 0..40 {
        many.push_str(&format!("X-Line-{index}: {}\r\n", "c".repeat(7000)));
    }
    many.push_str("Connection: close\r\n\r\n");
    let answer = exchange(&server.addr, many.as_bytes(), PATIENCE).await;
    assert_eq!(
        status_of(&answer),
        431,
        "{}",
        &answer[..answer.len().min(300)]
    );

    // A 9 KB request target.
    let long_uri = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "d".repeat(9000)
    );
    let answer = exchange(&server.addr, long_uri.as_bytes(), PATIENCE).await;
    assert_eq!(
        status_of(&answer),
        414,
        "{}",
        &answer[..answer.len().min(300)]
    );

    // A normal request on the same server is still fine.
    assert_eq!(server.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn the_image_and_the_api_are_for_this_origin_only() {
    let server = spawn_server(&fresh_segment());
    let png = encode(&rgb8(8, 8, 3), ImageFormat::Png);
    assert_eq!(server.upload(png, "x.png", "image/png").await.status(), 201);
    for path in ["/image.png", "/api/segment", "/"] {
        let response = server.get(path).await;
        assert_eq!(
            header(&response, "cross-origin-resource-policy"),
            "same-origin",
            "{path}"
        );
        assert_eq!(
            header(&response, "referrer-policy"),
            "no-referrer",
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_page_after_an_upload_names_the_file_the_server_took_not_the_link() {
    let server = spawn_server(&fresh_segment());
    let png = encode(&rgb8(16, 8, 9), ImageFormat::Png);
    let response = server
        .upload_form(
            form_with("image", png, "holiday.png", "image/png"),
            Some(BROWSER_ACCEPT),
        )
        .await;
    assert_eq!(response.status(), 303);
    let location = header(&response, "location");
    assert!(location.starts_with("/?loaded="), "{location}");

    let page = server.get_page(&location).await.text().await.unwrap();
    assert!(
        page.contains("holiday.png"),
        "the page names the upload: {page}"
    );

    // A link that carries other text cannot make the server's page say it.
    let seq = location
        .trim_start_matches("/?loaded=")
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let spoofed = server
        .get_page(&format!(
            "/?loaded={seq}&name=Your+session+expired%2C+call+0800"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(!spoofed.contains("session expired"), "{spoofed}");
    assert!(spoofed.contains("holiday.png"), "{spoofed}");
}
