//! A server under abuse, against real shmimage processes: clients that stall inside their
//! request heads or keep idle connections open by the thousand, floods at the file-descriptor
//! limit, shutdowns with clients still connected, heads and header lines far too large, requests
//! without a Host or with two, decompression bombs in parallel, bodies that declare far more
//! than they send, and non-images detected from their first bytes.
//!
//! The tests talk raw HTTP/1.1 over sockets where clients would not send what they send.

#[allow(dead_code)]
#[path = "../uploads/forge.rs"]
mod forge;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod memory;
mod protocol;
mod raw;
mod shutdown;
mod slow_clients;
#[allow(dead_code)]
#[path = "../uploads/wire.rs"]
mod wire;
