//! The report engine: artifacts go in one at a time, in collection order; after each one the
//! session's cumulative coverage is known (a timeline point). `covobs attach` feeds it as dumps
//! arrive (progress), `covobs report` feeds it a whole session directory.
//!
//! Per module, step k merges artifact k into the running profile of step k-1 (never re-merging
//! everything) and exports the coverage of that profile. The merges are sequential; the exports
//! of a batch run on worker threads and their results are applied in step order.
//!
//! A source file compiled into two modules (a header, a generic) is counted once: its lines,
//! functions and branches are the union of both modules' LCOV records (hit counts added up), its
//! regions the sum. Modules that share no file with another are counted from the figures of
//! `llvm-cov export -summary-only` alone, which is what keeps a step cheap.
//!
//! bisect_ppx, gcov and SanitizerCoverage artifacts are units of their own (per module and
//! runtime, see [`sources`]): converted right away, their coverage goes through the same ordered
//! queue as the LLVM exports, so every timeline point holds exactly the artifacts up to its own.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    thread,
};

mod merged;
mod sancov;
mod sources;

use super::{
    ReportError, ReportOptions,
    error::{Excluded, Warning},
    llvm::{Export, Input, LlvmModule, Snapshot, TempFile},
    llvm_tools::{Need, Toolsets, read_elf_notes},
    model::{Coverage, Totals},
    profraw,
    session::{
        Artifact, MAX_MODULE_BYTES, ModuleMeta, Runtime, Session, is_inside, read_artifact,
        sha256_hex,
    },
    session_dir::{Pinned, SessionDir, SessionFileError},
    summary::{FileFigures, ModuleSummary, ReportData},
    tally::Instance,
    timeline::TimelinePoint,
};

/// What adding one artifact did.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// It is in: the session's coverage now.
    Point(TimelinePoint),
    /// It is left out, and why.
    Excluded(Excluded),
    /// It was added before.
    AlreadySeen,
}

/// One module (LLVM: an executable or a shared library, by build id) of the session, for one
/// runtime (a binary with LLVM and bisect_ppx coverage is two units).
struct Unit {
    /// Display name: the module's file name.
    name: String,
    /// "llvm", "bisect", "gcov".
    runtime: String,
    meta: ModuleMeta,
    state: UnitState,
    /// Artifacts merged in.
    artifacts: u64,
    /// The applied export: per-file figures, and line detail when `detail_version` is current.
    files: BTreeMap<String, Totals>,
    detail: Option<Coverage>,
    detail_version: u64,
    /// The module's source files (they do not change with the counters).
    file_set: Option<BTreeSet<String>>,
    /// Shares a source file with another module: its exports then carry line detail.
    shared: bool,
    /// Digests of the counters of the artifacts merged in.
    seen_counters: HashSet<String>,
    /// The module's own totals at its last timeline point (what the next one added is from).
    last_point: Option<Totals>,
}

enum UnitState {
    Llvm(Box<LlvmModule>),
    Bisect(Box<super::bisect::BisectUnit>),
    Gcov(Box<super::gcov::GcovUnit>),
    Sancov(Box<super::sancov::SancovUnit>),
    /// Cannot be reported (no tools, no module copy, export failed): why.
    Unavailable(String),
}

impl Unit {
    fn llvm(&self) -> Option<&LlvmModule> {
        match &self.state {
            UnitState::Llvm(m) => Some(m),
            _ => None,
        }
    }

    fn version(&self) -> u64 {
        match &self.state {
            UnitState::Llvm(m) => m.merged,
            UnitState::Bisect(b) => b.steps,
            UnitState::Gcov(g) => g.steps,
            UnitState::Sancov(s) => s.steps,
            UnitState::Unavailable(_) => 0,
        }
    }

    /// Its coverage is in the report.
    fn reported(&self) -> bool {
        !matches!(self.state, UnitState::Unavailable(_))
    }
}

struct Job {
    id: u64,
    unit: usize,
    version: u64,
    export: Export,
}

type Outcome = (u64, usize, u64, Result<Snapshot, String>);

/// The position of a step's artifact in the session, for its timeline point.
#[derive(Clone, Debug)]
struct PointMeta {
    unit: usize,
    seq: u64,
    pid: u32,
    tid: Option<u32>,
    runtime: String,
    module: String,
    trigger: Option<String>,
    end_ns: Option<u64>,
}

/// Live coverage of a session: feed it artifacts, read the current figure, write the report.
pub struct LiveCoverage {
    session_dir: PathBuf,
    /// The session directory, everything in it opened through it (see [`SessionDir`]).
    dir: Arc<SessionDir>,
    opts: ReportOptions,
    work: tempfile::TempDir,
    tools: Option<Toolsets>,
    units: Vec<Unit>,
    unit_by_key: HashMap<String, usize>,
    seen: BTreeSet<String>,
    max_seq: Option<u64>,
    /// An artifact was added after one with a higher seq (the timeline is then rebuilt in seq
    /// order at the end).
    out_of_order: bool,
    artifacts_seen: usize,
    points: Vec<TimelinePoint>,
    excluded: Vec<Excluded>,
    warnings: Vec<Warning>,
    warned_runtimes: BTreeSet<String>,
    next_id: u64,
    next_apply: u64,
    done: BTreeMap<u64, Outcome>,
    point_at: BTreeMap<u64, Vec<PointMeta>>,
    /// No export was applied since the last point.
    unchanged_since_point: bool,
    /// Artifacts whose merge was deferred: seq -> (pid, file).
    deferred: HashMap<u64, (u32, String)>,
    /// LLVM artifacts taken in as states: seq -> file (a later dump may name one as the
    /// content it merged).
    llvm_states: HashMap<u64, PathBuf>,
    /// session.json, once it exists (targets' working directories, for bisect's sources).
    session_info: Option<super::session::SessionInfo>,
    /// Kernel coverage (kcov artifacts), symbolized when the report is built.
    kernel: super::kcov::KernelSource,
}

/// The `unit` of a timeline point of a kcov artifact (kernel coverage has no LLVM unit).
const KERNEL_UNIT: usize = usize::MAX;

fn work_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl LiveCoverage {
    /// Start empty for the session in `session_dir` (which may not hold anything yet).
    pub fn new(session_dir: &Path, opts: &ReportOptions) -> Result<Self, ReportError> {
        if !session_dir.is_dir() {
            return Err(ReportError::NoSuchDir(session_dir.to_path_buf()));
        }
        let dir = SessionDir::open(session_dir).map_err(|source| ReportError::Read {
            path: session_dir.to_path_buf(),
            source,
        })?;
        // $TMPDIR or /tmp; a container image with nothing but covobs (docs/deploy/Dockerfile)
        // has neither, and then the work happens in a directory of the session, removed at the
        // end like the other.
        let work = match tempfile::Builder::new().prefix("covobs-report-").tempdir() {
            Ok(work) => work,
            Err(e) => {
                tracing::debug!(
                    "{}: {e}; working in the session",
                    std::env::temp_dir().display()
                );
                tempfile::Builder::new()
                    .prefix(".covobs-report-")
                    .tempdir_in(session_dir)
                    .map_err(work_err(session_dir))?
            }
        };
        Ok(Self {
            session_dir: session_dir.to_path_buf(),
            dir: Arc::new(dir),
            opts: opts.clone(),
            work,
            tools: None,
            units: Vec::new(),
            unit_by_key: HashMap::new(),
            seen: BTreeSet::new(),
            max_seq: None,
            out_of_order: false,
            artifacts_seen: 0,
            points: Vec::new(),
            excluded: Vec::new(),
            warnings: Vec::new(),
            warned_runtimes: BTreeSet::new(),
            next_id: 0,
            next_apply: 0,
            done: BTreeMap::new(),
            point_at: BTreeMap::new(),
            unchanged_since_point: false,
            deferred: HashMap::new(),
            llvm_states: HashMap::new(),
            session_info: None,
            kernel: super::kcov::KernelSource::default(),
        })
    }

    /// Add the artifact whose metadata file is `metadata` (`<session>/<pid>-<comm>/<seq>-<runtime>.json`)
    /// and return the session's coverage after it. Blocking (runs llvm-profdata and llvm-cov:
    /// tens of milliseconds for a small program); call it from a blocking thread.
    /// Metadata that cannot be used leaves its artifact out (the progress says why).
    pub fn add(&mut self, metadata: &Path) -> Result<Progress, ReportError> {
        let name = |p: Option<&Path>| {
            p.and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        };
        let (Some(pdir), Some(file)) = (name(metadata.parent()), name(Some(metadata))) else {
            return Err(ReportError::BadMetadata {
                path: metadata.to_path_buf(),
                message: "not inside a <pid>-<comm> directory".into(),
            });
        };
        // Not written yet: nothing to say about it.
        if let Err(SessionFileError::Missing) = self.dir.kind(&Path::new(&pdir).join(&file)) {
            return Err(ReportError::Read {
                path: metadata.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        match read_artifact(&self.dir, &pdir, &file) {
            Ok(artifact) => Ok(self.add_artifact(&artifact)),
            Err(excluded) => Ok(self.unreadable(excluded)),
        }
    }

    /// An artifact whose metadata cannot be used: left out, once.
    fn unreadable(&mut self, excluded: Excluded) -> Progress {
        if !self.seen.insert(excluded.file.clone()) {
            return Progress::AlreadySeen;
        }
        self.artifacts_seen += 1;
        self.excluded.push(excluded.clone());
        Progress::Excluded(excluded)
    }

    /// Add one artifact (see [`LiveCoverage::add`]).
    pub fn add_artifact(&mut self, artifact: &Artifact) -> Progress {
        let (progress, jobs) = self.dispatch(artifact);
        for job in jobs {
            let out = (job.id, job.unit, job.version, job.export.run());
            self.done.insert(out.0, out);
        }
        self.apply_ready();
        match progress {
            Some(p) => p,
            None => match self.points.last() {
                Some(p) if p.seq == artifact.meta.seq => Progress::Point(p.clone()),
                // The export of the step failed: the module is out (see the warnings).
                _ => {
                    let why = self
                        .warnings
                        .last()
                        .map(|w| w.to_string())
                        .unwrap_or_else(|| "its coverage could not be exported".into());
                    self.exclude(artifact, why).unwrap_or(Progress::AlreadySeen)
                }
            },
        }
    }

    /// The session's coverage after the last artifact added.
    pub fn latest(&self) -> Option<&TimelinePoint> {
        self.points.last()
    }

    pub fn timeline(&self) -> &[TimelinePoint] {
        &self.points
    }

    pub fn excluded(&self) -> &[Excluded] {
        &self.excluded
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Add whatever the session directory holds that was not added yet (in seq order; when an
    /// earlier seq shows up late, start over so the timeline stays in collection order), then
    /// write the report.
    pub fn finish(mut self) -> Result<super::ReportSummary, ReportError> {
        let session = Session::read(&self.dir)?;
        let fresh: Vec<&Artifact> = session
            .artifacts
            .iter()
            .filter(|a| !self.seen.contains(&a.rel))
            .collect();
        let late = self.out_of_order
            || match (self.max_seq, fresh.first()) {
                (Some(max), Some(first)) => first.meta.seq < max,
                _ => false,
            };
        if late {
            let tools = self.tools.take();
            self = Self::new(&self.session_dir, &self.opts)?;
            self.tools = tools;
            self.run_batch(session.artifacts.iter())?;
        } else {
            self.run_batch(fresh.into_iter())?;
        }
        for e in &session.unreadable {
            self.unreadable(e.clone());
        }
        self.warnings.extend(session.warnings.iter().cloned());
        let data = self.build(&session)?;
        super::output::write_report(&session, &data, &self.opts)
    }

    /// Add many artifacts: merges here, in order; exports on worker threads.
    pub fn run_batch<'a>(
        &mut self,
        artifacts: impl Iterator<Item = &'a Artifact>,
    ) -> Result<(), ReportError> {
        let workers = self
            .opts
            .jobs
            .or_else(|| thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
            .max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers * 2);
        let job_rx = Mutex::new(job_rx);
        let (out_tx, out_rx) = mpsc::channel::<Outcome>();
        let artifacts: Vec<&Artifact> = artifacts.collect();
        // LLVM artifacts are read and checked ahead, on a thread of their own, while the one
        // before is counted (a few held at a time: memory does not grow with the session).
        let (read_tx, read_rx) = mpsc::sync_channel::<(usize, Result<Vec<u8>, String>)>(1);
        thread::scope(|s| {
            let ahead = &artifacts;
            s.spawn(move || {
                for (i, a) in ahead.iter().enumerate() {
                    if a.meta.runtime == Runtime::Llvm
                        && read_tx.send((i, a.check_recorded())).is_err()
                    {
                        return;
                    }
                }
            });
            let mut read_rx = read_rx.into_iter().peekable();
            let mut handles = Vec::new();
            for _ in 0..workers {
                let out_tx = out_tx.clone();
                let job_rx = &job_rx;
                handles.push(s.spawn(move || {
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let out = (job.id, job.unit, job.version, job.export.run());
                        if out_tx.send(out).is_err() {
                            return;
                        }
                    }
                }));
            }
            drop(out_tx);
            let mut failed = false;
            for (i, a) in artifacts.iter().enumerate() {
                let read = read_rx.next_if(|(at, _)| *at == i).map(|(_, r)| r);
                let (_, jobs) = self.dispatch_read(a, read);
                for job in jobs {
                    if job_tx.send(job).is_err() {
                        failed = true;
                    }
                }
                while let Ok(out) = out_rx.try_recv() {
                    self.done.insert(out.0, out);
                }
                self.apply_ready();
            }
            // The reader stops at its next send, if it is not done.
            drop(read_rx);
            drop(job_tx);
            for out in out_rx {
                self.done.insert(out.0, out);
            }
            self.apply_ready();
            for h in handles {
                if h.join().is_err() {
                    failed = true;
                }
            }
            if failed || self.next_apply != self.next_id {
                Err(ReportError::Worker)
            } else {
                Ok(())
            }
        })
    }

    fn exclusion(&self, a: &Artifact, reason: String) -> Excluded {
        Excluded {
            seq: a.meta.seq,
            pid: a.meta.pid,
            runtime: a.meta.runtime.to_string(),
            file: a.rel.clone(),
            reason,
        }
    }

    fn exclude(&mut self, a: &Artifact, reason: String) -> Option<Progress> {
        let e = self.exclusion(a, reason);
        self.excluded.push(e.clone());
        Some(Progress::Excluded(e))
    }

    /// The sequential part of a step: checks, module, merge. Returns the progress when the
    /// artifact is settled already (excluded, seen), and the exports to run.
    fn dispatch(&mut self, a: &Artifact) -> (Option<Progress>, Vec<Job>) {
        self.dispatch_read(a, None)
    }

    /// [`LiveCoverage::dispatch`], with the artifact's checked bytes when they were read already
    /// (`Artifact::check_recorded`, ahead of time on another thread).
    fn dispatch_read(
        &mut self,
        a: &Artifact,
        read: Option<Result<Vec<u8>, String>>,
    ) -> (Option<Progress>, Vec<Job>) {
        if !self.seen.insert(a.rel.clone()) {
            return (Some(Progress::AlreadySeen), Vec::new());
        }
        self.artifacts_seen += 1;
        self.out_of_order |= self.max_seq.is_some_and(|m| a.meta.seq < m);
        self.max_seq = Some(self.max_seq.map_or(a.meta.seq, |m| m.max(a.meta.seq)));
        if a.meta.runtime == Runtime::Kcov {
            if let Err(reason) = self.kernel.add(a) {
                return (self.exclude(a, reason), Vec::new());
            }
            let meta = PointMeta {
                unit: KERNEL_UNIT,
                seq: a.meta.seq,
                pid: a.meta.pid,
                tid: a.meta.tid,
                runtime: a.meta.runtime.to_string(),
                module: "vmlinux".into(),
                trigger: a.meta.trigger.as_ref().map(|t| t.as_str().to_owned()),
                end_ns: a.meta.end_ns,
            };
            // Its kernel figures are added when the report is built (symbolizing needs the
            // whole session's PCs); until then the point carries the user-space figures.
            match self.next_id.checked_sub(1) {
                Some(last) if last >= self.next_apply => {
                    self.point_at.entry(last).or_default().push(meta)
                }
                _ => self.push_point(meta),
            }
            return (None, Vec::new());
        }
        match a.meta.runtime {
            Runtime::Bisect => return self.dispatch_bisect(a),
            Runtime::Gcov => return self.dispatch_gcov(a),
            Runtime::Sancov => return self.dispatch_sancov(a),
            _ => {}
        }
        if a.meta.runtime != Runtime::Llvm {
            if self.warned_runtimes.insert(a.meta.runtime.to_string()) {
                self.warnings.push(Warning {
                    module: None,
                    message: format!(
                        "{} artifacts are collected but not reported yet: only LLVM, gcov, bisect_ppx, SanitizerCoverage and kcov coverage are",
                        a.meta.runtime
                    ),
                });
            }
            let reason = format!("the report does not read {} artifacts yet", a.meta.runtime);
            return (self.exclude(a, reason), Vec::new());
        }
        let bytes = match read.unwrap_or_else(|| a.check_recorded()) {
            Ok(b) => b,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let header = match profraw::check(&bytes) {
            Ok(h) => h,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let merged = match self.merged_base(a) {
            Ok(m) => m,
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
        };
        let idx = self.unit_for(a, Some(&bytes));
        let unit = &mut self.units[idx];
        let UnitState::Llvm(module) = &mut unit.state else {
            let reason = match &unit.state {
                UnitState::Unavailable(why) => format!("module {}: {why}", unit.name),
                _ => String::new(),
            };
            return (self.exclude(a, reason), Vec::new());
        };
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        // The exact model first: the artifact is the next state of its process's counters.
        let exact = module.add_state(instance, &bytes, merged.as_deref());
        let repeat = match exact {
            Err(reason) => return (self.exclude(a, reason), Vec::new()),
            Ok(Some(pushed)) => {
                let unit = &mut self.units[idx];
                if let UnitState::Llvm(m) = &unit.state
                    && !m.native()
                    && !self.opts.llvm_cov
                    && let Some(why) = m.engine_note.clone()
                    && self.warned_runtimes.insert(format!("engine {}", unit.name))
                {
                    self.warnings.push(Warning {
                        module: Some(unit.name.clone()),
                        message: format!(
                            "covobs' engine does not read it ({why}): llvm-cov computes its coverage"
                        ),
                    });
                }
                let unit = &mut self.units[idx];
                unit.artifacts += 1;
                self.llvm_states.insert(a.meta.seq, PathBuf::from(&a.rel));
                if pushed.changed || unit.file_set.is_none() {
                    let UnitState::Llvm(module) = &mut unit.state else {
                        return (None, Vec::new());
                    };
                    if let Err(why) = module.materialize() {
                        let name = unit.name.clone();
                        self.warnings.push(Warning {
                            module: Some(name),
                            message: format!(
                                "its coverage could not be exported, so it is not in the report: {why}"
                            ),
                        });
                        let unit = &mut self.units[idx];
                        unit.state = UnitState::Unavailable(why.clone());
                        unit.files.clear();
                        unit.detail = None;
                        return (self.exclude(a, why), Vec::new());
                    }
                    false
                } else {
                    // The same total as before: the point repeats the current figures.
                    true
                }
            }
            Ok(None) => {
                // A raw profile the engine does not read: merged as it is (counts add up).
                let why = module.inexact.clone().unwrap_or_default();
                // llvm-profdata reads covobs' copy of the bytes just checked, not the session's
                // file.
                let input = match self.input_copy(a, &bytes) {
                    Ok(i) => i,
                    Err(reason) => return (self.exclude(a, reason), Vec::new()),
                };
                let unit = &mut self.units[idx];
                let name = unit.name.clone();
                if self.warned_runtimes.insert(format!("inexact {name}")) {
                    self.warnings.push(Warning {
                        module: Some(name),
                        message: format!(
                            "counts are summed over its dumps, not exact ({why}); llvm-profdata merges its raw profiles"
                        ),
                    });
                }
                let unit = &mut self.units[idx];
                let UnitState::Llvm(module) = &mut unit.state else {
                    return (None, Vec::new());
                };
                // Only for raw profiles merged as they are: a digest of 8 MB of counters is
                // not free.
                let counters = header
                    .counters
                    .clone()
                    .and_then(|r| bytes.get(r))
                    .map(sha256_hex);
                let repeat = unit.file_set.is_some()
                    && counters
                        .as_ref()
                        .is_some_and(|c| unit.seen_counters.contains(c));
                let (result, late) = module.add(input, a.meta.seq, header.version, repeat);
                if result.is_ok() {
                    unit.artifacts += 1;
                    if let Some(c) = counters {
                        unit.seen_counters.insert(c);
                    }
                    if repeat {
                        self.deferred
                            .insert(a.meta.seq, (a.meta.pid, a.rel.clone()));
                    }
                }
                self.late_failures(idx, late);
                if let Err(reason) = result {
                    return (self.exclude(a, reason), Vec::new());
                }
                repeat
            }
        };
        drop(bytes);
        let version = self.units[idx].version();
        let unit = &mut self.units[idx];
        let shared = unit.shared;
        let first = unit.file_set.is_none();
        let UnitState::Llvm(module) = &mut unit.state else {
            return (None, Vec::new());
        };
        let mut jobs = Vec::new();
        if repeat {
            // Nothing to export.
        } else if first {
            // A module's first step runs here: its files decide which modules share sources,
            // which the following steps need to know. llvm-cov's exports carry the detail
            // already (a second export later would cost more); the engine's figures name the
            // files, and a module that turns out to share one gets its detail from a job.
            let native = module.native();
            let Some(export) = module.export_point(!native) else {
                return (None, Vec::new());
            };
            let id = self.take_id();
            let result = export.run();
            let unit = &mut self.units[idx];
            if let Ok(s) = &result {
                unit.file_set = Some(s.files.keys().cloned().collect());
            }
            self.done.insert(id, (id, idx, version, result));
            jobs.extend(self.mark_shared(idx));
        } else if let Some(export) = module.export_point(shared) {
            let id = self.take_id();
            jobs.push(Job {
                id,
                unit: idx,
                version,
                export,
            });
        }
        let meta = PointMeta {
            unit: idx,
            seq: a.meta.seq,
            pid: a.meta.pid,
            tid: a.meta.tid,
            runtime: a.meta.runtime.to_string(),
            module: self.units[idx].name.clone(),
            trigger: a.meta.trigger.as_ref().map(|t| t.as_str().to_owned()),
            end_ns: a.meta.end_ns,
        };
        // The point comes after this step's exports, or after the last step's when it has
        // none; right now when those are applied already.
        match self.next_id.checked_sub(1) {
            Some(last) if last >= self.next_apply => {
                self.point_at.entry(last).or_default().push(meta)
            }
            _ => self.push_point(meta),
        }
        (None, jobs)
    }

    /// Deferred artifacts whose merge failed after all: left out, and their points go.
    fn late_failures(&mut self, unit: usize, late: super::llvm::LateFailures) {
        for (seq, why) in late {
            let (pid, file) = self.deferred.remove(&seq).unwrap_or_default();
            self.excluded.push(Excluded {
                seq,
                pid,
                runtime: "llvm".into(),
                file,
                reason: why,
            });
            self.units[unit].artifacts = self.units[unit].artifacts.saturating_sub(1);
            self.points.retain(|p| p.seq != seq);
            for m in self.point_at.values_mut() {
                m.retain(|p| p.seq != seq);
            }
        }
        for (i, p) in self.points.iter_mut().enumerate() {
            p.index = i + 1;
        }
    }

    /// The checked bytes of a raw profile, written to the work directory for llvm-profdata.
    fn input_copy(&self, a: &Artifact, bytes: &[u8]) -> Result<Input, String> {
        let path = self.work.path().join(format!(
            "input-{:06}-{}.profraw",
            a.meta.seq, self.artifacts_seen
        ));
        let file = TempFile(path);
        super::output::create(&file.0, bytes).map_err(|e| e.to_string())?;
        Ok(Input {
            file,
            shown: a.data_path.clone(),
        })
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A module's files are known now: mark it and every module it shares a file with as shared,
    /// and export those that were not with detail.
    fn mark_shared(&mut self, idx: usize) -> Vec<Job> {
        let Some(mine) = self.units[idx].file_set.clone() else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        // The engine's first export of a module is without detail (see `dispatch`).
        let had_detail =
            self.units[idx].detail.is_some() || !self.units[idx].llvm().is_some_and(|m| m.native());
        for j in 0..self.units.len() {
            if j == idx {
                continue;
            }
            let overlaps = self.units[j]
                .file_set
                .as_ref()
                .is_some_and(|theirs| !theirs.is_disjoint(&mine));
            if !overlaps {
                continue;
            }
            self.units[idx].shared = true;
            if self.units[j].shared {
                continue;
            }
            self.units[j].shared = true;
            jobs.extend(self.detail_job(j));
        }
        // Its first export was without detail (the engine's): the shared files need it.
        if self.units[idx].shared && !had_detail {
            jobs.extend(self.detail_job(idx));
        }
        jobs
    }

    /// An export with line detail of a unit's current state, if it has one.
    fn detail_job(&mut self, unit: usize) -> Option<Job> {
        let version = self.units[unit].version();
        let export = self.units[unit].llvm()?.export(true)?;
        Some(Job {
            id: self.take_id(),
            unit,
            version,
            export,
        })
    }

    /// Apply finished exports in step order, recording a timeline point after each step.
    fn apply_ready(&mut self) {
        while let Some((_, unit, version, result)) = self.done.remove(&self.next_apply) {
            let id = self.next_apply;
            self.next_apply += 1;
            self.unchanged_since_point = false;
            let u = &mut self.units[unit];
            match result {
                Ok(snap) => {
                    u.files = snap.files;
                    if let Some(d) = snap.detail {
                        u.detail = Some(d);
                        u.detail_version = version;
                    }
                }
                Err(why) => {
                    if !matches!(u.state, UnitState::Unavailable(_)) {
                        self.warnings.push(Warning {
                            module: Some(u.name.clone()),
                            message: format!(
                                "its coverage could not be exported, so it is not in the report: {why}"
                            ),
                        });
                        u.state = UnitState::Unavailable(format!("llvm-cov failed: {why}"));
                        u.files.clear();
                        u.detail = None;
                    }
                }
            }
            for meta in self.point_at.remove(&id).unwrap_or_default() {
                self.push_point(meta);
            }
        }
    }

    /// Record the session's figures now as the point of a step.
    fn push_point(&mut self, meta: PointMeta) {
        if meta.unit != KERNEL_UNIT && !self.units[meta.unit].reported() {
            return;
        }
        let totals = match self.points.last() {
            // Nothing changed since the last point (a repeat): no need to add up again.
            Some(p) if self.unchanged_since_point => p.totals,
            _ => total_of(&self.figures()),
        };
        self.unchanged_since_point = true;
        // The kernel's own figures are known only when the report is built (kernel_report).
        let module_added = (meta.unit != KERNEL_UNIT).then(|| {
            let unit = &mut self.units[meta.unit];
            let module_totals = total_of_files(&unit.files);
            let before = unit.last_point.replace(module_totals);
            super::timeline::Added::between(before.as_ref(), &module_totals)
        });
        self.points.push(TimelinePoint {
            index: self.points.len() + 1,
            seq: meta.seq,
            pid: meta.pid,
            tid: meta.tid,
            runtime: meta.runtime.to_string(),
            module: meta.module,
            trigger: meta.trigger.as_ref().map(|t| t.as_str().to_owned()),
            end_ns: meta.end_ns,
            totals,
            module_added,
        });
    }

    fn toolsets(&mut self) -> &Toolsets {
        let dirs = self.opts.tool_dirs.clone();
        self.tools.get_or_insert_with(|| Toolsets::discover(&dirs))
    }

    /// The unit of an artifact's module and runtime, created on first sight. `profraw`: the
    /// artifact's raw profile, to find the LLVM tools that read it when nothing else tells.
    fn unit_for(&mut self, a: &Artifact, profraw: Option<&[u8]>) -> usize {
        let meta = a.meta.module.clone().unwrap_or_default();
        let mut key = meta
            .build_id
            .clone()
            .or_else(|| meta.copy.clone())
            .or_else(|| meta.path.clone())
            .unwrap_or_default();
        if a.meta.runtime != Runtime::Llvm {
            key = format!("{}:{key}", a.meta.runtime);
        }
        if let Some(&i) = self.unit_by_key.get(&key) {
            return i;
        }
        let name = meta
            .path
            .as_deref()
            .or(meta.copy.as_deref())
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("(unknown module)")
            .to_string();
        let idx = self.units.len();
        let opened = match a.meta.runtime {
            Runtime::Bisect => Ok(self.open_bisect(&meta, a)),
            Runtime::Gcov => Ok(UnitState::Gcov(Box::default())),
            Runtime::Sancov => self.open_sancov(&meta),
            _ => self
                .open_module(&meta, profraw, idx)
                .map(|m| UnitState::Llvm(Box::new(m))),
        };
        let state = match opened {
            Ok(state) => state,
            Err(why) => {
                self.warnings.push(Warning {
                    module: Some(name.clone()),
                    message: format!("{why}; its artifacts are left out of the report"),
                });
                UnitState::Unavailable(why)
            }
        };
        self.units.push(Unit {
            name,
            runtime: a.meta.runtime.to_string(),
            meta,
            state,
            artifacts: 0,
            files: BTreeMap::new(),
            detail: None,
            detail_version: 0,
            file_set: None,
            shared: false,
            seen_counters: HashSet::new(),
            last_point: None,
        });
        self.unit_by_key.insert(key, idx);
        idx
    }

    fn open_module(
        &mut self,
        meta: &ModuleMeta,
        profraw: Option<&[u8]>,
        idx: usize,
    ) -> Result<LlvmModule, String> {
        if meta == &ModuleMeta::default() {
            return Err("the artifact's metadata names no module".into());
        }
        let work = self.work.path().join(format!("module-{idx}"));
        fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let (file, shown) = self.module_binary(meta)?;
        let (comments, _) = read_elf_notes(&file, &shown).unwrap_or_default();
        let binary = Pinned::new(file, &shown, &work)?;
        let need = Need::resolve(
            meta.llvm_major,
            meta.producer.as_deref(),
            &comments,
            self.toolsets(),
        );
        let use_engine = !self.opts.llvm_cov;
        let tools = match self.toolsets().select(&need) {
            Ok(t) => t.clone(),
            // covobs' engine reads the module without llvm-cov (it then says so, when it cannot).
            Err(_) if use_engine && need.major.is_some_and(|m| (11..=23).contains(&m)) => {
                return Ok(LlvmModule::new(None, need.major, binary, work));
            }
            Err(why) if need.major.is_none() && need.producer.is_none() => {
                // Nothing says which LLVM built it: the newest tools that read its raw profile.
                let mut all: Vec<_> = self.toolsets().all.clone();
                all.sort_by_key(|t| std::cmp::Reverse(t.major));
                // covobs' copy of the checked bytes, for llvm-profdata to read.
                let first = TempFile(work.join("first.profraw"));
                let have = match profraw {
                    Some(bytes) => super::output::create(&first.0, bytes).is_ok(),
                    None => false,
                };
                all.into_iter()
                    .find(|t| {
                        have && std::process::Command::new(&t.profdata)
                            .arg("show")
                            .arg(&first.0)
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    })
                    .ok_or(why)?
            }
            Err(why) => return Err(why),
        };
        let major = need.major.or(Some(tools.major));
        let mut m = LlvmModule::new(Some(tools), major, binary, work);
        if self.opts.llvm_cov {
            m.major = None;
            m.engine_note = Some("--llvm-cov".into());
        }
        Ok(m)
    }

    /// The binary llvm-cov reads, opened, and its name for messages: the session's copy (opened
    /// like every file of the session: beneath it, through no link, a regular file); only when
    /// there is none, the recorded path if it is the same build and the requesting user could
    /// read it.
    fn module_binary(&self, meta: &ModuleMeta) -> Result<(fs::File, PathBuf), String> {
        if let Some(copy) = &meta.copy {
            if !is_inside(copy) {
                return Err(format!(
                    "module copy {copy:?} is not a path inside the session"
                ));
            }
            let shown = self.session_dir.join(copy);
            match self.dir.open_file(Path::new(copy)) {
                Ok(f) => {
                    let size = f.metadata().map_err(|e| format!("{copy}: {e}"))?.len();
                    if size > MAX_MODULE_BYTES {
                        return Err(format!(
                            "the module copy {copy}: {}",
                            SessionFileError::TooLarge {
                                size,
                                cap: MAX_MODULE_BYTES
                            }
                        ));
                    }
                    return Ok((f, shown));
                }
                Err(SessionFileError::Missing) => {}
                // Something is there and it is not a plain copy: not a reason to look elsewhere.
                Err(e) => return Err(format!("the module copy {copy}: {e}")),
            }
        }
        let missing = meta
            .copy
            .as_ref()
            .map(|c| format!("the module copy {c} is missing"))
            .unwrap_or_else(|| "no module copy was recorded".into());
        let Some(path) = &meta.path else {
            return Err(missing);
        };
        let p = PathBuf::from(path);
        let file = fs::File::open(&p).map_err(|e| format!("{missing}, and {path}: {e}"))?;
        let st = file
            .metadata()
            .map_err(|e| format!("{missing}, and {path}: {e}"))?;
        if !st.is_file() {
            return Err(format!("{missing}, and {path} is not a regular file"));
        }
        if !super::html::readable_by_requester(&st) {
            return Err(format!(
                "{missing}, and {path} is a file only root could read (covobs reads the modules the requesting user could)"
            ));
        }
        match (read_elf_notes(&file, &p), &meta.build_id) {
            (Ok((_, Some(id))), Some(want)) if id.eq_ignore_ascii_case(want) => Ok((file, p)),
            (Ok(_), None) => Ok((file, p)),
            (Ok((_, id)), Some(want)) => Err(format!(
                "{missing}, and {path} is another build (build id {}, recorded {want})",
                id.unwrap_or_else(|| "none".into())
            )),
            (Err(e), _) => Err(format!("{missing}, and {e}")),
        }
    }

    /// Per-file figures of the session now (see the module documentation for shared files).
    fn figures(&self) -> BTreeMap<String, FileFigures> {
        let mut owners: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, u) in self.units.iter().enumerate() {
            if !u.reported() {
                continue;
            }
            for f in u.files.keys() {
                owners.entry(f).or_default().push(i);
            }
        }
        owners
            .into_iter()
            .map(|(path, units)| {
                let totals = if let [only] = units[..] {
                    self.units[only].files[path]
                } else {
                    self.union_totals(path, &units)
                };
                let modules = units.iter().map(|&i| self.units[i].name.clone()).collect();
                (path.to_string(), FileFigures { totals, modules })
            })
            .collect()
    }

    fn union_totals(&self, path: &str, units: &[usize]) -> Totals {
        let mut merged: Option<super::model::FileCoverage> = None;
        let mut regions: Option<super::model::Counts> = None;
        let mut fallback = Totals::default();
        let mut complete = true;
        for &i in units {
            let u = &self.units[i];
            let fig = u.files[path];
            fallback.add(&fig);
            if let Some(r) = fig.regions {
                regions.get_or_insert_with(Default::default).add(r);
            }
            match u.detail.as_ref().and_then(|d| d.files.get(path)) {
                Some(f) => match &mut merged {
                    Some(m) => m.merge(f),
                    None => {
                        let mut f = f.clone();
                        // A single module's record stands for itself only once merged.
                        f.declared = Default::default();
                        merged = Some(f);
                    }
                },
                None => complete = false,
            }
        }
        match merged {
            Some(m) if complete => Totals {
                regions,
                ..m.totals()
            },
            _ => fallback,
        }
    }

    /// Everything the report files are made of. Brings every module's line detail up to date.
    pub fn build(&mut self, session: &Session) -> Result<ReportData, ReportError> {
        for i in 0..self.units.len() {
            if let UnitState::Llvm(m) = &mut self.units[i].state {
                let late = m.flush();
                self.late_failures(i, late);
            }
        }
        let stale: Vec<(usize, u64, Export)> = self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.detail.is_none() || u.detail_version != u.version())
            .filter_map(|(i, u)| Some((i, u.version(), u.llvm()?.export(true)?)))
            .collect();
        let results: Vec<(usize, u64, Result<Snapshot, String>)> = thread::scope(|s| {
            let handles: Vec<_> = stale
                .into_iter()
                .map(|(i, v, e)| s.spawn(move || (i, v, e.run())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| ReportError::Worker))
                .collect::<Result<Vec<_>, _>>()
        })?;
        // Through the same path as every export, so a failure is handled the same way.
        for (i, version, r) in results {
            let id = self.take_id();
            self.done.insert(id, (id, i, version, r));
        }
        self.apply_ready();
        // The figures read the modules' detail (shared files); then the detail moves into the
        // report (a copy of a million-counter module's detail costs about a second).
        let mut figures = self.figures();
        let mut coverage = Coverage::default();
        for u in &mut self.units {
            if !u.reported() {
                continue;
            }
            for (path, f) in u.detail.take().map(|d| d.files).unwrap_or_default() {
                match coverage.files.entry(path) {
                    std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&f),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(f);
                    }
                }
            }
        }
        let kernel = self.kernel_report();
        let mut modules: Vec<ModuleSummary> = self
            .units
            .iter()
            .map(|u| ModuleSummary {
                name: u.name.clone(),
                path: u.meta.path.clone(),
                build_id: u.meta.build_id.clone(),
                runtime: u.runtime.clone(),
                producer: u.meta.producer.clone(),
                tools: match &u.state {
                    UnitState::Llvm(m) => Some(m.describe()),
                    UnitState::Bisect(_) => {
                        Some("bisect_ppx points, lines from the OCaml sources".into())
                    }
                    UnitState::Gcov(g) => g.used.as_ref().map(|t| t.describe()),
                    UnitState::Sancov(_) => {
                        Some("SanitizerCoverage PCs, lines from the module's DWARF".into())
                    }
                    UnitState::Unavailable(_) => None,
                },
                artifacts: u.artifacts,
                files: u.files.len(),
                totals: total_of_files(&u.files),
                unavailable: match &u.state {
                    UnitState::Unavailable(why) => Some(why.clone()),
                    _ => None,
                },
            })
            .collect();
        let mut points = self.points.clone();
        let mut kernel_summary = None;
        if let Some(k) = kernel {
            for (path, f) in &k.coverage.files {
                figures.insert(
                    path.clone(),
                    FileFigures {
                        totals: f.totals(),
                        modules: vec!["vmlinux".into()],
                    },
                );
            }
            coverage.merge(&k.coverage);
            modules.push(ModuleSummary {
                name: "vmlinux".into(),
                path: None,
                build_id: k.summary.build_id.clone(),
                runtime: "kcov".into(),
                producer: k
                    .summary
                    .kernel_release
                    .as_ref()
                    .map(|r| format!("Linux {r}")),
                tools: Some(format!("symbolized with {}", k.summary.symbolized_by)),
                artifacts: k.summary.artifacts,
                files: k.coverage.files.len(),
                totals: k.summary.totals,
                unavailable: None,
            });
            // Each point gets the kernel's figures as of its artifact.
            for p in points.iter_mut() {
                if let Some((_, t)) = k.cumulative.iter().rev().find(|(seq, _)| *seq <= p.seq) {
                    p.totals.add(t);
                }
            }
            kernel_summary = Some(k.summary);
        }
        let mut data = ReportData::new(
            session,
            coverage,
            figures,
            modules,
            points,
            self.excluded.clone(),
            self.warnings.clone(),
            self.artifacts_seen,
        );
        data.bisect = self.bisect_inputs();
        data.kernel = kernel_summary;
        Ok(data)
    }
}

impl LiveCoverage {
    /// The kernel part, symbolized; its artifacts are left out (with the reason) when it cannot
    /// be.
    fn kernel_report(&mut self) -> Option<super::kcov::KernelReport> {
        if self.kernel.is_empty() {
            return None;
        }
        match self.kernel.build(self.opts.vmlinux.as_deref()) {
            Ok(k) => {
                for w in &k.warnings {
                    self.warnings.push(Warning {
                        module: Some("vmlinux".into()),
                        message: w.clone(),
                    });
                }
                Some(k)
            }
            Err(why) => {
                self.warnings.push(Warning {
                    module: Some("vmlinux".into()),
                    message: format!("kernel coverage is not in the report: {why}"),
                });
                None
            }
        }
    }
}

/// The session total from per-file figures.
pub fn total_of(figures: &BTreeMap<String, FileFigures>) -> Totals {
    let mut t = Totals::default();
    for f in figures.values() {
        t.add(&f.totals);
    }
    t
}

fn total_of_files(files: &BTreeMap<String, Totals>) -> Totals {
    let mut t = Totals::default();
    for f in files.values() {
        t.add(f);
    }
    t
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command, time::Instant};

    use super::*;
    use crate::{Format, model::Counts};

    const SOURCE: &str = "#include <stdlib.h>\n\
        static int f(int n) { int s = 0; for (int i = 0; i < n; i++) { if (i & 1) s += i; else s -= 1; } return s; }\n\
        static int g(void) { return 7; }\n\
        volatile int sink;\n\
        int main(int argc, char **argv) { int n = argc > 1 ? atoi(argv[1]) : 0;\n\
        if (n > 2) sink = f(n);\n\
        if (n == 1) sink = g();\n\
        return 0; }\n";

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A session with a clang 14 program's module copy; returns (session dir, binary).
    fn session(dir: &Path) -> PathBuf {
        let clang = Path::new("/usr/bin/clang-14");
        assert!(
            clang.exists(),
            "clang-14 is missing: the set-up installs it (./dev setup)"
        );
        fs::write(dir.join("p.c"), SOURCE).expect("source");
        let bin = dir.join("p");
        run(Command::new(clang)
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
            ])
            .arg(&bin)
            .arg(dir.join("p.c")));
        let s = dir.join("session");
        fs::create_dir_all(s.join("modules/b1")).expect("mkdir");
        fs::copy(&bin, s.join("modules/b1/p")).expect("copy");
        bin
    }

    /// Run the program and lay its profile out as artifact `seq`; the metadata path.
    fn dump(dir: &Path, bin: &Path, seq: u64, arg: &str) -> PathBuf {
        let raw = dir.join(format!("{seq}.profraw"));
        run(Command::new(bin).arg(arg).env("LLVM_PROFILE_FILE", &raw));
        let pdir = dir.join("session/77-p");
        fs::create_dir_all(&pdir).expect("mkdir");
        let stem = format!("{seq:06}-llvm");
        fs::copy(&raw, pdir.join(format!("{stem}.profraw"))).expect("copy");
        let meta = serde_json::json!({
            "seq": seq, "runtime": "llvm", "pid": 77, "valid": true, "end_ns": seq * 1000,
            "file": format!("{stem}.profraw"),
            "module": {"path": bin.to_string_lossy(), "build_id": "b1", "copy": "modules/b1/p",
                       "producer": "Debian clang version 14.0.6"}
        });
        let p = pdir.join(format!("{stem}.json"));
        fs::write(&p, meta.to_string()).expect("metadata");
        p
    }

    fn point(p: Progress) -> TimelinePoint {
        match p {
            Progress::Point(p) => p,
            other => panic!("expected a point, got {other:?}"),
        }
    }

    #[test]
    fn live_coverage_grows_then_finishes_into_the_report() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = session(tmp.path());
        let sdir = tmp.path().join("session");
        let opts = ReportOptions {
            formats: [Format::Json, Format::Lcov].into_iter().collect(),
            ..ReportOptions::default()
        };
        let mut live = LiveCoverage::new(&sdir, &opts).expect("live");
        let p1 = point(live.add(&dump(tmp.path(), &bin, 1, "0")).expect("add 1"));
        let p2 = point(live.add(&dump(tmp.path(), &bin, 2, "1")).expect("add 2"));
        assert!(p2.totals.lines.hit > p1.totals.lines.hit, "{p1:?} {p2:?}");
        assert_eq!(p2.totals.functions, Counts::new(2, 3));
        // The same counters again: same figures, no export.
        let meta3 = dump(tmp.path(), &bin, 3, "1");
        let p3 = point(live.add(&meta3).expect("add 3"));
        assert_eq!(p3.totals, p2.totals);
        assert_eq!(live.add(&meta3).expect("again"), Progress::AlreadySeen);
        assert_eq!(live.latest().map(|p| p.seq), Some(3));
        // Artifact 4 arrives in the directory without being added: finish() picks it up.
        dump(tmp.path(), &bin, 4, "5");
        let summary = live.finish().expect("finish");
        assert_eq!(summary.reported, 4);
        assert_eq!(summary.totals.functions, Counts::new(3, 3));
        let t: serde_json::Value =
            serde_json::from_slice(&fs::read(sdir.join("report/timeline.json")).expect("timeline"))
                .expect("json");
        let points = t["points"].as_array().expect("points");
        assert_eq!(points.len(), 4);
        assert_eq!(points[3]["functions"]["hit"], 3);
        assert!(sdir.join("report/coverage.lcov").exists());
        assert!(!sdir.join("report/html").exists());
    }

    #[test]
    fn live_coverage_can_move_to_a_blocking_thread() {
        fn send<T: Send + 'static>() {}
        send::<LiveCoverage>();
        send::<Progress>();
    }

    #[test]
    fn a_late_artifact_rebuilds_the_timeline_in_seq_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = session(tmp.path());
        let sdir = tmp.path().join("session");
        let opts = ReportOptions {
            formats: [Format::Json].into_iter().collect(),
            ..ReportOptions::default()
        };
        let mut live = LiveCoverage::new(&sdir, &opts).expect("live");
        live.add(&dump(tmp.path(), &bin, 2, "1")).expect("add 2");
        // seq 1 shows up after seq 2 was added.
        dump(tmp.path(), &bin, 1, "0");
        let summary = live.finish().expect("finish");
        assert_eq!(summary.reported, 2);
        let t: serde_json::Value =
            serde_json::from_slice(&fs::read(sdir.join("report/timeline.json")).expect("timeline"))
                .expect("json");
        let seqs: Vec<u64> = t["points"]
            .as_array()
            .expect("points")
            .iter()
            .filter_map(|p| p["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [1, 2]);
    }

    /// Benchmark: the cost of one live step (merge + export) on a small C program.
    /// `cargo test -p covobs --lib live_step -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn bench_live_step() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = session(tmp.path());
        let sdir = tmp.path().join("session");
        let mut live = LiveCoverage::new(&sdir, &ReportOptions::default()).expect("live");
        let metas: Vec<PathBuf> = (1..=100)
            .map(|i| dump(tmp.path(), &bin, i, &i.to_string()))
            .collect();
        let mut times = Vec::new();
        for m in &metas {
            let t = Instant::now();
            point(live.add(m).expect("add"));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "live step (merge + export), 100 dumps with new counters: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            times[50], times[90], times[99]
        );
    }
}
