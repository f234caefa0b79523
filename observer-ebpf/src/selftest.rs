//! `covobs doctor`'s proof that uprobes, the ring buffer and bpf_send_signal_thread work here:
//! a uprobe on a function of covobs itself.
use aya_ebpf::{
    helpers::generated::bpf_send_signal_thread, macros::map, macros::uprobe, maps::Array,
    programs::ProbeContext,
};
use covobs_common::{Header, kind, selftest};

use crate::maps::{config, current, header, kernel_current, reserve};

#[map]
pub static SELFTEST: Array<u64> = Array::with_max_entries(selftest::LEN, 0);

#[uprobe]
pub fn covobs_selftest(_ctx: ProbeContext) -> u32 {
    // Fires in covobs itself: doctor compares the thread with its own gettid(), an id in its
    // PID namespace.
    let cur = config().and_then(current).unwrap_or_else(kernel_current);
    if let Some(hits) = SELFTEST.get_ptr_mut(selftest::HITS) {
        // SAFETY: valid array slot; doctor runs this from one thread, races only skew a counter.
        unsafe { *hits += 1 };
    }
    if let Some(tid) = SELFTEST.get_ptr_mut(selftest::TID) {
        // SAFETY: as above.
        unsafe { *tid = u64::from(cur.tid) };
    }
    let sig = SELFTEST.get(selftest::SIGNAL).copied().unwrap_or(0);
    if sig != 0 {
        // SAFETY: sends a signal to the current thread only; userspace chose a signal it handles.
        let ret = unsafe { bpf_send_signal_thread(sig as u32) };
        if let Some(slot) = SELFTEST.get_ptr_mut(selftest::SIGNAL_RESULT) {
            // SAFETY: valid array slot.
            unsafe { *slot = (ret + 1000) as u64 };
        }
    }
    if let Some(mut entry) = reserve::<Header>(kind::SELFTEST) {
        entry.write(header(kind::SELFTEST, cur.tgid, cur.tid));
        entry.submit(0);
    }
    0
}
