//! Per label: its coverage (lines, functions, regions reached) from its gained counters, by
//! covobs' engine, and what it reached for the first time in the session (no label closed
//! before it reached that).
use std::collections::{BTreeMap, HashSet};

use super::{
    compute::{Attribution, Hits},
    source::CoverageCtx,
};
use crate::{
    ReportOptions,
    model::{Coverage, Totals},
};

/// One label's coverage, all modules together.
#[derive(Clone, Debug, Default)]
pub struct LabelCoverage {
    pub coverage: Coverage,
    /// Per-file figures (the engine's; a file in two modules adds up).
    pub files: BTreeMap<String, Totals>,
    /// Regions with a count (code regions: file, start and end).
    pub regions: HashSet<(String, u32, u32, u32, u32)>,
}

impl LabelCoverage {
    pub fn lines(&self) -> HashSet<(&str, u32)> {
        self.coverage
            .files
            .values()
            .flat_map(|f| {
                f.lines
                    .iter()
                    .filter(|(_, h)| **h > 0)
                    .map(|(l, _)| (f.path.as_str(), *l))
            })
            .collect()
    }

    pub fn functions(&self) -> HashSet<(&str, &str)> {
        self.coverage
            .files
            .values()
            .flat_map(|f| {
                f.functions
                    .iter()
                    .filter(|x| x.hits > 0)
                    .map(|x| (f.path.as_str(), x.name.as_str()))
            })
            .collect()
    }
}

/// The coverage of label `label` (an index into `a.labels`). With `full`, every line and
/// function of the modules, as a report shows them; otherwise at least what the label reached
/// (what it reached is the same, and a large module costs what the label ran, not its size).
pub fn label_coverage(
    a: &Attribution,
    label: usize,
    full: bool,
    opts: &ReportOptions,
) -> Result<LabelCoverage, String> {
    let ctx = CoverageCtx { opts };
    let mut out = LabelCoverage::default();
    let none = Hits::new();
    for m in &a.modules {
        // Modules no label gained anything in add nothing but their zero lines.
        if m.gained.is_empty() || (!full && !m.gained.contains_key(&label)) {
            continue;
        }
        let gained = m.gained.get(&label).unwrap_or(&none);
        let part = m
            .source
            .coverage(&ctx, gained, full)
            .map_err(|why| format!("{} module {}: {why}", m.runtime.name(), m.name))?;
        let Some(part) = part else {
            continue;
        };
        out.coverage.merge(&part.detail);
        for (f, t) in part.files {
            out.files.entry(f).or_default().add(&t);
        }
        out.regions.extend(part.regions);
    }
    Ok(out)
}
