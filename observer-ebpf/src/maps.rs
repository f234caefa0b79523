//! Maps shared by every program, and the small helpers that use them.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use covobs_common::{COMM_LEN, Config, Header, kind};

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

/// Records lost because the ring buffer was full, per CPU and per record kind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::MAX, 0);

pub struct Current {
    pub tgid: u32,
    pub tid: u32,
}

#[inline(always)]
pub fn current() -> Current {
    let pid_tgid = bpf_get_current_pid_tgid();
    Current {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
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
