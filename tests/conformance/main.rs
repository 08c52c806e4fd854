//! Conformance: real image files, written by other people's encoders, uploaded to one server and
//! read back from a second, judged against an established reference decoder.
//!
//! Every row of `cases.tsv` is one test, named after its file (`cargo test --test conformance --
//! tiff/` runs the TIFF ones). A file the server must accept is uploaded to server A; server B's
//! `/image.png` must then have exactly the pixel format the row names and match
//! `expected/FILE.png` (made once by the reference decoder, see `make-corpus.py`) exactly or
//! within the row's tolerance. A file the server must refuse must get that status and a message
//! with the row's phrase, and must leave the shared image as it was. No file may get a 5xx.
//!
//! The tests share a few pairs of servers (one pair per test thread) instead of starting two
//! processes per file.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod memory;

use helpers::{TestServer, fresh_segment, spawn_server};
use image::{DynamicImage, ImageFormat};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a row of `cases.tsv` expects.
#[derive(Debug, Clone)]
enum Expect {
    /// `201`, serving `color` ("RGB 16-bit", ...), matching the expected picture by `check`.
    Accept { color: String, check: Check },
    /// A refusal with `status` whose message contains `phrase`.
    Refuse { status: u16, phrase: String },
}

/// How closely the served pixels must match the expected ones.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Every byte equal.
    Exact,
    /// Mean and largest difference per sample, in 1/255ths of full scale.
    Close { mean: f64, max: f64 },
}

#[derive(Debug, Clone)]
struct Case {
    file: String,
    expect: Expect,
    class: String,
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn parse_check(text: &str) -> Check {
    if text == "exact" {
        return Check::Exact;
    }
    let mut mean = None;
    let mut max = None;
    for part in text
        .strip_prefix("close ")
        .expect("exact or close ...")
        .split(' ')
    {
        let (key, value) = part.split_once('=').expect("key=value");
        let value: f64 = value.parse().expect("a number");
        match key {
            "mean" => mean = Some(value),
            "max" => max = Some(value),
            other => panic!("unknown tolerance {other}"),
        }
    }
    Check::Close {
        mean: mean.expect("mean="),
        max: max.expect("max="),
    }
}

fn read_cases() -> Vec<Case> {
    let table = std::fs::read_to_string(conformance_dir().join("cases.tsv")).expect("cases.tsv");
    let mut cases = Vec::new();
    for line in table.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, expect, check, _reference, class] = fields[..] else {
            panic!("cases.tsv: a row needs 5 tab-separated fields: {line:?}");
        };
        let expect = match expect.split_once(' ') {
            Some(("201", color)) => Expect::Accept {
                color: color.to_owned(),
                check: parse_check(check),
            },
            _ => Expect::Refuse {
                status: expect.parse().expect("a status"),
                phrase: check.to_owned(),
            },
        };
        cases.push(Case {
            file: file.to_owned(),
            expect,
            class: class.to_owned(),
        });
    }
    cases
}

/// Every file under `dir`, relative to it, with `/` separators.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read the corpus") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir");
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// Two servers on one fresh segment: uploads go to `writer`, reads come from `reader`.
struct Pair {
    writer: TestServer,
    reader: TestServer,
}

/// Pairs not in use by a test right now.
type Pool = Arc<Mutex<Vec<Pair>>>;

fn take_pair(pool: &Pool) -> Pair {
    let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    idle.unwrap_or_else(|| {
        let segment = fresh_segment();
        Pair {
            writer: spawn_server(&segment),
            reader: spawn_server(&segment),
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The `seq` of the segment's image as `server` reports it (0 before any image).
async fn current_seq(server: &TestServer) -> u64 {
    server.segment_state().await["seq"].as_u64().unwrap_or(0)
}

fn decode_png(bytes: &[u8], what: &str) -> Result<DynamicImage, Failed> {
    image::load_from_memory_with_format(bytes, ImageFormat::Png)
        .map_err(|error| format!("{what} is not a PNG: {error}").into())
}

/// Every sample of `image` in 0..=255 (16-bit samples scaled down, not rounded).
fn unit_samples(image: &DynamicImage) -> Vec<f64> {
    let bytes = image.as_bytes();
    if image.color().bytes_per_pixel() / image.color().channel_count() == 2 {
        bytes
            .chunks_exact(2)
            .map(|pair| f64::from(u16::from_ne_bytes([pair[0], pair[1]])) / 257.0)
            .collect()
    } else {
        bytes.iter().map(|&b| f64::from(b)).collect()
    }
}

fn compare(served: &DynamicImage, expected: &DynamicImage, check: Check) -> Result<(), Failed> {
    if (served.width(), served.height()) != (expected.width(), expected.height()) {
        return Err(format!(
            "served {}x{}, expected {}x{}",
            served.width(),
            served.height(),
            expected.width(),
            expected.height()
        )
        .into());
    }
    if served.color() != expected.color() {
        return Err(format!(
            "served a {:?} PNG, expected {:?}",
            served.color(),
            expected.color()
        )
        .into());
    }
    let (served_samples, expected_samples) = (unit_samples(served), unit_samples(expected));
    let differences: Vec<f64> = served_samples
        .iter()
        .zip(&expected_samples)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let largest = differences.iter().copied().fold(0.0, f64::max);
    let mean = differences.iter().sum::<f64>() / differences.len().max(1) as f64;
    match check {
        Check::Exact if served.as_bytes() != expected.as_bytes() => Err(format!(
            "pixels differ: mean difference {mean:.3}, largest {largest:.3} (in 1/255ths)"
        )
        .into()),
        Check::Close {
            mean: mean_limit,
            max,
        } if mean > mean_limit || largest > max => Err(format!(
            "pixels differ too much: mean difference {mean:.3} (at most {mean_limit}), \
                 largest {largest:.3} (at most {max}), in 1/255ths"
        )
        .into()),
        _ => Ok(()),
    }
}

async fn run_case(pair: &Pair, case: &Case) -> Result<(), Failed> {
    let dir = conformance_dir();
    let bytes = std::fs::read(dir.join("files").join(&case.file))
        .map_err(|error| format!("read {}: {error}", case.file))?;
    let before = current_seq(&pair.reader).await;
    let response = pair
        .writer
        .upload_raw(bytes, "application/octet-stream")
        .await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status >= 500 {
        return Err(format!("{} answered {status}: {body}", case.file).into());
    }
    match &case.expect {
        Expect::Accept { color, check } => {
            if status != 201 {
                return Err(format!("expected 201 {color}, got {status}: {body}").into());
            }
            let stored: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("201 without JSON: {e}"))?;
            if stored["color"] != color.as_str() {
                return Err(format!("stored as {}, expected {color}", stored["color"]).into());
            }
            let png = pair.reader.get("/image.png").await;
            if png.status() != 200 {
                return Err(format!("GET /image.png from B: {}", png.status()).into());
            }
            let png = png
                .bytes()
                .await
                .map_err(|e| format!("read the PNG: {e}"))?;
            let served = decode_png(&png, "B's /image.png")?;
            let expected_path = dir.join("expected").join(format!("{}.png", case.file));
            let expected_bytes = std::fs::read(&expected_path)
                .map_err(|e| format!("read {}: {e}", expected_path.display()))?;
            let expected = decode_png(&expected_bytes, "the expected picture")?;
            compare(&served, &expected, *check)
        }
        Expect::Refuse {
            status: wanted,
            phrase,
        } => {
            let after = current_seq(&pair.reader).await;
            if status != *wanted {
                return Err(format!("expected {wanted}, got {status}: {body}").into());
            }
            let message: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{status} without JSON: {e}"))?;
            let message = message["error"].as_str().unwrap_or_default();
            if !message.contains(phrase.as_str()) {
                return Err(format!("the message does not say {phrase:?}: {message}").into());
            }
            if after != before {
                return Err(format!(
                    "the refused upload changed the image: seq {before} -> {after}"
                )
                .into());
            }
            Ok(())
        }
    }
}

fn main() {
    let arguments = Arguments::from_args();
    let cases = read_cases();

    // The table and the folder must agree: no file without a row, no row without a file.
    let dir = conformance_dir();
    let files = files_under(&dir.join("files"));
    let listed: Vec<String> = cases.iter().map(|case| case.file.clone()).collect();
    let unlisted: Vec<&String> = files.iter().filter(|file| !listed.contains(file)).collect();
    let missing: Vec<&String> = listed.iter().filter(|file| !files.contains(file)).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "cases.tsv and files/ disagree: without a row {unlisted:?}, without a file {missing:?}"
    );

    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let mut trials: Vec<Trial> = cases
        .into_iter()
        .map(|case| {
            let pool = Arc::clone(&pool);
            let name = case.file.clone();
            let kind = case.class.clone();
            Trial::test(name, move || {
                let pair = take_pair(&pool);
                let outcome = runtime().block_on(run_case(&pair, &case));
                pool.lock().unwrap_or_else(|e| e.into_inner()).push(pair);
                outcome.map_err(|failure| {
                    format!(
                        "{} ({}): {}",
                        case.file,
                        case.class,
                        failure.message().unwrap_or("failed")
                    )
                    .into()
                })
            })
            .with_kind(kind.split(' ').next().unwrap_or_default().to_lowercase())
        })
        .collect();
    trials.extend(memory::trials());

    let conclusion = libtest_mimic::run(&arguments, trials);
    // Stop the servers before the process exits.
    pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
    conclusion.exit();
}
