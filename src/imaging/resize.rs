//! Shrinking a raster to the size a page draws it, with a proper filter.
//!
//! The page draws the shared image at the width of the window (a few hundred to a few thousand
//! pixels), so it asks for that width instead of the full image: a 3840x2160 photo shown 1280
//! pixels wide is a ninth of the pixels to encode, send and decode. The resize is
//! `fast_image_resize`'s Catmull-Rom (bicubic) convolution, the kernel widened with the scale so
//! that it averages what it drops (SIMD; alpha is premultiplied for the filter and
//! divided out again, so transparent pixels do not bleed dark fringes), in the image's own
//! channels; the result is always 8 bits per sample, which is all a screen shows.

use crate::raster::{PixelFormat, Raster};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Why a raster could not be resized.
#[derive(Debug, thiserror::Error)]
#[error("resizing the image failed: {0}")]
pub struct ResizeError(String);

/// The height of a `width`-wide copy of a `source_width` x `source_height` image, rounded, at
/// least 1.
pub fn scaled_height(source_width: u32, source_height: u32, width: u32) -> u32 {
    let height = (u64::from(source_height) * u64::from(width) + u64::from(source_width) / 2)
        / u64::from(source_width.max(1));
    u32::try_from(height).unwrap_or(u32::MAX).max(1)
}

/// `raster` shrunk to `width` pixels wide (the height in proportion), as an 8-bit raster with
/// the same channels: gray, gray+alpha, RGB or RGBA. A `width` that is not smaller than the
/// raster's gives the raster's own size (converted to 8 bits); nothing is ever enlarged.
pub fn resize_to_width(raster: &Raster, width: u32) -> Result<Raster, ResizeError> {
    let width = width.clamp(1, raster.width());
    let height = scaled_height(raster.width(), raster.height(), width);
    let format = raster.format();
    let (source_type, wide) = match format {
        PixelFormat::L8 => (PixelType::U8, false),
        PixelFormat::La8 => (PixelType::U8x2, false),
        PixelFormat::Rgb8 => (PixelType::U8x3, false),
        PixelFormat::Rgba8 => (PixelType::U8x4, false),
        PixelFormat::L16 => (PixelType::U16, true),
        PixelFormat::La16 => (PixelType::U16x2, true),
        PixelFormat::Rgb16 => (PixelType::U16x3, true),
        PixelFormat::Rgba16 => (PixelType::U16x4, true),
    };
    let failed = |error: &dyn std::fmt::Display| ResizeError(error.to_string());
    let source = ImageRef::new(
        raster.width(),
        raster.height(),
        raster.pixels(),
        source_type,
    )
    .map_err(|error| failed(&error))?;
    let mut resized = Image::new(width, height, source_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new()
        .resize(&source, &mut resized, &options)
        .map_err(|error| failed(&error))?;
    let pixels = if wide {
        // 16-bit samples (native byte order) to 8 bits, rounded to nearest.
        resized
            .buffer()
            .chunks_exact(2)
            .map(|sample| {
                let sample = u32::from(u16::from_ne_bytes([sample[0], sample[1]]));
                ((sample * 255 + 32_767) / 65_535) as u8
            })
            .collect()
    } else {
        resized.into_vec()
    };
    let format = match format.channels() {
        1 => PixelFormat::L8,
        2 => PixelFormat::La8,
        3 => PixelFormat::Rgb8,
        _ => PixelFormat::Rgba8,
    };
    Raster::new(width, height, format, pixels).map_err(|error| failed(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(width: u32, height: u32, format: PixelFormat, sample: impl Fn(u32) -> u8) -> Raster {
        let bytes = width as usize * height as usize * format.bytes_per_pixel() as usize;
        let pixels = (0..bytes as u32).map(sample).collect();
        Raster::new(width, height, format, pixels).unwrap()
    }

    #[test]
    fn heights_keep_the_aspect_ratio() {
        assert_eq!(scaled_height(3840, 2160, 1280), 720);
        assert_eq!(scaled_height(1080, 1920, 480), 853);
        assert_eq!(scaled_height(10_000, 1, 100), 1);
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_width() {
        let flat = raster(640, 480, PixelFormat::Rgb8, |i| {
            [200, 100, 50][i as usize % 3]
        });
        let small = resize_to_width(&flat, 320).unwrap();
        assert_eq!((small.width(), small.height()), (320, 240));
        assert_eq!(small.format(), PixelFormat::Rgb8);
        for pixel in small.pixels().chunks_exact(3) {
            assert_eq!(pixel, [200, 100, 50]);
        }
    }

    #[test]
    fn sixteen_bit_images_come_out_as_eight_bit_with_their_channels() {
        // Gray+alpha 16-bit, every sample 0x8080 (0.502 of full scale): 128 in 8 bits.
        let gray = raster(64, 32, PixelFormat::La16, |_| 0x80);
        let small = resize_to_width(&gray, 16).unwrap();
        assert_eq!(small.format(), PixelFormat::La8);
        assert_eq!((small.width(), small.height()), (16, 8));
        assert!(small.pixels().iter().all(|&sample| sample == 128));
    }

    #[test]
    fn nothing_is_enlarged() {
        let image = raster(40, 30, PixelFormat::Rgba8, |i| (i % 251) as u8);
        let same = resize_to_width(&image, 4000).unwrap();
        assert_eq!((same.width(), same.height()), (40, 30));
        assert_eq!(same.pixels(), image.pixels());
    }
}
