//! One attach session: the single owner of the probes, the targets, the dumps in flight and the
//! requests waiting for them. The loop in `attach::run` feeds it records, ticks and requests.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use tokio::sync::mpsc;

use super::{
    AttachOptions, Purpose,
    collections::Collections,
    collector::CollectJob,
    deliveries::Deliveries,
    losses::Losses,
    requests::Requests,
    snapshots::Snapshots,
    targets::{HookTable, TargetState},
};
use crate::{
    collect::{ActiveDump, DumpTracker, Trigger},
    discover::Discovery,
    events::{Body, Event},
    probes::{Probes, records::Record},
    stream::Sender,
    sys::clock,
    target::Tracker,
};

/// How long a file-tracking window stays open after the last dump covobs asked for.
pub(super) const WINDOW_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

pub use super::collections::Outcome;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub dumps_triggered: u64,
    pub deliveries_confirmed: u64,
    pub deliveries_misplaced: u64,
    pub dumps_seen: u64,
    pub artifacts: u64,
    pub invalid_artifacts: u64,
    /// Filled in from the session's [`Losses`] by [`Session::counters`].
    pub lost: u64,
    pub ring_buffer_drops: u64,
    /// Snapshots asked for (`--mode snapshot`), one per target and tick.
    pub snapshots: u64,
}

pub struct Session {
    pub(super) opts: Arc<AttachOptions>,
    pub(super) probes: Probes,
    pub(super) tracker: Tracker,
    pub(super) discovery: Discovery,
    pub(super) hooks: HookTable,
    pub(super) targets: BTreeMap<u32, TargetState>,
    pub(super) dumps: DumpTracker,
    pub(super) tx: Sender,
    /// Collections running now, their sequence numbers and outcomes.
    pub(super) collections: Collections,
    /// Every loss, counted once.
    losses: Losses,
    /// Requests waiting for dumps.
    pub(super) requests: Requests,
    /// The cwd and root handles dumps share.
    dump_dirs: super::dump_dirs::DumpDirs,
    counters: Counters,
    pub(super) out_dir: PathBuf,
    /// Every target ever attached (for session.json).
    pub(super) history: Vec<crate::layout::session::Target>,
    /// Since when no dump covobs asked for is expected (the window closes after WINDOW_LINGER).
    pub(super) window_idle_since: Option<std::time::Instant>,
    /// Which thread runs OCaml in each process.
    pub(super) ocaml: crate::target::ocaml::OcamlThreads,
    /// Signals covobs sent, waiting for their signal_deliver.
    pub(super) deliveries: Deliveries,
    /// Snapshots from memory, and the final ones the kernel copies at exit.
    pub(super) snapshots: Snapshots,
    /// Kernel coverage of the targets (kcov users; the workload of `covobs run --kernel`).
    pub(super) kcov: crate::runtimes::kcov::KcovObserver,
    /// The workload `covobs run` launched: adopted at its exec, its ioctl() not probed.
    pub(super) launched: Option<u32>,
    /// What covobs learned of the workload before its exec, for when it is gone by the time
    /// covobs sees the exec (a short workload on a busy machine).
    pub(super) launched_prep: Option<LaunchedPrep>,
}

/// The launched workload as known before its exec: its root (the same after exec), its
/// executable and the profile file its environment (covobs' own) names.
#[derive(Clone)]
pub(super) struct LaunchedPrep {
    pub root: Option<Arc<crate::target::files::TargetDir>>,
    pub program: crate::discover::Mapped,
    pub llvm_profile: Option<crate::runtimes::llvm::path::Expanded>,
}

pub(super) fn event(pid: u32, tid: u32, body: Body) -> Event {
    Event {
        ts_ns: clock::boot_ns(),
        pid,
        tid,
        body,
    }
}

impl Session {
    pub fn new(
        opts: Arc<AttachOptions>,
        mut probes: Probes,
        tracker: Tracker,
        tx: Sender,
        done_tx: mpsc::UnboundedSender<Outcome>,
        out_dir: PathBuf,
    ) -> Self {
        let collections = Collections::new(done_tx);
        // Only a collecting session reads final snapshots.
        let snapshots = Snapshots::new(
            &mut probes,
            opts.mode,
            opts.final_snapshot && opts.purpose == Purpose::Collect,
            crate::probes::final_snapshots::DEFAULT_SNAPSHOT_RING_BYTES,
            tx.clone(),
            collections.seq(),
            collections.outcomes(),
        );
        Self {
            opts,
            probes,
            tracker,
            discovery: Discovery::new(),
            hooks: HookTable::default(),
            targets: BTreeMap::new(),
            dumps: DumpTracker::default(),
            losses: Losses::new(tx.clone()),
            tx,
            collections,
            requests: Requests::default(),
            dump_dirs: Default::default(),
            counters: Counters::default(),
            out_dir,
            history: Vec::new(),
            window_idle_since: None,
            ocaml: Default::default(),
            deliveries: Deliveries::default(),
            snapshots,
            kcov: crate::runtimes::kcov::KcovObserver::new(),
            launched: None,
            launched_prep: None,
        }
    }

    /// One thing lost, counted, with its `lost` event.
    pub(super) async fn lost(&mut self, pid: u32, tid: u32, what: &str, reason: String) {
        self.losses.report(pid, tid, what, reason).await;
    }

    /// The session's losses (the only counter of them).
    pub(super) fn losses(&mut self) -> &mut Losses {
        &mut self.losses
    }

    /// The counters as they stand (session.json's, the progress line's).
    pub fn counters(&self) -> Counters {
        Counters {
            lost: self.losses.lost(),
            ring_buffer_drops: self.losses.ring_buffer_drops(),
            ..self.counters.clone()
        }
    }

    /// The counters, to count in.
    pub(super) fn count(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// The kernel's ring-buffer drops so far, as `lost` events.
    pub async fn check_ring_buffer(&mut self) {
        self.losses.ring_buffer(&self.probes).await;
    }

    /// Collections not answered yet.
    pub fn in_flight(&self) -> usize {
        self.collections.in_flight()
    }

    /// A handle on the pipeline.
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// Report an event the tracker produced outside the record stream (the initial targets).
    pub async fn on_record_event(&mut self, e: Event) {
        self.tx.event(e).await;
    }

    /// Read the counters of one target now (`--mode snapshot`). Returns the artifacts to expect.
    pub(super) fn snapshot(&mut self, pid: u32, requests: Vec<u64>) -> usize {
        let n = self.snapshots.request(pid, requests);
        if n > 0 {
            self.counters.snapshots += 1;
            self.collections.started(n);
        }
        n
    }

    /// Records of the kernel's final-snapshot ring buffer.
    pub async fn on_final_records(
        &mut self,
        records: impl Iterator<Item = crate::snapshot::exit::FinalRecord>,
    ) {
        let n = self.snapshots.on_records(records).await;
        self.collections.started(n);
        self.count_snapshot_losses();
    }

    /// Count the `lost` events the snapshot side sent on its own.
    pub(super) fn count_snapshot_losses(&mut self) {
        self.losses.reported_elsewhere(self.snapshots.take_lost());
    }

    /// Dumps still expected or running, and collections not finished.
    pub fn busy(&self) -> bool {
        self.snapshots.busy()
            || self.collections.in_flight() > 0
            || self.targets.values().any(|t| !t.pending.is_empty())
            || self.dumps_active()
    }

    /// Answers covobs still waits for: dumps it asked for, final snapshots of exited targets.
    pub(super) fn awaiting_dumps(&self) -> bool {
        self.snapshots.busy() || self.targets.values().any(|t| !t.pending.is_empty())
    }

    pub(super) fn dumps_active(&self) -> bool {
        self.targets.keys().any(|pid| {
            self.tracker
                .get(*pid)
                .is_some_and(|t| t.threads.keys().any(|tid| self.dumps.is_active(*tid)))
        })
    }

    /// Handle one record of the eBPF programs.
    pub async fn on_record(&mut self, record: Record) {
        match record {
            Record::Event(decoded) => {
                let events = self.tracker.on_record(&mut self.probes, decoded);
                for e in events {
                    self.on_event(e).await;
                }
            }
            Record::DumpStart { hdr, cookie } => {
                self.on_dump_start(hdr.tgid, hdr.tid, hdr.ts_ns, hdr._reserved, cookie)
                    .await
            }
            Record::FileOpen {
                hdr,
                ret,
                file,
                path,
                ..
            } => {
                let (ino, dev) = identity(&file);
                self.dumps.file_open(hdr.tid, ret, path, ino, dev);
            }
            Record::FileWrite {
                hdr,
                fd,
                call,
                ret,
                offset,
                file,
                ..
            } => {
                let (ino, dev) = identity(&file);
                let pos = (file.known != 0).then_some(file.pos);
                let explicit = (call == 1 || call == 3).then_some(offset);
                self.dumps
                    .file_write(hdr.tid, fd, ret, pos, explicit, ino, dev);
            }
            Record::DumpEnd {
                hdr,
                cookie,
                ret,
                start_ns,
            } => {
                self.on_dump_end(hdr.tgid, hdr.tid, hdr.ts_ns, cookie, ret, start_ns)
                    .await
            }
            Record::Selftest { .. } => {}
            Record::KcovIoctl(rec) => {
                let out = self.kcov.on_ioctl(&rec);
                self.kcov_out(out).await;
            }
            Record::KcovChunk {
                hdr,
                event_id,
                index,
                words,
            } => self.kcov.on_chunk(event_id, index, words, hdr.ts_ns),
            Record::BpfSignalSent {
                hdr,
                sig,
                ret,
                requested_ns,
            } => {
                self.on_bpf_signal_sent(hdr.tgid, hdr.tid, sig, ret, requested_ns)
                    .await
            }
        }
    }

    async fn on_event(&mut self, e: Event) {
        let pid = e.pid;
        let tid = e.tid;
        // A process that took the watched name by its exec (seen by the kernel) runs a new image.
        let adopt = match &e.body {
            Body::Target { comm, reason, .. } => Some((comm.clone(), *reason == "exec")),
            _ => None,
        };
        let exited = matches!(e.body, Body::ProcessExit { .. });
        let thread_exit = matches!(e.body, Body::ThreadExit { .. });
        let delivered = match &e.body {
            Body::SignalDeliver { sig, .. } => Some((*sig, e.ts_ns)),
            _ => None,
        };
        // An exec from before covobs adopted the process is the one that made the image it
        // adopted (the kernel's record can arrive after the adoption): nothing went with it.
        let exec = matches!(e.body, Body::ProcessExec { .. })
            && (self
                .targets
                .get(&pid)
                .is_some_and(|t| e.ts_ns > t.adopted_ns)
                || self.launched == Some(pid));
        let kcov_exit = match &e.body {
            Body::ThreadExit { .. } => Some(Some(tid)),
            Body::ProcessExit { .. } => Some(None),
            _ => None,
        };
        self.tx.event(e).await;
        if let Some(which) = kcov_exit {
            let out = self.kcov.on_exit(pid, which);
            self.kcov_out(out).await;
        }
        if let Some((sig, ts)) = delivered {
            self.confirm_delivery(pid, tid, sig, ts).await;
        }
        if let Some((comm, fresh_image)) = adopt {
            self.adopt(pid, &comm, fresh_image).await;
        }
        if exec {
            self.snapshots.exec(pid).await;
            self.count_snapshot_losses();
            // A new program image: its runtimes may differ.
            let comm = self
                .tracker
                .get(pid)
                .map(|t| t.process.comm.clone())
                .unwrap_or_default();
            self.targets.remove(&pid);
            self.kcov.rename(pid, &comm);
            self.adopt(pid, &comm, true).await;
        }
        if thread_exit && let Some(d) = self.dumps.abandon_thread(tid) {
            self.lost(
                pid,
                tid,
                d.hook.runtime.as_str(),
                format!(
                    "thread {tid} exited in the middle of a {} dump: nothing collected",
                    d.hook.function
                ),
            )
            .await;
        }
        if exited {
            self.dump_dirs.forget(pid);
            self.snapshots.exited(pid);
            self.ocaml.forget(pid);
            self.deliveries.forget(pid);
        }
        if exited && let Some(state) = self.targets.remove(&pid) {
            for p in state.pending {
                for rt in &p.runtimes {
                    self.lost(
                        pid,
                        p.tid,
                        rt.as_str(),
                        format!(
                            "process {pid} exited before the {} dump covobs asked for",
                            rt.as_str()
                        ),
                    )
                    .await;
                }
                for id in &p.requests {
                    self.finish_request(
                        Some(*id),
                        p.runtimes.len(),
                        None,
                        Some(format!("process {pid} exited")),
                    )
                    .await;
                }
            }
        }
    }

    async fn on_dump_start(&mut self, pid: u32, tid: u32, ts: u64, flags: u32, cookie: u64) {
        let Some(hook) = self.hooks.get(cookie) else {
            return;
        };
        self.counters.dumps_seen += 1;
        let claimed = self
            .targets
            .get_mut(&pid)
            .is_some_and(|t| t.claim(hook.runtime, ts));
        let trigger = if claimed {
            Trigger::Signal
        } else if flags & 1 != 0 {
            Trigger::Exit
        } else {
            Trigger::SelfDump
        };
        if trigger == Trigger::Exit {
            self.snapshots.exit_dump_seen(pid, &hook.module);
        }
        if let Some(t) = self.targets.get_mut(&pid) {
            *t.dumps.entry(hook.runtime).or_default() += 1;
        }
        self.tx
            .event(Event {
                ts_ns: ts,
                pid,
                tid,
                body: Body::DumpStart {
                    runtime: hook.runtime,
                    module: hook.module.path.clone(),
                    function: hook.function.clone(),
                    trigger,
                },
            })
            .await;
        let mut dir_error = None;
        let mut open = |which| {
            self.dump_dirs.open(pid, which).unwrap_or_else(|e| {
                dir_error = Some(e);
                None
            })
        };
        let (cwd, root) = (open("cwd"), open("root"));
        let unended = self.dumps.start(ActiveDump {
            pid,
            tid,
            hook,
            start_ns: ts,
            trigger,
            cwd,
            root,
            dir_error,
            files: Vec::new(),
        });
        if let Some(d) = unended {
            self.lost(
                d.pid,
                d.tid,
                d.hook.runtime.as_str(),
                format!(
                    "{} dump on thread {}: its end was not seen (its record was lost to a full ring buffer) before the thread's next dump began",
                    d.hook.runtime.as_str(),
                    d.tid
                ),
            )
            .await;
        }
    }

    async fn on_dump_end(
        &mut self,
        pid: u32,
        tid: u32,
        ts: u64,
        cookie: u64,
        ret: i64,
        start_ns: u64,
    ) {
        let Some(hook) = self.hooks.get(cookie) else {
            return;
        };
        self.tx
            .event(Event {
                ts_ns: ts,
                pid,
                tid,
                body: Body::DumpEnd {
                    runtime: hook.runtime,
                    module: hook.module.path.clone(),
                    function: hook.function.clone(),
                    ret,
                    duration_ns: ts.saturating_sub(start_ns),
                },
            })
            .await;
        let Some(done) = self.dumps.end(tid, ts, ret) else {
            self.lost(
                pid,
                tid,
                hook.runtime.as_str(),
                "its start was not seen (the dump began before covobs reported this process's dumps, or its start record was lost to a full ring buffer): its output is not known".into(),
            )
            .await;
            return;
        };
        // The `covobs dump` requests this dump answers.
        let requests = self
            .targets
            .get_mut(&pid)
            .map(|t| t.complete(hook.runtime))
            .unwrap_or_default();
        self.close_window_when_idle();
        let Some(state) = self.targets.get(&pid) else {
            self.lost(
                pid,
                tid,
                hook.runtime.as_str(),
                format!("process {pid} was no longer attached"),
            )
            .await;
            return;
        };
        let Some(collector) = state.collector.clone() else {
            self.lost(
                pid,
                tid,
                hook.runtime.as_str(),
                format!(
                    "the root directory of process {pid} could not be opened{}",
                    state
                        .root_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            )
            .await;
            return;
        };
        self.collections.started(1);
        if collector.send(CollectJob { done, requests }).is_err() {
            self.collections.answered();
            self.lost(
                pid,
                tid,
                hook.runtime.as_str(),
                "the collector of this process stopped".into(),
            )
            .await;
        }
    }
}

pub(super) fn identity(f: &covobs_common::FileIdentity) -> (Option<u64>, Option<u64>) {
    if f.known == 0 {
        (None, None)
    } else {
        (
            Some(f.ino),
            Some(crate::target::files::kernel_dev_to_user(f.dev)),
        )
    }
}
