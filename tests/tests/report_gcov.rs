//! Exact counts for gcov (docs/output.md, "Exact counts"): gcov-target attached by
//! `covobs attach`, real signals, real libgcov dumps (which merge on write), and the report's
//! line counts against gcc's own gcov reading the target's own final .gcda files (an
//! independent reading of what the runtime itself accumulated).
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// Per source file, per line: count.
type Lines = BTreeMap<String, BTreeMap<u32, u64>>;

/// The directory the fixture's objects (and .gcno notes) are in.
fn build_dir() -> PathBuf {
    let bin = fixture("gcov-target");
    let fixtures = bin.parent().and_then(Path::parent).expect("fixtures dir");
    fixtures.join("build/gcov-target")
}

struct Gcov {
    tmp: TempDir,
    bin: PathBuf,
    name: String,
    prefix: PathBuf,
    strip: String,
}

impl Gcov {
    fn new(tag: &str) -> Self {
        require_root();
        let tmp = TempDir::new(tag);
        let name = unique_name("gcovx");
        let bin = copy_as(&fixture("gcov-target"), tmp.path(), &name);
        let prefix = tmp.path().join("gcda");
        fs::create_dir_all(&prefix).expect("mkdir");
        // Strip the whole object directory: the .gcda files land right in `prefix`.
        let strip = (build_dir().components().count() - 1).to_string();
        Self {
            tmp,
            bin,
            name,
            prefix,
            strip,
        }
    }

    fn start(&self, args: &[&str]) -> Driven {
        let prefix = self.prefix.to_string_lossy().into_owned();
        start_program(
            &self.bin,
            args,
            &[
                ("GCOV_PREFIX", prefix.as_str()),
                ("GCOV_PREFIX_STRIP", self.strip.as_str()),
            ],
            self.tmp.path(),
        )
    }

    fn attach(&self, out: &Path, extra: &[&str]) -> Covobs {
        let out = out.to_string_lossy().into_owned();
        let mut args = vec!["attach", "--json", "--interval", "150ms", "--out", &out];
        args.extend_from_slice(extra);
        Covobs::start(&args)
    }

    /// gcov's own line counts of the .gcda files in `dir` (with the fixture's notes).
    fn gcov_lines(&self, dir: &Path) -> Lines {
        let scratch = self.tmp.path().join(format!("oracle-{}", unique_name("g")));
        fs::create_dir_all(&scratch).expect("mkdir");
        let mut names = Vec::new();
        for obj in ["main", "work"] {
            let gcda = dir.join(format!("{obj}.gcda"));
            if !gcda.exists() {
                continue;
            }
            fs::copy(&gcda, scratch.join(format!("{obj}.gcda"))).expect("copy gcda");
            fs::copy(
                build_dir().join(format!("{obj}.gcno")),
                scratch.join(format!("{obj}.gcno")),
            )
            .expect("copy gcno");
            names.push(format!("{obj}.gcda"));
        }
        assert!(!names.is_empty(), "no .gcda in {}", dir.display());
        let json = run_ok(
            Command::new("gcov")
                .args(["--json-format", "--stdout"])
                .args(&names)
                .current_dir(&scratch),
        );
        let mut out = Lines::new();
        for doc in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
            let doc = doc.expect("gcov json");
            for f in doc["files"].as_array().expect("files") {
                let lines = out
                    .entry(f["file"].as_str().expect("file").into())
                    .or_default();
                for l in f["lines"].as_array().expect("lines") {
                    *lines
                        .entry(l["line_number"].as_u64().expect("line") as u32)
                        .or_default() += l["count"].as_u64().expect("count");
                }
            }
        }
        out
    }
}

/// DA lines of the report's LCOV, per source file.
fn report_lines(out: &Path) -> Lines {
    let lcov = fs::read_to_string(out.join("report/coverage.lcov")).expect("report lcov");
    let mut out = Lines::new();
    let mut file = String::new();
    for l in lcov.lines() {
        if let Some(f) = l.strip_prefix("SF:") {
            file = f.to_string();
        } else if let Some(da) = l.strip_prefix("DA:") {
            let mut it = da.split(',');
            let line: u32 = it.next().and_then(|x| x.parse().ok()).expect("DA line");
            let count: u64 = it.next().and_then(|x| x.parse().ok()).expect("DA count");
            *out.entry(file.clone())
                .or_default()
                .entry(line)
                .or_default() += count;
        }
    }
    out
}

/// Drop the lines that ran 0 times (the report and gcov agree on which lines exist; what is
/// compared is what ran and how often).
fn ran(lines: &Lines) -> Lines {
    lines
        .iter()
        .map(|(f, l)| {
            (
                f.clone(),
                l.iter()
                    .filter(|(_, c)| **c > 0)
                    .map(|(k, v)| (*k, *v))
                    .collect(),
            )
        })
        .collect()
}

fn minus(a: &Lines, b: &Lines) -> Lines {
    let mut out = a.clone();
    for (f, lines) in b {
        let of = out.entry(f.clone()).or_default();
        for (l, c) in lines {
            let e = of.entry(*l).or_default();
            *e = e
                .checked_sub(*c)
                .expect("the earlier file's counts are part of the later");
        }
    }
    out
}

/// The .gcda files of a gcov artifact: path in the target -> bytes.
fn gcda_of(out: &Path, meta: &Value) -> BTreeMap<String, Vec<u8>> {
    let dir = out
        .join(format!("{}-{}", meta.u("pid"), meta.s("comm")))
        .join(meta.s("file"));
    meta["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter(|p| p.s("path").ends_with(".gcda"))
        .map(|p| {
            let bytes = fs::read(dir.join(p.s("file"))).expect("part");
            (p.s("path").to_string(), bytes)
        })
        .collect()
}

/// Wait until `n` events match.
fn wait_count(c: &mut Covobs, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + T;
    while c.events().iter().filter(|e| pred(e)).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gcov_metas(out: &Path) -> Vec<Value> {
    artifacts(out)
        .into_iter()
        .map(|a| a.meta)
        .filter(|m| m["runtime"] == "gcov")
        .collect()
}

/// Attach to one run of the target, let `dumps` dumps end, stop it (its exit-time dump runs),
/// and return the session's metadata once covobs wrote the report.
fn one_run(g: &Gcov, out: &Path, args: &[&str], dumps: usize) -> Vec<Value> {
    let mut target = g.start(args);
    let pid = target.pid();
    let mut covobs = g.attach(out, &["--pid", &pid.to_string()]);
    wait_count(&mut covobs, "the dumps", dumps, |e| e.kind() == "dump_end");
    // SAFETY: signalling our own child; it leaves its loop and main returns.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(target.wait().success());
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    gcov_metas(out)
}

#[test]
fn dumps_without_reset_count_as_the_final_file() {
    for dumps in [1, 5, 20] {
        let g = Gcov::new("gcov-noreset");
        let out = g.tmp.path().join("out");
        let metas = one_run(&g, &out, &["--no-reset"], dumps);
        // GCC's runtime writes at its first dump only (not again until a reset, not at exit):
        // the later dumps and the exit are told as having written nothing new.
        assert_eq!(metas.len(), 1, "{dumps} dumps: {metas:?}");
        assert!(metas[0].get("merged").is_none(), "{:?}", metas[0]);
        let want = ran(&g.gcov_lines(&g.prefix));
        let got = ran(&report_lines(&out));
        assert_eq!(got, want, "{dumps} dumps without reset");
        println!(
            "{dumps} dumps without reset: {} files, as gcov says",
            got.len()
        );
    }
}

#[test]
fn dump_and_reset_count_the_sum_and_merges_are_recorded() {
    let g = Gcov::new("gcov-reset");
    let out = g.tmp.path().join("out");
    let metas = one_run(&g, &out, &[], 6);
    assert!(metas.len() >= 6, "{metas:?}");
    // Each dump merged the file its previous one wrote (the collector's own artifact).
    assert!(metas[0].get("merged").is_none(), "{:?}", metas[0]);
    for w in metas.windows(2) {
        assert_eq!(w[1]["merged"]["seq"], w[0]["seq"], "{:?}", w[1]);
    }
    // The last artifact is the files as the target left them.
    for (path, bytes) in gcda_of(&out, metas.last().expect("last")) {
        assert!(fs::read(&path).expect("final .gcda") == bytes, "{path}");
    }
    let want = ran(&g.gcov_lines(&g.prefix));
    let got = ran(&report_lines(&out));
    assert_eq!(got, want);
    // Not the sum of the collected files, which count each dump again at every later one.
    let summary = read_json(&out.join("report/summary.json"));
    assert_eq!(summary["artifacts"]["excluded"], 0, "{summary:#}");
    println!(
        "{} artifacts (dump + reset), counts equal gcov's reading of the final .gcda",
        metas.len()
    );
}

#[test]
fn an_earlier_run_is_not_counted_and_a_restart_adds_up() {
    let g = Gcov::new("gcov-restart");
    // A run before the session: its counts stay in the .gcda files.
    let mut early = g.start(&[]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(early.pid(), libc::SIGTERM) };
    assert!(early.wait().success());
    let left = g.tmp.path().join("left");
    fs::create_dir_all(&left).expect("mkdir");
    for obj in ["main", "work"] {
        fs::copy(
            g.prefix.join(format!("{obj}.gcda")),
            left.join(format!("{obj}.gcda")),
        )
        .expect("leftover");
    }
    let before = g.gcov_lines(&left);

    // The session: two runs of the binary, one after the other, followed by name.
    let out = g.tmp.path().join("out");
    let mut covobs = g.attach(&out, &["--name", &g.name, "--duration", "60s"]);
    for run in 0..2 {
        let mut target = g.start(&[]);
        let pid = target.pid();
        wait_count(&mut covobs, "dumps of the run", 3, |e| {
            e.kind() == "artifact" && e.u("pid") == pid as u64
        });
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        assert!(target.wait().success(), "run {run}");
        covobs.wait_event(T, "the exit dump", |e| {
            e.kind() == "process_exit" && e.u("pid") == pid as u64
        });
    }
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let metas = gcov_metas(&out);
    let pids: std::collections::BTreeSet<u64> = metas.iter().map(|m| m.u("pid")).collect();
    assert_eq!(pids.len(), 2, "{metas:?}");
    // Each run's first dump merged what was on disk when covobs began watching it: a copy.
    for pid in &pids {
        let first = metas.iter().find(|m| m.u("pid") == *pid).expect("first");
        let file = first["merged"]["file"]
            .as_str()
            .unwrap_or_else(|| panic!("{first}"));
        let pdir = artifacts(&out)
            .into_iter()
            .find(|a| a.meta["seq"] == first["seq"])
            .expect("artifact")
            .meta_path;
        let copy = pdir.parent().expect("dir").join(file);
        assert_eq!(
            fs::metadata(&copy).expect("merged copy").len(),
            first["merged"]["bytes"].as_u64().expect("bytes")
        );
    }
    let after = g.gcov_lines(&g.prefix);
    let want = ran(&minus(&after, &before));
    let got = ran(&report_lines(&out));
    assert_eq!(
        got, want,
        "both runs, not the earlier one, each counted once"
    );
    println!(
        "{} artifacts of 2 runs after an earlier run: counts equal gcov's final .gcda minus the earlier run's",
        metas.len()
    );
}
