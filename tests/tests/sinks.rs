//! The stream's sinks: each on its own queue. A deliberately slow sink while a target dumps 200
//! times a second never slows the output directory or the ring-buffer reader; what it could not
//! take is counted and reported. Two slow sinks: the hidden test-only `COVOBS_DEBUG_SLOW_SINK` (a
//! second per item), and a real one, covobs' `--json` stdout into a pipe whose reader takes a
//! line a second. And the directory sink's group commit: artifacts per second with and without it
//! (figures, no timed assertion).
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use covobs_tests::{
    Covobs, EventExt, TempDir, artifacts, covobs_bin, of_kind, read_json, require_root,
    start_fixture,
};
use serde_json::Value;

/// Dumps to see through the directory in each run.
const DUMPS: u64 = 1000;

struct Run {
    latencies_ms: Vec<f64>,
    session: Value,
    stderr: String,
    /// What the slow stdout reader got, line by line.
    read_slowly: Vec<String>,
}

/// The slow sink of a run, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slow {
    None,
    /// The hidden debug sink, sleeping this many milliseconds per item.
    DebugSink(u64),
    /// covobs' stdout (`--json`) is a pipe whose reader sleeps a second per line.
    StdoutReader,
}

/// covobs with its stdout read a line a second, until `stop`: a consumer on a bad network.
struct SlowlyRead {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl SlowlyRead {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn covobs");
        let (lines, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let out = child.stdout.take().unwrap();
        let (l, s) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            while !s.load(Ordering::Relaxed) {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                l.lock().unwrap().push(line.trim_end().to_owned());
                std::thread::sleep(Duration::from_secs(1));
            }
            // The pipe closes here: what covobs still writes fails, as for a reader gone.
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, e) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Self {
            child,
            lines,
            stderr,
            stop,
        }
    }

    /// Wait until the output directory's events hold the `n`th artifact.
    fn wait_artifacts(&mut self, out: &Path, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
            let done = events.lines().any(|l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|e| e.kind() == "artifact" && e.u("seq") >= n)
            });
            if done {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "covobs exited before artifact {n}: {}",
                self.stderr()
            );
            assert!(Instant::now() < deadline, "no artifact {n} in {timeout:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait for covobs to exit, then stop reading.
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "covobs did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        self.stop.store(true, Ordering::Relaxed);
        // Its stderr to the end.
        std::thread::sleep(Duration::from_millis(300));
        status
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for SlowlyRead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// A target dumping every 5 ms on its own, observed until DUMPS artifacts, then stopped (its
/// exit-time dump included). Checks what must hold with or without a slow sink.
fn observe(tag: &str, slow: Slow) -> Run {
    let tmp = TempDir::new(tag);
    let profile = tmp.path().join("target.profraw");
    let out = tmp.path().join("out");
    let mut target = start_fixture(
        "llvm-rust-target",
        &["--self-dump-ms", "5"],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    let mut cmd = Command::new(covobs_bin());
    cmd.args(["attach", "--json", "--no-report", "--pid"])
        .arg(pid.to_string())
        .arg("--out")
        .arg(&out);
    if let Slow::DebugSink(ms) = slow {
        cmd.env("COVOBS_DEBUG_SLOW_SINK", ms.to_string());
    }
    // stdout read promptly (by the test's pump), or a line a second.
    let (mut covobs, mut slowly) = match slow {
        Slow::StdoutReader => (None, Some(SlowlyRead::spawn(cmd))),
        _ => (Some(Covobs::spawn(cmd)), None),
    };
    if let Some(c) = covobs.as_mut() {
        c.wait_event(Duration::from_secs(90), "the 1000th artifact", |e| {
            e.kind() == "artifact" && e.u("seq") >= DUMPS
        });
    }
    if let Some(s) = slowly.as_mut() {
        s.wait_artifacts(&out, DUMPS, Duration::from_secs(90));
    }
    // SAFETY: kill on our own child: it returns from main and dumps at exit.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    // The only target exited: covobs ends by itself (after the slow sink's grace period).
    let (status, stderr) = match (covobs.as_mut(), slowly.as_mut()) {
        (Some(c), _) => (c.wait(Duration::from_secs(60)), c.stderr()),
        (_, Some(s)) => (s.wait(Duration::from_secs(60)), s.stderr()),
        _ => unreachable!(),
    };
    assert!(status.success(), "{stderr}");

    let session = read_json(&out.join("session.json"));
    let counters = &session["counters"];
    assert_eq!(
        counters["ring_buffer_drops"].as_u64(),
        Some(0),
        "no ring-buffer drops: {counters}"
    );
    // Every dump seen has its artifact or a `lost` event.
    assert_eq!(
        counters["dumps_seen"].as_u64().unwrap(),
        counters["artifacts"].as_u64().unwrap() + counters["lost"].as_u64().unwrap(),
        "{counters}"
    );
    // Each artifact holds exactly the bytes its dump wrote into the target's file.
    let arts = artifacts(&out);
    assert!(arts.len() as u64 > DUMPS, "{} artifacts", arts.len());
    let file = std::fs::read(&profile).unwrap();
    for a in &arts {
        let data = a.data();
        let at = a.meta["source"]["offset"].as_u64().unwrap() as usize;
        assert_eq!(&file[at..at + data.len()], &data[..], "{}", a.meta);
    }

    // The output directory has every event, and stdout the same ones, line for line (read
    // promptly), or the first of them (read slowly, until covobs stopped): one order for every
    // sink.
    let lines = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(Some(lines.len() as u64), counters["events"].as_u64());
    let written: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    let read_slowly = slowly.as_ref().map(SlowlyRead::lines).unwrap_or_default();
    match covobs.as_mut() {
        Some(c) => {
            let stdout: Vec<String> = c.events().iter().map(Value::to_string).collect();
            assert_eq!(stdout, written);
        }
        None => {
            let stdout: Vec<String> = read_slowly
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
                .collect();
            assert!(!stdout.is_empty());
            assert_eq!(stdout[..], written[..stdout.len()]);
        }
    }
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        of_kind(&events, "artifact").len(),
        arts.len(),
        "one artifact event per artifact"
    );
    let lost = of_kind(&events, "lost");
    for l in &lost {
        println!("lost: {l}");
    }
    assert_eq!(
        of_kind(&events, "dump_end").len(),
        arts.len() + lost.len(),
        "every dump_end has its artifact or a lost event"
    );
    let latencies_ms = of_kind(&events, "artifact")
        .iter()
        .map(|e| e.u("latency_ns") as f64 / 1e6)
        .collect();

    let sinks = counters["sinks"].as_array().expect("counters.sinks");
    let primary = &sinks[0];
    assert_eq!(primary["name"], "output directory", "{counters}");
    assert_eq!(primary["primary"], true);
    assert_eq!(primary["dropped"].as_u64(), Some(0));
    assert_eq!(primary["abandoned"].as_u64(), Some(0));
    let stdout_sink = sinks
        .iter()
        .find(|s| s["name"] == "stdout")
        .expect("stdout");
    if slow != Slow::StdoutReader {
        assert_eq!(stdout_sink["dropped"].as_u64(), Some(0), "{counters}");
        assert_eq!(
            stdout_sink["delivered"].as_u64(),
            counters["events"].as_u64(),
            "stdout takes events only"
        );
    }
    assert!(
        session["resources"]["descriptors_peak"].as_u64().unwrap() > 0,
        "{}",
        session["resources"]
    );
    assert!(
        session["resources"]["descriptor_limit"].as_u64()
            == session["resources"]["descriptor_limit_hard"].as_u64(),
        "the soft limit raised to the hard one: {}",
        session["resources"]
    );
    println!("resources: {}", session["resources"]);
    Run {
        latencies_ms,
        session,
        stderr,
        read_slowly,
    }
}

fn figures(r: &Run) -> String {
    format!(
        "{} artifacts, dump_end -> durable p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        r.latencies_ms.len(),
        percentile(&r.latencies_ms, 50.0),
        percentile(&r.latencies_ms, 99.0),
        percentile(&r.latencies_ms, 100.0)
    )
}

#[test]
fn a_slow_sink_never_stalls_the_directory_nor_the_ring_buffer_and_its_losses_are_counted() {
    require_root();
    let alone = observe("sinks-alone", Slow::None);
    let slowed = observe("sinks-slow", Slow::DebugSink(1000));

    let counters = &slowed.session["counters"];
    let sinks = counters["sinks"].as_array().unwrap();
    let slow = sinks
        .iter()
        .find(|s| s["name"] == "debug-slow")
        .expect("the slow sink is reported");
    let offered = counters["events"].as_u64().unwrap() + counters["artifacts"].as_u64().unwrap();
    let (delivered, dropped, abandoned) = (
        slow["delivered"].as_u64().unwrap(),
        slow["dropped"].as_u64().unwrap(),
        slow["abandoned"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{slow}");
    assert!(abandoned > 0, "{slow}");
    // Every item is accounted for: taken, dropped or left (modules too, which carry no counter).
    assert!(
        delivered + dropped + abandoned >= offered,
        "{slow} vs {offered}"
    );
    assert!(
        slowed.stderr.contains("the debug-slow sink fell behind"),
        "{}",
        slowed.stderr
    );
    assert!(
        !alone.stderr.contains("fell behind"),
        "no warning without a slow sink: {}",
        alone.stderr
    );
    println!("directory sink alone:           {}", figures(&alone));
    println!("with a sink taking 1 s an item: {}", figures(&slowed));
    println!(
        "slow sink: {delivered} delivered, {dropped} dropped (queue of {}), {abandoned} abandoned at exit, max backlog {}",
        slow["queue"], slow["max_backlog"]
    );
}

#[test]
fn a_slow_stdout_reader_never_stalls_the_directory_nor_the_ring_buffer_and_its_backlog_is_reported()
{
    require_root();
    let alone = observe("sinks-stdout-alone", Slow::None);
    let slowed = observe("sinks-stdout-slow", Slow::StdoutReader);

    let counters = &slowed.session["counters"];
    let stdout = counters["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "stdout")
        .expect("the stdout sink is reported");
    let events = counters["events"].as_u64().unwrap();
    let (delivered, dropped, abandoned, backlog) = (
        stdout["delivered"].as_u64().unwrap(),
        stdout["dropped"].as_u64().unwrap(),
        stdout["abandoned"].as_u64().unwrap(),
        stdout["max_backlog"].as_u64().unwrap(),
    );
    // It fell behind: what it had not taken when covobs stopped is reported, not waited for.
    assert!(dropped + abandoned > 0, "{stdout}");
    assert!(backlog > 0, "{stdout}");
    // Every event is accounted for, but for the one line it was writing when covobs gave it
    // up (stuck in the pipe: neither delivered nor left in its queue).
    let accounted = delivered + dropped + abandoned;
    assert!(
        accounted <= events && events - accounted <= 1,
        "{stdout} vs {events} events"
    );
    // The reader got no more than the sink delivered (the pipe holds the rest).
    assert!(slowed.read_slowly.len() as u64 <= delivered, "{stdout}");
    assert!(
        slowed.stderr.contains("the stdout sink fell behind"),
        "{}",
        slowed.stderr
    );
    assert!(
        !alone.stderr.contains("fell behind"),
        "no warning with stdout read promptly: {}",
        alone.stderr
    );
    println!("stdout read promptly:      {}", figures(&alone));
    println!("stdout read a line a second: {}", figures(&slowed));
    println!(
        "stdout: {delivered} delivered ({} read), {dropped} dropped (queue of {}), {abandoned} abandoned at exit, max backlog {backlog}, of {events} events",
        slowed.read_slowly.len(),
        stdout["queue"]
    );
}

/// Artifacts per second through the directory sink alone, `in_flight` senders each waiting for
/// its artifact to be durable before the next (like that many targets).
fn throughput(dir: &Path, group_commit: usize, in_flight: usize, total: usize) -> f64 {
    use covobs::{
        collect::{Artifact, ArtifactMeta, FormatInfo, LocatedBy, ModuleMeta, SourceInfo, Trigger},
        layout::artifact::Runtime,
        stream::{DirSink, OutputModes, Pipeline, PrimarySink},
    };
    let sink = DirSink::create(dir, OutputModes::default())
        .expect("session dir")
        .with_group_commit(group_commit);
    let pipeline =
        Pipeline::new(Some(Box::new(sink) as Box<dyn PrimarySink>), Vec::new()).expect("pipeline");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let body = Arc::new(vec![0x5au8; 4096]);
    let started = Instant::now();
    let written = runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let tx = pipeline.sender();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in (t..total).step_by(in_flight) {
                    let mut data = body.to_vec();
                    data[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    let meta = ArtifactMeta {
                        seq: i as u64,
                        runtime: Runtime::Llvm,
                        pid: 1000 + t as u32,
                        tid: Some(1000 + t as u32),
                        comm: Some("bench".into()),
                        trigger: Some(Trigger::SelfDump.into()),
                        start_ns: Some(0),
                        end_ns: Some(0),
                        collected_ns: Some(0),
                        bytes: Some(data.len() as u64),
                        checksum: Some(covobs::collect::checksum(&data)),
                        valid: true,
                        invalid_reason: None,
                        file: format!("{i:06}-llvm.profraw"),
                        source: SourceInfo {
                            path: "/bench".into(),
                            offset: 0,
                            inode: None,
                            dev: None,
                            located_by: Some(LocatedBy::Kernel),
                        },
                        format: FormatInfo {
                            name: "profraw".into(),
                            version: 10,
                        },
                        module: Some(ModuleMeta {
                            path: Some("/bench".into()),
                            build_id: None,
                            copy: None,
                            producer: None,
                            llvm_major: None,
                        }),
                        parts: Vec::new(),
                        snapshot: None,
                        kcov: None,
                        process_start_ns: None,
                        merged: None,
                        layout: covobs::layout::artifact::LAYOUT,
                    };
                    let durable = tx
                        .artifact(Artifact {
                            dir: format!("{}-bench", 1000 + t),
                            meta,
                            data: data.into(),
                            parts: Vec::new(),
                            extra: Vec::new(),
                        })
                        .await;
                    if let Ok(Ok(_)) = durable.await {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.expect("sender task");
        }
        ok
    });
    let secs = started.elapsed().as_secs_f64();
    runtime
        .block_on(pipeline.finish())
        .expect("pipeline finishes");
    assert_eq!(written, total, "every artifact answered durable");
    // Every artifact is there with its exact bytes.
    for i in 0..total {
        let t = i % in_flight;
        let path = dir.join(format!("{}-bench/{i:06}-llvm.profraw", 1000 + t));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(data[..8], (i as u64).to_le_bytes());
        assert_eq!(data.len(), body.len());
    }
    total as f64 / secs
}

#[test]
fn group_commit_figures_artifacts_per_second_through_the_directory() {
    let tmp = TempDir::new("group-commit");
    let total = 600;
    println!("artifacts of 4 KiB per second through the output directory (fsync'ed):");
    for in_flight in [1, 10, 100] {
        let mut line = format!("  {in_flight:>3} senders:");
        for (label, group) in [("each synced alone", 1), ("group commit", 64)] {
            let dir = tmp.path().join(format!("s-{in_flight}-{group}"));
            let rate = throughput(&dir, group, in_flight, total);
            line.push_str(&format!("  {label} {rate:>8.0}/s"));
        }
        println!("{line}");
    }
}
