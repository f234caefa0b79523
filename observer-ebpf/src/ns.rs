//! Ids in covobs' PID namespace, and cgroup membership, read from the kernel's own structures
//! at offsets userspace took from BTF.
//!
//! The helpers give kernel (initial namespace) ids, and bpf_get_ns_current_pid_tgid only for the
//! current task and only when its innermost namespace is covobs' one. Walking
//! `task->thread_pid->numbers[level]` the way `task_pid_nr_ns()` does works for any task (the
//! receiver of a signal, a new child) and for tasks in namespaces nested below covobs' one.
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_task},
    },
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use covobs_common::Config;

use crate::maps::{Current, config};

/// PID namespaces nest at most this deep (MAX_PID_NS_LEVEL).
const MAX_PID_NS_LEVEL: u32 = 32;
/// Deepest cgroup level looked at (the default hierarchy is rarely deeper than ten).
const MAX_CGROUP_LEVEL: u32 = 32;

/// Level of covobs' PID namespace plus 1 (0: unknown, and nothing is visible). Learnt once by
/// `covobs_pidns_level`, so no program searches for it.
#[map]
pub static PIDNS_LEVEL: Array<u32> = Array::with_max_entries(1, 0);

/// Never attached: userspace runs it once with BPF_PROG_TEST_RUN, which runs a raw tracepoint
/// program in the caller's context. covobs' own innermost PID namespace is the one it lives in,
/// so its own task's level is that namespace's level. Returns 0 once the level is stored.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn covobs_pidns_level(_ctx: RawTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 1 };
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(pid) = read_u64(task + u64::from(cfg.ns.task_thread_pid)) else {
        return 2;
    };
    let Some(level) = read_u32(pid + u64::from(cfg.ns.pid_level)) else {
        return 2;
    };
    if level > MAX_PID_NS_LEVEL || !numbered_in(cfg, pid, level) {
        return 3;
    }
    match PIDNS_LEVEL.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: a valid array slot, written once before any program reads it.
            unsafe { *slot = level + 1 };
            0
        }
        None => 4,
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: a helper-checked kernel read; a bad address fails cleanly.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

#[inline(always)]
fn read_u32(addr: u64) -> Option<u32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.ok()
}

/// The current task's ids in covobs' namespace.
#[inline(always)]
pub fn current_ids(cfg: &Config) -> Option<Current> {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    task_ids(cfg, task)
}

/// Ids of any task in covobs' namespace; None when the task is not visible there.
#[inline(always)]
pub fn task_ids(cfg: &Config, task: u64) -> Option<Current> {
    if cfg.ns.pidns_ino == 0 {
        let k = &cfg.kernel;
        return Some(Current {
            tid: read_u32(task + u64::from(k.task_pid))?,
            tgid: read_u32(task + u64::from(k.task_tgid))?,
        });
    }
    let n = &cfg.ns;
    let pid = read_u64(task + u64::from(n.task_thread_pid))?;
    let level = level_in(cfg, pid)?;
    let signal = read_u64(task + u64::from(n.task_signal))?;
    let leader = read_u64(signal + u64::from(n.signal_tgid_pid))?;
    // Threads of a process share its PID namespaces: the leader is numbered at the same level.
    let tid = read_u32(upid(cfg, pid, level) + u64::from(n.upid_nr))?;
    let tgid = read_u32(upid(cfg, leader, level) + u64::from(n.upid_nr))?;
    (tid != 0 && tgid != 0).then_some(Current { tgid, tid })
}

#[inline(always)]
fn upid(cfg: &Config, pid: u64, level: u32) -> u64 {
    pid + u64::from(cfg.ns.pid_numbers) + u64::from(level) * u64::from(cfg.ns.upid_size)
}

/// Whether `struct pid` has a number in the namespace at `level`, and that namespace is covobs'.
#[inline(always)]
fn numbered_in(cfg: &Config, pid: u64, level: u32) -> bool {
    let n = &cfg.ns;
    read_u64(upid(cfg, pid, level) + u64::from(n.upid_ns))
        .filter(|ns| *ns != 0)
        .and_then(|ns| read_u32(ns + u64::from(n.pidns_inum)))
        == Some(n.pidns_ino)
}

/// The level of covobs' namespace, if `pid` is visible from there.
#[inline(always)]
fn level_in(cfg: &Config, pid: u64) -> Option<u32> {
    let known = PIDNS_LEVEL.get(0).copied().unwrap_or(0);
    let level = known.checked_sub(1)?;
    let deepest = read_u32(pid + u64::from(cfg.ns.pid_level))?;
    (level <= deepest && numbered_in(cfg, pid, level)).then_some(level)
}

/// Whether the current task's cgroup (default hierarchy) is `id` or below it.
#[inline(always)]
pub fn current_in_cgroup(id: u64) -> bool {
    for level in 0..=MAX_CGROUP_LEVEL {
        // SAFETY: a helper taking a plain level; 0 once the level is below the task's cgroup.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == id {
            return true;
        }
        if ancestor == 0 {
            break;
        }
    }
    false
}

/// Whether `cgroup` (a `struct cgroup *`) is the cgroup `id` or below it.
#[inline(always)]
pub fn cgroup_under(cfg: &Config, cgroup: u64, id: u64) -> bool {
    let n = &cfg.ns;
    if n.flags & covobs_common::ns_flags::CGROUP == 0 || cgroup == 0 {
        return false;
    }
    let Some(deepest) = read_u32(cgroup + u64::from(n.cgroup_level)) else {
        return false;
    };
    for level in 0..=MAX_CGROUP_LEVEL {
        if level > deepest {
            break;
        }
        let ancestor = read_u64(cgroup + u64::from(n.cgroup_ancestors) + u64::from(level) * 8);
        let kn = ancestor.and_then(|a| read_u64(a + u64::from(n.cgroup_kn)));
        if kn.and_then(|kn| read_u64(kn + u64::from(n.kn_id))) == Some(id) {
            return true;
        }
    }
    false
}

/// Whether `task`'s cgroup (default hierarchy) is `id` or below it.
#[inline(always)]
pub fn task_in_cgroup(cfg: &Config, task: u64, id: u64) -> bool {
    let n = &cfg.ns;
    let cgroup = read_u64(task + u64::from(n.task_cgroups))
        .and_then(|cset| read_u64(cset + u64::from(n.css_set_dfl_cgrp)));
    cgroup.is_some_and(|c| cgroup_under(cfg, c, id))
}

/// `task->comm`, NUL padded.
#[inline(always)]
pub fn task_comm(cfg: &Config, task: u64) -> [u8; covobs_common::COMM_LEN] {
    // SAFETY: a helper-checked kernel read of the task's name at its BTF offset.
    let mut comm =
        unsafe { bpf_probe_read_kernel((task + u64::from(cfg.ns.task_comm)) as *const [u8; 16]) }
            .unwrap_or([0; 16]);
    crate::maps::normalize_comm(&mut comm);
    comm
}
