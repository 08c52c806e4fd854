//! Hand-made image files that lie: headers patched to claim huge dimensions (decompression
//! bombs), and the offsets where a real file's image data ends, so truncations are known to cut
//! into it.

/// CRC-32 (IEEE), as PNG chunks carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG chunk: length, type, data, CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(data.len() + 12);
    chunk.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    chunk
}

/// The PNG signature.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// A PNG whose IHDR claims `width` x `height` (color type and bit depth as given), followed by
/// `idat` as its only image data chunk (none if empty) and IEND unless `end` is false. The
/// chunks' CRCs are right, so only the claim itself is a lie.
pub fn png_claiming(
    width: u32,
    height: u32,
    color_type: u8,
    bit_depth: u8,
    idat: &[u8],
    end: bool,
) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    if !idat.is_empty() {
        png.extend(png_chunk(b"IDAT", idat));
    }
    if end {
        png.extend(png_chunk(b"IEND", &[]));
    }
    png
}

/// A zlib stream of `len` zero bytes, stored in as few bytes as deflate allows: the body of a
/// classic decompression bomb (a few KiB that inflate to `len`).
pub fn zlib_zeros(len: usize) -> Vec<u8> {
    let mut encoder = ZeroDeflater::default();
    encoder.zeros(len)
}

/// Deflates runs of zeros with fixed Huffman codes: one literal 0, then length-258 copies at
/// distance 1.
#[derive(Default)]
struct ZeroDeflater {
    out: Vec<u8>,
    bits: u64,
    nbits: u32,
}

impl ZeroDeflater {
    fn put(&mut self, value: u32, count: u32) {
        self.bits |= u64::from(value) << self.nbits;
        self.nbits += count;
        while self.nbits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }

    /// A Huffman code is sent most significant bit first.
    fn put_code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn zeros(&mut self, len: usize) -> Vec<u8> {
        self.out.extend_from_slice(&[0x78, 0x01]);
        self.put(1, 1); // final block
        self.put(1, 2); // fixed Huffman codes
        let mut left = len;
        if left > 0 {
            self.put_code(0x30, 8); // literal 0
            left -= 1;
        }
        while left >= 3 {
            let run = left.min(258);
            // Lengths 3..=258 in fixed codes; 258 is code 285 with no extra bits. Other lengths
            // are sent as length 3..=10 (codes 257..=264, no extra bits) to keep this simple.
            let (code, used) = if run == 258 {
                (285u32, 258)
            } else {
                let used = run.min(10);
                (254 + used as u32, used)
            };
            // Codes 256..=279 are 7 bits from 0; 280..=287 are 8 bits from 0xC0.
            if code <= 279 {
                self.put_code(code - 256, 7);
            } else {
                self.put_code(0xC0 + code - 280, 8);
            }
            self.put_code(0, 5); // distance code 0: distance 1
            left -= used;
        }
        for _ in 0..left {
            self.put_code(0x30, 8);
        }
        self.put_code(0, 7); // end of block
        if self.nbits > 0 {
            self.put(0, 8 - self.nbits);
        }
        // Adler-32 of `len` zeros: a = 1, b = len mod 65521.
        let b = (len % 65_521) as u32;
        self.out.extend_from_slice(&((b << 16) | 1).to_be_bytes());
        std::mem::take(&mut self.out)
    }
}

/// The offset where a PNG's last image data ends before its checksums: bytes from here on are
/// the zlib Adler-32, the chunk CRC and the chunks after IDAT.
pub fn png_data_end(png: &[u8]) -> usize {
    let mut position = PNG_SIGNATURE.len();
    let mut data_end = position;
    while position + 8 <= png.len() {
        let length = u32::from_be_bytes(png[position..position + 4].try_into().unwrap()) as usize;
        let kind = &png[position + 4..position + 8];
        let data_start = position + 8;
        if kind == b"IDAT" {
            data_end = data_start + length - 4;
        }
        position = data_start + length + 4;
    }
    data_end
}

/// A JPEG with its frame header (SOF) patched to claim `width` x `height`.
pub fn jpeg_claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut patched = jpeg.to_vec();
    let sof = (2..patched.len() - 9)
        .find(|&i| patched[i] == 0xFF && matches!(patched[i + 1], 0xC0..=0xC2))
        .expect("a JPEG has a frame header");
    // FF Cn, length (2), precision (1), height (2), width (2).
    patched[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    patched[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    patched
}

/// A GIF with its logical screen and first image descriptor patched to `width` x `height`.
pub fn gif_claiming(gif: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut patched = gif.to_vec();
    patched[6..8].copy_from_slice(&width.to_le_bytes());
    patched[8..10].copy_from_slice(&height.to_le_bytes());
    // The image descriptor starts with 0x2C after the header, palette and any extensions.
    let flags = patched[10];
    let mut position = 13
        + if flags & 0x80 != 0 {
            3 << ((flags & 7) + 1)
        } else {
            0
        };
    while patched[position] == 0x21 {
        position += 2;
        while patched[position] != 0 {
            position += usize::from(patched[position]) + 1;
        }
        position += 1;
    }
    assert_eq!(patched[position], 0x2C, "an image descriptor");
    patched[position + 5..position + 7].copy_from_slice(&width.to_le_bytes());
    patched[position + 7..position + 9].copy_from_slice(&height.to_le_bytes());
    patched
}

/// A lossless WebP (VP8L) patched to claim `width` x `height` (each at most 16384).
pub fn webp_claiming(webp: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut patched = webp.to_vec();
    assert_eq!(&patched[12..16], b"VP8L", "a lossless WebP");
    // After the chunk header (8 bytes) comes the signature 0x2F, then 14 bits width - 1,
    // 14 bits height - 1, 1 bit alpha, 3 bits version, little-endian.
    let at = 21;
    let old = u32::from_le_bytes(patched[at..at + 4].try_into().unwrap());
    let bits = (old & 0xF000_0000) | (width - 1) | ((height - 1) << 14);
    patched[at..at + 4].copy_from_slice(&bits.to_le_bytes());
    patched
}

/// A BMP with its info header patched to claim `width` x `height`.
pub fn bmp_claiming(bmp: &[u8], width: i32, height: i32) -> Vec<u8> {
    let mut patched = bmp.to_vec();
    patched[18..22].copy_from_slice(&width.to_le_bytes());
    patched[22..26].copy_from_slice(&height.to_le_bytes());
    patched
}
