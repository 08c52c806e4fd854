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
/// atomic store of an aligned 8-byte word (as [`store_from`] does). The bytes read may be torn
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

/// Copies `src` into shared memory at `dst`. Bytes after `src.len()` up to the next whole word
/// are set to zero.
///
/// # Safety
///
/// `dst` must be 8-byte aligned and valid for writes of [`covered_len`]`(src.len())` bytes for
/// the whole call, and every concurrent access to those bytes must be an atomic access of an
/// aligned 8-byte word (as [`load_into`] does). Nobody may rely on the bytes until the writer
/// publishes them with a release store after this call returns.
pub unsafe fn store_from(src: &[u8], dst: *mut u8) {
    debug_assert!(dst.addr().is_multiple_of(WORD));
    let words = dst.cast::<AtomicU64>();
    let whole = src.len() / WORD;
    // SAFETY: forwarded from the caller: `whole` words at `dst` are valid, aligned and only
    // accessed atomically.
    unsafe { store_words(src.as_ptr(), words, whole) };
    let tail = src.len() % WORD;
    if tail != 0 {
        let mut word = [0u8; WORD];
        word[..tail].copy_from_slice(&src[whole * WORD..]);
        // SAFETY: the last, partial word lies inside covered_len(src.len()) bytes of dst.
        unsafe { (*words.add(whole)).store(u64::from_ne_bytes(word), Ordering::Relaxed) };
    }
}

/// Copies the pieces of `parts`, one after the other, into shared memory at `dst`, as
/// [`store_from`] copies their concatenation (without making it): bytes after the last piece up
/// to the next whole word are set to zero. Returns the number of bytes copied.
///
/// # Safety
///
/// As for [`store_from`], for [`covered_len`] of the pieces' total length.
pub unsafe fn store_from_parts(parts: &[&[u8]], dst: *mut u8) -> usize {
    debug_assert!(dst.addr().is_multiple_of(WORD));
    let words = dst.cast::<AtomicU64>();
    // Bytes that do not fill a word yet: the end of one piece, joined with the next.
    let mut carry = [0u8; WORD];
    let mut carried = 0;
    let mut stored = 0;
    for part in parts {
        let mut rest = *part;
        if carried > 0 {
            let take = rest.len().min(WORD - carried);
            carry[carried..carried + take].copy_from_slice(&rest[..take]);
            carried += take;
            rest = &rest[take..];
            if carried < WORD {
                continue;
            }
            // SAFETY: word `stored` is inside the covered length of the total (whole words
            // before it hold the `stored * 8` bytes copied so far, and this one is full).
            unsafe { (*words.add(stored)).store(u64::from_ne_bytes(carry), Ordering::Relaxed) };
            stored += 1;
        }
        let whole = rest.len() / WORD;
        // SAFETY: the `whole` words after the `stored` ones hold bytes of this piece, inside
        // the covered length; the caller's contract does the rest.
        unsafe { store_words(rest.as_ptr(), words.add(stored), whole) };
        stored += whole;
        let tail = &rest[whole * WORD..];
        carry[..tail.len()].copy_from_slice(tail);
        carried = tail.len();
    }
    if carried > 0 {
        carry[carried..].fill(0);
        // SAFETY: the last, partial word lies inside the covered length of the total.
        unsafe { (*words.add(stored)).store(u64::from_ne_bytes(carry), Ordering::Relaxed) };
    }
    stored * WORD + carried
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
            unsafe { store_from(&source, base) };
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
    fn covered_lengths_are_whole_words() {
        assert_eq!(covered_len(0), 0);
        assert_eq!(covered_len(1), 8);
        assert_eq!(covered_len(8), 8);
        assert_eq!(covered_len(33_177_600), 33_177_600);
        assert_eq!(covered_len(33_177_601), 33_177_608);
    }
}
