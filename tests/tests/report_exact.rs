//! Exact counts (docs/output.md, "Exact counts"): real dumps of the Rust LLVM fixture laid out as
//! sessions, reported by `covobs report`, against what llvm-profdata and llvm-cov say of the
//! states that should count: a process dumped N times without reset counts as its last dump
//! (checked against `llvm-profdata show --all-functions --counts` of that dump), with
//! `--reset-after-dump` as the sum of its dumps, a restarted target as both runs, and dumps
//! mixed with snapshots of one process never twice.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use covobs_tests::*;
use serde_json::{Value, json};

const FIXTURE: &str = "llvm-rust-target";

/// One run of the fixture that dumps on its own every `every_ms` until its profile file holds
/// at least `dumps` profiles, then is stopped (its exit-time dump is the last profile).
/// Returns (pid, process start ns, profiles in order).
fn run_dumps(work: &Path, tag: &str, every_ms: u64, dumps: usize) -> Run {
    let file = work.join(format!("{tag}.profraw"));
    let every = every_ms.to_string();
    let args = ["--self-dump-ms", every.as_str()];
    let mut target = start_fixture(
        FIXTURE,
        &args,
        &[("LLVM_PROFILE_FILE", file.to_str().expect("utf-8"))],
        work,
    );
    let pid = target.pid();
    let start = covobs::target::start_boot_ns(pid).expect("start time of the target");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = fs::read(&file)
            .map(|b| complete_profiles(&b).len())
            .unwrap_or(0);
        if n >= dumps {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tag}: only {n} dumps after 60 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(target.wait().success(), "{tag}: the target failed");
    let profiles = split_profiles(&fs::read(&file).expect("profile file"));
    Run {
        pid: pid as u32,
        start,
        profiles,
    }
}

struct Run {
    pid: u32,
    start: u64,
    profiles: Vec<Vec<u8>>,
}

/// A session directory laid out as `covobs attach` writes it, for the fixture's module.
struct Session {
    dir: PathBuf,
    module: Value,
    seq: u64,
}

impl Session {
    fn new(dir: &Path) -> Self {
        let bin = fixture(FIXTURE);
        let notes = run_ok(Command::new("readelf").arg("-n").arg(&bin));
        let id = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("build id")
            .trim()
            .to_string();
        let copy = format!("modules/{id}/{FIXTURE}");
        fs::create_dir_all(dir.join(format!("modules/{id}"))).expect("mkdir");
        fs::copy(&bin, dir.join(&copy)).expect("copy module");
        Self {
            dir: dir.to_path_buf(),
            module: json!({"path": bin.to_string_lossy(), "build_id": id, "copy": copy}),
            seq: 0,
        }
    }

    /// The next artifact: `bytes` of process `run`, as a dump (`signal`) or a `snapshot`.
    fn add(&mut self, run: &Run, bytes: &[u8], trigger: &str) {
        self.seq += 1;
        let seq = self.seq;
        let pdir = self.dir.join(format!("{}-target", run.pid));
        fs::create_dir_all(&pdir).expect("mkdir");
        let stem = format!("{seq:06}-llvm");
        fs::write(pdir.join(format!("{stem}.profraw")), bytes).expect("artifact");
        let meta = json!({
            "seq": seq, "runtime": "llvm", "pid": run.pid, "tid": run.pid, "comm": "target",
            "trigger": trigger, "start_ns": seq * 1000, "end_ns": seq * 1000 + 10,
            "collected_ns": seq * 1000 + 20, "bytes": bytes.len(), "valid": true,
            "file": format!("{stem}.profraw"), "process_start_ns": run.start,
            "format": {"name": "llvm-raw-profile", "version": 11},
            "module": self.module,
        });
        fs::write(pdir.join(format!("{stem}.json")), meta.to_string()).expect("metadata");
    }

    /// `covobs report` (LCOV and JSON): the LCOV and summary.json.
    fn report(&self) -> (String, Value) {
        let out = Command::new(covobs_bin())
            .args(["report", "--format", "lcov,json"])
            .arg(&self.dir)
            .output()
            .expect("covobs report");
        assert!(
            out.status.success(),
            "covobs report: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lcov = fs::read_to_string(self.dir.join("report/coverage.lcov")).expect("lcov");
        (lcov, read_json(&self.dir.join("report/summary.json")))
    }
}

/// What llvm-cov says of these raw profiles merged (counts add up).
fn oracle(work: &Path, profiles: &[&[u8]]) -> String {
    let tools = llvm_tools(FIXTURE);
    let mut files = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        let f = work.join(format!("oracle-{i}.profraw"));
        fs::write(&f, p).expect("write");
        files.push(f);
    }
    let profdata = work.join("oracle.profdata");
    run_ok(
        Command::new(&tools.profdata)
            .args(["merge", "-sparse", "-o"])
            .arg(&profdata)
            .args(&files),
    );
    run_ok(
        Command::new(&tools.cov)
            .args(["export", "-format=lcov"])
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(fixture(FIXTURE)),
    )
}

/// Function name -> execution count, as `llvm-profdata show --all-functions --counts` prints it.
fn show_counts(work: &Path, profile: &[u8]) -> BTreeMap<String, u64> {
    let tools = llvm_tools(FIXTURE);
    let f = work.join("show.profraw");
    fs::write(&f, profile).expect("write");
    let text = run_ok(
        Command::new(&tools.profdata)
            .args(["show", "--all-functions", "--counts"])
            .arg(&f),
    );
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("    ") && t.ends_with(':') {
            name = Some(t.trim_end_matches(':').to_string());
        } else if let (Some(n), Some(c)) = (&name, t.strip_prefix("Function count: ")) {
            out.insert(n.clone(), c.parse().expect("count"));
        }
    }
    assert!(!out.is_empty(), "nothing in llvm-profdata show: {text}");
    out
}

/// FNDA counts of an LCOV tracefile: function name -> count (the sum when a name repeats).
fn fnda(lcov: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in lcov.lines().filter_map(|l| l.strip_prefix("FNDA:")) {
        let (c, n) = l.split_once(',').expect("FNDA");
        *out.entry(n.to_string()).or_default() += c.parse::<u64>().expect("count");
    }
    out
}

/// llvm-cov prints a negative region count (a dump taken while a function ran: a counter
/// subtracted before its twin was incremented) as a u64 above i64::MAX; covobs' report says 0.
fn without_negative_counts(lcov: &str) -> String {
    lcov.lines()
        .map(|l| match l.rsplit_once(',') {
            Some((head, n))
                if (l.starts_with("DA:") || l.starts_with("BRDA:") || l.starts_with("FNDA:"))
                    && n.parse::<u64>().is_ok_and(|n| i64::try_from(n).is_err()) =>
            {
                format!("{head},0\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

fn assert_lcov_eq(ours: &str, theirs: &str, what: &str) {
    let theirs = &without_negative_counts(theirs);
    if ours != theirs {
        let first = ours
            .lines()
            .zip(theirs.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{what}: covobs' LCOV differs from llvm-cov's at line {}: {:?} vs {:?}",
            first + 1,
            ours.lines().nth(first),
            theirs.lines().nth(first)
        );
    }
}

#[test]
fn dumps_without_reset_count_as_the_last_dump() {
    require_root();
    let tmp = TempDir::new("exact-cumulative");
    let work = tmp.path();
    let run = run_dumps(work, "cumulative", 25, 21);
    assert!(run.profiles.len() >= 21);
    for n in [1usize, 5, 20] {
        let dir = work.join(format!("session-{n}"));
        let mut s = Session::new(&dir);
        for p in &run.profiles[..n] {
            s.add(&run, p, "self");
        }
        let (ours, summary) = s.report();
        let last = &run.profiles[n - 1];
        assert_lcov_eq(&ours, &oracle(work, &[last]), &format!("{n} dumps"));
        // Every function's count is the one the runtime's own last dump has.
        let ours = fnda(&ours);
        let shown = show_counts(work, last);
        let mut compared = 0;
        for (name, count) in &shown {
            if let Some(c) = ours.get(name) {
                assert_eq!(c, count, "{n} dumps: {name}");
                compared += 1;
            }
        }
        assert!(
            compared > 10,
            "{n} dumps: only {compared} functions compared"
        );
        assert_eq!(summary["artifacts"]["reported"], n as u64);
    }
}

/// Resets are seen in the data: a counter lower than in the process's previous state. The
/// target resets after each dump and works less between each dump and the next (intervals of
/// 800, 400, ... ms), so its main loop's counters drop at every reset. (A reset after which
/// every counter reaches its previous value again before the next dump cannot be told from no
/// reset at all; docs/output.md says so.)
#[test]
fn dumps_with_reset_add_up() {
    require_root();
    let tmp = TempDir::new("exact-reset");
    let work = tmp.path();
    let file = work.join("reset.profraw");
    let mut target = start_fixture(
        FIXTURE,
        &["--reset-after-dump"],
        &[("LLVM_PROFILE_FILE", file.to_str().expect("utf-8"))],
        work,
    );
    let pid = target.pid();
    let run = Run {
        pid: pid as u32,
        start: covobs::target::start_boot_ns(pid).expect("start time"),
        profiles: Vec::new(),
    };
    for (dumps, ms) in [800u64, 400, 200, 100, 50].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(ms));
        // SAFETY: signalling our own child, which handles SIGUSR2.
        unsafe { libc::kill(pid, libc::SIGUSR2) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read(&file)
            .map(|b| complete_profiles(&b).len())
            .unwrap_or(0)
            <= dumps
        {
            assert!(Instant::now() < deadline, "no dump after SIGUSR2");
            thread::sleep(Duration::from_millis(5));
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    target.wait();
    let profiles = split_profiles(&fs::read(&file).expect("profile file"));
    assert_eq!(profiles.len(), 5);
    let dir = work.join("session");
    let mut s = Session::new(&dir);
    for p in &profiles {
        s.add(&run, p, "signal");
    }
    let (ours, _) = s.report();
    let all: Vec<&[u8]> = profiles.iter().map(Vec::as_slice).collect();
    assert_lcov_eq(&ours, &oracle(work, &all), "dumps with resets");
}

#[test]
fn a_restarted_target_adds_both_runs() {
    require_root();
    let tmp = TempDir::new("exact-restart");
    let work = tmp.path();
    let first = run_dumps(work, "first", 25, 4);
    let second = run_dumps(work, "second", 25, 6);
    assert_ne!((first.pid, first.start), (second.pid, second.start));
    let dir = work.join("session");
    let mut s = Session::new(&dir);
    for p in &first.profiles {
        s.add(&first, p, "self");
    }
    for p in &second.profiles {
        s.add(&second, p, "self");
    }
    let (ours, _) = s.report();
    let lasts = [
        first.profiles.last().expect("first").as_slice(),
        second.profiles.last().expect("second").as_slice(),
    ];
    assert_lcov_eq(&ours, &oracle(work, &lasts), "two runs");
    // The same pid again is another process when its start time differs.
    let dir = work.join("session-same-pid");
    let mut s = Session::new(&dir);
    let reused = Run {
        pid: first.pid,
        start: first.start + 1,
        profiles: Vec::new(),
    };
    for p in &first.profiles {
        s.add(&first, p, "self");
    }
    for p in &second.profiles {
        s.add(&reused, p, "self");
    }
    let (ours, _) = s.report();
    assert_lcov_eq(&ours, &oracle(work, &lasts), "a reused pid");
}

#[test]
fn signal_dumps_and_snapshots_of_one_process_never_double_count() {
    require_root();
    let tmp = TempDir::new("exact-mixed");
    let work = tmp.path();
    let file = work.join("mixed.profraw");
    let mut target = start_fixture(
        FIXTURE,
        &[],
        &[("LLVM_PROFILE_FILE", file.to_str().expect("utf-8"))],
        work,
    );
    let pid = target.pid();
    let start = covobs::target::start_boot_ns(pid).expect("start time");
    let run = Run {
        pid: pid as u32,
        start,
        profiles: Vec::new(),
    };
    let dir = work.join("session");
    let mut s = Session::new(&dir);
    // SIGUSR2 dumps (the fixture dumps from its loop) and `covobs snapshot`s, interleaved.
    let mut dumps_seen = 0;
    for round in 0..4 {
        // SAFETY: signalling our own child, which handles SIGUSR2.
        unsafe { libc::kill(pid, libc::SIGUSR2) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let dumps = loop {
            let d = fs::read(&file)
                .map(|b| complete_profiles(&b))
                .unwrap_or_default();
            if d.len() > dumps_seen {
                break d;
            }
            assert!(Instant::now() < deadline, "no dump after SIGUSR2");
            thread::sleep(Duration::from_millis(10));
        };
        dumps_seen = dumps.len();
        s.add(&run, dumps.last().expect("dump"), "signal");
        let snap = work.join(format!("snap-{round}.profraw"));
        let out = Command::new(covobs_bin())
            .args(["snapshot", "--pid", &pid.to_string(), "--out"])
            .arg(&snap)
            .output()
            .expect("covobs snapshot");
        assert!(
            out.status.success(),
            "covobs snapshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.add(&run, &fs::read(&snap).expect("snapshot"), "snapshot");
        thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(target.wait().success());
    // The exit-time dump ends the session: it holds everything the process counted.
    let all = split_profiles(&fs::read(&file).expect("profile file"));
    let last = all.last().expect("exit dump");
    s.add(&run, last, "exit");
    let (ours, _) = s.report();
    assert_lcov_eq(&ours, &oracle(work, &[last]), "dumps and snapshots");
}

/// A `%m` merge pool: the runtime merges the file into its counters before each write, so every
/// dump holds the earlier content again (and the pool held an earlier run's counts before the
/// process started). covobs records what each dump merged and the report subtracts it: the
/// functions the fixture runs a known number of times keep those counts.
#[test]
fn a_merge_pool_is_not_counted_twice() {
    require_root();
    let tmp = TempDir::new("exact-pool");
    let work = tmp.path();
    let pattern = work.join("pool-%m.profraw");
    let env = [("LLVM_PROFILE_FILE", pattern.to_str().expect("utf-8"))];
    // An earlier run leaves its counts in the pool.
    let mut earlier = start_fixture(FIXTURE, &["--exit-after-ms", "300"], &env, work);
    assert!(earlier.wait().success());
    let mut target = start_fixture(FIXTURE, &["--self-dump-ms", "1500"], &env, work);
    let pid = target.pid();
    let out = work.join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    covobs.wait_event(Duration::from_secs(30), "three self dumps", |e| {
        e.kind() == "artifact" && e.u("seq") == 3
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(target.wait().success());
    assert!(
        covobs.wait(Duration::from_secs(30)).success(),
        "{}",
        covobs.stderr()
    );
    let arts = artifacts(&out);
    assert!(arts.len() >= 4, "{} artifacts", arts.len());
    // The first dump merged what the pool held before (kept beside it), each later one the
    // previous artifact.
    let first = &arts[0].meta["merged"];
    assert!(first["file"].is_string(), "{}", arts[0].meta);
    assert!(arts[0].meta["process_start_ns"].is_u64());
    for (i, a) in arts.iter().enumerate().skip(1) {
        assert_eq!(
            a.meta["merged"]["seq"],
            arts[i - 1].meta["seq"],
            "{}",
            a.meta
        );
    }
    let report = Command::new(covobs_bin())
        .args(["report", "--format", "lcov"])
        .arg(&out)
        .output()
        .expect("covobs report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let lcov = fs::read_to_string(out.join("report/coverage.lcov")).expect("lcov");
    let counts = fnda(&lcov);
    let by_suffix = |s: &str| {
        counts
            .iter()
            .find(|(n, _)| n.ends_with(s))
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no function *{s} in {counts:?}"))
    };
    // main ran once and the handlers were installed three times, in this process.
    assert_eq!(by_suffix("4main"), 1);
    assert_eq!(by_suffix("7signals7install"), 3);
    // Without the subtraction the last dump says more: the pool's content is in it.
    let last = arts.last().expect("last").data();
    let shown = show_counts(work, &last);
    let main = shown
        .iter()
        .find(|(n, _)| n.ends_with("4main"))
        .map(|(_, c)| *c)
        .expect("main in the last dump");
    assert!(
        main > 1,
        "the pool did not inflate the dumps (main: {main})"
    );
}
