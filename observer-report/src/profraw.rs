//! A cheap look at an LLVM raw profile's header before a tool reads it: the magic, the version,
//! and - for the layouts tried here - whether the sections the header announces fit in the
//! bytes. The definitive check is `llvm-profdata merge` of that one artifact (see `llvm.rs`).

/// The 64-bit little-endian raw profile magic: `\x81rforpl\xff`.
pub const MAGIC_64: u64 = 0xff6c_7072_6f66_7281;
/// The 32-bit (ILP32 targets) magic: `\x81Rforpl\xff`.
pub const MAGIC_32: u64 = 0xff6c_7072_6f66_5281;

/// Version bits (the top byte holds variant flags: IR-level, context-sensitive, byte coverage...).
const VERSION_MASK: u64 = 0x00ff_ffff_ffff_ffff;
/// `VARIANT_MASK_BYTE_COVERAGE`: one byte per counter instead of eight.
const BYTE_COVERAGE: u64 = 1 << 60;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u64,
    pub byte_coverage: bool,
    /// Where the counters (and the MC/DC bitmaps after them) are, for the layouts tried here:
    /// two profiles of one module with the same bytes there have the same coverage.
    pub counters: Option<std::ops::Range<usize>>,
}

/// Check the header; `Err` says why the bytes are not a raw profile a tool could read.
pub fn check(bytes: &[u8]) -> Result<Header, String> {
    let word = |i: usize| -> Option<u64> {
        let b = bytes.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    let Some(magic) = word(0) else {
        return Err(format!(
            "{} bytes: too short for a raw profile header",
            bytes.len()
        ));
    };
    if magic == MAGIC_64.swap_bytes() || magic == MAGIC_32.swap_bytes() {
        return Err("a big-endian raw profile: not supported".into());
    }
    if magic != MAGIC_64 && magic != MAGIC_32 {
        // What the bytes are instead is not said: a refused file's content is never repeated.
        return Err("not an LLVM raw profile (no raw profile magic in its first 8 bytes)".into());
    }
    let raw_version = word(1).ok_or("truncated in the header")?;
    let version = raw_version & VERSION_MASK;
    if !(5..=20).contains(&version) {
        return Err(format!("unknown raw profile version {version}"));
    }
    let byte_coverage = raw_version & BYTE_COVERAGE != 0;
    let mut header = Header {
        version,
        byte_coverage,
        counters: None,
    };
    if magic == MAGIC_32 {
        return Ok(header);
    }
    let Some(layout) = Layout::of(version) else {
        return Ok(header);
    };
    let words: Option<Vec<u64>> = (0..layout.header_words).map(word).collect();
    let Some(h) = words else {
        return Err(format!(
            "truncated: {} bytes, the version {version} header alone is {}",
            bytes.len(),
            layout.header_words * 8
        ));
    };
    let counter_size = if byte_coverage { 1 } else { 8 };
    let sizes = [
        layout.header_words as u64 * 8,
        h[2],
        h[3].saturating_mul(layout.data_record),
        h[4],
        h[5].saturating_mul(counter_size),
        h[6],
        layout
            .bitmap
            .map(|(b, p)| h[b].saturating_add(h[p]))
            .unwrap_or(0),
        h[layout.names],
    ];
    let need = sizes.iter().fold(0u64, |a, &s| a.saturating_add(s));
    if need > bytes.len() as u64 {
        return Err(format!(
            "truncated or corrupt: the header announces at least {need} bytes, the artifact has {}",
            bytes.len()
        ));
    }
    // Words this reader does not know (v11's 9..=11) must be zero for the counters' place to be
    // sure.
    if layout.unknown.iter().all(|&i| h[i] == 0) {
        let start = sizes[..4].iter().fold(0u64, |a, &s| a.saturating_add(s));
        let end = sizes[..7].iter().fold(0u64, |a, &s| a.saturating_add(s));
        if let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) {
            header.counters = Some(start..end);
        }
    }
    Ok(header)
}

/// The layouts tried here (header size in words, where the names size and bitmap sizes sit,
/// the size of a data record). Word 2 is the binary ids size, 3 the number of data records,
/// 4/6 the padding around the counters, 5 the number of counters, in every one of them.
struct Layout {
    header_words: usize,
    names: usize,
    bitmap: Option<(usize, usize)>,
    data_record: u64,
    /// Header words whose meaning is not known here.
    unknown: &'static [usize],
}

impl Layout {
    fn of(version: u64) -> Option<Self> {
        match version {
            // LLVM 14-17 (clang 14 writes it).
            8 => Some(Self {
                header_words: 11,
                names: 7,
                bitmap: None,
                data_record: 48,
                unknown: &[],
            }),
            // LLVM 23 (rustc 1.99 writes it).
            11 => Some(Self {
                header_words: 19,
                names: 12,
                bitmap: Some((7, 8)),
                data_record: 72,
                unknown: &[9, 10, 11],
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v8(data: u64, counters: u64, names: u64) -> Vec<u8> {
        let mut h = vec![MAGIC_64, 8, 32, data, 0, counters, 0, names, 0, 0, 1];
        let len = 88 + 32 + data * 48 + counters * 8 + names.div_ceil(8) * 8;
        h.resize(len as usize / 8, 0);
        h.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn accepts_a_complete_v8_profile() {
        let b = v8(3, 11, 33);
        // header 88 + binary ids 32 + 3 data records of 48: the 11 counters follow.
        assert_eq!(
            check(&b),
            Ok(Header {
                version: 8,
                byte_coverage: false,
                counters: Some(264..352),
            })
        );
    }

    #[test]
    fn rejects_truncated_and_foreign_bytes() {
        let b = v8(3, 11, 33);
        let e = check(&b[..300]).expect_err("truncated");
        assert!(e.contains("truncated"), "{e}");
        assert!(check(&b[..40]).expect_err("header").contains("truncated"));
        assert!(check(&b[..4]).expect_err("tiny").contains("too short"));
        assert!(
            check(b"BISECT-COVERAGE-4 xxxxxxxxxx")
                .expect_err("bisect")
                .contains("magic")
        );
        let mut be = b.clone();
        be[..8].copy_from_slice(&MAGIC_64.to_be_bytes());
        assert!(check(&be).expect_err("be").contains("big-endian"));
        let mut v = b.clone();
        v[8..16].copy_from_slice(&99u64.to_le_bytes());
        assert!(check(&v).expect_err("version").contains("version 99"));
    }

    /// Every function's counters as llvm-profdata shows them (function count, then block
    /// counts), all functions together.
    fn counts_shown(text: &str) -> Vec<u64> {
        let mut all = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(n) = line.strip_prefix("Function count: ") {
                all.push(n.parse().expect("function count"));
            } else if let Some(list) = line.strip_prefix("Block counts: ") {
                let list = list.trim_start_matches('[').trim_end_matches(']');
                all.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(|n| n.parse::<u64>().expect("block count")),
                );
            }
        }
        all
    }

    #[test]
    fn finds_the_counters_llvm_profdata_reads_in_a_real_clang_14_profile() {
        use std::process::Command;
        let clang = std::path::Path::new("/usr/bin/clang-14");
        let profdata = std::path::Path::new("/usr/lib/llvm-14/bin/llvm-profdata");
        assert!(
            clang.exists() && profdata.exists(),
            "clang-14 or llvm-14 is missing: the set-up installs them (./dev setup)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("p.c"),
            "#include <stdlib.h>\n\
             static int f(int n) { int s = 0; for (int i = 0; i < n; i++) if (i & 1) s += i; return s; }\n\
             static int g(int n) { return n > 3 ? 1 : 2; }\n\
             int main(int argc, char **argv) { int n = argc > 1 ? atoi(argv[1]) : 0;\n\
             return (f(n) + g(n) + g(n + 1)) == 12345; }\n",
        )
        .expect("source");
        let ok = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ok(Command::new(clang)
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
                "p",
                "p.c",
            ])
            .current_dir(dir.path()));
        let raw = dir.path().join("p.profraw");
        ok(Command::new(dir.path().join("p"))
            .arg("7")
            .env("LLVM_PROFILE_FILE", &raw));
        let bytes = std::fs::read(&raw).expect("profile");
        let h = check(&bytes).expect("clang 14's own profile");
        assert_eq!((h.version, h.byte_coverage), (8, false));
        let range = h.counters.expect("the version 8 layout is known");
        let mut ours: Vec<u64> = bytes[range]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut theirs = counts_shown(&ok(Command::new(profdata)
            .args(["show", "--all-functions", "--counts"])
            .arg(&raw)));
        // f ran its loop 7 times: a count of 7 is among them, so these are live counters.
        assert!(theirs.contains(&7), "{theirs:?}");
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(
            ours, theirs,
            "the counters covobs finds are not llvm-profdata's"
        );
        // Cut anywhere before the end of the names, it is refused.
        for cut in [4, 40, 88, bytes.len() - 9] {
            assert!(check(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn unknown_layouts_pass_on_magic_and_version() {
        let mut b = v8(3, 11, 33);
        b[8..16].copy_from_slice(&10u64.to_le_bytes());
        assert_eq!(check(&b[..120]).map(|h| h.version), Ok(10));
        // Variant flags in the top byte do not change the version.
        b[8..16].copy_from_slice(&((1u64 << 56) | 8).to_le_bytes());
        assert_eq!(check(&b).map(|h| h.version), Ok(8));
    }
}
