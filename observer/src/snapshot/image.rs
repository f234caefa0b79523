//! Memory images on disk as a [`MemorySource`]: an ELF core file (`gcore`, a kernel core dump:
//! its PT_LOAD segments are the memory, its NT_FILE note says where each file was mapped), or a
//! raw dump of RAM (QEMU `pmemsave`) whose first byte was at a known address (`--base`).
use std::path::{Path, PathBuf};

use object::{
    elf,
    read::elf::{FileHeader, ProgramHeader},
};

use super::{
    memory::{MemoryError, Range, ReadTiming},
    source::MemorySource,
};
use crate::sys::clock;

pub const METHOD_CORE: &str = "core-file";
pub const METHOD_RAW: &str = "raw-image";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
}

/// One file mapping of the process a core file was taken of (its NT_FILE note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub start: u64,
    pub end: u64,
    /// Offset in the file, in bytes.
    pub offset: u64,
    pub path: String,
}

/// A run of memory the image holds: `len` bytes at address `addr`, at `offset` in the file.
#[derive(Clone, Copy, Debug)]
struct Piece {
    addr: u64,
    len: u64,
    offset: u64,
}

pub struct Image {
    path: PathBuf,
    map: memmap2::Mmap,
    core: bool,
    pieces: Vec<Piece>,
    /// The core's NT_FILE entries (empty for a raw image).
    pub files: Vec<MappedFile>,
    /// Bytes the core left out but a mapped file holds (see [`Image::set_file_pieces`]).
    extra: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("core", &self.core)
            .field("pieces", &self.pieces.len())
            .finish()
    }
}

impl Image {
    /// Open an image: an ELF core file (then `base` must be None), else a raw dump whose first
    /// byte was at `base` (0 when not given).
    pub fn open(path: &Path, base: Option<u64>) -> Result<Self, ImageError> {
        let bad = |what: String| ImageError::Bad {
            path: path.to_path_buf(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| ImageError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(bad("the image is empty".into()));
        }
        // SAFETY: a read-only private map of a regular file the user named; covobs only copies
        // bytes out of it, at offsets checked against the map's length.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let is_core = map.len() >= 18
            && map[..4] == *b"\x7fELF"
            && u16::from_le_bytes([map[16], map[17]]) == elf::ET_CORE.0;
        if !is_core {
            let base = base.unwrap_or(0);
            return Ok(Self {
                path: path.to_path_buf(),
                pieces: vec![Piece {
                    addr: base,
                    len: map.len() as u64,
                    offset: 0,
                }],
                map,
                core: false,
                files: Vec::new(),
                extra: Vec::new(),
            });
        }
        if base.is_some() {
            return Err(bad(
                "is an ELF core file: its segments say where each byte was (--base is for raw images)"
                    .into(),
            ));
        }
        let (pieces, files) = parse_core(&map).map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            core: true,
            pieces,
            files,
            extra: Vec::new(),
        })
    }

    /// Memory the core does not hold that is the unchanged content of a mapped file: gdb leaves
    /// out file mappings that were never written (the text and read-only data of a program).
    /// Each `(address, bytes)` is used only where no segment of the core covers it.
    pub fn set_file_pieces(&mut self, pieces: Vec<(u64, Vec<u8>)>) {
        self.extra = pieces;
    }

    fn held(&self, at: u64) -> Option<&[u8]> {
        if let Some(p) = self
            .pieces
            .iter()
            .find(|p| at >= p.addr && at - p.addr < p.len)
        {
            let from = (p.offset + (at - p.addr)) as usize;
            return self.map.get(from..(p.offset + p.len) as usize);
        }
        self.extra
            .iter()
            .find(|(addr, b)| at >= *addr && at - addr < b.len() as u64)
            .and_then(|(addr, b)| b.get((at - addr) as usize..))
    }

    pub fn is_core(&self) -> bool {
        self.core
    }

    /// Copy the `buf.len()` bytes at `addr` into `buf`, across adjacent pieces.
    fn copy(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(src) = self.held(addr.wrapping_add(done as u64)) else {
                return false;
            };
            if src.is_empty() {
                return false;
            }
            let n = src.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&src[..n]);
            done += n;
        }
        true
    }
}

impl MemorySource for Image {
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError> {
        let start_ns = clock::boot_ns();
        let mut bytes = 0;
        for (r, buf) in ranges.iter().zip(bufs.iter_mut()) {
            if !self.copy(r.addr, buf) {
                return Err(MemoryError::NotHeld {
                    holder: self.path.display().to_string(),
                    addr: r.addr,
                    len: r.len,
                    hint: if self.core {
                        " (not in any of the core's segments: a core of another process or build?)"
                    } else {
                        " (outside the image: a truncated image, a wrong --base, or another build?)"
                    },
                });
            }
            bytes += r.len;
        }
        Ok(ReadTiming {
            start_ns,
            end_ns: clock::boot_ns(),
            bytes,
            syscalls: 0,
        })
    }

    fn method(&self) -> &'static str {
        if self.core { METHOD_CORE } else { METHOD_RAW }
    }

    fn live(&self) -> bool {
        false
    }
}

/// The PT_LOAD segments (what the file holds of each) and the NT_FILE entries of a core file.
fn parse_core(data: &[u8]) -> Result<(Vec<Piece>, Vec<MappedFile>), String> {
    let header = elf::FileHeader64::<object::LittleEndian>::parse(data)
        .map_err(|e| format!("not a 64-bit little-endian ELF core file: {e}"))?;
    let endian = header
        .endian()
        .map_err(|e| format!("reading the ELF header: {e}"))?;
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| format!("reading the program headers (truncated?): {e}"))?;
    let mut pieces = Vec::new();
    let mut files = Vec::new();
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_LOAD => {
                let (offset, len) = (ph.p_offset(endian), ph.p_filesz(endian));
                let end = offset.saturating_add(len);
                if end > data.len() as u64 {
                    return Err(format!(
                        "truncated: the segment for {:#x} ends at byte {end}, the file has {}",
                        ph.p_vaddr(endian),
                        data.len()
                    ));
                }
                if len > 0 {
                    pieces.push(Piece {
                        addr: ph.p_vaddr(endian),
                        len,
                        offset,
                    });
                }
            }
            elf::PT_NOTE => {
                let notes = ph
                    .notes(endian, data)
                    .map_err(|e| format!("reading the notes (truncated?): {e}"))?;
                let Some(mut notes) = notes else { continue };
                while let Some(note) = notes
                    .next()
                    .map_err(|e| format!("reading the notes: {e}"))?
                {
                    if note.n_type(endian) == elf::NT_FILE && note.name() == b"CORE" {
                        files = parse_nt_file(note.desc())
                            .ok_or_else(|| "its NT_FILE note is malformed".to_string())?;
                    }
                }
            }
            _ => {}
        }
    }
    pieces.sort_by_key(|p| p.addr);
    Ok((pieces, files))
}

/// NT_FILE: count, page size, `count` (start, end, page offset) triples, then `count`
/// NUL-terminated paths.
fn parse_nt_file(desc: &[u8]) -> Option<Vec<MappedFile>> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            desc.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let count = usize::try_from(word(0)?).ok()?;
    let page = word(1)?;
    let mut names = desc
        .get(16usize.checked_add(count.checked_mul(24)?)?..)?
        .split(|b| *b == 0);
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for i in 0..count {
        let name = names.next()?;
        out.push(MappedFile {
            start: word(2 + 3 * i)?,
            end: word(3 + 3 * i)?,
            offset: word(4 + 3 * i)?.checked_mul(page)?,
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_file_entries() {
        let mut d = Vec::new();
        for w in [2u64, 4096, 0x1000, 0x3000, 0, 0x5000, 0x6000, 3] {
            d.extend(w.to_le_bytes());
        }
        d.extend(b"/bin/a\0/lib/b.so\0");
        let f = parse_nt_file(&d).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].offset, 3 * 4096);
        assert_eq!(f[1].path, "/lib/b.so");
        assert!(parse_nt_file(&d[..40]).is_none());
    }

    #[test]
    fn a_raw_image_is_addressed_from_its_base() {
        let dir = std::env::temp_dir().join(format!("covobs-image-{}", std::process::id()));
        std::fs::write(&dir, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let img = Image::open(&dir, Some(0x10_0000)).unwrap();
        let (b, _) = img
            .read_vec(Range {
                addr: 0x10_0010,
                len: 4,
            })
            .unwrap();
        assert_eq!(b, [16, 17, 18, 19]);
        let past = img.read_vec(Range {
            addr: 0x10_00fe,
            len: 4,
        });
        assert!(matches!(past, Err(MemoryError::NotHeld { .. })));
        assert!(
            img.read_vec(Range {
                addr: 0xff_fff0,
                len: 4
            })
            .is_err()
        );
        let _ = std::fs::remove_file(&dir);
    }
}
