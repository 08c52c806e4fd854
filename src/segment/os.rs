//! Thin, safe wrappers over the operating-system calls a segment needs: named shared-memory
//! objects (opened with `shm_open`, mapped through the shared_memory crate), space reservation,
//! open-file-description locks, and futex wait/wake.
//!
//! Linux only for now: the locks are `F_OFD_*` record locks, the futex is Linux's, and stale
//! objects are found by listing `/dev/shm`.

use super::sigbus;
use shared_memory::{Shmem, ShmemConf, ShmemError};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// Where Linux keeps POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";

/// How to open a shared-memory object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open it if it exists, else create it empty.
    OpenOrCreate,
    /// Create it; fail with `AlreadyExists` if it exists.
    CreateNew,
    /// Open it; fail with `NotFound` if it does not exist.
    OpenExisting,
}

/// Opens the shared-memory object `os_name` (e.g. `/shmimage.demo`) with mode 0600.
pub fn shm_open(os_name: &str, mode: OpenMode) -> io::Result<File> {
    let name = CString::new(os_name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDWR
        | libc::O_CLOEXEC
        | match mode {
            OpenMode::OpenOrCreate => libc::O_CREAT,
            OpenMode::CreateNew => libc::O_CREAT | libc::O_EXCL,
            OpenMode::OpenExisting => 0,
        };
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::shm_open(name.as_ptr(), flags, 0o600 as libc::mode_t) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes the name `os_name`; processes that have it mapped keep their mapping.
pub fn shm_unlink(os_name: &str) -> io::Result<()> {
    let name = CString::new(os_name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::shm_unlink(name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The names (with their leading `/`) of the shared-memory objects whose names start with
/// `prefix` (which starts with `/`).
pub fn list_objects(prefix: &str) -> io::Result<Vec<String>> {
    let bare = prefix.trim_start_matches('/');
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(bare)
        {
            names.push(format!("/{name}"));
        }
    }
    Ok(names)
}

/// Reserves `len` bytes for `file` now, so that writing into its mapping later cannot fail
/// with SIGBUS on a full tmpfs. Fails with `ENOSPC` when there is no room.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain system call on a descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// True if `a` and `b` are the same object (same device and inode).
pub fn same_object(a: &File, b: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// A mapping of a whole shared-memory object, read and write, guarded against truncation (see
/// `sigbus`).
pub struct Mapping {
    // Declared first so it is dropped (unregistered) before the memory is unmapped.
    guard: sigbus::Guard,
    shmem: Shmem,
}

// SAFETY: `Shmem` is a raw pointer to a MAP_SHARED mapping plus its descriptor. Both may be
// used from any thread; shmimage never forms Rust references to the mapped bytes (other
// processes write them), only raw-pointer copies and atomics, so sharing the pointer between
// threads adds no data race that sharing it between processes does not already handle.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above; `&Mapping` only hands out the raw pointer and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the existing object `os_name` whole. The mapping never unlinks the name.
    pub fn open(os_name: &str) -> Result<Mapping, ShmemError> {
        let mut shmem = ShmemConf::new().os_id(os_name).open()?;
        shmem.set_owner(false);
        let guard = sigbus::Guard::register(shmem.as_ptr(), shmem.len());
        Ok(Mapping { guard, shmem })
    }

    /// True once another process truncated the object under this mapping: its pages were
    /// replaced by private zeros and nothing read from it can be trusted.
    pub fn poisoned(&self) -> bool {
        self.guard.poisoned()
    }

    /// First byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shmem.as_ptr()
    }

    /// Length in bytes, fixed when mapped.
    pub fn len(&self) -> usize {
        self.shmem.len()
    }

    /// Drops the mapping's pages from this process's page tables. The object keeps them (the
    /// system holds each page once, for every process that maps it): the next access maps the
    /// same page again, with its bytes. Only the process's resident set shrinks.
    pub fn drop_resident_pages(&self) {
        // SAFETY: the range is exactly this mapping, which stays mapped while `self` lives.
        // For a MAP_SHARED mapping of a shared-memory object, MADV_DONTNEED only removes our
        // page-table entries: no byte of the object changes, and other processes' mappings
        // are untouched. Accesses from other threads meanwhile fault the same pages back in.
        // If the mapping was replaced by private zero pages (see `sigbus`), they are discarded
        // and read as zeros again; nothing read from a poisoned mapping is trusted anyway.
        // A failure (a kernel that refuses) changes nothing, so its result is not needed.
        unsafe {
            libc::madvise(self.as_ptr().cast(), self.len(), libc::MADV_DONTNEED);
        }
    }
}

/// Turns a shared_memory error into an `io::Error` with the errno it carries.
pub fn shmem_error(err: ShmemError) -> io::Error {
    match err {
        ShmemError::MapOpenFailed(code)
        | ShmemError::MapCreateFailed(code)
        | ShmemError::UnknownOsError(code) => io::Error::from_raw_os_error(code as i32),
        other => io::Error::other(other.to_string()),
    }
}

/// The kind of record lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
    Unlock,
}

/// Sets an open-file-description lock on byte `byte` of `file` if no other open file
/// description holds a conflicting one; returns `Ok(false)` if one does. Never waits.
///
/// These locks belong to the open file, not to the process: two `File`s in one process
/// conflict like two processes do, and the kernel drops them when the file is closed or the
/// process dies, however it dies. Converting a lock this description holds (exclusive to
/// shared, say) is atomic.
pub fn try_lock_byte(file: &File, byte: u64, kind: LockKind) -> io::Result<bool> {
    let mut lock = flock_for(byte, kind);
    loop {
        // SAFETY: `lock` is a valid, initialised `struct flock` for the duration of the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// [`try_lock_byte`] again and again until it succeeds or `timeout` passes; `Ok(false)` if
/// another open file description held a conflicting lock the whole time.
///
/// Polls (every 0.1 ms at first, backing off to every 20 ms) instead of waiting in the kernel
/// with `F_OFD_SETLKW`, which has no timeout: a process stopped while holding the lock
/// (SIGSTOP, a debugger) must not block every other one forever.
pub fn lock_byte_within(
    file: &File,
    byte: u64,
    kind: LockKind,
    timeout: Duration,
) -> io::Result<bool> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if try_lock_byte(file, byte, kind)? {
            return Ok(true);
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Ok(false);
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The lock another open file description holds on byte `byte` of `file`, if any: `Shared` or
/// `Exclusive` (the kernel reports one of them when several overlap).
pub fn lock_held_by_other(file: &File, byte: u64) -> io::Result<Option<LockKind>> {
    let mut lock = flock_for(byte, LockKind::Exclusive);
    // SAFETY: `lock` is a valid, initialised `struct flock` for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match i32::from(lock.l_type) {
        libc::F_RDLCK => Some(LockKind::Shared),
        libc::F_WRLCK => Some(LockKind::Exclusive),
        _ => None,
    })
}

fn flock_for(byte: u64, kind: LockKind) -> libc::flock {
    let l_type = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    };
    // SAFETY: `struct flock` is plain old data; all-zero is a valid value (and l_pid must be 0
    // for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = l_type as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Sleeps until `word` may no longer hold `expected`, `timeout` passes, or a spurious wake-up.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit word (in shared memory, so the futex is not
    // private); `ts` is a valid relative timeout. The kernel only reads both.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process waiting on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Whether a process with id `pid` exists now (in this process's pid namespace). A process
/// that exists but belongs to another user counts; pid 0 and ids out of range do not.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 is never delivered: kill only checks that `pid` exists and may be
    // signalled. No memory is involved.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
