//! Running `shmimage` commands: to completion with a deadline, or in the background (`watch`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may run before the test gives up on it.
pub const COMMAND_PATIENCE: Duration = Duration::from_secs(45);

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Fails the test unless the command succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "the command failed with {}; stderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout_text()
        );
        self
    }

    /// Fails the test unless the command failed; returns its stderr.
    #[track_caller]
    pub fn assert_failure(&self) -> &str {
        assert!(
            !self.status.success(),
            "the command should have failed; stdout:\n{}\nstderr:\n{}",
            self.stdout_text(),
            self.stderr
        );
        assert_eq!(
            self.status.code(),
            Some(1),
            "a refused command exits with status 1; stderr:\n{}",
            self.stderr
        );
        &self.stderr
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_shmimage")
}

/// Runs `shmimage ARGS` with `stdin` as its standard input (none if `None`) and waits for it,
/// killing it after [`COMMAND_PATIENCE`].
pub fn run(args: &[&str], stdin: Option<Vec<u8>>) -> Finished {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SHMIMAGE_SEGMENT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shmimage binary");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        thread::spawn(move || {
            // The command may stop reading early (a refused upload): that is its right.
            let _ = pipe.write_all(&bytes);
        });
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_deadline(&mut child, COMMAND_PATIENCE)
        .unwrap_or_else(|| panic!("shmimage {args:?} did not finish within {COMMAND_PATIENCE:?}"));
    Finished {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Waits for `child` at most `patience`; kills it and returns `None` when it takes longer.
pub fn wait_with_deadline(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        match child.try_wait().expect("wait for the command") {
            Some(status) => return Some(status),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A file in a fresh folder under the target directory, for one test.
pub fn scratch_file(test: &str, name: &str) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cli-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("create a scratch folder");
    folder.join(name)
}

/// `shmimage watch ARGS` running in the background, its lines read as they come.
pub struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    /// The read end of its stdout, while the test keeps it (see [`Watcher::spawn_unread`]).
    stdout: Option<ChildStdout>,
}

impl Watcher {
    /// Starts `shmimage watch ARGS` and waits until it is attached: until the segment lists a
    /// process labelled `shmimage watch` (checked with `attached`).
    pub fn spawn(args: &[&str]) -> Watcher {
        let mut watcher = Watcher::start(args);
        let stdout = watcher.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        watcher.lines = lines;
        watcher
    }

    /// Starts `shmimage watch ARGS` with its stdout piped to this test, which reads nothing
    /// until [`Watcher::close_stdout`].
    pub fn spawn_unread(args: &[&str]) -> Watcher {
        Watcher::start(args)
    }

    fn start(args: &[&str]) -> Watcher {
        let mut child = Command::new(binary())
            .arg("watch")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SHMIMAGE_SEGMENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shmimage watch");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take();
        let (_, lines) = mpsc::channel();
        Watcher {
            child,
            lines,
            stderr: Some(stderr),
            stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line it printed, parsed as JSON; fails the test if none comes within
    /// [`COMMAND_PATIENCE`].
    #[track_caller]
    pub fn next_json(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(COMMAND_PATIENCE)
            .unwrap_or_else(|e| panic!("shmimage watch printed no line within the deadline: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
    }

    /// Whether it printed another line within `wait`.
    pub fn printed_within(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Closes the test's end of its stdout, as `head -n 1` does once it has its line.
    pub fn close_stdout(&mut self) {
        drop(self.stdout.take());
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) only sends a signal; `pid` is our own child, not yet reaped (it is
        // reaped only in `finish`, which takes `self`), so the pid cannot have been reused.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// Waits for it to exit (killing it after [`COMMAND_PATIENCE`]); its status and stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = wait_with_deadline(&mut self.child, COMMAND_PATIENCE)
            .unwrap_or_else(|| panic!("shmimage watch did not exit within {COMMAND_PATIENCE:?}"));
        let stderr = self
            .stderr
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
