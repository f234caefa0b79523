//! What labels add to `report/` (docs/output.md, "Labels"): labels.json, labels/lines.json, the
//! hit maps labels/hits-<build id>.bin; and one label's own report (`covobs report DIR --label
//! NAME`) under report/labels/<NAME>/.
use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    LabelError, analysis,
    compute::Attribution,
    hitmap,
    runtime::{Keys, Runtime},
};
use crate::{
    Format, ReportOptions, ReportSummary, Warning, html, lcov,
    output::create,
    session::Session,
    summary::{FileFigures, ReportData, SummaryFile},
};

/// The labels listed per line in lines.json (and the HTML): the first few, then a count.
pub const LINE_LABELS: usize = 8;

#[derive(Serialize)]
struct LabelsFile<'a> {
    version: u32,
    labels: Vec<LabelEntry<'a>>,
    modules: Vec<ModuleEntry>,
    /// What is not attributed to labels, and why.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

#[derive(Serialize)]
struct LabelEntry<'a> {
    name: &'a str,
    /// Its position in closing order (1 = closed first).
    index: usize,
    /// Times it was closed (a name closed again adds up).
    closed: u64,
    artifacts: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    lost: &'a [String],
    /// Labels closed by one of the same states (their requests shared a dump): that state's
    /// gains went to the first of them in closing order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shares_state_with: Vec<&'a str>,
    /// Counters that gained hits, and the hits gained.
    counters: u64,
    hits: u64,
    lines: usize,
    functions: usize,
    regions: usize,
    /// Reached by this label and by no label closed before it.
    new_lines: usize,
    new_functions: usize,
    new_regions: usize,
}

#[derive(Serialize)]
struct ModuleEntry {
    name: String,
    runtime: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_id: Option<String>,
    /// Its counters (gcov arcs, bisect points, sancov edges, kernel PCs seen).
    counters: usize,
    /// What its hit maps' indices are: "counter", "pc" (module-relative), "kernel_pc".
    keys: &'static str,
    /// Relative to report/.
    hits: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize)]
struct LinesFile<'a> {
    version: u32,
    /// file -> line -> the labels that reached it.
    files: BTreeMap<&'a str, BTreeMap<u32, LineEntry<'a>>>,
}

#[derive(Serialize, Default)]
struct LineEntry<'a> {
    /// How many labels reached it.
    count: usize,
    /// The first of them, in closing order (at most [`LINE_LABELS`]).
    labels: Vec<&'a str>,
}

/// The file name of a module's hit maps.
/// LLVM's by build id alone; the other runtimes' with the runtime first (a binary can have
/// LLVM and bisect_ppx coverage).
pub fn hits_name(runtime: Runtime, build_id: Option<&str>, index: usize) -> String {
    let prefix = match runtime {
        Runtime::Llvm => String::new(),
        Runtime::Gcov | Runtime::Bisect | Runtime::Sancov | Runtime::Kcov => {
            format!("{}-", runtime.name())
        }
    };
    match build_id {
        Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("hits-{prefix}{}.bin", id.to_ascii_lowercase())
        }
        _ => format!("hits-{prefix}module-{index}.bin"),
    }
}

/// Per file and line: how many labels reached it, and the first [`LINE_LABELS`] of them.
pub type LineLabels = BTreeMap<String, BTreeMap<u32, (usize, Vec<String>)>>;

/// Write labels.json, labels/lines.json and the hit maps into `root` (a report being staged).
/// Nothing when the session has no labels. Returns the files written (relative to `root`) and
/// the labels of each line (for the HTML).
pub fn write_into(
    root: &Path,
    a: &Attribution,
    opts: &ReportOptions,
) -> Result<(Vec<PathBuf>, LineLabels), LabelError> {
    if a.labels.is_empty() {
        return Ok((Vec::new(), LineLabels::new()));
    }
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |e: crate::ReportError| LabelError::Write(format!("{}: {e}", p.display()))
    };
    let dir = root.join("labels");
    fs::create_dir_all(&dir).map_err(|e| LabelError::Write(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let mut modules = Vec::new();
    for (i, m) in a.modules.iter().enumerate() {
        let name = hits_name(m.runtime, m.build_id.as_deref(), i);
        let keys = m.runtime.keys();
        let maps = hitmap::HitMaps {
            build_id: m.build_id.clone().unwrap_or_default(),
            keys,
            counters: m.source.len() as u64,
            labels: m
                .gained
                .iter()
                .map(|(&l, hits)| {
                    let hits = match keys {
                        Keys::Counter => hits.clone(),
                        Keys::ModulePc | Keys::KernelPc => {
                            hits.iter().map(|(&i, &h)| (m.source.key(i), h)).collect()
                        }
                    };
                    (a.labels[l].name.clone(), hits)
                })
                .collect(),
        };
        let p = dir.join(&name);
        create(&p, &hitmap::encode(&maps)).map_err(werr(&p))?;
        written.push(PathBuf::from("labels").join(&name));
        modules.push(ModuleEntry {
            name: m.name.clone(),
            runtime: m.runtime.name(),
            build_id: m.build_id.clone(),
            counters: m.source.len(),
            keys: match keys {
                Keys::Counter => "counter",
                Keys::ModulePc => "pc",
                Keys::KernelPc => "kernel_pc",
            },
            hits: format!("labels/{name}"),
            note: m.source.note(),
        });
    }
    let mut seen_lines: HashSet<(String, u32)> = HashSet::new();
    let mut seen_functions: HashSet<(String, String)> = HashSet::new();
    let mut seen_regions: HashSet<(String, u32, u32, u32, u32)> = HashSet::new();
    let mut entries = Vec::new();
    // file -> line -> label indices (the first LINE_LABELS) and count.
    let mut by_line: BTreeMap<String, BTreeMap<u32, (usize, Vec<usize>)>> = BTreeMap::new();
    for (i, l) in a.labels.iter().enumerate() {
        let cov = analysis::label_coverage(a, i, false, opts).map_err(LabelError::Engine)?;
        let lines = cov.lines();
        let functions = cov.functions();
        let new_lines = lines
            .iter()
            .filter(|(f, n)| seen_lines.insert((f.to_string(), *n)))
            .count();
        let new_functions = functions
            .iter()
            .filter(|(f, n)| seen_functions.insert((f.to_string(), n.to_string())))
            .count();
        let new_regions = cov
            .regions
            .iter()
            .filter(|r| seen_regions.insert((*r).clone()))
            .count();
        for (f, n) in &lines {
            let e = by_line
                .entry(f.to_string())
                .or_default()
                .entry(*n)
                .or_default();
            e.0 += 1;
            if e.1.len() < LINE_LABELS {
                e.1.push(i);
            }
        }
        let (mut counters, mut hits) = (0u64, 0u64);
        for m in &a.modules {
            for h in m.gained.get(&i).into_iter().flat_map(|g| g.values()) {
                counters += 1;
                hits = hits.saturating_add(*h);
            }
        }
        entries.push(LabelEntry {
            name: &l.name,
            index: i + 1,
            closed: l.closed,
            artifacts: &l.artifacts,
            lost: &l.lost,
            shares_state_with: a
                .shares
                .get(i)
                .into_iter()
                .flatten()
                .map(|&j| a.labels[j].name.as_str())
                .collect(),
            counters,
            hits,
            lines: lines.len(),
            functions: functions.len(),
            regions: cov.regions.len(),
            new_lines,
            new_functions,
            new_regions,
        });
    }
    let file = LabelsFile {
        version: 1,
        labels: entries,
        modules,
        notes: &a.notes,
    };
    let p = root.join("labels.json");
    create(&p, &json(&file)?).map_err(werr(&p))?;
    written.insert(0, PathBuf::from("labels.json"));
    let lines = LinesFile {
        version: 1,
        files: by_line
            .iter()
            .map(|(f, ls)| {
                let ls = ls
                    .iter()
                    .map(|(n, (count, first))| {
                        let labels = first.iter().map(|&i| a.labels[i].name.as_str()).collect();
                        (
                            *n,
                            LineEntry {
                                count: *count,
                                labels,
                            },
                        )
                    })
                    .collect();
                (f.as_str(), ls)
            })
            .collect(),
    };
    let p = dir.join("lines.json");
    create(&p, &json(&lines)?).map_err(werr(&p))?;
    written.push(PathBuf::from("labels/lines.json"));
    let line_labels = by_line
        .into_iter()
        .map(|(f, ls)| {
            let ls = ls
                .into_iter()
                .map(|(n, (count, first))| {
                    let names = first.iter().map(|&i| a.labels[i].name.clone()).collect();
                    (n, (count, names))
                })
                .collect();
            (f, ls)
        })
        .collect();
    Ok((written, line_labels))
}

fn json(v: &impl Serialize) -> Result<Vec<u8>, LabelError> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| LabelError::Write(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

/// The report data of one label: its coverage as a session report of its own.
pub fn label_data(
    session: &Session,
    a: &Attribution,
    label: usize,
    opts: &ReportOptions,
) -> Result<ReportData, LabelError> {
    let cov = analysis::label_coverage(a, label, true, opts).map_err(LabelError::Engine)?;
    let figures: BTreeMap<String, FileFigures> = cov
        .files
        .iter()
        .map(|(f, t)| {
            let modules = a
                .modules
                .iter()
                .filter(|m| m.source.note().is_none())
                .map(|m| m.name.clone())
                .collect();
            (
                f.clone(),
                FileFigures {
                    totals: *t,
                    modules,
                },
            )
        })
        .collect();
    let warnings = a
        .notes
        .iter()
        .map(|n| Warning {
            module: None,
            message: n.clone(),
        })
        .collect();
    let artifacts = a.labels[label].artifacts.len();
    Ok(ReportData::new(
        session,
        cov.coverage,
        figures,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        warnings,
        artifacts,
    ))
}

/// One label's report files into `root` (a directory being staged), in `formats`; the files
/// written, relative to it.
fn write_label_files(
    root: &Path,
    data: &ReportData,
    formats: &std::collections::BTreeSet<Format>,
) -> Result<Vec<&'static str>, LabelError> {
    let rerr = |e: crate::ReportError| LabelError::Write(e.to_string());
    let mut written = Vec::new();
    if formats.contains(&Format::Lcov) {
        create(
            &root.join("coverage.lcov"),
            lcov::write(&data.coverage).as_bytes(),
        )
        .map_err(rerr)?;
        written.push("coverage.lcov");
    }
    if formats.contains(&Format::Html) {
        html::write(&root.join("html"), data).map_err(rerr)?;
        written.push("html/index.html");
    }
    if formats.contains(&Format::Json) {
        create(&root.join("summary.json"), &json(&SummaryFile::of(data))?).map_err(rerr)?;
        written.push("summary.json");
    }
    Ok(written)
}

/// The per-label reports an earlier report had (`report/labels/<NAME>/` of labels the session
/// still has), written again into `root` (the report being staged) in the formats each had:
/// a plain `covobs report DIR` rebuilds them from the same attribution. A directory of a label
/// the session does not have, or that is a link, is left out (the report replaces report/
/// whole). Returns the files written, relative to `root`, and the labels left out.
pub fn rewrite_label_reports(
    session: &Session,
    a: &Attribution,
    root: &Path,
    opts: &ReportOptions,
) -> Result<(Vec<PathBuf>, Vec<String>), LabelError> {
    let old = session.dir.join("report").join("labels");
    let Ok(entries) = fs::read_dir(&old) else {
        return Ok(Default::default());
    };
    let mut names: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || name.starts_with('.') {
            continue;
        }
        match a.index_of(&name) {
            Some(_) if super::name::check(&name).is_ok() => names.push(name),
            _ => dropped.push(name),
        }
    }
    names.sort();
    let mut written = Vec::new();
    for name in names {
        let dir = old.join(&name);
        let mut formats = std::collections::BTreeSet::new();
        for (file, f) in [
            ("coverage.lcov", Format::Lcov),
            ("html", Format::Html),
            ("summary.json", Format::Json),
        ] {
            if dir.join(file).exists() {
                formats.insert(f);
            }
        }
        if formats.is_empty() {
            dropped.push(name);
            continue;
        }
        let Some(label) = a.index_of(&name) else {
            continue;
        };
        let data = label_data(session, a, label, opts)?;
        let dest = root.join("labels").join(&name);
        fs::create_dir_all(&dest)
            .map_err(|e| LabelError::Write(format!("{}: {e}", dest.display())))?;
        for f in write_label_files(&dest, &data, &formats)? {
            written.push(PathBuf::from("labels").join(&name).join(f));
        }
    }
    Ok((written, dropped))
}

/// `covobs report DIR --label NAME`: report/labels/<NAME>/ with coverage.lcov, summary.json and
/// html/ (as `opts.formats` asks), replacing an earlier one whole.
pub fn write_label_report(
    session: &Session,
    a: &Attribution,
    name: &str,
    opts: &ReportOptions,
) -> Result<ReportSummary, LabelError> {
    let label = a.index_of(name).ok_or_else(|| LabelError::UnknownLabel {
        name: name.to_string(),
        known: a.labels.len(),
    })?;
    if name == "lines.json" || (name.starts_with("hits-") && name.ends_with(".bin")) {
        return Err(LabelError::BadName(format!(
            "label {name:?} has the name of a file of report/labels/: its report cannot go there"
        )));
    }
    let data = label_data(session, a, label, opts)?;
    let parent = session.dir.join("report").join("labels");
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| LabelError::Write(format!("{}: {e}", p.display()))
    };
    // report/ and report/labels/ as every directory of a session: the session's modes.
    for d in [parent.parent().unwrap_or(&parent), parent.as_path()] {
        if !d.is_dir() {
            fs::create_dir(d).map_err(werr(d))?;
            let f = fs::File::open(d).map_err(werr(d))?;
            opts.modes.apply(&f, true).map_err(werr(d))?;
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(".label-")
        .tempdir_in(&parent)
        .map_err(werr(&parent))?;
    let root = staging.path();
    let rerr = |e: crate::ReportError| LabelError::Write(e.to_string());
    let written = write_label_files(root, &data, &opts.formats)?;
    opts.modes
        .apply_tree(root)
        .map_err(|e| LabelError::Write(e.to_string()))?;
    let dest = parent.join(name);
    crate::output::swap_into_place(root, &dest).map_err(rerr)?;
    drop(staging);
    Ok(ReportSummary {
        outputs: written.into_iter().map(|p| dest.join(p)).collect(),
        dir: dest,
        totals: data.totals,
        files: data.files.len(),
        artifacts: data.artifacts,
        reported: data.artifacts,
        excluded: Vec::new(),
        warnings: data.warnings.clone(),
    })
}
