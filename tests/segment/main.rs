//! The image segment across real processes: sharing, growth, concurrency, death and lifetime.
//!
//! Child processes are this test binary run again with `--ignored --exact child_process` and a
//! role in the environment (the way Boost.Interprocess tests re-run themselves). Children talk
//! back through lines on stdout that start with `child:`.

mod images;
mod lifetime;
mod support;
mod threads;
mod untrusted;

use images::{ImageId, tagged_raster, verify_tagged};
use shmimage::raster::{PixelFormat, Raster};
use shmimage::segment::{Segment, SegmentError};
use std::time::{Duration, Instant};
use support::{Child, Role, attach, fresh_name, leftover_objects, run_child_role};

/// Not a test: the entry point of child processes. Runs only when a parent asks for it.
#[test]
#[ignore = "entry point for child processes of the other tests"]
fn child_process() {
    run_child_role();
}

#[test]
fn an_image_written_by_one_process_is_read_exactly_by_another() {
    let name = fresh_name();
    let parent = attach(&name);
    let mut child = Child::spawn(&name, Role::WriteThenWait { id: 7 });
    child.expect("wrote 7");
    let stored = parent.read().unwrap().expect("an image");
    assert_eq!(stored.raster, tagged_raster(ImageId(7)));
    assert_eq!(stored.info.seq, 1);
    assert_eq!(stored.info.writer_pid, child.pid());
    assert_eq!(stored.info.writer_label, format!("child {}", child.pid()));
    assert_eq!(parent.state().unwrap().attached.len(), 2);

    parent.write(&tagged_raster(ImageId(8))).unwrap();
    child.send("read");
    child.expect("read 8");
}

#[test]
fn a_larger_image_after_a_smaller_one_reaches_every_process_whole() {
    let name = fresh_name();
    let parent = attach(&name);
    let small = Raster::new(16, 16, PixelFormat::Rgba8, vec![3; 16 * 16 * 4]).unwrap();
    parent.write(&small).unwrap();
    let capacity_before = parent.state().unwrap().slot_capacity;

    // The child maps the small generation, then writes two images much larger than it (so
    // both slots grow past what the parent has mapped).
    let mut child = Child::spawn(&name, Role::WriteThenWait { id: 1_000_001 });
    child.expect("wrote 1000001");
    child.send("write 1000002");
    child.expect("wrote 1000002");
    let stored = parent.read().unwrap().expect("an image");
    verify_tagged(&stored.raster).expect("the larger image, whole");
    assert_eq!(stored.raster, tagged_raster(ImageId(1_000_002)));
    assert!(parent.state().unwrap().slot_capacity > capacity_before);

    // And back down: a small image after the large one.
    parent.write(&small).unwrap();
    child.send("read");
    child.expect(&format!("read small {}", small.pixels().len()));
}

#[test]
fn pages_a_process_drops_from_its_memory_keep_their_bytes_for_every_process() {
    let name = fresh_name();
    let parent = attach(&name);
    let mut child = Child::spawn(&name, Role::WriteThenWait { id: 1_000_001 });
    child.expect("wrote 1000001");
    let first = parent.read().unwrap().expect("the child's image");
    assert_eq!(first.raster, tagged_raster(ImageId(1_000_001)));
    // Dropped after reading it, and again after writing the other slot: both slots, as a
    // server drops them once it is done with an image.
    parent.drop_resident_pages();
    parent.write(&tagged_raster(ImageId(1_000_002))).unwrap();
    parent.drop_resident_pages();
    child.send("read");
    child.expect("read 1000002");
    let stored = parent.read().unwrap().expect("an image");
    assert_eq!(stored.raster, tagged_raster(ImageId(1_000_002)));
    // The child writes over the slot whose pages the parent dropped; the parent reads it.
    child.send("write 1000003");
    child.expect("wrote 1000003");
    parent.drop_resident_pages();
    let stored = parent.read().unwrap().expect("an image");
    assert_eq!(stored.raster, tagged_raster(ImageId(1_000_003)));
}

#[test]
fn every_pixel_format_round_trips_bit_for_bit() {
    let name = fresh_name();
    let writer = attach(&name);
    let reader = attach(&name);
    for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
        let (width, height) = (13 + i as u32, 7);
        let len = format.byte_len(width, height).unwrap() as usize;
        let pixels: Vec<u8> = (0..len).map(|b| (b * 31 + i * 7) as u8).collect();
        let raster = Raster::new(width, height, format, pixels).unwrap();
        let info = writer.write(&raster).unwrap();
        let stored = reader.read().unwrap().unwrap();
        assert_eq!(stored.raster, raster, "{format}");
        assert_eq!(stored.info, info);
        assert_eq!(stored.info.seq, i as u64 + 1);
    }
}

#[test]
fn concurrent_writers_and_readers_never_see_a_torn_image() {
    let name = fresh_name();
    let parent = attach(&name);
    parent.write(&tagged_raster(ImageId(1))).unwrap();
    let run_for = Duration::from_secs(3);
    let mut writers = vec![
        Child::spawn(
            &name,
            Role::WriteLoop {
                first_id: 100,
                step: 2,
                run_for,
            },
        ),
        Child::spawn(
            &name,
            Role::WriteLoop {
                first_id: 101,
                step: 2,
                run_for,
            },
        ),
    ];
    let mut reader_child = Child::spawn(&name, Role::ReadLoop { run_for });

    let reads = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut reads = 0u64;
                    let deadline = Instant::now() + run_for;
                    while Instant::now() < deadline {
                        let stored = parent.read().unwrap().expect("an image");
                        verify_tagged(&stored.raster).expect("a whole image");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>()
    });
    let mut writes = 0;
    for writer in &mut writers {
        writer.expect("writing");
        writes += writer.expect_number("writes");
    }
    let child_reads = reader_child.expect_number("reads ok");
    println!("{writes} writes, {reads} reads here and {child_reads} in a child, none torn");
    assert!(writes > 10, "writers made progress: {writes}");
    assert!(reads > 10 && child_reads > 10, "readers made progress");
    assert_eq!(parent.seq(), 1 + writes);
}

#[test]
fn a_process_killed_holding_the_lock_does_not_block_the_others() {
    let name = fresh_name();
    let parent = attach(&name);
    let mut child = Child::spawn(&name, Role::WriteThenHoldLock { id: 5 });
    child.expect("holding the lock");
    child.kill();

    // The last complete image is still there, without taking the lock.
    let stored = parent.read().unwrap().unwrap();
    assert_eq!(stored.raster, tagged_raster(ImageId(5)));
    // The lock comes back at once (robust mutex: EOWNERDEAD), not after the 10 s timeout.
    let started = Instant::now();
    parent.write(&tagged_raster(ImageId(6))).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(parent.state().unwrap().lock_recoveries, 1);
    assert_eq!(
        parent.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(6))
    );
}

#[test]
fn a_writer_killed_mid_copy_never_destroys_the_last_complete_image() {
    let name = fresh_name();
    let parent = attach(&name);
    parent.write(&tagged_raster(ImageId(1))).unwrap();
    let mut rng = images::SplitMix(0x5eed_2026);
    for round in 0..8u64 {
        let mut child = Child::spawn(
            &name,
            Role::WriteLoop {
                first_id: 10_000_000 + round * 1000,
                step: 1,
                run_for: Duration::from_secs(30),
            },
        );
        child.expect("writing");
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        child.kill();
        let stored = parent.read().unwrap().expect("an image");
        verify_tagged(&stored.raster).expect("a complete image after the kill");
        let started = Instant::now();
        parent.write(&tagged_raster(ImageId(round))).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            parent.read().unwrap().unwrap().raster,
            tagged_raster(ImageId(round))
        );
    }
    // Most kills hit a writer inside its copy, holding the lock.
    let recoveries = parent.state().unwrap().lock_recoveries;
    println!("{recoveries} of 8 kills hit a writer holding the lock");
    assert!(recoveries > 0);
    drop(parent);
    assert_eq!(leftover_objects(&name), Vec::<String>::new());
}

#[test]
fn the_segment_outlives_its_creator_and_goes_with_the_last_process() {
    let name = fresh_name();
    let mut first = Child::spawn(&name, Role::WriteThenWait { id: 11 });
    first.expect("wrote 11");
    let second = attach(&name);
    first.send("exit");
    first.expect("detached last=false");
    first.wait();

    let mut third = Child::spawn(&name, Role::ReadOnce);
    third.expect("read 11");
    third.wait();
    assert_eq!(
        second.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(11))
    );

    assert!(!leftover_objects(&name).is_empty());
    assert!(
        second.detach().unwrap(),
        "the last process removes the segment"
    );
    assert_eq!(leftover_objects(&name), Vec::<String>::new());
}

#[test]
fn after_every_process_is_killed_the_next_start_reuses_the_last_image() {
    let name = fresh_name();
    for round in 0..3u64 {
        // Each round attaches to what the killed processes of the round before left behind.
        let id = 40 + round;
        let mut a = Child::spawn(&name, Role::WriteThenWait { id });
        a.expect(&format!("wrote {id}"));
        let mut b = Child::spawn(&name, Role::ReadThenWait);
        b.expect(&format!("read {id}"));
        a.kill();
        b.kill();
        // Killed processes leave the objects behind, but they do not accumulate: the control
        // object and at most one data object per slot.
        let left = leftover_objects(&name);
        assert!((2..=3).contains(&left.len()), "{left:?}");
    }
    let started = Instant::now();
    let next = attach(&name);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not blocked by stale objects"
    );
    let stored = next.read().unwrap().expect("the last image survives");
    assert_eq!(stored.raster, tagged_raster(ImageId(42)));
    assert!(next.detach().unwrap());
    assert_eq!(leftover_objects(&name), Vec::<String>::new());
}

#[test]
fn stale_data_objects_are_removed_at_the_next_start() {
    let name = fresh_name();
    let mut child = Child::spawn(&name, Role::WriteThenWait { id: 3 });
    child.expect("wrote 3");
    child.kill();
    // A generation a dead writer created but never recorded.
    let orphan = format!("/dev/shm/shmimage.{name}.7fffffff");
    std::fs::write(&orphan, b"half-made").unwrap();

    let next = attach(&name);
    assert!(!std::path::Path::new(&orphan).exists());
    assert_eq!(
        next.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(3))
    );
}

#[test]
fn a_garbage_control_object_left_behind_is_reinitialised() {
    let name = fresh_name();
    let path = format!("/dev/shm/shmimage.{name}");
    std::fs::write(&path, vec![0xAB; 10_000]).unwrap();
    let segment = attach(&name);
    assert!(segment.read().unwrap().is_none());
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(1))
    );
}

#[test]
fn a_header_overwritten_while_attached_gives_clear_errors_until_a_write_repairs_it() {
    let name = fresh_name();
    let segment = attach(&name);
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    support::overwrite_control(&name, 0, &[0xFF; 8]);
    let err = segment.read().unwrap_err();
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("magic number"), "{err}");
    assert!(matches!(segment.state(), Err(SegmentError::Corrupt { .. })));

    // The whole header and the slot records overwritten with garbage, lock included: a new
    // write repairs the header and publishes a complete image again.
    support::overwrite_control(&name, 0, &[0xA5; 6000]);
    assert!(segment.read().is_err());
    segment.write(&tagged_raster(ImageId(2))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(2))
    );
    segment.write(&tagged_raster(ImageId(3))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(3))
    );
    // Another process attaches to the repaired segment and sees the same image.
    let mut child = Child::spawn(&name, Role::ReadOnce);
    child.expect("read 3");
}

#[test]
fn a_slot_record_overwritten_with_nonsense_gives_a_clear_error() {
    let name = fresh_name();
    let segment = attach(&name);
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    // slots[0].format (offset 48 + 4): a pixel format that does not exist.
    support::overwrite_control(&name, 52, &99u32.to_ne_bytes());
    let err = segment.read().unwrap_err();
    assert!(err.to_string().contains("pixel format code 99"), "{err}");
    // slots[0].width and height: dimensions whose product overflows.
    support::overwrite_control(&name, 52, &(PixelFormat::Rgba16.code()).to_ne_bytes());
    support::overwrite_control(&name, 56, &[0xFF; 8]);
    let err = segment.read().unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
    // Rewriting repairs it: the next write goes to the other slot and publishes it.
    segment.write(&tagged_raster(ImageId(2))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(2))
    );
}

#[test]
fn too_many_pixels_are_refused_before_touching_the_segment() {
    let name = fresh_name();
    let segment = Segment::attach(support::config(&name, 100)).unwrap();
    let raster = Raster::new(11, 10, PixelFormat::L8, vec![0; 110]).unwrap();
    assert!(matches!(
        segment.write(&raster),
        Err(SegmentError::TooManyPixels {
            pixels: 110,
            max_pixels: 100,
            ..
        })
    ));
    assert_eq!(segment.seq(), 0);
}

#[test]
fn a_full_dev_shm_gives_a_clear_error_and_keeps_the_previous_image() {
    let name = fresh_name();
    match support::run_in_small_dev_shm(&name, "2m") {
        Err(reason) => println!("skipped: {reason}"),
        Ok(output) => {
            assert!(output.contains("child: small ok"), "{output}");
            assert!(
                output.contains("child: large refused: not enough shared memory"),
                "{output}"
            );
            assert!(output.contains("/dev/shm"), "{output}");
            assert!(output.contains("child: previous image intact"), "{output}");
        }
    }
}

#[test]
fn waiting_for_a_change_wakes_when_another_process_writes() {
    let name = fresh_name();
    let parent = attach(&name);
    assert_eq!(parent.wait_for_change(0, Duration::from_millis(50)), 0);
    let mut child = Child::spawn(&name, Role::ReadThenWait);
    child.expect("read none");
    child.send("write 77");
    let seq = parent.wait_for_change(0, Duration::from_secs(10));
    assert_eq!(seq, 1);
    child.expect("wrote 77");
    assert_eq!(
        parent.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(77))
    );
}

#[test]
fn waiting_with_no_time_limit_wakes_when_another_process_writes() {
    let name = fresh_name();
    let parent = attach(&name);
    let mut child = Child::spawn(&name, Role::ReadThenWait);
    child.expect("read none");
    let seq = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| parent.wait_for_change(0, Duration::MAX));
        child.send("write 78");
        child.expect("wrote 78");
        waiter.join()
    });
    assert_eq!(seq.expect("the wait returns instead of panicking"), 1);
}

#[test]
fn processes_attaching_at_the_same_moment_share_one_segment() {
    let name = fresh_name();
    let mut children: Vec<Child> = (0..6)
        .map(|_| Child::spawn(&name, Role::ReadThenWait))
        .collect();
    for child in &mut children {
        child.expect("read none");
    }
    let parent = attach(&name);
    assert_eq!(parent.state().unwrap().attached.len(), 7);
    parent.write(&tagged_raster(ImageId(5))).unwrap();
    for child in &mut children {
        child.send("read");
        child.expect("read 5");
    }
    for child in &mut children {
        child.send("exit");
        child.expect("detached last=false");
        child.wait();
    }
    assert!(parent.detach().unwrap());
    assert_eq!(leftover_objects(&name), Vec::<String>::new());
}

#[test]
fn segment_objects_are_private_to_their_user() {
    use std::os::unix::fs::PermissionsExt;
    let name = fresh_name();
    let segment = attach(&name);
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    let objects = leftover_objects(&name);
    assert_eq!(objects.len(), 2);
    for object in objects {
        let mode = std::fs::metadata(format!("/dev/shm/{object}"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{object}");
    }
}

#[test]
fn objects_truncated_by_another_process_give_errors_not_a_crash() {
    let name = fresh_name();
    let segment = attach(&name);
    segment.write(&tagged_raster(ImageId(1))).unwrap();
    let data = format!("/dev/shm/{}", leftover_objects(&name)[1]);
    let control = format!("/dev/shm/{}", leftover_objects(&name)[0]);
    let truncate = |path: &str, len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap()
    };

    // The published image's pixels cut off: the read is refused, the next write recovers.
    truncate(&data, 4096);
    let err = segment.read().unwrap_err();
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
    segment.write(&tagged_raster(ImageId(2))).unwrap();
    assert_eq!(
        segment.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(2))
    );

    // The control object cut to nothing: touching it would raise SIGBUS and kill the process;
    // the guard turns that into errors.
    truncate(&control, 0);
    let err = segment.read().unwrap_err();
    assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
    let err = segment.write(&tagged_raster(ImageId(3))).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn reading_into_a_kept_buffer_reuses_its_memory_and_returns_exact_pixels() {
    let name = fresh_name();
    let segment = attach(&name);
    let large = tagged_raster(ImageId(1_000_000));
    let small = tagged_raster(ImageId(4));
    segment.write(&large).unwrap();
    let first = segment.read_into(Vec::new()).unwrap().unwrap();
    assert_eq!(first.raster, large);

    let buffer = first.raster.into_pixels();
    let kept = buffer.as_ptr();
    segment.write(&small).unwrap();
    let second = segment.read_into(buffer).unwrap().unwrap();
    assert_eq!(
        second.raster, small,
        "no bytes of the larger image left over"
    );
    assert_eq!(
        second.raster.pixels().as_ptr(),
        kept,
        "the kept memory was reused"
    );

    segment.write(&large).unwrap();
    let third = segment
        .read_into(second.raster.into_pixels())
        .unwrap()
        .unwrap();
    assert_eq!(third.raster, large);
    assert_eq!(third.raster.pixels().as_ptr(), kept);
}

#[test]
fn an_image_written_row_by_row_is_read_whole_and_a_short_or_failed_write_keeps_the_last_one() {
    let name = fresh_name();
    let writer = attach(&name);
    let reader = attach(&name);
    let image = tagged_raster(ImageId(31));
    let row_len = image.width() as usize * image.format().bytes_per_pixel() as usize;
    let info = writer
        .write_with(image.width(), image.height(), image.format(), |pixels| {
            // Rows of any length, as decoders hand them out: here a row and a bit at a time.
            for piece in image.pixels().chunks(row_len + 3) {
                pixels.push(piece);
            }
            Ok::<(), SegmentError>(())
        })
        .unwrap();
    assert_eq!(info.seq, 1);
    let stored = reader.read().unwrap().expect("an image");
    assert_eq!(stored.raster, image);

    // Rows missing, rows too many, the filler failing: nothing is published.
    let short = writer.write_with(image.width(), image.height(), image.format(), |pixels| {
        pixels.push(&image.pixels()[..row_len]);
        Ok::<(), SegmentError>(())
    });
    assert!(
        matches!(short, Err(SegmentError::IncompleteImage { .. })),
        "{short:?}"
    );
    let long = writer.write_with(image.width(), image.height(), image.format(), |pixels| {
        pixels.push(image.pixels());
        pixels.push(&[0; 8]);
        Ok::<(), SegmentError>(())
    });
    assert!(
        matches!(long, Err(SegmentError::IncompleteImage { .. })),
        "{long:?}"
    );
    let failed = writer.write_with(image.width(), image.height(), image.format(), |pixels| {
        pixels.push(&vec![0xAB; row_len * 2]);
        Err(SegmentError::IncompleteImage {
            expected: 0,
            written: 1,
        })
    });
    assert!(failed.is_err());
    assert_eq!(reader.seq(), 1);
    let stored = reader.read().unwrap().expect("an image");
    assert_eq!(stored.raster, image, "the last complete image stays");
}
