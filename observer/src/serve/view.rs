//! What the live page is sent: the session's summary (totals, coverage over time, files,
//! modules) after each refresh, and one file's lines on request. Built from the same
//! [`ReportData`] the HTML report is written from.
use serde::Serialize;

use crate::report::{
    Excluded, Totals,
    html::{common_prefix, display_name, read_source},
    model::FileCoverage,
    summary::{ModuleSummary, ReportData},
};

/// At most this many timeline points are sent (evenly picked, the last always): a day-long
/// session has tens of thousands, a chart shows a few hundred.
pub const MAX_POINTS: usize = 1500;

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing collected yet.
    Waiting,
    /// Artifacts arrive; no session.json yet (its writer writes it last).
    Running,
    /// session.json is there: the attach or run ended.
    Finished,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub pid: i64,
    pub comm: String,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub index: usize,
    pub seq: u64,
    pub pid: u32,
    pub runtime: String,
    pub module: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Seconds since the first point's dump ended (None when a point has no time).
    pub t: Option<f64>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct FileRow {
    pub path: String,
    /// Without the prefix every path shares.
    pub shown: String,
    pub language: &'static str,
    pub modules: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The page's data after one refresh (`/api/summary`, and each server-sent `update`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Grows with each refresh that changed something.
    pub version: u64,
    pub covobs_version: &'static str,
    pub dir: String,
    pub state: State,
    pub command: Option<String>,
    pub targets: Vec<Target>,
    pub artifacts: usize,
    pub reported: usize,
    pub totals: Totals,
    /// Points sent (at most [`MAX_POINTS`]) and how many the session has.
    pub timeline: Vec<Point>,
    pub timeline_points: usize,
    pub prefix: String,
    pub files: Vec<FileRow>,
    pub modules: Vec<ModuleSummary>,
    pub excluded: Vec<Excluded>,
    pub warnings: Vec<String>,
    /// When this refresh was made (Unix milliseconds).
    pub updated_unix_ms: u64,
    /// The last refresh failed: why (the data shown is from the one before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Indices of at most `max` of `n` points, evenly spread, first and last included.
pub fn pick(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    if max < 2 {
        return (n - max..n).collect();
    }
    let step = (n - 1) as f64 / (max - 1) as f64;
    let mut out: Vec<usize> = (0..max)
        .map(|i| (i as f64 * step).round() as usize)
        .collect();
    out.dedup();
    out
}

impl Summary {
    pub fn of(
        d: &ReportData,
        dir: &str,
        state: State,
        version: u64,
        extra_warnings: &[String],
    ) -> Self {
        let first = d.timeline.first().and_then(|p| p.end_ns);
        let timeline = pick(d.timeline.len(), MAX_POINTS)
            .into_iter()
            .map(|i| {
                let p = &d.timeline[i];
                Point {
                    index: p.index,
                    seq: p.seq,
                    pid: p.pid,
                    runtime: p.runtime.clone(),
                    module: p.module.clone(),
                    trigger: p.trigger.clone(),
                    t: match (first, p.end_ns) {
                        (Some(f), Some(e)) => Some(e.saturating_sub(f) as f64 / 1e9),
                        _ => None,
                    },
                    totals: p.totals,
                }
            })
            .collect();
        let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
        let prefix = common_prefix(&paths);
        let files = d
            .files
            .iter()
            .map(|f| FileRow {
                shown: f.path.strip_prefix(&prefix).unwrap_or(&f.path).to_string(),
                path: f.path.clone(),
                language: f.language,
                modules: f.modules.clone(),
                totals: f.totals,
            })
            .collect();
        // The report engine repeats a warning each time it builds (kernel symbolization).
        let mut warnings: Vec<String> = Vec::new();
        for w in d
            .warnings
            .iter()
            .map(|w| w.to_string())
            .chain(extra_warnings.iter().cloned())
        {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        Self {
            version,
            covobs_version: env!("CARGO_PKG_VERSION"),
            dir: dir.to_string(),
            state,
            command: d.session.command(),
            targets: d
                .session
                .targets()
                .into_iter()
                .map(|(pid, comm, _)| Target { pid, comm })
                .collect(),
            artifacts: d.artifacts,
            reported: d.reported(),
            totals: d.totals,
            timeline,
            timeline_points: d.timeline.len(),
            prefix,
            files,
            modules: d.modules.clone(),
            excluded: d.excluded.clone(),
            warnings,
            updated_unix_ms: d.generated_unix_ns / 1_000_000,
            error: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Function {
    pub name: String,
    /// As the producer names it (mangled).
    pub symbol: String,
    pub line: u32,
    pub hits: u64,
}

#[derive(Debug, Serialize)]
pub struct Line {
    pub n: u32,
    /// Times it ran; None for a line without code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    /// Branches taken and branches, when the line has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<[u64; 2]>,
    pub code: String,
}

/// One file's lines (`/api/file?path=`).
#[derive(Debug, Serialize)]
pub struct FileView {
    pub version: u64,
    pub path: String,
    pub shown: String,
    pub modules: Vec<String>,
    /// Not flattened as elsewhere: `lines` and `functions` are the file's lists here.
    pub totals: Totals,
    pub functions: Vec<Function>,
    /// Why the source is not shown (then `lines` are those with coverage data, without code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_missing: Option<String>,
    pub lines: Vec<Line>,
}

/// A source for the live view: as the report reads it, and only when everyone may read it, as
/// any user of the machine can open a loopback page (the report also shows the sudo user's own).
fn served_source(path: &str) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.mode() & 0o004 == 0 {
        return Err(
            "not readable by everyone, and any user of this machine can open the live view".into(),
        );
    }
    read_source(path)
}

impl FileView {
    /// The file of the report named `path`, or None when the report has no such file (only
    /// files in the coverage data are ever read). Reads the source: blocking.
    pub fn of(d: &ReportData, path: &str, version: u64) -> Option<Self> {
        let f = d.files.iter().find(|f| f.path == path)?;
        let empty = FileCoverage::new(path);
        let cov = d.coverage.files.get(path).unwrap_or(&empty);
        let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
        let prefix = common_prefix(&paths);
        let mut functions: Vec<Function> = cov
            .functions
            .iter()
            .map(|f| Function {
                name: display_name(&f.name),
                symbol: f.name.clone(),
                line: f.line,
                hits: f.hits,
            })
            .collect();
        functions.sort_by(|a, b| (a.line, &a.name).cmp(&(b.line, &b.name)));
        let branches = cov.branches_by_line();
        let line = |n: u32, code: &str| Line {
            n,
            hits: cov.lines.get(&n).copied(),
            branches: branches.get(&n).map(|c| [c.hit, c.total]),
            code: code.to_string(),
        };
        let (lines, source_missing) = match served_source(path) {
            Ok(text) => {
                let text_lines: Vec<&str> = text.lines().collect();
                let last = cov.lines.keys().next_back().copied().unwrap_or(0) as usize;
                let n = text_lines.len().max(last);
                let lines = (0..n)
                    .map(|i| line(i as u32 + 1, text_lines.get(i).copied().unwrap_or("")))
                    .collect();
                (lines, None)
            }
            Err(why) => (cov.lines.keys().map(|&n| line(n, "")).collect(), Some(why)),
        };
        Some(Self {
            version,
            path: f.path.clone(),
            shown: f.path.strip_prefix(&prefix).unwrap_or(&f.path).to_string(),
            modules: f.modules.clone(),
            totals: f.totals,
            functions,
            source_missing,
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_evenly_with_first_and_last() {
        assert_eq!(pick(3, 10), vec![0, 1, 2]);
        assert_eq!(pick(0, 10), Vec::<usize>::new());
        let p = pick(10_000, 1500);
        assert_eq!(p.len(), 1500);
        assert_eq!(p.first(), Some(&0));
        assert_eq!(p.last(), Some(&9999));
        assert!(p.windows(2).all(|w| w[1] > w[0]));
    }
}
