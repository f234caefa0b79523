//! A function's region values compiled once: its counter expressions in an evaluation order
//! worked out from the mapping, so that a timeline point evaluates each with one addition or
//! subtraction into a flat list, with no recursion and no memo, giving the values
//! [`super::coverage::region_values`] gives.
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

#[derive(Clone, Copy, Debug)]
struct Op {
    lhs: Operand,
    rhs: Operand,
    subtract: bool,
}

/// A function's region values as a straight-line program.
#[derive(Clone, Debug)]
pub struct Program {
    /// How many counters it reads (a shorter record: llvm-cov leaves the function out).
    needs: usize,
    /// The expressions the regions use, each after those it uses.
    ops: Vec<Op>,
    /// Per region (MC/DC decisions left out): its count and its false count.
    outputs: Vec<Operand>,
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
        Some(Self {
            needs: c.needs,
            ops: c.ops,
            outputs,
        })
    }

    /// The region values for these counters into `out` (cleared first); false when llvm-cov
    /// leaves the function out for lack of counters. `slots` is scratch space.
    pub fn run(&self, counts: &[u64], slots: &mut Vec<u64>, out: &mut Vec<u64>) -> bool {
        out.clear();
        if counts.len() < self.needs {
            return false;
        }
        let value = |o: Operand, slots: &[u64]| match o {
            Operand::Zero => 0,
            Operand::Counter(i) => counts[i as usize],
            Operand::Slot(i) => slots[i as usize],
        };
        slots.clear();
        for op in &self.ops {
            let l = value(op.lhs, slots);
            let r = value(op.rhs, slots);
            slots.push(if op.subtract {
                l.wrapping_sub(r)
            } else {
                l.wrapping_add(r)
            });
        }
        out.extend(self.outputs.iter().map(|&o| value(o, slots)));
        true
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
    ops: Vec<Op>,
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
