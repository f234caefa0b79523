//! SanitizerCoverage for labels: a module's counters are its edges (the PC table, then PCs
//! outside it as they appear); hit maps are keyed by the edges' module-relative PCs. A
//! `.sancov` file (with, for snapshots, its counters map) is a state of its instance's edges,
//! read and symbolized as the report does (report/sancov.rs).
use std::path::Path;

use super::{
    compute::Hits,
    source::{Ctx, Part, State, dense},
};
use covobs_layout::formats::sancov::parse_sancov;

use crate::{
    sancov::SancovUnit,
    session::{Artifact, MAX_ARTIFACT_BYTES},
    session_dir::SessionFileError,
};

pub struct SancovSource {
    unit: SancovUnit,
}

impl SancovSource {
    pub fn open(ctx: &Ctx<'_>, a: &Artifact) -> Result<Self, String> {
        let meta = a.meta.module.clone().unwrap_or_default();
        let (file, copy) = ctx.module_copy(&meta)?;
        let shown = ctx.session.dir.join(copy);
        Ok(Self {
            unit: SancovUnit::open(&file, &shown)?,
        })
    }

    pub fn len(&self) -> usize {
        self.unit.len()
    }

    pub fn pc(&self, index: u64) -> u64 {
        usize::try_from(index).map_or(0, |i| self.unit.pc(i))
    }

    pub fn state(&mut self, ctx: &mut Ctx<'_>, a: &Artifact) -> Result<State, String> {
        let bytes = a.check_recorded()?;
        let pcs = parse_sancov(&bytes).ok_or("not a 64-bit .sancov file")?;
        // A snapshot's counters map: `<seq>-sancov.counters` beside it.
        let map = Path::new(&a.rel).with_extension("counters");
        let buckets = match ctx.dir.read(&map, None, MAX_ARTIFACT_BYTES) {
            Ok(b) => Some(b),
            Err(SessionFileError::Missing) => None,
            Err(e) => return Err(format!("its counters map {}: {e}", map.display())),
        };
        Ok(State {
            counters: self.unit.state(&pcs, buckets.as_deref())?,
            ..State::default()
        })
    }

    pub fn coverage(&self, gained: &Hits) -> Part {
        Part::of(self.unit.coverage_of(&dense(gained, self.len())))
    }
}
