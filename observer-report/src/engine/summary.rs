//! A module's per-file figures (`llvm-cov export -summary-only`) kept up to date point after
//! point: what does not depend on the counters (which profile record each function reads, its
//! instantiation group, its files, which records llvm-cov keeps when two are alike) is worked
//! out once per module, and each function's figures are looked at again only when its own
//! counters changed (the count model says which blocks of counters did, see
//! [`Summarizer::summary_changed`]; [`Summarizer::summary`] compares with the last counters
//! itself). A function that ran is evaluated by its compiled program (shared by the functions
//! of its shape) and its figures are kept when its values kept their order; many such
//! functions are looked at on several threads. A timeline point then costs the functions that
//! ran since the last point; the figures are those of [`super::coverage::ModuleCoverage`] (the
//! tests compare both).
use std::{
    collections::{BTreeMap, HashMap},
    ops::Range,
    sync::Arc,
};

use super::{
    coverage::{self, Flavor, Summary},
    mapping::{FunctionMapping, Kind, Mapping},
    profile::ModuleProfile,
    program::Program,
};
use crate::{
    model::{Counts, Totals},
    tally::{CHANGE_BLOCK, any_changed},
};

/// What a function's record reads at one point (`load` in [`super::coverage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// Its profile record's counters.
    Counts,
    /// The profile has its name only under another hash: llvm-cov leaves it out.
    Absent,
    /// The profile has no record of its name: all counters zero.
    Zeros,
}

/// A function's figures for the input it was last computed for (None: not loaded), and the
/// values they were computed from (values of the same shape give the same figures): its
/// program's values ([`Program::run`]), or its region values when it has no program.
#[derive(Clone, Debug)]
struct Cached {
    input: Input,
    values: Option<Vec<u64>>,
    /// Where the last point's nonzero values are (in the program's list, or among the region
    /// values), by value, each marked when its value equals the one before, and where its zeros
    /// are (for [`order_holds`]: new values are checked against these alone, without reading
    /// the old ones, which a point would otherwise fetch from memory for every function).
    order: Vec<u32>,
    zeros: Vec<u32>,
    /// `order` and `zeros` are there (a function of more than 2^31 values has none).
    ordered: bool,
    figures: Option<(Summary, u64)>,
}

/// One function's place in the module, independent of the counters.
#[derive(Clone, Debug)]
struct Place {
    /// Its profile key (index into `Summarizer::keys`), if the profile has that key at all.
    key: Option<usize>,
    /// Its name (index into the names the profile knows), if the profile knows it.
    name: Option<usize>,
    /// llvm-cov keeps the first loaded record of each (files, name).
    dedup: usize,
    /// Its instantiation group (file and start of its first region there), if any.
    group: Option<usize>,
    /// The files it mentions (indices into `Summarizer::files`).
    files: Vec<usize>,
    /// Two of its regions cover the same area (llvm-cov adds up their counts).
    combines: bool,
    /// Where its execution count (its first code region's) is: in its program's list, or among
    /// its region values (None: zero).
    executed_at: Option<usize>,
    /// Its region values, compiled (None: evaluated by [`coverage::region_values`]); one
    /// program for all the functions of the same shape, which keeps a point's reads of them
    /// in the cache.
    program: Option<Arc<Program>>,
}

/// Per-point figures of one module.
pub struct Summarizer {
    flavor: Flavor,
    places: Vec<Place>,
    /// Per profile key: its records' counter ranges (llvm-profdata adds up same-key records).
    keys: Vec<Vec<Range<usize>>>,
    /// Per profile key: the name it belongs to.
    key_name: Vec<usize>,
    names: usize,
    dedups: usize,
    /// Per group: its file.
    group_file: Vec<usize>,
    files: Vec<Arc<str>>,
    cache: Vec<Option<Cached>>,
    /// The counters of the last [`Summarizer::summary`] (None after
    /// [`Summarizer::summary_changed`], whose caller says what changed).
    prev: Option<Vec<u64>>,
    /// Scratch: blocks changed since the last point, for [`Summarizer::summary`].
    changed: Vec<u64>,
    /// Scratch space of the threads that compute functions again.
    scratch: Vec<Scratch>,
    /// Functions computed again at the last point (for the benchmark and tests).
    pub recomputed: usize,
}

impl Summarizer {
    pub fn new(mapping: &Mapping, profile: &ModuleProfile, flavor: Flavor) -> Self {
        let mut key_of: HashMap<(u64, u64), usize> = HashMap::new();
        let mut name_of: HashMap<u64, usize> = HashMap::new();
        let mut keys: Vec<Vec<Range<usize>>> = Vec::new();
        let mut key_name = Vec::new();
        for f in &profile.functions {
            let names = name_of.len();
            let name = *name_of.entry(f.name_ref).or_insert(names);
            let k = *key_of.entry((f.name_ref, f.func_hash)).or_insert_with(|| {
                keys.push(Vec::new());
                key_name.push(name);
                keys.len() - 1
            });
            keys[k].push(f.counters.clone());
        }
        let mut dedup_of: HashMap<(Vec<Arc<str>>, String), usize> = HashMap::new();
        let mut group_of: HashMap<(usize, (u32, u32)), usize> = HashMap::new();
        let mut group_file = Vec::new();
        let mut file_of: HashMap<Arc<str>, usize> = HashMap::new();
        let mut files = Vec::new();
        let mut places = Vec::with_capacity(mapping.functions.len());
        let mut programs: HashMap<Arc<Program>, ()> = HashMap::new();
        for f in &mapping.functions {
            let name = coverage::name_without_prefix(&f.name, f.filenames.first().map(|s| &**s));
            let n = dedup_of.len();
            let dedup = *dedup_of.entry((f.filenames.clone(), name)).or_insert(n);
            let mut file_ids: Vec<usize> = Vec::new();
            for name in &f.filenames {
                let id = *file_of.entry(name.clone()).or_insert_with(|| {
                    files.push(name.clone());
                    files.len() - 1
                });
                if !file_ids.contains(&id) {
                    file_ids.push(id);
                }
            }
            // The record's regions (branches and MC/DC decisions are kept apart): its main
            // file is the one no expansion expands, its group where its first region there
            // starts.
            let regions = || {
                f.regions
                    .iter()
                    .filter(|r| r.kind != Kind::McdcDecision && !r.kind.is_branch())
            };
            let mut expanded = vec![false; f.filenames.len()];
            for r in regions().filter(|r| r.kind == Kind::Expansion) {
                if let Some(e) = expanded.get_mut(r.expanded_file_id as usize) {
                    *e = true;
                }
            }
            let group = expanded
                .iter()
                .position(|e| !e)
                .and_then(|main| {
                    let first = regions().find(|r| r.file_id as usize == main)?;
                    Some((file_of[&f.filenames[main]], first.start()))
                })
                .map(|g| {
                    *group_of.entry(g).or_insert_with(|| {
                        group_file.push(g.0);
                        group_file.len() - 1
                    })
                });
            let mut areas: Vec<_> = regions().map(|r| (r.file_id, r.start(), r.end())).collect();
            areas.sort_unstable();
            let combines = areas.windows(2).any(|w| w[0] == w[1]);
            let executed = f
                .regions
                .iter()
                .filter(|r| r.kind != Kind::McdcDecision)
                .position(|r| !r.kind.is_branch())
                .map(|i| 2 * i);
            let program = Program::compile(f).map(|p| match programs.get_key_value(&p) {
                Some((shared, _)) => shared.clone(),
                None => {
                    let p = Arc::new(p);
                    programs.insert(p.clone(), ());
                    p
                }
            });
            let executed_at = match &program {
                Some(p) => executed.and_then(|i| p.output(i)).map(|at| at as usize),
                None => executed,
            };
            places.push(Place {
                key: key_of.get(&(f.name_ref, f.func_hash)).copied(),
                name: name_of.get(&f.name_ref).copied(),
                dedup,
                group,
                files: file_ids,
                combines,
                executed_at,
                program,
            });
        }
        Self {
            flavor,
            cache: vec![None; places.len()],
            places,
            keys,
            key_name,
            names: name_of.len(),
            dedups: dedup_of.len(),
            group_file,
            files,
            prev: None,
            changed: Vec::new(),
            scratch: Vec::new(),
            recomputed: 0,
        }
    }

    /// Per-file figures for these counters (the module's counter vector). What changed since
    /// the last call is found by comparing with a copy of its counters.
    pub fn summary(&mut self, mapping: &Mapping, counters: &[u64]) -> BTreeMap<String, Totals> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.clear();
        changed.resize(counters.len().div_ceil(CHANGE_BLOCK).div_ceil(64), 0);
        match self.prev.as_mut() {
            Some(prev) if prev.len() == counters.len() => {
                for (b, (p, c)) in prev
                    .chunks_mut(CHANGE_BLOCK)
                    .zip(counters.chunks(CHANGE_BLOCK))
                    .enumerate()
                {
                    if p != c {
                        changed[b / 64] |= 1 << (b % 64);
                        p.copy_from_slice(c);
                    }
                }
            }
            _ => {
                changed.fill(u64::MAX);
                self.prev = Some(counters.to_vec());
            }
        }
        let prev = self.prev.take();
        let out = self.summary_changed(mapping, counters, &changed);
        self.prev = prev;
        self.changed = changed;
        out
    }

    /// Per-file figures for these counters, the caller saying which blocks of counters changed
    /// since the last call ([`crate::tally::Tally::changed_blocks`]): only the functions
    /// whose counters are in those are looked at again.
    pub fn summary_changed(
        &mut self,
        mapping: &Mapping,
        counters: &[u64],
        changed: &[u64],
    ) -> BTreeMap<String, Totals> {
        self.prev = None;
        // Each key's counters (summed when several records share it), and which keys and names
        // the profile has: `llvm-profdata merge -sparse` leaves all-zero records out.
        let summed: HashMap<usize, Vec<u64>> = (0..self.keys.len())
            .filter(|&k| self.keys[k].len() > 1)
            .map(|k| (k, self.sum_key(k, counters)))
            .collect();
        let mut present = vec![false; self.keys.len()];
        let mut named = vec![false; self.names];
        for k in 0..self.keys.len() {
            if self
                .key_counts_ref(k, counters, &summed)
                .iter()
                .any(|&x| x != 0)
            {
                present[k] = true;
                named[self.key_name[k]] = true;
            }
        }
        // Which functions to look at again: their input kind changed, or their counters did.
        let mut todo: Vec<(usize, Input)> = Vec::new();
        for (i, place) in self.places.iter().enumerate() {
            let kind = match place.key.filter(|&k| present[k]) {
                Some(_) => Input::Counts,
                None if place.name.is_some_and(|n| named[n]) => Input::Absent,
                None => Input::Zeros,
            };
            let same = match &self.cache[i] {
                Some(c) if c.input == kind => {
                    kind != Input::Counts
                        || !place.key.is_some_and(|k| {
                            self.keys[k].iter().any(|r| any_changed(changed, r.clone()))
                        })
                }
                _ => false,
            };
            if !same {
                todo.push((i, kind));
            }
        }
        // Computed on as many threads as there are cores when there is much to do (a point where
        // every function ran), each over its own run of functions.
        let parts = if todo.len() < PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_THREADS)
        };
        while self.scratch.len() < parts {
            self.scratch.push(Scratch::default());
        }
        let ctx = Refresh {
            flavor: self.flavor,
            places: &self.places,
            mapping,
            counters,
            summed: &summed,
            keys: &self.keys,
        };
        let per = todo.len().div_ceil(parts).max(1);
        let mut rest: &mut [Option<Cached>] = &mut self.cache;
        let mut offset = 0;
        let mut jobs = Vec::new();
        for (chunk, scratch) in todo.chunks(per).zip(self.scratch.iter_mut()) {
            let end = chunk.last().map_or(offset, |(i, _)| i + 1);
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(end - offset);
            jobs.push((chunk, mine, offset, scratch));
            rest = tail;
            offset = end;
        }
        self.recomputed = if jobs.len() <= 1 {
            jobs.into_iter()
                .map(|(chunk, cache, offset, scratch)| ctx.run(chunk, cache, offset, scratch))
                .sum()
        } else {
            let ctx = &ctx;
            std::thread::scope(|s| {
                let handles: Vec<_> = jobs
                    .into_iter()
                    .map(|(chunk, cache, offset, scratch)| {
                        s.spawn(move || ctx.run(chunk, cache, offset, scratch))
                    })
                    .collect();
                // A panic in a worker is a bug of covobs: passed on as one.
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .sum()
            })
        };
        let mut taken = vec![false; self.dedups];
        let mut groups: Vec<Option<(Summary, u64)>> = vec![None; self.group_file.len()];
        let mut file_seen = vec![false; self.files.len()];
        for i in 0..self.places.len() {
            let place = &self.places[i];
            let Some((summary, executed)) = self.cache[i].as_ref().and_then(|c| c.figures) else {
                continue;
            };
            if std::mem::replace(&mut taken[place.dedup], true) {
                continue;
            }
            for &file in &place.files {
                file_seen[file] = true;
            }
            if let Some(g) = place.group {
                match &mut groups[g] {
                    Some((s, e)) => {
                        s.merge(&summary);
                        *e = e.wrapping_add(executed);
                    }
                    slot @ None => *slot = Some((summary, executed)),
                }
            }
        }
        let mut out: BTreeMap<String, Totals> = self
            .files
            .iter()
            .zip(&file_seen)
            .filter(|(_, seen)| **seen)
            .map(|(name, _)| {
                (
                    name.to_string(),
                    Totals {
                        regions: Some(Counts::default()),
                        ..Totals::default()
                    },
                )
            })
            .collect();
        for (g, figures) in groups.iter().enumerate() {
            let Some((s, executed)) = figures else {
                continue;
            };
            let Some(t) = out.get_mut(&*self.files[self.group_file[g]]) else {
                continue;
            };
            t.lines.add(s.lines);
            t.branches.add(s.branches);
            if let Some(r) = t.regions.as_mut() {
                r.add(s.regions);
            }
            t.functions.total += 1;
            t.functions.hit += u64::from(*executed > 0);
        }
        out
    }

    /// The counters of a key several records share, added up as llvm-profdata does (records of
    /// another length than the first are left out).
    fn sum_key(&self, k: usize, counters: &[u64]) -> Vec<u64> {
        let mut v: Option<Vec<u64>> = None;
        for r in &self.keys[k] {
            let c = counters.get(r.clone()).unwrap_or(&[]);
            match &mut v {
                Some(v) if v.len() == c.len() => {
                    for (x, y) in v.iter_mut().zip(c) {
                        *x = x.saturating_add(*y);
                    }
                }
                Some(_) => {}
                None => v = Some(c.to_vec()),
            }
        }
        v.unwrap_or_default()
    }

    /// Key `k`'s counters.
    fn key_counts_ref<'a>(
        &self,
        k: usize,
        counters: &'a [u64],
        summed: &'a HashMap<usize, Vec<u64>>,
    ) -> &'a [u64] {
        match self.keys[k].as_slice() {
            [only] => counters.get(only.clone()).unwrap_or(&[]),
            _ => summed.get(&k).map_or(&[], |v| v.as_slice()),
        }
    }
}

/// Functions looked at again at once on several threads when at least this many changed.
const PARALLEL_MIN: usize = 512;
/// At most this many threads.
const MAX_THREADS: usize = 4;

/// One thread's scratch space.
#[derive(Default)]
struct Scratch {
    slots: Vec<u64>,
    values: Vec<u64>,
    shape: Shape,
}

/// What computing functions again reads.
struct Refresh<'a> {
    flavor: Flavor,
    places: &'a [Place],
    mapping: &'a Mapping,
    counters: &'a [u64],
    summed: &'a HashMap<usize, Vec<u64>>,
    keys: &'a [Vec<Range<usize>>],
}

impl Refresh<'_> {
    /// Key `k`'s counters.
    fn key_counts(&self, k: usize) -> &[u64] {
        match self.keys[k].as_slice() {
            [only] => self.counters.get(only.clone()).unwrap_or(&[]),
            _ => self.summed.get(&k).map_or(&[], |v| v.as_slice()),
        }
    }

    /// Compute the functions of `todo` (index, input) again into `cache` (the cache from
    /// function `offset` on); returns how many had their figures computed from scratch.
    fn run(
        &self,
        todo: &[(usize, Input)],
        cache: &mut [Option<Cached>],
        offset: usize,
        scratch: &mut Scratch,
    ) -> usize {
        let mut recomputed = 0;
        for &(i, kind) in todo {
            let (Some(place), Some(f), Some(slot)) = (
                self.places.get(i),
                self.mapping.functions.get(i),
                cache.get_mut(i - offset),
            ) else {
                continue;
            };
            let zeros;
            let input = match (kind, place.key) {
                (Input::Counts, Some(k)) => self.key_counts(k),
                (Input::Zeros, _) => {
                    zeros = vec![0u64; coverage::zero_counts_len(f)];
                    &zeros[..]
                }
                _ => &[],
            };
            let Cached {
                values: old_values,
                mut order,
                mut zeros,
                ordered,
                figures: old_figures,
                ..
            } = slot.take().unwrap_or(Cached {
                input: kind,
                values: None,
                order: Vec::new(),
                zeros: Vec::new(),
                ordered: false,
                figures: None,
            });
            let has_values = kind != Input::Absent
                && evaluate(
                    place.program.as_deref(),
                    f,
                    input,
                    &mut scratch.slots,
                    &mut scratch.values,
                );
            // Where the values are: the program's list, or the region values.
            let list = if place.program.is_some() {
                &scratch.slots
            } else {
                &scratch.values
            };
            let executed = place
                .executed_at
                .and_then(|at| list.get(at).copied())
                .unwrap_or(0);
            // The figures depend on the values only through which are zero and which are equal
            // (llvm-cov compares neighbouring counts when it builds the segments): values of the
            // same shape as before give the same figures. Usually the values keep their order
            // (those equal before stay equal, the others in increasing order): then they have
            // the same shape, which the list shows without gathering the values.
            let reusable = has_values && !place.combines && old_values.is_some();
            if let (true, true, Some((summary, _))) = (reusable, ordered, old_figures)
                && order_holds(&order, &zeros, list)
            {
                *slot = Some(Cached {
                    input: kind,
                    values: old_values,
                    order,
                    zeros,
                    ordered,
                    figures: Some((summary, executed)),
                });
                continue;
            }
            if let (Some(p), true) = (&place.program, has_values) {
                p.gather(&scratch.slots, &mut scratch.values);
            }
            let reuse = match (&old_values, old_figures) {
                (Some(was), Some((summary, _)))
                    if reusable && scratch.shape.same(was, &scratch.values) =>
                {
                    Some((summary, executed))
                }
                _ => None,
            };
            let reused = reuse.is_some();
            let figures = match reuse {
                Some(f) => Some(f),
                None if !has_values => None,
                None => {
                    recomputed += 1;
                    coverage::load_counts(f, input).map(|rec| {
                        (
                            coverage::function_summary(&rec, self.flavor),
                            rec.execution_count,
                        )
                    })
                }
            };
            let ordered = has_values
                && sort_order(
                    &scratch.values,
                    place.program.as_ref().map(|p| p.keys()),
                    &mut order,
                    &mut zeros,
                );
            // Reused figures keep the values they were computed for (of the same shape as
            // these): the point then writes no values back. Otherwise the buffer of the last
            // values is used again.
            let values = match (reused, has_values) {
                (true, _) => old_values,
                (false, true) => {
                    let mut v = old_values.unwrap_or_default();
                    std::mem::swap(&mut v, &mut scratch.values);
                    Some(v)
                }
                (false, false) => None,
            };
            *slot = Some(Cached {
                input: kind,
                values,
                order,
                zeros,
                ordered,
                figures,
            });
        }
        recomputed
    }
}

/// A function's values for these counters: its program's list into `slots` when it has one,
/// else its region values into `values`; false when llvm-cov leaves the function out.
fn evaluate(
    program: Option<&Program>,
    f: &FunctionMapping,
    counts: &[u64],
    slots: &mut Vec<u64>,
    values: &mut Vec<u64>,
) -> bool {
    if f.regions.is_empty()
        || (f.regions.len() == 1
            && f.regions[0].count.is_zero()
            && counts.first().is_some_and(|&c| c > 0))
    {
        return false;
    }
    match program {
        Some(p) => p.eval(counts, slots),
        None => match coverage::region_values(f, counts) {
            Some(v) => {
                *values = v;
                true
            }
            None => false,
        },
    }
}

/// Whether `list` has its zeros where `zeros` says and its other values in the `order` of
/// [`sort_order`] (then its values have the shape of those the order was made from).
fn order_holds(order: &[u32], zeros: &[u32], list: &[u64]) -> bool {
    let value = |i: u32| list.get((i & POSITION) as usize).copied();
    if !zeros.iter().all(|&z| value(z) == Some(0)) {
        return false;
    }
    let mut last = 0;
    order.iter().all(|&e| {
        let y = value(e).unwrap_or(0);
        let fits = y != 0 && if e & EQUAL != 0 { y == last } else { y > last };
        last = y;
        fits
    })
}

/// Compares the shape of two value lists: the same zeros, the same equal pairs.
struct Shape {
    there: HashMap<u64, u64, Mixed>,
    images: Vec<u64>,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            there: HashMap::with_hasher(Mixed::new()),
            images: Vec::new(),
        }
    }
}

impl Shape {
    /// The same zeros and the same equal pairs.
    fn same(&mut self, a: &[u64], b: &[u64]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(&x, &y)| (x == 0) == (y == 0))
            && self.same_partition(a, b)
    }

    /// The same equal pairs among the nonzero values (of the same zeros).
    fn same_partition(&mut self, a: &[u64], b: &[u64]) -> bool {
        self.there.clear();
        // Equal values stay equal (old -> new is a function)...
        let mut last = (0, 0);
        for (&x, &y) in a.iter().zip(b) {
            if x == 0 || (x, y) == last {
                continue;
            }
            if *self.there.entry(x).or_insert(y) != y {
                return false;
            }
            last = (x, y);
        }
        // ... and different ones stay different (it is one to one).
        self.images.clear();
        self.images.extend(self.there.values());
        self.images.sort_unstable();
        self.images.dedup();
        self.images.len() == self.there.len()
    }
}

/// In an order entry: the place (in the program's list, or among the region values), and the
/// mark of a value equal to the one before.
const POSITION: u32 = u32::MAX >> 1;
const EQUAL: u32 = !POSITION;

/// Where the nonzero values are, by value, each marked [`EQUAL`] when its value equals the one
/// before, and where the zeros are; `keys` says where value `i` is in the program's list
/// ([`Program::keys`]), without a program it is at `i`. False (and nothing there) for places
/// beyond [`POSITION`].
fn sort_order(
    values: &[u64],
    keys: Option<&[u32]>,
    order: &mut Vec<u32>,
    zeros: &mut Vec<u32>,
) -> bool {
    order.clear();
    zeros.clear();
    let place = |i: usize| {
        match keys {
            Some(k) => k.get(i).copied(),
            None => u32::try_from(i).ok(),
        }
        .filter(|&p| p <= POSITION)
    };
    for (i, &v) in values.iter().enumerate() {
        let Some(p) = place(i) else {
            order.clear();
            zeros.clear();
            return false;
        };
        if v == 0 {
            zeros.push(p);
        } else {
            order.push(i as u32);
        }
    }
    order.sort_unstable_by_key(|&i| values.get(i as usize).copied().unwrap_or(0));
    let mut last = 0;
    for e in order.iter_mut() {
        let v = values.get(*e as usize).copied().unwrap_or(0);
        let p = place(*e as usize).unwrap_or(0);
        *e = if v == last { p | EQUAL } else { p };
        last = v;
    }
    true
}

/// A fast hash for u64 keys (std's SipHash is several times slower, and this runs for every
/// region of every function that ran): a random seed, then MurmurHash3's 64-bit finalizer, so
/// that counts an artifact chose cannot be aimed at one bucket without knowing the seed.
#[derive(Clone, Copy)]
struct Mixed(u64);

impl Mixed {
    fn new() -> Self {
        use std::hash::BuildHasher as _;
        Self(std::collections::hash_map::RandomState::new().hash_one(0x636f_766f_6273u64))
    }
}

impl std::hash::BuildHasher for Mixed {
    type Hasher = MixedHasher;

    fn build_hasher(&self) -> MixedHasher {
        MixedHasher(self.0)
    }
}

struct MixedHasher(u64);

impl std::hash::Hasher for MixedHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 ^= x;
    }
}
