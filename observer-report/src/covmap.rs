//! The compilation directories an LLVM-instrumented binary records: since coverage mapping
//! version 6 (LLVM 13), each translation unit's list of file names in `__llvm_covmap` starts with
//! the directory the compiler ran in. For a Rust binary linking OCaml code (TezEdge's
//! protocol-runner), that is the build root that bisect_ppx's relative source names usually
//! start from too.
use std::io::Read as _;

/// Coverage mapping format version 6 is stored as 5.
const VERSION6: u32 = 5;

fn uleb(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The file names of one encoded filename list (compressed with zlib or not).
fn filenames(blob: &[u8]) -> Option<Vec<String>> {
    let mut at = 0;
    let n = uleb(blob, &mut at)?;
    let uncompressed = usize::try_from(uleb(blob, &mut at)?).ok()?;
    let compressed = usize::try_from(uleb(blob, &mut at)?).ok()?;
    let owned;
    let (names, mut at) = if compressed > 0 {
        let z = blob.get(at..at.checked_add(compressed)?)?;
        let mut out = Vec::with_capacity(uncompressed.min(1 << 20));
        flate2::read::ZlibDecoder::new(z)
            .take(uncompressed as u64)
            .read_to_end(&mut out)
            .ok()?;
        owned = out;
        (&owned[..], 0)
    } else {
        (blob, at)
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let len = usize::try_from(uleb(names, &mut at)?).ok()?;
        let s = names.get(at..at.checked_add(len)?)?;
        at += len;
        out.push(String::from_utf8_lossy(s).into_owned());
    }
    Some(out)
}

/// The compilation directories in a `__llvm_covmap` section's bytes (little-endian), each once.
pub fn compilation_dirs_in(section: &[u8]) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut at = 0;
    // Each record: 4 u32 (function records: 0, filenames size, coverage size: 0, version),
    // the filenames, padding to 8 bytes.
    while at + 16 <= section.len() {
        let (Some(size), Some(version)) = (u32_le(section, at + 4), u32_le(section, at + 12))
        else {
            break;
        };
        let start = at + 16;
        let Some(end) = start.checked_add(size as usize) else {
            break;
        };
        let Some(blob) = section.get(start..end) else {
            break;
        };
        if version >= VERSION6
            && let Some(first) = filenames(blob).and_then(|n| n.into_iter().next())
            && first.starts_with('/')
            && !dirs.contains(&first)
        {
            dirs.push(first);
        }
        at = end.next_multiple_of(8);
    }
    dirs
}

/// The compilation directories recorded in a binary's coverage mapping (none when it has no
/// `__llvm_covmap`, or cannot be read). Reads only the headers and that section.
pub fn compilation_dirs(binary: &std::fs::File) -> Vec<String> {
    use object::{Object as _, ObjectSection as _};
    let cache = object::ReadCache::new(binary);
    let Ok(file) = object::File::parse(&cache) else {
        return Vec::new();
    };
    if !file.is_little_endian() {
        return Vec::new();
    }
    file.section_by_name("__llvm_covmap")
        .and_then(|s| s.uncompressed_data().ok())
        .map(|d| compilation_dirs_in(&d))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, path::Path, process::Command};

    use super::*;

    fn record(blob: &[u8], version: u32) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [0, blob.len() as u32, 0, version] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(blob);
        while r.len() % 8 != 0 {
            r.push(0);
        }
        r
    }

    fn names(list: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        for n in list {
            b.push(n.len() as u8);
            b.extend_from_slice(n.as_bytes());
        }
        b
    }

    #[test]
    fn reads_plain_and_compressed_filename_lists() {
        let raw = names(&["/build/root", "src/main.rs"]);
        let mut plain = vec![2, raw.len() as u8, 0];
        plain.extend_from_slice(&raw);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let raw2 = names(&["/other/root", "/abs/x.rs"]);
        z.write_all(&raw2).expect("zlib");
        let z = z.finish().expect("zlib");
        let mut compressed = vec![2, raw2.len() as u8, z.len() as u8];
        compressed.extend_from_slice(&z);
        let mut section = record(&plain, 6);
        section.extend(record(&compressed, 5));
        // Version 5 (stored as 4) has no compilation directory.
        section.extend(record(&plain, 4));
        section.extend(record(&plain, 6)); // the same directory again
        assert_eq!(
            compilation_dirs_in(&section),
            ["/build/root", "/other/root"]
        );
        assert!(compilation_dirs_in(&section[..20]).is_empty());
        assert!(compilation_dirs_in(&[]).is_empty());
    }

    #[test]
    fn a_real_clang_binary_records_where_it_was_built() {
        let clang = Path::new("/usr/bin/clang-14");
        assert!(
            clang.exists(),
            "clang-14 is missing: the set-up installs it (./dev setup)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.c"), "int main(void) { return 0; }\n").expect("write");
        let out = Command::new(clang)
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-o",
                "p",
                "p.c",
            ])
            .current_dir(dir.path())
            .output()
            .expect("clang");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = dir.path().to_string_lossy().into_owned();
        let open = |p: &Path| std::fs::File::open(p).expect("open");
        assert_eq!(compilation_dirs(&open(&dir.path().join("p"))), [want]);
        assert!(compilation_dirs(&open(&dir.path().join("p.c"))).is_empty());
    }
}
