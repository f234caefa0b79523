//! The spool: what could not be published waits on local disk, one file per record
//! (`<16-digit number>.rec`), replayed in that order. Bounded in bytes: a record that would pass
//! the bound is dropped and counted. A record is written whole (to a temporary name, synced,
//! renamed), so a covobs killed while spooling leaves no half record; records left by an earlier
//! session are replayed first.
//!
//! A record file: `COVOBS-SPOOL 1\n`, one JSON line (subject, message id, sizes), the payload,
//! then each object's bytes.
use std::{
    collections::VecDeque,
    fs::File,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{NatsError, wire::Record};

const MAGIC: &[u8] = b"COVOBS-SPOOL 1\n";

#[derive(Serialize, Deserialize)]
struct Header {
    subject: String,
    msg_id: String,
    payload: u64,
    objects: Vec<(String, u64)>,
}

/// The spool's figures (session.json `fleet.spool`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpoolStats {
    /// Records written to the spool.
    pub spooled: u64,
    pub spooled_bytes: u64,
    /// Records published from the spool.
    pub replayed: u64,
    /// Records refused because the spool was full (lost for the fleet; the local directory has
    /// them).
    pub dropped_full: u64,
    /// Records left in the spool now, their bytes, and the age of the oldest (ms).
    pub pending: u64,
    pub pending_bytes: u64,
    pub oldest_age_ms: u64,
    /// The most bytes it held at once, and its bound.
    pub peak_bytes: u64,
    pub max_bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    /// Held while this covobs uses the spool: two sessions of one node never share one.
    _lock: nix::fcntl::Flock<File>,
    /// Record numbers waiting, oldest first, with their sizes.
    queue: VecDeque<(u64, u64)>,
    next: u64,
    bytes: u64,
    pub stats: SpoolStats,
}

fn name(n: u64) -> String {
    format!("{n:016}.rec")
}

impl Spool {
    /// Open (create) the node's spool at `dir`; records an earlier session left are queued
    /// first. While another covobs of the same node holds it, this one gets a spool of its own,
    /// `dir/<session>` (replayed by this session only).
    pub fn open_for(dir: &Path, session: &str, max_bytes: u64) -> Result<Self, NatsError> {
        match Self::open(dir, max_bytes)? {
            Some(s) => Ok(s),
            None => {
                let own = dir.join(session);
                tracing::info!(
                    "the spool {} is in use by another covobs of this node: using {}",
                    dir.display(),
                    own.display()
                );
                Self::open(&own, max_bytes)?.ok_or_else(|| NatsError::Spool {
                    path: own,
                    source: std::io::Error::other("in use by another covobs"),
                })
            }
        }
    }

    /// Open (create) the spool at `dir`; `None` when another covobs holds it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Option<Self>, NatsError> {
        let err = |source| NatsError::Spool {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(err)?;
        let lock =
            match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(err(e.into())),
            };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = fname
                .strip_suffix(".rec")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let size = entry.metadata().map_err(err)?.len();
                found.push((n, size));
            } else if fname.starts_with(".tmp-") {
                // A record whose write never finished: never renamed, never counted.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        found.sort_unstable();
        let bytes = found.iter().map(|(_, s)| s).sum();
        let next = found.last().map_or(0, |(n, _)| n + 1);
        Ok(Some(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            queue: found.into(),
            next,
            bytes,
            stats: SpoolStats {
                max_bytes,
                peak_bytes: bytes,
                ..Default::default()
            },
        }))
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Keep `r` for later. `Ok(false)`: the spool is full and the record was dropped (counted).
    pub fn push(&mut self, r: &Record) -> Result<bool, NatsError> {
        let err = |source| NatsError::Spool {
            path: self.dir.clone(),
            source,
        };
        let header = Header {
            subject: r.subject.clone(),
            msg_id: r.msg_id.clone(),
            payload: r.payload.len() as u64,
            objects: r
                .objects
                .iter()
                .map(|(n, d)| (n.clone(), d.len() as u64))
                .collect(),
        };
        let mut head = serde_json::to_vec(&header).map_err(|e| err(e.into()))?;
        head.push(b'\n');
        let size = (MAGIC.len() + head.len() + r.payload.len()) as u64
            + r.objects.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
        if self.bytes + size > self.stats.max_bytes {
            self.stats.dropped_full += 1;
            return Ok(false);
        }
        let n = self.next;
        let tmp = self.dir.join(format!(".tmp-{}", name(n)));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&head)?;
            f.write_all(&r.payload)?;
            for (_, d) in &r.objects {
                f.write_all(d)?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name(n)))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        self.next += 1;
        self.queue.push_back((n, size));
        self.bytes += size;
        self.stats.spooled += 1;
        self.stats.spooled_bytes += size;
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.bytes);
        Ok(true)
    }

    /// The oldest record, read back.
    pub fn head(&self) -> Result<Option<Record>, NatsError> {
        let Some((n, _)) = self.queue.front() else {
            return Ok(None);
        };
        let path = self.dir.join(name(*n));
        let err = |source| NatsError::Spool {
            path: path.clone(),
            source,
        };
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(err)?;
        let bad = || err(std::io::Error::other("not a spool record (damaged)"));
        let rest = data.strip_prefix(MAGIC).ok_or_else(bad)?;
        let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
        let header: Header = serde_json::from_slice(&rest[..nl]).map_err(|_| bad())?;
        let body = Bytes::copy_from_slice(&rest[nl + 1..]);
        let mut at = header.payload as usize;
        let payload = body.get(..at).ok_or_else(bad)?;
        let payload = body.slice_ref(payload);
        let mut objects = Vec::new();
        for (name, len) in header.objects {
            let end = at + len as usize;
            if end > body.len() {
                return Err(bad());
            }
            objects.push((name, body.slice(at..end)));
            at = end;
        }
        Ok(Some(Record {
            subject: header.subject,
            msg_id: header.msg_id,
            payload,
            objects,
            lazy: None,
        }))
    }

    /// The oldest record was published: remove it.
    pub fn pop(&mut self) {
        if let Some((n, size)) = self.queue.pop_front() {
            let _ = std::fs::remove_file(self.dir.join(name(n)));
            self.bytes -= size;
            self.stats.replayed += 1;
        }
    }

    /// The oldest record is damaged: set it aside (renamed `.bad`), counted as dropped.
    pub fn discard_head(&mut self) {
        if let Some((n, size)) = self.queue.pop_front() {
            let from = self.dir.join(name(n));
            let _ = std::fs::rename(&from, from.with_extension("bad"));
            self.bytes -= size;
            self.stats.dropped_full += 1;
        }
    }

    /// The figures now.
    pub fn stats(&self) -> SpoolStats {
        let mut s = self.stats.clone();
        s.pending = self.queue.len() as u64;
        s.pending_bytes = self.bytes;
        s.oldest_age_ms = self
            .queue
            .front()
            .and_then(|(n, _)| std::fs::metadata(self.dir.join(name(*n))).ok())
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or(0, |d| d.as_millis() as u64);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            subject: "covobs.f.n.s.events".to_string(),
            msg_id: format!("id-{i}"),
            payload: Bytes::from(format!("payload {i}")),
            objects: vec![("sha256/x".into(), Bytes::from(vec![i as u8; 100]))],
            lazy: None,
        }
    }

    #[test]
    fn records_come_back_in_order_whole_and_bounded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(tmp.path(), 1000).expect("open").expect("free");
        // A second covobs of the node cannot take it: it gets one of its own.
        assert!(Spool::open(tmp.path(), 1000).expect("open").is_none());
        let other = Spool::open_for(tmp.path(), "s2", 1000).expect("own spool");
        assert_eq!(other.path(), tmp.path().join("s2"));
        drop(other);
        std::fs::remove_dir_all(tmp.path().join("s2")).expect("rm");
        for i in 0..3 {
            assert!(s.push(&rec(i)).expect("push"));
        }
        // Past the bound: dropped and counted.
        let mut i = 3;
        while s.push(&rec(i)).expect("push") {
            i += 1;
        }
        assert_eq!(s.stats().dropped_full, 1);
        let kept = i;
        // Reopened (a new session): the same records, in order.
        drop(s);
        let mut s = Spool::open(tmp.path(), 1000)
            .expect("reopen")
            .expect("free again");
        for j in 0..kept {
            let r = s.head().expect("head").expect("a record");
            assert_eq!(r.msg_id, format!("id-{j}"));
            assert_eq!(&r.payload[..], format!("payload {j}").as_bytes());
            assert_eq!(r.objects[0].1.len(), 100);
            assert_eq!(r.objects[0].1[0], j as u8);
            s.pop();
        }
        assert!(s.is_empty());
        assert_eq!(s.stats().replayed, u64::from(kept));
        // Only the lock file is left.
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 1);
    }
}
