//! Load and soak against real shmimage processes: two servers on one segment, concurrent
//! uploaders and readers on both for `SHMIMAGE_SOAK_SECS` seconds (15 by default; CI runs 30). Zero 5xx,
//! zero torn images (each image carries its id and a checksum in its pixels), bounded peak
//! memory, and no file descriptors or mappings leaked. Run with `--nocapture` for the figures.

mod endurance;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../segment/images.rs"]
mod images;
#[allow(dead_code)]
#[path = "../uploads/probe.rs"]
mod probe;
mod tally;
mod traffic;
