//! `covobs report DIR` on session directories built by hand from real coverage runs: a C
//! program built with Debian's clang 14 and a Rust program built with the pinned rustc, their
//! raw profiles laid out as docs/output.md says. The report must say what llvm-profdata and
//! llvm-cov say on the same files, leave bad artifacts out with a reason, and refuse bad input.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use covobs_tests::{built_session::*, *};
use serde_json::{Value, json};

const RUST_SOURCE: &str = r#"fn classify<T: PartialOrd + Copy>(x: T, lo: T, hi: T) -> u8 {
    if x > lo && x < hi { 1 } else if x >= hi { 2 } else { 0 }
}

fn main() {
    let n: i64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    println!("{}", classify(n, 10, 100));
    if n > 5 {
        println!("{}", classify(n as f64, 1.0, 5.0));
        for i in 0..n {
            if i % 3 == 0 {
                println!("fizz {i}");
            }
        }
    }
}
"#;

fn covobs(args: &[&str]) -> Output {
    Command::new(covobs_bin())
        .args(args)
        .output()
        .expect("run covobs")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// LCOV records keyed by source file, for comparisons that do not depend on file order.
fn lcov_records(text: &str) -> BTreeMap<String, String> {
    let mut records = BTreeMap::new();
    for rec in text.split_inclusive("end_of_record\n") {
        let sf = rec
            .lines()
            .find_map(|l| l.strip_prefix("SF:"))
            .unwrap_or_else(|| panic!("LCOV record without SF: {rec:?}"))
            .to_string();
        records.insert(sf, rec.to_string());
    }
    records
}

/// What the LLVM tools give directly: (LCOV, summary totals JSON).
fn llvm_direct(bin_dir: &Path, binary: &Path, profraws: &[&Path], work: &Path) -> (String, Value) {
    let profdata = work.join("direct.profdata");
    run_ok(
        Command::new(bin_dir.join("llvm-profdata"))
            .args(["merge", "-sparse", "-o"])
            .arg(&profdata)
            .args(profraws),
    );
    let instr = format!("-instr-profile={}", profdata.display());
    let lcov = run_ok(
        Command::new(bin_dir.join("llvm-cov"))
            .args(["export", "-format=lcov", &instr])
            .arg(binary),
    );
    let summary: Value = serde_json::from_str(&run_ok(
        Command::new(bin_dir.join("llvm-cov"))
            .args(["export", "-summary-only", &instr])
            .arg(binary),
    ))
    .expect("llvm-cov summary JSON");
    (lcov, summary["data"][0]["totals"].clone())
}

fn assert_same_lcov(ours: &str, theirs: &str) {
    let (a, b) = (lcov_records(ours), lcov_records(theirs));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different source files"
    );
    for (sf, rec) in &a {
        assert_eq!(
            rec, &b[sf],
            "LCOV record of {sf} differs from llvm-cov's:\n--- covobs\n{rec}\n--- llvm-cov\n{}",
            b[sf]
        );
    }
    // Same records in the same order: byte for byte.
    assert_eq!(ours, theirs);
}

fn assert_totals_match(ours: &Value, llvm: &Value) {
    for k in ["lines", "functions", "branches", "regions"] {
        assert_eq!(
            (ours[k]["hit"].as_u64(), ours[k]["total"].as_u64()),
            (llvm[k]["covered"].as_u64(), llvm[k]["count"].as_u64()),
            "{k}: covobs {} vs llvm-cov {}",
            ours[k],
            llvm[k]
        );
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn report_equals_llvm_tools_and_leaves_bad_artifacts_out() {
    let tmp = TempDir::new("report-c");
    let work = tmp.path();
    let bin = build_c(work, "cov-c-target");
    // Two runs that reach different code (and a restart: two pids).
    let raw1 = work.join("run1.profraw");
    let raw2 = work.join("run2.profraw");
    let pid1 = run_instrumented(&bin, &raw1, &["1"]);
    let pid2 = run_instrumented(&bin, &raw2, &["50"]);
    let bytes1 = fs::read(&raw1).expect("read run1");
    let bytes2 = fs::read(&raw2).expect("read run2");

    let session = work.join("session");
    let s = SessionBuilder::new(
        &session,
        &bin,
        "cov-c-target",
        Some("Debian clang version 14.0.6"),
        Some(14),
    );
    s.artifact(1, pid1, &bytes1, true);
    s.artifact(2, pid2, &bytes2, true);
    // 3: truncated (the collector would not mark it valid, but the report re-checks).
    s.artifact(3, pid2, &bytes2[..bytes2.len() / 2], true);
    // 4: a header that passes a first look but that llvm-profdata 14 refuses (a counters
    // delta pointing nowhere).
    let mut bad_delta = bytes2.clone();
    bad_delta[64..72].copy_from_slice(&0x7fff_ffffu64.to_le_bytes());
    s.artifact(4, pid2, &bad_delta, true);
    // 5: marked invalid by the collector.
    s.artifact(5, pid2, &bytes2, false);
    // 6: bytes changed after the checksum was taken.
    let meta6 = s.artifact(6, pid2, &bytes1, true);
    let f6 = meta6.with_extension("profraw");
    let mut tampered = bytes1.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    fs::write(&f6, &tampered).expect("tamper");
    // 7: the first run's counters again (a target idle between two dumps): the same state of
    // the same process, counted once; the coverage figures do not move.
    s.artifact(7, pid1, &bytes1, true);
    // 8: the same counters as 1 and 7, but its function names are garbage: not a profile of
    // this module, left out.
    let word = |i: usize| u64::from_le_bytes(bytes1[i * 8..i * 8 + 8].try_into().expect("word"));
    assert_eq!(word(1) & 0xff, 8, "clang 14 writes raw profile version 8");
    let names = (88 + word(2) + word(3) * 48 + word(4) + word(5) * 8 + word(6)) as usize;
    let mut bad_names = bytes1.clone();
    bad_names[names..names + word(7) as usize].fill(0xff);
    s.artifact(8, pid1, &bad_names, true);

    let dir = session.to_string_lossy().into_owned();
    let out = covobs(&["report", &dir]);
    let stderr = stderr_of(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("lines "), "{stdout}");
    assert!(stdout.contains("html/index.html"), "{stdout}");

    // The LCOV equals llvm-profdata merge + llvm-cov export on the two processes' last states
    // (docs/output.md, "Exact counts").
    let report = session.join("report");
    let ours = fs::read_to_string(report.join("coverage.lcov")).expect("coverage.lcov");
    let (theirs, llvm_totals) = llvm_direct(Path::new(LLVM14), &bin, &[&raw1, &raw2], work);
    assert_same_lcov(&ours, &theirs);

    // The summary's totals are llvm-cov's.
    let summary = read_json(&report.join("summary.json"));
    assert_totals_match(&summary["totals"], &llvm_totals);
    assert_eq!(summary["artifacts"]["total"], 8);
    assert_eq!(summary["artifacts"]["reported"], 3);
    assert_eq!(summary["files"][0]["language"], "C");
    assert_eq!(summary["modules"][0]["name"], "cov-c-target");
    // Computed by covobs' engine with llvm-cov 14's semantics (clang 14 built it).
    assert!(
        summary["modules"][0]["tools"]
            .as_str()
            .is_some_and(|t| t.contains("llvm-cov 14 semantics")),
        "{}",
        summary["modules"][0]
    );

    // Every bad artifact is left out, with its reason.
    let excluded: BTreeMap<u64, String> = summary["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().expect("seq"),
                e["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    assert_eq!(
        excluded.keys().copied().collect::<Vec<_>>(),
        [3, 4, 5, 6, 8],
        "{excluded:?}"
    );
    assert!(excluded[&8].contains("names"), "{}", excluded[&8]);
    assert!(excluded[&3].contains("truncated"), "{}", excluded[&3]);
    assert!(
        excluded[&4].contains("counters elsewhere"),
        "{}",
        excluded[&4]
    );
    assert!(excluded[&5].contains("invalid"), "{}", excluded[&5]);
    assert!(excluded[&6].contains("checksum"), "{}", excluded[&6]);
    for seq in [3, 4, 5, 6, 8] {
        assert!(
            stderr.contains(&format!("{seq:06}-llvm.profraw")),
            "stderr does not mention artifact {seq}: {stderr}"
        );
    }

    // The timeline: one point per reported artifact, in seq order, coverage growing, ending at
    // the summary's totals.
    let timeline = read_json(&report.join("timeline.json"));
    let points = timeline["points"].as_array().expect("points");
    assert_eq!(points.len(), 3, "{timeline}");
    assert_eq!(points[0]["seq"], 1);
    assert_eq!(points[1]["seq"], 2);
    assert_eq!(points[2]["seq"], 7);
    assert_eq!(points[0]["pid"], pid1);
    assert_eq!(points[1]["end_ns"], 2_000_000_000u64);
    for k in ["lines", "functions", "branches", "regions"] {
        assert!(
            points[1][k]["hit"].as_u64() > points[0][k]["hit"].as_u64(),
            "{k} did not grow: {} -> {}",
            points[0][k],
            points[1][k]
        );
        assert_eq!(points[1][k], points[2][k], "{k}");
        assert_eq!(points[2][k], summary["totals"][k], "{k}");
    }
    // The first point is what llvm-cov says of the first profile alone.
    let (_, first_totals) = llvm_direct(Path::new(LLVM14), &bin, &[&raw1], work);
    assert_totals_match(&points[0], &first_totals);

    // HTML: index with a link to the file's page, which shows the escaped source.
    let index = fs::read_to_string(report.join("html/index.html")).expect("index.html");
    let link = index
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| h.starts_with("files/"))
        .unwrap_or_else(|| panic!("no per-file link in index.html"));
    let page = fs::read_to_string(report.join("html").join(link)).expect("file page");
    assert!(
        page.contains("#include &lt;stdio.h&gt;"),
        "source not shown escaped"
    );
    assert!(page.contains("class=\"miss\""), "no uncovered line marked");
    assert!(page.contains("class=\"hit\""), "no covered line marked");
    assert!(index.contains("<svg"), "no timeline chart");
    assert!(!index.contains("<script") && !page.contains("<script"));
    assert!(index.contains("Left out"));

    // Cobertura.
    let xml = fs::read_to_string(report.join("coverage.cobertura.xml")).expect("cobertura");
    assert!(xml.starts_with("<?xml"));
    let lines = &summary["totals"]["lines"];
    assert!(
        xml.contains(&format!(
            "lines-covered=\"{}\" lines-valid=\"{}\"",
            lines["hit"], lines["total"]
        )),
        "{}",
        &xml[..xml.len().min(400)]
    );
    assert!(xml.contains("filename=\"cov-c-target.c\""));

    // Nothing else was left in the session directory.
    let stray: Vec<String> = fs::read_dir(&session)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");

    // With --llvm-cov, llvm-profdata and llvm-cov compute the same, and the summary says so.
    let out = covobs(&["report", &dir, "--format", "lcov,json", "--llvm-cov"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        fs::read_to_string(report.join("coverage.lcov")).expect("lcov"),
        ours
    );
    let by_tools = read_json(&report.join("summary.json"));
    assert_eq!(by_tools["totals"], summary["totals"]);
    assert!(
        by_tools["modules"][0]["tools"]
            .as_str()
            .is_some_and(|t| t.starts_with("LLVM 14.")),
        "{}",
        by_tools["modules"][0]
    );

    // Again with one format: report/ is rebuilt with only that.
    let out = covobs(&["report", &dir, "--format", "lcov"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let names: Vec<String> = fs::read_dir(&report)
        .expect("ls report")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["coverage.lcov"]);
    assert_eq!(
        fs::read_to_string(report.join("coverage.lcov")).expect("lcov"),
        ours
    );
}

/// DA lines of one LCOV record: line -> count.
fn da_lines(record: &str) -> BTreeMap<u32, u64> {
    record
        .lines()
        .filter_map(|l| l.strip_prefix("DA:"))
        .map(|v| {
            let (l, c) = v.split_once(',').expect("DA");
            (l.parse().expect("line"), c.parse().expect("count"))
        })
        .collect()
}

#[test]
fn two_modules_sharing_a_header_count_its_lines_once() {
    let clang = tool("/usr/bin/clang-14");
    let tmp = TempDir::new("report-shared");
    let work = tmp.path();
    fs::write(
        work.join("shared.h"),
        "static int classify(int x) {\n    if (x > 10 && x < 100)\n        return 1;\n    \
         else if (x >= 100)\n        return 2;\n    return 0;\n}\n\
         static inline int twice(int x) { return x * 2; }\n",
    )
    .expect("header");
    fs::write(
        work.join("cov-a1.c"),
        "#include <stdlib.h>\n#include \"shared.h\"\n\
         int main(int c, char **v) { int n = c > 1 ? atoi(v[1]) : 0; return classify(n) * 0; }\n",
    )
    .expect("a1");
    fs::write(
        work.join("cov-a2.c"),
        "#include <stdlib.h>\n#include \"shared.h\"\n\
         int main(int c, char **v) { int n = c > 1 ? atoi(v[1]) : 0; if (n > 3) n = twice(n);\n\
         return classify(n) * 0; }\n",
    )
    .expect("a2");
    let session = work.join("session");
    let mut raws = Vec::new();
    for (i, (name, arg)) in [("cov-a1", "3"), ("cov-a2", "50")].into_iter().enumerate() {
        let bin = work.join(name);
        run_ok(
            Command::new(&clang)
                .args([
                    "-fprofile-instr-generate",
                    "-fcoverage-mapping",
                    "-O0",
                    "-o",
                ])
                .arg(&bin)
                .arg(work.join(format!("{name}.c"))),
        );
        let raw = work.join(format!("{name}.profraw"));
        let pid = run_instrumented(&bin, &raw, &[arg]);
        let s = SessionBuilder::new(
            &session,
            &bin,
            name,
            Some("Debian clang version 14.0.6"),
            Some(14),
        );
        s.artifact(i as u64 + 1, pid, &fs::read(&raw).expect("raw"), true);
        raws.push((bin, raw));
    }
    let dir = session.to_string_lossy().into_owned();
    let out = covobs(&["report", &dir, "--format", "lcov,json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let ours =
        lcov_records(&fs::read_to_string(session.join("report/coverage.lcov")).expect("lcov"));
    // What llvm-cov says of each module alone.
    let alone: Vec<(BTreeMap<String, String>, Value)> = raws
        .iter()
        .enumerate()
        .map(|(i, (bin, raw))| {
            let w = work.join(format!("alone{i}"));
            fs::create_dir_all(&w).expect("mkdir");
            let (lcov, _) = llvm_direct(Path::new(LLVM14), bin, &[raw], &w);
            let profdata = format!("-instr-profile={}", w.join("direct.profdata").display());
            let summary: Value = serde_json::from_str(&run_ok(
                Command::new(Path::new(LLVM14).join("llvm-cov"))
                    .args(["export", "-summary-only", &profdata])
                    .arg(bin),
            ))
            .expect("summary");
            (lcov_records(&lcov), summary)
        })
        .collect();
    let header = work.join("shared.h").to_string_lossy().into_owned();
    let a1 = work.join("cov-a1.c").to_string_lossy().into_owned();
    let a2 = work.join("cov-a2.c").to_string_lossy().into_owned();
    // Files of one module: exactly llvm-cov's record.
    assert_eq!(ours[&a1], alone[0].0[&a1]);
    assert_eq!(ours[&a2], alone[1].0[&a2]);
    // The shared header: every line of either module once, hit counts added up.
    let mut want = da_lines(&alone[0].0[&header]);
    for (line, n) in da_lines(&alone[1].0[&header]) {
        *want.entry(line).or_default() += n;
    }
    assert_eq!(da_lines(&ours[&header]), want);
    let summary = read_json(&session.join("report/summary.json"));
    let file = summary["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == header.as_str())
        .expect("header in summary")
        .clone();
    let hit = want.values().filter(|&&n| n > 0).count() as u64;
    assert_eq!(file["lines"]["hit"].as_u64(), Some(hit), "{file}");
    assert_eq!(
        file["lines"]["total"].as_u64(),
        Some(want.len() as u64),
        "{file}"
    );
    assert_eq!(file["modules"], json!(["cov-a1", "cov-a2"]));
    // Regions are each module's own: they add up.
    let regions = |s: &Value| {
        s["data"][0]["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|f| f["filename"] == header.as_str())
            .map(|f| f["summary"]["regions"]["count"].as_u64().expect("count"))
            .expect("header")
    };
    assert_eq!(
        file["regions"]["total"].as_u64(),
        Some(regions(&alone[0].1) + regions(&alone[1].1))
    );
    // The last point of the timeline is the summary.
    let points = read_json(&session.join("report/timeline.json"))["points"].clone();
    assert_eq!(points[1]["lines"], summary["totals"]["lines"]);
    assert_eq!(points[1]["regions"], summary["totals"]["regions"]);
}

#[test]
fn report_of_a_rust_program_uses_its_rustc_llvm_tools() {
    let tmp = TempDir::new("report-rust");
    let work = tmp.path();
    let src = work.join("cov_rust_target.rs");
    fs::write(&src, RUST_SOURCE).expect("write source");
    let bin = work.join("cov-rust-target");
    // The rustc of this workspace's pinned toolchain (cargo runs the tests under it).
    run_ok(
        Command::new("rustc")
            .args(["-C", "instrument-coverage", "-o"])
            .arg(&bin)
            .arg(&src),
    );
    let vv = run_ok(Command::new("rustc").arg("-vV"));
    let sysroot = run_ok(Command::new("rustc").args(["--print", "sysroot"]));
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host")
        .to_string();
    let tools = PathBuf::from(sysroot.trim()).join(format!("lib/rustlib/{host}/bin"));
    assert!(
        tools.join("llvm-cov").exists(),
        "{} has no llvm-cov: the set-up installs the llvm-tools component",
        tools.display()
    );
    let raw1 = work.join("r1.profraw");
    let raw2 = work.join("r2.profraw");
    let pid1 = run_instrumented(&bin, &raw1, &["1"]);
    let pid2 = run_instrumented(&bin, &raw2, &["20"]);
    let session = work.join("session");
    // No producer, no LLVM major: the report reads the module's .comment section.
    let s = SessionBuilder::new(&session, &bin, "cov-rust-target", None, None);
    s.artifact(1, pid1, &fs::read(&raw1).expect("r1"), true);
    s.artifact(2, pid2, &fs::read(&raw2).expect("r2"), true);
    let dir = session.to_string_lossy().into_owned();
    let out = covobs(&["report", &dir, "--format", "lcov,json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let report = session.join("report");
    let ours = fs::read_to_string(report.join("coverage.lcov")).expect("lcov");
    let (theirs, llvm_totals) = llvm_direct(&tools, &bin, &[&raw1, &raw2], work);
    assert_same_lcov(&ours, &theirs);
    let summary = read_json(&report.join("summary.json"));
    assert_totals_match(&summary["totals"], &llvm_totals);
    let release = vv
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .expect("release");
    // Computed by covobs' engine with the semantics of the llvm-cov of that rustc's LLVM.
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .expect("LLVM version");
    let module = &summary["modules"][0];
    assert!(
        module["tools"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("llvm-cov {major} semantics"))),
        "not read as rustc {release}'s LLVM {major} would: {module}"
    );
    assert!(!report.join("html").exists());
    let points = read_json(&report.join("timeline.json"))["points"].clone();
    assert_eq!(points.as_array().map(Vec::len), Some(2));
    assert!(points[1]["lines"]["hit"].as_u64() > points[0]["lines"]["hit"].as_u64());
}

#[test]
fn report_says_which_llvm_is_missing() {
    let tmp = TempDir::new("report-nollvm");
    let work = tmp.path();
    let bin = build_c(work, "cov-nollvm");
    let raw = work.join("run.profraw");
    let pid = run_instrumented(&bin, &raw, &["3"]);
    let session = work.join("session");
    // A module built by an LLVM this machine has no tools for.
    let s = SessionBuilder::new(
        &session,
        &bin,
        "cov-nollvm",
        Some("clang version 99.1.0"),
        Some(99),
    );
    s.artifact(1, pid, &fs::read(&raw).expect("raw"), true);
    let dir = session.to_string_lossy().into_owned();
    let out = covobs(&["report", &dir]);
    let stderr = stderr_of(&out);
    // Nothing could be reported: a runtime failure, the report is written all the same.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cov-nollvm: needs LLVM 99 tools"),
        "{stderr}"
    );
    assert!(stderr.contains("apt install llvm-99"), "{stderr}");
    let summary = read_json(&session.join("report/summary.json"));
    assert_eq!(summary["artifacts"]["reported"], 0);
    assert!(
        summary["excluded"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("LLVM 99")),
        "{summary}"
    );
    assert!(
        summary["warnings"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("LLVM 99"))
    );
}

#[test]
fn report_refuses_bad_input_with_one_line() {
    let one_line = |out: &Output, needle: &str| {
        let stderr = stderr_of(out);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    };
    one_line(
        &covobs(&["report", "/nonexistent/covobs-session"]),
        "no such directory",
    );
    let tmp = TempDir::new("report-bad");
    let dir = tmp.path().to_string_lossy().into_owned();
    one_line(&covobs(&["report", &dir]), "not a covobs session");
    // A --source-path that is not a directory (a typo) is refused before anything is read.
    one_line(
        &covobs(&["report", &dir, "--source-path", "/nonexistent/src"]),
        "--source-path /nonexistent/src: no such directory",
    );
    // An unknown format is a usage error (clap's, with its usage hint).
    let out = covobs(&["report", &dir, "--format", "pdf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("unknown report format \"pdf\""));
    // Corrupt metadata is not the whole session's fault: that artifact is left out with the
    // reason and the report is written (nothing else to report here: exit 1, see main.rs).
    let pdir = tmp.path().join("42-x");
    fs::create_dir(&pdir).expect("mkdir");
    fs::write(pdir.join("000001-llvm.json"), "{\"seq\": 1, \"runtime\": ").expect("write");
    let out = covobs(&["report", &dir]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("42-x/000001-llvm.json") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(tmp.path().join("report/summary.json").exists());
    fs::remove_dir_all(tmp.path().join("report")).expect("rm report");
    // A corrupt session.json is bad input: refused, and nothing written.
    fs::write(tmp.path().join("session.json"), "[1,").expect("write");
    one_line(&covobs(&["report", &dir]), "session.json");
    let mut left: Vec<String> = fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["42-x", "session.json"],
        "the failed report left something behind"
    );
}

/// Benchmark (figures, no timed assertions): `covobs report` on a session of N dumps of the C
/// program. Worst case: every dump has new counters (each needs its merge and its export);
/// then the same number of dumps that repeat earlier counters (an idle target: merge only).
/// Run with `cargo test -p covobs-tests --test report -- --ignored --nocapture`
/// (COVOBS_BENCH_DUMPS=N, default 1000).
#[test]
#[ignore = "benchmark: prints figures"]
fn bench_report_of_many_dumps() {
    let n: u64 = std::env::var("COVOBS_BENCH_DUMPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = TempDir::new("report-bench");
    let work = tmp.path();
    let bin = build_c(work, "cov-bench");
    let raw = work.join("b.profraw");
    let mut distinct = Vec::new();
    for i in 0..n {
        let _ = fs::remove_file(&raw);
        run_instrumented(&bin, &raw, &[&i.to_string()]);
        distinct.push(fs::read(&raw).expect("read"));
    }
    for (what, pick) in [
        (
            "new counters in every dump",
            &(|seq: u64| (seq - 1) as usize) as &dyn Fn(u64) -> usize,
        ),
        ("4 distinct dumps repeated", &|seq: u64| {
            (seq % 4) as usize + 20
        }),
    ] {
        let session = work.join(format!("session-{}", what.len()));
        let s = SessionBuilder::new(
            &session,
            &bin,
            "cov-bench",
            Some("Debian clang version 14.0.6"),
            Some(14),
        );
        for seq in 1..=n {
            s.artifact(
                seq,
                1000 + (seq as u32 % 3),
                &distinct[pick(seq) % distinct.len()],
                true,
            );
        }
        let dir = session.to_string_lossy().into_owned();
        let t = Instant::now();
        let out = covobs(&["report", &dir]);
        let elapsed = t.elapsed();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let points = read_json(&session.join("report/timeline.json"))["points"]
            .as_array()
            .map(Vec::len);
        assert_eq!(points, Some(n as usize));
        println!(
            "covobs report, {n} dumps of a small C program ({what}): {:.2} s ({:.1} ms per dump)",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / n as f64
        );
    }
}
