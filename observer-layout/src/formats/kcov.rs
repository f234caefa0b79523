//! A kcov buffer as words: word 0 is the count, then one PC per entry (KCOV_TRACE_PC) or four
//! words per comparison record (KCOV_TRACE_CMP: type, arg1, arg2, ip). The `.kcov` artifact is
//! exactly these words, little-endian, as the kernel wrote them, with word 0 set to the count
//! the record covers.
use serde::Serialize;

/// What a buffer holds (in the artifact's metadata).
pub use crate::artifact::KcovMode as Mode;

impl Mode {
    /// Words of one entry.
    pub fn stride(self) -> usize {
        match self {
            Self::Pc => 1,
            Self::Cmp => 4,
        }
    }

    /// The kernel's `struct kcov` mode (`kcov::MODE_*`), when it is a tracing one.
    pub fn from_kernel(mode: u32) -> Option<Self> {
        match mode {
            covobs_common::kcov::MODE_TRACE_PC => Some(Self::Pc),
            covobs_common::kcov::MODE_TRACE_CMP => Some(Self::Cmp),
            _ => None,
        }
    }

    /// The `format.name` of an artifact of this mode.
    pub fn format_name(self) -> &'static str {
        match self {
            Self::Pc => "kcov-trace-pc",
            Self::Cmp => "kcov-trace-cmp",
        }
    }

    pub fn from_format_name(name: &str) -> Option<Self> {
        match name {
            "kcov-trace-pc" => Some(Self::Pc),
            "kcov-trace-cmp" => Some(Self::Cmp),
            _ => None,
        }
    }
}

/// One comparison record of KCOV_TRACE_CMP, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CmpRecord {
    /// Operand size in bytes (1, 2, 4, 8).
    pub size: u8,
    /// One operand is a compile-time constant (KCOV_CMP_CONST): `arg1` is it.
    #[serde(rename = "const")]
    pub is_const: bool,
    #[serde(serialize_with = "hex")]
    pub arg1: u64,
    #[serde(serialize_with = "hex")]
    pub arg2: u64,
    /// Return address of the comparison's callback (symbolize ip - 1).
    #[serde(serialize_with = "hex")]
    pub ip: u64,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

impl CmpRecord {
    /// `type` is KCOV_CMP_CONST (bit 0) | KCOV_CMP_SIZE(n) (log2 of the size in bits 1-2).
    pub fn decode(words: &[u64]) -> Option<Self> {
        let [ty, arg1, arg2, ip] = *words else {
            return None;
        };
        Some(Self {
            size: 1u8 << ((ty >> 1) & 3),
            is_const: ty & 1 != 0,
            arg1,
            arg2,
            ip,
        })
    }
}

/// A buffer's meaningful words: word 0 (the count) and the entries it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub mode: Mode,
    /// `1 + count * stride` words.
    pub words: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("a kcov buffer is whole 8-byte words; {0} bytes is not")]
    NotWords(usize),
    #[error("an empty kcov buffer has at least its count word")]
    Empty,
    #[error("the count word says {count} entries, the file holds {have}")]
    Count { count: u64, have: u64 },
}

impl Trace {
    /// A trace of `count` entries from the words of a buffer (word 0 replaced by `count`).
    /// Entries beyond the words given are cut.
    pub fn new(mode: Mode, mut words: Vec<u64>, count: u64) -> Self {
        let stride = mode.stride() as u64;
        let have = (words.len().saturating_sub(1) as u64) / stride;
        let count = count.min(have);
        words.truncate((1 + count * stride) as usize);
        if words.is_empty() {
            words.push(0);
        }
        words[0] = count;
        Self { mode, words }
    }

    /// Entries (PCs, or comparison records).
    pub fn count(&self) -> u64 {
        self.words.first().copied().unwrap_or(0)
    }

    /// The covered addresses in buffer order: the PCs, or the ips of the comparisons.
    pub fn pcs(&self) -> impl Iterator<Item = u64> + '_ {
        let stride = self.mode.stride();
        let skip = stride - 1;
        self.words
            .get(1..)
            .unwrap_or(&[])
            .chunks_exact(stride)
            .map(move |e| e[skip])
    }

    /// The comparison records (CMP mode; empty otherwise).
    pub fn cmp_records(&self) -> impl Iterator<Item = CmpRecord> + '_ {
        let cmp = self.mode == Mode::Cmp;
        self.words
            .get(1..)
            .unwrap_or(&[])
            .as_chunks::<4>()
            .0
            .iter()
            .filter(move |_| cmp)
            .filter_map(|r| CmpRecord::decode(r))
    }

    /// The artifact's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Read an artifact back, checking that its count word matches its length.
    pub fn parse(mode: Mode, bytes: &[u8]) -> Result<Self, TraceError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(TraceError::NotWords(bytes.len()));
        }
        let words: Vec<u64> = bytes
            .as_chunks::<8>()
            .0
            .iter()
            .map(|c| u64::from_le_bytes(*c))
            .collect();
        let Some(&count) = words.first() else {
            return Err(TraceError::Empty);
        };
        let have = (words.len() as u64 - 1) / mode.stride() as u64;
        if count != have || !(words.len() as u64 - 1).is_multiple_of(mode.stride() as u64) {
            return Err(TraceError::Count { count, have });
        }
        Ok(Self { mode, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_traces_count_and_round_trip() {
        let t = Trace::new(Mode::Pc, vec![99, 0x10, 0x20, 0x10, 0x30], 3);
        assert_eq!(t.words, vec![3, 0x10, 0x20, 0x10]);
        assert_eq!(t.pcs().collect::<Vec<_>>(), vec![0x10, 0x20, 0x10]);
        assert_eq!(t.cmp_records().count(), 0);
        let back = Trace::parse(Mode::Pc, &t.to_bytes()).expect("parse");
        assert_eq!(back, t);
        // A count beyond the words is cut to what is there.
        assert_eq!(Trace::new(Mode::Pc, vec![0, 1], 5).count(), 1);
        assert!(matches!(
            Trace::parse(Mode::Pc, &[0; 12]),
            Err(TraceError::NotWords(12))
        ));
        assert!(matches!(
            Trace::parse(Mode::Pc, &[2, 0, 0, 0, 0, 0, 0, 0]),
            Err(TraceError::Count { count: 2, have: 0 })
        ));
    }

    #[test]
    fn cmp_records_are_four_words() {
        // KCOV_CMP_CONST | KCOV_CMP_SIZE(2) = 1 | 2 << 1: a 4-byte comparison with a constant.
        let t = Trace::new(
            Mode::Cmp,
            vec![2, 5, 7, 9, 0xffff_0001, 6, 1, 2, 0xffff_0002, 0xdead],
            2,
        );
        let recs: Vec<CmpRecord> = t.cmp_records().collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            CmpRecord {
                size: 4,
                is_const: true,
                arg1: 7,
                arg2: 9,
                ip: 0xffff_0001
            }
        );
        assert_eq!((recs[1].size, recs[1].is_const), (8, false));
        assert_eq!(t.pcs().collect::<Vec<_>>(), vec![0xffff_0001, 0xffff_0002]);
        assert_eq!(t.words.len(), 9, "the word after the last record is cut");
        let j = serde_json::to_value(recs[0]).expect("json");
        assert_eq!(j["ip"], "0xffff0001");
        assert_eq!(j["const"], true);
    }
}
