//! shmimage shares one image between local web servers through a named shared-memory segment.
//!
//! # Layout
//!
//! - [`raster`]: decoded images (width, height, pixel format, bytes): the domain type.
//! - [`segment`]: the named shared-memory store for one image, its lock, slots and lifetime.
//!   All `unsafe` code lives here, but for one call into the C library's allocator in
//!   [`allocator`].
//! - [`imaging`]: decoding uploads into rasters and encoding rasters as PNG.
//! - [`web`]: the HTTP server: routes, page templates, errors, the accept loop with its limits
//!   on connections and time ([`web::serve`]) and the memory budget ([`web::budget`]). [`app`]
//!   builds the router and [`run`] serves it until shutdown is signalled.
//! - [`allocator`]: handing memory that large requests freed back to the system.
//! - [`json`]: the segment's state as JSON, one shape for the HTTP API and the commands.
//! - [`config`]: command-line and environment configuration: the server's flags, and the
//!   commands.
//! - [`server`]: one server's life: bind, attach, announce, serve, detach.
//! - [`commands`]: the segment without a server: `shmimage put`, `get`, `info` and `watch`.
//!
//! The byte layout and protocol of a segment, for readers in other languages, are specified in
//! `docs/PROTOCOL.md`.

pub mod allocator;
pub mod commands;
pub mod config;
pub mod imaging;
pub mod json;
pub mod raster;
pub mod segment;
pub mod server;
mod timestamp;
pub mod web;

pub use web::{AppState, app, run};
