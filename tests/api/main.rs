//! HTTP tests against real shmimage processes: every test starts its own servers on a fresh
//! segment and talks to them over sockets, the way a browser or curl would.
//!
//! One test binary with modules keeps link time down (see zero2prod's `tests/api`).

mod api;
mod errors;
mod helpers;
mod image_png;
mod lifecycle;
mod live;
mod memory;
mod messages;
mod page;
mod resized;
mod security;
mod shared_png;
mod timing;
mod upload;
