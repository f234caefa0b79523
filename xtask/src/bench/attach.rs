//! `covobs attach`: (1) the latency covobs adds between a dump's end and its artifact being
//! durable in the output directory, over 1000 dumps, next to the fixed one-second sleep of
//! TezEdge's coverage script (signal, sleep 1, copy); (2) an instrumented target's throughput
//! while attached (a dump every 100 ms) vs not attached.
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Observer, Workload, fixture, median, percentile, save};

const DUMPS: usize = 1000;
const SECS: f64 = 3.0;
const ROUNDS: usize = 3;

fn latency() -> Result<serde_json::Value> {
    let tmp = std::env::temp_dir().join(format!("covobs-bench-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    // The target dumps every 5 ms on its own: covobs only observes and collects.
    let mut target = std::process::Command::new(fixture("llvm-rust-target"))
        .args(["--self-dump-ms", "5"])
        .env("LLVM_PROFILE_FILE", tmp.join("bench.profraw"))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200));
    let out = tmp.join("out");
    let observer = Observer::start(&[
        "attach",
        "--pid",
        &target.id().to_string(),
        "--json",
        "--no-report",
        "--out",
        out.to_str().unwrap_or_default(),
    ])?;
    let mut lat = Vec::new();
    let mut sizes = Vec::new();
    while lat.len() < DUMPS {
        let a = observer.wait_for("artifact", Duration::from_secs(60))?;
        lat.push(a["latency_ns"].as_f64().unwrap_or(f64::NAN) / 1e6);
        sizes.push(a["bytes"].as_u64().unwrap_or(0));
    }
    let mut observer = observer;
    observer.stop();
    let _ = target.kill();
    let _ = target.wait();
    let _ = std::fs::remove_dir_all(&tmp);
    if lat.iter().any(|v| v.is_nan()) {
        bail!("an artifact event had no latency");
    }
    let med = median(&mut lat.clone());
    let p99 = percentile(&mut lat.clone(), 99.0);
    let max = percentile(&mut lat, 100.0);
    println!(
        "  dump_end -> artifact durable (fsync'ed), {DUMPS} dumps of {} bytes: median {med:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
        sizes.first().copied().unwrap_or(0)
    );
    println!(
        "  vs the shell script's fixed 1 s sleep: {:.0}x sooner at the median, {:.0}x at p99",
        1000.0 / med,
        1000.0 / p99
    );
    Ok(serde_json::json!({
        "dumps": DUMPS, "median_ms": med, "p99_ms": p99, "max_ms": max,
        "shell_sleep_ms": 1000.0, "speedup_median": 1000.0 / med, "speedup_p99": 1000.0 / p99,
    }))
}

fn throughput_once(mode: &str, attached: bool) -> Result<(f64, u64)> {
    let w = Workload::start("bench-target-cov", mode, SECS)?;
    let pid = w.pid().to_string();
    let tmp = std::env::temp_dir().join(format!("covobs-bench-tp-{}-{pid}", std::process::id()));
    let observer = if attached {
        let o = Observer::start(&[
            "attach",
            "--pid",
            &pid,
            "--interval",
            "100ms",
            "--json",
            "--no-report",
            "--out",
            tmp.to_str().unwrap_or_default(),
        ])?;
        o.wait_for("runtime_found", Duration::from_secs(30))?;
        Some(o)
    } else {
        None
    };
    let ops = w.go(SECS)?;
    let mut artifacts = 0;
    if let Some(mut o) = observer {
        o.stop();
        artifacts = o
            .drain()
            .iter()
            .filter(|e| e["event"] == "artifact")
            .count() as u64;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok((ops, artifacts))
}

fn throughput() -> Result<serde_json::Value> {
    let mut results = serde_json::Map::new();
    for mode in ["syscalls-signals", "cpu"] {
        let (mut base, mut att) = (Vec::new(), Vec::new());
        let mut dumps = 0;
        for _ in 0..ROUNDS {
            base.push(throughput_once(mode, false)?.0);
            let (ops, n) = throughput_once(mode, true)?;
            att.push(ops);
            dumps += n;
        }
        let (b, a) = (median(&mut base), median(&mut att));
        println!(
            "  bench-target-cov {mode:<17} not attached {b:>12.0} ops/s   attached, dump every 100 ms {a:>12.0} ops/s (ratio {:.3}; {dumps} dumps collected)",
            a / b
        );
        results.insert(
            mode.to_owned(),
            serde_json::json!({"not_attached_ops_per_sec": b, "attached_ops_per_sec": a, "ratio": a / b,
                "runs": {"not_attached": base, "attached": att}, "artifacts": dumps}),
        );
    }
    Ok(serde_json::Value::Object(results))
}

pub fn run() -> Result<()> {
    println!("\n== attach");
    let lat = latency()?;
    let tp = throughput()?;
    save(
        "attach",
        &serde_json::json!({"latency": lat, "throughput": tp}),
    )
}
