//! bisect_ppx and gcov artifacts in the live engine: each is converted when it arrives (no
//! worker thread: a parse and a line mapping, or one gcov run), and its unit's whole coverage
//! after it goes through the ordered queue like an LLVM export, so timeline points stay exact.
use std::{collections::BTreeMap, path::Path};

use super::{Job, LiveCoverage, PointMeta, Progress, UnitState};
use crate::{
    bisect::{self, BisectUnit, SourceRoots},
    covmap,
    error::Warning,
    gcov, gcov_tally,
    llvm::Snapshot,
    model::Coverage,
    session::{Artifact, ModuleMeta, SessionInfo},
    summary::BisectInputs,
};

impl LiveCoverage {
    /// session.json, read once it exists (during `attach` it is written at the end). One that
    /// is not valid is as good as none here: `covobs report` refuses it up front.
    fn session_info(&mut self) -> Option<&SessionInfo> {
        if self.session_info.is_none() {
            self.session_info = crate::session::read_info(&self.dir).ok().flatten();
        }
        self.session_info.as_ref()
    }

    fn cwd_of(&mut self, pid: u32) -> Option<String> {
        self.session_info()?.cwd_of(pid)
    }

    /// A bisect unit, with the candidate roots of its sources in the order they are tried:
    /// `--source-path`, the compilation directories in the binary's coverage mapping, the
    /// process's working directory, the binary's directory, the current directory (each with
    /// its parents).
    pub(super) fn open_bisect(&mut self, meta: &ModuleMeta, first: &Artifact) -> UnitState {
        let mut roots = SourceRoots::default();
        let here = std::env::current_dir().ok();
        for d in &self.opts.source_paths {
            match (d.is_absolute(), &here) {
                (true, _) => roots.push(d, "--source-path"),
                (false, Some(h)) => roots.push(&h.join(d), "--source-path"),
                (false, None) => {}
            }
        }
        let binary = self.module_binary(meta).ok();
        if let Some((b, _)) = &binary {
            for dir in covmap::compilation_dirs(b) {
                roots.push_with_parents(Path::new(&dir), "compilation directory");
            }
        }
        if let Some(cwd) = self.cwd_of(first.meta.pid) {
            roots.push_with_parents(Path::new(&cwd), "working directory");
        }
        if let Some(dir) = meta.path.as_deref().and_then(|p| Path::new(p).parent()) {
            roots.push_with_parents(dir, "binary's directory");
        }
        if let Some(h) = &here {
            roots.push_with_parents(h, "current directory");
        }
        UnitState::Bisect(Box::new(BisectUnit::new(roots)))
    }

    pub(super) fn dispatch_bisect(&mut self, a: &Artifact) -> (Option<Progress>, Vec<Job>) {
        let bytes = match a.check_recorded() {
            Ok(b) => b,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let files = match bisect::parse(&bytes) {
            Ok(f) => f,
            Err(why) => {
                let reason = format!("not a readable bisect_ppx coverage file: {why}");
                return (self.exclude(a, reason), Vec::new());
            }
        };
        drop(bytes);
        let idx = self.unit_for(a, None);
        let cwd = self.cwd_of(a.meta.pid);
        let unit = &mut self.units[idx];
        let UnitState::Bisect(b) = &mut unit.state else {
            return self.unavailable(a, idx);
        };
        if let Some(cwd) = cwd {
            b.add_root(Path::new(&cwd), "working directory");
        }
        b.add(
            crate::tally::Instance {
                pid: a.meta.pid,
                start: a.meta.process_start_ns,
            },
            files,
        );
        let cov = b.coverage();
        let missing = b.take_unresolved();
        unit.artifacts += 1;
        let name = unit.name.clone();
        for why in missing {
            self.warnings.push(Warning {
                module: Some(name.clone()),
                message: format!(
                    "an OCaml source was not found, so its points are reported without lines: {why}"
                ),
            });
        }
        self.apply_own(idx, cov, a)
    }

    pub(super) fn dispatch_gcov(&mut self, a: &Artifact) -> (Option<Progress>, Vec<Job>) {
        let parts = match a.check_recorded_parts() {
            Ok(p) => p,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let merged = match self.gcov_merged(a) {
            Ok(m) => m,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let major = parts
            .iter()
            .find(|(p, _)| p.ends_with(".gcda"))
            .and_then(|(_, b)| gcov::gcc_major(b));
        let idx = self.unit_for(a, None);
        let tool_dirs = self.opts.tool_dirs.clone();
        let work = self.work.path().to_path_buf();
        let unit = &mut self.units[idx];
        let UnitState::Gcov(g) = &mut unit.state else {
            return self.unavailable(a, idx);
        };
        let tool = match g.tool(major, &tool_dirs) {
            Ok(t) => t,
            Err(why) => {
                if self.warned_runtimes.insert(format!("gcov {major:?}")) {
                    self.warnings.push(Warning {
                        module: None,
                        message: format!("gcov artifacts are not reported: {why}"),
                    });
                }
                return (self.exclude(a, why), Vec::new());
            }
        };
        // Every .gcda of the artifact must go through gcov before its counters are taken in.
        if let Err(why) = gcov::run(&tool, &parts, &work) {
            return (self.exclude(a, why), Vec::new());
        }
        let instance = crate::tally::Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        if let Err(why) = g.add(a.meta.seq, instance, &parts, &merged) {
            return (self.exclude(a, why), Vec::new());
        }
        let run = match g.run(&tool, &work) {
            Ok(r) => r,
            Err(why) => return (self.exclude(a, why), Vec::new()),
        };
        g.used = Some(tool);
        let mut cov = Coverage::default();
        for (_, c) in &run.files {
            cov.merge(c);
        }
        unit.artifacts += 1;
        let name = unit.name.clone();
        // Told once each (the same .gcda usually has the same problem in every dump).
        for why in run.problems {
            if self.warned_runtimes.insert(format!("gcov: {why}")) {
                self.warnings.push(Warning {
                    module: Some(name.clone()),
                    message: format!(
                        "part of its gcov coverage is not reported (first in {}): {why}",
                        a.rel
                    ),
                });
            }
        }
        self.apply_own(idx, cov, a)
    }

    /// What a gcov dump merged (metadata `merged`): artifact `seq`'s files, or the copy kept
    /// beside it, split into its .gcda files.
    fn gcov_merged(&self, a: &Artifact) -> Result<gcov_tally::Merged, String> {
        gcov_tally::Merged::of(a.meta.merged.as_ref(), || self.merged_base(a))
    }

    pub(super) fn unavailable(&mut self, a: &Artifact, idx: usize) -> (Option<Progress>, Vec<Job>) {
        let u = &self.units[idx];
        let reason = match &u.state {
            UnitState::Unavailable(why) => format!("module {}: {why}", u.name),
            _ => format!("module {}: not a {} unit", u.name, a.meta.runtime),
        };
        (self.exclude(a, reason), Vec::new())
    }

    /// Queue a converted unit's whole coverage as its step's result, and the step's point.
    pub(super) fn apply_own(
        &mut self,
        idx: usize,
        cov: Coverage,
        a: &Artifact,
    ) -> (Option<Progress>, Vec<Job>) {
        let files: BTreeMap<String, _> = cov
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.totals()))
            .collect();
        let unit = &mut self.units[idx];
        let version = unit.version();
        let grew = unit
            .file_set
            .as_ref()
            .is_none_or(|s| files.keys().any(|k| !s.contains(k)));
        if grew {
            unit.file_set
                .get_or_insert_with(Default::default)
                .extend(files.keys().cloned());
        }
        let id = self.take_id();
        let snapshot = Snapshot {
            files,
            detail: Some(cov),
        };
        self.done.insert(id, (id, idx, version, Ok(snapshot)));
        // A file shared with another module needs that module's line detail.
        let jobs = if grew {
            self.mark_shared(idx)
        } else {
            Vec::new()
        };
        let meta = PointMeta {
            unit: idx,
            seq: a.meta.seq,
            pid: a.meta.pid,
            tid: a.meta.tid,
            runtime: a.meta.runtime.to_string(),
            module: self.units[idx].name.clone(),
            trigger: a.meta.trigger.as_ref().map(|t| t.as_str().to_owned()),
            end_ns: a.meta.end_ns,
        };
        // After this step's result (and the exports it asked for), in step order.
        let last = self.next_id.saturating_sub(1);
        self.point_at.entry(last).or_default().push(meta);
        (None, jobs)
    }

    /// What bisect-ppx-report is run on (see [`BisectInputs`]).
    pub(super) fn bisect_inputs(&self) -> BisectInputs {
        let mut out = BisectInputs::default();
        for u in &self.units {
            if let UnitState::Bisect(b) = &u.state {
                let (dumps, sources) = b.vetted();
                out.dumps.extend(dumps);
                for (name, path) in sources {
                    out.sources.entry(name).or_insert(path);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf, process::Command};

    use super::*;
    use crate::{Format, ReportOptions, model::Counts, session::sha256_hex};

    const SOURCE: &str = "#include <stdlib.h>\n\
        static int f(int n) {\n  int s = 0;\n  for (int i = 0; i < n; i++)\n    s += i & 1 ? i : -1;\n  return s;\n}\n\
        int main(int argc, char **argv) {\n  int n = argc > 1 ? atoi(argv[1]) : 0;\n  if (n > 2)\n    return f(n) == 12345;\n  return 0;\n}\n";

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run the gcc --coverage program (its .gcda merges on write) and lay the .gcda and .gcno
    /// out as gcov artifact `seq`, as the collector does; the metadata path.
    fn dump(dir: &Path, seq: u64, arg: &str, tamper: bool) -> PathBuf {
        run(Command::new(dir.join("p")).arg(arg).current_dir(dir));
        let pdir = dir.join("session/77-p");
        let art = pdir.join(format!("{seq:06}-gcov.gcda"));
        fs::create_dir_all(&art).expect("mkdir");
        let mut parts = Vec::new();
        let mut all = Vec::new();
        for ext in ["gcda", "gcno"] {
            let path = dir.join(format!("p.{ext}"));
            let bytes = fs::read(&path).expect("gcov file");
            let name = path
                .to_string_lossy()
                .trim_start_matches('/')
                .replace('/', "#");
            fs::write(art.join(&name), &bytes).expect("part");
            parts.push(serde_json::json!({
                "file": name, "path": path.to_string_lossy(), "bytes": bytes.len()
            }));
            all.extend_from_slice(&bytes);
        }
        let bytes = all.len();
        if tamper {
            all.push(0);
        }
        let meta = serde_json::json!({
            "seq": seq, "runtime": "gcov", "pid": 77, "valid": true, "end_ns": seq * 1000,
            "file": format!("{seq:06}-gcov.gcda"), "bytes": bytes,
            "checksum": format!("sha256:{}", sha256_hex(&all)),
            "format": {"name": "gcov-gcda", "version": 0},
            "module": {"path": dir.join("p").to_string_lossy(), "build_id": "g1"},
            "parts": parts,
        });
        let p = pdir.join(format!("{seq:06}-gcov.json"));
        fs::write(&p, meta.to_string()).expect("metadata");
        p
    }

    #[test]
    fn gcov_artifacts_go_live_and_into_the_report() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join("p.c"), SOURCE).expect("source");
        run(Command::new("gcc")
            .args(["--coverage", "-O0", "-o", "p", "p.c"])
            .current_dir(dir));
        let sdir = dir.join("session");
        fs::create_dir_all(&sdir).expect("mkdir");
        let opts = ReportOptions {
            formats: [Format::Json, Format::Lcov].into_iter().collect(),
            ..ReportOptions::default()
        };
        let mut live = LiveCoverage::new(&sdir, &opts).expect("live");
        let point = |p: Progress| match p {
            Progress::Point(p) => p,
            other => panic!("expected a point, got {other:?}"),
        };
        let p1 = point(live.add(&dump(dir, 1, "0", false)).expect("add 1"));
        assert_eq!(p1.runtime, "gcov");
        assert_eq!(p1.totals.functions, Counts::new(1, 2));
        // The second run reaches f: its .gcda (merged on write) is the coverage now.
        let p2 = point(live.add(&dump(dir, 2, "9", false)).expect("add 2"));
        assert!(p2.totals.lines.hit > p1.totals.lines.hit, "{p1:?} {p2:?}");
        assert_eq!(p2.totals.functions, Counts::new(2, 2));
        assert!(p2.totals.branches.total > 0);
        // Parts that do not add up to the checksum are left out.
        match live.add(&dump(dir, 3, "9", true)).expect("add 3") {
            Progress::Excluded(e) => assert!(e.reason.contains("checksum"), "{e:?}"),
            other => panic!("expected an exclusion, got {other:?}"),
        }
        let summary = live.finish().expect("finish");
        assert_eq!(summary.reported, 2);
        assert_eq!(summary.totals.functions, Counts::new(2, 2));
        let lcov = fs::read_to_string(sdir.join("report/coverage.lcov")).expect("lcov");
        let src = dir.join("p.c").to_string_lossy().into_owned();
        assert!(lcov.contains(&format!("SF:{src}\n")), "{lcov}");
        // main ran twice, f once (gcov's own counts).
        assert!(lcov.contains("FNDA:2,main\n"), "{lcov}");
        assert!(lcov.contains("FNDA:1,f\n"), "{lcov}");
        let s: serde_json::Value =
            serde_json::from_slice(&fs::read(sdir.join("report/summary.json")).expect("summary"))
                .expect("json");
        assert_eq!(s["modules"][0]["runtime"], "gcov");
        assert_eq!(s["files"][0]["language"], "C");
    }
}
