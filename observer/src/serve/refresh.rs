//! The refresher: a thread that polls the session directory every second and, when artifacts
//! arrived or session.json appeared, adds them to the report engine ([`LiveCoverage`], which
//! merges only what is new), rebuilds the report data in memory and publishes it. Nothing is
//! written into the session. A rebuild that took long (big modules) spaces the next ones out, so
//! serving never takes more than about a third of a CPU.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    scan::Scanner,
    view::{State, Summary},
};
use crate::report::{
    LiveCoverage, ReportError, ReportOptions,
    session::{Artifact, Session},
    summary::ReportData,
};

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What the pages are served from.
#[derive(Debug, Default)]
pub struct Published {
    pub version: u64,
    /// The summary, as JSON (what every server-sent update carries).
    pub summary: Arc<str>,
    /// The data of the last successful refresh (for the per-file pages).
    pub data: Option<Arc<ReportData>>,
}

struct Refresher {
    dir: PathBuf,
    shown_dir: String,
    opts: ReportOptions,
    scanner: Scanner,
    live: Option<LiveCoverage>,
    /// Every artifact found, in seq order (to start over when one arrives late).
    all: Vec<Artifact>,
    unreadable: Vec<String>,
    version: u64,
    last: Option<Summary>,
}

/// Start the refresher on its own thread; it stops when `stop` is set.
pub fn spawn(
    dir: &Path,
    opts: ReportOptions,
    tx: watch::Sender<Arc<Published>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let mut r = Refresher {
        dir: dir.to_path_buf(),
        shown_dir: dir.display().to_string(),
        opts,
        scanner: Scanner::new(dir),
        live: None,
        all: Vec::new(),
        unreadable: Vec::new(),
        version: 0,
        last: None,
    };
    thread::Builder::new()
        .name("covobs-serve".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let started = Instant::now();
                if let Some(p) = r.refresh() {
                    tx.send_replace(Arc::new(p));
                }
                next = started + POLL.max(started.elapsed() * 2);
            }
            // The report engine's work directory goes away here, before the process ends.
            drop(r);
        })
}

impl Refresher {
    /// Look once; what to publish when something changed.
    fn refresh(&mut self) -> Option<Published> {
        match self.update() {
            Ok(None) => None,
            Ok(Some(data)) => {
                self.version += 1;
                let state = if self.scanner.finished() {
                    State::Finished
                } else if self.all.is_empty() {
                    State::Waiting
                } else {
                    State::Running
                };
                let mut summary = Summary::of(
                    &data,
                    &self.shown_dir,
                    state,
                    self.version,
                    &self.unreadable,
                );
                if summary.targets.is_empty() {
                    // Before session.json: the process directories name them.
                    summary.targets = self
                        .scanner
                        .processes
                        .iter()
                        .map(|(pid, comm)| super::view::Target {
                            pid: *pid,
                            comm: comm.clone(),
                        })
                        .collect();
                }
                let json = serde_json::to_string(&summary).ok()?;
                self.last = Some(summary);
                Some(Published {
                    version: self.version,
                    summary: json.into(),
                    data: Some(Arc::new(data)),
                })
            }
            Err(e) => {
                // Keep showing the last data, with the reason it is not newer.
                tracing::debug!("serve: refreshing {}: {e}", self.dir.display());
                let last = self.last.as_mut()?;
                let why = e.to_string();
                if last.error.as_deref() == Some(why.as_str()) {
                    return None;
                }
                self.version += 1;
                last.version = self.version;
                last.error = Some(why);
                let json = serde_json::to_string(&*last).ok()?;
                Some(Published {
                    version: self.version,
                    summary: json.into(),
                    data: None,
                })
            }
        }
    }

    /// The report data when something changed since the last look.
    fn update(&mut self) -> Result<Option<ReportData>, ReportError> {
        let found = self.scanner.scan()?;
        let grew = !found.unreadable.is_empty();
        self.unreadable.extend(found.unreadable);
        if found.new.is_empty() && !found.info_changed && !grew && self.live.is_some() {
            return Ok(None);
        }
        // An artifact older than one merged already (collections finish out of order): start
        // over, so the timeline stays in collection order, as `covobs report` does.
        let late = match (self.all.last(), found.new.first()) {
            (Some(last), Some(first)) => first.meta.seq < last.meta.seq,
            _ => false,
        };
        self.all.extend(found.new.iter().cloned());
        let live = match self.live.take() {
            Some(live) if !late => {
                let mut live = live;
                live.run_batch(found.new.iter())?;
                live
            }
            _ => {
                self.all
                    .sort_by(|a, b| (a.meta.seq, &a.rel).cmp(&(b.meta.seq, &b.rel)));
                let mut live = LiveCoverage::new(&self.dir, &self.opts)?;
                live.run_batch(self.all.iter())?;
                live
            }
        };
        let live = self.live.insert(live);
        // Building reads only the session's information, not its artifact list.
        let session = Session {
            dir: self.dir.clone(),
            info: self.scanner.info.clone(),
            artifacts: Vec::new(),
            unreadable: Vec::new(),
            warnings: Vec::new(),
        };
        live.build(&session).map(Some)
    }
}
