//! Counting what the load did: requests by route, server and status, transport errors, torn
//! images and broken promises, and the summary table printed at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The routes the load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    Upload,
    ImagePng,
    ApiSegment,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Upload => "POST /image",
            Route::ImagePng => "GET /image.png",
            Route::ApiSegment => "GET /api/segment",
        }
    }
}

/// Everything the load counted, shared by its tasks.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// (route, server index, status) -> requests; status 0 is a transport error.
    requests: BTreeMap<(Route, usize, u16), u64>,
    /// The slowest answer per route.
    slowest: BTreeMap<Route, Duration>,
    /// Images that failed their id or checksum: torn or mixed.
    torn: u64,
    /// The first few of them.
    torn_examples: Vec<String>,
    /// Other broken promises: a 5xx body, a sequence number going back, an unknown image.
    problems: Vec<String>,
    /// Images read and verified whole.
    verified: u64,
}

/// At most this many problems of each kind are kept for the report.
const KEEP: usize = 20;

impl Tally {
    /// One answer (`status` 0: none came) on `route` from server `server`, after `took`.
    pub fn count(&self, route: Route, server: usize, status: u16, took: Duration) {
        let mut counts = self.lock();
        *counts.requests.entry((route, server, status)).or_default() += 1;
        let slowest = counts.slowest.entry(route).or_default();
        *slowest = (*slowest).max(took);
    }

    pub fn torn(&self, what: String) {
        let mut counts = self.lock();
        counts.torn += 1;
        if counts.torn_examples.len() < KEEP {
            counts.torn_examples.push(what);
        }
    }

    pub fn problem(&self, what: String) {
        let mut counts = self.lock();
        if counts.problems.len() < KEEP {
            counts.problems.push(what);
        }
    }

    pub fn verified(&self) {
        self.lock().verified += 1;
    }

    /// Requests on `route` (any server) whose status satisfies `keep`.
    pub fn requests(&self, route: Option<Route>, keep: impl Fn(u16) -> bool) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter(|((r, _, status), _)| route.is_none_or(|route| *r == route) && keep(*status))
            .map(|(_, count)| count)
            .sum()
    }

    pub fn torn_count(&self) -> u64 {
        self.lock().torn
    }

    pub fn torn_examples(&self) -> Vec<String> {
        self.lock().torn_examples.clone()
    }

    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    pub fn verified_count(&self) -> u64 {
        self.lock().verified
    }

    /// The table of requests by route, server and status, with the slowest answer per route.
    pub fn table(&self, servers: &[String]) -> String {
        let counts = self.lock();
        let mut table = format!(
            "{:<18} {:<17} {:>6} {:>9}\n",
            "route", "server", "status", "requests"
        );
        for ((route, server, status), count) in &counts.requests {
            let status = if *status == 0 {
                "error".to_owned()
            } else {
                status.to_string()
            };
            table.push_str(&format!(
                "{:<18} {:<17} {:>6} {:>9}\n",
                route.as_str(),
                servers[*server],
                status,
                count
            ));
        }
        for (route, slowest) in &counts.slowest {
            table.push_str(&format!("slowest {:<18} {:.0?}\n", route.as_str(), slowest));
        }
        table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
