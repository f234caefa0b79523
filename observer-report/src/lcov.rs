//! LCOV tracefiles (geninfo(1) format): read into the common model, written from it.
//!
//! The writer emits each record in llvm-cov's order (SF, FN, FNDA, FNF, FNH, DA, BRDA, BRF, BRH,
//! LF, LH, end_of_record), so LCOV read from `llvm-cov export -format=lcov` is written back
//! byte for byte. Records the model does not keep (TN, VER, FNL/FNA of lcov 2, MC/DC) are skipped.
use std::fmt::Write as _;

use super::{
    ReportError,
    model::{Branch, Counts, Coverage, FileCoverage, Function},
};

/// Parse an LCOV tracefile. `origin` names it in errors. Records for the same file are merged.
pub fn parse(text: &str, origin: &str) -> Result<Coverage, ReportError> {
    let mut cov = Coverage::default();
    let mut current: Option<Current> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let err = |message: String| ReportError::Lcov {
            origin: origin.to_string(),
            line: i + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        if line == "end_of_record" {
            let Some(cur) = current.take() else {
                return Err(err("end_of_record outside a record".into()));
            };
            let file = cur.finish();
            match cov.files.get_mut(&file.path) {
                Some(existing) => existing.merge(&file),
                None => {
                    cov.files.insert(file.path.clone(), file);
                }
            }
            continue;
        }
        let Some((kind, value)) = line.split_once(':') else {
            return Err(err(format!("not a record: {line:?}")));
        };
        if kind == "SF" {
            if current.is_some() {
                return Err(err("SF inside a record (missing end_of_record)".into()));
            }
            current = Some(Current::new(value));
            continue;
        }
        if matches!(kind, "TN" | "VER") {
            continue;
        }
        let Some(cur) = current.as_mut() else {
            return Err(err(format!("{kind} outside a record")));
        };
        let f = &mut cur.file;
        match kind {
            "FN" => {
                let (first, rest) = value
                    .split_once(',')
                    .ok_or_else(|| err(format!("FN without a name: {value:?}")))?;
                let line_no = number(first).map_err(err)?;
                // lcov 2: FN:<start>,<end>,<name>
                let (end_line, name) = match rest.split_once(',') {
                    Some((end, name)) if end.bytes().all(|b| b.is_ascii_digit()) => {
                        (Some(number(end).map_err(err)?), name)
                    }
                    _ => (None, rest),
                };
                f.functions.push(Function {
                    name: name.to_string(),
                    line: line_no,
                    end_line,
                    hits: 0,
                });
            }
            "FNDA" => {
                let (hits, name) = value
                    .split_once(',')
                    .ok_or_else(|| err(format!("FNDA without a name: {value:?}")))?;
                let hits = count(hits).map_err(err)?;
                cur.fnda.push((name.to_string(), hits));
            }
            "DA" => {
                let mut parts = value.split(',');
                let line_no = number(parts.next().unwrap_or("")).map_err(err)?;
                let hits = count(parts.next().unwrap_or("")).map_err(err)?;
                let sum = f.lines.entry(line_no).or_default();
                *sum = sum.saturating_add(hits);
            }
            "BRDA" => {
                let parts: Vec<&str> = value.splitn(4, ',').collect();
                let [line_no, block, branch, taken] = parts[..] else {
                    return Err(err(format!("BRDA needs 4 fields: {value:?}")));
                };
                // lcov 2 puts expressions with commas in the branch field: the taken count is
                // always the last field.
                let (branch, taken) = match taken.rsplit_once(',') {
                    Some((more, t)) => (format!("{branch},{more}"), t),
                    None => (branch.to_string(), taken),
                };
                f.branches.push(Branch {
                    line: number(line_no).map_err(err)?,
                    block: block.to_string(),
                    branch,
                    taken: if taken == "-" {
                        None
                    } else {
                        Some(count(taken).map_err(err)?)
                    },
                });
            }
            "FNF" => cur.fnf = Some(count(value).map_err(err)?),
            "FNH" => cur.fnh = Some(count(value).map_err(err)?),
            "LF" => cur.lf = Some(count(value).map_err(err)?),
            "LH" => cur.lh = Some(count(value).map_err(err)?),
            "BRF" => cur.brf = Some(count(value).map_err(err)?),
            "BRH" => cur.brh = Some(count(value).map_err(err)?),
            // FNL/FNA (lcov 2 function aliases), MCDC, anything newer: not in the model.
            _ => {}
        }
    }
    if current.is_some() {
        return Err(ReportError::Lcov {
            origin: origin.to_string(),
            line: text.lines().count(),
            message: "missing end_of_record at the end".into(),
        });
    }
    Ok(cov)
}

fn number(s: &str) -> Result<u32, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("not a line number: {s:?}"))
}

/// Hit counts: llvm-cov and gcov write integers; some tools write floats or negative numbers for
/// saturated counters. Anything negative counts as 0, including llvm-cov's negative counter
/// expressions printed as u64 (above i64::MAX): a profile written while a function was mid-way,
/// e.g. from inside a loop (a counter subtracted before its twin was incremented).
fn count(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(if i64::try_from(n).is_err() { 0 } else { n });
    }
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(if x <= 0.0 { 0 } else { x.round() as u64 }),
        _ => Err(format!("not a count: {s:?}")),
    }
}

struct Current {
    file: FileCoverage,
    fnda: Vec<(String, u64)>,
    fnf: Option<u64>,
    fnh: Option<u64>,
    lf: Option<u64>,
    lh: Option<u64>,
    brf: Option<u64>,
    brh: Option<u64>,
}

impl Current {
    fn new(path: &str) -> Self {
        Self {
            file: FileCoverage::new(path),
            fnda: Vec::new(),
            fnf: None,
            fnh: None,
            lf: None,
            lh: None,
            brf: None,
            brh: None,
        }
    }

    fn finish(mut self) -> FileCoverage {
        for (name, hits) in self.fnda {
            match self.file.functions.iter_mut().find(|f| f.name == name) {
                Some(f) => f.hits = f.hits.saturating_add(hits),
                None => self.file.functions.push(Function {
                    name,
                    line: 0,
                    end_line: None,
                    hits,
                }),
            }
        }
        let pair = |h: Option<u64>, t: Option<u64>| match (h, t) {
            (Some(h), Some(t)) => Some(Counts::new(h, t)),
            _ => None,
        };
        self.file.declared.functions = pair(self.fnh, self.fnf);
        self.file.declared.lines = pair(self.lh, self.lf);
        self.file.declared.branches = pair(self.brh, self.brf);
        self.file
    }
}

/// Write the model as an LCOV tracefile, files in path order.
pub fn write(cov: &Coverage) -> String {
    let mut out = String::new();
    for f in cov.files.values() {
        write_file(&mut out, f);
    }
    out
}

fn write_file(out: &mut String, f: &FileCoverage) {
    let t = f.totals();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "SF:{}", f.path);
    for func in &f.functions {
        let _ = match func.end_line {
            Some(end) => writeln!(out, "FN:{},{},{}", func.line, end, func.name),
            None => writeln!(out, "FN:{},{}", func.line, func.name),
        };
    }
    for func in &f.functions {
        let _ = writeln!(out, "FNDA:{},{}", func.hits, func.name);
    }
    let _ = writeln!(out, "FNF:{}", t.functions.total);
    let _ = writeln!(out, "FNH:{}", t.functions.hit);
    for (line, hits) in &f.lines {
        let _ = writeln!(out, "DA:{line},{hits}");
    }
    for b in &f.branches {
        let _ = match b.taken {
            Some(n) => writeln!(out, "BRDA:{},{},{},{n}", b.line, b.block, b.branch),
            None => writeln!(out, "BRDA:{},{},{},-", b.line, b.block, b.branch),
        };
    }
    let _ = writeln!(out, "BRF:{}", t.branches.total);
    let _ = writeln!(out, "BRH:{}", t.branches.hit);
    let _ = writeln!(out, "LF:{}", t.lines.total);
    let _ = writeln!(out, "LH:{}", t.lines.hit);
    out.push_str("end_of_record\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What clang 14's llvm-cov writes (taken from a real run), files in path order.
    const LLVM14: &str = "\
SF:/tmp/rep/t.c
FN:15,main
FN:5,t.c:classify
FN:10,t.c:extra
FNDA:2,main
FNDA:2,t.c:classify
FNDA:0,t.c:extra
FNF:3
FNH:2
DA:5,2
DA:6,2
DA:10,0
DA:11,0
BRDA:6,0,0,0
BRDA:6,0,1,2
BRDA:6,1,2,-
BRDA:6,1,3,-
BRF:4
BRH:1
LF:4
LH:2
end_of_record
SF:/tmp/rep/u.h
FNF:0
FNH:0
DA:1,7
BRF:0
BRH:0
LF:1
LH:1
end_of_record
";

    /// LLVM 23 (rustc 1.99) declares more lines than it lists, and fewer functions than FN records.
    const LLVM23: &str = "\
SF:/tmp/rep/r.rs
FN:1,_RINvCsaEQyU3jpcqk_1r8classifydEB2_
FN:1,_RINvCsaEQyU3jpcqk_1r8classifyxEB2_
FN:2,_RNvCsaEQyU3jpcqk_1r4main
FNDA:1,_RINvCsaEQyU3jpcqk_1r8classifydEB2_
FNDA:1,_RINvCsaEQyU3jpcqk_1r8classifyxEB2_
FNDA:1,_RNvCsaEQyU3jpcqk_1r4main
FNF:2
FNH:2
DA:1,2
DA:2,1
DA:3,1
BRF:0
BRH:0
LF:4
LH:4
end_of_record
";

    #[test]
    fn round_trip_is_byte_exact() {
        for text in [LLVM14, LLVM23] {
            let cov = parse(text, "test").expect("parse");
            assert_eq!(write(&cov), text);
        }
    }

    #[test]
    fn parsed_model() {
        let cov = parse(LLVM14, "test").expect("parse");
        let f = &cov.files["/tmp/rep/t.c"];
        assert_eq!(f.functions.len(), 3);
        assert_eq!(f.functions[1].name, "t.c:classify");
        assert_eq!(f.functions[1].line, 5);
        assert_eq!(f.functions[1].hits, 2);
        assert_eq!(f.lines[&10], 0);
        assert_eq!(f.branches[2].taken, None);
        assert_eq!(f.totals().branches, Counts::new(1, 4));
        let t = cov.totals();
        assert_eq!(t.lines, Counts::new(3, 5));
        assert_eq!(t.functions, Counts::new(2, 3));
        let r = parse(LLVM23, "test").expect("parse");
        // The declared figures are what llvm-cov says, not what the records count.
        assert_eq!(r.totals().lines, Counts::new(4, 4));
        assert_eq!(r.totals().functions, Counts::new(2, 2));
        assert_eq!(r.files["/tmp/rep/r.rs"].computed().lines, Counts::new(3, 3));
    }

    #[test]
    fn negative_counter_expressions_count_as_zero_and_sums_saturate() {
        // llvm-cov prints a counter expression that came out negative (a profile written from
        // inside a loop) as a u64: -10 here.
        let text = "SF:/r.rs\nDA:1,18446744073709551606\nDA:2,3\nDA:3,-1\nend_of_record\n\
                    SF:/r.rs\nDA:2,18446744073709551615\nend_of_record\n";
        let mut cov = parse(text, "test").expect("parse");
        let f = &cov.files["/r.rs"];
        assert_eq!((f.lines[&1], f.lines[&2], f.lines[&3]), (0, 3, 0));
        let mut big = parse("SF:/r.rs\nDA:2,9223372036854775807\nend_of_record\n", "t").unwrap();
        big.merge(&big.clone());
        cov.merge(&big);
        assert_eq!(cov.files["/r.rs"].lines[&2], u64::MAX);
    }

    #[test]
    fn geninfo_style_input() {
        // geninfo writes TN lines, no BRDA, and may repeat a file in several records.
        let text = "TN:\nSF:/a.c\nFN:3,f\nFNDA:1,f\nDA:3,1\nDA:4,0\nLF:2\nLH:1\nend_of_record\n\
                    TN:\nSF:/a.c\nDA:4,2\nend_of_record\n";
        let cov = parse(text, "test").expect("parse");
        let f = &cov.files["/a.c"];
        assert_eq!(f.lines[&4], 2);
        // Merged records: counted, not declared.
        assert_eq!(f.totals().lines, Counts::new(2, 2));
        let out = write(&cov);
        assert!(out.contains("DA:4,2\n"));
        assert!(out.contains("FNF:1\nFNH:1\n"));
        assert!(out.contains("LF:2\nLH:2\n"));
        let again = parse(&out, "again").expect("reparse");
        assert_eq!(again.totals(), cov.totals());
        assert_eq!(again.files["/a.c"].lines, f.lines);
        assert_eq!(write(&again), out);
    }

    #[test]
    fn lcov2_function_end_lines_and_odd_counts() {
        let text = "SF:/b.c\nFN:3,9,f\nFNDA:1,f\nDA:3,-1\nDA:4,2.0\nBRDA:3,0,a && (b, c),5\nend_of_record\n";
        let cov = parse(text, "test").expect("parse");
        let f = &cov.files["/b.c"];
        assert_eq!(f.functions[0].end_line, Some(9));
        assert_eq!(f.lines[&3], 0);
        assert_eq!(f.lines[&4], 2);
        assert_eq!(f.branches[0].branch, "a && (b, c)");
        assert_eq!(f.branches[0].taken, Some(5));
        assert!(write(&cov).contains("FN:3,9,f\n"));
    }

    #[test]
    fn malformed_input_is_an_error_with_a_line_number() {
        let e = parse("SF:/a.c\nDA:x,1\nend_of_record\n", "llvm-cov").expect_err("bad DA");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse("DA:1,1\n", "x").is_err());
        assert!(parse("SF:/a.c\nDA:1,1\n", "x").is_err());
        assert!(parse("SF:/a.c\nSF:/b.c\n", "x").is_err());
        assert!(parse("garbage\n", "x").is_err());
        assert_eq!(parse("", "x").expect("empty").files.len(), 0);
    }
}
