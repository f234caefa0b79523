//! What an attach session is asked to do: its options, with the defaults every command starts
//! from (`covobs attach` sets them all from its arguments; `run` and `watch` only what differs).
use std::{path::PathBuf, time::Duration};

use nix::sys::signal::Signal;

use crate::{
    probes::{FileTrackingPolicy, ProbeOptions},
    target::TargetSpec,
    trigger::ThreadChoice,
};

/// What the session does with the targets' dumps: collect them (`attach`, `run`: signals,
/// collectors, artifacts, a session directory, the `covobs dump` socket), or only observe them
/// (`watch`: events on stdout, nothing sent to a target, nothing written). Chosen once, by the
/// command; the session's parts follow from it (see [`Purpose::probes`], `Session::new`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    #[default]
    Collect,
    Observe,
}

impl Purpose {
    /// The probes it needs: collecting follows dump outputs and reports the dump signal and those
    /// that end a target; observing follows no file and reports every signal.
    pub fn probes(self, opts: &AttachOptions) -> ProbeOptions {
        let (file_tracking, signal_mask) = match self {
            Purpose::Collect => (
                Some(opts.file_tracking),
                super::attach_signal_mask(opts.signal),
            ),
            Purpose::Observe => (None, 0),
        };
        ProbeOptions {
            ebpf_log: opts.ebpf_log,
            file_tracking,
            signal_mask,
            snapshot_ring_bytes: crate::probes::final_snapshots::DEFAULT_SNAPSHOT_RING_BYTES,
            ..Default::default()
        }
    }
}

#[derive(Debug)]
pub struct AttachOptions {
    pub target: TargetSpec,
    pub out: Option<PathBuf>,
    /// The modes (and group) of the session directory and all in it.
    pub modes: crate::stream::OutputModes,
    pub interval: Option<Duration>,
    pub once: bool,
    pub duration: Option<Duration>,
    pub signal: Signal,
    pub thread: ThreadChoice,
    pub force: bool,
    pub json: bool,
    /// Serve the session's live web view on this address while it runs (`--serve`).
    pub serve: Option<std::net::SocketAddr>,
    pub wait: bool,
    pub follow_forks: bool,
    pub ebpf_log: bool,
    /// How long a signalled target may take to start and finish its dump.
    pub dump_timeout: Duration,
    /// Skip the report at the end.
    pub no_report: bool,
    /// Where trampolines are unavailable: when syscall tracepoints may follow dump outputs.
    pub file_tracking: crate::probes::FileTrackingPolicy,
    /// Collect (`attach`, `run`) or only observe (`watch`).
    pub purpose: Purpose,
    /// How a dump signal reaches the OCaml thread.
    pub deliver: Deliver,
    /// The OCaml thread's name, for binaries whose runtime symbols are stripped.
    pub ocaml_thread_name: String,
    /// Signal the targets, or snapshot their memory.
    pub mode: Mode,
    /// Signal mode: take final snapshots too (snapshot mode always does).
    pub final_snapshot: bool,
    /// The command line, for session.json.
    pub command: Vec<String>,
    /// The kernel image with DWARF for the report's kernel coverage (default: found by build id).
    pub vmlinux: Option<PathBuf>,
    /// Also publish the session to a fleet's NATS JetStream (docs/fleet.md).
    pub publish: Option<crate::stream::nats::PublishOptions>,
}

/// How the dump signal for the OCaml runtime is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// From covobs, through a thread pidfd (tgkill where pidfds cannot name threads).
    Pidfd,
    /// From eBPF, with bpf_send_signal_thread, the next time the OCaml thread enters a probed
    /// OCaml runtime function: it lands exactly there. Other runtimes' signals go by pidfd.
    Bpf,
}

/// How `attach` gets the coverage of its targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Signal the target; its runtime dumps; covobs collects what it wrote.
    Signal,
    /// Read the counters from the target's memory: no signal, no handler needed.
    Snapshot,
}

impl AttachOptions {
    /// An attach to `target` with every option at its command-line default.
    pub fn new(target: TargetSpec) -> Self {
        Self {
            target,
            out: None,
            modes: Default::default(),
            interval: None,
            once: false,
            duration: None,
            signal: Signal::SIGUSR2,
            thread: ThreadChoice::Auto,
            force: false,
            json: false,
            serve: None,
            wait: false,
            follow_forks: false,
            ebpf_log: false,
            dump_timeout: Duration::from_secs(10),
            no_report: false,
            file_tracking: FileTrackingPolicy::Window,
            purpose: Purpose::Collect,
            deliver: Deliver::Pidfd,
            ocaml_thread_name: "ffi-ocaml-executor-thread".into(),
            mode: Mode::Signal,
            final_snapshot: false,
            command: Vec::new(),
            vmlinux: None,
            publish: None,
        }
    }

    /// A session that only observes `target` (`covobs watch`): no file tracking, no report, a
    /// short bound on the dumps it sees running when it stops.
    pub fn observe(target: TargetSpec) -> Self {
        Self {
            purpose: Purpose::Observe,
            dump_timeout: Duration::from_secs(1),
            no_report: true,
            file_tracking: FileTrackingPolicy::Off,
            ..Self::new(target)
        }
    }
}
