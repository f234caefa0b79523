//! The NATS sink: one more [`Sink`] of the pipeline. Its thread publishes each item (or spools
//! it); the stages and the ring-buffer reader never wait for it.
use super::FleetHandle;
use crate::stream::{Item, Sink, StreamError};

pub struct NatsSink {
    fleet: FleetHandle,
}

impl NatsSink {
    pub fn new(fleet: FleetHandle) -> Self {
        Self { fleet }
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn accept(&mut self, item: &Item) -> Result<(), StreamError> {
        self.fleet.publish(item);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.fleet.drain_if_due();
        Ok(())
    }
}
