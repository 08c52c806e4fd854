//! Attaching and detaching when other processes misbehave: a detacher killed half-way through
//! removing the segment, a process that holds the attach/detach gate and never lets go, a
//! process listed while it is still registering.

use crate::images::{ImageId, tagged_raster};
use crate::support::{
    self, Child, Role, attach, data_object_paths, fresh_name, hold_gate, leftover_objects,
    strace_available,
};
use std::time::{Duration, Instant};

#[test]
fn a_segment_left_naming_a_missing_data_object_starts_empty_and_works() {
    // What a last process killed between its unlinks leaves: the control object, and some or
    // none of the data objects it names.
    for keep_inactive in [true, false] {
        let name = fresh_name();
        let mut child = Child::spawn(&name, Role::WriteThenWait { id: 3 });
        child.expect("wrote 3");
        child.send("write 4");
        child.expect("wrote 4");
        child.kill();
        let objects = data_object_paths(&name);
        assert_eq!(objects.len(), 2, "{objects:?}");
        // Image 4 is in generation 2, the published one.
        for object in &objects {
            if !(keep_inactive && object.ends_with(".00000001")) {
                std::fs::remove_file(object).unwrap();
            }
        }

        let next = attach(&name);
        let state = next.state().unwrap();
        assert_eq!(state.image, None, "keep_inactive={keep_inactive}");
        assert!(
            next.read().unwrap().is_none(),
            "keep_inactive={keep_inactive}"
        );
        next.write(&tagged_raster(ImageId(5))).unwrap();
        assert_eq!(
            next.read().unwrap().unwrap().raster,
            tagged_raster(ImageId(5))
        );
        assert!(next.detach().unwrap());
        assert_eq!(leftover_objects(&name), Vec::<String>::new());
    }
}

#[test]
fn a_process_holding_the_gate_blocks_neither_attach_nor_detach_forever() {
    let name = fresh_name();
    let mut first = Child::spawn(&name, Role::TryAttach);
    first.expect("attached");
    first.send("write 9");
    first.expect("wrote 9");
    let gate = hold_gate(&name);

    // A new process gives up with the reason; a detaching one leaves the clean-up and exits.
    let started = Instant::now();
    let mut second = Child::spawn(&name, Role::TryAttach);
    first.send("exit");
    let said = second.expect_prefix("attach failed: ");
    assert!(said.contains(&format!("\"{name}\"")), "{said}");
    assert!(said.contains("another process"), "{said}");
    let said = first.expect_prefix("detach failed: ");
    assert!(said.contains("another process"), "{said}");
    first.wait();
    second.wait();
    println!("both gave up after {:?}", started.elapsed());

    // Once the gate is free, the next process finds the segment with its image.
    drop(gate);
    let next = attach(&name);
    assert_eq!(
        next.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(9))
    );
    assert!(next.detach().unwrap());
    assert_eq!(leftover_objects(&name), Vec::<String>::new());
}

#[test]
fn a_process_still_registering_is_never_listed_under_a_dead_ones_name() {
    if !strace_available() {
        return;
    }
    let name = fresh_name();
    let parent = attach(&name);
    let mut dead = Child::spawn(&name, Role::ReadThenWait);
    dead.expect("read none");
    let dead_pid = dead.pid();
    assert!(
        parent
            .state()
            .unwrap()
            .attached
            .iter()
            .any(|a| a.pid == dead_pid)
    );
    dead.kill();
    assert_eq!(parent.state().unwrap().attached.len(), 1);

    // A process whose every fcntl returns 0.3 s late takes the registry entry the dead one
    // left; while it registers, the list must not show the dead one's pid and label.
    let mut slow = Child::spawn_wrapped(
        &name,
        Role::ReadThenWait,
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fcntl",
            "-e",
            "inject=fcntl:delay_exit=300000",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let others: Vec<_> = parent
            .state()
            .unwrap()
            .attached
            .into_iter()
            .filter(|a| !a.is_self)
            .collect();
        for other in &others {
            assert_ne!(
                other.pid, dead_pid,
                "a dead process listed as attached: {other:?} (after {seen:?})"
            );
        }
        if let Some(found) = others.first() {
            seen.push(found.pid);
            if found.label == format!("child {}", found.pid) && found.pid != dead_pid {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the slow process never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    slow.expect("read none");
}

#[test]
fn a_writer_whose_wall_clock_is_an_hour_behind_still_waits_for_the_lock() {
    let Some(faketime) = support::libfaketime() else {
        return;
    };
    let name = fresh_name();
    let parent = attach(&name);
    parent.write(&tagged_raster(ImageId(20))).unwrap();
    let mut holder = Child::spawn(&name, Role::HoldLockUntilTold);
    holder.expect("holding the lock");
    // A process that sees the wall clock an hour behind (as after the clock was set back) asks
    // for the lock while another holds it, for well under the lock's 10 s timeout.
    let mut writer = Child::spawn_with(
        &name,
        Role::ReadThenWait,
        &[],
        &[
            ("LD_PRELOAD", faketime),
            ("FAKETIME", "-1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    writer.expect("read 20");
    writer.send("try-write 21");
    std::thread::sleep(Duration::from_millis(500));
    holder.send("release");
    holder.expect("released");
    writer.expect("wrote 21");
    assert_eq!(
        parent.read().unwrap().unwrap().raster,
        tagged_raster(ImageId(21))
    );
}
