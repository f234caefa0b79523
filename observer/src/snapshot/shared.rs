//! A region of memory a guest shares with the host, holding the payload's own capture (minicov's
//! raw profile): for guests whose RAM the host cannot read (AMD SEV, Intel TDX). The region is a
//! QEMU memory backend with a file (`-object memory-backend-file,id=ID,share=on,mem-path=FILE`,
//! handed to the guest by `-device ivshmem-plain,memdev=ID`); covobs finds the backend's mapping
//! in the QEMU process (by the file's device and inode) and reads it with `process_vm_readv`.
//!
//! The payload writes a 64-byte header before the capture (little-endian; docs/guests.md):
//! magic `COVOBSHM`, header size u32 (64), layout version u32 (1), sequence u64 (odd while the
//! payload writes, even once the capture is complete, 0 before the first), capture length u64,
//! 32 zero bytes. A capture is taken only when the same even sequence was read before and after
//! its bytes: a half-written capture is never taken.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    memory::{self, MemoryError, Range, ReadTiming},
    qmp::Qmp,
};
use crate::discover::maps;

pub const METHOD: &str = "qemu-shared-memory";
pub const MAGIC: &[u8; 8] = b"COVOBSHM";
pub const HEADER: u64 = 64;
pub const LAYOUT: u32 = 1;
/// How long a capture may stay half-written (odd sequence) before covobs gives up.
const WRITING_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// What the user named is not a region holding a capture.
    #[error("{0}")]
    Bad(String),
    /// The region holds no capture yet (the payload has not published one).
    #[error("{0}")]
    NotYet(String),
    #[error("reading the memory map of QEMU process {pid}: {source}")]
    Maps { pid: i32, source: std::io::Error },
    #[error("reading the shared region: {0}")]
    Read(#[from] MemoryError),
}

/// The region's mapping in the QEMU process.
#[derive(Clone, Debug)]
pub struct Region {
    pub pid: i32,
    pub hva: u64,
    pub len: u64,
    /// The backend's file.
    pub file: PathBuf,
    /// How REGION was resolved (`mem-path`, `command line`, `qmp qom-get`).
    pub resolved: String,
}

/// One complete capture read from the region.
#[derive(Debug)]
pub struct Capture {
    pub bytes: Vec<u8>,
    pub sequence: u64,
    /// The read of the capture's bytes.
    pub read: ReadTiming,
    /// Reads that were retried because the payload was writing.
    pub retries: u32,
}

/// `key=value` of a QEMU option string.
fn opt<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split(',').find_map(|kv| {
        kv.split_once('=')
            .and_then(|(k, v)| (k == key).then_some(v))
    })
}

/// The memory backend `id` on a QEMU command line: its type (the first word of the `-object`
/// value, or `qom-type=`) and its `mem-path`, if any.
fn backend_on_cmdline<'a>(args: &'a [String], id: &str) -> Option<(&'a str, Option<&'a str>)> {
    args.windows(2)
        .filter(|w| w[0] == "-object" || w[0] == "--object")
        .map(|w| w[1].as_str())
        .find(|spec| opt(spec, "id") == Some(id))
        .map(|spec| {
            let kind =
                opt(spec, "qom-type").unwrap_or_else(|| spec.split(',').next().unwrap_or(""));
            (kind, opt(spec, "mem-path"))
        })
}

/// Resolve REGION for QEMU process `pid`: a path is the backend's `mem-path`; anything else is a
/// memory backend's id, looked up on QEMU's command line, then through QMP (`qom-get
/// /objects/ID mem-path`) when a QMP socket is known.
pub fn resolve(
    pid: i32,
    region: &str,
    cmdline: &[String],
    qmp: Option<&Path>,
) -> Result<Region, SharedError> {
    let (file, resolved) = if region.contains('/') {
        (PathBuf::from(region), "mem-path".to_string())
    } else {
        match backend_on_cmdline(cmdline, region) {
            Some((_, Some(path))) => (
                PathBuf::from(path),
                format!("memory backend {region} on QEMU's command line"),
            ),
            Some((kind, None)) => {
                return Err(SharedError::Bad(format!(
                    "memory backend {region} of QEMU process {pid} is a {kind} with no mem-path: covobs reads a shared region through its file (memory-backend-file,share=on,mem-path=FILE)"
                )));
            }
            None => {
                let Some(socket) = qmp else {
                    return Err(SharedError::Bad(format!(
                        "QEMU process {pid} has no memory backend {region} on its command line and no QMP socket to ask (give --qmp, or the backend's mem-path)"
                    )));
                };
                let path = Qmp::connect(socket)
                    .and_then(|mut q| q.mem_path(region))
                    .map_err(|e| {
                        SharedError::Bad(format!(
                            "memory backend {region} of QEMU process {pid}: {e}"
                        ))
                    })?;
                (
                    PathBuf::from(path),
                    format!("memory backend {region} (QMP qom-get)"),
                )
            }
        }
    };
    let meta = std::fs::metadata(&file).map_err(|e| {
        SharedError::Bad(format!(
            "shared region {}: {e} (REGION is a memory-backend-file's mem-path or id)",
            file.display()
        ))
    })?;
    let mappings = maps::read(pid).map_err(|source| SharedError::Maps { pid, source })?;
    let mapping = mappings
        .iter()
        .filter(|m| m.file.dev == meta.dev() && m.file.ino == meta.ino() && m.offset == 0)
        .filter(|m| m.perms.starts_with("rw"))
        .max_by_key(|m| m.end - m.start)
        .ok_or_else(|| {
            SharedError::Bad(format!(
                "QEMU process {pid} does not map {} (not the mem-path of one of its memory backends?)",
                file.display()
            ))
        })?;
    Ok(Region {
        pid,
        hva: mapping.start,
        len: mapping.end - mapping.start,
        file,
        resolved,
    })
}

impl Region {
    pub fn describe(&self) -> String {
        format!(
            "QEMU process {}: shared region {} ({} bytes at host {:#x}; {})",
            self.pid,
            self.file.display(),
            self.len,
            self.hva,
            self.resolved
        )
    }

    fn read(&self, at: u64, len: u64) -> Result<(Vec<u8>, ReadTiming), SharedError> {
        Ok(memory::read_vec(
            self.pid,
            Range {
                addr: self.hva + at,
                len,
            },
        )?)
    }

    fn word(&self, at: u64) -> Result<u64, SharedError> {
        let (b, _) = self.read(at, 8)?;
        Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or_default()))
    }

    /// The complete capture the region holds now. A capture being written is waited for (up to
    /// 2 s); a region without the header, or whose header announces more than it holds, is
    /// refused ([`SharedError::Bad`]); one where nothing was published yet is
    /// [`SharedError::NotYet`].
    pub fn capture(&self) -> Result<Capture, SharedError> {
        let what = || format!("shared region {}", self.file.display());
        if self.len < HEADER {
            return Err(SharedError::Bad(format!(
                "{}: {} bytes is too small for its {HEADER}-byte header",
                what(),
                self.len
            )));
        }
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let (h, _) = self.read(0, HEADER)?;
            let field = |at: usize, n: usize| -> u64 {
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&h[at..at + n]);
                u64::from_le_bytes(b)
            };
            if h[..8] != MAGIC[..] {
                let msg = format!(
                    "{} has no covobs capture header (its first bytes are {:02x?}, not \"COVOBSHM\")",
                    what(),
                    &h[..8]
                );
                return Err(if h.iter().all(|b| *b == 0) {
                    SharedError::NotYet(format!("{msg}: the payload has not published a capture"))
                } else {
                    SharedError::Bad(msg)
                });
            }
            let (size, layout) = (field(8, 4), field(12, 4));
            if size != HEADER || layout != u64::from(LAYOUT) {
                return Err(SharedError::Bad(format!(
                    "{}: header of {size} bytes, layout {layout} (covobs reads layout {LAYOUT}, {HEADER} bytes)",
                    what()
                )));
            }
            let (sequence, len) = (field(16, 8), field(24, 8));
            if sequence == 0 {
                return Err(SharedError::NotYet(format!(
                    "{}: no capture published yet (sequence 0)",
                    what()
                )));
            }
            if sequence % 2 == 1 {
                if started.elapsed() > WRITING_WAIT {
                    return Err(SharedError::Bad(format!(
                        "{}: a capture is being written (sequence {sequence} odd) for more than {} s",
                        what(),
                        WRITING_WAIT.as_secs()
                    )));
                }
                retries += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if len > self.len - HEADER {
                return Err(SharedError::Bad(format!(
                    "{}: truncated: its header announces a capture of {len} bytes, the region holds {} after the header",
                    what(),
                    self.len - HEADER
                )));
            }
            let (bytes, read) = self.read(HEADER, len)?;
            if self.word(16)? != sequence {
                retries += 1;
                continue;
            }
            return Ok(Capture {
                bytes,
                sequence,
                read,
                retries,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn backends_on_command_lines() {
        let a = args(
            "qemu -object memory-backend-file,id=shm,share=on,mem-path=/dev/shm/cov,size=1M -object memory-backend-memfd,id=m2,size=1M",
        );
        assert_eq!(
            backend_on_cmdline(&a, "shm"),
            Some(("memory-backend-file", Some("/dev/shm/cov")))
        );
        assert_eq!(
            backend_on_cmdline(&a, "m2"),
            Some(("memory-backend-memfd", None))
        );
        assert_eq!(backend_on_cmdline(&a, "nope"), None);
        let q = args("qemu -object qom-type=memory-backend-file,id=x,mem-path=/f");
        assert_eq!(
            backend_on_cmdline(&q, "x"),
            Some(("memory-backend-file", Some("/f")))
        );
    }
}
