//! Test images shared by the benchmarks.

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use shmimage::raster::{PixelFormat, Raster};

/// A small, seeded xorshift generator: the same "noise" every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A photo-like raster: per channel, a smooth blend of horizontal and vertical waves with a
/// diagonal gradient, plus uniform noise of about ±3% of full scale. Alpha is opaque with a
/// gentle gradient. 16-bit samples are stored in native byte order, as rasters hold them.
pub fn photo_like(width: u32, height: u32, format: PixelFormat) -> Raster {
    let channels = format.channels() as usize;
    let sixteen = format.bit_depth() == 16;
    let full = if sixteen { 65535.0 } else { 255.0 };
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut pixels = Vec::with_capacity(format.byte_len(width, height).unwrap_or(0) as usize);
    let (w, h) = (width as f32, height as f32);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32 / w, y as f32 / h);
            for channel in 0..channels {
                let phase = channel as f32 * 1.7;
                let base = if channel == 3 || (channels == 2 && channel == 1) {
                    0.85 + 0.15 * fx
                } else {
                    0.5 + 0.25 * (fx * 6.3 + phase).sin() * (fy * 4.1 - phase).cos()
                        + 0.2 * (fx + fy - 1.0)
                };
                let jitter = (noise.next() % 2001) as f32 / 1000.0 - 1.0;
                let value = ((base + 0.03 * jitter).clamp(0.0, 1.0) * full).round();
                if sixteen {
                    pixels.extend_from_slice(&(value as u16).to_ne_bytes());
                } else {
                    pixels.push(value as u8);
                }
            }
        }
    }
    Raster::new(width, height, format, pixels).expect("a consistent raster")
}

/// The `image` crate's fast PNG encoder on one thread, as `encode_png` used it before it went
/// parallel.
pub fn image_crate_fast_png(raster: &Raster) -> Vec<u8> {
    let color = match raster.format() {
        PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
        PixelFormat::Rgba16 => image::ExtendedColorType::Rgba16,
        other => panic!("the bench only uses RGBA, not {other}"),
    };
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
        .write_image(raster.pixels(), raster.width(), raster.height(), color)
        .expect("image crate PNG encoding");
    png
}
