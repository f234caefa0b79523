//! Labels (docs/labels.md): `covobs dump --label NAME` and every `--interval` tick close a
//! label; the report attributes to each label what the targets gained up to the states that
//! close it ([`compute`]), keeps it as hit maps per module ([`hitmap`]), and writes per-label
//! figures, per-line label lists and one label's own report ([`output`]).
pub mod analysis;
mod bisect;
pub mod compute;
pub mod events;
mod gcov;
pub mod hitmap;
mod kcov;
mod llvm;
pub mod name;
pub mod output;
pub mod runtime;
mod sancov;
pub mod source;

use std::path::Path;

pub use compute::{Attribution, attribute};

use super::{ReportOptions, ReportSummary, session::Session, session_dir::SessionDir};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("events.jsonl: {0}")]
    Events(String),
    #[error("no label {name:?} in this session ({known} labels; report/labels.json lists them)")]
    UnknownLabel { name: String, known: usize },
    #[error("{0}")]
    BadName(String),
    #[error("writing the labels: {0}")]
    Write(String),
    #[error("the coverage of a label: {0}")]
    Engine(String),
    #[error(transparent)]
    Session(#[from] super::ReportError),
}

impl LabelError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::UnknownLabel { .. } | Self::BadName(_) => true,
            Self::Session(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

/// The labels of the session in `dir` and what each gained.
pub fn read_session(
    dir: &Path,
    opts: &ReportOptions,
) -> Result<(Session, Attribution), LabelError> {
    let session = Session::open(dir)?;
    let sdir = SessionDir::open(dir).map_err(|e| LabelError::Events(e.to_string()))?;
    let labels = events::read(&sdir)?;
    let a = attribute(&session, &sdir, labels, opts);
    Ok((session, a))
}

/// `covobs report DIR --label NAME`.
pub fn report_label(
    dir: &Path,
    name: &str,
    opts: &ReportOptions,
) -> Result<ReportSummary, LabelError> {
    name::check(name).map_err(LabelError::BadName)?;
    let (session, a) = read_session(dir, opts)?;
    output::write_label_report(&session, &a, name, opts)
}

/// The labels' files in a report being staged at `root` (called by the report writer); what
/// fails is a warning, the report goes on without them.
pub fn write_into_report(
    session: &Session,
    root: &Path,
    opts: &ReportOptions,
) -> Result<(Vec<std::path::PathBuf>, output::LineLabels), LabelError> {
    let sdir = SessionDir::open(&session.dir).map_err(|e| LabelError::Events(e.to_string()))?;
    let labels = events::read(&sdir)?;
    if labels.is_empty() {
        return Ok(Default::default());
    }
    let a = attribute(session, &sdir, labels, opts);
    let (mut written, lines) = output::write_into(root, &a, opts)?;
    // The label reports the previous report had, rebuilt (docs/labels.md).
    let (again, dropped) = output::rewrite_label_reports(session, &a, root, opts)?;
    written.extend(again);
    for name in dropped {
        tracing::warn!(
            "report/labels/{name}/ is not rebuilt: the session has no such label (or it held no report)"
        );
    }
    Ok((written, lines))
}
