//! A server on localhost is reachable by every page the user visits: rebinding hosts and
//! cross-site writes are refused, paths stay inside `static/`, and pages carry a strict CSP.

use crate::helpers::{
    encode, fresh_segment, header, json_error, rgb8, spawn_server, spawn_server_with,
};
use image::ImageFormat;
use std::io::{Read, Write};
use std::net::TcpStream;

fn png(seed: u8) -> Vec<u8> {
    encode(&rgb8(8, 8, seed), ImageFormat::Png)
}

async fn seq(server: &crate::helpers::TestServer) -> u64 {
    server.segment_state().await["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_cross_origin_upload_is_refused_and_changes_nothing() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    assert_eq!(a.upload(png(1), "one.png", "image/png").await.status(), 201);

    for (name, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "http://127.0.0.1:1"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let response = a
            .client
            .post(a.url("/image"))
            .header("Content-Type", "image/png")
            .header(name, value)
            .body(png(2))
            .send()
            .await
            .unwrap();
        let message = json_error(response, 403).await;
        assert!(
            message.contains("cross-site request refused"),
            "{name}: {message}"
        );
    }
    assert_eq!(seq(&a).await, 1, "no refused upload reached the segment");

    // The server's own page, and curl (no Origin), still upload.
    let response = a
        .client
        .post(a.url("/image"))
        .header("Content-Type", "image/png")
        .header("Origin", format!("http://{}", a.addr))
        .header("Sec-Fetch-Site", "same-origin")
        .body(png(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(seq(&a).await, 2);
}

#[tokio::test]
async fn a_rebinding_host_is_refused_and_allowed_names_are_served() {
    let segment = fresh_segment();
    let a = spawn_server_with(&segment, &["--allow-host", "my-box.lan"]);
    let port = a.addr.rsplit_once(':').unwrap().1;
    for host in ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example"] {
        let response = a
            .client
            .get(a.url("/api/segment"))
            .header("Host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        let message = json_error(response, 421).await;
        assert!(
            message.contains(host) && message.contains("--allow-host"),
            "{message}"
        );
    }
    for host in ["localhost", "127.0.0.1", "my-box.lan", "MY-BOX.LAN"] {
        let response = a
            .client
            .get(a.url("/healthz"))
            .header("Host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

/// Sends `request` as raw bytes (clients normalise `..` away) and returns the response.
fn raw_request(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn paths_cannot_escape_the_static_folder() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    for path in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static/%2e%2e%2fsrc%2fmain.rs",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
    ] {
        let response = raw_request(
            &a.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        );
        let status = response.split(' ').nth(1).unwrap_or("");
        assert!(status.starts_with('4'), "{path}: {status}");
        assert!(
            !response.contains("[package]") && !response.contains("root:"),
            "{path}"
        );
    }
    let css = a.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
}

#[tokio::test]
async fn pages_and_errors_carry_a_strict_content_security_policy() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    for response in [
        a.get_page("/").await,
        a.get("/image.png").await,
        a.get("/nowhere").await,
    ] {
        let csp = header(&response, "content-security-policy");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
    }
}
