//! The report stage: a session directory (docs/output.md) in, `report/` out - merged LCOV,
//! summary.json, timeline.json, an HTML report and Cobertura XML.
//!
//! - [`generate`] rebuilds `report/` from a session directory (`covobs report DIR`).
//! - [`LiveCoverage`] takes artifacts one at a time as `covobs attach` collects them, gives the
//!   session's coverage after each ("lines 63.2%"), and writes the same report at the end
//!   ([`LiveCoverage::finish`]) without merging again what it merged already.
//!
//! Coverage from every runtime is turned into one model ([`model`]): LLVM source-based coverage
//! through llvm-profdata/llvm-cov of the LLVM major that built each module ([`llvm_tools`]),
//! gcov coverage through the gcov of the GCC that wrote it ([`gcov`]), bisect_ppx (OCaml)
//! coverage by mapping its points onto the sources' lines ([`bisect`]; bisect-ppx-report's own
//! HTML and Cobertura are written beside, [`bisect_report`]), SanitizerCoverage PCs through the
//! module's DWARF ([`sancov`]). Kernel (kcov) coverage is a further source of the same model.
//! Counts follow one model for every runtime ([`tally`]).
//!
//! Nothing partial is left behind: the report is written to a temporary directory inside the
//! session and swapped into place.
use std::{collections::BTreeSet, fmt, path::PathBuf, str::FromStr};

pub mod bisect;
pub mod bisect_report;
pub mod chart;
pub mod cobertura;
pub mod covmap;
pub mod diff;
pub mod engine;
pub mod error;
pub mod gcda;
pub mod gcov;
pub mod gcov_tally;
pub mod html;
pub mod kcov;
pub mod kernel_image;
pub mod labels;
pub mod lcov;
pub mod live;
pub mod llvm;
pub mod llvm_tools;
pub mod model;
pub mod output;
pub mod profraw;
pub mod programs;
pub mod sancov;
pub mod session;
pub mod session_dir;
pub mod summary;
pub mod tally;
pub mod timeline;

pub use error::{Excluded, ReportError, Warning};
pub use live::{LiveCoverage, Progress};
pub use model::{Counts, Totals};
pub use timeline::TimelinePoint;

/// A report format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// report/coverage.lcov
    Lcov,
    /// report/html/index.html and the per-file pages beside it
    Html,
    /// report/coverage.cobertura.xml
    Cobertura,
    /// report/summary.json and report/timeline.json
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Lcov, Format::Html, Format::Cobertura, Format::Json];
}

impl FromStr for Format {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lcov" => Ok(Self::Lcov),
            "html" => Ok(Self::Html),
            "cobertura" | "xml" => Ok(Self::Cobertura),
            "json" => Ok(Self::Json),
            _ => Err(ReportError::UnknownFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lcov => "lcov",
            Self::Html => "html",
            Self::Cobertura => "cobertura",
            Self::Json => "json",
        })
    }
}

/// How to report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub formats: BTreeSet<Format>,
    /// Directories holding llvm-profdata and llvm-cov to consider before the machine's own.
    pub tool_dirs: Vec<PathBuf>,
    /// Worker threads for the exports (default: one per CPU).
    pub jobs: Option<usize>,
    /// Directories bisect_ppx's relative source names may start from (`--source-path`), tried
    /// before those covobs finds itself (see [`bisect`]).
    pub source_paths: Vec<PathBuf>,
    /// The kernel image (with DWARF) for kcov artifacts; default: found by their build id.
    pub vmlinux: Option<PathBuf>,
    /// The modes (and group) of report/ and all in it.
    pub modes: covobs_layout::modes::OutputModes,
    /// LLVM coverage from llvm-profdata and llvm-cov instead of covobs' engine (`--llvm-cov`).
    pub llvm_cov: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            modes: Default::default(),
            formats: Format::ALL.into_iter().collect(),
            tool_dirs: Vec::new(),
            jobs: None,
            source_paths: Vec::new(),
            vmlinux: None,
            llvm_cov: false,
        }
    }
}

/// What a report came to, for printing.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    /// The `report/` directory.
    pub dir: PathBuf,
    pub totals: Totals,
    pub files: usize,
    /// Artifacts in the session.
    pub artifacts: usize,
    /// Artifacts whose coverage is in the report.
    pub reported: usize,
    pub excluded: Vec<Excluded>,
    pub warnings: Vec<Warning>,
    /// The files written, main entry points first (coverage.lcov, html/index.html, ...).
    pub outputs: Vec<PathBuf>,
}

impl ReportSummary {
    /// A few lines for the terminal: what went in, the totals, where the files are.
    pub fn render(&self) -> String {
        let mut s = format!(
            "covobs: report of {} artifact{} ({} reported, {} left out), {} source file{}\n  {}\n",
            self.artifacts,
            if self.artifacts == 1 { "" } else { "s" },
            self.reported,
            self.excluded.len(),
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.totals.describe()
        );
        for p in &self.outputs {
            s.push_str(&format!("  {}\n", p.display()));
        }
        s
    }
}

/// Rebuild `<session_dir>/report/` from the session's artifacts.
///
/// Bad input (no such directory, not a session, a session.json that is not what docs/output.md
/// says) is an error for which [`ReportError::is_bad_input`] is true; artifacts that cannot be
/// reported (their metadata or their bytes are bad) are left out with a reason
/// ([`ReportSummary::excluded`]) and missing tools are warnings: the report goes on.
pub fn generate(
    session_dir: &std::path::Path,
    opts: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    // Check the directory before anything is created for it.
    session::Session::open(session_dir)?;
    LiveCoverage::new(session_dir, opts)?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!("lcov".parse::<Format>().ok(), Some(Format::Lcov));
        assert_eq!(" HTML ".parse::<Format>().ok(), Some(Format::Html));
        assert_eq!("cobertura".parse::<Format>().ok(), Some(Format::Cobertura));
        assert_eq!("json".parse::<Format>().ok(), Some(Format::Json));
        let e = "pdf".parse::<Format>().expect_err("unknown");
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("lcov, html, cobertura, json"));
        assert_eq!(ReportOptions::default().formats.len(), 4);
    }
}
