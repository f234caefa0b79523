//! One attach session: the single owner of the probes, the targets, the dumps in flight and the
//! requests waiting for them. The loop in `attach::run` feeds it records, ticks and requests.
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::mpsc;

use super::{
    AttachOptions,
    control::{DumpRequest, DumpResponse, Responder},
    targets::{self, HookTable, Pending, TargetState},
};
use crate::{
    collect::{
        self, ActiveDump, Artifact, ArtifactMeta, DumpTracker, FinishedDump, ModuleMeta, TargetDir,
        Trigger, llvm_path,
    },
    discover::{Discovery, Role, Runtime},
    events::{Body, Event, signal_name},
    probes::{Probes, records::Record},
    stream::Sender,
    sys::clock,
    target::Tracker,
    trigger::{self, ThreadRef, choose_threads},
};

/// How long a file-tracking window stays open after the last dump covobs asked for.
const WINDOW_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Runtimes whose dumps covobs can collect today.
pub fn collectable(runtime: Runtime) -> bool {
    matches!(runtime, Runtime::Llvm)
}

/// What became of one expected dump.
#[derive(Debug)]
pub struct Outcome {
    pub pid: u32,
    /// The `covobs dump` requests this dump answers.
    pub requests: Vec<u64>,
    /// The artifact file (relative to the session directory), or why there is none.
    pub result: Result<String, String>,
}

struct RequestState {
    responder: Responder,
    remaining: usize,
    response: DumpResponse,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub dumps_triggered: u64,
    pub dumps_seen: u64,
    pub artifacts: u64,
    pub invalid_artifacts: u64,
    pub lost: u64,
    pub ring_buffer_drops: u64,
}

pub struct Session {
    pub opts: Arc<AttachOptions>,
    pub probes: Probes,
    pub tracker: Tracker,
    discovery: Discovery,
    hooks: HookTable,
    pub targets: BTreeMap<u32, TargetState>,
    dumps: DumpTracker,
    tx: Sender,
    seq: Arc<AtomicU64>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    requests: HashMap<u64, RequestState>,
    next_request: u64,
    /// Collections running now.
    pub in_flight: usize,
    pub counters: Counters,
    pub out_dir: PathBuf,
    /// Every target ever attached (for session.json).
    pub history: Vec<serde_json::Value>,
    /// Since when no dump covobs asked for is expected (the window closes after WINDOW_LINGER).
    window_idle_since: Option<std::time::Instant>,
}

fn event(pid: u32, tid: u32, body: Body) -> Event {
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
        probes: Probes,
        tracker: Tracker,
        tx: Sender,
        done_tx: mpsc::UnboundedSender<Outcome>,
        out_dir: PathBuf,
    ) -> Self {
        Self {
            opts,
            probes,
            tracker,
            discovery: Discovery::new(),
            hooks: HookTable::default(),
            targets: BTreeMap::new(),
            dumps: DumpTracker::default(),
            tx,
            seq: Arc::new(AtomicU64::new(0)),
            done_tx,
            requests: HashMap::new(),
            next_request: 1,
            in_flight: 0,
            counters: Counters::default(),
            out_dir,
            history: Vec::new(),
            window_idle_since: None,
        }
    }

    async fn lost(&mut self, pid: u32, tid: u32, what: &str, reason: String) {
        self.counters.lost += 1;
        self.tx
            .event(event(
                pid,
                tid,
                Body::Lost {
                    reason,
                    what: what.to_owned(),
                    count: 1,
                },
            ))
            .await;
    }

    /// Set up a newly watched process: find its runtimes, probe their dump functions, keep copies
    /// of the instrumented modules. Returns the runtimes a signal can make it dump.
    pub async fn adopt(&mut self, pid: u32, comm: &str) -> Vec<Runtime> {
        let mut state = TargetState::new(pid, comm);
        let mapped = match self.discovery.scan(pid as i32) {
            Ok(m) => m,
            Err(e) => {
                self.lost(pid, pid, "runtime discovery", e.to_string())
                    .await;
                Vec::new()
            }
        };
        for m in &mapped {
            for exit in m.module.hooks(Runtime::Libc, Role::ProcessExit) {
                if let Err(e) = self
                    .probes
                    .attach_exit_probe(&m.open_path, exit.file_offset, pid)
                {
                    tracing::warn!("exit-time dumps of {pid} will be reported as its own: {e}");
                }
            }
            for rt in &m.module.without_symbols {
                self.tx
                    .event(event(
                        pid,
                        pid,
                        Body::RuntimeFound {
                            runtime: *rt,
                            module: m.module.path.clone(),
                            build_id: m.module.build_id.clone(),
                            symbols: m.module.symbol_source.to_owned(),
                            functions: Vec::new(),
                            producer: ModuleMeta::of(&m.module).producer,
                            note: Some(
                                "its coverage sections are there but the dump functions are not in the symbols (stripped): signal-triggered dumps cannot be observed".into(),
                            ),
                        },
                    ))
                    .await;
            }
            let mut by_runtime: BTreeMap<Runtime, Vec<String>> = BTreeMap::new();
            for (runtime, function, offset) in targets::dump_hooks(m) {
                if !collectable(runtime) {
                    by_runtime.entry(runtime).or_default();
                    continue;
                }
                let (cookie, _) = self.hooks.register(m, runtime, &function, offset);
                match self.probes.attach_dump_probe(&m.open_path, offset, cookie) {
                    Ok(()) => {
                        by_runtime.entry(runtime).or_default().push(function);
                        if !state.dumpable.contains(&runtime) {
                            state.dumpable.push(runtime);
                        }
                    }
                    Err(e) => {
                        self.lost(
                            pid,
                            pid,
                            "dump probe",
                            format!("{function} in {}: {e}", m.module.path),
                        )
                        .await;
                    }
                }
            }
            for (runtime, functions) in by_runtime {
                let note = (!collectable(runtime))
                    .then(|| format!("collecting {} dumps is not supported yet", runtime.as_str()));
                self.tx
                    .event(event(
                        pid,
                        pid,
                        Body::RuntimeFound {
                            runtime,
                            module: m.module.path.clone(),
                            build_id: m.module.build_id.clone(),
                            symbols: m.module.symbol_source.to_owned(),
                            functions,
                            producer: ModuleMeta::of(&m.module).producer,
                            note,
                        },
                    ))
                    .await;
            }
            if m.module.has_coverage()
                && let Some(copy) = collect::module_copy_path(&m.module)
            {
                self.tx.module(copy, m.open_path.clone()).await;
            }
        }
        if let Some(m) = mapped
            .iter()
            .find(|m| m.module.runtimes.contains(&Runtime::Llvm))
        {
            let rustc = m.module.producers.iter().any(|p| p.contains("rustc"));
            state.llvm_profile = Some(llvm_path::for_process(
                pid,
                rustc,
                m.module.build_id.as_deref(),
            ));
        }
        state.modules = mapped;
        if let Some(root) = state.root.clone() {
            let (jobs, rx) = mpsc::unbounded_channel();
            tokio::spawn(target_collector(
                rx,
                root,
                state.llvm_profile.clone(),
                state.dir.clone(),
                state.comm.clone(),
                self.seq.clone(),
                self.tx.clone(),
                self.done_tx.clone(),
            ));
            state.collector = Some(jobs);
        }
        let dumpable = state.dumpable.clone();
        self.history.push(serde_json::json!({
            "pid": pid,
            "comm": comm,
            "exe": self.tracker.get(pid).and_then(|t| t.process.exe.clone()),
            "runtimes": state.modules.iter().flat_map(|m| m.module.runtimes.iter().map(move |r| serde_json::json!({
                "runtime": r, "module": m.module.path, "build_id": m.module.build_id,
            }))).collect::<Vec<_>>(),
            "llvm_profile_file": state.llvm_profile.as_ref().map(|e| e.pattern.clone()),
        }));
        self.targets.insert(pid, state);
        dumpable
    }

    /// A handle on the pipeline.
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// Report an event the tracker produced outside the record stream (the initial targets).
    pub async fn on_record_event(&mut self, e: Event) {
        self.tx.event(e).await;
    }

    /// At the end: every signal still unanswered is lost.
    pub async fn expire_all(&mut self) {
        for t in self.targets.values_mut() {
            for p in t.pending.iter_mut() {
                p.deadline_ns = 0;
            }
        }
        self.expire().await;
    }

    /// Check that a target can be signalled safely: every thread that would get the signal.
    pub fn check_triggerable(&self, pid: u32) -> Result<(), String> {
        let state = self.targets.get(&pid).ok_or("not attached")?;
        let threads = self.thread_ids(pid);
        let plan = choose_threads(
            self.opts.thread,
            pid as i32,
            &threads,
            &state.dumpable,
            None,
        )
        .map_err(|e| e.to_string())?;
        for t in plan {
            trigger::check_safe(pid as i32, t.tid, self.opts.signal, self.opts.force)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn thread_ids(&self, pid: u32) -> Vec<i32> {
        self.tracker
            .get(pid)
            .map(|t| t.threads.keys().map(|t| *t as i32).collect())
            .unwrap_or_default()
    }

    /// Send the dump signal(s) to one target. Returns the "pid/tid runtimes" signalled.
    pub async fn trigger(
        &mut self,
        pid: u32,
        reason: &str,
        request: Option<u64>,
    ) -> Result<Vec<String>, String> {
        let sig = self.opts.signal;
        let (dumpable, threads) = match self.targets.get(&pid) {
            Some(s) => (s.dumpable.clone(), self.thread_ids(pid)),
            None => return Err(format!("process {pid} is not attached")),
        };
        if dumpable.is_empty() {
            return Err(format!(
                "process {pid} has no dump function covobs can trigger"
            ));
        }
        let plan = choose_threads(self.opts.thread, pid as i32, &threads, &dumpable, None)
            .map_err(|e| e.to_string())?;
        // The files the dump writes are followed from before the signal leaves.
        self.probes.file_window(true);
        let now = clock::boot_ns();
        let deadline = now + targets::ns(self.opts.dump_timeout);
        let mut sent = Vec::new();
        let mut runtimes_sent: Vec<Runtime> = Vec::new();
        for t in &plan {
            // Runtimes with a signal still unanswered: that signal will bring their dump.
            let mut joined = Vec::new();
            if let Some(state) = self.targets.get_mut(&pid) {
                for rt in &t.runtimes {
                    if let Some(p) = state.unanswered(*rt) {
                        if let Some(id) = request
                            && !p.requests.contains(&id)
                        {
                            p.requests.push(id);
                            if let Some(r) = self.requests.get_mut(&id) {
                                r.remaining += 1;
                            }
                        }
                        joined.push(*rt);
                    }
                }
            }
            let needed: Vec<Runtime> = t
                .runtimes
                .iter()
                .copied()
                .filter(|r| !joined.contains(r))
                .collect();
            if needed.is_empty() {
                sent.push(format!("{pid}/{} (already asked)", t.tid));
                continue;
            }
            if let Err(e) = trigger::check_safe(pid as i32, t.tid, sig, self.opts.force) {
                self.lost(pid, t.tid as u32, "dump trigger", e.to_string())
                    .await;
                continue;
            }
            let Some(thread) = ThreadRef::get(pid as i32, t.tid) else {
                continue;
            };
            match trigger::send(thread, sig) {
                Ok(method) => {
                    self.counters.dumps_triggered += 1;
                    sent.push(format!(
                        "{pid}/{} {}",
                        t.tid,
                        needed
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join("+")
                    ));
                    self.tx
                        .event(event(
                            pid,
                            t.tid as u32,
                            Body::Trigger {
                                signal: signal_name(sig as i32),
                                runtimes: needed.clone(),
                                method: format!("{method:?}"),
                                reason: reason.to_owned(),
                            },
                        ))
                        .await;
                    for rt in &needed {
                        if !runtimes_sent.contains(rt) {
                            runtimes_sent.push(*rt);
                        }
                    }
                    // --thread all: many signals, one dump per runtime expected.
                    if self.opts.thread != trigger::ThreadChoice::All {
                        self.push_pending(pid, t.tid as u32, needed, now, deadline, request);
                    }
                }
                Err(e) => {
                    self.lost(pid, t.tid as u32, "dump trigger", e.to_string())
                        .await
                }
            }
        }
        if self.opts.thread == trigger::ThreadChoice::All && !runtimes_sent.is_empty() {
            self.push_pending(pid, pid, runtimes_sent, now, deadline, request);
        }
        if sent.is_empty() {
            self.close_window_when_idle();
            return Err(format!("no dump signal could be sent to process {pid}"));
        }
        Ok(sent)
    }

    fn push_pending(
        &mut self,
        pid: u32,
        tid: u32,
        runtimes: Vec<Runtime>,
        now: u64,
        deadline: u64,
        request: Option<u64>,
    ) {
        if let Some(r) = request.and_then(|id| self.requests.get_mut(&id)) {
            r.remaining += runtimes.len();
        }
        if let Some(s) = self.targets.get_mut(&pid) {
            s.pending.push(Pending {
                tid,
                runtimes,
                sent_ns: now,
                deadline_ns: deadline,
                started: Vec::new(),
                requests: request.into_iter().collect(),
            });
        }
    }

    pub async fn trigger_all(&mut self, reason: &str) {
        let pids: Vec<u32> = self.targets.keys().copied().collect();
        for pid in pids {
            if let Err(e) = self.trigger(pid, reason, None).await {
                tracing::warn!("{e}");
            }
        }
    }

    /// Dumps still expected or running, and collections not finished.
    pub fn busy(&self) -> bool {
        self.in_flight > 0
            || self.targets.values().any(|t| !t.pending.is_empty())
            || self.dumps_active()
    }

    /// Close the file-tracking window once no dump covobs asked for has been expected or running
    /// for a quiet second: back-to-back dumps (a short --interval) keep one window open instead
    /// of opening and closing it for each.
    fn close_window_when_idle(&mut self) {
        let busy = self.targets.values().any(|t| !t.pending.is_empty()) || self.dumps_active();
        let now = std::time::Instant::now();
        match (busy, self.window_idle_since) {
            (true, _) => self.window_idle_since = None,
            (false, None) => self.window_idle_since = Some(now),
            (false, Some(since)) if now.duration_since(since) >= WINDOW_LINGER => {
                self.probes.file_window(false);
                self.window_idle_since = None;
            }
            (false, Some(_)) => {}
        }
    }

    fn dumps_active(&self) -> bool {
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
        }
    }

    async fn on_event(&mut self, e: Event) {
        let pid = e.pid;
        let tid = e.tid;
        let adopt = match &e.body {
            Body::Target { comm, .. } => Some(comm.clone()),
            _ => None,
        };
        let exited = matches!(e.body, Body::ProcessExit { .. });
        let thread_exit = matches!(e.body, Body::ThreadExit { .. });
        let exec = matches!(e.body, Body::ProcessExec { .. }) && self.targets.contains_key(&pid);
        self.tx.event(e).await;
        if let Some(comm) = adopt {
            self.adopt(pid, &comm).await;
        }
        if exec {
            // A new program image: its runtimes may differ.
            let comm = self
                .tracker
                .get(pid)
                .map(|t| t.process.comm.clone())
                .unwrap_or_default();
            self.targets.remove(&pid);
            self.adopt(pid, &comm).await;
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
        self.dumps.start(ActiveDump {
            pid,
            tid,
            hook,
            start_ns: ts,
            trigger,
            cwd: TargetDir::open(pid as i32, "cwd").ok(),
            files: Vec::new(),
        });
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
                "the dump began before covobs attached: its output is not known".into(),
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
                format!("the root directory of process {pid} could not be opened"),
            )
            .await;
            return;
        };
        self.in_flight += 1;
        if collector.send(CollectJob { done, requests }).is_err() {
            self.in_flight -= 1;
            self.lost(
                pid,
                tid,
                hook.runtime.as_str(),
                "the collector of this process stopped".into(),
            )
            .await;
        }
    }

    /// A collection finished.
    pub async fn on_outcome(&mut self, o: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match &o.result {
            Ok(_) => self.counters.artifacts += 1,
            Err(_) => self.counters.lost += 1,
        }
        let (file, lost) = match o.result {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        for id in o.requests {
            self.finish_request(Some(id), 1, file.clone(), lost.clone())
                .await;
        }
    }

    async fn finish_request(
        &mut self,
        request: Option<u64>,
        count: usize,
        file: Option<String>,
        lost: Option<String>,
    ) {
        let Some(id) = request else { return };
        let Some(r) = self.requests.get_mut(&id) else {
            return;
        };
        r.remaining = r.remaining.saturating_sub(count);
        if let Some(f) = file {
            r.response.artifacts.push(f);
        }
        if let Some(l) = lost {
            r.response.lost.push(l);
        }
        if r.remaining == 0
            && let Some(r) = self.requests.remove(&id)
        {
            let mut response = r.response;
            response.ok = response.lost.is_empty();
            if !response.ok {
                response.error = Some(response.lost.join("; "));
            }
            r.responder.send(response).await;
        }
    }

    /// Signals and dumps that took too long.
    pub async fn expire(&mut self) {
        self.close_window_when_idle();
        let now = clock::boot_ns();
        let pids: Vec<u32> = self.targets.keys().copied().collect();
        for pid in pids {
            let expired = self
                .targets
                .get_mut(&pid)
                .map(|t| t.expired(now))
                .unwrap_or_default();
            for p in expired {
                let missing: Vec<Runtime> = p
                    .runtimes
                    .iter()
                    .copied()
                    .filter(|r| !p.started.contains(r))
                    .collect();
                for rt in &missing {
                    self.lost(
                        pid,
                        p.tid,
                        rt.as_str(),
                        format!(
                            "no {} dump started within {:?} after {} to thread {}",
                            rt.as_str(),
                            self.opts.dump_timeout,
                            signal_name(self.opts.signal as i32),
                            p.tid
                        ),
                    )
                    .await;
                }
                let started = p.runtimes.len() - missing.len();
                if started > 0 {
                    // Started but not finished: keep waiting for dump_end without a deadline;
                    // report that it is slow.
                    self.lost(
                        pid,
                        p.tid,
                        "dump",
                        format!(
                            "a dump on process {pid} did not finish within {:?}",
                            self.opts.dump_timeout
                        ),
                    )
                    .await;
                }
                for id in &p.requests {
                    self.finish_request(
                        Some(*id),
                        p.runtimes.len(),
                        None,
                        Some("timed out".into()),
                    )
                    .await;
                }
            }
        }
    }

    /// Handle `covobs dump`.
    pub async fn on_request(&mut self, req: DumpRequest, responder: Responder) {
        let pids: Vec<u32> = match &req {
            DumpRequest::Pid(p) => self
                .targets
                .keys()
                .copied()
                .filter(|t| *t as i32 == *p)
                .collect(),
            DumpRequest::Name(n) => self
                .targets
                .values()
                .filter(|t| t.comm == *n || self.tracker.pattern().is_some_and(|p| p.as_str() == n))
                .map(|t| t.pid)
                .collect(),
        };
        if pids.is_empty() {
            responder
                .send(DumpResponse {
                    not_mine: true,
                    ..Default::default()
                })
                .await;
            return;
        }
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            id,
            RequestState {
                responder,
                remaining: 0,
                response: DumpResponse {
                    session_dir: self.out_dir.display().to_string(),
                    ..Default::default()
                },
            },
        );
        let mut errors = Vec::new();
        for pid in pids {
            match self.trigger(pid, "request", Some(id)).await {
                Ok(sent) => {
                    if let Some(r) = self.requests.get_mut(&id) {
                        r.response.triggered.extend(sent);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(r) = self.requests.get(&id)
            && r.remaining == 0
            && let Some(r) = self.requests.remove(&id)
        {
            let mut response = r.response;
            response.ok = false;
            response.error = Some(errors.join("; "));
            r.responder.send(response).await;
        }
    }
}

fn identity(f: &covobs_common::FileIdentity) -> (Option<u64>, Option<u64>) {
    if f.known == 0 {
        (None, None)
    } else {
        (Some(f.ino), Some(collect::read::kernel_dev_to_user(f.dev)))
    }
}

/// A finished dump for a target's collector, and the `covobs dump` request it answers.
pub struct CollectJob {
    pub done: FinishedDump,
    pub requests: Vec<u64>,
}

/// The collector of one target: takes its finished dumps in order (so the profile cursor moves as
/// the target wrote), reads and validates each off the async threads, hands the artifacts to the
/// pipeline, waits until they are durable, and reports them. It owns the target's profile cursor.
#[allow(clippy::too_many_arguments)]
async fn target_collector(
    mut jobs: mpsc::UnboundedReceiver<CollectJob>,
    root: Arc<TargetDir>,
    profile: Option<llvm_path::Expanded>,
    dir: String,
    comm: String,
    seq: Arc<AtomicU64>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
) {
    // The cursor starts after what the file holds now: dumps from before covobs attached.
    let start_root = root.clone();
    let mut cursor = tokio::task::spawn_blocking(move || {
        profile.map(|p| llvm_path::ProfileCursor::new(p, &start_root, None))
    })
    .await
    .ok()
    .flatten();
    while let Some(job) = jobs.recv().await {
        let job_root = root.clone();
        let mut c = cursor.take();
        let joined = tokio::task::spawn_blocking(move || {
            let r = collect::extract_llvm(&job.done, &job_root, c.as_mut());
            (r, c, job)
        })
        .await;
        let Ok((extracted, c, job)) = joined else {
            continue;
        };
        cursor = c;
        deliver(job, extracted, &dir, &comm, &seq, &tx, &done_tx).await;
    }
}

/// Hand one dump's artifacts to the pipeline (or report it lost).
async fn deliver(
    job: CollectJob,
    extracted: Result<Vec<collect::Extracted>, collect::CollectError>,
    dir: &str,
    comm: &str,
    seq: &AtomicU64,
    tx: &Sender,
    done_tx: &mpsc::UnboundedSender<Outcome>,
) {
    let CollectJob { done, requests } = job;
    let pid = done.dump.pid;
    let tid = done.dump.tid;
    let hook = done.dump.hook.clone();
    let runtime = hook.runtime;
    let trigger = done.dump.trigger;
    let (start_ns, end_ns, ret) = (done.dump.start_ns, done.end_ns, done.ret);
    let extracted = extracted.map_err(|e| e.to_string());
    let list = match extracted {
        Ok(l) => l,
        Err(reason) => {
            let reason = format!(
                "{} dump on thread {tid} (returned {ret}): {reason}",
                runtime.as_str()
            );
            tx.event(event(
                pid,
                tid,
                Body::Lost {
                    reason: reason.clone(),
                    what: runtime.as_str().into(),
                    count: 1,
                },
            ))
            .await;
            let _ = done_tx.send(Outcome {
                pid,
                requests,
                result: Err(reason),
            });
            return;
        }
    };
    for x in list {
        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
        let file = format!("{n:06}-{}.{}", runtime.as_str(), runtime.extension());
        let valid = x.invalid_reason.is_none();
        let meta = ArtifactMeta {
            seq: n,
            runtime,
            pid,
            tid,
            comm: comm.to_owned(),
            trigger,
            start_ns,
            end_ns,
            collected_ns: clock::boot_ns(),
            bytes: x.data.len() as u64,
            checksum: collect::checksum(&x.data),
            valid,
            invalid_reason: x.invalid_reason.clone(),
            file: file.clone(),
            source: x.source.clone(),
            format: x.format.clone(),
            module: ModuleMeta::of(&hook.module),
        };
        let bytes = x.data.len() as u64;
        let artifact = Artifact {
            dir: dir.to_owned(),
            meta,
            data: x.data.into(),
        };
        let durable = tx.artifact(artifact).await;
        let rel = format!("{dir}/{file}");
        let written = match durable.await {
            Ok(Ok(at)) => Ok(at),
            Ok(Err(e)) => Err(format!("writing {rel}: {e}")),
            Err(_) => Err(format!("writing {rel}: the output pipeline closed")),
        };
        let result = match written {
            Ok(at) => {
                tx.event(Event {
                    ts_ns: at,
                    pid,
                    tid,
                    body: Body::Artifact {
                        seq: n,
                        runtime,
                        file: rel.clone(),
                        bytes,
                        valid,
                        source_path: x.source.path.clone(),
                        offset: x.source.offset,
                        trigger,
                        latency_ns: at.saturating_sub(end_ns),
                    },
                })
                .await;
                match x.invalid_reason {
                    None => Ok(rel),
                    Some(why) => Err(format!("{rel} is not a valid raw profile: {why}")),
                }
            }
            Err(reason) => Err(reason),
        };
        if let Err(reason) = &result {
            tx.event(event(
                pid,
                tid,
                Body::Lost {
                    reason: reason.clone(),
                    what: runtime.as_str().into(),
                    count: 1,
                },
            ))
            .await;
        }
        let _ = done_tx.send(Outcome {
            pid,
            requests: requests.clone(),
            result,
        });
    }
}
