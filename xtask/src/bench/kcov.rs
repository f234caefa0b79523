//! `cargo xtask bench kcov`:
//!
//! 1. In the kcov VM, the extra wall time of a kcov workload run under covobs: `covobs run
//!    --kernel -- kcov-workload` (covobs enables kcov for it and reads its buffer at exit) vs the
//!    same workload tracing itself and reading its own buffer (`kcov-workload self`), runs
//!    interleaved, medians. The workload's own time for its rounds is reported too: under covobs
//!    the work itself costs the same, covobs adds a fixed start-up and finish.
//! 2. On the host, PCs per second covobs deduplicates and symbolizes: a synthetic kcov buffer of
//!    10 million PCs (drawn from the distinct PCs of a real run in step 1) reported against the
//!    kernel's vmlinux by `covobs report` (kernel LCOV + summary), next to binutils `addr2line
//!    -f -i -e vmlinux` on the same 10 million addresses (PC - 1).
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{covobs, fixture, median, save};

/// Rounds of the workload (each: a file read, stat, /dev/null write, pipe, getpid).
const ROUNDS: u32 = 40;
/// Runs of each kind, interleaved.
const RUNS: usize = 5;
const SYNTHETIC_PCS: usize = 10_000_000;

pub fn run() -> Result<()> {
    println!("\n== kcov");
    let vmlinux = crate::vm::vmlinux()?;
    let share = crate::workspace_root().join("target/bench/kcov-vm");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share)?;
    let guest = in_vm(&share)?;
    print_vm(&guest);
    let synthetic = symbolize(&share, &vmlinux)?;
    save(
        "kcov",
        &serde_json::json!({"vm": guest, "symbolize": synthetic}),
    )
}

/// Step 1, from the host: run `xtask bench-kcov-guest` in the VM.
fn in_vm(share: &Path) -> Result<serde_json::Value> {
    let xtask = std::env::current_exe().context("the xtask executable")?;
    let args = crate::vm::VmArgs {
        share: Some(share.to_path_buf()),
        timeout: Some(1200),
        ..crate::vm::VmArgs::default()
    };
    let code = crate::vm::vm_run(
        &args,
        vec![
            xtask.to_string_lossy().into_owned(),
            "bench-kcov-guest".into(),
            share.to_string_lossy().into_owned(),
        ],
    );
    if code != 0 {
        bail!("the kcov benchmark failed in the VM (exit {code})");
    }
    let text = std::fs::read_to_string(share.join("vm.json")).context("the VM's figures")?;
    Ok(serde_json::from_str(&text)?)
}

/// Step 1, in the guest: interleaved runs; figures to `<share>/vm.json`, one covobs session kept
/// in `<share>/session` for step 2.
pub fn guest(share: &Path) -> Result<()> {
    let data = Path::new("/tmp/kcov-bench.dat");
    std::fs::write(data, vec![0x5a; 16 << 10])?;
    let workload = fixture("kcov-workload");
    let rounds = ROUNDS.to_string();
    let data_s = data.to_string_lossy().into_owned();
    let profile = "/tmp/kcov-bench.profraw";
    let (mut self_wall, mut self_work, mut cov_wall, mut cov_work) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut pcs = (0u64, 0u64);
    for i in 0..RUNS {
        // The baseline: the workload traces itself and reads its own buffer.
        let t = Instant::now();
        let out = Command::new(&workload)
            .args(["self", &rounds, &data_s])
            .env("LLVM_PROFILE_FILE", profile)
            .output()?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("kcov-workload self failed: {line}");
        }
        self_wall.push(wall);
        self_work.push(field(&line, "ns=")? / 1e6);
        pcs = (
            field(&line, "pcs=")? as u64,
            field(&line, "unique=")? as u64,
        );
        // Under covobs: kcov enabled by covobs, the buffer read by covobs at exit.
        let dir = share.join(format!("session-{i}"));
        let t = Instant::now();
        let out = Command::new(covobs())
            .args(["run", "--kernel", "--no-report", "--out"])
            .arg(&dir)
            .arg("--")
            .arg(&workload)
            .args([&rounds, &data_s])
            .env("LLVM_PROFILE_FILE", profile)
            .output()?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "covobs run failed ({}): {stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = stdout
            .lines()
            .find(|l| l.starts_with("kcov_workload "))
            .context("no line from the workload")?;
        cov_wall.push(wall);
        cov_work.push(field(line, "ns=")? / 1e6);
        if i > 0 {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let (sw, sk, cw, ck) = (
        median(&mut self_wall.clone()),
        median(&mut self_work.clone()),
        median(&mut cov_wall.clone()),
        median(&mut cov_work.clone()),
    );
    let figures = serde_json::json!({
        "rounds": ROUNDS, "runs": RUNS, "trace_entries": pcs.0, "distinct_pcs": pcs.1,
        "self_wall_ms": sw, "self_work_ms": sk, "covobs_wall_ms": cw, "covobs_work_ms": ck,
        "extra_wall_ms": cw - sw,
        "samples": {"self_wall_ms": self_wall, "self_work_ms": self_work,
                    "covobs_wall_ms": cov_wall, "covobs_work_ms": cov_work},
    });
    std::fs::write(share.join("vm.json"), serde_json::to_vec_pretty(&figures)?)?;
    std::fs::rename(share.join("session-0"), share.join("session"))?;
    Ok(())
}

fn field(line: &str, name: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in {line:?}"))
}

/// The distinct PCs of the kept session's kcov artifact, and its metadata.
fn real_pcs(session: &Path) -> Result<(Vec<u64>, serde_json::Value)> {
    for dir in std::fs::read_dir(session)?.flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "kcov") {
                let bytes = std::fs::read(&p)?;
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p.with_extension("json"))?)?;
                let mut pcs: Vec<u64> = bytes
                    .as_chunks::<8>()
                    .0
                    .iter()
                    .skip(1)
                    .map(|w| u64::from_le_bytes(*w))
                    .collect();
                pcs.sort_unstable();
                pcs.dedup();
                return Ok((pcs, meta));
            }
        }
    }
    bail!("no kcov artifact in {}", session.display())
}

/// Step 2, on the host.
fn symbolize(share: &Path, vmlinux: &Path) -> Result<serde_json::Value> {
    let (distinct, meta) = real_pcs(&share.join("session"))?;
    // A fixed-seed xorshift: the same buffer every run; skewed towards some PCs, as real traces
    // are (a few hot paths, a long tail).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = distinct.len() as u64;
    let pcs: Vec<u64> = (0..SYNTHETIC_PCS)
        .map(|_| {
            let r = next();
            let i = if r & 1 == 0 {
                r % (n / 8).max(1)
            } else {
                r % n
            };
            distinct[i as usize]
        })
        .collect();
    let dir = share.join("synthetic");
    let pdir = dir.join("1-synthetic");
    std::fs::create_dir_all(&pdir)?;
    let mut bytes = Vec::with_capacity((pcs.len() + 1) * 8);
    bytes.extend_from_slice(&(pcs.len() as u64).to_le_bytes());
    for pc in &pcs {
        bytes.extend_from_slice(&pc.to_le_bytes());
    }
    std::fs::write(pdir.join("000001-kcov.kcov"), &bytes)?;
    let mut m = meta.clone();
    m["seq"] = 1.into();
    m["pid"] = 1.into();
    m["file"] = "000001-kcov.kcov".into();
    m["bytes"] = (bytes.len() as u64).into();
    m["checksum"] = serde_json::Value::Null;
    std::fs::write(pdir.join("000001-kcov.json"), serde_json::to_vec(&m)?)?;

    // covobs: dedup + symbolize + kernel LCOV and summary.
    let t = Instant::now();
    let out = Command::new(covobs())
        .arg("report")
        .arg(&dir)
        .args(["--format", "lcov,json", "--vmlinux"])
        .arg(vmlinux)
        .output()?;
    let covobs_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "covobs report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report/summary.json"))?)?;
    let functions = summary["kernel"]["functions"]
        .as_array()
        .map_or(0, |f| f.len());

    // addr2line on the same addresses (PC - 1), fed on stdin.
    let input: Vec<u8> = pcs
        .iter()
        .flat_map(|pc| format!("{:#x}\n", pc - 1).into_bytes())
        .collect();
    let t = Instant::now();
    let mut child = Command::new("addr2line")
        .args(["-f", "-i", "-e"])
        .arg(vmlinux)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("addr2line (binutils)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut lines = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    let _ = writer.join();
    child.wait()?;
    let addr2line_s = t.elapsed().as_secs_f64();

    let covobs_rate = SYNTHETIC_PCS as f64 / covobs_s;
    let addr2line_rate = SYNTHETIC_PCS as f64 / addr2line_s;
    println!(
        "  {SYNTHETIC_PCS} PCs ({} distinct, from a real run) against {}:",
        distinct.len(),
        vmlinux.display()
    );
    println!(
        "    covobs report (dedup, symbolize, kernel LCOV + summary, {functions} functions): {covobs_s:.2} s = {:.1} M PCs/s",
        covobs_rate / 1e6
    );
    println!(
        "    addr2line -f -i ({lines} lines of output):                         {addr2line_s:.2} s = {:.2} M PCs/s ({:.0}x slower)",
        addr2line_rate / 1e6,
        addr2line_s / covobs_s
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(serde_json::json!({
        "pcs": SYNTHETIC_PCS, "distinct_pcs": distinct.len(), "functions": functions,
        "covobs_report_s": covobs_s, "covobs_pcs_per_sec": covobs_rate,
        "addr2line_s": addr2line_s, "addr2line_pcs_per_sec": addr2line_rate,
        "vmlinux": vmlinux,
    }))
}

/// The VM figures, printed on the host.
pub fn print_vm(v: &serde_json::Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  kcov-workload ({} rounds, {} kcov entries, {} distinct PCs), medians of {} interleaved runs in the VM:",
        v["rounds"], v["trace_entries"], v["distinct_pcs"], v["runs"]
    );
    println!(
        "    reading its own buffer: wall {:.0} ms (its rounds + reading the buffer {:.0} ms)",
        f("self_wall_ms"),
        f("self_work_ms")
    );
    println!(
        "    under covobs run --kernel: wall {:.0} ms (its rounds {:.0} ms); extra wall time {:.0} ms",
        f("covobs_wall_ms"),
        f("covobs_work_ms"),
        f("extra_wall_ms")
    );
}
