//! The page in a real browser: headless Chromium driven over WebDriver (chromedriver) by
//! fantoccini, against real shmimage servers, asserting what a person would see.
//!
//! One chromedriver serves the whole run; every test opens its own browsers with fresh profiles.
//! This binary has its own harness (libtest-mimic), so that without `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` (or `SHMIMAGE_CHROMIUM` and `SHMIMAGE_CHROMEDRIVER`) every test is
//! reported as *ignored*, with the reason, instead of passing without running; with
//! `SHMIMAGE_REQUIRE_BROWSER=1`, as in CI, a missing browser fails them. Each test saves a
//! screenshot of what it checked under `target/browser-screenshots/`.

// The HTTP tests' helpers (servers on fresh segments, test images); not all are used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod browser;
mod fit;
mod offline;
mod scenarios;

use browser::Driver;
use fit::*;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use offline::*;
use scenarios::*;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

/// One browser test: what it does with the run's chromedriver.
type Scenario = fn(&'static Driver) -> Pin<Box<dyn Future<Output = ()>>>;

/// `(name, scenario)` pairs for every `async fn NAME(driver: &Driver)` listed.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|driver| Box::pin($name(driver))) as Scenario)),*]
    };
}

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let all = scenarios![
        an_image_loaded_in_page_a_is_shown_there_and_displayed_in_page_b,
        with_live_on_page_b_shows_an_image_loaded_elsewhere_within_two_seconds,
        a_file_that_is_not_an_image_gets_the_servers_message_inline,
        without_javascript_the_plain_forms_still_load_and_display,
        dropping_or_pasting_an_image_onto_the_page_loads_it,
        the_page_fits_a_narrow_window_in_dark_mode,
        right_after_a_large_upload_the_page_shows_a_loading_state_not_the_old_picture,
        portrait_and_landscape_images_fit_the_window_on_desktop_and_phone,
        a_one_pixel_image_is_drawn_as_a_visible_square_with_its_real_size,
        the_page_has_an_icon_and_asks_for_nothing_that_is_missing,
        a_stopped_server_is_shown_plainly_and_the_page_recovers_when_it_is_back,
    ];
    let trials = all
        .into_iter()
        .map(|(name, scenario)| Trial::ignorable_test(name, move || run(scenario)))
        .collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}

/// Runs `scenario` on its own single-threaded runtime, or says why it cannot run.
fn run(scenario: Scenario) -> Result<Completion, Failed> {
    let driver = match browser::driver() {
        Ok(driver) => driver,
        Err(reason) if browser::browser_required() => {
            return Err(format!(
                "SHMIMAGE_REQUIRE_BROWSER=1, but the browser tests cannot run: {reason}"
            )
            .into());
        }
        Err(reason) => return Ok(Completion::ignored_with(reason)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    runtime.block_on(scenario(driver));
    Ok(Completion::Completed)
}
