//! The events covobs reports: one JSON object each in `events.jsonl` and on `--json` stdout.
//!
//! Every object carries `ts_ns` (CLOCK_BOOTTIME nanoseconds, the clock of the eBPF programs;
//! session.json gives the offset to Unix time), `event`, `pid` and `tid`, then its own fields.
//! `pid`/`tid` name the task of the target the event is about: for a signal, the receiving thread.
use serde::Serialize;

use crate::{discover::Runtime, layout::artifact::Trigger, target::Thread};

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Body {
    /// covobs started watching a process (`reason`: pid, name, cgroup, exec, rename, fork).
    Target {
        comm: String,
        exe: Option<String>,
        reason: &'static str,
        threads: Vec<Thread>,
    },
    /// A watched process (or one that just took a watched name) called exec.
    ProcessExec {
        filename: String,
        comm: String,
        /// The tid that called exec, when it was not the leader.
        old_tid: u32,
    },
    /// A watched process forked a child (`child_pid`); `followed` when the child is watched too.
    ProcessFork {
        child_pid: u32,
        comm: String,
        followed: bool,
    },
    /// The last thread of a watched process exited.
    ProcessExit {
        comm: String,
    },
    /// A new thread: `tid` is the new thread, `parent_tid` the thread that created it; `name` is
    /// the name it was born with (a thread usually renames itself right after: `thread_rename`).
    ThreadStart {
        name: String,
        parent_tid: u32,
    },
    ThreadExit {
        name: String,
    },
    ThreadRename {
        old_name: String,
        name: String,
    },
    /// A process was moved into the selected cgroup (`entered`: it becomes a target) or a target
    /// was moved out of it (it is no longer triggered, and is let go once the dumps covobs asked
    /// it for are collected).
    CgroupMove {
        comm: String,
        entered: bool,
        /// The selected cgroup (its path in the hierarchy).
        cgroup: String,
    },
    /// A signal was queued for thread `tid` of `pid`, sent by `sender_pid`/`sender_tid`.
    SignalGenerate {
        sig: i32,
        signal: String,
        code: i32,
        sender_pid: u32,
        sender_tid: u32,
        sender_comm: String,
        /// Process-directed (kill) rather than thread-directed (tgkill).
        group: bool,
        /// delivered, ignored, already_pending, overflow, lose_info.
        result: &'static str,
    },
    /// Thread `tid` is about to run the handler of a signal.
    SignalDeliver {
        sig: i32,
        signal: String,
        code: i32,
        /// default, ignore, or the handler's address in hex.
        handler: String,
        sa_flags: u64,
    },
    /// A coverage runtime (or the OCaml runtime) found in a module of the target.
    RuntimeFound {
        runtime: Runtime,
        module: String,
        build_id: Option<String>,
        /// Where the symbols came from: symtab, dynsym, debug file, none.
        symbols: String,
        /// The functions covobs probes for it.
        functions: Vec<String>,
        producer: Option<String>,
        /// Why it cannot be probed, when it cannot (stripped symbols, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// covobs sent a signal to make thread `tid` dump `runtimes`.
    Trigger {
        signal: String,
        runtimes: Vec<Runtime>,
        /// pidfd, tgkill, bpf_send_signal_thread.
        method: String,
        /// interval, once, detach, request.
        reason: String,
        /// bpf_send_signal_thread: nanoseconds from the request to the send (the thread's
        /// next OCaml runtime probe hit).
        #[serde(skip_serializing_if = "Option::is_none")]
        waited_ns: Option<u64>,
    },
    /// A dump function was entered on thread `tid`.
    DumpStart {
        runtime: Runtime,
        module: String,
        function: String,
        trigger: Trigger,
    },
    /// The dump function returned `ret` after `duration_ns`.
    DumpEnd {
        runtime: Runtime,
        module: String,
        function: String,
        ret: i64,
        duration_ns: u64,
    },
    /// The bytes of a dump were collected into the output directory.
    Artifact {
        seq: u64,
        runtime: crate::layout::artifact::Runtime,
        file: String,
        bytes: u64,
        valid: bool,
        source_path: String,
        offset: u64,
        trigger: Trigger,
        /// Nanoseconds from dump_end to the artifact being written and synced.
        latency_ns: u64,
    },
    /// Thread `tid` runs the OCaml runtime of process `pid` (found at first, or OCaml moved).
    OcamlThread {
        name: String,
        /// runtime probes, or thread name (where the runtime's symbols are stripped).
        method: String,
        /// The thread that ran OCaml before, if another.
        previous_tid: Option<u32>,
        /// Runtime probe hits a second on this thread.
        hits_per_sec: f64,
    },
    /// A dump signal covobs sent was delivered: on thread `tid`; `ok` when that is the thread it
    /// was meant for.
    Delivery {
        signal: String,
        intended_tid: u32,
        ok: bool,
        /// Nanoseconds from sending (or asking eBPF to send) to delivery.
        latency_ns: u64,
    },
    /// covobs read a module's counters from the target's memory (`trigger` snapshot), or the
    /// kernel copied them as the process exited (`final`); `file` is the artifact. `covered`
    /// counters are executed ones, `new_covered` those that were not in the module's previous
    /// snapshot in this process, `reset` those covered before and zero now.
    Snapshot {
        runtime: Runtime,
        module: String,
        trigger: Trigger,
        file: String,
        counters: u64,
        covered: u64,
        new_covered: u64,
        reset: u64,
        /// How the counters were read (`process_vm_readv`, `ebpf:sched_process_exit`), how many
        /// bytes, and how long the copy took.
        method: String,
        bytes_read: u64,
        read_ns: u64,
    },
    /// Kernel coverage (kcov) of thread `tid`: what its buffer held at a moment covobs saw
    /// (crate::runtimes::kcov::KcovEvent documents the fields).
    Kcov(crate::runtimes::kcov::KcovEvent),
    /// A label closed (docs/labels.md): the artifacts of the dumps that close it, and the
    /// dumps asked for it that were lost.
    Label {
        label: String,
        artifacts: Vec<String>,
        lost: Vec<String>,
    },
    /// Something was not observed or not collected; `reason` says why.
    Lost {
        reason: String,
        what: String,
        count: u64,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match &self.body {
            Body::Target { .. } => "target",
            Body::ProcessExec { .. } => "process_exec",
            Body::ProcessFork { .. } => "process_fork",
            Body::ProcessExit { .. } => "process_exit",
            Body::ThreadStart { .. } => "thread_start",
            Body::ThreadExit { .. } => "thread_exit",
            Body::ThreadRename { .. } => "thread_rename",
            Body::CgroupMove { .. } => "cgroup_move",
            Body::SignalGenerate { .. } => "signal_generate",
            Body::SignalDeliver { .. } => "signal_deliver",
            Body::Lost { .. } => "lost",
            Body::Label { .. } => "label",
            Body::RuntimeFound { .. } => "runtime_found",
            Body::Trigger { .. } => "trigger",
            Body::DumpStart { .. } => "dump_start",
            Body::DumpEnd { .. } => "dump_end",
            Body::Artifact { .. } => "artifact",
            Body::OcamlThread { .. } => "ocaml_thread",
            Body::Delivery { .. } => "delivery",
            Body::Snapshot { .. } => "snapshot",
            Body::Kcov(_) => "kcov",
        }
    }
}

/// `SIGUSR2` for 12, `SIGRT+3` for real-time signals, the number otherwise.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) => {
            format!("SIGRT+{}", sig - libc::SIGRTMIN())
        }
        Err(_) => sig.to_string(),
    }
}

/// The kernel's TRACE_SIGNAL_* result of signal_generate.
pub fn signal_result_name(result: i32) -> &'static str {
    match result {
        0 => "delivered",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow_fail",
        4 => "lose_info",
        _ => "unknown",
    }
}

/// How a handler address reads: the kernel's SIG_DFL / SIG_IGN, or the address.
pub fn handler_name(sa_handler: u64) -> String {
    match sa_handler {
        0 => "default".to_owned(),
        1 => "ignore".to_owned(),
        h => format!("{h:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_common_fields_and_the_event_name() {
        let e = Event {
            ts_ns: 5,
            pid: 10,
            tid: 11,
            body: Body::ThreadRename {
                old_name: "a".into(),
                name: "b".into(),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "thread_rename");
        assert_eq!(v["ts_ns"], 5);
        assert_eq!(v["pid"], 10);
        assert_eq!(v["tid"], 11);
        assert_eq!(v["name"], "b");
        assert_eq!(e.name(), "thread_rename");
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(12), "SIGUSR2");
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), "SIGRT+3");
        assert_eq!(handler_name(0), "default");
        assert_eq!(handler_name(0x10), "0x10");
    }
}
