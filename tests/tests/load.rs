//! covobs under load on a saturated machine: every core kept busy by other processes (busy loops,
//! as fuzzers would), while (a) 20 targets each dump on their own every 10 ms for 30 s and (b) 100
//! targets are asked for a dump every 100 ms for 60 s. Each run: exit 0, the report written (by
//! the attach itself, at its exit), all targets alive, every dump_end an artifact or a `lost`
//! event, no `lost` reason that says a target is gone, none that is a descriptor error, and every
//! artifact byte for byte the profile its target appended at the offset it names (offsets
//! strictly increasing per target, contiguous where nothing was lost: no dump read as another's).
//! Figures printed: dumps, artifacts, lost by reason, latency dump end to durable (p50/p99),
//! covobs' peak RSS and descriptors. No timed assertion.
//!
//! And covobs stopped (SIGSTOP) for 5 s while 20 targets dump every 5 ms: what the kernel could
//! not deliver is counted (session.json's ring_buffer_drops equals the `lost` events that say
//! so), and every dump covobs saw start or end is accounted, nothing silent.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use covobs_tests::{
    Covobs, Driven, EventExt, TempDir, alive, copy_as, covobs_bin, fixture, of_kind, read_json,
    require_root, start_program, unique_name,
};
use serde_json::Value;

/// Busy loops, one per core, in processes of their own; killed when dropped.
struct Busy(Vec<Child>);

impl Busy {
    fn every_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Load {
    tag: &'static str,
    targets: usize,
    target_args: &'static [&'static str],
    covobs_args: &'static [&'static str],
    seconds: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Reasons with their numbers blanked, counted.
fn reasons(lost: &[&Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in lost {
        let shape: String = l
            .s("reason")
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        *out.entry(shape).or_default() += l.u("count");
    }
    out
}

/// Losses that stand for a dump that ended (not a trigger covobs gave up, nor a dump whose end
/// covobs stopped before seeing, nor an artifact written and found invalid: that one has both).
fn is_ended_dump_loss(l: &Value) -> bool {
    l.s("what") == "llvm"
        && !l.s("reason").contains("while it ran")
        && !l.s("reason").contains("its end was not seen")
        && !l.s("reason").contains(" is not valid ")
}

fn lost_with(lost: &[&Value], words: &str) -> u64 {
    lost.iter()
        .filter(|l| l.s("reason").contains(words))
        .map(|l| l.u("count"))
        .sum()
}

/// One load at a time: each keeps every core busy on its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(load: Load) {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let tmp = TempDir::new(load.tag);
    let name = unique_name("load");
    let exe = copy_as(&fixture("llvm-rust-target"), tmp.path(), &name);
    let out = tmp.path().join("out");
    let busy = Busy::every_core();
    let mut targets: Vec<Driven> = (0..load.targets)
        .map(|i| {
            let profile = tmp.path().join(format!("t{i}.profraw"));
            start_program(
                &exe,
                load.target_args,
                &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
                tmp.path(),
            )
        })
        .collect();
    let targets_started = t0.elapsed();
    let mut cmd = Command::new(covobs_bin());
    cmd.args(["attach", "--json", "--name", &name, "--out"])
        .arg(&out)
        .arg("--duration")
        .arg(format!("{}s", load.seconds))
        .args(load.covobs_args);
    let started = Instant::now();
    let mut covobs = Covobs::spawn(cmd);
    // A hang detector only, far above the run and its documented stop bound.
    let status = covobs.wait(Duration::from_secs(load.seconds + 300));
    let covobs_ran = started.elapsed();
    let stderr = covobs.stderr();
    drop(busy);
    assert!(status.success(), "{status}: {stderr}");
    let dead: Vec<i32> = targets
        .iter()
        .map(Driven::pid)
        .filter(|pid| !alive(*pid))
        .collect();
    assert!(dead.is_empty(), "targets died: {dead:?}");
    for t in &mut targets {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(t.pid(), libc::SIGKILL) };
        t.wait();
    }

    let events: Vec<Value> = std::fs::read_to_string(out.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    let session = read_json(&out.join("session.json"));
    let dump_ends = of_kind(&events, "dump_end");
    let artifacts = of_kind(&events, "artifact");
    let lost = of_kind(&events, "lost");
    let mut latencies: Vec<f64> = artifacts
        .iter()
        .map(|a| a.u("latency_ns") as f64 / 1e6)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let res = &session["resources"];
    println!(
        "{}: {} targets x {:?} for {} s, every core busy: {} dump_end, {} artifacts ({:.0}/s), {} lost; latency dump end to durable p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; ring-buffer drops {}; covobs peak RSS {:.1} MB, descriptors peak {} (limit {})",
        load.tag,
        load.targets,
        load.target_args,
        load.seconds,
        dump_ends.len(),
        artifacts.len(),
        artifacts.len() as f64 / load.seconds as f64,
        lost.iter().map(|l| l.u("count")).sum::<u64>(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        session["counters"]["ring_buffer_drops"],
        res["rss_peak_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
        res["descriptors_peak"],
        res["descriptor_limit"],
    );
    for (r, n) in reasons(&lost) {
        println!("  lost {n:>6}: {r}");
    }
    println!(
        "  (test time: targets started in {:.1} s, covobs ran {:.1} s with its report, {:.1} s in all)",
        targets_started.as_secs_f64(),
        covobs_ran.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    // The report, written by the attach at its exit.
    let summary = read_json(&out.join("report/summary.json"));
    assert!(summary.is_object(), "report/summary.json");

    // Nothing false, nothing of covobs' blamed on the targets, no descriptor errors.
    for l in &lost {
        let r = l.s("reason");
        assert!(
            !r.contains("gone") && !r.contains("exited") && !r.contains("replaced"),
            "every target was alive: {l}"
        );
        assert!(
            !r.contains("Too many open files") && !r.contains("os error 24"),
            "descriptor error: {l}"
        );
    }
    assert!(!stderr.contains("Too many open files"), "{stderr}");

    // Every dump_end is an artifact or a lost event, per target.
    let mut per_pid: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for e in &dump_ends {
        per_pid.entry(e.u("pid")).or_default().0 += 1;
    }
    for a in &artifacts {
        per_pid.entry(a.u("pid")).or_default().1 += 1;
    }
    for l in lost.iter().filter(|l| is_ended_dump_loss(l)) {
        per_pid.entry(l.u("pid")).or_default().2 += l.u("count");
    }
    assert!(!dump_ends.is_empty());
    for (pid, (ends, arts, lost)) in &per_pid {
        assert_eq!(
            *ends,
            arts + lost,
            "process {pid}: {ends} dump_end, {arts} artifacts, {lost} lost"
        );
    }

    // Each artifact is the profile its target appended at the offset it names.
    let mut by_pid: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for a in &artifacts {
        by_pid.entry(a.u("pid")).or_default().push(*a);
    }
    let mut checked = 0;
    for (pid, mut list) in by_pid {
        list.sort_by_key(|a| a.u("seq"));
        let had_losses = per_pid.get(&pid).is_some_and(|c| c.2 > 0);
        let mut next: Option<u64> = None;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for a in list {
            let path = Path::new(a.s("source_path"));
            let file = files
                .entry(a.s("source_path").to_owned())
                .or_insert_with(|| std::fs::read(path).expect("the target's profile file"));
            let (offset, bytes) = (a.u("offset"), a.u("bytes"));
            let collected = std::fs::read(out.join(a.s("file"))).expect("artifact");
            assert_eq!(
                &file[offset as usize..(offset + bytes) as usize],
                &collected[..],
                "{}: not the bytes at {offset} of {}",
                a.s("file"),
                path.display()
            );
            if let Some(n) = next {
                assert!(offset >= n, "{}: read again at {offset}", a.s("file"));
                if !had_losses {
                    assert_eq!(
                        offset,
                        n,
                        "{} (trigger {}): a profile between {n} and {offset} went to no dump",
                        a.s("file"),
                        a.s("trigger")
                    );
                }
            }
            next = Some(offset + bytes);
            checked += 1;
        }
    }
    println!("  {checked} artifacts equal the bytes their targets appended");
}

#[test]
#[ignore = "does not hold yet (issue 14): on busy cores covobs' stop outlasts its bound; run with --ignored"]
fn twenty_targets_dumping_on_their_own_every_10ms_on_busy_cores() {
    run(Load {
        tag: "load-self-dumps",
        targets: 20,
        target_args: &["--self-dump-ms", "10"],
        covobs_args: &[],
        seconds: 30,
    });
}

#[test]
#[ignore = "does not hold yet (issue 14): on busy cores covobs' stop outlasts its bound; run with --ignored"]
fn a_hundred_targets_asked_for_a_dump_every_100ms_on_busy_cores() {
    run(Load {
        tag: "load-interval",
        targets: 100,
        target_args: &[],
        covobs_args: &["--interval", "100ms"],
        seconds: 60,
    });
}

#[test]
fn covobs_stopped_for_5s_while_targets_dump_every_5ms_counts_what_it_missed() {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = TempDir::new("load-sigstop");
    let name = unique_name("stopd");
    let exe = copy_as(&fixture("llvm-rust-target"), tmp.path(), &name);
    let out = tmp.path().join("out");
    let mut targets: Vec<Driven> = (0..20)
        .map(|i| {
            let profile = tmp.path().join(format!("t{i}.profraw"));
            start_program(
                &exe,
                &["--self-dump-ms", "5"],
                &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
                tmp.path(),
            )
        })
        .collect();
    let mut cmd = Command::new(covobs_bin());
    cmd.args(["attach", "--json", "--no-report", "--name", &name, "--out"])
        .arg(&out)
        .args(["--duration", "12s"]);
    let mut covobs = Covobs::spawn(cmd);
    covobs.wait_event(Duration::from_secs(60), "a first artifact", |e| {
        e.kind() == "artifact"
    });
    covobs.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    covobs.signal(libc::SIGCONT);
    let status = covobs.wait(Duration::from_secs(300));
    let stderr = covobs.stderr();
    assert!(status.success(), "{status}: {stderr}");
    for t in &mut targets {
        assert!(alive(t.pid()), "target {} died", t.pid());
        // SAFETY: kill on our own child.
        unsafe { libc::kill(t.pid(), libc::SIGKILL) };
        t.wait();
    }
    let events: Vec<Value> = std::fs::read_to_string(out.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    let session = read_json(&out.join("session.json"));
    let lost = of_kind(&events, "lost");
    let starts = of_kind(&events, "dump_start").len() as u64;
    let ends = of_kind(&events, "dump_end").len() as u64;
    let artifacts = of_kind(&events, "artifact").len() as u64;
    let dropped: Vec<&&Value> = lost
        .iter()
        .filter(|l| l.s("reason") == "eBPF ring buffer full")
        .collect();
    let drops: u64 = dropped.iter().map(|l| l.u("count")).sum();
    println!(
        "SIGSTOP 5 s, 20 targets dumping every 5 ms: {starts} dump_start, {ends} dump_end, {artifacts} artifacts; ring-buffer drops {drops} ({})",
        dropped
            .iter()
            .map(|l| format!("{} {}", l.u("count"), l.s("what")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (r, n) in reasons(&lost) {
        println!("  lost {n:>6}: {r}");
    }
    assert_eq!(
        session["counters"]["ring_buffer_drops"].as_u64(),
        Some(drops),
        "the drops counted in session.json are the ones the events report"
    );
    // Every dump_end: an artifact or a lost event.
    let ended_lost: u64 = lost
        .iter()
        .filter(|l| is_ended_dump_loss(l))
        .map(|l| l.u("count"))
        .sum();
    assert_eq!(ends, artifacts + ended_lost, "every dump_end is accounted");
    // Every dump_start: its dump_end, or a lost event saying its end was not seen.
    let startless = lost_with(&lost, "its start was not seen");
    let endless = lost_with(&lost, "its end was not seen")
        + lost_with(&lost, "while it ran")
        + lost_with(&lost, "exited in the middle of");
    assert_eq!(
        starts,
        ends - startless + endless,
        "every dump_start is accounted"
    );
    for l in &lost {
        let r = l.s("reason");
        assert!(!r.contains("gone") && !r.contains("replaced"), "{l}");
    }
}
