//! Snapshots from memory, against real targets: a memory snapshot equals the runtime's own dump
//! of the same counters (Rust, LLVM 23, raw profile v11; C, clang 14, v8; an executable and a
//! shared library instrumented in one process, one file each); `--mode snapshot`
//! covers a target that has no handler for any signal; a target killed with SIGKILL (or crashing,
//! or exiting) after reaching new code has that code in its final snapshot; SanitizerCoverage
//! snapshots list exactly the edges a small C program ran.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use covobs_tests::{
    Covobs, EventExt, LlvmTools, TempDir, alive, covobs_bin, fixture,
    freeze::{Frozen, load_bias, symbol_address},
    llvm_tools, of_kind, raw_profile_version, read_json, require_root, run_ok, start_fixture,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn snapshot_cmd(pid: i32, out: &Path) -> Value {
    let text = run_ok(
        Command::new(covobs_bin())
            .args(["snapshot", "--json", "--pid", &pid.to_string(), "--out"])
            .arg(out),
    );
    serde_json::from_str(&text).expect("snapshot --json")
}

/// `llvm-profdata show --all-functions --counts` of a raw profile.
fn show(tools: &LlvmTools, profraw: &Path) -> String {
    run_ok(
        Command::new(&tools.profdata)
            .args(["show", "--all-functions", "--counts"])
            .arg(profraw),
    )
}

/// The LCOV llvm-cov exports for a raw profile.
fn lcov(tools: &LlvmTools, profraw: &Path, work: &Path) -> String {
    let profdata = work.join(format!(
        "{}.profdata",
        profraw.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        Command::new(&tools.profdata)
            .args(["merge", "-o"])
            .arg(&profdata)
            .arg(profraw),
    );
    let mut cmd = Command::new(&tools.cov);
    cmd.args(["export", "-format=lcov", "-instr-profile"])
        .arg(&profdata)
        .arg(&tools.objects[0]);
    for o in &tools.objects[1..] {
        cmd.arg("-object").arg(o);
    }
    run_ok(&mut cmd)
}

/// Function name -> the counts line that follows it in `llvm-profdata show --counts`.
fn counts_by_function(show: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in show.lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("    ") && t.ends_with(':') {
            current = Some(t.trim_end_matches(':').to_owned());
        } else if let (Some(f), Some(rest)) = (&current, t.strip_prefix("Block counts: [")) {
            let counts = rest
                .trim_end_matches(']')
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            out.insert(f.clone(), counts);
        }
    }
    out
}

/// The entry count of the first function whose name contains `needle`.
fn entry_count(show: &str, needle: &str) -> u64 {
    let mut in_fn = false;
    for line in show.lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("    ") && t.ends_with(':') {
            in_fn = t.contains(needle);
        } else if in_fn && let Some(c) = t.strip_prefix("Function count: ") {
            return c
                .parse()
                .unwrap_or_else(|e| panic!("function count {c:?} of {needle}: {e}"));
        }
    }
    panic!("no function named like {needle} in\n{show}");
}

/// Freeze a paused target, snapshot it with covobs, make its runtime dump at the same point, and
/// compare.
fn snapshot_equals_the_runtimes_own_dump(fixture_name: &str) {
    require_root();
    let tools = llvm_tools(fixture_name);
    let tmp = TempDir::new(&format!("snap-eq-{fixture_name}"));
    let pause = tmp.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let profile = tmp.path().join("runtime.profraw");
    let target = start_fixture(
        fixture_name,
        &["--pause-file", pause.to_str().unwrap()],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    // Let it reach a few phases, then hold it at a known point.
    std::fs::remove_file(&pause).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    std::fs::write(&pause, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let exe = fixture(fixture_name);
    let dump_fn = symbol_address(pid, &exe, "__llvm_profile_write_file");
    let snap = tmp.path().join("snapshot.profraw");
    let written = {
        let frozen = Frozen::stop_quiescent(pid);
        let written = snapshot_cmd(pid, &snap);
        assert_eq!(frozen.call(dump_fn), 0, "__llvm_profile_write_file failed");
        written
    };
    assert_eq!(written.as_array().map(Vec::len), Some(1), "{written}");
    let w = &written[0];
    assert_eq!(w["runtime"], "llvm");
    assert_eq!(
        w["snapshot"]["load_bias"].as_u64(),
        Some(load_bias(pid, &exe))
    );
    assert_eq!(w["snapshot"]["method"], "process_vm_readv");
    assert_eq!(w["snapshot"]["read"]["syscalls"], 1, "{w}");

    let runtime = std::fs::read(&profile).unwrap();
    let mine = std::fs::read(&snap).unwrap();
    let expected_version = raw_profile_version(tools.major);
    assert_eq!(w["format"]["version"].as_u64(), Some(expected_version));
    assert!(!mine.is_empty());
    // The runtime appended exactly one profile since it truncated the file at start.
    assert_eq!(
        runtime.len(),
        mine.len(),
        "{fixture_name}: the runtime's dump and covobs' snapshot differ in size"
    );
    let (show_runtime, show_mine) = (show(&tools, &profile), show(&tools, &snap));
    assert_eq!(
        show_mine, show_runtime,
        "{fixture_name}: llvm-profdata show"
    );
    assert_eq!(
        lcov(&tools, &snap, tmp.path()),
        lcov(&tools, &profile, tmp.path()),
        "{fixture_name}: llvm-cov LCOV"
    );
    assert!(
        mine == runtime,
        "{fixture_name}: not byte for byte the runtime's own dump"
    );
    // Not a trivial profile: the phases that ran have counts, the last one did not run yet.
    let counts = counts_by_function(&show_mine);
    assert!(counts.len() > 20, "{counts:?}");
    assert!(entry_count(&show_mine, "phase_checksum") > 0);
    assert_eq!(entry_count(&show_mine, "phase_final"), 0);
    drop(target);
}

#[test]
fn a_memory_snapshot_of_a_rust_target_is_its_runtimes_own_dump() {
    snapshot_equals_the_runtimes_own_dump("llvm-rust-target");
}

/// Raw profile version 9, written by Rust 1.81's LLVM 18 runtime.
#[test]
fn a_memory_snapshot_of_a_rust_target_of_llvm_18_is_its_runtimes_own_dump() {
    snapshot_equals_the_runtimes_own_dump("llvm-rust-target-raw9");
}

/// Raw profile version 10, written by Rust 1.86's LLVM 19 runtime.
#[test]
fn a_memory_snapshot_of_a_rust_target_of_llvm_19_is_its_runtimes_own_dump() {
    snapshot_equals_the_runtimes_own_dump("llvm-rust-target-raw10");
}

#[test]
fn a_memory_snapshot_of_a_c_target_is_its_runtimes_own_dump() {
    snapshot_equals_the_runtimes_own_dump("llvm-c-target");
}

/// The LCOV llvm-cov exports for a raw profile of one module.
fn lcov_of(tools: &LlvmTools, profraw: &Path, object: &Path, work: &Path) -> String {
    let one = LlvmTools {
        profdata: tools.profdata.clone(),
        cov: tools.cov.clone(),
        objects: vec![object.to_path_buf()],
        major: tools.major,
    };
    lcov(&one, profraw, work)
}

/// Two instrumented modules in one process (a PIE executable and a shared library, each with its
/// own profile runtime, at different load biases): one snapshot file per module, each the same as
/// what that module's own runtime writes at the same point.
#[test]
fn a_memory_snapshot_of_two_modules_is_what_each_runtime_dumps() {
    require_root();
    let name = "llvm-multi-target";
    let tools = llvm_tools(name);
    let exe = fixture(name);
    let lib = fixture("libcovshared.so");
    assert_eq!(tools.objects, [exe.clone(), lib.clone()]);
    let tmp = TempDir::new("snap-eq-multi");
    let pause = tmp.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let profile = tmp.path().join("runtime.profraw");
    let target = start_fixture(
        name,
        &["--pause-file", pause.to_str().unwrap()],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    std::fs::remove_file(&pause).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    std::fs::write(&pause, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let exe_dump = symbol_address(pid, &exe, "__llvm_profile_write_file");
    let lib_dump = symbol_address(pid, &lib, "__llvm_profile_write_file");
    assert_ne!(load_bias(pid, &exe), load_bias(pid, &lib));
    let stem = tmp.path().join("snap.profraw");
    let (exe_own, lib_own) = (
        tmp.path().join("exe.profraw"),
        tmp.path().join("lib.profraw"),
    );
    let written = {
        let frozen = Frozen::stop_quiescent(pid);
        let written = snapshot_cmd(pid, &stem);
        // Each runtime appends its own module's profile to the same file: one at a time.
        assert_eq!(frozen.call(exe_dump), 0, "the executable's dump failed");
        std::fs::rename(&profile, &exe_own).unwrap();
        assert_eq!(frozen.call(lib_dump), 0, "the library's dump failed");
        std::fs::rename(&profile, &lib_own).unwrap();
        written
    };
    let written = written.as_array().expect("a list").clone();
    assert_eq!(written.len(), 2, "{written:?}");
    for (object, own, file_name) in [
        (&exe, &exe_own, "snap.llvm-multi-target.profraw"),
        (&lib, &lib_own, "snap.libcovshared.so.profraw"),
    ] {
        let w = written
            .iter()
            .find(|w| {
                w["module"]
                    .as_str()
                    .is_some_and(|m| Path::new(m).file_name() == object.file_name())
            })
            .unwrap_or_else(|| panic!("no snapshot of {}: {written:?}", object.display()));
        assert_eq!(
            w["snapshot"]["load_bias"].as_u64(),
            Some(load_bias(pid, object))
        );
        let snap = tmp.path().join(file_name);
        assert!(
            w["file"].as_str().is_some_and(|f| f.ends_with(file_name)),
            "{w}"
        );
        let (mine, runtime) = (std::fs::read(&snap).unwrap(), std::fs::read(own).unwrap());
        assert_eq!(mine.len(), runtime.len(), "{file_name}: sizes differ");
        let (show_mine, show_runtime) = (show(&tools, &snap), show(&tools, own));
        assert_eq!(show_mine, show_runtime, "{file_name}: llvm-profdata show");
        assert!(counts_by_function(&show_mine).len() > 3, "{show_mine}");
        assert_eq!(
            lcov_of(&tools, &snap, object, tmp.path()),
            lcov_of(&tools, own, object, tmp.path()),
            "{file_name}: llvm-cov LCOV"
        );
        assert!(
            mine == runtime,
            "{file_name}: not byte for byte the runtime's dump"
        );
    }
    // The library's phases that ran have counts, the last one did not run yet.
    let lib_show = show(&tools, &lib_own);
    assert!(entry_count(&lib_show, "phase_route") > 0, "{lib_show}");
    assert_eq!(entry_count(&lib_show, "phase_final"), 0);
    drop(target);
}

/// Every artifact of a session (metadata, data file), by seq.
fn artifacts(out: &Path) -> Vec<(Value, PathBuf)> {
    covobs_tests::artifacts(out)
        .into_iter()
        .map(|a| {
            let file = a.data_path();
            (a.meta, file)
        })
        .collect()
}

#[test]
fn a_target_without_a_signal_handler_is_covered_by_snapshot_mode() {
    require_root();
    let tools = llvm_tools("llvm-c-target");
    let tmp = TempDir::new("snap-mode");
    let out = tmp.path().join("out");
    let target = start_fixture("llvm-c-target", &["--no-handler"], &[], tmp.path());
    let pid = target.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cgt = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(cgt & (1 << 11), 0, "SIGUSR2 must not be handled");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--mode",
        "snapshot",
        "--pid",
        &pid.to_string(),
        "--interval",
        "300ms",
        "--duration",
        "2500ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    let status = covobs.wait(T);
    assert!(status.success(), "{}", covobs.stderr());
    assert!(
        alive(pid),
        "the target must still run: covobs sent it nothing"
    );
    let events = covobs.events().to_vec();
    assert!(of_kind(&events, "trigger").is_empty(), "no signal is sent");
    assert!(
        of_kind(&events, "lost").is_empty(),
        "{:?}",
        of_kind(&events, "lost")
    );
    let snaps = of_kind(&events, "snapshot");
    assert!(snaps.len() >= 3, "{} snapshots", snaps.len());
    assert!(
        snaps
            .iter()
            .all(|s| s.s("trigger") == "snapshot" && s.s("method") == "process_vm_readv")
    );
    // Deltas: the first brings everything it saw, and they add up to the last figure
    // (coverage only grows in this target, nothing resets it).
    let added: u64 = snaps.iter().map(|s| s.u("new_covered")).sum();
    assert_eq!(snaps[0].u("new_covered"), snaps[0].u("covered"));
    assert_eq!(added, snaps.last().unwrap().u("covered"));
    assert!(
        snaps.iter().skip(1).any(|s| s.u("new_covered") > 0),
        "new code over time"
    );

    let arts = artifacts(&out);
    assert_eq!(arts.len(), snaps.len());
    for (meta, file) in &arts {
        assert_eq!(meta["trigger"], "snapshot", "{meta}");
        assert_eq!(meta["valid"], true);
        assert_eq!(meta["source"]["located_by"], "memory");
        assert!(
            meta["snapshot"]["consistency"]
                .as_str()
                .unwrap()
                .contains("process_vm_readv")
        );
        run_ok(Command::new(&tools.profdata).arg("show").arg(file));
    }
    // The report has the coverage, and the timeline says what each snapshot added.
    let summary = read_json(&out.join("report/summary.json"));
    assert!(
        summary["totals"]["lines"]["hit"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let timeline = read_json(&out.join("report/timeline.json"));
    let points = timeline["points"].as_array().unwrap();
    assert_eq!(points.len(), arts.len());
    let first = &points[0]["module_added"];
    assert!(first["lines"].as_u64().unwrap() > 0, "{}", points[0]);
    let later: u64 = points[1..]
        .iter()
        .map(|p| p["module_added"]["regions"].as_u64().unwrap())
        .sum();
    assert!(later > 0, "later snapshots added regions: {timeline}");
    drop(target);
}

/// How the session gets coverage while the target lives.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `--mode snapshot`, a target with no handler.
    Snapshot,
    /// `--final-snapshot` in signal mode, a target with a handler.
    SignalWithFinal,
}

/// A target that reaches new code after the last snapshot or dump and then dies: its final
/// snapshot (copied in the kernel at exit) has that code. In signal mode, a target whose runtime
/// dumped at exit gets no final snapshot (it would add nothing).
fn final_snapshot_after(fixture_name: &str, signal: i32, mode: Mode) {
    require_root();
    let tools = llvm_tools(fixture_name);
    let tmp = TempDir::new(&format!("snap-final-{signal}"));
    let out = tmp.path().join("out");
    let pause = tmp.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let mut cmd = Command::new(fixture(fixture_name));
    if mode == Mode::Snapshot {
        cmd.arg("--no-handler");
    }
    cmd.args(["--pause-file", pause.to_str().unwrap()])
        .env("LLVM_PROFILE_FILE", tmp.path().join("own.profraw"))
        .current_dir(tmp.path());
    // A crash must not leave a core file behind.
    // SAFETY: setrlimit in the child before exec, with a valid struct; async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    let mut target = covobs_tests::Driven::start(&mut cmd);
    let ready = target.line();
    assert!(ready.ends_with("ready"), "{ready}");
    let pid = target.pid();
    let pid_s = pid.to_string();
    let mut args = vec!["attach", "--json", "--no-report"];
    args.extend(match mode {
        Mode::Snapshot => ["--mode", "snapshot"],
        Mode::SignalWithFinal => ["--mode", "signal"],
    });
    if mode == Mode::SignalWithFinal {
        args.push("--final-snapshot");
    }
    args.extend([
        "--pid",
        &pid_s,
        "--interval",
        "1h",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut covobs = Covobs::start(&args);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    // A snapshot (or a dump) while paused: covobs dump asks the session for one...
    run_ok(Command::new(covobs_bin()).args(["dump", "--pid", &pid_s]));
    let first_trigger = match mode {
        Mode::Snapshot => "snapshot",
        Mode::SignalWithFinal => "signal",
    };
    covobs.wait_event(T, "the first artifact", |e| {
        e.kind() == "artifact" && e.s("trigger") == first_trigger
    });
    // ...then new code, and death before any other.
    std::fs::remove_file(&pause).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, signal) };
    let runtime_dumps_at_exit = signal == libc::SIGTERM;
    let final_expected = mode == Mode::Snapshot || !runtime_dumps_at_exit;
    if final_expected {
        let last = covobs.wait_event(T, "the final snapshot", |e| {
            e.kind() == "snapshot" && e.s("trigger") == "final"
        });
        assert!(last.u("new_covered") > 0, "{last}");
        assert_eq!(last.s("method"), "ebpf:sched_process_exit");
    }
    if runtime_dumps_at_exit {
        covobs.wait_event(T, "the exit dump's artifact", |e| {
            e.kind() == "artifact" && e.s("trigger") == "exit"
        });
    }
    let status = covobs.wait(T);
    assert!(status.success(), "{}", covobs.stderr());
    target.wait();
    let events = covobs.events().to_vec();
    assert!(
        of_kind(&events, "lost").is_empty(),
        "{:?}",
        of_kind(&events, "lost")
    );

    let arts = artifacts(&out);
    let of = |trigger: &str| -> Vec<&(Value, PathBuf)> {
        arts.iter()
            .filter(|(m, _)| m["trigger"] == trigger)
            .collect()
    };
    let firsts = of(first_trigger);
    assert_eq!(firsts.len(), 1, "{arts:?}");
    let before = show(&tools, &firsts[0].1);
    // The phase-1 function ran only after the first snapshot or dump: zero there.
    assert_eq!(entry_count(&before, "phase_checksum"), 0);
    let finals = of("final");
    let exits = of("exit");
    assert_eq!(exits.len(), usize::from(runtime_dumps_at_exit), "{arts:?}");
    if !final_expected {
        assert!(
            finals.is_empty(),
            "the exit dump made it redundant: {arts:?}"
        );
        assert!(
            !of_kind(&events, "snapshot")
                .iter()
                .any(|e| e.s("trigger") == "final")
        );
    } else {
        assert_eq!(finals.len(), 1, "{arts:?}");
        let (final_meta, final_file) = finals[0];
        assert_eq!(final_meta["valid"], true);
        assert_eq!(
            final_meta["snapshot"].get("unreadable_bytes"),
            None,
            "{final_meta}"
        );
        let after = show(&tools, final_file);
        assert!(entry_count(&after, "phase_checksum") > 0, "{after}");
        if runtime_dumps_at_exit {
            // A normal exit: the runtime's exit-time dump has the same counts as the final
            // snapshot (nothing ran in between but the exit path).
            let d = show(&tools, &exits[0].1);
            assert_eq!(
                entry_count(&d, "phase_checksum"),
                entry_count(&after, "phase_checksum")
            );
        }
    }
    if runtime_dumps_at_exit {
        let d = show(&tools, &exits[0].1);
        assert!(entry_count(&d, "phase_checksum") > 0, "{d}");
    }
}

#[test]
fn a_target_killed_with_sigkill_keeps_its_last_coverage_in_a_final_snapshot() {
    final_snapshot_after("llvm-rust-target", libc::SIGKILL, Mode::Snapshot);
}

/// The C target has no SIGSEGV handler (Rust's std has one, for stack overflows).
#[test]
fn a_crashing_target_keeps_its_last_coverage_in_a_final_snapshot() {
    final_snapshot_after("llvm-c-target", libc::SIGSEGV, Mode::Snapshot);
}

#[test]
fn an_exiting_target_keeps_its_last_coverage_in_a_final_snapshot() {
    final_snapshot_after("llvm-rust-target", libc::SIGTERM, Mode::Snapshot);
}

/// Signal mode with --final-snapshot: a SIGKILLed target's coverage since its last dump is in
/// its final snapshot.
#[test]
fn signal_mode_with_final_snapshot_keeps_a_sigkilled_targets_coverage() {
    final_snapshot_after("llvm-c-target", libc::SIGKILL, Mode::SignalWithFinal);
}

/// Signal mode with --final-snapshot: a target whose runtime dumps at exit gets no final
/// snapshot on top of that dump.
#[test]
fn signal_mode_with_final_snapshot_keeps_the_exit_dump_alone() {
    final_snapshot_after("llvm-rust-target", libc::SIGTERM, Mode::SignalWithFinal);
}

/// Function name -> [start, end) from llvm-nm -S.
fn functions(exe: &Path) -> BTreeMap<String, (u64, u64)> {
    let nm = run_ok(
        Command::new("/usr/lib/llvm-14/bin/llvm-nm")
            .args(["--defined-only", "-S"])
            .arg(exe),
    );
    nm.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 || !matches!(f[2], "T" | "t") {
                return None;
            }
            let start = u64::from_str_radix(f[0], 16).ok()?;
            let size = u64::from_str_radix(f[1], 16).ok()?;
            Some((f[3].to_owned(), (start, start + size)))
        })
        .collect()
}

fn sancov_pcs(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(b.len() % 8, 0);
    let words: Vec<u64> = b
        .as_chunks::<8>()
        .0
        .iter()
        .map(|c| u64::from_le_bytes(*c))
        .collect();
    assert_eq!(words[0], 0xC0BF_FFFF_FFFF_FF64, "64-bit .sancov magic");
    words[1..].to_vec()
}

/// Which of `names` each PC falls in (None: elsewhere).
fn owners(pcs: &[u64], fns: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for pc in pcs {
        let owner = fns
            .iter()
            .find(|(_, (s, e))| pc >= s && pc < e)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("?{pc:#x}"));
        out.entry(owner).or_default().push(*pc);
    }
    out
}

#[test]
fn a_sancov_snapshot_lists_the_edges_the_program_ran() {
    require_root();
    let tmp = TempDir::new("snap-sancov");
    let exe = fixture("sancov-target");
    let fns = functions(&exe);
    let mut target = start_fixture("sancov-target", &[], &[], tmp.path());
    let pid = target.pid();

    let out = tmp.path().join("first.sancov");
    let written = snapshot_cmd(pid, &out);
    assert_eq!(written[0]["runtime"], "sancov", "{written}");
    let pcs = sancov_pcs(&out);
    assert!(
        pcs.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique: {pcs:x?}"
    );
    let by_fn = owners(&pcs, &fns);
    let ran: Vec<&str> = by_fn.keys().map(String::as_str).collect();
    assert_eq!(ran, ["covered_loop", "covered_once", "main"], "{by_fn:x?}");
    for f in ["covered_loop", "covered_once", "main"] {
        // The entry block's PC is the function's own (module-relative) address.
        assert!(by_fn[f].contains(&fns[f].0), "{f}: {:x?}", by_fn[f]);
    }
    // covered_once took one of its two branches: its entry plus one more block.
    assert_eq!(
        by_fn["covered_once"].len(),
        2,
        "{:x?}",
        by_fn["covered_once"]
    );

    // The counter map: one AFL bucket per edge, the loop body (10 runs) in the 8-15 bucket.
    let map = std::fs::read(tmp.path().join("first.counters")).unwrap();
    let counters = written[0]["snapshot"]["counters"].as_u64().unwrap() as usize;
    assert_eq!(map.len(), counters);
    assert!(
        counters > pcs.len(),
        "never_called and called_later have edges too"
    );
    assert_eq!(map.iter().filter(|b| **b != 0).count(), pcs.len());
    assert!(
        map.iter()
            .all(|b| [0, 1, 2, 4, 8, 16, 32, 64, 128].contains(b))
    );
    assert!(map.contains(&16), "{map:?}");

    // New code: called_later's edges appear, never_called's still do not.
    assert_eq!(target.ask("more"), "done");
    let second = tmp.path().join("second.sancov");
    snapshot_cmd(pid, &second);
    let by_fn = owners(&sancov_pcs(&second), &fns);
    let ran: Vec<&str> = by_fn.keys().map(String::as_str).collect();
    assert_eq!(
        ran,
        ["called_later", "covered_loop", "covered_once", "main"]
    );
    assert!(by_fn["called_later"].contains(&fns["called_later"].0));
    target.send("exit");
    target.wait();
}

#[test]
fn snapshot_mode_streams_sancov_snapshots_with_their_deltas() {
    require_root();
    let tmp = TempDir::new("snap-sancov-attach");
    let out = tmp.path().join("out");
    let mut target = start_fixture("sancov-target", &[], &[], tmp.path());
    let pid = target.pid().to_string();
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--no-report",
        "--mode",
        "snapshot",
        "--pid",
        &pid,
        "--interval",
        "1h",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    run_ok(Command::new(covobs_bin()).args(["dump", "--pid", &pid]));
    let first = covobs.wait_event(T, "a snapshot", |e| e.kind() == "snapshot");
    assert_eq!(first.s("runtime"), "sancov");
    assert!(first.u("covered") >= 7, "{first}");
    assert_eq!(first.u("new_covered"), first.u("covered"));
    assert_eq!(target.ask("more"), "done");
    run_ok(Command::new(covobs_bin()).args(["dump", "--pid", &pid]));
    let second = covobs.wait_event(T, "a second snapshot", |e| {
        e.kind() == "snapshot" && e.s("file") != first.s("file")
    });
    // called_later's entry and the branch it took, and main's block for `more`.
    assert_eq!(second.u("new_covered"), 3, "{second}");
    assert_eq!(second.u("covered"), first.u("covered") + 3);
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let arts = artifacts(&out);
    assert!(arts.len() >= 2);
    for (meta, file) in &arts {
        assert_eq!(meta["runtime"], "sancov");
        assert_eq!(meta["format"]["name"], "sancov");
        assert!(
            file.extension().is_some_and(|e| e == "sancov"),
            "{}",
            file.display()
        );
        let map = file.with_extension("counters");
        assert_eq!(
            std::fs::metadata(&map).unwrap().len(),
            meta["snapshot"]["counters"].as_u64().unwrap()
        );
    }
    target.send("exit");
    target.wait();
}
