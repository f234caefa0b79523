//! bisect_ppx coverage (OCaml) in the report.
//!
//! A `.coverage` artifact is a whole `BISECT-COVERAGE-4` file: for each instrumented source file,
//! the name bisect recorded (relative to the build root, e.g.
//! `fixtures/protocol-runner/ocaml/mempool.ml`), the byte offsets of its instrumentation points
//! and a hit count per point. Turning points into lines needs the source file: a line's count is
//! the lowest count of the points on it, lines without points carry no code, exactly as
//! `bisect-ppx-report` computes lines (its `Util.line_counts`), so covobs' lines agree with
//! bisect-ppx-report's Cobertura and HTML.
//!
//! Counts are cumulative since the process started (until the program calls
//! `Bisect.Runtime.reset_counters`), so a process's coverage after a dump is that dump alone, not
//! a sum of its dumps; a point counted lower than in the process's previous dump is a reset, and
//! the previous dump stays counted (the exact count model, [`super::tally`]). Processes (several
//! at once, or restarts) are combined the way bisect-ppx-report combines the files it is given:
//! point by point, the counts of each process's latest dump (and of its closed reset segments)
//! add up. The hit/missed status is the same as
//! with a maximum; the sum keeps the hit counts meaning "times run in the session", as LLVM's and
//! gcov's merges do.
//!
//! Source files are found like `bisect-ppx-report --source-path`: the recorded name relative to
//! each candidate root in turn ([`SourceRoots`]). A candidate must hold a regular file the
//! requesting user could read whose size covers every point offset (a different version of the
//! file would not); names with `..` are refused (the file is named by the target).
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Read as _,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use super::{
    model::{Coverage, FileCoverage, Point},
    tally::Instance,
};

/// Sources larger than this are not read.
const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// One instrumented file of a coverage file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentedFile {
    /// As bisect recorded it.
    pub name: String,
    /// Byte offsets into the source.
    pub points: Vec<u64>,
    /// Hits, one per point.
    pub counts: Vec<u64>,
}

/// Read a `BISECT-COVERAGE-4` file (the format is read in one place: collect/bisect.rs).
pub fn parse(data: &[u8]) -> Result<Vec<InstrumentedFile>, String> {
    use covobs_layout::formats::bisect::BisectError;
    covobs_layout::formats::bisect::read(data)
        .map_err(|e| match e {
            // The file name is the artifact's content: not repeated for a refused artifact.
            BisectError::Mismatch { points, counts, .. } => {
                format!("a file with {points} points but {counts} counts")
            }
            e => e.to_string(),
        })?
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let points = f
                .points
                .iter()
                .map(|&p| {
                    u64::try_from(p)
                        .map_err(|_| format!("file {} of the dump: a negative offset", i + 1))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            // Counts are OCaml ints: negative only after an overflow; count those as 0.
            let counts = f
                .counts
                .iter()
                .map(|&n| u64::try_from(n).unwrap_or(0))
                .collect();
            Ok(InstrumentedFile {
                name: f.name,
                points,
                counts,
            })
        })
        .collect()
}

/// Write a `BISECT-COVERAGE-4` file, as bisect's runtime does.
pub fn write(files: &[InstrumentedFile]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::from("BISECT-COVERAGE-4");
    // Writing to a String cannot fail.
    let _ = write!(s, " {}", files.len());
    for f in files {
        let _ = write!(s, " {} {} {}", f.name.len(), f.name, f.points.len());
        for p in &f.points {
            let _ = write!(s, " {p}");
        }
        let _ = write!(s, " {}", f.counts.len());
        for c in &f.counts {
            let _ = write!(s, " {c}");
        }
    }
    s.into_bytes()
}

/// Where each line of a source file starts, to map byte offsets to line numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineIndex {
    /// Start offset of each line (line 1 at index 0).
    starts: Vec<u64>,
    len: u64,
}

impl LineIndex {
    /// Lines as OCaml's `input_line` reads them: each ends after its '\n' (the last one may end
    /// at the end of the file without one).
    pub fn new(text: &[u8]) -> Self {
        let mut starts = Vec::new();
        if !text.is_empty() {
            starts.push(0);
        }
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' && i + 1 < text.len() {
                starts.push(i as u64 + 1);
            }
        }
        Self {
            starts,
            len: text.len() as u64,
        }
    }

    /// The 1-based line holding byte `offset`, if the file is that long.
    pub fn line_of(&self, offset: u64) -> Option<u32> {
        if offset >= self.len {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= offset);
        u32::try_from(i).ok()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Line -> count as bisect-ppx-report computes it: the lowest count among the points on the
/// line; points past the end of the file are dropped (as bisect-ppx-report drops them).
pub fn line_counts(index: &LineIndex, points: &[Point]) -> BTreeMap<u32, u64> {
    let mut lines: BTreeMap<u32, u64> = BTreeMap::new();
    for p in points {
        if let Some(line) = index.line_of(p.offset) {
            lines
                .entry(line)
                .and_modify(|c| *c = (*c).min(p.hits))
                .or_insert(p.hits);
        }
    }
    lines
}

/// Where a candidate root came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    pub origin: String,
}

/// Candidate roots for the names bisect recorded, in the order they are tried.
#[derive(Clone, Debug, Default)]
pub struct SourceRoots {
    roots: Vec<Root>,
}

impl SourceRoots {
    /// Add `dir` (absolute only) unless it is there already.
    pub fn push(&mut self, dir: &Path, origin: &str) {
        if dir.is_absolute() && !self.roots.iter().any(|r| r.dir == dir) {
            self.roots.push(Root {
                dir: dir.to_path_buf(),
                origin: origin.to_string(),
            });
        }
    }

    /// Add `dir` and then each of its parents.
    pub fn push_with_parents(&mut self, dir: &Path, origin: &str) {
        for d in dir.ancestors() {
            self.push(d, origin);
        }
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Find the source of `name` whose size covers `max_offset`.
    pub fn resolve(&self, name: &str, max_offset: Option<u64>) -> Result<Source, String> {
        let rel = Path::new(name);
        if name.is_empty() || rel.components().any(|c| c == Component::ParentDir) {
            return Err(format!("the recorded name {name:?} is not a source path"));
        }
        if rel.is_absolute() {
            return load(rel, max_offset);
        }
        let mut tried = Vec::new();
        for root in &self.roots {
            let p = root.dir.join(rel);
            match load(&p, max_offset) {
                Ok(s) => return Ok(s),
                Err(why) if p.exists() => tried.push(format!("{} ({why})", p.display())),
                Err(_) => {}
            }
        }
        let mut why = format!(
            "{name}: not found under {} candidate director{} ({})",
            self.roots.len(),
            if self.roots.len() == 1 { "y" } else { "ies" },
            self.roots
                .iter()
                .map(|r| format!("{} [{}]", r.dir.display(), r.origin))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !tried.is_empty() {
            why.push_str(&format!("; unusable: {}", tried.join(", ")));
        }
        why.push_str("; give its root with `covobs report --source-path DIR`");
        Err(why)
    }
}

/// A source file found for a recorded name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Absolute, as the report names the file.
    pub path: PathBuf,
    pub index: Arc<LineIndex>,
}

fn load(path: &Path, max_offset: Option<u64>) -> Result<Source, String> {
    let text = path.to_string_lossy();
    if ["/proc/", "/sys/", "/dev/"]
        .iter()
        .any(|d| text.starts_with(d))
    {
        return Err("not a source file".into());
    }
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if !super::html::readable_by_requester(&meta) {
        return Err("only root can read it".into());
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(format!("{} bytes: too large", meta.len()));
    }
    if let Some(max) = max_offset
        && max >= meta.len()
    {
        return Err(format!(
            "{} bytes, but a point is at byte {max}: another version of the file",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_SOURCE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    Ok(Source {
        path: path.to_path_buf(),
        index: Arc::new(LineIndex::new(&bytes)),
    })
}

/// The bisect_ppx coverage of one module (the binary that links the instrumented OCaml code).
#[derive(Debug)]
pub struct BisectUnit {
    roots: SourceRoots,
    /// Each process instance's latest dump (its counts are cumulative since it started, or
    /// since it last reset them).
    latest: BTreeMap<Instance, Vec<InstrumentedFile>>,
    /// The closed reset segments' last dumps, added up (see [`crate::tally`]).
    closed: Vec<InstrumentedFile>,
    /// Resets seen (a point's count lower than in the instance's previous dump).
    pub resets: u64,
    /// Recorded name -> its source, or why there is none (each resolved once).
    sources: HashMap<String, Result<Source, String>>,
    /// Names whose source was not found, not told yet (see [`BisectUnit::take_unresolved`]).
    untold: Vec<String>,
    /// Artifacts taken in.
    pub steps: u64,
}

/// Some point of `now` counted lower than the same point (same file, same offsets) in `prev`.
fn lower_than(now: &[InstrumentedFile], prev: &[InstrumentedFile]) -> bool {
    now.iter().any(|f| {
        prev.iter()
            .find(|p| p.name == f.name && p.points == f.points)
            .is_some_and(|p| f.counts.iter().zip(&p.counts).any(|(n, w)| n < w))
    })
}

/// `acc` += `files`, point by point (files matched by name and offsets, others appended).
fn add_files(acc: &mut Vec<InstrumentedFile>, files: &[InstrumentedFile]) {
    for f in files {
        match acc
            .iter_mut()
            .find(|a| a.name == f.name && a.points == f.points)
        {
            Some(a) => {
                for (x, y) in a.counts.iter_mut().zip(&f.counts) {
                    *x = x.saturating_add(*y);
                }
            }
            None => acc.push(f.clone()),
        }
    }
}

impl BisectUnit {
    pub fn new(roots: SourceRoots) -> Self {
        Self {
            roots,
            latest: BTreeMap::new(),
            closed: Vec::new(),
            resets: 0,
            sources: HashMap::new(),
            untold: Vec::new(),
            steps: 0,
        }
    }

    /// Another candidate root (a process's working directory, learned late). Names not found
    /// so far are looked for again.
    pub fn add_root(&mut self, dir: &Path, origin: &str) {
        let before = self.roots.roots().len();
        self.roots.push_with_parents(dir, origin);
        if self.roots.roots().len() != before {
            self.sources.retain(|_, s| s.is_ok());
        }
    }

    /// Take in a dump of a process instance (a parsed `.coverage` file): it is that process's
    /// coverage now. A point counted lower than in its previous dump means the program reset
    /// its counters in between: the previous dump closes a segment and stays counted. Returns
    /// whether a reset was seen.
    pub fn add(&mut self, instance: Instance, files: Vec<InstrumentedFile>) -> bool {
        self.steps += 1;
        let reset = self
            .latest
            .get(&instance)
            .is_some_and(|prev| lower_than(&files, prev));
        if reset && let Some(prev) = self.latest.remove(&instance) {
            add_files(&mut self.closed, &prev);
            self.resets += 1;
        }
        self.latest.insert(instance, files);
        reset
    }

    /// What bisect-ppx-report may be given: each process's latest dump with only the files
    /// whose source was found (the names are the target's: bisect-ppx-report, run as root, must
    /// not look up a name covobs did not check), and those sources by recorded name.
    pub fn vetted(&self) -> (Vec<Vec<InstrumentedFile>>, BTreeMap<String, PathBuf>) {
        let sources: BTreeMap<String, PathBuf> = self
            .sources
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.as_ref().ok()?.path.clone())))
            .collect();
        let dumps = std::iter::once(&self.closed)
            .chain(self.latest.values())
            .map(|files| {
                files
                    .iter()
                    .filter(|f| sources.contains_key(&f.name))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|files| !files.is_empty())
            .collect();
        (dumps, sources)
    }

    /// Names whose source was not found (each told once), with the reason.
    pub fn take_unresolved(&mut self) -> Vec<String> {
        std::mem::take(&mut self.untold)
            .into_iter()
            .filter_map(|n| self.sources.get(&n).and_then(|s| s.clone().err()))
            .collect()
    }

    fn source(&mut self, name: &str, max_offset: Option<u64>) -> Result<Source, String> {
        if let Some(s) = self.sources.get(name) {
            return s.clone();
        }
        let s = self.roots.resolve(name, max_offset);
        if s.is_err() {
            self.untold.push(name.to_string());
        }
        self.sources.insert(name.to_string(), s.clone());
        s
    }

    /// The module's coverage now: per recorded file, the points of each process's latest dump
    /// added up (bisect-ppx-report's merge: point i with point i), lines from the source. A file
    /// whose source is not found keeps its recorded name and has points but no lines.
    pub fn coverage(&mut self) -> Coverage {
        let mut merged: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for files in std::iter::once(&self.closed).chain(self.latest.values()) {
            for f in files {
                let e = merged
                    .entry(f.name.clone())
                    .or_insert_with(|| (f.points.clone(), vec![0; f.counts.len()]));
                if e.1.len() < f.counts.len() {
                    e.0.clone_from(&f.points);
                    e.1.resize(f.counts.len(), 0);
                }
                for (sum, c) in e.1.iter_mut().zip(&f.counts) {
                    *sum = sum.saturating_add(*c);
                }
            }
        }
        let mut cov = Coverage::default();
        for (name, (offsets, counts)) in merged {
            let points: Vec<Point> = offsets
                .iter()
                .zip(&counts)
                .map(|(&offset, &hits)| Point { offset, hits })
                .collect();
            let max = offsets.iter().copied().max();
            let (path, lines) = match self.source(&name, max) {
                Ok(s) => (
                    s.path.to_string_lossy().into_owned(),
                    line_counts(&s.index, &points),
                ),
                Err(_) => (name.clone(), BTreeMap::new()),
            };
            let mut f = FileCoverage::new(path.clone());
            f.lines = lines;
            f.points = points;
            match cov.files.get_mut(&path) {
                Some(existing) => existing.merge(&f),
                None => {
                    cov.files.insert(path, f);
                }
            }
        }
        cov
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Counts;

    const DATA: &[u8] = b"BISECT-COVERAGE-4 2 4 a.ml 3 10 20 30 3 1 0 4 8 dir/b.ml 1 7 1 0";

    #[test]
    fn parses_a_coverage_file() {
        let files = parse(DATA).expect("parse");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "a.ml");
        assert_eq!(files[0].points, [10, 20, 30]);
        assert_eq!(files[0].counts, [1, 0, 4]);
        assert_eq!(files[1].name, "dir/b.ml");
        assert_eq!(files[1].counts, [0]);
        assert_eq!(parse(b"BISECT-COVERAGE-4 0\n").expect("empty"), []);
        // What covobs writes reads back the same, byte for byte.
        assert_eq!(write(&files), DATA);
        // A name with spaces is length-prefixed, not split.
        let f = parse(b"BISECT-COVERAGE-4 1 6 a b.ml 1 0 1 2").expect("spaces");
        assert_eq!(f[0].name, "a b.ml");
    }

    #[test]
    fn refuses_damaged_files() {
        for cut in [18, 25, 40, DATA.len() - 2] {
            assert!(parse(&DATA[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse(b"BISECT-COVERAGE-3 0").is_err());
        assert!(parse(b"BISECT-COVERAGE-4 0 x").is_err());
        assert!(parse(b"BISECT-COVERAGE-4 1 1 a 2 1 2 1 0").is_err());
        assert!(parse(b"BISECT-COVERAGE-4 1 1 a 1 -5 1 0").is_err());
        assert!(parse(b"BISECT-COVERAGE-4 99999999999 1 a").is_err());
    }

    #[test]
    fn offsets_to_lines() {
        // Lines: "ab\n" [0,3), "\n" [3,4), "cd" [4,6) without a final newline.
        let idx = LineIndex::new(b"ab\n\ncd");
        assert_eq!(idx.line_of(0), Some(1));
        assert_eq!(idx.line_of(2), Some(1)); // the newline belongs to its line
        assert_eq!(idx.line_of(3), Some(2));
        assert_eq!(idx.line_of(4), Some(3));
        assert_eq!(idx.line_of(5), Some(3));
        assert_eq!(idx.line_of(6), None);
        let idx = LineIndex::new(b"x\ny\n");
        assert_eq!(idx.line_of(3), Some(2));
        assert_eq!(idx.line_of(4), None);
        assert!(LineIndex::new(b"").is_empty());
        assert_eq!(LineIndex::new(b"").line_of(0), None);
    }

    #[test]
    fn a_line_counts_its_least_hit_point() {
        let idx = LineIndex::new(b"let f x =\n  if x then 1\n  else 2\n");
        let p = |offset, hits| Point { offset, hits };
        // Points unsorted, as bisect writes them; one past the end is dropped.
        let lines = line_counts(&idx, &[p(25, 0), p(12, 5), p(0, 5), p(15, 3), p(999, 7)]);
        assert_eq!(lines, BTreeMap::from([(1, 5), (2, 3), (3, 0)]));
    }

    fn unit_in(dir: &Path) -> BisectUnit {
        let mut roots = SourceRoots::default();
        roots.push(&dir.join("elsewhere"), "test");
        roots.push(dir, "test");
        BisectUnit::new(roots)
    }

    #[test]
    fn processes_latest_dumps_add_up_and_lines_come_from_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("src")).expect("mkdir");
        let src = dir.path().join("src/m.ml");
        fs::write(&src, "let a = 1\nlet b = 2\nlet c = 3\n").expect("write");
        let mut u = unit_in(dir.path());
        let file = |counts: [u64; 3]| InstrumentedFile {
            name: "src/m.ml".into(),
            points: vec![4, 14, 24],
            counts: counts.to_vec(),
        };
        let pid = |pid| Instance { pid, start: None };
        // Process 1 dumps twice: the second dump replaces the first (cumulative counts).
        assert!(!u.add(pid(1), vec![file([1, 0, 0])]));
        assert!(!u.add(pid(1), vec![file([3, 0, 0])]));
        let c = u.coverage();
        let f = &c.files[&src.to_string_lossy().into_owned()];
        assert_eq!(f.lines, BTreeMap::from([(1, 3), (2, 0), (3, 0)]));
        assert_eq!(f.totals().points, Some(Counts::new(1, 3)));
        // Process 2 (a restart): its latest dump adds to process 1's.
        u.add(pid(2), vec![file([2, 5, 0])]);
        let c = u.coverage();
        let f = &c.files[&src.to_string_lossy().into_owned()];
        assert_eq!(f.lines, BTreeMap::from([(1, 5), (2, 5), (3, 0)]));
        assert_eq!(f.totals().points, Some(Counts::new(2, 3)));
        assert_eq!(f.totals().lines, Counts::new(2, 3));
        let (dumps, sources) = u.vetted();
        assert_eq!(dumps.len(), 2);
        assert_eq!(dumps[0][0].counts, [3, 0, 0]);
        assert_eq!(
            sources,
            BTreeMap::from([("src/m.ml".to_string(), src.clone())])
        );
        assert!(u.take_unresolved().is_empty());
        // Process 2 resets its counters, then counts one more: its earlier dump stays counted.
        assert!(u.add(pid(2), vec![file([0, 1, 0])]));
        let c = u.coverage();
        let f = &c.files[&src.to_string_lossy().into_owned()];
        assert_eq!(f.lines, BTreeMap::from([(1, 5), (2, 6), (3, 0)]));
        assert_eq!(u.resets, 1);
        let (dumps, _) = u.vetted();
        assert_eq!(
            dumps.len(),
            3,
            "the closed segment is given to bisect-ppx-report too"
        );
    }

    #[test]
    fn missing_or_mismatched_sources_keep_points_without_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("short.ml"), "x\n").expect("write");
        let mut u = unit_in(dir.path());
        u.add(
            Instance {
                pid: 7,
                start: None,
            },
            vec![
                InstrumentedFile {
                    name: "gone.ml".into(),
                    points: vec![0],
                    counts: vec![1],
                },
                // Points past the end: not the file that was instrumented.
                InstrumentedFile {
                    name: "short.ml".into(),
                    points: vec![0, 50],
                    counts: vec![1, 1],
                },
                InstrumentedFile {
                    name: "../etc/passwd".into(),
                    points: vec![0],
                    counts: vec![1],
                },
            ],
        );
        let c = u.coverage();
        // Only checked names go to bisect-ppx-report.
        assert_eq!(u.vetted(), (Vec::new(), BTreeMap::new()));
        assert!(c.files["gone.ml"].lines.is_empty());
        assert_eq!(c.files["gone.ml"].totals().points, Some(Counts::new(1, 1)));
        assert!(c.files["short.ml"].lines.is_empty());
        assert!(c.files["../etc/passwd"].lines.is_empty());
        let why = u.take_unresolved();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why.iter().any(|w| w.contains("another version")), "{why:?}");
        assert!(
            why.iter().any(|w| w.contains("not a source path")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .filter(|w| w.starts_with("gone.ml"))
                .all(|w| w.contains("--source-path")),
            "{why:?}"
        );
        // Told once.
        u.coverage();
        assert!(u.take_unresolved().is_empty());
        // A root learned later finds it.
        fs::create_dir_all(dir.path().join("late")).expect("mkdir");
        fs::write(dir.path().join("late/gone.ml"), "y\n").expect("write");
        u.add_root(&dir.path().join("late"), "cwd");
        let c = u.coverage();
        let p = dir
            .path()
            .join("late/gone.ml")
            .to_string_lossy()
            .into_owned();
        assert_eq!(c.files[&p].lines, BTreeMap::from([(1, 1)]));
    }
}
