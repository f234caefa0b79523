//! Targets that leave the selection (moved out of the selected cgroup): no longer triggered, and
//! let go once the dumps covobs already asked them for are in, so nothing is lost.
use super::session::Session;

impl Session {
    /// Whether this target left the selection.
    pub(super) fn has_left(&self, pid: u32) -> bool {
        self.tracker.get(pid).is_some_and(|t| t.left)
    }

    /// Stop watching the targets that left and have nothing in flight.
    pub fn release_left(&mut self) {
        for pid in self.tracker.left() {
            let waiting = self
                .targets
                .get(&pid)
                .is_some_and(|t| !t.pending.is_empty());
            let dumping = self
                .tracker
                .get(pid)
                .is_some_and(|t| t.threads.keys().any(|tid| self.dumps.is_active(*tid)));
            if waiting || dumping {
                continue;
            }
            self.tracker.release(&mut self.probes, pid);
            // Its collector finishes the dumps already handed to it, then ends.
            self.targets.remove(&pid);
            self.ocaml.forget(pid);
            self.deliveries.forget(pid);
        }
    }
}
