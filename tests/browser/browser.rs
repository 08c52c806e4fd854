//! One chromedriver for the test run, and browser windows (fantoccini sessions) on it.

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long the DOM may take to show what a test waits for. Generous: two cores, several
/// browsers and servers at once.
pub const DOM_PATIENCE: Duration = Duration::from_secs(10);

/// How long chromedriver may take to start listening.
const DRIVER_PATIENCE: Duration = Duration::from_secs(30);

/// The running chromedriver. It lives as long as the test process: a shell around it waits
/// for the test process's end (its stdin closes) and then stops chromedriver and the browsers
/// it started (their process group).
pub struct Driver {
    url: String,
    chromium: PathBuf,
    _supervisor: Child,
}

/// Whether the page may run scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripts {
    Enabled,
    Disabled,
}

/// The chromedriver for this run, started on first use, or why it cannot run (no browser
/// installed, chromedriver not listening).
pub fn driver() -> Result<&'static Driver, String> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER.get_or_init(start_driver).as_ref().map_err(|reason| {
        format!(
            "{reason} (install chromium and chromium-driver, or set SHMIMAGE_CHROMIUM and \
             SHMIMAGE_CHROMEDRIVER)"
        )
    })
}

/// Whether the browser tests must run (`SHMIMAGE_REQUIRE_BROWSER=1`, as in CI): then a missing
/// browser fails them instead of skipping them.
pub fn browser_required() -> bool {
    std::env::var("SHMIMAGE_REQUIRE_BROWSER").is_ok_and(|value| value == "1")
}

fn program(variable: &str, default: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is not installed", path.display()))
    }
}

fn start_driver() -> Result<Driver, String> {
    let chromium = program("SHMIMAGE_CHROMIUM", "/usr/bin/chromium")?;
    let chromedriver = program("SHMIMAGE_CHROMEDRIVER", "/usr/bin/chromedriver")?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port for chromedriver: {error}"))?
        .port();
    // `cat` returns when the test process exits and its end of the pipe closes; then the whole
    // process group (chromedriver and every browser it started) is stopped, and the browsers'
    // profiles are removed, including those of tests that failed before closing their windows.
    let supervisor = Command::new("sh")
        .arg("-c")
        .arg(concat!(
            r#""$0" --port="$1" --silent >/dev/null 2>&1 & "#,
            r#"trap '' TERM; cat >/dev/null; kill -TERM 0; sleep 1; rm -rf "$2""#
        ))
        .arg(&chromedriver)
        .arg(port.to_string())
        .arg(profiles_folder())
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", chromedriver.display()))?;
    let deadline = Instant::now() + DRIVER_PATIENCE;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on port {port} within {DRIVER_PATIENCE:?}",
                chromedriver.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Driver {
        url: format!("http://127.0.0.1:{port}"),
        chromium,
        _supervisor: supervisor,
    })
}

/// A browser window with a fresh profile. Call [`Window::close`] at the end of a test.
pub struct Window {
    pub client: Client,
    profile: PathBuf,
}

impl Driver {
    /// A new headless Chromium, 1200x900 unless `size` says otherwise.
    pub async fn open(&self, scripts: Scripts) -> Window {
        self.open_sized(scripts, (1200, 900), false).await
    }

    /// A new headless Chromium whose page area (viewport) is exactly `size` CSS pixels, in dark
    /// mode if `dark`. Sizes narrower than 600 pixels are a phone: Chromium's mobile emulation,
    /// three device pixels per CSS pixel, as on a current phone.
    pub async fn open_viewport(&self, scripts: Scripts, size: (u32, u32), dark: bool) -> Window {
        let phone = size.0 < 600;
        let window = self.launch(scripts, size, dark, phone).await;
        if !phone {
            // The window's outer size includes whatever the browser draws around the page.
            let inner = window
                .run("return [innerWidth, innerHeight];", vec![])
                .await;
            let inner: (u32, u32) = serde_json::from_value(inner).expect("the viewport's size");
            if inner != size {
                window
                    .client
                    .set_window_size(2 * size.0 - inner.0, 2 * size.1 - inner.1)
                    .await
                    .expect("resize the window");
            }
        }
        window
    }

    /// A new headless Chromium with a window of `size`, in dark mode if `dark`.
    pub async fn open_sized(&self, scripts: Scripts, size: (u32, u32), dark: bool) -> Window {
        self.launch(scripts, size, dark, false).await
    }

    async fn launch(&self, scripts: Scripts, size: (u32, u32), dark: bool, phone: bool) -> Window {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let profile = profiles_folder().join(COUNTER.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir_all(&profile).expect("create a browser profile folder");
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", size.0, size.1),
        ];
        if dark {
            args.push("--blink-settings=preferredColorScheme=0".to_owned());
        }
        let mut options = json!({
            "binary": self.chromium,
            "args": args,
        });
        if phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": size.0, "height": size.1, "pixelRatio": 3.0 },
            });
        }
        if scripts == Scripts::Disabled {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("start Chromium through chromedriver: {error}"));
        Window { client, profile }
    }
}

/// What the page's picture shows, as the browser decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownImage {
    /// The `src` attribute, e.g. `/image.png?v=18a...-2`.
    pub src: String,
    /// The `src` resolved to a full URL.
    pub url: String,
    pub natural_width: u64,
    pub natural_height: u64,
}

impl Window {
    /// Loads `url` and waits for the page to be there.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("load the page");
        self.find("#status").await;
    }

    /// The element `css` selects; fails the test if there is none after [`DOM_PATIENCE`].
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + DOM_PATIENCE;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(error) if Instant::now() > deadline => {
                    panic!("no element {css} after {DOM_PATIENCE:?}: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The button labelled `label`.
    pub async fn button(&self, label: &str) -> Element {
        let xpath = format!("//button[normalize-space()='{label}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|error| panic!("no button {label:?}: {error}"))
    }

    /// The status line's text.
    pub async fn status(&self) -> String {
        match self.client.find(Locator::Css("#status")).await {
            Ok(status) => status.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the status line contains `expected`; returns it.
    pub async fn wait_for_status(&self, expected: &str) -> String {
        self.wait_until(&format!("the status to say {expected:?}"), async || {
            let status = self.status().await;
            status.contains(expected).then_some(status)
        })
        .await
    }

    /// The picture the page shows, once the browser has decoded it.
    pub async fn shown_image(&self) -> Option<ShownImage> {
        let shown = self
            .client
            .execute(
                r##"
                const img = document.querySelector("#picture img");
                if (!img || !img.complete || img.naturalWidth === 0) return null;
                return [img.getAttribute("src"), img.src, img.naturalWidth, img.naturalHeight];
                "##,
                Vec::new(),
            )
            .await
            .expect("look at the page's picture");
        let (src, url, natural_width, natural_height) = serde_json::from_value(shown).ok()?;
        Some(ShownImage {
            src,
            url,
            natural_width,
            natural_height,
        })
    }

    /// Waits until the page shows a decoded picture whose `src` satisfies `wanted`.
    pub async fn wait_for_image(&self, what: &str, wanted: impl Fn(&str) -> bool) -> ShownImage {
        self.wait_until(what, async || {
            self.shown_image().await.filter(|shown| wanted(&shown.src))
        })
        .await
    }

    /// Polls `probe` every 50 ms until it gives a value; fails the test after [`DOM_PATIENCE`].
    pub async fn wait_until<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + DOM_PATIENCE;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if Instant::now() > deadline {
                let status = self.status().await;
                self.screenshot("timed-out").await;
                panic!("waited {DOM_PATIENCE:?} for {what}; the status says {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` in the page (arguments in `arguments`) and returns its result.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("run a script in the page: {error}"))
    }

    /// Chooses `file` in the page's file input and presses "Load image from file".
    pub async fn load_from_file(&self, file: &Path) {
        let input = self.find("#image").await;
        input
            .send_keys(&file.display().to_string())
            .await
            .expect("choose the file");
        self.button("Load image from file")
            .await
            .click()
            .await
            .expect("press Load image from file");
    }

    /// Saves a screenshot as `target/browser-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let folder = screenshot_folder();
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(error) => {
                eprintln!("no screenshot {name}: {error}");
                return;
            }
        };
        let _ = std::fs::create_dir_all(&folder);
        let path = folder.join(format!("{name}.png"));
        if let Err(error) = std::fs::write(&path, png) {
            eprintln!("cannot save {}: {error}", path.display());
        }
    }

    /// Ends the browser session and removes its profile.
    pub async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where this run's browser profiles live: one folder per test process.
fn profiles_folder() -> PathBuf {
    std::env::temp_dir().join(format!("shmimage-browsers-{}", std::process::id()))
}

/// `target/browser-screenshots`, beside the test binaries' scratch folder.
fn screenshot_folder() -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    scratch
        .parent()
        .unwrap_or(scratch)
        .join("browser-screenshots")
}

/// A file for the browser to upload, removed when dropped.
pub struct TestFile {
    pub path: PathBuf,
}

impl TestFile {
    /// Writes `bytes` to a fresh file named `name`.
    pub fn new(name: &str, bytes: &[u8]) -> TestFile {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let folder = std::env::temp_dir().join(format!(
            "shmimage-upload-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&folder).expect("create a folder for a test file");
        let path = folder.join(name);
        std::fs::write(&path, bytes).expect("write a test file");
        TestFile { path }
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if let Some(folder) = self.path.parent() {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}
