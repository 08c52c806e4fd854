//! Surviving a shared-memory object truncated under our mappings.
//!
//! When another process shrinks a shared-memory object, touching the pages of our mapping past
//! its new end raises SIGBUS, which kills the process. Any process of the same user can do that
//! to `/dev/shm/shmimage.*`. Like Wayland compositors guarding client buffers, shmimage installs
//! a SIGBUS handler: when the faulting address lies in one of its registered mappings, the
//! handler maps private zero pages over the rest of that mapping (`mmap` with `MAP_FIXED`, an
//! async-signal-safe system call) and marks the mapping *poisoned*; the faulting instruction
//! then re-runs and reads zeros. The segment code checks the mark after each copy, and treats
//! a poisoned mapping as a corrupt segment instead of serving what it read. A SIGBUS anywhere
//! else is passed to the handler that was there before (by default: the process dies, as it
//! would have).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many mappings can be guarded at once (a segment has one control and at most a handful
/// of data mappings per process).
const SLOTS: usize = 128;

struct GuardedRange {
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: GuardedRange = GuardedRange {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static RANGES: [GuardedRange; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
/// The SIGBUS action that was in place before ours, to hand foreign faults back to.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// A mapping registered with the SIGBUS guard; unregisters on drop.
#[derive(Debug)]
pub struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Guards the `len` bytes at `start`. If every slot is taken the mapping goes unguarded (a
    /// truncation would then kill the process, as it would without the guard).
    pub fn register(start: *mut u8, len: usize) -> Guard {
        install();
        for (i, range) in RANGES.iter().enumerate() {
            if range
                .start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                range.poisoned.store(false, Ordering::Relaxed);
                range.len.store(len, Ordering::Relaxed);
                range.start.store(start as usize, Ordering::Release);
                return Guard { slot: Some(i) };
            }
        }
        tracing::warn!("too many shared-memory mappings to guard against truncation");
        Guard { slot: None }
    }

    /// True once a truncation was caught in this mapping: its contents are no longer shared.
    pub fn poisoned(&self) -> bool {
        self.slot
            .is_some_and(|i| RANGES[i].poisoned.load(Ordering::Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            // Freed before the mapping is unmapped (the Guard is dropped first), so the handler
            // never replaces pages of a range that has been reused by another mapping.
            RANGES[i].len.store(0, Ordering::Relaxed);
            RANGES[i].start.store(0, Ordering::Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `sigaction` is plain data; zeroed is a valid starting value. We install a
        // handler with SA_SIGINFO whose signature matches, and save the previous action before
        // any SIGBUS can reach our handler (it reads PREVIOUS only after this store; the Once
        // orders the store before every register()).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
                PREVIOUS = Some(previous);
            }
        }
    });
}

/// The SIGBUS handler. Only async-signal-safe work: atomic loads and stores, `mmap`,
/// `sigaction`.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    for range in &RANGES {
        let start = range.start.load(Ordering::Acquire);
        let len = range.len.load(Ordering::Relaxed);
        if start == 0 || start == usize::MAX || address < start || address - start >= len {
            continue;
        }
        // SAFETY: sysconf is async-signal-safe in practice (glibc reads a cached value).
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let from = address & !(page - 1);
        let end = start + len;
        // Marked before the zero pages go in: a thread that reads them (a copy of another band
        // of the same mapping, say) then finds the mapping poisoned when it checks after its
        // copy, and never takes zeros for pixels.
        range.poisoned.store(true, Ordering::Release);
        // SAFETY: [from, end) lies inside a mapping this process made and still has (the range
        // is registered until just before it is unmapped); replacing it with private zero pages
        // keeps every address valid, and only this guarded memory is affected.
        let mapped = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            return;
        }
    }
    // Not ours: give the fault to whoever handled SIGBUS before us.
    // SAFETY: PREVIOUS was written once, before our handler was installed.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(previous)
            if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN =>
        {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this
                // signature.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal, info, context);
            } else {
                // SAFETY: a plain handler takes the signal number only.
                let handler: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(previous.sa_sigaction) };
                handler(signal);
            }
        }
        _ => {
            // Default action: restore it and return; the faulting instruction re-runs and the
            // kernel delivers SIGBUS again, now killing the process as it would have.
            // SAFETY: resetting a signal's disposition to default is async-signal-safe.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            }
        }
    }
}
