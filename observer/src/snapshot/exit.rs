//! Final snapshots, userspace side: what to ask the kernel to copy when a process exits (the
//! live ranges of its module plans, in order), and the reassembly of the chunks it sends back
//! into one buffer per range.
use std::collections::HashMap;

use covobs_common::{SnapRegion, SnapRegions, snap};

use super::{ModulePlan, Range};
/// The records the kernel sends back, decoded by the probes' reader.
pub use crate::probes::final_snapshots::FinalRecord;

#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    #[error(
        "{0} ranges of counters to copy at exit: more than the kernel side takes ({max})",
        max = snap::MAX_REGIONS
    )]
    TooManyRanges(usize),
}

/// The kernel-side registration of a process's plans.
pub fn regions(plans: &[ModulePlan], generation: u64) -> Result<SnapRegions, ExitError> {
    let ranges: Vec<Range> = plans.iter().flat_map(|p| p.live_ranges()).collect();
    if ranges.len() > snap::MAX_REGIONS {
        return Err(ExitError::TooManyRanges(ranges.len()));
    }
    let mut r = SnapRegions {
        generation,
        count: ranges.len() as u32,
        ..Default::default()
    };
    for (slot, range) in r.regions.iter_mut().zip(&ranges) {
        *slot = SnapRegion {
            addr: range.addr,
            len: range.len,
        };
    }
    Ok(r)
}

/// A final copy, reassembled.
#[derive(Debug)]
pub struct FinalCopy {
    pub pid: u32,
    pub tid: u32,
    pub generation: u64,
    /// When the kernel finished the copy (CLOCK_BOOTTIME ns) and when it started (first chunk).
    pub start_ns: u64,
    pub end_ns: u64,
    /// One buffer per registered range.
    pub regions: Vec<Vec<u8>>,
    /// Per range: bytes the kernel could not read or that never arrived (zero in `regions`).
    pub unreadable: Vec<u64>,
    /// Their sum.
    pub unreadable_bytes: u64,
    /// Chunks that did not fit in the ring buffer: the copy is incomplete.
    pub dropped: u32,
    pub hook: &'static str,
}

struct Partial {
    generation: u64,
    regions: Vec<Vec<u8>>,
    /// Per range: bytes received, and bytes received as unreadable.
    received: Vec<u64>,
    unreadable: Vec<u64>,
    start_ns: u64,
}

impl Partial {
    fn new(generation: u64, ranges: &[Range], start_ns: u64) -> Self {
        Self {
            generation,
            regions: ranges.iter().map(|r| vec![0u8; r.len as usize]).collect(),
            received: vec![0; ranges.len()],
            unreadable: vec![0; ranges.len()],
            start_ns,
        }
    }
}

/// Puts chunks back together, per process.
#[derive(Default)]
pub struct Assembler {
    /// pid -> the ranges registered for it (and their generation).
    registered: HashMap<u32, (u64, Vec<Range>)>,
    partial: HashMap<u32, Partial>,
}

impl Assembler {
    pub fn register(&mut self, pid: u32, generation: u64, ranges: Vec<Range>) {
        self.registered.insert(pid, (generation, ranges));
    }

    pub fn forget(&mut self, pid: u32) {
        self.registered.remove(&pid);
        self.partial.remove(&pid);
    }

    /// Take one record; a finished copy comes out at its end record.
    pub fn add(&mut self, record: FinalRecord) -> Option<FinalCopy> {
        match record {
            FinalRecord::Chunk {
                hdr,
                generation,
                region,
                offset,
                error,
                data,
            } => {
                let (reg_gen, ranges) = self.registered.get(&hdr.tgid)?;
                if *reg_gen != generation {
                    return None;
                }
                let p = self
                    .partial
                    .entry(hdr.tgid)
                    .or_insert_with(|| Partial::new(generation, ranges, hdr.ts_ns));
                let r = region as usize;
                let buf = p.regions.get_mut(r)?;
                let at = offset as usize;
                let end = at.checked_add(data.len())?.min(buf.len());
                if at < end {
                    buf[at..end].copy_from_slice(&data[..end - at]);
                    p.received[r] += (end - at) as u64;
                    if error != 0 {
                        p.unreadable[r] += (end - at) as u64;
                    }
                }
                None
            }
            FinalRecord::End(end) => {
                let pid = end.hdr.tgid;
                if self.registered.get(&pid).map(|(g, _)| *g) != Some(end.generation) {
                    return None;
                }
                let (reg_gen, ranges) = self.registered.remove(&pid)?;
                let p = self
                    .partial
                    .remove(&pid)
                    .unwrap_or_else(|| Partial::new(reg_gen, &ranges, end.hdr.ts_ns));
                // Chunks lost on the way count as unreadable too.
                let unreadable: Vec<u64> = ranges
                    .iter()
                    .zip(p.received.iter().zip(&p.unreadable))
                    .map(|(r, (got, bad))| bad + r.len.saturating_sub(*got))
                    .collect();
                Some(FinalCopy {
                    pid,
                    tid: end.hdr.tid,
                    generation: p.generation,
                    start_ns: p.start_ns,
                    end_ns: end.hdr.ts_ns,
                    regions: p.regions,
                    unreadable_bytes: unreadable.iter().sum(),
                    unreadable,
                    dropped: end.dropped,
                    hook: match end.hook {
                        snap::HOOK_SCHED_PROCESS_EXIT => "ebpf:sched_process_exit",
                        _ => "ebpf",
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use covobs_common::{Header, SnapEndRecord, kind};

    use super::*;

    fn hdr(kind: u32, ts: u64) -> Header {
        Header {
            kind,
            _reserved: 0,
            ts_ns: ts,
            tgid: 7,
            tid: 7,
        }
    }

    #[test]
    fn reassembles_chunks_of_several_ranges() {
        let mut a = Assembler::default();
        a.register(
            7,
            3,
            vec![
                Range {
                    addr: 0xff0,
                    len: 20,
                },
                Range { addr: 0, len: 4 },
            ],
        );
        let chunk = |region, offset, data: &[u8], error| FinalRecord::Chunk {
            hdr: hdr(kind::SNAP_CHUNK, 10),
            generation: 3,
            region,
            offset,
            error,
            data: data.to_vec(),
        };
        assert!(a.add(chunk(0, 0, &[1; 16], 0)).is_none());
        assert!(a.add(chunk(0, 16, &[0; 4], -14)).is_none());
        assert!(a.add(chunk(1, 0, &[9, 8, 7, 6], 0)).is_none());
        let end = SnapEndRecord {
            hdr: hdr(kind::SNAP_END, 20),
            generation: 3,
            regions: 2,
            chunks: 3,
            failed: 1,
            dropped: 0,
            hook: snap::HOOK_SCHED_PROCESS_EXIT,
            _pad: 0,
        };
        let done = a.add(FinalRecord::End(end)).expect("complete");
        assert_eq!(done.regions[0][..16], [1; 16]);
        assert_eq!(done.regions[1], [9, 8, 7, 6]);
        assert_eq!(done.unreadable, [4, 0]);
        assert_eq!(done.unreadable_bytes, 4);
        assert_eq!((done.start_ns, done.end_ns), (10, 20));
        // A stale generation is ignored.
        a.register(7, 4, vec![Range { addr: 0, len: 4 }]);
        assert!(a.add(FinalRecord::End(end)).is_none());
    }

    #[test]
    fn chunks_that_never_came_are_unreadable() {
        let mut a = Assembler::default();
        a.register(
            7,
            1,
            vec![Range { addr: 0, len: 8 }, Range { addr: 64, len: 6 }],
        );
        let got = FinalRecord::Chunk {
            hdr: hdr(kind::SNAP_CHUNK, 10),
            generation: 1,
            region: 0,
            offset: 0,
            error: 0,
            data: vec![5; 8],
        };
        assert!(a.add(got).is_none());
        let end = SnapEndRecord {
            hdr: hdr(kind::SNAP_END, 20),
            generation: 1,
            regions: 2,
            chunks: 1,
            failed: 0,
            dropped: 1,
            hook: snap::HOOK_SCHED_PROCESS_EXIT,
            _pad: 0,
        };
        let done = a.add(FinalRecord::End(end)).expect("complete");
        assert_eq!(done.unreadable, [0, 6]);
        assert_eq!(done.regions[1], [0; 6]);
        assert_eq!(done.dropped, 1);
    }
}
