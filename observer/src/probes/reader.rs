//! Reads the ring buffer from tokio: wakes when the kernel signals new records, drains them all.
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::records::{self, Record};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that failed to decode (a covobs/eBPF mismatch: should stay 0).
    pub bad_records: u64,
}

impl EventReader {
    pub(super) fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open for as long as the AsyncFd (which
        // owns the RingBuf) lives; draining it neither closes nor replaces the fd.
        let ring = unsafe { AsyncFd::register(ring) }?;
        Ok(Self {
            ring,
            bad_records: 0,
        })
    }

    /// Wait until records are available, then move every available one into `out`.
    pub async fn read(&mut self, out: &mut Vec<Record>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let bad = drain_into(guard.get_inner_mut(), out);
        guard.clear_ready();
        self.bad_records += bad;
        Ok(())
    }

    /// Move whatever is available now into `out`, without waiting (used at shutdown).
    pub fn drain(&mut self, out: &mut Vec<Record>) {
        let bad = drain_into(self.ring.get_mut(), out);
        self.bad_records += bad;
    }
}

fn drain_into(ring: &mut RingBuf<MapData>, out: &mut Vec<Record>) -> u64 {
    let mut bad = 0;
    while let Some(item) = ring.next() {
        match records::decode(&item) {
            Ok(d) => out.push(d),
            Err(e) => {
                bad += 1;
                tracing::warn!("dropping an undecodable eBPF record: {e}");
            }
        }
    }
    bad
}
