//! protocol-runner: (1) the delay from covobs' trigger to the end of the bisect dump, with the
//! signal sent from userspace (thread pidfd) vs from eBPF (bpf_send_signal_thread on the OCaml
//! thread's next runtime probe hit); (2) the OCaml thread's throughput with covobs' OCaml
//! runtime probes attached vs not, and the probes' hit rate.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};

use super::{Observer, fixture, median, percentile, save};

const ROUNDS: usize = 3;
const SECS: f64 = 4.0;

struct Runner {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    tmp: std::path::PathBuf,
}

impl Runner {
    /// `heap`: OCAMLRUNPARAM for the OCaml runtime (None: the fixture's own tiny minor heap).
    fn start(busy: bool, heap: Option<&str>) -> Result<Self> {
        let tmp = std::env::temp_dir().join(format!(
            "covobs-bench-ocaml-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = Command::new(fixture("protocol-runner"));
        cmd.env("BISECT_FILE", tmp.join("bisect-"))
            .env("LLVM_PROFILE_FILE", tmp.join("rust.profraw"))
            .stdout(Stdio::piped())
            .current_dir(&tmp);
        if busy {
            cmd.env("PROTOCOL_RUNNER_BUSY", "1");
        }
        if let Some(h) = heap {
            cmd.env("OCAMLRUNPARAM", h);
        }
        let mut child = cmd
            .spawn()
            .context("protocol-runner (cargo xtask fixtures)")?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(20))?;
        if !ready.ends_with("ready") {
            return Err(anyhow!("protocol-runner: {ready:?}"));
        }
        Ok(Self { child, lines, tmp })
    }

    /// The latest step count it printed (busy mode), waiting for the next report.
    fn steps_now(&self) -> Result<(u64, std::time::Instant)> {
        // Drop older reports, take the next one that arrives.
        while self.lines.try_recv().is_ok() {}
        let line = self.lines.recv_timeout(Duration::from_secs(10))?;
        let steps = line
            .strip_prefix("ocaml_steps=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected {line:?}"))?;
        Ok((steps, std::time::Instant::now()))
    }

    fn stop(mut self) {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// For each bisect dump of one attach: (ms from the trigger to the signal's delivery on the OCaml
/// thread, ms from the trigger to the end of the dump).
fn delays(deliver: &str) -> Result<Vec<(f64, f64)>> {
    let r = Runner::start(false, None)?;
    let out = r.tmp.join("out");
    let mut o = Observer::start(&[
        "attach",
        "--pid",
        &r.child.id().to_string(),
        "--deliver",
        deliver,
        "--interval",
        "200ms",
        "--duration",
        "12s",
        "--json",
        "--no-report",
        "--out",
        out.to_str().unwrap_or_default(),
    ])?;
    let events = o.drain();
    o.stop();
    let ocaml_tid = events
        .iter()
        .find(|e| e["event"] == "ocaml_thread")
        .and_then(|e| e["tid"].as_u64())
        .ok_or_else(|| anyhow!("no ocaml_thread event"))?;
    // Per OCaml-thread delivery: the time since the trigger (request or send) is in the event;
    // the dump ends at the next bisect dump_end.
    let mut out_ms = Vec::new();
    for (i, d) in events.iter().enumerate() {
        if d["event"] != "delivery" || d["tid"].as_u64() != Some(ocaml_tid) {
            continue;
        }
        let to_delivery = d["latency_ns"].as_f64().unwrap_or(f64::NAN);
        let delivered_at = d["ts_ns"].as_f64().unwrap_or(f64::NAN);
        if let Some(end) = events[i..]
            .iter()
            .find(|e| e["event"] == "dump_end" && e["runtime"] == "bisect")
        {
            let end_at = end["ts_ns"].as_f64().unwrap_or(f64::NAN);
            out_ms.push((
                to_delivery / 1e6,
                (to_delivery + end_at - delivered_at) / 1e6,
            ));
        }
    }
    r.stop();
    Ok(out_ms)
}

fn throughput(observed: bool, heap: Option<&str>) -> Result<(f64, f64)> {
    let r = Runner::start(true, heap)?;
    let mut hits = 0.0;
    let observer = if observed {
        let o = Observer::start(&["watch", "--pid", &r.child.id().to_string(), "--json"])?;
        let found = o.wait_for("ocaml_thread", Duration::from_secs(30))?;
        hits = found["hits_per_sec"].as_f64().unwrap_or(0.0);
        Some(o)
    } else {
        None
    };
    // The window starts once the probes are in place.
    let (s0, t0) = r.steps_now()?;
    std::thread::sleep(Duration::from_secs_f64(SECS));
    let (s1, t1) = r.steps_now()?;
    if let Some(mut o) = observer {
        o.stop();
    }
    r.stop();
    Ok(((s1 - s0) as f64 / (t1 - t0).as_secs_f64(), hits))
}

pub fn run() -> Result<()> {
    println!("\n== ocaml (protocol-runner)");
    let mut figures = serde_json::Map::new();
    for method in ["pidfd", "bpf"] {
        let d = delays(method)?;
        let mut delivered: Vec<f64> = d.iter().map(|x| x.0).collect();
        let mut ended: Vec<f64> = d.iter().map(|x| x.1).collect();
        let (dm, dp) = (
            median(&mut delivered.clone()),
            percentile(&mut delivered, 99.0),
        );
        let (em, ep) = (median(&mut ended.clone()), percentile(&mut ended, 99.0));
        println!(
            "  {method:<5} trigger -> delivered on the OCaml thread: median {dm:.3} ms p99 {dp:.3} ms; trigger -> bisect dump end: median {em:.2} ms p99 {ep:.2} ms ({} dumps)",
            d.len()
        );
        figures.insert(
            method.to_owned(),
            serde_json::json!({"delivered_median_ms": dm, "delivered_p99_ms": dp, "dump_end_median_ms": em, "dump_end_p99_ms": ep, "dumps": d.len()}),
        );
    }
    let mut tp = serde_json::Map::new();
    // The fixture's tiny minor heap (a minor collection every ~2 steps: the worst case for the
    // GC probe) and OCaml's default heap.
    for (label, heap) in [
        ("fixture heap (32 KiB minor)", None),
        ("default OCaml heap", Some("s=256k")),
    ] {
        let (mut base, mut probed, mut rates) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(throughput(false, heap)?.0);
            let (t, h) = throughput(true, heap)?;
            probed.push(t);
            rates.push(h);
        }
        let (b, p, h) = (median(&mut base), median(&mut probed), median(&mut rates));
        println!(
            "  busy OCaml loop, {label}: {b:.0} steps/s without probes, {p:.0} with covobs' OCaml runtime probes (ratio {:.3}; {h:.0} probe hits/s)",
            p / b
        );
        tp.insert(
            label.to_owned(),
            serde_json::json!({"unprobed": b, "probed": p, "ratio": p / b, "probe_hits_per_sec": h,
                "runs": {"unprobed": base, "probed": probed}}),
        );
    }
    save(
        "ocaml",
        &serde_json::json!({"trigger_to_bisect_dump": figures, "ocaml_steps_per_sec": tp}),
    )
}
