//! The exact count model, one for every runtime (docs/output.md, "Exact counts").
//!
//! Per process instance (pid and start time), module and runtime, the artifacts - dumps and
//! snapshots alike, in collection order - are successive states of the same counters: a dump
//! holds everything counted since the process started, so adding two dumps of one process
//! counts the first one twice. Within an instance the counters only grow unless the program
//! resets them; a reset shows in the data as a counter lower than in the previous state. An
//! instance's coverage is the sum, over its reset segments, of each segment's last state; the
//! instances (restarts, several processes of one binary) add up.
//!
//! A runtime that merges an earlier file into its counters before writing (LLVM `%m` pools,
//! libgcov) keeps that content in memory from then on: the model subtracts what each dump
//! merged ("inflation") from that dump and from every later state of the instance until a reset
//! clears the memory.
//!
//! The sum of the instances is kept up to date as states arrive, so a timeline point costs one
//! pass over the module's counters, and memory is one counter vector per instance (plus the
//! inflation, for instances that merged something), not per artifact.
use std::collections::BTreeMap;

/// A process instance: its pid and, when the session recorded it, its start time (two
/// processes that had the same pid one after the other are two instances).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    pub pid: u32,
    pub start: Option<u64>,
}

/// What taking one state in did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// A counter was lower than in the instance's previous state: a new reset segment began.
    pub reset: bool,
    /// The module's total changed.
    pub changed: bool,
    /// The state had merged content subtracted.
    pub merged: bool,
}

#[derive(Clone, Debug, Default)]
struct Series {
    /// The instance's own counts now: the last state minus the inflation.
    own: Vec<u64>,
    /// Its memory as the last state showed it (counters including the inflation); kept only
    /// while there is inflation (otherwise it is `own`).
    memory: Option<Vec<u64>>,
    /// What merges put into its memory since the last reset.
    inflation: Option<Vec<u64>>,
    /// MC/DC bitmap bytes of its last state (bits are ORed, never added).
    bits: Vec<u8>,
    states: u64,
    segments: u64,
}

/// The exact counts of one module (one runtime) over the session.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    len: usize,
    bits_len: usize,
    /// Sum of the closed segments' last states.
    closed: Vec<u64>,
    closed_bits: Vec<u8>,
    /// closed + the own counts of every instance (kept in step).
    total: Vec<u64>,
    series: BTreeMap<Instance, Series>,
    /// Resets detected (segments closed), for the summary.
    pub resets: u64,
    /// States that had merged content subtracted.
    pub merged_states: u64,
    /// States taken in.
    pub states: u64,
    /// Which blocks of [`CHANGE_BLOCK`] counters changed their total since the last
    /// [`Tally::clear_changed`] (bit `b` of word `b / 64`): what a timeline point computes again.
    changed: Vec<u64>,
    /// Scratch: the blocks whose counters differ from the instance's previous state.
    differs: Vec<bool>,
    /// The instance whose own counts are `total` itself (its `own` is left empty): while it is
    /// the only one, nothing was reset and nothing merged, which is the common case, a state
    /// costs a comparison with `total` and a copy of the blocks that changed.
    alias: Option<Instance>,
}

/// Changes are tracked by blocks of this many counters.
pub const CHANGE_BLOCK: usize = 64;

fn mark(bitset: &mut [u64], block: usize) {
    if let Some(w) = bitset.get_mut(block / 64) {
        *w |= 1 << (block % 64);
    }
}

/// Whether any counter of `range` is in a block marked in `bitset` (from
/// [`Tally::changed_blocks`]).
pub fn any_changed(bitset: &[u64], range: std::ops::Range<usize>) -> bool {
    if range.is_empty() {
        return false;
    }
    let (first, last) = (range.start / CHANGE_BLOCK, (range.end - 1) / CHANGE_BLOCK);
    (first..=last).any(|b| bitset.get(b / 64).is_none_or(|w| w & (1 << (b % 64)) != 0))
}

/// Compare a state with the previous one block by block: `differs[b]` says whether block `b`
/// changed (blocks past either end count as changed); returns whether any counter went down.
fn compare_blocks(differs: &mut Vec<bool>, blocks: usize, now: &[u64], was: &[u64]) -> bool {
    differs.clear();
    differs.resize(blocks, true);
    let mut lower = false;
    for ((d, now), was) in differs
        .iter_mut()
        .zip(now.chunks(CHANGE_BLOCK))
        .zip(was.chunks(CHANGE_BLOCK))
    {
        let (mut lo, mut ne) = (false, false);
        for (n, w) in now.iter().zip(was) {
            lo |= n < w;
            ne |= n != w;
        }
        lower |= lo;
        *d = ne;
    }
    lower
}

/// `v` as `len` counters (padded with zeros or cut), borrowed when it has that length.
fn fit(v: &[u64], len: usize) -> std::borrow::Cow<'_, [u64]> {
    if v.len() == len {
        std::borrow::Cow::Borrowed(v)
    } else {
        let mut v = v[..v.len().min(len)].to_vec();
        v.resize(len, 0);
        std::borrow::Cow::Owned(v)
    }
}

impl Tally {
    /// A module with `len` counters and `bits_len` bitmap bytes.
    pub fn new(len: usize, bits_len: usize) -> Self {
        Self {
            len,
            bits_len,
            closed: vec![0; len],
            closed_bits: vec![0; bits_len],
            total: vec![0; len],
            changed: vec![u64::MAX; len.div_ceil(CHANGE_BLOCK).div_ceil(64)],
            ..Self::default()
        }
    }

    /// Make room for counters the module turned out to have (SanitizerCoverage PCs outside its
    /// PC table): they were 0 in every earlier state.
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
            let from = self.len / CHANGE_BLOCK;
            self.len = len;
            self.closed.resize(len, 0);
            self.total.resize(len, 0);
            // Every instance keeps what it counted: its new counters start at 0.
            for s in self.series.values_mut() {
                s.own.resize(len, 0);
                if let Some(m) = &mut s.memory {
                    m.resize(len, 0);
                }
                if let Some(i) = &mut s.inflation {
                    i.resize(len, 0);
                }
            }
            self.changed
                .resize(len.div_ceil(CHANGE_BLOCK).div_ceil(64), 0);
            for b in from..len.div_ceil(CHANGE_BLOCK) {
                mark(&mut self.changed, b);
            }
        }
    }

    /// The blocks of counters whose total changed since the last [`Tally::clear_changed`] (all
    /// of them before the first), for [`any_changed`].
    pub fn changed_blocks(&self) -> &[u64] {
        &self.changed
    }

    /// Start noting changes afresh (the caller has seen the totals as they are).
    pub fn clear_changed(&mut self) {
        self.changed.fill(0);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.bits_len == 0
    }

    /// The module's exact counts now (closed segments plus every instance's current state).
    pub fn counters(&self) -> &[u64] {
        &self.total
    }

    /// The MC/DC bitmap now: every state's bits ORed.
    pub fn bits(&self) -> Vec<u8> {
        let mut out = self.closed_bits.clone();
        for s in self.series.values() {
            for (o, b) in out.iter_mut().zip(&s.bits) {
                *o |= b;
            }
        }
        out
    }

    /// Instances seen.
    pub fn instances(&self) -> usize {
        self.series.len()
    }

    /// Take in the next state of `instance`: its counters as the artifact holds them, its
    /// bitmap bytes, and what the runtime merged into its memory right before writing it (the
    /// earlier file's counters), if anything. Slices of the wrong length are padded or cut to the
    /// module's (the caller checks layouts).
    pub fn push(
        &mut self,
        instance: Instance,
        counters: &[u64],
        bits: &[u8],
        merged: Option<&[u64]>,
    ) -> Pushed {
        let len = self.len;
        self.states += 1;
        // One pass over the module's counters where possible: a timeline point of a large
        // module must not cost more than that.
        let memory = fit(counters, len);
        let merged = merged.map(|m| fit(m, len));
        let mut bits = bits[..bits.len().min(self.bits_len)].to_vec();
        bits.resize(self.bits_len, 0);
        if self.alias.is_some() && (self.alias != Some(instance) || merged.is_some()) {
            self.unalias();
        }
        if self.alias == Some(instance)
            && let Some(pushed) = self.push_aliased(instance, &memory, &bits)
        {
            return pushed;
        }
        let is_new = !self.series.contains_key(&instance);
        let alone = if is_new {
            self.series.is_empty()
        } else {
            self.series.len() == 1
        };
        let s = self.series.entry(instance).or_default();
        s.states += 1;
        // Counters the module turned out to have (`grow`) were 0 in the earlier states.
        if !is_new && s.own.len() < len {
            s.own.resize(len, 0);
        }
        // A counter lower than before, in the memory right before this state's merge. Without
        // a merge, the same pass notes which blocks differ from the previous state: the others
        // are left alone below.
        let blocks = len.div_ceil(CHANGE_BLOCK);
        let mut compared = false;
        let reset = !is_new && {
            let lower = match (&merged, &s.memory) {
                (Some(m), _) => {
                    let prev = s.memory.as_ref().unwrap_or(&s.own);
                    memory
                        .iter()
                        .zip(m.iter())
                        .zip(prev)
                        .any(|((&now, &m), &was)| now.saturating_sub(m) < was)
                }
                (None, Some(prev)) => memory.iter().zip(prev).any(|(now, was)| now < was),
                (None, None) => {
                    compared = true;
                    compare_blocks(&mut self.differs, blocks, &memory, &s.own)
                }
            };
            lower || bits.iter().zip(&s.bits).any(|(now, was)| was & !now != 0)
        };
        let mut pushed = Pushed {
            reset,
            changed: false,
            merged: merged.as_ref().is_some_and(|m| m.iter().any(|&x| x > 0)),
        };
        if reset {
            // The segment closes with its last state; the memory starts over (the reset
            // cleared what merges had put there too).
            for (c, &o) in self.closed.iter_mut().zip(&s.own) {
                *c = c.wrapping_add(o);
            }
            for (c, b) in self.closed_bits.iter_mut().zip(&s.bits) {
                *c |= b;
            }
            s.inflation = None;
            s.segments += 1;
            self.resets += 1;
        }
        if let Some(m) = merged.as_ref().filter(|_| pushed.merged) {
            let inf = s.inflation.get_or_insert_with(|| vec![0; len]);
            for (i, &x) in inf.iter_mut().zip(m.iter()) {
                *i = i.saturating_add(x);
            }
            self.merged_states += 1;
        }
        // own = memory - inflation; total += own - previous own (the previous own went to
        // `closed` on a reset, so it stays counted). In place, block by block; a block whose
        // counters are those of the previous state (no inflation) keeps its total.
        let fresh = reset || is_new;
        if s.own.len() != len {
            // A new instance (grown modules resize every instance's counts in `grow`).
            s.own.resize(len, 0);
        }
        let skip = compared && !fresh && s.inflation.is_none();
        let mut changed = false;
        let inflation = s.inflation.as_deref();
        for (b, ((t, o), m)) in self
            .total
            .chunks_mut(CHANGE_BLOCK)
            .zip(s.own.chunks_mut(CHANGE_BLOCK))
            .zip(memory.chunks(CHANGE_BLOCK))
            .enumerate()
        {
            if skip && !self.differs.get(b).copied().unwrap_or(true) {
                continue;
            }
            let mut block_changed = false;
            let at = b * CHANGE_BLOCK;
            for (i, ((t, o), &m)) in t.iter_mut().zip(o.iter_mut()).zip(m).enumerate() {
                let own = match inflation {
                    Some(inf) => m.saturating_sub(inf.get(at + i).copied().unwrap_or(0)),
                    None => m,
                };
                let was = if fresh { 0 } else { *o };
                let before = *t;
                *t = t.wrapping_sub(was).wrapping_add(own);
                block_changed |= *t != before;
                *o = own;
            }
            if block_changed {
                changed = true;
                mark(&mut self.changed, b);
            }
        }
        pushed.changed = changed || bits != s.bits;
        s.memory = s.inflation.is_some().then(|| memory.into_owned());
        s.bits = bits;
        if alone && self.resets == 0 && s.inflation.is_none() {
            // total = closed (nothing) + this instance's own counts.
            s.own = Vec::new();
            self.alias = Some(instance);
        }
        pushed
    }

    /// The aliased instance's own counts as a vector of their own again.
    fn unalias(&mut self) {
        if let Some(a) = self.alias.take()
            && let Some(s) = self.series.get_mut(&a)
        {
            s.own = self.total.clone();
        }
    }

    /// The next state of the aliased instance, when it is no reset (None: it is; the instance
    /// is then unaliased and the state left to the general case).
    fn push_aliased(&mut self, instance: Instance, memory: &[u64], bits: &[u8]) -> Option<Pushed> {
        let blocks = self.len.div_ceil(CHANGE_BLOCK);
        let lower = compare_blocks(&mut self.differs, blocks, memory, &self.total);
        let cleared = |s: &Series| bits.iter().zip(&s.bits).any(|(now, was)| was & !now != 0);
        if lower || self.series.get(&instance).is_none_or(cleared) {
            self.unalias();
            return None;
        }
        let s = self.series.get_mut(&instance)?;
        s.states += 1;
        let mut changed = false;
        for (b, (t, m)) in self
            .total
            .chunks_mut(CHANGE_BLOCK)
            .zip(memory.chunks(CHANGE_BLOCK))
            .enumerate()
        {
            if self.differs.get(b).copied().unwrap_or(true) {
                t.copy_from_slice(m);
                changed = true;
                mark(&mut self.changed, b);
            }
        }
        let pushed = Pushed {
            reset: false,
            changed: changed || bits != s.bits.as_slice(),
            merged: false,
        };
        s.bits = bits.to_vec();
        Some(pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Instance = Instance {
        pid: 1,
        start: Some(10),
    };
    const B: Instance = Instance {
        pid: 2,
        start: Some(20),
    };

    #[test]
    fn cumulative_dumps_of_one_process_count_once() {
        let mut t = Tally::new(3, 0);
        assert!(t.push(A, &[1, 0, 0], &[], None).changed);
        assert!(t.push(A, &[3, 1, 0], &[], None).changed);
        let p = t.push(A, &[3, 1, 0], &[], None);
        assert!(!p.changed && !p.reset);
        assert_eq!(t.counters(), [3, 1, 0]);
        assert_eq!(t.resets, 0);
    }

    #[test]
    fn a_module_that_grows_keeps_what_each_instance_counted() {
        let mut t = Tally::new(2, 0);
        t.push(A, &[8, 1], &[], None);
        t.push(B, &[8, 1], &[], None);
        // A later state names a counter the module did not list yet.
        t.grow(3);
        let p = t.push(A, &[8, 1, 1], &[], None);
        assert!(p.changed && !p.reset);
        assert_eq!(t.counters(), [16, 2, 1]);
        t.push(B, &[8, 1, 0], &[], None);
        assert_eq!(t.counters(), [16, 2, 1]);
        assert_eq!(t.resets, 0);
    }

    #[test]
    fn resets_close_a_segment_and_instances_add_up() {
        let mut t = Tally::new(2, 0);
        t.push(A, &[5, 2], &[], None);
        // Reset after that dump, then 1 and 0 more.
        let p = t.push(A, &[1, 0], &[], None);
        assert!(p.reset && p.changed);
        assert_eq!(t.counters(), [6, 2]);
        t.push(A, &[2, 3], &[], None);
        assert_eq!(t.counters(), [7, 5]);
        // Another process of the same binary.
        t.push(B, &[10, 0], &[], None);
        assert_eq!(t.counters(), [17, 5]);
        // A restart under the same pid is another instance.
        t.push(
            Instance {
                pid: 1,
                start: Some(99),
            },
            &[1, 1],
            &[],
            None,
        );
        assert_eq!(t.counters(), [18, 6]);
        assert_eq!(t.resets, 1);
        assert_eq!(t.instances(), 3);
    }

    #[test]
    fn merged_content_is_subtracted_until_a_reset() {
        // A %m pool: the file held [4, 4] from an earlier run. Dump 1: memory [1, 0] + [4, 4].
        let mut t = Tally::new(2, 0);
        t.push(A, &[5, 4], &[], Some(&[4, 4]));
        assert_eq!(t.counters(), [1, 0]);
        // Dump 2 merges dump 1's file into memory again: memory was [2, 1] + [4, 4] (first merge),
        // plus [5, 4] now.
        let p = t.push(A, &[11, 9], &[], Some(&[5, 4]));
        assert!(!p.reset && p.merged);
        assert_eq!(t.counters(), [2, 1]);
        // A snapshot reads the (inflated) memory: [3, 1] + 9, 8.
        t.push(A, &[12, 9], &[], None);
        assert_eq!(t.counters(), [3, 1]);
        // Reset, one more call, then a dump that merges the file ([11, 9]).
        let p = t.push(A, &[12, 9], &[], Some(&[11, 9]));
        assert!(p.reset);
        assert_eq!(t.counters(), [4, 1]);
    }

    #[test]
    fn changed_blocks_say_which_counters_moved() {
        let n = CHANGE_BLOCK * 3;
        let mut t = Tally::new(n, 0);
        let mut c = vec![1u64; n];
        t.push(A, &c, &[], None);
        t.clear_changed();
        c[CHANGE_BLOCK + 5] += 1;
        assert!(t.push(A, &c, &[], None).changed);
        assert!(!any_changed(t.changed_blocks(), 0..CHANGE_BLOCK));
        assert!(any_changed(
            t.changed_blocks(),
            CHANGE_BLOCK + 5..CHANGE_BLOCK + 6
        ));
        assert!(!any_changed(t.changed_blocks(), 2 * CHANGE_BLOCK..n));
        assert_eq!(t.counters(), c);
        // A second instance, then a reset of the first: the totals stay exact.
        t.clear_changed();
        t.push(B, &vec![2; n], &[], None);
        assert!(any_changed(t.changed_blocks(), 0..1));
        let p = t.push(A, &vec![0; n], &[], None);
        assert!(p.reset);
        let want: Vec<u64> = c.iter().map(|x| x + 2).collect();
        assert_eq!(t.counters(), want);
        t.push(A, &vec![1; n], &[], None);
        let want: Vec<u64> = c.iter().map(|x| x + 3).collect();
        assert_eq!(t.counters(), want);
    }

    #[test]
    fn a_lone_instance_reset_keeps_its_last_state() {
        let mut t = Tally::new(2, 0);
        t.push(A, &[4, 1], &[], None);
        t.push(A, &[5, 1], &[], None);
        let p = t.push(A, &[1, 0], &[], None);
        assert!(p.reset && p.changed);
        assert_eq!(t.counters(), [6, 1]);
        t.push(A, &[2, 2], &[], None);
        assert_eq!(t.counters(), [7, 3]);
        // Then a merge: what it merged is subtracted from then on.
        t.push(A, &[10, 5], &[], Some(&[7, 3]));
        assert_eq!(t.counters(), [5 + 3, 1 + 2]);
    }

    #[test]
    fn bitmaps_are_ored_and_a_cleared_bit_is_a_reset() {
        let mut t = Tally::new(1, 1);
        t.push(A, &[1], &[0b01], None);
        t.push(B, &[1], &[0b10], None);
        assert_eq!(t.bits(), [0b11]);
        let p = t.push(A, &[1], &[0b00], None);
        assert!(p.reset);
        assert_eq!(t.bits(), [0b11]);
        assert_eq!(t.counters(), [3]);
    }
}
