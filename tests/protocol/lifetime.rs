//! The Python reader and the segment's lifetime: it lists the attached processes shmimage
//! lists (registry entries locked shared, not those still being filled in), it notices when
//! the last attached process removes the segment under it, while reading and while waiting
//! for the next image, and it unmaps the data objects writers removed.

use crate::helpers::{TestServer, fresh_segment, shm_files, spawn_server};
use crate::python::{Running, python, run};
use crate::reader::{attach, filled};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// From docs/PROTOCOL.md: the registry's offset, its entries' size, and the byte locked for
/// entry `i` (`REGISTRY_BYTE + i`).
const ATTACHMENTS: u64 = 272;
const ATTACHMENT_SIZE: u64 = 64;
const REGISTRY_BYTE: u64 = 64;
/// The entry this test fills in by hand: the last one, which the two servers never reach.
const ENTRY: u64 = 63;

/// (pid, label) pairs, sorted.
type Listing = Vec<(u64, String)>;

fn sorted(mut listing: Listing) -> Listing {
    listing.sort();
    listing
}

fn listed_by_python(python: &str, segment: &str) -> Listing {
    let attached = run(python, &["attached", "--segment", segment]);
    let line = attached.only_line();
    sorted(
        line["attached"]
            .as_array()
            .unwrap_or_else(|| panic!("a list: {line}"))
            .iter()
            .map(|entry| {
                (
                    entry["pid"].as_u64().unwrap(),
                    entry["label"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    )
}

async fn listed_by_server(server: &TestServer) -> Listing {
    let state = server.segment_state().await;
    sorted(
        state["attached"]
            .as_array()
            .unwrap_or_else(|| panic!("a list: {state}"))
            .iter()
            .map(|entry| {
                (
                    entry["pid"].as_u64().unwrap(),
                    entry["label"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    )
}

/// Sets an OFD lock (`F_RDLCK`, `F_WRLCK` or `F_UNLCK`) on byte `byte` of `file`, without
/// waiting; fails the test if another descriptor holds a conflicting one.
fn lock_byte(file: &File, byte: u64, kind: libc::c_int) {
    // SAFETY: an all-zero `struct flock` is a valid value; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    // SAFETY: `lock` is a valid, initialised `struct flock` for the duration of the call, and
    // the descriptor is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    assert_eq!(
        rc,
        0,
        "lock byte {byte}: {}",
        std::io::Error::last_os_error()
    );
}

/// Stores `pid` and `label` into registry entry `entry`, as a registering process does.
fn fill_entry(control: &File, entry: u64, pid: u32, label: &str) {
    let base = ATTACHMENTS + ATTACHMENT_SIZE * entry;
    let mut text = [0u8; 48];
    text[..label.len()].copy_from_slice(label.as_bytes());
    control.write_all_at(&text, base + 16).unwrap();
    control
        .write_all_at(&(label.len() as u32).to_ne_bytes(), base + 8)
        .unwrap();
    control.write_all_at(&pid.to_ne_bytes(), base).unwrap();
}

#[tokio::test]
async fn the_python_reader_lists_the_registered_processes_shmimage_lists_and_no_half_registered_one()
 {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let servers = sorted(vec![
        (u64::from(a.pid()), a.addr.clone()),
        (u64::from(b.pid()), b.addr.clone()),
    ]);
    assert_eq!(listed_by_python(python, &segment), servers);
    assert_eq!(listed_by_server(&a).await, servers);

    // A process claims the last entry (locked exclusively) over what a dead one left there.
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmimage.{segment}"))
        .unwrap();
    fill_entry(&control, ENTRY, 999_999, "a process that died");
    let byte = REGISTRY_BYTE + ENTRY;
    lock_byte(&control, byte, libc::F_WRLCK);
    assert_eq!(
        listed_by_python(python, &segment),
        servers,
        "an entry being filled in is not listed"
    );
    assert_eq!(listed_by_server(&a).await, servers);

    // It stores its pid and label and turns its lock shared: registered.
    let me = std::process::id();
    fill_entry(&control, ENTRY, me, "registered by hand");
    lock_byte(&control, byte, libc::F_RDLCK);
    let mut with_me = servers.clone();
    with_me.push((u64::from(me), "registered by hand".to_owned()));
    let with_me = sorted(with_me);
    assert_eq!(listed_by_python(python, &segment), with_me);
    assert_eq!(listed_by_server(&a).await, with_me);

    // It detaches: exclusive again, pid cleared, unlocked.
    lock_byte(&control, byte, libc::F_WRLCK);
    control
        .write_all_at(&0u32.to_ne_bytes(), ATTACHMENTS + ATTACHMENT_SIZE * ENTRY)
        .unwrap();
    lock_byte(&control, byte, libc::F_UNLCK);
    assert_eq!(listed_by_python(python, &segment), servers);
    assert_eq!(listed_by_server(&a).await, servers);
}

#[test]
fn the_python_reader_stops_reading_a_segment_once_the_last_process_removed_it() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    let image = filled(32, 1);
    writer.write(&image).unwrap();
    let mut reader = Running::start(
        python,
        &[
            "read",
            "--segment",
            &segment,
            "--count",
            "2",
            "--pause-after-copy",
        ],
    );
    assert_eq!(reader.next_line()["paused"], true);

    // The only attached process detaches while the reader holds its copy of image 1.
    assert!(writer.detach().unwrap(), "the writer was the last process");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "the segment is gone"
    );
    reader.send_line();

    let first = reader.next_line();
    assert_eq!(first["seq"], 1, "the copy made before the removal stands");
    assert_eq!(first["crc32"], crc32fast::hash(image.pixels()));
    let (success, stderr) = reader.finish();
    assert!(!success, "the second read must fail");
    assert!(
        stderr.contains("the segment was removed: the last process attached to it detached"),
        "{stderr}"
    );
}

#[test]
fn the_python_reader_waiting_for_an_image_notices_that_the_segment_was_removed() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    writer.write(&filled(8, 1)).unwrap();
    let waiting = Running::start(
        python,
        &[
            "wait",
            "--segment",
            &segment,
            "--since",
            "1",
            "--timeout",
            "50",
        ],
    );
    assert_eq!(waiting.next_line()["waiting"], 1);

    assert!(writer.detach().unwrap(), "the writer was the last process");

    // Nobody wakes the futex; the reader's bounded waits notice within seconds, not 50 s.
    let (success, stderr) = waiting.finish();
    assert!(!success);
    assert!(
        stderr.contains("the segment was removed: the last process attached to it detached"),
        "{stderr}"
    );
}

/// The data objects of `segment` that process `pid` has mapped: how many, and how many of
/// them were removed (unlinked) since.
fn mapped_data_objects(pid: u32, segment: &str) -> (usize, usize) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let prefix = format!("/dev/shm/shmimage.{segment}.");
    let mut objects: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.find(&prefix).map(|at| &line[at..]))
        .collect();
    objects.sort_unstable();
    objects.dedup();
    let removed = objects.iter().filter(|o| o.ends_with("(deleted)")).count();
    (objects.len(), removed)
}

#[test]
fn the_python_reader_unmaps_the_data_objects_writers_removed() {
    let Some(python) = python() else { return };
    let segment = fresh_segment();
    let writer = attach(&segment);
    writer.write(&filled(64, 1)).unwrap();
    let mut reader = Running::start(
        python,
        &[
            "read",
            "--segment",
            &segment,
            "--count",
            "2",
            "--pause-after-copy",
        ],
    );
    assert_eq!(reader.next_line()["paused"], true);
    assert_eq!(mapped_data_objects(reader.pid(), &segment), (1, 0));

    // Two growing writes: slot 1 gets a second generation, then slot 0 outgrows the first,
    // which the writer unlinks for a third.
    writer.write(&filled(600, 2)).unwrap();
    let newest = filled(800, 3);
    writer.write(&newest).unwrap();
    reader.send_line();
    let first = reader.next_line();
    assert_eq!(first["seq"], 3, "the first read raced and read again");
    assert_eq!(first["crc32"], crc32fast::hash(newest.pixels()));

    assert_eq!(reader.next_line()["paused"], true);
    let (mapped, removed) = mapped_data_objects(reader.pid(), &segment);
    assert_eq!(
        removed, 0,
        "the reader still maps {removed} removed data objects ({mapped} in all)"
    );
    assert_eq!(mapped, 1, "only the published generation");
    reader.send_line();
    assert_eq!(reader.next_line()["seq"], 3);
    assert!(reader.succeeded());
}
