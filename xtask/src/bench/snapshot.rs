//! Snapshots from memory, on `snapshot-bench-target` (about a million LLVM counters, 8 MiB):
//! (1) how long a snapshot takes and its throughput, next to the time the target's own
//! `__llvm_profile_write_file` takes for the same counters, in the same run (interleaved); (2) the
//! target's throughput while `covobs attach --mode snapshot` reads it every 100 ms vs not at all.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Observer, Workload, covobs, fixture, median, save};

const TARGET: &str = "snapshot-bench-target";
const SAMPLES: usize = 10;
const SECS: f64 = 3.0;
const ROUNDS: usize = 3;

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Interleaved: the runtime's own dump, then `covobs snapshot`, SAMPLES times, same counters.
fn snapshot_vs_dump() -> Result<serde_json::Value> {
    let tmp = std::env::temp_dir().join(format!("covobs-bench-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let own = tmp.join("runtime.profraw");
    let mut child = Command::new(fixture(TARGET))
        .arg("dump")
        .env("LLVM_PROFILE_FILE", &own)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {TARGET} (cargo xtask fixtures)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = lines.recv_timeout(Duration::from_secs(120))?;
    if !ready.ends_with("ready") {
        bail!("{TARGET}: unexpected {ready:?}");
    }
    let pid = child.id().to_string();
    let (mut dump_ms, mut read_ms, mut cmd_ms, mut gbps) = (vec![], vec![], vec![], vec![]);
    let (mut counters, mut read_bytes, mut snap_bytes) = (0, 0, 0);
    for i in 0..SAMPLES {
        writeln!(stdin, "dump")?;
        stdin.flush()?;
        let line = lines.recv_timeout(Duration::from_secs(60))?;
        let ns = field(&line, "dump_ns").ok_or_else(|| anyhow!("{TARGET}: {line:?}"))?;
        if field(&line, "ret") != Some(0.0) {
            bail!("{TARGET}: the runtime's dump failed: {line}");
        }
        dump_ms.push(ns / 1e6);

        let out = tmp.join(format!("snapshot-{i}.profraw"));
        let started = Instant::now();
        let o = Command::new(covobs())
            .args(["snapshot", "--json", "--pid", &pid, "--out"])
            .arg(&out)
            .output()
            .context("running covobs snapshot (cargo build --release)")?;
        cmd_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if !o.status.success() {
            bail!("covobs snapshot: {}", String::from_utf8_lossy(&o.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let s = &v[0]["snapshot"];
        let ns = (s["read"]["end_ns"].as_f64().unwrap_or(0.0)
            - s["read"]["start_ns"].as_f64().unwrap_or(0.0))
        .max(1.0);
        read_bytes = s["read"]["bytes"].as_u64().unwrap_or(0);
        counters = s["counters"].as_u64().unwrap_or(0);
        snap_bytes = v[0]["bytes"].as_u64().unwrap_or(0);
        read_ms.push(ns / 1e6);
        gbps.push(read_bytes as f64 / ns);
        std::fs::remove_file(&out)?;
    }
    writeln!(stdin, "quit")?;
    let _ = child.wait();
    // The runtime appended one profile per dump: same size as each snapshot of the same counters.
    let own_len = std::fs::metadata(&own)?.len();
    let _ = std::fs::remove_dir_all(&tmp);
    if own_len != snap_bytes * SAMPLES as u64 {
        bail!(
            "the runtime wrote {own_len} bytes in {SAMPLES} dumps, covobs {snap_bytes} per snapshot"
        );
    }
    let (d, r, c, g) = (
        median(&mut dump_ms),
        median(&mut read_ms),
        median(&mut cmd_ms),
        median(&mut gbps),
    );
    println!(
        "  {counters} counters ({read_bytes} bytes), profile {snap_bytes} bytes, {SAMPLES} interleaved samples, medians:"
    );
    println!(
        "    process_vm_readv of the counters      {r:>9.3} ms  ({g:.2} GB/s)   = {:.3}x the runtime's dump",
        r / d
    );
    println!(
        "    covobs snapshot command, whole        {c:>9.3} ms                  = {:.2}x (process start, ELF scan of the 80 MB binary, read, write, fsync)",
        c / d
    );
    println!("    the target's __llvm_profile_write_file {d:>8.3} ms");
    Ok(serde_json::json!({
        "counters": counters, "counter_bytes": read_bytes, "profile_bytes": snap_bytes,
        "samples": SAMPLES,
        "read_ms": r, "read_gb_per_s": g, "command_ms": c, "runtime_dump_ms": d,
        "read_over_dump": r / d, "command_over_dump": c / d,
        "runs": {"read_ms": read_ms, "command_ms": cmd_ms, "runtime_dump_ms": dump_ms},
    }))
}

/// One measured run; with `attached`, the per-snapshot figures covobs reported.
fn throughput_once(attached: bool) -> Result<(f64, Vec<f64>, Vec<f64>)> {
    let w = Workload::start(TARGET, "cpu", SECS)?;
    let pid = w.pid().to_string();
    let tmp =
        std::env::temp_dir().join(format!("covobs-bench-snaptp-{}-{pid}", std::process::id()));
    let observer = if attached {
        let o = Observer::start(&[
            "attach",
            "--mode",
            "snapshot",
            "--pid",
            &pid,
            "--interval",
            "100ms",
            "--json",
            "--no-report",
            "--out",
            tmp.to_str().unwrap_or_default(),
        ])?;
        o.wait_for("runtime_found", Duration::from_secs(60))?;
        Some(o)
    } else {
        None
    };
    let ops = w.go(SECS)?;
    let (mut reads, mut end_to_end) = (Vec::new(), Vec::new());
    if let Some(mut o) = observer {
        o.stop();
        let events = o.drain();
        for e in &events {
            if e["event"] == "snapshot" && e["trigger"] == "snapshot" {
                reads.push(e["read_ns"].as_f64().unwrap_or(f64::NAN) / 1e6);
            }
        }
        // Read + build + write + fsync: from the start of the read to the artifact being durable.
        let snaps: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "snapshot" && e["trigger"] == "snapshot")
            .collect();
        let arts: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "artifact" && e["trigger"] == "snapshot")
            .collect();
        for (s, a) in snaps.iter().zip(&arts) {
            let read = s["read_ns"].as_f64().unwrap_or(f64::NAN);
            let after = a["latency_ns"].as_f64().unwrap_or(f64::NAN);
            end_to_end.push((read + after) / 1e6);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok((ops, reads, end_to_end))
}

fn throughput() -> Result<serde_json::Value> {
    let (mut base, mut att, mut reads, mut e2e) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        base.push(throughput_once(false)?.0);
        let (ops, r, e) = throughput_once(true)?;
        att.push(ops);
        reads.extend(r);
        e2e.extend(e);
    }
    let snapshots = reads.len();
    let (b, a) = (median(&mut base.clone()), median(&mut att.clone()));
    let (r, e) = (median(&mut reads), median(&mut e2e));
    println!(
        "  {TARGET} not snapshotted {b:>12.0} calls/s   snapshotted every 100 ms {a:>12.0} calls/s (ratio {:.3}; {snapshots} snapshots)",
        a / b
    );
    println!(
        "    per snapshot while it runs: read {r:.3} ms, read to artifact durable (built, written, fsync'ed) {e:.3} ms"
    );
    Ok(serde_json::json!({
        "not_snapshotted_ops_per_sec": b, "snapshotted_ops_per_sec": a, "ratio": a / b,
        "interval_ms": 100, "snapshots": snapshots,
        "snapshot_read_ms": r, "snapshot_read_to_durable_ms": e,
        "runs": {"not_snapshotted": base, "snapshotted": att},
    }))
}

pub fn run() -> Result<()> {
    println!("\n== snapshot");
    let cost = snapshot_vs_dump()?;
    let tp = throughput()?;
    save(
        "snapshot",
        &serde_json::json!({"snapshot_vs_runtime_dump": cost, "throughput": tp}),
    )
}
