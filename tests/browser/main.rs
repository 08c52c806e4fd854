//! The page in a real browser: headless Chromium driven over WebDriver (chromedriver) by
//! fantoccini, against real shmimage servers, asserting what a person would see.
//!
//! One chromedriver serves the whole run; every test opens its own browsers with fresh profiles.
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` (or `SHMIMAGE_CHROMIUM` and
//! `SHMIMAGE_CHROMEDRIVER`), the tests say why on stderr and pass without running, unless
//! `SHMIMAGE_REQUIRE_BROWSER=1`, as in CI, makes that a failure. Each test saves a screenshot
//! of its final state under `target/browser-screenshots/`.

// The HTTP tests' helpers (servers on fresh segments, test images); not all are used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod browser;
mod scenarios;
