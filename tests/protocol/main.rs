//! docs/PROTOCOL.md, proven by an independent reader: `tests/protocol/reader.py`, written in
//! Python (standard library only) from the document alone, reads segments that real shmimage
//! processes write, lock-free, and must see exactly the pixels the servers serve, refuse what
//! the document says a reader refuses, list the processes shmimage lists, and notice a segment
//! going away.
//!
//! Without Python 3 these tests say why on stderr and pass without running, unless
//! `SHMIMAGE_REQUIRE_PYTHON=1` (as in CI) makes that a failure. `SHMIMAGE_PYTHON` names
//! another interpreter.

// The HTTP tests' helpers (servers on fresh segments, test images); not all are used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod checks;
mod lifetime;
mod python;
mod reader;
