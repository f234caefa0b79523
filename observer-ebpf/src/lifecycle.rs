//! Process and thread lifecycle of watched tasks; keeps WATCHED_TGIDS / WATCHED_TIDS current.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::{bpf_get_current_comm, generated::bpf_probe_read_kernel_str},
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use covobs_common::{
    CLONE_THREAD, COMM_LEN, ExecRecord, PATH_LEN, TaskRecord, config_flags, kind, watch,
};

use crate::maps::{
    WATCHED_TGIDS, WATCHED_TIDS, comm_watched, config, current, header, normalize_comm, reserve,
    tgid_watched, tid_watched,
};

/// `sched:sched_process_exec`, in the context of the task after exec.
#[tracepoint]
pub fn covobs_exec(ctx: TracePointContext) -> u32 {
    let _ = on_exec(&ctx);
    0
}

fn on_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current();
    if cur.tgid == cfg.self_tgid {
        return Ok(());
    }
    let mut comm = bpf_get_current_comm()?;
    normalize_comm(&mut comm);
    let mut newly_watched = 0;
    if tgid_watched(cur.tgid).is_none() {
        if !comm_watched(&comm) {
            return Ok(());
        }
        WATCHED_TGIDS.insert(&cur.tgid, &watch::BY_NAME, 0)?;
        newly_watched = 1;
        debug!(ctx, "exec of tgid {} matched a watched name", cur.tgid);
    }
    // exec leaves one thread, now with tid == tgid; the others' exits were reported already.
    WATCHED_TIDS.insert(&cur.tid, &cur.tgid, 0)?;

    // SAFETY: offsets come from the tracepoint's format file; reads are bounds-checked by the helper.
    let loc: u32 = unsafe { ctx.read_at(usize::from(cfg.tp.exec_filename)) }?;
    // SAFETY: as above.
    let old_tid: i32 = unsafe { ctx.read_at(usize::from(cfg.tp.exec_old_pid)) }?;

    let Some(mut entry) = reserve::<ExecRecord>(kind::PROCESS_EXEC) else {
        return Ok(());
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to a reserved, writable ring-buffer slot of size_of::<ExecRecord>();
    // fields are written through raw pointers so no reference to uninitialised memory is formed.
    unsafe {
        addr_of_mut!((*rec).hdr).write(header(kind::PROCESS_EXEC, cur.tgid, cur.tid));
        addr_of_mut!((*rec).old_tid).write(old_tid as u32);
        addr_of_mut!((*rec).newly_watched).write(newly_watched);
        addr_of_mut!((*rec).comm).write(comm);
        let name = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
        let dst = addr_of_mut!((*rec).filename).cast::<c_void>();
        if bpf_probe_read_kernel_str(dst, PATH_LEN as u32, name.cast()) < 0 {
            addr_of_mut!((*rec).filename).cast::<u8>().write(0);
        }
    }
    entry.submit(0);
    Ok(())
}

/// `task:task_newtask`, in the context of the task that called clone/fork.
#[tracepoint]
pub fn covobs_newtask(ctx: TracePointContext) -> u32 {
    let _ = on_newtask(&ctx);
    0
}

fn on_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current();
    let Some(flags) = tgid_watched(cur.tgid) else {
        return Ok(());
    };
    // SAFETY: offsets from the format file, helper-checked reads.
    let child: i32 = unsafe { ctx.read_at(usize::from(cfg.tp.newtask_pid)) }?;
    // SAFETY: as above.
    let clone_flags: u64 = unsafe { ctx.read_at(usize::from(cfg.tp.newtask_clone_flags)) }?;
    // SAFETY: as above.
    let mut comm: [u8; COMM_LEN] = unsafe { ctx.read_at(usize::from(cfg.tp.newtask_comm)) }?;
    normalize_comm(&mut comm);
    let child = child as u32;

    let (record_kind, child_tgid) = if clone_flags & CLONE_THREAD != 0 {
        WATCHED_TIDS.insert(&child, &cur.tgid, 0)?;
        (kind::THREAD_START, cur.tgid)
    } else {
        if flags & watch::FOLLOW_FORKS != 0 {
            WATCHED_TGIDS.insert(&child, &flags, 0)?;
            WATCHED_TIDS.insert(&child, &child, 0)?;
        }
        (kind::PROCESS_FORK, child)
    };
    emit_task(
        record_kind,
        &cur,
        child_tgid,
        child,
        clone_flags,
        &comm,
        &[0; COMM_LEN],
    );
    Ok(())
}

/// `sched:sched_process_exit`, in the context of the exiting task.
#[tracepoint]
pub fn covobs_exit(ctx: TracePointContext) -> u32 {
    let _ = on_exit(&ctx);
    0
}

fn on_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current();
    if tid_watched(cur.tid).is_none() && tgid_watched(cur.tgid).is_none() {
        return Ok(());
    }
    let _ = WATCHED_TIDS.remove(&cur.tid);
    let _ = crate::ocaml::OCAML_HITS.remove(&cur.tid);
    let _ = crate::ocaml::SEND_SIGNAL.remove(&cur.tid);
    // 1: the whole group died; 0: one thread; 2: unknown (old kernel), userspace decides from the
    // threads it has seen exit.
    let group_dead: u64 = if cfg.flags & config_flags::EXIT_HAS_GROUP_DEAD != 0 {
        // SAFETY: offset from the format file, helper-checked read.
        u64::from(unsafe { ctx.read_at::<u8>(usize::from(cfg.tp.exit_group_dead)) }? != 0)
    } else {
        2
    };
    let record_kind = if group_dead == 1 {
        let _ = WATCHED_TGIDS.remove(&cur.tgid);
        let _ = crate::dumps::EXITING.remove(&cur.tgid);
        kind::PROCESS_EXIT
    } else {
        kind::THREAD_EXIT
    };
    let mut comm = bpf_get_current_comm()?;
    normalize_comm(&mut comm);
    emit_task(
        record_kind,
        &cur,
        cur.tgid,
        cur.tid,
        group_dead,
        &comm,
        &[0; COMM_LEN],
    );
    Ok(())
}

/// `task:task_rename`: a thread took a new name (prctl(PR_SET_NAME), pthread_setname_np, or a
/// write to /proc/PID/task/TID/comm).
#[tracepoint]
pub fn covobs_rename(ctx: TracePointContext) -> u32 {
    let _ = on_rename(&ctx);
    0
}

fn on_rename(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    // SAFETY: offsets from the format file, helper-checked reads.
    let tid = unsafe { ctx.read_at::<i32>(usize::from(cfg.tp.rename_pid)) }? as u32;
    // SAFETY: as above.
    let mut old: [u8; COMM_LEN] = unsafe { ctx.read_at(usize::from(cfg.tp.rename_oldcomm)) }?;
    // SAFETY: as above.
    let mut new: [u8; COMM_LEN] = unsafe { ctx.read_at(usize::from(cfg.tp.rename_newcomm)) }?;
    normalize_comm(&mut old);
    normalize_comm(&mut new);

    let cur = current();
    let (tgid, newly_watched) = match tid_watched(tid) {
        Some(tgid) => (tgid, 0),
        // A process that renames its main thread to a watched name is picked up, like an exec
        // (exec's own rename is left to the exec hook, which follows it).
        None if tid == cur.tid
            && cur.tid == cur.tgid
            && cur.tgid != cfg.self_tgid
            && !in_execve(cfg) =>
        {
            if !comm_watched(&new) {
                return Ok(());
            }
            WATCHED_TGIDS.insert(&cur.tgid, &watch::BY_NAME, 0)?;
            WATCHED_TIDS.insert(&cur.tid, &cur.tgid, 0)?;
            (cur.tgid, 1)
        }
        None => return Ok(()),
    };
    let renamed = crate::maps::Current { tgid, tid };
    emit_task(
        kind::THREAD_RENAME,
        &renamed,
        tgid,
        tid,
        newly_watched,
        &old,
        &new,
    );
    Ok(())
}

#[inline(always)]
fn emit_task(
    record_kind: u32,
    task: &crate::maps::Current,
    other_tgid: u32,
    other_tid: u32,
    flags: u64,
    comm: &[u8; COMM_LEN],
    comm2: &[u8; COMM_LEN],
) {
    let Some(mut entry) = reserve::<TaskRecord>(record_kind) else {
        return;
    };
    entry.write(TaskRecord {
        hdr: header(record_kind, task.tgid, task.tid),
        other_tgid,
        other_tid,
        flags,
        comm: *comm,
        comm2: *comm2,
    });
    entry.submit(0);
}

/// Whether the current task is inside exec (`task_struct.in_execve`, through its BTF offset):
/// exec renames the task before sched_process_exec fires, and that rename must not be taken for
/// a prctl(PR_SET_NAME).
#[inline(always)]
fn in_execve(cfg: &covobs_common::Config) -> bool {
    let bit = cfg.kernel.task_in_execve_bit;
    if cfg.kernel.valid == 0 || bit == u32::MAX {
        return false;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: a helper-checked read of one byte of the current task_struct at a BTF offset.
    let byte = unsafe { bpf_probe_read_kernel((task + u64::from(bit / 8)) as *const u8) };
    byte.is_ok_and(|b| b & (1 << (bit % 8)) != 0)
}
