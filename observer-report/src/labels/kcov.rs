//! kcov (kernel coverage of a thread) for labels. A kcov artifact holds the PCs its thread's
//! kernel work recorded since the previous one (not a cumulative state): per process instance
//! they add up into its state. A module's counters are the PCs as they appear; hit maps are
//! keyed by kernel PC. A label's gains are symbolized as the report symbolizes kernel coverage
//! (report/kcov.rs: vmlinux with DWARF, else /proc/kallsyms for functions).
use std::collections::HashMap;

use super::{
    compute::Hits,
    source::{CoverageCtx, Part, State},
};
use crate::{
    kcov::{KernelSource, read_trace},
    session::Artifact,
    tally::Instance,
};

#[derive(Default)]
pub struct KcovSource {
    pcs: Vec<u64>,
    by_pc: HashMap<u64, usize>,
    /// Per instance, what its artifacts recorded so far.
    sums: HashMap<Instance, Vec<u64>>,
    build_id: Option<String>,
    release: Option<String>,
}

impl KcovSource {
    pub fn len(&self) -> usize {
        self.pcs.len()
    }

    pub fn pc(&self, index: u64) -> u64 {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.pcs.get(i))
            .copied()
            .unwrap_or(0)
    }

    pub fn state(&mut self, a: &Artifact) -> Result<State, String> {
        let t = read_trace(a)?;
        match (&self.build_id, &t.build_id) {
            (Some(have), Some(new)) if have != new => {
                return Err(format!(
                    "it comes from another kernel (build id {new}, the session's first kcov artifact has {have})"
                ));
            }
            (None, Some(_)) => self.build_id = t.build_id.clone(),
            _ => {}
        }
        if self.release.is_none() {
            self.release = t.release;
        }
        let mut hits: Vec<(u64, u64)> = t.hits.into_iter().collect();
        hits.sort_unstable();
        for &(pc, _) in &hits {
            if !self.by_pc.contains_key(&pc) {
                self.by_pc.insert(pc, self.pcs.len());
                self.pcs.push(pc);
            }
        }
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        let sum = self.sums.entry(instance).or_default();
        sum.resize(self.pcs.len(), 0);
        for (pc, n) in hits {
            if let Some(s) = self.by_pc.get(&pc).and_then(|&i| sum.get_mut(i)) {
                *s = s.saturating_add(n);
            }
        }
        Ok(State {
            counters: sum.clone(),
            ..State::default()
        })
    }

    pub fn coverage(&self, ctx: &CoverageCtx<'_>, gained: &Hits) -> Result<Part, String> {
        let hits: HashMap<u64, u64> = gained
            .iter()
            .map(|(&i, &n)| (self.pc(i), n))
            .filter(|(_, n)| *n > 0)
            .collect();
        let k = KernelSource::of_hits(self.build_id.clone(), self.release.clone(), hits)
            .build(ctx.opts.vmlinux.as_deref())?;
        Ok(Part::of(k.coverage))
    }
}
