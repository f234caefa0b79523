//! gcov (`gcc --coverage`) for labels. A module's counters are the arc counters of its .gcda
//! files, the files in the order the session first held them, each in file order. An artifact
//! (one dump's .gcda files) is a state of its process instance's counters: libgcov merges on
//! write, so what the file held before the dump (metadata `merged`) is given to the count model
//! to subtract, as the report does (report/gcov_tally.rs). A label's gains are written into the
//! .gcda files in place of their counters, and gcc's own gcov reads them with their notes: its
//! lines are what gcov makes of the counts the label gained (gcov's flow is linear in them).
use std::collections::HashMap;

use super::{
    compute::Hits,
    source::{CoverageCtx, Ctx, Part, State, dense},
};
use crate::{
    gcda::Gcda,
    gcov::{self, Gcov},
    gcov_tally::Merged,
    model::Coverage,
    session::Artifact,
    tally::Instance,
};

struct GcdaFile {
    path: String,
    /// Its first counter in the module's.
    at: usize,
    len: usize,
    layout: u64,
    /// The latest .gcda of this path: the gains are written into it.
    template: Gcda,
    /// Its notes: (path, bytes).
    notes: Option<(String, Vec<u8>)>,
    /// The artifact that held this path last and its counters as written: what the next dump
    /// merges when nothing else wrote the file in between.
    last: (u64, Vec<u64>),
}

#[derive(Default)]
pub struct GcovSource {
    files: Vec<GcdaFile>,
    by_path: HashMap<String, usize>,
    len: usize,
    /// Per instance, the counters as its last artifact held them (a dump that does not hold
    /// every file leaves the others as they were).
    raw: HashMap<Instance, Vec<u64>>,
    /// The GCC major of the .gcda files.
    major: Option<u32>,
}

impl GcovSource {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn state(&mut self, ctx: &mut Ctx<'_>, a: &Artifact) -> Result<State, String> {
        let parts = a.check_recorded_parts()?;
        let merged = merged_files(ctx, a)?;
        let notes_of: HashMap<String, String> = {
            let gcda: Vec<&str> = parts
                .iter()
                .map(|(p, _)| p.as_str())
                .filter(|p| p.ends_with(".gcda"))
                .collect();
            let gcno: Vec<&str> = parts
                .iter()
                .map(|(p, _)| p.as_str())
                .filter(|p| p.ends_with(".gcno"))
                .collect();
            gcov::pair_notes(&gcda, &gcno)
                .into_iter()
                .filter_map(|(d, n)| Some((d.to_string(), n?.to_string())))
                .collect()
        };
        let bytes_of: HashMap<&str, &[u8]> = parts
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let mut read = Vec::new();
        for (path, bytes) in parts.iter().filter(|(p, _)| p.ends_with(".gcda")) {
            let g = Gcda::parse(bytes).map_err(|e| format!("{path}: {e}"))?;
            let counters = g.counters();
            let layout = g.layout();
            let base = match &merged {
                Merged::Unknown => None,
                Merged::Files(files) => match files.get(path) {
                    Some(b) => {
                        let m = Gcda::parse(b)
                            .map_err(|e| format!("the copy of {path} it merged: {e}"))?;
                        // libgcov merges a file of the same program only (it overwrites others).
                        (m.layout() == layout).then(|| m.counters())
                    }
                    None => None,
                },
                Merged::Seq(n) => match self.by_path.get(path).map(|&i| &self.files[i]) {
                    Some(f) if f.layout == layout => {
                        if f.last.0 != *n {
                            return Err(format!(
                                "it merged {path} as artifact {n} held it, but the latest artifact holding that file is {}",
                                f.last.0
                            ));
                        }
                        Some(f.last.1.clone())
                    }
                    _ => None,
                },
            };
            if let Some(&i) = self.by_path.get(path)
                && (self.files[i].layout != layout || self.files[i].len != counters.len())
            {
                return Err(format!(
                    "{path} holds the counters of another build than the session's first"
                ));
            }
            read.push((path.clone(), g, counters, base));
        }
        if read.is_empty() {
            return Err("the artifact holds no .gcda file".into());
        }
        self.major = self.major.or_else(|| {
            parts
                .iter()
                .find(|(p, _)| p.ends_with(".gcda"))
                .and_then(|(_, b)| gcov::gcc_major(b))
        });
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        let mut merged_any = false;
        let mut placed = Vec::new();
        for (path, g, counters, base) in read {
            let i = match self.by_path.get(&path) {
                Some(&i) => i,
                None => {
                    self.files.push(GcdaFile {
                        path: path.clone(),
                        at: self.len,
                        len: counters.len(),
                        layout: g.layout(),
                        template: g.clone(),
                        notes: None,
                        last: (a.meta.seq, Vec::new()),
                    });
                    self.len += counters.len();
                    self.by_path.insert(path.clone(), self.files.len() - 1);
                    self.files.len() - 1
                }
            };
            let f = &mut self.files[i];
            f.template = g;
            if let Some(n) = notes_of.get(&path) {
                let b = bytes_of.get(n.as_str()).copied().unwrap_or_default();
                f.notes = Some((n.clone(), b.to_vec()));
            }
            f.last = (a.meta.seq, counters.clone());
            merged_any |= base.is_some();
            placed.push((f.at, counters, base));
        }
        let len = self.len;
        let raw = self.raw.entry(instance).or_default();
        raw.resize(len, 0);
        let mut merged_v = merged_any.then(|| vec![0u64; len]);
        for (at, counters, base) in placed {
            raw[at..at + counters.len()].copy_from_slice(&counters);
            if let (Some(m), Some(b)) = (&mut merged_v, base) {
                for (x, y) in m[at..].iter_mut().zip(b.iter().take(counters.len())) {
                    *x = *y;
                }
            }
        }
        Ok(State {
            counters: raw.clone(),
            bits: Vec::new(),
            merged: merged_v,
        })
    }

    /// gcov's reading of the label's gains in every .gcda of the module.
    pub fn coverage(&self, ctx: &CoverageCtx<'_>, gained: &Hits) -> Result<Part, String> {
        let tool: Gcov = gcov::find_gcov(self.major, &ctx.opts.tool_dirs)?;
        let counts = dense(gained, self.len);
        let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
        for f in &self.files {
            let slice = counts.get(f.at..f.at + f.len).unwrap_or_default();
            parts.push((f.path.clone(), f.template.with_counters(slice)));
            if let Some((n, b)) = &f.notes
                && !parts.iter().any(|(p, _)| p == n)
            {
                parts.push((n.clone(), b.clone()));
            }
        }
        let work = tempfile::Builder::new()
            .prefix("covobs-label-gcov-")
            .tempdir()
            .map_err(|e| format!("a scratch directory: {e}"))?;
        let run = gcov::run(&tool, &parts, work.path())?;
        let mut detail = Coverage::default();
        for (_, c) in &run.files {
            detail.merge(c);
        }
        Ok(Part::of(detail))
    }
}

fn merged_files(ctx: &Ctx<'_>, a: &Artifact) -> Result<Merged, String> {
    Merged::of(a.meta.merged.as_ref(), || ctx.merged_base(a))
}
