//! The live progress line of a long attach (stderr, only on a terminal): targets, dumps,
//! artifacts, losses, and the session's coverage after the latest artifact, computed by the
//! report stage on its own thread so the event loop never waits for it.
//!
//! That thread's coverage is also the end report's: it takes the artifacts in as they are
//! collected, and at the end only what it has not seen yet before writing the report (the
//! coverage is computed once, not again from the directory).
use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use indicatif::{ProgressBar, ProgressStyle};

use super::session::{Outcome, Session};
use crate::report::{ReportError, ReportOptions, ReportSummary};

pub struct Progress {
    bar: Option<ProgressBar>,
    /// "lines 63.2% (...)" after the latest artifact, written by the coverage thread.
    coverage: Arc<Mutex<Option<String>>>,
    /// The coverage thread, when there is one.
    live: Option<Live>,
}

/// What the coverage thread is told.
enum Feed {
    /// An artifact's metadata file.
    Artifact(PathBuf),
    /// The session is over: write the report.
    Finish,
}

/// The report the coverage thread wrote, if it was asked to.
type Finished = Option<Result<ReportSummary, ReportError>>;

struct Live {
    feed: mpsc::Sender<Feed>,
    thread: JoinHandle<Finished>,
}

impl Progress {
    /// `enabled`: draw the line (a terminal, not --json). `report`: the options of the report
    /// written at the end, if one is. The coverage is computed when the line is drawn or a
    /// report is to be written.
    pub fn new(enabled: bool, session_dir: &Path, report: Option<ReportOptions>) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        let coverage = Arc::new(Mutex::new(None));
        let opts = match (report, &bar) {
            (Some(opts), _) => Some(opts),
            (None, Some(_)) => Some(ReportOptions::default()),
            (None, None) => None,
        };
        let live = opts.and_then(|opts| start_coverage_thread(session_dir, opts, coverage.clone()));
        Self {
            bar,
            coverage,
            live,
        }
    }

    /// A collection finished: let the coverage thread take the new artifact in.
    pub fn artifact(&mut self, session_dir: &Path, outcome: &Outcome) {
        if let (Some(live), Ok(file)) = (&self.live, &outcome.result) {
            let meta = session_dir.join(file).with_extension("json");
            let _ = live.feed.send(Feed::Artifact(meta));
        }
    }

    pub fn line(&self, s: &Session) -> String {
        let c = s.counters();
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
    /// are all out. The coverage thread goes on, for [`Progress::report`].
    pub fn finish(&mut self, s: &Session) -> String {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.line(s)
    }

    /// The end report, written from the live coverage (blocking: call it from a blocking
    /// thread, once the session directory is complete). `None` when there is no live coverage
    /// or its thread ended early: then the report is to be made from the directory.
    pub fn report(mut self) -> Finished {
        let live = self.live.take()?;
        live.feed.send(Feed::Finish).ok()?;
        drop(live.feed);
        live.thread.join().ok().flatten()
    }

    /// Stop the coverage thread without a report (the session was refused), and wait for it:
    /// it leaves nothing behind.
    pub fn stop(mut self) {
        if let Some(live) = self.live.take() {
            drop(live.feed);
            let _ = live.thread.join();
        }
    }
}

fn start_coverage_thread(
    session_dir: &Path,
    opts: ReportOptions,
    out: Arc<Mutex<Option<String>>>,
) -> Option<Live> {
    let (feed, rx) = mpsc::channel::<Feed>();
    let dir = session_dir.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("covobs-coverage".into())
        .spawn(move || {
            let mut live = match crate::report::LiveCoverage::new(&dir, &opts) {
                Ok(live) => live,
                Err(e) => {
                    tracing::debug!("no live coverage: {e}");
                    return None;
                }
            };
            while let Ok(feed) = rx.recv() {
                match feed {
                    Feed::Artifact(meta) => {
                        if let Ok(crate::report::Progress::Point(p)) = live.add(&meta)
                            && let Ok(mut g) = out.lock()
                        {
                            *g = Some(format!("coverage {}", p.totals.describe()));
                        }
                    }
                    Feed::Finish => {
                        tracing::info!(
                            "the report continues the live coverage ({} artifacts taken in during the session)",
                            live.timeline().len() + live.excluded().len()
                        );
                        return Some(live.finish());
                    }
                }
            }
            None
        })
        .ok()?;
    Some(Live { feed, thread })
}
