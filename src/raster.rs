//! Decoded images as shmimage stores them: width, height, a pixel format and the raw bytes.
//!
//! A [`Raster`] is what travels between the parts of shmimage: the decoder produces one from an
//! upload, the segment stores its bytes verbatim, and the PNG encoder turns one back into a file.
//! Rows are tightly packed (no padding), top row first; 16-bit samples are stored in native
//! byte order, as the `image` crate keeps them in memory.

use std::fmt;

/// The pixel layouts a segment can hold: gray, gray+alpha, RGB and RGBA, at 8 or 16 bits per
/// sample. Float images are stored as 16-bit by the decoder.
///
/// The discriminants are part of the segment layout (see `segment`): never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PixelFormat {
    L8 = 1,
    La8 = 2,
    Rgb8 = 3,
    Rgba8 = 4,
    L16 = 5,
    La16 = 6,
    Rgb16 = 7,
    Rgba16 = 8,
}

impl PixelFormat {
    /// Every format, in layout order.
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::L8,
        PixelFormat::La8,
        PixelFormat::Rgb8,
        PixelFormat::Rgba8,
        PixelFormat::L16,
        PixelFormat::La16,
        PixelFormat::Rgb16,
        PixelFormat::Rgba16,
    ];

    /// The format whose layout code is `code`, if there is one.
    pub fn from_code(code: u32) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The number stored in the segment for this format.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Samples per pixel: 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
    pub fn channels(self) -> u32 {
        match self {
            PixelFormat::L8 | PixelFormat::L16 => 1,
            PixelFormat::La8 | PixelFormat::La16 => 2,
            PixelFormat::Rgb8 | PixelFormat::Rgb16 => 3,
            PixelFormat::Rgba8 | PixelFormat::Rgba16 => 4,
        }
    }

    /// Bits per sample: 8 or 16.
    pub fn bit_depth(self) -> u32 {
        match self {
            PixelFormat::L8 | PixelFormat::La8 | PixelFormat::Rgb8 | PixelFormat::Rgba8 => 8,
            _ => 16,
        }
    }

    /// Bytes per pixel: channels times bytes per sample.
    pub fn bytes_per_pixel(self) -> u32 {
        self.channels() * self.bit_depth() / 8
    }

    /// The color model alone: "Gray", "Gray+Alpha", "RGB" or "RGBA".
    pub fn color_model(self) -> &'static str {
        match self.channels() {
            1 => "Gray",
            2 => "Gray+Alpha",
            3 => "RGB",
            _ => "RGBA",
        }
    }

    /// The number of bytes `width` x `height` pixels take, or `None` if that overflows `u64`.
    pub fn byte_len(self, width: u32, height: u32) -> Option<u64> {
        u64::from(width)
            .checked_mul(u64::from(height))?
            .checked_mul(u64::from(self.bytes_per_pixel()))
    }
}

/// The `image` crate's name for the same layout (its encoders take it; 16-bit samples in the
/// machine's byte order, as rasters keep them).
impl From<PixelFormat> for image::ExtendedColorType {
    fn from(format: PixelFormat) -> Self {
        match format {
            PixelFormat::L8 => image::ExtendedColorType::L8,
            PixelFormat::La8 => image::ExtendedColorType::La8,
            PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
            PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
            PixelFormat::L16 => image::ExtendedColorType::L16,
            PixelFormat::La16 => image::ExtendedColorType::La16,
            PixelFormat::Rgb16 => image::ExtendedColorType::Rgb16,
            PixelFormat::Rgba16 => image::ExtendedColorType::Rgba16,
        }
    }
}

impl fmt::Display for PixelFormat {
    /// "RGB 8-bit", "Gray+Alpha 16-bit", ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-bit", self.color_model(), self.bit_depth())
    }
}

/// Why a [`Raster`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RasterError {
    #[error("an image must be at least 1x1 pixel, not {width}x{height}")]
    Empty { width: u32, height: u32 },
    #[error("{width}x{height} {format} needs {expected} bytes of pixels, but {actual} were given")]
    LengthMismatch {
        width: u32,
        height: u32,
        format: PixelFormat,
        expected: u64,
        actual: usize,
    },
    #[error("{format} does not have 16-bit samples")]
    NotSixteenBit { format: PixelFormat },
}

/// A decoded image: tightly packed rows of `format` pixels.
#[derive(Clone)]
pub struct Raster {
    width: u32,
    height: u32,
    format: PixelFormat,
    pixels: Pixels,
}

/// Where a raster's bytes live: a byte buffer, or (as a 16-bit decoder hands them over) a
/// buffer of native-order 16-bit samples, whose bytes are the raster's bytes without a copy.
#[derive(Clone)]
enum Pixels {
    Bytes(Vec<u8>),
    Samples16(Vec<u16>),
}

impl Pixels {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Pixels::Bytes(bytes) => bytes,
            Pixels::Samples16(samples) => bytemuck::cast_slice(samples),
        }
    }
}

impl PartialEq for Raster {
    fn eq(&self, other: &Raster) -> bool {
        (self.width, self.height, self.format) == (other.width, other.height, other.format)
            && self.pixels() == other.pixels()
    }
}

impl Eq for Raster {}

impl Raster {
    /// A raster of `width` x `height` pixels of `format`, if `pixels` holds exactly that many bytes.
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        pixels: Vec<u8>,
    ) -> Result<Raster, RasterError> {
        Raster::checked(width, height, format, Pixels::Bytes(pixels))
    }

    /// A raster of `width` x `height` pixels of a 16-bit `format` whose samples, in native
    /// byte order, are `samples`: their bytes become the raster's without a copy.
    pub fn from_samples16(
        width: u32,
        height: u32,
        format: PixelFormat,
        samples: Vec<u16>,
    ) -> Result<Raster, RasterError> {
        if format.bit_depth() != 16 {
            return Err(RasterError::NotSixteenBit { format });
        }
        Raster::checked(width, height, format, Pixels::Samples16(samples))
    }

    fn checked(
        width: u32,
        height: u32,
        format: PixelFormat,
        pixels: Pixels,
    ) -> Result<Raster, RasterError> {
        if width == 0 || height == 0 {
            return Err(RasterError::Empty { width, height });
        }
        let expected = format.byte_len(width, height);
        let actual = pixels.as_bytes().len();
        if expected != Some(actual as u64) {
            return Err(RasterError::LengthMismatch {
                width,
                height,
                format,
                expected: expected.unwrap_or(u64::MAX),
                actual,
            });
        }
        Ok(Raster {
            width,
            height,
            format,
            pixels,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The raw pixel bytes: `height` rows of `width * bytes_per_pixel` bytes.
    pub fn pixels(&self) -> &[u8] {
        self.pixels.as_bytes()
    }

    /// Gives the pixel bytes back, e.g. to read into the buffer again. A raster made from
    /// 16-bit samples ([`Raster::from_samples16`]) gives a copy of them.
    pub fn into_pixels(self) -> Vec<u8> {
        match self.pixels {
            Pixels::Bytes(bytes) => bytes,
            Pixels::Samples16(samples) => bytemuck::cast_slice(&samples).to_vec(),
        }
    }

    /// Number of pixels, `width * height`.
    pub fn pixel_count(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

impl fmt::Debug for Raster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raster")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("bytes", &self.pixels().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_codes_round_trip_and_unknown_codes_are_refused() {
        for format in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_code(format.code()), Some(format));
        }
        assert_eq!(PixelFormat::from_code(0), None);
        assert_eq!(PixelFormat::from_code(9), None);
        assert_eq!(PixelFormat::from_code(u32::MAX), None);
    }

    #[test]
    fn formats_describe_themselves_for_people() {
        assert_eq!(PixelFormat::Rgb8.to_string(), "RGB 8-bit");
        assert_eq!(PixelFormat::La16.to_string(), "Gray+Alpha 16-bit");
        assert_eq!(PixelFormat::Rgba16.bytes_per_pixel(), 8);
        assert_eq!(PixelFormat::La8.bytes_per_pixel(), 2);
    }

    #[test]
    fn byte_len_reports_overflow_instead_of_wrapping() {
        assert_eq!(
            PixelFormat::Rgba8.byte_len(3840, 2160),
            Some(3840 * 2160 * 4)
        );
        assert_eq!(PixelFormat::Rgba16.byte_len(u32::MAX, u32::MAX), None);
    }

    #[test]
    fn a_raster_needs_exactly_its_bytes() {
        assert!(Raster::new(2, 2, PixelFormat::Rgb8, vec![0; 12]).is_ok());
        assert!(matches!(
            Raster::new(2, 2, PixelFormat::Rgb8, vec![0; 11]),
            Err(RasterError::LengthMismatch {
                expected: 12,
                actual: 11,
                ..
            })
        ));
        assert!(matches!(
            Raster::new(0, 2, PixelFormat::Rgb8, vec![]),
            Err(RasterError::Empty { .. })
        ));
    }

    #[test]
    fn sixteen_bit_samples_are_the_raster_bytes_without_a_copy() {
        let samples = vec![0x0102u16, 0xa0b0, 0xc0d0];
        let address = samples.as_ptr() as *const u8;
        let raster = Raster::from_samples16(1, 1, PixelFormat::Rgb16, samples).unwrap();
        assert_eq!(raster.pixels().as_ptr(), address);
        let bytes: Vec<u8> = [0x0102u16, 0xa0b0, 0xc0d0]
            .iter()
            .flat_map(|sample| sample.to_ne_bytes())
            .collect();
        assert_eq!(raster.pixels(), bytes.as_slice());
        assert_eq!(
            raster,
            Raster::new(1, 1, PixelFormat::Rgb16, bytes).unwrap()
        );
        assert!(Raster::from_samples16(1, 1, PixelFormat::Rgb8, vec![0; 2]).is_err());
        assert!(Raster::from_samples16(2, 1, PixelFormat::Rgb16, vec![0; 3]).is_err());
    }
}
