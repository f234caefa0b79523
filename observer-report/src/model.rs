//! The common coverage model every runtime's data is turned into: source files, their lines with
//! hit counts, their functions with hit counts, their branches. LLVM coverage arrives as LCOV
//! from `llvm-cov export`, gcov coverage as gcov's JSON ([`super::gcov`]), bisect_ppx coverage
//! as instrumentation points turned into lines with the sources ([`super::bisect`]); kernel
//! (kcov) coverage joins the same model later, so there is one coverage.lcov, one summary and one
//! HTML report per session.
use std::collections::{BTreeMap, btree_map::Entry};

use serde::{Serialize, Serializer, ser::SerializeStruct};

/// `hit` of `total` items (lines, functions, branches or regions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub hit: u64,
    pub total: u64,
}

impl Counts {
    pub const fn new(hit: u64, total: u64) -> Self {
        Self { hit, total }
    }

    /// Percentage covered; `None` when there is nothing to cover.
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| self.hit as f64 * 100.0 / self.total as f64)
    }

    pub fn add(&mut self, other: Counts) {
        self.hit += other.hit;
        self.total += other.total;
    }

    /// "63.2%" or "-" when there is nothing to cover.
    pub fn percent_text(&self) -> String {
        match self.percent() {
            Some(p) => format!("{}%", format_percent(p)),
            None => "-".to_string(),
        }
    }
}

/// One decimal, but never rounds a partial coverage up to 100.0 or down to 0.0.
pub fn format_percent(p: f64) -> String {
    let s = format!("{p:.1}");
    if s == "100.0" && p < 100.0 {
        "99.9".to_string()
    } else if s == "0.0" && p > 0.0 {
        "0.1".to_string()
    } else {
        s
    }
}

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Counts", 3)?;
        st.serialize_field("hit", &self.hit)?;
        st.serialize_field("total", &self.total)?;
        st.serialize_field("percent", &self.percent())?;
        st.end()
    }
}

/// Coverage figures of a file, a module, a language or the whole session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub lines: Counts,
    pub functions: Counts,
    pub branches: Counts,
    /// Code regions: only LLVM source-based coverage knows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Counts>,
    /// Instrumentation points: only bisect_ppx (OCaml) knows them; they are what
    /// `bisect-ppx-report summary` counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Counts>,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.lines.add(other.lines);
        self.functions.add(other.functions);
        self.branches.add(other.branches);
        if let Some(r) = other.regions {
            self.regions.get_or_insert_with(Counts::default).add(r);
        }
        if let Some(p) = other.points {
            self.points.get_or_insert_with(Counts::default).add(p);
        }
    }

    /// "lines 63.2%" (functions when there are no lines): the one figure of a progress line.
    pub fn headline(&self) -> String {
        if self.lines.total == 0 && self.functions.total > 0 {
            format!("functions {}", self.functions.percent_text())
        } else {
            format!("lines {}", self.lines.percent_text())
        }
    }

    /// "lines 63.2% (120/190), functions 70.0% (7/10), ..." for progress lines and the CLI.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            describe_one("lines", self.lines),
            describe_one("functions", self.functions),
            describe_one("branches", self.branches),
        ];
        if let Some(r) = self.regions {
            parts.push(describe_one("regions", r));
        }
        if let Some(p) = self.points {
            parts.push(describe_one("points", p));
        }
        parts.join(", ")
    }
}

fn describe_one(what: &str, c: Counts) -> String {
    format!("{what} {} ({}/{})", c.percent_text(), c.hit, c.total)
}

/// A function of a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// As the producer names it (LLVM: the mangled name; C statics as `file.c:name`).
    pub name: String,
    pub line: u32,
    pub end_line: Option<u32>,
    pub hits: u64,
}

/// One branch outcome. `block` and `branch` are kept as text: LCOV producers put numbers there
/// (llvm-cov, geninfo) and newer lcov puts expressions there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    pub line: u32,
    pub block: String,
    pub branch: String,
    /// `None`: the condition was never evaluated (LCOV's `-`).
    pub taken: Option<u64>,
}

/// The figures a producer declared itself for a file (LCOV's FNF/FNH, LF/LH, BRF/BRH). llvm-cov's
/// own counting can differ from the records (LLVM 23 counts a line once per function group that
/// covers it, and functions once per group of instantiations); they are kept so the report agrees
/// with llvm-cov, and dropped as soon as records from two sources are merged into one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    pub functions: Option<Counts>,
    pub lines: Option<Counts>,
    pub branches: Option<Counts>,
}

/// A bisect_ppx instrumentation point: a byte offset into the source file, and its hit count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub offset: u64,
    pub hits: u64,
}

/// Coverage of one source file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCoverage {
    pub path: String,
    /// Line number -> hit count, for the lines that carry code.
    pub lines: BTreeMap<u32, u64>,
    /// In the producer's order.
    pub functions: Vec<Function>,
    /// In the producer's order.
    pub branches: Vec<Branch>,
    /// bisect_ppx points, in the producer's order (empty for every other runtime).
    pub points: Vec<Point>,
    pub declared: Declared,
}

impl FileCoverage {
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Figures counted from the records.
    pub fn computed(&self) -> Totals {
        let mut seen = BTreeMap::<&str, bool>::new();
        for f in &self.functions {
            *seen.entry(&f.name).or_default() |= f.hits > 0;
        }
        Totals {
            lines: Counts::new(
                self.lines.values().filter(|&&h| h > 0).count() as u64,
                self.lines.len() as u64,
            ),
            functions: Counts::new(
                seen.values().filter(|&&h| h).count() as u64,
                seen.len() as u64,
            ),
            branches: Counts::new(
                self.branches
                    .iter()
                    .filter(|b| b.taken.unwrap_or(0) > 0)
                    .count() as u64,
                self.branches.len() as u64,
            ),
            regions: None,
            points: (!self.points.is_empty()).then(|| {
                Counts::new(
                    self.points.iter().filter(|p| p.hits > 0).count() as u64,
                    self.points.len() as u64,
                )
            }),
        }
    }

    /// The figures of this file: what the producer declared where it did, counted otherwise.
    pub fn totals(&self) -> Totals {
        let c = self.computed();
        Totals {
            lines: self.declared.lines.unwrap_or(c.lines),
            functions: self.declared.functions.unwrap_or(c.functions),
            branches: self.declared.branches.unwrap_or(c.branches),
            regions: None,
            points: c.points,
        }
    }

    /// Add another source's coverage of the same file: hit counts add up (saturating: counts come
    /// from the target's memory), items present in either
    /// are present in the result. The declared figures no longer apply.
    pub fn merge(&mut self, other: &FileCoverage) {
        for (&line, &hits) in &other.lines {
            let sum = self.lines.entry(line).or_default();
            *sum = sum.saturating_add(hits);
        }
        let mut by_name: BTreeMap<String, usize> = self
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        for f in &other.functions {
            match by_name.entry(f.name.clone()) {
                Entry::Occupied(e) => {
                    let mine = &mut self.functions[*e.get()];
                    mine.hits = mine.hits.saturating_add(f.hits);
                    mine.line = mine.line.min(f.line);
                }
                Entry::Vacant(e) => {
                    e.insert(self.functions.len());
                    self.functions.push(f.clone());
                }
            }
        }
        let mut by_key: BTreeMap<(u32, String, String), usize> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| ((b.line, b.block.clone(), b.branch.clone()), i))
            .collect();
        for b in &other.branches {
            match by_key.entry((b.line, b.block.clone(), b.branch.clone())) {
                Entry::Occupied(e) => {
                    let mine = &mut self.branches[*e.get()];
                    mine.taken = match (mine.taken, b.taken) {
                        (None, None) => None,
                        (x, y) => Some(x.unwrap_or(0).saturating_add(y.unwrap_or(0))),
                    };
                }
                Entry::Vacant(e) => {
                    e.insert(self.branches.len());
                    self.branches.push(b.clone());
                }
            }
        }
        merge_points(&mut self.points, &other.points);
        self.branches.sort_by(|a, b| {
            (a.line, branch_key(&a.block), branch_key(&a.branch)).cmp(&(
                b.line,
                branch_key(&b.block),
                branch_key(&b.branch),
            ))
        });
        self.declared = Declared::default();
    }

    /// Per line: (branches taken, branches), for the HTML gutter.
    pub fn branches_by_line(&self) -> BTreeMap<u32, Counts> {
        let mut m = BTreeMap::<u32, Counts>::new();
        for b in &self.branches {
            let c = m.entry(b.line).or_default();
            c.total += 1;
            if b.taken.unwrap_or(0) > 0 {
                c.hit += 1;
            }
        }
        m
    }
}

/// Add `other`'s points to `mine`: the n-th point at an offset is the same point in both (bisect
/// may put several points at one offset); hits add up, points only in `other` are appended.
fn merge_points(mine: &mut Vec<Point>, other: &[Point]) {
    let mut index: BTreeMap<(u64, usize), usize> = BTreeMap::new();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, p) in mine.iter().enumerate() {
        let n = seen.entry(p.offset).or_default();
        index.insert((p.offset, *n), i);
        *n += 1;
    }
    let mut nth: BTreeMap<u64, usize> = BTreeMap::new();
    for p in other {
        let n = nth.entry(p.offset).or_default();
        match index.get(&(p.offset, *n)) {
            Some(&i) => mine[i].hits = mine[i].hits.saturating_add(p.hits),
            None => mine.push(*p),
        }
        *n += 1;
    }
}

/// Numeric block/branch ids sort as numbers, anything else after them as text.
fn branch_key(s: &str) -> (u64, &str) {
    match s.parse::<u64>() {
        Ok(n) => (n, ""),
        Err(_) => (u64::MAX, s),
    }
}

/// Coverage of many files, keyed by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub files: BTreeMap<String, FileCoverage>,
}

impl Coverage {
    /// Add another coverage: files only in one are kept as they are, files in both are merged.
    pub fn merge(&mut self, other: &Coverage) {
        for (path, f) in &other.files {
            match self.files.get_mut(path) {
                Some(mine) => mine.merge(f),
                None => {
                    self.files.insert(path.clone(), f.clone());
                }
            }
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for f in self.files.values() {
            t.add(&f.totals());
        }
        t
    }
}

/// The language of a source file, from its name (for grouping in the summary and the HTML).
pub fn language_of(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "rs" => "Rust",
        "c" => "C",
        "h" => "C/C++ header",
        "cc" | "cpp" | "cxx" | "c++" | "C" => "C++",
        "hh" | "hpp" | "hxx" | "h++" | "inc" => "C/C++ header",
        "ml" | "mli" | "mll" | "mly" => "OCaml",
        "m" => "Objective-C",
        "mm" => "Objective-C++",
        "swift" => "Swift",
        "zig" => "Zig",
        "go" => "Go",
        "S" | "s" => "Assembly",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[(u32, u64)]) -> FileCoverage {
        let mut f = FileCoverage::new("/src/a.c");
        f.lines = lines.iter().copied().collect();
        f
    }

    #[test]
    fn counts_and_percent() {
        assert_eq!(Counts::new(0, 0).percent(), None);
        assert_eq!(Counts::new(1, 4).percent(), Some(25.0));
        assert_eq!(Counts::new(1, 4).percent_text(), "25.0%");
        assert_eq!(Counts::new(0, 0).percent_text(), "-");
        // Never shows 100% for partial coverage, nor 0% for some.
        assert_eq!(Counts::new(9999, 10000).percent_text(), "99.9%");
        assert_eq!(Counts::new(1, 10000).percent_text(), "0.1%");
        let j = serde_json::to_value(Counts::new(1, 2)).expect("json");
        assert_eq!(j["percent"], 50.0);
        let j = serde_json::to_value(Counts::new(0, 0)).expect("json");
        assert!(j["percent"].is_null());
    }

    #[test]
    fn computed_totals() {
        let mut f = file(&[(1, 0), (2, 3), (3, 1)]);
        f.functions = vec![
            Function {
                name: "a".into(),
                line: 1,
                end_line: None,
                hits: 0,
            },
            Function {
                name: "b".into(),
                line: 2,
                end_line: None,
                hits: 2,
            },
            // A second record with the same name counts once, hit if any record is.
            Function {
                name: "a".into(),
                line: 1,
                end_line: None,
                hits: 1,
            },
        ];
        f.branches = vec![
            Branch {
                line: 2,
                block: "0".into(),
                branch: "0".into(),
                taken: Some(1),
            },
            Branch {
                line: 2,
                block: "0".into(),
                branch: "1".into(),
                taken: Some(0),
            },
            Branch {
                line: 2,
                block: "1".into(),
                branch: "2".into(),
                taken: None,
            },
        ];
        let t = f.computed();
        assert_eq!(t.lines, Counts::new(2, 3));
        assert_eq!(t.functions, Counts::new(2, 2));
        assert_eq!(t.branches, Counts::new(1, 3));
        assert_eq!(f.branches_by_line()[&2], Counts::new(1, 3));
        // Declared figures win where present.
        f.declared.lines = Some(Counts::new(4, 5));
        assert_eq!(f.totals().lines, Counts::new(4, 5));
        assert_eq!(f.totals().branches, Counts::new(1, 3));
    }

    #[test]
    fn merge_is_a_union_with_summed_counts() {
        let mut a = file(&[(1, 0), (2, 3)]);
        a.declared.lines = Some(Counts::new(1, 2));
        a.functions.push(Function {
            name: "f".into(),
            line: 2,
            end_line: None,
            hits: 0,
        });
        a.branches.push(Branch {
            line: 2,
            block: "0".into(),
            branch: "1".into(),
            taken: None,
        });
        let mut b = file(&[(1, 5), (7, 0)]);
        b.functions.push(Function {
            name: "f".into(),
            line: 2,
            end_line: None,
            hits: 4,
        });
        b.functions.push(Function {
            name: "g".into(),
            line: 7,
            end_line: None,
            hits: 0,
        });
        b.branches.push(Branch {
            line: 2,
            block: "0".into(),
            branch: "1".into(),
            taken: Some(2),
        });
        b.branches.push(Branch {
            line: 2,
            block: "0".into(),
            branch: "0".into(),
            taken: None,
        });
        a.merge(&b);
        assert_eq!(a.lines, BTreeMap::from([(1, 5), (2, 3), (7, 0)]));
        assert_eq!(a.declared, Declared::default());
        let t = a.totals();
        assert_eq!(t.lines, Counts::new(2, 3));
        assert_eq!(t.functions, Counts::new(1, 2));
        assert_eq!(t.branches, Counts::new(1, 2));
        // Branches end up in line/block/branch order.
        assert_eq!(a.branches[0].branch, "0");
        assert_eq!(a.branches[1].taken, Some(2));
    }

    #[test]
    fn totals_add_regions_only_where_known() {
        let mut t = Totals::default();
        t.add(&Totals {
            lines: Counts::new(1, 2),
            ..Totals::default()
        });
        assert_eq!(t.regions, None);
        t.add(&Totals {
            regions: Some(Counts::new(3, 4)),
            ..Totals::default()
        });
        assert_eq!(t.regions, Some(Counts::new(3, 4)));
        assert_eq!(t.lines, Counts::new(1, 2));
        assert!(t.describe().starts_with("lines 50.0% (1/2)"));
        assert_eq!(t.headline(), "lines 50.0%");
    }

    #[test]
    fn languages() {
        assert_eq!(language_of("/a/b/main.rs"), "Rust");
        assert_eq!(language_of("x.c"), "C");
        assert_eq!(language_of("fixtures/m/ocaml/mempool.ml"), "OCaml");
        assert_eq!(language_of("/usr/include/stdio.h"), "C/C++ header");
        assert_eq!(language_of("Makefile"), "other");
    }
}
