//! LLVM raw profiles read against the module they belong to.
//!
//! The module's own `__llvm_prf_data`, `__llvm_prf_cnts`, `__llvm_prf_bits` and
//! `__llvm_prf_names` sections say what every raw profile of it must hold: the same per-function
//! records (name hash, structural hash, where its counters are, how many), the same number of
//! counters and bitmap bytes, the same names. An artifact is read only when it agrees; then its
//! counters section is the module's counter vector, state by state (see [`super::super::tally`]).
//!
//! Layouts read here (compiler-rt InstrProfData.inc, measured on rustc 1.99 and clang 14):
//! a header of u64 words, binary ids, data records, padding, counters (u64), padding, [v9+]
//! bitmap bytes, padding, names, padding. Header words after Magic and Version:
//! - v8 (LLVM 14-17): BinaryIdsSize, NumData, PadBefore, NumCounters, PadAfter, NamesSize,
//!   CountersDelta, NamesDelta, ValueKindLast;
//! - v9: v8 with NumBitmapBytes, PadAfterBitmap after PadAfter and BitmapDelta after
//!   CountersDelta; v10 adds NumVTables, VNamesSize before ValueKindLast;
//! - v11 (LLVM 22+): v10 with three more words after PadAfterBitmap (zero in coverage builds).
//!
//! Data records: NameRef u64, FuncHash u64, CounterPtr (relative to the record since v8), [v9+]
//! BitmapPtr, FunctionPointer, Values, [v11] one more pointer, NumCounters u32, NumValueSites
//! u16[], [v9+] NumBitmapBytes u32; 48, 64 and 72 bytes.
//!
//! Raw profiles of other versions, 32-bit or big-endian ones, and single-byte coverage are not
//! read here (the caller falls back to llvm-profdata for those).
use std::ops::Range;

/// The raw profile versions read here.
pub const VERSIONS: std::ops::RangeInclusive<u64> = 8..=11;

const MAGIC_64: u64 = 0xff6c_7072_6f66_7281;
const VERSION_MASK: u64 = 0x00ff_ffff_ffff_ffff;
const VARIANT_BYTE_COVERAGE: u64 = 1 << 60;

fn word(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn half(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

/// Size of a data record and where NumCounters / NumBitmapBytes sit in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordShape {
    size: usize,
    num_counters: usize,
    bitmap_ptr: Option<usize>,
    num_bitmap_bytes: Option<usize>,
}

fn shape(version: u64) -> Option<RecordShape> {
    match version {
        8 => Some(RecordShape {
            size: 48,
            num_counters: 40,
            bitmap_ptr: None,
            num_bitmap_bytes: None,
        }),
        9 | 10 => Some(RecordShape {
            size: 64,
            num_counters: 48,
            bitmap_ptr: Some(24),
            num_bitmap_bytes: Some(60),
        }),
        11 => Some(RecordShape {
            size: 72,
            num_counters: 56,
            bitmap_ptr: Some(24),
            num_bitmap_bytes: Some(68),
        }),
        _ => None,
    }
}

/// One function's profile record, as the module defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCounters {
    /// MD5 of the function's PGO name (the lower 64 bits).
    pub name_ref: u64,
    /// The structural hash: a mapping record matches a profile record on both.
    pub func_hash: u64,
    /// Its counters in the module's counter vector.
    pub counters: Range<usize>,
    /// Its MC/DC bitmap bytes in the module's bitmap.
    pub bitmap: Range<usize>,
    /// The record's CounterPtr and BitmapPtr as stored (relative offsets), for checking artifacts.
    counter_ptr: u64,
    bitmap_ptr: u64,
}

/// What every raw profile of one module must hold.
#[derive(Clone, Debug)]
pub struct ModuleProfile {
    pub version: u64,
    pub functions: Vec<FunctionCounters>,
    pub num_counters: usize,
    pub num_bitmap_bytes: usize,
    /// The `__llvm_prf_names` bytes (compressed name lists, as the runtime writes them).
    pub names: Vec<u8>,
    pub build_id: Option<Vec<u8>>,
}

/// The counters of one artifact, in the module's order, and where they sit in its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactCounters {
    pub counters: Vec<u64>,
    pub bits: Vec<u8>,
    pub counters_at: usize,
    pub bits_at: usize,
}

/// The counters of one artifact as [`ModuleProfile::read_view`] finds them: borrowed from its
/// bytes when they can be (a timeline point then copies nothing).
#[derive(Clone, Debug)]
pub struct CountersView<'a> {
    pub counters: std::borrow::Cow<'a, [u64]>,
    pub bits: &'a [u8],
    pub counters_at: usize,
    pub bits_at: usize,
}

/// Little-endian u64 words, borrowed when `b` is aligned for them (a profile read into memory
/// is), else copied.
fn words(b: &[u8]) -> std::borrow::Cow<'_, [u64]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid u64, and align_to hands out only the aligned
        // middle part; on a little-endian machine its words are the little-endian values.
        let (head, mid, tail) = unsafe { b.align_to::<u64>() };
        if head.is_empty() && tail.is_empty() {
            return std::borrow::Cow::Borrowed(mid);
        }
    }
    std::borrow::Cow::Owned(
        b.as_chunks::<8>()
            .0
            .iter()
            .map(|c| u64::from_le_bytes(*c))
            .collect(),
    )
}

/// The header fields used here.
#[derive(Clone, Copy, Debug)]
struct Header {
    version: u64,
    byte_coverage: bool,
    header_len: usize,
    binary_ids: u64,
    num_data: u64,
    pad_before: u64,
    num_counters: u64,
    pad_after: u64,
    num_bitmap: u64,
    pad_after_bitmap: u64,
    names_size: u64,
    counters_delta: u64,
    bitmap_delta: u64,
}

fn header(b: &[u8]) -> Result<Header, String> {
    let magic = word(b, 0).ok_or_else(|| format!("{} bytes: no raw profile header", b.len()))?;
    if magic != MAGIC_64 {
        return Err(format!(
            "not a 64-bit little-endian LLVM raw profile (magic {magic:#018x})"
        ));
    }
    let raw = word(b, 8).ok_or("truncated in the header")?;
    let version = raw & VERSION_MASK;
    let w = |i: usize| word(b, 16 + i * 8).ok_or("truncated in the header");
    let (names_i, delta_i, bitmap, words) = match version {
        8 => (5, 6, None, 9),
        9 => (7, 8, Some((5, 6, 9)), 12),
        10 => (7, 8, Some((5, 6, 9)), 14),
        11 => (10, 11, Some((5, 6, 12)), 17),
        v => {
            return Err(format!(
                "raw profile version {v} is not read by covobs' engine"
            ));
        }
    };
    let (num_bitmap, pad_after_bitmap, bitmap_delta) = match bitmap {
        Some((n, p, d)) => (w(n)?, w(p)?, w(d)?),
        None => (0, 0, 0),
    };
    if version == 11 && (w(7)? | w(8)? | w(9)?) != 0 {
        return Err("raw profile version 11 with header words covobs does not know".into());
    }
    Ok(Header {
        version,
        byte_coverage: raw & VARIANT_BYTE_COVERAGE != 0,
        header_len: 16 + words * 8,
        binary_ids: w(0)?,
        num_data: w(1)?,
        pad_before: w(2)?,
        num_counters: w(3)?,
        pad_after: w(4)?,
        num_bitmap,
        pad_after_bitmap,
        names_size: w(names_i)?,
        counters_delta: w(delta_i)?,
        bitmap_delta,
    })
}

/// The raw profile version and whether the engine reads it, from an artifact's first bytes.
pub fn readable_version(bytes: &[u8]) -> Result<u64, String> {
    let h = header(bytes)?;
    if h.byte_coverage {
        return Err("single-byte coverage profiles are not read by covobs' engine".into());
    }
    Ok(h.version)
}

impl ModuleProfile {
    /// Read the module's profile sections (`data`: the ELF file) for raw profiles of `version`.
    pub fn from_elf(data: &[u8], version: u64) -> Result<Self, String> {
        use object::{Object as _, ObjectSection as _};
        let shape = shape(version).ok_or_else(|| {
            format!("raw profile version {version} is not read by covobs' engine")
        })?;
        let file = object::File::parse(data).map_err(|e| format!("not an object file: {e}"))?;
        if !file.is_little_endian() || !file.is_64() {
            return Err("only 64-bit little-endian modules are read".into());
        }
        let section = |name: &str| file.section_by_name(name);
        let data_sec =
            section("__llvm_prf_data").ok_or("the module has no __llvm_prf_data section")?;
        let cnts = section("__llvm_prf_cnts").ok_or("the module has no __llvm_prf_cnts section")?;
        let records = data_sec
            .data()
            .map_err(|e| format!("__llvm_prf_data: {e}"))?;
        let num_counters = usize::try_from(cnts.size() / 8).map_err(|_| "too many counters")?;
        let (bits_addr, num_bitmap_bytes) = match section("__llvm_prf_bits") {
            Some(s) => (
                s.address(),
                usize::try_from(s.size()).map_err(|_| "bitmap too large")?,
            ),
            None => (0, 0),
        };
        let names = section("__llvm_prf_names")
            .map(|s| s.data().map(<[u8]>::to_vec))
            .transpose()
            .map_err(|e| format!("__llvm_prf_names: {e}"))?
            .unwrap_or_default();
        let mut functions = Vec::with_capacity(records.len() / shape.size);
        for (i, r) in records.chunks_exact(shape.size).enumerate() {
            let rec_addr = data_sec.address() + (i * shape.size) as u64;
            let get = |at| word(r, at).unwrap_or(0);
            let counter_ptr = get(16);
            let n = half(r, shape.num_counters).unwrap_or(0) as usize;
            let start = rec_addr
                .wrapping_add(counter_ptr)
                .wrapping_sub(cnts.address());
            if start % 8 != 0
                || start / 8 > num_counters as u64
                || start / 8 + n as u64 > num_counters as u64
            {
                return Err(format!(
                    "data record {i} points outside the module's counters"
                ));
            }
            let first = (start / 8) as usize;
            let (bitmap_ptr, bitmap) = match (shape.bitmap_ptr, shape.num_bitmap_bytes) {
                (Some(p), Some(nb)) => {
                    let ptr = get(p);
                    let nb = half(r, nb).unwrap_or(0) as usize;
                    if nb == 0 {
                        (ptr, 0..0)
                    } else {
                        let at = rec_addr.wrapping_add(ptr).wrapping_sub(bits_addr);
                        if at > num_bitmap_bytes as u64 || at + nb as u64 > num_bitmap_bytes as u64
                        {
                            return Err(format!(
                                "data record {i} points outside the module's bitmap"
                            ));
                        }
                        (ptr, at as usize..at as usize + nb)
                    }
                }
                _ => (0, 0..0),
            };
            functions.push(FunctionCounters {
                name_ref: get(0),
                func_hash: get(8),
                counters: first..first + n,
                bitmap,
                counter_ptr,
                bitmap_ptr,
            });
        }
        let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        Ok(Self {
            version,
            functions,
            num_counters,
            num_bitmap_bytes,
            names,
            build_id,
        })
    }

    /// Read one raw profile of this module: `Err` says why it does not belong to it or is
    /// damaged.
    pub fn read(&self, b: &[u8]) -> Result<ArtifactCounters, String> {
        let v = self.read_view(b)?;
        Ok(ArtifactCounters {
            counters: v.counters.into_owned(),
            bits: v.bits.to_vec(),
            counters_at: v.counters_at,
            bits_at: v.bits_at,
        })
    }

    /// [`ModuleProfile::read`], the counters borrowed from `b` where they can be.
    pub fn read_view<'a>(&self, b: &'a [u8]) -> Result<CountersView<'a>, String> {
        let h = header(b)?;
        if h.version != self.version {
            return Err(format!(
                "raw profile version {}, the module's profiles are version {}",
                h.version, self.version
            ));
        }
        if h.byte_coverage {
            return Err("single-byte coverage profiles are not read by covobs' engine".into());
        }
        let shape = shape(h.version).ok_or("unknown layout")?;
        let expect = |what: &str, got: u64, want: usize| -> Result<(), String> {
            if got == want as u64 {
                Ok(())
            } else {
                Err(format!(
                    "{got} {what}, the module has {want}: not a profile of this build"
                ))
            }
        };
        expect("function records", h.num_data, self.functions.len())?;
        expect("counters", h.num_counters, self.num_counters)?;
        expect("bitmap bytes", h.num_bitmap, self.num_bitmap_bytes)?;
        let sizes = [
            h.header_len as u64,
            h.binary_ids,
            h.num_data.saturating_mul(shape.size as u64),
            h.pad_before,
            h.num_counters.saturating_mul(8),
            h.pad_after,
            h.num_bitmap,
            h.pad_after_bitmap,
            h.names_size,
            pad8(h.names_size),
        ];
        let mut at = [0u64; 11];
        for (i, s) in sizes.iter().enumerate() {
            at[i + 1] = at[i].saturating_add(*s);
        }
        if at[10] > b.len() as u64 {
            return Err(format!(
                "truncated or corrupt: the header announces {} bytes, the artifact has {}",
                at[10],
                b.len()
            ));
        }
        let off = |i: usize| at[i] as usize;
        // The build id, when both sides have one.
        if let (Some(want), Some(got)) = (&self.build_id, first_binary_id(&b[off(1)..off(2)]))
            && want.as_slice() != got
        {
            return Err(format!(
                "its build id {} is not the module's",
                got.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ));
        }
        let data = &b[off(2)..off(3)];
        for (i, (r, f)) in data
            .chunks_exact(shape.size)
            .zip(&self.functions)
            .enumerate()
        {
            let get = |at| word(r, at).unwrap_or(0);
            let n = half(r, shape.num_counters).unwrap_or(0) as usize;
            if get(0) != f.name_ref || get(8) != f.func_hash || n != f.counters.len() {
                return Err(format!(
                    "function record {i} differs from the module's: not a profile of this build"
                ));
            }
            // Where the runtime says this function's counters are: record + CounterPtr, from the
            // counters' start.
            let start = ((i * shape.size) as u64)
                .wrapping_add(get(16))
                .wrapping_sub(h.counters_delta);
            if get(16) != f.counter_ptr || start != f.counters.start as u64 * 8 {
                return Err(format!(
                    "function record {i} puts its counters elsewhere than the module does"
                ));
            }
            if let Some(p) = shape.bitmap_ptr
                && !f.bitmap.is_empty()
            {
                let start = ((i * shape.size) as u64)
                    .wrapping_add(get(p))
                    .wrapping_sub(h.bitmap_delta);
                if get(p) != f.bitmap_ptr || start != f.bitmap.start as u64 {
                    return Err(format!(
                        "function record {i} puts its bitmap elsewhere than the module does"
                    ));
                }
            }
        }
        if !self.names.is_empty() && b[off(8)..off(9)] != self.names[..] {
            return Err("its function names are not the module's".into());
        }
        Ok(CountersView {
            counters: words(&b[off(4)..off(5)]),
            bits: &b[off(6)..off(7)],
            counters_at: off(4),
            bits_at: off(6),
        })
    }
}

/// The first build id of a raw profile's binary ids (u64 length, bytes, padding).
fn first_binary_id(b: &[u8]) -> Option<&[u8]> {
    let len = usize::try_from(word(b, 0)?).ok()?;
    b.get(8..8usize.checked_add(len)?)
}

/// `template` (a raw profile of the module, read by [`ModuleProfile::read`]) with other counters
/// and bitmap bytes: what llvm-profdata is given when it is the oracle.
pub fn with_counters(
    template: &[u8],
    at: &ArtifactCounters,
    counters: &[u64],
    bits: &[u8],
) -> Vec<u8> {
    let mut out = template.to_vec();
    for (i, c) in counters.iter().enumerate() {
        let p = at.counters_at + i * 8;
        if let Some(dst) = out.get_mut(p..p + 8) {
            dst.copy_from_slice(&c.to_le_bytes());
        }
    }
    if let Some(dst) = out.get_mut(at.bits_at..at.bits_at + bits.len()) {
        dst.copy_from_slice(bits);
    }
    out
}
