//! `shmimage put FILE|-`: decode an image and write it into the segment, as `POST /image` does.
//!
//! The same decoder, limits and messages as the servers: the bytes are read (at most
//! `--max-upload-bytes`) and decoded (at most `--max-pixels`) before the segment is even
//! attached, so bad input never touches it. Prints one line, e.g.
//! `loaded photo.jpg (1920x1080, RGB 8-bit, 6220800 bytes) into shared memory segment "demo" as image 7`.

use super::{Failure, Outcome, attach, detach, is_standard_stream, print_line};
use crate::config::PutArgs;
use crate::imaging::{self, DecodeLimits};
use crate::web::AppError;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Runs `shmimage put`.
pub fn run(args: &PutArgs) -> Outcome {
    let source = if is_standard_stream(&args.file) {
        "standard input".to_owned()
    } else {
        args.file.display().to_string()
    };
    let bytes = read_input(&args.file, &source, args.max_upload_bytes)?;
    let limits = DecodeLimits {
        max_pixels: args.max_pixels,
    };
    let decoded = imaging::decode(&bytes, &limits)
        .map_err(|error| refused(&source, AppError::Decode(error)))?;
    drop(bytes);

    let name = &args.segment.segment;
    let segment = attach(name, "put", args.max_pixels)?;
    let written = segment.write(&decoded.raster);
    let last = detach(segment)?;
    let info = written.map_err(|error| refused(&source, AppError::Segment(error)))?;
    let printed = print_line(&format!(
        "loaded {source} ({}x{}, {}, {} bytes) into shared memory segment \"{name}\" as image {}",
        info.width, info.height, info.format, info.byte_len, info.seq
    ));
    if last {
        // Nobody else holds the segment, so it went away with this process, image and all.
        let _ = writeln!(
            io::stderr(),
            "shmimage put: note: no other process is attached to segment \"{name}\", so it was \
             removed, image and all, when put detached; start a server (shmimage --segment \
             {name}) or shmimage watch --segment {name} first to keep it"
        );
    }
    printed
}

/// `error` about `source`, in the words the servers use.
fn refused(source: &str, error: AppError) -> Failure {
    Failure::Refused(format!("{source}: {error}"))
}

/// The bytes of `path` (standard input for `-`), refused with the server's message when there
/// are more than `limit`.
fn read_input(path: &Path, source: &str, limit: usize) -> Result<Vec<u8>, Failure> {
    let cannot_read = |error: io::Error| Failure::Refused(format!("cannot read {source}: {error}"));
    let too_large = || refused(source, AppError::UploadTooLarge { limit });
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    if is_standard_stream(path) {
        io::stdin()
            .lock()
            .take(cap)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
    } else {
        let file = File::open(path).map_err(cannot_read)?;
        let len = file.metadata().map_err(cannot_read)?.len();
        if len > limit as u64 {
            return Err(too_large());
        }
        bytes.reserve_exact(len as usize);
        file.take(cap)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
    }
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}
