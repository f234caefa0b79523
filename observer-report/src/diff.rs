//! `covobs diff`: what one coverage reached that another did not, and the reverse - two
//! sessions (their report's coverage.lcov, reported first when there is none), or two labels of
//! one session (docs/labels.md). Files, functions and lines, newly covered and no longer covered.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{ReportOptions, labels, model::Coverage};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(
        "{old} and {new} share no source file: they are not coverage of the same program (diff compares two sessions, or two labels, of one program)"
    )]
    Unrelated { old: String, new: String },
    #[error("{0}")]
    Report(#[from] super::ReportError),
    #[error("{0}")]
    Labels(#[from] labels::LabelError),
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
}

impl DiffError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Unrelated { .. } => true,
            Self::Report(e) => e.is_bad_input(),
            Self::Labels(e) => e.is_bad_input(),
            Self::Read { .. } => false,
        }
    }
}

/// A function, by file and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FunctionRef {
    pub file: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub files: Vec<String>,
    pub functions: Vec<FunctionRef>,
    /// file -> lines.
    pub lines: BTreeMap<String, Vec<u32>>,
}

impl Changes {
    pub fn line_count(&self) -> usize {
        self.lines.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.functions.is_empty() && self.lines.is_empty()
    }
}

/// The difference between two coverages.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub old: String,
    pub new: String,
    /// Reached in NEW and not in OLD.
    pub newly_covered: Changes,
    /// Reached in OLD and not in NEW.
    pub no_longer_covered: Changes,
}

impl Diff {
    pub fn lost(&self) -> bool {
        !self.no_longer_covered.is_empty()
    }

    /// The text form: counts, then each change (`+` newly covered, `-` no longer covered).
    pub fn render(&self) -> String {
        let (n, l) = (&self.newly_covered, &self.no_longer_covered);
        let mut s = format!(
            "covobs diff {} -> {}\n  lines: +{} -{}, functions: +{} -{}, files: +{} -{}\n",
            self.old,
            self.new,
            n.line_count(),
            l.line_count(),
            n.functions.len(),
            l.functions.len(),
            n.files.len(),
            l.files.len()
        );
        for (sign, c) in [('+', n), ('-', l)] {
            for f in &c.files {
                s.push_str(&format!("{sign} file {f}\n"));
            }
            for f in &c.functions {
                s.push_str(&format!("{sign} function {} ({})\n", f.name, f.file));
            }
            for (f, lines) in &c.lines {
                s.push_str(&format!("{sign} lines {f}:{}\n", ranges(lines)));
            }
        }
        s
    }
}

impl Diff {
    /// The HTML form: one static page (the report's style), newly covered then no longer
    /// covered.
    pub fn html(&self) -> String {
        use super::html::escape;
        let (n, l) = (&self.newly_covered, &self.no_longer_covered);
        let mut b = format!(
            "<header><h1>Coverage diff</h1><p class=\"sub\"><code>{}</code> &rarr; <code>{}</code></p></header>\
             <table><tr><th></th><th class=\"num\">newly covered</th><th class=\"num\">no longer covered</th></tr>\
             <tr><td>lines</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
             <tr><td>functions</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
             <tr><td>files</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>",
            escape(&self.old),
            escape(&self.new),
            n.line_count(),
            l.line_count(),
            n.functions.len(),
            l.functions.len(),
            n.files.len(),
            l.files.len()
        );
        for (title, c) in [("Newly covered", n), ("No longer covered", l)] {
            b.push_str(&format!("<h2>{title}</h2>"));
            if c.is_empty() {
                b.push_str("<p>nothing</p>");
                continue;
            }
            b.push_str("<table><tr><th>File</th><th>Lines</th><th>Functions</th></tr>");
            let mut files: BTreeSet<&str> = c.lines.keys().map(String::as_str).collect();
            files.extend(c.functions.iter().map(|f| f.file.as_str()));
            files.extend(c.files.iter().map(String::as_str));
            for f in files {
                let lines = c.lines.get(f).map(|l| ranges(l)).unwrap_or_default();
                let funcs: Vec<String> = c
                    .functions
                    .iter()
                    .filter(|x| x.file == f)
                    .map(|x| escape(&super::html::display_name(&x.name)))
                    .collect();
                let whole = if c.files.iter().any(|x| x == f) {
                    " (whole file)"
                } else {
                    ""
                };
                b.push_str(&format!(
                    "<tr><td class=\"file\">{}{whole}</td><td class=\"file\">{}</td><td class=\"file\">{}</td></tr>",
                    escape(f),
                    escape(&lines),
                    funcs.join("<br>")
                ));
            }
            b.push_str("</table>");
        }
        super::html::page("Coverage diff", &b)
    }
}

/// 1,2,3,7 -> "1-3,7".
fn ranges(lines: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = lines[i];
        let mut end = start;
        while i + 1 < lines.len() && lines[i + 1] == end + 1 {
            i += 1;
            end = lines[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

struct Reached {
    files: BTreeSet<String>,
    covered_files: BTreeSet<String>,
    functions: BTreeSet<FunctionRef>,
    lines: BTreeSet<(String, u32)>,
}

fn reached(c: &Coverage) -> Reached {
    let mut r = Reached {
        files: BTreeSet::new(),
        covered_files: BTreeSet::new(),
        functions: BTreeSet::new(),
        lines: BTreeSet::new(),
    };
    for (path, f) in &c.files {
        r.files.insert(path.clone());
        for (&line, &hits) in &f.lines {
            if hits > 0 {
                r.lines.insert((path.clone(), line));
                r.covered_files.insert(path.clone());
            }
        }
        for func in f.functions.iter().filter(|x| x.hits > 0) {
            r.functions.insert(FunctionRef {
                file: path.clone(),
                name: func.name.clone(),
            });
        }
    }
    r
}

fn changes(from: &Reached, to: &Reached) -> Changes {
    let mut lines: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (f, l) in to.lines.difference(&from.lines) {
        lines.entry(f.clone()).or_default().push(*l);
    }
    Changes {
        files: to
            .covered_files
            .difference(&from.covered_files)
            .cloned()
            .collect(),
        functions: to.functions.difference(&from.functions).cloned().collect(),
        lines,
    }
}

/// The difference between two coverages (named for the output).
pub fn diff(old: (&str, &Coverage), new: (&str, &Coverage)) -> Result<Diff, DiffError> {
    let (a, b) = (reached(old.1), reached(new.1));
    if a.files.is_disjoint(&b.files) {
        return Err(DiffError::Unrelated {
            old: old.0.to_string(),
            new: new.0.to_string(),
        });
    }
    Ok(Diff {
        old: old.0.to_string(),
        new: new.0.to_string(),
        newly_covered: changes(&a, &b),
        no_longer_covered: changes(&b, &a),
    })
}

/// A session's coverage: its report's coverage.lcov, the report written first when it has none.
pub fn session_coverage(dir: &Path, opts: &ReportOptions) -> Result<Coverage, DiffError> {
    let lcov = dir.join("report").join("coverage.lcov");
    if !lcov.is_file() {
        super::session::Session::open(dir)?;
        super::generate(dir, opts)?;
    }
    let text = std::fs::read_to_string(&lcov).map_err(|e| DiffError::Read {
        path: lcov.clone(),
        message: e.to_string(),
    })?;
    Ok(super::lcov::parse(&text, &lcov.display().to_string())?)
}

/// Two sessions.
pub fn sessions(old: &Path, new: &Path, opts: &ReportOptions) -> Result<Diff, DiffError> {
    let a = session_coverage(old, opts)?;
    let b = session_coverage(new, opts)?;
    diff(
        (&old.display().to_string(), &a),
        (&new.display().to_string(), &b),
    )
}

/// Two labels of one session.
pub fn labels(dir: &Path, old: &str, new: &str, opts: &ReportOptions) -> Result<Diff, DiffError> {
    for n in [old, new] {
        labels::name::check(n).map_err(labels::LabelError::BadName)?;
    }
    let (_, a) = labels::read_session(dir, opts)?;
    let index = |n: &str| {
        a.index_of(n)
            .ok_or_else(|| labels::LabelError::UnknownLabel {
                name: n.to_string(),
                known: a.labels.len(),
            })
    };
    let (i, j) = (index(old)?, index(new)?);
    let ca =
        labels::analysis::label_coverage(&a, i, true, opts).map_err(labels::LabelError::Engine)?;
    let cb =
        labels::analysis::label_coverage(&a, j, true, opts).map_err(labels::LabelError::Engine)?;
    diff((old, &ca.coverage), (new, &cb.coverage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileCoverage, Function};

    /// A file: its path, (line, hits) and (function, hits).
    type File<'a> = (&'a str, &'a [(u32, u64)], &'a [(&'a str, u64)]);

    fn cov(files: &[File]) -> Coverage {
        let mut c = Coverage::default();
        for (path, lines, funcs) in files {
            let mut f = FileCoverage::new(*path);
            f.lines = lines.iter().copied().collect();
            f.functions = funcs
                .iter()
                .map(|(n, h)| Function {
                    name: n.to_string(),
                    line: 1,
                    end_line: None,
                    hits: *h,
                })
                .collect();
            c.files.insert(path.to_string(), f);
        }
        c
    }

    #[test]
    fn new_and_lost_lines_functions_and_files() {
        let old = cov(&[
            ("a.c", &[(1, 1), (2, 0), (3, 5)], &[("f", 1), ("g", 0)]),
            ("b.c", &[(1, 2)], &[("h", 2)]),
        ]);
        let new = cov(&[
            ("a.c", &[(1, 1), (2, 3), (3, 0)], &[("f", 1), ("g", 3)]),
            ("b.c", &[(1, 0)], &[("h", 0)]),
        ]);
        let d = diff(("old", &old), ("new", &new)).unwrap();
        assert_eq!(
            d.newly_covered.lines,
            BTreeMap::from([("a.c".into(), vec![2])])
        );
        assert_eq!(
            d.no_longer_covered.lines,
            BTreeMap::from([("a.c".into(), vec![3]), ("b.c".into(), vec![1])])
        );
        assert_eq!(d.newly_covered.functions.len(), 1);
        assert_eq!(d.no_longer_covered.files, vec!["b.c".to_string()]);
        assert!(d.lost());
        assert!(d.render().contains("- lines a.c:3\n"), "{}", d.render());
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
        let html = d.html();
        assert!(
            html.contains("<td class=\"file\">a.c</td><td class=\"file\">2</td>"),
            "{html}"
        );
        assert!(html.contains("b.c (whole file)"), "{html}");
        let other = cov(&[("z.c", &[(1, 1)], &[])]);
        assert!(matches!(
            diff(("old", &old), ("z", &other)),
            Err(DiffError::Unrelated { .. })
        ));
    }
}
