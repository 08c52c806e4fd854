//! End to end: what sharing an image through two real shmimage servers costs, next to the
//! in-process work it cannot avoid.
//!
//! Starts two release servers, A and B, on a fresh segment, and for photo-like images
//! (smooth gradients plus per-pixel noise) of 256x256, 1920x1080, 3840x2160 and 7680x4320,
//! uploaded as PNG and as JPEG (quality 90), measures:
//!
//! - **upload** to A (`POST /image` until the `201`), split by A's `Server-Timing` into
//!   receive, decode and write, next to `shmimage::imaging::decode` of the same file here;
//! - **cold GET** of `/image.png` from B (the first read of a new image), split into read and
//!   encode, next to `shmimage::imaging::encode_png` of the same pixels here and the `image`
//!   crate's `CompressionType::Fast` on one thread, with the output sizes;
//! - **share**: the file in hand at A to the PNG in hand at B (the upload, then the GET);
//! - **cold GET that must encode**: the image stored with `shmimage put`, so that no server
//!   encoded it, B's first GET to its last byte, each one after an encode of the same pixels
//!   by `encode_png` here; with the CPU time of both (B's from `/proc`, this process's from
//!   `getrusage`) and the shortest the GET could take on this machine's cores;
//! - **warm GET** throughput from B with 16 keep-alive connections, next to the same PNG
//!   bytes served by tower-http's `ServeDir` from a file, in a second process this example
//!   starts (itself, with `--serve-dir DIR`);
//! - `If-None-Match` → `304` latency;
//! - peak and resting RSS of a fresh pair of servers after each of three 3840x2160 cycles
//!   (JPEG, PNG, JPEG uploaded to A, each read cold from B);
//! - **Qt's data path** for the 1920x1080 and 3840x2160 files (`examples/qt_path.py`, with the
//!   system's Qt through PyQt6: the example's `loadFromFile()` and `loadFromMemory()`, then the
//!   image saved as PNG), next to the share, with the PNG sizes;
//! - the `receive` of a 1920x1080 PNG upload, as a form and as a raw body, median and p90 of
//!   41 uploads.
//!
//! If `cargo bench --features bench --bench segment` ran before, its 3840x2160 RGBA8 segment write, read and
//! memcpy medians are taken from `target/criterion` too.
//!
//! ```sh
//! cargo build --release
//! cargo bench --features bench --bench segment          # optional: segment write/read vs memcpy
//! cargo run --release --features bench --example e2e_bench
//! cargo run --release --features bench --example e2e_bench -- --quick    # without 7680x4320, fewer repetitions
//! cargo run --release --features bench --example e2e_bench -- --memory   # only the memory of three 4K cycles
//! cargo run --release --features bench --example e2e_bench -- --photos DIR # write its photos as PNG and JPEG files
//! ```
//!
//! Qt's path needs `apt-get install python3-pyqt6` (it runs `/usr/bin/python3`, or the
//! interpreter `SHMIMAGE_QT_PYTHON` names); without it that comparison is left out.
//!
//! Prints a table, writes JSON to `target/e2e-bench.json` and the chart of time against pixel
//! count to `docs/performance-chart.svg`. The servers run with `RUST_LOG=warn`, so request logs
//! cost nothing on either side of a comparison. Runs the `shmimage` binary beside the
//! example's folder (`target/release/shmimage`), or the one `SHMIMAGE_BIN` names.

use axum::body::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use serde_json::{Value, json};
use shmimage::imaging::{self, DecodeLimits};
use shmimage::raster::Raster;
use shmimage::web::budget;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image sizes, with how many times each upload and read is repeated.
const SIZES: [(u32, u32, usize); 4] = [
    (256, 256, 9),
    (1920, 1080, 7),
    (3840, 2160, 5),
    (7680, 4320, 3),
];

/// Keep-alive connections of the warm-GET throughput test.
const CONNECTIONS: usize = 16;

/// How long one throughput round lasts; each server gets two rounds, alternating.
const ROUND: Duration = Duration::from_secs(2);

/// `If-None-Match` requests for the 304 latency.
const NOT_MODIFIED_REQUESTS: usize = 1000;

/// JPEG quality of the uploads.
const JPEG_QUALITY: u8 = 90;

/// The sizes whose shares are compared with Qt's data path, with how often Qt's path runs.
const QT_SIZES: [(u32, u32, usize); 2] = [(1920, 1080, 3), (3840, 2160, 2)];

/// How many times shmimage must be faster than Qt's data path, and how much larger its PNG
/// may be (the targets of docs/PERFORMANCE.md).
const QT_SPEEDUP_TARGET: f64 = 50.0;
const QT_PNG_SIZE_TARGET: f64 = 1.4;

/// Uploads of the 1920x1080 PNG whose `receive` is measured, as a form and as a raw body.
const RECEIVE_UPLOADS: usize = 41;

/// How long the memory measurement lets a server settle after a request: a server comes to
/// rest once nothing was reserved for `RELEASE_WHEN_IDLE_FOR`, then gives its free memory back
/// on a blocking thread.
const SETTLE: Duration = budget::RELEASE_WHEN_IDLE_FOR.saturating_mul(2);

type Error = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Processes

/// A running server process, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Runs `program` with `args` and waits for its `listening on http://ADDR ...` line.
    fn start(program: &Path, args: &[&str]) -> Result<Server, Error> {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(Server { child, addr })
    }

    /// A shmimage server on port 0 attached to `segment`.
    fn shmimage(binary: &Path, segment: &str) -> Result<Server, Error> {
        Server::start(binary, &["--port", "0", "--segment", segment])
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`, `RssAnon`, `RssShmem`).
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Minor page faults so far (`/proc/PID/stat` field 10).
    fn minor_faults(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1;
                after_name.split_whitespace().nth(7)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// CPU time the server's threads have used, those that exited included (`utime` and
    /// `stime` of `/proc/PID/stat`), in ms. It counts in clock ticks (10 ms here): compare
    /// sums over several requests.
    fn cpu_ms(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
                let user: f64 = fields.next()?.parse().ok()?;
                let system: f64 = fields.next()?.parse().ok()?;
                Some((user + system) * 1000.0 / clock_ticks_per_second())
            })
            .unwrap_or(f64::NAN)
    }

    /// `VmRSS`, `VmHWM`, `RssAnon` and `RssShmem`, in MB.
    fn memory_report(&self) -> Value {
        json!({
            "rss_mb": mb(self.memory("VmRSS")),
            "hwm_mb": mb(self.memory("VmHWM")),
            "anon_mb": mb(self.memory("RssAnon")),
            "shmem_mb": mb(self.memory("RssShmem")),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so the last shmimage server removes the segment from /dev/shm.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The target folder (`target/`), two levels above this example's executable.
fn target_dir() -> Result<PathBuf, Error> {
    let example = std::env::current_exe()?;
    Ok(example
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or("cannot tell where the target folder is")?
        .to_path_buf())
}

/// The shmimage binary to run.
fn server_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("SHMIMAGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let example = std::env::current_exe()?;
    let binary = example
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("shmimage"))
        .ok_or("cannot tell where the target folder is")?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it first with `cargo build --release`, or set SHMIMAGE_BIN",
            binary.display()
        )
        .into())
    }
}

/// `--serve-dir DIR`: serve DIR with tower-http's `ServeDir` on a free port, announced the way
/// shmimage announces itself, until killed.
async fn serve_dir(dir: PathBuf) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{} (ServeDir)", listener.local_addr()?);
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    axum::serve(listener, app).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Images

/// A small, seeded xorshift generator: the same noise every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A photo-like RGB image: per channel a smooth blend of horizontal and vertical waves and a
/// diagonal gradient, plus uniform noise of about ±3% of full scale (as `benches/support`).
fn photo_like(width: u32, height: u32) -> RgbImage {
    let (w, h) = (width as f32, height as f32);
    let waves_x: Vec<[f32; 3]> = (0..width)
        .map(|x| std::array::from_fn(|c| (x as f32 / w * 6.3 + c as f32 * 1.7).sin()))
        .collect();
    let waves_y: Vec<[f32; 3]> = (0..height)
        .map(|y| std::array::from_fn(|c| (y as f32 / h * 4.1 - c as f32 * 1.7).cos()))
        .collect();
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for (y, wave_y) in waves_y.iter().enumerate() {
        for (x, wave_x) in waves_x.iter().enumerate() {
            let ramp = 0.2 * (x as f32 / w + y as f32 / h - 1.0);
            for c in 0..3 {
                let jitter = (noise.next() % 2001) as f32 / 1000.0 - 1.0;
                let value = 0.5 + 0.25 * wave_x[c] * wave_y[c] + ramp + 0.03 * jitter;
                pixels.push((value.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, pixels).expect("a consistent image")
}

/// The kernel's clock ticks per second, the unit of `/proc/PID/stat`'s CPU times.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: `sysconf` takes a name and returns a number; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time this process has used, every thread's (those that exited included), in ms.
fn own_cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `getrusage` writes one `rusage` into the pointer it is given, which points to
    // room for one; it is read only if the call succeeded.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return f64::NAN;
        }
        usage.assume_init()
    };
    let ms = |time: libc::timeval| time.tv_sec as f64 * 1000.0 + time.tv_usec as f64 / 1000.0;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Writes the bench's photos of 1920x1080 and 3840x2160 into `dir`, as `photo-WxH.png` and
/// `photo-WxH.jpg`: the files its uploads send, for loops of one's own (`shmimage put`,
/// `curl`).
fn write_photos(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    for (width, height) in [(1920, 1080), (3840, 2160)] {
        let image = photo_like(width, height);
        let stem = dir.join(format!("photo-{width}x{height}"));
        std::fs::write(stem.with_extension("png"), png_file(&image)?)?;
        std::fs::write(stem.with_extension("jpg"), jpeg_file(&image)?)?;
    }
    println!("wrote the photos into {}", dir.display());
    Ok(())
}

/// The image as a PNG file the way an image editor saves one (zlib's default level).
fn png_file(image: &RgbImage) -> Result<Vec<u8>, Error> {
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Default, FilterType::Adaptive)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )?;
    Ok(png)
}

/// The image as a JPEG file of quality [`JPEG_QUALITY`].
fn jpeg_file(image: &RgbImage) -> Result<Vec<u8>, Error> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(jpeg)
}

/// The `image` crate's fast PNG encoder on one thread.
fn image_crate_fast_png(raster: &Raster) -> Result<Vec<u8>, Error> {
    let color = match raster.format().channels() {
        3 => image::ExtendedColorType::Rgb8,
        4 => image::ExtendedColorType::Rgba8,
        _ => return Err("the bench uploads RGB images only".into()),
    };
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
        .write_image(raster.pixels(), raster.width(), raster.height(), color)?;
    Ok(png)
}

// ---------------------------------------------------------------------------------------------
// Measuring

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `work` `reps` times; the median time in ms and the last output.
fn time_median<T>(reps: usize, mut work: impl FnMut() -> T) -> (f64, T) {
    let mut samples = Vec::with_capacity(reps);
    let mut output = None;
    for _ in 0..reps {
        let start = Instant::now();
        output = Some(std::hint::black_box(work()));
        samples.push(ms(start.elapsed()));
    }
    (median(&samples), output.expect("at least one repetition"))
}

/// The durations of a `Server-Timing` header, by metric name, in ms.
fn server_timing(response: &reqwest::Response) -> HashMap<String, f64> {
    let value = response
        .headers()
        .get("server-timing")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    value
        .split(',')
        .filter_map(|metric| {
            let mut parts = metric.trim().split(';');
            let name = parts.next()?.to_owned();
            let dur = parts.find_map(|p| p.strip_prefix("dur="))?.parse().ok()?;
            Some((name, dur))
        })
        .collect()
}

/// Medians of named samples.
#[derive(Default)]
struct Samples(HashMap<&'static str, Vec<f64>>);

impl Samples {
    fn push(&mut self, name: &'static str, value: f64) {
        self.0.entry(name).or_default().push(value);
    }

    fn median(&self, name: &str) -> f64 {
        self.0.get(name).map_or(f64::NAN, |samples| median(samples))
    }
}

/// A keep-alive HTTP/1.1 client that never goes through a proxy.
fn client() -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?)
}

/// Uploads `file` to A and reads it back from B `reps` times; every read is B's first of a new
/// image. Returns the samples and the last PNG B served.
async fn upload_and_share(
    client: &reqwest::Client,
    a: &Server,
    b: &Server,
    file: &Bytes,
    mime: &str,
    reps: usize,
) -> Result<(Samples, Bytes), Error> {
    let mut samples = Samples::default();
    let mut png = Bytes::new();
    for _ in 0..reps {
        let a_faults_before = a.minor_faults();
        let start = Instant::now();
        let response = client
            .post(a.url("/image"))
            .header("Content-Type", mime)
            .body(file.clone())
            .send()
            .await?;
        if response.status() != 201 {
            return Err(format!(
                "A answered {}: {}",
                response.status(),
                response.text().await?
            )
            .into());
        }
        let timing = server_timing(&response);
        response.bytes().await?;
        let uploaded = Instant::now();
        samples.push("a_faults", (a.minor_faults() - a_faults_before) as f64);
        let faults_before = b.minor_faults();
        let response = client.get(b.url("/image.png")).send().await?;
        if response.status() != 200 {
            return Err(format!("B answered {}", response.status()).into());
        }
        let read = server_timing(&response);
        png = response.bytes().await?;
        let shared = Instant::now();
        samples.push("b_faults", (b.minor_faults() - faults_before) as f64);

        samples.push("upload", ms(uploaded - start));
        for step in ["receive", "decode", "write"] {
            samples.push(step, timing.get(step).copied().unwrap_or(f64::NAN));
        }
        // A plain PNG's own image data copied into the PNG area (not sent for other files).
        samples.push(
            "share_copy",
            timing.get("share").copied().unwrap_or(f64::NAN),
        );
        samples.push("cold_get", ms(shared - uploaded));
        for step in ["read", "encode"] {
            samples.push(step, read.get(step).copied().unwrap_or(f64::NAN));
        }
        samples.push("share", ms(shared - start));
    }
    Ok((samples, png))
}

/// The medians of [`must_encode_get`]: to the last byte and to the response's head, in ms; B's
/// minor page faults during the GET.
#[derive(Debug, Clone, Copy)]
struct MustEncode {
    total: f64,
    head: f64,
    faults: f64,
    /// CPU time per GET (the mean over the repetitions): B's, and this process's (the
    /// client's) while it waited for the response and read it.
    server_cpu: f64,
    client_cpu: f64,
    /// The encoder alone on the same pixels, timed before each GET (so that both see the
    /// machine in the same state): the median, and its CPU time per encode.
    encoder: f64,
    encoder_cpu: f64,
}

impl MustEncode {
    /// The shortest the GET could take on `cores` cores, in ms: the CPU time it took, B's and
    /// the client's, spread over all of them without a gap.
    fn cpu_floor(&self, cores: usize) -> f64 {
        (self.server_cpu + self.client_cpu) / cores as f64
    }
}

/// Stores `file` with `shmimage put` (so that no server encodes it) and times B's `GET
/// /image.png` to its last byte, `reps` times, each time after one encode of `raster` (the
/// file's pixels) by the encoder alone. Every GET must encode: B has not seen the
/// image, and the PNG area holds no PNG of it.
async fn must_encode_get(
    client: &reqwest::Client,
    binary: &Path,
    segment: &str,
    b: &Server,
    file: &Path,
    raster: &Raster,
    reps: usize,
) -> Result<MustEncode, Error> {
    let (mut samples, mut heads) = (Vec::new(), Vec::new());
    let (mut faults, mut encodes) = (Vec::new(), Vec::new());
    let (mut server_cpu, mut client_cpu, mut encoder_cpu) = (0.0, 0.0, 0.0);
    for _ in 0..reps {
        let (cpu_before, started) = (own_cpu_ms(), Instant::now());
        drop(imaging::encode_png(raster)?);
        encodes.push(ms(started.elapsed()));
        encoder_cpu += own_cpu_ms() - cpu_before;
        let put = Command::new(binary)
            .arg("put")
            .arg(file)
            .args(["--segment", segment])
            .output()?;
        if !put.status.success() {
            return Err(format!(
                "shmimage put failed: {}",
                String::from_utf8_lossy(&put.stderr)
            )
            .into());
        }
        let faults_before = b.minor_faults();
        let (server_cpu_before, client_cpu_before) = (b.cpu_ms(), own_cpu_ms());
        let start = Instant::now();
        let response = client.get(b.url("/image.png")).send().await?;
        heads.push(ms(start.elapsed()));
        if response.status() != 200 {
            return Err(format!("B answered {}", response.status()).into());
        }
        let streamed = response
            .headers()
            .get("server-timing")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("png;desc=local"));
        response.bytes().await?;
        samples.push(ms(start.elapsed()));
        server_cpu += b.cpu_ms() - server_cpu_before;
        client_cpu += own_cpu_ms() - client_cpu_before;
        faults.push((b.minor_faults() - faults_before) as f64);
        if !streamed {
            return Err("B did not encode the image it was given by shmimage put".into());
        }
    }
    Ok(MustEncode {
        total: median(&samples),
        head: median(&heads),
        faults: median(&faults),
        server_cpu: server_cpu / reps as f64,
        client_cpu: client_cpu / reps as f64,
        encoder: median(&encodes),
        encoder_cpu: encoder_cpu / reps as f64,
    })
}

/// Requests per second and MB/s of `GET url` over [`CONNECTIONS`] keep-alive connections for
/// [`ROUND`].
async fn throughput(url: &str) -> Result<(f64, f64), Error> {
    let clients: Vec<reqwest::Client> = (0..CONNECTIONS)
        .map(|_| client())
        .collect::<Result<_, _>>()?;
    // Open every connection before the clock starts.
    for client in &clients {
        client.get(url).send().await?.bytes().await?;
    }
    let start = Instant::now();
    let deadline = start + ROUND;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let (mut requests, mut bytes) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let response = client.get(&url).send().await?;
                    if response.status() != 200 {
                        return Err::<_, Error>(format!("{url}: {}", response.status()).into());
                    }
                    bytes += response.bytes().await?.len() as u64;
                    requests += 1;
                }
                Ok((requests, bytes))
            })
        })
        .collect();
    let (mut requests, mut bytes) = (0, 0);
    for task in tasks {
        let (r, b) = task.await??;
        requests += r;
        bytes += b;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok((requests as f64 / seconds, bytes as f64 / 1e6 / seconds))
}

/// The criterion median of `cargo bench --features bench --bench segment`'s `case`, in ns, if it ran.
fn criterion_median_ns(target: &Path, group: &str, case: &str) -> Option<f64> {
    let path = target
        .join("criterion")
        .join(group)
        .join(case)
        .join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

// ---------------------------------------------------------------------------------------------
// The run

/// What one image size measured.
struct SizeResult {
    width: u32,
    height: u32,
    json: Value,
    chart: HashMap<&'static str, f64>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice()
        && flag == "--serve-dir"
    {
        return serve_dir(PathBuf::from(dir)).await;
    }
    if let [flag, dir] = args.as_slice()
        && flag == "--photos"
    {
        return write_photos(Path::new(dir));
    }
    let quick = args.iter().any(|arg| arg == "--quick");
    let sizes: Vec<(u32, u32, usize)> = if quick {
        SIZES[..3]
            .iter()
            .map(|&(w, h, r)| (w, h, r.min(3)))
            .collect()
    } else {
        SIZES.to_vec()
    };

    let binary = server_binary()?;
    let target = target_dir()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let run_started = Instant::now();
    let client = client()?;
    let limits = DecodeLimits {
        max_pixels: 100_000_000,
    };

    let scratch = std::env::temp_dir().join(format!("shmimage-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let file_server = Server::start(
        &std::env::current_exe()?,
        &["--serve-dir", &scratch.to_string_lossy()],
    )?;

    // Memory first, on a pair of servers that have seen nothing else.
    let rss = measure_memory(&client, &binary).await?;
    if args.iter().any(|arg| arg == "--memory") {
        return Ok(());
    }

    let segment = format!("e2e{}", std::process::id() % 1_000_000);
    let a = Server::shmimage(&binary, &segment)?;
    let b = Server::shmimage(&binary, &segment)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = json!({ "a": a.memory_report(), "b": b.memory_report() });

    println!(
        "shmimage end to end: A {} and B {} on segment {segment:?}, ServeDir {}",
        a.addr, b.addr, file_server.addr
    );
    let mut results = Vec::new();
    let mut not_modified = Value::Null;
    for &(width, height, reps) in &sizes {
        let started = Instant::now();
        let image = photo_like(width, height);
        let decoded_bytes = image.as_raw().len();
        let files = [
            ("png", "image/png", Bytes::from(png_file(&image)?)),
            ("jpeg", "image/jpeg", Bytes::from(jpeg_file(&image)?)),
        ];
        drop(image);
        let mut formats = serde_json::Map::new();
        let mut chart = HashMap::new();
        let mut warm_png = Bytes::new();
        for (name, mime, file) in &files {
            // In process: decode the file, encode its pixels, and the image crate's Fast.
            let (decode_ms, decoded) = time_median(reps, || imaging::decode(file, &limits));
            let raster = decoded?.raster;
            let (encode_ms, png) = time_median(reps, || imaging::encode_png(&raster));
            let png_len = png?.len();
            let (fast_ms, fast) = time_median(reps.min(3), || image_crate_fast_png(&raster));
            let fast_len = fast?.len();

            let (samples, png) = upload_and_share(&client, &a, &b, file, mime, reps).await?;
            // The cold GET that must encode: the image stored with `shmimage put`, so that no
            // server encoded it, read from B to the last byte.
            let must_encode = if *name == "png" {
                let path = scratch.join("put.png");
                std::fs::write(&path, file)?;
                must_encode_get(&client, &binary, &segment, &b, &path, &raster, reps).await?
            } else {
                MustEncode {
                    total: f64::NAN,
                    head: f64::NAN,
                    faults: f64::NAN,
                    server_cpu: f64::NAN,
                    client_cpu: f64::NAN,
                    encoder: f64::NAN,
                    encoder_cpu: f64::NAN,
                }
            };
            drop(raster);
            let qt = match QT_SIZES.iter().find(|s| (s.0, s.1) == (width, height)) {
                Some(&(_, _, qt_reps)) => qt_path(&scratch, name, file, qt_reps)?,
                None => Value::Null,
            };
            let upload = samples.median("upload");
            let cold_get = samples.median("cold_get");
            chart.insert(
                if *name == "png" {
                    "upload_png"
                } else {
                    "upload_jpeg"
                },
                upload,
            );
            if *name == "png" {
                chart.insert("cold_get", cold_get);
            } else {
                chart.insert("share", samples.median("share"));
            }
            if *name == "png" {
                println!(
                    "{width:>5}x{height:<5} cold GET that must encode (after shmimage put), \
                     to the last byte: {:>8.2} ms (head {:.2}, B's page faults {:.0}) vs \
                     encoder {:>8.2} ms (each run before a GET): {:.2}x; CPU per GET: B {:.1} \
                     ms + client {:.1} ms against the encoder's {:.1} ms, so at least {:.2}x on \
                     {cores} cores",
                    must_encode.total,
                    must_encode.head,
                    must_encode.faults,
                    must_encode.encoder,
                    must_encode.total / must_encode.encoder,
                    must_encode.server_cpu,
                    must_encode.client_cpu,
                    must_encode.encoder_cpu,
                    must_encode.cpu_floor(cores) / must_encode.encoder,
                );
            }
            println!(
                "{width:>5}x{height:<5} {name:<4} {:>6.1} MB | upload {upload:>8.2} ms \
                 (receive {:.2} + decode {:.2} + write {:.2}) vs decode {decode_ms:>8.2} ms: \
                 {:.2}x | cold GET {cold_get:>8.2} ms (read {:.2} + encode {:.2}) vs encoder \
                 {encode_ms:>8.2} ms: {:.2}x; Fast 1 thread {fast_ms:>8.2} ms: {:.2}x faster; \
                 PNG {:.1} MB vs Fast {:.1} MB | share {:>8.2} ms",
                mb(file.len() as u64),
                samples.median("receive"),
                samples.median("decode"),
                samples.median("write"),
                upload / decode_ms,
                samples.median("read"),
                samples.median("encode"),
                cold_get / encode_ms,
                fast_ms / encode_ms,
                mb(png_len as u64),
                mb(fast_len as u64),
                samples.median("share"),
            );
            formats.insert(
                (*name).to_owned(),
                json!({
                    "file_mb": mb(file.len() as u64),
                    "upload_ms": upload,
                    "upload_receive_ms": samples.median("receive"),
                    "upload_decode_ms": samples.median("decode"),
                    "upload_write_ms": samples.median("write"),
                    "upload_share_copy_ms": samples.median("share_copy"),
                    "in_process_decode_ms": decode_ms,
                    "upload_over_decode": upload / decode_ms,
                    "cold_get_ms": cold_get,
                    "cold_get_read_ms": samples.median("read"),
                    "cold_get_encode_ms": samples.median("encode"),
                    "in_process_encode_ms": encode_ms,
                    "cold_get_over_encoder": cold_get / encode_ms,
                    "cold_get_must_encode_ms": must_encode.total,
                    "cold_get_must_encode_head_ms": must_encode.head,
                    "cold_get_must_encode_b_cpu_ms": must_encode.server_cpu,
                    "cold_get_must_encode_client_cpu_ms": must_encode.client_cpu,
                    "cold_get_must_encode_encoder_cpu_ms": must_encode.encoder_cpu,
                    "cold_get_must_encode_cpu_floor_over_encoder":
                        must_encode.cpu_floor(cores) / must_encode.encoder,
                    "cold_get_must_encode_b_minor_faults": must_encode.faults,
                    "cold_get_must_encode_encoder_ms": must_encode.encoder,
                    "cold_get_must_encode_over_encoder": must_encode.total / must_encode.encoder,
                    "image_fast_1_thread_ms": fast_ms,
                    "encoder_speedup_over_fast": fast_ms / encode_ms,
                    "png_mb": mb(png_len as u64),
                    "image_fast_png_mb": mb(fast_len as u64),
                    "share_ms": samples.median("share"),
                    "upload_minor_page_faults_a": samples.median("a_faults"),
                    "cold_get_minor_page_faults_b": samples.median("b_faults"),
                    "repetitions": reps,
                    "qt_path": qt_comparison(&qt, samples.median("share"), png.len()),
                }),
            );
            warm_png = png;
        }

        // Warm reads: B's cached PNG of the last upload, and the same bytes from a file.
        let mut warm = Value::Null;
        if width * height <= 3840 * 2160 {
            std::fs::write(scratch.join("image.png"), &warm_png)?;
            let served = client
                .get(file_server.url("/image.png"))
                .send()
                .await?
                .bytes()
                .await?;
            if served != warm_png {
                return Err("ServeDir served other bytes than B".into());
            }
            let (mut shm, mut dir) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                shm.push(throughput(&b.url("/image.png")).await?);
                dir.push(throughput(&file_server.url("/image.png")).await?);
            }
            let mean = |rounds: &[(f64, f64)]| {
                let n = rounds.len() as f64;
                (
                    rounds.iter().map(|r| r.0).sum::<f64>() / n,
                    rounds.iter().map(|r| r.1).sum::<f64>() / n,
                )
            };
            let (shm, dir) = (mean(&shm), mean(&dir));
            println!(
                "{width:>5}x{height:<5} warm GET, {CONNECTIONS} connections: B {:.0} req/s \
                 {:.0} MB/s, ServeDir {:.0} req/s {:.0} MB/s: {:.2}x",
                shm.0,
                shm.1,
                dir.0,
                dir.1,
                shm.0 / dir.0
            );
            warm = json!({
                "png_mb": mb(warm_png.len() as u64),
                "connections": CONNECTIONS,
                "shmimage_req_per_s": shm.0,
                "shmimage_mb_per_s": shm.1,
                "servedir_req_per_s": dir.0,
                "servedir_mb_per_s": dir.1,
                "over_servedir": shm.0 / dir.0,
            });
        }
        if (width, height) == (3840, 2160) {
            not_modified = measure_not_modified(&client, &b).await?;
        }
        println!(
            "{width:>5}x{height:<5} done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        results.push(SizeResult {
            width,
            height,
            json: json!({
                "width": width,
                "height": height,
                "pixels": u64::from(width) * u64::from(height),
                "decoded_mb": mb(decoded_bytes as u64),
                "formats": formats,
                "warm_get": warm,
            }),
            chart,
        });
    }
    let receive = measure_receive(&client, &a).await?;
    let peak = json!({ "a": a.memory_report(), "b": b.memory_report() });
    drop((a, b, file_server));
    let _ = std::fs::remove_dir_all(&scratch);

    let segment_bench = segment_bench(&target);
    let linearity = linearity(&results);
    print_summary(&results, &not_modified, &rss, &segment_bench, &linearity);
    println!("upload receive, 1920x1080 PNG: {receive}");

    let report = json!({
        "machine": machine(),
        "command": "cargo run --release --features bench --example e2e_bench",
        "sizes": results.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        "if_none_match_304": not_modified,
        "rss_3840x2160": rss,
        "receive_1920x1080_png": receive,
        "rss_main_pair": { "idle": idle, "after_all_sizes": peak },
        "segment_bench_3840x2160_rgba8": segment_bench,
        "linearity": linearity,
        "run_seconds": run_started.elapsed().as_secs_f64(),
    });
    let json_path = target.join("e2e-bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let chart_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/performance-chart.svg");
    draw_chart(&results, &chart_path)?;
    println!(
        "wrote {} and {} in {:.0} s",
        json_path.display(),
        chart_path.display(),
        run_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Peak and resting memory of a fresh pair of servers over three 3840x2160 cycles (a JPEG, a
/// PNG, a JPEG of the same photo uploaded to A, each read cold from B), after each cycle, as
/// `/proc/PID/status` says, and above idle in units of the decoded image.
async fn measure_memory(client: &reqwest::Client, binary: &Path) -> Result<Value, Error> {
    let segment = format!("rss{}", std::process::id() % 1_000_000);
    let a = Server::shmimage(binary, &segment)?;
    let b = Server::shmimage(binary, &segment)?;
    tokio::time::sleep(SETTLE).await;
    let (idle_a, idle_b) = (a.memory("VmRSS"), b.memory("VmRSS"));
    let image = photo_like(3840, 2160);
    let decoded = image.as_raw().len() as u64;
    let jpeg = Bytes::from(jpeg_file(&image)?);
    let png = Bytes::from(png_file(&image)?);
    drop(image);
    let over_idle = |server: &Server, idle: u64| {
        let times = |bytes: u64| bytes.saturating_sub(idle) as f64 / decoded as f64;
        let mut report = server.memory_report();
        report["peak_over_idle_x_decoded"] = json!(times(server.memory("VmHWM")));
        report["rss_over_idle_x_decoded"] = json!(times(server.memory("VmRSS")));
        report
    };
    let mut cycles = Vec::new();
    for (index, (name, mime, file)) in [
        ("JPEG", "image/jpeg", &jpeg),
        ("PNG", "image/png", &png),
        ("JPEG", "image/jpeg", &jpeg),
    ]
    .into_iter()
    .enumerate()
    {
        upload_and_share(client, &a, &b, file, mime, 1).await?;
        tokio::time::sleep(SETTLE).await;
        let (writer, reader) = (over_idle(&a, idle_a), over_idle(&b, idle_b));
        let x = |report: &Value, key: &str| report[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "memory after cycle {} ({name} {:.1} MB): A peak {:.1} MB ({:.2}x), now {:.1} MB \
             ({:.2}x; anon {:.1}, shmem {:.1}) | B peak {:.1} MB ({:.2}x), now {:.1} MB ({:.2}x; \
             anon {:.1}, shmem {:.1})",
            index + 1,
            mb(file.len() as u64),
            x(&writer, "hwm_mb"),
            x(&writer, "peak_over_idle_x_decoded"),
            x(&writer, "rss_mb"),
            x(&writer, "rss_over_idle_x_decoded"),
            x(&writer, "anon_mb"),
            x(&writer, "shmem_mb"),
            x(&reader, "hwm_mb"),
            x(&reader, "peak_over_idle_x_decoded"),
            x(&reader, "rss_mb"),
            x(&reader, "rss_over_idle_x_decoded"),
            x(&reader, "anon_mb"),
            x(&reader, "shmem_mb"),
        );
        cycles.push(json!({ "upload": name, "writer_a": writer, "reader_b": reader }));
    }
    Ok(json!({
        "image": "3840x2160 photo, uploaded as JPEG q90, PNG, JPEG q90; decoded RGB 8-bit",
        "decoded_mb": mb(decoded),
        "idle": { "writer_a_rss_mb": mb(idle_a), "reader_b_rss_mb": mb(idle_b) },
        "after_each_cycle": cycles,
    }))
}

/// `Server-Timing` `receive` of [`RECEIVE_UPLOADS`] uploads of a 1920x1080 PNG to A, sent as a
/// form (as browsers and `curl -F` send it) and as a raw body: median and p90 in ms.
async fn measure_receive(client: &reqwest::Client, a: &Server) -> Result<Value, Error> {
    let image = photo_like(1920, 1080);
    let png = Bytes::from(png_file(&image)?);
    drop(image);
    let mut out = serde_json::Map::new();
    for how in ["form", "raw"] {
        let mut samples = Vec::with_capacity(RECEIVE_UPLOADS);
        for _ in 0..RECEIVE_UPLOADS {
            let request = client.post(a.url("/image"));
            let request = if how == "form" {
                let part = reqwest::multipart::Part::bytes(png.to_vec())
                    .file_name("photo.png")
                    .mime_str("image/png")?;
                request.multipart(reqwest::multipart::Form::new().part("image", part))
            } else {
                request
                    .header("Content-Type", "image/png")
                    .body(png.clone())
            };
            let response = request.send().await?;
            if response.status() != 201 {
                return Err(format!("A answered {}", response.status()).into());
            }
            let timing = server_timing(&response);
            response.bytes().await?;
            samples.push(timing.get("receive").copied().unwrap_or(f64::NAN));
        }
        let (p50, p90) = (median(&samples), percentile(&samples, 90.0));
        println!(
            "upload receive, 1920x1080 PNG of {:.2} MB as {how}: median {p50:.2} ms, p90 \
             {p90:.2} ms ({RECEIVE_UPLOADS} uploads)",
            mb(png.len() as u64)
        );
        out.insert(
            how.to_owned(),
            json!({
                "body_mb": mb(png.len() as u64),
                "uploads": RECEIVE_UPLOADS,
                "median_ms": p50,
                "p90_ms": p90,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Qt's data path for `file` (`examples/qt_path.py`: the example's `loadFromFile()` and
/// `loadFromMemory()`, then the PNG saved), `reps` times: the script's JSON, or `Null` when Qt
/// cannot run here.
fn qt_path(scratch: &Path, name: &str, file: &[u8], reps: usize) -> Result<Value, Error> {
    let path = scratch.join(format!("qt-input.{name}"));
    std::fs::write(&path, file)?;
    let python =
        std::env::var_os("SHMIMAGE_QT_PYTHON").unwrap_or_else(|| "/usr/bin/python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/qt_path.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--reps")
        .arg(reps.to_string())
        .arg(&path)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&path);
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!(
                "Qt's data path did not run ({}): {}; `apt-get install python3-pyqt6` to compare \
                 with it",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return Ok(Value::Null);
        }
        Err(error) => {
            eprintln!("cannot run {}: {error}", python.to_string_lossy());
            return Ok(Value::Null);
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().ok_or("qt_path.py printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// A share of `share_ms` with a PNG of `png_len` bytes against Qt's path `qt`.
fn qt_comparison(qt: &Value, share_ms: f64, png_len: usize) -> Value {
    let (Some(total), Some(qt_png)) = (qt["ms"]["total"].as_f64(), qt["png_bytes"].as_f64()) else {
        return Value::Null;
    };
    let speedup = total / share_ms;
    let size = png_len as f64 / qt_png;
    json!({
        "qt": qt,
        "qt_total_ms": total,
        "share_ms": share_ms,
        "speedup": speedup,
        "speedup_target": QT_SPEEDUP_TARGET,
        "speedup_met": speedup >= QT_SPEEDUP_TARGET,
        "png_mb": mb(png_len as u64),
        "qt_png_mb": qt_png / 1e6,
        "png_size_over_qt": size,
        "png_size_target": QT_PNG_SIZE_TARGET,
        "png_size_met": size <= QT_PNG_SIZE_TARGET,
    })
}

/// p50 and p99 of `GET /image.png` with `If-None-Match` naming B's current image.
async fn measure_not_modified(client: &reqwest::Client, b: &Server) -> Result<Value, Error> {
    let etag = client
        .get(b.url("/image.png"))
        .send()
        .await?
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .ok_or("no ETag")?
        .to_owned();
    let mut samples = Vec::with_capacity(NOT_MODIFIED_REQUESTS);
    for _ in 0..NOT_MODIFIED_REQUESTS {
        let start = Instant::now();
        let response = client
            .get(b.url("/image.png"))
            .header("If-None-Match", &etag)
            .send()
            .await?;
        if response.status() != 304 {
            return Err(format!("If-None-Match got {}", response.status()).into());
        }
        response.bytes().await?;
        samples.push(ms(start.elapsed()));
    }
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    println!(
        "If-None-Match -> 304, {NOT_MODIFIED_REQUESTS} requests on one connection: p50 {p50:.3} ms, p99 {p99:.3} ms"
    );
    Ok(json!({ "requests": NOT_MODIFIED_REQUESTS, "p50_ms": p50, "p99_ms": p99 }))
}

/// The segment bench's 3840x2160 RGBA8 medians, as GB/s and ratios to memcpy, if it ran.
fn segment_bench(target: &Path) -> Value {
    let group = "segment_3840x2160_rgba8";
    let bytes = 3840.0 * 2160.0 * 4.0;
    let gbps = |case| criterion_median_ns(target, group, case).map(|ns| bytes / ns);
    match (
        gbps("write"),
        gbps("read"),
        gbps("memcpy"),
        gbps("alloc_copy"),
    ) {
        (Some(write), Some(read), Some(memcpy), alloc_copy) => json!({
            "write_gb_per_s": write,
            "read_gb_per_s": read,
            "memcpy_gb_per_s": memcpy,
            "alloc_copy_gb_per_s": alloc_copy,
            "write_over_memcpy": write / memcpy,
            "read_over_memcpy": read / memcpy,
            "read_over_alloc_copy": alloc_copy.map(|alloc| read / alloc),
        }),
        _ => Value::Null,
    }
}

/// The log-log slope of each charted time against pixel count, from 1920x1080 up (the small
/// size is dominated by fixed costs), and its nanoseconds per pixel at every size.
fn linearity(results: &[SizeResult]) -> Value {
    let mut out = serde_json::Map::new();
    for series in ["upload_jpeg", "upload_png", "cold_get", "share"] {
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter_map(|r| {
                let pixels = f64::from(r.width) * f64::from(r.height);
                Some((pixels, *r.chart.get(series)?))
            })
            .collect();
        let large: Vec<(f64, f64)> = points
            .iter()
            .filter(|(pixels, _)| *pixels >= 1920.0 * 1080.0)
            .map(|(p, t)| (p.ln(), t.ln()))
            .collect();
        let n = large.len() as f64;
        let (mx, my) = (
            large.iter().map(|p| p.0).sum::<f64>() / n,
            large.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let slope = large.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / large.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        let ns_per_pixel: Vec<f64> = points.iter().map(|(p, t)| t * 1e6 / p).collect();
        out.insert(
            series.to_owned(),
            json!({ "log_log_slope_from_1080p": slope, "ns_per_pixel": ns_per_pixel }),
        );
    }
    Value::Object(out)
}

fn print_summary(
    results: &[SizeResult],
    not_modified: &Value,
    rss: &Value,
    segment: &Value,
    linearity: &Value,
) {
    println!();
    println!(
        "| size | file | upload ms | decode ms (in process) | upload/decode | cold GET ms | encoder ms | cold/encoder | Fast 1-thread ms | share ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for result in results {
        for (name, f) in result.json["formats"].as_object().into_iter().flatten() {
            let n = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {}x{} | {name} {:.2} MB | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
                result.width,
                result.height,
                n("file_mb"),
                n("upload_ms"),
                n("in_process_decode_ms"),
                n("upload_over_decode"),
                n("cold_get_ms"),
                n("in_process_encode_ms"),
                n("cold_get_over_encoder"),
                n("image_fast_1_thread_ms"),
                n("share_ms"),
            );
        }
    }
    println!();
    println!(
        "| size | file | share ms | Qt's path ms (load + PNG + copy + read + save) | Qt/share | PNG MB | Qt's PNG MB | PNG/Qt's |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for result in results {
        for (name, f) in result.json["formats"].as_object().into_iter().flatten() {
            let qt = &f["qt_path"];
            if qt.is_null() {
                continue;
            }
            let n = |key: &str| qt[key].as_f64().unwrap_or(f64::NAN);
            let step = |key: &str| qt["qt"]["ms"][key].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {}x{} | {name} | {:.2} | {:.0} ({:.0} + {:.0} + {:.0} + {:.0} + {:.0}) | {:.1}x{} | {:.2} | {:.2} | {:.2}{} |",
                result.width,
                result.height,
                n("share_ms"),
                n("qt_total_ms"),
                step("load"),
                step("serialize_png"),
                step("copy"),
                step("read_decode"),
                step("save_png"),
                n("speedup"),
                if n("speedup") >= QT_SPEEDUP_TARGET {
                    ""
                } else {
                    " (below 50x)"
                },
                n("png_mb"),
                n("qt_png_mb"),
                n("png_size_over_qt"),
                if n("png_size_over_qt") <= QT_PNG_SIZE_TARGET {
                    ""
                } else {
                    " (above 1.4x)"
                },
            );
        }
    }
    println!("304: {not_modified}");
    println!("memory over three 3840x2160 cycles: {rss}");
    println!("segment bench 3840x2160 RGBA8: {segment}");
    println!("linearity: {linearity}");
}

/// What machine this ran on.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        });
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().map(str::to_owned));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|release| release.trim().to_owned());
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory": memory,
        "kernel": kernel,
    })
}

/// Time against pixel count, log-log, for upload, cold GET and share, with a line of slope 1.
fn draw_chart(results: &[SizeResult], path: &Path) -> Result<(), Error> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let pixels: Vec<f64> = results
        .iter()
        .map(|r| f64::from(r.width) * f64::from(r.height))
        .collect();
    let times = results.iter().flat_map(|r| r.chart.values().copied());
    let (low, high) = times.fold((f64::MAX, 0.0f64), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let x_range = (pixels[0] / 1.5)..(pixels[pixels.len() - 1] * 1.5);
    let y_range = (low / 2.0)..(high * 2.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "shmimage: time against image size (medians, log-log)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("pixels (256x256, 1920x1080, 3840x2160, 7680x4320)")
        .y_desc("milliseconds")
        .x_label_formatter(&|x| format!("{:.1} MP", x / 1e6))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    let series: [(&str, &str, RGBColor); 4] = [
        ("upload_jpeg", "upload, JPEG q90 (POST /image to A)", BLUE),
        ("upload_png", "upload, PNG (POST /image to A)", CYAN),
        ("cold_get", "cold GET /image.png from B", RED),
        ("share", "share: JPEG at A -> PNG at B", RGBColor(0, 140, 0)),
    ];
    for (key, label, color) in series {
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter_map(|r| Some((f64::from(r.width) * f64::from(r.height), *r.chart.get(key)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(PointSeries::of_element(
            points,
            4,
            color.filled(),
            &|c, s, st| Circle::new(c, s, st),
        ))?;
    }
    // Linear growth through the share time at 3840x2160 (or the largest size measured).
    if let Some(anchor) = results
        .iter()
        .rev()
        .find(|r| r.width <= 3840)
        .and_then(|r| {
            Some((
                f64::from(r.width) * f64::from(r.height),
                *r.chart.get("share")?,
            ))
        })
    {
        let line: Vec<(f64, f64)> = [pixels[0], pixels[pixels.len() - 1]]
            .iter()
            .map(|&p| (p, anchor.1 * p / anchor.0))
            .collect();
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(DashedLineSeries::new(line, 6, 4, grey.stroke_width(1)))?
            .label("linear in pixels (through share at 3840x2160)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
