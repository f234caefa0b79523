//! bisect_ppx `.coverage` files: validation of the `BISECT-COVERAGE-4` format, and where a
//! target's dumps land (`$BISECT_FILE<suffix>.coverage`, relative to its working directory).
use std::{collections::HashSet, fs, os::fd::AsRawFd, os::unix::fs::MetadataExt};

use crate::target::environ::Environ;
use crate::target::files as read;

pub use covobs_layout::formats::bisect::{BisectError, MAGIC, RawFile, read};

/// Files and points a coverage file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BisectSummary {
    pub files: u64,
    pub points: u64,
    pub visited: u64,
}

/// Check that `data` is exactly one complete coverage file, and count what it holds.
pub fn parse(data: &[u8]) -> Result<BisectSummary, BisectError> {
    let files = read(data)?;
    Ok(BisectSummary {
        files: files.len() as u64,
        points: files.iter().map(|f| f.points.len() as u64).sum(),
        visited: files
            .iter()
            .map(|f| f.counts.iter().filter(|n| **n > 0).count() as u64)
            .sum(),
    })
}

/// Where a target's bisect dumps go, and which of them covobs already took.
#[derive(Clone, Debug)]
pub struct BisectSource {
    /// `BISECT_FILE` (default `bisect`), as the target sees it.
    pub prefix: String,
    taken: HashSet<u64>,
}

impl BisectSource {
    pub fn for_process(pid: u32) -> Self {
        let prefix = Environ::of(pid)
            .var("BISECT_FILE")
            .filter(|p| !p.is_empty())
            .unwrap_or("bisect")
            .to_owned();
        Self {
            prefix,
            taken: HashSet::new(),
        }
    }

    fn dir_and_base(&self) -> (&str, &str) {
        match self.prefix.rsplit_once('/') {
            Some(("", base)) => ("/", base),
            Some((dir, base)) => (dir, base),
            None => (".", &self.prefix),
        }
    }

    /// Coverage files of this target's prefix: (path, inode, ctime ns).
    fn candidates(
        &self,
        root: &read::TargetDir,
        cwd: Option<&read::TargetDir>,
    ) -> Vec<(String, u64, i128)> {
        let (dir, base) = self.dir_and_base();
        let Ok(d) = read::open_in_target(root, cwd, dir, read::Expect::Directory) else {
            return Vec::new();
        };
        let Ok(listing) = fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd())) else {
            return Vec::new();
        };
        listing
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(base) || !name.ends_with(".coverage") {
                    return None;
                }
                let m = e.metadata().ok()?;
                let path = if dir == "." {
                    name
                } else {
                    format!("{}/{name}", dir.trim_end_matches('/'))
                };
                Some((
                    path,
                    m.ino(),
                    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
                ))
            })
            .collect()
    }

    /// The path of the coverage file with this inode (the kernel saw the dump write it through a
    /// descriptor opened before the dump began, so without a path).
    pub fn path_of(
        &self,
        root: &read::TargetDir,
        cwd: Option<&read::TargetDir>,
        ino: u64,
    ) -> Option<String> {
        self.candidates(root, cwd)
            .into_iter()
            .find(|(_, i, _)| *i == ino)
            .map(|(p, _, _)| p)
    }

    /// Coverage files not taken yet, oldest first.
    pub fn untaken(&self, root: &read::TargetDir, cwd: Option<&read::TargetDir>) -> Vec<String> {
        let mut c: Vec<_> = self
            .candidates(root, cwd)
            .into_iter()
            .filter(|(_, ino, _)| !self.taken.contains(ino))
            .collect();
        c.sort_by_key(|(_, _, t)| *t);
        c.into_iter().map(|(p, _, _)| p).collect()
    }

    pub fn mark_taken(&mut self, ino: u64) {
        self.taken.insert(ino);
    }

    /// The files already there belong to dumps before covobs attached.
    pub fn skip_existing(&mut self, root: &read::TargetDir, cwd: Option<&read::TargetDir>) {
        for (_, ino, _) in self.candidates(root, cwd) {
            self.taken.insert(ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bisects_format() {
        let data = b"BISECT-COVERAGE-4 2 4 a.ml 3 10 20 30 3 1 0 4 8 dir/b.ml 1 7 1 0";
        assert_eq!(
            parse(data),
            Ok(BisectSummary {
                files: 2,
                points: 4,
                visited: 2
            })
        );
        assert_eq!(
            parse(b"BISECT-COVERAGE-4 0"),
            Ok(BisectSummary {
                files: 0,
                points: 0,
                visited: 0
            })
        );
    }

    #[test]
    fn rejects_truncation_and_garbage() {
        let data = b"BISECT-COVERAGE-4 2 4 a.ml 3 10 20 30 3 1 0 4 8 dir/b.ml 1 7 1 0";
        for cut in [18, 25, 40, data.len() - 2] {
            assert!(parse(&data[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(parse(b"BISECT-COVERAGE-3 0"), Err(BisectError::BadMagic));
        assert!(matches!(
            parse(b"BISECT-COVERAGE-4 0 x"),
            Err(BisectError::Trailing(_))
        ));
        // Points and counts must match.
        assert!(parse(b"BISECT-COVERAGE-4 1 1 a 2 1 2 1 0").is_err());
    }
}
