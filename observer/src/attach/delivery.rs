//! Which thread runs OCaml (decided every tick from the kernel's probe counters), and whether each
//! dump signal covobs sent was delivered on the thread it was meant for (signal_deliver).
use super::deliveries::Expected;
use super::session::Session;
use super::session::event;
use crate::discover::Runtime;
use crate::events::Body;
use crate::events::Event;
use crate::events::signal_name;
use crate::runtimes::DumpThread;
use crate::sys::clock;
use crate::target::ocaml::Method;

impl Session {
    /// Read the OCaml probe counters and report each process whose OCaml thread is found or moved.
    pub async fn update_ocaml(&mut self) {
        let hits: Vec<(u32, u32, u64)> = self
            .probes
            .ocaml_hits()
            .into_iter()
            .map(|(tid, h)| (tid, h.tgid, h.hits))
            .collect();
        let tracker = &self.tracker;
        let changes = self.ocaml.update(clock::boot_ns(), &hits, |pid| {
            tracker
                .get(pid)
                .map(|t| t.threads.iter().map(|(tid, n)| (*tid, n.clone())).collect())
                .unwrap_or_default()
        });
        for c in changes {
            let name = self
                .tracker
                .get(c.pid)
                .and_then(|t| t.threads.get(&c.tid).cloned())
                .unwrap_or_default();
            self.tx
                .event(event(
                    c.pid,
                    c.tid,
                    Body::OcamlThread {
                        name,
                        method: c.method.describe(),
                        previous_tid: c.previous,
                        hits_per_sec: (c.hits_per_sec * 10.0).round() / 10.0,
                    },
                ))
                .await;
            // A signal asked of eBPF for the thread OCaml left would wait forever: send it now
            // to the new OCaml thread.
            if let Some(prev) = c.previous
                && self.probes.cancel_bpf_signal(prev)
            {
                let _ = self.probes.request_bpf_signal(
                    c.tid,
                    self.opts.signal as i32,
                    clock::boot_ns(),
                );
                self.deliveries.moved(prev, c.tid);
            }
        }
    }

    /// Whether `pid` has an OCaml runtime whose thread a dump signal needs and is not known yet.
    pub fn needs_ocaml_thread(&self, pid: u32) -> bool {
        let wants = self.opts.thread == crate::trigger::ThreadChoice::Ocaml
            || self.targets.get(&pid).is_some_and(|t| {
                t.dumpable
                    .iter()
                    .any(|r| r.dump_thread() == DumpThread::Ocaml)
            });
        wants && self.ocaml.has_ocaml(pid) && self.ocaml.tid(pid).is_none()
    }

    /// Give the OCaml probes up to `limit` to show which thread runs OCaml.
    pub async fn wait_for_ocaml_thread(&mut self, pid: u32, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.ocaml.tid(pid).is_none() && tokio::time::Instant::now() < deadline {
            self.update_ocaml().await;
            if self.ocaml.tid(pid).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The OCaml thread of `pid`, if known (by probes or by name).
    pub(super) fn ocaml_tid(&self, pid: u32) -> Option<i32> {
        self.ocaml.tid(pid).map(|t| t as i32)
    }

    /// Whether a dump signal for the OCaml runtime of `pid` can go through eBPF.
    pub(super) fn bpf_delivery(&self, pid: u32) -> bool {
        self.opts.deliver == super::Deliver::Bpf && self.ocaml.method(pid) == Some(&Method::Probes)
    }

    pub(super) fn expect_delivery(
        &mut self,
        pid: u32,
        tid: u32,
        sig: i32,
        sent_ns: u64,
        via_bpf: bool,
        reason: &'static str,
    ) {
        self.deliveries.expect(Expected {
            pid,
            tid,
            sig,
            sent_ns,
            via_bpf_pending: via_bpf,
            reason,
        });
    }

    /// eBPF sent a signal it was asked for: the `trigger` event, now that it really left.
    pub(super) async fn on_bpf_signal_sent(
        &mut self,
        pid: u32,
        tid: u32,
        sig: u32,
        ret: i64,
        requested_ns: u64,
    ) {
        let reason = self.deliveries.sent_by_bpf(pid, tid);
        let runtimes: Vec<Runtime> = Runtime::ALL
            .into_iter()
            .filter(|r| r.dump_thread() == DumpThread::Ocaml)
            .collect();
        let now = clock::boot_ns();
        if ret != 0 {
            self.lost(
                pid,
                tid,
                "dump trigger",
                format!("bpf_send_signal_thread failed: {ret}"),
            )
            .await;
            return;
        }
        self.tx
            .event(event(
                pid,
                tid,
                Body::Trigger {
                    signal: signal_name(sig as i32),
                    runtimes,
                    method: "bpf_send_signal_thread".into(),
                    reason: reason.into(),
                    waited_ns: Some(now.saturating_sub(requested_ns)),
                },
            ))
            .await;
    }

    /// A dump signal arrived on thread `tid`: confirm it went where it was meant to.
    pub(super) async fn confirm_delivery(&mut self, pid: u32, tid: u32, sig: i32, ts: u64) {
        let Some(x) = self.deliveries.arrived(pid, tid, sig, clock::boot_ns()) else {
            return;
        };
        let ok = x.tid == tid;
        if ok {
            self.count().deliveries_confirmed += 1;
        } else {
            self.count().deliveries_misplaced += 1;
        }
        self.tx
            .event(Event {
                ts_ns: ts,
                pid,
                tid,
                body: Body::Delivery {
                    signal: signal_name(sig),
                    intended_tid: x.tid,
                    ok,
                    latency_ns: ts.saturating_sub(x.sent_ns),
                },
            })
            .await;
    }
}
