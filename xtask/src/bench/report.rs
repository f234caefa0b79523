//! The report stage at scale, on `snapshot-bench-target` (about a million LLVM counters): a
//! session of N successive states of one process (its runtime's real dump, then counters grown
//! artifact after artifact: a process that kept running), reported by covobs' engine
//! (`covobs report`) and, in the same run, by llvm-profdata + llvm-cov export of the same states
//! at every point (`covobs report --llvm-cov`). Two kinds of sessions: every counter grows at
//! every artifact (the worst case: every function ran between two points), and 1% of the
//! counters grow (some code ran). Figures: whole-report time, per point (whole / points), per
//! added point ((whole - whole of a one-artifact session) / (points - 1): what a timeline point
//! costs once the module's mapping is read and without the end report's line detail), peak
//! memory (max RSS of covobs and what it ran). Sizes: 20, 100 and 1000 artifacts, or
//! `COVOBS_BENCH_REPORT_SIZES=20,100`; `COVOBS_BENCH_REPORT_TOOLS_MAX` (default 100) is the
//! largest session also reported with llvm-cov (1000 points of llvm-cov take about half an hour
//! here).
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{covobs, fixture, save};

const TARGET: &str = "snapshot-bench-target";

/// One dump of the fixture, by its own runtime.
fn real_dump(dir: &Path) -> Result<Vec<u8>> {
    let file = dir.join("runtime.profraw");
    let mut child = Command::new(fixture(TARGET))
        .arg("dump")
        .env("LLVM_PROFILE_FILE", &file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {TARGET} (cargo xtask fixtures)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.trim_end().ends_with("ready") {
        bail!("{TARGET}: unexpected {line:?}");
    }
    writeln!(stdin, "dump")?;
    stdin.flush()?;
    line.clear();
    out.read_line(&mut line)?;
    if !line.contains("ret=0") {
        bail!("{TARGET}: dump failed: {line:?}");
    }
    writeln!(stdin, "quit")?;
    let _ = child.wait();
    Ok(std::fs::read(&file)?)
}

/// Where the counters of a version-8 raw profile are (header words: binary ids size, data
/// records, padding before the counters, counters).
fn counters_range(p: &[u8]) -> Result<std::ops::Range<usize>> {
    let w = |i: usize| -> Result<usize> {
        let b: [u8; 8] = p
            .get(i * 8..i * 8 + 8)
            .context("short profile")?
            .try_into()?;
        Ok(u64::from_le_bytes(b) as usize)
    };
    if w(1)? & 0xff != 8 {
        bail!("{TARGET}: expected raw profile version 8");
    }
    let start = 11 * 8 + w(2)? + w(3)? * 48 + w(4)?;
    Ok(start..start + w(5)? * 8)
}

/// Which counters grow from one artifact to the next.
#[derive(Clone, Copy)]
enum Grow {
    /// Every counter, by one.
    All,
    /// A window of 1% of the counters, somewhere else each time.
    Some,
}

impl Grow {
    fn describe(self) -> &'static str {
        match self {
            Grow::All => "every counter grows at every artifact",
            Grow::Some => "1% of the counters grow at every artifact",
        }
    }
}

/// A session of `n` states of one process, laid out as `covobs attach` writes it.
fn session(dir: &Path, base: &[u8], n: usize, grow: Grow) -> Result<()> {
    let bin = fixture(TARGET);
    let copy = format!("modules/bench/{TARGET}");
    std::fs::create_dir_all(dir.join("modules/bench"))?;
    std::fs::copy(&bin, dir.join(&copy))?;
    let pdir = dir.join("4242-bench");
    std::fs::create_dir_all(&pdir)?;
    let range = counters_range(base)?;
    let mut state = base.to_vec();
    for k in 1..=n {
        // The process ran on: its counters grew.
        let counters = state[range.clone()].as_chunks_mut::<8>().0;
        let window = match grow {
            Grow::All => 0..counters.len(),
            Grow::Some => {
                let len = counters.len() / 100;
                let at = (k * 7919) % (counters.len() - len).max(1);
                at..at + len
            }
        };
        for c in &mut counters[window] {
            *c = (u64::from_le_bytes(*c) + 1).to_le_bytes();
        }
        let stem = format!("{k:06}-llvm");
        std::fs::write(pdir.join(format!("{stem}.profraw")), &state)?;
        let meta = serde_json::json!({
            "seq": k, "runtime": "llvm", "pid": 4242, "tid": 4242, "comm": "bench",
            "trigger": "snapshot", "end_ns": k as u64 * 1_000_000, "valid": true,
            "file": format!("{stem}.profraw"), "process_start_ns": 1,
            "format": {"name": "llvm-raw-profile", "version": 8},
            "module": {"path": bin.to_string_lossy(), "build_id": "bench", "copy": copy,
                       "producer": "Debian clang version 14.0.6", "llvm_major": 14},
        });
        std::fs::write(pdir.join(format!("{stem}.json")), meta.to_string())?;
    }
    Ok(())
}

/// What one report took.
struct Took {
    /// Wall-clock seconds.
    secs: f64,
    /// CPU seconds (user and system) of covobs and its children: what the wall clock shows on
    /// a machine of its own (this one may be shared).
    cpu: f64,
    /// Peak RSS in MiB of covobs and its children.
    peak: f64,
}

/// `covobs report` of a session.
fn report(dir: &Path, tools: bool) -> Result<Took> {
    let _ = std::fs::remove_dir_all(dir.join("report"));
    let mut cmd = Command::new(covobs());
    cmd.args(["report", "--format", "json"]).arg(dir);
    if tools {
        cmd.arg("--llvm-cov");
    }
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running covobs (cargo build --release -p covobs)")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers to locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("covobs report of {} failed ({status})", dir.display());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // ru_maxrss: KiB, the largest of covobs and the children it waited for (llvm-cov).
    Ok(Took {
        secs,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// The machine's load average (1, 5, 15 minutes), for reading wall-clock figures of a shared
/// machine: "?" where it cannot be read.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub fn run() -> Result<()> {
    println!("== report: covobs' engine vs llvm-profdata + llvm-cov export, {TARGET}");
    println!(
        "  ({} cores, load average {}: wall-clock figures on a busy machine run long; cpu figures less so)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load()
    );
    let tmp = std::env::temp_dir().join(format!("covobs-bench-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let base = real_dump(&tmp)?;
    let tools_max = sizes("COVOBS_BENCH_REPORT_TOOLS_MAX", &[100])[0];
    let mut rows = Vec::new();
    for grow in [Grow::All, Grow::Some] {
        println!("  -- {}", grow.describe());
        // What does not depend on the number of points: the mapping, the end report's detail.
        let dir = tmp.join("session-1");
        session(&dir, &base, 1, grow)?;
        let one = report(&dir, false)?;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "      1 artifact   engine:   whole {:8.2} s (cpu {:7.2} s)  peak {:7.0} MiB",
            one.secs, one.cpu, one.peak
        );
        for n in sizes("COVOBS_BENCH_REPORT_SIZES", &[20, 100, 1000]) {
            let dir = tmp.join(format!("session-{n}"));
            session(&dir, &base, n, grow)?;
            let e = report(&dir, false)?;
            let per = |t: f64| t * 1000.0 / n as f64;
            let added = |t: f64, one: f64| (t - one).max(0.0) * 1000.0 / (n.max(2) - 1) as f64;
            println!(
                "  {n:>5} artifacts  engine:   whole {:8.2} s (cpu {:7.2} s)  per point {:8.1} ms  per added point {:8.1} ms (cpu {:6.1} ms)  peak {:7.0} MiB",
                e.secs,
                e.cpu,
                per(e.secs),
                added(e.secs, one.secs),
                added(e.cpu, one.cpu),
                e.peak
            );
            let mut row = serde_json::json!({
                "artifacts": n,
                "grow": grow.describe(),
                "engine": {"whole_s": e.secs, "cpu_s": e.cpu, "per_point_ms": per(e.secs),
                           "per_added_point_ms": added(e.secs, one.secs),
                           "per_added_point_cpu_ms": added(e.cpu, one.cpu),
                           "one_artifact_s": one.secs, "peak_mib": e.peak},
            });
            // llvm-cov's cost does not depend on what grew: once is enough.
            if matches!(grow, Grow::All) && n <= tools_max {
                let t = report(&dir, true)?;
                println!(
                    "  {n:>5} artifacts  llvm-cov: whole {:8.2} s (cpu {:7.2} s)  per point {:8.1} ms  peak {:7.0} MiB  ({:.0}x the engine's time)",
                    t.secs,
                    t.cpu,
                    per(t.secs),
                    t.peak,
                    t.secs / e.secs
                );
                row["llvm_cov"] = serde_json::json!({
                    "whole_s": t.secs, "cpu_s": t.cpu, "per_point_ms": per(t.secs), "peak_mib": t.peak,
                });
            } else if matches!(grow, Grow::All) {
                println!(
                    "  {n:>5} artifacts  llvm-cov: not run (sessions over COVOBS_BENCH_REPORT_TOOLS_MAX={tools_max} artifacts; its per point does not shrink with more)"
                );
            }
            rows.push(row);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!("  (load average at the end {})", load());
    let _ = std::fs::remove_dir_all(&tmp);
    save(
        "report",
        &serde_json::json!({ "target": TARGET, "sessions": rows }),
    )
}
