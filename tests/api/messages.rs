//! What the server says when something goes wrong, read the way a person reads it: in words, with
//! the file named, limits in human units, one clean sentence; and what every page needs (its
//! icon, its own style and script, times a person can read).

use crate::helpers::{
    BROWSER_ACCEPT, encode, form_with, fresh_segment, header, json_error, rgb8, spawn_program,
    spawn_server, spawn_server_with, unescape_html,
};
use image::ImageFormat;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The text of the page's status line (`<p class="status ...">`), tags removed.
fn status_line(page: &str) -> String {
    let start = page
        .find("class=\"status")
        .unwrap_or_else(|| panic!("no status line in {page}"));
    let text = &page[start..];
    let text = &text[text.find('>').unwrap() + 1..text.find("</p>").unwrap()];
    let mut plain = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    unescape_html(plain.trim())
}

#[tokio::test]
async fn refusals_of_foreign_hosts_and_sites_are_sentences_without_runs_of_spaces() {
    let a = spawn_server(&fresh_segment());
    let port = a.addr.rsplit_once(':').unwrap().1;

    let response = a
        .client
        .get(a.url("/api/segment"))
        .header("Host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    let misdirected = json_error(response, 421).await;
    let response = a
        .client
        .post(a.url("/image"))
        .header("Content-Type", "image/png")
        .header("Origin", "https://evil.example")
        .body(encode(&rgb8(4, 4, 1), ImageFormat::Png))
        .send()
        .await
        .unwrap();
    let cross_site = json_error(response, 403).await;

    for message in [&misdirected, &cross_site] {
        assert!(!message.contains("  "), "a run of spaces in {message:?}");
        assert!(message.contains("evil.example"), "{message}");
    }
    assert!(
        misdirected.contains("--allow-host evil.example"),
        "{misdirected}"
    );
}

#[tokio::test]
async fn a_wrong_method_gets_a_message_not_an_empty_body() {
    let a = spawn_server(&fresh_segment());

    let response = a.get("/image").await;
    assert_eq!(header(&response, "allow").to_ascii_uppercase(), "POST");
    let message = json_error(response, 405).await;
    assert!(message.contains("GET /image"), "{message}");
    assert!(message.contains("POST"), "{message}");

    let response = a
        .client
        .delete(a.url("/image.png"))
        .header("Accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(status_line(&page).contains("DELETE /image.png"), "{page}");
}

/// Sends a raw upload that declares `length` bytes (and sends none) and returns the answer's
/// JSON error message, as the server sends it before reading a body it will not take.
fn declared_upload(addr: &str, length: u64) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /image HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: \
         {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|error| {
        panic!("the 413 has no JSON body ({error}): {answer}");
    });
    json["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn limits_are_given_in_human_units() {
    // On a default server: 256 MiB.
    let a = spawn_server(&fresh_segment());
    let message = declared_upload(&a.addr, 300 * 1024 * 1024);
    assert!(message.contains("256 MiB"), "{message}");
    assert!(!message.contains("268435456"), "{message}");

    let b = spawn_server_with(&fresh_segment(), &["--max-upload-bytes", "1500000"]);
    let message = declared_upload(&b.addr, 2_000_000);
    assert!(message.contains("1.4 MiB"), "{message}");
}

#[tokio::test]
async fn a_refused_upload_from_the_page_says_what_happened_to_which_file_in_words() {
    let a = spawn_server(&fresh_segment());

    let response = a
        .upload_form(
            form_with(
                "image",
                b"%PDF-1.7".to_vec(),
                "report.pdf",
                "application/pdf",
            ),
            Some(BROWSER_ACCEPT),
        )
        .await;

    assert_eq!(response.status(), 415);
    let page = response.text().await.unwrap();
    let status = status_line(&page);
    assert!(
        status.starts_with("report.pdf was not loaded"),
        "in words, naming the file: {status:?}"
    );
    assert!(
        status.contains("not an image this server can read"),
        "{status}"
    );
    assert!(
        !page.contains("Unsupported Media Type"),
        "no HTTP status text on the page: {page}"
    );
}

#[tokio::test]
async fn the_page_shows_when_an_image_was_written_in_words_without_javascript() {
    let a = spawn_server(&fresh_segment());
    let response = a
        .upload(
            encode(&rgb8(8, 8, 1), ImageFormat::Png),
            "a.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);
    let written_at = a.segment_state().await["image"]["written_at"]
        .as_str()
        .unwrap()
        .to_owned();

    let page = a.get_page("/").await.text().await.unwrap();

    let element = format!("<time datetime=\"{written_at}\"");
    let start = page.find(&element).unwrap_or_else(|| panic!("{page}"));
    let shown = &page[start..];
    let shown = &shown[shown.find('>').unwrap() + 1..shown.find("</time>").unwrap()];
    // 2026-11-30T04:58:12.352Z is shown as "2026-11-30 04:58:12 UTC".
    let (date, time) = written_at.split_once('T').unwrap();
    assert_eq!(shown, format!("{date} {} UTC", &time[..8]));
}

#[tokio::test]
async fn every_page_links_an_icon_and_favicon_ico_is_served() {
    let a = spawn_server(&fresh_segment());

    let page = a.get_page("/").await.text().await.unwrap();
    let link = "<link rel=\"icon\" href=\"/static/favicon.svg?v=";
    assert!(page.contains(link), "{page}");
    let icon = a.get("/static/favicon.svg").await;
    assert_eq!(icon.status(), 200);
    assert_eq!(header(&icon, "content-type"), "image/svg+xml");
    let svg = icon.text().await.unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");

    let favicon = a.get("/favicon.ico").await;
    assert_eq!(favicon.status(), 200, "browsers that ask for /favicon.ico");
    assert_eq!(header(&favicon, "content-type"), "image/svg+xml");
    assert_eq!(favicon.text().await.unwrap(), svg);
}

/// The crate's source folder, where `static/` lives.
const SOURCE: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test]
async fn the_binary_carries_its_stylesheet_script_and_icon() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_shmimage")).unwrap();
    for name in ["style.css", "app.js", "favicon.svg"] {
        let source = std::fs::read(format!("{SOURCE}/static/{name}")).unwrap();
        assert!(
            binary.windows(source.len()).any(|window| window == source),
            "{name} is not inside the binary"
        );
    }

    // And a server whose source tree is out of reach serves them all the same: run it in a
    // mount namespace where an empty file system hides `static/` (needs root, as in CI).
    let hide = format!(
        "mount -t tmpfs tmpfs '{SOURCE}/static' && exec '{}' --port 0 --segment {}",
        env!("CARGO_BIN_EXE_shmimage"),
        fresh_segment()
    );
    let hidden = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !hidden {
        eprintln!("unshare --mount is not permitted here: checked the binary's bytes only");
        return;
    }
    let server = spawn_program("unshare", &["--mount", "sh", "-c", &hide], &[]);
    for (name, content_type) in [
        ("style.css", "text/css"),
        ("app.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let response = server.get(&format!("/static/{name}")).await;
        assert_eq!(response.status(), 200, "{name}");
        assert!(
            header(&response, "content-type").starts_with(content_type),
            "{name}"
        );
        assert!(!header(&response, "etag").is_empty(), "{name}");
        assert_eq!(header(&response, "cache-control"), "public, max-age=3600");
        let source = std::fs::read(format!("{SOURCE}/static/{name}")).unwrap();
        assert_eq!(response.bytes().await.unwrap().as_ref(), source.as_slice());
    }
}
