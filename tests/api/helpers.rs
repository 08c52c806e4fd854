//! Starting real servers on fresh segments, making test images, and talking to the servers.

use image::{
    DynamicImage, GrayAlphaImage, ImageBuffer, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage,
};
use reqwest::multipart::{Form, Part};
use std::io::{BufRead, BufReader, Cursor};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to print its first line, or to stop after a signal.
const PATIENCE: Duration = Duration::from_secs(30);

/// A segment name no other test (in this run or a recent one) uses: `t`, the test process id in
/// base 36, `-`, two characters from the clock, and a counter in base 36. At most 12 characters.
pub fn fresh_segment() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static SALT: OnceLock<String> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or(0);
        format!("{:0>2}", base36(u64::from(nanos / 1000 % (36 * 36))))
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "t{}-{salt}{}",
        base36(u64::from(std::process::id())),
        base36(u64::from(count))
    );
    assert!(name.len() <= 12, "segment name {name:?} is too long");
    name
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("base-36 digits are ASCII")
}

/// A running `shmimage` process. Dropping it stops the process: SIGTERM, then SIGKILL.
pub struct TestServer {
    /// `127.0.0.1:PORT`, as the server printed it.
    pub addr: String,
    /// The first line the server printed.
    pub startup_line: String,
    /// A client that does not follow redirects, so tests can see them.
    pub client: reqwest::Client,
    child: Child,
    /// Kept open so the server can still write to stdout.
    _stdout: Option<BufReader<ChildStdout>>,
    log: Arc<Mutex<String>>,
}

/// Starts a server with `--port 0 --segment SEGMENT`.
pub fn spawn_server(segment: &str) -> TestServer {
    spawn_server_with(segment, &[])
}

/// Starts a server with `--port 0 --segment SEGMENT` and `extra` arguments, and waits for its
/// startup line.
pub fn spawn_server_with(segment: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--port", "0", "--segment", segment];
    args.extend_from_slice(extra);
    spawn_command(&args, &[])
}

/// Starts a server with exactly `args` and the environment variables `envs`, and waits for its
/// startup line.
pub fn spawn_command(args: &[&str], envs: &[(&str, &str)]) -> TestServer {
    spawn_program(env!("CARGO_BIN_EXE_shmimage"), args, envs)
}

/// Starts `program` (the shmimage binary, or a wrapper that execs it) with `args` and `envs`,
/// and waits for the server's startup line.
pub fn spawn_program(program: &str, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shmimage binary");

    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = Arc::clone(&log);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });

    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut stdout = stdout;
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let _ = sender.send((read.map(|_| line), stdout));
    });
    let (line, stdout) = match receiver.recv_timeout(PATIENCE) {
        Ok((Ok(line), stdout)) if !line.is_empty() => (line, stdout),
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(100));
            panic!(
                "the server printed no startup line ({:?}); its log:\n{}",
                outcome.map(|(line, _)| line),
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    };
    let startup_line = line.trim_end().to_owned();
    let addr = startup_line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected startup line {startup_line:?}"))
        .to_owned();

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build an HTTP client");
    TestServer {
        addr,
        startup_line,
        client,
        child,
        _stdout: Some(stdout),
        log,
    }
}

impl TestServer {
    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's process id.
    #[allow(dead_code)] // not every test binary that includes these helpers needs it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited (without waiting).
    #[allow(dead_code)] // not every test binary that includes these helpers needs it
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uploads `bytes` as the form field `image`, the way curl -F does.
    pub async fn upload(&self, bytes: Vec<u8>, file_name: &str, mime: &str) -> reqwest::Response {
        self.upload_form(form_with("image", bytes, file_name, mime), None)
            .await
    }

    /// Posts `form` to `/image`, with an `Accept` header if given.
    pub async fn upload_form(&self, form: Form, accept: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/image")).multipart(form);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.send().await.expect("POST /image")
    }

    /// Posts `bytes` as the raw body of `/image` with `content_type`.
    pub async fn upload_raw(&self, bytes: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.client
            .post(self.url("/image"))
            .header("Content-Type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("POST /image")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` the way a browser asks for a page.
    pub async fn get_page(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("Accept", BROWSER_ACCEPT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The image `GET /image.png` serves, decoded; fails the test unless it is a 200 PNG.
    pub async fn shared_image(&self) -> DynamicImage {
        let response = self.get("/image.png").await;
        assert_eq!(response.status(), 200, "GET /image.png from {}", self.addr);
        assert_eq!(header(&response, "content-type"), "image/png");
        let png = response.bytes().await.expect("read the PNG");
        image::load_from_memory_with_format(&png, ImageFormat::Png).expect("a valid PNG")
    }

    /// `GET /api/segment` as JSON.
    pub async fn segment_state(&self) -> serde_json::Value {
        let response = self.get("/api/segment").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON from /api/segment")
    }

    /// Sends `signal` and waits for the process to exit; fails the test if it does not exit
    /// within [`PATIENCE`] (it is killed then).
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        self.terminate(signal)
            .unwrap_or_else(|problem| panic!("{problem}; its log:\n{}", self.log()))
    }

    /// SIGTERM, then wait.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` and waits for the exit status; SIGKILL after [`PATIENCE`]. Never panics.
    fn terminate(&mut self, signal: libc::c_int) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) only sends a signal. `pid` is our own child, not yet reaped (try_wait
        // above saw it running), so the pid cannot have been reused by another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(format!("kill({pid}, {signal}) failed"));
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let status = self.child.wait();
                    return Err(format!(
                        "the server did not stop within {PATIENCE:?} of signal {signal} and was \
                         killed ({status:?})"
                    ));
                }
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let stopped = self.terminate(libc::SIGTERM);
        if thread::panicking() {
            eprintln!("--- log of the server at {} ---\n{}", self.addr, self.log());
        } else if let Err(problem) = stopped {
            panic!("{problem}; its log:\n{}", self.log());
        }
    }
}

/// The `Accept` header browsers send for pages.
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// A form with one file field.
pub fn form_with(field: &str, bytes: Vec<u8>, file_name: &str, mime: &str) -> Form {
    let part = Part::bytes(bytes)
        .file_name(file_name.to_owned())
        .mime_str(mime)
        .expect("a valid MIME type");
    Form::new().part(field.to_owned(), part)
}

/// A response header as text ("" when absent).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The `error` message of a JSON error response, checking its status.
pub async fn json_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status, "status of {}", response.url());
    assert!(
        header(&response, "content-type").starts_with("application/json"),
        "content type {:?}",
        header(&response, "content-type")
    );
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\" in {body}"))
        .to_owned()
}

/// HTML text with the entities askama writes turned back into characters.
pub fn unescape_html(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// A smooth RGB picture, different for every `seed`.
pub fn rgb8(width: u32, height: u32, seed: u8) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8 ^ seed,
            (y * 255 / height.max(1)) as u8,
            ((x + y) % 256) as u8,
        ])
    }))
}

/// RGBA noise that PNG cannot compress much, for size limits.
pub fn noise_rgba8(width: u32, height: u32) -> DynamicImage {
    let mut state: u32 = 0x1234_5678;
    DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        Rgba(state.to_le_bytes())
    }))
}

/// A 16-bit RGBA picture with varying transparency.
pub fn rgba16(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba16(ImageBuffer::from_fn(width, height, |x, y| {
        Rgba([
            (x * 65_535 / width) as u16,
            (y * 65_535 / height) as u16,
            (x * y % 65_536) as u16,
            (65_535 - x * 1000 % 65_536) as u16,
        ])
    }))
}

/// An 8-bit gray + alpha picture.
pub fn gray_alpha8(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLumaA8(GrayAlphaImage::from_fn(width, height, |x, y| {
        image::LumaA([((x * 7 + y * 3) % 256) as u8, ((x * y) % 256) as u8])
    }))
}

/// `image` encoded as `format`.
pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encode a test image");
    bytes
}

/// Fails unless `actual` has exactly `expected`'s size, color type and pixel bytes.
pub fn assert_same_pixels(actual: &DynamicImage, expected: &DynamicImage) {
    assert_eq!(
        (actual.width(), actual.height()),
        (expected.width(), expected.height()),
        "size"
    );
    assert_eq!(actual.color(), expected.color(), "color type and bit depth");
    assert!(
        actual.as_bytes() == expected.as_bytes(),
        "the pixels differ ({} bytes)",
        expected.as_bytes().len()
    );
}

/// Files in /dev/shm that belong to `segment`: `shmimage.NAME` and `shmimage.NAME.*`.
pub fn shm_files(segment: &str) -> Vec<String> {
    let control = format!("shmimage.{segment}");
    let data_prefix = format!("{control}.");
    std::fs::read_dir("/dev/shm")
        .expect("list /dev/shm")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| *name == control || name.starts_with(&data_prefix))
        .collect()
}
