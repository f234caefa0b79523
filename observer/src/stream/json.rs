//! JSON lines: one event object a line (`--json` on stdout, `events.jsonl` in the output dir).
use std::io::Write;

use super::{Item, Kind, Sink, StreamError};

pub struct JsonLinesSink<W: Write + Send> {
    out: W,
    name: &'static str,
}

impl<W: Write + Send> JsonLinesSink<W> {
    pub fn new(out: W, name: &'static str) -> Self {
        Self { out, name }
    }
}

impl<W: Write + Send> Sink for JsonLinesSink<W> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn takes(&self, kind: Kind) -> bool {
        kind == Kind::Event
    }

    fn accept(&mut self, item: &Item) -> Result<(), StreamError> {
        let Item::Event(event) = item else {
            return Ok(());
        };
        let io = |source| StreamError::Io {
            sink: self.name,
            source,
        };
        serde_json::to_writer(&mut self.out, &**event).map_err(|e| io(e.into()))?;
        // Flush per line: a reader (a test, `jq`, a pipe) sees each event as it happens.
        self.out.write_all(b"\n").map_err(io)?;
        self.out.flush().map_err(io)
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.out.flush().map_err(|source| StreamError::Io {
            sink: self.name,
            source,
        })
    }
}
