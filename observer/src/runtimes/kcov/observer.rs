//! The one owner of what covobs knows about the kcov buffers of its targets: which process
//! and thread uses which buffer, covobs' views of them, the PCs already reported per process.
//! Records, exits and ticks go in; `kcov` events (new PCs only) and captures (whole traces,
//! for artifacts) come out.
use std::collections::{BTreeMap, HashMap, HashSet};

use covobs_common::{KcovRecord, kcov as k, kcov_flags};
use serde::Serialize;

use super::{
    DEVICE,
    buffer::{OwnedBuffer, TargetView},
    kernel::KernelInfo,
    trace::{CmpRecord, Mode, Trace},
};
use crate::{
    collect::Trigger,
    discover::{Mapped, Role, Runtime},
    events::{Body, Event},
    probes::Probes,
    sys::clock,
};

/// Decoded comparison records an event carries at most (the artifact has them all).
const MAX_CMP_IN_EVENT: usize = 4096;
/// Chunks whose KCOV_DISABLE record never came (a full ring buffer) are dropped after this.
const CHUNK_TTL_NS: u64 = 10_000_000_000;

/// The `kcov` event: what a thread's buffer held at a moment covobs saw.
#[derive(Clone, Debug, Serialize)]
pub struct KcovEvent {
    /// `init`, `enable`, `remote_enable`: the thread's ioctl (before the kernel ran it);
    /// `disable`: its buffer as it had it when it called KCOV_DISABLE (exact);
    /// `sample`: a look at a buffer still being written; `exit`: the buffer after its thread
    /// exited; `final`: the buffer when covobs stopped.
    pub moment: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The thread's kcov descriptor (-1: unknown, or covobs' own buffer).
    pub fd: i32,
    /// Buffer size in words (word 0 included).
    pub size: u64,
    /// Entries the buffer held: PCs, or comparison records.
    pub entries: u64,
    /// `entries` is exactly what the thread had recorded when it called ioctl() (covobs' own
    /// trap excluded).
    pub exact: bool,
    /// Distinct PCs (comparison ips) among the entries.
    pub unique: u64,
    /// Of them, never reported before for this process.
    pub new: u64,
    /// The distinct PCs, in buffer order (hex): all of them for `disable`, `exit` and `final`;
    /// for `sample`, only the new ones.
    pub pcs: Vec<String>,
    /// CMP mode: the records, decoded (at most 4096 here; the artifact has all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmp: Option<Vec<CmpRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// KCOV_REMOTE_ENABLE's argument.
#[derive(Clone, Debug, Serialize)]
pub struct Remote {
    pub area_size: u32,
    pub handles: u64,
    pub common_handle: String,
}

/// A whole trace to keep as an artifact.
#[derive(Debug)]
pub struct Capture {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub trigger: Trigger,
    pub trace: Trace,
    pub exact: bool,
    pub start_ns: u64,
    pub end_ns: u64,
    pub kernel: KernelInfo,
}

/// What one step produced.
#[derive(Debug)]
pub struct Output {
    pub event: Event,
    pub capture: Option<Capture>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Enabled and not disabled since (or covobs' own buffer).
    Enabled,
    Disabled,
    /// Found open when covobs attached.
    Unknown,
}

enum Source {
    View(TargetView),
    Own(OwnedBuffer),
}

impl Source {
    fn snapshot(&self, mode: Mode) -> (u64, Trace) {
        match self {
            Self::View(v) => v.snapshot(mode),
            Self::Own(o) => o.snapshot(mode),
        }
    }

    fn entries(&self) -> usize {
        match self {
            Self::View(v) => v.entries,
            Self::Own(o) => o.entries,
        }
    }
}

struct Buffer {
    source: Source,
    /// The kernel's `struct kcov` (0: not known yet).
    kcov: u64,
    fd: i32,
    mode: Option<Mode>,
    tid: Option<u32>,
    state: State,
    since_ns: u64,
    /// Word 0 at the last sample.
    sampled: u64,
}

#[derive(Default)]
struct Proc {
    comm: String,
    /// Its ioctl() is probed (or cannot be: no retry).
    probed: bool,
    /// Adoptions tried without finding ioctl() (a process seen at exec maps its C library a
    /// moment later).
    tries: u32,
    seen: HashSet<u64>,
    buffers: Vec<Buffer>,
    /// Descriptor -> buffer size (words) learned from KCOV_INIT_TRACE.
    sizes: HashMap<i32, u64>,
}

struct Chunks {
    first_ns: u64,
    parts: BTreeMap<u32, Vec<u64>>,
}

pub struct KcovObserver {
    pub kernel: KernelInfo,
    /// /sys/kernel/debug/kcov (st_dev, st_ino); None: no kcov here.
    device: Option<(u64, u64)>,
    procs: BTreeMap<u32, Proc>,
    chunks: HashMap<u64, Chunks>,
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

impl Default for KcovObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl KcovObserver {
    pub fn new() -> Self {
        Self {
            kernel: KernelInfo::running(),
            device: super::kernel::device_identity().map(|(d, _)| d),
            procs: BTreeMap::new(),
            chunks: HashMap::new(),
        }
    }

    /// This kernel has kcov.
    pub fn active(&self) -> bool {
        self.device.is_some()
    }

    /// Whether a process is followed.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Whether a process has kcov buffers covobs can read.
    pub fn has_buffers(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| !p.buffers.is_empty())
    }

    /// Follow a process's kcov use: probe its `ioctl()` (kcov ioctls from now on), and take
    /// views of the kcov buffers it has open already. Returns a `runtime_found` event when it
    /// uses kcov now.
    pub fn adopt(
        &mut self,
        probes: &mut Probes,
        pid: u32,
        comm: &str,
        mapped: &[Mapped],
        with_probe: bool,
    ) -> Vec<Event> {
        let Some(device) = self.device else {
            return Vec::new();
        };
        let proc = self.procs.entry(pid).or_default();
        proc.comm = comm.to_owned();
        let mut probed = None;
        let mut problems = Vec::new();
        if with_probe && !proc.probed && probes.kcov_config().valid != 0 {
            proc.tries += 1;
            for m in mapped {
                let Some(h) = m.module.hooks(Runtime::Libc, Role::Ioctl).next() else {
                    continue;
                };
                match probes.attach_kcov_probe(&m.open_path, h.file_offset, pid) {
                    Ok(()) => {
                        probed = Some(m.module.path.clone());
                        break;
                    }
                    Err(e) => problems.push(format!("ioctl in {}: {e}", m.module.path)),
                }
            }
            if probed.is_none() && problems.is_empty() {
                problems
                    .push("no ioctl() found in its modules: its kcov ioctls are not seen".into());
            }
            proc.probed = probed.is_some()
                || !problems.is_empty()
                    && mapped
                        .iter()
                        .any(|m| m.module.hooks(Runtime::Libc, Role::Ioctl).next().is_some());
        } else if with_probe && !proc.probed {
            problems.push(
                "this kernel's BTF does not describe struct kcov: its kcov ioctls are not followed"
                    .into(),
            );
        }
        // Buffers it has open now: descriptors that are kcov's, mapped at the sizes its
        // mappings of kcov have.
        let sizes: Vec<u64> = crate::discover::maps::read(pid as i32)
            .unwrap_or_default()
            .iter()
            .filter(|m| m.path == DEVICE)
            .map(|m| (m.end - m.start) / 8)
            .collect();
        let mut found = 0;
        for fd in kcov_fds(pid) {
            if proc.buffers.iter().any(|b| b.fd == fd) {
                continue;
            }
            let view = sizes
                .iter()
                .find_map(|&n| TargetView::open(pid as i32, fd, n, device).ok());
            match view {
                Some(view) => {
                    found += 1;
                    proc.buffers.push(Buffer {
                        source: Source::View(view),
                        kcov: 0,
                        fd,
                        mode: None,
                        tid: None,
                        state: State::Unknown,
                        since_ns: clock::boot_ns(),
                        sampled: 0,
                    });
                }
                None => problems.push(format!(
                    "kcov descriptor {fd} has no mapping covobs can reproduce (not mapped yet?)"
                )),
            }
        }
        for p in &problems {
            tracing::debug!("kcov, process {pid}: {p}");
        }
        if found == 0 && sizes.is_empty() {
            return Vec::new();
        }
        vec![Event {
            ts_ns: clock::boot_ns(),
            pid,
            tid: pid,
            body: Body::RuntimeFound {
                runtime: Runtime::Kcov,
                module: DEVICE.to_owned(),
                build_id: self.kernel.build_id.clone(),
                symbols: "kernel".into(),
                functions: probed.iter().map(|_| "ioctl".to_owned()).collect(),
                producer: Some(format!("Linux {}", self.kernel.release)),
                note: Some(format!(
                    "{found} kcov buffer{} open{}",
                    if found == 1 { "" } else { "s" },
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", problems.join("; "))
                    }
                )),
            },
        }]
    }

    /// Processes whose ioctl() is not probed yet, for another adoption (at most 20 tries).
    pub fn unprobed(&self) -> Vec<(u32, String)> {
        self.procs
            .iter()
            .filter(|(_, p)| !p.probed && p.tries > 0 && p.tries < 20)
            .map(|(pid, p)| (*pid, p.comm.clone()))
            .collect()
    }

    /// Trace a workload covobs launched, with covobs' own buffer (enabled by its first thread).
    pub fn own(&mut self, pid: u32, comm: &str, buffer: OwnedBuffer, mode: Mode) {
        let proc = self.procs.entry(pid).or_default();
        proc.comm = comm.to_owned();
        proc.buffers.push(Buffer {
            source: Source::Own(buffer),
            kcov: 0,
            fd: -1,
            mode: Some(mode),
            tid: Some(pid),
            state: State::Enabled,
            since_ns: clock::boot_ns(),
            sampled: 0,
        });
    }

    /// The workload's name changed (its exec).
    pub fn rename(&mut self, pid: u32, comm: &str) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.comm = comm.to_owned();
        }
    }

    pub fn on_chunk(&mut self, event_id: u64, index: u32, words: Vec<u64>, ts_ns: u64) {
        self.chunks
            .entry(event_id)
            .or_insert_with(|| Chunks {
                first_ns: ts_ns,
                parts: BTreeMap::new(),
            })
            .parts
            .insert(index, words);
    }

    /// A kcov ioctl of a watched thread.
    pub fn on_ioctl(&mut self, rec: &KcovRecord) -> Vec<Output> {
        let pid = rec.hdr.tgid;
        let tid = rec.hdr.tid;
        let chunks = self.chunks.remove(&rec.event_id);
        let Some(device) = self.device else {
            return Vec::new();
        };
        let proc = self.procs.entry(pid).or_default();
        let mut event = new_event("", None, rec.fd, rec.size);
        if rec.flags & kcov_flags::IS_KCOV == 0 {
            event.note = Some("the descriptor could not be checked to be kcov's".into());
        }
        let mut capture = None;
        match rec.cmd {
            k::INIT_TRACE => {
                event.moment = "init";
                event.size = rec.arg;
                proc.sizes.insert(rec.fd, rec.arg);
            }
            k::ENABLE | k::REMOTE_ENABLE => {
                let remote = rec.cmd == k::REMOTE_ENABLE;
                event.moment = if remote { "remote_enable" } else { "enable" };
                let trace_mode = if remote {
                    u64::from(rec.remote_mode)
                } else {
                    rec.arg
                };
                event.mode = match trace_mode {
                    k::TRACE_PC => Some(Mode::Pc),
                    k::TRACE_CMP => Some(Mode::Cmp),
                    _ => None,
                };
                if remote {
                    event.remote = Some(Remote {
                        area_size: rec.remote_area_size,
                        handles: rec.remote_handles,
                        common_handle: hex(rec.remote_common_handle),
                    });
                }
                let size = if rec.size > 0 {
                    rec.size
                } else {
                    proc.sizes.get(&rec.fd).copied().unwrap_or(0)
                };
                event.note = enable_buffer(proc, pid, tid, rec, size, event.mode, device);
            }
            k::DISABLE => {
                event.moment = "disable";
                let Some(mode) = Mode::from_kernel(rec.mode) else {
                    event.note = Some(format!(
                        "the buffer was not tracing (kcov mode {})",
                        rec.mode
                    ));
                    return vec![output(rec.hdr.ts_ns, pid, tid, event, None)];
                };
                event.mode = Some(mode);
                let buffer = proc
                    .buffers
                    .iter_mut()
                    .find(|b| (b.kcov != 0 && b.kcov == rec.kcov) || b.fd == rec.fd);
                let mut words: Vec<u64> = chunks
                    .map(|c| c.parts.into_values().flatten().collect())
                    .unwrap_or_default();
                let needed = 1 + rec.count as usize * mode.stride();
                let mut exact = rec.flags & kcov_flags::EXACT != 0;
                if words.len() < needed {
                    // The rest was not copied in the kernel (larger than MAX_CHUNKS, or the ring
                    // buffer was full): read it from covobs' view, unless it is gone.
                    match buffer.as_ref().map(|b| &b.source) {
                        Some(Source::View(v)) if words.len() == rec.words as usize => {
                            let from = words.len();
                            words.extend(v.words(from, needed));
                            event.note = Some(format!(
                                "words {from}..{needed} read from covobs' view after the call (exact unless the thread re-enabled at once)"
                            ));
                        }
                        _ => {
                            exact = false;
                            event.note = Some(format!(
                                "{} of {needed} words arrived (ring buffer full)",
                                words.len()
                            ));
                        }
                    }
                }
                let since = buffer.as_ref().map_or(rec.hdr.ts_ns, |b| b.since_ns);
                if let Some(b) = buffer {
                    b.state = State::Disabled;
                    b.kcov = rec.kcov;
                }
                if words.is_empty() {
                    words.push(0);
                }
                let trace = Trace::new(mode, words, rec.count);
                fill(&mut event, &mut proc.seen, &trace, false);
                event.exact = exact;
                capture = Some(Capture {
                    pid,
                    tid,
                    comm: proc.comm.clone(),
                    trigger: Trigger::SelfDump,
                    trace,
                    exact,
                    start_ns: since,
                    end_ns: rec.hdr.ts_ns,
                    kernel: self.kernel.clone(),
                });
            }
            _ => return Vec::new(),
        }
        vec![output(rec.hdr.ts_ns, pid, tid, event, capture)]
    }

    /// A thread (`Some(tid)`) or a whole process (`None`) exited: the buffers it was still
    /// tracing into are final now (the kernel stops tracing a task early in do_exit).
    pub fn on_exit(&mut self, pid: u32, tid: Option<u32>) -> Vec<Output> {
        let kernel = self.kernel.clone();
        let Some(proc) = self.procs.get_mut(&pid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in proc.buffers.iter_mut() {
            let ours = match tid {
                Some(t) => b.tid == Some(t),
                None => true,
            };
            if !ours || b.state == State::Disabled {
                continue;
            }
            let mode = b.mode.unwrap_or(Mode::Pc);
            let (_, trace) = b.source.snapshot(mode);
            let unknown = b.state == State::Unknown;
            b.state = State::Disabled;
            if trace.count() == 0 && unknown {
                continue;
            }
            out.push(last_look(
                pid,
                &proc.comm,
                &mut proc.seen,
                b,
                trace,
                Trigger::Exit,
                &kernel,
            ));
        }
        if tid.is_none() {
            self.procs.remove(&pid);
        }
        out
    }

    /// Look at the buffers still being written: their new PCs (events only; sampling may miss
    /// PCs a thread records and resets between two looks).
    pub fn sample(&mut self) -> Vec<Output> {
        let now = clock::boot_ns();
        self.chunks
            .retain(|_, c| now.saturating_sub(c.first_ns) < CHUNK_TTL_NS);
        let mut out = Vec::new();
        for (&pid, proc) in self.procs.iter_mut() {
            for b in proc.buffers.iter_mut() {
                if b.state == State::Disabled {
                    continue;
                }
                let mode = b.mode.unwrap_or(Mode::Pc);
                let (raw, trace) = b.source.snapshot(mode);
                if raw == b.sampled {
                    continue;
                }
                b.sampled = raw;
                let mut event = new_event("sample", Some(mode), b.fd, b.source.entries() as u64);
                fill(&mut event, &mut proc.seen, &trace, true);
                if event.pcs.is_empty() {
                    continue;
                }
                event.cmp = None;
                out.push(output(now, pid, b.tid.unwrap_or(pid), event, None));
            }
        }
        out
    }

    /// covobs stops: the buffers of threads still tracing, as they are now.
    pub fn finish(&mut self) -> Vec<Output> {
        let kernel = self.kernel.clone();
        let mut out = Vec::new();
        for (&pid, proc) in self.procs.iter_mut() {
            for b in proc.buffers.iter_mut() {
                if b.state == State::Disabled {
                    continue;
                }
                let mode = b.mode.unwrap_or(Mode::Pc);
                let (_, trace) = b.source.snapshot(mode);
                if trace.count() == 0 {
                    continue;
                }
                b.state = State::Disabled;
                out.push(last_look(
                    pid,
                    &proc.comm,
                    &mut proc.seen,
                    b,
                    trace,
                    Trigger::Final,
                    &kernel,
                ));
            }
        }
        out
    }
}

/// A view of the buffer a thread enables (unless covobs has one already); a note when not.
fn enable_buffer(
    proc: &mut Proc,
    pid: u32,
    tid: u32,
    rec: &KcovRecord,
    size: u64,
    mode: Option<Mode>,
    device: (u64, u64),
) -> Option<String> {
    let now = rec.hdr.ts_ns;
    if let Some(b) = proc
        .buffers
        .iter_mut()
        .find(|b| (rec.kcov != 0 && b.kcov == rec.kcov) || b.fd == rec.fd)
    {
        b.kcov = rec.kcov;
        b.mode = mode;
        b.tid = Some(tid);
        b.state = State::Enabled;
        b.since_ns = now;
        b.sampled = 0;
        return None;
    }
    match TargetView::open(pid as i32, rec.fd, size, device) {
        Ok(view) => {
            proc.buffers.push(Buffer {
                source: Source::View(view),
                kcov: rec.kcov,
                fd: rec.fd,
                mode,
                tid: Some(tid),
                state: State::Enabled,
                since_ns: now,
                sampled: 0,
            });
            None
        }
        Err(e) => Some(format!(
            "no view of its buffer ({e}): only its KCOV_DISABLE copies are seen"
        )),
    }
}

/// The descriptors of a process that are kcov's.
fn kcov_fds(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<i32> = dir
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == std::path::Path::new(DEVICE)))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The last look at buffer `b` (its thread or process exited, or covobs stops): every distinct
/// PC of `trace`, its contents now, in an event and the capture that becomes its artifact.
fn last_look(
    pid: u32,
    comm: &str,
    seen: &mut HashSet<u64>,
    b: &Buffer,
    trace: Trace,
    trigger: Trigger,
    kernel: &KernelInfo,
) -> Output {
    let mode = b.mode.unwrap_or(Mode::Pc);
    let moment = if trigger == Trigger::Exit {
        "exit"
    } else {
        "final"
    };
    let mut event = new_event(moment, Some(mode), b.fd, b.source.entries() as u64);
    fill(&mut event, seen, &trace, false);
    if trace.count() as usize * mode.stride() + 1 >= b.source.entries() {
        event.note = Some(full_note(b.source.entries()));
    }
    let tid = b.tid.unwrap_or(pid);
    output(
        clock::boot_ns(),
        pid,
        tid,
        event,
        Some(Capture {
            pid,
            tid,
            comm: comm.to_owned(),
            trigger,
            trace,
            exact: false,
            start_ns: b.since_ns,
            end_ns: clock::boot_ns(),
            kernel: kernel.clone(),
        }),
    )
}

fn new_event(moment: &'static str, mode: Option<Mode>, fd: i32, size: u64) -> KcovEvent {
    KcovEvent {
        moment,
        mode,
        fd,
        size,
        entries: 0,
        exact: false,
        unique: 0,
        new: 0,
        pcs: Vec::new(),
        cmp: None,
        remote: None,
        note: None,
    }
}

fn full_note(entries: usize) -> String {
    format!(
        "the buffer ({entries} words) filled up: the kernel dropped the PCs after that (a larger buffer: covobs run --kcov-entries)"
    )
}

/// Counts, the distinct PCs (all, or only those new to the process), and the decoded
/// comparisons.
fn fill(event: &mut KcovEvent, seen: &mut HashSet<u64>, trace: &Trace, only_new: bool) {
    event.entries = trace.count();
    let mut unique = HashSet::new();
    for pc in trace.pcs() {
        if !unique.insert(pc) {
            continue;
        }
        let new = seen.insert(pc);
        if new {
            event.new += 1;
        }
        if new || !only_new {
            event.pcs.push(hex(pc));
        }
    }
    event.unique = unique.len() as u64;
    if trace.mode == Mode::Cmp {
        event.cmp = Some(trace.cmp_records().take(MAX_CMP_IN_EVENT).collect());
    }
}

fn output(ts_ns: u64, pid: u32, tid: u32, event: KcovEvent, capture: Option<Capture>) -> Output {
    Output {
        event: Event {
            ts_ns,
            pid,
            tid,
            body: Body::Kcov(event),
        },
        capture,
    }
}
