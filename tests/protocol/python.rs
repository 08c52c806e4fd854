//! Running `reader.py` with the Python 3 this machine has, or saying why not.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long the reader may take for one command.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The interpreter, or `None` (with the reason printed once) when there is none and
/// `SHMIMAGE_REQUIRE_PYTHON` is not `1`.
pub fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let program = std::env::var("SHMIMAGE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let probe = Command::new(&program)
            .args(["-c", "import sys; sys.exit(sys.version_info < (3, 8))"])
            .output();
        let found = match probe {
            Ok(output) if output.status.success() => Ok(program),
            Ok(_) => Err(format!("{program} is older than Python 3.8")),
            Err(error) => Err(format!("{program} cannot be run ({error})")),
        };
        if let Err(reason) = &found
            && !required()
        {
            // Straight to stderr, past the test harness's capture, so `cargo test` shows it.
            let _ = writeln!(
                std::io::stderr(),
                "Python reader tests skipped: {reason} (install python3, or set SHMIMAGE_PYTHON)"
            );
        }
        found
    });
    match found {
        Ok(program) => Some(program),
        Err(reason) if required() => {
            panic!("SHMIMAGE_REQUIRE_PYTHON=1, but the Python reader cannot run: {reason}")
        }
        Err(_) => None,
    }
}

fn required() -> bool {
    std::env::var("SHMIMAGE_REQUIRE_PYTHON").is_ok_and(|value| value == "1")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/protocol/reader.py")
}

/// What a finished reader command printed.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    /// Its stdout, one JSON value per line.
    pub lines: Vec<serde_json::Value>,
    pub stderr: String,
}

impl Finished {
    /// The only JSON line, failing the test unless the command succeeded and printed one.
    #[track_caller]
    pub fn only_line(&self) -> &serde_json::Value {
        assert!(self.success, "reader.py failed: {}", self.stderr);
        assert_eq!(self.lines.len(), 1, "one line: {:?}", self.lines);
        &self.lines[0]
    }
}

/// Runs `reader.py ARGS` to the end (killing it after [`PATIENCE`]).
pub fn run(python: &str, args: &[&str]) -> Finished {
    let child = Command::new(python)
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start reader.py");
    finish(child.id(), move || child.wait_with_output())
}

fn finish(pid: u32, wait: impl FnOnce() -> std::io::Result<Output> + Send + 'static) -> Finished {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(wait());
    });
    let output = match receiver.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for reader.py"),
        Err(_) => {
            let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
            // SAFETY: kill(2) only sends a signal; the child has not been reaped (its waiter
            // has not returned), so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("reader.py did not finish within {PATIENCE:?}");
        }
    };
    Finished {
        success: output.status.success(),
        lines: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
            })
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `reader.py ARGS` running, talking to the test line by line.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<serde_json::Value>,
    /// Everything it writes to stderr, once it has exited.
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(python: &str, args: &[&str]) -> Running {
        let mut child = Command::new(python)
            .arg(script())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reader.py");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        Running {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line it prints; fails the test after [`PATIENCE`].
    #[track_caller]
    pub fn next_line(&self) -> serde_json::Value {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("reader.py printed nothing within {PATIENCE:?}: {e}"))
    }

    /// Sends it one line on stdin.
    pub fn send_line(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .expect("write to reader.py");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit; whether it succeeded (what it said on stderr is passed on).
    pub fn succeeded(self) -> bool {
        let (success, stderr) = self.finish();
        eprint!("{stderr}");
        success
    }

    /// Waits for it to exit (killing it after [`PATIENCE`]): whether it succeeded, and what it
    /// wrote to stderr.
    pub fn finish(mut self) -> (bool, String) {
        drop(self.stdin.take());
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for reader.py") {
                break status;
            }
            if started.elapsed() > PATIENCE {
                // SAFETY: kill(2) only sends a signal; the child has not been reaped yet
                // (try_wait just said so), so the pid still names it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("reader.py did not finish within {PATIENCE:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stderr = self
            .stderr
            .take()
            .map(|reader| reader.join().expect("read reader.py's stderr"))
            .unwrap_or_default();
        (status.success(), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
