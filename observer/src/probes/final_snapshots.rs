//! The kernel side of final snapshots, from userspace: the `covobs_final_snapshot` program on the
//! `sched_process_exit` raw tracepoint, the `SNAP_REGIONS` map that says what to copy for which
//! process, and the `SNAPSHOTS` ring buffer the copies come back through.
use aya::maps::{HashMap, MapData, RingBuf};
use covobs_common::{Header, SnapChunkRecord, SnapEndRecord, SnapRegions, kind, snap};
use tokio::io::unix::AsyncFd;

use super::{ProbeError, Probes, map_err, take};

/// Default size of the `SNAPSHOTS` ring buffer for sessions that take final snapshots: room for
/// about 32 MiB of counters exiting at once (a million 8-byte counters is 8 MiB).
pub const DEFAULT_SNAPSHOT_RING_BYTES: u32 = 32 << 20;
/// Its size when nothing uses it (watch, doctor).
pub const IDLE_SNAPSHOT_RING_BYTES: u32 = 1 << 16;

pub struct FinalSnapshots {
    regions: HashMap<MapData, u32, SnapRegions>,
    /// Bytes of the ring buffer (a copy larger than this cannot come back whole).
    pub ring_bytes: u32,
}

/// Reads the `SNAPSHOTS` ring buffer from tokio.
pub struct FinalReader {
    ring: AsyncFd<RingBuf<MapData>>,
    pub bad_records: u64,
}

impl Probes {
    /// Load and attach the final-snapshot program. The ring buffer's size was set at load
    /// (`ProbeOptions::snapshot_ring_bytes`).
    pub fn final_snapshots(
        &mut self,
        ring_bytes: u32,
    ) -> Result<(FinalSnapshots, FinalReader), ProbeError> {
        // Kernels whose tracepoint has no `group_dead` pass one argument: a program that reads a
        // second one is refused at attach time, so they get the variant that does not.
        let program = if self.config_flags & covobs_common::config_flags::EXIT_HAS_GROUP_DEAD != 0 {
            "covobs_final_snapshot"
        } else {
            "covobs_final_snapshot_leader"
        };
        self.attach_raw_tracepoint(program, "sched_process_exit")?;
        let regions = take(&mut self.ebpf, "SNAP_REGIONS")?;
        let ring: RingBuf<MapData> = take(&mut self.ebpf, "SNAPSHOTS")?;
        // SAFETY: the RingBuf owns its map fd and keeps it open for as long as the AsyncFd (which
        // owns the RingBuf) lives; draining it neither closes nor replaces the fd.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| ProbeError::Poll("SNAPSHOTS", e.into()))?;
        Ok((
            FinalSnapshots {
                regions,
                ring_bytes,
            },
            FinalReader {
                ring,
                bad_records: 0,
            },
        ))
    }
}

impl FinalSnapshots {
    /// Copy these ranges when `pid`'s last thread exits.
    pub fn register(&mut self, pid: u32, regions: &SnapRegions) -> Result<(), ProbeError> {
        self.regions
            .insert(&pid, regions, 0)
            .map_err(map_err("SNAP_REGIONS"))
    }

    pub fn unregister(&mut self, pid: u32) {
        let _ = self.regions.remove(&pid);
    }
}

impl FinalReader {
    /// Wait until records are available, then decode every available one into `out`.
    pub async fn read(&mut self, out: &mut Vec<FinalRecord>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        self.bad_records += drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Whatever is available now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<FinalRecord>) {
        self.bad_records += drain(self.ring.get_mut(), out);
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<FinalRecord>) -> u64 {
    let mut bad = 0;
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => bad += 1,
            Err(e) => {
                bad += 1;
                tracing::warn!("dropping an undecodable final-snapshot record: {e}");
            }
        }
    }
    bad
}

#[derive(Debug, thiserror::Error)]
pub enum FinalRecordError {
    #[error("record of {got} bytes is too short for its kind {kind}")]
    Short { kind: u32, got: usize },
}

/// A decoded record of the `SNAPSHOTS` ring buffer.
#[derive(Debug)]
pub enum FinalRecord {
    Chunk {
        hdr: Header,
        generation: u64,
        region: u32,
        offset: u64,
        error: i32,
        data: Vec<u8>,
    },
    End(SnapEndRecord),
}

fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, FinalRecordError> {
    if bytes.len() < size_of::<T>() {
        return Err(FinalRecordError::Short {
            kind,
            got: bytes.len(),
        });
    }
    // SAFETY: the length was checked; T is a `#[repr(C)]` record of integers and byte arrays
    // (valid for any bit pattern), read without alignment requirements.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Option<FinalRecord>, FinalRecordError> {
    let hdr: Header = read(bytes, 0)?;
    Ok(match hdr.kind {
        kind::SNAP_CHUNK => {
            let r: SnapChunkRecord = read(bytes, hdr.kind)?;
            let len = (r.len as usize).min(snap::CHUNK_BYTES);
            Some(FinalRecord::Chunk {
                hdr,
                generation: r.generation,
                region: r.region,
                offset: r.offset,
                error: r.error,
                data: r.data[..len].to_vec(),
            })
        }
        kind::SNAP_END => Some(FinalRecord::End(read(bytes, hdr.kind)?)),
        _ => None,
    })
}
