//! What a report is made of (`ReportData`), and summary.json.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{
    error::{Excluded, Warning},
    model::{Coverage, Totals, language_of},
    session::{Session, SessionInfo},
    timeline::TimelinePoint,
};

/// The figures of one source file in the session, and the modules it was compiled into.
#[derive(Clone, Debug, PartialEq)]
pub struct FileFigures {
    pub totals: Totals,
    pub modules: Vec<String>,
}

/// One module of the session.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleSummary {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub runtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The tools that read it ("LLVM 14.0.6 tools from /usr/lib/llvm-14").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
    /// Artifacts merged into it.
    pub artifacts: u64,
    pub files: usize,
    /// Its own coverage (a file shared with another module counts in both modules).
    #[serde(flatten)]
    pub totals: Totals,
    /// Why it is not in the report, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// One row of the per-file table.
#[derive(Clone, Debug, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub language: &'static str,
    pub modules: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Clone, Debug, Serialize)]
pub struct LanguageSummary {
    pub language: &'static str,
    pub files: usize,
    #[serde(flatten)]
    pub totals: Totals,
}

/// What bisect-ppx-report is run on: each process's latest dump (counts are cumulative) with
/// only the files whose source covobs found and checked, and those sources by recorded name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BisectInputs {
    pub dumps: Vec<Vec<super::bisect::InstrumentedFile>>,
    pub sources: BTreeMap<String, PathBuf>,
}

/// A report another tool wrote beside covobs' own (bisect-ppx-report's HTML and Cobertura).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalReport {
    pub name: String,
    /// Relative to `report/`.
    pub path: String,
}

/// Everything a report is made of.
#[derive(Clone, Debug)]
pub struct ReportData {
    pub session: SessionInfo,
    pub generated_unix_ns: u64,
    /// Line-level coverage of every file (what coverage.lcov holds).
    pub coverage: Coverage,
    /// Sorted by path.
    pub files: Vec<FileSummary>,
    pub modules: Vec<ModuleSummary>,
    pub languages: Vec<LanguageSummary>,
    pub totals: Totals,
    pub timeline: Vec<TimelinePoint>,
    pub excluded: Vec<Excluded>,
    pub warnings: Vec<Warning>,
    /// Artifacts the session holds.
    pub artifacts: usize,
    pub bisect: BisectInputs,
    /// Reports by other tools, written beside this one.
    pub external: Vec<ExternalReport>,
    /// Kernel coverage (kcov artifacts), when the session has some.
    pub kernel: Option<super::kcov::KernelSummary>,
    /// Per file and line, the labels that reached it (docs/labels.md): count and the first few.
    pub line_labels: super::labels::output::LineLabels,
}

impl ReportData {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: &Session,
        coverage: Coverage,
        figures: BTreeMap<String, FileFigures>,
        modules: Vec<ModuleSummary>,
        timeline: Vec<TimelinePoint>,
        excluded: Vec<Excluded>,
        warnings: Vec<Warning>,
        artifacts: usize,
    ) -> Self {
        let files: Vec<FileSummary> = figures
            .into_iter()
            .map(|(path, f)| FileSummary {
                language: language_of(&path),
                path,
                modules: f.modules,
                totals: f.totals,
            })
            .collect();
        let mut totals = Totals::default();
        let mut by_lang: BTreeMap<&'static str, (usize, Totals)> = BTreeMap::new();
        for f in &files {
            totals.add(&f.totals);
            let e = by_lang.entry(f.language).or_default();
            e.0 += 1;
            e.1.add(&f.totals);
        }
        let languages = by_lang
            .into_iter()
            .map(|(language, (files, totals))| LanguageSummary {
                language,
                files,
                totals,
            })
            .collect();
        Self {
            session: session.info.clone(),
            generated_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            coverage,
            files,
            modules,
            languages,
            totals,
            timeline,
            excluded,
            warnings,
            artifacts,
            bisect: BisectInputs::default(),
            external: Vec::new(),
            kernel: None,
            line_labels: Default::default(),
        }
    }

    /// Artifacts whose coverage is in the report.
    pub fn reported(&self) -> usize {
        self.timeline.len()
    }
}

/// summary.json.
#[derive(Serialize)]
pub struct SummaryFile<'a> {
    pub version: u32,
    pub covobs_version: &'static str,
    pub generated_unix_ns: u64,
    pub totals: &'a Totals,
    pub artifacts: ArtifactCounts,
    pub files: &'a [FileSummary],
    pub modules: &'a [ModuleSummary],
    pub languages: &'a [LanguageSummary],
    pub excluded: &'a [Excluded],
    pub warnings: &'a [Warning],
    /// Reports by other tools beside this one (bisect-ppx-report's).
    #[serde(skip_serializing_if = "<[ExternalReport]>::is_empty")]
    pub other_reports: &'a [ExternalReport],
    /// Kernel coverage: its totals, how it was symbolized, the functions reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<&'a super::kcov::KernelSummary>,
}

#[derive(Serialize)]
pub struct ArtifactCounts {
    pub total: usize,
    pub reported: usize,
    pub excluded: usize,
}

impl<'a> SummaryFile<'a> {
    pub fn of(d: &'a ReportData) -> Self {
        Self {
            version: 1,
            covobs_version: env!("CARGO_PKG_VERSION"),
            generated_unix_ns: d.generated_unix_ns,
            totals: &d.totals,
            artifacts: ArtifactCounts {
                total: d.artifacts,
                reported: d.reported(),
                excluded: d.excluded.len(),
            },
            files: &d.files,
            modules: &d.modules,
            languages: &d.languages,
            excluded: &d.excluded,
            warnings: &d.warnings,
            other_reports: &d.external,
            kernel: d.kernel.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::Counts;

    fn totals(l: (u64, u64), r: Option<(u64, u64)>) -> Totals {
        Totals {
            lines: Counts::new(l.0, l.1),
            functions: Counts::new(1, 2),
            branches: Counts::new(0, 0),
            regions: r.map(|(h, t)| Counts::new(h, t)),
            points: None,
        }
    }

    #[test]
    fn totals_and_languages_add_up() {
        let session = Session {
            dir: PathBuf::from("/x"),
            info: SessionInfo::default(),
            artifacts: Vec::new(),
            unreadable: Vec::new(),
            warnings: Vec::new(),
        };
        let figures = BTreeMap::from([
            (
                "/s/a.c".to_string(),
                FileFigures {
                    totals: totals((3, 4), Some((5, 10))),
                    modules: vec!["m".into()],
                },
            ),
            (
                "/s/b.c".to_string(),
                FileFigures {
                    totals: totals((1, 4), Some((1, 10))),
                    modules: vec!["m".into()],
                },
            ),
            (
                "/s/c.rs".to_string(),
                FileFigures {
                    totals: totals((0, 2), None),
                    modules: vec!["r".into()],
                },
            ),
        ]);
        let d = ReportData::new(
            &session,
            Coverage::default(),
            figures,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            0,
        );
        assert_eq!(d.totals.lines, Counts::new(4, 10));
        assert_eq!(d.totals.functions, Counts::new(3, 6));
        assert_eq!(d.totals.regions, Some(Counts::new(6, 20)));
        assert_eq!(d.languages.len(), 2);
        assert_eq!(d.languages[0].language, "C");
        assert_eq!(d.languages[0].files, 2);
        assert_eq!(d.languages[0].totals.lines, Counts::new(4, 8));
        assert_eq!(d.languages[1].totals.regions, None);
        let j = serde_json::to_value(SummaryFile::of(&d)).expect("json");
        assert_eq!(j["totals"]["lines"]["percent"], 40.0);
        assert_eq!(j["files"][0]["path"], "/s/a.c");
        assert_eq!(j["files"][0]["lines"]["hit"], 3);
        assert_eq!(j["files"][0]["regions"]["total"], 10);
        assert!(j["files"][2].get("regions").is_none());
        assert_eq!(j["languages"][1]["language"], "Rust");
    }
}
