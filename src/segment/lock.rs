//! The segment's lock: a robust, process-shared pthread mutex in the control header.
//!
//! `PTHREAD_PROCESS_SHARED` lets processes share it; `PTHREAD_MUTEX_ROBUST` makes the kernel
//! release it when its holder dies, so the next locker gets `EOWNERDEAD` instead of waiting
//! forever. (raw_sync's mutex has neither property for a dead holder, and its sub-second timeouts
//! fail with `EINVAL`.) The lock only serialises writers and guards no data a reader needs:
//! readers copy optimistically and check the state word (see the module docs of `segment`).

use std::io;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        let deadline = SystemTime::now() + timeout;
        let since_epoch = deadline.duration_since(UNIX_EPOCH).unwrap_or_default();
        let abstime = libc::timespec {
            tv_sec: since_epoch.as_secs() as libc::time_t,
            tv_nsec: since_epoch.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.mutex` points to an initialised mutex in a live mapping (from_ptr's
        // contract); `abstime` is a valid timespec with tv_nsec < 1e9.
        let rc = unsafe { libc::pthread_mutex_timedlock(self.mutex, &abstime) };
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

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
