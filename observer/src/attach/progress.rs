//! The live progress line of a long attach (stderr, only on a terminal): targets, dumps,
//! artifacts, losses, and the session's coverage after the latest artifact, computed by the
//! report stage on its own thread so the event loop never waits for llvm tools.
use std::{
    io::IsTerminal as _,
    path::Path,
    sync::{Arc, Mutex, mpsc},
};

use indicatif::{ProgressBar, ProgressStyle};

use super::session::{Outcome, Session};

pub struct Progress {
    bar: Option<ProgressBar>,
    /// "lines 63.2% (...)" after the latest artifact, written by the coverage thread.
    coverage: Arc<Mutex<Option<String>>>,
    /// Artifact metadata files for the coverage thread.
    feed: Option<mpsc::Sender<std::path::PathBuf>>,
}

impl Progress {
    /// `enabled`: draw the line (a terminal, not --json). The coverage figure is computed only
    /// when the line is drawn.
    pub fn new(enabled: bool, session_dir: &Path) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        let coverage = Arc::new(Mutex::new(None));
        let feed = bar
            .is_some()
            .then(|| start_coverage_thread(session_dir, coverage.clone()));
        Self {
            bar,
            coverage,
            feed,
        }
    }

    /// A collection finished: let the coverage thread take the new artifact in.
    pub fn artifact(&mut self, session_dir: &Path, outcome: &Outcome) {
        if let (Some(feed), Ok(file)) = (&self.feed, &outcome.result) {
            let meta = session_dir.join(file).with_extension("json");
            let _ = feed.send(meta);
        }
    }

    pub fn line(&self, s: &Session) -> String {
        let c = &s.counters;
        let coverage = self.coverage.lock().ok().and_then(|g| g.clone());
        format!(
            "targets {} · dumps {} (asked {}) · artifacts {} · lost {}{}",
            s.targets.len(),
            c.dumps_seen,
            c.dumps_triggered,
            c.artifacts,
            c.lost,
            coverage.map(|v| format!(" · {v}")).unwrap_or_default()
        )
    }

    /// Print around the line (it is cleared first and drawn again after).
    pub fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub fn update(&mut self, s: &Session) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.line(s));
            bar.tick();
        }
    }

    /// Stop drawing; the session's summary line, for the caller to print once the events
    /// are all out.
    pub fn finish(&mut self, s: &Session) -> String {
        self.feed = None;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.line(s)
    }
}

fn start_coverage_thread(
    session_dir: &Path,
    out: Arc<Mutex<Option<String>>>,
) -> mpsc::Sender<std::path::PathBuf> {
    let (tx, rx) = mpsc::channel::<std::path::PathBuf>();
    let dir = session_dir.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("covobs-coverage".into())
        .spawn(move || {
            let opts = crate::report::ReportOptions::default();
            let Ok(mut live) = crate::report::LiveCoverage::new(&dir, &opts) else {
                return;
            };
            while let Ok(meta) = rx.recv() {
                if let Ok(crate::report::Progress::Point(p)) = live.add(&meta)
                    && let Ok(mut g) = out.lock()
                {
                    *g = Some(format!("coverage {}", p.totals.describe()));
                }
            }
        });
    tx
}
