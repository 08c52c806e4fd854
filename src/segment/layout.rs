//! The bytes of a segment: the `#[repr(C)]` control header, the slot records, the data objects'
//! header, and the checks every value read from them must pass.
//!
//! Live access goes through the atomic fields of [`ControlHeader`]. To check a header, its
//! fields are first copied out into plain values ([`HeaderFields`], [`SlotFields`]) and then
//! validated; the fuzz target feeds those same checks arbitrary bytes.

use super::error::Corruption;
use crate::raster::PixelFormat;
use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "SHMIMAGE" in the first eight bytes of every control object.
pub const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"SHMIMAGE");
/// "SHMIDATA" in the first eight bytes of every data object.
pub const DATA_MAGIC: u64 = u64::from_le_bytes(*b"SHMIDATA");
/// Bumped whenever the layout or the protocol changes; a segment of another version is
/// refused (and re-initialised by the first process to attach when no other is attached).
///
/// Version 2: registry entries are locked shared once registered (exclusive while being filled
/// in); pixels are copied in aligned 8-byte words, the last one zero-padded; a last detacher
/// clears `ready` before removing the objects.
///
/// Version 3: the PNG area ([`PngRecord`], before the lock, which moves 64 bytes on): a PNG of
/// the published image in a data object of its own, encoded once for every process.
pub const LAYOUT_VERSION: u32 = 3;
/// The value of `ready` once the creator has initialised the header and its lock.
pub const READY: u32 = 0x5245_4459; // "READ" + "Y": anything but 0 and garbage-likely values
/// How many attached processes the registry can name.
pub const ATTACHMENT_ENTRIES: usize = 64;
/// The longest writer or attachment label kept, in bytes.
pub const LABEL_MAX: usize = 48;
/// Pixels start this far into a data object, so that they are page-aligned.
pub const DATA_OFFSET: u64 = 4096;
/// Byte length of the control object.
pub const CONTROL_LEN: usize = size_of::<ControlHeader>().next_multiple_of(4096);

/// A label of up to [`LABEL_MAX`] bytes, kept in atomic words.
#[repr(C)]
pub struct LabelCell {
    len: AtomicU32,
    _reserved: AtomicU32,
    words: [AtomicU64; LABEL_MAX / 8],
}

impl LabelCell {
    /// Stores `label`, cut to at most [`LABEL_MAX`] bytes on a character boundary.
    pub fn store(&self, label: &str) {
        let label = truncate_label(label);
        let mut bytes = [0u8; LABEL_MAX];
        bytes[..label.len()].copy_from_slice(label.as_bytes());
        for (word, chunk) in self.words.iter().zip(bytes.chunks_exact(8)) {
            let chunk: [u8; 8] = chunk.try_into().expect("chunks_exact(8) gives 8 bytes");
            word.store(u64::from_ne_bytes(chunk), Ordering::Relaxed);
        }
        self.len.store(label.len() as u32, Ordering::Relaxed);
    }

    /// `label` cut as [`LabelCell::store`] cuts it.
    pub fn truncated(label: &str) -> &str {
        truncate_label(label)
    }

    /// Copies the raw label out: its claimed length and its bytes.
    pub fn load(&self) -> RawLabel {
        let mut bytes = [0u8; LABEL_MAX];
        for (word, chunk) in self.words.iter().zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        RawLabel {
            len: self.len.load(Ordering::Relaxed),
            bytes,
        }
    }
}

/// A label as copied out of the segment: untrusted until [`RawLabel::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLabel {
    pub len: u32,
    pub bytes: [u8; LABEL_MAX],
}

impl RawLabel {
    /// The label as text: the length is clamped and invalid UTF-8 replaced, so any bytes give
    /// some string and never a panic.
    pub fn decode(&self) -> String {
        let len = (self.len as usize).min(LABEL_MAX);
        String::from_utf8_lossy(&self.bytes[..len]).into_owned()
    }
}

/// Cuts `label` to at most [`LABEL_MAX`] bytes without splitting a character.
fn truncate_label(label: &str) -> &str {
    let mut end = label.len().min(LABEL_MAX);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

/// One of the two image slots: where its pixels live and what they are.
#[repr(C)]
pub struct SlotRecord {
    /// The data object that holds this slot's pixels; 0 when the slot has none.
    pub generation: AtomicU32,
    pub format: AtomicU32,
    pub width: AtomicU32,
    pub height: AtomicU32,
    /// Bytes of pixels the data object can hold.
    pub capacity: AtomicU64,
    /// Bytes of pixels stored.
    pub byte_len: AtomicU64,
    /// The sequence number of the write that filled the slot.
    pub seq: AtomicU64,
    /// When that write completed, in nanoseconds since the Unix epoch.
    pub written_at_ns: AtomicU64,
    pub writer_pid: AtomicU32,
    _reserved: AtomicU32,
    pub writer_label: LabelCell,
}

/// One entry of the registry of attached processes. The entry is in use while its owner holds
/// a lock on the entry's byte of the control object (see `registry`), so the kernel frees it
/// when the owner dies.
#[repr(C)]
pub struct AttachmentRecord {
    pub pid: AtomicU32,
    _reserved: AtomicU32,
    pub label: LabelCell,
}

/// The control object's header: everything but the pixels.
#[repr(C)]
pub struct ControlHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    /// `size_of::<ControlHeader>()` of the process that created the segment.
    pub header_size: AtomicU32,
    /// [`READY`] once the header and its lock are initialised.
    pub ready: AtomicU32,
    /// Futex word: incremented after every published write, to wake waiters.
    pub notify: AtomicU32,
    /// The published image: `seq << 1 | active slot`. `seq` 0 means no image yet.
    pub state: AtomicU64,
    /// The generation number the next data object will get. Changed under the lock.
    pub next_generation: AtomicU32,
    /// How many times a locker found the lock's holder dead and recovered it.
    pub lock_recoveries: AtomicU32,
    pub created_at_ns: AtomicU64,
    pub slots: [SlotRecord; 2],
    pub attachments: [AttachmentRecord; ATTACHMENT_ENTRIES],
    /// The PNG of the published image, if a process has encoded it (see `png_area`).
    pub png: PngRecord,
    /// The robust, process-shared mutex that serialises writers (see `lock`).
    pub lock: UnsafeCell<libc::pthread_mutex_t>,
}

impl ControlHeader {
    /// Writes the fields that say "a shmimage control header of this layout": magic, version
    /// and header size. `ready` is the caller's to set once everything else is in place.
    pub fn stamp_identity(&self) {
        self.magic.store(CONTROL_MAGIC, Ordering::Relaxed);
        self.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.header_size
            .store(size_of::<ControlHeader>() as u32, Ordering::Relaxed);
    }
}

/// The PNG area: where the PNG of the published image lies, which image it is of, and who is
/// encoding it. Guarded by its own sequence counter (`version`, odd while a writer changes the
/// record or the bytes it names); see `png_area` for the protocol.
#[repr(C)]
pub struct PngRecord {
    /// Seqlock counter: odd while a lock holder rewrites the record or its PNG bytes.
    pub version: AtomicU64,
    /// The sequence number of the image the PNG is of; 0: no PNG.
    pub seq: AtomicU64,
    /// That image's `written_at_ns`, as its slot record says: with `seq`, names the image.
    pub written_at_ns: AtomicU64,
    /// The segment's `created_at_ns` when the PNG was published.
    pub incarnation: AtomicU64,
    /// The data object holding the PNG bytes; 0: none.
    pub generation: AtomicU32,
    /// Futex word: incremented when a PNG is published or a claim is given up.
    pub notify: AtomicU32,
    /// Bytes the data object holds after its header: a multiple of 8.
    pub capacity: AtomicU64,
    /// Bytes of PNG.
    pub byte_len: AtomicU64,
    /// Who is encoding which image: `(seq mod 2^32) << 32 | pid`; 0: nobody.
    pub claim: AtomicU64,
}

/// The first bytes of every data object.
#[repr(C)]
pub struct DataHeader {
    pub magic: AtomicU64,
    pub generation: AtomicU32,
    _reserved: AtomicU32,
    pub capacity: AtomicU64,
}

// The layout is shared between processes: make any accidental change fail to compile.
const _: () = {
    assert!(size_of::<LabelCell>() == 56);
    assert!(size_of::<SlotRecord>() == 112);
    assert!(size_of::<AttachmentRecord>() == 64);
    assert!(size_of::<DataHeader>() == 24);
    assert!(size_of::<PngRecord>() == 64);
    assert!(std::mem::offset_of!(ControlHeader, png) == 4368);
    assert!(size_of::<DataHeader>() as u64 <= DATA_OFFSET);
    assert!(std::mem::offset_of!(ControlHeader, slots) == 48);
    assert!(std::mem::align_of::<ControlHeader>() <= 4096);
};

/// Splits the `state` word into (sequence number, active slot).
pub fn unpack_state(state: u64) -> (u64, usize) {
    (state >> 1, (state & 1) as usize)
}

/// Builds the `state` word for image `seq` in `slot`.
pub fn pack_state(seq: u64, slot: usize) -> u64 {
    debug_assert!(slot < 2);
    (seq << 1) | slot as u64
}

/// The header's identifying fields, copied out for checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub ready: u32,
}

impl HeaderFields {
    pub fn load(header: &ControlHeader) -> HeaderFields {
        HeaderFields {
            magic: header.magic.load(Ordering::Relaxed),
            version: header.version.load(Ordering::Relaxed),
            header_size: header.header_size.load(Ordering::Relaxed),
            ready: header.ready.load(Ordering::Acquire),
        }
    }

    /// Checks that the header was made by this layout and finished initialising, in a
    /// control object of `object_len` bytes.
    pub fn validate(&self, object_len: u64) -> Result<(), Corruption> {
        if self.magic != CONTROL_MAGIC {
            return Err(Corruption::BadMagic { found: self.magic });
        }
        if self.version != LAYOUT_VERSION {
            return Err(Corruption::UnsupportedVersion {
                found: self.version,
                expected: LAYOUT_VERSION,
            });
        }
        let expected = size_of::<ControlHeader>() as u32;
        if self.header_size != expected {
            return Err(Corruption::HeaderSizeMismatch {
                found: self.header_size,
                expected,
            });
        }
        if object_len < CONTROL_LEN as u64 {
            return Err(Corruption::TooShort {
                actual: object_len,
                needed: CONTROL_LEN as u64,
            });
        }
        if self.ready != READY {
            return Err(Corruption::NotReady);
        }
        Ok(())
    }
}

/// A slot record copied out for checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFields {
    pub generation: u32,
    pub format: u32,
    pub width: u32,
    pub height: u32,
    pub capacity: u64,
    pub byte_len: u64,
    pub seq: u64,
    pub written_at_ns: u64,
    pub writer_pid: u32,
    pub writer_label: RawLabel,
}

/// What a valid slot holds, in checked types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotImage {
    pub generation: u32,
    pub capacity: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub byte_len: u64,
    pub seq: u64,
    pub written_at_ns: u64,
    pub writer_pid: u32,
    pub writer_label: String,
}

impl SlotFields {
    pub fn load(slot: &SlotRecord) -> SlotFields {
        SlotFields {
            generation: slot.generation.load(Ordering::Relaxed),
            format: slot.format.load(Ordering::Relaxed),
            width: slot.width.load(Ordering::Relaxed),
            height: slot.height.load(Ordering::Relaxed),
            capacity: slot.capacity.load(Ordering::Relaxed),
            byte_len: slot.byte_len.load(Ordering::Relaxed),
            seq: slot.seq.load(Ordering::Relaxed),
            written_at_ns: slot.written_at_ns.load(Ordering::Relaxed),
            writer_pid: slot.writer_pid.load(Ordering::Relaxed),
            writer_label: slot.writer_label.load(),
        }
    }

    /// Checks that the slot holds the image the state word published as `seq`: a pixel format
    /// that exists, dimensions that neither are empty nor overflow, a length that matches them
    /// and fits the slot's capacity, and a capacity that fits in `max_capacity` bytes.
    pub fn validate(&self, seq: u64, max_capacity: u64) -> Result<SlotImage, Corruption> {
        if self.seq != seq {
            return Err(Corruption::SeqMismatch {
                published: seq,
                slot: self.seq,
            });
        }
        if self.generation == 0 {
            return Err(Corruption::BadGeneration {
                generation: self.generation,
            });
        }
        let format = PixelFormat::from_code(self.format)
            .ok_or(Corruption::UnknownPixelFormat { code: self.format })?;
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 {
            return Err(Corruption::EmptyImage { width, height });
        }
        let expected = format
            .byte_len(width, height)
            .ok_or(Corruption::DimensionsOverflow { width, height })?;
        if self.byte_len != expected {
            return Err(Corruption::LengthMismatch {
                width,
                height,
                claimed: self.byte_len,
                expected,
            });
        }
        // Copies touch whole 8-byte words (see `copy`), so the last partial word must fit too.
        if self.byte_len.next_multiple_of(8) > self.capacity {
            return Err(Corruption::ExceedsCapacity {
                len: self.byte_len,
                capacity: self.capacity,
            });
        }
        if self.capacity > max_capacity || usize::try_from(self.byte_len).is_err() {
            return Err(Corruption::ExceedsCapacity {
                len: self.capacity,
                capacity: max_capacity,
            });
        }
        Ok(SlotImage {
            generation: self.generation,
            capacity: self.capacity,
            width,
            height,
            format,
            byte_len: self.byte_len,
            seq: self.seq,
            written_at_ns: self.written_at_ns,
            writer_pid: self.writer_pid,
            writer_label: self.writer_label.decode(),
        })
    }
}

/// A data object's header copied out for checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFields {
    pub magic: u64,
    pub generation: u32,
    pub capacity: u64,
}

impl DataFields {
    pub fn load(header: &DataHeader) -> DataFields {
        DataFields {
            magic: header.magic.load(Ordering::Relaxed),
            generation: header.generation.load(Ordering::Relaxed),
            capacity: header.capacity.load(Ordering::Relaxed),
        }
    }

    /// Checks that a data object of `object_len` bytes is generation `generation` and holds at
    /// least `capacity` bytes of pixels.
    pub fn validate(
        &self,
        generation: u32,
        capacity: u64,
        object_len: u64,
    ) -> Result<(), Corruption> {
        if self.magic != DATA_MAGIC || self.generation != generation || self.capacity != capacity {
            return Err(Corruption::BadGeneration { generation });
        }
        let needed = DATA_OFFSET.saturating_add(capacity);
        if object_len < needed {
            return Err(Corruption::TooShort {
                actual: object_len,
                needed,
            });
        }
        Ok(())
    }
}

/// Reads `N` bytes at `*at` from `bytes` (zero-filled past the end) and advances `*at`.
fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = bytes.get(*at + i).copied().unwrap_or(0);
    }
    *at += N;
    out
}

impl HeaderFields {
    /// Fields from arbitrary bytes, for fuzzing the checks.
    pub fn from_bytes(bytes: &[u8]) -> HeaderFields {
        let at = &mut 0;
        HeaderFields {
            magic: u64::from_le_bytes(take(bytes, at)),
            version: u32::from_le_bytes(take(bytes, at)),
            header_size: u32::from_le_bytes(take(bytes, at)),
            ready: u32::from_le_bytes(take(bytes, at)),
        }
    }
}

impl SlotFields {
    /// Fields from arbitrary bytes, for fuzzing the checks.
    pub fn from_bytes(bytes: &[u8]) -> SlotFields {
        let at = &mut 0;
        SlotFields {
            generation: u32::from_le_bytes(take(bytes, at)),
            format: u32::from_le_bytes(take(bytes, at)),
            width: u32::from_le_bytes(take(bytes, at)),
            height: u32::from_le_bytes(take(bytes, at)),
            capacity: u64::from_le_bytes(take(bytes, at)),
            byte_len: u64::from_le_bytes(take(bytes, at)),
            seq: u64::from_le_bytes(take(bytes, at)),
            written_at_ns: u64::from_le_bytes(take(bytes, at)),
            writer_pid: u32::from_le_bytes(take(bytes, at)),
            writer_label: RawLabel {
                len: u32::from_le_bytes(take(bytes, at)),
                bytes: take(bytes, at),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_header() -> HeaderFields {
        HeaderFields {
            magic: CONTROL_MAGIC,
            version: LAYOUT_VERSION,
            header_size: size_of::<ControlHeader>() as u32,
            ready: READY,
        }
    }

    fn good_slot() -> SlotFields {
        SlotFields {
            generation: 3,
            format: PixelFormat::Rgb8.code(),
            width: 4,
            height: 2,
            capacity: 64,
            byte_len: 24,
            seq: 7,
            written_at_ns: 1,
            writer_pid: 42,
            writer_label: RawLabel {
                len: 3,
                bytes: *b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            },
        }
    }

    #[test]
    fn a_good_header_passes() {
        assert_eq!(good_header().validate(CONTROL_LEN as u64), Ok(()));
    }

    #[test]
    fn every_bad_header_field_has_its_own_error() {
        let h = HeaderFields {
            magic: 0xdead,
            ..good_header()
        };
        assert_eq!(
            h.validate(CONTROL_LEN as u64),
            Err(Corruption::BadMagic { found: 0xdead })
        );
        let h = HeaderFields {
            version: 99,
            ..good_header()
        };
        assert_eq!(
            h.validate(CONTROL_LEN as u64),
            Err(Corruption::UnsupportedVersion {
                found: 99,
                expected: LAYOUT_VERSION
            })
        );
        let h = HeaderFields {
            header_size: 12,
            ..good_header()
        };
        assert!(matches!(
            h.validate(CONTROL_LEN as u64),
            Err(Corruption::HeaderSizeMismatch { found: 12, .. })
        ));
        assert!(matches!(
            good_header().validate(100),
            Err(Corruption::TooShort { actual: 100, .. })
        ));
        let h = HeaderFields {
            ready: 0,
            ..good_header()
        };
        assert_eq!(h.validate(CONTROL_LEN as u64), Err(Corruption::NotReady));
    }

    #[test]
    fn a_good_slot_passes_with_its_metadata() {
        let image = good_slot().validate(7, 1 << 20).unwrap();
        assert_eq!((image.width, image.height), (4, 2));
        assert_eq!(image.format, PixelFormat::Rgb8);
        assert_eq!(image.writer_label, "abc");
    }

    #[test]
    fn every_bad_slot_field_has_its_own_error() {
        let s = good_slot();
        assert_eq!(
            s.validate(8, 1 << 20),
            Err(Corruption::SeqMismatch {
                published: 8,
                slot: 7
            })
        );
        let bad = SlotFields { generation: 0, ..s };
        assert_eq!(
            bad.validate(7, 1 << 20),
            Err(Corruption::BadGeneration { generation: 0 })
        );
        let bad = SlotFields { format: 77, ..s };
        assert_eq!(
            bad.validate(7, 1 << 20),
            Err(Corruption::UnknownPixelFormat { code: 77 })
        );
        let bad = SlotFields { width: 0, ..s };
        assert!(matches!(
            bad.validate(7, 1 << 20),
            Err(Corruption::EmptyImage { .. })
        ));
        let bad = SlotFields {
            width: u32::MAX,
            height: u32::MAX,
            format: PixelFormat::Rgba16.code(),
            ..s
        };
        assert!(matches!(
            bad.validate(7, 1 << 20),
            Err(Corruption::DimensionsOverflow { .. })
        ));
        let bad = SlotFields { byte_len: 23, ..s };
        assert!(matches!(
            bad.validate(7, 1 << 20),
            Err(Corruption::LengthMismatch {
                claimed: 23,
                expected: 24,
                ..
            })
        ));
        let bad = SlotFields { capacity: 16, ..s };
        assert!(matches!(
            bad.validate(7, 1 << 20),
            Err(Corruption::ExceedsCapacity {
                len: 24,
                capacity: 16
            })
        ));
        assert!(matches!(
            s.validate(7, 32),
            Err(Corruption::ExceedsCapacity { .. })
        ));
        // 3x1 RGB8 is 9 bytes, but copies touch two whole words: 16 bytes.
        let odd = SlotFields {
            width: 3,
            height: 1,
            byte_len: 9,
            capacity: 12,
            ..s
        };
        assert!(matches!(
            odd.validate(7, 1 << 20),
            Err(Corruption::ExceedsCapacity {
                len: 9,
                capacity: 12
            })
        ));
        let odd = SlotFields {
            capacity: 16,
            ..odd
        };
        assert!(odd.validate(7, 1 << 20).is_ok());
    }

    #[test]
    fn labels_never_panic_on_hostile_bytes() {
        let raw = RawLabel {
            len: u32::MAX,
            bytes: [0xff; LABEL_MAX],
        };
        assert_eq!(raw.decode().chars().count(), LABEL_MAX);
        assert_eq!(truncate_label(&"é".repeat(40)).len(), 48);
        assert_eq!(truncate_label(&"a€".repeat(40)).len(), 48);
        assert_eq!(truncate_label(&"aa€".repeat(20)).len(), 47);
    }

    #[test]
    fn data_headers_must_match_their_slot_and_length() {
        let d = DataFields {
            magic: DATA_MAGIC,
            generation: 3,
            capacity: 100,
        };
        assert_eq!(d.validate(3, 100, DATA_OFFSET + 100), Ok(()));
        assert!(d.validate(4, 100, DATA_OFFSET + 100).is_err());
        assert!(d.validate(3, 101, DATA_OFFSET + 101).is_err());
        assert!(matches!(
            d.validate(3, 100, DATA_OFFSET + 99),
            Err(Corruption::TooShort { .. })
        ));
        let bad = DataFields { magic: 1, ..d };
        assert!(bad.validate(3, 100, DATA_OFFSET + 100).is_err());
    }

    /// One row of a layout table in the `segment` module docs, as the code has it.
    struct Row {
        offset: usize,
        size: usize,
        ty: &'static str,
        field: &'static str,
    }

    fn row<T>(ty: &'static str, field: &'static str, offset: usize) -> Row {
        Row {
            offset,
            size: size_of::<T>(),
            ty,
            field,
        }
    }

    /// The size in the heading of the docs' table for `name`, and its rows: offset, size, type,
    /// field.
    fn documented(name: &str) -> (usize, Vec<(usize, usize, String, String)>) {
        let docs: Vec<&str> = include_str!("mod.rs")
            .lines()
            .map_while(|line| line.strip_prefix("//!"))
            .map(str::trim)
            .collect();
        let heading = docs
            .iter()
            .position(|line| line.starts_with("## ") && line.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("no table for {name} in the module docs"));
        let size = docs[heading]
            .split_once(&format!("`{name}` ("))
            .and_then(|(_, rest)| rest.split_once(" bytes)"))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("no \"`{name}` (N bytes)\" in {:?}", docs[heading]));
        let start = heading
            + docs[heading..]
                .iter()
                .position(|l| *l == "```text")
                .unwrap();
        let rows = docs[start + 2..]
            .iter()
            .take_while(|line| **line != "```")
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let number = |i: usize| words[i].parse::<usize>().expect(line);
                (
                    number(0),
                    number(1),
                    words[2].to_owned(),
                    words[3].to_owned(),
                )
            })
            .collect();
        (size, rows)
    }

    fn assert_documented<T>(name: &str, rows: &[Row]) {
        let (size, documented) = documented(name);
        assert_eq!(size, size_of::<T>(), "the size of {name} in its heading");
        let actual: Vec<_> = rows
            .iter()
            .map(|r| (r.offset, r.size, r.ty.to_owned(), r.field.to_owned()))
            .collect();
        assert_eq!(documented, actual, "the table of {name}");
        // The rows cover the struct without gaps.
        let mut end = 0;
        for r in rows {
            assert_eq!(
                r.offset, end,
                "{name}.{} starts where the field before ends",
                r.field
            );
            end = r.offset + r.size;
        }
        assert_eq!(end, size_of::<T>(), "{name}'s rows add up to its size");
    }

    #[test]
    fn the_layout_tables_in_the_module_docs_match_the_code() {
        use std::mem::offset_of;
        type C = ControlHeader;
        assert_documented::<C>(
            "ControlHeader",
            &[
                row::<AtomicU64>("u64", "magic", offset_of!(C, magic)),
                row::<AtomicU32>("u32", "version", offset_of!(C, version)),
                row::<AtomicU32>("u32", "header_size", offset_of!(C, header_size)),
                row::<AtomicU32>("u32", "ready", offset_of!(C, ready)),
                row::<AtomicU32>("u32", "notify", offset_of!(C, notify)),
                row::<AtomicU64>("u64", "state", offset_of!(C, state)),
                row::<AtomicU32>("u32", "next_generation", offset_of!(C, next_generation)),
                row::<AtomicU32>("u32", "lock_recoveries", offset_of!(C, lock_recoveries)),
                row::<AtomicU64>("u64", "created_at_ns", offset_of!(C, created_at_ns)),
                row::<[SlotRecord; 2]>("SlotRecord[2]", "slots", offset_of!(C, slots)),
                row::<[AttachmentRecord; ATTACHMENT_ENTRIES]>(
                    "AttachmentRecord[64]",
                    "attachments",
                    offset_of!(C, attachments),
                ),
                row::<PngRecord>("PngRecord", "png", offset_of!(C, png)),
                row::<libc::pthread_mutex_t>("pthread_mutex_t", "lock", offset_of!(C, lock)),
            ],
        );
        type S = SlotRecord;
        assert_documented::<S>(
            "SlotRecord",
            &[
                row::<AtomicU32>("u32", "generation", offset_of!(S, generation)),
                row::<AtomicU32>("u32", "format", offset_of!(S, format)),
                row::<AtomicU32>("u32", "width", offset_of!(S, width)),
                row::<AtomicU32>("u32", "height", offset_of!(S, height)),
                row::<AtomicU64>("u64", "capacity", offset_of!(S, capacity)),
                row::<AtomicU64>("u64", "byte_len", offset_of!(S, byte_len)),
                row::<AtomicU64>("u64", "seq", offset_of!(S, seq)),
                row::<AtomicU64>("u64", "written_at_ns", offset_of!(S, written_at_ns)),
                row::<AtomicU32>("u32", "writer_pid", offset_of!(S, writer_pid)),
                row::<AtomicU32>("u32", "reserved", offset_of!(S, _reserved)),
                row::<LabelCell>("LabelCell", "writer_label", offset_of!(S, writer_label)),
            ],
        );
        type L = LabelCell;
        assert_documented::<L>(
            "LabelCell",
            &[
                row::<AtomicU32>("u32", "len", offset_of!(L, len)),
                row::<AtomicU32>("u32", "reserved", offset_of!(L, _reserved)),
                row::<[AtomicU64; LABEL_MAX / 8]>("u64[6]", "words", offset_of!(L, words)),
            ],
        );
        type A = AttachmentRecord;
        assert_documented::<A>(
            "AttachmentRecord",
            &[
                row::<AtomicU32>("u32", "pid", offset_of!(A, pid)),
                row::<AtomicU32>("u32", "reserved", offset_of!(A, _reserved)),
                row::<LabelCell>("LabelCell", "label", offset_of!(A, label)),
            ],
        );
        type P = PngRecord;
        assert_documented::<P>(
            "PngRecord",
            &[
                row::<AtomicU64>("u64", "version", offset_of!(P, version)),
                row::<AtomicU64>("u64", "seq", offset_of!(P, seq)),
                row::<AtomicU64>("u64", "written_at_ns", offset_of!(P, written_at_ns)),
                row::<AtomicU64>("u64", "incarnation", offset_of!(P, incarnation)),
                row::<AtomicU32>("u32", "generation", offset_of!(P, generation)),
                row::<AtomicU32>("u32", "notify", offset_of!(P, notify)),
                row::<AtomicU64>("u64", "capacity", offset_of!(P, capacity)),
                row::<AtomicU64>("u64", "byte_len", offset_of!(P, byte_len)),
                row::<AtomicU64>("u64", "claim", offset_of!(P, claim)),
            ],
        );
        type D = DataHeader;
        assert_documented::<D>(
            "DataHeader",
            &[
                row::<AtomicU64>("u64", "magic", offset_of!(D, magic)),
                row::<AtomicU32>("u32", "generation", offset_of!(D, generation)),
                row::<AtomicU32>("u32", "reserved", offset_of!(D, _reserved)),
                row::<AtomicU64>("u64", "capacity", offset_of!(D, capacity)),
            ],
        );
    }

    #[test]
    fn the_constants_in_the_module_docs_match_the_code() {
        let docs = include_str!("mod.rs");
        assert_eq!(CONTROL_MAGIC, 0x4547_414d_494d_4853);
        assert_eq!(DATA_MAGIC, 0x4154_4144_494d_4853);
        for text in [
            format!("# Layout, version {LAYOUT_VERSION}"),
            format!("version          layout version: {LAYOUT_VERSION}"),
            format!("in an object of {CONTROL_LEN} bytes"),
            format!("{}, the size of this header", size_of::<ControlHeader>()),
            format!("{READY:#010x} once initialised"),
            format!("magic            {CONTROL_MAGIC:#018x}"),
            format!("magic       {DATA_MAGIC:#018x}"),
            format!("then pixels from byte {DATA_OFFSET}"),
            format!("of at most {LABEL_MAX} bytes"),
            format!("readers clamp it to {LABEL_MAX}"),
        ] {
            assert!(docs.contains(&text), "the module docs say {text:?}");
        }
        for format in PixelFormat::ALL {
            let name = format!("{format:?}").to_uppercase();
            assert!(
                docs.contains(&format!(" {} {name}", format.code())),
                "the module docs give format code {} for {name}",
                format.code()
            );
        }
    }

    #[test]
    fn state_words_pack_and_unpack() {
        assert_eq!(unpack_state(pack_state(41, 1)), (41, 1));
        assert_eq!(unpack_state(0), (0, 0));
    }

    #[test]
    fn fuzz_inputs_decode_without_panicking() {
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = HeaderFields::from_bytes(&bytes).validate(len as u64);
            let _ = SlotFields::from_bytes(&bytes).validate(len as u64, u64::MAX);
        }
    }
}
