//! Maps shared by every program, and the small helpers that use them.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use covobs_common::{COMM_LEN, Config, Header, kind, select};

/// Every record for userspace. Userspace sets the real size with `map_max_entries` before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Tracepoint field offsets and covobs' own tgid (index 0).
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Watched processes: tgid -> `covobs_common::watch` flags.
#[map]
pub static WATCHED_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Threads of watched processes: tid -> tgid. Needed where a tracepoint names a task that is not
/// the current one (the target of a signal, a renamed task).
#[map]
pub static WATCHED_TIDS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Names that start a watch when a process takes them (exec, prctl): NUL-padded comm -> 1.
#[map]
pub static WATCH_COMMS: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(64, 0);

/// What makes the kernel watch a process by itself besides a name: `covobs_common::select` slots.
#[map]
pub static SELECT: Array<u64> = Array::with_max_entries(select::LEN, 0);

/// Records lost because the ring buffer was full, per CPU and per record kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::MAX, 0);

/// A task's process and thread ids, in covobs' PID namespace.
pub struct Current {
    pub tgid: u32,
    pub tid: u32,
}

/// The current task's ids in covobs' PID namespace; None when it cannot be seen from there (its
/// events are dropped).
#[inline(always)]
pub fn current(cfg: &Config) -> Option<Current> {
    if cfg.ns.pidns_ino == 0 {
        return Some(kernel_current());
    }
    crate::ns::current_ids(cfg)
}

/// The current task's ids as the kernel numbers it (initial PID namespace): keys of the maps
/// that only the programs use, so the busiest paths pay no translation.
#[inline(always)]
pub fn kernel_current() -> Current {
    let pid_tgid = bpf_get_current_pid_tgid();
    Current {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}

/// The selected cgroup's id, when a cgroup is selected.
#[inline(always)]
pub fn selected_cgroup() -> Option<u64> {
    SELECT.get(select::CGROUP).copied().filter(|id| *id != 0)
}

/// Whether a process that is not watched yet should be, now that it has this name: by name, by
/// cgroup, or both (`in_cgroup` is asked only when a cgroup is selected). Returns its watch flags.
#[inline(always)]
pub fn selects(comm: &[u8; COMM_LEN], in_cgroup: impl FnOnce(u64) -> bool) -> Option<u32> {
    match selected_cgroup() {
        None => comm_watched(comm).then_some(covobs_common::watch::BY_NAME),
        Some(id) => {
            if !in_cgroup(id) {
                return None;
            }
            if SELECT.get(select::NAME_TOO).copied().unwrap_or(0) != 0 {
                comm_watched(comm).then_some(covobs_common::watch::BY_NAME)
            } else {
                Some(covobs_common::watch::CGROUP)
            }
        }
    }
}

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn tgid_watched(tgid: u32) -> Option<u32> {
    // SAFETY: the value is copied out at once; a concurrent delete cannot free it under us because
    // BPF hash map values are RCU-protected for the duration of the program.
    unsafe { WATCHED_TGIDS.get(&tgid) }.copied()
}

#[inline(always)]
pub fn tid_watched(tid: u32) -> Option<u32> {
    // SAFETY: as in `tgid_watched`.
    unsafe { WATCHED_TIDS.get(&tid) }.copied()
}

#[inline(always)]
pub fn comm_watched(comm: &[u8; COMM_LEN]) -> bool {
    WATCH_COMMS.get_ptr(comm).is_some()
}

/// Zero everything after the first NUL: tracepoint copies of a comm are not always padded, and map
/// keys must match byte for byte.
#[inline(always)]
pub fn normalize_comm(comm: &mut [u8; COMM_LEN]) {
    let mut seen_nul = false;
    for b in comm.iter_mut() {
        if seen_nul {
            *b = 0;
        } else if *b == 0 {
            seen_nul = true;
        }
    }
}

/// Reserve a record of type `T` in the ring buffer, counting a drop when it is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: u32) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_drop(kind);
    }
    entry
}

#[inline(always)]
fn count_drop(kind: u32) {
    if let Some(slot) = DROPS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs (no preemption).
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> Header {
    Header {
        kind,
        _reserved: 0,
        // SAFETY: helper without arguments, available to tracing programs.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        tgid,
        tid,
    }
}
