//! The earlier content a dump merged into its counters (metadata `merged`, docs/output.md
//! "Exact counts"): an artifact taken in before, or a copy the collector kept beside the dump.
use std::path::Path;

use super::LiveCoverage;
use crate::session::{Artifact, MAX_ARTIFACT_BYTES, sha256_hex};

impl LiveCoverage {
    /// The bytes `a` merged, if its metadata says it merged something. `Err` when the metadata
    /// names content that is not there or not what was recorded.
    pub(super) fn merged_base(&self, a: &Artifact) -> Result<Option<Vec<u8>>, String> {
        let Some(m) = &a.meta.merged else {
            return Ok(None);
        };
        // Read like every file of the session: beneath it, through no link, a regular file.
        let rel = match (m.seq, &m.file) {
            (Some(seq), _) => self
                .llvm_states
                .get(&seq)
                .ok_or_else(|| format!("it merged artifact {seq}, which is not in the report"))?
                .clone(),
            (None, Some(file)) => {
                let name = Path::new(file);
                let plain = name.components().count() == 1
                    && matches!(
                        name.components().next(),
                        Some(std::path::Component::Normal(_))
                    );
                if !plain {
                    return Err(format!("merged content {file:?} is not a file name"));
                }
                Path::new(&a.rel)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(name)
            }
            (None, None) => return Ok(None),
        };
        let bytes = self
            .dir
            .read(&rel, m.bytes, MAX_ARTIFACT_BYTES)
            .map_err(|e| format!("the content it merged, {}: {e}", rel.display()))?;
        if let Some(n) = m.bytes
            && n != bytes.len() as u64
        {
            return Err(format!(
                "the content it merged has {} bytes, {n} recorded",
                bytes.len()
            ));
        }
        if let Some(sum) = &m.checksum {
            let want = sum.strip_prefix("sha256:").unwrap_or(sum);
            if !sha256_hex(&bytes).eq_ignore_ascii_case(want) {
                return Err("the content it merged does not match its recorded checksum".into());
            }
        }
        Ok(Some(bytes))
    }
}
