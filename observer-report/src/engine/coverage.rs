//! llvm-cov's semantics over a module's mapping and counters: function records with region
//! counts, a file's coverage segments, line counts, branches, instantiation groups and the
//! per-file summary, and the LCOV llvm-cov exports (`llvm-cov export -format=lcov`) byte for
//! byte.
//!
//! Learned from LLVM's CoverageMapping.cpp (loading function records, SegmentBuilder,
//! LineCoverageStats), llvm-cov's CoverageSummaryInfo and CoverageReport (a file's figures are
//! the sum over its instantiation groups, each group the best of its instantiations) and
//! CoverageExporterLcov; behaviours that differ between LLVM majors are chosen by [`Flavor`].
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::Arc,
};

use super::mapping::{Counter, Expression, FunctionMapping, Kind, Mapping, Region};
use crate::model::{Branch, Counts, Coverage, Declared, FileCoverage, Function, Totals};

/// The llvm-cov whose output is reproduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flavor {
    pub llvm_major: u32,
}

impl Flavor {
    /// Branch folding per side (LLVM 19+) instead of per pair.
    fn folds_per_side(self) -> bool {
        self.llvm_major >= 19
    }

    /// LCOV branches sorted by their expansion path and position (LLVM 17+) instead of by line
    /// with std::sort.
    fn nested_branch_order(self) -> bool {
        self.llvm_major >= 17
    }

    /// LCOV branches at the same place (the instantiations of a generic function) summed into
    /// one pair: llvm-cov export's `-unify-instantiations`, on by default (LLVM PR 113925, end
    /// of 2024, so from LLVM 20 on; checked here with 23 only: the same output with and
    /// without the option).
    fn unifies_instantiations(self) -> bool {
        self.llvm_major >= 20
    }
}

/// An LCOV branch: the start locations of the expansions it is in (outermost first, then its
/// own), its position among its peers, the branch.
type LcovBranch = (Vec<(u32, u32)>, usize, CountedRegion);

/// A region with its evaluated counts.
#[derive(Clone, Copy, Debug)]
pub struct CountedRegion {
    pub region: Region,
    pub count: u64,
    pub false_count: u64,
    pub true_folded: bool,
    pub false_folded: bool,
}

/// A function with counts (LLVM's FunctionRecord).
#[derive(Clone, Debug)]
pub struct FunctionRecord {
    pub name: String,
    pub filenames: Vec<Arc<str>>,
    pub regions: Vec<CountedRegion>,
    pub branches: Vec<CountedRegion>,
    pub execution_count: u64,
}

/// Profile counts of the functions present in the profile: (NameRef, FuncHash) -> counters and
/// the names that have a record at all (a record under another hash is a mismatch).
pub struct ProfileCounts<'a> {
    pub by_key: HashMap<(u64, u64), Vec<u64>>,
    pub names: HashMap<u64, ()>,
    _p: std::marker::PhantomData<&'a ()>,
}

impl ProfileCounts<'_> {
    /// From the module's functions and a counter vector (llvm-profdata adds up records with the
    /// same name and hash). With `sparse`, functions whose counters are all zero are left out, as
    /// `llvm-profdata merge -sparse` does.
    pub fn new(
        functions: &[super::profile::FunctionCounters],
        counters: &[u64],
        sparse: bool,
    ) -> Self {
        let mut by_key: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
        for f in functions {
            let c = counters.get(f.counters.clone()).unwrap_or(&[]);
            match by_key.get_mut(&(f.name_ref, f.func_hash)) {
                Some(v) if v.len() == c.len() => {
                    for (x, y) in v.iter_mut().zip(c) {
                        *x = x.saturating_add(*y);
                    }
                }
                Some(_) => {}
                None => {
                    by_key.insert((f.name_ref, f.func_hash), c.to_vec());
                }
            }
        }
        if sparse {
            by_key.retain(|_, v| v.iter().any(|&x| x != 0));
        }
        let names = by_key.keys().map(|(n, _)| (*n, ())).collect();
        Self {
            by_key,
            names,
            _p: std::marker::PhantomData,
        }
    }
}

/// Evaluates a function's counters and expressions, each expression once.
struct Evaluator<'a> {
    exprs: &'a [Expression],
    counts: &'a [u64],
    memo: Vec<Option<Option<i64>>>,
}

impl<'a> Evaluator<'a> {
    fn new(exprs: &'a [Expression], counts: &'a [u64]) -> Self {
        Self {
            exprs,
            counts,
            memo: vec![None; exprs.len()],
        }
    }

    /// None: a counter the profile does not have (llvm-cov then skips the function).
    fn eval(&mut self, c: Counter) -> Option<i64> {
        self.eval_depth(c, 0)
    }

    fn eval_depth(&mut self, c: Counter, depth: u32) -> Option<i64> {
        match c {
            Counter::Zero => Some(0),
            Counter::Ref(i) => self.counts.get(i as usize).map(|&v| v as i64),
            Counter::Expr(i) => {
                let i = i as usize;
                if let Some(Some(v)) = self.memo.get(i) {
                    return *v;
                }
                if depth > 100_000 {
                    return None;
                }
                let e = *self.exprs.get(i)?;
                let l = self.eval_depth(e.lhs, depth + 1);
                let r = self.eval_depth(e.rhs, depth + 1);
                let v = match (l, r) {
                    (Some(l), Some(r)) => Some(if e.subtract {
                        l.wrapping_sub(r)
                    } else {
                        l.wrapping_add(r)
                    }),
                    _ => None,
                };
                self.memo[i] = Some(v);
                v
            }
        }
    }
}

fn max_counter_id(c: Counter, exprs: &[Expression], depth: u32) -> u32 {
    match c {
        Counter::Zero => 0,
        Counter::Ref(i) => i,
        Counter::Expr(i) => match exprs.get(i as usize) {
            Some(e) if depth < 10_000 => {
                max_counter_id(e.lhs, exprs, depth + 1).max(max_counter_id(e.rhs, exprs, depth + 1))
            }
            _ => 0,
        },
    }
}

/// `PGOFuncName` without the `<file>:` prefix local functions carry.
pub(super) fn name_without_prefix(name: &str, file: Option<&str>) -> String {
    match file {
        Some(f) if !f.is_empty() && name.starts_with(f) => {
            name.get(f.len() + 1..).unwrap_or("").to_string()
        }
        _ => name.to_string(),
    }
}

/// The function records llvm-cov loads (CoverageMapping::loadFunctionRecord), in order.
pub fn function_records(mapping: &Mapping, profile: &ProfileCounts) -> Vec<FunctionRecord> {
    let mut out = Vec::new();
    // (filenames, name) pairs seen, by hash as llvm-cov keeps them.
    let mut seen: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    let hash = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        use std::hash::Hasher as _;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v(&mut h);
        h.finish()
    };
    for f in &mapping.functions {
        if let Some(r) = load(f, profile) {
            use std::hash::Hash as _;
            let key = (hash(&|h| r.filenames.hash(h)), hash(&|h| r.name.hash(h)));
            if seen.insert(key) {
                out.push(r);
            }
        }
    }
    out
}

fn load(f: &FunctionMapping, profile: &ProfileCounts) -> Option<FunctionRecord> {
    match profile.by_key.get(&(f.name_ref, f.func_hash)) {
        Some(c) => load_counts(f, c),
        None if profile.names.contains_key(&f.name_ref) => None,
        None => load_counts(f, &vec![0; zero_counts_len(f)]),
    }
}

/// How many zero counters llvm-cov gives a function the profile has no record for.
pub(super) fn zero_counts_len(f: &FunctionMapping) -> usize {
    let max = f
        .regions
        .iter()
        .map(|r| max_counter_id(r.count, &f.expressions, 0))
        .max()
        .unwrap_or(0);
    max as usize + 1
}

/// The values of a function's regions for these counters (count and false count of each,
/// in the order of its mapping, MC/DC decisions left out), as [`load_counts`] evaluates them;
/// None when it leaves the function out.
pub(super) fn region_values(f: &FunctionMapping, counts: &[u64]) -> Option<Vec<u64>> {
    if f.regions.is_empty()
        || (f.regions.len() == 1
            && f.regions[0].count.is_zero()
            && counts.first().is_some_and(|&c| c > 0))
    {
        return None;
    }
    let mut ev = Evaluator::new(&f.expressions, counts);
    let mut out = Vec::with_capacity(f.regions.len() * 2);
    for r in f.regions.iter().filter(|r| r.kind != Kind::McdcDecision) {
        out.push(ev.eval(r.count)? as u64);
        out.push(ev.eval(r.false_count)? as u64);
    }
    Some(out)
}

/// A function's record for these counters (None: llvm-cov leaves it out).
pub(super) fn load_counts(f: &FunctionMapping, counts: &[u64]) -> Option<FunctionRecord> {
    if f.regions.is_empty() {
        return None;
    }
    // A zero region for a function unused in one translation unit and used in another.
    if f.regions.len() == 1
        && f.regions[0].count.is_zero()
        && counts.first().is_some_and(|&c| c > 0)
    {
        return None;
    }
    let mut rec = FunctionRecord {
        name: name_without_prefix(&f.name, f.filenames.first().map(|s| &**s)),
        filenames: f.filenames.clone(),
        regions: Vec::new(),
        branches: Vec::new(),
        execution_count: 0,
    };
    let mut ev = Evaluator::new(&f.expressions, counts);
    for r in &f.regions {
        if r.kind == Kind::McdcDecision {
            continue;
        }
        let count = ev.eval(r.count)? as u64;
        let false_count = ev.eval(r.false_count)? as u64;
        let cr = CountedRegion {
            region: *r,
            count,
            false_count,
            true_folded: r.count.is_zero(),
            false_folded: r.false_count.is_zero(),
        };
        if r.kind.is_branch() {
            rec.branches.push(cr);
        } else {
            if rec.regions.is_empty() {
                rec.execution_count = count;
            }
            rec.regions.push(cr);
        }
    }
    Some(rec)
}

/// A point where the count changes (LLVM's CoverageSegment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    line: u32,
    col: u32,
    count: u64,
    has_count: bool,
    is_region_entry: bool,
    is_gap: bool,
}

struct SegmentBuilder<'a> {
    segments: Vec<Segment>,
    active: Vec<&'a CountedRegion>,
}

impl<'a> SegmentBuilder<'a> {
    fn start(&mut self, r: &CountedRegion, loc: (u32, u32), entry: bool, skipped: bool) {
        let has_count = !skipped && r.region.kind != Kind::Skipped;
        if let Some(last) = self.segments.last()
            && !entry
            && !skipped
            && last.has_count == has_count
            && last.count == r.count
            && !last.is_region_entry
        {
            return;
        }
        self.segments.push(Segment {
            line: loc.0,
            col: loc.1,
            count: if has_count { r.count } else { 0 },
            has_count,
            is_region_entry: entry,
            is_gap: has_count && r.region.kind == Kind::Gap,
        });
    }

    fn complete_until(&mut self, loc: Option<(u32, u32)>, first_completed: usize) {
        let mut done: Vec<&'a CountedRegion> = self.active.split_off(first_completed);
        // Stable, by end location.
        done.sort_by_key(|r| r.region.end());
        let mut all = std::mem::take(&mut self.active);
        all.extend(done);
        for i in first_completed + 1..all.len() {
            let mut completed = all[i];
            let prev = all[i - 1];
            let seg_loc = prev.region.end();
            if loc == Some(seg_loc) {
                break;
            }
            if seg_loc == completed.region.end() {
                continue;
            }
            for r in &all[i + 1..] {
                if completed.region.end() == r.region.end() {
                    completed = r;
                }
            }
            self.start(completed, seg_loc, false, false);
        }
        let last = all[all.len() - 1];
        if first_completed > 0 && Some(last.region.end()) != loc {
            let fill = all[first_completed - 1];
            self.start(fill, last.region.end(), false, false);
        } else if first_completed == 0 && loc != Some(last.region.end()) {
            self.start(last, last.region.end(), false, true);
        }
        all.truncate(first_completed);
        self.active = all;
    }

    fn build(regions: &'a [CountedRegion]) -> Vec<Segment> {
        let mut b = SegmentBuilder {
            segments: Vec::new(),
            active: Vec::new(),
        };
        for (i, cr) in regions.iter().enumerate() {
            let start = cr.region.start();
            // Active regions that end before this one starts are completed (stable partition).
            if b.active.iter().any(|r| r.region.end() <= start) {
                let (keep, done): (Vec<&CountedRegion>, Vec<&CountedRegion>) =
                    b.active.iter().partition(|r| r.region.end() > start);
                let first = keep.len();
                b.active = keep;
                b.active.extend(done);
                b.complete_until(Some(start), first);
            }
            let gap = cr.region.kind == Kind::Gap;
            if start == cr.region.end() {
                let skipped = i + 1 == regions.len() || cr.region.kind == Kind::Skipped;
                let src = match b.active.last() {
                    None => cr,
                    Some(a) => *a,
                };
                b.start(src, start, !gap, skipped);
                if skipped && let Some(a) = b.active.last().copied() {
                    b.start(a, start, false, false);
                }
                continue;
            }
            if i + 1 == regions.len() || start != regions[i + 1].region.start() {
                b.start(cr, start, !gap, false);
            }
            b.active.push(cr);
        }
        if !b.active.is_empty() {
            b.complete_until(None, 0);
        }
        b.segments
    }
}

/// Sort regions as llvm-cov does and add up the counts of regions covering the same area.
fn combined(mut regions: Vec<CountedRegion>) -> Vec<CountedRegion> {
    regions.sort_by(|a, b| {
        a.region
            .start()
            .cmp(&b.region.start())
            .then_with(|| b.region.end().cmp(&a.region.end()))
            .then_with(|| a.region.kind.cmp(&b.region.kind))
    });
    let mut out: Vec<CountedRegion> = Vec::with_capacity(regions.len());
    for r in regions {
        match out.last_mut() {
            Some(a) if a.region.start() == r.region.start() && a.region.end() == r.region.end() => {
                if a.region.kind == r.region.kind {
                    a.count = a.count.wrapping_add(r.count);
                }
            }
            _ => out.push(r),
        }
    }
    out
}

fn segments_of(regions: Vec<CountedRegion>) -> Vec<Segment> {
    let c = combined(regions);
    SegmentBuilder::build(&c)
}

/// Per line: (line, count) of the mapped lines (LineCoverageIterator from line 1, without
/// walking the lines where nothing can be mapped one by one).
fn line_stats(segments: &[Segment]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut wrapped: Option<&Segment> = None;
    let mut i = 0;
    let mut line = 1u32;
    let mut line_segs: Vec<&Segment> = Vec::new();
    while i < segments.len() {
        if let Some(l) = line_segs.last() {
            wrapped = Some(*l);
        }
        line_segs.clear();
        let next = segments[i].line;
        if next > line {
            // Lines without a segment of their own: mapped when the count they are in has one.
            if let Some(w) = wrapped.filter(|w| w.has_count) {
                out.extend((line..next).map(|l| (l, w.count)));
            }
            line = next;
        }
        while i < segments.len() && segments[i].line == line {
            line_segs.push(&segments[i]);
            i += 1;
        }
        let is_start = |s: &Segment| !s.is_gap && s.has_count && s.is_region_entry;
        let min_regions = line_segs.iter().filter(|s| is_start(s)).take(2).count();
        let start_skipped = line_segs
            .first()
            .is_some_and(|s| !s.has_count && s.is_region_entry);
        let mut mapped =
            !start_skipped && (wrapped.is_some_and(|w| w.has_count) || min_regions > 0);
        mapped |= line_segs.iter().any(|s| s.is_region_entry && s.has_count);
        if mapped {
            let mut count = wrapped.map_or(0, |w| w.count);
            if min_regions > 0 {
                for s in &line_segs {
                    if is_start(s) {
                        count = count.max(s.count);
                    }
                }
            }
            out.push((line, count));
        }
        line = line.wrapping_add(1);
    }
    out
}

/// Coverage of a file, a function or an expansion: segments, branches, expansions.
struct Data<'a> {
    segments: Vec<Segment>,
    branches: Vec<CountedRegion>,
    /// (expansion region, its function)
    expansions: Vec<(CountedRegion, &'a FunctionRecord)>,
}

pub(super) fn main_file_id(f: &FunctionRecord) -> Option<u32> {
    let mut expanded = vec![false; f.filenames.len()];
    for r in &f.regions {
        if r.region.kind == Kind::Expansion
            && let Some(e) = expanded.get_mut(r.region.expanded_file_id as usize)
        {
            *e = true;
        }
    }
    expanded.iter().position(|e| !e).map(|i| i as u32)
}

fn is_expansion(r: &CountedRegion, file_id: u32) -> bool {
    r.region.kind == Kind::Expansion && r.region.file_id == file_id
}

fn coverage_for_function(f: &FunctionRecord) -> Option<Data<'_>> {
    let main = main_file_id(f)?;
    let regions: Vec<CountedRegion> = f
        .regions
        .iter()
        .filter(|r| r.region.file_id == main)
        .copied()
        .collect();
    Some(Data {
        expansions: regions
            .iter()
            .filter(|r| is_expansion(r, main))
            .map(|r| (*r, f))
            .collect(),
        segments: segments_of(regions),
        branches: f
            .branches
            .iter()
            .filter(|r| r.region.file_id == main)
            .copied()
            .collect(),
    })
}

/// An expansion's branches and nested expansions (its segments are not needed anywhere
/// llvm-cov's exports look at them).
fn coverage_for_expansion<'a>(region: &CountedRegion, f: &'a FunctionRecord) -> Data<'a> {
    let id = region.region.expanded_file_id;
    Data {
        expansions: f
            .regions
            .iter()
            .filter(|r| is_expansion(r, id))
            .map(|r| (*r, f))
            .collect(),
        segments: Vec::new(),
        branches: f
            .branches
            .iter()
            .filter(|r| r.region.file_id == id)
            .copied()
            .collect(),
    }
}

/// A function's (or group's) figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Summary {
    pub(super) regions: Counts,
    pub(super) lines: Counts,
    pub(super) branches: Counts,
}

impl Summary {
    pub(super) fn merge(&mut self, o: &Summary) {
        for (a, b) in [
            (&mut self.regions, o.regions),
            (&mut self.lines, o.lines),
            (&mut self.branches, o.branches),
        ] {
            a.hit = a.hit.max(b.hit);
            a.total = a.total.max(b.total);
        }
    }
}

fn sum_branches(branches: &[CountedRegion], flavor: Flavor) -> Counts {
    let mut c = Counts::default();
    for b in branches {
        if flavor.folds_per_side() {
            if !b.true_folded {
                c.total += 1;
                c.hit += u64::from(b.count > 0);
            }
            if !b.false_folded {
                c.total += 1;
                c.hit += u64::from(b.false_count > 0);
            }
        } else if !(b.true_folded && b.false_folded) {
            c.total += 2;
            c.hit += u64::from(b.count > 0) + u64::from(b.false_count > 0);
        }
    }
    c
}

fn sum_branch_expansions(
    expansions: &[(CountedRegion, &FunctionRecord)],
    flavor: Flavor,
) -> Counts {
    let mut c = Counts::default();
    for (r, f) in expansions {
        let d = coverage_for_expansion(r, f);
        c.add(sum_branches(&d.branches, flavor));
        c.add(sum_branch_expansions(&d.expansions, flavor));
    }
    c
}

pub(super) fn function_summary(f: &FunctionRecord, flavor: Flavor) -> Summary {
    let mut s = Summary::default();
    for r in &f.regions {
        if r.region.kind == Kind::Code {
            s.regions.total += 1;
            s.regions.hit += u64::from(r.count != 0);
        }
    }
    if let Some(d) = coverage_for_function(f) {
        for (_, count) in line_stats(&d.segments) {
            s.lines.total += 1;
            s.lines.hit += u64::from(count != 0);
        }
        s.branches = sum_branches(&d.branches, flavor);
        s.branches.add(sum_branch_expansions(&d.expansions, flavor));
    }
    s
}

/// A module's coverage under llvm-cov's semantics.
pub struct ModuleCoverage {
    pub functions: Vec<FunctionRecord>,
    pub flavor: Flavor,
    /// File name -> indices of the functions that mention it.
    by_file: HashMap<Arc<str>, Vec<usize>>,
}

impl ModuleCoverage {
    pub fn new(functions: Vec<FunctionRecord>, flavor: Flavor) -> Self {
        let mut by_file: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, f) in functions.iter().enumerate() {
            for name in &f.filenames {
                let v = by_file.entry(name.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        Self {
            functions,
            flavor,
            by_file,
        }
    }

    /// The source files, sorted (llvm-cov's getUniqueSourceFiles).
    pub fn files(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.by_file.keys().cloned().collect();
        v.sort();
        v
    }

    fn records_of(&self, file: &str) -> impl Iterator<Item = &FunctionRecord> {
        self.by_file
            .get(file)
            .into_iter()
            .flatten()
            .map(|&i| &self.functions[i])
    }

    /// A file's figures: the sum over its instantiation groups (functions defined in it, grouped
    /// by where they start), each the best of its instantiations.
    pub fn file_totals(&self, file: &str) -> Totals {
        let mut groups: std::collections::BTreeMap<(u32, u32), Vec<&FunctionRecord>> =
            std::collections::BTreeMap::new();
        for f in self.records_of(file) {
            let Some(main) = main_file_id(f).filter(|&m| &*f.filenames[m as usize] == file) else {
                continue;
            };
            let Some(first) = f.regions.iter().find(|r| r.region.file_id == main) else {
                continue;
            };
            groups.entry(first.region.start()).or_default().push(f);
        }
        let mut t = Totals {
            regions: Some(Counts::default()),
            ..Totals::default()
        };
        for fs in groups.values() {
            let mut s = function_summary(fs[0], self.flavor);
            let mut executed = fs[0].execution_count;
            for f in &fs[1..] {
                s.merge(&function_summary(f, self.flavor));
                executed = executed.wrapping_add(f.execution_count);
            }
            t.lines.add(s.lines);
            t.branches.add(s.branches);
            if let Some(r) = t.regions.as_mut() {
                r.add(s.regions);
            }
            t.functions.total += 1;
            t.functions.hit += u64::from(executed > 0);
        }
        t
    }

    fn coverage_for_file(&self, file: &str) -> Data<'_> {
        let mut regions = Vec::new();
        let mut branches = Vec::new();
        let mut expansions = Vec::new();
        for f in self.records_of(file) {
            let main = main_file_id(f).filter(|&m| &*f.filenames[m as usize] == file);
            let ids: Vec<bool> = f.filenames.iter().map(|n| &**n == file).collect();
            let wanted = |r: &CountedRegion| ids.get(r.region.file_id as usize) == Some(&true);
            for r in &f.regions {
                if wanted(r) {
                    regions.push(*r);
                    if main.is_some_and(|m| is_expansion(r, m)) {
                        expansions.push((*r, f));
                    }
                }
            }
            branches.extend(f.branches.iter().filter(|r| wanted(r)).copied());
        }
        Data {
            segments: segments_of(regions),
            branches,
            expansions,
        }
    }

    /// `llvm-cov export -format=lcov` of the module.
    pub fn lcov(&self) -> String {
        let mut out = String::new();
        for file in self.files() {
            self.lcov_file(&mut out, &file);
        }
        out
    }

    /// The LCOV and the per-file figures together (each file's figures computed once).
    pub fn lcov_with_summary(&self) -> (String, std::collections::BTreeMap<String, Totals>) {
        let mut out = String::new();
        let mut summary = std::collections::BTreeMap::new();
        for file in self.files() {
            let totals = self.file_totals(&file);
            self.lcov_file_with(&mut out, &file, &totals);
            summary.insert(file.to_string(), totals);
        }
        (out, summary)
    }

    /// The line detail and the per-file figures: what [`crate::lcov::parse`] reads
    /// from [`Self::lcov_with_summary`]'s text, built without the text. None when a name would
    /// not come back from the text as it is (a comma or a line break in it): then parse the
    /// text.
    pub fn detail_with_summary(&self) -> Option<(Coverage, BTreeMap<String, Totals>)> {
        let files = self.files();
        let plain = |s: &str| !s.contains(['\n', '\r']);
        if !files.iter().all(|f| plain(f))
            || !self
                .functions
                .iter()
                .all(|f| plain(&f.name) && !f.name.contains(','))
        {
            return None;
        }
        let mut cov = Coverage::default();
        let mut summary = BTreeMap::new();
        for file in files {
            let totals = self.file_totals(&file);
            let detail = self.file_detail(&file, &totals);
            match cov.files.get_mut(&detail.path) {
                Some(existing) => existing.merge(&detail),
                None => {
                    cov.files.insert(detail.path.clone(), detail);
                }
            }
            summary.insert(file.to_string(), totals);
        }
        Some((cov, summary))
    }

    /// One file's record as LCOV gives it (see [`Self::lcov_file_with`]), counts read back as
    /// the LCOV reader does (above i64::MAX: 0).
    fn file_detail(&self, file: &str, totals: &Totals) -> FileCoverage {
        let read = |n: u64| if i64::try_from(n).is_err() { 0 } else { n };
        let mut out = FileCoverage::new(file);
        let own = self
            .functions
            .iter()
            .filter(|f| f.filenames.first().is_some_and(|n| &**n == file));
        // FN then FNDA: each FNDA's hits go to the first function of its name.
        let mut first: HashMap<&str, usize> = HashMap::new();
        for f in own.clone() {
            first.entry(f.name.as_str()).or_insert(out.functions.len());
            out.functions.push(Function {
                name: f.name.clone(),
                line: f.regions.first().map_or(0, |r| r.region.line_start),
                end_line: None,
                hits: 0,
            });
        }
        for f in own {
            if let Some(g) = first.get(&*f.name).and_then(|&i| out.functions.get_mut(i)) {
                g.hits = g.hits.saturating_add(read(f.execution_count));
            }
        }
        let data = self.coverage_for_file(file);
        for (line, count) in line_stats(&data.segments) {
            let sum = out.lines.entry(line).or_default();
            *sum = sum.saturating_add(read(count));
        }
        self.branch_records(&data, &mut |line, pair, index, taken| {
            out.branches.push(Branch {
                line,
                block: pair.to_string(),
                branch: index.to_string(),
                taken: taken.map(u64::from),
            });
        });
        let pair = |c: Counts| Some(Counts::new(read(c.hit), read(c.total)));
        out.declared = Declared {
            functions: pair(totals.functions),
            lines: pair(totals.lines),
            branches: pair(totals.branches),
        };
        out
    }

    fn lcov_file(&self, out: &mut String, file: &str) {
        let totals = self.file_totals(file);
        self.lcov_file_with(out, file, &totals);
    }

    fn lcov_file_with(&self, out: &mut String, file: &str, totals: &Totals) {
        let _ = writeln!(out, "SF:{file}");
        let own: Vec<&FunctionRecord> = self
            .functions
            .iter()
            .filter(|f| f.filenames.first().is_some_and(|n| &**n == file))
            .collect();
        for f in &own {
            let line = f.regions.first().map_or(0, |r| r.region.line_start);
            let _ = writeln!(out, "FN:{line},{}", f.name);
        }
        for f in &own {
            let _ = writeln!(out, "FNDA:{},{}", f.execution_count, f.name);
        }
        let _ = writeln!(out, "FNF:{}", totals.functions.total);
        let _ = writeln!(out, "FNH:{}", totals.functions.hit);
        let data = self.coverage_for_file(file);
        for (line, count) in line_stats(&data.segments) {
            let _ = writeln!(out, "DA:{line},{count}");
        }
        self.lcov_branches(out, &data);
        let _ = writeln!(out, "BRF:{}", totals.branches.total);
        let _ = writeln!(out, "BRH:{}", totals.branches.hit);
        let _ = writeln!(out, "LF:{}", totals.lines.total);
        let _ = writeln!(out, "LH:{}", totals.lines.hit);
        out.push_str("end_of_record\n");
    }

    fn lcov_branches(&self, out: &mut String, data: &Data) {
        self.branch_records(data, &mut |line, pair, index, taken| {
            let _ = match taken {
                Some(side) => writeln!(out, "BRDA:{line},{pair},{index},{side}"),
                None => writeln!(out, "BRDA:{line},{pair},{index},-"),
            };
        });
    }

    /// The LCOV branch records of a file's data, in order: line, pair, index in the line, taken
    /// (None: LCOV's `-`).
    fn branch_records(&self, data: &Data, emit: &mut dyn FnMut(u32, u32, u32, Option<u32>)) {
        // (path of start locations, position, branch); newer llvm-cov leaves branches folded on
        // both sides out before sorting, older ones after (they take part in the sort).
        let newer = self.flavor.nested_branch_order();
        let shown = |b: &CountedRegion| {
            if self.flavor.folds_per_side() {
                !b.true_folded || !b.false_folded
            } else {
                !(b.true_folded && b.false_folded)
            }
        };
        let mut list: Vec<LcovBranch> = Vec::new();
        for b in data.branches.iter().filter(|b| !newer || shown(b)) {
            list.push((vec![b.region.start()], list.len(), *b));
        }
        let mut nested = Vec::new();
        let mut path = Vec::new();
        let mut position = 0;
        self.nested_branches(&data.expansions, &mut path, &mut position, &mut nested);
        list.extend(nested.into_iter().filter(|(_, _, b)| !newer || shown(b)));
        if newer {
            list.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            if self.flavor.unifies_instantiations() {
                list = unify_instantiations(list);
            }
        } else {
            // std::sort by line and column (not stable: reproduced exactly in `introsort`);
            // an expansion's branch has the line of the outermost expansion and its own column.
            let key =
                |e: &(Vec<(u32, u32)>, usize, CountedRegion)| (e.0[0].0, e.2.region.col_start);
            introsort(&mut list, &|a, b| key(a) < key(b));
        }
        let mut i = 0;
        while i < list.len() {
            let line = list[i].0[0].0;
            let mut pair = 0;
            let mut index = 0;
            while i < list.len() && list[i].0[0].0 == line {
                let b = &list[i].2;
                i += 1;
                if !shown(b) {
                    continue;
                }
                // llvm-cov prints the counts as unsigned (32-bit).
                let (c1, c2) = (b.count as u32, b.false_count as u32);
                for side in [c1, c2] {
                    emit(line, pair, index, (c1 != 0 || c2 != 0).then_some(side));
                    index += 1;
                }
                pair += 1;
            }
        }
    }

    fn nested_branches(
        &self,
        expansions: &[(CountedRegion, &FunctionRecord)],
        path: &mut Vec<(u32, u32)>,
        position: &mut usize,
        out: &mut Vec<LcovBranch>,
    ) {
        for (r, f) in expansions {
            let d = coverage_for_expansion(r, f);
            path.push(r.region.start());
            self.nested_branches(&d.expansions, path, position, out);
            for b in &d.branches {
                if b.region.file_id == r.region.expanded_file_id {
                    let p = if self.flavor.nested_branch_order() {
                        path.clone()
                    } else {
                        // Older llvm-cov shows an expansion's branches on the line of the
                        // outermost expansion.
                        vec![path[0]]
                    };
                    out.push((p, *position, *b));
                    *position += 1;
                }
            }
            path.pop();
        }
    }
}

/// Sorted LCOV branches with the same expansion path summed into the first of them
/// (llvm-cov's combineInstanceCounts): one pair per place instead of one per instantiation.
fn unify_instantiations(list: Vec<LcovBranch>) -> Vec<LcovBranch> {
    let mut out: Vec<LcovBranch> = Vec::with_capacity(list.len());
    for b in list {
        match out.last_mut() {
            Some(sum) if sum.0 == b.0 => {
                sum.2.count = sum.2.count.wrapping_add(b.2.count);
                sum.2.false_count = sum.2.false_count.wrapping_add(b.2.false_count);
            }
            _ => out.push(b),
        }
    }
    out
}

/// libstdc++'s std::sort (introsort: median-of-three quicksort down to 16 elements, heapsort
/// past the depth limit, then insertion sort), so that an unstable sort llvm-cov does is
/// reproduced element for element.
fn introsort<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    let n = v.len();
    if n < 2 {
        return;
    }
    let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
    introsort_loop(v, depth, less);
    final_insertion_sort(v, less);
}

const THRESHOLD: usize = 16;

fn introsort_loop<T>(mut v: &mut [T], mut depth: usize, less: &dyn Fn(&T, &T) -> bool) {
    while v.len() > THRESHOLD {
        if depth == 0 {
            heap_sort(v, less);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, less);
        let (left, right) = v.split_at_mut(cut);
        introsort_loop(right, depth, less);
        v = left;
    }
}

fn move_median_to_first<T>(
    v: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &dyn Fn(&T, &T) -> bool,
) {
    if less(&v[a], &v[b]) {
        if less(&v[b], &v[c]) {
            v.swap(result, b);
        } else if less(&v[a], &v[c]) {
            v.swap(result, c);
        } else {
            v.swap(result, a);
        }
    } else if less(&v[a], &v[c]) {
        v.swap(result, a);
    } else if less(&v[b], &v[c]) {
        v.swap(result, c);
    } else {
        v.swap(result, b);
    }
}

fn partition_pivot<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) -> usize {
    let n = v.len();
    let mid = n / 2;
    move_median_to_first(v, 0, 1, mid, n - 1, less);
    // Unguarded partition of [1, n) around v[0].
    let mut first = 1;
    let mut last = n;
    loop {
        while less(&v[first], &v[0]) {
            first += 1;
        }
        last -= 1;
        while less(&v[0], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn heap_sort<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    // std::make_heap then std::sort_heap (std::__adjust_heap with __push_heap).
    let n = v.len();
    if n < 2 {
        return;
    }
    let mut parent = (n - 2) / 2;
    loop {
        adjust_heap(v, parent, n, less);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    let mut end = n;
    while end > 1 {
        end -= 1;
        v.swap(0, end);
        adjust_heap(v, 0, end, less);
    }
}

fn adjust_heap<T>(v: &mut [T], hole: usize, len: usize, less: &dyn Fn(&T, &T) -> bool) {
    // Move the hole down to a leaf taking the larger child, then push the value back up.
    let top = hole;
    let mut hole = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v.swap(hole, child);
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v.swap(hole, child - 1);
        hole = child - 1;
    }
    // __push_heap: the value now at `hole` (the original top) moves up while its parent is less.
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && less(&v[parent], &v[hole]) {
        v.swap(hole, parent);
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
}

fn insertion_sort<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        if less(&v[i], &v[0]) {
            v[..=i].rotate_right(1);
        } else {
            let mut j = i;
            while less(&v[j], &v[j - 1]) {
                v.swap(j, j - 1);
                j -= 1;
            }
        }
    }
}

fn final_insertion_sort<T>(v: &mut [T], less: &dyn Fn(&T, &T) -> bool) {
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        for i in THRESHOLD..v.len() {
            let mut j = i;
            while less(&v[j], &v[j - 1]) {
                v.swap(j, j - 1);
                j -= 1;
            }
        }
    } else {
        insertion_sort(v, less);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn introsort_sorts() {
        let mut v: Vec<u32> = (0..300).map(|i| (i * 7919) % 101).collect();
        introsort(&mut v, &|a, b| a < b);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        let mut e: Vec<u32> = Vec::new();
        introsort(&mut e, &|a, b| a < b);
    }

    /// Two instantiations of one generic `if` (same place) become one pair with the sums; a
    /// branch elsewhere on the line stays its own pair.
    #[test]
    fn instantiations_of_a_branch_are_summed() {
        let at = |line, col, count, false_count| -> LcovBranch {
            let region = Region {
                count: Counter::Zero,
                false_count: Counter::Zero,
                file_id: 0,
                expanded_file_id: 0,
                line_start: line,
                col_start: col,
                line_end: line,
                col_end: col + 5,
                kind: Kind::Branch,
            };
            let b = CountedRegion {
                region,
                count,
                false_count,
                true_folded: false,
                false_folded: false,
            };
            (vec![(line, col)], 0, b)
        };
        let out = unify_instantiations(vec![at(7, 4, 3, 0), at(7, 4, 0, 2), at(7, 20, 1, 1)]);
        let got: Vec<_> = out
            .iter()
            .map(|(p, _, b)| (p[0], b.count, b.false_count))
            .collect();
        assert_eq!(got, vec![((7, 4), 3, 2), ((7, 20), 1, 1)]);
    }
}
