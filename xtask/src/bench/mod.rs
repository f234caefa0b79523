//! Benchmarks: figures, not assertions. Each compares covobs against the named alternative in the
//! same run (baseline and observed runs interleaved, medians reported) and writes its figures to
//! target/bench/<name>.json as well as printing them.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

mod attach;
mod fleet;
mod guest;
pub mod kcov;
mod ocaml;
mod report;
mod scale;
mod snapshot;
mod watch;

pub fn run(which: &[String]) -> Result<()> {
    let all = which.is_empty();
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    if wants("watch") {
        watch::run()?;
    }
    if wants("attach") {
        attach::run()?;
    }
    if wants("ocaml") {
        ocaml::run()?;
    }
    if wants("snapshot") {
        snapshot::run()?;
    }
    if wants("kcov") {
        kcov::run()?;
    }
    if wants("report") {
        report::run()?;
    }
    if wants("scale") {
        scale::run()?;
    }
    if wants("guest") {
        guest::run()?;
    }
    if wants("fleet") {
        fleet::run()?;
    }
    Ok(())
}

pub fn covobs() -> PathBuf {
    crate::workspace_root().join("target/release/covobs")
}

pub fn fixture(name: &str) -> PathBuf {
    crate::fixtures::bin_dir().join(name)
}

/// Write a benchmark's figures next to the build.
pub fn save(name: &str, figures: &serde_json::Value) -> Result<()> {
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(figures)?)?;
    println!("  (figures saved to {})", path.display());
    Ok(())
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// A bench-target run started with `wait`: it has printed `ready` and waits for "go".
pub struct Workload {
    pub child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    pub fn start(bin: &str, mode: &str, secs: f64) -> Result<Self> {
        let mut child = Command::new(fixture(bin))
            .args([mode, &secs.to_string(), "wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("LLVM_PROFILE_FILE", "/tmp/covobs-bench-%p.profraw")
            .spawn()
            .with_context(|| format!("starting {bin} (cargo xtask fixtures)"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(10))?;
        if !ready.ends_with("ready") {
            bail!("{bin}: unexpected {ready:?}");
        }
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start the measured run and wait for its figures: ops per second.
    pub fn go(mut self, secs: f64) -> Result<f64> {
        writeln!(self.stdin, "go")?;
        self.stdin.flush()?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs_f64(secs + 30.0))
            .context("the workload did not finish")?;
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/covobs-bench-{}.profraw", self.child.id()));
        line.split_whitespace()
            .find_map(|f| f.strip_prefix("ops_per_sec="))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no ops_per_sec in {line:?}"))
    }
}

/// A covobs process whose stdout is JSON lines; waits until a line matches.
pub struct Observer {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Observer {
    pub fn start(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(covobs())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting covobs (cargo build --release)")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Wait for a JSON line whose `event` is `kind`; returns it.
    pub fn wait_for(&self, kind: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("covobs never reported {kind}"))?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["event"] == kind
            {
                return Ok(v);
            }
        }
    }

    /// Every JSON line until covobs exits.
    pub fn drain(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            if let Ok(v) = serde_json::from_str(&line) {
                out.push(v);
            }
        }
        out
    }

    /// SIGINT, as a user's Ctrl-C, then wait.
    pub fn stop(&mut self) {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}
