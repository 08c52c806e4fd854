//! Bad uploads against real shmimage processes: a corpus generated from a seed (random bytes,
//! truncated files, decompression bombs, empty files, wrong and many fields, malformed
//! multipart, non-UTF-8 file names, bodies over the limit, stalled bodies). Every one must be
//! refused with a 4xx and a message, in bounded time and memory, and leave the shared image as
//! it was.
//!
//! Replay a run with the seed it printed: `SHMIMAGE_UPLOADS_SEED=N cargo test --test uploads`.

mod corpus;
mod forge;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../segment/images.rs"]
mod images;
mod known_bugs;
#[allow(dead_code)]
mod probe;
mod refusals;
mod stalls;
mod wire;
