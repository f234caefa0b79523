//! gcov coverage (`gcc --coverage`) in the report.
//!
//! A gcov artifact is a directory: the .gcda files one dump wrote and the .gcno notes the
//! compiler left beside the objects. Each .gcda goes with its .gcno (same object: the longest
//! common path suffix, since `GCOV_PREFIX`/`GCOV_PREFIX_STRIP` move the .gcda but not the
//! .gcno) into a scratch directory, and `gcov -b --json-format --stdout` of the GCC that wrote
//! them (`gcov-<major>` from the .gcda version, else a `gcov` of that major) gives lines,
//! functions and branches per source file.
//!
//! libgcov merges on write: a .gcda holds the counts of every dump (and run) that wrote it. The
//! exact counts of a module come from the count model ([`super::gcov_tally`]), written back into
//! .gcda files that gcov then reads. .gcda files at different paths (other objects, other
//! `GCOV_PREFIX`es) add up, as `gcov`/lcov add them up.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use serde::Deserialize;

use super::{
    model::{Branch, Coverage, FileCoverage, Function},
    programs,
};

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    gcc_version: String,
    #[serde(default)]
    current_working_directory: String,
    #[serde(default)]
    data_file: String,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    file: String,
    #[serde(default)]
    functions: Vec<Func>,
    #[serde(default)]
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Func {
    name: String,
    #[serde(default)]
    demangled_name: Option<String>,
    start_line: u32,
    #[serde(default)]
    end_line: Option<u32>,
    #[serde(default)]
    execution_count: i64,
}

#[derive(Deserialize)]
struct Line {
    line_number: u32,
    #[serde(default)]
    count: i64,
    #[serde(default)]
    branches: Vec<BranchCount>,
}

#[derive(Deserialize)]
struct BranchCount {
    #[serde(default)]
    count: i64,
}

/// One document of gcov's JSON output: the coverage of one .gcda.
#[derive(Clone, Debug, PartialEq)]
pub struct GcovData {
    /// The .gcda as gcov was given it.
    pub data_file: String,
    pub gcc_version: String,
    pub coverage: Coverage,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `dir/name` without `.` and `..` (gcc records names as given: `../src/x.c`).
fn absolute(dir: &str, name: &str) -> String {
    let joined = if name.starts_with('/') || dir.is_empty() {
        PathBuf::from(name)
    } else {
        Path::new(dir).join(name)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

/// Parse `gcov --json-format --stdout` output: one JSON document per .gcda.
pub fn parse_json(text: &str) -> Result<Vec<GcovData>, String> {
    let mut out = Vec::new();
    for doc in serde_json::Deserializer::from_str(text).into_iter::<Document>() {
        let doc = doc.map_err(|e| format!("gcov's JSON: {e}"))?;
        let mut cov = Coverage::default();
        for f in doc.files {
            let path = absolute(&doc.current_working_directory, &f.file);
            let mut fc = FileCoverage::new(path.clone());
            // A line is listed once per function covering it (inlines, templates): the counts
            // add up, as gcov's own text output adds them.
            let mut line_counts: BTreeMap<u32, u64> = BTreeMap::new();
            for l in &f.lines {
                let e = line_counts.entry(l.line_number).or_default();
                *e = e.saturating_add(count(l.count));
            }
            let mut next_branch: BTreeMap<u32, usize> = BTreeMap::new();
            for l in &f.lines {
                for b in &l.branches {
                    let n = next_branch.entry(l.line_number).or_default();
                    fc.branches.push(Branch {
                        line: l.line_number,
                        block: "0".into(),
                        branch: n.to_string(),
                        // Never evaluated when the line never ran (LCOV's `-`, as geninfo writes).
                        taken: (line_counts[&l.line_number] > 0).then(|| count(b.count)),
                    });
                    *n += 1;
                }
            }
            fc.lines = line_counts;
            fc.functions = f
                .functions
                .iter()
                .map(|func| Function {
                    name: func
                        .demangled_name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| func.name.clone()),
                    line: func.start_line,
                    end_line: func.end_line,
                    hits: count(func.execution_count),
                })
                .collect();
            match cov.files.get_mut(&path) {
                Some(existing) => existing.merge(&fc),
                None => {
                    cov.files.insert(path, fc);
                }
            }
        }
        out.push(GcovData {
            data_file: doc.data_file,
            gcc_version: doc.gcc_version,
            coverage: cov,
        });
    }
    Ok(out)
}

/// The GCC major that wrote a .gcda or .gcno, from its version word (GCC 12.2 writes `B22*`:
/// the first two characters are the major, 'A' + tens and a digit).
pub fn gcc_major(data: &[u8]) -> Option<u32> {
    let word = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    let [c0, c1, _, _] = word.to_be_bytes();
    match c0 {
        b'A'..=b'Z' if c1.is_ascii_digit() => {
            Some(u32::from(c0 - b'A') * 10 + u32::from(c1 - b'0'))
        }
        b'0'..=b'9' => Some(u32::from(c0 - b'0')),
        _ => None,
    }
}

/// A gcov program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gcov {
    pub path: PathBuf,
    /// "12.2.0"
    pub version: String,
    pub major: Option<u32>,
}

impl Gcov {
    pub fn describe(&self) -> String {
        format!("gcov {} ({})", self.version, self.path.display())
    }
}

/// "gcov (Debian 12.2.0-14+deb12u1) 12.2.0" -> ("12.2.0", 12).
fn parse_gcov_version(line: &str) -> (String, Option<u32>) {
    let v = line.rsplit(' ').next().unwrap_or("").to_string();
    let major = v.split('.').next().and_then(|m| m.parse().ok());
    (v, major)
}

/// The gcov of GCC `major` (any gcov when it is not known).
pub fn find_gcov(major: Option<u32>, extra: &[PathBuf]) -> Result<Gcov, String> {
    let mut names = Vec::new();
    if let Some(m) = major {
        names.push(format!("gcov-{m}"));
        names.push(format!("x86_64-linux-gnu-gcov-{m}"));
        names.push(format!("aarch64-linux-gnu-gcov-{m}"));
    }
    names.push("gcov".into());
    let mut found = Vec::new();
    for name in &names {
        let Some(path) = programs::find(&[name], extra) else {
            continue;
        };
        let Some(line) = programs::first_line(&path, &["--version"]) else {
            continue;
        };
        let (version, m) = parse_gcov_version(&line);
        if major.is_none() || m == major {
            return Ok(Gcov {
                path,
                version,
                major: m,
            });
        }
        found.push(format!("{} is gcov {version}", path.display()));
    }
    let want = major.map_or("gcov".to_string(), |m| format!("gcov of GCC {m}"));
    let install = major.map_or("apt install gcc".to_string(), |m| {
        format!("apt install gcc-{m}, or put gcov-{m} on PATH")
    });
    Err(if found.is_empty() {
        format!("no {want} found (PATH, tool directories): {install}")
    } else {
        format!(
            "no {want} found ({}), and gcov cannot read another GCC's .gcda: {install}",
            found.join(", ")
        )
    })
}

/// Path components of `p` without its extension, last first.
fn stem_components(p: &str) -> Vec<&str> {
    let stem = p.rsplit_once('.').map_or(p, |(s, _)| s);
    stem.rsplit('/').filter(|c| !c.is_empty()).collect()
}

/// For each .gcda, the .gcno of the same object: the one whose path (without extension) shares
/// the longest suffix with it, the file name at least.
pub fn pair_notes<'a>(gcda: &[&'a str], gcno: &[&'a str]) -> Vec<(&'a str, Option<&'a str>)> {
    gcda.iter()
        .map(|d| {
            let dc = stem_components(d);
            let best = gcno
                .iter()
                .map(|n| {
                    let nc = stem_components(n);
                    let common = dc.iter().zip(&nc).take_while(|(a, b)| a == b).count();
                    (common, *n)
                })
                .filter(|(common, _)| *common > 0)
                .max_by_key(|(common, _)| *common)
                .map(|(_, n)| n);
            (*d, best)
        })
        .collect()
}

/// What one artifact gave: the coverage of each .gcda (by its path in the target), and the
/// .gcda files that could not be read, with why.
#[derive(Debug, Default)]
pub struct GcovRun {
    pub files: Vec<(String, Coverage)>,
    pub problems: Vec<String>,
    pub gcc_version: Option<String>,
}

/// Run gcov over an artifact's parts: (path in the target, bytes).
pub fn run(gcov: &Gcov, parts: &[(String, Vec<u8>)], work: &Path) -> Result<GcovRun, String> {
    let gcda: Vec<&str> = parts
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.ends_with(".gcda"))
        .collect();
    let gcno: Vec<&str> = parts
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.ends_with(".gcno"))
        .collect();
    if gcda.is_empty() {
        return Err("the artifact holds no .gcda file".into());
    }
    let bytes: HashMap<&str, &[u8]> = parts
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let scratch = tempfile::Builder::new()
        .prefix("gcov-")
        .tempdir_in(work)
        .map_err(|e| format!("scratch directory in {}: {e}", work.display()))?;
    let mut run = GcovRun::default();
    let mut args = Vec::new();
    let mut by_name = HashMap::new();
    for (i, (d, n)) in pair_notes(&gcda, &gcno).into_iter().enumerate() {
        let Some(n) = n else {
            run.problems.push(format!(
                "{d}: no .gcno notes of the same object were collected with it"
            ));
            continue;
        };
        let write = |ext: &str, data: &[u8]| {
            let p = scratch.path().join(format!("{i}.{ext}"));
            fs::write(&p, data).map_err(|e| format!("writing {}: {e}", p.display()))
        };
        write("gcda", bytes.get(d).copied().unwrap_or_default())?;
        write("gcno", bytes.get(n).copied().unwrap_or_default())?;
        let name = format!("{i}.gcda");
        by_name.insert(name.clone(), d.to_string());
        args.push(name);
    }
    if args.is_empty() {
        return Err(run.problems.join("; "));
    }
    let out = Command::new(&gcov.path)
        .args(["-b", "--json-format", "--stdout"])
        .args(&args)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", gcov.path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let docs = parse_json(&stdout)?;
    for doc in docs {
        let Some(path) = by_name.remove(&doc.data_file) else {
            continue;
        };
        run.gcc_version.get_or_insert(doc.gcc_version);
        run.files.push((path, doc.coverage));
    }
    let complaint = stderr.trim();
    for (_, path) in by_name {
        run.problems.push(format!(
            "{path}: {} said nothing of it{}",
            gcov.describe(),
            if complaint.is_empty() {
                String::new()
            } else {
                format!(" ({complaint})")
            }
        ));
    }
    if run.files.is_empty() {
        return Err(format!(
            "{} read none of its .gcda files: {}",
            gcov.describe(),
            run.problems.join("; ")
        ));
    }
    Ok(run)
}

pub use super::gcov_tally::GcovUnit;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Counts;

    /// Two documents as gcc 12's `gcov -b --json-format --stdout` prints them (trimmed).
    const JSON: &str = r#"{"gcc_version": "12.2.0", "files": [{"lines": [{"branches": [], "count": 1, "line_number": 5, "unexecuted_block": false, "function_name": "main"}, {"branches": [{"fallthrough": true, "count": 3, "throw": false}, {"fallthrough": false, "count": 0, "throw": false}], "count": 3, "line_number": 6, "unexecuted_block": false, "function_name": "main"}, {"branches": [{"fallthrough": true, "count": 0, "throw": false}], "count": 0, "line_number": 9, "unexecuted_block": true, "function_name": "never"}], "functions": [{"blocks": 4, "end_column": 1, "start_line": 4, "name": "main", "blocks_executed": 4, "execution_count": 1, "demangled_name": "main", "start_column": 5, "end_line": 8}, {"blocks": 2, "end_column": 1, "start_line": 9, "name": "never", "blocks_executed": 0, "execution_count": 0, "demangled_name": "never", "start_column": 13, "end_line": 10}], "file": "src/main.c"}], "format_version": "1", "current_working_directory": "/build/x", "data_file": "0.gcda"}
{"gcc_version": "12.2.0", "files": [{"lines": [{"branches": [], "count": 2, "line_number": 3, "unexecuted_block": false, "function_name": "f"}, {"branches": [], "count": 5, "line_number": 3, "unexecuted_block": false, "function_name": "g"}], "functions": [], "file": "../inc/h.h"}], "format_version": "1", "current_working_directory": "/build/x/obj", "data_file": "1.gcda"}
"#;

    #[test]
    fn parses_gcovs_json() {
        let docs = parse_json(JSON).expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].data_file, "0.gcda");
        assert_eq!(docs[0].gcc_version, "12.2.0");
        let f = &docs[0].coverage.files["/build/x/src/main.c"];
        assert_eq!(f.lines, BTreeMap::from([(5, 1), (6, 3), (9, 0)]));
        assert_eq!(f.functions.len(), 2);
        assert_eq!(f.functions[1].name, "never");
        assert_eq!(f.functions[1].end_line, Some(10));
        let t = f.totals();
        assert_eq!(t.lines, Counts::new(2, 3));
        assert_eq!(t.functions, Counts::new(1, 2));
        assert_eq!(t.branches, Counts::new(1, 3));
        // A line that never ran: its branches were never evaluated.
        assert_eq!(f.branches[2].taken, None);
        assert_eq!(f.branches[1].branch, "1");
        // Relative names against gcc's working directory; a line listed twice adds up.
        let h = &docs[1].coverage.files["/build/x/inc/h.h"];
        assert_eq!(h.lines, BTreeMap::from([(3, 7)]));
        assert!(parse_json("{\"files\": 3}").is_err());
        assert!(parse_json("").expect("empty").is_empty());
    }

    #[test]
    fn versions() {
        let mut gcda = b"adcg".to_vec();
        gcda.extend_from_slice(&u32::from_be_bytes(*b"B22*").to_le_bytes());
        assert_eq!(gcc_major(&gcda), Some(12));
        gcda[4..8].copy_from_slice(&u32::from_be_bytes(*b"A93*").to_le_bytes());
        assert_eq!(gcc_major(&gcda), Some(9));
        assert_eq!(gcc_major(b"adcg"), None);
        assert_eq!(
            parse_gcov_version("gcov (Debian 12.2.0-14+deb12u1) 12.2.0"),
            ("12.2.0".to_string(), Some(12))
        );
    }

    #[test]
    fn notes_pair_with_their_objects() {
        let gcda = [
            "/tmp/g/main.gcda",
            "/tmp/g/a/util.gcda",
            "/tmp/g/b/util.gcda",
            "/tmp/g/lonely.gcda",
        ];
        let gcno = [
            "/build/b/util.gcno",
            "/build/main.gcno",
            "/build/a/util.gcno",
        ];
        let pairs = pair_notes(&gcda, &gcno);
        assert_eq!(pairs[0].1, Some("/build/main.gcno"));
        assert_eq!(pairs[1].1, Some("/build/a/util.gcno"));
        assert_eq!(pairs[2].1, Some("/build/b/util.gcno"));
        assert_eq!(pairs[3].1, None);
    }

    #[test]
    fn a_missing_gcov_says_what_to_install() {
        let e = find_gcov(Some(97), &[]).expect_err("no gcc 97");
        assert!(e.contains("gcov-97"), "{e}");
    }

    #[test]
    fn this_machine_has_gcov_12() {
        let g = find_gcov(Some(12), &[]).expect("gcov 12: the set-up installs gcc");
        assert_eq!(g.major, Some(12));
    }

    /// A real gcc --coverage program: the report's figures are gcov's own.
    #[test]
    fn a_real_gcda_through_gcov() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("p.c");
        fs::write(
            &src,
            "int f(int x) {\n  if (x > 1)\n    return 2;\n  return 3;\n}\nint main(int c, char **v) {\n  (void)v;\n  return f(c) == 7;\n}\n",
        )
        .expect("write");
        let ok = Command::new("gcc")
            .args(["--coverage", "-O0", "-o", "p", "p.c"])
            .current_dir(dir.path())
            .status()
            .expect("gcc (the set-up installs it)");
        assert!(ok.success());
        let ok = Command::new(dir.path().join("p"))
            .current_dir(dir.path())
            .status()
            .expect("run");
        assert!(ok.success());
        // gcc 12 names the notes of a one-step build after the output.
        let gcda_path = dir.path().join("p.gcda");
        let gcno_path = dir.path().join("p.gcno");
        let gcda = fs::read(&gcda_path).expect("gcda");
        let gcno = fs::read(&gcno_path).expect("gcno");
        let major = gcc_major(&gcda);
        assert_eq!(major, gcc_major(&gcno));
        let gcov = find_gcov(major, &[]).expect("gcov");
        let parts = vec![
            (gcda_path.to_string_lossy().into_owned(), gcda),
            (gcno_path.to_string_lossy().into_owned(), gcno),
        ];
        let r = run(&gcov, &parts, dir.path()).expect("gcov run");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].0, gcda_path.to_string_lossy());
        let f = &r.files[0].1.files[&src.to_string_lossy().into_owned()];
        // f: lines 1,2,3(not run),4; main: 6,8 (gcov's own view of this program).
        assert_eq!(f.lines.get(&3), Some(&0));
        assert_eq!(f.lines.get(&4), Some(&1));
        assert_eq!(f.totals().functions, Counts::new(2, 2));
        assert_eq!(f.totals().branches.total, 2);
        // Against gcov's text summary of the same files.
        let text = Command::new(&gcov.path)
            .args(["-n", "p.gcda"])
            .current_dir(dir.path())
            .output()
            .expect("gcov -n");
        let text = String::from_utf8_lossy(&text.stdout);
        let lines = f.totals().lines;
        let pct = lines.hit as f64 * 100.0 / lines.total as f64;
        assert!(
            text.contains(&format!("Lines executed:{pct:.2}% of {}", lines.total)),
            "{text} vs {lines:?}"
        );
        // Without notes: told, not guessed.
        let e = run(&gcov, &parts[..1], dir.path()).expect_err("no notes");
        assert!(e.contains("no .gcno"), "{e}");
    }
}
