//! A module's coverage mapping: `__llvm_covmap` (per translation unit, its file names),
//! `__llvm_covfun` (per function, its regions and counter expressions) and the function names
//! in `__llvm_prf_names`, read once per build id.
//!
//! Formats read (LLVM's CoverageMappingReader, mapping versions 4 to 7, i.e. LLVM 11 to 23:
//! clang 14 writes version 6, rustc 1.99 version 7): a covmap record is four u32 (records: 0,
//! filenames size, coverage size: 0, version) then the encoded file names (a ULEB count, then
//! either the names or a zlib-compressed block of them; since version 6 the first name is the
//! compilation directory and relative names are joined to it); a covfun record is NameRef u64,
//! mapping size u32, FuncHash u64, FilenamesRef u64 (MD5 of a covmap record's encoded names),
//! then the mapping: the function's files (indices into its translation unit's names), its
//! counter expressions, and per file its regions (code, expansion, skipped, gap, branch, MC/DC
//! decision and branch).
//!
//! Why not a crate: llvm_profparser (what cargo-tarpaulin uses) supports one LLVM version per
//! build, chosen by a cargo feature, and none newer than LLVM 22; covobs reads modules of
//! several LLVM majors (clang 14 and rustc's LLVM 23) in one report, and needs llvm-cov's own
//! region semantics, which the crate does not reproduce.
use std::{collections::HashMap, io::Read as _, sync::Arc};

use md5::Digest as _;

/// A counter reference in a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Zero,
    /// A profile counter of the function.
    Ref(u32),
    /// An expression of the function.
    Expr(u32),
}

impl Counter {
    pub fn is_zero(self) -> bool {
        self == Counter::Zero
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expression {
    pub subtract: bool,
    pub lhs: Counter,
    pub rhs: Counter,
}

/// Region kinds, in LLVM's order (the order matters when regions cover the same area).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Code = 0,
    Expansion = 1,
    Skipped = 2,
    Gap = 3,
    Branch = 4,
    McdcDecision = 5,
    McdcBranch = 6,
}

impl Kind {
    pub fn is_branch(self) -> bool {
        matches!(self, Kind::Branch | Kind::McdcBranch)
    }
}

/// One mapping region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub count: Counter,
    pub false_count: Counter,
    pub file_id: u32,
    pub expanded_file_id: u32,
    pub line_start: u32,
    pub col_start: u32,
    pub line_end: u32,
    pub col_end: u32,
    pub kind: Kind,
}

impl Region {
    pub fn start(&self) -> (u32, u32) {
        (self.line_start, self.col_start)
    }

    pub fn end(&self) -> (u32, u32) {
        (self.line_end, self.col_end)
    }
}

/// One function's mapping.
#[derive(Clone, Debug)]
pub struct FunctionMapping {
    /// Its PGO name (from the names section, by NameRef).
    pub name: String,
    pub name_ref: u64,
    pub func_hash: u64,
    /// The function's files, by file id.
    pub filenames: Vec<Arc<str>>,
    pub expressions: Vec<Expression>,
    pub regions: Vec<Region>,
}

/// A module's whole mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The covmap version as stored (LLVM's CovMapVersion minus one).
    pub version: u32,
    pub functions: Vec<FunctionMapping>,
}

/// The versions read here (stored numbers: Version4 .. Version7).
const VERSIONS: std::ops::RangeInclusive<u32> = 3..=6;
/// Version6 (stored 5): the compilation directory is the first file name.
const V6: u32 = 5;

/// MD5 of `data`, its first 8 bytes as a little-endian u64 (LLVM's IndexedInstrProf::ComputeHash).
pub fn md5_low(data: &[u8]) -> u64 {
    let d = md5::Md5::digest(data);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }

    fn uleb(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.at).ok_or("truncated coverage data")?;
            self.at += 1;
            if shift < 64 {
                v |= u64::from(byte & 0x7f) << shift;
            }
            if byte & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn max(&mut self, max_plus_1: u64) -> Result<u64, String> {
        let v = self.uleb()?;
        if v >= max_plus_1 {
            return Err("malformed coverage data (a value out of range)".into());
        }
        Ok(v)
    }

    fn size(&mut self) -> Result<usize, String> {
        let v = self.uleb()?;
        if v > (self.b.len() - self.at) as u64 {
            return Err("malformed coverage data (a size past the end)".into());
        }
        Ok(v as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or("truncated coverage data")?;
        self.at += n;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.size()?;
        Ok(String::from_utf8_lossy(self.bytes(n)?).into_owned())
    }
}

fn inflate(z: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len.min(1 << 26));
    flate2::read::ZlibDecoder::new(z)
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("failed to decompress coverage data (zlib): {e}"))?;
    Ok(out)
}

/// `dir` joined with a relative `name`, then `.` and `..` removed (llvm::sys::path::append and
/// remove_dots with remove_dot_dot).
fn join_clean(dir: &str, name: &str) -> String {
    let joined = if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    };
    let absolute = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    if absolute { format!("/{body}") } else { body }
}

/// One covmap record's encoded file names.
fn filenames(blob: &[u8], version: u32) -> Result<Vec<String>, String> {
    let mut c = Cursor::new(blob);
    let n = c.size()?;
    if n == 0 {
        return Err("malformed coverage data (no file names)".into());
    }
    let uncompressed = usize::try_from(c.uleb()?).map_err(|_| "too large")?;
    let compressed = c.size()?;
    let owned;
    let mut names = if compressed > 0 {
        owned = inflate(c.bytes(compressed)?, uncompressed)?;
        Cursor::new(&owned)
    } else {
        c
    };
    let mut out = Vec::with_capacity(n);
    if version < V6 {
        for _ in 0..n {
            out.push(names.string()?);
        }
        return Ok(out);
    }
    let cwd = names.string()?;
    out.push(cwd.clone());
    for _ in 1..n {
        let f = names.string()?;
        if f.starts_with('/') {
            out.push(f);
        } else {
            out.push(join_clean(&cwd, &f));
        }
    }
    Ok(out)
}

/// The names in a names section: MD5 of each name -> name.
fn name_table(section: &[u8]) -> Result<HashMap<u64, String>, String> {
    let mut table = HashMap::new();
    let mut c = Cursor::new(section);
    while c.at < section.len() {
        let uncompressed = usize::try_from(c.uleb()?).map_err(|_| "too large")?;
        let compressed = usize::try_from(c.uleb()?).map_err(|_| "too large")?;
        let data = if compressed > 0 {
            inflate(c.bytes(compressed)?, uncompressed)?
        } else {
            c.bytes(uncompressed)?.to_vec()
        };
        for name in data.split(|&b| b == 1) {
            if !name.is_empty() {
                table.insert(md5_low(name), String::from_utf8_lossy(name).into_owned());
            }
        }
        // The writer pads each chunk with zeros to 8 bytes.
        while c.at < section.len() && section[c.at] == 0 {
            c.at += 1;
        }
    }
    Ok(table)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A mapping that is only one zero region in one file, of a function with hash 0: emitted for an
/// inline function seen but not used in a translation unit.
fn is_dummy(hash: u64, data: &[u8]) -> bool {
    if hash != 0 {
        return false;
    }
    let mut c = Cursor::new(data);
    let ok = (|| -> Result<bool, String> {
        if c.size()? != 1 {
            return Ok(false);
        }
        c.uleb()?;
        if c.size()? != 0 {
            return Ok(false);
        }
        if c.size()? != 1 {
            return Ok(false);
        }
        Ok(c.uleb()? & 3 == 0)
    })();
    ok.unwrap_or(false)
}

fn decode_counter(v: u64, exprs: &mut [Expression]) -> Result<Counter, String> {
    let tag = v & 3;
    let id = u32::try_from(v >> 2).map_err(|_| "counter id too large")?;
    match tag {
        0 => Ok(Counter::Zero),
        1 => Ok(Counter::Ref(id)),
        t => {
            let e = exprs
                .get_mut(id as usize)
                .ok_or("malformed coverage data (counter expression is invalid)")?;
            e.subtract = t == 2;
            Ok(Counter::Expr(id))
        }
    }
}

/// A decoded mapping: the function's files, expressions and regions.
type Decoded = (Vec<Arc<str>>, Vec<Expression>, Vec<Region>);

/// Decode one function's mapping (LLVM's RawCoverageMappingReader).
fn decode(data: &[u8], tu_files: &[Arc<str>]) -> Result<Decoded, String> {
    let mut c = Cursor::new(data);
    let nfiles = c.size()?;
    let mut files = Vec::with_capacity(nfiles);
    for _ in 0..nfiles {
        let i = c.max(tu_files.len() as u64)? as usize;
        files.push(tu_files[i].clone());
    }
    let nexpr = c.size()?;
    let mut exprs = vec![
        Expression {
            subtract: true,
            lhs: Counter::Zero,
            rhs: Counter::Zero,
        };
        nexpr
    ];
    for i in 0..nexpr {
        let l = c.max(u64::from(u32::MAX))?;
        let lhs = decode_counter(l, &mut exprs)?;
        let r = c.max(u64::from(u32::MAX))?;
        let rhs = decode_counter(r, &mut exprs)?;
        exprs[i].lhs = lhs;
        exprs[i].rhs = rhs;
    }
    let mut regions = Vec::new();
    for file_id in 0..nfiles as u32 {
        let nregions = c.size()?;
        let mut line_start = 0u32;
        for _ in 0..nregions {
            let enc = c.max(u64::from(u32::MAX))?;
            let tag = enc & 3;
            let mut kind = Kind::Code;
            let mut count = Counter::Zero;
            let mut false_count = Counter::Zero;
            let mut expanded = 0u32;
            if tag != 0 {
                count = decode_counter(enc, &mut exprs)?;
            } else if enc & 4 != 0 {
                kind = Kind::Expansion;
                expanded = u32::try_from(enc >> 3).map_err(|_| "bad expansion")?;
                if expanded as usize >= nfiles {
                    return Err("malformed coverage data (ExpandedFileID is invalid)".into());
                }
            } else {
                match enc >> 3 {
                    0 => {}
                    2 => kind = Kind::Skipped,
                    4 => {
                        kind = Kind::Branch;
                        count = decode_counter(c.max(u64::from(u32::MAX))?, &mut exprs)?;
                        false_count = decode_counter(c.max(u64::from(u32::MAX))?, &mut exprs)?;
                    }
                    6 => {
                        kind = Kind::McdcBranch;
                        count = decode_counter(c.max(u64::from(u32::MAX))?, &mut exprs)?;
                        false_count = decode_counter(c.max(u64::from(u32::MAX))?, &mut exprs)?;
                        // Condition id, true and false ids: not needed for lines, branches or
                        // regions.
                        for _ in 0..3 {
                            c.max(i16::MAX as u64)?;
                        }
                    }
                    5 => {
                        kind = Kind::McdcDecision;
                        c.max(u64::from(u32::MAX))?;
                        c.max(i16::MAX as u64)?;
                    }
                    _ => return Err("malformed coverage data (region kind is incorrect)".into()),
                }
            }
            let delta = c.max(u64::from(u32::MAX))? as u32;
            let col_start = c.uleb()?;
            if col_start > u64::from(u32::MAX) {
                return Err("malformed coverage data (start column is too big)".into());
            }
            let nlines = c.max(u64::from(u32::MAX))? as u32;
            let mut col_end = c.max(u64::from(u32::MAX))? as u32;
            let mut col_start = col_start as u32;
            line_start = line_start.wrapping_add(delta);
            if col_end & (1 << 31) != 0 {
                kind = Kind::Gap;
                col_end &= !(1 << 31);
            }
            if col_start == 0 && col_end == 0 {
                col_start = 1;
                col_end = u32::MAX;
            }
            let r = Region {
                count,
                false_count,
                file_id,
                expanded_file_id: expanded,
                line_start,
                col_start,
                line_end: line_start.wrapping_add(nlines),
                col_end,
                kind,
            };
            if r.start() > r.end() {
                return Err(
                    "malformed coverage data (counter mapping region locations are incorrect)"
                        .into(),
                );
            }
            regions.push(r);
        }
    }
    // An expansion region's counter is the one of the first region of the file it expands,
    // propagated through nested expansions until nothing changes.
    loop {
        let mut slot: Vec<Option<usize>> = vec![None; nfiles];
        for (i, r) in regions.iter().enumerate() {
            if r.kind == Kind::Expansion {
                slot[r.expanded_file_id as usize] = Some(i);
            }
        }
        let mut changed = false;
        for i in 0..regions.len() {
            let f = regions[i].file_id as usize;
            if let Some(e) = slot[f].take()
                && regions[e].count != regions[i].count
            {
                regions[e].count = regions[i].count;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok((files, exprs, regions))
}

impl Mapping {
    /// Read the mapping of an ELF module. `Err` names what is missing or not understood (the
    /// caller then falls back to llvm-cov).
    pub fn from_elf(data: &[u8]) -> Result<Self, String> {
        use object::{Object as _, ObjectSection as _};
        let file = object::File::parse(data).map_err(|e| format!("not an object file: {e}"))?;
        if !file.is_little_endian() || !file.is_64() {
            return Err("only 64-bit little-endian modules are read".into());
        }
        let names = file
            .section_by_name("__llvm_prf_names")
            .filter(|s| s.size() > 0)
            .or_else(|| file.section_by_name("__llvm_covnames"))
            .ok_or("no __llvm_prf_names section")?;
        let names = names
            .uncompressed_data()
            .map_err(|e| format!("names: {e}"))?;
        let names = name_table(&names)?;
        let covmap = file
            .section_by_name("__llvm_covmap")
            .ok_or("no __llvm_covmap section")?
            .uncompressed_data()
            .map_err(|e| format!("__llvm_covmap: {e}"))?;
        let covfun = match file.section_by_name("__llvm_covfun") {
            Some(s) => s
                .uncompressed_data()
                .map_err(|e| format!("__llvm_covfun: {e}"))?
                .into_owned(),
            None => Vec::new(),
        };
        Self::read(&covmap, &covfun, &names)
    }

    fn read(covmap: &[u8], covfun: &[u8], names: &HashMap<u64, String>) -> Result<Self, String> {
        let version = le32(covmap, 12).ok_or("empty __llvm_covmap")?;
        if !VERSIONS.contains(&version) {
            return Err(format!(
                "coverage mapping version {} is not read by covobs' engine",
                version + 1
            ));
        }
        // FilenamesRef -> the translation unit's names.
        let mut tus: HashMap<u64, Option<Arc<[Arc<str>]>>> = HashMap::new();
        let mut at = 0;
        while at < covmap.len() {
            let h = |i: usize| le32(covmap, at + i * 4).ok_or("truncated __llvm_covmap");
            let (nrecords, fsize, csize, v) = (h(0)?, h(1)? as usize, h(2)?, h(3)?);
            if v != version {
                return Err("__llvm_covmap mixes mapping versions".into());
            }
            if nrecords != 0 || csize != 0 {
                return Err("malformed coverage data (records in __llvm_covmap)".into());
            }
            let start = at + 16;
            let blob = covmap
                .get(start..start + fsize)
                .ok_or("malformed coverage data (filenames past the end)")?;
            let list: Arc<[Arc<str>]> = filenames(blob, version)?
                .into_iter()
                .map(Arc::from)
                .collect();
            match tus.entry(md5_low(blob)) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Some(list));
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    // Two different lists with one hash: neither can be used.
                    if e.get().as_deref() != Some(&list[..]) {
                        e.insert(None);
                    }
                }
            }
            at = (start + fsize).next_multiple_of(8);
        }
        // Function records, one per name (a real mapping wins over a dummy one).
        struct Raw<'a> {
            name_ref: u64,
            hash: u64,
            data: &'a [u8],
            tu: Arc<[Arc<str>]>,
        }
        let mut records: Vec<Raw> = Vec::new();
        let mut by_name: HashMap<u64, usize> = HashMap::new();
        let mut at = 0;
        while at + 28 <= covfun.len() {
            let name_ref = le64(covfun, at).ok_or("truncated __llvm_covfun")?;
            let size = le32(covfun, at + 8).ok_or("truncated __llvm_covfun")? as usize;
            let hash = le64(covfun, at + 12).ok_or("truncated __llvm_covfun")?;
            let fref = le64(covfun, at + 20).ok_or("truncated __llvm_covfun")?;
            let data = covfun
                .get(at + 28..at + 28 + size)
                .ok_or("malformed coverage data (mapping past the end)")?;
            at = (at + 28 + size).next_multiple_of(8);
            let tu = match tus.get(&fref) {
                Some(Some(tu)) => tu.clone(),
                Some(None) => continue,
                None => {
                    return Err(format!(
                        "malformed coverage data (no file names for a function, hash {fref:#x})"
                    ));
                }
            };
            match by_name.get(&name_ref) {
                None => {
                    by_name.insert(name_ref, records.len());
                    records.push(Raw {
                        name_ref,
                        hash,
                        data,
                        tu,
                    });
                }
                Some(&i) => {
                    let old = &records[i];
                    if is_dummy(old.hash, old.data) && !is_dummy(hash, data) {
                        records[i] = Raw {
                            name_ref,
                            hash,
                            data,
                            tu,
                        };
                    }
                }
            }
        }
        let mut functions = Vec::with_capacity(records.len());
        for r in records {
            let name = names
                .get(&r.name_ref)
                .cloned()
                .ok_or("malformed coverage data (function name is empty)")?;
            let (filenames, expressions, regions) = decode(r.data, &r.tu)?;
            functions.push(FunctionMapping {
                name,
                name_ref: r.name_ref,
                func_hash: r.hash,
                filenames,
                expressions,
                regions,
            });
        }
        Ok(Self { version, functions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_and_cleaned_like_llvm() {
        assert_eq!(join_clean("/a/b", "c.rs"), "/a/b/c.rs");
        assert_eq!(join_clean("/a/b/", "./c.rs"), "/a/b/c.rs");
        assert_eq!(join_clean("/a/b", "../c.rs"), "/a/c.rs");
        assert_eq!(join_clean("/a", "../../c.rs"), "/c.rs");
        assert_eq!(join_clean("", "x/../y.c"), "y.c");
    }

    #[test]
    fn md5_matches_llvm_name_hashes() {
        // The NameRef rustc 1.99 records for `main` of a crate is MD5("main")'s low half only
        // for C; check the digest itself on a known value.
        assert_eq!(
            md5_low(b""),
            u64::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04])
        );
    }
}
