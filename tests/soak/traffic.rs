//! The clients of the soak: uploaders that load tagged images of varying sizes and formats
//! (encoded as fast PNG, as forms and as raw bodies), and readers that fetch `/image.png`
//! (checking each image's id and checksum) and `/api/segment` (checking that the sequence
//! number never goes back), until told to stop.

use crate::images::{ImageId, tagged_raster, verify_tagged};
use crate::tally::{Route, Tally};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat};
use reqwest::multipart::{Form, Part};
use shmimage::raster::{PixelFormat, Raster};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One image an uploader sends: its id, and its PNG.
pub struct Tagged {
    pub id: ImageId,
    pub png: Arc<Vec<u8>>,
}

/// The images uploader `uploader` sends: small ones of every pixel format and varied sizes,
/// and one medium 1500x1200 RGB image (5.4 MB of pixels), so the segment's slots keep growing
/// and shrinking. Ids differ between uploaders.
pub fn pool(uploader: u64, uploaders: u64) -> Vec<Tagged> {
    let mut ids: Vec<ImageId> = (0..12)
        .map(|j| ImageId(1 + uploader + uploaders * j))
        .collect();
    ids.push(ImageId(1_000_000 + uploader));
    ids.into_iter()
        .map(|id| Tagged {
            id,
            png: Arc::new(fast_png(&tagged_raster(id))),
        })
        .collect()
}

/// `raster` as a PNG with fast compression and no filter: the client must not be the
/// bottleneck.
pub fn fast_png(raster: &Raster) -> Vec<u8> {
    let color = ExtendedColorType::from(raster.format());
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::NoFilter)
        .write_image(raster.pixels(), raster.width(), raster.height(), color)
        .expect("encode a tagged image");
    png
}

/// A decoded PNG as a raster, in the pixel format it came in.
pub fn raster_of(image: DynamicImage) -> Result<Raster, String> {
    let format = match image.color() {
        image::ColorType::L8 => PixelFormat::L8,
        image::ColorType::La8 => PixelFormat::La8,
        image::ColorType::Rgb8 => PixelFormat::Rgb8,
        image::ColorType::Rgba8 => PixelFormat::Rgba8,
        image::ColorType::L16 => PixelFormat::L16,
        image::ColorType::La16 => PixelFormat::La16,
        image::ColorType::Rgb16 => PixelFormat::Rgb16,
        image::ColorType::Rgba16 => PixelFormat::Rgba16,
        other => return Err(format!("a PNG in {other:?}")),
    };
    let (width, height) = (image.width(), image.height());
    Raster::new(width, height, format, image.as_bytes().to_vec()).map_err(|e| e.to_string())
}

/// The id of the tagged image in `png`, or what is wrong with it.
pub fn verify_png(png: &[u8]) -> Result<ImageId, String> {
    let image = image::load_from_memory_with_format(png, ImageFormat::Png)
        .map_err(|e| format!("not a PNG: {e}"))?;
    verify_tagged(&raster_of(image)?)
}

/// What every client task shares.
#[derive(Clone)]
pub struct Shared {
    pub tally: Arc<Tally>,
    pub stop: Arc<AtomicBool>,
    /// Every id any uploader sends.
    pub known: Arc<HashSet<u64>>,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A client that keeps its connections alive, as browsers and scripts do.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build an HTTP client")
}

/// Uploads the images of `pool` in turn to server `server` at `base` (`http://ADDR`), as a
/// form and as a raw body alternately, until stopped.
pub async fn upload_loop(shared: Shared, server: usize, base: String, pool: Vec<Tagged>) {
    let client = client();
    let url = format!("{base}/image");
    let mut turn = 0usize;
    while shared.running() {
        let image = &pool[turn % pool.len()];
        let request = if turn.is_multiple_of(2) {
            let part = Part::bytes(image.png.as_ref().clone())
                .file_name(format!("{}.png", image.id.0))
                .mime_str("image/png")
                .expect("a MIME type");
            client.post(&url).multipart(Form::new().part("image", part))
        } else {
            client
                .post(&url)
                .header("Content-Type", "image/png")
                .body(image.png.as_ref().clone())
        };
        turn += 1;
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                shared
                    .tally
                    .count(Route::Upload, server, status, started.elapsed());
                if status != 201 {
                    shared.tally.problem(format!(
                        "upload of image {} to server {server}: {status} {body}",
                        image.id.0
                    ));
                }
            }
            Err(error) => {
                shared
                    .tally
                    .count(Route::Upload, server, 0, started.elapsed());
                shared.tally.problem(format!(
                    "upload of image {} to server {server}: {error}",
                    image.id.0
                ));
            }
        }
    }
}

/// Reads `/image.png` (with `If-None-Match`, verifying every new image) and `/api/segment`
/// from server `server` at `base` in turn, until stopped.
pub async fn read_loop(shared: Shared, server: usize, base: String) {
    let client = client();
    let png_url = format!("{base}/image.png");
    let api_url = format!("{base}/api/segment");
    let mut etag: Option<String> = None;
    let mut last_image_seq = 0u64;
    let mut last_segment_seq = 0u64;
    while shared.running() {
        // The image.
        let mut request = client.get(&png_url);
        if let Some(etag) = &etag {
            request = request.header("If-None-Match", etag);
        }
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let tag = response
                    .headers()
                    .get("etag")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await;
                shared
                    .tally
                    .count(Route::ImagePng, server, status, started.elapsed());
                match (status, body) {
                    (200, Ok(png)) => {
                        let seq = tag.as_deref().and_then(etag_seq).unwrap_or(0);
                        if seq < last_image_seq {
                            shared.tally.problem(format!(
                                "server {server} served image seq {seq} after {last_image_seq}"
                            ));
                        }
                        last_image_seq = last_image_seq.max(seq);
                        etag = tag;
                        let verdict = tokio::task::spawn_blocking(move || verify_png(&png))
                            .await
                            .expect("the verifying task ends");
                        match verdict {
                            Ok(id) if shared.known.contains(&id.0) => shared.tally.verified(),
                            Ok(id) => shared.tally.torn(format!(
                                "server {server}, seq {seq}: image {} was never uploaded",
                                id.0
                            )),
                            Err(problem) => shared
                                .tally
                                .torn(format!("server {server}, seq {seq}: {problem}")),
                        }
                    }
                    (304, _) => {}
                    (status, body) => shared.tally.problem(format!(
                        "GET /image.png from server {server}: {status} {:?}",
                        body.map(|b| String::from_utf8_lossy(&b).into_owned())
                    )),
                }
            }
            Err(error) => {
                shared
                    .tally
                    .count(Route::ImagePng, server, 0, started.elapsed());
                shared
                    .tally
                    .problem(format!("GET /image.png from server {server}: {error}"));
            }
        }

        // The segment's state.
        let started = Instant::now();
        match client.get(&api_url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                shared
                    .tally
                    .count(Route::ApiSegment, server, status, started.elapsed());
                let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                match state["seq"].as_u64() {
                    Some(seq) if status == 200 && state["image"].is_object() => {
                        if seq < last_segment_seq {
                            shared.tally.problem(format!(
                                "server {server}'s segment went back from seq {last_segment_seq} \
                                 to {seq}"
                            ));
                        }
                        last_segment_seq = last_segment_seq.max(seq);
                    }
                    _ => shared.tally.problem(format!(
                        "GET /api/segment from server {server}: {status} {body}"
                    )),
                }
            }
            Err(error) => {
                shared
                    .tally
                    .count(Route::ApiSegment, server, 0, started.elapsed());
                shared
                    .tally
                    .problem(format!("GET /api/segment from server {server}: {error}"));
            }
        }
    }
}

/// N from an ETag `"I-N"`.
fn etag_seq(etag: &str) -> Option<u64> {
    etag.trim_matches('"').rsplit('-').next()?.parse().ok()
}
