//! How long a new image takes to reach an open page through another server.
//!
//! Starts two real shmimage servers, A and B, on a fresh segment; opens `GET /events` on B; then
//! loads a small image into A again and again and measures, for each one, the time from A's
//! `201 Created` (response headers received) to B's `image` event for that sequence number.
//! B learns of the image through the segment's futex, not through HTTP, so the event can even
//! arrive before A's answer: such samples count as negative.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --features bench --example notify_latency            # 300 uploads
//! cargo run --release --features bench --example notify_latency -- 1000    # or as many as you like
//! ```
//!
//! It runs the `shmimage` binary beside the example's folder (`target/release/shmimage`), or
//! the one `SHMIMAGE_BIN` names.

use image::{ImageFormat, Rgb, RgbImage};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Uploads when no count is given.
const DEFAULT_UPLOADS: usize = 300;

/// How long one event may take before the run fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running server, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(binary: &PathBuf, segment: &str) -> Result<Server, String> {
        let mut child = Command::new(binary)
            .args(["--port", "0", "--segment", segment])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|error| format!("cannot read the server's first line: {error}"))?;
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split(' ').next())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(Server { child, addr })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so the last server removes the segment from /dev/shm.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The shmimage binary to run.
fn server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SHMIMAGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let example = std::env::current_exe().map_err(|error| error.to_string())?;
    let binary = example
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("shmimage"))
        .ok_or("cannot tell where the target folder is")?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it first with `cargo build --release`, or set SHMIMAGE_BIN",
            binary.display()
        ))
    }
}

/// Reads B's event stream and reports `(seq, arrival)` for every `image` event.
async fn follow_events(
    mut response: reqwest::Response,
    arrivals: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let mut buffer = String::new();
    let mut name = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let arrived = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                let seq = serde_json::from_str::<serde_json::Value>(value.trim())
                    .ok()
                    .and_then(|data| data["seq"].as_u64());
                if let Some(seq) = seq
                    && (name == "image" || name == "state")
                {
                    let _ = arrivals.send((seq, arrived));
                }
            } else if line.is_empty() {
                name.clear();
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let uploads: usize = match std::env::args().nth(1) {
        Some(count) => count
            .parse()
            .map_err(|_| format!("the number of uploads must be a number, not {count:?}"))?,
        None => DEFAULT_UPLOADS,
    };
    let binary = server_binary()?;
    let segment = format!("lat{}", std::process::id() % 1_000_000);
    let a = Server::start(&binary, &segment)?;
    let b = Server::start(&binary, &segment)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|error| error.to_string())?;

    let mut png = Vec::new();
    RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 128]))
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|error| error.to_string())?;

    let events = client
        .get(b.url("/events"))
        .send()
        .await
        .map_err(|error| format!("cannot open B's /events: {error}"))?;
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    tokio::spawn(follow_events(events, sender));
    // The first event is the state on connect.
    tokio::time::timeout(EVENT_TIMEOUT, arrivals.recv())
        .await
        .map_err(|_| "B sent no first event")?;

    let mut early: HashMap<u64, Instant> = HashMap::new();
    let mut after_201 = Vec::with_capacity(uploads);
    let mut after_request = Vec::with_capacity(uploads);
    for _ in 0..uploads {
        let sent = Instant::now();
        let response = client
            .post(a.url("/image"))
            .header("Content-Type", "image/png")
            .body(png.clone())
            .send()
            .await
            .map_err(|error| format!("upload to A failed: {error}"))?;
        let answered = Instant::now();
        if response.status() != 201 {
            return Err(format!("A answered {}", response.status()));
        }
        let stored: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        let seq = stored["seq"].as_u64().ok_or("no seq in A's answer")?;
        let arrived = loop {
            if let Some(arrived) = early.remove(&seq) {
                break arrived;
            }
            let (event_seq, arrived) = tokio::time::timeout(EVENT_TIMEOUT, arrivals.recv())
                .await
                .map_err(|_| format!("B sent no event for image {seq} within {EVENT_TIMEOUT:?}"))?
                .ok_or("B's event stream ended")?;
            early.insert(event_seq, arrived);
        };
        let signed_ms = |from: Instant| {
            if arrived >= from {
                (arrived - from).as_secs_f64() * 1000.0
            } else {
                -(from - arrived).as_secs_f64() * 1000.0
            }
        };
        after_201.push(signed_ms(answered));
        after_request.push(signed_ms(sent));
    }

    let report = |title: &str, samples: &mut Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        let before = samples.iter().filter(|&&ms| ms < 0.0).count();
        println!(
            "{title}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms ({before} of {} \
             events arrived first)",
            percentile(samples, 50.0),
            percentile(samples, 99.0),
            samples[samples.len() - 1],
            samples[0],
            samples.len(),
        );
    };
    println!(
        "{uploads} uploads of a 32x32 PNG to A ({}), events from B ({}), segment {segment:?}",
        a.addr, b.addr
    );
    report("A's 201 -> B's event   ", &mut after_201);
    report("A's request -> B's event", &mut after_request);
    Ok(())
}
