//! covobs: an eBPF-assisted coverage observer for running processes.
//!
//! The modules follow the pipeline: `target` (find and track processes), `probes` (the eBPF
//! programs), `stream` (one pipeline to the sinks); `watch` and `doctor` are commands built on them.
pub mod attach;
pub mod cli;
pub mod collect;
pub mod discover;
pub mod doctor;
pub mod events;
pub mod fleet;
/// kcov's module under its old path.
pub use runtimes::kcov;
pub mod manual;
pub mod probes;
pub mod run;
pub mod runtimes;
pub mod serve;
pub mod snapshot;
pub mod stream;
pub mod sys;
pub mod target;
pub mod terminal;
pub mod trigger;
pub mod watch;

/// The session directory's layout and formats (the `covobs-layout` crate).
pub use covobs_layout as layout;
/// The reporting stage (the `covobs-report` crate, which needs nothing of eBPF).
pub use covobs_report as report;

/// An error caused by what the user asked for or by what the machine cannot do: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Map a library error to BadInput (exit 2) when the user or the machine must change something.
pub fn classify<E: std::error::Error + Send + Sync + 'static>(
    err: E,
    bad_input: bool,
) -> anyhow::Error {
    if bad_input {
        BadInput(err.to_string()).into()
    } else {
        err.into()
    }
}

/// Fail unless covobs may load tracing programs; a one-line reason for the user otherwise.
pub fn require_privileges() -> Result<(), BadInput> {
    let caps = sys::caps::Caps::current().map_err(|e| BadInput(e.to_string()))?;
    if caps.can_trace() {
        return Ok(());
    }
    Err(BadInput(format!(
        "covobs needs root (missing {}): run it with sudo",
        caps.missing_for_observer().join(", ")
    )))
}
