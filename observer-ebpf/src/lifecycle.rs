//! Process and thread lifecycle of watched tasks; keeps WATCHED_TGIDS / WATCHED_TIDS current.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::{bpf_get_current_comm, generated::bpf_probe_read_kernel_str},
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use covobs_common::{
    CLONE_THREAD, COMM_LEN, Config, ExecRecord, FORK_CHILD_WATCHED, OLD_TID_UNKNOWN, PATH_LEN,
    TaskRecord, config_flags, kind, watch,
};

/// `clone3(2)` flag: the child starts in the cgroup named by the caller, not its parent's.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

use crate::{
    maps::{
        Current, WATCHED_TGIDS, WATCHED_TIDS, config, current, header, kernel_current,
        normalize_comm, reserve, selected_cgroup, selects, tgid_watched, tid_watched,
    },
    ns,
};

/// `sched:sched_process_exec`, in the context of the task after exec.
#[tracepoint]
pub fn covobs_exec(ctx: TracePointContext) -> u32 {
    let _ = on_exec(&ctx);
    0
}

fn on_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current(cfg).ok_or(0)?;
    if cur.tgid == cfg.self_tgid {
        return Ok(());
    }
    let mut comm = bpf_get_current_comm()?;
    normalize_comm(&mut comm);
    let mut newly_watched = 0;
    if tgid_watched(cur.tgid).is_none() {
        let Some(flags) = selects(&comm, ns::current_in_cgroup) else {
            return Ok(());
        };
        WATCHED_TGIDS.insert(&cur.tgid, &flags, 0)?;
        newly_watched = 1;
        debug!(ctx, "exec of tgid {} matched the selection", cur.tgid);
    }
    // exec leaves one thread, now with tid == tgid; the others' exits were reported already.
    WATCHED_TIDS.insert(&cur.tid, &cur.tgid, 0)?;

    // SAFETY: offsets come from the tracepoint's format file; reads are bounds-checked by the helper.
    let loc: u32 = unsafe { ctx.read_at(usize::from(cfg.tp.exec_filename)) }?;
    // SAFETY: as above.
    let kernel_old_tid: i32 = unsafe { ctx.read_at(usize::from(cfg.tp.exec_old_pid)) }?;
    // The tracepoint gives the kernel's id of the thread that called exec. When it was the leader
    // that is the process's own id; a non-leader's former id in covobs' namespace is gone.
    let old_tid = if cfg.ns.pidns_ino == 0 {
        kernel_old_tid as u32
    } else if kernel_old_tid as u32 == kernel_current().tid {
        cur.tid
    } else {
        OLD_TID_UNKNOWN
    };

    let Some(mut entry) = reserve::<ExecRecord>(kind::PROCESS_EXEC) else {
        return Ok(());
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to a reserved, writable ring-buffer slot of size_of::<ExecRecord>();
    // fields are written through raw pointers so no reference to uninitialised memory is formed.
    unsafe {
        addr_of_mut!((*rec).hdr).write(header(kind::PROCESS_EXEC, cur.tgid, cur.tid));
        addr_of_mut!((*rec).old_tid).write(old_tid);
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
    // This program runs only where covobs sees kernel ids (the initial PID namespace).
    let cur = kernel_current();
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
    let child_tgid = if clone_flags & CLONE_THREAD != 0 {
        cur.tgid
    } else {
        child
    };
    // Without BTF the child's cgroup cannot be read: it is its parent's unless it was cloned
    // into another one.
    let follow = flags & watch::FOLLOW_FORKS != 0
        || (flags & watch::CGROUP != 0 && clone_flags & CLONE_INTO_CGROUP == 0);
    new_task(
        &cur,
        flags,
        Current {
            tgid: child_tgid,
            tid: child,
        },
        clone_flags,
        follow,
        &comm,
    )
}

/// `task_newtask(struct task_struct *task, u64 clone_flags)` as a raw tracepoint, in the
/// creator's context: the new task itself is at hand, so its ids in covobs' namespace and its
/// cgroup can be read.
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn covobs_raw_newtask(ctx: RawTracePointContext) -> u32 {
    let _ = on_raw_newtask(&ctx);
    0
}

fn on_raw_newtask(ctx: &RawTracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let cur = current(cfg).ok_or(0)?;
    let Some(flags) = tgid_watched(cur.tgid) else {
        return Ok(());
    };
    let task: u64 = ctx.arg(0);
    let clone_flags: u64 = ctx.arg(1);
    // A child in a PID namespace covobs cannot see has no id here: nothing to report.
    let child = ns::task_ids(cfg, task).ok_or(0)?;
    let comm = ns::task_comm(cfg, task);
    // A child of a process in the selected cgroup is in it too, unless it was cloned into
    // another one (CLONE_INTO_CGROUP): check where it is.
    let follow = flags & watch::FOLLOW_FORKS != 0
        || (flags & watch::CGROUP != 0
            && selected_cgroup().is_some_and(|id| ns::task_in_cgroup(cfg, task, id)));
    new_task(&cur, flags, child, clone_flags, follow, &comm)
}

/// A watched process created a thread or a child: watch the thread, and the child when `follow`.
#[inline(always)]
fn new_task(
    parent: &Current,
    flags: u32,
    child: Current,
    clone_flags: u64,
    follow: bool,
    comm: &[u8; COMM_LEN],
) -> Result<(), i64> {
    let mut watched_child = 0;
    let record_kind = if clone_flags & CLONE_THREAD != 0 {
        WATCHED_TIDS.insert(&child.tid, &parent.tgid, 0)?;
        kind::THREAD_START
    } else {
        if follow {
            WATCHED_TGIDS.insert(&child.tgid, &flags, 0)?;
            WATCHED_TIDS.insert(&child.tid, &child.tgid, 0)?;
            watched_child = FORK_CHILD_WATCHED;
        }
        kind::PROCESS_FORK
    };
    let Some(mut entry) = reserve::<TaskRecord>(record_kind) else {
        return Ok(());
    };
    let mut hdr = header(record_kind, parent.tgid, parent.tid);
    hdr._reserved = watched_child;
    entry.write(TaskRecord {
        hdr,
        other_tgid: child.tgid,
        other_tid: child.tid,
        flags: clone_flags,
        comm: *comm,
        comm2: [0; COMM_LEN],
    });
    entry.submit(0);
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
    let cur = current(cfg).ok_or(0)?;
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
        let _ = crate::dumps::EXITING.remove(&kernel_current().tgid);
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
    // This program runs only where covobs sees kernel ids (the initial PID namespace).
    let cur = kernel_current();
    let renamed_self = tid == cur.tid;
    renamed(cfg, &cur, tid, renamed_self, &old, &new)
}

/// `task_rename(struct task_struct *task, const char *comm)` as a raw tracepoint: the task (and
/// so its ids in covobs' namespace) is at hand; its name is still the old one.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn covobs_raw_rename(ctx: RawTracePointContext) -> u32 {
    let _ = on_raw_rename(&ctx);
    0
}

fn on_raw_rename(ctx: &RawTracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let task: u64 = ctx.arg(0);
    let comm: u64 = ctx.arg(1);
    let Some(ids) = ns::task_ids(cfg, task) else {
        return Ok(());
    };
    let old = ns::task_comm(cfg, task);
    let mut new = [0u8; COMM_LEN];
    // SAFETY: the new name is a kernel string; the helper bounds the copy by COMM_LEN.
    if unsafe {
        bpf_probe_read_kernel_str(
            new.as_mut_ptr().cast(),
            COMM_LEN as u32,
            comm as *const c_void,
        )
    } < 0
    {
        return Ok(());
    }
    normalize_comm(&mut new);
    // SAFETY: helper without arguments.
    let renamed_self = task == unsafe { bpf_get_current_task() };
    let cur = Current {
        tgid: ids.tgid,
        tid: ids.tid,
    };
    renamed(cfg, &cur, ids.tid, renamed_self, &old, &new)
}

/// Thread `tid` took the name `new`; `cur` is the current task when `renamed_self`.
#[inline(always)]
fn renamed(
    cfg: &Config,
    cur: &Current,
    tid: u32,
    renamed_self: bool,
    old: &[u8; COMM_LEN],
    new: &[u8; COMM_LEN],
) -> Result<(), i64> {
    let (tgid, newly_watched) = match tid_watched(tid) {
        Some(tgid) => (tgid, 0),
        // A process that renames its main thread to a watched name is picked up, like an exec
        // (exec's own rename is left to the exec hook, which follows it).
        None if renamed_self
            && cur.tid == cur.tgid
            && cur.tgid != cfg.self_tgid
            && !in_execve(cfg) =>
        {
            let Some(flags) = selects(new, ns::current_in_cgroup) else {
                return Ok(());
            };
            WATCHED_TGIDS.insert(&cur.tgid, &flags, 0)?;
            WATCHED_TIDS.insert(&cur.tid, &cur.tgid, 0)?;
            (cur.tgid, 1)
        }
        None => return Ok(()),
    };
    let renamed = Current { tgid, tid };
    emit_task(
        kind::THREAD_RENAME,
        &renamed,
        tgid,
        tid,
        newly_watched,
        old,
        new,
    );
    Ok(())
}

#[inline(always)]
fn emit_task(
    record_kind: u32,
    task: &Current,
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
fn in_execve(cfg: &Config) -> bool {
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
