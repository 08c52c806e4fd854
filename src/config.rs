//! Command-line and environment configuration: a shmimage server ([`Config`], what runs when no
//! command is given), and the commands that use a segment without a server ([`Command`]).
//!
//! Every option can also come from an environment variable (`--port` from `SHMIMAGE_PORT`, ...);
//! a flag on the command line wins over the variable.

use crate::segment::SegmentName;
use crate::web::Limits;
use crate::web::budget;
use crate::web::guard::AllowedHosts;
use crate::web::serve::ConnectionLimits;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The most pixels (width x height) an image may have, unless `--max-pixels` says otherwise.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The largest upload, in bytes, unless `--max-upload-bytes` says otherwise (256 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// The whole command line: a command, or none to start a server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "shmimage",
    version,
    about = "Share one image between local web servers through a named shared-memory segment",
    long_about = "Share one image between local web servers through a named shared-memory \
                  segment.\n\nWith no command, shmimage starts a server. The commands use the \
                  segment directly, without a server: they attach to it, do their one job and \
                  detach, and every server attached to the same segment sees what they write.",
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    /// What to do instead of starting a server.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The server's settings, when no command is given.
    #[command(
        flatten,
        next_help_heading = "Server options (when no command is given)"
    )]
    pub server: Config,
}

/// The commands that use a segment without a server.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Decode an image file and write it into the segment, as POST /image does
    #[command(
        long_about = "Decode an image file and write it into the segment, with the same rules, \
                      limits and messages as POST /image. Prints one line: the image's size, \
                      pixel format and sequence number. A file that is not an image, too large \
                      or corrupt leaves the segment unchanged."
    )]
    Put(PutArgs),
    /// Write the segment's image as PNG, the same file GET /image.png serves
    Get(GetArgs),
    /// Print the segment's state as JSON, what GET /api/segment answers
    Info(InfoArgs),
    /// Print one JSON line for each new image in the segment, until interrupted
    #[command(
        long_about = "Print one JSON line for each new image in the segment (what GET \
                      /api/segment answers at that moment), until interrupted with Ctrl-C or \
                      SIGTERM, or until whoever reads the output stops reading. It sleeps until \
                      a writer in any process wakes it: nothing polls. Images written faster \
                      than it prints them are reported once, as the newest."
    )]
    Watch(WatchArgs),
}

/// Which segment a command uses.
#[derive(Debug, Clone, Args)]
pub struct SegmentArg {
    /// Name of the shared-memory segment, as the servers' --segment: 1 to 12 letters, digits,
    /// '_' or '-'.
    #[arg(
        long,
        env = "SHMIMAGE_SEGMENT",
        value_name = "NAME",
        default_value = "shmimage"
    )]
    pub segment: SegmentName,
}

/// `shmimage put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// The image to load, in any format the servers read, recognised from its bytes. '-' reads
    /// standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub segment: SegmentArg,

    /// The most pixels (width x height) the image may have, as the servers' --max-pixels.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_PIXELS",
        value_name = "PIXELS",
        default_value_t = DEFAULT_MAX_PIXELS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_pixels: u64,

    /// The largest file, in bytes, that put reads, as the servers' --max-upload-bytes.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_UPLOAD_BYTES",
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_UPLOAD_BYTES,
        value_parser = parse_upload_limit
    )]
    pub max_upload_bytes: usize,
}

/// `shmimage get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Where to write the PNG; '-' writes it to standard output. An existing file is replaced
    /// whole, and only once the new one is complete.
    #[arg(value_name = "OUT.png")]
    pub out: PathBuf,

    #[command(flatten)]
    pub segment: SegmentArg,
}

/// `shmimage info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub segment: SegmentArg,
}

/// `shmimage watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub segment: SegmentArg,

    /// The sequence number of the image you already have (from put, info or an earlier line):
    /// if the segment holds another image, it is printed at once. Without it, only images
    /// written after watch starts are printed.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,

    /// Exit (with status 0) after this many images.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Give up (exit status 1) when no new image comes for this many seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=31_536_000)
    )]
    pub timeout: Option<u64>,
}

/// How a shmimage server starts: where it listens, which segment it shares, and its limits.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "shmimage",
    version,
    about = "Share one image between local web servers through a named shared-memory segment"
)]
pub struct Config {
    /// IP address to listen on. Anything but loopback lets other machines read and replace the
    /// image.
    #[arg(
        long,
        env = "SHMIMAGE_BIND",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub bind: IpAddr,

    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, env = "SHMIMAGE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Name of the shared-memory segment: servers started with the same name share one image.
    /// 1 to 12 letters, digits, '_' or '-'.
    #[arg(
        long,
        env = "SHMIMAGE_SEGMENT",
        value_name = "NAME",
        default_value = "shmimage"
    )]
    pub segment: SegmentName,

    /// The most pixels (width x height) an uploaded image may have.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_PIXELS",
        value_name = "PIXELS",
        default_value_t = DEFAULT_MAX_PIXELS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_pixels: u64,

    /// The largest upload, in bytes, that POST /image accepts.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_UPLOAD_BYTES",
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_UPLOAD_BYTES,
        value_parser = parse_upload_limit
    )]
    pub max_upload_bytes: usize,

    /// How long one request may take, upload included, in seconds; slower ones get 408.
    #[arg(
        long,
        env = "SHMIMAGE_REQUEST_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = crate::web::REQUEST_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub request_timeout: u64,

    /// How long a client may take to send a request's head (request line and headers), in
    /// seconds, counted from the connection's start or from the first byte of the next request
    /// on a kept-alive connection; slower clients are disconnected.
    #[arg(
        long,
        env = "SHMIMAGE_HEADER_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub header_timeout: u64,

    /// How long a connection may stay open idle between two requests, in seconds.
    #[arg(
        long,
        env = "SHMIMAGE_KEEP_ALIVE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub keep_alive_timeout: u64,

    /// How long a response may wait for the client to read it, in seconds; a client that stops
    /// reading for longer is disconnected.
    #[arg(
        long,
        env = "SHMIMAGE_SEND_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub send_timeout: u64,

    /// The most connections open at once. Kept below the limit on open files (`ulimit -n`,
    /// whose soft limit the server raises to the hard one); at the cap, the connection idle
    /// longest makes room for a new one.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub max_connections: u64,

    /// The largest request head (request line and all headers), in bytes; larger ones get 431.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_HEAD_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u64).range(8_192..=16_777_216)
    )]
    pub max_head_bytes: u64,

    /// The longest header line or request target, in bytes; longer ones get 431 or 414.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = 8_192,
        value_parser = clap::value_parser!(u64).range(256..=16_777_216)
    )]
    pub max_header_bytes: u64,

    /// How long running requests may go on after SIGINT or SIGTERM, in seconds, before the
    /// server drops them and exits. A second signal exits at once.
    #[arg(
        long,
        env = "SHMIMAGE_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=3_600)
    )]
    pub shutdown_grace: u64,

    /// The memory request bodies, decodes and encodes may hold at once, e.g. 2GiB or 512MiB
    /// (plain numbers are bytes). Requests that would exceed it wait briefly, then get 503.
    /// Default: a sixteenth of the memory the server may use, at least enough for one image of
    /// --max-pixels.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_MEMORY",
        value_name = "BYTES",
        value_parser = parse_bytes
    )]
    pub max_memory: Option<u64>,

    /// A host name the server also answers to, besides localhost and IP addresses (e.g. a name
    /// for this machine on your network). Repeat it, or separate names with commas. Requests
    /// for other names are refused, against DNS rebinding.
    #[arg(
        long = "allow-host",
        env = "SHMIMAGE_ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,
}

impl Config {
    /// The host names the server answers to besides localhost and IP addresses.
    pub fn allowed_hosts(&self) -> AllowedHosts {
        AllowedHosts::new(self.allow_hosts.iter().cloned())
    }

    /// The limits the web layer enforces on requests; the memory budget's default is derived
    /// from `available_memory` (see [`crate::web::budget`]).
    pub fn limits(&self, available_memory: Option<u64>) -> Limits {
        Limits {
            max_pixels: self.max_pixels,
            max_upload_bytes: self.max_upload_bytes,
            request_timeout: Duration::from_secs(self.request_timeout),
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_memory: self
                .max_memory
                .unwrap_or_else(|| budget::default_budget(self.max_pixels, available_memory)),
        }
    }

    /// The limits on connections, with at most `max_connections` of them (the cap the
    /// open-file limit leaves; see [`crate::web::serve::connection_cap`]).
    pub fn connection_limits(&self, max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(self.header_timeout),
            keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout),
            send_timeout: Duration::from_secs(self.send_timeout),
            max_connections,
            max_head_bytes: usize::try_from(self.max_head_bytes).unwrap_or(usize::MAX),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
        }
    }
}

/// Parses a number of bytes: `268435456`, `512MiB`, `2GiB`, `1.5G` (K, M, G, T and their `iB`
/// forms are powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?}: give bytes, or a number with KiB, MiB, GiB or TiB"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: give e.g. 2GiB, 512MiB or 1073741824"))?;
    let bytes = value * scale as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err("the size must be at least 1 byte".to_owned());
    }
    Ok(bytes as u64)
}

/// Parses `--max-upload-bytes`: a positive whole number of bytes.
fn parse_upload_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("the upload limit must be at least 1 byte".to_owned()),
        Ok(bytes) => Ok(bytes),
        Err(error) => Err(format!(
            "{error}: give a whole number of bytes, e.g. 268435456"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::try_parse_from(["shmimage"]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1");
        assert_eq!(config.port, 8080);
        assert_eq!(config.segment.as_str(), "shmimage");
        assert_eq!(config.max_pixels, 100_000_000);
        assert_eq!(config.max_upload_bytes, 256 * 1024 * 1024);
        assert_eq!(config.allowed_hosts(), AllowedHosts::default());
    }

    #[test]
    fn allowed_hosts_can_be_repeated_or_comma_separated() {
        let config = Config::try_parse_from([
            "shmimage",
            "--allow-host",
            "a.lan,B.lan",
            "--allow-host",
            "c",
        ])
        .unwrap();
        assert!(config.allowed_hosts().allows("b.lan"));
        assert!(config.allowed_hosts().allows("c"));
        assert!(!config.allowed_hosts().allows("d.lan"));
    }

    #[test]
    fn a_bad_segment_name_is_refused_with_the_reason() {
        let error = Config::try_parse_from(["shmimage", "--segment", "a/b"]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("use only letters, digits"), "{message}");
    }

    #[test]
    fn connection_and_time_limits_default_as_documented() {
        let config = Config::try_parse_from(["shmimage"]).unwrap();
        let limits = config.connection_limits(10_000);
        assert_eq!(limits.header_timeout, Duration::from_secs(20));
        assert_eq!(limits.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(limits.send_timeout, Duration::from_secs(60));
        assert_eq!(limits.max_head_bytes, 65_536);
        assert_eq!(limits.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.limits(None).max_header_bytes, 8_192);
        let gib = 1u64 << 30;
        assert_eq!(config.limits(Some(24 * gib)).max_memory, 24 * gib / 16);
    }

    #[test]
    fn memory_sizes_take_units() {
        assert_eq!(parse_bytes("1073741824"), Ok(1 << 30));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").unwrap_err().contains("unit"));
        let config = Config::try_parse_from(["shmimage", "--max-memory", "3GiB"]).unwrap();
        assert_eq!(config.limits(None).max_memory, 3 << 30);
    }

    #[test]
    fn no_command_is_a_server_with_the_server_s_flags() {
        let cli = Cli::try_parse_from(["shmimage", "--port", "9", "--segment", "demo"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.server.port, 9);
        assert_eq!(cli.server.segment.as_str(), "demo");
    }

    #[test]
    fn commands_take_their_own_flags_and_not_the_server_s() {
        let cli = Cli::try_parse_from(["shmimage", "put", "-", "--max-pixels", "5"]).unwrap();
        let Some(Command::Put(put)) = cli.command else {
            panic!("a put command");
        };
        assert_eq!(put.file.as_os_str(), "-");
        assert_eq!(put.max_pixels, 5);
        assert_eq!(put.max_upload_bytes, DEFAULT_MAX_UPLOAD_BYTES);
        assert_eq!(put.segment.segment.as_str(), "shmimage");
        assert!(Cli::try_parse_from(["shmimage", "get", "x.png", "--port", "1"]).is_err());
        assert!(Cli::try_parse_from(["shmimage", "--port", "1", "info"]).is_err());
        assert!(Cli::try_parse_from(["shmimage", "watch", "--count", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["shmimage", "put"]).is_err(),
            "put needs a file"
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(Config::try_parse_from(["shmimage", "--max-pixels", "0"]).is_err());
        assert!(Config::try_parse_from(["shmimage", "--max-upload-bytes", "0"]).is_err());
    }
}
