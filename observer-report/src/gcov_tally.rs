//! gcov coverage under the exact count model (tally.rs, docs/output.md "Exact counts").
//!
//! libgcov merges on write: at each dump it reads the .gcda on disk, adds its counters into the
//! program's own (in memory) and writes the sum. So a collected .gcda is the process's counters
//! plus whatever the file held before (its own earlier dumps, earlier runs, other processes of
//! the binary), and that content stays in memory until `__gcov_reset`. The collector records what
//! the file held before each dump (metadata `merged`); the model subtracts it like an LLVM `%m`
//! pool's. Per .gcda path (one object file) the counters go through their own [`Tally`]; the
//! exact counts are written back into that .gcda and read by gcov.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use super::{
    gcda::Gcda,
    gcov::{self, Gcov, GcovRun},
    tally::{Instance, Tally},
};

/// What a gcov dump merged before it wrote, as its metadata says.
#[derive(Debug, Default)]
pub enum Merged {
    /// Not recorded (a session from before covobs recorded it): taken as nothing.
    #[default]
    Unknown,
    /// The files as artifact `seq` (of this module) held them.
    Seq(u64),
    /// Copies of the files as they were: .gcda path in the target -> bytes.
    Files(HashMap<String, Vec<u8>>),
}

impl Merged {
    /// What a gcov dump's metadata `merged` says it merged: artifact `seq`'s files, or the
    /// content kept beside it (`base`, asked for only then) split into its .gcda files.
    pub fn of(
        m: Option<&covobs_layout::artifact::MergedBase>,
        base: impl FnOnce() -> Result<Option<Vec<u8>>, String>,
    ) -> Result<Merged, String> {
        let Some(m) = m else {
            return Ok(Merged::Unknown);
        };
        if let Some(seq) = m.seq {
            return Ok(Merged::Seq(seq));
        }
        let Some(bytes) = base()? else {
            return Ok(Merged::Unknown);
        };
        let mut files = HashMap::new();
        let mut at = 0usize;
        for p in &m.parts {
            let end = usize::try_from(p.bytes)
                .ok()
                .and_then(|n| at.checked_add(n))
                .filter(|&e| e <= bytes.len())
                .ok_or("the parts of the content it merged run past its end")?;
            files.insert(p.path.clone(), bytes[at..end].to_vec());
            at = end;
        }
        if at != bytes.len() {
            return Err("the parts of the content it merged do not add up to it".into());
        }
        Ok(Merged::Files(files))
    }
}

struct Series {
    layout: u64,
    /// The latest .gcda of this path: the template the exact counts are written into.
    template: Gcda,
    tally: Tally,
    /// The artifact that held this path last and its counters as written: what the next dump
    /// merges when nothing else wrote the file in between.
    last: (u64, Vec<u64>),
    /// The notes of the same object: (path, bytes).
    notes: Option<(String, Vec<u8>)>,
}

/// The gcov coverage of one module.
#[derive(Default)]
pub struct GcovUnit {
    series: BTreeMap<String, Series>,
    /// Per GCC major: its gcov, or why there is none (looked for once).
    tools: HashMap<Option<u32>, Result<Gcov, String>>,
    /// The gcov used last.
    pub used: Option<Gcov>,
    /// Artifacts taken in.
    pub steps: u64,
    /// States that had merged content subtracted, and resets seen.
    pub merged_states: u64,
    pub resets: u64,
}

impl std::fmt::Debug for GcovUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcovUnit")
            .field("files", &self.series.keys().collect::<Vec<_>>())
            .field("steps", &self.steps)
            .finish()
    }
}

impl GcovUnit {
    pub fn tool(&mut self, major: Option<u32>, extra: &[PathBuf]) -> Result<Gcov, String> {
        self.tools
            .entry(major)
            .or_insert_with(|| gcov::find_gcov(major, extra))
            .clone()
    }

    /// Take in artifact `seq` of `instance`: its parts (.gcda and .gcno, by path in the target)
    /// and what its dump merged. `Err` is the reason to leave it out (nothing was taken in).
    pub fn add(
        &mut self,
        seq: u64,
        instance: Instance,
        parts: &[(String, Vec<u8>)],
        merged: &Merged,
    ) -> Result<(), String> {
        let mut parsed = Vec::new();
        for (path, bytes) in parts.iter().filter(|(p, _)| p.ends_with(".gcda")) {
            let g = Gcda::parse(bytes).map_err(|e| format!("{path}: {e}"))?;
            let base = match merged {
                Merged::Unknown => None,
                Merged::Files(files) => match files.get(path) {
                    Some(b) => {
                        let m = Gcda::parse(b)
                            .map_err(|e| format!("the copy of {path} it merged: {e}"))?;
                        // libgcov merges a file of the same program only (it overwrites others).
                        (m.layout() == g.layout()).then(|| m.counters())
                    }
                    None => None,
                },
                Merged::Seq(n) => match self.series.get(path) {
                    Some(s) if s.layout == g.layout() => {
                        if s.last.0 != *n {
                            return Err(format!(
                                "it merged {path} as artifact {n} held it, but the latest artifact holding that file in the report is {}",
                                s.last.0
                            ));
                        }
                        Some(s.last.1.clone())
                    }
                    _ => None,
                },
            };
            parsed.push((path.clone(), g, base));
        }
        if parsed.is_empty() {
            return Err("the artifact holds no .gcda file".into());
        }
        let gcda: Vec<&str> = parsed.iter().map(|(p, ..)| p.as_str()).collect();
        let gcno: Vec<&str> = parts
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.ends_with(".gcno"))
            .collect();
        let notes: HashMap<&str, &str> = gcov::pair_notes(&gcda, &gcno)
            .into_iter()
            .filter_map(|(d, n)| Some((d, n?)))
            .collect();
        let bytes: HashMap<&str, &[u8]> = parts
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let mut found_notes = Vec::new();
        for (path, _, _) in &parsed {
            found_notes.push(notes.get(path.as_str()).map(|n| {
                (
                    n.to_string(),
                    bytes.get(n).copied().unwrap_or_default().to_vec(),
                )
            }));
        }
        for ((path, g, base), notes) in parsed.into_iter().zip(found_notes) {
            let counters = g.counters();
            let layout = g.layout();
            let s = match self.series.get_mut(&path) {
                // A rebuilt program writes other counters to the same path: counted afresh.
                Some(s) if s.layout == layout => s,
                _ => {
                    self.series.insert(
                        path.clone(),
                        Series {
                            layout,
                            template: g.clone(),
                            tally: Tally::new(counters.len(), 0),
                            last: (seq, Vec::new()),
                            notes: None,
                        },
                    );
                    let Some(s) = self.series.get_mut(&path) else {
                        continue;
                    };
                    s
                }
            };
            let pushed = s.tally.push(instance, &counters, &[], base.as_deref());
            self.merged_states += u64::from(pushed.merged);
            self.resets += u64::from(pushed.reset);
            s.template = g;
            s.last = (seq, counters);
            if notes.is_some() {
                s.notes = notes;
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// The exact counts as .gcda files (and their notes), by path in the target, for gcov.
    pub fn exact_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (path, s) in &self.series {
            out.push((path.clone(), s.template.with_counters(s.tally.counters())));
            if let Some((n, b)) = &s.notes
                && !out.iter().any(|(p, _)| p == n)
            {
                out.push((n.clone(), b.clone()));
            }
        }
        out
    }

    /// The module's coverage now, through `gcov`.
    pub fn run(&self, gcov: &Gcov, work: &Path) -> Result<GcovRun, String> {
        gcov::run(gcov, &self.exact_files(), work)
    }
}
