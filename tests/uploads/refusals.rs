//! The corpus against one server with small limits, while a second server on the same segment
//! witnesses that the shared image never changes; and the server's peak memory afterwards.

use crate::corpus::{self, Case, Delivery, Limits};
use crate::helpers::{
    BROWSER_ACCEPT, TestServer, assert_same_pixels, encode, fresh_segment, header, rgb8,
    spawn_server, spawn_server_with, unescape_html,
};
use crate::probe::{self, mib};
use crate::wire;
use image::{DynamicImage, ImageFormat};
use reqwest::multipart::{Form, Part};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The seed of the corpus: `SHMIMAGE_UPLOADS_SEED`, or a fixed one so runs are reproducible.
fn seed() -> u64 {
    std::env::var("SHMIMAGE_UPLOADS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x5EED_BAD0_0000_0001)
}

/// An answer, whichever way the request went.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub elapsed: Duration,
    /// For requests written to the socket: how much of the request the server let in.
    pub bytes_sent: Option<usize>,
}

impl Reply {
    fn from_wire(answer: wire::Answer) -> Reply {
        Reply {
            status: answer.status,
            content_type: answer.header("content-type").unwrap_or("").to_owned(),
            elapsed: answer.elapsed,
            bytes_sent: Some(answer.bytes_sent),
            body: answer.body,
        }
    }
}

/// Sends `case` to `server` and returns the answer, or why none came.
pub async fn deliver(server: &TestServer, case: &Case) -> Result<Reply, String> {
    let started = Instant::now();
    let accept = if case.as_browser {
        BROWSER_ACCEPT
    } else {
        "*/*"
    };
    let request = match &case.delivery {
        Delivery::Wire { head, body } => {
            let head = with_accept(head, accept);
            let answer = wire::send(&server.addr, head, body.clone(), case.within * 3)
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            return Ok(Reply::from_wire(answer));
        }
        Delivery::Form(parts) => {
            let mut form = Form::new();
            for part in parts {
                let mut piece = Part::bytes(part.bytes.clone());
                if let Some(file_name) = &part.file_name {
                    piece = piece.file_name(file_name.clone());
                }
                if let Some(mime) = &part.mime {
                    piece = piece.mime_str(mime).map_err(|e| e.to_string())?;
                }
                form = form.part(part.name.clone(), piece);
            }
            server.client.post(server.url("/image")).multipart(form)
        }
        Delivery::Raw {
            content_type,
            bytes,
        } => {
            let mut request = server.client.post(server.url("/image")).body(bytes.clone());
            if let Some(content_type) = content_type {
                request = request.header("Content-Type", content_type);
            }
            request
        }
    };
    let response = request
        .header("Accept", accept)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("no whole body: {e}"))?;
    Ok(Reply {
        status,
        content_type,
        body: body.to_vec(),
        elapsed: started.elapsed(),
        bytes_sent: None,
    })
}

/// `head` with an `Accept` header after its request line.
fn with_accept(head: &[u8], accept: &str) -> Vec<u8> {
    let line_end = head
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .expect("a request line");
    let mut out = head[..line_end + 2].to_vec();
    out.extend_from_slice(format!("Accept: {accept}\r\n").as_bytes());
    out.extend_from_slice(&head[line_end + 2..]);
    out
}

/// What is wrong with `reply` as the answer to `case`: a status outside the expected ones, no
/// message in the form the client asked for (unless `message_required` is false), or an answer
/// that took too long.
pub fn problems(case: &Case, reply: &Reply, message_required: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !case.expect.contains(&reply.status) {
        problems.push(format!(
            "status {} instead of {:?}: {}",
            reply.status,
            case.expect,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    if !(400..500).contains(&reply.status) {
        problems.push(format!("status {} is not a 4xx", reply.status));
    }
    match message(case.as_browser, reply) {
        Err(_) if !message_required => {}
        Ok(text) => {
            if let Some(needle) = case.message_contains
                && !text.contains(needle)
            {
                problems.push(format!("the message does not name {needle}: {text:?}"));
            }
        }
        Err(problem) => problems.push(problem),
    }
    if reply.elapsed > case.within {
        problems.push(format!(
            "took {:?}, more than {:?}",
            reply.elapsed, case.within
        ));
    }
    problems
}

/// The error message of `reply`: the `error` of a JSON body for API clients, the text of the
/// page for browsers.
pub fn message(as_browser: bool, reply: &Reply) -> Result<String, String> {
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    if as_browser {
        if !reply.content_type.starts_with("text/html") {
            return Err(format!(
                "a browser got {:?} instead of a page: {body:?}",
                reply.content_type
            ));
        }
        if !body.contains(&reply.status.to_string()) {
            return Err(format!("the page does not show status {}", reply.status));
        }
        Ok(unescape_html(&body))
    } else {
        if !reply.content_type.starts_with("application/json") {
            return Err(format!(
                "an API client got {:?} instead of JSON: {body:?}",
                reply.content_type
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body:?}"))?;
        match value["error"].as_str() {
            Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
            _ => Err(format!("no error message in {body:?}")),
        }
    }
}

/// A server attached to the segment that only reads: it checks that the image is still the
/// one loaded before the bad uploads.
pub struct Witness {
    pub server: TestServer,
    pub previous: DynamicImage,
    pub seq: u64,
}

impl Witness {
    /// Starts a witness on `segment` once `previous` is loaded there.
    pub async fn start(segment: &str, previous: DynamicImage) -> Witness {
        let server = spawn_server(segment);
        let seq = server.segment_state().await["seq"]
            .as_u64()
            .expect("a seq in /api/segment");
        let witness = Witness {
            server,
            previous,
            seq,
        };
        witness
            .unchanged()
            .await
            .expect("the witness sees the image");
        witness
    }

    /// Whether the segment still holds the previous image at the same sequence number.
    pub async fn unchanged(&self) -> Result<(), String> {
        let state = self.server.segment_state().await;
        if state["seq"].as_u64() != Some(self.seq) {
            return Err(format!(
                "the segment's seq moved from {} to {}",
                self.seq, state["seq"]
            ));
        }
        let response = self.server.get("/image.png").await;
        if response.status() != 200 {
            return Err(format!("GET /image.png answered {}", response.status()));
        }
        let png = response.bytes().await.map_err(|e| e.to_string())?;
        let image = image::load_from_memory_with_format(&png, ImageFormat::Png)
            .map_err(|e| format!("/image.png is not a PNG: {e}"))?;
        if image.as_bytes() != self.previous.as_bytes()
            || image.color() != self.previous.color()
            || (image.width(), image.height()) != (self.previous.width(), self.previous.height())
        {
            return Err("the image served is not the previous one".to_owned());
        }
        Ok(())
    }
}

/// Loads `image` through `server` and checks it was taken.
pub async fn load(server: &TestServer, image: &DynamicImage) {
    let response = server
        .upload(encode(image, ImageFormat::Png), "previous.png", "image/png")
        .await;
    assert_eq!(response.status(), 201, "load the previous image");
    assert_same_pixels(&server.shared_image().await, image);
}

#[tokio::test]
async fn every_bad_upload_is_refused_with_a_4xx_and_a_message_and_leaves_the_image() {
    let limits = Limits {
        max_upload_bytes: 1 << 20,
        max_pixels: 1_000_000,
    };
    let segment = fresh_segment();
    let target = spawn_server_with(
        &segment,
        &[
            "--max-upload-bytes",
            &limits.max_upload_bytes.to_string(),
            "--max-pixels",
            &limits.max_pixels.to_string(),
        ],
    );
    let previous = rgb8(64, 48, 42);
    load(&target, &previous).await;
    let mut witness = Witness::start(&segment, previous).await;
    let pid = probe::server_pid(&target).await;
    let base = probe::resources(pid);

    let seed = seed();
    let cases = corpus::generate(seed, limits);
    println!("seed {seed} (replay with SHMIMAGE_UPLOADS_SEED={seed})");
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut families = BTreeMap::<&str, BTreeMap<u16, usize>>::new();
    let mut over_limit = Vec::new();
    for case in &cases {
        let mut problems = match deliver(&target, case).await {
            Ok(reply) => {
                let family = case.label.split('/').next().unwrap_or_default();
                *families
                    .entry(family)
                    .or_default()
                    .entry(reply.status)
                    .or_default() += 1;
                if family == "over-limit" {
                    over_limit.push(format!(
                        "  {}: {} after {:.0?}, {} bytes let in",
                        case.label,
                        reply.status,
                        reply.elapsed,
                        reply.bytes_sent.unwrap_or_default()
                    ));
                }
                problems(case, &reply, true)
            }
            Err(problem) => vec![problem],
        };
        if let Err(problem) = witness.unchanged().await {
            problems.push(problem);
            // Put the previous image back, so the cases after this one are judged on their own.
            load(&target, &witness.previous).await;
            witness.seq = witness.server.segment_state().await["seq"]
                .as_u64()
                .expect("a seq in /api/segment");
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.label, problems.join("; ")));
        }
    }
    let after = probe::resources(pid);
    // The image the uploading server itself serves is the previous one too.
    let served = target.shared_image().await;
    if served.as_bytes() != witness.previous.as_bytes() {
        failures.push("the uploading server serves another image than the previous one".into());
    }

    // Peak memory: what the server had before the corpus, plus a few bodies at the byte limit
    // (the body, its copy in a form field, a decoder's buffer), plus decoded pixels at the pixel
    // limit in the widest layout the segment stores (RGBA 16-bit, 8 bytes a pixel), plus slack
    // for the allocator and thread stacks.
    let bound_kib = base.peak_rss_kib
        + (4 * limits.max_upload_bytes as u64 + 8 * limits.max_pixels) / 1024
        + 32 * 1024;
    println!(
        "{} bad uploads, all refused with 4xx in {:.1?} ({} failed)",
        cases.len(),
        started.elapsed(),
        failures.len()
    );
    for (family, statuses) in &families {
        println!("  {family}: {statuses:?}");
    }
    println!("{}", over_limit.join("\n"));
    println!(
        "peak RSS of the uploading server: {} before the corpus, {} after (bound {}); \
         {} fds, {} mappings",
        mib(base.peak_rss_kib),
        mib(after.peak_rss_kib),
        mib(bound_kib),
        after.fds,
        after.maps
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad uploads were not refused properly (seed {seed}):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        cases.len() >= 300,
        "the corpus should hold a few hundred cases"
    );
    assert!(
        after.peak_rss_kib <= bound_kib,
        "the server's peak RSS grew from {} to {}, past {}",
        mib(base.peak_rss_kib),
        mib(after.peak_rss_kib),
        mib(bound_kib)
    );
}
