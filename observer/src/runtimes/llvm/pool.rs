//! What an LLVM merge-pool file (`%m`) held after the last dump a collector saw (or when it
//! attached): the runtime merges it into its counters before its next write, so the artifact's
//! metadata `merged` names it (docs/output.md, "Exact counts").
use bytes::Bytes;

use super::path::ProfileCursor;
use crate::{
    collect::{self, MergedBase, SourceInfo},
    target::files::TargetDir,
};

#[derive(Debug)]
pub struct Pool {
    path: String,
    ino: Option<u64>,
    bytes: Vec<u8>,
    /// The artifact these bytes are, if covobs collected them.
    seq: Option<u64>,
}

impl Pool {
    /// What a merge-pool file holds now (before the first dump covobs collects from it).
    pub fn now(c: &ProfileCursor, root: &TargetDir) -> Option<Self> {
        let path = c.path.clone()?;
        let bytes = c.pool_content(root)?;
        Some(Self {
            path,
            ino: c.ino,
            bytes,
            seq: None,
        })
    }
}

/// What valid dump `n`, which wrote `data` where `source` says, merged onto; the copy to keep
/// beside it when that was not an artifact. `pool` is then what the dump wrote.
pub fn merged(
    pool: &mut Option<Pool>,
    n: u64,
    source: &SourceInfo,
    data: &[u8],
) -> (Option<MergedBase>, Option<Bytes>) {
    // The same file: by name, or by inode (the kernel sees the name the target opened, maybe
    // relative).
    let before = pool
        .take()
        .filter(|p| p.path == source.path || (p.ino.is_some() && p.ino == source.inode));
    *pool = Some(Pool {
        path: source.path.clone(),
        ino: source.inode,
        bytes: data.to_vec(),
        seq: Some(n),
    });
    let Some(p) = before else {
        return (None, None);
    };
    let base = MergedBase {
        seq: p.seq,
        file: p.seq.is_none().then(|| format!("{n:06}-llvm.merged")),
        bytes: Some(p.bytes.len() as u64),
        checksum: Some(collect::checksum(&p.bytes)),
        parts: Vec::new(),
    };
    let copy = p.seq.is_none().then(|| Bytes::from(p.bytes));
    (Some(base), copy)
}
