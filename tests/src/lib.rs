//! Support for covobs' integration tests: run the real `covobs` binary against real processes,
//! read its JSON events, drive test targets over stdin, and check the kernel for leftovers.
//!
//! The tests need root (they load eBPF programs). Without it they fail loudly; they never pass
//! without having run.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod built_session;
pub mod freeze;
pub mod ns;
pub mod third_party;
pub mod web;

/// Fail the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "covobs' integration tests load eBPF programs and must run as root (sudo ./dev test)"
    );
}

/// target/debug (or whichever profile built this test).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test binary lives in target/<profile>/deps")
}

/// The covobs binary built alongside the tests.
pub fn covobs_bin() -> PathBuf {
    let path = target_dir().join("covobs");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (./dev test does)",
        path.display()
    );
    path
}

/// A fixture built by `cargo xtask fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let path = root.join("target/fixtures/bin").join(name);
    assert!(
        path.exists(),
        "fixture {} is missing: run `cargo xtask fixtures` (./dev test does)",
        path.display()
    );
    path
}

/// A name no other test uses (comm-sized: at most 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = std::process::id() as u64 * 1000
        + (Instant::now().elapsed().as_nanos() as u64 % 1000)
        + COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = format!("{prefix}{:x}", n % 0xfffff);
    name.truncate(15);
    name
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "covobs-test-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // COVOBS_KEEP_FAILED=1 keeps a failed test's directory to look at.
        if thread::panicking() && std::env::var_os("COVOBS_KEEP_FAILED").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copy an executable under another name (so its comm is unique to one test).
///
/// The copy is written by a `cp` process, never through a descriptor of this one: a fork by
/// another test thread while this process held the copy open for writing would keep that
/// descriptor until its exec, and an exec of the copy meanwhile (say by `nsenter`, whose
/// failure this process cannot retry) fails with "Text file busy".
pub fn copy_as(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    let status = Command::new("cp")
        .arg("--")
        .arg(bin)
        .arg(&dst)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {}: {status}",
        bin.display(),
        dst.display()
    );
    dst
}

/// A running `covobs` whose stdout is JSON lines.
pub struct Covobs {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    events: Vec<Value>,
    stderr_seen: Vec<String>,
    status: Option<ExitStatus>,
}

impl Covobs {
    pub fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(covobs_bin());
        cmd.args(args);
        Self::spawn(cmd)
    }

    /// Run covobs through a command of the test's own (in a namespace, from another directory).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn covobs");
        let lines = pump(child.stdout.take().expect("stdout"));
        let stderr = pump(child.stderr.take().expect("stderr"));
        Self {
            child,
            lines,
            stderr,
            events: Vec::new(),
            stderr_seen: Vec::new(),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn take_available(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.push_line(line);
        }
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
    }

    fn push_line(&mut self, line: String) {
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => self.events.push(v),
            Err(_) => self.stderr_seen.push(format!("(stdout, not JSON) {line}")),
        }
    }

    /// Wait for the first event (seen so far or arriving) that matches; panics with everything
    /// seen on timeout.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            self.take_available();
            if let Some(v) = self.events[checked..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            checked = self.events.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.push_line(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.take_available();
                    if let Some(v) = self.events.iter().find(|v| pred(v)) {
                        return v.clone();
                    }
                    self.fail(&format!("covobs exited while waiting for {what}"));
                }
            }
        }
    }

    /// Every event seen so far.
    pub fn events(&mut self) -> &[Value] {
        self.take_available();
        &self.events
    }

    pub fn stderr(&mut self) -> String {
        self.take_available();
        self.stderr_seen.join("\n")
    }

    /// Wait until covobs printed a line containing `needle` on stderr (panics after `timeout`).
    pub fn wait_stderr(&mut self, timeout: Duration, needle: &str) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "covobs never said {needle:?}: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to covobs.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for covobs to exit (panics after `timeout`), then collect its remaining output.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipes close when it exits: read them to the end.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.push_line(line);
                }
                while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
                    self.stderr_seen.push(line);
                }
                self.status = Some(status);
                return status;
            }
            if Instant::now() > deadline {
                self.fail(&format!("covobs did not exit within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        self.take_available();
        // The last ones only: a load test's hundreds of thousands would bury the reason.
        const SHOWN: usize = 200;
        let skip = self.events.len().saturating_sub(SHOWN);
        let events: Vec<String> = self
            .events
            .iter()
            .skip(skip)
            .map(Value::to_string)
            .collect();
        let stderr = self.stderr_seen.join("\n");
        let _ = self.child.kill();
        panic!(
            "{why}\n--- covobs events ({}, the last {} shown):\n{}\n--- covobs stderr:\n{stderr}",
            self.events.len(),
            events.len(),
            events.join("\n")
        );
    }

    /// The BPF programs and links this covobs holds now, as the kernel reports them in
    /// /proc/PID/fdinfo (independent of what covobs says about itself).
    pub fn bpf_ids(&self) -> BpfIds {
        bpf_ids_of(self.pid())
    }
}

impl Drop for Covobs {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pump(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// BPF object ids held through file descriptors by a process.
#[derive(Debug, Default, Clone)]
pub struct BpfIds {
    pub programs: Vec<u32>,
    pub links: Vec<u32>,
    pub maps: Vec<u32>,
}

pub fn bpf_ids_of(pid: i32) -> BpfIds {
    let mut ids = BpfIds::default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        if let Some(id) = field("link_id:") {
            ids.links.push(id);
        } else if let Some(id) = field("prog_id:") {
            ids.programs.push(id);
        } else if let Some(id) = field("map_id:") {
            ids.maps.push(id);
        }
    }
    ids.programs.sort_unstable();
    ids.links.sort_unstable();
    ids.maps.sort_unstable();
    ids
}

/// Whether the kernel still has a BPF object (`prog`, `link` or `map`) with this id.
pub fn bpf_object_exists(kind: &str, id: u32) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bpftool (a Debian package the set-up installs)")
        .success()
}

/// Assert that none of these BPF objects exists any more (all detached and freed).
pub fn assert_all_freed(ids: &BpfIds) {
    // Freeing is asynchronous (RCU, deferred work): give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = ids
            .programs
            .iter()
            .filter(|id| bpf_object_exists("prog", **id))
            .map(|id| format!("prog {id}"))
            .chain(
                ids.links
                    .iter()
                    .filter(|id| bpf_object_exists("link", **id))
                    .map(|id| format!("link {id}")),
            )
            .chain(
                ids.maps
                    .iter()
                    .filter(|id| bpf_object_exists("map", **id))
                    .map(|id| format!("map {id}")),
            )
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "BPF objects left behind after covobs exited: {}",
            left.join(", ")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A test target driven line by line over stdin/stdout.
pub struct Driven {
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Driven {
    pub fn start(cmd: &mut Command) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // A binary copied a moment ago can be "busy": another test thread's fork may still hold
        // the copy's write descriptor until it execs. That passes within milliseconds.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("spawn target"),
            }
        };
        let stdin = child.stdin.take().expect("stdin");
        let lines = pump(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line of output (panics after 20 s).
    pub fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the target did not answer within 20 s")
    }

    /// The next line of output, or None when none came within `timeout` or the output ended.
    pub fn try_line(&mut self, timeout: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// Send a command and return the target's one-line answer.
    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to target");
        self.stdin.flush().expect("flush target stdin");
        self.line()
    }

    pub fn send(&mut self, command: &str) {
        let _ = writeln!(self.stdin, "{command}");
        let _ = self.stdin.flush();
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for target")
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Convenience accessors on JSON events.
pub trait EventExt {
    fn kind(&self) -> &str;
    fn u(&self, field: &str) -> u64;
    fn s(&self, field: &str) -> &str;
}

impl EventExt for Value {
    fn kind(&self) -> &str {
        self["event"].as_str().unwrap_or("")
    }
    fn u(&self, field: &str) -> u64 {
        self[field].as_u64().unwrap_or(u64::MAX)
    }
    fn s(&self, field: &str) -> &str {
        self[field].as_str().unwrap_or("")
    }
}

/// Start a fixture that announces itself with `<name> pid=<pid> ready` and wait for that line.
pub fn start_fixture(name: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Driven {
    start_program(&fixture(name), args, env, cwd)
}

/// Start a program (a fixture, or a renamed copy of one) and wait for its `ready` line.
pub fn start_program(path: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Driven {
    let mut cmd = Command::new(path);
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut target = Driven::start(&mut cmd);
    let line = target.line();
    assert!(
        line.ends_with(&format!("pid={} ready", target.pid())),
        "unexpected first line {line:?}"
    );
    target
}

/// The matching LLVM tools of an LLVM fixture (written by `cargo xtask fixtures`).
pub struct LlvmTools {
    pub profdata: PathBuf,
    pub cov: PathBuf,
    pub objects: Vec<PathBuf>,
    pub major: u64,
}

/// The raw profile version the profile runtime of an LLVM major writes (compiler-rt's
/// INSTR_PROF_RAW_VERSION), for the majors of the fixtures: Debian's clang 14, the older Rust
/// toolchains' LLVM 18 and 19 (fixtures/llvm-rust-target/older-toolchains), the pinned one's.
pub fn raw_profile_version(llvm_major: u64) -> u64 {
    match llvm_major {
        14 => 8,
        18 => 9,
        19 => 10,
        m if m >= 22 => 11,
        m => panic!(
            "no fixture is built with LLVM {m}: which raw profile version it writes is not known here"
        ),
    }
}

pub fn llvm_tools(fixture_name: &str) -> LlvmTools {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/fixtures/llvm-fixtures.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e} (run cargo xtask fixtures)", manifest.display()));
    let all: Value = serde_json::from_str(&text).expect("llvm-fixtures.json");
    let f = &all[fixture_name];
    let path = |k: &str| {
        PathBuf::from(
            f[k].as_str()
                .unwrap_or_else(|| panic!("{k} of {fixture_name}")),
        )
    };
    LlvmTools {
        profdata: path("llvm_profdata"),
        cov: path("llvm_cov"),
        objects: f["objects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
        major: f["llvm_major"].as_u64().unwrap_or(0),
    }
}

/// Run a command to completion, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Events of one kind.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e.kind() == kind).collect()
}

mod session;
pub use session::*;

/// The raw profiles appended one after the other in a plain-named LLVM profile file.
pub fn split_profiles(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let p = covobs::runtimes::llvm::raw::parse(&bytes[at..], false)
            .unwrap_or_else(|e| panic!("profile at byte {at}: {e}"));
        let end = at + p.total_size as usize;
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}

/// The whole profiles in a profile file its process may still be appending to: a profile being
/// written at the end (its header or sections not all there yet) is left for a later read. Once
/// the writer has stopped, use [`split_profiles`], which refuses a partial profile.
pub fn complete_profiles(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Ok(p) = covobs::runtimes::llvm::raw::parse(&bytes[at..], false) else {
            break;
        };
        let end = at + p.total_size as usize;
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}
