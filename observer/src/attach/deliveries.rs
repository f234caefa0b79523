//! The dump signals covobs sent (or asked eBPF to send), until each is delivered: which thread it
//! was meant for, so its signal_deliver says whether it landed there.

/// A signal not delivered after this long is no longer waited for (its dump timeout reports it).
const DELIVERY_WAIT_NS: u64 = 60_000_000_000;

/// A dump signal on its way: (process, intended thread, signal, when it was sent or asked for).
#[derive(Clone, Debug)]
pub(super) struct Expected {
    pub pid: u32,
    pub tid: u32,
    pub sig: i32,
    pub sent_ns: u64,
    /// Asked of eBPF and not sent yet (the OCaml thread has not hit a probe since).
    pub via_bpf_pending: bool,
    /// Why covobs asked for the dump (interval, once, detach, request).
    pub reason: &'static str,
}

#[derive(Default)]
pub(super) struct Deliveries {
    expected: Vec<Expected>,
}

impl Deliveries {
    pub(super) fn expect(&mut self, x: Expected) {
        self.expected.push(x);
    }

    /// The OCaml thread moved from `from` to `to`: signals eBPF still holds go to the new one.
    pub(super) fn moved(&mut self, from: u32, to: u32) {
        for x in self
            .expected
            .iter_mut()
            .filter(|x| x.tid == from && x.via_bpf_pending)
        {
            x.tid = to;
        }
    }

    /// eBPF sent the signals it held for thread `tid`: why they were asked for.
    pub(super) fn sent_by_bpf(&mut self, pid: u32, tid: u32) -> &'static str {
        let mut reason = "request";
        for x in self
            .expected
            .iter_mut()
            .filter(|x| x.pid == pid && x.tid == tid && x.via_bpf_pending)
        {
            x.via_bpf_pending = false;
            reason = x.reason;
        }
        reason
    }

    /// Signal `sig` arrived on thread `tid` of `pid` at `now`: the signal it answers, the oldest
    /// of this kind to this process, preferring one meant for this thread.
    pub(super) fn arrived(&mut self, pid: u32, tid: u32, sig: i32, now: u64) -> Option<Expected> {
        self.expected
            .retain(|x| now.saturating_sub(x.sent_ns) < DELIVERY_WAIT_NS);
        let pos = self
            .expected
            .iter()
            .position(|x| x.pid == pid && x.sig == sig && x.tid == tid)
            .or_else(|| {
                self.expected
                    .iter()
                    .position(|x| x.pid == pid && x.sig == sig)
            })?;
        Some(self.expected.remove(pos))
    }

    /// Process `pid` is gone (or let go): none of its signals will arrive.
    pub(super) fn forget(&mut self, pid: u32) {
        self.expected.retain(|x| x.pid != pid);
    }
}
