//! What the kernel says about a running server: its pid (found through `/api/segment`), peak and
//! current resident memory, open file descriptors, memory mappings and threads, all read from
//! `/proc/PID`.

use crate::helpers::TestServer;

/// A snapshot of one server process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// `VmHWM`: the most resident memory the process ever had, in KiB.
    pub peak_rss_kib: u64,
    /// `VmRSS`: resident memory now, in KiB.
    pub rss_kib: u64,
    /// Entries in `/proc/PID/fd`.
    pub fds: usize,
    /// Lines in `/proc/PID/maps`.
    pub maps: usize,
    /// Lines in `/proc/PID/maps` that map a shmimage segment's objects from `/dev/shm`.
    pub segment_maps: usize,
    /// `Threads` in `/proc/PID/status`.
    pub threads: u64,
}

/// The pid of `server`: the `attached` entry of `/api/segment` whose label is the server's own
/// address (each server registers as `127.0.0.1:PORT`) and that says `is_self`.
pub async fn server_pid(server: &TestServer) -> u32 {
    let state = server.segment_state().await;
    let attached = state["attached"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"attached\" list in {state}"));
    let me = attached
        .iter()
        .find(|entry| entry["is_self"] == true && entry["label"] == server.addr.as_str())
        .unwrap_or_else(|| panic!("{} is not among the attached servers: {state}", server.addr));
    let pid = me["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {me}"));
    u32::try_from(pid).expect("a pid fits in u32")
}

/// The resources process `pid` holds now.
pub fn resources(pid: u32) -> Resources {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("list /proc/{pid}/fd: {e}"))
        .count();
    let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/maps: {e}"));
    let maps = maps_text.lines().count();
    let segment_maps = maps_text
        .lines()
        .filter(|line| line.contains("/dev/shm/shmimage."))
        .count();
    Resources {
        peak_rss_kib: field("VmHWM"),
        rss_kib: field("VmRSS"),
        fds,
        maps,
        segment_maps,
        threads: field("Threads"),
    }
}

/// KiB as MiB with one decimal, for reports.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
