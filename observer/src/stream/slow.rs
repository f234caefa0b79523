//! A deliberately slow sink, for tests only: it takes every item and sleeps after each one, like
//! a remote stage on a bad network. Enabled by `COVOBS_DEBUG_SLOW_SINK=<ms per item>` (hidden,
//! not part of the CLI contract); its queue is `COVOBS_DEBUG_SLOW_SINK_QUEUE` items (default
//! 1024) so that a test sees it fall behind within seconds.
use std::time::Duration;

use super::{Item, Sink, StreamError};

pub struct SlowSink {
    per_item: Duration,
    queue: usize,
}

impl SlowSink {
    /// The sink the environment asks for, if any.
    pub fn from_env() -> Option<Self> {
        let ms: u64 = std::env::var("COVOBS_DEBUG_SLOW_SINK").ok()?.parse().ok()?;
        let queue = std::env::var("COVOBS_DEBUG_SLOW_SINK_QUEUE")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1024);
        Some(Self {
            per_item: Duration::from_millis(ms),
            queue,
        })
    }
}

impl Sink for SlowSink {
    fn name(&self) -> &'static str {
        "debug-slow"
    }

    fn queue(&self) -> usize {
        self.queue
    }

    fn accept(&mut self, _item: &Item) -> Result<(), StreamError> {
        std::thread::sleep(self.per_item);
        Ok(())
    }
}
