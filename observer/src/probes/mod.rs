//! The eBPF side, seen from userspace: load covobs' programs, attach them, keep the in-kernel
//! watch set, read their records and their drop counters.
//!
//! `Probes` is the one owner of the loaded object: dropping it detaches every program. Nothing is
//! pinned, so a covobs killed with SIGKILL leaves nothing behind either: the kernel drops programs
//! and links when their last file descriptor closes.
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, UProbe, uprobe::UProbeScope},
};
use covobs_common::{COMM_LEN, Config, KcovConfig, OcamlHits, SignalRequest, kind};

use crate::sys::{
    bpf::{self, BpfUnavailable},
    tracefs::{self, TracefsError},
};

pub mod btf;
pub mod final_snapshots;
pub mod namespaces;
pub mod offsets;
pub mod reader;
pub mod records;
mod release;
pub mod test_run;

pub use reader::EventReader;

fn file_tracepoints() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    offsets::FILE_SYSCALL_TRACEPOINTS
        .iter()
        .chain(offsets::FILE_SYSCALL_TRACEPOINTS_EXTRA.iter())
}

/// Default ring-buffer size: at ~100 bytes a record, tens of thousands of records of slack.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Bpf(#[from] BpfUnavailable),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading covobs' eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    PidNs(#[from] crate::target::pidns::PidNsError),
    #[error(
        "covobs runs in a PID namespace of its own; giving ids in it needs what this kernel lacks: {0}"
    )]
    NamespaceUnsupported(String),
    #[error("watching the {0} ring buffer: {1}")]
    Poll(&'static str, #[source] std::io::Error),
}

impl ProbeError {
    /// A kernel or privilege that cannot do what covobs needs: the user must change something.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Bpf(_) | Self::Tracefs(_) | Self::NamespaceUnsupported(_) => true,
            Self::PidNs(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { name, source }
}

/// Loaded and attached lifecycle + signal programs and their maps.
pub struct Probes {
    ebpf: Ebpf,
    tgids: HashMap<MapData, u32, u32>,
    tids: HashMap<MapData, u32, u32>,
    comms: HashMap<MapData, [u8; COMM_LEN], u32>,
    drops: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    selftest: Array<MapData, u64>,
    ocaml_hits: HashMap<MapData, u32, OcamlHits>,
    send_signal: HashMap<MapData, u32, SignalRequest>,
    select: Array<MapData, u64>,
    /// Held for the programs loaded later (uprobes, the final-snapshot program): their map
    /// references are fds of this process, and a dropped map's fd would be closed under them.
    config_map: Array<MapData, Config>,
    /// What the programs were given (the kcov part changes: anchors, calibration).
    config: Config,
    /// covobs' PID namespace: every id in the records is in it.
    pub pidns: crate::target::PidNs,
    /// `covobs_common::ns_flags` of the offsets the programs got.
    ns_flags: u32,
    /// `covobs_common::config_flags` the programs got.
    config_flags: u32,
    programs: Vec<LoadedProgram>,
    /// How the files a dumping thread writes are followed.
    pub file_tracking: FileTracking,
    /// Links of the syscall tracepoints while a window is open.
    file_links: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
    /// The thread detaching the previous window's links, while it runs.
    detaching: Option<std::thread::JoinHandle<()>>,
    /// Uprobes attached so far: (program, file, offset, pid), so each is attached once.
    /// Keyed by the file's identity (device, inode), not its path: two processes of one binary
    /// name it by two /proc/PID/map_files paths, and a second uprobe on the same inode would
    /// report every dump twice.
    uprobe_links: Vec<UprobeLink>,
    /// Whether uprobe_multi links work here: unknown until the first uprobe.
    uprobe_multi: Option<bool>,
    /// The other links covobs attached (tracepoints, raw tracepoints, trampolines).
    links: Vec<Attached>,
    /// Closes the links of processes that are gone, off the event loop.
    releaser: release::Releaser,
}

/// One uprobe attached.
struct UprobeLink {
    /// The program asked for (its single-link name).
    program: &'static str,
    /// The file's (device, inode).
    file: (u64, u64),
    offset: u64,
    /// The one process it fires in, or all.
    pid: Option<u32>,
    /// The program the link is of: `program` or its uprobe_multi twin.
    attached: &'static str,
    link: aya::programs::uprobe::UProbeLinkId,
}

/// The uprobe_multi twin of each uprobe program (same code, another link type: see
/// `release`).
fn multi_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "covobs_dump_enter" => "covobs_dump_enter_multi",
        "covobs_dump_exit" => "covobs_dump_exit_multi",
        "covobs_dump_end_marker" => "covobs_dump_end_marker_multi",
        "covobs_exit_call" => "covobs_exit_call_multi",
        "covobs_ocaml_hit" => "covobs_ocaml_hit_multi",
        "covobs_kcov_ioctl" => "covobs_kcov_ioctl_multi",
        _ => return None,
    })
}

/// A link by program and id: taken out of its program to be closed with the others at once
/// (`release`).
enum Attached {
    TracePoint(&'static str, aya::programs::trace_point::TracePointLinkId),
    RawTracePoint(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    ),
    FExit(&'static str, aya::programs::fexit::FExitLinkId),
}

/// A program covobs loaded: name and kernel id (for leak checks and `session.json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadedProgram {
    pub name: String,
    pub id: u32,
}

/// How the files a dumping thread writes are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTracking {
    /// fexit trampolines on vfs_write and do_filp_open: only those calls pay, always on.
    Trampolines,
    /// Syscall tracepoints, attached only while dumps covobs asked for are expected.
    SyscallWindow,
    /// Syscall tracepoints, always attached: every system call of every task pays.
    SyscallAlways,
    /// Not followed: dump outputs are found from the target's environment.
    Off,
}

/// What the user allows for following dump outputs where trampolines are unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTrackingPolicy {
    /// Syscall tracepoints only around the dumps covobs triggers (the others are located from
    /// the environment's profile file).
    Window,
    /// Syscall tracepoints for the whole session: every dump located by the kernel, at a cost to
    /// every system call on the machine.
    Always,
    /// No kernel help: every dump is located from the environment's profile file.
    Off,
}

pub struct ProbeOptions {
    pub ring_bytes: u32,
    /// Forward the eBPF programs' aya-log messages (debug level) to covobs' log.
    pub ebpf_log: bool,
    /// Follow the files dumping threads write (attach needs it; watch does not).
    pub file_tracking: Option<FileTrackingPolicy>,
    /// Signals to report (bit sig-1; 0: all).
    pub signal_mask: u64,
    /// Size of the ring buffer final snapshots come back through (a power of two).
    pub snapshot_ring_bytes: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            ebpf_log: false,
            file_tracking: None,
            signal_mask: 0,
            snapshot_ring_bytes: final_snapshots::IDLE_SNAPSHOT_RING_BYTES,
        }
    }
}

impl Probes {
    /// Load the programs, configure them for this kernel and attach the lifecycle and signal
    /// tracepoints. Nothing is watched until `watch_process` or `watch_name`.
    pub fn load(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        bpf::probe()?;
        let pidns = crate::target::PidNs::own()?;
        let tracefs = tracefs::root()?;
        let self_tgid = std::process::id();
        let mut config = offsets::config(&tracefs, self_tgid)?;
        config.signal_mask = opts.signal_mask;
        match btf::load() {
            Ok(btf) => {
                match btf::kernel_offsets_in(&btf) {
                    Ok(k) => config.kernel = k,
                    Err(e) => tracing::warn!(
                        "{e}: files written by dumps are identified by path only, not by inode"
                    ),
                }
                config.ns = namespaces::offsets(&btf, pidns);
            }
            Err(e) => tracing::warn!(
                "{e}: files written by dumps are identified by path only, not by inode"
            ),
        }
        // Outside the initial PID namespace every id the programs report is translated: that
        // needs the task offsets and the raw tracepoints that hand over task pointers.
        let raw_lifecycle =
            config.kernel.signals_valid != 0 && config.ns.flags & covobs_common::ns_flags::PID != 0;
        if !pidns.initial && !raw_lifecycle {
            return Err(ProbeError::NamespaceUnsupported(
                "kernel BTF with task_struct, pid and pid_namespace (/sys/kernel/btf/vmlinux)"
                    .into(),
            ));
        }
        config.ns.pidns_ino = pidns.config_inode();
        config.kcov = btf::kcov_config();
        raise_memlock();

        // aya-log level 0 turns every log statement in the programs into a cheap no-op.
        let log_level: u8 = if opts.ebpf_log { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("SNAPSHOTS", opts.snapshot_ring_bytes)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/covobs-ebpf"
            )))
            .map_err(ProbeError::Load)?;
        if opts.ebpf_log {
            start_ebpf_logger(&mut ebpf);
        }

        let mut config_map: Array<_, Config> = take(&mut ebpf, "CONFIG")?;
        config_map.set(0, &config, 0).map_err(map_err("CONFIG"))?;
        let tgids = take(&mut ebpf, "WATCHED_TGIDS")?;
        let tids = take(&mut ebpf, "WATCHED_TIDS")?;
        let comms = take(&mut ebpf, "WATCH_COMMS")?;
        let drops = take(&mut ebpf, "DROPS")?;
        let events = take(&mut ebpf, "EVENTS")?;
        let selftest = take(&mut ebpf, "SELFTEST")?;
        let ocaml_hits = take(&mut ebpf, "OCAML_HITS")?;
        let send_signal = take(&mut ebpf, "SEND_SIGNAL")?;
        let select = take(&mut ebpf, "SELECT")?;

        let mut probes = Self {
            ebpf,
            tgids,
            tids,
            comms,
            drops,
            events: Some(events),
            selftest,
            ocaml_hits,
            send_signal,
            select,
            config_map,
            config,
            pidns,
            ns_flags: config.ns.flags,
            config_flags: config.flags,
            programs: Vec::new(),
            file_tracking: FileTracking::Off,
            file_links: Vec::new(),
            detaching: None,
            uprobe_links: Vec::new(),
            uprobe_multi: None,
            links: Vec::new(),
            releaser: release::Releaser::new(),
        };
        let raw_signals = config.kernel.signals_valid != 0
            && offsets::RAW_SIGNAL_TRACEPOINTS.iter().all(|(program, tp)| {
                match probes.attach_raw_tracepoint(program, tp) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!("{e}: signals followed by perf tracepoints");
                        false
                    }
                }
            });
        if !probes.pidns.initial {
            let level = probes.learn_pidns_level()?;
            probes.pidns.level = Some(level);
        }
        if !pidns.initial && !raw_signals {
            return Err(ProbeError::NamespaceUnsupported(
                "raw tracepoints on signal_generate and signal_deliver".into(),
            ));
        }
        // Thread creation and renames through raw tracepoints too where BTF allows: they hand
        // over the task, so its ids in covobs' namespace and its cgroup can be read.
        let raw_tasks = raw_lifecycle
            && offsets::RAW_TASK_TRACEPOINTS.iter().all(|(program, tp)| {
                match probes.attach_raw_tracepoint(program, tp) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!("{e}: tasks followed by perf tracepoints");
                        false
                    }
                }
            });
        if !pidns.initial && !raw_tasks {
            return Err(ProbeError::NamespaceUnsupported(
                "raw tracepoints on task_newtask and task_rename".into(),
            ));
        }
        for (program, category, name) in offsets::TRACEPOINTS {
            if (raw_signals && category == "signal") || (raw_tasks && category == "task") {
                continue;
            }
            probes.attach_tracepoint(program, category, name)?;
        }
        if let Some(policy) = opts.file_tracking {
            let btf = aya::Btf::from_sys_fs().ok();
            probes.file_tracking =
                probes.start_file_tracking(btf.as_ref(), config.kernel.valid != 0, policy);
        }
        Ok(probes)
    }

    /// Follow dumping threads' files: trampolines where the kernel has them, else syscall
    /// tracepoints as the policy allows, else nothing.
    fn start_file_tracking(
        &mut self,
        btf: Option<&aya::Btf>,
        offsets_known: bool,
        policy: FileTrackingPolicy,
    ) -> FileTracking {
        let trampolines = offsets_known
            && offsets::FILE_TRAMPOLINES.iter().all(|(program, function)| {
                match self.attach_fexit(btf, program, function) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!("{e}");
                        false
                    }
                }
            });
        if trampolines {
            return FileTracking::Trampolines;
        }
        match policy {
            FileTrackingPolicy::Off => FileTracking::Off,
            FileTrackingPolicy::Window => match self.load_file_tracepoints() {
                Ok(()) => FileTracking::SyscallWindow,
                Err(e) => {
                    tracing::warn!("{e}: dump outputs will be found from the environment only");
                    FileTracking::Off
                }
            },
            FileTrackingPolicy::Always => {
                if let Err(e) = self
                    .load_file_tracepoints()
                    .and_then(|()| self.open_file_links())
                {
                    tracing::warn!("{e}: dump outputs will be found from the environment only");
                    return FileTracking::Off;
                }
                tracing::warn!(
                    "--file-tracking always: syscall tracepoints stay attached, which slows down every system call on the machine while covobs runs"
                );
                FileTracking::SyscallAlways
            }
        }
    }

    /// Load the syscall tracepoint programs (attaching them later is then quick).
    fn load_file_tracepoints(&mut self) -> Result<(), ProbeError> {
        for (program, _, _) in file_tracepoints() {
            self.load_tracepoint(program)?;
        }
        Ok(())
    }

    fn open_file_links(&mut self) -> Result<(), ProbeError> {
        for &(program, category, name) in file_tracepoints() {
            let perr = |source| ProbeError::Program {
                name: program.to_owned(),
                source,
            };
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(program)
                .ok_or(ProbeError::Missing("a file-tracking program"))?
                .try_into()
                .map_err(perr)?;
            let link = prog.attach(category, name).map_err(perr)?;
            self.file_links.push((program, link));
        }
        Ok(())
    }

    /// Detach the window's tracepoints. Unregistering a tracepoint waits for RCU grace periods
    /// (tens of milliseconds each): the links are dropped on a thread of their own so the event
    /// loop never waits for that.
    fn close_file_links(&mut self) {
        let mut owned = Vec::new();
        for (program, link) in self.file_links.drain(..) {
            if let Some(p) = self.ebpf.program_mut(program)
                && let Ok(tp) = <&mut TracePoint>::try_from(p)
                && let Ok(link) = tp.take_link(link)
            {
                owned.push(link);
            }
        }
        if !owned.is_empty() {
            match std::thread::Builder::new()
                .name("covobs-detach".into())
                .spawn(move || drop(owned))
            {
                Ok(handle) => self.detaching = Some(handle),
                Err(e) => tracing::warn!("detaching file-tracking tracepoints: {e}"),
            }
        }
    }

    /// In window mode, follow files from now on (`true`) or stop (`false`). The cost of syscall
    /// tracepoints is paid only while a window is open.
    pub fn file_window(&mut self, open: bool) {
        if self.file_tracking != FileTracking::SyscallWindow {
            return;
        }
        let started = std::time::Instant::now();
        if open && self.file_links.is_empty() {
            // The kernel refuses a program on a tracepoint it is still attached to: let the
            // previous window finish detaching first (rare: windows linger between dumps).
            if let Some(handle) = self.detaching.take()
                && handle.join().is_err()
            {
                tracing::warn!("the previous file-tracking window failed to detach");
            }
            if let Err(e) = self.open_file_links() {
                tracing::warn!("opening a file-tracking window: {e}");
                self.close_file_links();
            }
            tracing::debug!("file-tracking window opened in {:?}", started.elapsed());
        } else if !open && !self.file_links.is_empty() {
            self.close_file_links();
            tracing::debug!("file-tracking window closed in {:?}", started.elapsed());
        }
    }

    /// Program `name` as its type `P`, loaded on first use (by `load`, which may attach it as
    /// well) and recorded with its kernel id; later calls return it as it is.
    fn program<P>(
        &mut self,
        name: &'static str,
        load: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>,
    ) -> Result<&mut P, ProbeError>
    where
        for<'p> &'p mut P:
            TryFrom<&'p mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let perr = |source| ProbeError::Program {
            name: name.to_owned(),
            source,
        };
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing(name))?;
        if !self.programs.iter().any(|p| p.name == name) {
            load(<&mut P>::try_from(&mut *program).map_err(perr)?).map_err(perr)?;
            let id = program.info().map_err(perr)?.id();
            self.programs.push(LoadedProgram {
                name: name.to_owned(),
                id,
            });
        }
        <&mut P>::try_from(program).map_err(perr)
    }

    /// Load and attach an fexit program on a kernel function.
    fn attach_fexit(
        &mut self,
        btf: Option<&aya::Btf>,
        program: &'static str,
        function: &str,
    ) -> Result<(), ProbeError> {
        let btf = btf.ok_or(ProbeError::Missing("kernel BTF (for trampolines)"))?;
        let prog = self.program(program, |p: &mut aya::programs::FExit| {
            p.load(function, btf)
        })?;
        let link = prog.attach().map_err(|source| ProbeError::Program {
            name: program.to_owned(),
            source,
        })?;
        self.links.push(Attached::FExit(program, link));
        Ok(())
    }

    /// The level of covobs' PID namespace, learnt by a program run once in covobs' own context;
    /// the programs need it to give ids there.
    fn learn_pidns_level(&mut self) -> Result<u32, ProbeError> {
        use std::os::fd::AsFd as _;
        let program = "covobs_pidns_level";
        let prog = self.program(program, |p: &mut aya::programs::RawTracePoint| p.load())?;
        let checked = prog
            .fd()
            .map_err(|source| ProbeError::Program {
                name: program.to_owned(),
                source,
            })
            .map(|fd| test_run::run_raw_tracepoint(fd.as_fd()))?;
        match checked {
            Ok(0) => {}
            Ok(code) => {
                return Err(ProbeError::NamespaceUnsupported(format!(
                    "the kernel's task structures as BTF describes them (check {code} failed)"
                )));
            }
            Err(e) => {
                return Err(ProbeError::NamespaceUnsupported(format!(
                    "running a program in covobs' own context (BPF_PROG_TEST_RUN, Linux 5.10): {e}"
                )));
            }
        }
        let map = self
            .ebpf
            .map("PIDNS_LEVEL")
            .ok_or(ProbeError::Missing("PIDNS_LEVEL"))?;
        let levels: Array<_, u32> = Array::try_from(map).map_err(map_err("PIDNS_LEVEL"))?;
        let stored = levels.get(&0, 0).map_err(map_err("PIDNS_LEVEL"))?;
        stored
            .checked_sub(1)
            .ok_or(ProbeError::Missing("the PID namespace's level"))
    }

    fn attach_raw_tracepoint(
        &mut self,
        program: &'static str,
        tracepoint: &str,
    ) -> Result<(), ProbeError> {
        let prog = self.program(program, |p: &mut aya::programs::RawTracePoint| p.load())?;
        let link = prog
            .attach(tracepoint)
            .map_err(|source| ProbeError::Program {
                name: program.to_owned(),
                source,
            })?;
        self.links.push(Attached::RawTracePoint(program, link));
        Ok(())
    }

    /// Load a tracepoint program once.
    fn load_tracepoint(&mut self, program: &'static str) -> Result<(), ProbeError> {
        self.program(program, |p: &mut TracePoint| p.load())
            .map(drop)
    }

    fn attach_tracepoint(
        &mut self,
        program: &'static str,
        category: &str,
        name: &str,
    ) -> Result<(), ProbeError> {
        let prog = self.program(program, |p: &mut TracePoint| p.load())?;
        let link = prog
            .attach(category, name)
            .map_err(|source| ProbeError::Program {
                name: program.to_owned(),
                source,
            })?;
        self.links.push(Attached::TracePoint(program, link));
        Ok(())
    }

    /// Watch a process: its tgid and every thread it has now (new threads are added by the
    /// kernel as they are created).
    pub fn watch_process(&mut self, pid: u32, flags: u32, tids: &[u32]) -> Result<(), ProbeError> {
        self.tgids
            .insert(&pid, &flags, 0)
            .map_err(map_err("WATCHED_TGIDS"))?;
        for tid in tids {
            self.tids
                .insert(tid, &pid, 0)
                .map_err(map_err("WATCHED_TIDS"))?;
        }
        Ok(())
    }

    /// Stop watching a process (it exited, or it only looked like a match).
    pub fn unwatch_process(&mut self, pid: u32, tids: &[u32]) {
        let _ = self.tgids.remove(&pid);
        for tid in tids {
            let _ = self.tids.remove(tid);
        }
        // Its own uprobes go too (a long session adopts many processes: their links must not
        // pile up until the end); attached again if the process is adopted again.
        let (mine, others): (Vec<UprobeLink>, Vec<UprobeLink>) =
            std::mem::take(&mut self.uprobe_links)
                .into_iter()
                .partition(|l| l.pid == Some(pid));
        self.uprobe_links = others;
        let owned = mine
            .into_iter()
            .filter_map(|l| self.take_uprobe(l))
            .collect();
        self.releaser.later(owned);
    }

    fn take_uprobe(&mut self, l: UprobeLink) -> Option<release::Owned> {
        let prog = <&mut UProbe>::try_from(self.ebpf.program_mut(l.attached)?).ok()?;
        prog.take_link(l.link)
            .ok()
            .map(|l| Box::new(l) as release::Owned)
    }

    /// Every link, out of its program, to be closed at once.
    fn take_all_links(&mut self) -> Vec<release::Owned> {
        let mut owned: Vec<release::Owned> = std::mem::take(&mut self.uprobe_links)
            .into_iter()
            .filter_map(|l| self.take_uprobe(l))
            .collect();
        for (program, link) in std::mem::take(&mut self.file_links) {
            if let Some(p) = self.ebpf.program_mut(program)
                && let Ok(tp) = <&mut TracePoint>::try_from(p)
                && let Ok(link) = tp.take_link(link)
            {
                owned.push(Box::new(link));
            }
        }
        for a in std::mem::take(&mut self.links) {
            let taken: Option<release::Owned> = match a {
                Attached::TracePoint(program, link) => self
                    .ebpf
                    .program_mut(program)
                    .and_then(|p| <&mut TracePoint>::try_from(p).ok())
                    .and_then(|p| p.take_link(link).ok())
                    .map(|l| Box::new(l) as release::Owned),
                Attached::RawTracePoint(program, link) => self
                    .ebpf
                    .program_mut(program)
                    .and_then(|p| <&mut aya::programs::RawTracePoint>::try_from(p).ok())
                    .and_then(|p| p.take_link(link).ok())
                    .map(|l| Box::new(l) as release::Owned),
                Attached::FExit(program, link) => self
                    .ebpf
                    .program_mut(program)
                    .and_then(|p| <&mut aya::programs::FExit>::try_from(p).ok())
                    .and_then(|p| p.take_link(link).ok())
                    .map(|l| Box::new(l) as release::Owned),
            };
            owned.extend(taken);
        }
        owned
    }

    /// Forget a thread that exited (the kernel does this itself; used where it cannot know).
    pub fn forget_thread(&mut self, tid: u32) {
        let _ = self.tids.remove(&tid);
    }

    /// Watch every process in cgroup `id` (or below it) that execs, renames itself or is moved
    /// there from now on; with `name_too`, only those with a watched name.
    pub fn select_cgroup(&mut self, id: u64, name_too: bool) -> Result<(), ProbeError> {
        use covobs_common::select;
        self.select
            .set(select::NAME_TOO, &u64::from(name_too), 0)
            .map_err(map_err("SELECT"))?;
        self.select
            .set(select::CGROUP, &id, 0)
            .map_err(map_err("SELECT"))?;
        if self.ns_flags & covobs_common::ns_flags::CGROUP == 0 {
            tracing::warn!(
                "this kernel's BTF lacks the cgroup structures: processes moved into the cgroup are picked up at their next exec only"
            );
            return Ok(());
        }
        self.attach_raw_tracepoint("covobs_cgroup_attach", "cgroup_attach_task")
    }

    /// Start watching every process that takes this name later (exec, or prctl on its main thread).
    pub fn watch_name(&mut self, comm: [u8; COMM_LEN]) -> Result<(), ProbeError> {
        self.comms
            .insert(&comm, &1, 0)
            .map_err(map_err("WATCH_COMMS"))
    }

    /// The record reader. Can be taken once.
    pub fn take_reader(&mut self) -> Option<EventReader> {
        self.events.take().and_then(|r| EventReader::new(r).ok())
    }

    /// Records lost to a full ring buffer so far, per record kind, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(u32, u64)>, ProbeError> {
        let mut out = Vec::new();
        for k in 0..kind::MAX {
            let per_cpu = self.drops.get(&k, 0).map_err(map_err("DROPS"))?;
            let total: u64 = per_cpu.iter().sum();
            if total > 0 {
                out.push((k, total));
            }
        }
        Ok(out)
    }

    /// Probe a dump function: a uprobe at its entry and a uretprobe at its return, in every process
    /// that maps this file (the programs keep only watched tgids). `cookie` comes back in the
    /// records and names the module and hook. Attaching the same place twice is a no-op.
    pub fn attach_dump_probe(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
        cookie: u64,
    ) -> Result<(), ProbeError> {
        self.attach_uprobe("covobs_dump_enter", file, file_offset, cookie, None)?;
        if cookie & covobs_common::COOKIE_ENDS_AT_MARKER == 0 {
            self.attach_uprobe("covobs_dump_exit", file, file_offset, cookie, None)?;
        }
        Ok(())
    }

    /// The end of dumps that have no uretprobe: a uretprobe on the runtime's end marker function
    /// (a C function) in process `pid`.
    pub fn attach_dump_end_marker(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
        pid: u32,
    ) -> Result<(), ProbeError> {
        self.attach_uprobe("covobs_dump_end_marker", file, file_offset, 0, Some(pid))
    }

    /// Count, per thread of `pid`, calls of an OCaml runtime function (a uprobe in that process
    /// only): the thread that runs OCaml shows up in `ocaml_hits`.
    pub fn attach_ocaml_probe(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
        pid: u32,
    ) -> Result<(), ProbeError> {
        self.attach_uprobe("covobs_ocaml_hit", file, file_offset, 0, Some(pid))
    }

    /// Hits of the OCaml runtime probes so far, per thread.
    pub fn ocaml_hits(&self) -> Vec<(u32, OcamlHits)> {
        self.ocaml_hits.iter().filter_map(Result::ok).collect()
    }

    /// Ask the OCaml runtime probe to send `sig` to thread `tid` the next time it runs there.
    pub fn request_bpf_signal(
        &mut self,
        tid: u32,
        sig: i32,
        now_ns: u64,
    ) -> Result<(), ProbeError> {
        self.send_signal
            .insert(
                &tid,
                &SignalRequest {
                    sig: sig as u32,
                    _pad: 0,
                    requested_ns: now_ns,
                },
                0,
            )
            .map_err(map_err("SEND_SIGNAL"))
    }

    /// Withdraw a request the OCaml thread did not take (it stopped running OCaml).
    pub fn cancel_bpf_signal(&mut self, tid: u32) -> bool {
        self.send_signal.remove(&tid).is_ok()
    }

    /// Mark `pid` as exiting when it calls the C library's exit() (a uprobe in that process only,
    /// so no other process pays for a breakpoint in its libc).
    pub fn attach_exit_probe(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
        pid: u32,
    ) -> Result<(), ProbeError> {
        self.attach_uprobe("covobs_exit_call", file, file_offset, 0, Some(pid))
    }

    fn attach_uprobe(
        &mut self,
        program: &'static str,
        file: &std::path::Path,
        file_offset: u64,
        cookie: u64,
        pid: Option<u32>,
    ) -> Result<(), ProbeError> {
        let perr = |source| ProbeError::Program {
            name: program.to_owned(),
            source,
        };
        let identity = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::metadata(file).map_err(|e| {
                perr(aya::programs::ProgramError::IOError(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", file.display()),
                )))
            })?;
            (meta.dev(), meta.ino())
        };
        if self.uprobe_links.iter().any(|l| {
            l.program == program && l.file == identity && l.offset == file_offset && l.pid == pid
        }) {
            return Ok(());
        }
        let scope = match pid.and_then(std::num::NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let point = || aya::programs::uprobe::UProbeAttachPoint {
            location: aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(file_offset),
            cookie: Some(cookie),
        };
        // The uprobe_multi twin where the kernel has it (learnt at the first attach); the
        // perf-event link otherwise.
        let multi = multi_of(program).filter(|_| self.uprobe_multi != Some(false));
        if let Some(twin) = multi {
            let attached = self
                .program(twin, |p: &mut UProbe| p.load())
                .and_then(|prog| {
                    prog.attach([point()], file, scope)
                        .map_err(|source| ProbeError::Program {
                            name: twin.to_owned(),
                            source,
                        })
                });
            match attached {
                Ok(link) => {
                    self.uprobe_multi = Some(true);
                    self.uprobe_links.push(UprobeLink {
                        program,
                        file: identity,
                        offset: file_offset,
                        pid,
                        attached: twin,
                        link,
                    });
                    return Ok(());
                }
                Err(e) if self.uprobe_multi.is_none() => {
                    tracing::debug!("{e}: uprobes attached as perf events");
                    self.uprobe_multi = Some(false);
                }
                Err(e) => return Err(e),
            }
        }
        let prog = self.program(program, |p: &mut UProbe| p.load())?;
        let link = prog.attach([point()], file, scope).map_err(perr)?;
        self.uprobe_links.push(UprobeLink {
            program,
            file: identity,
            offset: file_offset,
            pid,
            attached: program,
            link,
        });
        Ok(())
    }

    /// Attach the self-test uprobe to `symbol` in this very process's executable; when it fires it
    /// sends `signal` (0: none) to the thread that hit it with bpf_send_signal_thread.
    pub fn attach_selftest(&mut self, symbol: &str, signal: i32) -> Result<(), ProbeError> {
        let perr = |source| ProbeError::Program {
            name: "covobs_selftest".to_owned(),
            source,
        };
        self.selftest
            .set(covobs_common::selftest::SIGNAL, &(signal as u64), 0)
            .map_err(map_err("SELFTEST"))?;
        let prog: &mut UProbe = self
            .ebpf
            .program_mut("covobs_selftest")
            .ok_or(ProbeError::Missing("covobs_selftest"))?
            .try_into()
            .map_err(perr)?;
        prog.load().map_err(perr)?;
        let pid = std::num::NonZeroU32::new(std::process::id())
            .ok_or(ProbeError::Missing("a process id"))?;
        prog.attach([symbol], "/proc/self/exe", UProbeScope::OneProcess(pid))
            .map_err(perr)?;
        Ok(())
    }

    /// What the kcov program knows about this kernel (valid: kcov is there and BTF describes it).
    pub fn kcov_config(&self) -> KcovConfig {
        self.config.kcov
    }

    /// Change what the kcov program knows (anchors, calibration thread).
    pub fn update_kcov(&mut self, f: impl FnOnce(&mut KcovConfig)) -> Result<(), ProbeError> {
        f(&mut self.config.kcov);
        self.config_map
            .set(0, &self.config, 0)
            .map_err(map_err("CONFIG"))
    }

    /// See the kcov ioctls of process `pid`: a uprobe on its C library's `ioctl` (at
    /// `file_offset` of `file`), in that process only.
    pub fn attach_kcov_probe(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
        pid: u32,
    ) -> Result<(), ProbeError> {
        self.attach_uprobe("covobs_kcov_ioctl", file, file_offset, 0, Some(pid))
    }

    /// The kcov uprobe on covobs itself, for calibration; detached with `detach_kcov_probe`.
    pub fn attach_kcov_calibration(
        &mut self,
        file: &std::path::Path,
        file_offset: u64,
    ) -> Result<aya::programs::uprobe::UProbeLinkId, ProbeError> {
        let program = "covobs_kcov_ioctl";
        let perr = |source| ProbeError::Program {
            name: program.to_owned(),
            source,
        };
        let prog = self.program(program, |p: &mut UProbe| {
            let started = std::time::Instant::now();
            p.load()?;
            tracing::debug!("{program} loaded in {:?}", started.elapsed());
            Ok(())
        })?;
        let pid = std::num::NonZeroU32::new(std::process::id())
            .ok_or(ProbeError::Missing("a process id"))?;
        let point = aya::programs::uprobe::UProbeAttachPoint {
            location: aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(file_offset),
            cookie: None,
        };
        prog.attach([point], file, UProbeScope::OneProcess(pid))
            .map_err(perr)
    }

    pub fn detach_kcov_probe(&mut self, link: aya::programs::uprobe::UProbeLinkId) {
        if let Some(p) = self.ebpf.program_mut("covobs_kcov_ioctl")
            && let Ok(prog) = <&mut UProbe>::try_from(p)
            && let Err(e) = prog.detach(link)
        {
            tracing::warn!("detaching the kcov calibration probe: {e}");
        }
    }

    /// The self-test counters (`covobs_common::selftest` slots).
    pub fn selftest_slot(&self, slot: u32) -> u64 {
        self.selftest.get(&slot, 0).unwrap_or(0)
    }

    pub fn programs(&self) -> &[LoadedProgram] {
        &self.programs
    }
}

impl Drop for Probes {
    /// Every link closed at once (one grace period, not one per link); the programs and maps go
    /// after, which waits for nothing.
    fn drop(&mut self) {
        if let Some(handle) = self.detaching.take()
            && handle.join().is_err()
        {
            tracing::warn!("the last file-tracking window failed to detach");
        }
        let started = std::time::Instant::now();
        let links = self.take_all_links();
        let n = links.len();
        release::close_all(links);
        tracing::debug!("{n} links closed in {:?}", started.elapsed());
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to the cgroup. Raising the
/// limit may be refused (no CAP_SYS_RESOURCE): harmless where the cgroup is charged, so only warn.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels that charge BPF memory to the cgroup",
            std::io::Error::last_os_error()
        );
    }
}

fn start_ebpf_logger(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            // SAFETY: the logger owns its ring-buffer map fd for as long as the AsyncFd lives, and
            // flushing neither closes nor replaces that fd.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            };
            match registered {
                Ok(mut fd) => {
                    tokio::spawn(async move {
                        while let Ok(mut guard) = fd.readable_mut().await {
                            guard.get_inner_mut().flush();
                            guard.clear_ready();
                        }
                    });
                }
                Err(e) => tracing::warn!("eBPF log reader: {e}"),
            }
        }
        Err(e) => tracing::warn!("eBPF logging unavailable: {e}"),
    }
}

#[cfg(test)]
mod kcov_load_tests {
    #[test]
    fn the_kcov_program_passes_the_verifier() {
        let mut ebpf = aya::EbpfLoader::new()
            .verifier_log_level(aya::VerifierLogLevel::STATS)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/covobs-ebpf"
            )))
            .expect("load object");
        let p: &mut aya::programs::UProbe = ebpf
            .program_mut("covobs_kcov_ioctl")
            .expect("program")
            .try_into()
            .expect("uprobe");
        let t = std::time::Instant::now();
        p.load().expect("verifier");
        eprintln!("kcov program verified in {:?}", t.elapsed());
        if let Ok(info) = p.info() {
            eprintln!(
                "verified instructions: {:?}",
                info.verified_instruction_count()
            );
        }
    }
}
