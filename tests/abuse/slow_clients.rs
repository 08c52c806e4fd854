//! Clients that hold connections without finishing a request: stalled heads (slowloris), idle
//! keep-alive connections by the thousand, and floods at the file-descriptor limit. The server
//! closes what it must and stays reachable.

use crate::helpers::{
    TestServer, encode, fresh_segment, rgb8, spawn_program, spawn_server, spawn_server_with,
};
use crate::raw::{closed_within, connect_and_send, raise_own_fd_limit, read_response};
use image::ImageFormat;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Half a request head: no blank line, so the head never ends.
const HALF_A_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow";

/// A complete request that leaves the connection open afterwards.
const KEEP_ALIVE_GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// `GET /healthz` on a fresh connection within `patience`: whether it answered 200.
async fn healthz_answers(server: &TestServer, patience: Duration) -> bool {
    let attempt = async {
        let mut stream = connect_and_send(&server.addr, KEEP_ALIVE_GET).await.ok()?;
        read_response(&mut stream, patience).await
    };
    matches!(
        tokio::time::timeout(patience, attempt).await,
        Ok(Some((200, _)))
    )
}

#[tokio::test]
async fn three_hundred_stalled_heads_are_closed_within_45_s_while_healthz_answers() {
    let server = spawn_server(&fresh_segment());
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        stalled.push(
            connect_and_send(&server.addr, HALF_A_HEAD)
                .await
                .expect("connect"),
        );
    }

    // Meanwhile /healthz answers at once, again and again, on new connections.
    let probe = async {
        let mut answered = 0;
        while started.elapsed() < Duration::from_secs(20) {
            assert!(
                healthz_answers(&server, Duration::from_secs(5)).await,
                "GET /healthz got no answer within 5 s, {:?} into the flood",
                started.elapsed()
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        answered
    };
    let closing = async {
        let waits = stalled.iter_mut().map(|stream| {
            let left = Duration::from_secs(45).saturating_sub(started.elapsed());
            closed_within(stream, left)
        });
        futures_util::future::join_all(waits).await
    };
    let (answered, closed) = tokio::join!(probe, closing);
    let open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(
        open, 0,
        "{open} of 300 stalled heads were still open after 45 s"
    );
    assert!(answered > 10, "/healthz answered {answered} times");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = spawn_server_with(&fresh_segment(), &["--keep-alive-timeout", "2"]);
    let mut stream = connect_and_send(&server.addr, KEEP_ALIVE_GET)
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    // The connection serves a second request while it is fresh...
    stream.write_all(KEEP_ALIVE_GET).await.unwrap();
    let (status, _) = read_response(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    // ...and is closed once it has idled for the timeout.
    assert!(
        closed_within(&mut stream, Duration::from_secs(15)).await,
        "an idle connection stayed open 15 s with --keep-alive-timeout 2"
    );
}

/// Starts a server whose process may open at most `fds` files (soft and hard limit).
fn spawn_with_fd_limit(segment: &str, fds: u32, extra: &[&str]) -> TestServer {
    let script = format!("ulimit -n {fds} && exec \"$0\" \"$@\"");
    let mut args = vec![
        "-c",
        &script,
        env!("CARGO_BIN_EXE_shmimage"),
        "--port",
        "0",
        "--segment",
        segment,
    ];
    args.extend_from_slice(extra);
    spawn_program("/bin/sh", &args, &[])
}

/// Opens `count` connections at once that each make one request and then stay open, idle.
async fn idle_keep_alive_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let mut stream = connect_and_send(&addr, KEEP_ALIVE_GET).await.ok()?;
                // Answered or not (the server may be out of descriptors), it stays open.
                let _ = read_response(&mut stream, Duration::from_secs(5)).await;
                Some(stream)
            })
        })
        .collect();
    let mut streams = Vec::new();
    for task in tasks {
        if let Ok(Some(stream)) = task.await {
            streams.push(stream);
        }
    }
    streams
}

#[tokio::test]
async fn at_1024_descriptors_1500_idle_connections_do_not_lock_out_a_new_client() {
    raise_own_fd_limit();
    let segment = fresh_segment();
    let server = spawn_with_fd_limit(&segment, 1024, &[]);
    let idle = idle_keep_alive_connections(&server.addr, 1500).await;
    assert!(
        idle.len() > 1100,
        "only {} connections were opened",
        idle.len()
    );

    let started = Instant::now();
    let deadline = Duration::from_secs(40);
    while !healthz_answers(&server, Duration::from_secs(3)).await {
        assert!(
            started.elapsed() < deadline,
            "no new client was served within {deadline:?} of 1500 idle connections"
        );
    }
    // Everything else works too: the static files and an upload, which opens shared memory.
    let script = server.get("/static/app.js").await;
    assert_eq!(script.status(), 200);
    let png = encode(&rgb8(32, 24, 5), ImageFormat::Png);
    let upload = server.upload(png, "after-the-flood.png", "image/png").await;
    assert_eq!(
        upload.status(),
        201,
        "{}",
        upload.text().await.unwrap_or_default()
    );
    drop(idle);
}

#[tokio::test]
async fn at_2000_stalled_heads_under_1024_descriptors_the_server_stays_reachable() {
    raise_own_fd_limit();
    let server = spawn_with_fd_limit(&fresh_segment(), 1024, &[]);
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let addr = server.addr.clone();
            tokio::spawn(async move { connect_and_send(&addr, HALF_A_HEAD).await.ok() })
        })
        .collect();
    let mut stalled = Vec::new();
    for task in tasks {
        stalled.extend(task.await.ok().flatten());
    }
    let started = Instant::now();
    while !healthz_answers(&server, Duration::from_secs(3)).await {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no new client was served within 40 s of 2000 stalled heads"
        );
    }
    drop(stalled);
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_get_503() {
    let server = spawn_server_with(&fresh_segment(), &["--max-connections", "20"]);
    // Twenty idle keep-alive connections fill the cap; a new client still gets in.
    let idle = idle_keep_alive_connections(&server.addr, 20).await;
    assert_eq!(idle.len(), 20);
    assert!(
        healthz_answers(&server, Duration::from_secs(5)).await,
        "a new client at the cap"
    );
    drop(idle);
    // Let the server see those connections go before the busy ones take their places.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Twenty open event streams are busy connections: nothing can be closed for a newcomer,
    // who is told so with 503 and Retry-After instead of waiting in silence.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut stream = connect_and_send(
            &server.addr,
            b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
        let mut first = [0u8; 64];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut first),
        )
        .await
        .expect("the event stream starts")
        .unwrap();
        assert!(
            first[..read].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..read])
        );
        streams.push(stream);
    }
    let mut stream = connect_and_send(&server.addr, KEEP_ALIVE_GET)
        .await
        .unwrap();
    let (status, head) = read_response(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    drop(streams);
}
