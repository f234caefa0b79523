//! The stream's sinks: each on its own queue. A deliberately slow sink (the hidden test-only
//! `COVOBS_DEBUG_SLOW_SINK`, a second per item) while a target dumps 200 times a second never
//! slows the output directory or the ring-buffer reader; what it could not take is counted. And
//! the directory sink's group commit: artifacts per second with and without it (figures, no timed
//! assertion).
use std::{
    path::Path,
    process::Command,
    sync::Arc,
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
fn observe(tag: &str, slow_ms: Option<u64>) -> Run {
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
    if let Some(ms) = slow_ms {
        cmd.env("COVOBS_DEBUG_SLOW_SINK", ms.to_string());
    }
    let mut covobs = Covobs::spawn(cmd);
    covobs.wait_event(Duration::from_secs(90), "the 1000th artifact", |e| {
        e.kind() == "artifact" && e.u("seq") >= DUMPS
    });
    // SAFETY: kill on our own child: it returns from main and dumps at exit.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    // The only target exited: covobs ends by itself (after the slow sink's grace period).
    let status = covobs.wait(Duration::from_secs(60));
    let stderr = covobs.stderr();
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

    // The output directory has every event, and stdout (read promptly here) the same ones, line
    // for line: one order for every sink.
    let lines = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(Some(lines.len() as u64), counters["events"].as_u64());
    let stdout: Vec<String> = covobs.events().iter().map(Value::to_string).collect();
    let written: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    assert_eq!(stdout, written);
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
    assert_eq!(stdout_sink["dropped"].as_u64(), Some(0), "{counters}");
    assert_eq!(
        stdout_sink["delivered"].as_u64(),
        counters["events"].as_u64(),
        "stdout takes events only"
    );
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
    }
}

#[test]
fn a_slow_sink_never_stalls_the_directory_nor_the_ring_buffer_and_its_losses_are_counted() {
    require_root();
    let alone = observe("sinks-alone", None);
    let slowed = observe("sinks-slow", Some(1000));

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
    let figures = |r: &Run| {
        format!(
            "{} artifacts, dump_end -> durable p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            r.latencies_ms.len(),
            percentile(&r.latencies_ms, 50.0),
            percentile(&r.latencies_ms, 99.0),
            percentile(&r.latencies_ms, 100.0)
        )
    };
    println!("directory sink alone:           {}", figures(&alone));
    println!("with a sink taking 1 s an item: {}", figures(&slowed));
    println!(
        "slow sink: {delivered} delivered, {dropped} dropped (queue of {}), {abandoned} abandoned at exit, max backlog {}",
        slow["queue"], slow["max_backlog"]
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
