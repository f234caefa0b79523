//! What a collector took so far (`fleet/state.json` in its directory): the durable consumer's
//! name, the last stream sequence written, the fleet sequence numbers given to each node's
//! artifacts, events.jsonl's length, and per-node figures. Saved whole (written beside, synced,
//! renamed) after each batch and before the batch is acknowledged, so a collector killed at any
//! point resumes with nothing taken twice.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::FleetError;

/// Per node: what the collector took of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    pub sessions: Vec<String>,
    pub events: u64,
    pub artifacts: u64,
    pub artifact_bytes: u64,
    pub modules: u64,
    /// Sessions whose session.json arrived (they ended).
    pub sessions_ended: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub fleet: String,
    pub durable: String,
    /// The last stream sequence written.
    pub last_stream_seq: u64,
    /// The next fleet sequence number.
    pub next_seq: u64,
    /// `<node>/<session>/<seq>` -> fleet sequence number.
    pub seqs: BTreeMap<String, u64>,
    /// events.jsonl's length after the last batch (a batch cut short is cut back to it).
    pub events_len: u64,
    pub nodes: BTreeMap<String, NodeFigures>,
}

pub fn path(out: &Path) -> PathBuf {
    out.join("fleet/state.json")
}

impl State {
    pub fn load(out: &Path) -> Result<Option<Self>, FleetError> {
        let p = path(out);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| FleetError::State(p, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FleetError::State(p, e.to_string())),
        }
    }

    pub fn save(&self, out: &Path) -> Result<(), FleetError> {
        let p = path(out);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| FleetError::State(p.clone(), e.to_string()))?;
        write_replace(&p, &bytes).map_err(|e| FleetError::State(p, e.to_string()))
    }

    pub fn node(&mut self, node: &str) -> &mut NodeFigures {
        self.nodes.entry(node.to_owned()).or_default()
    }
}

/// Replace `path` whole: written beside it, synced, renamed over it.
pub fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
