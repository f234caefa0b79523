//! The end of a session's collection: dumps whose end covobs will not see, and collections no
//! collector answered for in time. Each is a `lost` event with a reason that says covobs stopped
//! (never that the target did anything).
use super::session::Session;

impl Session {
    /// Dumps still running when covobs stops: their end (and so their output) is not observed.
    pub(super) async fn unended_dumps_lost(&mut self) {
        for d in self.dumps.take_all() {
            self.lost(
                d.pid,
                d.tid,
                d.hook.runtime.as_str(),
                format!(
                    "{} dump on thread {}: covobs stopped while it ran (its end was not observed)",
                    d.hook.runtime.as_str(),
                    d.tid
                ),
            )
            .await;
        }
    }

    /// Collections still unanswered at the last bound: counted lost together.
    pub(super) async fn unanswered_lost(&mut self) {
        let n = self.collections.take_unanswered();
        if n == 0 {
            return;
        }
        self.losses()
            .report_many(
                0,
                0,
                "collection",
                format!(
                    "covobs stopped with {n} collections still running (a read or a write that did not finish in time)"
                ),
                n as u64,
            )
            .await;
    }
}
