//! The case covobs exists for: a Rust process hosting the OCaml runtime on its own thread
//! (TezEdge's protocol-runner shape), with bisect_ppx and LLVM coverage; plus gcov targets.
use std::{path::Path, process::Command, time::Duration};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Start protocol-runner writing its dumps into `dir`; returns it and its OCaml thread's tid.
fn protocol_runner(dir: &Path, binary: &str) -> (Driven, u64) {
    let bisect = dir.join("bisect-");
    let profile = dir.join("rust.profraw");
    let mut cmd = Command::new(fixture(binary));
    cmd.current_dir(dir)
        .env("BISECT_FILE", &bisect)
        .env("LLVM_PROFILE_FILE", &profile);
    let mut target = Driven::start(&mut cmd);
    let line = target.line();
    let ocaml_tid = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ocaml_tid="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no ocaml_tid in {line:?}"));
    (target, ocaml_tid)
}

fn thread_name(pid: i32, tid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The metadata of every artifact of a session, in seq order.
fn artifact_metas(out: &Path) -> Vec<Value> {
    artifacts(out).into_iter().map(|a| a.meta).collect()
}

/// Points a bisect coverage file visited (the format is text: see collect/bisect.rs).
fn bisect_visited(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("bisect file");
    let mut words = text.split_whitespace();
    assert_eq!(words.next(), Some("BISECT-COVERAGE-4"));
    let n: usize = words.next().unwrap().parse().unwrap();
    let mut visited = 0;
    for _ in 0..n {
        let _len = words.next();
        let _name = words.next();
        let points: usize = words.next().unwrap().parse().unwrap();
        for _ in 0..points {
            words.next();
        }
        let counts: usize = words.next().unwrap().parse().unwrap();
        for _ in 0..counts {
            if words.next().unwrap() != "0" {
                visited += 1;
            }
        }
    }
    visited
}

/// Function entries counted in a raw profile (the sum of every function's entry count), as the
/// matching llvm-profdata sees it.
fn llvm_function_entries(tools: &LlvmTools, profraw: &Path) -> u64 {
    let out = run_ok(
        Command::new(&tools.profdata)
            .args(["show", "--all-functions"])
            .arg(profraw),
    );
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Function count: "))
        .map(|c| {
            c.parse::<u64>()
                .unwrap_or_else(|e| panic!("function count {c:?}: {e}"))
        })
        .sum()
}

#[test]
fn protocol_runner_gets_one_rust_and_one_bisect_dump_per_interval_on_the_right_threads() {
    require_root();
    let tmp = TempDir::new("ocaml-interval");
    let (target, ocaml_tid) = protocol_runner(tmp.path(), "protocol-runner");
    let pid = target.pid();
    // Attach long after start: covobs never saw the OCaml thread begin.
    std::thread::sleep(Duration::from_secs(3));
    let out = tmp.path().join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "2s",
        "--duration",
        "7s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();

    // The OCaml thread: found by the runtime probes, and it is the thread named ffi-ocaml-execu.
    let found = of_kind(&events, "ocaml_thread");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].u("tid"), ocaml_tid);
    assert_eq!(found[0].s("method"), "runtime probes");
    assert_eq!(thread_name(pid, ocaml_tid), "ffi-ocaml-execu");

    // Every signal went to the thread meant for it: bisect to the OCaml thread, LLVM elsewhere.
    let triggers = of_kind(&events, "trigger");
    let deliveries = of_kind(&events, "delivery");
    assert!(
        triggers.len() >= 8,
        "3 intervals and the detach, two runtimes: {triggers:?}"
    );
    assert_eq!(deliveries.len(), triggers.len(), "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d["ok"] == true), "{deliveries:?}");
    // One of each per interval: in time order, the triggers come in pairs of the same round,
    // one for each runtime.
    let mut in_order = triggers.clone();
    in_order.sort_by_key(|t| t.u("ts_ns"));
    assert_eq!(in_order.len() % 2, 0, "{in_order:?}");
    for pair in in_order.chunks(2) {
        let mut rts: Vec<&str> = pair
            .iter()
            .map(|t| t["runtimes"][0].as_str().unwrap_or(""))
            .collect();
        rts.sort_unstable();
        assert_eq!(rts, ["bisect", "llvm"], "{pair:?}");
        assert_eq!(pair[0].s("reason"), pair[1].s("reason"), "{pair:?}");
    }
    for t in &triggers {
        let runtimes = t["runtimes"].as_array().unwrap();
        let expected = if runtimes[0] == "bisect" {
            ocaml_tid
        } else {
            pid as u64
        };
        assert_eq!(t.u("tid"), expected, "{t}");
    }

    // One Rust profraw and one bisect file per signal, each collected after its dump_end.
    let metas = artifact_metas(&out);
    let by = |rt: &str| {
        metas
            .iter()
            .filter(|m| m["runtime"] == rt)
            .collect::<Vec<_>>()
    };
    let (llvm, bisect) = (by("llvm"), by("bisect"));
    assert_eq!(llvm.len(), triggers.len() / 2);
    assert_eq!(bisect.len(), triggers.len() / 2);
    assert!(metas.iter().all(|m| m["valid"] == true), "{metas:?}");
    assert!(bisect.iter().all(|m| m["tid"].as_u64() == Some(ocaml_tid)));
    // Per runtime, the k-th artifact comes after the k-th dump_end.
    for rt in ["llvm", "bisect"] {
        let times = |kind: &str| {
            let mut t: Vec<u64> = of_kind(&events, kind)
                .iter()
                .filter(|e| e.s("runtime") == rt)
                .map(|e| e.u("ts_ns"))
                .collect();
            t.sort_unstable();
            t
        };
        let (ends, arts) = (times("dump_end"), times("artifact"));
        assert_eq!(
            ends.len(),
            arts.len(),
            "{rt}: dump_ends {ends:?}, artifacts {arts:?}"
        );
        for (end, art) in ends.iter().zip(&arts) {
            assert!(
                end <= art,
                "{rt}: an artifact at {art} before its dump_end at {end}"
            );
        }
    }

    // Coverage grows on both sides.
    let dir = out.join(format!("{pid}-protocol-runner"));
    let first_b = bisect_visited(&dir.join(bisect[0]["file"].as_str().unwrap()));
    let last_b = bisect_visited(&dir.join(bisect.last().unwrap()["file"].as_str().unwrap()));
    assert!(
        last_b > first_b,
        "bisect points visited: {first_b} -> {last_b}"
    );
    let tools = llvm_tools_for_binary("protocol-runner");
    let first_l = llvm_function_entries(&tools, &dir.join(llvm[0]["file"].as_str().unwrap()));
    let last_l = llvm_function_entries(
        &tools,
        &dir.join(llvm.last().unwrap()["file"].as_str().unwrap()),
    );
    assert!(
        last_l > first_l,
        "function entries counted: {first_l} -> {last_l}"
    );
    assert!(alive(pid), "protocol-runner must survive");
    drop(target);
}

/// protocol-runner is built by the pinned rustc: its LLVM tools are those of the Rust fixture.
fn llvm_tools_for_binary(_binary: &str) -> LlvmTools {
    llvm_tools("llvm-rust-target")
}

#[test]
fn the_fixtures_own_exit_time_dumps_are_collected() {
    require_root();
    let tmp = TempDir::new("ocaml-exit");
    let (mut target, ocaml_tid) = protocol_runner(tmp.path(), "protocol-runner");
    let pid = target.pid();
    let out = tmp.path().join("out");
    let mut covobs = attach(&["--pid", &pid.to_string(), "--out", out.to_str().unwrap()]);
    covobs.wait_event(T, "the OCaml thread", |e| e.kind() == "ocaml_thread");
    // SAFETY: kill on our own child: its handler stops it cleanly.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    assert!(
        of_kind(&events, "trigger").is_empty(),
        "covobs sent nothing"
    );
    let metas = artifact_metas(&out);
    let llvm: Vec<&Value> = metas.iter().filter(|m| m["runtime"] == "llvm").collect();
    let bisect: Vec<&Value> = metas.iter().filter(|m| m["runtime"] == "bisect").collect();
    assert_eq!(llvm.len(), 1, "{metas:?}");
    assert_eq!(llvm[0]["trigger"], "exit");
    assert_eq!(bisect.len(), 1, "bisect's at_exit dump: {metas:?}");
    assert_eq!(bisect[0]["tid"].as_u64(), Some(ocaml_tid));
    assert!(metas.iter().all(|m| m["valid"] == true));
}

#[test]
fn bpf_send_signal_thread_lands_on_the_ocaml_thread() {
    require_root();
    let tmp = TempDir::new("ocaml-bpf");
    let (target, ocaml_tid) = protocol_runner(tmp.path(), "protocol-runner");
    let pid = target.pid();
    let out = tmp.path().join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--deliver",
        "bpf",
        "--interval",
        "1s",
        "--duration",
        "3500ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    let bpf: Vec<&Value> = of_kind(&events, "trigger")
        .into_iter()
        .filter(|t| t.s("method") == "bpf_send_signal_thread")
        .collect();
    assert!(bpf.len() >= 3, "{bpf:?}");
    // Sent when the OCaml thread next hit a runtime probe, which the fixture does every 10 ms:
    // the waits are printed; the bound only catches a send that waited for something else.
    let waits: Vec<u64> = bpf.iter().map(|t| t.u("waited_ns") / 1000).collect();
    eprintln!("bpf_send_signal_thread waits (us): {waits:?}");
    assert!(
        bpf.iter()
            .all(|t| ["interval", "detach"].contains(&t.s("reason"))
                && t.u("waited_ns") < 1_000_000_000),
        "{bpf:?}"
    );
    assert!(bpf.iter().all(|t| t.u("tid") == ocaml_tid));
    let deliveries = of_kind(&events, "delivery");
    assert!(deliveries.iter().all(|d| d["ok"] == true), "{deliveries:?}");
    assert!(
        deliveries
            .iter()
            .filter(|d| d.u("tid") == ocaml_tid)
            .count()
            >= bpf.len(),
        "{deliveries:?}"
    );
    let bisect = artifact_metas(&out)
        .into_iter()
        .filter(|m| m["runtime"] == "bisect" && m["valid"] == true)
        .count();
    assert_eq!(bisect, bpf.len());
    drop(target);
}

#[test]
fn a_stripped_binary_gets_the_thread_name_fallback_with_a_warning() {
    require_root();
    let tmp = TempDir::new("ocaml-stripped");
    let (target, ocaml_tid) = protocol_runner(tmp.path(), "protocol-runner-stripped");
    let pid = target.pid().to_string();
    let mut covobs = Covobs::start(&["watch", "--pid", &pid, "--json", "--duration", "3s"]);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    let ocaml = of_kind(&events, "runtime_found")
        .into_iter()
        .find(|e| e.s("runtime") == "ocaml")
        .cloned()
        .expect("the OCaml runtime is found in the stripped binary");
    assert!(ocaml.s("note").contains("stripped"), "{ocaml}");
    let thread = of_kind(&events, "ocaml_thread");
    assert_eq!(thread.len(), 1, "{thread:?}");
    assert_eq!(thread[0].u("tid"), ocaml_tid);
    assert!(
        thread[0].s("method").starts_with("thread name"),
        "{}",
        thread[0]
    );
    assert!(
        covobs.stderr().contains("stripped"),
        "a warning: {}",
        covobs.stderr()
    );
    drop(target);
}

#[test]
fn a_gcov_target_yields_valid_gcda_files_for_every_dump_and_at_exit() {
    require_root();
    let tmp = TempDir::new("gcov");
    let prefix = tmp.path().join("gcda");
    std::fs::create_dir_all(&prefix).unwrap();
    let strip = fixture("gcov-target")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("build/gcov-target")
        .components()
        .count()
        - 1;
    let mut target = start_fixture(
        "gcov-target",
        &[],
        &[
            ("GCOV_PREFIX", prefix.to_str().unwrap()),
            ("GCOV_PREFIX_STRIP", &strip.to_string()),
        ],
        tmp.path(),
    );
    let pid = target.pid();
    let out = tmp.path().join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "700ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "three artifacts", |e| {
        e.kind() == "artifact" && e.u("seq") == 3
    });
    // SAFETY: kill on our own child: it exits through its handler, running the exit-time dump.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let metas = artifact_metas(&out);
    assert!(metas.len() >= 4, "{metas:?}");
    assert!(metas.iter().all(|m| m["valid"] == true), "{metas:?}");
    assert_eq!(metas.last().unwrap()["trigger"], "exit");
    let dir = out.join(format!("{pid}-gcov-target"));
    for m in &metas {
        let parts = m["parts"].as_array().unwrap();
        let gcda: Vec<&Value> = parts
            .iter()
            .filter(|p| p["file"].as_str().unwrap().ends_with(".gcda"))
            .collect();
        assert_eq!(gcda.len(), 2, "main.gcda and work.gcda: {m}");
        for p in parts {
            let f = dir
                .join(m["file"].as_str().unwrap())
                .join(p["file"].as_str().unwrap());
            assert_eq!(std::fs::metadata(&f).unwrap().len(), p.u("bytes"));
        }
    }
    // gcc's own gcov reads what covobs collected.
    let last = dir.join(metas[metas.len() - 2]["file"].as_str().unwrap());
    let work = std::fs::read_dir(&last)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("work.gcda"))
        .unwrap();
    let scratch = tmp.path().join("gcov");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::copy(&work, scratch.join("work.gcda")).unwrap();
    let gcno = std::fs::read_dir(&last)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("work.gcno"))
        .unwrap();
    std::fs::copy(&gcno, scratch.join("work.gcno")).unwrap();
    let json = run_ok(
        Command::new("gcov")
            .args(["--json-format", "--stdout", "work.gcda"])
            .current_dir(&scratch),
    );
    let report: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let lines_hit = report["files"][0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.u("count") > 0)
        .count();
    assert!(lines_hit > 0, "{report}");
}
