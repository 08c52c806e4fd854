//! The segment's lock: a robust, process-shared pthread mutex in the control header.
//!
//! `PTHREAD_PROCESS_SHARED` lets processes share it; `PTHREAD_MUTEX_ROBUST` makes the kernel
//! release it when its holder dies, so the next locker gets `EOWNERDEAD` instead of waiting
//! forever. (raw_sync's mutex has neither property for a dead holder, and its sub-second timeouts
//! fail with `EINVAL`.) The lock only serialises writers and guards no data a reader needs:
//! readers copy optimistically and check the state word (see the module docs of `segment`).
//!
//! Timeouts are measured on `CLOCK_MONOTONIC` (`pthread_mutex_clocklock`), so setting the
//! system clock neither cuts a wait short nor makes it last for hours.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

unsafe extern "C" {
    /// `pthread_mutex_timedlock` against a chosen clock (glibc 2.30 and later, POSIX 2024);
    /// the libc crate does not declare it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process held it for the whole timeout.
    TimedOut,
    /// A previous holder died and the lock was not marked consistent: it is broken for good.
    Unrecoverable,
    /// Any other error from pthreads.
    Os(io::Error),
}

/// The robust mutex at a fixed place in a mapping.
pub struct RobustMutex {
    mutex: *mut libc::pthread_mutex_t,
}

/// Proof that the calling thread holds the lock; unlocks on drop. Not `Send`: a pthread mutex
/// must be unlocked by the thread that locked it.
pub struct LockGuard<'a> {
    mutex: *mut libc::pthread_mutex_t,
    previous_owner_died: bool,
    _not_send: PhantomData<(&'a RobustMutex, *mut ())>,
}

impl RobustMutex {
    /// Wraps the mutex at `mutex`.
    ///
    /// # Safety
    /// `mutex` must point to a `pthread_mutex_t` in a shared mapping that outlives the returned
    /// value, initialised with [`RobustMutex::init`] by this or another process.
    pub unsafe fn from_ptr(mutex: *mut libc::pthread_mutex_t) -> RobustMutex {
        RobustMutex { mutex }
    }

    /// Initialises a robust, process-shared mutex at `mutex`.
    ///
    /// # Safety
    /// `mutex` must be valid for writes and aligned, and no process may use it during the call.
    pub unsafe fn init(mutex: *mut libc::pthread_mutex_t) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: pthread_mutexattr_init initialises the attribute object we own; we only use
        // it after checking that it succeeded.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        check(rc)?;
        let attr = attr.as_mut_ptr();
        // SAFETY: `attr` was initialised above; `mutex` is valid and unused by the caller's
        // contract. The attribute object is destroyed on every path.
        let rc = unsafe {
            let mut rc = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(mutex, attr);
            }
            libc::pthread_mutexattr_destroy(attr);
            rc
        };
        check(rc)
    }

    /// Takes the lock, waiting at most `timeout`. If the previous holder died holding it, the
    /// lock is marked consistent again and the guard says so: the caller must then clean up
    /// what a half-done write may have left.
    pub fn lock(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError> {
        let abstime = monotonic_deadline(timeout).map_err(LockError::Os)?;
        // SAFETY: `self.mutex` points to an initialised mutex in a live mapping (from_ptr's
        // contract); `abstime` is a valid timespec with tv_nsec < 1e9 on CLOCK_MONOTONIC.
        let rc = unsafe { pthread_mutex_clocklock(self.mutex, libc::CLOCK_MONOTONIC, &abstime) };
        let previous_owner_died = match rc {
            0 => false,
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD returns it locked to us).
                let rc = unsafe { libc::pthread_mutex_consistent(self.mutex) };
                if rc != 0 {
                    // SAFETY: we hold the mutex; release it before reporting the failure.
                    unsafe { libc::pthread_mutex_unlock(self.mutex) };
                    return Err(LockError::Os(io::Error::from_raw_os_error(rc)));
                }
                true
            }
            libc::ETIMEDOUT => return Err(LockError::TimedOut),
            libc::ENOTRECOVERABLE => return Err(LockError::Unrecoverable),
            rc => return Err(LockError::Os(io::Error::from_raw_os_error(rc))),
        };
        Ok(LockGuard {
            mutex: self.mutex,
            previous_owner_died,
            _not_send: PhantomData,
        })
    }
}

impl LockGuard<'_> {
    /// True if the previous holder died holding the lock.
    pub fn previous_owner_died(&self) -> bool {
        self.previous_owner_died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the mutex, which lives in a
        // mapping that outlives the guard (it borrows the RobustMutex).
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex) };
        if rc != 0 {
            tracing::error!(
                error = %io::Error::from_raw_os_error(rc),
                "unlocking the segment lock failed"
            );
        }
    }
}

/// `timeout` from now on `CLOCK_MONOTONIC`, as an absolute time (saturating far in the future).
fn monotonic_deadline(timeout: Duration) -> io::Result<libc::timespec> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let nanos = now.tv_nsec as u32 + timeout.subsec_nanos();
    let secs = libc::time_t::try_from(timeout.as_secs())
        .unwrap_or(libc::time_t::MAX)
        .saturating_add(now.tv_sec)
        .saturating_add(libc::time_t::from(nanos / 1_000_000_000));
    Ok(libc::timespec {
        tv_sec: secs,
        tv_nsec: libc::c_long::from(nanos % 1_000_000_000),
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_carry_nanoseconds_and_saturate() {
        let soon = monotonic_deadline(Duration::from_millis(1500)).unwrap();
        assert!((0..1_000_000_000).contains(&soon.tv_nsec));
        let never = monotonic_deadline(Duration::MAX).unwrap();
        assert_eq!(never.tv_sec, libc::time_t::MAX);
        assert!((0..1_000_000_000).contains(&never.tv_nsec));
    }
}
