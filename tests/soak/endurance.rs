//! The soak itself: two servers on one segment under concurrent uploads and reads for
//! `SHMIMAGE_SOAK_SECS` seconds (15 by default; CI runs 30), then the verdict: no 5xx, no torn image, bounded
//! memory, and no file descriptors or mappings left behind.

use crate::helpers::{TestServer, fresh_segment, spawn_server};
use crate::probe::{self, Resources, mib};
use crate::tally::{Route, Tally};
use crate::traffic::{self, Shared};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Uploading tasks per server.
const UPLOADERS_PER_SERVER: usize = 2;
/// Reading tasks per server.
const READERS_PER_SERVER: usize = 3;

/// How many more file descriptors a server may hold after the load than before it: the
/// segment keeps at most two data objects (one per slot), and a client's connection may still
/// be closing when we count.
const FD_SLACK: usize = 6;

/// The most segment mappings a server may keep: the control object, one data object per
/// slot, and the PNG area's.
const SEGMENT_MAPS: usize = 4;

/// How many more lines `/proc/PID/maps` may have after the load than before it. The load runs
/// decoding and segment writes on tokio's blocking threads, and what they leave is bounded but
/// not small: glibc gives threads their own malloc arenas (at most 8 per CPU, two lines each:
/// the heap and its reserve) and caches the stacks of exited threads (40 MiB of them, 20 of
/// Rust's 2 MiB stacks, two lines each with the guard page); threads still alive have a stack
/// each; and the segment may have moved a slot to a new data object.
fn maps_slack(extra_threads: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let arenas = 2 * 8 * cpus;
    let cached_stacks = 2 * 20;
    arenas + cached_stacks + 2 * extra_threads + SEGMENT_MAPS
}

/// The peak resident memory a server may reach under this load: a few medium uploads in
/// flight at once (body, decoded pixels, segment slot, PNG for readers: 5.4 MB each), and room
/// for the allocator, on top of the runtime.
const PEAK_RSS_BOUND_KIB: u64 = 384 * 1024;

fn soak_duration() -> Duration {
    let secs = std::env::var("SHMIMAGE_SOAK_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(15);
    Duration::from_secs(secs)
}

/// Uploads one medium and one small image through each server and reads them from the other,
/// so the segment's slots and the servers' caches exist before the first count.
async fn warm_up(servers: &[TestServer], pools: &[Vec<traffic::Tagged>]) {
    let client = traffic::client();
    for (index, server) in servers.iter().enumerate() {
        let pool = &pools[index];
        for image in [pool.last().expect("a medium image"), &pool[0]] {
            let response = client
                .post(server.url("/image"))
                .header("Content-Type", "image/png")
                .body(image.png.as_ref().clone())
                .send()
                .await
                .expect("warm-up upload");
            assert_eq!(response.status(), 201, "warm-up upload");
            let other = &servers[1 - index];
            let png = client
                .get(other.url("/image.png"))
                .send()
                .await
                .expect("warm-up read")
                .bytes()
                .await
                .expect("warm-up PNG");
            assert_eq!(
                traffic::verify_png(&png),
                Ok(image.id),
                "the warm-up image comes back whole from the other server"
            );
        }
    }
}

/// Waits for the servers' descriptors and mappings to settle back within the slack of
/// `before`, for at most 15 s (idle blocking threads linger for 10 s); returns what they hold
/// then.
async fn settled(pids: &[u32], before: &[Resources]) -> Vec<Resources> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: Vec<Resources> = pids.iter().map(|&pid| probe::resources(pid)).collect();
        let within = now
            .iter()
            .zip(before)
            .all(|(now, before)| leaks(before, now).is_empty());
        if within || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What grew past its slack from `before` to `after`.
fn leaks(before: &Resources, after: &Resources) -> Vec<String> {
    let mut leaks = Vec::new();
    if after.fds > before.fds + FD_SLACK {
        leaks.push(format!(
            "file descriptors grew from {} to {}",
            before.fds, after.fds
        ));
    }
    if after.segment_maps > SEGMENT_MAPS {
        leaks.push(format!(
            "{} mappings of segment objects, more than {SEGMENT_MAPS}",
            after.segment_maps
        ));
    }
    let extra_threads = after.threads.saturating_sub(before.threads) as usize;
    let allowed = before.maps + maps_slack(extra_threads);
    if after.maps > allowed {
        leaks.push(format!(
            "mappings grew from {} to {} (allowed {allowed} with {extra_threads} extra threads)",
            before.maps, after.maps
        ));
    }
    leaks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_under_concurrent_uploads_and_reads_stay_whole_and_bounded() {
    let duration = soak_duration();
    let segment = fresh_segment();
    let servers = [spawn_server(&segment), spawn_server(&segment)];
    let addrs: Vec<String> = servers.iter().map(|server| server.addr.clone()).collect();
    let mut pids = Vec::new();
    for server in &servers {
        pids.push(probe::server_pid(server).await);
    }

    let uploaders = (servers.len() * UPLOADERS_PER_SERVER) as u64;
    let pools: Vec<Vec<traffic::Tagged>> = (0..uploaders)
        .map(|uploader| traffic::pool(uploader, uploaders))
        .collect();
    warm_up(&servers, &pools).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<Resources> = pids.iter().map(|&pid| probe::resources(pid)).collect();

    let known: HashSet<u64> = pools.iter().flatten().map(|image| image.id.0).collect();
    let shared = Shared {
        tally: Arc::new(Tally::default()),
        stop: Arc::new(AtomicBool::new(false)),
        known: Arc::new(known),
    };
    let mut tasks = Vec::new();
    for (uploader, pool) in pools.into_iter().enumerate() {
        let server = uploader % servers.len();
        tasks.push(tokio::spawn(traffic::upload_loop(
            shared.clone(),
            server,
            servers[server].url(""),
            pool,
        )));
    }
    for reader in 0..servers.len() * READERS_PER_SERVER {
        let server = reader % servers.len();
        tasks.push(tokio::spawn(traffic::read_loop(
            shared.clone(),
            server,
            servers[server].url(""),
        )));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client task ends");
    }
    let elapsed = started.elapsed();

    let after = settled(&pids, &before).await;
    let tally = &shared.tally;
    let uploads = tally.requests(Some(Route::Upload), |status| status == 201);
    let reads = tally.requests(Some(Route::ImagePng), |status| {
        status == 200 || status == 304
    }) + tally.requests(Some(Route::ApiSegment), |status| status == 200);
    let server_errors = tally.requests(None, |status| status >= 500);
    let transport_errors = tally.requests(None, |status| status == 0);
    println!(
        "soak of {elapsed:.1?} on segment {segment}: {uploads} uploads ({:.1}/s), {reads} reads \
         ({:.1}/s), {} images verified whole, {} torn, {server_errors} 5xx, {transport_errors} \
         transport errors",
        uploads as f64 / elapsed.as_secs_f64(),
        reads as f64 / elapsed.as_secs_f64(),
        tally.verified_count(),
        tally.torn_count()
    );
    print!("{}", tally.table(&addrs));
    println!(
        "{:<17} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12}",
        "server", "peak RSS", "RSS now", "fds b/a", "maps b/a", "shm maps b/a", "threads b/a"
    );
    let mut leaked = Vec::new();
    for ((addr, before), after) in addrs.iter().zip(&before).zip(&after) {
        println!(
            "{:<17} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12}",
            addr,
            mib(after.peak_rss_kib),
            mib(after.rss_kib),
            format!("{}/{}", before.fds, after.fds),
            format!("{}/{}", before.maps, after.maps),
            format!("{}/{}", before.segment_maps, after.segment_maps),
            format!("{}/{}", before.threads, after.threads),
        );
        leaked.extend(
            leaks(before, after)
                .into_iter()
                .map(|leak| format!("{addr}: {leak}")),
        );
    }

    assert_eq!(
        tally.torn_count(),
        0,
        "torn images: {:#?}",
        tally.torn_examples()
    );
    assert_eq!(server_errors, 0, "5xx answers: {:#?}", tally.problems());
    assert_eq!(
        transport_errors,
        0,
        "requests without an answer: {:#?}",
        tally.problems()
    );
    assert!(tally.problems().is_empty(), "{:#?}", tally.problems());
    assert!(
        uploads >= 20 && tally.verified_count() >= 20,
        "too little load to judge: {uploads} uploads, {} images verified",
        tally.verified_count()
    );
    for (addr, after) in addrs.iter().zip(&after) {
        assert!(
            after.peak_rss_kib <= PEAK_RSS_BOUND_KIB,
            "{addr} peaked at {}, more than {}",
            mib(after.peak_rss_kib),
            mib(PEAK_RSS_BOUND_KIB)
        );
    }
    assert!(leaked.is_empty(), "after {uploads} uploads: {leaked:#?}");
}
