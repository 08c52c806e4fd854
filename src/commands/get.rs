//! `shmimage get OUT.png|-`: the segment's image as PNG, the same bytes `GET /image.png` serves:
//! the PNG a server (or another process) already published in the segment's PNG area when it
//! is there and passes every check, else the pixels encoded here with the same encoder (so the
//! same file for the same pixels).
//!
//! A file is written next to OUT under a temporary name and renamed over OUT once complete, so
//! OUT is never half-written: it is the old file or the new one. Standard output is refused when
//! it is a terminal, where a PNG would only garble the screen.

use super::{
    Failure, Outcome, attach_to_read, detach, is_standard_stream, output_error, print_line,
};
use crate::config::GetArgs;
use crate::imaging;
use crate::segment::{ImageInfo, PngLookup, Segment};
use crate::web::AppError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Runs `shmimage get`.
pub fn run(args: &GetArgs) -> Outcome {
    let to_stdout = is_standard_stream(&args.out);
    if to_stdout && io::stdout().is_terminal() {
        return Err(Failure::Refused(
            "standard output is a terminal, and a PNG would only garble it: give a file name \
             (shmimage get image.png), or redirect the output (shmimage get - > image.png)"
                .to_owned(),
        ));
    }
    let name = &args.segment.segment;
    let segment = attach_to_read(name, "get")?;
    let image = read_png(&segment);
    detach(segment)?;
    let (info, png) = image?;
    if to_stdout {
        let mut stdout = io::stdout().lock();
        return stdout
            .write_all(&png)
            .and_then(|()| stdout.flush())
            .map_err(output_error);
    }
    replace_file(&args.out, &png)?;
    print_line(&format!(
        "saved image {} of shared memory segment \"{name}\" ({}x{}, {}) to {} ({} bytes of PNG)",
        info.seq,
        info.width,
        info.height,
        info.format,
        args.out.display(),
        png.len()
    ))
}

/// The published image's metadata and PNG: the PNG area's bytes when they are of that image,
/// else the pixels read and encoded here.
fn read_png(segment: &Segment) -> Result<(ImageInfo, Vec<u8>), Failure> {
    let no_image = || {
        Failure::from(
            AppError::NoImage {
                segment: segment.name().to_string(),
            }
            .to_string(),
        )
    };
    if let Ok(PngLookup::Found(shared)) = segment.shared_png() {
        // The metadata of the same image, unless another was published since.
        let state = segment.state().map_err(|error| error.to_string())?;
        if let Some(info) = state.image.filter(|info| info.seq == shared.seq) {
            return Ok((info, shared.png));
        }
    }
    let stored = segment
        .read()
        .map_err(|error| error.to_string())?
        .ok_or_else(no_image)?;
    let png = imaging::encode_png(&stored.raster).map_err(|error| error.to_string())?;
    Ok((stored.info, png))
}

/// Writes `bytes` to a new file next to `path`, then renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let partial = partial_name(path);
    let cannot = |what: &str, error: io::Error| {
        Failure::Refused(format!("cannot {what} {}: {error}", path.display()))
    };
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .and_then(|file| write_all_and_sync(file, bytes));
    if let Err(error) = written {
        let _ = fs::remove_file(&partial);
        return Err(cannot("write", error));
    }
    if let Err(error) = fs::rename(&partial, path) {
        let _ = fs::remove_file(&partial);
        return Err(cannot("replace", error));
    }
    Ok(())
}

fn write_all_and_sync(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// `DIR/.NAME.PID.partial` for `DIR/NAME`: hidden, and unique to this process.
fn partial_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or(path.as_os_str()));
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_sits_next_to_out_and_is_hidden() {
        let pid = std::process::id();
        assert_eq!(
            partial_name(Path::new("/tmp/a/b.png")),
            PathBuf::from(format!("/tmp/a/.b.png.{pid}.partial"))
        );
        assert_eq!(
            partial_name(Path::new("b.png")),
            PathBuf::from(format!(".b.png.{pid}.partial"))
        );
    }
}
