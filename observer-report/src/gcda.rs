//! The counters of a .gcda file, for the exact count model (tally.rs): read them in file order,
//! and write the same file back with other values (gcov then reads the exact counts).
//!
//! A .gcda is a header (magic, version, stamp, and since GCC 12 a checksum) and records (tag,
//! length, payload). The arc counters (`--coverage` writes no other kind) are the 64-bit values
//! of the `GCOV_TAG_ARC_COUNTS` records, low word first; since GCC 12 a negative length says "that
//! many bytes of counters, all zero, not stored". Every other record is kept as it is.
use std::hash::{Hash, Hasher};

use covobs_layout::formats::gcov::MAGIC;

/// GCOV_TAG_FOR_COUNTER (GCOV_COUNTER_ARCS).
const TAG_ARCS: u32 = 0x01a1_0000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Other {
        tag: u32,
        length: u32,
        payload: Vec<u8>,
    },
    Arcs {
        values: Vec<u64>,
    },
}

/// A parsed .gcda.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gcda {
    header: Vec<u8>,
    records: Vec<Record>,
    /// Bytes per length unit: 1 since GCC 12, 4 (words) before.
    unit: usize,
    /// What libgcov wrote after the last record (a zero word), kept as it was.
    trailer: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl Gcda {
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if u32_at(data, 0) != Some(MAGIC) {
            return Err("not a .gcda file (no gcda magic)".into());
        }
        let major = super::gcov::gcc_major(data).ok_or("no gcov version in the .gcda")?;
        let (header_len, unit) = if major >= 12 { (16, 1) } else { (12, 4) };
        let header = data
            .get(..header_len)
            .ok_or("the .gcda is shorter than its header")?
            .to_vec();
        let mut records = Vec::new();
        let mut at = header_len;
        loop {
            let rest = data.len() - at;
            if rest == 0 || (rest == 4 && u32_at(data, at) == Some(0)) {
                break;
            }
            let (Some(tag), Some(length)) = (u32_at(data, at), u32_at(data, at + 4)) else {
                return Err(format!("a record cut short at byte {at}"));
            };
            at += 8;
            let signed = length as i32;
            let stored = if signed < 0 {
                0
            } else {
                (length as usize).saturating_mul(unit)
            };
            let payload = data
                .get(at..at.saturating_add(stored))
                .ok_or_else(|| format!("record {tag:#x} runs past the end of the .gcda"))?;
            at += stored;
            if tag == TAG_ARCS {
                let values = if signed < 0 {
                    vec![0; (signed.unsigned_abs() as usize).saturating_mul(unit) / 8]
                } else {
                    // Low word first, each word little-endian: a little-endian u64.
                    payload
                        .as_chunks::<8>()
                        .0
                        .iter()
                        .map(|c| u64::from_le_bytes(*c))
                        .collect()
                };
                records.push(Record::Arcs { values });
            } else {
                records.push(Record::Other {
                    tag,
                    length,
                    payload: payload.to_vec(),
                });
            }
        }
        Ok(Self {
            header,
            records,
            unit,
            trailer: data[at..].to_vec(),
        })
    }

    /// The arc counters, in file order.
    pub fn counters(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for r in &self.records {
            if let Record::Arcs { values } = r {
                out.extend_from_slice(values);
            }
        }
        out
    }

    /// What identifies the counters' layout: the functions (ident and checksums) and how many
    /// counters each has. Two files with the same layout hold counters of the same program.
    pub fn layout(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.header.get(8..).hash(&mut h);
        for r in &self.records {
            match r {
                Record::Other { tag, payload, .. } if *tag == 0x0100_0000 => {
                    (tag, payload).hash(&mut h)
                }
                Record::Other { .. } => {}
                Record::Arcs { values } => values.len().hash(&mut h),
            }
        }
        h.finish()
    }

    /// The file with `counters` (in file order) in place of its own; missing values are 0.
    pub fn with_counters(&self, counters: &[u64]) -> Vec<u8> {
        let mut out = self.header.clone();
        let mut next = counters.iter().copied();
        for r in &self.records {
            match r {
                Record::Other {
                    tag,
                    length,
                    payload,
                } => {
                    out.extend_from_slice(&tag.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                    out.extend_from_slice(payload);
                }
                Record::Arcs { values } => {
                    let bytes = values.len() * 8;
                    let length = u32::try_from(bytes / self.unit).unwrap_or(u32::MAX);
                    out.extend_from_slice(&TAG_ARCS.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                    for _ in values {
                        let v = next.next().unwrap_or(0);
                        out.extend_from_slice(&(v as u32).to_le_bytes());
                        out.extend_from_slice(&((v >> 32) as u32).to_le_bytes());
                    }
                }
            }
        }
        out.extend_from_slice(&self.trailer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcda(records: &[(u32, i32, &[u8])]) -> Vec<u8> {
        let mut b = MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&u32::from_be_bytes(*b"B22*").to_le_bytes());
        b.extend_from_slice(&[7, 0, 0, 0, 9, 0, 0, 0]);
        for (tag, len, payload) in records {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(payload);
        }
        b.extend_from_slice(&[0; 4]);
        b
    }

    #[test]
    fn counters_round_trip_and_zero_records_expand() {
        let f = [1u8, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0];
        let arcs = [5u8, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        let data = gcda(&[
            (0xa100_0000, 8, &[1, 0, 0, 0, 0, 0, 0, 0]),
            (0x0100_0000, 12, &f),
            (TAG_ARCS, 16, &arcs),
            (0x0100_0000, 12, &f),
            (TAG_ARCS, -24, &[]),
        ]);
        let g = Gcda::parse(&data).expect("parse");
        assert_eq!(g.counters(), [5 | 1 << 32, 7, 0, 0, 0]);
        // Unchanged counters: the same bytes, but the zero record is written out.
        let same = g.with_counters(&g.counters());
        let again = Gcda::parse(&same).expect("reparse");
        assert_eq!(again.counters(), g.counters());
        assert_eq!(again.layout(), g.layout());
        assert_eq!(same.len(), data.len() + 24);
        let other = Gcda::parse(&g.with_counters(&[1, 2, 3, 4, 5])).expect("parse");
        assert_eq!(other.counters(), [1, 2, 3, 4, 5]);
        assert!(Gcda::parse(&data[..data.len() - 9]).is_err());
        assert!(Gcda::parse(b"nope").is_err());
    }
}
