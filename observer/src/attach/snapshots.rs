//! Snapshots in an attach session: `--mode snapshot` reads each target's counters from its memory
//! on every tick (no signal), and in both modes the kernel copies them once more as a target
//! exits (its final snapshot). One worker task per target takes the snapshots in order, so the
//! deltas are computed against the previous snapshot of the same module.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::AtomicU64},
};

use tokio::sync::mpsc;

use super::{
    Mode,
    artifact::{self, Slot},
    session::Outcome,
};
use crate::{
    collect::{self, Artifact, ArtifactMeta, LocatedBy, ModuleMeta, SourceInfo, Trigger},
    discover::{FileId, Mapped, Module, Runtime},
    events::{Body, Event},
    layout::artifact::LAYOUT,
    probes::{
        Probes,
        final_snapshots::{FinalReader, FinalSnapshots},
    },
    snapshot::{
        DeltaTracker, ModulePlan, ReadTiming, Snapshot,
        exit::{self, Assembler, FinalCopy, FinalRecord},
        plan_process,
    },
    stream::Sender,
    sys::clock,
};

/// How long after a target's exit its final copy may still arrive.
const FINAL_GRACE_NS: u64 = 3_000_000_000;

enum Job {
    /// Read the counters now.
    Live { requests: Vec<u64> },
    /// The kernel's copy at exit; `keep[i]` says whether plan i's snapshot is written.
    Final { copy: FinalCopy, keep: Vec<bool> },
}

struct Target {
    plans: Arc<Vec<ModulePlan>>,
    jobs: mpsc::UnboundedSender<Job>,
    /// A final copy is registered in the kernel.
    registered: bool,
    /// Modules whose runtime dumped at exit (signal mode: their final snapshot adds nothing).
    exit_dumped: HashSet<FileId>,
    /// The process exited at this time (CLOCK_BOOTTIME ns); its final copy is awaited.
    exited_ns: Option<u64>,
}

/// The session's snapshot side. Owned by the session.
pub struct Snapshots {
    mode: Mode,
    /// Plan and register targets (always in snapshot mode; in signal mode with
    /// --final-snapshot).
    enabled: bool,
    kernel: Option<FinalSnapshots>,
    /// Why final snapshots are unavailable, when they are.
    kernel_error: Option<String>,
    reader: Option<FinalReader>,
    assembler: Assembler,
    targets: HashMap<u32, Target>,
    generation: u64,
    tx: Sender,
    seq: Arc<AtomicU64>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    /// `lost` events sent since the session last took the count (`take_lost`).
    lost: u64,
}

fn event(pid: u32, tid: u32, body: Body) -> Event {
    Event {
        ts_ns: clock::boot_ns(),
        pid,
        tid,
        body,
    }
}

fn lost(pid: u32, what: &str, reason: String) -> Event {
    event(
        pid,
        pid,
        Body::Lost {
            reason,
            what: what.to_owned(),
            count: 1,
        },
    )
}

impl Snapshots {
    pub fn new(
        probes: &mut Probes,
        mode: Mode,
        final_in_signal_mode: bool,
        ring_bytes: u32,
        tx: Sender,
        seq: Arc<AtomicU64>,
        done_tx: mpsc::UnboundedSender<Outcome>,
    ) -> Self {
        let enabled = mode == Mode::Snapshot || final_in_signal_mode;
        let (kernel, reader, kernel_error) = if !enabled {
            (None, None, None)
        } else {
            match probes.final_snapshots(ring_bytes) {
                Ok((k, r)) => (Some(k), Some(r), None),
                Err(e) => {
                    tracing::warn!("final snapshots at exit are unavailable: {e}");
                    (None, None, Some(e.to_string()))
                }
            }
        };
        Self {
            mode,
            enabled,
            kernel,
            kernel_error,
            reader,
            assembler: Assembler::default(),
            targets: HashMap::new(),
            generation: 0,
            tx,
            seq,
            done_tx,
            lost: 0,
        }
    }

    /// A `lost` event of the snapshot side itself (not of a snapshot job, which the session
    /// counts from its outcome).
    async fn report_lost(&mut self, e: Event) {
        self.lost += 1;
        self.tx.event(e).await;
    }

    /// The `lost` events sent since the last call, for the session's counters.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// The reader of the kernel's final copies (the session loop polls it). Taken once.
    pub fn take_reader(&mut self) -> Option<FinalReader> {
        self.reader.take()
    }

    /// Plan the snapshots of a newly adopted process and register its final copy. Returns the
    /// runtimes it can be snapshotted for; problems become `lost` events.
    pub async fn adopt(
        &mut self,
        pid: u32,
        comm: &str,
        dir: &str,
        modules: &[Mapped],
    ) -> Vec<Runtime> {
        self.forget(pid);
        if !self.enabled {
            return Vec::new();
        }
        let mapped = modules.to_vec();
        let planned = tokio::task::spawn_blocking(move || {
            let r = plan_process(pid as i32, &mapped);
            // Make every counter page resident now: the kernel's copy at exit cannot fault pages
            // in, and pages never touched would otherwise fail to read (they hold zeros).
            if let Ok((plans, _)) = &r {
                for p in plans {
                    let _ = p.take(pid as i32);
                }
            }
            r
        })
        .await;
        let (plans, failed) = match planned {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                self.report_lost(lost(pid, "snapshot", e.to_string())).await;
                return Vec::new();
            }
            Err(e) => {
                self.report_lost(lost(pid, "snapshot", e.to_string())).await;
                return Vec::new();
            }
        };
        for (module, e) in failed {
            self.report_lost(lost(
                pid,
                "snapshot",
                format!("{} cannot be snapshotted: {e}", module.path),
            ))
            .await;
        }
        if plans.is_empty() {
            return Vec::new();
        }
        let mut registered = false;
        self.generation += 1;
        match (&mut self.kernel, exit::regions(&plans, self.generation)) {
            (Some(k), Ok(regions)) => match k.register(pid, &regions) {
                Ok(()) => {
                    self.assembler.register(
                        pid,
                        self.generation,
                        plans.iter().flat_map(|p| p.live_ranges()).collect(),
                    );
                    registered = true;
                }
                Err(e) => {
                    self.report_lost(lost(
                        pid,
                        "final snapshot",
                        format!("registering it in the kernel: {e}"),
                    ))
                    .await
                }
            },
            (Some(_), Err(e)) => {
                self.report_lost(lost(pid, "final snapshot", e.to_string()))
                    .await
            }
            (None, _) => {
                let why = self.kernel_error.clone().unwrap_or_default();
                self.report_lost(lost(
                    pid,
                    "final snapshot",
                    format!("coverage reached after the last snapshot is lost at exit: {why}"),
                ))
                .await
            }
        }
        let mut runtimes: Vec<Runtime> = plans.iter().map(|p| p.runtime()).collect();
        runtimes.sort();
        runtimes.dedup();
        let plans = Arc::new(plans);
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(
            rx,
            pid,
            comm.to_owned(),
            dir.to_owned(),
            plans.clone(),
            self.seq.clone(),
            self.tx.clone(),
            self.done_tx.clone(),
        ));
        self.targets.insert(
            pid,
            Target {
                plans,
                jobs,
                registered,
                exit_dumped: HashSet::new(),
                exited_ns: None,
            },
        );
        runtimes
    }

    /// Snapshot one target now. Returns the number of artifacts to expect (one per module).
    pub fn request(&mut self, pid: u32, requests: Vec<u64>) -> usize {
        let Some(t) = self.targets.get(&pid) else {
            return 0;
        };
        if t.exited_ns.is_some() {
            return 0;
        }
        match t.jobs.send(Job::Live { requests }) {
            Ok(()) => t.plans.len(),
            Err(_) => 0,
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.targets.keys().copied().collect()
    }

    /// The runtime of `module` dumped at exit (the process called exit()).
    pub fn exit_dump_seen(&mut self, pid: u32, module: &Module) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.exit_dumped.insert(module.file);
        }
    }

    /// The process exec'd: its counters went with the old program image.
    pub async fn exec(&mut self, pid: u32) {
        if self.targets.contains_key(&pid) {
            self.forget(pid);
            self
                .report_lost(lost(
                    pid,
                    "final snapshot",
                    "the process called exec: coverage reached since its last snapshot went with the old program image".into(),
                ))
                .await;
        }
    }

    /// The process exited: its final copy should be on its way.
    pub fn exited(&mut self, pid: u32) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.exited_ns = Some(clock::boot_ns());
        }
    }

    fn forget(&mut self, pid: u32) {
        if let Some(t) = self.targets.remove(&pid)
            && t.registered
            && let Some(k) = &mut self.kernel
        {
            k.unregister(pid);
        }
        self.assembler.forget(pid);
    }

    /// Records from the kernel. Returns how many artifacts the final copies it completed will
    /// bring (the session counts them in flight).
    pub async fn on_records(&mut self, records: impl Iterator<Item = FinalRecord>) -> usize {
        let mut expected = 0;
        for r in records {
            let Some(copy) = self.assembler.add(r) else {
                continue;
            };
            let pid = copy.pid;
            let Some(t) = self.targets.remove(&pid) else {
                continue;
            };
            let keep: Vec<bool> = t
                .plans
                .iter()
                .map(|p| self.mode == Mode::Snapshot || !t.exit_dumped.contains(&p.module.file))
                .collect();
            let n = keep.iter().filter(|k| **k).count();
            if n == 0 {
                // Every module's runtime dumped at exit (signal mode): nothing to add.
                continue;
            }
            if copy.dropped > 0 {
                self
                    .report_lost(lost(
                        pid,
                        "final snapshot",
                        format!(
                            "{} pages of counters did not fit in the kernel's {}-byte snapshot ring buffer at exit: they are missing (zero) in the final snapshot",
                            copy.dropped,
                            self.kernel.as_ref().map_or(0, |k| k.ring_bytes)
                        ),
                    ))
                    .await;
            }
            let total: u64 = copy.regions.iter().map(|r| r.len() as u64).sum();
            if total > 0 && copy.unreadable_bytes >= total {
                // Nothing was read: a snapshot of zeros would claim the coverage vanished.
                self
                    .report_lost(lost(
                        pid,
                        "final snapshot",
                        format!(
                            "the kernel could not read any of the {total} bytes of counters at exit ({}): the process's memory was already gone (kernels that trace sched_process_exit after releasing it) or not resident; coverage reached since the last snapshot is lost",
                            copy.hook
                        ),
                    ))
                    .await;
                continue;
            }
            if copy.dropped == 0 && copy.unreadable_bytes > 0 {
                self
                    .report_lost(lost(
                        pid,
                        "final snapshot",
                        format!(
                            "{} of {total} bytes of counters could not be read at exit (pages not resident): they are zero in the final snapshot",
                            copy.unreadable_bytes
                        ),
                    ))
                    .await;
            }
            if t.jobs.send(Job::Final { copy, keep }).is_ok() {
                expected += n;
            }
        }
        expected
    }

    /// Final copies that did not come within the grace period after exit.
    pub async fn expire(&mut self, all: bool) {
        let now = clock::boot_ns();
        let late: Vec<u32> = self
            .targets
            .iter()
            .filter(|(_, t)| {
                t.exited_ns
                    .is_some_and(|at| all || now.saturating_sub(at) > FINAL_GRACE_NS)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in late {
            let registered = self.targets.get(&pid).is_some_and(|t| t.registered);
            self.forget(pid);
            if registered {
                self
                    .report_lost(lost(
                        pid,
                        "final snapshot",
                        "the kernel sent no copy of the counters at exit (the process's memory was gone, or the copy did not fit in the ring buffer)".into(),
                    ))
                    .await;
            }
        }
    }

    /// Final copies still awaited.
    pub fn busy(&self) -> bool {
        self.targets
            .values()
            .any(|t| t.exited_ns.is_some() && t.registered)
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.targets.keys().copied().collect();
        for pid in pids {
            self.forget(pid);
        }
    }
}

/// The snapshots of one target, in order.
#[allow(clippy::too_many_arguments)]
async fn worker(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    pid: u32,
    comm: String,
    dir: String,
    plans: Arc<Vec<ModulePlan>>,
    seq: Arc<AtomicU64>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
) {
    let mut deltas = DeltaTracker::default();
    // The instance these snapshots are of (read while the process is there: adopted just now).
    let process_start_ns = crate::target::start_boot_ns(pid as i32);
    while let Some(job) = jobs.recv().await {
        let plans = plans.clone();
        let (trigger, requests, keep) = match &job {
            Job::Live { requests } => {
                (Trigger::Snapshot, requests.clone(), vec![true; plans.len()])
            }
            Job::Final { keep, .. } => (Trigger::Final, Vec::new(), keep.clone()),
        };
        let taken = tokio::task::spawn_blocking(move || take(pid, &plans, job))
            .await
            .unwrap_or_default();
        for (i, result) in taken.into_iter().enumerate() {
            if !keep.get(i).copied().unwrap_or(false) {
                continue;
            }
            let result = match result {
                Ok(mut snap) => {
                    // A module can carry both LLVM and SanitizerCoverage counters: one history each.
                    let key = format!("{} {}", snap.runtime.as_str(), snap.module.path);
                    let d = deltas.update(pid, &key, snap.covered.clone());
                    snap.info.delta = d;
                    let memory = format!("/proc/{pid}/mem");
                    deliver(
                        pid,
                        process_start_ns,
                        &comm,
                        &dir,
                        trigger,
                        snap,
                        &seq,
                        &tx,
                        &memory,
                    )
                    .await
                }
                Err(reason) => {
                    tx.event(lost(pid, "snapshot", reason.clone())).await;
                    Err(reason)
                }
            };
            let _ = done_tx.send(Outcome {
                pid,
                requests: requests.clone(),
                result,
            });
        }
    }
}

/// Read (or, for a final copy, rebuild) the snapshot of every plan. Blocking.
fn take(pid: u32, plans: &[ModulePlan], job: Job) -> Vec<Result<Snapshot, String>> {
    match job {
        Job::Live { .. } => plans
            .iter()
            .map(|p| {
                p.take(pid as i32)
                    .map_err(|e| format!("snapshot of {}: {e}", p.module.path))
            })
            .collect(),
        Job::Final { copy, .. } => {
            let mut regions = copy.regions.into_iter();
            let mut unreadable = copy.unreadable.into_iter();
            let read = ReadTiming {
                start_ns: copy.start_ns,
                end_ns: copy.end_ns,
                bytes: 0,
                syscalls: 0,
            };
            plans
                .iter()
                .map(|p| {
                    let n = p.live_ranges().len();
                    let live: Vec<Vec<u8>> = regions.by_ref().take(n).collect();
                    let bytes: u64 = live.iter().map(|b| b.len() as u64).sum();
                    let unreadable: u64 = unreadable.by_ref().take(n).sum();
                    Ok(p.build(
                        live,
                        ReadTiming { bytes, ..read },
                        copy.hook.to_owned(),
                        unreadable,
                    ))
                })
                .collect()
        }
    }
}

/// Hand one snapshot to the pipeline; the artifact's name relative to the session directory.
/// `memory` names where the counters were read (`/proc/PID/mem` for a process's own memory).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    pid: u32,
    process_start_ns: Option<u64>,
    comm: &str,
    dir: &str,
    trigger: Trigger,
    snap: Snapshot,
    seq: &AtomicU64,
    tx: &Sender,
    memory: &str,
) -> Result<String, String> {
    let runtime = snap.runtime;
    let slot = Slot::take(seq, runtime);
    let rel = artifact::rel(dir, &slot.file);
    let info = snap.info.clone();
    let valid = runtime.observed().snapshot_invalid(&snap.bytes);
    let tid = pid;
    let meta = ArtifactMeta {
        seq: slot.seq,
        runtime: runtime.into(),
        pid,
        tid: Some(tid),
        comm: Some(comm.to_owned()),
        trigger: Some(trigger.into()),
        start_ns: Some(info.read.start_ns),
        end_ns: Some(info.read.end_ns),
        collected_ns: Some(clock::boot_ns()),
        bytes: Some(snap.bytes.len() as u64),
        checksum: Some(collect::checksum(&snap.bytes)),
        valid: valid.is_none(),
        invalid_reason: valid,
        file: slot.file,
        source: SourceInfo {
            path: memory.to_owned(),
            offset: info.counters_addr,
            inode: None,
            dev: None,
            located_by: Some(LocatedBy::Memory),
        },
        format: snap.format.clone(),
        module: Some(ModuleMeta::from(&*snap.module)),
        parts: Vec::new(),
        kcov: None,
        snapshot: Some(info.clone()),
        process_start_ns,
        merged: None,
        layout: LAYOUT,
    };
    let extra = snap
        .counter_map
        .map(|m| vec![("counters", m.into())])
        .unwrap_or_default();
    let snapshot = Body::Snapshot {
        runtime,
        module: snap.module.path.clone(),
        trigger,
        file: rel,
        counters: info.counters,
        covered: info.delta.covered,
        new_covered: info.delta.new_covered,
        reset: info.delta.reset,
        method: info.method.clone(),
        bytes_read: info.read.bytes,
        read_ns: info.read.end_ns.saturating_sub(info.read.start_ns),
    };
    let out = Artifact {
        dir: dir.to_owned(),
        meta,
        data: snap.bytes.into(),
        parts: Vec::new(),
        extra,
    };
    artifact::write(tx, out, Some(snapshot), "a valid raw profile").await
}
