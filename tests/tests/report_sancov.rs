//! SanitizerCoverage in the report (docs/output.md, "Exact counts"): sancov-target attached in
//! snapshot mode, two runs of it in one session, several snapshots each. The lines the report
//! calls hit are those llvm-symbolizer (LLVM's own, independent of covobs' DWARF reading) gives
//! for the PCs of the session's `.sancov` files; counts are the counters' AFL bucket floors, per
//! process instance, never added up across snapshots of one process.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::Command,
    time::Duration,
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// DA lines of the report's LCOV: (file, line) -> count.
fn report_lines(out: &Path) -> BTreeMap<(String, u32), u64> {
    let lcov = fs::read_to_string(out.join("report/coverage.lcov")).expect("report lcov");
    let mut file = String::new();
    let mut lines = BTreeMap::new();
    for l in lcov.lines() {
        if let Some(f) = l.strip_prefix("SF:") {
            file = f.to_string();
        } else if let Some(da) = l.strip_prefix("DA:") {
            let (n, c) = da.split_once(',').expect("DA");
            let c = c.split(',').next().expect("count");
            lines.insert(
                (file.clone(), n.parse().expect("line")),
                c.parse().expect("count"),
            );
        }
    }
    lines
}

/// (file, line) of each PC, as llvm-symbolizer reads the binary's DWARF.
fn symbolize(bin: &Path, pcs: &BTreeSet<u64>) -> BTreeSet<(String, u32)> {
    let out = run_ok(
        Command::new("llvm-symbolizer-14")
            .arg("--no-inlines")
            .arg(format!("--obj={}", bin.display()))
            .args(pcs.iter().map(|pc| format!("{pc:#x}"))),
    );
    let mut places = BTreeSet::new();
    for l in out.lines() {
        // "/path/main.c:42:13"
        let mut it = l.rsplitn(3, ':');
        let (Some(_col), Some(line), Some(file)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let Ok(line) = line.parse::<u32>()
            && line > 0
            && file.starts_with('/')
        {
            places.insert((file.to_string(), line));
        }
    }
    places
}

#[test]
fn sancov_snapshots_of_two_runs_report_exact_lines() {
    require_root();
    let tmp = TempDir::new("report-sancov");
    let name = unique_name("sancovx");
    let bin = copy_as(&fixture("sancov-target"), tmp.path(), &name);
    let out = tmp.path().join("out");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--mode",
        "snapshot",
        "--name",
        &name,
        "--interval",
        "1h",
        "--duration",
        "60s",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let mut pids = Vec::new();
    for more in [true, false] {
        let mut target = start_program(&bin, &[], &[], tmp.path());
        let pid = target.pid();
        pids.push(pid);
        covobs.wait_event(T, "runtime_found", |e| {
            e.kind() == "runtime_found" && e.u("pid") == pid as u64
        });
        let dump = || run_ok(Command::new(covobs_bin()).args(["dump", "--pid", &pid.to_string()]));
        dump();
        dump();
        if more {
            assert_eq!(target.ask("more"), "done");
            dump();
        }
        target.send("exit");
        target.wait();
        covobs.wait_event(T, "process_exit", |e| {
            e.kind() == "process_exit" && e.u("pid") == pid as u64
        });
    }
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    // Each run was adopted at its exec: that exec lost nothing, whenever its record came in.
    let events = covobs.events().to_vec();
    let execs: Vec<&Value> = of_kind(&events, "lost")
        .into_iter()
        .filter(|e| e.s("reason").contains("exec"))
        .collect();
    assert!(execs.is_empty(), "{execs:?}");

    let metas: Vec<Artifact> = artifacts(&out)
        .into_iter()
        .filter(|a| a.meta["runtime"] == "sancov")
        .collect();
    assert!(metas.len() >= 5, "{} sancov artifacts", metas.len());
    let mut pcs = BTreeSet::new();
    for a in &metas {
        let f = a.meta_path.parent().expect("dir").join(a.meta.s("file"));
        let b = fs::read(&f).expect("sancov");
        let words: Vec<u64> = b
            .as_chunks::<8>()
            .0
            .iter()
            .map(|w| u64::from_le_bytes(*w))
            .collect();
        assert_eq!(words[0], 0xC0BF_FFFF_FFFF_FF64);
        pcs.extend(&words[1..]);
    }
    // Module-relative PCs, every one a place in the program (a process caught at its exec has
    // not relocated its PC table yet: its memory then holds no run-time PCs).
    let unknown = run_ok(
        Command::new("llvm-symbolizer-14")
            .arg("--no-inlines")
            .arg(format!("--obj={}", bin.display()))
            .args(pcs.iter().map(|pc| format!("{pc:#x}"))),
    );
    assert!(
        !unknown.contains("??:0"),
        "PCs outside the module: {pcs:x?}\n{unknown}"
    );
    let summary = read_json(&out.join("report/summary.json"));
    assert_eq!(summary["artifacts"]["excluded"], 0, "{summary:#}");
    let lines = report_lines(&out);
    let hit: BTreeSet<(String, u32)> = lines
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        hit,
        symbolize(&bin, &pcs),
        "lines hit, against llvm-symbolizer"
    );
    // Lines of code never run are there too (never_called's), at 0.
    // The source as the binary's DWARF names it (the fixtures may be built in another checkout).
    let src = lines
        .keys()
        .map(|(f, _)| f.clone())
        .find(|f| f.ends_with("fixtures/sancov-target/main.c"))
        .unwrap_or_else(|| panic!("main.c in {lines:?}"));
    let at = |line: u32| lines.get(&(src.clone(), line)).copied();
    assert_eq!(at(49), Some(0), "never_called: {lines:?}");
    // The loop's blocks ran 10 and 11 times in each run (clang puts them on the `for` line):
    // bucket 8-15, floor 8; two instances: 16, however many snapshots each had.
    assert_eq!(at(41), Some(16), "{lines:?}");
    // covered_once ran once per run; called_later once, in the first run only.
    assert_eq!(at(36), Some(2), "{lines:?}");
    assert_eq!(at(58), Some(1), "{lines:?}");
    let s: &Value = &summary["modules"][0];
    assert_eq!(s["runtime"], "sancov", "{summary:#}");
    println!(
        "{} sancov artifacts of {} runs: {} lines hit, as llvm-symbolizer says; loop body 16",
        metas.len(),
        pids.len(),
        hit.len()
    );
}
