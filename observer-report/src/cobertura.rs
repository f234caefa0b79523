//! Cobertura XML (coverage-04.dtd), as CI systems read it: one package per source directory,
//! one class per source file, its functions as methods, its lines with hits and branch
//! condition coverage.
use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    html::escape,
    model::{Counts, FileCoverage},
    summary::ReportData,
};

fn rate(c: Counts) -> String {
    match c.percent() {
        Some(p) => format!("{:.4}", p / 100.0),
        // Nothing to cover: fully covered, as Cobertura tools expect.
        None => "1".to_string(),
    }
}

/// The longest directory prefix shared by all paths ("/" when none).
fn common_dir<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut prefix: Option<Vec<&str>> = None;
    for p in paths {
        let dirs: Vec<&str> = match p.rsplit_once('/') {
            Some((d, _)) => d.split('/').collect(),
            None => Vec::new(),
        };
        prefix = Some(match prefix {
            None => dirs,
            Some(cur) => cur
                .iter()
                .zip(dirs.iter())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let joined = prefix.unwrap_or_default().join("/");
    if joined.is_empty() {
        "/".to_string()
    } else {
        joined
    }
}

fn relative<'a>(path: &'a str, base: &str) -> &'a str {
    if base == "/" {
        return path.strip_prefix('/').unwrap_or(path);
    }
    path.strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(path)
}

/// The Cobertura document for a report.
pub fn write(d: &ReportData) -> String {
    let files: Vec<&FileCoverage> = d.coverage.files.values().collect();
    let base = common_dir(files.iter().map(|f| f.path.as_str()));
    let mut packages: BTreeMap<String, Vec<&FileCoverage>> = BTreeMap::new();
    for f in &files {
        let rel = relative(&f.path, &base);
        let pkg = rel
            .rsplit_once('/')
            .map(|(d, _)| d.replace('/', "."))
            .unwrap_or_default();
        packages.entry(pkg).or_default().push(f);
    }
    let mut total_lines = Counts::default();
    let mut total_branches = Counts::default();
    for f in &files {
        let c = f.computed();
        total_lines.add(c.lines);
        total_branches.add(c.branches);
    }
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<coverage line-rate=\"{}\" branch-rate=\"{}\" lines-covered=\"{}\" lines-valid=\"{}\" \
         branches-covered=\"{}\" branches-valid=\"{}\" complexity=\"0\" version=\"covobs {}\" timestamp=\"{}\">",
        rate(total_lines),
        rate(total_branches),
        total_lines.hit,
        total_lines.total,
        total_branches.hit,
        total_branches.total,
        env!("CARGO_PKG_VERSION"),
        d.generated_unix_ns / 1_000_000,
    );
    let _ = writeln!(
        out,
        "  <sources>\n    <source>{}</source>\n  </sources>",
        escape(&base)
    );
    out.push_str("  <packages>\n");
    for (pkg, files) in &packages {
        let mut l = Counts::default();
        let mut b = Counts::default();
        for f in files {
            let c = f.computed();
            l.add(c.lines);
            b.add(c.branches);
        }
        let _ = writeln!(
            out,
            "    <package name=\"{}\" line-rate=\"{}\" branch-rate=\"{}\" complexity=\"0\">\n      <classes>",
            escape(pkg),
            rate(l),
            rate(b)
        );
        for f in files {
            write_class(&mut out, f, relative(&f.path, &base));
        }
        out.push_str("      </classes>\n    </package>\n");
    }
    out.push_str("  </packages>\n</coverage>\n");
    out
}

fn write_class(out: &mut String, f: &FileCoverage, rel: &str) {
    let c = f.computed();
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let _ = writeln!(
        out,
        "        <class name=\"{}\" filename=\"{}\" line-rate=\"{}\" branch-rate=\"{}\" complexity=\"0\">",
        escape(name),
        escape(rel),
        rate(c.lines),
        rate(c.branches)
    );
    out.push_str("          <methods>\n");
    let branches = f.branches_by_line();
    // A method's lines: from its first line to the next function's first line.
    let mut starts: Vec<u32> = f.functions.iter().map(|x| x.line).collect();
    starts.sort_unstable();
    starts.dedup();
    for func in &f.functions {
        let end = func.end_line.map(|e| e + 1).unwrap_or_else(|| {
            starts
                .iter()
                .copied()
                .find(|&s| s > func.line)
                .unwrap_or(u32::MAX)
        });
        let lines: Vec<(u32, u64)> = f
            .lines
            .range(func.line..end)
            .map(|(&l, &h)| (l, h))
            .collect();
        let lc = Counts::new(
            lines.iter().filter(|(_, h)| *h > 0).count() as u64,
            lines.len() as u64,
        );
        let _ = writeln!(
            out,
            "            <method name=\"{}\" signature=\"\" line-rate=\"{}\" branch-rate=\"1\" complexity=\"0\" hits=\"{}\">",
            escape(&func.name),
            rate(lc),
            func.hits
        );
        out.push_str("              <lines>\n");
        let _ = writeln!(
            out,
            "                <line number=\"{}\" hits=\"{}\"/>",
            func.line, func.hits
        );
        out.push_str("              </lines>\n            </method>\n");
    }
    out.push_str("          </methods>\n          <lines>\n");
    for (&line, &hits) in &f.lines {
        match branches.get(&line) {
            Some(b) if b.total > 0 => {
                let pct = b.hit * 100 / b.total;
                let _ = writeln!(
                    out,
                    "            <line number=\"{line}\" hits=\"{hits}\" branch=\"true\" condition-coverage=\"{pct}% ({}/{})\"/>",
                    b.hit, b.total
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "            <line number=\"{line}\" hits=\"{hits}\" branch=\"false\"/>"
                );
            }
        }
    }
    out.push_str("          </lines>\n        </class>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_directory() {
        assert_eq!(
            common_dir(["/src/a/x.c", "/src/a/b/y.c"].into_iter()),
            "/src/a"
        );
        assert_eq!(common_dir(["/a/x.c", "/b/y.c"].into_iter()), "/");
        assert_eq!(common_dir(["/a/x.c"].into_iter()), "/a");
        assert_eq!(relative("/src/a/b/y.c", "/src/a"), "b/y.c");
        assert_eq!(relative("/b/y.c", "/"), "b/y.c");
        assert_eq!(rate(Counts::new(1, 4)), "0.2500");
        assert_eq!(rate(Counts::new(0, 0)), "1");
    }
}
