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
            ..Self::default()
        }
    }

    /// Make room for counters the module turned out to have (SanitizerCoverage PCs outside its
    /// PC table): they were 0 in every earlier state.
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
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
        }
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
        let is_new = !self.series.contains_key(&instance);
        let s = self.series.entry(instance).or_default();
        s.states += 1;
        // A counter lower than before, in the memory right before this state's merge.
        let reset = !is_new && {
            let prev = s.memory.as_ref().unwrap_or(&s.own);
            let lower = match &merged {
                Some(m) => memory
                    .iter()
                    .zip(m.iter())
                    .zip(prev)
                    .any(|((&now, &m), &was)| now.saturating_sub(m) < was),
                None => memory.iter().zip(prev).any(|(now, was)| now < was),
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
        // `closed` on a reset, so it stays counted). In place, in one pass.
        let fresh = reset || is_new;
        if s.own.len() != len {
            // A new instance (grown modules resize every instance's counts in `grow`).
            s.own.resize(len, 0);
        }
        let mut changed = false;
        let inflation = s.inflation.as_deref();
        for (i, ((t, o), &m)) in self
            .total
            .iter_mut()
            .zip(s.own.iter_mut())
            .zip(memory.iter())
            .enumerate()
        {
            let own = match inflation {
                Some(inf) => m.saturating_sub(inf[i]),
                None => m,
            };
            let was = if fresh { 0 } else { *o };
            let before = *t;
            *t = t.wrapping_sub(was).wrapping_add(own);
            changed |= *t != before;
            *o = own;
        }
        pushed.changed = changed || bits != s.bits;
        s.memory = s.inflation.is_some().then(|| memory.into_owned());
        s.bits = bits;
        pushed
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
