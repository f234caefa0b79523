//! Guests (docs/guests.md), on `guest-bench-payload`: a no_std payload with about a million LLVM
//! counters (8 MiB) running under QEMU TCG. (1) How long `covobs snapshot --qemu` takes, next to
//! the path it replaces, in the same run, interleaved: QMP `pmemsave` of the payload's loaded
//! image to a file, then the profile built from that image (`covobs snapshot --image --base`, the
//! extraction a user would otherwise script by hand); the `pmemsave` of the counters alone is
//! given too, as the floor of any dump-based path. (2) The guest's throughput (the rounds it
//! reports on COM1, timed by the host) while `covobs attach --qemu` snapshots it every 100 ms vs
//! not, in alternating windows of the same guest.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{Observer, covobs, fixture, median, save};

const PAYLOAD: &str = "guest-bench-payload";
const SAMPLES: usize = 5;
const WINDOW_SECS: f64 = 4.0;
const ROUNDS: usize = 3;

/// The payload under QEMU; killed when dropped.
struct Qemu {
    child: Child,
    dir: PathBuf,
    serial: PathBuf,
    qmp: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Qemu {
    fn boot() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("covobs-bench-guest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (serial, qmp) = (dir.join("serial.log"), dir.join("qmp.sock"));
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-m", "256M",
            ])
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-kernel"])
            .arg(fixture(PAYLOAD))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        let q = Self {
            child,
            dir,
            serial,
            qmp,
        };
        // Past the rounds where QEMU translates the loop's code for the first time.
        let deadline = Instant::now() + Duration::from_secs(300);
        while q.last_round().unwrap_or(0) < 16 {
            if Instant::now() > deadline {
                bail!(
                    "{PAYLOAD} did not reach round 16 in 300 s: {}",
                    std::fs::read_to_string(&q.serial).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(q)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The last `round N` the payload printed.
    fn last_round(&self) -> Option<u64> {
        let log = std::fs::read_to_string(&self.serial).ok()?;
        log.lines()
            .rev()
            .find_map(|l| l.strip_prefix("round ")?.trim().parse().ok())
    }

    /// One QMP command on a fresh connection (QMP serves one client at a time).
    fn qmp(&self, command: &str, arguments: Value) -> Result<Value> {
        let s = UnixStream::connect(&self.qmp).context("QEMU's QMP socket")?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let mut ask = |msg: Value| -> Result<Value> {
            writeln!(w, "{msg}")?;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    bail!("QEMU closed QMP");
                }
                let v: Value = serde_json::from_str(&line)?;
                if let Some(e) = v.get("error") {
                    bail!("QMP {msg}: {e}");
                }
                if let Some(ret) = v.get("return") {
                    return Ok(ret.clone());
                }
            }
        };
        // The greeting has no `return`: the first `ask` reads past it.
        ask(json!({"execute": "qmp_capabilities"}))?;
        ask(json!({"execute": command, "arguments": arguments}))
    }
}

/// The span of the ELF's loadable segments (PT_LOAD: first address, end of the last one in
/// memory): what a dump must hold for the profile to be built from it.
fn loaded_span(elf: &Path) -> Result<(u64, u64)> {
    let b = std::fs::read(elf)?;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let bad = || anyhow!("{}: not a 64-bit ELF", elf.display());
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let (phentsize, phnum) = (
        u16_at(0x36).ok_or_else(bad)? as usize,
        u16_at(0x38).ok_or_else(bad)? as usize,
    );
    let (mut lo, mut hi) = (u64::MAX, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if b.get(ph..ph + 4) != Some(&1u32.to_le_bytes()[..]) {
            continue;
        }
        let vaddr = u64_at(ph + 16).ok_or_else(bad)?;
        let memsz = u64_at(ph + 40).ok_or_else(bad)?;
        lo = lo.min(vaddr);
        hi = hi.max(vaddr + memsz);
    }
    if lo >= hi {
        bail!("{}: no loadable segment", elf.display());
    }
    Ok((lo, hi - lo))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn covobs_snapshot(args: &[&str], out: &Path) -> Result<Value> {
    let o = Command::new(covobs())
        .args(["snapshot", "--json"])
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .context("running covobs snapshot (cargo build --release)")?;
    if !o.status.success() {
        bail!("covobs snapshot: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(serde_json::from_slice::<Value>(&o.stdout)?[0].clone())
}

/// Interleaved: `covobs snapshot --qemu`, then pmemsave + `covobs snapshot --image`, then the
/// pmemsave of the counters alone, SAMPLES times.
fn snapshot_vs_pmemsave(q: &Qemu) -> Result<Value> {
    let elf = fixture(PAYLOAD);
    let elf_s = elf.to_str().unwrap_or_default();
    let (base, size) = loaded_span(&elf)?;
    let pid = q.pid();
    let (mut direct, mut read, mut via_image, mut pmemsave, mut counters_only) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut counters, mut profile_bytes) = (0, 0);
    for i in 0..SAMPLES {
        let out = q.dir.join(format!("direct-{i}.profraw"));
        let t = Instant::now();
        let v = covobs_snapshot(&["--qemu", &pid, "--elf", elf_s], &out)?;
        direct.push(ms(t));
        let s = &v["snapshot"];
        read.push(
            (s["read"]["end_ns"].as_f64().unwrap_or(0.0)
                - s["read"]["start_ns"].as_f64().unwrap_or(0.0))
                / 1e6,
        );
        counters = s["counters"].as_u64().unwrap_or(0);
        let counters_addr = s["counters_addr"].as_u64().unwrap_or(0);
        profile_bytes = v["bytes"].as_u64().unwrap_or(0);
        std::fs::remove_file(&out)?;

        let image = q.dir.join(format!("image-{i}.bin"));
        let from_image = q.dir.join(format!("image-{i}.profraw"));
        let t = Instant::now();
        q.qmp(
            "pmemsave",
            json!({"val": base, "size": size, "filename": image.to_str().unwrap_or_default()}),
        )?;
        pmemsave.push(ms(t));
        let base_s = format!("{base:#x}");
        let w = covobs_snapshot(
            &[
                "--image",
                image.to_str().unwrap_or_default(),
                "--base",
                &base_s,
                "--elf",
                elf_s,
            ],
            &from_image,
        )?;
        via_image.push(ms(t));
        if w["bytes"].as_u64() != Some(profile_bytes) {
            bail!(
                "the image's profile has {} bytes, the guest's {profile_bytes}",
                w["bytes"]
            );
        }
        std::fs::remove_file(&image)?;
        std::fs::remove_file(&from_image)?;

        let cnts = q.dir.join(format!("counters-{i}.bin"));
        let t = Instant::now();
        q.qmp(
            "pmemsave",
            json!({"val": counters_addr, "size": counters * 8, "filename": cnts.to_str().unwrap_or_default()}),
        )?;
        counters_only.push(ms(t));
        std::fs::remove_file(&cnts)?;
    }
    let (d, r, v, p, c) = (
        median(&mut direct.clone()),
        median(&mut read.clone()),
        median(&mut via_image.clone()),
        median(&mut pmemsave.clone()),
        median(&mut counters_only.clone()),
    );
    println!(
        "  {counters} counters ({} bytes) in a running TCG guest, profile {profile_bytes} bytes, {SAMPLES} interleaved samples, medians:",
        counters * 8
    );
    println!(
        "    covobs snapshot --qemu, whole command          {d:>9.1} ms  (of which the read of the counters {r:.2} ms)"
    );
    println!(
        "    pmemsave of the payload's image ({:.1} MiB) + covobs snapshot --image {v:>9.1} ms  = {:.2}x covobs --qemu (pmemsave alone {p:.1} ms)",
        size as f64 / 1048576.0,
        v / d
    );
    println!(
        "    pmemsave of the counters alone (8 MiB, no profile) {c:>6.1} ms  = {:.2}x covobs --qemu",
        c / d
    );
    Ok(json!({
        "counters": counters, "counter_bytes": counters * 8, "profile_bytes": profile_bytes,
        "image_bytes": size, "samples": SAMPLES,
        "covobs_qemu_ms": d, "covobs_read_ms": r,
        "pmemsave_image_and_covobs_image_ms": v, "pmemsave_image_ms": p,
        "pmemsave_counters_ms": c,
        "ratio_pmemsave_path_over_covobs": v / d,
        "ratio_pmemsave_counters_over_covobs": c / d,
        "runs": {"covobs_qemu_ms": direct, "pmemsave_image_and_covobs_image_ms": via_image,
                 "pmemsave_image_ms": pmemsave, "pmemsave_counters_ms": counters_only},
    }))
}

/// Rounds per second over a window of `secs`: between the first and the last new `round` line
/// seen in it (the serial log polled every 5 ms, each line timed by the host when first seen).
fn rate(q: &Qemu, secs: f64) -> Result<f64> {
    let start = Instant::now();
    let mut prev = q.last_round();
    let mut first: Option<(u64, Instant)> = None;
    let mut last: Option<(u64, Instant)> = None;
    while start.elapsed().as_secs_f64() < secs {
        let now = q.last_round();
        if now != prev
            && let Some(r) = now
        {
            let seen = (r, Instant::now());
            if first.is_none() {
                first = Some(seen);
            } else {
                last = Some(seen);
            }
            prev = now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match (first, last) {
        (Some((r0, t0)), Some((r1, t1))) if r1 > r0 => {
            Ok((r1 - r0) as f64 / t1.duration_since(t0).as_secs_f64())
        }
        _ => bail!("{PAYLOAD} reported fewer than two rounds in {secs} s"),
    }
}

/// CPU seconds (user + system) process `pid` has used, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / hz.max(1.0)
}

/// Rounds per second over a window, and the share of a core QEMU and `also` (if any) used in it.
fn measured(q: &Qemu, also: Option<u32>) -> Result<(f64, f64, f64)> {
    let t = Instant::now();
    let (q0, a0) = (cpu_secs(q.child.id()), also.map_or(0.0, cpu_secs));
    let r = rate(q, WINDOW_SECS)?;
    let secs = t.elapsed().as_secs_f64();
    let (q1, a1) = (cpu_secs(q.child.id()), also.map_or(0.0, cpu_secs));
    Ok((r, (q1 - q0) / secs, (a1 - a0) / secs))
}

fn throughput(q: &Qemu) -> Result<Value> {
    let elf = fixture(PAYLOAD);
    let pid = q.pid();
    let (mut base, mut att, mut snapshots) = (vec![], vec![], vec![]);
    let (mut qemu_cpu_base, mut qemu_cpu_att, mut covobs_cpu) = (vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        let (r, qc, _) = measured(q, None)?;
        base.push(r);
        qemu_cpu_base.push(qc);
        let out = q.dir.join(format!("session-{i}"));
        let mut o = Observer::start(&[
            "attach",
            "--qemu",
            &pid,
            "--elf",
            elf.to_str().unwrap_or_default(),
            "--interval",
            "100ms",
            "--json",
            "--no-report",
            "--out",
            out.to_str().unwrap_or_default(),
        ])?;
        o.wait_for("snapshot", Duration::from_secs(60))?;
        let r = measured(q, Some(o.child.id()));
        o.stop();
        let n = o
            .drain()
            .iter()
            .filter(|e| e["event"] == "snapshot")
            .count();
        let (r, qc, cc) = r?;
        att.push(r);
        qemu_cpu_att.push(qc);
        covobs_cpu.push(cc);
        snapshots.push(n);
        let _ = std::fs::remove_dir_all(&out);
    }
    let (b, a) = (median(&mut base.clone()), median(&mut att.clone()));
    let (qb, qa, c) = (
        median(&mut qemu_cpu_base.clone()),
        median(&mut qemu_cpu_att.clone()),
        median(&mut covobs_cpu.clone()),
    );
    println!(
        "  {PAYLOAD}: not snapshotted {b:>8.1} rounds/s   snapshotted every 100 ms {a:>8.1} rounds/s (ratio {:.3}; {ROUNDS} alternating {WINDOW_SECS} s windows, {:?} snapshots per session)",
        a / b,
        snapshots
    );
    println!(
        "    CPU (share of one core): QEMU {qb:.2} not snapshotted, {qa:.2} snapshotted; covobs attach {c:.2} ({} online CPUs, load average {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    Ok(json!({
        "not_snapshotted_rounds_per_sec": b, "snapshotted_rounds_per_sec": a, "ratio": a / b,
        "interval_ms": 100, "window_secs": WINDOW_SECS, "snapshots_per_session": snapshots,
        "qemu_cpu_not_snapshotted": qb, "qemu_cpu_snapshotted": qa, "covobs_cpu": c,
        "runs": {"not_snapshotted": base, "snapshotted": att, "qemu_cpu_not_snapshotted": qemu_cpu_base,
                 "qemu_cpu_snapshotted": qemu_cpu_att, "covobs_cpu": covobs_cpu},
    }))
}

pub fn run() -> Result<()> {
    println!("\n== guest");
    let q = Qemu::boot()?;
    let cost = snapshot_vs_pmemsave(&q)?;
    let tp = throughput(&q)?;
    save(
        "guest",
        &json!({"snapshot_vs_pmemsave": cost, "throughput": tp}),
    )
}
