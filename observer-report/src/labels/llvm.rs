//! LLVM source-based coverage for labels: the module's profile layout (from the session's
//! copy of it) reads each raw profile's counters; covobs' engine turns a label's gains into its
//! coverage (regions too).
use std::{collections::HashSet, path::Path, sync::Arc};

use super::{
    compute::Hits,
    source::{Ctx, Part, State, dense},
};
use crate::{
    engine::{
        Engine,
        coverage::{ModuleCoverage, ProfileCounts, function_records},
        mapping::{Kind, Mapping},
        profile::ModuleProfile,
    },
    lcov,
    llvm_tools::{Need, Toolsets, read_elf_notes},
    session::{Artifact, MAX_MODULE_BYTES},
};

pub struct LlvmSource {
    pub profile: Arc<ModuleProfile>,
    /// The engine for its coverage; None when it cannot read the module's mapping (`note`).
    pub engine: Option<Arc<Engine>>,
    pub note: Option<String>,
}

impl LlvmSource {
    pub fn open(ctx: &mut Ctx<'_>, a: &Artifact) -> Result<Self, String> {
        let meta = a.meta.module.clone().unwrap_or_default();
        let first = a.check_recorded()?;
        let copy = meta.copy.as_deref().ok_or("no module copy was recorded")?;
        // Checked as a path inside the session.
        let (file, _) = ctx.module_copy(&meta)?;
        let elf = ctx
            .dir
            .read(Path::new(copy), None, MAX_MODULE_BYTES)
            .map_err(|e| format!("the module copy {copy}: {e}"))?;
        let version = crate::engine::profile::readable_version(&first)?;
        let profile = ModuleProfile::from_elf(&elf, version)?;
        let major = match meta.llvm_major {
            Some(m) => Some(m),
            None => {
                let (comments, _) = read_elf_notes(&file, Path::new(copy)).unwrap_or_default();
                let dirs = &ctx.opts.tool_dirs;
                let tools = ctx.tools.get_or_insert_with(|| Toolsets::discover(dirs));
                Need::resolve(None, meta.producer.as_deref(), &comments, tools).major
            }
        };
        let (engine, note) = match major.map(|m| Engine::open(&elf, m)) {
            Some(Ok(e)) => (Some(Arc::new(e)), None),
            Some(Err(why)) => (None, Some(why)),
            None => (
                None,
                Some("the LLVM that built it is not known".to_string()),
            ),
        };
        Ok(Self {
            profile: Arc::new(profile),
            engine,
            note,
        })
    }

    pub fn state(&mut self, ctx: &mut Ctx<'_>, a: &Artifact) -> Result<State, String> {
        let bytes = a.check_recorded()?;
        let state = self.profile.read(&bytes)?;
        let merged = match ctx.merged_base(a)? {
            Some(b) => Some(
                self.profile
                    .read(&b)
                    .map_err(|why| format!("the profile it merged: {why}"))?
                    .counters,
            ),
            None => None,
        };
        Ok(State {
            counters: state.counters,
            bits: state.bits,
            merged,
        })
    }

    /// The label's coverage: with `full`, of the whole module; otherwise of only the functions
    /// whose counters it gained (what it reached is the same, and a large module costs what the
    /// label ran, not its size).
    pub fn coverage(&self, gained: &Hits, full: bool) -> Result<Option<Part>, String> {
        let Some(engine) = &self.engine else {
            return Ok(None);
        };
        let counts = dense(gained, self.profile.num_counters);
        let mc = match full {
            true => engine.coverage(&self.profile, &counts),
            false => self.reached(engine, gained, &counts),
        };
        let (detail, files) = match mc.detail_with_summary() {
            Some(both) => both,
            None => {
                let (text, files) = mc.lcov_with_summary();
                let detail = lcov::parse(&text, "covobs' engine").map_err(|e| e.to_string())?;
                (detail, files)
            }
        };
        let mut regions = Vec::new();
        for f in &mc.functions {
            for r in &f.regions {
                if r.count == 0 || r.region.kind != Kind::Code {
                    continue;
                }
                let Some(file) = f.filenames.get(r.region.file_id as usize) else {
                    continue;
                };
                let g = r.region;
                regions.push((
                    file.to_string(),
                    g.line_start,
                    g.col_start,
                    g.line_end,
                    g.col_end,
                ));
            }
        }
        Ok(Some(Part {
            detail,
            files,
            regions,
        }))
    }

    fn reached(&self, engine: &Engine, gained: &Hits, counts: &[u64]) -> ModuleCoverage {
        // The functions (by name and hash) whose counter ranges hold a gained counter.
        let mut keys: HashSet<(u64, u64)> = HashSet::new();
        let idx: Vec<u64> = gained.keys().copied().collect();
        for f in &self.profile.functions {
            let (lo, hi) = (f.counters.start as u64, f.counters.end as u64);
            let first = idx.partition_point(|&i| i < lo);
            if idx.get(first).is_some_and(|&i| i < hi) {
                keys.insert((f.name_ref, f.func_hash));
            }
        }
        let mapping = Mapping {
            version: engine.mapping.version,
            functions: engine
                .mapping
                .functions
                .iter()
                .filter(|f| keys.contains(&(f.name_ref, f.func_hash)))
                .cloned()
                .collect(),
        };
        let counts = ProfileCounts::new(&self.profile.functions, counts, true);
        ModuleCoverage::new(function_records(&mapping, &counts), engine.flavor)
    }
}
