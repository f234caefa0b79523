//! Labels (docs/labels.md): a `covobs dump --label NAME` request, and every `--interval` tick
//! (`interval-000001`, ...), closes a label when its dumps are collected. The `label` event
//! names the artifacts that close it; the report attributes to the label what each target
//! gained up to those states.
use super::Mode;
use super::requests::RequestState;
use super::session::Session;
use super::session::event;
use crate::events::Body;

impl Session {
    /// The end of a request: its `label` event, then its answer.
    pub(super) async fn close_request(&mut self, r: RequestState) {
        if let Some(label) = r.label {
            self.tx
                .event(event(
                    r.pid,
                    0,
                    Body::Label {
                        label,
                        artifacts: r.response.artifacts.clone(),
                        lost: r.response.lost.clone(),
                    },
                ))
                .await;
        }
        if let Some(responder) = r.responder {
            responder.send(r.response).await;
        }
    }

    /// An `--interval` tick: dumps (snapshots) of every target, closing the interval's label.
    pub async fn trigger_interval(&mut self) {
        let pids: Vec<u32> = if self.opts.mode == Mode::Snapshot {
            self.snapshots.pids()
        } else {
            // Targets with nothing to trigger (kcov users, a workload without a runtime) are
            // left alone.
            self.targets
                .iter()
                .filter(|(_, t)| !t.dumpable.is_empty())
                .map(|(pid, _)| *pid)
                .collect()
        };
        let pids: Vec<u32> = pids.into_iter().filter(|p| !self.has_left(*p)).collect();
        if pids.is_empty() {
            return;
        }
        let label = self.requests.next_interval();
        self.start_request(pids, Some(label), None, "interval")
            .await;
    }
}
