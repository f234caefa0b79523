//! bisect_ppx (OCaml) for labels. A module's counters are its points: the instrumented files in
//! the order the session first held them, each in point order. A `.coverage` dump holds the
//! counts since the process started (or reset them): a state of its instance. A label's gains
//! are laid out as a coverage file of their own and read like any (lines from the sources,
//! found as the report finds them: report/bisect.rs).
use std::{collections::HashMap, path::Path};

use super::{
    compute::Hits,
    source::{Ctx, Part, State, dense},
};
use crate::{
    bisect::{self, BisectUnit, InstrumentedFile, SourceRoots},
    covmap,
    session::Artifact,
    tally::Instance,
};

struct PointFile {
    name: String,
    points: Vec<u64>,
    at: usize,
}

pub struct BisectSource {
    files: Vec<PointFile>,
    by_name: HashMap<String, usize>,
    len: usize,
    raw: HashMap<Instance, Vec<u64>>,
    roots: SourceRoots,
}

impl BisectSource {
    /// The roots its sources are looked for under, in the report's order: `--source-path`, the
    /// compilation directories in the binary, the process's working directory, the binary's
    /// directory, the current directory (each with its parents).
    pub fn open(ctx: &Ctx<'_>, a: &Artifact) -> Self {
        let meta = a.meta.module.clone().unwrap_or_default();
        let mut roots = SourceRoots::default();
        let here = std::env::current_dir().ok();
        for d in &ctx.opts.source_paths {
            match (d.is_absolute(), &here) {
                (true, _) => roots.push(d, "--source-path"),
                (false, Some(h)) => roots.push(&h.join(d), "--source-path"),
                (false, None) => {}
            }
        }
        if let Ok((f, _)) = ctx.module_copy(&meta) {
            for dir in covmap::compilation_dirs(&f) {
                roots.push_with_parents(Path::new(&dir), "compilation directory");
            }
        }
        if let Some(cwd) = ctx.session.info.cwd_of(a.meta.pid) {
            roots.push_with_parents(Path::new(&cwd), "working directory");
        }
        if let Some(dir) = meta.path.as_deref().and_then(|p| Path::new(p).parent()) {
            roots.push_with_parents(dir, "binary's directory");
        }
        if let Some(h) = &here {
            roots.push_with_parents(h, "current directory");
        }
        Self {
            files: Vec::new(),
            by_name: HashMap::new(),
            len: 0,
            raw: HashMap::new(),
            roots,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn state(&mut self, a: &Artifact) -> Result<State, String> {
        let bytes = a.check_recorded()?;
        let files = bisect::parse(&bytes)
            .map_err(|why| format!("not a readable bisect_ppx coverage file: {why}"))?;
        for f in &files {
            if let Some(&i) = self.by_name.get(&f.name)
                && self.files[i].points != f.points
            {
                return Err(format!(
                    "{} has other points than in the session's first dump of it (another build)",
                    f.name
                ));
            }
        }
        let mut placed = Vec::new();
        for f in files {
            let at = match self.by_name.get(&f.name) {
                Some(&i) => self.files[i].at,
                None => {
                    let at = self.len;
                    self.len += f.points.len();
                    self.by_name.insert(f.name.clone(), self.files.len());
                    self.files.push(PointFile {
                        name: f.name,
                        points: f.points,
                        at,
                    });
                    at
                }
            };
            placed.push((at, f.counts));
        }
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        let raw = self.raw.entry(instance).or_default();
        raw.resize(self.len, 0);
        for (at, counts) in placed {
            for (r, c) in raw[at..].iter_mut().zip(counts) {
                *r = c;
            }
        }
        Ok(State {
            counters: raw.clone(),
            ..State::default()
        })
    }

    /// The label's gains as a coverage file, read as the report reads one. Without `full`, only
    /// the files it gained points in.
    pub fn coverage(&self, gained: &Hits, full: bool) -> Part {
        let counts = dense(gained, self.len);
        let files: Vec<InstrumentedFile> = self
            .files
            .iter()
            .map(|f| InstrumentedFile {
                name: f.name.clone(),
                points: f.points.clone(),
                counts: counts
                    .get(f.at..f.at + f.points.len())
                    .unwrap_or_default()
                    .to_vec(),
            })
            .filter(|f| full || f.counts.iter().any(|&c| c > 0))
            .collect();
        let mut unit = BisectUnit::new(self.roots.clone());
        unit.add(
            Instance {
                pid: 0,
                start: None,
            },
            files,
        );
        Part::of(unit.coverage())
    }
}
