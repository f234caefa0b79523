//! What can go wrong while reporting, and what is only worth a warning.
use std::{fmt, io, path::PathBuf};

use serde::Serialize;

/// A report that could not be produced at all. Problems with single artifacts or modules are not
/// errors: they become [`Excluded`] entries and [`Warning`]s, and the report goes on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: no such directory", .0.display())]
    NoSuchDir(PathBuf),
    #[error(
        "{} is not a covobs session directory (no session.json and no <pid>-<comm>/<seq>-<runtime>.json)",
        .0.display()
    )]
    NotASession(PathBuf),
    #[error("{}: corrupt JSON: {source}", path.display())]
    BadJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {message}", path.display())]
    BadMetadata { path: PathBuf, message: String },
    #[error("unknown report format {0:?} (known: lcov, html, cobertura, json)")]
    UnknownFormat(String),
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("running {}: {source}", tool.display())]
    Spawn { tool: PathBuf, source: io::Error },
    #[error("{}: {message}", tool.display())]
    Tool { tool: PathBuf, message: String },
    #[error("LCOV from {origin}, line {line}: {message}")]
    Lcov {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("a report worker thread panicked")]
    Worker,
}

impl ReportError {
    /// Errors caused by what the user pointed covobs at (exit code 2), not by covobs or the system.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NoSuchDir(_)
                | Self::NotASession(_)
                | Self::BadJson { .. }
                | Self::BadMetadata { .. }
                | Self::UnknownFormat(_)
        )
    }
}

/// An artifact left out of the report, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub seq: u64,
    pub pid: u32,
    pub runtime: String,
    /// The artifact file, relative to the session directory.
    pub file: String,
    pub reason: String,
}

impl fmt::Display for Excluded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "artifact {} ({} of pid {}) left out: {}",
            self.file, self.runtime, self.pid, self.reason
        )
    }
}

/// Something the user should know about the report: it is incomplete, or a tool is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The module (binary or library) concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module {
            Some(m) => write!(f, "{m}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
