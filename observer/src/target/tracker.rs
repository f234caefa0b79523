//! The set of watched processes and their threads, kept in step with the kernel's watch maps.
//!
//! The kernel adds threads and name-matched processes itself (so nothing is missed while userspace
//! is busy); the tracker learns of it from the records, checks what the kernel cannot (names longer
//! than 15 bytes), and turns records into the events users see.
use std::collections::BTreeMap;

use covobs_common::watch;

use super::{
    NamePattern, Process, TargetError, TargetSpec, Thread, cgroup::CgroupError, threads_of,
};
use crate::{
    events::{Body, Event},
    probes::{ProbeError, Probes, records::Decoded},
    sys::clock,
};

#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("no process named {0:?} is running (add --wait to wait for one)")]
    NoMatch(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("no process{name} in cgroup {cgroup} (add --wait to wait for one)")]
    NoneInCgroup { cgroup: String, name: String },
}

impl TrackError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Target(e) => e.is_bad_input(),
            Self::Probe(e) => e.is_bad_input(),
            Self::NoMatch(_) | Self::NoneInCgroup { .. } => true,
            Self::Cgroup(e) => e.is_bad_input(),
        }
    }
}

/// One watched process.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub process: Process,
    /// Live threads: tid -> current name.
    pub threads: BTreeMap<u32, String>,
    pub reason: &'static str,
    /// It was moved out of the selected cgroup: no longer a target, released once idle.
    pub left: bool,
}

impl Tracked {
    pub fn thread_list(&self) -> Vec<Thread> {
        self.threads
            .iter()
            .map(|(tid, name)| Thread {
                tid: *tid as i32,
                name: name.clone(),
            })
            .collect()
    }
}

pub struct Tracker {
    spec: TargetSpec,
    follow_forks: bool,
    targets: BTreeMap<u32, Tracked>,
    /// Processes that were watched and exited (for summaries).
    pub exited: u64,
    /// A running process is watched with its dumps held until `release_dumps` (attach: until
    /// its profile cursors are placed).
    hold_dumps: bool,
}

impl Tracker {
    pub fn new(spec: TargetSpec, follow_forks: bool) -> Self {
        Self {
            spec,
            follow_forks,
            targets: BTreeMap::new(),
            exited: 0,
            hold_dumps: false,
        }
    }

    /// Hold the dumps of every running process it starts watching until `release_dumps`; a
    /// process whose exec the kernel saw runs a fresh image and is never held.
    pub fn hold_dumps(mut self, hold: bool) -> Self {
        self.hold_dumps = hold;
        self
    }

    /// Report the dumps of `pid` from now on.
    pub fn release_dumps(&self, probes: &mut Probes, pid: u32) -> Result<(), ProbeError> {
        if !self.targets.contains_key(&pid) {
            return Ok(());
        }
        probes.watch_process(pid, self.watch_flags(), &[])
    }

    fn watch_flags(&self) -> u32 {
        let mut flags = if self.follow_forks {
            watch::FOLLOW_FORKS
        } else {
            0
        };
        // Children of a process in the selected cgroup are in it too.
        if let TargetSpec::Cgroup { name: None, .. } = self.spec {
            flags |= watch::CGROUP;
        }
        flags
    }

    /// Watch what the spec names now; for a name, also every process that takes it later.
    /// Returns the `target` events of the processes found.
    pub fn start(&mut self, probes: &mut Probes, wait: bool) -> Result<Vec<Event>, TrackError> {
        let found = match &self.spec {
            TargetSpec::Pid(pid) => vec![Process::get(*pid)?],
            TargetSpec::Name(pattern) => {
                // Name first: a process that starts while we scan /proc is caught by the kernel.
                probes.watch_name(pattern.comm_key())?;
                let found = super::find_by_name(pattern);
                if found.is_empty() && !wait {
                    return Err(TrackError::NoMatch(pattern.as_str().to_owned()));
                }
                found
            }
            TargetSpec::Cgroup { cgroup, name } => {
                // The kernel selection first, as for a name: a process started in the cgroup
                // while we list it is caught by the kernel.
                if let Some(pattern) = name {
                    probes.watch_name(pattern.comm_key())?;
                }
                probes.select_cgroup(cgroup.id, name.is_some())?;
                let found = self.in_cgroup(&[])?;
                if found.is_empty() && !wait {
                    return Err(TrackError::NoneInCgroup {
                        cgroup: cgroup.dir.display().to_string(),
                        name: name
                            .as_ref()
                            .map(|n| format!(" named {:?}", n.as_str()))
                            .unwrap_or_default(),
                    });
                }
                found
            }
        };
        let reason = match self.spec {
            TargetSpec::Pid(_) => "pid",
            TargetSpec::Name(_) => "name",
            TargetSpec::Cgroup { .. } => "cgroup",
        };
        let mut events = Vec::new();
        for process in found {
            if let Some(event) = self.add(probes, process, reason)? {
                events.push(event);
            }
        }
        // A child forked by a listed process before that process was watched: list again until
        // the kernel has seen everything (each round only finds processes forked meanwhile).
        if matches!(self.spec, TargetSpec::Cgroup { .. }) {
            for _ in 0..3 {
                let known: Vec<i32> = self.targets.keys().map(|p| *p as i32).collect();
                let more = self.in_cgroup(&known)?;
                if more.is_empty() {
                    break;
                }
                for process in more {
                    if let Some(event) = self.add(probes, process, reason)? {
                        events.push(event);
                    }
                }
            }
        }
        Ok(events)
    }

    /// The processes in the selected cgroup (with the selected name) now, except `known`.
    fn in_cgroup(&self, known: &[i32]) -> Result<Vec<Process>, TrackError> {
        let Some(cgroup) = self.spec.cgroup() else {
            return Ok(Vec::new());
        };
        let me = std::process::id() as i32;
        Ok(cgroup
            .processes()?
            .into_iter()
            .filter(|pid| *pid != me && !known.contains(pid))
            // Gone, a kernel thread (none in a cgroup v2 leaf, but the root has them) or a zombie.
            .filter_map(|pid| Process::get(pid).ok())
            .filter(|p| self.spec.pattern().is_none_or(|n| n.matches(p)))
            .collect())
    }

    /// Start watching a process; returns its `target` event, or None if it was already watched.
    fn add(
        &mut self,
        probes: &mut Probes,
        process: Process,
        reason: &'static str,
    ) -> Result<Option<Event>, ProbeError> {
        let pid = process.pid as u32;
        if self.targets.contains_key(&pid) {
            return Ok(None);
        }
        let flags = if self.hold_dumps && reason != "exec" {
            self.watch_flags() | watch::DUMPS_HELD
        } else {
            self.watch_flags()
        };
        // The tgid goes in before the threads are listed: a thread created meanwhile is then seen
        // by the kernel (thread_start) and possibly listed too, never missed.
        probes.watch_process(pid, flags, &[])?;
        let threads = threads_of(process.pid);
        let tids: Vec<u32> = threads.iter().map(|t| t.tid as u32).collect();
        probes.watch_process(pid, flags, &tids)?;
        // A thread that exited between the listing and the insert would stay in the map forever.
        for tid in &tids {
            if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                probes.forget_thread(*tid);
            }
        }
        let tracked = Tracked {
            threads: threads
                .iter()
                .map(|t| (t.tid as u32, t.name.clone()))
                .collect(),
            reason,
            process,
            left: false,
        };
        let event = target_event(&tracked);
        self.targets.insert(pid, tracked);
        Ok(Some(event))
    }

    /// Stop watching a process that left the selection (its dumps covobs waited for are in).
    pub fn release(&mut self, probes: &mut Probes, pid: u32) {
        self.drop_target(probes, pid);
    }

    /// Processes that left the selection and are still watched.
    pub fn left(&self) -> Vec<u32> {
        self.targets
            .values()
            .filter(|t| t.left)
            .map(|t| t.process.pid as u32)
            .collect()
    }

    fn drop_target(&mut self, probes: &mut Probes, pid: u32) {
        if let Some(t) = self.targets.remove(&pid) {
            let tids: Vec<u32> = t.threads.keys().copied().collect();
            probes.unwatch_process(pid, &tids);
        } else {
            probes.unwatch_process(pid, &[pid]);
        }
    }

    /// A process the kernel started watching because its name matched: confirm what `comm`
    /// cannot tell (long names), then track it.
    fn adopt(&mut self, probes: &mut Probes, pid: u32, reason: &'static str) -> Option<Event> {
        let process = match Process::get(pid as i32) {
            Ok(p) => p,
            Err(_) => {
                // Already gone: the kernel removes it on exit.
                return None;
            }
        };
        if let Some(pattern) = self.spec.pattern()
            && reason != "fork"
            && !pattern.matches(&process)
        {
            tracing::debug!(
                "pid {pid} ({}) only shares the name's first 15 bytes",
                process.comm
            );
            self.drop_target(probes, pid);
            return None;
        }
        match self.add(probes, process, reason) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("could not watch pid {pid}: {e}");
                None
            }
        }
    }

    /// Turn one kernel record into the events to report, updating the watch set.
    pub fn on_record(&mut self, probes: &mut Probes, decoded: Decoded) -> Vec<Event> {
        let Decoded {
            mut event,
            newly_watched,
            group_dead_unknown,
        } = decoded;
        let pid = event.pid;
        let tid = event.tid;
        let mut out = Vec::new();

        match &mut event.body {
            Body::ProcessExec { comm, old_tid, .. } => {
                if *old_tid == covobs_common::OLD_TID_UNKNOWN {
                    // In a PID namespace the kernel cannot name a non-leader that exec'd: it is
                    // the one thread besides the leader that did not exit before the exec.
                    let others: Vec<u32> = self
                        .targets
                        .get(&pid)
                        .map(|t| t.threads.keys().copied().filter(|t| *t != pid).collect())
                        .unwrap_or_default();
                    *old_tid = if others.len() == 1 { others[0] } else { 0 };
                }
                if !self.targets.contains_key(&pid) {
                    let reason = if newly_watched { "exec" } else { "fork" };
                    match self.adopt(probes, pid, reason) {
                        Some(target) => out.push(target),
                        None => return out,
                    }
                } else if let Some(t) = self.targets.get_mut(&pid) {
                    // exec replaces every thread by the one that called it, with the leader's id.
                    t.threads.clear();
                    t.threads.insert(pid, comm.clone());
                    t.process.comm = comm.clone();
                    t.process.exe = Process::get(pid as i32).ok().and_then(|p| p.exe);
                }
            }
            Body::ProcessFork {
                child_pid,
                followed,
                ..
            } => {
                // The kernel watches the child when forks are followed, or when it is in the
                // selected cgroup like its parent.
                *followed = self.follow_forks || newly_watched;
                if *followed {
                    let child = *child_pid;
                    out.push(event.clone());
                    if let Some(target) = self.adopt(probes, child, "fork") {
                        out.push(target);
                    }
                    return out;
                }
            }
            Body::CgroupMove {
                entered, cgroup, ..
            } => {
                if let Some(selected) = self.spec.cgroup() {
                    cgroup.clone_from(&selected.path);
                }
                if *entered {
                    if self.targets.contains_key(&pid) {
                        return out;
                    }
                    out.push(event);
                    if let Some(target) = self.adopt(probes, pid, "cgroup") {
                        out.push(target);
                    }
                    return out;
                }
                match self.targets.get_mut(&pid) {
                    Some(t) if !t.left => t.left = true,
                    _ => return out,
                }
            }
            Body::ThreadStart { name, .. } => {
                if let Some(t) = self.targets.get_mut(&pid) {
                    t.threads.insert(tid, name.clone());
                }
            }
            Body::ThreadRename { name, .. } => {
                if newly_watched && !self.targets.contains_key(&pid) {
                    match self.adopt(probes, pid, "rename") {
                        Some(target) => out.push(target),
                        None => return out,
                    }
                } else if let Some(t) = self.targets.get_mut(&pid) {
                    t.threads.insert(tid, name.clone());
                    if tid == pid {
                        t.process.comm = name.clone();
                    }
                }
            }
            Body::ThreadExit { .. } => {
                let mut last = false;
                if let Some(t) = self.targets.get_mut(&pid) {
                    t.threads.remove(&tid);
                    last = group_dead_unknown && t.threads.is_empty();
                }
                if last {
                    // A kernel without sched_process_exit's group_dead: the last thread we
                    // knew of is gone, so the process is.
                    let comm = self
                        .targets
                        .get(&pid)
                        .map(|t| t.process.comm.clone())
                        .unwrap_or_default();
                    out.push(event);
                    out.push(Event {
                        ts_ns: clock::boot_ns(),
                        pid,
                        tid,
                        body: Body::ProcessExit { comm },
                    });
                    self.exited += 1;
                    self.drop_target(probes, pid);
                    return out;
                }
            }
            Body::ProcessExit { comm } => {
                // The kernel reports the group's end on its last thread: that thread exited too.
                out.push(Event {
                    ts_ns: event.ts_ns,
                    pid,
                    tid,
                    body: Body::ThreadExit { name: comm.clone() },
                });
                // The process is known by its own name, not its last thread's.
                if let Some(t) = self.targets.get(&pid) {
                    *comm = t.process.comm.clone();
                }
                self.exited += 1;
                self.drop_target(probes, pid);
            }
            _ => {}
        }
        out.push(event);
        out
    }

    pub fn targets(&self) -> impl Iterator<Item = &Tracked> {
        self.targets.values()
    }

    pub fn get(&self, pid: u32) -> Option<&Tracked> {
        self.targets.get(&pid)
    }

    /// Nothing is watched and nothing new can come: a `--pid` target that is gone.
    pub fn finished(&self) -> bool {
        self.targets.is_empty() && matches!(self.spec, TargetSpec::Pid(_))
    }

    pub fn spec(&self) -> &TargetSpec {
        &self.spec
    }

    pub fn pattern(&self) -> Option<&NamePattern> {
        self.spec.pattern()
    }
}

fn target_event(t: &Tracked) -> Event {
    let pid = t.process.pid as u32;
    Event {
        ts_ns: clock::boot_ns(),
        pid,
        tid: pid,
        body: Body::Target {
            comm: t.process.comm.clone(),
            exe: t.process.exe.as_ref().map(|p| p.display().to_string()),
            reason: t.reason,
            threads: t.thread_list(),
        },
    }
}
