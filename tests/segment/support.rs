//! Child processes, segment names and /dev/shm inspection for the segment tests.

use crate::images::{ImageId, tagged_raster, verify_tagged};
use shmimage::segment::{Segment, SegmentConfig, SegmentName};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROLE_VAR: &str = "SHMIMAGE_TEST_ROLE";
const SEGMENT_VAR: &str = "SHMIMAGE_TEST_SEGMENT";
/// How long a parent waits for a line from a child before failing the test.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A segment name no other test, run or leftover uses: `s` + pid + counter + clock, at most 12
/// characters.
pub fn fresh_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "s{}{}{}",
        base36(std::process::id() as u64),
        base36(n as u64),
        base36(nanos as u64 % (36 * 36))
    );
    assert!(name.len() <= SegmentName::MAX_LEN, "{name}");
    name
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

pub fn config(name: &str, max_pixels: u64) -> SegmentConfig {
    SegmentConfig {
        name: SegmentName::new(name).unwrap(),
        max_pixels,
        label: format!("child {}", std::process::id()),
    }
}

pub fn attach(name: &str) -> Segment {
    Segment::attach(config(name, 100_000_000)).unwrap()
}

/// The objects of segment `name` in /dev/shm, sorted.
pub fn leftover_objects(name: &str) -> Vec<String> {
    let control = format!("shmimage.{name}");
    let data = format!("{control}.");
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| *n == control || n.starts_with(&data))
        .collect();
    names.sort();
    names
}

/// The paths of segment `name`'s data objects in /dev/shm, sorted.
pub fn data_object_paths(name: &str) -> Vec<String> {
    let control = format!("shmimage.{name}");
    leftover_objects(name)
        .into_iter()
        .filter(|object| *object != control)
        .map(|object| format!("/dev/shm/{object}"))
        .collect()
}

/// Cuts the file at `path` to `len` bytes, as a hostile or careless process could.
pub fn truncate(path: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .set_len(len)
        .unwrap_or_else(|e| panic!("truncate {path}: {e}"));
}

/// Takes the gate of segment `name` (an exclusive open-file-description lock on byte 0 of its
/// control object), as a process stopped inside attach or detach would hold it. Released when
/// the returned file is dropped.
pub fn hold_gate(name: &str) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmimage.{name}"))
        .unwrap();
    // SAFETY: `struct flock` is plain data; all-zero is valid (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 1;
    // SAFETY: `lock` is a valid `struct flock` for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    assert_eq!(rc, 0, "lock the gate: {}", std::io::Error::last_os_error());
    file
}

/// libfaketime, which makes a process see the wall clock shifted (Debian: apt-get install
/// faketime). Skipped, saying so, without it, unless `SHMIMAGE_REQUIRE_FAKETIME=1` (as in CI).
pub fn libfaketime() -> Option<&'static str> {
    const PATH: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if std::path::Path::new(PATH).exists() {
        return Some(PATH);
    }
    assert!(
        std::env::var_os("SHMIMAGE_REQUIRE_FAKETIME").is_none(),
        "libfaketime is required (SHMIMAGE_REQUIRE_FAKETIME is set) but missing: apt-get install faketime"
    );
    println!("skipped: no libfaketime here (apt-get install faketime)");
    None
}

/// Whether `strace` can run here. Tests that inject faults with it are skipped (saying so)
/// without it, unless `SHMIMAGE_REQUIRE_STRACE=1` (as in CI) makes that a failure.
pub fn strace_available() -> bool {
    let works = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !works {
        assert!(
            std::env::var_os("SHMIMAGE_REQUIRE_STRACE").is_none(),
            "strace is required (SHMIMAGE_REQUIRE_STRACE is set) but cannot run: apt-get install strace"
        );
        println!("skipped: strace cannot run here (apt-get install strace)");
    }
    works
}

/// Writes `bytes` at `offset` of segment `name`'s control object, as a hostile process would.
pub fn overwrite_control(name: &str, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmimage.{name}"))
        .unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// What a child process does.
#[derive(Debug, Clone)]
pub enum Role {
    /// Write image `id`, say `wrote ID`, then obey commands.
    WriteThenWait { id: u64 },
    /// Read, say `read ID` or `read none`, then obey commands.
    ReadThenWait,
    /// Read, say `read ID`, detach, exit.
    ReadOnce,
    /// Write image `id`, take the lock, say `holding the lock`, sleep until killed.
    WriteThenHoldLock { id: u64 },
    /// Take the lock, say `holding the lock`, release it at the next line on stdin, say
    /// `released`, exit.
    HoldLockUntilTold,
    /// Say `writing`, write images `first_id + k * step` (eight of them, in turn) until
    /// `run_for` passes, then say `writes N`. (Two large images instead of eight.)
    WriteLoop {
        first_id: u64,
        step: u64,
        run_for: Duration,
    },
    /// Read and verify until `run_for` passes, then say `reads ok N` (or exit 1 on a bad image).
    ReadLoop { run_for: Duration },
    /// In a 2 MiB /dev/shm: write a small image, fail to write a large one, read the small one.
    FullShm,
    /// Read once and say `read ID`, `read none`, `read small N` or `read failed: ERROR`; exit.
    TryRead,
    /// Try to attach; say `attached` (then obey commands) or `attach failed: ERROR` and exit.
    TryAttach,
    /// [`Role::TryRead`] in a process that accepts images of any number of pixels.
    TryReadWithoutPixelLimit,
}

impl Role {
    fn encode(&self) -> String {
        match self {
            Role::WriteThenWait { id } => format!("write-then-wait {id}"),
            Role::ReadThenWait => "read-then-wait".into(),
            Role::ReadOnce => "read-once".into(),
            Role::WriteThenHoldLock { id } => format!("write-then-hold-lock {id}"),
            Role::HoldLockUntilTold => "hold-lock-until-told".into(),
            Role::WriteLoop {
                first_id,
                step,
                run_for,
            } => format!("write-loop {first_id} {step} {}", run_for.as_millis()),
            Role::ReadLoop { run_for } => format!("read-loop {}", run_for.as_millis()),
            Role::FullShm => "full-shm".into(),
            Role::TryRead => "try-read".into(),
            Role::TryAttach => "try-attach".into(),
            Role::TryReadWithoutPixelLimit => "try-read-without-pixel-limit".into(),
        }
    }

    fn decode(text: &str) -> Role {
        let words: Vec<&str> = text.split(' ').collect();
        let num = |i: usize| words[i].parse::<u64>().unwrap();
        match words[0] {
            "write-then-wait" => Role::WriteThenWait { id: num(1) },
            "read-then-wait" => Role::ReadThenWait,
            "read-once" => Role::ReadOnce,
            "write-then-hold-lock" => Role::WriteThenHoldLock { id: num(1) },
            "hold-lock-until-told" => Role::HoldLockUntilTold,
            "write-loop" => Role::WriteLoop {
                first_id: num(1),
                step: num(2),
                run_for: Duration::from_millis(num(3)),
            },
            "read-loop" => Role::ReadLoop {
                run_for: Duration::from_millis(num(1)),
            },
            "full-shm" => Role::FullShm,
            "try-read" => Role::TryRead,
            "try-attach" => Role::TryAttach,
            "try-read-without-pixel-limit" => Role::TryReadWithoutPixelLimit,
            other => panic!("unknown role {other}"),
        }
    }
}

/// A child process running a [`Role`]. Killed (SIGKILL) and reaped on drop.
pub struct Child {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Child {
    pub fn spawn(name: &str, role: Role) -> Child {
        Child::spawn_wrapped(name, role, &[])
    }

    /// Like [`Child::spawn`], with the child run by `wrapper` (a program and its arguments,
    /// such as `strace ...`), which is given the child's command line after its own.
    pub fn spawn_wrapped(name: &str, role: Role, wrapper: &[&str]) -> Child {
        Child::spawn_with(name, role, wrapper, &[])
    }

    /// Like [`Child::spawn_wrapped`], with environment variables `envs` for the child.
    pub fn spawn_with(name: &str, role: Role, wrapper: &[&str], envs: &[(&str, &str)]) -> Child {
        let mut command = match wrapper.split_first() {
            None => child_command(),
            Some((program, args)) => {
                let inner = child_command();
                let mut command = Command::new(program);
                command
                    .args(args)
                    .arg(inner.get_program())
                    .args(inner.get_args());
                command
            }
        };
        let mut process = command
            .envs(envs.iter().copied())
            .env(ROLE_VAR, role.encode())
            .env(SEGMENT_VAR, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(said) = line.strip_prefix("child: ")
                    && tx.send(said.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let stdin = process.stdin.take();
        Child {
            process,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Waits for the child to say exactly `expected`; fails on anything else.
    pub fn expect(&mut self, expected: &str) {
        let said = self.next_line();
        assert_eq!(said, expected, "child {} said something else", self.pid());
    }

    /// Waits for the child to say something starting with `prefix` and returns the rest.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let said = self.next_line();
        said.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("child said {said:?}, expected \"{prefix}...\""))
            .to_owned()
    }

    /// Waits for the child to say `PREFIX N` and returns N.
    pub fn expect_number(&mut self, prefix: &str) -> u64 {
        let said = self.next_line();
        said.strip_prefix(prefix)
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("child said {said:?}, expected \"{prefix} N\""))
    }

    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(CHILD_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("child {} said nothing", self.pid()),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.process.wait().unwrap();
                panic!("child {} ended ({status}) without saying more", self.pid())
            }
        }
    }

    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        // SAFETY: plain system call; the pid is our own unreaped child, so it cannot have been
        // reused by another process.
        unsafe { libc::kill(self.process.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.process.wait();
    }

    /// Waits for a child that was told to exit, and checks it succeeded.
    pub fn wait(&mut self) {
        self.stdin = None;
        let status = self.process.wait().unwrap();
        assert!(status.success(), "child {} failed: {status}", self.pid());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            self.kill();
        }
    }
}

fn child_command() -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["child_process", "--exact", "--ignored", "--nocapture", "-q"]);
    command
}

/// Runs the `FullShm` role in a private mount namespace whose /dev/shm is a tmpfs of `size`.
/// `Err` says why that is not possible here.
pub fn run_in_small_dev_shm(name: &str, size: &str) -> Result<String, String> {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size={size} shmimage-test /dev/shm && exec \"$0\" child_process \
         --exact --ignored --nocapture -q"
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(exe)
        .env(ROLE_VAR, Role::FullShm.encode())
        .env(SEGMENT_VAR, name)
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !stdout.contains("child: ") {
        return Err(format!(
            "no private mount namespace with a small /dev/shm here ({}): {}",
            output.status,
            stderr.trim()
        ));
    }
    if !output.status.success() {
        panic!("the child in the small /dev/shm failed: {stdout}{stderr}");
    }
    Ok(stdout)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "child: {line}").unwrap();
    out.flush().unwrap();
}

fn say_read(segment: &Segment) {
    match segment.read().unwrap() {
        None => say("read none"),
        Some(stored) => match verify_tagged(&stored.raster) {
            Ok(id) => say(&format!("read {}", id.0)),
            Err(_) => say(&format!("read small {}", stored.raster.pixels().len())),
        },
    }
}

/// Obeys `read`, `write N`, `try-write N` (says `write failed: ERROR` instead of failing) and
/// `exit` from stdin until it closes.
fn obey_commands(segment: Segment) {
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["read"] => say_read(&segment),
            ["write", id] => {
                let id = id.parse().unwrap();
                segment.write(&tagged_raster(ImageId(id))).unwrap();
                say(&format!("wrote {id}"));
            }
            ["try-write", id] => {
                let id = id.parse().unwrap();
                match segment.write(&tagged_raster(ImageId(id))) {
                    Ok(_) => say(&format!("wrote {id}")),
                    Err(e) => say(&format!("write failed: {e}")),
                }
            }
            ["exit"] => {
                match segment.detach() {
                    Ok(last) => say(&format!("detached last={last}")),
                    Err(e) => say(&format!("detach failed: {e}")),
                }
                return;
            }
            _ => panic!("unknown command {line:?}"),
        }
    }
}

/// The body of a child process: runs the role its parent put in the environment.
pub fn run_child_role() {
    let (Ok(role), Ok(name)) = (std::env::var(ROLE_VAR), std::env::var(SEGMENT_VAR)) else {
        return;
    };
    let role = Role::decode(&role);
    if let Role::TryAttach = role {
        match Segment::attach(config(&name, 100_000_000)) {
            Ok(segment) => {
                say("attached");
                obey_commands(segment);
            }
            Err(e) => say(&format!("attach failed: {e}")),
        }
        return;
    }
    let max_pixels = match role {
        Role::TryReadWithoutPixelLimit => u64::MAX,
        _ => 100_000_000,
    };
    let segment = Segment::attach(config(&name, max_pixels)).unwrap();
    match role {
        Role::WriteThenWait { id } => {
            segment.write(&tagged_raster(ImageId(id))).unwrap();
            say(&format!("wrote {id}"));
            obey_commands(segment);
        }
        Role::ReadThenWait => {
            say_read(&segment);
            obey_commands(segment);
        }
        Role::ReadOnce => {
            say_read(&segment);
            segment.detach().unwrap();
        }
        Role::HoldLockUntilTold => {
            let held = segment.lock_for_test().unwrap();
            say("holding the lock");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            drop(held);
            say("released");
        }
        Role::TryRead | Role::TryReadWithoutPixelLimit => match segment.read() {
            Err(e) => say(&format!("read failed: {e}")),
            Ok(_) => say_read(&segment),
        },
        Role::TryAttach => unreachable!("handled before attaching"),
        Role::WriteThenHoldLock { id } => {
            segment.write(&tagged_raster(ImageId(id))).unwrap();
            let _held = segment.lock_for_test().unwrap();
            say("holding the lock");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Role::WriteLoop {
            first_id,
            step,
            run_for,
        } => {
            // Large images take long to generate: two of them are enough to alternate.
            let count = if first_id >= 10_000_000 { 2 } else { 8 };
            let images: Vec<_> = (0..count)
                .map(|k| tagged_raster(ImageId(first_id + k * step)))
                .collect();
            say("writing");
            let deadline = Instant::now() + run_for;
            let mut writes = 0u64;
            while Instant::now() < deadline {
                segment
                    .write(&images[writes as usize % images.len()])
                    .unwrap();
                writes += 1;
            }
            say(&format!("writes {writes}"));
        }
        Role::ReadLoop { run_for } => {
            let deadline = Instant::now() + run_for;
            let mut reads = 0u64;
            while Instant::now() < deadline {
                if let Some(stored) = segment.read().unwrap() {
                    if let Err(e) = verify_tagged(&stored.raster) {
                        say(&format!("torn: {e}"));
                        std::process::exit(1);
                    }
                    reads += 1;
                }
            }
            say(&format!("reads ok {reads}"));
        }
        Role::FullShm => {
            let small = tagged_raster(ImageId(1));
            segment.write(&small).unwrap();
            say("small ok");
            let large = tagged_raster(ImageId(1_000_000));
            match segment.write(&large) {
                Ok(_) => say("large written?!"),
                Err(e) => say(&format!("large refused: {e}")),
            }
            let stored = segment.read().unwrap().unwrap();
            if stored.raster == small {
                say("previous image intact");
            }
        }
    }
}
