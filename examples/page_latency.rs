//! From an upload at server A to the new pixels on server B's open page, in a real browser.
//!
//! Starts two release servers, A and B, on a fresh segment, and headless Chromium (through
//! chromedriver) with B's page open at 1280x800, Live on. Then, again and again, it uploads a
//! 3840x2160 photo-like image to A (as JPEG, quality 90, and as PNG, alternating) and measures
//! from the moment the upload starts to the first animation frame in which B's page has the new
//! image decoded and in the document: the frame that draws it. The page's own script is not
//! trusted for this: the example injects an observer that watches `#picture img` for every
//! image id and takes `performance.timeOrigin + performance.now()` (the same wall clock as this
//! process's `SystemTime`) in the first `requestAnimationFrame` after the image is complete.
//!
//! ```sh
//! cargo build --release
//! cargo run --features bench --example page_latency            # 10 uploads (the example itself needs no speed)
//! cargo run --features bench --example page_latency -- 20      # 20 uploads
//! SHMIMAGE_BIN=/path/to/other/shmimage cargo run --features bench ... --example page_latency   # another build
//! ```
//!
//! Prints every upload and the medians (all, JPEG, PNG) and writes them to
//! `target/page-latency.json`. Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (or
//! `SHMIMAGE_CHROMIUM` and `SHMIMAGE_CHROMEDRIVER`).

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long B's page may take to draw an image before the run is given up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A child process stopped with SIGTERM when dropped.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    /// A shmimage server on port 0 attached to `segment`, once it printed its address.
    fn shmimage(binary: &Path, segment: &str) -> Result<Process, Error> {
        let mut child = Command::new(binary)
            .args(["--port", "0", "--segment", segment])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(Process { child, addr })
    }

    /// chromedriver on a free port, once it listens.
    fn chromedriver(program: &Path) -> Result<Process, Error> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", program.display()))?;
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Process {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM, so the last shmimage server removes the segment from /dev/shm.
        // SAFETY: kill(2) only sends a signal, to our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `program` from `variable`, or `default`.
fn program(variable: &str, default: &str) -> Result<PathBuf, Error> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is not installed (or set {variable})", path.display()).into())
    }
}

/// The shmimage binary: `SHMIMAGE_BIN`, or the release build in this example's target folder.
fn server_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("SHMIMAGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let example = std::env::current_exe()?;
    let binary = example
        .ancestors()
        .nth(3)
        .map(|target| target.join("release").join("shmimage"))
        .ok_or("cannot tell where the target folder is")?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --release` first",
            binary.display()
        )
        .into())
    }
}

/// A photo-like RGB image: smooth waves and a gradient, plus ±3% noise (as `e2e_bench`).
fn photo_like(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ seed;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    let (w, h) = (width as f32, height as f32);
    for y in 0..height {
        for x in 0..width {
            let ramp = 0.2 * (x as f32 / w + y as f32 / h - 1.0);
            for c in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let jitter = (state % 2001) as f32 / 1000.0 - 1.0;
                let wave = (x as f32 / w * 6.3 + c as f32 * 1.7 + seed as f32).sin()
                    * (y as f32 / h * 4.1 - c as f32 * 1.7).cos();
                let value = 0.5 + 0.25 * wave + ramp + 0.03 * jitter;
                pixels.push((value.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, pixels).expect("a consistent image")
}

/// `image` as a JPEG (quality 90) or as a PNG the way an editor saves one (zlib's default).
fn file(image: &RgbImage, jpeg: bool) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let (width, height) = image.dimensions();
    if jpeg {
        JpegEncoder::new_with_quality(&mut bytes, 90).write_image(
            image.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )?;
    } else {
        PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Adaptive)
            .write_image(
                image.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            )?;
    }
    Ok(bytes)
}

/// Milliseconds since the Unix epoch, as the browser's `timeOrigin + now()` counts them.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// Watches the page for images drawn: `window.drawnAt[id]` is the first animation frame's
/// time after the image with that id is complete in `#picture`.
const OBSERVER: &str = r##"
window.drawnAt = {};
const check = () => {
  const figure = document.getElementById("picture");
  const img = figure && figure.querySelector("img");
  const id = figure && figure.dataset.imageId;
  if (!img || !id || !img.complete || img.naturalWidth === 0 || id in window.drawnAt) return;
  window.drawnAt[id] = null;
  requestAnimationFrame(() => { window.drawnAt[id] = performance.timeOrigin + performance.now(); });
};
new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true });
document.addEventListener("load", check, true);
"##;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let uploads: usize = std::env::args().nth(1).map_or(Ok(10), |n| n.parse())?;
    let binary = server_binary()?;
    let chromium = program("SHMIMAGE_CHROMIUM", "/usr/bin/chromium")?;
    let driver =
        Process::chromedriver(&program("SHMIMAGE_CHROMEDRIVER", "/usr/bin/chromedriver")?)?;
    let segment = format!("lat{}", std::process::id() % 100_000);
    let a = Process::shmimage(&binary, &segment)?;
    let b = Process::shmimage(&binary, &segment)?;
    println!(
        "page latency: A {} -> B {} (segment {segment:?}, {}), 3840x2160, {uploads} uploads",
        a.addr,
        b.addr,
        binary.display()
    );

    let profile = std::env::temp_dir().join(format!("shmimage-latency-{}", std::process::id()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".to_owned(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1280,800",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let browser: Client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://{}", driver.addr))
        .await?;
    browser.goto(&format!("http://{}/", b.addr)).await?;
    browser.execute(OBSERVER, vec![]).await?;

    // The files, made before anything is timed: two pictures, each as JPEG and PNG.
    let pictures = [photo_like(3840, 2160, 1), photo_like(3840, 2160, 2)];
    let files: Vec<(&str, Vec<u8>)> = (0..uploads)
        .map(|round| {
            let jpeg = round % 2 == 0;
            let bytes = file(&pictures[round / 2 % 2], jpeg)?;
            Ok((if jpeg { "JPEG" } else { "PNG" }, bytes))
        })
        .collect::<Result<_, Error>>()?;
    let http = reqwest::Client::new();
    let incarnation = {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let id = browser
                .execute(
                    "return document.getElementById('enhancements').dataset.lastEvent || null;",
                    vec![],
                )
                .await?;
            if let Some(id) = id.as_str() {
                break id
                    .rsplit_once('-')
                    .map(|(i, _)| i.to_owned())
                    .ok_or("odd event id")?;
            }
            if Instant::now() > deadline {
                return Err("B's page never connected to /events".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let mut results = Vec::new();
    for (kind, bytes) in files {
        let size_mb = bytes.len() as f64 / 1e6;
        let started = now_ms();
        let response = http
            .post(format!("http://{}/image", a.addr))
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        let answered = now_ms();
        if response.status() != 201 {
            return Err(format!("upload answered {}", response.status()).into());
        }
        let stored: Value = response.json().await?;
        let id = format!("{incarnation}-{}", stored["seq"]);
        let deadline = Instant::now() + PATIENCE;
        let drawn = loop {
            let at = browser
                .execute(
                    "return window.drawnAt[arguments[0]] || null;",
                    vec![json!(id)],
                )
                .await?;
            if let Some(at) = at.as_f64() {
                break at;
            }
            if Instant::now() > deadline {
                return Err(format!("B's page did not draw image {id}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let fetched = browser
            .execute(
                "const img = document.querySelector('#picture img'); return img.currentSrc;",
                vec![],
            )
            .await?;
        let latency = drawn - started;
        println!(
            "{kind:>4} {size_mb:5.1} MB: A answered after {:6.1} ms, B drew it after {latency:6.1} ms ({})",
            answered - started,
            fetched.as_str().unwrap_or("?")
        );
        results.push(json!({
            "format": kind, "file_mb": size_mb, "upload_ms": answered - started,
            "drawn_ms": latency, "fetched": fetched,
        }));
        // Let the page settle before the next upload.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let latencies = |format: Option<&str>| -> Vec<f64> {
        results
            .iter()
            .filter(|r| format.is_none_or(|f| r["format"] == f))
            .filter_map(|r| r["drawn_ms"].as_f64())
            .collect()
    };
    let (mut all, mut jpeg, mut png) = (
        latencies(None),
        latencies(Some("JPEG")),
        latencies(Some("PNG")),
    );
    let summary = json!({
        "median_ms": median(&mut all), "jpeg_median_ms": median(&mut jpeg),
        "png_median_ms": median(&mut png), "uploads": results,
        "binary": binary.display().to_string(),
    });
    println!(
        "median {:.1} ms (JPEG {:.1} ms, PNG {:.1} ms)",
        summary["median_ms"].as_f64().unwrap_or(f64::NAN),
        summary["jpeg_median_ms"].as_f64().unwrap_or(f64::NAN),
        summary["png_median_ms"].as_f64().unwrap_or(f64::NAN)
    );
    let out = std::env::current_exe()?
        .ancestors()
        .nth(3)
        .map(|target| target.join("page-latency.json"))
        .ok_or("no target folder")?;
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    println!("wrote {}", out.display());
    browser.close().await?;
    let _ = std::fs::remove_dir_all(&profile);
    Ok(())
}
