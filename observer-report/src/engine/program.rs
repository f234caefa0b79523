//! A function's region values compiled once: its counter expressions in an evaluation order
//! worked out from the mapping, so that a timeline point evaluates each with one addition or
//! subtraction into a flat list, with no recursion and no memo, giving the values
//! [`super::coverage::region_values`] gives (each region's value is an entry of the list). The
//! list starts with a zero and the function's counters, so that every operand is an index into
//! it.
use super::mapping::{Counter, Expression, FunctionMapping, Kind};

/// Where an operand's value is.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Zero,
    /// A profile counter of the function.
    Counter(u32),
    /// An expression evaluated earlier (index into the program's slots).
    Slot(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Op<T> {
    lhs: T,
    rhs: T,
    subtract: bool,
}

/// A function's region values as a straight-line program. Functions of the same shape (the
/// same counters, expressions and regions in the same order) have equal programs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Program {
    /// How many counters it reads (a shorter record: llvm-cov leaves the function out).
    needs: usize,
    /// The expressions the regions use, each after those it uses (operands: indices into the
    /// list).
    ops: Vec<Op<u32>>,
    /// Per region (MC/DC decisions left out): where its count and its false count are.
    outputs: Vec<u32>,
    /// The places in the list the outputs read, once each, zero left out, in increasing order
    /// (what [`Program::gather`] gives). The regions' values are these through `outputs`, so values
    /// of these with the same zeros and the same equal pairs give region values with the same
    /// zeros and equal pairs (and half as many to compare: a region's false count is usually
    /// zero, and several regions often share a counter).
    keys: Vec<u32>,
}

/// Deeper expression chains than this are left to the recursive evaluator.
const MAX_DEPTH: u32 = 10_000;

impl Program {
    /// None for a mapping the recursive evaluator should handle (an expression index out of
    /// range, a cycle, a very deep chain): the caller falls back to it.
    pub fn compile(f: &FunctionMapping) -> Option<Self> {
        let mut c = Compiler {
            exprs: &f.expressions,
            slot: vec![Slot::Unseen; f.expressions.len()],
            ops: Vec::new(),
            needs: 0,
        };
        let mut outputs = Vec::with_capacity(f.regions.len() * 2);
        for r in f.regions.iter().filter(|r| r.kind != Kind::McdcDecision) {
            outputs.push(c.operand(r.count, 0)?);
            outputs.push(c.operand(r.false_count, 0)?);
        }
        // The list: zero, the counters, the expressions' values.
        let at = |o: Operand| -> Option<u32> {
            match o {
                Operand::Zero => Some(0),
                Operand::Counter(i) => i.checked_add(1),
                Operand::Slot(s) => u32::try_from(c.needs + 1).ok()?.checked_add(s),
            }
        };
        let ops = c
            .ops
            .iter()
            .map(|op| {
                Some(Op {
                    lhs: at(op.lhs)?,
                    rhs: at(op.rhs)?,
                    subtract: op.subtract,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let outputs = outputs.into_iter().map(at).collect::<Option<Vec<_>>>()?;
        let mut keys: Vec<u32> = outputs.iter().copied().filter(|&i| i != 0).collect();
        keys.sort_unstable();
        keys.dedup();
        Some(Self {
            needs: c.needs,
            ops,
            outputs,
            keys,
        })
    }

    /// Evaluate the list (zero, the counters, the expressions) for these counters into `slots`;
    /// false when llvm-cov leaves the function out for lack of counters.
    pub fn eval(&self, counts: &[u64], slots: &mut Vec<u64>) -> bool {
        let Some(counts) = counts.get(..self.needs) else {
            return false;
        };
        slots.clear();
        slots.reserve(1 + counts.len() + self.ops.len());
        slots.push(0);
        slots.extend_from_slice(counts);
        // Every index is below the list's length by construction: `get` only keeps this free
        // of panics.
        for op in &self.ops {
            let l = slots.get(op.lhs as usize).copied().unwrap_or(0);
            let r = slots.get(op.rhs as usize).copied().unwrap_or(0);
            slots.push(if op.subtract {
                l.wrapping_sub(r)
            } else {
                l.wrapping_add(r)
            });
        }
        true
    }

    /// The places in the list the regions' values come from, once each, zero left out.
    pub fn keys(&self) -> &[u32] {
        &self.keys
    }

    /// The values of the [`Program::keys`] from an evaluated list into `out` (cleared first).
    pub fn gather(&self, slots: &[u64], out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.keys
                .iter()
                .map(|&i| slots.get(i as usize).copied().unwrap_or(0)),
        );
    }

    /// Where in the list output `i` (2 x region + 0 for its count, 1 for its false count) is.
    pub fn output(&self, i: usize) -> Option<u32> {
        self.outputs.get(i).copied()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unseen,
    Visiting,
    At(u32),
}

struct Compiler<'a> {
    exprs: &'a [Expression],
    slot: Vec<Slot>,
    ops: Vec<Op<Operand>>,
    needs: usize,
}

impl Compiler<'_> {
    fn operand(&mut self, c: Counter, depth: u32) -> Option<Operand> {
        match c {
            Counter::Zero => Some(Operand::Zero),
            Counter::Ref(i) => {
                self.needs = self.needs.max(i as usize + 1);
                Some(Operand::Counter(i))
            }
            Counter::Expr(i) => {
                let i = i as usize;
                match *self.slot.get(i)? {
                    Slot::At(s) => return Some(Operand::Slot(s)),
                    Slot::Visiting => return None,
                    Slot::Unseen => {}
                }
                if depth > MAX_DEPTH {
                    return None;
                }
                self.slot[i] = Slot::Visiting;
                let e = self.exprs[i];
                let lhs = self.operand(e.lhs, depth + 1)?;
                let rhs = self.operand(e.rhs, depth + 1)?;
                let s = u32::try_from(self.ops.len()).ok()?;
                self.ops.push(Op {
                    lhs,
                    rhs,
                    subtract: e.subtract,
                });
                self.slot[i] = Slot::At(s);
                Some(Operand::Slot(s))
            }
        }
    }
}
