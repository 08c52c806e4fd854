//! The memory budget: decodes and encodes reserve the memory they will need before they
//! allocate it, so however many uploads and reads arrive at once, together they hold at most
//! `--max-memory`.
//!
//! Request bodies reserve what they take as they arrive (without waiting: a body that finds
//! no room is refused with `503`), and a decode reserves what it needs beyond its body.
//!
//! A request whose work needs more than is free waits (at most [`WAIT`]) for others to finish,
//! then is answered `503` with `Retry-After`; one that needs more than the whole budget is
//! answered `507` at once. The default budget is derived from the memory the process may use
//! ([`available_memory`]): a sixteenth of it, but never less than one image of `--max-pixels`
//! at 8 bytes per pixel (so the largest image the server accepts can always be decoded) nor more
//! than half of it.
//!
//! Memory given back goes back to the system too, once the server is at rest: after a
//! reservation of at least [`RELEASE_AFTER_BYTES`] has ended, as soon as nothing has been
//! reserved for [`RELEASE_WHEN_IDLE_FOR`], the allocator's free pages are returned
//! ([`crate::allocator::release_free_memory`], on a blocking thread). A server at rest then
//! holds the memory it keeps on purpose (cached PNGs) and not the freed buffers of its last
//! large request, while requests that follow each other closely reuse those buffers instead of
//! paying for fresh pages (a page fault costs 2 to 9 µs per 4 KiB on the machine of
//! docs/PERFORMANCE.md, more than copying the page). At the same moment the server does its
//! other work at rest ([`MemoryBudget::on_rest`]): if it stored an image since its last rest,
//! it drops the segment's pages from its page tables, which the segment keeps for every
//! process anyway.

use super::AppError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a request waits for memory before it is answered `503`.
pub const WAIT: Duration = Duration::from_secs(10);

/// What `Retry-After` says when the budget is exhausted, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The widest pixel shmimage stores: RGBA with 16-bit samples.
const WIDEST_STORED_PIXEL: u64 = 8;

/// The smallest reservation whose end returns free memory to the system: an image of about
/// 1920x1080 pixels and up. Smaller requests leave the allocator's free memory for the next.
pub const RELEASE_AFTER_BYTES: u64 = 4 * 1024 * 1024;

/// How long nothing may be reserved before free memory goes back to the system.
pub const RELEASE_WHEN_IDLE_FOR: Duration = Duration::from_millis(500);

/// Room for what a decode holds besides its pixels.
const WORKING_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes that decodes and encodes may hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    free: Mutex<u64>,
    returned: Condvar,
    /// Counts reservations made, so that a release planned at rest knows whether the budget
    /// has been used since.
    reserved: AtomicU64,
    /// Whether a large reservation has ended since free memory last went back to the system.
    release_pending: AtomicBool,
    /// Done on a blocking thread, with the release, whenever the server comes to rest.
    rest_work: OnceLock<RestWork>,
}

/// What a server does at rest besides giving free memory back.
struct RestWork(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for RestWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestWork")
    }
}

/// Memory reserved from a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves `more` bytes on top, without waiting: for memory that grows as a request body
    /// arrives.
    pub fn grow(&mut self, more: u64, work: &'static str) -> Result<(), AppError> {
        let budget = &self.budget;
        let needed = self.bytes.saturating_add(more);
        if needed > budget.total {
            return Err(AppError::OverMemoryBudget {
                work,
                needed,
                budget: budget.total,
            });
        }
        let mut free = budget.free.lock().unwrap_or_else(PoisonError::into_inner);
        if *free < more {
            return Err(AppError::MemoryBusy {
                work,
                needed,
                budget: budget.total,
            });
        }
        *free -= more;
        self.bytes = needed;
        budget.reserved.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut free = self
            .budget
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *free += self.bytes;
        let at_rest = *free == self.budget.total;
        drop(free);
        self.budget.returned.notify_all();
        if self.bytes >= RELEASE_AFTER_BYTES {
            self.budget.release_pending.store(true, Ordering::Relaxed);
        }
        if at_rest && self.budget.release_pending.load(Ordering::Relaxed) {
            self.budget.release_when_idle();
        }
    }
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            free: Mutex::new(total),
            returned: Condvar::new(),
            reserved: AtomicU64::new(0),
            release_pending: AtomicBool::new(false),
            rest_work: OnceLock::new(),
        })
    }

    /// Has `work` done, on a blocking thread, each time free memory goes back to the system
    /// after a large reservation (see the module docs). Only the first call counts.
    pub fn on_rest(&self, work: impl Fn() + Send + Sync + 'static) {
        let _ = self.rest_work.set(RestWork(Box::new(work)));
    }

    /// The work at rest: the caller's, then giving free memory back. With `seen`, the
    /// caller's work is skipped if a reservation was made since the count was `seen`: a request
    /// that started meanwhile would pay for it (its write mapping the segment's pages again).
    fn rest(&self, seen: Option<u64>) {
        let still_idle = seen.is_none_or(|seen| self.reserved.load(Ordering::Relaxed) == seen);
        if still_idle && let Some(work) = self.rest_work.get() {
            (work.0)();
        }
        crate::allocator::release_free_memory();
    }

    /// Hands the allocator's free memory back to the system if nothing is reserved for
    /// [`RELEASE_WHEN_IDLE_FOR`] from now, on one of tokio's blocking threads (it takes the
    /// allocator's locks); outside a runtime, at once.
    fn release_when_idle(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.release_pending.store(false, Ordering::Relaxed);
            self.rest(None);
            return;
        };
        let seen = self.reserved.load(Ordering::Relaxed);
        let budget = Arc::clone(self);
        runtime.spawn(async move {
            tokio::time::sleep(RELEASE_WHEN_IDLE_FOR).await;
            let idle = budget.reserved.load(Ordering::Relaxed) == seen
                && *budget.free.lock().unwrap_or_else(PoisonError::into_inner) == budget.total;
            // Otherwise the budget was used since: the end of that use plans the release anew.
            if idle && budget.release_pending.swap(false, Ordering::Relaxed) {
                let _ = tokio::task::spawn_blocking(move || budget.rest(Some(seen))).await;
            }
        });
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// An empty reservation, to [`Reservation::grow`].
    pub fn nothing(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    /// Reserves `bytes` for `work` ("decoding the upload", "encoding the PNG"), waiting up to
    /// `wait` for others to give memory back. Blocks: call it on a blocking thread.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        work: &'static str,
        wait: Duration,
    ) -> Result<Reservation, AppError> {
        if bytes > self.total {
            return Err(AppError::OverMemoryBudget {
                work,
                needed: bytes,
                budget: self.total,
            });
        }
        let deadline = Instant::now() + wait;
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AppError::MemoryBusy {
                    work,
                    needed: bytes,
                    budget: self.total,
                });
            }
            free = self
                .returned
                .wait_timeout(free, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *free -= bytes;
        self.reserved.fetch_add(1, Ordering::Relaxed);
        Ok(Reservation {
            budget: Arc::clone(self),
            bytes,
        })
    }
}

/// The default `--max-memory` for a server that accepts `max_pixels`: a sixteenth of the
/// memory the process may use, at least one largest image (plus working room), at most half.
pub fn default_budget(max_pixels: u64, available: Option<u64>) -> u64 {
    let largest = max_pixels
        .saturating_mul(WIDEST_STORED_PIXEL)
        .saturating_add(WORKING_BYTES);
    match available {
        Some(available) => (available / 16).max(largest).min(available / 2).max(1),
        None => largest.saturating_mul(2),
    }
}

/// The memory this process may use: physical memory, or less if the cgroup it runs in
/// (`memory.max`) or its address-space limit (`ulimit -v`) says so. `None` if none of them can
/// be read.
pub fn available_memory() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let address_space = rlimit::getrlimit(rlimit::Resource::AS)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != rlimit::INFINITY);
    [physical, cgroup, address_space]
        .into_iter()
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn the_work_at_rest_runs_once_after_a_large_request_and_not_while_busy() {
        let budget = MemoryBudget::new(100 * MIB);
        let runs = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&runs);
        budget.on_rest(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let settled = RELEASE_WHEN_IDLE_FOR * 3;
        // A small request brings no rest work.
        drop(budget.reserve(MIB, "decoding", WAIT).unwrap());
        tokio::time::sleep(settled).await;
        assert_eq!(runs.load(Ordering::Relaxed), 0);
        // A large one does, once the server is at rest; not while another request holds memory.
        drop(
            budget
                .reserve(RELEASE_AFTER_BYTES, "decoding", WAIT)
                .unwrap(),
        );
        let busy = budget.reserve(MIB, "encoding", WAIT).unwrap();
        tokio::time::sleep(settled).await;
        assert_eq!(runs.load(Ordering::Relaxed), 0, "ran while busy");
        drop(busy);
        tokio::time::sleep(settled).await;
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reservations_wait_for_memory_and_give_it_back() {
        let budget = MemoryBudget::new(100 * MIB);
        let first = budget.reserve(60 * MIB, "decoding", WAIT).unwrap();
        let waited = budget.reserve(60 * MIB, "decoding", Duration::from_millis(50));
        assert!(
            matches!(waited, Err(AppError::MemoryBusy { .. })),
            "{waited:?}"
        );
        let small = budget.reserve(40 * MIB, "encoding", WAIT).unwrap();
        drop(first);
        drop(small);
        assert!(budget.reserve(100 * MIB, "decoding", WAIT).is_ok());
        let too_big = budget.reserve(101 * MIB, "decoding", WAIT);
        assert!(
            matches!(too_big, Err(AppError::OverMemoryBudget { .. })),
            "{too_big:?}"
        );
    }

    #[test]
    fn a_growing_reservation_takes_what_is_free_and_gives_it_all_back() {
        let budget = MemoryBudget::new(10 * MIB);
        let mut body = budget.nothing();
        body.grow(4 * MIB, "receiving the upload").unwrap();
        body.grow(4 * MIB, "receiving the upload").unwrap();
        assert_eq!(body.bytes(), 8 * MIB);
        let busy = budget.reserve(4 * MIB, "decoding", Duration::ZERO);
        assert!(matches!(busy, Err(AppError::MemoryBusy { .. })), "{busy:?}");
        let grown = body.grow(4 * MIB, "receiving the upload");
        assert!(
            matches!(grown, Err(AppError::OverMemoryBudget { .. })),
            "{grown:?}"
        );
        drop(body);
        assert!(budget.reserve(10 * MIB, "decoding", Duration::ZERO).is_ok());
    }

    #[test]
    fn a_waiting_reservation_gets_memory_as_soon_as_it_is_given_back() {
        let budget = MemoryBudget::new(10 * MIB);
        let held = budget.reserve(10 * MIB, "decoding", WAIT).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.reserve(10 * MIB, "decoding", WAIT).is_ok())
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    #[tokio::test]
    async fn free_memory_goes_back_to_the_system_once_the_budget_is_at_rest() {
        let budget = MemoryBudget::new(100 * MIB);
        let small = budget.reserve(MIB, "encoding", WAIT).unwrap();
        drop(budget.reserve(8 * MIB, "decoding", WAIT).unwrap());
        assert!(budget.release_pending.load(Ordering::Relaxed));
        // Not at rest while anything is reserved, however long that lasts.
        tokio::time::sleep(2 * RELEASE_WHEN_IDLE_FOR).await;
        assert!(budget.release_pending.load(Ordering::Relaxed));
        drop(small);
        let deadline = Instant::now() + Duration::from_secs(20);
        while budget.release_pending.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "no release at rest");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Small requests alone leave the allocator's free memory where it is.
        drop(budget.reserve(MIB, "encoding", WAIT).unwrap());
        assert!(!budget.release_pending.load(Ordering::Relaxed));
    }

    #[test]
    fn the_default_fits_the_largest_image_and_the_machine() {
        let gib = 1024 * MIB;
        let largest = 100_000_000 * 8 + 64 * MIB;
        assert_eq!(default_budget(100_000_000, Some(24 * gib)), 24 * gib / 16);
        assert_eq!(default_budget(100_000_000, Some(6 * gib)), largest);
        assert_eq!(default_budget(100_000_000, Some(gib)), gib / 2);
        assert_eq!(default_budget(1_000, Some(64 * gib)), 4 * gib);
        assert_eq!(default_budget(100_000_000, None), 2 * largest);
        assert!(available_memory().is_some_and(|bytes| bytes > 64 * MIB));
    }
}
