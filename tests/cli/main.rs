//! The command-line tools against real servers: `shmimage put`, `get`, `info` and `watch`
//! attach to a segment that running servers share, and what one side writes the other reads.
//!
//! Every test starts its own servers on a fresh segment (see `tests/api/helpers.rs`) and runs
//! the real binary's commands, the way a script or a person in a shell would.

// The HTTP tests' helpers (servers on fresh segments, test images); not all are used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod command;
mod get;
mod help;
mod info;
mod put;
mod watch;
