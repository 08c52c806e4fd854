//! Command-line and environment configuration of a shmimage server.
//!
//! Every option can also come from an environment variable (`--port` from `SHMIMAGE_PORT`, ...);
//! a flag on the command line wins over the variable.

use crate::segment::SegmentName;
use crate::web::Limits;
use crate::web::guard::AllowedHosts;
use clap::Parser;
use std::net::IpAddr;

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
        default_value_t = 100_000_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_pixels: u64,

    /// The largest upload, in bytes, that POST /image accepts.
    #[arg(
        long,
        env = "SHMIMAGE_MAX_UPLOAD_BYTES",
        value_name = "BYTES",
        default_value_t = 256 * 1024 * 1024,
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

    /// The limits the web layer enforces on uploads.
    pub fn limits(&self) -> Limits {
        Limits {
            max_pixels: self.max_pixels,
            max_upload_bytes: self.max_upload_bytes,
            request_timeout: std::time::Duration::from_secs(self.request_timeout),
        }
    }
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
    fn zero_limits_are_refused() {
        assert!(Config::try_parse_from(["shmimage", "--max-pixels", "0"]).is_err());
        assert!(Config::try_parse_from(["shmimage", "--max-upload-bytes", "0"]).is_err());
    }
}
