//! SanitizerCoverage artifacts in the live engine: a `.sancov` file (and, for snapshots, the
//! counters map beside it) is a state of its process instance's edges ([`SancovUnit`]); the
//! unit's whole coverage after it goes through the ordered queue like gcov's.
use std::path::Path;

use super::{Job, LiveCoverage, Progress, UnitState};
use covobs_layout::formats::sancov::parse_sancov;

use crate::{
    sancov::SancovUnit,
    session::{Artifact, MAX_ARTIFACT_BYTES, ModuleMeta},
    tally::Instance,
};

impl LiveCoverage {
    pub(super) fn open_sancov(&self, meta: &ModuleMeta) -> Result<UnitState, String> {
        let (file, shown) = self.module_binary(meta)?;
        let unit = SancovUnit::open(&file, &shown)?;
        Ok(UnitState::Sancov(Box::new(unit)))
    }

    pub(super) fn dispatch_sancov(&mut self, a: &Artifact) -> (Option<Progress>, Vec<Job>) {
        let bytes = match a.check_recorded() {
            Ok(b) => b,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let Some(pcs) = parse_sancov(&bytes) else {
            let reason = "not a 64-bit .sancov file".to_string();
            return (self.exclude(a, reason), Vec::new());
        };
        // A snapshot's counters map: `<seq>-sancov.counters` beside it.
        let map = Path::new(&a.rel).with_extension("counters");
        let buckets = match self.dir.read(&map, None, MAX_ARTIFACT_BYTES) {
            Ok(b) => Some(b),
            Err(crate::session_dir::SessionFileError::Missing) => None,
            Err(e) => {
                let reason = format!("its counters map {}: {e}", map.display());
                return (self.exclude(a, reason), Vec::new());
            }
        };
        let idx = self.unit_for(a, None);
        let unit = &mut self.units[idx];
        let UnitState::Sancov(s) = &mut unit.state else {
            return self.unavailable(a, idx);
        };
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        if let Err(why) = s.add(instance, &pcs, buckets.as_deref()) {
            return (self.exclude(a, why), Vec::new());
        }
        let cov = s.coverage();
        unit.artifacts += 1;
        self.apply_own(idx, cov, a)
    }
}
