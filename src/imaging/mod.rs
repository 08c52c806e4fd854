//! Turning uploads into rasters and rasters into PNG (API skeleton; the implementation lands next).

use crate::raster::Raster;

/// Limits a decode enforces before it allocates.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The most pixels (width x height) an upload may have.
    pub max_pixels: u64,
}

/// A decoded upload.
#[derive(Debug)]
pub struct Decoded {
    pub raster: Raster,
    /// The container format detected from the bytes: "PNG", "JPEG", "GIF", "WebP", "BMP", "TIFF".
    pub format: &'static str,
}

/// Why an upload could not be decoded. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the upload is empty: choose an image file")]
    Empty,
    #[error("the file is not an image this server can read: PNG, JPEG, GIF, WebP, BMP or TIFF")]
    NotAnImage,
    #[error(
        "the {format} image is corrupt or truncated ({detail}); check the file and upload it again"
    )]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error(
        "the image is {width}x{height} ({pixels} pixels), more than the limit of {max_pixels} \
         pixels: make it smaller, or start the server with a larger --max-pixels"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },
}

/// Why a raster could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("PNG encoding failed: {0}")]
pub struct EncodeError(String);

/// Detects the format from the bytes, checks the limits, decodes, applies EXIF orientation and
/// keeps the pixel format (float images become 16-bit).
pub fn decode(_bytes: &[u8], _limits: &DecodeLimits) -> Result<Decoded, DecodeError> {
    todo!()
}

/// A PNG of exactly `raster`'s pixels, in its own pixel format, encoded fast.
pub fn encode_png(_raster: &Raster) -> Result<Vec<u8>, EncodeError> {
    todo!()
}

/// A small 8-bit PNG preview whose longer side is at most `max_side` pixels.
pub fn thumbnail_png(_raster: &Raster, _max_side: u32) -> Result<Vec<u8>, EncodeError> {
    todo!()
}
