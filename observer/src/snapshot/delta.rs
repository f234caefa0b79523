//! What each snapshot added: per module, the counters that are covered now and were not in the
//! previous snapshot of the same process.
use std::collections::HashMap;

/// Which counters of a module are covered (one bit each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoveredSet {
    bits: Vec<u64>,
    len: usize,
}

impl CoveredSet {
    pub fn from_fn(len: usize, covered: impl Fn(usize) -> bool) -> Self {
        let mut bits = vec![0u64; len.div_ceil(64)];
        for i in 0..len {
            if covered(i) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Self { bits, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Covered here and not in `before` (all of them when the shapes differ).
    pub fn added_since(&self, before: &CoveredSet) -> u64 {
        if before.len != self.len {
            return self.count();
        }
        self.bits
            .iter()
            .zip(&before.bits)
            .map(|(now, was)| u64::from((now & !was).count_ones()))
            .sum()
    }

    /// Covered in `before` and not any more (the target reset its counters).
    pub fn dropped_since(&self, before: &CoveredSet) -> u64 {
        if before.len != self.len {
            return 0;
        }
        before.added_since(self)
    }
}

/// The change a snapshot brought to its module (in the artifact's metadata).
pub use crate::layout::artifact::Delta;

/// The last covered set of each (process, module).
#[derive(Default)]
pub struct DeltaTracker {
    last: HashMap<(u32, String), CoveredSet>,
}

impl DeltaTracker {
    pub fn update(&mut self, pid: u32, module: &str, now: CoveredSet) -> Delta {
        let key = (pid, module.to_owned());
        let delta = match self.last.get(&key) {
            Some(before) => Delta {
                covered: now.count(),
                new_covered: now.added_since(before),
                reset: now.dropped_since(before),
                first: false,
            },
            None => Delta {
                covered: now.count(),
                new_covered: now.count(),
                reset: 0,
                first: true,
            },
        };
        self.last.insert(key, now);
        delta
    }

    /// Forget a process (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.last.retain(|(p, _), _| *p != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_count_newly_covered_counters() {
        let mut t = DeltaTracker::default();
        let a = CoveredSet::from_fn(130, |i| i % 2 == 0);
        let d = t.update(1, "m", a);
        assert_eq!((d.covered, d.new_covered, d.first), (65, 65, true));
        let b = CoveredSet::from_fn(130, |i| i % 2 == 0 || i == 129 || i == 3);
        let d = t.update(1, "m", b);
        assert_eq!((d.covered, d.new_covered, d.reset), (67, 2, 0));
        let c = CoveredSet::from_fn(130, |i| i == 129);
        let d = t.update(1, "m", c);
        assert_eq!((d.covered, d.new_covered, d.reset), (1, 0, 66));
        let d = t.update(2, "m", CoveredSet::from_fn(130, |_| true));
        assert!(d.first, "another process starts over");
    }
}
