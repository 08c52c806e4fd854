//! `Server-Timing` headers: where a request's time went on the server.
//!
//! `POST /image` reports `receive` (reading the body), `decode` and `write` (the copy into the
//! segment); a plain PNG, decoded row by row straight into the segment, reports `decode` (which
//! includes the write) and `share` (the copy of its own image data into the PNG area); a `GET
//! /image.png` that had to encode reports `encode`, with `read;desc=slot` when the encoder read
//! the pixels band by band from the slot (the reads are part of `encode`) or `read` for a
//! whole copy out of the segment first, and one served from the PNG cache says
//! `cache;desc=hit`. Durations are in
//! milliseconds, as the [W3C Server Timing] syntax wants, e.g.
//! `Server-Timing: receive;dur=3.104, decode;dur=48.221, write;dur=2.903`.
//!
//! [`ServerTiming`] is a handful of names and durations with no allocation until the header is
//! written; it goes into a response as one of its parts.
//!
//! [W3C Server Timing]: https://www.w3.org/TR/server-timing/

use axum::http::HeaderValue;
use axum::http::header::HeaderName;
use axum::response::{IntoResponseParts, ResponseParts};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The response header's name.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The most metrics one response reports; more are dropped (none of the routes has more).
const MAX_METRICS: usize = 5;

/// One metric: a step with how long it took, or a step with a description.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Duration(&'static str, Duration),
    Description(&'static str, &'static str),
}

/// The metrics of one response, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerTiming {
    metrics: [Option<Metric>; MAX_METRICS],
}

impl ServerTiming {
    /// No metrics yet.
    pub fn new() -> ServerTiming {
        ServerTiming::default()
    }

    /// Records that step `name` took `duration`.
    pub fn record(&mut self, name: &'static str, duration: Duration) {
        self.push(Metric::Duration(name, duration));
    }

    /// Records that step `name` took the time since `start`.
    pub fn record_since(&mut self, name: &'static str, start: Instant) {
        self.record(name, start.elapsed());
    }

    /// Runs `step` and records it as `name` only if it took a millisecond or more: for waits
    /// that are usually none (for memory, say).
    pub fn time_if_long<T>(&mut self, name: &'static str, step: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let output = step();
        if start.elapsed() >= Duration::from_millis(1) {
            self.record_since(name, start);
        }
        output
    }

    /// Records step `name` with a description and no duration, as `cache;desc=hit`.
    pub fn describe(&mut self, name: &'static str, description: &'static str) {
        self.push(Metric::Description(name, description));
    }

    /// Runs `step` and records how long it took as `name`.
    pub fn time<T>(&mut self, name: &'static str, step: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let output = step();
        self.record_since(name, start);
        output
    }

    /// Adds the metrics of `other` after these.
    pub fn extend(&mut self, other: &ServerTiming) {
        for metric in other.metrics.iter().flatten() {
            self.push(*metric);
        }
    }

    /// How long step `name` took, if it was recorded.
    pub fn duration(&self, name: &str) -> Option<Duration> {
        self.metrics
            .iter()
            .flatten()
            .find_map(|metric| match metric {
                Metric::Duration(recorded, duration) if *recorded == name => Some(*duration),
                _ => None,
            })
    }

    fn push(&mut self, metric: Metric) {
        if let Some(slot) = self.metrics.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(metric);
        }
    }

    /// The header's value, e.g. `read;dur=4.120, encode;dur=61.007`; empty without metrics.
    pub fn header_value(&self) -> String {
        let mut value = String::new();
        for metric in self.metrics.iter().flatten() {
            if !value.is_empty() {
                value.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = match metric {
                Metric::Duration(name, duration) => {
                    write!(value, "{name};dur={:.3}", duration.as_secs_f64() * 1000.0)
                }
                Metric::Description(name, description) => {
                    write!(value, "{name};desc={description}")
                }
            };
        }
        value
    }
}

impl IntoResponseParts for ServerTiming {
    type Error = Infallible;

    /// Adds the `Server-Timing` header, unless there is nothing to report.
    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Infallible> {
        let value = self.header_value();
        if !value.is_empty()
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            parts.headers_mut().insert(SERVER_TIMING, value);
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_written_in_order_in_milliseconds() {
        let mut timing = ServerTiming::new();
        timing.record("receive", Duration::from_micros(3_104));
        timing.record("decode", Duration::from_millis(48));
        timing.describe("cache", "hit");
        assert_eq!(
            timing.header_value(),
            "receive;dur=3.104, decode;dur=48.000, cache;desc=hit"
        );
        assert_eq!(timing.duration("decode"), Some(Duration::from_millis(48)));
        assert_eq!(timing.duration("cache"), None);
    }

    #[test]
    fn nothing_recorded_writes_nothing_and_extra_metrics_are_dropped() {
        assert_eq!(ServerTiming::new().header_value(), "");
        let mut timing = ServerTiming::new();
        for _ in 0..MAX_METRICS + 2 {
            timing.record("step", Duration::ZERO);
        }
        assert_eq!(timing.header_value().matches("step").count(), MAX_METRICS);
    }

    #[test]
    fn time_measures_the_step_and_extend_appends() {
        let mut decode = ServerTiming::new();
        let answer = decode.time("decode", || 42);
        assert_eq!(answer, 42);
        let mut timing = ServerTiming::new();
        timing.record("receive", Duration::from_millis(1));
        timing.extend(&decode);
        let value = timing.header_value();
        assert!(
            value.starts_with("receive;dur=1.000, decode;dur="),
            "{value}"
        );
    }
}
