//! Kernel coverage as a source of the report: kcov artifacts (raw buffers) in, kernel source
//! files with line hits, a per-function summary and the session's kernel totals out.
//!
//! A PC's hit count is the number of times it appears in the traces (kcov records a PC each
//! time its basic block runs). Lines and functions come from vmlinux (kernel_image.rs): the
//! lines of a function are those of its kcov points (every PC kcov can record there), and a
//! file's figures count every function of the compilation units the session reached (those it
//! did not reach at 0); without
//! vmlinux, /proc/kallsyms of the same kernel gives the functions only.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use serde::Serialize;

use super::{
    kernel_image::{Kallsyms, KernelImage, find_vmlinux},
    model::{Counts, Coverage, FileCoverage, Function, Totals},
    session::Artifact,
};
use covobs_layout::formats::kcov::{Mode, Trace};

/// One kernel function in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct KernelFunction {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// kcov points in it (None: unknown without vmlinux), and those hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u64>,
    pub points_hit: u64,
    /// Times its PCs were recorded.
    pub hits: u64,
}

/// The kernel part of a report (`summary.json` "kernel").
#[derive(Clone, Debug, Serialize)]
pub struct KernelSummary {
    pub totals: Totals,
    pub artifacts: u64,
    /// Distinct PCs (comparison ips) in the session.
    pub pcs: u64,
    /// Of them, without a function (not in the image's code).
    pub unresolved: u64,
    /// "vmlinux PATH (DWARF)" or "/proc/kallsyms (functions only)".
    pub symbolized_by: String,
    pub kernel_release: Option<String>,
    pub build_id: Option<String>,
    /// Hit functions, most hit first.
    pub functions: Vec<KernelFunction>,
}

/// What `build` produces for the report.
pub struct KernelReport {
    pub coverage: Coverage,
    pub summary: KernelSummary,
    /// Kernel totals after each kcov artifact (by seq), for the timeline.
    pub cumulative: Vec<(u64, Totals)>,
    pub warnings: Vec<String>,
}

/// One kcov artifact, read: PC -> times recorded, and the kernel it comes from.
pub struct KcovTrace {
    pub hits: HashMap<u64, u64>,
    pub build_id: Option<String>,
    pub release: Option<String>,
}

/// Read (and check) one kcov artifact.
pub fn read_trace(a: &Artifact) -> Result<KcovTrace, String> {
    let bytes = a.check_recorded()?;
    // An absent format reads as an empty name: an unknown kcov format.
    let name = &a.meta.format.name;
    let mode =
        Mode::from_format_name(name).ok_or_else(|| format!("unknown kcov format {name:?}"))?;
    let trace = Trace::parse(mode, &bytes).map_err(|e| e.to_string())?;
    let module = a.meta.module.as_ref();
    let mut hits = HashMap::new();
    for pc in trace.pcs() {
        *hits.entry(pc).or_insert(0u64) += 1;
    }
    Ok(KcovTrace {
        hits,
        build_id: module.and_then(|m| m.build_id.clone()),
        release: module
            .and_then(|m| m.producer.as_ref())
            .and_then(|p| p.strip_prefix("Linux "))
            .map(str::to_owned),
    })
}

/// The kcov artifacts of a session, read.
#[derive(Default)]
pub struct KernelSource {
    /// (seq, PC -> times recorded), in the order added.
    artifacts: Vec<(u64, HashMap<u64, u64>)>,
    build_id: Option<String>,
    release: Option<String>,
}

impl KernelSource {
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty()
    }

    /// Take one kcov artifact; `Err` is why it is left out.
    pub fn add(&mut self, a: &Artifact) -> Result<(), String> {
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
        self.artifacts.push((a.meta.seq, t.hits));
        Ok(())
    }

    /// The kernel coverage of `hits` alone (PC -> times recorded), as one artifact of that
    /// kernel.
    pub fn of_hits(
        build_id: Option<String>,
        release: Option<String>,
        hits: HashMap<u64, u64>,
    ) -> Self {
        Self {
            artifacts: vec![(0, hits)],
            build_id,
            release,
        }
    }

    fn all_hits(&self) -> HashMap<u64, u64> {
        let mut all = HashMap::new();
        for (_, c) in &self.artifacts {
            for (pc, n) in c {
                *all.entry(*pc).or_insert(0) += n;
            }
        }
        all
    }

    /// Symbolize and lay out. Falls back to kallsyms (functions) without vmlinux; with neither,
    /// an error (the artifacts are then left out).
    pub fn build(&self, vmlinux: Option<&Path>) -> Result<KernelReport, String> {
        let hits = self.all_hits();
        let found = find_vmlinux(vmlinux, self.build_id.as_deref(), self.release.as_deref());
        match found.and_then(|p| KernelImage::open(&p)) {
            Ok(image) => self.with_image(&image, &hits),
            Err(why) => self.with_kallsyms(&hits, why),
        }
    }

    fn summary(&self, totals: Totals, pcs: u64, unresolved: u64, by: String) -> KernelSummary {
        KernelSummary {
            totals,
            artifacts: self.artifacts.len() as u64,
            pcs,
            unresolved,
            symbolized_by: by,
            kernel_release: self.release.clone(),
            build_id: self.build_id.clone(),
            functions: Vec::new(),
        }
    }

    fn with_image(
        &self,
        image: &KernelImage,
        hits: &HashMap<u64, u64>,
    ) -> Result<KernelReport, String> {
        let sym = image.symbolizer()?;
        let mut warnings = Vec::new();
        if !sym.has_kcov() {
            warnings.push(format!(
                "{} has no __sanitizer_cov_trace_pc: only the PCs hit are listed, without the lines not reached",
                image.path.display()
            ));
        }
        // PCs by function; then every function of the compilation units reached, so a file's
        // figures count its functions the session did not reach too.
        let mut by_function: BTreeMap<u64, (super::kernel_image::Function<'_>, Vec<u64>)> =
            BTreeMap::new();
        let mut unresolved = 0u64;
        for &pc in hits.keys() {
            match sym.function(pc) {
                Some(f) => by_function
                    .entry(f.start)
                    .or_insert((f, Vec::new()))
                    .1
                    .push(pc),
                None => unresolved += 1,
            }
        }
        let mut units_seen = BTreeSet::new();
        let reached: Vec<u64> = by_function.values().map(|(_, pcs)| pcs[0]).collect();
        for pc in reached {
            let Some(unit_start) = sym.function(pc).map(|f| f.start) else {
                continue;
            };
            if !units_seen.insert(unit_start) {
                continue;
            }
            for f in sym.unit_functions(pc) {
                units_seen.insert(f.start);
                by_function.entry(f.start).or_insert((f, Vec::new()));
            }
        }
        let mut files: BTreeMap<String, FileCoverage> = BTreeMap::new();
        let mut place_of: HashMap<u64, (String, u32)> = HashMap::new();
        let mut functions = Vec::new();
        for (f, pcs) in by_function.values() {
            let mut points: BTreeSet<u64> = sym.kcov_points(f).into_iter().collect();
            let npoints = points.len() as u64;
            // PCs that are not points (comparison ips) are lines too.
            points.extend(pcs.iter().copied());
            let mut fhits = 0u64;
            let mut hit_points = 0u64;
            for &p in &points {
                let n = hits.get(&p).copied().unwrap_or(0);
                if n > 0 {
                    fhits += n;
                    hit_points += 1;
                }
                let Some(place) = sym.place(p) else { continue };
                *files
                    .entry(place.file.clone())
                    .or_insert_with(|| FileCoverage::new(place.file.clone()))
                    .lines
                    .entry(place.line)
                    .or_insert(0) += n;
                place_of.insert(p, (place.file, place.line));
            }
            let entry = sym.function_place(f);
            if let Some(e) = &entry {
                files
                    .entry(e.file.clone())
                    .or_insert_with(|| FileCoverage::new(e.file.clone()))
                    .functions
                    .push(Function {
                        name: f.name.to_owned(),
                        line: e.line,
                        end_line: None,
                        hits: fhits,
                    });
            }
            if fhits > 0 {
                functions.push(KernelFunction {
                    name: f.name.to_owned(),
                    file: entry.as_ref().map(|e| e.file.clone()),
                    line: entry.as_ref().map(|e| e.line),
                    points: Some(npoints),
                    points_hit: hit_points,
                    hits: fhits,
                });
            }
        }
        // Only files the session reached: a header inlined into a function is listed when one of
        // its own points was hit.
        files.retain(|_, f| f.lines.values().any(|&h| h > 0));
        let coverage = Coverage { files };
        let totals = coverage.totals();
        functions.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.name.cmp(&b.name)));
        let cumulative = self.cumulative(&place_of, &coverage, &by_function);
        let mut summary = self.summary(
            totals,
            hits.len() as u64,
            unresolved,
            format!("{} (DWARF)", image.path.display()),
        );
        summary.functions = functions;
        Ok(KernelReport {
            coverage,
            summary,
            cumulative,
            warnings,
        })
    }

    /// Kernel totals after each artifact: lines and functions hit so far, over the final set.
    fn cumulative(
        &self,
        place_of: &HashMap<u64, (String, u32)>,
        coverage: &Coverage,
        by_function: &BTreeMap<u64, (super::kernel_image::Function<'_>, Vec<u64>)>,
    ) -> Vec<(u64, Totals)> {
        let final_totals = coverage.totals();
        let fn_of: HashMap<u64, u64> = by_function
            .iter()
            .flat_map(|(start, (_, pcs))| pcs.iter().map(move |pc| (*pc, *start)))
            .collect();
        let mut lines: BTreeSet<&(String, u32)> = BTreeSet::new();
        let mut funcs: BTreeSet<u64> = BTreeSet::new();
        let mut out = Vec::new();
        for (seq, counts) in &self.artifacts {
            for pc in counts.keys() {
                if let Some(place) = place_of.get(pc)
                    && coverage.files.contains_key(&place.0)
                {
                    lines.insert(place);
                }
                if let Some(f) = fn_of.get(pc) {
                    funcs.insert(*f);
                }
            }
            out.push((
                *seq,
                Totals {
                    lines: Counts::new(lines.len() as u64, final_totals.lines.total),
                    functions: Counts::new(
                        (funcs.len() as u64).min(final_totals.functions.total),
                        final_totals.functions.total,
                    ),
                    branches: Counts::default(),
                    regions: None,
                    points: None,
                },
            ));
        }
        out
    }

    fn with_kallsyms(
        &self,
        hits: &HashMap<u64, u64>,
        no_vmlinux: String,
    ) -> Result<KernelReport, String> {
        let running = covobs_layout::kernel::KernelInfo::running();
        let same = match (&self.build_id, &running.build_id) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        let kallsyms = same
            .then(Kallsyms::running)
            .flatten()
            .ok_or_else(|| format!("{no_vmlinux}; and /proc/kallsyms is not the same kernel's"))?;
        let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut unresolved = 0;
        for (&pc, &n) in hits {
            match kallsyms.function(pc) {
                Some((name, _)) => {
                    let e = by_name.entry(name).or_default();
                    e.0 += 1;
                    e.1 += n;
                }
                None => unresolved += 1,
            }
        }
        let mut functions: Vec<KernelFunction> = by_name
            .into_iter()
            .map(|(name, (pcs, n))| KernelFunction {
                name: name.to_owned(),
                file: None,
                line: None,
                points: None,
                points_hit: pcs,
                hits: n,
            })
            .collect();
        functions.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.name.cmp(&b.name)));
        let mut summary = self.summary(
            Totals::default(),
            hits.len() as u64,
            unresolved,
            "/proc/kallsyms (functions only)".into(),
        );
        summary.functions = functions;
        Ok(KernelReport {
            coverage: Coverage::default(),
            cumulative: self
                .artifacts
                .iter()
                .map(|(seq, _)| (*seq, Totals::default()))
                .collect(),
            summary,
            warnings: vec![format!("kernel coverage by function only: {no_vmlinux}")],
        })
    }
}
