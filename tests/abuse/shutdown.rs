//! Shutdown always ends: a client stalled in its head or in its body cannot keep the server
//! from exiting, and the last server still removes the segment.

use crate::helpers::{TestServer, fresh_segment, shm_files, spawn_server};
use crate::raw::connect_and_send;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Sends `signal` to the server process.
fn signal(server: &TestServer, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: kill(2) only sends a signal to our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// Waits up to `patience` for the server to exit; `None` if it is still running then.
fn exit_within(server: &mut TestServer, patience: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = server.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_with_a_client_stalled_in_its_head_exits_within_15_s_and_removes_the_segment() {
    let segment = fresh_segment();
    let mut server = spawn_server(&segment);
    let _stalled = connect_and_send(&server.addr, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&server, libc::SIGTERM);
    let status = exit_within(&mut server, Duration::from_secs(15))
        .expect("the server had not exited 15 s after SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}

/// An upload whose body stops after its first bytes: a request in progress that never ends.
const STALLED_UPLOAD: &[u8] = b"POST /image HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG\r\n\x1a\n";

#[tokio::test]
async fn a_request_that_never_finishes_is_dropped_after_the_grace_period() {
    let segment = fresh_segment();
    let mut server = spawn_server(&segment);
    let _uploading = connect_and_send(&server.addr, STALLED_UPLOAD)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&server, libc::SIGTERM);
    // The default grace period is 10 s; the request itself could run for 60.
    let status = exit_within(&mut server, Duration::from_secs(15))
        .expect("the server had not exited 15 s after SIGTERM");
    assert!(status.success(), "{status}");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}

#[tokio::test]
async fn a_second_ctrl_c_exits_at_once_and_still_detaches() {
    let segment = fresh_segment();
    let mut server = spawn_server(&segment);
    let _uploading = connect_and_send(&server.addr, STALLED_UPLOAD)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&server, libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.try_wait().is_none(),
        "the first Ctrl-C lets the upload run"
    );
    signal(&server, libc::SIGINT);
    // Well before the 10 s grace period ends.
    let status = exit_within(&mut server, Duration::from_secs(5))
        .expect("the server had not exited 5 s after the second Ctrl-C");
    assert!(status.success(), "{status}");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}
