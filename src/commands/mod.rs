//! The segment without a server: `shmimage put`, `get`, `info` and `watch`.
//!
//! Each command attaches to the named segment like a server does (listed among the attached
//! processes as `shmimage put`, ...), does its one job, and detaches; the last process to detach
//! removes the segment, as always. They reuse what the servers use, so nothing can drift: the
//! decoder and its limits ([`imaging::decode`](crate::imaging::decode)), the PNG encoder
//! ([`imaging::encode_png`](crate::imaging::encode_png)), the JSON of `GET /api/segment`
//! ([`json`](crate::json)) and the servers' error messages ([`AppError`](crate::web::AppError)).
//!
//! - [`put`]: decode a file (or standard input) and write it into the segment.
//! - [`get`]: write the segment's image as PNG to a file (replaced whole) or standard output.
//! - [`info`]: print the segment's state as JSON.
//! - [`watch`]: print one JSON line per new image, sleeping on the segment's futex between them.
//!
//! A command that fails prints one line, `shmimage COMMAND: what happened and what to do`, on
//! stderr and exits with status 1. Output that nobody reads any more (a closed pipe) ends a
//! command quietly, with status 0, after it has detached.

pub mod get;
pub mod info;
pub mod put;
pub mod watch;

use crate::config::{Command, DEFAULT_MAX_PIXELS};
use crate::segment::{Segment, SegmentConfig, SegmentName};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

/// Why a command stopped before finishing its job.
#[derive(Debug)]
pub enum Failure {
    /// Print this, exit with status 1.
    Refused(String),
    /// Whoever read the command's output stopped reading: stop quietly.
    OutputClosed,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Refused(message)
    }
}

/// What a command returns.
pub type Outcome = Result<(), Failure>;

/// Runs `command` to the end and says how the process should exit.
pub fn run(command: Command) -> ExitCode {
    let (name, outcome) = match command {
        Command::Put(args) => ("put", put::run(&args)),
        Command::Get(args) => ("get", get::run(&args)),
        Command::Info(args) => ("info", info::run(&args)),
        Command::Watch(args) => ("watch", watch::run(&args)),
    };
    match outcome {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            // If even stderr is gone there is nobody left to tell.
            let _ = writeln!(io::stderr(), "shmimage {name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Attaches to segment `name` as `shmimage COMMAND`.
fn attach(name: &SegmentName, command: &str, max_pixels: u64) -> Result<Segment, Failure> {
    Segment::attach(SegmentConfig {
        name: name.clone(),
        max_pixels,
        label: format!("shmimage {command}"),
    })
    .map_err(|error| {
        Failure::Refused(format!(
            "cannot attach to shared memory segment \"{name}\": {error}"
        ))
    })
}

/// Attaches to segment `name` as `shmimage COMMAND` to read it.
fn attach_to_read(name: &SegmentName, command: &str) -> Result<Segment, Failure> {
    attach(name, command, DEFAULT_MAX_PIXELS)
}

/// Detaches; returns whether this was the last process attached (the segment is gone then).
fn detach(segment: Segment) -> Result<bool, Failure> {
    let name = segment.name().clone();
    segment.detach().map_err(|error| {
        Failure::Refused(format!(
            "cannot detach from shared memory segment \"{name}\": {error}"
        ))
    })
}

/// Whether `path` is `-`, standard input or output.
fn is_standard_stream(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Writes `line` and a newline to stdout and flushes it: a closed pipe is
/// [`Failure::OutputClosed`], any other error is reported.
fn print_line(line: &str) -> Outcome {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(output_error)
}

/// A failed write to stdout, as a [`Failure`].
fn output_error(error: io::Error) -> Failure {
    if error.kind() == io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::Refused(format!("cannot write to standard output: {error}"))
    }
}
