//! Signals to and on watched threads.
use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use covobs_common::{SignalRecord, kind};

use crate::{
    maps::{Current, config, current, header, normalize_comm, reserve, tgid_watched, tid_watched},
    ns,
};

/// `signal:signal_generate`, in the sender's context; the target is named by tid.
#[tracepoint]
pub fn covobs_signal_generate(ctx: TracePointContext) -> u32 {
    let _ = on_generate(&ctx);
    0
}

fn on_generate(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    // The tracepoint names the receiver by its kernel id: only usable where covobs' ids are the
    // kernel's (userspace attaches the raw program in a PID namespace).
    if cfg.ns.pidns_ino != 0 {
        return Ok(());
    }
    // SAFETY: offsets from the format file, helper-checked reads.
    let target = unsafe { ctx.read_at::<i32>(usize::from(cfg.tp.gen_pid)) }? as u32;
    let Some(target_tgid) = tid_watched(target) else {
        return Ok(());
    };
    // SAFETY: offset from the format file, helper-checked read.
    let sig = unsafe { ctx.read_at::<i32>(usize::from(cfg.tp.gen_sig)) }?;
    if !cfg.reports_signal(sig as u64) {
        return Ok(());
    }
    let cur = current(cfg).ok_or(0)?;
    let mut comm = bpf_get_current_comm()?;
    normalize_comm(&mut comm);
    // SAFETY: as above.
    let (sig, errno, code, group, result) = unsafe {
        (
            ctx.read_at::<i32>(usize::from(cfg.tp.gen_sig))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.gen_errno))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.gen_code))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.gen_group))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.gen_result))?,
        )
    };
    let Some(mut entry) = reserve::<SignalRecord>(kind::SIGNAL_GENERATE) else {
        return Ok(());
    };
    entry.write(SignalRecord {
        hdr: header(kind::SIGNAL_GENERATE, cur.tgid, cur.tid),
        sig,
        code,
        errno,
        result,
        target_tid: target,
        target_tgid,
        group: group as u32,
        _pad: 0,
        sa_handler: 0,
        sa_flags: 0,
        comm,
    });
    entry.submit(0);
    Ok(())
}

/// `signal:signal_deliver`, in the receiving thread's context, just before its handler runs.
#[tracepoint]
pub fn covobs_signal_deliver(ctx: TracePointContext) -> u32 {
    let _ = on_deliver(&ctx);
    0
}

fn on_deliver(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current(cfg).ok_or(0)?;
    if tgid_watched(cur.tgid).is_none() {
        return Ok(());
    }
    // SAFETY: offset from the format file, helper-checked read.
    if !cfg.reports_signal(unsafe { ctx.read_at::<i32>(usize::from(cfg.tp.del_sig)) }? as u64) {
        return Ok(());
    }
    // SAFETY: offsets from the format file, helper-checked reads.
    let (sig, errno, code, sa_handler, sa_flags) = unsafe {
        (
            ctx.read_at::<i32>(usize::from(cfg.tp.del_sig))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.del_errno))?,
            ctx.read_at::<i32>(usize::from(cfg.tp.del_code))?,
            ctx.read_at::<u64>(usize::from(cfg.tp.del_sa_handler))?,
            ctx.read_at::<u64>(usize::from(cfg.tp.del_sa_flags))?,
        )
    };
    let Some(mut entry) = reserve::<SignalRecord>(kind::SIGNAL_DELIVER) else {
        return Ok(());
    };
    entry.write(SignalRecord {
        hdr: header(kind::SIGNAL_DELIVER, cur.tgid, cur.tid),
        sig,
        code,
        errno,
        result: 0,
        target_tid: cur.tid,
        target_tgid: cur.tgid,
        group: 0,
        _pad: 0,
        sa_handler,
        sa_flags,
        comm: [0; 16],
    });
    entry.submit(0);
    Ok(())
}

/// Kernel-internal siginfo pointers that are not pointers (SEND_SIG_NOINFO, SEND_SIG_PRIV).
const SEND_SIG_PRIV: u64 = 1;
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;

#[inline(always)]
fn read_i32(addr: u64) -> i32 {
    // SAFETY: a helper-checked kernel read; a bad address yields 0.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const i32) }.unwrap_or(0)
}

/// si_errno and si_code as the perf tracepoint computes them (TP_STORE_SIGINFO).
#[inline(always)]
fn siginfo(cfg: &covobs_common::Config, info: u64) -> (i32, i32) {
    match info {
        0 => (0, SI_USER),
        SEND_SIG_PRIV => (0, SI_KERNEL),
        p => (
            read_i32(p + u64::from(cfg.kernel.siginfo_errno)),
            read_i32(p + u64::from(cfg.kernel.siginfo_code)),
        ),
    }
}

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result)`, as a raw tracepoint: no trace record is built for the many signals of
/// processes nobody watches, only the arguments are looked at.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn covobs_raw_signal_generate(ctx: RawTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let sig: u64 = ctx.arg(0);
    if !cfg.reports_signal(sig) {
        return 0;
    }
    let task: u64 = ctx.arg(2);
    // The receiver's id in covobs' namespace; a task covobs cannot see is never watched.
    let target = if cfg.ns.pidns_ino == 0 {
        read_i32(task + u64::from(cfg.kernel.task_pid)) as u32
    } else {
        match ns::task_ids(cfg, task) {
            Some(ids) => ids.tid,
            None => return 0,
        }
    };
    let Some(target_tgid) = tid_watched(target) else {
        return 0;
    };
    // A sender outside covobs' namespace (the host, another container) has no id here: 0.
    let cur = current(cfg).unwrap_or(Current { tgid: 0, tid: 0 });
    let Ok(mut comm) = bpf_get_current_comm() else {
        return 0;
    };
    normalize_comm(&mut comm);
    let (errno, code) = siginfo(cfg, ctx.arg(1));
    let group: u64 = ctx.arg(3);
    let result: u64 = ctx.arg(4);
    let Some(mut entry) = reserve::<SignalRecord>(kind::SIGNAL_GENERATE) else {
        return 0;
    };
    entry.write(SignalRecord {
        hdr: header(kind::SIGNAL_GENERATE, cur.tgid, cur.tid),
        sig: sig as i32,
        code,
        errno,
        result: result as i32,
        target_tid: target,
        target_tgid,
        group: group as u32,
        _pad: 0,
        sa_handler: 0,
        sa_flags: 0,
        comm,
    });
    entry.submit(0);
    0
}

/// `signal_deliver(int sig, struct kernel_siginfo *info, struct k_sigaction *ka)`, raw.
#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn covobs_raw_signal_deliver(ctx: RawTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(cur) = current(cfg) else { return 0 };
    if tgid_watched(cur.tgid).is_none() {
        return 0;
    }
    let sig: u64 = ctx.arg(0);
    if !cfg.reports_signal(sig) {
        return 0;
    }
    let (errno, code) = siginfo(cfg, ctx.arg(1));
    let ka: u64 = ctx.arg(2);
    // SAFETY: helper-checked kernel reads at BTF offsets of the k_sigaction.
    let (sa_handler, sa_flags) = unsafe {
        (
            aya_ebpf::helpers::bpf_probe_read_kernel(
                (ka + u64::from(cfg.kernel.ka_sa_handler)) as *const u64,
            )
            .unwrap_or(0),
            aya_ebpf::helpers::bpf_probe_read_kernel(
                (ka + u64::from(cfg.kernel.ka_sa_flags)) as *const u64,
            )
            .unwrap_or(0),
        )
    };
    let Some(mut entry) = reserve::<SignalRecord>(kind::SIGNAL_DELIVER) else {
        return 0;
    };
    entry.write(SignalRecord {
        hdr: header(kind::SIGNAL_DELIVER, cur.tgid, cur.tid),
        sig: sig as i32,
        code,
        errno,
        result: 0,
        target_tid: cur.tid,
        target_tgid: cur.tgid,
        group: 0,
        _pad: 0,
        sa_handler,
        sa_flags,
        comm: [0; 16],
    });
    entry.submit(0);
    0
}
