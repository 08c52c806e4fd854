//! An upload's body as it arrives: one buffer that every piece is copied into once, within the
//! byte limit and the memory budget.
//!
//! hyper hands a body over in pieces of at most 64 KiB, each its own allocation. They are
//! copied into one contiguous buffer as they arrive and dropped, so the body is in memory once
//! (decoders want one slice), and everything after that copy is a view into the buffer: the
//! image of a form is a [`Bytes`] slice of it, not a second copy.
//!
//! The buffer grows fourfold as bytes arrive (a realloc, which glibc does without copying for
//! buffers this large), never past what the request declared in `Content-Length` nor past the
//! limit: a length that is declared but never sent costs nothing. Every byte of capacity is
//! reserved from the server's [`MemoryBudget`] first. Bytes the reader no longer needs (the
//! parts of a form before the image) can be discarded from the front, so a form's other fields
//! do not stay in memory; the limit counts every byte received, discarded or not.

use crate::web::AppError;
use crate::web::budget::{MemoryBudget, Reservation};
use axum::body::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// What the buffer reports when its memory cannot be had.
const WORK: &str = "receiving the upload";

/// The bytes of one request body that are still needed, and what they hold.
#[derive(Debug)]
pub(super) struct BodyBuffer {
    bytes: Vec<u8>,
    memory: Reservation,
    /// The length the request declared, if any: the buffer never grows past it unasked.
    declared: Option<u64>,
    /// Every byte of the body received so far, including discarded ones.
    received: u64,
    /// The most bytes the body may have.
    limit: usize,
}

impl BodyBuffer {
    /// An empty buffer for a body that declared `declared` bytes (if it did) and may have at
    /// most `limit`.
    pub(super) fn new(declared: Option<u64>, limit: usize, budget: &Arc<MemoryBudget>) -> Self {
        BodyBuffer {
            bytes: Vec::new(),
            memory: budget.nothing(),
            declared,
            received: 0,
            limit,
        }
    }

    /// The bytes kept, in order.
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// How many bytes are kept.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends `piece`; refuses the body once it is over the limit (413), or when the memory
    /// for it cannot be had (503 or 507).
    pub(super) fn append(&mut self, piece: &[u8]) -> Result<(), AppError> {
        let received = self.received.saturating_add(piece.len() as u64);
        if received > self.limit as u64 {
            return Err(AppError::UploadTooLarge { limit: self.limit });
        }
        self.received = received;
        let needed = self.bytes.len() + piece.len();
        if needed > self.bytes.capacity() {
            self.grow_to(self.target_capacity(needed))?;
        }
        self.bytes.extend_from_slice(piece);
        Ok(())
    }

    /// The capacity to grow to when `needed` bytes must fit: four times what is kept, but no
    /// more than the rest of the declared body (or the limit) could fill.
    fn target_capacity(&self, needed: usize) -> usize {
        let still_to_come = self
            .declared
            .map_or(self.limit as u64, |declared| {
                declared
                    .min(self.limit as u64)
                    .saturating_sub(self.received)
            })
            .min(self.limit as u64);
        let ceiling = needed.saturating_add(usize::try_from(still_to_come).unwrap_or(usize::MAX));
        needed.max(self.bytes.len().saturating_mul(4).min(ceiling))
    }

    /// Reserves memory for, then allocates, a capacity of `target` bytes.
    fn grow_to(&mut self, target: usize) -> Result<(), AppError> {
        let more = target.saturating_sub(self.bytes.capacity());
        self.memory.grow(more as u64, WORK)?;
        self.bytes
            .try_reserve_exact(target - self.bytes.len())
            .map_err(|_| AppError::OutOfMemory {
                work: WORK,
                bytes: target as u64,
            })
    }

    /// Forgets the first `count` bytes (at most all of them), moving the rest to the front.
    pub(super) fn discard_front(&mut self, count: usize) {
        let count = count.min(self.bytes.len());
        if count > 0 {
            self.bytes.drain(..count);
        }
    }

    /// The bytes in `range` (clamped to what is kept), without a copy, and the memory they
    /// hold.
    pub(super) fn into_bytes(self, range: Range<usize>) -> (Bytes, Reservation) {
        let end = range.end.min(self.bytes.len());
        let start = range.start.min(end);
        (Bytes::from(self.bytes).slice(start..end), self.memory)
    }

    /// All bytes kept, without a copy, and the memory they hold.
    pub(super) fn into_all(self) -> (Bytes, Reservation) {
        let len = self.bytes.len();
        self.into_bytes(0..len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_body_is_kept_in_one_buffer_and_handed_over_without_a_copy() {
        let budget = MemoryBudget::new(64 * MIB);
        let mut body = BodyBuffer::new(Some(300_000), 1_000_000, &budget);
        for piece in [vec![1u8; 65_536], vec![2; 65_536], vec![3; 168_928]] {
            body.append(&piece).unwrap();
        }
        assert_eq!(body.len(), 300_000);
        let kept = body.as_slice().as_ptr();
        let (bytes, memory) = body.into_bytes(65_530..65_540);
        assert_eq!(&bytes[..], &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(
            bytes.as_ptr(),
            kept.wrapping_add(65_530),
            "a view, not a copy"
        );
        assert!(memory.bytes() >= 300_000, "{}", memory.bytes());
    }

    #[test]
    fn the_buffer_never_grows_past_the_declared_length() {
        let budget = MemoryBudget::new(64 * MIB);
        let mut body = BodyBuffer::new(Some(100_000), 10_000_000, &budget);
        body.append(&[0; 60_000]).unwrap();
        body.append(&[0; 40_000]).unwrap();
        assert_eq!(body.memory.bytes(), 100_000);
        // A body that sends more than it declared still fits, within the limit.
        body.append(&[0; 10]).unwrap();
        assert_eq!(body.len(), 100_010);
    }

    #[test]
    fn the_limit_counts_discarded_bytes_too() {
        let budget = MemoryBudget::new(64 * MIB);
        let mut body = BodyBuffer::new(None, 1000, &budget);
        body.append(&[7; 600]).unwrap();
        body.discard_front(590);
        assert_eq!(body.as_slice(), &[7; 10]);
        let refused = body.append(&[7; 401]);
        assert!(
            matches!(refused, Err(AppError::UploadTooLarge { limit: 1000 })),
            "{refused:?}"
        );
    }

    #[test]
    fn a_body_the_budget_cannot_hold_is_refused_and_its_memory_given_back() {
        let budget = MemoryBudget::new(MIB);
        let mut body = BodyBuffer::new(None, 64 * MIB as usize, &budget);
        body.append(&[0; 1000]).unwrap();
        let refused = body.append(&vec![0; 2 * MIB as usize]);
        assert!(
            matches!(refused, Err(AppError::OverMemoryBudget { .. })),
            "{refused:?}"
        );
        drop(body);
        assert!(
            budget
                .reserve(MIB, "decoding", std::time::Duration::ZERO)
                .is_ok()
        );
    }
}
