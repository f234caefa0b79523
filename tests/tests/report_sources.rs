//! The report of bisect_ppx (OCaml) and gcov (C) coverage beside LLVM's (Rust), from real dumps:
//! one `covobs attach --name` session over protocol-runner (Rust + OCaml) and gcov-target (C)
//! running under the same name. What covobs reports must be what the runtimes' own tools say
//! on the same files: `bisect-ppx-report summary` / `cobertura` for the OCaml points and lines,
//! `gcov` for the C lines.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use covobs_tests::*;
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// bisect-ppx-report, which `cargo xtask fixtures` builds into .tools/ocaml/bin.
fn bisect_ppx_report() -> PathBuf {
    let p = workspace_root().join(".tools/ocaml/bin/bisect-ppx-report");
    assert!(
        p.exists(),
        "{} is missing: the set-up builds it (./dev setup, cargo xtask fixtures)",
        p.display()
    );
    p
}

/// A session's artifacts of one runtime, in seq order: (metadata file, metadata).
fn artifacts_of(out: &Path, runtime: &str) -> Vec<(PathBuf, Value)> {
    artifacts(out)
        .into_iter()
        .filter(|a| a.runtime() == runtime)
        .map(|a| (a.meta_path, a.meta))
        .collect()
}

/// The artifact a metadata file describes.
fn data_of(meta_path: &Path, meta: &Value) -> PathBuf {
    meta_path
        .parent()
        .expect("dir")
        .join(meta["file"].as_str().expect("file"))
}

/// `bisect-ppx-report summary --per-file`: recorded name -> (visited, points).
fn bisect_summary(coverage: &Path) -> BTreeMap<String, (u64, u64)> {
    let text = run_ok(
        Command::new(bisect_ppx_report())
            .args(["summary", "--per-file"])
            .arg(coverage),
    );
    let mut out = BTreeMap::new();
    for line in text.lines() {
        // " 82.76 %    24/29    fixtures/protocol-runner/ocaml/block_apply.ml"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "%", ratio, name] = fields[..] else {
            continue;
        };
        if name == "Project" {
            continue;
        }
        let (v, t) = ratio.split_once('/').expect("visited/total");
        out.insert(
            name.to_string(),
            (v.parse().expect("visited"), t.parse().expect("total")),
        );
    }
    assert!(
        !out.is_empty(),
        "no files in bisect-ppx-report summary:\n{text}"
    );
    out
}

/// `bisect-ppx-report cobertura`: recorded name -> (lines covered, lines).
fn bisect_cobertura_lines(coverage: &Path, root: &Path) -> BTreeMap<String, (u64, u64)> {
    let dir = TempDir::new("bisect-xml");
    let xml = dir.path().join("c.xml");
    run_ok(
        Command::new(bisect_ppx_report())
            .arg("cobertura")
            .arg(format!("--source-path={}", root.display()))
            .arg(&xml)
            .arg(coverage),
    );
    cobertura_classes(&std::fs::read_to_string(&xml).expect("cobertura xml"))
}

/// bisect-ppx-report's Cobertura XML: class name -> (lines covered, lines).
fn cobertura_classes(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for class in text.split("<class ").skip(1) {
        let name = class
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("class name");
        let body = class.split("</class>").next().unwrap_or("");
        let hits: Vec<u64> = body
            .split("hits=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap_or("").parse().expect("hits"))
            .collect();
        out.insert(
            name.to_string(),
            (
                hits.iter().filter(|h| **h > 0).count() as u64,
                hits.len() as u64,
            ),
        );
    }
    out
}

/// gcov's own text summary of a gcov artifact (its .gcda files with their .gcno notes, under
/// their original names): source path -> ("83.33", lines).
fn gcov_lines(meta_path: &Path, meta: &Value) -> BTreeMap<String, (String, u64)> {
    let dir = TempDir::new("gcov-check");
    let art = data_of(meta_path, meta);
    let mut gcda = Vec::new();
    for part in meta["parts"].as_array().expect("parts") {
        let path = part["path"].as_str().expect("path");
        let base = path.rsplit('/').next().expect("name");
        std::fs::copy(
            art.join(part["file"].as_str().expect("file")),
            dir.path().join(base),
        )
        .expect("copy part");
        if base.ends_with(".gcda") {
            gcda.push(base.to_string());
        }
    }
    assert!(!gcda.is_empty(), "no .gcda in {}", art.display());
    let text = run_ok(
        Command::new("gcov")
            .arg("-n")
            .args(&gcda)
            .current_dir(dir.path()),
    );
    let mut out = BTreeMap::new();
    let mut file = None;
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("File '") {
            file = Some(f.trim_end_matches('\'').to_string());
        } else if let (Some(f), Some(rest)) = (&file, line.strip_prefix("Lines executed:")) {
            let (pct, n) = rest.split_once("% of ").expect("gcov summary line");
            out.insert(
                f.clone(),
                (pct.to_string(), n.trim().parse().expect("line count")),
            );
            file = None;
        }
    }
    assert!(!out.is_empty(), "gcov said nothing:\n{text}");
    out
}

fn counts(v: &Value) -> (u64, u64) {
    (
        v["hit"].as_u64().expect("hit"),
        v["total"].as_u64().expect("total"),
    )
}

#[test]
fn ocaml_and_c_coverage_are_reported_beside_rust_as_their_own_tools_count_them() {
    require_root();
    let tmp = TempDir::new("rsrc");
    let name = unique_name("cvmix");
    let pr_dir = tmp.path().join("pr");
    let gc_dir = tmp.path().join("gc");
    let gcda_dir = tmp.path().join("gcda");
    for d in [&pr_dir, &gc_dir, &gcda_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    // Two programs under one name, so one `attach --name` session holds Rust, OCaml and C.
    let pr = copy_as(&fixture("protocol-runner"), &pr_dir, &name);
    let gc = copy_as(&fixture("gcov-target"), &gc_dir, &name);
    let mut cmd = Command::new(&pr);
    cmd.current_dir(&pr_dir)
        .env("BISECT_FILE", pr_dir.join("bisect-"))
        .env("LLVM_PROFILE_FILE", pr_dir.join("rust.profraw"));
    let mut ocaml = Driven::start(&mut cmd);
    let ready = ocaml.line();
    assert!(ready.ends_with(" ready"), "protocol-runner said {ready:?}");
    // The .gcda files go to gcda_dir/<file name>: strip every directory of the compiled path.
    let compiled = workspace_root().join("target/fixtures/build/gcov-target");
    let strip = (compiled.components().count() - 1).to_string();
    let gcda_prefix = gcda_dir.to_string_lossy().into_owned();
    let _c = start_program(
        &gc,
        &[],
        &[
            ("GCOV_PREFIX", gcda_prefix.as_str()),
            ("GCOV_PREFIX_STRIP", strip.as_str()),
        ],
        &gc_dir,
    );

    let out = tmp.path().join("session");
    let out_s = out.to_string_lossy().into_owned();
    // protocol-runner and gcov-target reach new code after about 3, 5 and 10 s.
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--name",
        &name,
        "--interval",
        "1s",
        "--duration",
        "12s",
        "--out",
        &out_s,
    ]);
    let status = covobs.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "covobs attach failed:\n{}",
        covobs.stderr()
    );
    let stderr = covobs.stderr();

    let report = out.join("report");
    let summary = read_json(&report.join("summary.json"));
    let timeline = read_json(&report.join("timeline.json"));
    let bisect = artifacts_of(&out, "bisect");
    let gcov = artifacts_of(&out, "gcov");
    let llvm = artifacts_of(&out, "llvm");
    assert!(
        bisect.len() >= 5 && gcov.len() >= 5 && !llvm.is_empty(),
        "expected a dozen dumps of each: {} bisect, {} gcov, {} llvm\n{stderr}",
        bisect.len(),
        gcov.len(),
        llvm.len()
    );
    // Everything is in the report, with nothing to warn about.
    assert_eq!(summary["artifacts"]["excluded"], 0, "{summary:#}");
    assert_eq!(
        summary["artifacts"]["reported"], summary["artifacts"]["total"],
        "{summary:#}"
    );
    assert_eq!(
        summary["warnings"].as_array().map(Vec::len),
        Some(0),
        "{summary:#}"
    );
    let files = summary["files"].as_array().expect("files");
    let of_language =
        |lang: &str| -> Vec<&Value> { files.iter().filter(|f| f["language"] == lang).collect() };

    // OCaml: points as bisect-ppx-report summary counts them in the latest dump (counts are
    // cumulative), lines as its Cobertura counts them.
    let (last_meta_path, last_meta) = bisect.last().expect("a bisect artifact");
    let last_bisect = data_of(last_meta_path, last_meta);
    let points = bisect_summary(&last_bisect);
    let lines = bisect_cobertura_lines(&last_bisect, &workspace_root());
    let ocaml = of_language("OCaml");
    assert_eq!(ocaml.len(), points.len(), "{ocaml:#?} vs {points:?}");
    for (recorded, want) in &points {
        let f = ocaml
            .iter()
            .find(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(recorded.as_str()))
            })
            .unwrap_or_else(|| panic!("{recorded} is not in summary.json"));
        let path = f["path"].as_str().expect("path");
        assert!(
            Path::new(path).is_absolute() && Path::new(path).is_file(),
            "{path}: the source was not resolved"
        );
        assert_eq!(counts(&f["points"]), *want, "points of {recorded}");
        assert_eq!(counts(&f["lines"]), lines[recorded], "lines of {recorded}");
    }
    // bisect_ppx's own reports are there, linked from the index.
    let index = std::fs::read_to_string(report.join("html/index.html")).expect("index.html");
    for (file, link) in [
        ("bisect/html/index.html", "../bisect/html/index.html"),
        ("bisect/cobertura.xml", "../bisect/cobertura.xml"),
    ] {
        assert!(report.join(file).is_file(), "report/{file} is missing");
        assert!(index.contains(link), "index.html does not link {link}");
    }
    // ... over the latest dump of the process, as covobs' own figures.
    let session_xml = std::fs::read_to_string(report.join("bisect/cobertura.xml")).expect("xml");
    assert_eq!(cobertura_classes(&session_xml), lines);

    // C: lines as gcov counts them in the latest gcov artifact (.gcda merge on write).
    let (gmeta_path, gmeta) = gcov.last().expect("a gcov artifact");
    let want = gcov_lines(gmeta_path, gmeta);
    let c = of_language("C");
    assert_eq!(c.len(), want.len(), "{c:#?} vs {want:?}");
    for (path, (pct, total)) in &want {
        let f = c
            .iter()
            .find(|f| f["path"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} is not in summary.json"));
        let (hit, n) = counts(&f["lines"]);
        assert_eq!(n, *total, "lines of {path}");
        assert_eq!(
            format!("{:.2}", hit as f64 * 100.0 / n as f64),
            *pct,
            "lines hit of {path}"
        );
        assert!(
            counts(&f["functions"]).1 > 0 && counts(&f["branches"]).1 > 0,
            "{f}"
        );
    }
    assert!(!of_language("Rust").is_empty(), "{summary:#}");

    // Coverage grows over the timeline, for both: every artifact has its point, totals never
    // go down, OCaml's points go up, and so do the lines the gcov steps add.
    let pts = timeline["points"].as_array().expect("points");
    assert_eq!(
        pts.len() as u64,
        summary["artifacts"]["total"].as_u64().expect("total")
    );
    for w in pts.windows(2) {
        for k in ["lines", "functions", "branches", "points"] {
            assert!(
                w[1][k]["hit"].as_u64() >= w[0][k]["hit"].as_u64(),
                "{k} went down: {} -> {}",
                w[0],
                w[1]
            );
        }
    }
    let ocaml_points: Vec<u64> = pts
        .iter()
        .filter(|p| p["runtime"] == "bisect")
        .map(|p| p["points"]["hit"].as_u64().expect("points"))
        .collect();
    assert!(
        ocaml_points.last() > ocaml_points.first(),
        "OCaml points did not grow: {ocaml_points:?}"
    );
    let mut c_growth = 0;
    for w in pts.windows(2) {
        if w[1]["runtime"] == "gcov" {
            c_growth += w[1]["lines"]["hit"].as_u64().unwrap_or(0)
                - w[0]["lines"]["hit"].as_u64().unwrap_or(0);
        }
    }
    assert!(c_growth > 0, "no gcov step added lines: {timeline:#}");
    // ... which gcov itself confirms between the first and the last gcov artifact.
    let (fmeta_path, fmeta) = &gcov[0];
    let first = gcov_lines(fmeta_path, fmeta);
    let hit = |m: &BTreeMap<String, (String, u64)>| -> f64 {
        m.values()
            .map(|(p, n)| p.parse::<f64>().expect("pct") * *n as f64 / 100.0)
            .sum()
    };
    assert!(hit(&want) > hit(&first), "{first:?} -> {want:?}");

    // The HTML index lists Rust, OCaml and C files, grouped by language.
    for lang in ["Rust", "OCaml", "C"] {
        assert!(
            index.contains(&format!("<h3>{lang} ")),
            "no {lang} group in index.html"
        );
    }
    for file in ["main.rs", "mempool.ml", "work.c", "main.c"] {
        assert!(index.contains(file), "{file} is not in index.html");
    }
    // LCOV and Cobertura have them all.
    let lcov = std::fs::read_to_string(report.join("coverage.lcov")).expect("lcov");
    let cobertura =
        std::fs::read_to_string(report.join("coverage.cobertura.xml")).expect("cobertura");
    for f in files {
        let path = f["path"].as_str().expect("path");
        assert!(lcov.contains(&format!("SF:{path}\n")), "{path} not in LCOV");
        let base = path.rsplit('/').next().expect("name");
        assert!(cobertura.contains(base), "{path} not in Cobertura");
    }

    // Live progress takes bisect and gcov artifacts as attach feeds them: each one gives a
    // point, the same as the report's timeline.
    let mut all: Vec<(PathBuf, Value)> = bisect.iter().chain(&gcov).chain(&llvm).cloned().collect();
    all.sort_by_key(|(_, m)| m["seq"].as_u64());
    let mut live =
        covobs::report::LiveCoverage::new(&out, &covobs::report::ReportOptions::default())
            .expect("live coverage");
    for ((meta_path, meta), want) in all.iter().zip(pts) {
        match live.add(meta_path).expect("add") {
            covobs::report::Progress::Point(p) => {
                assert_eq!(p.seq, meta["seq"].as_u64().expect("seq"));
                let got = serde_json::to_value(&p).expect("json");
                for k in ["lines", "functions", "branches", "points"] {
                    for n in ["hit", "total"] {
                        assert_eq!(got[k][n], want[k][n], "{k} {n} after seq {}", p.seq);
                    }
                }
            }
            other => panic!("{} gave {other:?}", meta_path.display()),
        }
    }

    // `covobs report --source-path`: the roots given come first.
    let copy = tmp.path().join("copied-sources");
    let ml_dir = copy.join("fixtures/protocol-runner/ocaml");
    std::fs::create_dir_all(&ml_dir).expect("mkdir");
    for e in std::fs::read_dir(workspace_root().join("fixtures/protocol-runner/ocaml"))
        .expect("ocaml sources")
        .flatten()
    {
        std::fs::copy(e.path(), ml_dir.join(e.file_name())).expect("copy source");
    }
    let again = run_ok(
        Command::new(covobs_bin())
            .arg("report")
            .arg(&out)
            .arg("--format=json")
            .arg("--source-path")
            .arg(&copy),
    );
    let summary2 = read_json(&report.join("summary.json"));
    let moved: Vec<&str> = summary2["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["language"] == "OCaml")
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(moved.len(), points.len(), "{again}");
    for p in moved {
        assert!(
            p.starts_with(&*copy.to_string_lossy()),
            "{p} was not taken from --source-path {}",
            copy.display()
        );
    }
}
