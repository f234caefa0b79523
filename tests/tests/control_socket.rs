//! The control socket of a real `covobs attach` under idle, hostile and malformed clients: a
//! real `covobs dump` is still answered at once, covobs' memory stays flat, and every bad
//! request gets an answer that says why.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A target watched by `covobs attach`, and the attach's control socket.
struct Attached {
    _tmp: TempDir,
    target: Driven,
    pid: i32,
    covobs: Covobs,
    socket: PathBuf,
}

fn attached(tag: &str) -> Attached {
    require_root();
    let tmp = TempDir::new(tag);
    let profile = tmp.path().join("target.profraw");
    let out = tmp.path().join("out");
    let target = start_fixture(
        "llvm-rust-target",
        &[],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    let mut covobs = attach(&["--pid", &pid.to_string(), "--out", out.to_str().unwrap()]);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let socket = PathBuf::from(format!("/run/covobs/attach-{}.sock", covobs.pid()));
    assert!(socket.exists(), "{}", socket.display());
    Attached {
        _tmp: tmp,
        target,
        pid,
        covobs,
        socket,
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `covobs dump --pid P` with its own timeout as the bound: answered (exit 0, ok, one artifact)
/// within `bound`, or the test fails. Returns how long it took.
fn dump_within(pid: i32, bound: Duration) -> Duration {
    let asked = Instant::now();
    let out = Command::new(covobs_bin())
        .args(["dump", "--pid", &pid.to_string(), "--json", "--timeout"])
        .arg(format!("{}ms", bound.as_millis()))
        .output()
        .expect("covobs dump");
    let took = asked.elapsed();
    assert!(
        out.status.success(),
        "covobs dump did not answer within {bound:?}: {out:?}"
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        answer["artifacts"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    took
}

/// One request line sent on a fresh connection, and the answer line.
fn ask_raw(socket: &Path, request: &[u8]) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may close before it took everything (a line past the cap).
    let _ = s.write_all(request);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[test]
fn idle_and_endless_clients_never_delay_a_dump_nor_grow_covobs() {
    let Attached {
        _tmp,
        target,
        pid,
        mut covobs,
        socket,
    } = attached("control-flood");
    let covobs_pid = covobs.pid();
    // A first dump: covobs' steady state (buffers, the collector's task) before the flood.
    let calm = dump_within(pid, Duration::from_secs(1));
    let rss_before = rss_kib(covobs_pid);
    let fds_before = open_fds(covobs_pid);

    // 300 connections that never say anything, held open.
    let idle: Vec<UnixStream> = (0..300)
        .map(|i| UnixStream::connect(&socket).unwrap_or_else(|e| panic!("idle {i}: {e}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // One client sending a line that never ends, reconnecting whenever covobs hangs up.
    let endless_sent = Arc::new(AtomicU64::new(0));
    let endless = {
        let (stop, sent, socket) = (stop.clone(), endless_sent.clone(), socket.clone());
        thread::spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            let mut connections = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                connections += 1;
                while !stop.load(Ordering::Relaxed) && s.write_all(&chunk).is_ok() {
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            connections
        })
    };
    // And idle connections that keep coming, each dropped after a while.
    let churned = {
        let (stop, socket) = (stop.clone(), socket.clone());
        thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = UnixStream::connect(&socket) {
                    held.push_back(s);
                    n += 1;
                }
                if held.len() > 200 {
                    held.pop_front();
                }
                thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    // Let the flood build up.
    thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for _ in 0..5 {
        took.push(dump_within(pid, Duration::from_secs(1)));
        thread::sleep(Duration::from_millis(300));
    }
    let sent_mib = endless_sent.load(Ordering::Relaxed) >> 20;
    let rss_during = rss_kib(covobs_pid);
    let fds_during = open_fds(covobs_pid);
    stop.store(true, Ordering::Relaxed);
    let endless_connections = endless.join().expect("endless client");
    let churned = churned.join().expect("churning client");

    // Covobs hung up on every idle connection (evicted, or past its deadline).
    thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut rest = Vec::new();
        if s.read_to_end(&mut rest).is_ok() {
            closed += 1;
        }
    }
    let rss_after = rss_kib(covobs_pid);
    println!(
        "dump alone: {calm:?}; under the flood: {took:?}\n\
         endless line: {sent_mib} MiB sent over {endless_connections} connections; \
         {churned} more idle connections\n\
         covobs VmRSS: {rss_before} KiB before, {rss_during} KiB during, {rss_after} KiB after; \
         descriptors: {fds_before} before, {fds_during} during"
    );
    assert_eq!(closed, 300, "idle connections covobs never closed");
    assert!(
        sent_mib >= 1,
        "the endless client could not send anything: the test tested nothing"
    );
    let growth = rss_during.max(rss_after).saturating_sub(rss_before);
    assert!(
        growth < 20 << 10,
        "covobs grew by {growth} KiB under the flood"
    );
    assert!(alive(pid));
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    drop(target);
}

#[test]
fn bad_requests_get_an_answer_that_says_why() {
    let Attached {
        _tmp,
        target,
        pid,
        mut covobs,
        socket,
    } = attached("control-bad");
    let refused = |answer: &Value, why: &str| {
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{why:?} not in {answer}");
    };
    refused(
        &ask_raw(&socket, b"this is not json\n"),
        "malformed request",
    );
    refused(
        &ask_raw(&socket, b"{\"pid\":\"12\"}\n"),
        "malformed request",
    );
    refused(&ask_raw(&socket, b"{\"signal\":9}\n"), "malformed request");
    refused(&ask_raw(&socket, b"\n"), "malformed request");
    // A line past the cap: refused once the cap is reached, not read to its end.
    let mut long = vec![b' '; 200 << 10];
    long.push(b'\n');
    refused(&ask_raw(&socket, &long), "longer than 65536 bytes");
    // Silent past the deadline.
    let mut silent = UnixStream::connect(&socket).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let connected = Instant::now();
    let mut answer = String::new();
    let _ = silent.read_to_string(&mut answer);
    println!(
        "a silent client was answered after {:?}",
        connected.elapsed()
    );
    let answer: Value = serde_json::from_str(answer.trim()).expect("answer to a silent client");
    refused(&answer, "no request within 2s");
    // A well-formed request for a process nobody watches is not this attach's.
    let other = ask_raw(&socket, b"{\"pid\":999999999}\n");
    assert_eq!(other["not_mine"], true, "{other}");
    // A client that is not root, even one that may open the socket (CAP_DAC_OVERRIDE), is
    // refused by its credentials.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_override",
            "--ambient-caps=+dac_override",
        ])
        .arg(env!("CARGO_BIN_EXE_control-client"))
        .arg(&socket)
        .arg(format!("{{\"pid\":{pid}}}"))
        .output()
        .expect("setpriv (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let answer: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    refused(&answer, "only root may ask covobs for dumps");
    // None of it triggered anything; the real request still works.
    assert!(
        !covobs.events().iter().any(|e| e.kind() == "dump_start"),
        "a bad request made the target dump"
    );
    dump_within(pid, Duration::from_secs(1));
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    drop(target);
}
