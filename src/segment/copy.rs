//! Copying pixels into and out of shared memory without a data race.
//!
//! A reader copies a slot while a writer in another thread or process may be writing the same
//! bytes (it then notices from the state word and throws its copy away: the seqlock pattern).
//! In Rust's memory model two such copies are a data race, undefined behaviour, unless both
//! sides access the shared bytes atomically. So every access to shared pixels here is an
//! 8-byte-aligned `AtomicU64` load or store with `Relaxed` ordering, which compiles to plain
//! moves on x86-64 and AArch64; the ordering comes from the state word (release store by the
//! writer after the copy, acquire fence by the reader after its copy, then the re-check).
//!
//! Only whole, aligned words are touched, never single bytes, so no two accesses of different
//! sizes ever overlap (mixed-size atomic accesses are not allowed to race either). The last
//! word of an image whose length is not a multiple of 8 is written with zeros after the image
//! and read whole; the slot's capacity is a multiple of 8 (see [`covered_len`]), so that word
//! lies inside the data object.
//!
//! Relaxed word loads and stores cost nothing measurable against `memcpy`: the copy of a large
//! image is bound by memory bandwidth, not by instructions (see `benches/segment.rs` and
//! docs/PERFORMANCE.md). Non-temporal stores were tried for the writer and were no faster
//! here.

use std::sync::atomic::{AtomicU64, Ordering};

const WORD: usize = size_of::<u64>();
/// Words copied per step of the loops.
const BLOCK: usize = 4;

/// How many bytes of shared memory a copy of `len` bytes touches: `len` rounded up to whole
/// words.
pub fn covered_len(len: usize) -> usize {
    len.next_multiple_of(WORD)
}

/// Copies `len` bytes of shared memory at `src` into `dst`, replacing its contents. `dst` must
/// already have room for `len` bytes (the caller allocates fallibly); it is not reallocated.
///
/// # Safety
///
/// `src` must be 8-byte aligned and valid for reads of [`covered_len`]`(len)` bytes for the
/// whole call, and every concurrent write to those bytes, by any thread or process, must be an
/// atomic store of an aligned 8-byte word (as [`WordSink`] does). The bytes read may be torn
/// between writes: the caller must check afterwards, through the state word, that nobody
/// wrote, and discard the copy otherwise.
pub unsafe fn load_into(src: *const u8, len: usize, dst: &mut Vec<u8>) {
    debug_assert!(src.addr().is_multiple_of(WORD));
    assert!(
        dst.capacity() >= len,
        "the caller reserves room for the copy"
    );
    dst.clear();
    let words = src.cast::<AtomicU64>();
    let out = dst.as_mut_ptr();
    let whole = len / WORD;
    // Four words per step: loads of neighbouring words overlap, and the stores into `dst` go
    // out 32 bytes at a time (measured about 15% faster than one word per step for images
    // that fit the cache, no different for larger ones).
    let blocks = whole / BLOCK;
    for b in 0..blocks {
        // SAFETY: words `BLOCK b ..< BLOCK (b + 1)` lie inside the source (BLOCK (b + 1) <=
        // whole), are aligned (src is) and are only ever accessed atomically (the caller's
        // contract); the 32 bytes at `out + 32 b` are inside dst's reserved capacity.
        unsafe {
            let at = words.add(b * BLOCK);
            let block: [u64; BLOCK] = std::array::from_fn(|k| (*at.add(k)).load(Ordering::Relaxed));
            out.add(b * BLOCK * WORD)
                .cast::<[u64; BLOCK]>()
                .write_unaligned(block);
        }
    }
    for i in blocks * BLOCK..whole {
        // SAFETY: as above, for the single words after the last whole block.
        unsafe {
            let word = (*words.add(i)).load(Ordering::Relaxed);
            out.add(i * WORD).cast::<u64>().write_unaligned(word);
        }
    }
    let tail = len % WORD;
    if tail != 0 {
        // SAFETY: the last, partial word lies inside covered_len(len) bytes of the source; only
        // its first `tail` bytes are copied, into the last `tail` bytes of dst's capacity.
        unsafe {
            let word = (*words.add(whole)).load(Ordering::Relaxed).to_ne_bytes();
            std::ptr::copy_nonoverlapping(word.as_ptr(), out.add(whole * WORD), tail);
        }
    }
    // SAFETY: the first `len` bytes of dst's capacity were initialised above.
    unsafe { dst.set_len(len) };
}

/// Copies the pieces of `parts`, one after the other, into shared memory at `dst`, as
/// one [`WordSink`] stores their concatenation (without making it): bytes after the last piece up
/// to the next whole word are set to zero. Returns the number of bytes copied.
///
/// # Safety
///
/// As for [`WordSink::new`], for [`covered_len`] of the pieces' total length.
pub unsafe fn store_from_parts(parts: &[&[u8]], dst: *mut u8) -> usize {
    let total = parts.iter().map(|part| part.len()).sum::<usize>();
    // SAFETY: forwarded from the caller.
    let mut sink = unsafe { WordSink::new(dst, covered_len(total)) };
    for part in parts {
        let stored = sink.push(part);
        debug_assert!(stored, "the pieces fit their own total");
    }
    sink.finish()
}

/// Bytes given in pieces of any length (rows of an image as a decoder hands them out, the
/// chunks of a PNG), stored into shared memory as one run of bytes:
/// whole aligned words, atomically, the last word zero-filled after the end.
#[derive(Debug)]
pub struct WordSink {
    words: *const AtomicU64,
    /// Words that may be stored.
    capacity: usize,
    /// Words stored so far.
    stored: usize,
    /// Bytes that do not fill a word yet: the end of one piece, joined with the next.
    carry: [u8; WORD],
    carried: usize,
}

impl WordSink {
    /// A sink that stores into the `capacity` bytes (rounded down to whole words) at `dst`.
    ///
    /// # Safety
    ///
    /// `dst` must be 8-byte aligned and valid for writes of `capacity` bytes for the sink's
    /// whole life, with every concurrent access to those bytes an atomic access of an aligned
    /// 8-byte word (as [`load_into`] does). Nobody may rely on the bytes until the writer
    /// publishes them with a release store after [`Self::finish`].
    pub unsafe fn new(dst: *mut u8, capacity: usize) -> WordSink {
        debug_assert!(dst.addr().is_multiple_of(WORD));
        WordSink {
            words: dst.cast::<AtomicU64>(),
            capacity: capacity / WORD,
            stored: 0,
            carry: [0; WORD],
            carried: 0,
        }
    }

    /// The bytes pushed so far.
    pub fn pushed(&self) -> usize {
        self.stored * WORD + self.carried
    }

    /// Stores `bytes` after those pushed before. Stores nothing and returns `false` if they
    /// would not fit the capacity.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.pushed() + bytes.len() > self.capacity * WORD {
            return false;
        }
        let mut rest = bytes;
        if self.carried > 0 {
            let take = rest.len().min(WORD - self.carried);
            self.carry[self.carried..self.carried + take].copy_from_slice(&rest[..take]);
            self.carried += take;
            rest = &rest[take..];
            if self.carried < WORD {
                return true;
            }
            // SAFETY: word `stored` is inside the capacity (checked above: the bytes pushed,
            // this full word among them, fit), aligned, and only accessed atomically (the
            // constructor's contract).
            unsafe {
                (*self.words.add(self.stored))
                    .store(u64::from_ne_bytes(self.carry), Ordering::Relaxed);
            }
            self.stored += 1;
            self.carried = 0;
        }
        let whole = rest.len() / WORD;
        // SAFETY: the `whole` words after the `stored` ones are inside the capacity (checked
        // above), aligned, and only accessed atomically; `rest` holds `whole * 8` bytes.
        unsafe { store_words(rest.as_ptr(), self.words.add(self.stored), whole) };
        self.stored += whole;
        let tail = &rest[whole * WORD..];
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carried = tail.len();
        true
    }

    /// Stores the last, partial word (zero-filled after the end) and returns the number of
    /// bytes pushed.
    pub fn finish(mut self) -> usize {
        if self.carried > 0 {
            self.carry[self.carried..].fill(0);
            // SAFETY: the partial word's bytes were inside the capacity when pushed, and the
            // capacity is whole words, so the whole word is inside it.
            unsafe {
                (*self.words.add(self.stored))
                    .store(u64::from_ne_bytes(self.carry), Ordering::Relaxed);
            }
        }
        self.pushed()
    }
}

/// Stores `count` words read (unaligned) from `src` into the atomic words at `dst`.
///
/// # Safety
///
/// `src` must be valid for reads of `count * 8` bytes; `dst` must be aligned and valid for
/// `count` words, each only ever accessed atomically.
unsafe fn store_words(src: *const u8, dst: *const AtomicU64, count: usize) {
    // Four words per step, as in `load_into`.
    let blocks = count / BLOCK;
    for b in 0..blocks {
        // SAFETY: forwarded from the caller: words `BLOCK b ..< BLOCK (b + 1)` are inside both
        // ranges.
        unsafe {
            let block = src
                .add(b * BLOCK * WORD)
                .cast::<[u64; BLOCK]>()
                .read_unaligned();
            let at = dst.add(b * BLOCK);
            for (k, word) in block.into_iter().enumerate() {
                (*at.add(k)).store(word, Ordering::Relaxed);
            }
        }
    }
    for i in blocks * BLOCK..count {
        // SAFETY: forwarded from the caller: word `i` is inside both ranges.
        unsafe {
            let word = src.add(i * WORD).cast::<u64>().read_unaligned();
            (*dst.add(i)).store(word, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight-byte-aligned shared memory stand-in.
    fn words(len: usize) -> Vec<AtomicU64> {
        (0..covered_len(len) / WORD)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect()
    }

    #[test]
    fn every_length_round_trips_and_the_tail_is_zero_filled() {
        for len in [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            31,
            32,
            33,
            40,
            4095,
            4096,
            4097,
            (1 << 20) + 3,
        ] {
            let source: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let shared = words(len);
            let base = shared.as_ptr().cast::<u8>().cast_mut();
            // SAFETY: `shared` holds covered_len(len) bytes of aligned atomic words.
            unsafe { store_from_parts(&[&source], base) };
            if len % WORD != 0 {
                let last = shared.last().unwrap().load(Ordering::Relaxed).to_ne_bytes();
                assert!(last[len % WORD..].iter().all(|&b| b == 0), "len {len}");
            }
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(b"old");
            out.reserve(len);
            // SAFETY: as above; nothing writes concurrently.
            unsafe { load_into(base, len, &mut out) };
            assert_eq!(out, source, "len {len}");
        }
    }

    #[test]
    fn pieces_are_stored_as_their_concatenation() {
        let source: Vec<u8> = (0..200).map(|i| (i * 13 + 5) as u8).collect();
        // Every way of cutting the source into three pieces, empty ones included.
        for first in 0..=40 {
            for second in first..=first + 41 {
                let parts = [&source[..first], &source[first..second], &source[second..]];
                let shared = words(source.len());
                let base = shared.as_ptr().cast::<u8>().cast_mut();
                // SAFETY: `shared` holds covered_len(200) bytes of aligned atomic words.
                let stored = unsafe { store_from_parts(&parts, base) };
                assert_eq!(stored, source.len());
                let mut out = Vec::with_capacity(source.len());
                // SAFETY: as above; nothing writes concurrently.
                unsafe { load_into(base, source.len(), &mut out) };
                assert_eq!(out, source, "cut at {first} and {second}");
            }
        }
        // A total that is not whole words leaves zeros after it.
        let shared = words(13);
        let base = shared.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: `shared` holds covered_len(13) = 16 bytes of aligned atomic words.
        let stored = unsafe { store_from_parts(&[b"abc", b"", b"defghijklm"], base) };
        assert_eq!(stored, 13);
        let last = shared[1].load(Ordering::Relaxed).to_ne_bytes();
        assert_eq!(&last, b"ijklm\0\0\0");
    }

    #[test]
    fn a_sink_refuses_bytes_past_its_capacity_and_stores_nothing_of_them() {
        let shared = words(16);
        let base = shared.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: `shared` holds 16 bytes of aligned atomic words.
        let mut sink = unsafe { WordSink::new(base, 16) };
        assert!(sink.push(b"0123456789"));
        assert!(!sink.push(b"abcdefg"), "17 bytes do not fit 16");
        assert!(sink.push(b"abcdef"));
        assert!(!sink.push(b"x"));
        assert_eq!(sink.finish(), 16);
        let mut out = Vec::with_capacity(16);
        // SAFETY: as above; nothing writes concurrently.
        unsafe { load_into(base, 16, &mut out) };
        assert_eq!(out, b"0123456789abcdef");
    }

    #[test]
    fn covered_lengths_are_whole_words() {
        assert_eq!(covered_len(0), 0);
        assert_eq!(covered_len(1), 8);
        assert_eq!(covered_len(8), 8);
        assert_eq!(covered_len(33_177_600), 33_177_600);
        assert_eq!(covered_len(33_177_601), 33_177_608);
    }
}
