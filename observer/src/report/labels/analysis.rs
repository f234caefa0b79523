//! Per label: its coverage (lines, functions, regions reached) from its gained counters, by
//! covobs' engine, and what it reached for the first time in the session (no label closed
//! before it reached that).
use std::collections::{BTreeMap, HashSet};

use super::compute::Attribution;
use crate::report::{
    engine::mapping::Kind,
    lcov,
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
/// function of the modules, as a report shows them; otherwise only the functions whose counters
/// the label gained (what it reached is the same, and a large module costs what the label ran,
/// not its size).
pub fn label_coverage(a: &Attribution, label: usize, full: bool) -> Result<LabelCoverage, String> {
    let mut out = LabelCoverage::default();
    for m in &a.modules {
        // Modules no label gained anything in add nothing but their zero lines.
        if m.gained.is_empty() || (!full && !m.gained.contains_key(&label)) {
            continue;
        }
        let mc = match full {
            true => m.coverage(label),
            false => m.reached_coverage(label),
        };
        let Some(mc) = mc else {
            continue;
        };
        let (detail, files) = match mc.detail_with_summary() {
            Some(both) => both,
            None => {
                let (text, files) = mc.lcov_with_summary();
                let detail = lcov::parse(&text, "covobs' engine").map_err(|e| e.to_string())?;
                (detail, files)
            }
        };
        out.coverage.merge(&detail);
        for (f, t) in files {
            out.files.entry(f).or_default().add(&t);
        }
        if !m.gained.contains_key(&label) {
            continue;
        }
        for f in &mc.functions {
            for r in &f.regions {
                if r.count == 0 || r.region.kind != Kind::Code {
                    continue;
                }
                let Some(file) = f.filenames.get(r.region.file_id as usize) else {
                    continue;
                };
                let g = r.region;
                out.regions.insert((
                    file.to_string(),
                    g.line_start,
                    g.col_start,
                    g.line_end,
                    g.col_end,
                ));
            }
        }
    }
    Ok(out)
}
