//! `shmimage watch`: one JSON line (what `GET /api/segment` answers) per new image, until
//! SIGINT or SIGTERM, until `--count` images, or until whoever reads the output stops.
//! (SIGHUP keeps its default, so `nohup` works; a watch killed that way leaves the segment to
//! the kernel's lock bookkeeping, like any killed process.)
//!
//! Between images it sleeps on the segment's futex ([`Segment::wait_for_change`]), which every
//! writer wakes: no polling. The sleep is cut into [`SIGNAL_CHECK`] pieces only so that a signal
//! (which merely sets a flag) is noticed and the command detaches before it exits; a second
//! signal ends it at once. Images written faster than it prints them are reported once, as the
//! newest: the segment keeps only the latest image.

use super::{Failure, Outcome, attach_to_read, detach, print_line};
use crate::config::WatchArgs;
use crate::json::SegmentJson;
use crate::segment::Segment;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest single sleep on the futex: how long a signal may wait to be noticed.
pub const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// Runs `shmimage watch`.
pub fn run(args: &WatchArgs) -> Outcome {
    // Before attaching, so that a signal at any moment from here on leads to a detach.
    let stop = stop_on_signals()?;
    let segment = attach_to_read(&args.segment.segment, "watch")?;
    let watched = watch(&segment, args, &stop);
    detach(segment)?;
    watched
}

/// Sets the returned flag on SIGINT or SIGTERM; a second one exits at once (status 1).
fn stop_on_signals() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The shutdown must be registered first: it exits only if the flag is already set.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|error| format!("cannot handle signal {signal}: {error}"))?;
    }
    Ok(stop)
}

/// Prints new images until told to stop.
fn watch(segment: &Segment, args: &WatchArgs, stop: &AtomicBool) -> Outcome {
    let name = segment.name();
    let patience = args.timeout.map(Duration::from_secs);
    let mut seen = args.since.unwrap_or_else(|| segment.seq());
    let mut printed = 0u64;
    let mut last_image = Instant::now();
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let mut wait = SIGNAL_CHECK;
        if let Some(patience) = patience {
            let waited = last_image.elapsed();
            if waited >= patience {
                return Err(Failure::Refused(format!(
                    "no new image in shared memory segment \"{name}\" within {}",
                    seconds(patience.as_secs())
                )));
            }
            wait = wait.min(patience - waited);
        }
        let seq = segment.wait_for_change(seen, wait);
        if seq == seen {
            continue;
        }
        match segment.state() {
            Ok(state) => {
                seen = state.seq;
                failing = false;
                let line = serde_json::to_string(&SegmentJson::from(state)).map_err(|error| {
                    format!("cannot write the segment's state as JSON: {error}")
                })?;
                print_line(&line)?;
                last_image = Instant::now();
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    break;
                }
            }
            Err(error) => {
                // Wait for the next image rather than spin on a segment that keeps failing.
                seen = seq;
                if !failing {
                    let _ = writeln!(io::stderr(), "shmimage watch: {error}");
                }
                failing = true;
            }
        }
    }
    Ok(())
}

/// "1 second", "30 seconds".
fn seconds(count: u64) -> String {
    if count == 1 {
        "1 second".to_owned()
    } else {
        format!("{count} seconds")
    }
}
