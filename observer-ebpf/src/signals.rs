//! Signals to and on watched threads.
use aya_ebpf::{helpers::bpf_get_current_comm, macros::tracepoint, programs::TracePointContext};
use covobs_common::{SignalRecord, kind};

use crate::maps::{config, current, header, normalize_comm, reserve, tgid_watched, tid_watched};

/// `signal:signal_generate`, in the sender's context; the target is named by tid.
#[tracepoint]
pub fn covobs_signal_generate(ctx: TracePointContext) -> u32 {
    let _ = on_generate(&ctx);
    0
}

fn on_generate(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    // SAFETY: offsets from the format file, helper-checked reads.
    let target = unsafe { ctx.read_at::<i32>(usize::from(cfg.tp.gen_pid)) }? as u32;
    let Some(target_tgid) = tid_watched(target) else {
        return Ok(());
    };
    let cur = current();
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
    let cur = current();
    if tgid_watched(cur.tgid).is_none() {
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
