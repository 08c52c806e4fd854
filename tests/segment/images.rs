//! Test images that carry their own id and checksum in their pixels, so that a torn or mixed
//! image is detected whatever its size.

use shmimage::raster::{PixelFormat, Raster};

/// The id a tagged image carries in its first eight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageId(pub u64);

/// A small, seedable pseudo-random generator (SplitMix64), so runs are reproducible.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Size and format of image `id`: large for ids from 10 000 000 (16 MiB copies, for kill tests),
/// medium from 1 000 000 (growth tests), small and varied below.
fn shape(id: ImageId) -> (u32, u32, PixelFormat) {
    let n = id.0;
    if n >= 10_000_000 {
        (2048, 2048, PixelFormat::Rgba8)
    } else if n >= 1_000_000 {
        (1500, 1200, PixelFormat::Rgb8)
    } else {
        let format = PixelFormat::ALL[(n % 8) as usize];
        (
            32 + (n * 37 % 300) as u32,
            24 + (n * 53 % 200) as u32,
            format,
        )
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a over 8-byte words: fast enough in debug builds, and any change shows.
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        hash ^= u64::from_le_bytes(word.try_into().unwrap());
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    for &byte in words.remainder() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// Image `id`: pseudo-random pixels from the id, the id in bytes 0..8, a checksum of the rest
/// in bytes 8..16.
pub fn tagged_raster(id: ImageId) -> Raster {
    let (width, height, format) = shape(id);
    let len = format.byte_len(width, height).unwrap() as usize;
    let mut rng = SplitMix(id.0);
    let mut pixels = Vec::with_capacity(len + 8);
    while pixels.len() < len {
        pixels.extend_from_slice(&rng.next().to_le_bytes());
    }
    pixels.truncate(len);
    pixels[..8].copy_from_slice(&id.0.to_le_bytes());
    let sum = checksum(&pixels[16..]);
    pixels[8..16].copy_from_slice(&sum.to_le_bytes());
    Raster::new(width, height, format, pixels).unwrap()
}

/// The id of a whole tagged image, or what is wrong with it.
pub fn verify_tagged(raster: &Raster) -> Result<ImageId, String> {
    let pixels = raster.pixels();
    if pixels.len() < 16 {
        return Err(format!("{} bytes: too short to be tagged", pixels.len()));
    }
    let id = ImageId(u64::from_le_bytes(pixels[..8].try_into().unwrap()));
    let stored = u64::from_le_bytes(pixels[8..16].try_into().unwrap());
    if checksum(&pixels[16..]) != stored {
        return Err(format!(
            "image {id:?}: checksum mismatch (torn or mixed pixels)"
        ));
    }
    let (width, height, format) = shape(id);
    if (raster.width(), raster.height(), raster.format()) != (width, height, format) {
        return Err(format!(
            "image {id:?}: pixels of one image with the metadata of another ({}x{} {})",
            raster.width(),
            raster.height(),
            raster.format()
        ));
    }
    Ok(id)
}
