//! Validation of LLVM raw profiles (`.profraw`): the header's magic and version, and section sizes
//! that add up to exactly the bytes a dump wrote. A truncated or torn profile makes a whole
//! `llvm-profdata merge` fail, so nothing unchecked goes into a report.
//!
//! Layout (little-endian, 64-bit; compiler-rt InstrProfData.inc): header of u64 fields, binary
//! ids, per-function data records, padding, counters, padding, [v9+] bitmap bytes, padding,
//! names, padding to 8, [v10+] vtable records and vtable names, padding to 8, then value-profile
//! records (each starts with its own u32 total size).

/// `\xfflprofr\x81` as a little-endian u64: 64-bit raw profile.
pub const MAGIC_64: u64 = 0xff6c_7072_6f66_7281;
const VARIANT_BYTE_COVERAGE: u64 = 1 << 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RawProfileError {
    #[error("{0} bytes is too short for a raw profile header")]
    TooShort(usize),
    #[error("bad magic {0:#018x} (not a 64-bit little-endian LLVM raw profile)")]
    BadMagic(u64),
    #[error("raw profile version {0} is not supported (covobs reads versions 5 to 11)")]
    UnsupportedVersion(u64),
    #[error(
        "raw profile version 11 uses header fields covobs does not know ({0}): cannot check its size"
    )]
    UnknownExtension(String),
    #[error("section sizes overflow")]
    Overflow,
    #[error("the header announces {need} bytes of sections but only {got} bytes were written")]
    Truncated { need: u64, got: u64 },
    #[error("value profile data is malformed at byte {0}")]
    BadValueData(u64),
}

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RawProfile {
    pub version: u64,
    pub num_data: u64,
    pub num_counters: u64,
    pub counter_size: u64,
    pub num_bitmap_bytes: u64,
    pub names_size: u64,
    /// Bytes of the fixed part (everything before value-profile data).
    pub fixed_size: u64,
    /// Total size: the whole profile, value-profile records included.
    pub total_size: u64,
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    let s = b.get(i * 8..i * 8 + 8)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

/// Parse the header and check the sizes; `bytes` must hold exactly one profile. With
/// `exact == false`, trailing bytes after the profile are allowed (used to split a file that holds
/// several appended profiles).
pub fn parse(bytes: &[u8], exact: bool) -> Result<RawProfile, RawProfileError> {
    let len = bytes.len() as u64;
    let mut p = header(bytes)?;
    let fixed = p.fixed_size;
    if fixed > len {
        return Err(RawProfileError::Truncated {
            need: fixed,
            got: len,
        });
    }
    // Value-profile records follow, one per function with value sites, each sized by its first
    // u32. Walk them: with `exact`, they must end exactly at the end of the bytes; otherwise they
    // end at the end of the bytes or where the next profile's magic starts.
    let mut at = fixed;
    while at < len {
        if !exact && u64_at(&bytes[at as usize..], 0) == Some(MAGIC_64) {
            break;
        }
        let Some(size) = bytes
            .get(at as usize..at as usize + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
        else {
            return Err(RawProfileError::BadValueData(at));
        };
        let size = u64::from(size);
        if size < 8 || size % 8 != 0 || at + size > len {
            return Err(RawProfileError::BadValueData(at));
        }
        at += size;
    }
    p.total_size = at;
    Ok(p)
}

/// The bytes a raw profile's header needs, at most: enough to call [`header`].
pub const MAX_HEADER_BYTES: usize = 21 * 8;

/// What the header alone says: the version, section sizes and `fixed_size` (the profile's size
/// without value-profile records); `total_size` is set to `fixed_size`. Reads only the header,
/// so a profile inside a large file is sized without reading the rest.
pub fn header(bytes: &[u8]) -> Result<RawProfile, RawProfileError> {
    let magic = u64_at(bytes, 0).ok_or(RawProfileError::TooShort(bytes.len()))?;
    if magic != MAGIC_64 {
        return Err(RawProfileError::BadMagic(magic));
    }
    let raw_version = u64_at(bytes, 1).ok_or(RawProfileError::TooShort(bytes.len()))?;
    let version = raw_version & 0xffff_ffff;
    if !(5..=11).contains(&version) {
        return Err(RawProfileError::UnsupportedVersion(version));
    }
    // Header field order by version (after Magic, Version).
    let names: &[&str] = match version {
        5 => &[
            "DataSize",
            "PaddingBeforeCounters",
            "CountersSize",
            "PaddingAfterCounters",
            "NamesSize",
            "CountersDelta",
            "NamesDelta",
            "ValueKindLast",
        ],
        6..=8 => &[
            "BinaryIdsSize",
            "DataSize",
            "PaddingBeforeCounters",
            "CountersSize",
            "PaddingAfterCounters",
            "NamesSize",
            "CountersDelta",
            "NamesDelta",
            "ValueKindLast",
        ],
        9 => &[
            "BinaryIdsSize",
            "DataSize",
            "PaddingBeforeCounters",
            "CountersSize",
            "PaddingAfterCounters",
            "NumBitmapBytes",
            "PaddingAfterBitmapBytes",
            "NamesSize",
            "CountersDelta",
            "BitmapDelta",
            "NamesDelta",
            "ValueKindLast",
        ],
        10 => &[
            "BinaryIdsSize",
            "DataSize",
            "PaddingBeforeCounters",
            "CountersSize",
            "PaddingAfterCounters",
            "NumBitmapBytes",
            "PaddingAfterBitmapBytes",
            "NamesSize",
            "CountersDelta",
            "BitmapDelta",
            "NamesDelta",
            "NumVTables",
            "VNamesSize",
            "ValueKindLast",
        ],
        // LLVM 22+ (rustc 1.99): three more words after the bitmap padding, zero in coverage
        // builds (measured: 19 header words, 72-byte data records; sizes add up exactly).
        _ => &[
            "BinaryIdsSize",
            "DataSize",
            "PaddingBeforeCounters",
            "CountersSize",
            "PaddingAfterCounters",
            "NumBitmapBytes",
            "PaddingAfterBitmapBytes",
            "Unknown1",
            "Unknown2",
            "Unknown3",
            "NamesSize",
            "CountersDelta",
            "BitmapDelta",
            "NamesDelta",
            "NumVTables",
            "VNamesSize",
            "ValueKindLast",
        ],
    };
    let header_words = 2 + names.len();
    if bytes.len() < header_words * 8 {
        return Err(RawProfileError::TooShort(bytes.len()));
    }
    let field = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u64_at(bytes, 2 + i))
            .unwrap_or(0)
    };
    let unknown: Vec<String> = ["Unknown1", "Unknown2", "Unknown3"]
        .iter()
        .filter(|n| field(n) != 0)
        .map(|n| format!("{n}={}", field(n)))
        .collect();
    if !unknown.is_empty() {
        return Err(RawProfileError::UnknownExtension(unknown.join(", ")));
    }
    // Per-function record: NameRef, FuncHash, CounterPtr, [BitmapPtr], FunctionPointer, Values,
    // NumCounters u32, NumValueSites u16[kinds], [NumBitmapBytes u32], padded to 8; v11 has one
    // more 8-byte field.
    let data_record: u64 = match version {
        ..=8 => 48,
        9 | 10 => 64,
        _ => 72,
    };
    let counter_size = if raw_version & VARIANT_BYTE_COVERAGE != 0 {
        1
    } else {
        8
    };
    let names_size = field("NamesSize");
    let vnames_size = field("VNamesSize");
    let parts = [
        Some(header_words as u64 * 8),
        Some(field("BinaryIdsSize")),
        field("DataSize").checked_mul(data_record),
        Some(field("PaddingBeforeCounters")),
        field("CountersSize").checked_mul(counter_size),
        Some(field("PaddingAfterCounters")),
        Some(field("NumBitmapBytes")),
        Some(field("PaddingAfterBitmapBytes")),
        Some(names_size),
        Some(pad8(names_size)),
        // VTableProfData: name hash u64, pointer, size u32 (+4 padding).
        field("NumVTables").checked_mul(24),
        Some(vnames_size),
        Some(pad8(vnames_size)),
    ];
    let mut fixed: u64 = 0;
    for p in parts {
        fixed = fixed
            .checked_add(p.ok_or(RawProfileError::Overflow)?)
            .ok_or(RawProfileError::Overflow)?;
    }
    Ok(RawProfile {
        version,
        num_data: field("DataSize"),
        num_counters: field("CountersSize"),
        counter_size,
        num_bitmap_bytes: field("NumBitmapBytes"),
        names_size,
        fixed_size: fixed,
        total_size: fixed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal version-8 profile: 1 function, 2 counters, 5 bytes of names.
    fn v8_profile() -> Vec<u8> {
        let mut b = Vec::new();
        let header = [
            MAGIC_64, 8, /* BinaryIdsSize */ 0, /* DataSize */ 1, 0,
            /* Counters */ 2, 0, /* NamesSize */ 5, 0, 0, /* ValueKindLast */ 1,
        ];
        for w in header {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 48]); // one data record
        b.extend_from_slice(&[1u8; 16]); // two counters
        b.extend_from_slice(b"main\0"); // names
        b.extend_from_slice(&[0u8; 3]); // pad to 8
        b
    }

    #[test]
    fn accepts_an_exact_profile() {
        let b = v8_profile();
        let p = parse(&b, true).unwrap();
        assert_eq!(p.version, 8);
        assert_eq!(p.num_counters, 2);
        assert_eq!(p.total_size, b.len() as u64);
    }

    #[test]
    fn rejects_truncation_bad_magic_and_trailing_garbage() {
        let b = v8_profile();
        assert!(matches!(
            parse(&b[..b.len() - 8], true),
            Err(RawProfileError::Truncated { .. })
        ));
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(matches!(
            parse(&bad, true),
            Err(RawProfileError::BadMagic(_))
        ));
        let mut trailing = b.clone();
        trailing.extend_from_slice(&[7u8; 3]);
        assert!(matches!(
            parse(&trailing, true),
            Err(RawProfileError::BadValueData(_))
        ));
        // Two appended profiles: not one exact profile, but the first parses inexactly.
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert!(parse(&two, true).is_err());
        assert_eq!(parse(&two, false).unwrap().total_size, b.len() as u64);
    }

    /// The header of the version-11 profile rustc 1.99.1 wrote for the llvm-rust-target fixture.
    #[test]
    fn accepts_a_version_11_profile_layout() {
        let header: [u64; 19] = [
            MAGIC_64, 11, 32, 41, 0, 114, 0, 0, 0, 0, 0, 0, 400, 0, 0, 0, 0, 0, 2,
        ];
        let mut b = Vec::new();
        for w in header {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.resize(4448, 0);
        let p = parse(&b, true).unwrap();
        assert_eq!((p.version, p.num_data, p.num_counters), (11, 41, 114));
        b[9 * 8] = 1;
        assert!(matches!(
            parse(&b, true),
            Err(RawProfileError::UnknownExtension(_))
        ));
    }

    #[test]
    fn accepts_value_profile_records() {
        let mut b = v8_profile();
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
        assert_eq!(parse(&b, true).unwrap().total_size, b.len() as u64);
    }
}
