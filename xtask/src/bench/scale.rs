//! Scale of attach: many processes of one binary. For 10, 100 and 1000 stopped copies of
//! llvm-rust-target: how long covobs takes to adopt them all (first `target` event to the last
//! `runtime_found`), its peak RSS and descriptors, and how long its stop takes (every probe
//! released, the session written), next to the time the same processes took to start, in the
//! same run. Goals (issue 14): 1000 adopted in under 1 s, under 50 MB for 100.
//!
//! The copies are stopped (SIGSTOP) once each says ready (its SIGUSR2 handler installed), and stay
//! stopped: even paused, a copy wakes every 2 ms on three threads, and 1000 of them continued
//! saturate a 2-core machine (load average 1700 seen here, a stop of minutes), which measures the
//! machine, not covobs. So their last dumps at stop are lost after --dump-timeout, by design.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The last dump at stop of a copy that stays stopped is reported lost after this long: the stop
/// figure is covobs' own (every probe released, the session written) plus this wait.
const DUMP_TIMEOUT: &str = "2s";
/// How long each attach runs once every process is adopted.
const HOLD: Duration = Duration::from_secs(2);

struct Figures {
    processes: usize,
    started_s: f64,
    adopted_s: f64,
    stop_s: f64,
    rss_mb: f64,
    descriptors_peak: u64,
}

fn one(n: usize) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!("covobs-bench-scale-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let name = format!("scale{n}");
    let exe = dir.join(&name);
    std::fs::copy(super::fixture("llvm-rust-target"), &exe)
        .context("llvm-rust-target (cargo xtask fixtures)")?;
    // Paused: the copies sleep, so the figures are covobs', not a saturated machine's.
    let pause = dir.join("pause");
    std::fs::write(&pause, b"")?;
    let started = Instant::now();
    let mut targets: Vec<Child> = Vec::with_capacity(n);
    for _ in 0..n {
        let child = Command::new(&exe)
            .arg("--pause-file")
            .arg(&pause)
            .env("LLVM_PROFILE_FILE", dir.join("p%p.profraw"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                // Stopped only once it says ready: before that its SIGUSR2 handler may not be
                // installed yet, and covobs rightly refuses a process the signal would kill.
                let ready = c.stdout.take().and_then(|out| {
                    let mut line = String::new();
                    BufReader::new(out).read_line(&mut line).ok()?;
                    line.ends_with("ready\n").then_some(())
                });
                // SAFETY: kill on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGSTOP) };
                targets.push(c);
                if ready.is_none() {
                    stop_all(&mut targets);
                    bail!("copy {} of {n} did not say ready", targets.len());
                }
            }
            Err(e) => {
                stop_all(&mut targets);
                bail!("starting copy {} of {n}: {e}", targets.len() + 1);
            }
        }
    }
    let started_s = started.elapsed().as_secs_f64();
    let out = dir.join("out");
    let result = attach(n, &name, &out);
    stop_all(&mut targets);
    let (adopted_s, stop_s) = result?;
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("session.json"))?)?;
    let res = &session["resources"];
    let figures = Figures {
        processes: n,
        started_s,
        adopted_s,
        stop_s,
        rss_mb: res["rss_peak_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
        descriptors_peak: res["descriptors_peak"].as_u64().unwrap_or(0),
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

/// Attach by name until all `n` are adopted, then HOLD, then stop: (adoption s, stop s).
fn attach(n: usize, name: &str, out: &std::path::Path) -> Result<(f64, f64)> {
    let mut covobs = Command::new(super::covobs())
        .args(["attach", "--json", "--no-report", "--name", name])
        .args(["--dump-timeout", DUMP_TIMEOUT, "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting covobs (cargo build --release)")?;
    let stdout = covobs.stdout.take().context("stdout")?;
    // Read to the end on a thread of its own: a closed pipe would end covobs with EPIPE.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut first: Option<u64> = None;
    let mut last: Option<u64> = None;
    let mut found = 0;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let ts = v["ts_ns"].as_u64().unwrap_or(0);
        match v["event"].as_str() {
            Some("target") => {
                first = Some(first.map_or(ts, |f| f.min(ts)));
            }
            Some("runtime_found") => {
                found += 1;
                last = Some(last.map_or(ts, |l| l.max(ts)));
                if found == n {
                    break;
                }
            }
            _ => {}
        }
    }
    if found < n {
        let _ = covobs.kill();
        let _ = covobs.wait();
        bail!("covobs adopted {found} of {n} processes");
    }
    std::thread::sleep(HOLD);
    let stopping = Instant::now();
    // SAFETY: kill on our own child.
    unsafe { libc::kill(covobs.id() as i32, libc::SIGINT) };
    let status = covobs.wait()?;
    let stop_s = stopping.elapsed().as_secs_f64();
    if !status.success() {
        bail!("covobs exited with {status}");
    }
    let adopted = match (first, last) {
        (Some(f), Some(l)) => l.saturating_sub(f) as f64 / 1e9,
        _ => f64::NAN,
    };
    Ok((adopted, stop_s))
}

fn stop_all(targets: &mut [Child]) {
    for t in targets.iter_mut() {
        let _ = t.kill();
    }
    for t in targets.iter_mut() {
        let _ = t.wait();
    }
}

pub fn run() -> Result<()> {
    println!("scale: many processes of one binary (stopped copies of llvm-rust-target)");
    let mut rows = Vec::new();
    for n in [10, 100, 1000] {
        let f = one(n)?;
        println!(
            "  {:>5} processes: started in {:.2} s; covobs adopted them in {:.3} s (goal for 1000: < 1 s), peak RSS {:.1} MB (goal for 100: < 50 MB), {} descriptors at most; its stop (last dumps lost after {DUMP_TIMEOUT}, every probe released, session written) {:.2} s",
            f.processes, f.started_s, f.adopted_s, f.rss_mb, f.descriptors_peak, f.stop_s
        );
        rows.push(serde_json::json!({
            "processes": f.processes,
            "started_s": f.started_s,
            "adopted_s": f.adopted_s,
            "stop_s": f.stop_s,
            "rss_peak_mb": f.rss_mb,
            "descriptors_peak": f.descriptors_peak,
        }));
    }
    super::save("scale", &serde_json::json!({ "runs": rows }))
}
