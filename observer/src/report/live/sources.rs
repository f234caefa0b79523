//! bisect_ppx and gcov artifacts in the live engine: each is converted when it arrives (no
//! worker thread: a parse and a line mapping, or one gcov run), and its unit's whole coverage
//! after it goes through the ordered queue like an LLVM export, so timeline points stay exact.
use std::{collections::BTreeMap, path::Path};

use super::{Job, LiveCoverage, PointMeta, Progress, UnitState};
use crate::report::{
    bisect::{self, BisectUnit, SourceRoots},
    covmap,
    error::Warning,
    gcov,
    llvm::Snapshot,
    model::Coverage,
    session::{Artifact, ModuleMeta, SessionInfo},
    summary::BisectInputs,
};

impl LiveCoverage {
    /// session.json, read once it exists (during `attach` it is written at the end).
    fn session_info(&mut self) -> Option<&SessionInfo> {
        if self.session_info.is_none() {
            let p = self.session_dir.join("session.json");
            let raw = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if raw.is_some() {
                self.session_info = Some(SessionInfo { raw });
            }
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
        if let Some(b) = &binary {
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
        let idx = self.unit_for(a);
        let cwd = self.cwd_of(a.meta.pid);
        let unit = &mut self.units[idx];
        let UnitState::Bisect(b) = &mut unit.state else {
            return self.unavailable(a, idx);
        };
        if let Some(cwd) = cwd {
            b.add_root(Path::new(&cwd), "working directory");
        }
        b.add(a.meta.pid, &a.data_path, files);
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
        let major = parts
            .iter()
            .find(|(p, _)| p.ends_with(".gcda"))
            .and_then(|(_, b)| gcov::gcc_major(b));
        let idx = self.unit_for(a);
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
        let run = match gcov::run(&tool, &parts, &work) {
            Ok(r) => r,
            Err(why) => return (self.exclude(a, why), Vec::new()),
        };
        g.used = Some(tool);
        g.add(run.files);
        let cov = g.coverage();
        unit.artifacts += 1;
        let name = unit.name.clone();
        for why in run.problems {
            self.warnings.push(Warning {
                module: Some(name.clone()),
                message: format!("artifact {}: part of it is not reported: {why}", a.rel),
            });
        }
        self.apply_own(idx, cov, a)
    }

    fn unavailable(&mut self, a: &Artifact, idx: usize) -> (Option<Progress>, Vec<Job>) {
        let u = &self.units[idx];
        let reason = match &u.state {
            UnitState::Unavailable(why) => format!("module {}: {why}", u.name),
            _ => format!("module {}: not a {} unit", u.name, a.meta.runtime),
        };
        (self.exclude(a, reason), Vec::new())
    }

    /// Queue a converted unit's whole coverage as its step's result, and the step's point.
    fn apply_own(
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
            runtime: a.meta.runtime.clone(),
            module: self.units[idx].name.clone(),
            trigger: a.meta.trigger.clone(),
            end_ns: a.meta.end_ns,
        };
        // After this step's result (and the exports it asked for), in step order.
        let last = self.next_id.saturating_sub(1);
        self.point_at.entry(last).or_default().push(meta);
        (None, jobs)
    }

    /// What bisect-ppx-report is run on: each process's latest .coverage file, and the roots
    /// the sources were found under.
    pub(super) fn bisect_inputs(&self) -> BisectInputs {
        let mut out = BisectInputs::default();
        for u in &self.units {
            if let UnitState::Bisect(b) = &u.state {
                out.files.extend(b.inputs());
                for r in b.roots_used() {
                    if !out.source_roots.contains(&r) {
                        out.source_roots.push(r);
                    }
                }
            }
        }
        for d in &self.opts.source_paths {
            if !out.source_roots.contains(d) {
                out.source_roots.push(d.clone());
            }
        }
        out
    }
}
