//! The hit maps of one module: per label, counter index (or PC, [`Keys`]) -> hits gained
//! (docs/output.md, "Label hit maps"). Little endian; LEB128 varints for the sparse entries:
//!
//! ```text
//! magic    8 bytes  "COVOBSHM"
//! version  u32      2
//! keys     u8       0: counter indices (below `counters`), 1: module-relative PCs, 2: kernel PCs
//! counters u64      the module's counters (for PCs: the PCs the session saw)
//! labels   u32      label records that follow
//! build id u16 length, then that many bytes (lowercase hex; empty when unknown)
//! per label:
//!   name    u16 length, then the UTF-8 name
//!   entries varint
//!   per entry, by increasing index: varint gap (index - previous index - 1; the first: index),
//!           varint hits
//! ```
use super::{compute::Hits, runtime::Keys};

pub const MAGIC: &[u8; 8] = b"COVOBSHM";
pub const VERSION: u32 = 2;

/// One module's hit maps, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HitMaps {
    pub build_id: String,
    pub keys: Keys,
    pub counters: u64,
    /// (label, counter index -> hits), in the file's order.
    pub labels: Vec<(String, Hits)>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn encode(maps: &HitMaps) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(maps.keys.code());
    out.extend_from_slice(&maps.counters.to_le_bytes());
    out.extend_from_slice(&(maps.labels.len() as u32).to_le_bytes());
    let id = maps.build_id.as_bytes();
    out.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
    for (name, hits) in &maps.labels {
        // Label names are at most 200 bytes (super::name).
        let n = name.as_bytes();
        out.extend_from_slice(&(n.len() as u16).to_le_bytes());
        out.extend_from_slice(n);
        varint(&mut out, hits.len() as u64);
        let mut next = 0u64;
        for (&i, &h) in hits {
            varint(&mut out, i - next);
            varint(&mut out, h);
            next = i.saturating_add(1);
        }
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("hit map cut short at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "hit map: a varint longer than 64 bits at byte {}",
            self.at
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "hit map: a name is not UTF-8".into())
    }
}

pub fn decode(b: &[u8]) -> Result<HitMaps, String> {
    let mut r = Reader { b, at: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a covobs hit map (magic)".into());
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!("hit map version {version}, covobs reads {VERSION}"));
    }
    let code = r.take(1)?[0];
    let keys = Keys::from_code(code).ok_or_else(|| format!("hit map: keys {code}"))?;
    let counters = r.u64()?;
    let n = r.u32()?;
    let build_id = r.string()?;
    let mut labels = Vec::new();
    for _ in 0..n {
        let name = r.string()?;
        let entries = r.varint()?;
        let mut hits = Hits::new();
        let mut next = 0u64;
        for _ in 0..entries {
            let i = next.saturating_add(r.varint()?);
            if keys == Keys::Counter && i >= counters {
                return Err(format!("hit map: counter {i} of a module with {counters}"));
            }
            if hits.insert(i, r.varint()?).is_some() {
                return Err(format!("hit map: index {i} twice"));
            }
            next = i.saturating_add(1);
        }
        labels.push((name, hits));
    }
    if r.at != b.len() {
        return Err(format!(
            "hit map: {} bytes after the last label",
            b.len() - r.at
        ));
    }
    Ok(HitMaps {
        build_id,
        keys,
        counters,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_survive_the_round_trip_and_bad_bytes_are_refused() {
        let maps = HitMaps {
            build_id: "abcd".into(),
            keys: Keys::Counter,
            counters: 1000,
            labels: vec![
                ("a".into(), Hits::from([(0, 1), (1, 300), (999, u64::MAX)])),
                ("b".into(), Hits::new()),
            ],
        };
        let bytes = encode(&maps);
        assert_eq!(decode(&bytes), Ok(maps));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // PCs: any 64-bit key.
        let pcs = HitMaps {
            build_id: String::new(),
            keys: Keys::KernelPc,
            counters: 2,
            labels: vec![(
                "k".into(),
                Hits::from([(0xffff_ffff_8100_0000, 2), (u64::MAX, 1)]),
            )],
        };
        assert_eq!(decode(&encode(&pcs)), Ok(pcs));
    }
}
