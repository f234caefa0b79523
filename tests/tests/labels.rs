//! Labels (docs/labels.md) against a real target: label-phases (fixtures/label-phases), built
//! with clang 14, runs phases on command; each phase's lines are known from its source. A real
//! `covobs attach` (signal mode: real SIGUSR2 and runtime dumps; snapshot mode: counters read
//! from memory) closes one label per phase group, through `covobs dump --label` and through
//! the control socket's JSON lines on one connection. The report must give each label exactly
//! its phases' lines with the phases' own counts, agree with llvm-cov on the difference of the
//! dumps, and list per line the labels that reached it. `covobs diff` is checked against
//! llvm-cov's coverage of two runs of one program.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    ops::RangeInclusive,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use covobs_tests::{built_session::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const SOURCE: &str = include_str!("../../fixtures/label-phases/phases.c");
const PHASES: [&str; 4] = ["shared", "alpha", "beta", "gamma"];

/// The labels closed, in order, and the commands run before each (phase, times).
const SCRIPT: [(&str, &[(&str, u64)]); 4] = [
    ("one", &[("alpha", 2)]),
    ("two", &[("beta", 3)]),
    ("three", &[("gamma", 1), ("alpha", 1)]),
    ("empty", &[]),
];

/// What each phase's lines count when a label ran `commands`: alpha and beta call shared once.
fn expected_counts(commands: &[(&str, u64)]) -> BTreeMap<&'static str, u64> {
    let mut c: BTreeMap<&'static str, u64> = PHASES.iter().map(|p| (*p, 0)).collect();
    for (phase, n) in commands {
        let p = PHASES.iter().find(|p| *p == phase).expect("phase");
        *c.get_mut(p).expect("phase") += n;
        if *phase == "alpha" || *phase == "beta" {
            *c.get_mut("shared").expect("shared") += n;
        }
    }
    c
}

/// Each phase's line range, from its BEGIN and END comments.
fn phase_ranges() -> BTreeMap<&'static str, RangeInclusive<u32>> {
    ranges_between(SOURCE, "/*", "*/")
}

/// Each phase's line range in `source`, from its `<open> BEGIN p <close>` and `<open> END p
/// <close>` comment lines.
fn ranges_between(
    source: &str,
    open: &str,
    close: &str,
) -> BTreeMap<&'static str, RangeInclusive<u32>> {
    let find = |marker: String| {
        source
            .lines()
            .position(|l| l.trim() == marker)
            .map(|i| i as u32 + 1)
            .unwrap_or_else(|| panic!("{marker} not in the fixture"))
    };
    PHASES
        .iter()
        .map(|p| {
            (
                *p,
                find(format!("{open} BEGIN {p} {close}"))..=find(format!("{open} END {p} {close}")),
            )
        })
        .collect()
}

fn phase_of(
    line: u32,
    ranges: &BTreeMap<&'static str, RangeInclusive<u32>>,
) -> Option<&'static str> {
    ranges
        .iter()
        .find(|(_, r)| r.contains(&line))
        .map(|(p, _)| *p)
}

/// The fixture, built into `dir`.
fn build(dir: &Path) -> PathBuf {
    let src = dir.join("phases.c");
    std::fs::write(&src, SOURCE).expect("write source");
    let bin = dir.join("label-phases");
    run_ok(
        Command::new(tool("/usr/bin/clang-14"))
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-g",
                "-o",
            ])
            .arg(&bin)
            .arg(&src),
    );
    bin
}

/// Line -> count of the DA records of `file` in an LCOV text.
fn da_lines(lcov: &str, file: &Path) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for l in lcov.lines() {
        if let Some(sf) = l.strip_prefix("SF:") {
            inside = Path::new(sf) == file;
        } else if inside && let Some(da) = l.strip_prefix("DA:") {
            let mut it = da.split(',');
            let line: u32 = it.next().and_then(|x| x.parse().ok()).expect("DA line");
            let hits: u64 = it.next().and_then(|x| x.parse().ok()).expect("DA hits");
            out.insert(line, hits);
        }
    }
    out
}

fn covobs(args: &[&str]) -> Output {
    Command::new(covobs_bin())
        .args(args)
        .output()
        .expect("run covobs")
}

fn ok(args: &[&str]) -> String {
    let o = covobs(args);
    assert!(o.status.success(), "covobs {args:?}: {o:?}");
    String::from_utf8(o.stdout).expect("utf-8")
}

/// Exit 2 with one line on stderr that contains `says`.
fn bad_input(args: &[&str], says: &str) {
    let o = covobs(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "covobs {args:?}: {o:?}");
    assert!(stderr.contains(says), "covobs {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// The llvm-cov LCOV of one raw profile of the fixture.
fn llvm_cov_lcov(profraw: &Path, bin: &Path, work: &Path) -> String {
    let profdata = work.join(format!(
        "{}.profdata",
        profraw.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        Command::new(tool(&format!("{LLVM14}/llvm-profdata")))
            .args(["merge", "-o"])
            .arg(&profdata)
            .arg(profraw),
    );
    run_ok(
        Command::new(tool(&format!("{LLVM14}/llvm-cov")))
            .args(["export", "-format=lcov"])
            .arg(format!("-instr-profile={}", profdata.display()))
            .arg(bin),
    )
}

/// Drive the fixture through SCRIPT under `covobs attach --mode MODE`, then check the labels.
fn phases_in_mode(mode: &str) {
    require_root();
    let tmp = TempDir::new(&format!("labels-{mode}"));
    let bin = build(tmp.path());
    let src = tmp.path().join("phases.c");
    let out = tmp.path().join("out");
    let profile = tmp.path().join("t.profraw");
    let mut target = start_program(
        &bin,
        &[],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid().to_string();
    let mut attach = attach(&[
        "--pid",
        &pid,
        "--mode",
        mode,
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let socket = PathBuf::from(format!("/run/covobs/attach-{}.sock", attach.pid()));

    // Bad input while it runs: a bad name, a target no attach watches.
    bad_input(&["dump", "--pid", &pid, "--label", "a/b"], "label name");
    bad_input(&["dump", "--pid", &pid, "--label", ""], "empty");
    bad_input(
        &["dump", "--pid", "999999999", "--label", "x"],
        "no running `covobs attach` watches process 999999999",
    );

    // A test runner's connection: JSON lines, kept open.
    let mut conn: Option<(UnixStream, BufReader<UnixStream>)> = None;
    for (label, commands) in SCRIPT {
        for (phase, n) in commands {
            assert_eq!(
                target.ask(&format!("{phase} {n}")),
                format!("done {phase} {n}")
            );
        }
        if label == "one" {
            let answer: Value =
                serde_json::from_str(&ok(&["dump", "--pid", &pid, "--label", label, "--json"]))
                    .expect("json");
            assert_eq!(answer["ok"], true, "{answer}");
            continue;
        }
        let (w, r) = conn.get_or_insert_with(|| {
            let s = UnixStream::connect(&socket).expect("connect");
            s.set_read_timeout(Some(T)).expect("timeout");
            (s.try_clone().expect("clone"), BufReader::new(s))
        });
        writeln!(
            w,
            "{}",
            serde_json::json!({"pid": target.pid(), "label": label, "keep_open": true})
        )
        .expect("send");
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        let answer: Value = serde_json::from_str(&line).expect("json answer");
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(
            answer["artifacts"].as_array().map(Vec::len),
            Some(1),
            "{answer}"
        );
    }
    // A bad label on the open connection: refused, and the connection still serves.
    let (w, r) = conn.as_mut().expect("connection");
    writeln!(
        w,
        "{}",
        serde_json::json!({"pid": target.pid(), "label": "no spaces", "keep_open": true})
    )
    .expect("send");
    let mut line = String::new();
    r.read_line(&mut line).expect("answer");
    let refused: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("label name"),
        "{refused}"
    );
    drop(conn);

    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    let label_events: Vec<String> = of_kind(attach.events(), "label")
        .iter()
        .map(|e| e.s("label").to_string())
        .collect();
    assert_eq!(label_events, ["one", "two", "three", "empty"]);
    target.send("quit");
    let _ = target.wait();

    let out_s = out.to_str().unwrap();
    ok(&["report", out_s]);
    let labels = read_json(&out.join("report/labels.json"));
    let names: Vec<&str> = labels["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two", "three", "empty"]);

    // Each label: exactly its phases' lines, with its phases' own counts.
    let ranges = phase_ranges();
    let session_lcov = std::fs::read_to_string(out.join("report/coverage.lcov")).expect("lcov");
    let instrumented = da_lines(&session_lcov, &src);
    let mut per_label: BTreeMap<&str, BTreeMap<u32, u64>> = BTreeMap::new();
    for (label, commands) in SCRIPT {
        ok(&["report", out_s, "--label", label]);
        let dir = out.join("report/labels").join(label);
        for f in ["coverage.lcov", "summary.json", "html/index.html"] {
            assert!(dir.join(f).is_file(), "{label}: {f}");
        }
        let lcov = std::fs::read_to_string(dir.join("coverage.lcov")).expect("label lcov");
        let lines = da_lines(&lcov, &src);
        let want = expected_counts(commands);
        let mut phase_lines = 0;
        for &line in instrumented.keys() {
            let Some(phase) = phase_of(line, &ranges) else {
                continue;
            };
            phase_lines += 1;
            assert_eq!(
                lines.get(&line).copied().unwrap_or(0),
                want[phase],
                "label {label}, line {line} (phase {phase}):\n{lcov}"
            );
        }
        assert!(
            phase_lines >= 12,
            "{phase_lines} phase lines in\n{session_lcov}"
        );
        per_label.insert(label, lines);
    }

    // lines.json: a line lists the labels that reached it, in closing order.
    let by_line = read_json(&out.join("report/labels/lines.json"));
    let file = &by_line["files"][src.to_str().unwrap()];
    for &line in instrumented.keys() {
        let Some(phase) = phase_of(line, &ranges) else {
            continue;
        };
        let want: Vec<&str> = SCRIPT
            .iter()
            .filter(|(_, c)| expected_counts(c)[phase] > 0)
            .map(|(l, _)| *l)
            .collect();
        let got: Vec<&str> = file[line.to_string()]["labels"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "line {line} ({phase})");
        assert_eq!(file[line.to_string()]["count"], want.len(), "line {line}");
    }

    // Reached for the first time: two's beta lines, three's gamma lines; the empty label has none.
    let in_phase = |p: &str| {
        instrumented
            .keys()
            .filter(|l| ranges[p].contains(l))
            .count()
    };
    let entry = |n: &str| {
        labels["labels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("two")["new_lines"], in_phase("beta"), "{labels}");
    assert_eq!(entry("three")["new_lines"], in_phase("gamma"), "{labels}");
    assert_eq!(entry("empty")["new_lines"], 0, "{labels}");
    assert_eq!(entry("two")["new_functions"], 1, "{labels}");

    // llvm-cov on the dumps: a label's phase counts are its state's minus the previous one's.
    let artifact = |n: &str| out.join(entry(n)["artifacts"][0].as_str().expect("artifact"));
    let work = tmp.path();
    let cov_one = da_lines(&llvm_cov_lcov(&artifact("one"), &bin, work), &src);
    let cov_two = da_lines(&llvm_cov_lcov(&artifact("two"), &bin, work), &src);
    let cov_three = da_lines(&llvm_cov_lcov(&artifact("three"), &bin, work), &src);
    for (line, _) in instrumented
        .iter()
        .filter(|(l, _)| phase_of(**l, &ranges).is_some())
    {
        assert_eq!(
            per_label["one"].get(line),
            cov_one.get(line),
            "one, line {line}"
        );
        for (label, before, after) in [("two", &cov_one, &cov_two), ("three", &cov_two, &cov_three)]
        {
            let diff = after[line] - before[line];
            assert_eq!(
                per_label[label].get(line).copied().unwrap_or(0),
                diff,
                "{label}, line {line}: llvm-cov says {} - {}",
                after[line],
                before[line]
            );
        }
    }

    // The hit maps: one per module, a record per label that gained something.
    let hits = &labels["modules"][0]["hits"];
    let bytes = std::fs::read(out.join("report").join(hits.as_str().expect("hits"))).expect("hits");
    let maps = covobs::report::labels::hitmap::decode(&bytes).expect("hit map");
    let gained: Vec<&str> = maps.labels.iter().map(|(n, _)| n.as_str()).collect();
    assert!(gained.starts_with(&["one", "two", "three"]), "{gained:?}");
    assert_eq!(maps.build_id, build_id(&bin));

    // Bad input on the report side.
    bad_input(
        &["report", out_s, "--label", "nosuch"],
        "no label \"nosuch\"",
    );
    bad_input(&["report", out_s, "--label", "../x"], "label name");
    bad_input(
        &["diff", out_s, "--label", "one", "--label", "nosuch"],
        "no label",
    );

    // The session's HTML: a line lists the labels that reached it.
    let page = std::fs::read_dir(out.join("report/html/files"))
        .expect("html files")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("phases.c.html"))
        .expect("the fixture's page");
    let html = std::fs::read_to_string(page).expect("page");
    assert!(
        html.contains("title=\"reached by 3 labels\">one, two, three</td>"),
        "shared lines list their labels"
    );
    assert!(
        html.contains("title=\"reached by 1 label\">two</td>"),
        "beta's lines"
    );

    // Two labels diffed: two newly reaches beta, no longer reaches alpha.
    let d: Value = serde_json::from_str(&ok(&[
        "diff", out_s, "--label", "one", "--label", "two", "--json",
    ]))
    .expect("diff json");
    let new_lines: BTreeSet<u32> = d["newly_covered"]["lines"][src.to_str().unwrap()]
        .as_array()
        .expect("new lines")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let beta: BTreeSet<u32> = instrumented
        .keys()
        .copied()
        .filter(|l| ranges["beta"].contains(l))
        .collect();
    assert_eq!(new_lines, beta, "{d}");
    let lost = covobs(&[
        "diff",
        out_s,
        "--label",
        "one",
        "--label",
        "two",
        "--fail-on-lost",
    ]);
    assert_eq!(lost.status.code(), Some(1), "{lost:?}");
}

#[test]
fn labels_attribute_each_phase_in_signal_mode() {
    phases_in_mode("signal");
}

#[test]
fn labels_attribute_each_phase_in_snapshot_mode() {
    phases_in_mode("snapshot");
}

/// `--interval` ticks close labels of their own, interval-000001 on: consecutive, and what ran
/// in the session is in exactly one of them.
#[test]
fn interval_ticks_close_labels_of_their_own() {
    require_root();
    let tmp = TempDir::new("labels-interval");
    let bin = build(tmp.path());
    let src = tmp.path().join("phases.c");
    let out = tmp.path().join("out");
    let mut target = start_program(&bin, &[], &[("LLVM_PROFILE_FILE", "/dev/null")], tmp.path());
    let mut attach = attach(&[
        "--pid",
        &target.pid().to_string(),
        "--mode",
        "snapshot",
        "--interval",
        "200ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "a first interval label", |e| {
        e.kind() == "label" && e.s("label") == "interval-000001"
    });
    assert_eq!(target.ask("gamma 5"), "done gamma 5");
    let seen = of_kind(attach.events(), "label").len();
    let next = format!("interval-{:06}", seen + 1);
    attach.wait_event(T, "the interval after gamma", |e| {
        e.kind() == "label" && e.s("label") == next
    });
    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    ok(&["report", out.to_str().unwrap()]);
    let labels = read_json(&out.join("report/labels.json"));
    let names: Vec<String> = labels["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=names.len())
        .map(|i| format!("interval-{i:06}"))
        .collect();
    assert_eq!(names, want);
    // gamma's lines: reached in exactly one interval, with its 5 calls.
    let by_line = read_json(&out.join("report/labels/lines.json"));
    let gamma = phase_ranges()["gamma"].clone();
    let file = by_line["files"][src.to_str().unwrap()]
        .as_object()
        .expect("the fixture's lines");
    let gamma_lines: Vec<&Value> = file
        .iter()
        .filter(|(l, _)| gamma.contains(&l.parse::<u32>().unwrap()))
        .map(|(_, v)| v)
        .collect();
    assert!(!gamma_lines.is_empty(), "{by_line}");
    let which = &gamma_lines[0]["labels"][0];
    for v in &gamma_lines {
        assert_eq!(v["count"], 1, "{v}");
        assert_eq!(&v["labels"][0], which, "{v}");
    }
    ok(&[
        "report",
        out.to_str().unwrap(),
        "--label",
        which.as_str().unwrap(),
    ]);
    let lcov = std::fs::read_to_string(
        out.join("report/labels")
            .join(which.as_str().unwrap())
            .join("coverage.lcov"),
    )
    .expect("lcov");
    let counts = da_lines(&lcov, &src);
    for l in gamma.clone() {
        if let Some(c) = counts.get(&l) {
            assert_eq!(*c, 5, "line {l}");
        }
    }
}

/// Two sessions of one program with different inputs: covobs diff gives what llvm-cov's
/// coverage of the two runs says was newly covered and lost; an unrelated program: exit 2.
#[test]
fn diff_of_two_sessions_matches_llvm_cov_and_refuses_unrelated_ones() {
    let tmp = TempDir::new("labels-diff");
    let bin = build_c(tmp.path(), "prog");
    let mut lcovs = Vec::new();
    let mut dirs = Vec::new();
    for (i, arg) in ["3", "50"].into_iter().enumerate() {
        let profraw = tmp.path().join(format!("run{i}.profraw"));
        let pid = run_instrumented(&bin, &profraw, &[arg]);
        let dir = tmp.path().join(format!("s{i}"));
        let s = SessionBuilder::new(&dir, &bin, "prog", None, Some(14));
        s.artifact(1, pid, &std::fs::read(&profraw).expect("profraw"), true);
        lcovs.push(da_lines(
            &llvm_cov_lcov(&profraw, &bin, tmp.path()),
            &tmp.path().join("prog.c"),
        ));
        dirs.push(dir);
    }
    let (a, b) = (dirs[0].to_str().unwrap(), dirs[1].to_str().unwrap());
    let d: Value = serde_json::from_str(&ok(&["diff", a, b, "--json"])).expect("json");
    let src = tmp.path().join("prog.c");
    let reached = |m: &BTreeMap<u32, u64>| -> BTreeSet<u32> {
        m.iter().filter(|(_, h)| **h > 0).map(|(l, _)| *l).collect()
    };
    let (old, new) = (reached(&lcovs[0]), reached(&lcovs[1]));
    let lines = |v: &Value| -> BTreeSet<u32> {
        v[src.to_str().unwrap()]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .unwrap_or_default()
    };
    let want_new: BTreeSet<u32> = new.difference(&old).copied().collect();
    let want_lost: BTreeSet<u32> = old.difference(&new).copied().collect();
    assert!(!want_new.is_empty() && !want_lost.is_empty());
    assert_eq!(lines(&d["newly_covered"]["lines"]), want_new, "{d}");
    assert_eq!(lines(&d["no_longer_covered"]["lines"]), want_lost, "{d}");
    let text = ok(&["diff", a, b]);
    assert!(
        text.contains(&format!("lines: +{} -{}", want_new.len(), want_lost.len())),
        "{text}"
    );
    let page = tmp.path().join("diff.html");
    ok(&["diff", a, b, "--html", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).expect("diff page");
    assert!(
        html.contains("Coverage diff") && html.contains(src.to_str().unwrap()),
        "{html}"
    );
    // Written once: never overwritten.
    let again = covobs(&["diff", a, b, "--html", page.to_str().unwrap()]);
    assert_ne!(again.status.code(), Some(0), "{again:?}");
    let gate = covobs(&["diff", a, b, "--fail-on-lost"]);
    assert_eq!(gate.status.code(), Some(1), "{gate:?}");
    // Nothing lost the other way round? old -> old: nothing at all.
    let same = covobs(&["diff", a, a, "--fail-on-lost"]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");

    // Another program: no source file in common.
    let other_dir = tmp.path().join("other");
    std::fs::create_dir(&other_dir).expect("mkdir");
    std::fs::write(
        other_dir.join("prog.c"),
        C_SOURCE.replace("classify", "sort_out"),
    )
    .expect("src");
    let other_bin = other_dir.join("other");
    run_ok(
        Command::new(tool("/usr/bin/clang-14"))
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
            ])
            .arg(&other_bin)
            .arg(other_dir.join("prog.c")),
    );
    let profraw = tmp.path().join("other.profraw");
    let pid = run_instrumented(&other_bin, &profraw, &["7"]);
    let sdir = tmp.path().join("s-other");
    SessionBuilder::new(&sdir, &other_bin, "other", None, Some(14)).artifact(
        1,
        pid,
        &std::fs::read(&profraw).expect("profraw"),
        true,
    );
    bad_input(&["diff", a, sdir.to_str().unwrap()], "share no source file");
    bad_input(&["diff", a], "two session directories");
}

/// Figures (`--ignored --nocapture`): labels closed per second over one connection in snapshot
/// mode on a target with about 100k counters, and the report's time for a session of 1000 labels.
#[test]
#[ignore = "benchmark: prints figures"]
fn label_throughput_and_report_time() {
    use std::{fmt::Write as _, time::Instant};
    require_root();
    let tmp = TempDir::new("labels-bench");
    // 400 functions of a 255-case switch: about 102k counters.
    let (funcs, cases) = (400, 255);
    let mut c = String::from(
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\nvolatile unsigned long sink;\n",
    );
    for f in 0..funcs {
        let _ = write!(
            c,
            "static void __attribute__((noinline)) f{f}(int x) {{ switch (x) {{"
        );
        for k in 0..cases {
            let _ = write!(c, "case {k}: sink += {k}; break;");
        }
        c.push_str("default: break; } }\n");
    }
    c.push_str("static void (*const fs[])(int) = {");
    for f in 0..funcs {
        let _ = write!(c, "f{f},");
    }
    c.push_str("};\nint main(void) { char line[64]; printf(\"bench pid=%d ready\\n\", (int)getpid()); fflush(stdout);\n");
    c.push_str("while (fgets(line, sizeof line, stdin)) { int n = atoi(line); fs[n % (int)(sizeof fs / sizeof fs[0])](n % 255); printf(\"ok\\n\"); fflush(stdout); } return 0; }\n");
    let src = tmp.path().join("bench.c");
    std::fs::write(&src, c).expect("source");
    let bin = tmp.path().join("bench");
    let t0 = Instant::now();
    run_ok(
        Command::new(tool("/usr/bin/clang-14"))
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
            ])
            .arg(&bin)
            .arg(&src),
    );
    println!("built the 100k-counter target in {:?}", t0.elapsed());
    let mut target = start_program(&bin, &[], &[("LLVM_PROFILE_FILE", "/dev/null")], tmp.path());
    let out = tmp.path().join("out");
    let mut attach = attach(&[
        "--pid",
        &target.pid().to_string(),
        "--mode",
        "snapshot",
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let socket = PathBuf::from(format!("/run/covobs/attach-{}.sock", attach.pid()));
    let s = UnixStream::connect(&socket).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    let (mut w, mut r) = (s.try_clone().expect("clone"), BufReader::new(s));
    let n = 1000;
    let mut in_labels = Duration::ZERO;
    let all = Instant::now();
    for i in 0..n {
        assert_eq!(target.ask(&i.to_string()), "ok");
        let asked = Instant::now();
        writeln!(
            w,
            "{}",
            serde_json::json!({"pid": target.pid(), "label": format!("t{i:04}"), "keep_open": true})
        )
        .expect("send");
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        in_labels += asked.elapsed();
        let answer: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(answer["ok"], true, "{answer}");
    }
    println!(
        "{n} labels: {:.0} labels/s over one connection ({:.2} ms each, {:?} in all with the target's commands)",
        n as f64 / in_labels.as_secs_f64(),
        in_labels.as_secs_f64() * 1000.0 / n as f64,
        all.elapsed()
    );
    drop(w);
    drop(r);
    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    target.send("");
    let out_s = out.to_str().unwrap();
    // The labels' part alone, in this process: attribution, then the per-label figures.
    let opts = covobs::report::ReportOptions::default();
    let t0 = Instant::now();
    let (_, a) = covobs::report::labels::read_session(&out, &opts).expect("labels");
    let attributed = t0.elapsed();
    let staging = TempDir::new("labels-bench-out");
    let t0 = Instant::now();
    covobs::report::labels::output::write_into(staging.path(), &a, &opts).expect("write labels");
    println!(
        "labels of the {n}-label session: attributed in {attributed:?}, figures and files in {:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    ok(&["report", out_s]);
    println!(
        "covobs report of the {n}-label session (all of it): {:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    ok(&["report", out_s, "--label", "t0500"]);
    println!("covobs report --label t0500: {:?}", t0.elapsed());
    let labels = read_json(&out.join("report/labels.json"));
    assert_eq!(labels["labels"].as_array().map(Vec::len), Some(n));
    let hits = out
        .join("report")
        .join(labels["modules"][0]["hits"].as_str().unwrap());
    println!(
        "hit maps: {} bytes for {n} labels of {} counters",
        std::fs::metadata(&hits).expect("hits").len(),
        labels["modules"][0]["counters"]
    );
}

/// Drive a target through SCRIPT under an attach in signal mode (every label through the
/// control socket, one connection), stop both; the session directory.
fn drive_script(target: &mut Driven, attach: &mut Covobs) {
    let socket = PathBuf::from(format!("/run/covobs/attach-{}.sock", attach.pid()));
    let s = UnixStream::connect(&socket).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    let (mut w, mut r) = (s.try_clone().expect("clone"), BufReader::new(s));
    for (label, commands) in SCRIPT {
        for (phase, n) in commands {
            assert_eq!(
                target.ask(&format!("{phase} {n}")),
                format!("done {phase} {n}")
            );
        }
        writeln!(
            w,
            "{}",
            serde_json::json!({"pid": target.pid(), "label": label, "keep_open": true})
        )
        .expect("send");
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        let answer: Value = serde_json::from_str(&line).expect("json answer");
        assert_eq!(answer["ok"], true, "{label}: {answer}");
        assert!(
            answer["artifacts"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{label}: {answer}"
        );
    }
    drop(w);
    drop(r);
    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    let label_events: Vec<String> = of_kind(attach.events(), "label")
        .iter()
        .map(|e| e.s("label").to_string())
        .collect();
    assert_eq!(label_events, ["one", "two", "three", "empty"]);
}

/// The labels of a session driven through SCRIPT, for a fixture whose source file (as the
/// report names it) is `src` and whose phases lie in `ranges`: each label's report has exactly
/// its phases' lines with its phases' own counts, lines.json lists per line the labels that
/// reached it, new_lines counts what no earlier label reached. Returns labels.json.
fn check_phase_labels(
    out: &Path,
    src: &Path,
    ranges: &BTreeMap<&'static str, RangeInclusive<u32>>,
    runtime: &str,
) -> Value {
    let out_s = out.to_str().unwrap();
    ok(&["report", out_s]);
    let labels = read_json(&out.join("report/labels.json"));
    let names: Vec<&str> = labels["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two", "three", "empty"], "{labels}");
    assert!(labels.get("notes").is_none(), "{labels}");
    let module = labels["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .find(|m| m["runtime"] == runtime)
        .unwrap_or_else(|| panic!("no {runtime} module: {labels}"));
    let session_lcov = std::fs::read_to_string(out.join("report/coverage.lcov")).expect("lcov");
    let instrumented = da_lines(&session_lcov, src);
    let phase_of = |l: u32| phase_of(l, ranges);
    let mut phase_lines = BTreeMap::<&str, usize>::new();
    for &l in instrumented.keys() {
        if let Some(p) = phase_of(l) {
            *phase_lines.entry(p).or_default() += 1;
        }
    }
    for p in PHASES {
        assert!(
            phase_lines.get(p).is_some_and(|n| *n >= 1),
            "phase {p}: no lines in\n{session_lcov}"
        );
    }
    for (label, commands) in SCRIPT {
        ok(&["report", out_s, "--label", label]);
        let dir = out.join("report/labels").join(label);
        let lcov = std::fs::read_to_string(dir.join("coverage.lcov")).expect("label lcov");
        let lines = da_lines(&lcov, src);
        let want = expected_counts(commands);
        for &line in instrumented.keys() {
            let Some(phase) = phase_of(line) else {
                continue;
            };
            assert_eq!(
                lines.get(&line).copied().unwrap_or(0),
                want[phase],
                "{runtime} label {label}, line {line} (phase {phase}):\n{lcov}"
            );
        }
        println!(
            "{runtime} label {label}: {} phase lines reached, counts {:?}",
            instrumented
                .keys()
                .filter(|l| phase_of(**l).is_some() && lines.get(l).is_some_and(|c| *c > 0))
                .count(),
            want
        );
    }
    // A plain report again: the per-label reports are rebuilt, the same bytes; a directory
    // that is not a label's goes.
    let label_lcov = |l: &str| {
        std::fs::read(out.join("report/labels").join(l).join("coverage.lcov")).expect("label lcov")
    };
    let before: Vec<Vec<u8>> = SCRIPT.iter().map(|(l, _)| label_lcov(l)).collect();
    let ghost = out.join("report/labels/ghost");
    std::fs::create_dir_all(&ghost).expect("mkdir");
    std::fs::write(ghost.join("coverage.lcov"), "").expect("ghost");
    ok(&["report", out_s]);
    for ((l, _), was) in SCRIPT.iter().zip(&before) {
        assert_eq!(&label_lcov(l), was, "{runtime} label {l} rebuilt");
        assert!(
            out.join("report/labels")
                .join(l)
                .join("html/index.html")
                .is_file()
        );
    }
    assert!(!ghost.exists(), "report/labels/ghost stays");
    let by_line = read_json(&out.join("report/labels/lines.json"));
    let file = &by_line["files"][src.to_str().unwrap()];
    for &line in instrumented.keys() {
        let Some(phase) = phase_of(line) else {
            continue;
        };
        let want: Vec<&str> = SCRIPT
            .iter()
            .filter(|(_, c)| expected_counts(c)[phase] > 0)
            .map(|(l, _)| *l)
            .collect();
        let got: Vec<&str> = file[line.to_string()]["labels"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{runtime} line {line} ({phase}): {by_line}");
    }
    let entry = |n: &str| {
        labels["labels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .cloned()
            .unwrap()
    };
    // Reached for the first time: the lines whose first label it is (lines.json lists all
    // four); among the phases' lines, two's are beta's and three's gamma's.
    for (label, _) in SCRIPT {
        let first: Vec<(String, u32)> = by_line["files"]
            .as_object()
            .expect("files")
            .iter()
            .flat_map(|(f, ls)| {
                ls.as_object()
                    .expect("lines")
                    .iter()
                    .filter(|(_, v)| v["labels"][0] == label)
                    .map(|(l, _)| (f.clone(), l.parse::<u32>().expect("line")))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(entry(label)["new_lines"], first.len(), "{label}: {labels}");
        let phases: BTreeSet<&str> = first
            .iter()
            .filter(|(f, _)| Path::new(f) == src)
            .filter_map(|(_, l)| phase_of(*l))
            .collect();
        let want: BTreeSet<&str> = match label {
            "one" => ["shared", "alpha"].into(),
            "two" => ["beta"].into(),
            "three" => ["gamma"].into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(phases, want, "{label}");
    }
    assert_eq!(entry("empty")["new_lines"], 0, "{labels}");
    // The hit maps: the module's, a record per label that gained something.
    let bytes =
        std::fs::read(out.join("report").join(module["hits"].as_str().unwrap())).expect("hits");
    let maps = covobs::report::labels::hitmap::decode(&bytes).expect("hit map");
    let gained: Vec<&str> = maps.labels.iter().map(|(n, _)| n.as_str()).collect();
    assert!(gained.starts_with(&["one", "two", "three"]), "{gained:?}");
    for (name, hits) in &maps.labels {
        let e = entry(name);
        assert_eq!(e["hits"], hits.values().sum::<u64>(), "{name}: {labels}");
    }
    labels
}

/// gcov: the fixture built with gcc --coverage (a dump is __gcov_dump then __gcov_reset;
/// libgcov merges the .gcda on write), labels closed by dumps in signal mode.
#[test]
fn labels_attribute_each_phase_of_a_gcov_target() {
    require_root();
    let tmp = TempDir::new("labels-gcov");
    let src = tmp.path().join("phases.c");
    std::fs::write(&src, SOURCE).expect("write source");
    let bin = tmp.path().join("label-phases-gcov");
    run_ok(
        Command::new("gcc")
            .args(["--coverage", "-O0", "-g", "-DPHASES_GCOV", "-o"])
            .arg(&bin)
            .arg(&src)
            .current_dir(tmp.path()),
    );
    let out = tmp.path().join("out");
    let mut target = start_program(&bin, &[], &[], tmp.path());
    let pid = target.pid().to_string();
    let mut attach = attach(&[
        "--pid",
        &pid,
        "--mode",
        "signal",
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    drive_script(&mut target, &mut attach);
    target.send("quit");
    let _ = target.wait();
    let labels = check_phase_labels(&out, &src, &phase_ranges(), "gcov");
    println!("{labels}");
}

/// Each phase's line range in an OCaml source, from its `(* BEGIN p *)` and `(* END p *)`.
fn ml_ranges(source: &str) -> BTreeMap<&'static str, RangeInclusive<u32>> {
    ranges_between(source, "(*", "*)")
}

/// bisect_ppx: the phases in OCaml (fixtures/label-phases/phases.ml, instrumented; its driver
/// phases_main.ml dumps through Bisect.Runtime.dump_counters_exn on SIGUSR2), built with the
/// project's bisect_ppx (`cargo xtask fixtures` installs it), labels closed by dumps in signal
/// mode.
#[test]
fn labels_attribute_each_phase_of_a_bisect_ppx_target() {
    require_root();
    const ML: &str = include_str!("../../fixtures/label-phases/phases.ml");
    const MAIN: &str = include_str!("../../fixtures/label-phases/phases_main.ml");
    let tmp = TempDir::new("labels-bisect");
    let dir = tmp.path();
    std::fs::write(dir.join("phases.ml"), ML).expect("write source");
    std::fs::write(dir.join("phases_main.ml"), MAIN).expect("write source");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ocamlpath = root.join(".tools/ocaml/lib");
    assert!(
        ocamlpath.join("bisect_ppx").is_dir(),
        "bisect_ppx is installed by cargo xtask fixtures"
    );
    let ocamlfind = |args: &[&str]| {
        run_ok(
            Command::new("ocamlfind")
                .args(args)
                .env("OCAMLPATH", &ocamlpath)
                .current_dir(dir),
        )
    };
    // Compiled in its directory: bisect records the name `phases.ml`, found from the
    // process's working directory.
    ocamlfind(&["ocamlopt", "-package", "bisect_ppx", "-c", "phases.ml"]);
    ocamlfind(&[
        "ocamlopt",
        "-package",
        "bisect_ppx.runtime,unix",
        "-c",
        "phases_main.ml",
    ]);
    ocamlfind(&[
        "ocamlopt",
        "-package",
        "bisect_ppx.runtime,unix",
        "-linkpkg",
        "-o",
        "label-phases-ml",
        "phases.cmx",
        "phases_main.cmx",
    ]);
    let out = dir.join("out");
    let prefix = dir.join("bisect-");
    let mut target = start_program(
        &dir.join("label-phases-ml"),
        &[],
        &[("BISECT_FILE", prefix.to_str().unwrap())],
        dir,
    );
    let pid = target.pid().to_string();
    let mut attach = attach(&[
        "--pid",
        &pid,
        "--mode",
        "signal",
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    drive_script(&mut target, &mut attach);
    target.send("quit");
    let _ = target.wait();
    let labels = check_phase_labels(&out, &dir.join("phases.ml"), &ml_ranges(ML), "bisect");
    println!("{labels}");
}

/// Signal mode: label b asked while the dump asked for label a has not started (the target is
/// stopped) joins that dump: one state closes both, the answers say so, the state's gains go to
/// a (closed first) and b has none; labels.json names the label each shares its state with. A
/// label asked afterwards gets its own dump and exactly its own phase.
#[test]
fn a_label_asked_while_a_dump_is_asked_for_shares_that_dump() {
    require_root();
    let tmp = TempDir::new("labels-shared");
    let bin = build(tmp.path());
    let src = tmp.path().join("phases.c");
    let out = tmp.path().join("out");
    let profile = tmp.path().join("t.profraw");
    let mut target = start_program(
        &bin,
        &[],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    let mut attach = attach(&[
        "--pid",
        &pid.to_string(),
        "--mode",
        "signal",
        "--out",
        out.to_str().unwrap(),
    ]);
    attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let socket = PathBuf::from(format!("/run/covobs/attach-{}.sock", attach.pid()));
    let connect = || {
        let s = UnixStream::connect(&socket).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        (s.try_clone().expect("clone"), BufReader::new(s))
    };
    let answer = |r: &mut BufReader<UnixStream>| -> Value {
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        serde_json::from_str(&line).expect("json answer")
    };
    assert_eq!(target.ask("alpha 2"), "done alpha 2");
    // Stopped, the target cannot answer a's signal: b's request finds it unanswered.
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (mut wa, mut ra) = connect();
    writeln!(wa, "{}", serde_json::json!({"pid": pid, "label": "a"})).expect("send a");
    attach.wait_event(T, "a's trigger", |e| e.kind() == "trigger");
    let (mut wb, mut rb) = connect();
    writeln!(wb, "{}", serde_json::json!({"pid": pid, "label": "b"})).expect("send b");
    // b is taken when its label event would follow a's: give covobs the request first.
    let asked = std::time::Instant::now();
    while asked.elapsed() < Duration::from_millis(1000) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let (a, b) = (answer(&mut ra), answer(&mut rb));
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(a["artifacts"], b["artifacts"], "one dump: {a} {b}");
    assert_eq!(a["shares_dump_with"], serde_json::json!(["b"]), "{a}");
    assert_eq!(b["shares_dump_with"], serde_json::json!(["a"]), "{b}");
    assert!(b["triggered"].to_string().contains("already asked"), "{b}");
    // Afterwards: a dump of its own.
    assert_eq!(target.ask("beta 1"), "done beta 1");
    let (mut wc, mut rc) = connect();
    writeln!(wc, "{}", serde_json::json!({"pid": pid, "label": "c"})).expect("send c");
    let c = answer(&mut rc);
    assert_eq!(c["ok"], true, "{c}");
    assert_ne!(c["artifacts"], a["artifacts"], "{c}");
    assert!(c.get("shares_dump_with").is_none(), "{c}");
    drop((wa, wb, wc));
    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    target.send("quit");
    let _ = target.wait();
    let out_s = out.to_str().unwrap();
    ok(&["report", out_s]);
    let labels = read_json(&out.join("report/labels.json"));
    let entry = |n: &str| {
        labels["labels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no label {n}: {labels}"))
    };
    assert_eq!(entry("a")["shares_state_with"], serde_json::json!(["b"]));
    assert_eq!(entry("b")["shares_state_with"], serde_json::json!(["a"]));
    assert_eq!(entry("b")["hits"], 0, "{labels}");
    assert_eq!(entry("b")["lines"], 0, "{labels}");
    assert!(entry("c").get("shares_state_with").is_none(), "{labels}");
    let ranges = phase_ranges();
    for (label, commands) in [("a", &[("alpha", 2)][..]), ("c", &[("beta", 1)][..])] {
        ok(&["report", out_s, "--label", label]);
        let lcov =
            std::fs::read_to_string(out.join("report/labels").join(label).join("coverage.lcov"))
                .expect("lcov");
        let lines = da_lines(&lcov, &src);
        let want = expected_counts(commands);
        let mut checked = 0;
        for (line, count) in &lines {
            if let Some(p) = phase_of(*line, &ranges) {
                assert_eq!(*count, want[p], "{label}, line {line} ({p})");
                checked += 1;
            }
        }
        assert!(checked >= 12, "{label}: {checked} phase lines");
    }
}

/// Two sessions of one gcov program with different inputs (alpha, then beta): covobs diff says
/// beta's lines are newly covered and alpha's no longer, nothing else. The second run's dumps
/// merge into the .gcda the first run left (libgcov merges on write): its session still counts
/// only its own run.
#[test]
fn diff_of_two_gcov_sessions_gives_the_new_and_lost_phases() {
    require_root();
    let tmp = TempDir::new("labels-gcov-diff");
    let src = tmp.path().join("phases.c");
    std::fs::write(&src, SOURCE).expect("write source");
    let bin = tmp.path().join("label-phases-gcov");
    run_ok(
        Command::new("gcc")
            .args(["--coverage", "-O0", "-g", "-DPHASES_GCOV", "-o"])
            .arg(&bin)
            .arg(&src)
            .current_dir(tmp.path()),
    );
    let mut sessions = Vec::new();
    for (i, phase) in ["alpha", "beta"].into_iter().enumerate() {
        let out = tmp.path().join(format!("s{i}"));
        let mut target = start_program(&bin, &[], &[], tmp.path());
        let pid = target.pid().to_string();
        let mut attach = attach(&[
            "--pid",
            &pid,
            "--mode",
            "signal",
            "--out",
            out.to_str().unwrap(),
        ]);
        attach.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
        assert_eq!(target.ask(&format!("{phase} 2")), format!("done {phase} 2"));
        let answer: Value =
            serde_json::from_str(&ok(&["dump", "--pid", &pid, "--json"])).expect("json");
        assert_eq!(answer["ok"], true, "{answer}");
        attach.signal(libc::SIGINT);
        assert!(attach.wait(T).success(), "{}", attach.stderr());
        target.send("quit");
        let _ = target.wait();
        ok(&["report", out.to_str().unwrap()]);
        sessions.push(out);
    }
    // The second session's dump merged the first run's file: subtracted.
    let metas = artifacts(&sessions[1]);
    assert!(
        metas.iter().any(|a| !a.meta["merged"].is_null()),
        "the second run's dump merged the first's .gcda"
    );
    let (a, b) = (sessions[0].to_str().unwrap(), sessions[1].to_str().unwrap());
    let d: Value = serde_json::from_str(&ok(&["diff", a, b, "--json"])).expect("json");
    let lines = |v: &Value| -> BTreeSet<u32> {
        v[src.to_str().unwrap()]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .unwrap_or_default()
    };
    let lcov = std::fs::read_to_string(sessions[0].join("report/coverage.lcov")).expect("lcov");
    let instrumented = da_lines(&lcov, &src);
    let ranges = phase_ranges();
    let of = |p: &str| -> BTreeSet<u32> {
        instrumented
            .keys()
            .copied()
            .filter(|l| ranges[p].contains(l))
            .collect()
    };
    assert!(!of("beta").is_empty() && !of("alpha").is_empty());
    assert_eq!(lines(&d["newly_covered"]["lines"]), of("beta"), "{d}");
    assert_eq!(lines(&d["no_longer_covered"]["lines"]), of("alpha"), "{d}");
    let fns = |v: &Value| v.to_string();
    assert!(
        fns(&d["newly_covered"]["functions"]).contains("beta"),
        "{d}"
    );
    assert!(
        fns(&d["no_longer_covered"]["functions"]).contains("alpha"),
        "{d}"
    );
    // Each session's own counts: shared ran twice in each, not four times in the second.
    let second = std::fs::read_to_string(sessions[1].join("report/coverage.lcov")).expect("lcov");
    let counts = da_lines(&second, &src);
    for l in of("shared") {
        assert_eq!(counts[&l], 2, "line {l} of shared in the second session");
    }
    let gate = covobs(&["diff", a, b, "--fail-on-lost"]);
    assert_eq!(gate.status.code(), Some(1), "{gate:?}");
}
