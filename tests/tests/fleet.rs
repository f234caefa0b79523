//! Fleets (docs/fleet.md) against a real nats-server (Debian's package) that each test starts
//! itself: JetStream, a temporary store directory, a free loopback port. covobs nodes (separate
//! processes, each with its own --node) attach to real fixture targets and publish; `covobs
//! collect` builds the fleet's session directory, whose merged LCOV must equal the sum of the
//! nodes' own session reports, exactly.
use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);
const FIXTURE: &str = "llvm-rust-target";

/// A nats-server of the test's own.
struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    auth: Option<(String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Nats {
    fn start(dir: &Path, auth: Option<(&str, &str)>) -> Self {
        // Never skipped: without nats-server the fleet tests fail here.
        let bin = nats_server().expect(
            "nats-server is not installed (on the PATH or in /usr/sbin): apt-get install -y nats-server (./dev setup does)",
        );
        let mut n = Self {
            bin,
            child: None,
            port: free_port(),
            store: dir.join("nats-store"),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        n.restart();
        n
    }

    fn restart(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(&self.store)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((u, p)) = &self.auth {
            cmd.args(["--user", u, "--pass", p]);
        }
        self.child = Some(cmd.spawn().expect("start nats-server"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        match &self.auth {
            Some((u, p)) => format!("nats://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nats-server on the PATH, or where Debian's package puts it (/usr/sbin, which a user's PATH
/// may lack).
fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// One node: `covobs attach --name` on two processes of one renamed copy of the fixture.
struct Node {
    covobs: Covobs,
    targets: Vec<Driven>,
    out: PathBuf,
}

fn start_node(tmp: &Path, nats: &str, node: &str, duration: &str, extra: &[&str]) -> Node {
    let name = unique_name("flt");
    let work = tmp.join(node);
    std::fs::create_dir_all(&work).expect("mkdir");
    let bin = copy_as(&fixture(FIXTURE), &work, &name);
    let targets: Vec<Driven> = (0..2)
        .map(|i| {
            let profile = work.join(format!("t{i}-%p.profraw"));
            start_program(
                &bin,
                &[],
                &[("LLVM_PROFILE_FILE", profile.to_str().expect("utf-8"))],
                &work,
            )
        })
        .collect();
    // In a directory of its own, which stays empty when nothing is written locally.
    let local = work.join("local");
    std::fs::create_dir_all(&local).expect("mkdir");
    let out = local.join("session");
    let spool = tmp.join("spool");
    let mut args = vec![
        "attach",
        "--name",
        &name,
        "--interval",
        "300ms",
        "--duration",
        duration,
        "--out",
        out.to_str().expect("utf-8"),
        "--json",
        "--publish",
        nats,
        "--node",
        node,
        "--spool",
        spool.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let covobs = Covobs::start(&args);
    Node {
        covobs,
        targets,
        out,
    }
}

impl Node {
    fn finish(mut self) -> PathBuf {
        let status = self.covobs.wait(T);
        assert!(status.success(), "node failed: {}", self.covobs.stderr());
        drop(self.targets);
        self.out
    }
}

/// `covobs collect`; returns its stdout (exit 0 asserted). Prints how long it took.
fn collect(nats: &str, out: &Path) -> String {
    let before = if out.exists() { artifacts(out) } else { 0 };
    let started = Instant::now();
    let o = Command::new(covobs_bin())
        .args(["collect", nats, "--out"])
        .arg(out)
        .output()
        .expect("covobs collect");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "collect failed: {stderr}");
    let took = started.elapsed();
    let taken = artifacts(out) - before;
    eprintln!(
        "{stderr}figures: collect took {taken} new artifacts and wrote the report in {} ms ({:.0} artifacts/s)",
        took.as_millis(),
        taken as f64 / took.as_secs_f64()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// LCOV line counts: source file -> line -> count.
fn lcov_lines(path: &Path) -> BTreeMap<String, BTreeMap<u64, u64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut all = BTreeMap::new();
    let mut file = String::new();
    for l in text.lines() {
        if let Some(sf) = l.strip_prefix("SF:") {
            file = sf.to_owned();
        } else if let Some(da) = l.strip_prefix("DA:") {
            let mut it = da.split(',');
            let line: u64 = it.next().and_then(|x| x.parse().ok()).expect("DA line");
            let count: u64 = it.next().and_then(|x| x.parse().ok()).expect("DA count");
            *all.entry(file.clone())
                .or_insert_with(BTreeMap::new)
                .entry(line)
                .or_insert(0) += count;
        }
    }
    all
}

fn sum(maps: &[BTreeMap<String, BTreeMap<u64, u64>>]) -> BTreeMap<String, BTreeMap<u64, u64>> {
    let mut total: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for m in maps {
        for (f, lines) in m {
            let t = total.entry(f.clone()).or_default();
            for (l, c) in lines {
                *t.entry(*l).or_insert(0) += c;
            }
        }
    }
    total
}

/// Artifact metadata files of a session directory.
fn artifacts(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("ls").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir()
            && name
                .split('-')
                .next()
                .is_some_and(|p| p.parse::<u32>().is_ok())
        {
            for f in std::fs::read_dir(e.path()).expect("ls").flatten() {
                let f = f.file_name().to_string_lossy().into_owned();
                if f.ends_with(".json")
                    && f.split('-')
                        .next()
                        .is_some_and(|s| s.parse::<u64>().is_ok())
                {
                    n += 1;
                }
            }
        }
    }
    n
}

fn session_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("session.json")).expect("session.json"))
        .expect("session.json is JSON")
}

/// `covobs report --format lcov` on a directory (rewriting its report/coverage.lcov); it must succeed.
fn report_lcov(dir: &Path) {
    let out = Command::new(covobs_bin())
        .args(["report", "--format", "lcov"])
        .arg(dir)
        .output()
        .expect("covobs report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn total_hits(m: &BTreeMap<String, BTreeMap<u64, u64>>) -> u64 {
    m.values().flat_map(|l| l.values()).sum()
}

#[test]
fn three_nodes_add_up_exactly_and_a_restarted_collector_resumes() {
    require_root();
    let tmp = TempDir::new("fleet-three");
    let nats = Nats::start(tmp.path(), None);
    let url = nats.url();
    let fleet_dir = tmp.path().join("fleet");
    // Node a alone, then a collector that takes what the stream holds and exits.
    let a = start_node(tmp.path(), &url, "node-a", "2s", &[]).finish();
    let first = collect(&url, &fleet_dir);
    eprintln!("{first}");
    let after_a = artifacts(&fleet_dir);
    assert_eq!(
        after_a,
        artifacts(&a),
        "the first collect takes node a's artifacts"
    );
    // Nodes b and c at once; the collector, started again on its directory, resumes.
    let b = start_node(tmp.path(), &url, "node-b", "2s", &[]);
    let c = start_node(tmp.path(), &url, "node-c", "2s", &[]);
    let (b, c) = (b.finish(), c.finish());
    let second = collect(&url, &fleet_dir);
    eprintln!("{second}");
    let locals: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|d| lcov_lines(&d.join("report/coverage.lcov")))
        .collect();
    let fleet = lcov_lines(&fleet_dir.join("report/coverage.lcov"));
    let expected = sum(&locals);
    let local_artifacts: Vec<usize> = [&a, &b, &c].iter().map(|d| artifacts(d)).collect();
    eprintln!(
        "nodes' artifacts {local_artifacts:?}, fleet's {}; hits per node {:?}, fleet {}",
        artifacts(&fleet_dir),
        locals.iter().map(total_hits).collect::<Vec<_>>(),
        total_hits(&fleet)
    );
    assert_eq!(artifacts(&fleet_dir), local_artifacts.iter().sum::<usize>());
    assert!(total_hits(&fleet) > 0);
    assert_eq!(
        fleet, expected,
        "the fleet's LCOV is the sum of the nodes' LCOV"
    );
    // `covobs report` reads the fleet directory like any other and writes the same.
    report_lcov(&fleet_dir);
    assert_eq!(
        lcov_lines(&fleet_dir.join("report/coverage.lcov")),
        expected
    );
    // Per node: three nodes, each with its session ended and its figures.
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(fleet_dir.join("fleet/nodes.json")).expect("nodes.json"),
    )
    .expect("JSON");
    for (n, dir) in [("node-a", &a), ("node-b", &b), ("node-c", &c)] {
        assert_eq!(
            nodes[n]["collected"]["artifacts"].as_u64(),
            Some(artifacts(dir) as u64),
            "{n}"
        );
        assert_eq!(
            nodes[n]["collected"]["sessions_ended"].as_u64(),
            Some(1),
            "{n}"
        );
        let local = session_json(dir);
        eprintln!("{n}: {}", local["fleet"]);
        let secs = (local["ended_unix_ns"].as_u64().unwrap_or(0)
            - local["started_unix_ns"].as_u64().unwrap_or(0)) as f64
            / 1e9;
        eprintln!(
            "figures: {n} published {} messages and {} object bytes in a {secs:.1} s session (directory sink: {} artifacts)",
            local["fleet"]["published"],
            local["fleet"]["object_bytes"],
            artifacts(dir)
        );
        assert_eq!(local["fleet"]["spool"]["pending"].as_u64(), Some(0));
        assert!(local["fleet"]["published"].as_u64().unwrap_or(0) > 0);
        assert_eq!(local["fleet"]["duplicates"].as_u64(), Some(0));
        // The module (one build id, a file of another name on each node) is uploaded once: by
        // node a; b and c find it in the store.
        let present = if n == "node-a" { 0 } else { 1 };
        assert_eq!(
            local["fleet"]["modules_present"].as_u64(),
            Some(present),
            "{n}"
        );
    }
    // A third collect finds nothing new: nothing counted twice.
    collect(&url, &fleet_dir);
    assert_eq!(
        lcov_lines(&fleet_dir.join("report/coverage.lcov")),
        expected
    );
}

#[test]
fn a_server_killed_mid_session_loses_nothing_and_counts_nothing_twice() {
    require_root();
    let tmp = TempDir::new("fleet-kill");
    let mut nats = Nats::start(tmp.path(), None);
    let url = nats.url();
    let node = start_node(tmp.path(), &url, "node-k", "7s", &[]);
    thread::sleep(Duration::from_millis(1500));
    nats.kill();
    thread::sleep(Duration::from_millis(2500));
    nats.restart();
    let local = node.finish();
    let s = session_json(&local);
    let spool = &s["fleet"]["spool"];
    eprintln!("fleet figures of the node: {}", s["fleet"]);
    assert!(
        spool["spooled"].as_u64().unwrap_or(0) > 0,
        "records were spooled: {spool}"
    );
    assert_eq!(
        spool["pending"].as_u64(),
        Some(0),
        "the spool drained: {spool}"
    );
    assert_eq!(spool["replayed"], spool["spooled"], "{spool}");
    let fleet_dir = tmp.path().join("fleet");
    collect(&url, &fleet_dir);
    assert_eq!(artifacts(&fleet_dir), artifacts(&local));
    let fleet = lcov_lines(&fleet_dir.join("report/coverage.lcov"));
    assert!(total_hits(&fleet) > 0);
    assert_eq!(fleet, lcov_lines(&local.join("report/coverage.lcov")));
    // Every event once: the local events.jsonl and the fleet's hold the same number.
    let lines = |p: &Path| std::fs::read_to_string(p).expect("events").lines().count();
    assert_eq!(
        lines(&fleet_dir.join("events.jsonl")),
        lines(&local.join("events.jsonl"))
    );
}

#[test]
fn no_local_writes_nothing_locally_and_the_fleet_gets_the_whole_session() {
    require_root();
    let tmp = TempDir::new("fleet-no-local");
    let nats = Nats::start(tmp.path(), None);
    let url = nats.url();
    let mut node = start_node(tmp.path(), &url, "node-n", "2s", &["--no-local"]);
    let status = node.covobs.wait(T);
    assert!(status.success(), "node failed: {}", node.covobs.stderr());
    let stderr = node.covobs.stderr();
    assert!(
        stderr.contains("--no-local: no local directory"),
        "{stderr}"
    );
    // The node's own count of its artifacts: its artifact events (--json on stdout).
    let published = of_kind(node.covobs.events(), "artifact").len();
    drop(node.targets);
    let parent = node.out.parent().expect("parent");
    let left: Vec<_> = std::fs::read_dir(parent)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "nothing written locally: {left:?}");
    let fleet_dir = tmp.path().join("fleet");
    collect(&url, &fleet_dir);
    let collected = artifacts(&fleet_dir);
    eprintln!("figures: the node reported {published} artifacts, the fleet collected {collected}");
    assert!(published > 0, "the node collected artifacts");
    assert_eq!(collected, published, "every artifact reached the fleet");
    // The node's session.json reached the fleet (its last message), with its counters.
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(fleet_dir.join("fleet/nodes.json")).expect("nodes.json"),
    )
    .expect("JSON");
    assert_eq!(
        nodes["node-n"]["collected"]["sessions_ended"].as_u64(),
        Some(1),
        "{nodes}"
    );
    let sessions: Vec<_> = std::fs::read_dir(fleet_dir.join("fleet/nodes/node-n"))
        .expect("the node's sessions")
        .flatten()
        .map(|e| e.path().join("session.json"))
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let own: Value =
        serde_json::from_slice(&std::fs::read(&sessions[0]).expect("the node's session.json"))
            .expect("JSON");
    assert_eq!(
        own["output"]["local"],
        Value::Bool(false),
        "{}",
        own["output"]
    );
    assert_eq!(
        own["counters"]["artifacts"].as_u64(),
        Some(published as u64)
    );
    assert_eq!(own["fleet"]["spool"]["pending"].as_u64(), Some(0));
    assert_eq!(
        session_json(&fleet_dir)["counters"]["artifacts"].as_u64(),
        Some(published as u64)
    );
    // The collector's report, and `covobs report` on the collected directory: the same.
    let lcov = fleet_dir.join("report/coverage.lcov");
    let collected_lcov = lcov_lines(&lcov);
    assert!(total_hits(&collected_lcov) > 0, "the LCOV has hits");
    report_lcov(&fleet_dir);
    assert_eq!(lcov_lines(&lcov), collected_lcov);
}

#[test]
fn no_local_without_publish_is_bad_usage() {
    require_root();
    let tmp = TempDir::new("fleet-no-local-bad");
    let out = tmp.path().join("session");
    let o = out.to_str().expect("utf-8");
    let err = refused(
        &["attach", "--pid", "1", "--once", "--no-local", "--out", o],
        &out,
    );
    assert!(err.contains("--no-local needs --publish"), "{err}");
    let err = refused(&["run", "--no-local", "--out", o, "--", "true"], &out);
    assert!(err.contains("--no-local needs --publish"), "{err}");
    let spool = tmp.path().join("spool");
    let err = refused(
        &[
            "attach",
            "--pid",
            "1",
            "--once",
            "--publish",
            "nats://127.0.0.1:1",
            "--spool",
            spool.to_str().expect("utf-8"),
            "--no-local",
            "--serve",
            "--out",
            o,
        ],
        &out,
    );
    assert!(err.contains("not with --no-local"), "{err}");
    assert!(!spool.exists(), "no spool left behind");
}

/// One line on stderr, exit 2, no output directory.
fn refused(args: &[&str], out: &Path) -> String {
    let o = Command::new(covobs_bin())
        .args(args)
        .output()
        .expect("covobs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!out.exists(), "nothing left behind");
    err
}

#[test]
fn a_wrong_password_or_no_server_is_refused_in_one_line_or_spooled_when_allowed() {
    require_root();
    let tmp = TempDir::new("fleet-refused");
    let nats = Nats::start(tmp.path(), Some(("covobs", "right")));
    let target = start_fixture(FIXTURE, &[], &[], tmp.path());
    let pid = target.pid().to_string();
    let out = tmp.path().join("out");
    let spool = tmp.path().join("spool");
    let wrong = format!("nats://covobs:wrong@127.0.0.1:{}", nats.port);
    let base = |url: &str| {
        vec![
            "attach".to_string(),
            "--pid".into(),
            pid.clone(),
            "--once".into(),
            "--out".into(),
            out.to_string_lossy().into_owned(),
            "--publish".into(),
            url.to_owned(),
            "--spool".into(),
            spool.to_string_lossy().into_owned(),
        ]
    };
    let args = base(&wrong);
    let err = refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let args = base(&nowhere);
    let err = refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(err.contains("NATS server"), "{err}");
    assert!(!spool.exists(), "a refused start leaves no spool behind");
    // Allowed to start offline: a warning, the session, and its records in the spool.
    let mut args = base(&nowhere);
    args.push("--publish-offline-ok".into());
    args.extend(["--publish-wait".into(), "1s".into()]);
    let o = Command::new(covobs_bin())
        .args(&args)
        .output()
        .expect("covobs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("publishing to the spool"), "{err}");
    let s = session_json(&out);
    eprintln!("spool figures: {}", s["fleet"]["spool"]);
    let pending = s["fleet"]["spool"]["pending"].as_u64().unwrap_or(0);
    assert!(pending > 0, "{}", s["fleet"]);
    assert_eq!(s["fleet"]["connected_at_start"], false);
    // The next session of this node, with the right password, replays that spool first: the
    // fleet gets both sessions, each artifact once.
    let out2 = tmp.path().join("out2");
    let mut args = base(&nats.url());
    args[5] = out2.to_string_lossy().into_owned();
    let o = Command::new(covobs_bin())
        .args(&args)
        .output()
        .expect("covobs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s2 = session_json(&out2);
    eprintln!("the next session's spool figures: {}", s2["fleet"]["spool"]);
    assert_eq!(s2["fleet"]["connected_at_start"], true);
    assert_eq!(s2["fleet"]["spool"]["pending"].as_u64(), Some(0));
    // What session.json counted, and session.json itself (its last message, spooled after it
    // was written).
    assert_eq!(s2["fleet"]["spool"]["replayed"].as_u64(), Some(pending + 1));
    let fleet_dir = tmp.path().join("fleet");
    collect(&nats.url(), &fleet_dir);
    let node = s["fleet"]["node"].as_str().expect("the node's name");
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(fleet_dir.join("fleet/nodes.json")).expect("nodes.json"),
    )
    .expect("JSON");
    assert_eq!(
        nodes[node]["collected"]["sessions_ended"].as_u64(),
        Some(2),
        "{nodes}"
    );
    assert_eq!(artifacts(&fleet_dir), artifacts(&out) + artifacts(&out2));
    // One process seen by two sessions of one node: two states of the same counters, the
    // later one holding the earlier (docs/fleet.md), so the fleet's report is the second's.
    let fleet_lcov = lcov_lines(&fleet_dir.join("report/coverage.lcov"));
    assert!(total_hits(&fleet_lcov) > 0);
    assert_eq!(fleet_lcov, lcov_lines(&out2.join("report/coverage.lcov")));
    drop(target);
}

#[test]
fn a_collector_killed_while_following_resumes_and_takes_each_artifact_once() {
    require_root();
    let tmp = TempDir::new("fleet-follow");
    let nats = Nats::start(tmp.path(), None);
    let url = nats.url();
    let fleet_dir = tmp.path().join("fleet");
    let node = start_node(tmp.path(), &url, "node-f", "6s", &[]);
    // The stream exists once the node published its first artifact.
    let deadline = Instant::now() + T;
    while !node.out.exists() || artifacts(&node.out) == 0 {
        assert!(Instant::now() < deadline, "the node collected nothing");
        thread::sleep(Duration::from_millis(100));
    }
    let mut follower = Command::new(covobs_bin())
        .args([
            "collect",
            &url,
            "--follow",
            "--report-every",
            "500ms",
            "--out",
        ])
        .arg(&fleet_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("covobs collect --follow");
    // Its report is kept current while the node publishes: wait for one, then kill it.
    let lcov = fleet_dir.join("report/coverage.lcov");
    while !lcov.exists() {
        assert!(Instant::now() < deadline, "no report from collect --follow");
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(700));
    let _ = follower.kill();
    let _ = follower.wait();
    let taken = artifacts(&fleet_dir);
    let following = latencies(&fleet_dir);
    let local = node.finish();
    collect(&url, &fleet_dir);
    eprintln!(
        "the follower took {taken} artifacts before it was killed; the node collected {}, the fleet has {}",
        artifacts(&local),
        artifacts(&fleet_dir)
    );
    // Dump-to-collected latency while following: from the node's collection of an artifact
    // (its metadata's collected_ns, CLOCK_BOOTTIME of this same machine) to the collector's
    // metadata file (its mtime).
    let offset = session_json(&local)["boot_to_unix_offset_ns"]
        .as_i64()
        .expect("boot_to_unix_offset_ns");
    let mut ms: Vec<f64> = following
        .iter()
        .map(|(collected, written)| (*written as i64 - (*collected as i64 + offset)) as f64 / 1e6)
        .collect();
    ms.sort_by(f64::total_cmp);
    if !ms.is_empty() {
        let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "figures: node-to-collector latency over {} artifacts: p50 {:.0} ms, p99 {:.0} ms (--report-every 500ms)",
            ms.len(),
            p(0.5),
            p(0.99)
        );
    }
    assert!(taken > 0);
    assert_eq!(artifacts(&fleet_dir), artifacts(&local));
    assert_eq!(
        lcov_lines(&lcov),
        lcov_lines(&local.join("report/coverage.lcov"))
    );
    let lines = |p: &Path| std::fs::read_to_string(p).expect("events").lines().count();
    assert_eq!(
        lines(&fleet_dir.join("events.jsonl")),
        lines(&local.join("events.jsonl"))
    );
}

/// (collected_ns on the node, metadata file mtime in unix ns) of each artifact of a fleet dir.
fn latencies(dir: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).expect("ls").flatten() {
        if !e.file_name().to_string_lossy().contains('@') {
            continue;
        }
        for f in std::fs::read_dir(e.path()).expect("ls").flatten() {
            let p = f.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let meta: Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            let m = std::fs::metadata(&p).expect("stat");
            let written = m.mtime() as u64 * 1_000_000_000 + m.mtime_nsec() as u64;
            if let Some(c) = meta["collected_ns"].as_u64() {
                v.push((c, written));
            }
        }
    }
    v
}
