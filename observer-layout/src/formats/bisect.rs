//! bisect_ppx `.coverage` files, the `BISECT-COVERAGE-4` format: read by the writer (which
//! validates each dump with it) and by the report.

pub const MAGIC: &[u8] = b"BISECT-COVERAGE-4";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BisectError {
    #[error("not a bisect_ppx coverage file (no BISECT-COVERAGE-4 header)")]
    BadMagic,
    #[error("bisect coverage data ends early or is malformed at byte {0}")]
    Malformed(usize),
    #[error("{file}: {points} points but {counts} counts")]
    Mismatch {
        file: String,
        points: usize,
        counts: usize,
    },
    #[error("{0} bytes after the coverage data")]
    Trailing(usize),
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// " <decimal>" as bisect's Format writes integers.
    fn int(&mut self) -> Result<i64, BisectError> {
        if self.b.get(self.at) != Some(&b' ') {
            return Err(BisectError::Malformed(self.at));
        }
        self.at += 1;
        let start = self.at;
        if self.b.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        while self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        std::str::from_utf8(&self.b[start..self.at])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BisectError::Malformed(start))
    }

    fn count(&mut self) -> Result<usize, BisectError> {
        let at = self.at;
        let n = self.int()?;
        // A count cannot exceed the bytes left (each element takes at least 2).
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.b.len())
            .ok_or(BisectError::Malformed(at))
    }

    fn string(&mut self) -> Result<String, BisectError> {
        let len = self.count()?;
        let start = self.at + 1;
        if self.b.get(self.at) != Some(&b' ') || start + len > self.b.len() {
            return Err(BisectError::Malformed(self.at));
        }
        self.at = start + len;
        Ok(String::from_utf8_lossy(&self.b[start..self.at]).into_owned())
    }

    fn ints(&mut self, n: usize) -> Result<Vec<i64>, BisectError> {
        (0..n).map(|_| self.int()).collect()
    }
}

/// One instrumented source file of a coverage file, as bisect wrote it: the name it recorded,
/// the byte offsets of its points, and a count per point (OCaml ints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFile {
    pub name: String,
    pub points: Vec<i64>,
    pub counts: Vec<i64>,
}

/// Read `data`, which must be exactly one complete coverage file.
pub fn read(data: &[u8]) -> Result<Vec<RawFile>, BisectError> {
    if !data.starts_with(MAGIC) {
        return Err(BisectError::BadMagic);
    }
    let mut c = Cursor {
        b: data,
        at: MAGIC.len(),
    };
    let n = c.count()?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let name = c.string()?;
        let np = c.count()?;
        let points = c.ints(np)?;
        let nc = c.count()?;
        if nc != np {
            return Err(BisectError::Mismatch {
                file: name,
                points: np,
                counts: nc,
            });
        }
        let counts = c.ints(nc)?;
        files.push(RawFile {
            name,
            points,
            counts,
        });
    }
    let rest = &data[c.at..];
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(BisectError::Trailing(rest.len()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_points_and_counts() {
        let data = b"BISECT-COVERAGE-4 2 4 a.ml 3 10 20 30 3 1 0 4 8 dir/b.ml 1 7 1 0";
        let files = read(data).expect("read");
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[0],
            RawFile {
                name: "a.ml".into(),
                points: vec![10, 20, 30],
                counts: vec![1, 0, 4]
            }
        );
        assert_eq!(files[1].name, "dir/b.ml");
        assert_eq!(read(b"BISECT-COVERAGE-3 0"), Err(BisectError::BadMagic));
        assert!(matches!(
            read(b"BISECT-COVERAGE-4 1 1 a 2 1 2 1 0"),
            Err(BisectError::Mismatch {
                points: 2,
                counts: 1,
                ..
            })
        ));
    }
}
