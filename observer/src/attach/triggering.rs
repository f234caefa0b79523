//! Asking targets for dumps: signals to the right threads, the dumps expected from them, their
//! deadlines, and the `covobs dump` requests waiting for them.
use super::Mode;
use super::control::DumpRequest;
use super::control::DumpResponse;
use super::control::Responder;
use super::session::Outcome;
use super::session::WINDOW_LINGER;
use super::session::event;
use super::targets;
use super::targets::Pending;
use super::{control::DumpTarget, session::Session};
use crate::discover::Runtime;
use crate::events::Body;
use crate::events::signal_name;
use crate::report::labels::name as label_name;
use crate::runtimes::DumpThread;
use crate::sys::clock;
use crate::trigger;
use crate::trigger::ThreadRef;
use crate::trigger::choose_threads;

impl Session {
    /// At the end: every signal still unanswered is lost.
    pub async fn expire_all(&mut self) {
        self.snapshots.expire(true).await;
        self.count_snapshot_losses();
        for t in self.targets.values_mut() {
            for p in t.pending.iter_mut() {
                p.deadline_ns = 0;
            }
        }
        self.expire().await;
    }

    /// Check that a target can be signalled safely: every thread that would get the signal.
    pub fn check_triggerable(&self, pid: u32) -> Result<(), String> {
        if self.opts.mode == Mode::Snapshot {
            // Nothing is sent to it.
            return Ok(());
        }
        let state = self.targets.get(&pid).ok_or("not attached")?;
        let threads = self.thread_ids(pid);
        let plan = choose_threads(
            self.opts.thread,
            pid as i32,
            &threads,
            &state.dumpable,
            self.ocaml_tid(pid),
        )
        .map_err(|e| e.to_string())?;
        for t in plan {
            trigger::check_safe(pid as i32, t.tid, self.opts.signal, self.opts.force)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub(super) fn thread_ids(&self, pid: u32) -> Vec<i32> {
        self.tracker
            .get(pid)
            .map(|t| t.threads.keys().map(|t| *t as i32).collect())
            .unwrap_or_default()
    }

    /// Send the dump signal(s) to one target. Returns the "pid/tid runtimes" signalled.
    pub async fn trigger(
        &mut self,
        pid: u32,
        reason: &'static str,
        request: Option<u64>,
    ) -> Result<Vec<String>, String> {
        let sig = self.opts.signal;
        let (dumpable, threads) = match self.targets.get(&pid) {
            Some(s) => (s.dumpable.clone(), self.thread_ids(pid)),
            None => return Err(format!("process {pid} is not attached")),
        };
        if self.has_left(pid) {
            return Err(format!(
                "process {pid} was moved out of the selected cgroup: no longer a target"
            ));
        }
        if dumpable.is_empty() {
            return Err(format!(
                "process {pid} has no dump function covobs can trigger"
            ));
        }
        let plan = choose_threads(
            self.opts.thread,
            pid as i32,
            &threads,
            &dumpable,
            self.ocaml_tid(pid),
        )
        .map_err(|e| e.to_string())?;
        // The files the dump writes are followed from before the signal leaves.
        self.probes.file_window(true);
        self.window_idle_since = None;
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
                            let others = p.requests.clone();
                            p.requests.push(id);
                            self.requests.join(id, &others);
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
            let thread = match ThreadRef::get(pid as i32, t.tid) {
                Ok(t) => t,
                Err(e) => {
                    self.lost(pid, t.tid as u32, "dump trigger", e.to_string())
                        .await;
                    continue;
                }
            };
            // The OCaml thread's signal can leave from eBPF, on that thread, the next time it
            // runs OCaml (--deliver bpf); the trigger event comes when it does.
            let via_bpf = needed.iter().any(|r| r.dump_thread() == DumpThread::Ocaml)
                && self.ocaml_tid(pid) == Some(t.tid)
                && self.bpf_delivery(pid);
            // Taken before the signal leaves: the kernel may deliver it before send() returns.
            let sent_ns = clock::boot_ns();
            let sent_now = if via_bpf {
                self.probes
                    .request_bpf_signal(t.tid as u32, sig as i32, now)
                    .map(|()| None)
                    .map_err(|e| trigger::TriggerError::Choice(e.to_string()))
            } else {
                trigger::send(thread, sig).map(Some)
            };
            match sent_now {
                Ok(method) => {
                    self.expect_delivery(pid, t.tid as u32, sig as i32, sent_ns, via_bpf, reason);
                    self.count().dumps_triggered += 1;
                    sent.push(format!(
                        "{pid}/{} {}",
                        t.tid,
                        needed
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join("+")
                    ));
                    if let Some(method) = method {
                        let mut sent_event = event(
                            pid,
                            t.tid as u32,
                            Body::Trigger {
                                signal: signal_name(sig as i32),
                                runtimes: needed.clone(),
                                method: method.as_str().into(),
                                reason: reason.to_owned(),
                                waited_ns: None,
                            },
                        );
                        sent_event.ts_ns = sent_ns;
                        self.tx.event(sent_event).await;
                    }
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

    pub(super) fn push_pending(
        &mut self,
        pid: u32,
        tid: u32,
        runtimes: Vec<Runtime>,
        now: u64,
        deadline: u64,
        request: Option<u64>,
    ) {
        if let Some(id) = request {
            self.requests.expect(id, runtimes.len());
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

    pub async fn trigger_all(&mut self, reason: &'static str) {
        if self.opts.mode == Mode::Snapshot {
            let pids: Vec<u32> = self
                .snapshots
                .pids()
                .into_iter()
                .filter(|pid| !self.has_left(*pid))
                .collect();
            for pid in pids {
                self.snapshot(pid, Vec::new());
            }
            return;
        }
        // Targets with nothing to trigger (kcov users, a workload without a runtime) are left
        // alone.
        let pids: Vec<u32> = self
            .targets
            .iter()
            .filter(|(_, t)| !t.dumpable.is_empty())
            .map(|(pid, _)| *pid)
            .filter(|pid| !self.has_left(*pid))
            .collect();
        for pid in pids {
            if let Err(e) = self.trigger(pid, reason, None).await {
                tracing::warn!("{e}");
            }
        }
    }

    /// Close the file-tracking window once no dump covobs asked for has been expected or running
    /// for a quiet second: back-to-back dumps (a short --interval) keep one window open instead
    /// of opening and closing it for each.
    pub(super) fn close_window_when_idle(&mut self) {
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

    /// A collection finished.
    pub async fn on_outcome(&mut self, o: Outcome) {
        self.collections.answered();
        match &o.result {
            Ok(_) => self.count().artifacts += 1,
            // The collector sent its `lost` event.
            Err(_) => self.losses().reported_elsewhere(1),
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

    pub(super) async fn finish_request(
        &mut self,
        request: Option<u64>,
        count: usize,
        file: Option<String>,
        lost: Option<String>,
    ) {
        let Some(id) = request else { return };
        if let Some(r) = self.requests.answer(id, count, file, lost) {
            self.close_request(r).await;
        }
    }

    /// Signals and dumps that took too long.
    pub async fn expire(&mut self) {
        self.snapshots.expire(false).await;
        self.count_snapshot_losses();
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
        if let Some(why) = req
            .label
            .as_deref()
            .and_then(|l| label_name::check(l).err())
        {
            responder.send(DumpResponse::refusal(why)).await;
            return;
        }
        let pids: Vec<u32> = match &req.target {
            DumpTarget::Pid(p) => self
                .targets
                .keys()
                .copied()
                .filter(|t| *t as i32 == *p)
                .collect(),
            DumpTarget::Name(n) => self
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
        self.start_request(pids, req.label, Some(responder), "request")
            .await;
    }

    /// Dumps (snapshots) of `pids` for one request, answered to `responder` when every one was
    /// collected or lost; a labelled request then closes its label.
    pub(super) async fn start_request(
        &mut self,
        pids: Vec<u32>,
        label: Option<String>,
        responder: Option<Responder>,
        reason: &'static str,
    ) {
        let response = DumpResponse {
            session_dir: self.out_dir.display().to_string(),
            ..Default::default()
        };
        let first = pids.first().copied().unwrap_or_default();
        let id = self.requests.open(responder, response, label, first);
        let mut errors = Vec::new();
        if self.opts.mode == Mode::Snapshot {
            for &pid in &pids {
                let n = self.snapshot(pid, vec![id]);
                self.requests.expect(id, n);
                if n > 0 {
                    self.requests.triggered(id, [format!("{pid} snapshot")]);
                }
                if n == 0 {
                    errors.push(format!("process {pid} has nothing to snapshot"));
                }
            }
        }
        let signal_mode = self.opts.mode == Mode::Signal;
        for pid in pids.into_iter().filter(|_| signal_mode) {
            match self.trigger(pid, reason, Some(id)).await {
                Ok(sent) => self.requests.triggered(id, sent),
                Err(e) => errors.push(e),
            }
        }
        if let Some(r) = self.requests.refused(id, &errors) {
            self.close_request(r).await;
        }
    }
}
