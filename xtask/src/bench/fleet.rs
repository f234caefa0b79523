//! Fleets over NATS JetStream (docs/fleet.md), against a nats-server of the benchmark's own
//! (JetStream, a temporary store, a free loopback port):
//!
//! 1. Throughput: one llvm-rust-target dumping on its own every DUMP_MS, attached for SESSION,
//!    to the local directory sink alone and, in the same run (rounds interleaved), with
//!    `--publish` as well. Figures: artifacts/s and MB/s from covobs' start to its exit (the
//!    publishing run's exit waits for JetStream to acknowledge everything, spool included),
//!    then the collector's own rate taking them back out.
//! 2. The fleet: 10 nodes (a covobs each, on one idle target, a dump every NODE_INTERVAL) of
//!    100 artifacts, with `covobs collect --follow` running: dump-to-collected latency p50/p99
//!    across the fleet (the dump's end on the node to the collector's metadata file, one
//!    machine, one clock). Then the time to a fleet report (a new `covobs collect`) for
//!    10 nodes x 100 artifacts next to one node's 100, and to `covobs report` on that node's
//!    local directory.
//!
//! Bounded: at most 10 covobs nodes, 10 targets and one collector at once; the targets are
//! paused (a pause file: they only serve dumps).
use std::{
    collections::BTreeMap,
    net::TcpListener,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::TryRecvError,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Observer, covobs, fixture, median, percentile, save};

const TARGET: &str = "llvm-rust-target";
/// The throughput target's own dump period.
const DUMP_MS: u64 = 2;
/// How long each throughput session runs.
const SESSION: &str = "4s";
const ROUNDS: usize = 2;
const NODES: usize = 10;
const ARTIFACTS: usize = 100;
const NODE_INTERVAL: &str = "50ms";
/// How often the following collector rewrites its report (its default).
const REPORT_EVERY: &str = "5s";

/// A nats-server of the benchmark's own, stopped when dropped.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(store: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let bin = nats_server().context(
            "nats-server is not installed: apt-get install nats-server (./dev setup does)",
        )?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let mut n = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || n.child.try_wait()?.is_some() {
                bail!("nats-server did not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(n)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server on the PATH, or where Debian's package puts it (/usr/sbin).
fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn target(dir: &Path, tag: &str, args: &[&str]) -> Result<Child> {
    Command::new(fixture(TARGET))
        .args(args)
        .env("LLVM_PROFILE_FILE", dir.join(format!("{tag}-%p.profraw")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {TARGET} (cargo xtask fixtures)"))
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

fn json_file(p: &Path) -> Result<Value> {
    let b = std::fs::read(p).with_context(|| p.display().to_string())?;
    Ok(serde_json::from_slice(&b)?)
}

fn sigint(child: &Child) {
    // SAFETY: kill on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// `covobs collect URL --fleet F --out DIR` (no --follow): (seconds, artifacts, artifact bytes).
fn collect(url: &str, fleet: &str, out: &Path) -> Result<(f64, u64, u64)> {
    let started = Instant::now();
    let o = Command::new(covobs())
        .args(["collect", url, "--fleet", fleet, "--out"])
        .arg(out)
        .output()
        .context("covobs collect")?;
    let secs = started.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "covobs collect: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let nodes = json_file(&out.join("fleet/nodes.json"))?;
    let mut artifacts = 0;
    let mut bytes = 0;
    for n in nodes.as_object().into_iter().flatten().map(|(_, n)| n) {
        artifacts += n["collected"]["artifacts"].as_u64().unwrap_or(0);
        bytes += n["collected"]["artifact_bytes"].as_u64().unwrap_or(0);
    }
    Ok((secs, artifacts, bytes))
}

struct Run {
    secs: f64,
    artifacts: u64,
    bytes: u64,
    fleet: Value,
    sink_drops: u64,
}

/// One throughput session; `publish`: (url, fleet).
fn throughput_once(tmp: &Path, tag: &str, publish: Option<(&str, &str)>) -> Result<Run> {
    let dir = tmp.join(tag);
    std::fs::create_dir_all(&dir)?;
    let mut t = target(&dir, "tp", &["--self-dump-ms", &DUMP_MS.to_string()])?;
    std::thread::sleep(Duration::from_millis(200));
    let pid = t.id().to_string();
    let out = dir.join("out");
    let spool = dir.join("spool");
    let mut args = vec![
        "attach",
        "--pid",
        &pid,
        "--duration",
        SESSION,
        "--json",
        "--no-report",
        "--out",
        out.to_str().context("utf-8")?,
    ];
    if let Some((url, fleet)) = publish {
        args.extend([
            "--publish",
            url,
            "--node",
            "tp",
            "--fleet",
            fleet,
            "--spool",
            spool.to_str().context("utf-8")?,
            "--publish-wait",
            "120s",
        ]);
    }
    let started = Instant::now();
    let observed = Observer::start(&args).and_then(|mut o| {
        let events = o.drain();
        Ok((events, o.child.wait()?))
    });
    let secs = started.elapsed().as_secs_f64();
    stop(std::slice::from_mut(&mut t));
    let (events, status) = observed?;
    if !status.success() {
        bail!("covobs attach ({tag}) exited with {status}");
    }
    let arts: Vec<&Value> = events.iter().filter(|e| e["event"] == "artifact").collect();
    let session = json_file(&out.join("session.json"))?;
    // What any sink could not take (its queue full) or left at the end (its grace period over).
    let sink_drops = session["counters"]["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["dropped"].as_u64().unwrap_or(0) + s["abandoned"].as_u64().unwrap_or(0))
        .sum();
    Ok(Run {
        secs,
        artifacts: arts.len() as u64,
        bytes: arts.iter().filter_map(|a| a["bytes"].as_u64()).sum(),
        fleet: session["fleet"].clone(),
        sink_drops,
    })
}

fn throughput(url: &str, tmp: &Path) -> Result<Value> {
    let (mut local, mut local_mb, mut js, mut js_mb) = (vec![], vec![], vec![], vec![]);
    let (mut coll, mut coll_mb) = (vec![], vec![]);
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let dir = throughput_once(tmp, &format!("dir{round}"), None)?;
        let fleet = format!("tp{round}");
        let publ = throughput_once(tmp, &format!("pub{round}"), Some((url, &fleet)))?;
        let (csecs, cart, cbytes) = collect(url, &fleet, &tmp.join(format!("collect{round}")))?;
        if cart != publ.artifacts {
            bail!(
                "the collector took {cart} artifacts, the publishing node collected {}",
                publ.artifacts
            );
        }
        local.push(dir.artifacts as f64 / dir.secs);
        local_mb.push(dir.bytes as f64 / 1e6 / dir.secs);
        js.push(publ.artifacts as f64 / publ.secs);
        js_mb.push(publ.bytes as f64 / 1e6 / publ.secs);
        coll.push(cart as f64 / csecs);
        coll_mb.push(cbytes as f64 / 1e6 / csecs);
        println!(
            "  round {round}: directory sink {} artifacts ({:.1} MB) in {:.2} s; directory + JetStream {} artifacts ({:.1} MB) in {:.2} s, all acknowledged at exit ({} messages, {} duplicates, {} spooled, {} object bytes uploaded, sink drops {}); collect took them back in {csecs:.2} s",
            dir.artifacts,
            dir.bytes as f64 / 1e6,
            dir.secs,
            publ.artifacts,
            publ.bytes as f64 / 1e6,
            publ.secs,
            publ.fleet["published"],
            publ.fleet["duplicates"],
            publ.fleet["spool"]["spooled"],
            publ.fleet["object_bytes"],
            publ.sink_drops,
        );
        runs.push(json!({
            "directory": {"secs": dir.secs, "artifacts": dir.artifacts, "bytes": dir.bytes, "sink_drops": dir.sink_drops},
            "jetstream": {"secs": publ.secs, "artifacts": publ.artifacts, "bytes": publ.bytes, "fleet": publ.fleet, "sink_drops": publ.sink_drops},
            "collect": {"secs": csecs, "artifacts": cart, "bytes": cbytes},
        }));
    }
    let f = json!({
        "self_dump_ms": DUMP_MS,
        "session": SESSION,
        "directory_artifacts_per_s": median(&mut local),
        "directory_mb_per_s": median(&mut local_mb),
        "jetstream_artifacts_per_s": median(&mut js),
        "jetstream_mb_per_s": median(&mut js_mb),
        "collect_artifacts_per_s": median(&mut coll),
        "collect_mb_per_s": median(&mut coll_mb),
        "runs": runs,
    });
    println!(
        "  one target dumping every {DUMP_MS} ms, {SESSION} sessions, covobs start to exit (medians of {ROUNDS}): directory sink {:.0} artifacts/s, {:.2} MB/s; directory + JetStream (every message acknowledged) {:.0} artifacts/s, {:.2} MB/s; covobs collect out of JetStream {:.0} artifacts/s, {:.2} MB/s",
        f["directory_artifacts_per_s"].as_f64().unwrap_or(f64::NAN),
        f["directory_mb_per_s"].as_f64().unwrap_or(f64::NAN),
        f["jetstream_artifacts_per_s"].as_f64().unwrap_or(f64::NAN),
        f["jetstream_mb_per_s"].as_f64().unwrap_or(f64::NAN),
        f["collect_artifacts_per_s"].as_f64().unwrap_or(f64::NAN),
        f["collect_mb_per_s"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(f)
}

/// `n` nodes (a paused target and a publishing covobs each), each stopped once it collected
/// ARTIFACTS - 1 artifacts (its last dump at stop makes ARTIFACTS). With `follow`, a
/// `covobs collect --follow` runs meanwhile into that directory. Returns each node's session
/// directory and artifact count.
fn nodes(
    url: &str,
    fleet: &str,
    n: usize,
    tmp: &Path,
    follow: Option<&Path>,
) -> Result<Vec<(PathBuf, u64)>> {
    let dir = tmp.join(fleet);
    std::fs::create_dir_all(&dir)?;
    let pause = dir.join("pause");
    std::fs::write(&pause, b"")?;
    let pause_arg = pause.to_str().context("utf-8")?.to_owned();
    let mut targets = Vec::new();
    for i in 0..n {
        match target(&dir, &format!("n{i}"), &["--pause-file", &pause_arg]) {
            Ok(t) => targets.push(t),
            Err(e) => {
                stop(&mut targets);
                return Err(e);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let result = run_nodes(url, fleet, &dir, &targets, follow);
    stop(&mut targets);
    result
}

fn run_nodes(
    url: &str,
    fleet: &str,
    dir: &Path,
    targets: &[Child],
    follow: Option<&Path>,
) -> Result<Vec<(PathBuf, u64)>> {
    let mut observers = Vec::new();
    let mut outs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let out = dir.join(format!("node{i}"));
        let node = format!("node-{i}");
        let o = Observer::start(&[
            "attach",
            "--pid",
            &t.id().to_string(),
            "--interval",
            NODE_INTERVAL,
            "--json",
            "--no-report",
            "--out",
            out.to_str().context("utf-8")?,
            "--publish",
            url,
            "--node",
            &node,
            "--fleet",
            fleet,
            "--spool",
            dir.join("spool").to_str().context("utf-8")?,
            "--publish-wait",
            "120s",
        ]);
        match o {
            Ok(o) => observers.push(o),
            Err(e) => {
                for mut o in observers {
                    o.stop();
                }
                return Err(e);
            }
        }
        outs.push(out);
    }
    let mut follower: Option<Child> = None;
    let mut counts = vec![0usize; observers.len()];
    let mut stopped = vec![false; observers.len()];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut failed = None;
    while stopped.iter().any(|s| !s) {
        if Instant::now() > deadline {
            failed = Some(anyhow::anyhow!(
                "the nodes did not collect {ARTIFACTS} artifacts each"
            ));
            break;
        }
        for (i, o) in observers.iter().enumerate() {
            loop {
                match o.lines.try_recv() {
                    Ok(line) => {
                        let v: Value = serde_json::from_str(&line).unwrap_or_default();
                        if v["event"] == "artifact" {
                            counts[i] += 1;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if !stopped[i] {
                            failed = Some(anyhow::anyhow!("node {i} ended early"));
                        }
                        stopped[i] = true;
                        break;
                    }
                }
            }
            if !stopped[i] && counts[i] + 1 >= ARTIFACTS {
                sigint(&o.child);
                stopped[i] = true;
            }
        }
        // The follower, once the fleet's stream exists (the nodes' first artifacts).
        if let Some(fdir) = follow
            && follower.is_none()
            && counts.iter().all(|c| *c > 0)
        {
            let c = Command::new(covobs())
                .args(["collect", url, "--fleet", fleet, "--follow"])
                .args(["--report-every", REPORT_EVERY, "--out"])
                .arg(fdir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match c {
                Ok(c) => follower = Some(c),
                Err(e) => failed = Some(anyhow::anyhow!("covobs collect --follow: {e}")),
            }
        }
        if failed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut results = Vec::new();
    for (i, mut o) in observers.into_iter().enumerate() {
        if failed.is_some() {
            sigint(&o.child);
        }
        // The rest of its lines (the last dump's artifact), then its exit.
        for v in o.drain() {
            if v["event"] == "artifact" {
                counts[i] += 1;
            }
        }
        let status = o.child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some(anyhow::anyhow!("node {i} exited with {status}"));
        }
        results.push((outs[i].clone(), counts[i] as u64));
    }
    if let (Some(mut f), Some(fdir)) = (follower, follow) {
        // Until the follower took every artifact the nodes collected.
        let total: u64 = results.iter().map(|(_, c)| c).sum();
        let until = Instant::now() + Duration::from_secs(120);
        while failed.is_none() {
            let taken = json_file(&fdir.join("fleet/state.json"))
                .map(|s| s["seqs"].as_object().map_or(0, |m| m.len() as u64))
                .unwrap_or(0);
            if taken >= total {
                break;
            }
            if Instant::now() > until {
                failed = Some(anyhow::anyhow!(
                    "the follower took {taken} of {total} artifacts"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sigint(&f);
        let _ = f.wait();
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Dump-to-collected latencies (ms) of a collector's directory: the dump's end on the node
/// (CLOCK_BOOTTIME + the node session's offset to the realtime clock) to the collector's
/// metadata file (its mtime).
fn latencies(fleet_dir: &Path, offsets: &BTreeMap<String, i64>) -> Result<Vec<f64>> {
    let mut ms = Vec::new();
    for e in std::fs::read_dir(fleet_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, node)) = name.split_once('@') else {
            continue;
        };
        let offset = *offsets.get(node).context("a node of the fleet")?;
        for f in std::fs::read_dir(e.path())?.flatten() {
            let p = f.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let meta = json_file(&p)?;
            let Some(end) = meta["end_ns"].as_i64() else {
                continue;
            };
            let m = std::fs::metadata(&p)?;
            let written = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            ms.push((written - (end + offset)) as f64 / 1e6);
        }
    }
    Ok(ms)
}

fn report_time(dir: &Path) -> Result<f64> {
    let started = Instant::now();
    let o = Command::new(covobs())
        .args(["report", "--format", "lcov"])
        .arg(dir)
        .output()
        .context("covobs report")?;
    if !o.status.success() {
        bail!(
            "covobs report: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

fn fleet(url: &str, tmp: &Path) -> Result<Value> {
    // One node's 100.
    let one = nodes(url, "one", 1, tmp, None)?;
    let (one_secs, one_art, _) = collect(url, "one", &tmp.join("one-collected"))?;
    let local_secs = report_time(&one[0].0)?;
    // Ten nodes' 100 each, followed live.
    let follow_dir = tmp.join("ten-followed");
    let ten = nodes(url, "ten", NODES, tmp, Some(&follow_dir))?;
    let mut offsets = BTreeMap::new();
    for (i, (dir, _)) in ten.iter().enumerate() {
        let s = json_file(&dir.join("session.json"))?;
        let off = s["boot_to_unix_offset_ns"]
            .as_i64()
            .context("boot_to_unix_offset_ns")?;
        offsets.insert(format!("node-{i}"), off);
    }
    let mut lat = latencies(&follow_dir, &offsets)?;
    let ten_total: u64 = ten.iter().map(|(_, c)| c).sum();
    let (ten_secs, ten_art, _) = collect(url, "ten", &tmp.join("ten-collected"))?;
    if ten_art != ten_total || one_art != one[0].1 {
        bail!(
            "collected {ten_art} of the ten nodes' {ten_total} and {one_art} of one node's {}",
            one[0].1
        );
    }
    let (p50, p99, max) = (
        percentile(&mut lat, 50.0),
        percentile(&mut lat, 99.0),
        percentile(&mut lat, 100.0),
    );
    println!(
        "  dump-to-collected latency across {NODES} nodes (a dump every {NODE_INTERVAL} each, collect --follow --report-every {REPORT_EVERY}), {} artifacts: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
        lat.len()
    );
    println!(
        "  time to a fleet report (covobs collect, from nothing): {NODES} nodes x {ARTIFACTS} ({ten_art} artifacts) {ten_secs:.2} s; one node's {one_art} {one_secs:.2} s (ratio {:.1}); covobs report on that node's local directory {local_secs:.2} s",
        ten_secs / one_secs
    );
    Ok(json!({
        "nodes": NODES,
        "artifacts_per_node": ARTIFACTS,
        "node_interval": NODE_INTERVAL,
        "report_every": REPORT_EVERY,
        "latency_ms": {"artifacts": lat.len(), "p50": p50, "p99": p99, "max": max},
        "fleet_report_s": {"ten_nodes": ten_secs, "ten_nodes_artifacts": ten_art,
            "one_node": one_secs, "one_node_artifacts": one_art,
            "local_report_one_node": local_secs},
    }))
}

pub fn run() -> Result<()> {
    println!("\n== fleet (NATS JetStream on loopback)");
    let tmp = std::env::temp_dir().join(format!("covobs-bench-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| {
        let nats = Nats::start(&tmp.join("nats-store"))?;
        let url = nats.url();
        let tp = throughput(&url, &tmp)?;
        let fl = fleet(&url, &tmp)?;
        Ok::<_, anyhow::Error>(json!({"throughput": tp, "fleet": fl}))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    save("fleet", &result?)
}
