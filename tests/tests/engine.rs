//! covobs' native coverage engine against llvm-cov, on real dumps of every LLVM fixture (the
//! Rust target: raw profile v11, mapping v7, LLVM 23; the C target, the shared library and the
//! two-module target: v8 and mapping v6 from clang 14): its LCOV equals `llvm-cov export
//! -format=lcov` byte for byte, and its per-file figures those of `llvm-cov export
//! -summary-only`.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use covobs::report::{
    engine::{Engine, profile::ModuleProfile, summary::Summarizer},
    tally::{Instance, Tally},
};
use covobs_tests::*;
use serde_json::Value;

/// Run a fixture for a while and stop it; the profiles its runtimes wrote.
fn dump_fixture(work: &Path, name: &str, ms: &str) -> Vec<Vec<u8>> {
    let file = work.join(format!("{name}.profraw"));
    let mut t = start_fixture(
        name,
        &["--exit-after-ms", ms],
        &[("LLVM_PROFILE_FILE", file.to_str().expect("utf-8"))],
        work,
    );
    assert!(t.wait().success(), "{name} failed");
    split_profiles(&fs::read(&file).expect("profile"))
}

struct Compared {
    lcov_lines: usize,
    files: usize,
}

/// The engine's LCOV and per-file figures of `object` with `profile` vs llvm-cov's.
fn compare(work: &Path, tools: &LlvmTools, object: &Path, profile: &[u8]) -> Compared {
    let elf = fs::read(object).expect("object");
    let version = covobs::report::engine::profile::readable_version(profile).expect("version");
    let module = ModuleProfile::from_elf(&elf, version).expect("module profile");
    let counters = module.read(profile).expect("profile of this module");
    let engine = Engine::open(&elf, tools.major as u32).expect("mapping");
    let cov = engine.coverage(&module, &counters.counters);
    let ours = cov.lcov();
    let raw = work.join("compare.profraw");
    fs::write(&raw, profile).expect("write");
    let profdata = work.join("compare.profdata");
    run_ok(
        Command::new(&tools.profdata)
            .args(["merge", "-sparse", "-o"])
            .arg(&profdata)
            .arg(&raw),
    );
    let instr = format!("-instr-profile={}", profdata.display());
    let theirs = run_ok(
        Command::new(&tools.cov)
            .args(["export", "-format=lcov", &instr])
            .arg(object),
    );
    assert_same_lcov(&object.display().to_string(), &ours, &theirs);
    // The report's line detail, built without the text, is what the LCOV reader makes of it.
    let (text, files) = cov.lcov_with_summary();
    let parsed = covobs::report::lcov::parse(&text, "covobs' engine").expect("engine LCOV");
    assert!(
        cov.detail_with_summary() == Some((parsed, files)),
        "{}: detail built directly differs from the LCOV read back",
        object.display()
    );
    let summary: Value = serde_json::from_str(&run_ok(
        Command::new(&tools.cov)
            .args(["export", "-summary-only", &instr])
            .arg(object),
    ))
    .expect("summary JSON");
    let theirs: BTreeMap<String, Value> = summary["data"][0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().expect("name").to_string(),
                f["summary"].clone(),
            )
        })
        .collect();
    let ours = cov.summary();
    // The per-point figures, kept up to date function by function, are the same whatever came
    // before: from nothing, after half the counters, and again with nothing changed.
    let mut points = Summarizer::new(&engine.mapping, &module, engine.flavor);
    let half: Vec<u64> = counters
        .counters
        .iter()
        .enumerate()
        .map(|(i, &c)| if i % 2 == 0 { c } else { 0 })
        .collect();
    // Doubled counts keep which region counts are zero and equal (their figures are reused
    // without computing them again); one more everywhere changes some.
    let doubled: Vec<u64> = counters.counters.iter().map(|c| c * 2).collect();
    let more: Vec<u64> = counters.counters.iter().map(|c| c + 1).collect();
    // Zeros kept, nonzero counts moved past each other: the kept order no longer holds.
    let shuffled: Vec<u64> = counters
        .counters
        .iter()
        .enumerate()
        .map(|(i, &c)| if c > 0 { c + (i as u64 % 7) * 3 } else { 0 })
        .collect();
    for c in [&half, &counters.counters, &counters.counters] {
        let want = engine.coverage(&module, c).summary();
        assert_eq!(
            points.summary(&engine.mapping, c),
            want,
            "{}",
            object.display()
        );
    }
    assert_eq!(
        points.recomputed, 0,
        "nothing changed, nothing computed again"
    );
    for c in [
        &doubled,
        &more,
        &counters.counters,
        &shuffled,
        &counters.counters,
    ] {
        let want = engine.coverage(&module, c).summary();
        assert_eq!(
            points.summary(&engine.mapping, c),
            want,
            "{}",
            object.display()
        );
    }
    // The same through the count model, which says which counters changed: a lone process's
    // states (growing, repeated, lower: a reset), then another process of the binary.
    let mut tally = Tally::new(module.num_counters, module.num_bitmap_bytes);
    let mut live = Summarizer::new(&engine.mapping, &module, engine.flavor);
    let (one, two) = (
        Instance {
            pid: 1,
            start: Some(1),
        },
        Instance {
            pid: 2,
            start: Some(2),
        },
    );
    for (who, c) in [
        (one, &half),
        (one, &counters.counters),
        (one, &doubled),
        (one, &doubled),
        (one, &more),
        (one, &shuffled),
        (two, &half),
        (one, &shuffled),
    ] {
        tally.push(who, c, &[], None);
        let want = engine.coverage(&module, tally.counters()).summary();
        let got = live.summary_changed(&engine.mapping, tally.counters(), tally.changed_blocks());
        tally.clear_changed();
        assert_eq!(got, want, "{}", object.display());
    }
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (file, t) in &ours {
        let s = &theirs[file];
        let pair = |k: &str| (s[k]["covered"].as_u64(), s[k]["count"].as_u64());
        assert_eq!(
            (Some(t.lines.hit), Some(t.lines.total)),
            pair("lines"),
            "{file} lines"
        );
        assert_eq!(
            (Some(t.functions.hit), Some(t.functions.total)),
            pair("functions"),
            "{file} functions"
        );
        assert_eq!(
            (Some(t.branches.hit), Some(t.branches.total)),
            pair("branches"),
            "{file} branches"
        );
        let r = t.regions.expect("regions");
        assert_eq!(
            (Some(r.hit), Some(r.total)),
            pair("regions"),
            "{file} regions"
        );
    }
    Compared {
        lcov_lines: theirs.len(),
        files: ours.len(),
    }
}

/// Equal LCOV, or a panic that shows where they part.
fn assert_same_lcov(what: &str, ours: &str, theirs: &str) {
    if ours != theirs {
        let at = ours
            .lines()
            .zip(theirs.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(ours.lines().count().min(theirs.lines().count()));
        let ctx = |t: &str| {
            t.lines()
                .skip(at.saturating_sub(3))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{what}: covobs' LCOV differs from llvm-cov's at line {} ({} vs {} lines)\n--- covobs\n{}\n--- llvm-cov\n{}",
            at + 1,
            ours.lines().count(),
            theirs.lines().count(),
            ctx(ours),
            ctx(theirs)
        );
    }
}

fn object_of(profile: &[u8], objects: &[PathBuf]) -> PathBuf {
    let version = covobs::report::engine::profile::readable_version(profile).expect("version");
    objects
        .iter()
        .find(|o| {
            let elf = fs::read(o).expect("object");
            ModuleProfile::from_elf(&elf, version)
                .and_then(|m| m.read(profile))
                .is_ok()
        })
        .unwrap_or_else(|| panic!("no object of {objects:?} matches the profile"))
        .clone()
}

#[test]
fn the_engine_equals_llvm_cov_on_every_llvm_fixture() {
    let tmp = TempDir::new("engine-fixtures");
    let work = tmp.path();
    for name in [
        "llvm-rust-target",
        "llvm-c-target",
        "llvm-shared-target",
        "llvm-multi-target",
    ] {
        let tools = llvm_tools(name);
        // A short run (some code not reached yet) and a longer one.
        for ms in ["300", "2500"] {
            let profiles = dump_fixture(work, name, ms);
            assert!(!profiles.is_empty(), "{name}: no profile");
            for p in &profiles {
                let object = object_of(p, &tools.objects);
                let c = compare(work, &tools, &object, p);
                println!(
                    "{name} ({ms} ms), {}: {} files equal",
                    object.display(),
                    c.files
                );
                assert!(c.lcov_lines > 0);
            }
        }
    }
}

/// A real third-party program: pulldown-cmark from crates.io, built by `cargo xtask fixtures`
/// with `-C instrument-coverage` (every crate of it), run by `covobs run` on real Markdown.
/// `covobs report`'s coverage.lcov equals `llvm-cov export -format=lcov` of the profile the
/// program's runtime wrote, byte for byte, and summary.json's totals and per-file figures equal
/// `llvm-cov export -summary-only`'s.
#[test]
fn a_crates_io_program_reported_by_covobs_equals_llvm_cov() {
    require_root();
    let tmp = TempDir::new("engine-crates-io");
    let session = third_party::third_party_session(tmp.path());
    let tools = llvm_tools(third_party::PROGRAM);
    let profdata = tmp.path().join("oracle.profdata");
    run_ok(
        Command::new(&tools.profdata)
            .args(["merge", "-sparse", "-o"])
            .arg(&profdata)
            .arg(&session.profile),
    );
    let instr = format!("-instr-profile={}", profdata.display());
    let theirs = run_ok(
        Command::new(&tools.cov)
            .args(["export", "-format=lcov", &instr])
            .arg(&session.binary),
    );
    let report = session.out.join("report");
    let ours = fs::read_to_string(report.join("coverage.lcov")).expect("coverage.lcov");
    assert_same_lcov("pulldown-cmark", &ours, &theirs);

    let summary: Value = serde_json::from_str(&run_ok(
        Command::new(&tools.cov)
            .args(["export", "-summary-only", &instr])
            .arg(&session.binary),
    ))
    .expect("summary JSON");
    let data = &summary["data"][0];
    let ours = read_json(&report.join("summary.json"));
    let figures = |v: &Value, hit: &str, total: &str| {
        ["lines", "functions", "branches", "regions"]
            .map(|k| (v[k][hit].clone(), v[k][total].clone()))
    };
    assert_eq!(
        figures(&ours["totals"], "hit", "total"),
        figures(&data["totals"], "covered", "count"),
        "totals"
    );
    let files = |v: &Value, name: &str, at: Option<&str>, hit: &str, total: &str| {
        v.as_array()
            .expect("files")
            .iter()
            .map(|f| {
                let fig = at.map_or(f, |k| &f[k]);
                (
                    f[name].as_str().expect("file name").to_string(),
                    figures(fig, hit, total),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let our_files = files(&ours["files"], "path", None, "hit", "total");
    let their_files = files(
        &data["files"],
        "filename",
        Some("summary"),
        "covered",
        "count",
    );
    assert_eq!(our_files, their_files);
    let lines = ours["totals"]["lines"]["total"].as_u64().unwrap_or(0);
    println!(
        "pulldown-cmark: {} files, {lines} lines, {} bytes of LCOV equal",
        our_files.len(),
        theirs.len()
    );
    assert!(our_files.len() > 20 && lines > 5000, "{}", ours["totals"]);
}

/// Figures: the engine on the million-counter fixture (`--ignored --nocapture`).
#[test]
#[ignore = "benchmark: prints figures"]
fn engine_timing_on_a_million_counters() {
    use std::time::Instant;
    let tmp = TempDir::new("engine-bench");
    let file = tmp.path().join("bench.profraw");
    let mut t = Driven::start(
        Command::new(fixture("snapshot-bench-target"))
            .arg("dump")
            .env("LLVM_PROFILE_FILE", &file),
    );
    assert!(t.line().ends_with("ready"));
    assert!(t.ask("dump").contains("ret=0"));
    t.send("quit");
    t.wait();
    let profile = fs::read(&file).expect("profile");
    let elf = fs::read(fixture("snapshot-bench-target")).expect("elf");
    let t0 = Instant::now();
    let module = ModuleProfile::from_elf(&elf, 8).expect("module");
    let engine = Engine::open(&elf, 14).expect("engine");
    println!(
        "open: {:?} ({} functions)",
        t0.elapsed(),
        engine.mapping.functions.len()
    );
    let t0 = Instant::now();
    let counters = module.read(&profile).expect("read");
    println!("read counters: {:?}", t0.elapsed());
    let t0 = Instant::now();
    let cov = engine.coverage(&module, &counters.counters);
    println!("records: {:?}", t0.elapsed());
    let t0 = Instant::now();
    let s = cov.summary();
    println!("summary: {:?} ({} files)", t0.elapsed(), s.len());
    let t0 = Instant::now();
    let l = cov.lcov();
    println!("lcov: {:?} ({} bytes)", t0.elapsed(), l.len());
}
