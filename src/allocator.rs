//! The process's memory allocator: handing the memory that large requests freed back to the
//! system.
//!
//! glibc's malloc keeps memory it is given back for the allocations to come. After the first
//! large buffer is freed it also raises its threshold for mapping buffers on their own (up to
//! 32 MiB), so the buffers of the next images (an upload's body, its decoded pixels, a PNG)
//! come from its heaps and, once freed, stay there: in one heap per thread that happened to
//! allocate them. Measured on a server after three 3840x2160 uploads, tens of megabytes of
//! freed buffers stayed resident between requests, and the next request's buffers came on
//! top of them (see docs/PERFORMANCE.md, "Memory").
//!
//! [`release_free_memory`] returns the whole free pages of the allocator's heap to the system
//! (`malloc_trim(0)`). The memory budget calls it once a server has been at rest for a moment
//! after a large request (see [`crate::web::budget`]), so a server at rest holds what it keeps
//! on purpose and nothing more. `malloc_trim` releases the top of the main heap only, and a
//! freed image buffer ends up at the top of whichever heap its thread used, so a server first
//! sets the allocator to one heap for all threads ([`configure_for_server`]); on two cores
//! with a handful of threads that costs nothing measurable. On other C libraries both do
//! nothing.
//!
//! A server also fixes the threshold above which a buffer is mapped on its own
//! (`MAPPED_ALONE_FROM`) at the highest value glibc's moving threshold can reach. That one
//! rises only when a mapped buffer larger than it is freed, so in a server that had only
//! encoded, the pieces of each PNG (about a megabyte each) went on being mapped afresh, each
//! page of each one a page fault (about 4,800 for a 3840x2160 GET that must encode). Below
//! the threshold, buffers come from the heap and reuse the pages the last request freed, until
//! the server is at rest. A lower threshold (4 MiB, measured) keeps less between requests but
//! maps every upload's body and decoded pixels afresh: in two runs each, the share of a
//! 3840x2160 JPEG took 102-124 ms against 90-98, a second server's GET of a shared 3840x2160
//! PNG 20-22 ms against 13. (On 64-bit glibc; a 32-bit one refuses a threshold this high and
//! keeps its own.)
//!
//! These are the only `unsafe` code outside [`crate::segment`].

/// Buffers of at least this many bytes are mapped on their own, and unmapped when freed: the
/// pixels of a 7680x4320 image, say. Smaller ones come from the heap, whose free pages later
/// allocations reuse: among them a 3840x2160 image's pixels (24.9 MB in RGB, 33.2 MB = 31.6
/// MiB in RGBA, both at 8 bits per sample).
const MAPPED_ALONE_FROM: usize = 32 << 20;

/// Free memory at the top of the heap beyond this is given back at once; the rest waits for
/// [`release_free_memory`]. The heap never holds more free memory than the server last used,
/// which the memory budget bounds. At 64 MiB, the 65 MB PNG of a 7680x4320 image, freed when
/// the next image's encode began, went back at once, and that encode's pieces came in fresh
/// pages again (15,000-19,000 page faults per GET that must encode, against 1,700-4,700, and
/// 191-198 ms against 182-183, measured with `curl` after `shmimage put`, six GETs each).
const TRIM_ABOVE: usize = 256 << 20;

/// Makes every thread allocate from one heap, so that [`release_free_memory`] reaches every
/// freed buffer. Call it before the process starts its threads.
pub fn configure_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes two integers and only changes glibc's allocation policy: with
    // `M_ARENA_MAX` it limits the heaps created from now on, with the two thresholds it
    // decides where later buffers come from and when free memory goes back; every
    // allocation stays valid. It is called before the server's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_ALONE_FROM as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE as libc::c_int);
    }
}

/// Returns the free memory of the allocator's heaps to the system. Takes the allocator's
/// locks and walks its heaps (about a millisecond with tens of megabytes free): call it on a
/// thread that may block.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and only changes which free pages of glibc's own
    // heaps are backed by memory; it is safe to call from any thread at any time (it takes
    // each arena's lock), and every allocation stays valid.
    unsafe {
        libc::malloc_trim(0);
    }
}
