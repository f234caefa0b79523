//! Which thread runs OCaml: a uprobe on steady-state functions of the OCaml runtime, attached per
//! process, counts hits per thread in the kernel (no record per hit: userspace reads the counts).
//! The same probe delivers a signal with bpf_send_signal_thread when userspace asked for one on
//! that thread: it lands on exactly that thread, where OCaml runs.
use aya_ebpf::{
    helpers::generated::bpf_send_signal_thread,
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use covobs_common::{OcamlHits, SignalRequest, SignalSentRecord, kind};

use crate::maps::{config, current, header, reserve, tgid_watched};

/// tid (in covobs' PID namespace, as userspace reads it) -> hits of the OCaml runtime probes.
#[map]
pub static OCAML_HITS: HashMap<u32, OcamlHits> = HashMap::with_max_entries(16384, 0);

/// tid -> a signal to send the next time that thread hits an OCaml runtime probe.
#[map]
pub static SEND_SIGNAL: HashMap<u32, SignalRequest> = HashMap::with_max_entries(1024, 0);

#[uprobe]
pub fn covobs_ocaml_hit(_ctx: ProbeContext) -> u32 {
    ocaml_hit()
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uprobe(multi)]
pub fn covobs_ocaml_hit_multi(_ctx: ProbeContext) -> u32 {
    ocaml_hit()
}

#[inline(always)]
fn ocaml_hit() -> u32 {
    let Some(cur) = config().and_then(current) else {
        return 0;
    };
    if tgid_watched(cur.tgid).is_none() {
        return 0;
    }
    let now = header(0, 0, 0).ts_ns;
    match OCAML_HITS.get_ptr_mut(&cur.tid) {
        // SAFETY: a valid map value of this thread; only this thread updates it (a lost
        // increment under a race would only skew a count).
        Some(h) => unsafe {
            (*h).hits += 1;
            (*h).last_ns = now;
        },
        None => {
            let _ = OCAML_HITS.insert(
                &cur.tid,
                &OcamlHits {
                    tgid: cur.tgid,
                    _pad: 0,
                    hits: 1,
                    last_ns: now,
                },
                0,
            );
        }
    }
    // SAFETY: the value is copied out at once.
    if let Some(req) = unsafe { SEND_SIGNAL.get(&cur.tid) }.copied() {
        let _ = SEND_SIGNAL.remove(&cur.tid);
        // SAFETY: signals the current thread with the signal userspace checked it handles.
        let ret = unsafe { bpf_send_signal_thread(req.sig) };
        if let Some(mut entry) = reserve::<SignalSentRecord>(kind::BPF_SIGNAL_SENT) {
            entry.write(SignalSentRecord {
                hdr: header(kind::BPF_SIGNAL_SENT, cur.tgid, cur.tid),
                sig: req.sig,
                _pad: 0,
                ret,
                requested_ns: req.requested_ns,
            });
            entry.submit(0);
        }
    }
    0
}
