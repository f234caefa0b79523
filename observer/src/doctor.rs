//! `covobs doctor`: what this kernel and these privileges allow, each probed for real (a program
//! is loaded, a uprobe fires, a signal is sent from eBPF), not guessed from version numbers.
use std::{
    path::Path,
    sync::atomic::{AtomicI32, Ordering},
};

use serde::Serialize;

use crate::{
    probes::{ProbeOptions, Probes, offsets},
    sys::{bpf, caps, tracefs},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Missing, but attaching still works (an optional capability).
    Warn,
    /// Attaching cannot work until this is fixed.
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Attaching can work (no check failed).
    pub ok: bool,
    pub kernel: String,
    pub checks: Vec<Check>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Run every check. Needs a tokio runtime (the eBPF logger and ring buffer use it).
pub fn run() -> Report {
    let mut checks = Vec::new();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    checks.push(check("kernel", Status::Ok, kernel.clone()));

    checks.extend(privileges());
    let bpf_ok = match bpf::probe() {
        Ok(()) => {
            checks.push(check("bpf syscall", Status::Ok, "bpf() present"));
            true
        }
        Err(e) => {
            let fix = match e {
                bpf::BpfUnavailable::NoSyscall => {
                    "use a kernel built with CONFIG_BPF_SYSCALL=y (every distribution kernel is)"
                }
                _ => "run covobs as root",
            };
            checks.push(check("bpf syscall", Status::Fail, e.to_string()).fix(fix));
            false
        }
    };
    checks.push(btf());
    checks.push(pid_namespace());
    let tracefs_root = match tracefs::root() {
        Ok(root) => {
            checks.push(check("tracefs", Status::Ok, root.display().to_string()));
            Some(root)
        }
        Err(e) => {
            checks.push(
                check("tracefs", Status::Fail, e.to_string())
                    .fix("mount -t tracefs tracefs /sys/kernel/tracing"),
            );
            None
        }
    };
    checks.push(debugfs());
    if let Some(root) = &tracefs_root {
        checks.extend(tracepoints(root));
    }
    if bpf_ok && tracefs_root.is_some() {
        checks.extend(live_probes());
    }
    checks.push(uprobe_multi());
    checks.push(kcov());
    checks.push(memlock());

    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report { ok, kernel, checks }
}

fn privileges() -> Vec<Check> {
    let Ok(c) = caps::Caps::current() else {
        return vec![check(
            "capabilities",
            Status::Fail,
            "cannot read /proc/self/status",
        )];
    };
    let mut out = Vec::new();
    let trace_status = if c.can_trace() {
        Status::Ok
    } else {
        Status::Fail
    };
    let via_admin =
        c.has(caps::CAP_SYS_ADMIN) && !(c.has(caps::CAP_BPF) && c.has(caps::CAP_PERFMON));
    let mut trace = check(
        "CAP_BPF + CAP_PERFMON",
        trace_status,
        match (c.has(caps::CAP_BPF), c.has(caps::CAP_PERFMON), via_admin) {
            (_, _, true) => "via CAP_SYS_ADMIN".to_owned(),
            (b, p, _) => format!("CAP_BPF {}, CAP_PERFMON {}", yes_no(b), yes_no(p)),
        },
    );
    if trace_status == Status::Fail {
        trace = trace.fix("run covobs as root (sudo), or grant CAP_BPF and CAP_PERFMON");
    }
    out.push(trace);
    for (name, cap, why) in [
        (
            "CAP_SYS_PTRACE",
            caps::CAP_SYS_PTRACE,
            "read other processes' memory and files (/proc/PID/root, process_vm_readv)",
        ),
        (
            "CAP_KILL",
            caps::CAP_KILL,
            "signal other users' processes to dump",
        ),
    ] {
        let has = c.has(cap);
        let mut ch = check(
            name,
            if has { Status::Ok } else { Status::Fail },
            format!("{}: {why}", yes_no(has)),
        );
        if !has {
            ch = ch.fix(format!("run covobs as root, or grant {name}"));
        }
        out.push(ch);
    }
    out
}

/// covobs' PID namespace: the initial one (kernel ids as they are), or a container's, where the
/// programs translate every id and need BTF for it.
fn pid_namespace() -> Check {
    use crate::target::PidNs;
    match PidNs::own() {
        Ok(ns) if ns.initial => check(
            "PID namespace",
            Status::Ok,
            "the initial one: ids are the kernel's",
        ),
        Ok(ns) => {
            let offsets = crate::probes::btf::load()
                .map(|btf| crate::probes::namespaces::offsets(&btf, ns).flags)
                .unwrap_or(0);
            if offsets & covobs_common::ns_flags::PID != 0 {
                check(
                    "PID namespace",
                    Status::Ok,
                    format!(
                        "a container's (inode {}): every id is given as this namespace sees it; processes outside it are not visible",
                        ns.inode
                    ),
                )
            } else {
                check(
                    "PID namespace",
                    Status::Fail,
                    format!(
                        "a container's (inode {}), and without kernel BTF ids cannot be translated into it",
                        ns.inode
                    ),
                )
                .fix("use a kernel with CONFIG_DEBUG_INFO_BTF=y, or run covobs in the host's PID namespace (hostPID)")
            }
        }
        Err(e) => check("PID namespace", Status::Fail, e.to_string())
            .fix("mount a proc for covobs' own PID namespace at /proc"),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn btf() -> Check {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    match std::fs::metadata(path) {
        Ok(m) => match btf_rs::Btf::from_file(path) {
            Ok(btf) => {
                let task = btf
                    .resolve_types_by_name("task_struct")
                    .map(|t| t.len())
                    .unwrap_or(0);
                check(
                    "BTF",
                    Status::Ok,
                    format!(
                        "{} ({} KiB, task_struct found: {})",
                        path.display(),
                        m.len() / 1024,
                        task > 0
                    ),
                )
            }
            Err(e) => check(
                "BTF",
                Status::Warn,
                format!("{} unreadable: {e}", path.display()),
            ),
        },
        Err(_) => check(
            "BTF",
            Status::Warn,
            "no /sys/kernel/btf/vmlinux: kernel-structure reads fall back to fixed layouts",
        )
        .fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
    }
}

fn debugfs() -> Check {
    let target = "/sys/kernel/debug";
    let mounted = || Path::new(target).join("kcov").exists() || is_mounted(target, "debugfs");
    if !mounted() {
        let _ = nix::mount::mount(
            Some("debugfs"),
            target,
            Some("debugfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    if mounted() {
        check("debugfs", Status::Ok, target)
    } else {
        check(
            "debugfs",
            Status::Warn,
            "not mounted (needed only for kcov)",
        )
        .fix("mount -t debugfs debugfs /sys/kernel/debug")
    }
}

fn is_mounted(path: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let mut f = l.split_whitespace();
                let (_, mnt, ty) = (f.next(), f.next(), f.next());
                mnt == Some(path) && ty == Some(fstype)
            })
        })
        .unwrap_or(false)
}

fn tracepoints(root: &Path) -> Vec<Check> {
    let mut missing = Vec::new();
    for (_, category, name) in offsets::TRACEPOINTS {
        if tracefs::Format::read(root, category, name).is_err() {
            missing.push(format!("{category}:{name}"));
        }
    }
    let mut out = vec![if missing.is_empty() {
        check(
            "tracepoints",
            Status::Ok,
            "sched:sched_process_exec/exit, task:task_newtask/rename, signal:signal_generate/deliver",
        )
    } else {
        check(
            "tracepoints",
            Status::Fail,
            format!("missing {}", missing.join(", ")),
        )
        .fix("use a kernel with CONFIG_FTRACE and tracepoints (CONFIG_TRACEPOINTS)")
    }];
    let syscalls = tracefs::Format::read(root, "syscalls", "sys_enter_openat").is_ok();
    out.push(if syscalls {
        check(
            "syscall tracepoints",
            Status::Ok,
            "syscalls:sys_enter_*/sys_exit_*",
        )
    } else {
        check(
            "syscall tracepoints",
            Status::Warn,
            "no syscalls:* tracepoints: dump outputs are found from the environment only",
        )
        .fix("use a kernel with CONFIG_FTRACE_SYSCALLS=y")
    });
    out
}

/// Thread id that the self-test's SIGUSR1 landed on (0: none yet).
static SIGNAL_LANDED_ON: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_selftest_signal(_: libc::c_int) {
    // SAFETY: gettid is async-signal-safe and has no preconditions.
    let tid = unsafe { libc::gettid() };
    SIGNAL_LANDED_ON.store(tid, Ordering::SeqCst);
}

/// The function the self-test uprobe is attached to.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn covobs_selftest_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

/// Load covobs' programs, attach the tracepoints, fire a uprobe on ourselves, check the record
/// arrives through the ring buffer, and have eBPF send this thread a signal.
fn live_probes() -> Vec<Check> {
    let mut out = Vec::new();
    let mut probes = match Probes::load(&ProbeOptions::default()) {
        Ok(p) => {
            out.push(check(
                "eBPF programs",
                Status::Ok,
                format!(
                    "{} tracepoint programs loaded and attached",
                    p.programs().len()
                ),
            ));
            p
        }
        Err(e) => {
            out.push(check("eBPF programs", Status::Fail, e.to_string()).fix(
                "see the checks above; kernel 5.8+ with ring buffers and tracepoints is needed",
            ));
            return out;
        }
    };
    let signal = libc::SIGUSR1;
    // SAFETY: installs an async-signal-safe handler (it only stores to an atomic) for SIGUSR1,
    // which covobs does not otherwise use; the action struct is fully initialised.
    let old = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_selftest_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &action, &mut old);
        old
    };
    if let Err(e) = probes.attach_selftest("covobs_selftest_target", signal) {
        out.push(
            check("uprobes", Status::Fail, e.to_string())
                .fix("use a kernel with CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y"),
        );
        restore(signal, &old);
        return out;
    }
    SIGNAL_LANDED_ON.store(0, Ordering::SeqCst);
    covobs_selftest_target(7);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let hits = probes.selftest_slot(covobs_common::selftest::HITS);
    out.push(if hits >= 1 {
        check("uprobes", Status::Ok, "a uprobe on covobs itself fired")
    } else {
        check(
            "uprobes",
            Status::Fail,
            "attached, but the uprobe did not fire",
        )
        .fix("use a kernel with CONFIG_UPROBES=y")
    });

    let mut records = Vec::new();
    if let Some(mut reader) = probes.take_reader() {
        reader.drain(&mut records);
    }
    let records = records
        .iter()
        .filter(|r| matches!(r, crate::probes::records::Record::Selftest { hdr } if hdr.tid as i32 == me))
        .count();
    out.push(if records >= 1 {
        check(
            "ring buffer",
            Status::Ok,
            format!("the uprobe's record arrived with the probed thread's id ({me})"),
        )
    } else {
        check(
            "ring buffer",
            Status::Fail,
            "no record arrived from the uprobe",
        )
        .fix("use kernel 5.8+ (BPF ring buffer)")
    });

    let result = probes.selftest_slot(covobs_common::selftest::SIGNAL_RESULT);
    let landed = SIGNAL_LANDED_ON.load(Ordering::SeqCst);
    out.push(if result == 1000 && landed == me {
        check(
            "bpf_send_signal_thread",
            Status::Ok,
            format!("SIGUSR1 from eBPF landed on the probed thread ({me})"),
        )
    } else {
        check(
            "bpf_send_signal_thread",
            Status::Warn,
            format!(
                "helper returned {}, signal landed on tid {landed} (expected {me}); --deliver bpf is unavailable",
                result as i64 - 1000
            ),
        )
        .fix("use kernel 5.6+ for bpf_send_signal_thread")
    });
    restore(signal, &old);
    out
}

fn restore(signal: i32, old: &libc::sigaction) {
    // SAFETY: puts back the previous, valid action struct.
    unsafe { libc::sigaction(signal, old, std::ptr::null_mut()) };
}

fn uprobe_multi() -> Check {
    match aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::LinkCreation) {
        Ok(true) => check(
            "uprobe_multi links",
            Status::Ok,
            "batched uprobe attach (6.6+)",
        ),
        Ok(false) => check(
            "uprobe_multi links",
            Status::Ok,
            "not available: uprobes attach one by one (slower attach, same function)",
        ),
        Err(e) => check(
            "uprobe_multi links",
            Status::Warn,
            format!("probe failed: {e}"),
        ),
    }
}

fn kcov() -> Check {
    let fix = "boot a kernel built with CONFIG_KCOV=y (and CONFIG_KCOV_ENABLE_COMPARISONS=y for comparison tracing) and mount debugfs on /sys/kernel/debug; covobs' test kernel is one (`cargo xtask kernel`, kernel/README.md)";
    if let Err(e) = crate::runtimes::kcov::kernel::available() {
        return check(
            "kcov",
            Status::Warn,
            format!(
                "{e}: kernel coverage (`covobs run --kernel`, kcov users' buffers) is unavailable"
            ),
        )
        .fix(fix);
    }
    // It opens; can a buffer be sized and mapped, and does BTF describe struct kcov (what the
    // eBPF program follows from a kcov user's descriptor to its buffer)?
    if let Err(e) = crate::runtimes::kcov::buffer::OwnedBuffer::open(64) {
        return check("kcov", Status::Warn, format!("{e}")).fix(fix);
    }
    let btf = crate::probes::btf::kcov_config();
    if btf.valid == 0 {
        return check(
            "kcov",
            Status::Warn,
            "/sys/kernel/debug/kcov works, but this kernel's BTF lacks struct kcov: `run --kernel` works, kcov users' ioctls cannot be followed",
        )
        .fix("use a kernel with CONFIG_DEBUG_INFO_BTF=y");
    }
    check(
        "kcov",
        Status::Ok,
        "/sys/kernel/debug/kcov works (buffer sized and mapped); BTF describes struct kcov",
    )
}

fn memlock() -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    let raisable = caps::Caps::current()
        .map(|c| c.has(caps::CAP_SYS_RESOURCE))
        .unwrap_or(false);
    check(
        "RLIMIT_MEMLOCK",
        Status::Ok,
        format!(
            "soft {}, hard {}; {}; kernels 5.11+ charge BPF memory to the cgroup instead",
            show(lim.rlim_cur),
            show(lim.rlim_max),
            if raisable {
                "can be raised"
            } else {
                "cannot be raised (no CAP_SYS_RESOURCE)"
            }
        ),
    )
}

/// The human table.
pub fn render(report: &Report) -> String {
    // Fixed: the longest check name, so the table reads the same whatever checks ran.
    let width = "bpf_send_signal_thread".len();
    let mut s = String::new();
    for c in &report.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!(
            "{:<width$}  {:<4}  {}\n",
            c.name, status, c.detail
        ));
        if let Some(fix) = &c.fix
            && c.status != Status::Ok
        {
            s.push_str(&format!("{:<width$}        fix: {fix}\n", ""));
        }
    }
    if report.ok {
        s.push_str("\ncovobs can attach on this machine.\n");
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect();
        s.push_str(&format!(
            "\ncovobs cannot attach here: {} failed (see fix: above).\n",
            failed.join(", ")
        ));
    }
    s
}
