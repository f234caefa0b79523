//! `covobs attach --qemu PID --elf PAYLOAD [--interval D]`: a session around a no_std payload in a
//! QEMU guest. On every tick covobs reads the payload's counters from the guest's RAM inside the
//! QEMU process (docs/guests.md) and sends the snapshot down the same artifact path as
//! `--mode snapshot` does for a process: `<qemu-pid>-<comm>/<seq>-llvm.profraw` with its
//! metadata, `snapshot` and `artifact` events with their deltas, the timeline and the report at
//! the end. No eBPF is loaded and nothing in the guest cooperates. With `--shared REGION` the
//! guest does cooperate: each tick takes the payload's latest capture from the region it shares
//! with the host (ticks before its first capture deliver nothing).
//!
//! The session ends when the QEMU process exits (a pidfd says so), at Ctrl-C/SIGTERM or at the end
//! of `--duration` (then with one last snapshot). Guest RAM goes with the QEMU process: what the
//! guest reached after the last snapshot before QEMU exited is not in the session.
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::AtomicU64,
    time::Duration,
};

use anyhow::Context as _;

use super::{
    losses::Losses, progress::Progress, session::Outcome, snapshots::deliver, targets::sanitize,
};
use crate::layout::session::{self as session_layout, Nullable, Object, SessionInfo};
use crate::{
    BadInput,
    collect::{self, Trigger},
    events::{Body, Event},
    snapshot::{
        DeltaTracker, Snapshot,
        command::{self, Guest, SharedGuest},
    },
    stream::{
        DirSink, HumanSink, JsonLinesSink, OutputHealth, OutputModes, Pipeline, PrimarySink,
        Sender, Sink,
    },
    sys::clock,
    sys::shutdown::Shutdown,
    target::Process,
};

/// The default `--interval` for a guest.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct GuestOptions {
    pub qemu: i32,
    pub elf: PathBuf,
    pub qmp: Option<PathBuf>,
    /// Stop the guest through QMP for each read (exact snapshots).
    pub pause: bool,
    /// Take the payload's captures from this shared region (docs/guests.md).
    pub shared: Option<String>,
    pub out: Option<PathBuf>,
    pub modes: OutputModes,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub json: bool,
    pub no_report: bool,
    /// The command line, for session.json.
    pub command: Vec<String>,
}

/// What the session counted, for session.json.
#[derive(Default)]
struct Counters {
    artifacts: u64,
    snapshots: u64,
    /// Filled in from the session's [`Losses`] at the end.
    lost: u64,
}

/// The QEMU process's exit, seen through a pidfd (readable once the process has exited; also
/// while it is a zombie nobody reaped).
struct ExitWatch(tokio::io::unix::AsyncFd<OwnedFd>);

impl ExitWatch {
    fn open(pid: i32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
        // is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created by pidfd_open and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the descriptor and keeps it open for as long as it is
        // registered; nothing closes or replaces it.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        Ok(Self(fd))
    }

    async fn wait(&self) {
        if self.0.readable().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the process has exited, now (no waiting).
    fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & libc::POLLIN != 0
    }
}

/// Where a session's snapshots come from: the payload's counters in guest RAM, or its captures
/// in a shared region.
enum Reader {
    Ram(Guest),
    Shared(SharedGuest),
}

impl Reader {
    fn target(&self) -> &crate::snapshot::payload::ElfTarget {
        match self {
            Self::Ram(g) => &g.target,
            Self::Shared(g) => &g.target,
        }
    }

    fn runtimes(&self) -> Vec<crate::discover::Runtime> {
        match self {
            Self::Ram(g) => g.plans.iter().map(|p| p.runtime()).collect(),
            Self::Shared(_) => vec![crate::discover::Runtime::Llvm],
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Ram(g) => g.describe(),
            Self::Shared(g) => g.region.describe(),
        }
    }

    /// The snapshots now: none while a shared region holds no capture yet.
    fn take(&mut self, pause: bool) -> Result<Vec<Snapshot>, command::CommandError> {
        match self {
            Self::Ram(g) => g.take(pause),
            Self::Shared(g) => match g.take() {
                Ok((_, snap, _)) => Ok(vec![snap]),
                Err(command::CommandError::NotYet(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }
}

/// The session's state while it runs.
struct GuestSession {
    pid: u32,
    comm: String,
    /// `<pid>-<comm>`: the artifacts' directory in the session.
    dir: String,
    /// The memory named in each artifact's `source.path`.
    memory: String,
    process_start_ns: Option<u64>,
    pause: bool,
    guest: Option<Reader>,
    deltas: DeltaTracker,
    seq: AtomicU64,
    tx: Sender,
    counters: Counters,
    losses: Losses,
}

fn event(pid: u32, body: Body) -> Event {
    Event {
        ts_ns: clock::boot_ns(),
        pid,
        tid: pid,
        body,
    }
}

impl GuestSession {
    /// Read the counters now and hand every snapshot to the pipeline. False when the QEMU process
    /// is gone (the read failed because it exited).
    async fn snapshot(
        &mut self,
        exit: &ExitWatch,
        progress: &mut Progress,
        out_dir: &Path,
    ) -> bool {
        let Some(mut guest) = self.guest.take() else {
            return false;
        };
        let pause = self.pause;
        let (guest, taken) = match tokio::task::spawn_blocking(move || {
            let r = guest.take(pause);
            (guest, r)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                self.lost(format!("the snapshot task failed: {e}")).await;
                return true;
            }
        };
        self.guest = Some(guest);
        let snaps = match taken {
            Ok(s) => s,
            Err(_) if exit.exited() => return false,
            Err(e) => {
                self.lost(format!("snapshot of the guest: {e}")).await;
                return true;
            }
        };
        for mut snap in snaps {
            let key = format!("{} {}", snap.runtime.as_str(), snap.module.path);
            snap.info.delta = self.deltas.update(self.pid, &key, snap.covered.clone());
            let result = deliver(
                self.pid,
                self.process_start_ns,
                &self.comm,
                &self.dir,
                Trigger::Snapshot,
                snap,
                &self.seq,
                &self.tx,
                &self.memory,
            )
            .await;
            match &result {
                Ok(_) => {
                    self.counters.artifacts += 1;
                    self.counters.snapshots += 1;
                }
                Err(why) => self.lost(why.clone()).await,
            }
            progress.artifact(
                out_dir,
                &Outcome {
                    pid: self.pid,
                    requests: Vec::new(),
                    result,
                },
            );
        }
        true
    }

    async fn lost(&mut self, reason: String) {
        self.losses
            .report(self.pid, self.pid, "snapshot", reason)
            .await;
    }
}

/// Bad input (exit 2) or covobs' own failure (exit 1).
fn edge(e: command::CommandError) -> anyhow::Error {
    if e.is_bad_input() {
        BadInput(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

pub async fn run(opts: GuestOptions) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install(opts.duration);
    let started_unix = clock::realtime_ns();
    let out_dir = opts.out.clone().unwrap_or_else(super::default_out_dir);
    let qemu = Process::get(opts.qemu).map_err(|e| BadInput(e.to_string()))?;
    let exit = ExitWatch::open(qemu.pid)
        .map_err(|e| BadInput(format!("process {}: pidfd_open: {e}", qemu.pid)))?;
    let (pid, elf, qmp, pause) = (qemu.pid, opts.elf.clone(), opts.qmp.clone(), opts.pause);
    let shared = opts.shared.clone();
    // The QMP connection used to locate the payload is closed here: QMP serves one client.
    let guest = tokio::task::spawn_blocking(move || match shared {
        Some(region) => SharedGuest::open(pid, &elf, &region, qmp.as_deref()).map(Reader::Shared),
        None => {
            command::locate_guest(pid, &elf, qmp.as_deref(), pause).map(|(g, _)| Reader::Ram(g))
        }
    })
    .await?
    .map_err(edge)?;
    if !qemu.is_alive() {
        return Err(BadInput(format!(
            "QEMU process {pid} exited while covobs was attaching"
        ))
        .into());
    }
    let module = guest.target().module.clone();
    let memory = guest.describe();

    let created_from = super::first_missing(&out_dir);
    let dir_sink = DirSink::create(&out_dir, opts.modes).map_err(|e| BadInput(e.to_string()))?;
    let output = dir_sink.health();
    let primary: Box<dyn PrimarySink> = Box::new(dir_sink);
    let sinks: Vec<Box<dyn Sink>> = if opts.json {
        vec![Box::new(JsonLinesSink::new(std::io::stdout(), "stdout"))]
    } else {
        vec![Box::new(HumanSink::coverage_view(std::io::stdout()))]
    };
    let pipeline = match Pipeline::new(Some(primary), sinks) {
        Ok(p) => p,
        Err(e) => {
            super::remove_refused(&out_dir, created_from.as_deref());
            return Err(e.into());
        }
    };
    let report_opts = (!opts.no_report).then(|| crate::report::ReportOptions {
        modes: opts.modes,
        ..Default::default()
    });
    let mut progress = Progress::new(false, &out_dir, report_opts);
    let tx = pipeline.sender();
    let exe = qemu.exe.as_ref().map(|p| p.display().to_string());
    tx.event(event(
        pid as u32,
        Body::Target {
            comm: qemu.comm.clone(),
            exe: exe.clone(),
            reason: "qemu",
            threads: Vec::new(),
        },
    ))
    .await;
    for runtime in guest.runtimes() {
        tx.event(event(
            pid as u32,
            Body::RuntimeFound {
                runtime,
                module: module.path.clone(),
                build_id: module.build_id.clone(),
                symbols: "symtab".into(),
                functions: Vec::new(),
                producer: collect::ModuleMeta::from(&*module).producer,
                note: Some(format!("a guest payload, snapshotted in {memory}")),
            },
        ))
        .await;
    }
    if let Some(copy) = collect::module_copy_path(&module) {
        tx.module(copy, guest.target().path.clone()).await;
    }
    let mut session = GuestSession {
        pid: pid as u32,
        comm: qemu.comm.clone(),
        dir: format!("{pid}-{}", sanitize(&qemu.comm)),
        memory: match &guest {
            Reader::Ram(_) => format!("qemu:{pid}:guest-physical"),
            Reader::Shared(g) => format!("qemu:{pid}:shared:{}", g.region.file.display()),
        },
        process_start_ns: crate::target::start_boot_ns(pid),
        pause: opts.pause,
        guest: Some(guest),
        deltas: DeltaTracker::default(),
        seq: AtomicU64::new(0),
        tx: tx.clone(),
        counters: Counters::default(),
        losses: Losses::new(tx.clone()),
    };

    shutdown.start_clock();
    let mut interval = tokio::time::interval(opts.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fault = output.subscribe();
    let mut ended_by = "qemu-exit";
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if !session.snapshot(&exit, &mut progress, &out_dir).await {
                    break;
                }
            }
            _ = exit.wait() => break,
            _ = shutdown.wait() => {
                // The state at detach, while the guest still runs.
                ended_by = "detach";
                session.snapshot(&exit, &mut progress, &out_dir).await;
                break;
            }
            Ok(()) = fault.changed() => {
                if let Some(why) = output.fault() {
                    eprintln!("covobs: error: {why}; stopping");
                    ended_by = "output-fault";
                    break;
                }
            }
        }
    }
    if ended_by == "qemu-exit" {
        tx.event(event(
            pid as u32,
            Body::ProcessExit {
                comm: qemu.comm.clone(),
            },
        ))
        .await;
    }
    let mut counters = std::mem::take(&mut session.counters);
    counters.lost = session.losses.lost();
    drop(session);
    drop(tx);
    let stats = pipeline.finish().await?;
    for w in stats.warnings() {
        eprintln!("covobs: warning: {w}");
    }
    let info = SessionInfo {
        layout: session_layout::LAYOUT,
        covobs_version: Some(env!("CARGO_PKG_VERSION").into()),
        command: Some(opts.command.clone()),
        started_unix_ns: Nullable::Value(started_unix),
        ended_unix_ns: Nullable::Value(clock::realtime_ns()),
        boot_to_unix_offset_ns: Some(clock::boot_to_unix_offset_ns() as i64),
        options: Some(session_layout::Options {
            interval_ms: Some(opts.interval.as_millis() as u64),
            mode: Some(
                if opts.shared.is_some() {
                    "qemu-shared"
                } else {
                    "qemu"
                }
                .into(),
            ),
            pause: Some(opts.pause),
            ..Default::default()
        }),
        ended_by: Some(ended_by.into()),
        guest: Some(session_layout::Guest {
            qemu_pid: pid as u32,
            payload: module.path.clone(),
            build_id: module.build_id.clone(),
            memory,
            ..Default::default()
        }),
        targets: Some(vec![session_layout::Target {
            pid: pid as u32,
            comm: Some(qemu.comm.clone()),
            exe,
            ..Default::default()
        }]),
        counters: Some(session_layout::Counters {
            events: Some(stats.events),
            artifacts: Some(counters.artifacts),
            lost: Some(counters.lost),
            snapshots: Some(counters.snapshots),
            sinks: Some(
                stats
                    .sinks
                    .iter()
                    .map(|s| Object::of("counters.sinks[]", s))
                    .collect::<Result<_, _>>()?,
            ),
            ..Default::default()
        }),
        output: Some(session_layout::Output {
            fault: output.fault(),
            events_not_written: Some(output.unwritten_events()),
            ..Default::default()
        }),
        ..Default::default()
    };
    write_session_json(&output, &info)?;
    eprintln!(
        "covobs: guest of QEMU process {pid}: {} snapshots, {} lost; {}",
        counters.snapshots,
        counters.lost,
        match ended_by {
            "qemu-exit" => "QEMU exited",
            "detach" => "detached",
            _ => "stopped",
        }
    );
    if let Some(fault) = output.fault() {
        anyhow::bail!("{fault}: covobs stopped");
    }
    if !opts.no_report {
        super::report(&out_dir, None, opts.modes, progress).await;
    } else {
        tokio::task::block_in_place(|| progress.stop());
    }
    eprintln!("covobs: session written to {}", out_dir.display());
    Ok(())
}

fn write_session_json(output: &OutputHealth, info: &SessionInfo) -> anyhow::Result<()> {
    let bytes = info.to_bytes()?;
    let dir = output.dir();
    dir.write_new(dir.fd(), "session.json", &bytes, true)
        .with_context(|| format!("writing {}", dir.path().join("session.json").display()))
}
