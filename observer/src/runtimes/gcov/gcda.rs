//! gcov `.gcda` files: validation, and where a target's runtime writes them (the paths compiled
//! into the binary, moved by `GCOV_PREFIX` / `GCOV_PREFIX_STRIP` as libgcov does).
use crate::target::environ::Environ;

pub use covobs_layout::formats::gcov::MAGIC;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GcdaError {
    #[error("{0} bytes is too short for a .gcda header")]
    TooShort(usize),
    #[error("not a .gcda file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("records of the .gcda do not add up to its {0} bytes")]
    BadRecords(usize),
}

/// What a .gcda header says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gcda {
    /// The gcov version as libgcov writes it ("B21*" for GCC 12, read as text).
    pub version: String,
    pub records: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Check a .gcda: magic, version, then records (tag, length) that end exactly at the end (or at
/// the zero word libgcov writes after the last record). The
/// record length is in bytes since GCC 12 and in 4-byte words before; either reading must fit.
pub fn parse(data: &[u8]) -> Result<Gcda, GcdaError> {
    let magic = u32_at(data, 0).ok_or(GcdaError::TooShort(data.len()))?;
    if magic != MAGIC {
        return Err(GcdaError::BadMagic(magic));
    }
    let version_word = u32_at(data, 4).ok_or(GcdaError::TooShort(data.len()))?;
    // The version is written as a u32 whose bytes, most significant first, read as text.
    let version: String = version_word
        .to_be_bytes()
        .iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                *b as char
            } else {
                '?'
            }
        })
        .collect();
    // magic, version, stamp, and (GCC 12+) a checksum.
    let header = if version_word >= u32::from_be_bytes(*b"B20*") {
        16
    } else {
        12
    };
    for unit in [1usize, 4] {
        let mut at = header;
        let mut records = 0;
        let ok = loop {
            // libgcov ends the data with a zero word.
            if at == data.len() || (data.len() - at == 4 && u32_at(data, at) == Some(0)) {
                break true;
            }
            let (Some(_tag), Some(len)) = (u32_at(data, at), u32_at(data, at + 4)) else {
                break false;
            };
            // GCC 12+: a negative length says "that many counters, all zero, not stored".
            let stored = if (len as i32) < 0 { 0 } else { len as usize };
            let next = at + 8 + stored * unit;
            if next > data.len() {
                break false;
            }
            at = next;
            records += 1;
        };
        if ok {
            return Ok(Gcda { version, records });
        }
    }
    Err(GcdaError::BadRecords(data.len()))
}

/// "gcno" as GCC writes the notes' magic: a native-endian u32.
pub const NOTES_MAGIC: u32 = 0x6763_6e6f;

/// Check that a file is gcov notes: its magic and a version word of printable characters (GCC
/// writes e.g. "B21*"). Says nothing of the bytes it refuses: the file may not be notes at all.
pub fn parse_notes(data: &[u8]) -> Result<(), &'static str> {
    if u32_at(data, 0) != Some(NOTES_MAGIC) {
        return Err("no gcno magic");
    }
    let version = u32_at(data, 4).ok_or("no version")?;
    if !version.to_be_bytes().iter().all(u8::is_ascii_graphic) {
        return Err("no gcov version");
    }
    Ok(())
}

/// libgcov's relocation of .gcda paths: strip `GCOV_PREFIX_STRIP` leading components of the
/// compiled-in (absolute) path, then put `GCOV_PREFIX` in front.
pub fn relocate(path: &str, prefix: Option<&str>, strip: usize) -> String {
    let Some(prefix) = prefix.filter(|p| !p.is_empty()) else {
        return path.to_owned();
    };
    let mut rest = path;
    for _ in 0..strip {
        let trimmed = rest.trim_start_matches('/');
        match trimmed.find('/') {
            Some(i) => rest = &trimmed[i..],
            None => break,
        }
    }
    format!(
        "{}/{}",
        prefix.trim_end_matches('/'),
        rest.trim_start_matches('/')
    )
}

/// Where a process's gcov runtime writes: (the path compiled into the binary, where the
/// environment moves it). The compiled path is where the compiler left the `.gcno` notes.
pub fn paths_for_process(pid: u32, compiled: &[String]) -> Vec<(String, String)> {
    let env = Environ::of(pid);
    let prefix = env.var("GCOV_PREFIX");
    let strip = env
        .var("GCOV_PREFIX_STRIP")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    compiled
        .iter()
        .map(|p| (p.clone(), relocate(p, prefix, strip)))
        .collect()
}

/// The notes file the compiler wrote beside the object: `<compiled path>.gcno`.
pub fn gcno_of(compiled_gcda: &str) -> String {
    match compiled_gcda.strip_suffix(".gcda") {
        Some(stem) => format!("{stem}.gcno"),
        None => format!("{compiled_gcda}.gcno"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcda(version: &[u8; 4], records: &[(u32, &[u8])], unit: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&u32::from_be_bytes(*version).to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes()); // stamp
        b.extend_from_slice(&9u32.to_le_bytes()); // checksum
        for (tag, payload) in records {
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&((payload.len() / unit) as u32).to_le_bytes());
            b.extend_from_slice(payload);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    #[test]
    fn validates_records() {
        let data = gcda(
            b"B21*",
            &[(0x0100_0000, &[0u8; 12]), (0x01a1_0000, &[1u8; 8])],
            1,
        );
        let g = parse(&data).unwrap();
        assert_eq!((g.version.as_str(), g.records), ("B21*", 2));
        assert!(matches!(
            parse(&data[..data.len() - 3]),
            Err(GcdaError::BadRecords(_))
        ));
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(matches!(parse(&bad), Err(GcdaError::BadMagic(_))));
    }

    #[test]
    fn knows_notes_from_anything_else() {
        let mut notes = NOTES_MAGIC.to_le_bytes().to_vec();
        notes.extend_from_slice(&u32::from_be_bytes(*b"B21*").to_le_bytes());
        notes.extend_from_slice(&[0; 8]);
        assert_eq!(parse_notes(&notes), Ok(()));
        assert!(parse_notes(b"root:*:19000:0:99999:7:::\n").is_err());
        assert!(parse_notes(&notes[..6]).is_err());
        let data = gcda(b"B21*", &[], 1);
        assert!(parse_notes(&data).is_err(), "a .gcda is not notes");
    }

    #[test]
    fn relocates_like_libgcov() {
        assert_eq!(relocate("/build/obj/a.gcda", None, 3), "/build/obj/a.gcda");
        assert_eq!(
            relocate("/build/obj/a.gcda", Some("/tmp/g"), 0),
            "/tmp/g/build/obj/a.gcda"
        );
        assert_eq!(
            relocate("/build/obj/a.gcda", Some("/tmp/g/"), 2),
            "/tmp/g/a.gcda"
        );
        assert_eq!(
            relocate("/build/obj/a.gcda", Some("/tmp/g"), 9),
            "/tmp/g/a.gcda"
        );
    }
}
