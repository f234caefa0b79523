//! What a target's .gcda files held before its next gcov dump. libgcov merges on write: it reads
//! the file, adds it into the program's counters and writes the sum, so a dump's .gcda holds that
//! earlier content too. The artifact's metadata `merged` says what it was (docs/output.md, "Exact
//! counts"): the previous artifact of this process when that is what the files held, else a copy
//! (`<seq>-gcov.merged`, the .gcda files one after another, listed in `merged.parts`).
use std::collections::HashMap;

use bytes::Bytes;

use crate::{
    collect::{self, MergedBase, MergedPart},
    target::files::TargetDir,
};

#[derive(Debug, Default)]
pub(crate) struct GcdaBefore {
    /// .gcda path in the target -> its content, and the artifact of this collector it is.
    files: HashMap<String, (Bytes, Option<u64>)>,
}

impl GcdaBefore {
    /// The files as they are when covobs starts watching the target (an earlier run's counts,
    /// dumps from before covobs attached).
    pub(crate) fn at_start(root: &TargetDir, gcda: &[(String, String)]) -> Self {
        let files = gcda
            .iter()
            .filter_map(|(_, path)| {
                let data = super::gcda_now(root, path)?;
                Some((path.clone(), (Bytes::from(data), None)))
            })
            .collect();
        Self { files }
    }

    /// Every .gcda of `parts` (path in the target, bytes) is what an artifact of this collector
    /// held: nothing new was written.
    pub(crate) fn unchanged(&self, parts: &[(String, Vec<u8>)]) -> bool {
        let mut gcda = parts
            .iter()
            .filter(|(p, _)| p.ends_with(".gcda"))
            .peekable();
        gcda.peek().is_some()
            && gcda.all(|(p, b)| {
                self.files
                    .get(p)
                    .is_some_and(|(was, seq)| seq.is_some() && was[..] == b[..])
            })
    }

    /// What dump `n`, which wrote `parts` (name, path in the target, bytes), merged; and the copy
    /// to keep beside it when that was not an artifact of this process. The parts are then what
    /// the files hold.
    pub(crate) fn merged(
        &mut self,
        n: u64,
        parts: &[(String, String, Bytes)],
    ) -> (Option<MergedBase>, Option<Vec<u8>>) {
        let written: Vec<&(String, String, Bytes)> = parts
            .iter()
            .filter(|(_, path, _)| path.ends_with(".gcda"))
            .collect();
        let before: Vec<(&str, &Bytes, Option<u64>)> = written
            .iter()
            .filter_map(|(_, path, _)| {
                let (b, seq) = self.files.get(path)?;
                Some((path.as_str(), b, *seq))
            })
            .collect();
        let mut all = Vec::new();
        for (_, b, _) in &before {
            all.extend_from_slice(b);
        }
        let one_seq = before
            .first()
            .and_then(|(_, _, s)| *s)
            .filter(|s| before.iter().all(|(_, _, t)| *t == Some(*s)));
        let out = if before.is_empty() {
            (None, None)
        } else if let Some(seq) = one_seq {
            let base = MergedBase {
                seq: Some(seq),
                file: None,
                bytes: Some(all.len() as u64),
                checksum: Some(collect::checksum(&all)),
                parts: Vec::new(),
            };
            (Some(base), None)
        } else {
            let base = MergedBase {
                seq: None,
                file: Some(format!("{n:06}-gcov.merged")),
                bytes: Some(all.len() as u64),
                checksum: Some(collect::checksum(&all)),
                parts: before
                    .iter()
                    .map(|(path, b, _)| MergedPart {
                        path: (*path).to_owned(),
                        bytes: b.len() as u64,
                    })
                    .collect(),
            };
            (Some(base), Some(all))
        };
        for (_, path, data) in written {
            self.files.insert(path.clone(), (data.clone(), Some(n)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(path: &str, data: &[u8]) -> (String, String, Bytes) {
        (
            path.replace('/', "#"),
            path.into(),
            Bytes::from(data.to_vec()),
        )
    }

    #[test]
    fn names_the_previous_artifact_or_keeps_a_copy() {
        let mut b = GcdaBefore::default();
        b.files
            .insert("/g/a.gcda".into(), (Bytes::from_static(b"old-a"), None));
        // First dump: a held an earlier run's counts (a copy), b was absent.
        let (m, copy) = b.merged(
            1,
            &[
                part("/g/a.gcda", b"A1"),
                part("/o/a.gcno", b"notes"),
                part("/g/b.gcda", b"B1"),
            ],
        );
        let m = m.expect("merged");
        assert_eq!(m.file.as_deref(), Some("000001-gcov.merged"));
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.parts[0].path, "/g/a.gcda");
        assert_eq!(copy.as_deref(), Some(&b"old-a"[..]));
        // Second dump: both files are what dump 1 wrote.
        let (m, copy) = b.merged(2, &[part("/g/a.gcda", b"A2"), part("/g/b.gcda", b"B2")]);
        let m = m.expect("merged");
        assert_eq!((m.seq, m.bytes, copy), (Some(1), Some(4), None));
        // The same bytes again: nothing new; a copy from before covobs watched is not "its own".
        let same = [("/g/a.gcda".to_string(), b"A2".to_vec())];
        assert!(b.unchanged(&same));
        assert!(!b.unchanged(&[("/g/a.gcda".to_string(), b"A3".to_vec())]));
        assert!(!b.unchanged(&[("/o/a.gcno".to_string(), b"notes".to_vec())]));
        let mut fresh = GcdaBefore::default();
        fresh
            .files
            .insert("/g/a.gcda".into(), (Bytes::from_static(b"A2"), None));
        assert!(!fresh.unchanged(&same));
    }
}
