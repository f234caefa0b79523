//! Kernel PCs to functions, files and lines.
//!
//! - With vmlinux (DWARF): `addr2line`/`gimli` on a memory map of it, the function from its
//!   symbol table, and the kcov points of a function (the return addresses of its calls to
//!   `__sanitizer_cov_trace_pc`, which are what kcov records) found in its machine code.
//! - Without: /proc/kallsyms of the running kernel, when it is the kernel the PCs came from
//!   (same build id): functions only.
//!
//! kcov records return addresses: every lookup is for PC - 1, the call instruction.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// A vmlinux file, mapped.
pub struct KernelImage {
    pub path: PathBuf,
    map: memmap2::Mmap,
    /// DWARF sections that were compressed in the file, decompressed.
    owned: HashMap<gimli::SectionId, Vec<u8>>,
}

/// Where a PC is in the source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub file: String,
    pub line: u32,
}

/// A function of the kernel (symbol table or kallsyms).
#[derive(Clone, Copy, Debug)]
pub struct Function<'a> {
    pub name: &'a str,
    pub start: u64,
    /// 0 when unknown (kallsyms): up to the next symbol.
    pub size: u64,
}

fn map_file(path: &Path) -> Result<memmap2::Mmap, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    map_open(&file, path)
}

fn map_open(file: &File, path: &Path) -> Result<memmap2::Mmap, String> {
    // SAFETY: a read-only private mapping of a file covobs only reads; a file changed under it
    // would give wrong symbols, never unsoundness in safe code reading bytes.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("mapping {}: {e}", path.display()))
}

/// The GNU build id of an ELF file, hex.
pub fn build_id_of(path: &Path) -> Option<String> {
    let map = map_file(path).ok()?;
    let obj = object::File::parse(&*map).ok()?;
    let id = obj.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

impl KernelImage {
    pub fn open(path: &Path) -> Result<Self, String> {
        Self::mapped(map_file(path)?, path)
    }

    /// An ELF file opened already (a module copy in the session), `path` its name in messages:
    /// any binary with DWARF symbolizes the same way (SanitizerCoverage modules too).
    pub fn from_file(file: &File, path: &Path) -> Result<Self, String> {
        Self::mapped(map_open(file, path)?, path)
    }

    /// The file's bytes.
    pub fn data(&self) -> &[u8] {
        &self.map
    }

    fn mapped(map: memmap2::Mmap, path: &Path) -> Result<Self, String> {
        let mut owned = HashMap::new();
        {
            let obj = object::File::parse(&*map)
                .map_err(|e| format!("{} is not an ELF file: {e}", path.display()))?;
            if obj.section_by_name(".debug_info").is_none() {
                return Err(format!("{} has no DWARF (.debug_info)", path.display()));
            }
            for id in ALL_SECTIONS {
                let Some(s) = obj.section_by_name(id.name()) else {
                    continue;
                };
                let compressed = s
                    .compressed_file_range()
                    .is_ok_and(|r| r.format != object::CompressionFormat::None);
                if compressed {
                    let data = s
                        .uncompressed_data()
                        .map_err(|e| format!("{}: {}: {e}", path.display(), id.name()))?;
                    owned.insert(id, data.into_owned());
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            owned,
        })
    }

    pub fn build_id(&self) -> Option<String> {
        let obj = object::File::parse(&*self.map).ok()?;
        let id = obj.build_id().ok()??;
        Some(id.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A symbolizer borrowing the image.
    pub fn symbolizer(&self) -> Result<Symbolizer<'_>, String> {
        let obj = object::File::parse(&*self.map).map_err(|e| e.to_string())?;
        let owned = &self.owned;
        let get = |id: gimli::SectionId| -> Result<Slice<'_>, String> {
            let data: &[u8] = match owned.get(&id) {
                Some(v) => &v[..],
                None => match obj.section_by_name(id.name()) {
                    Some(s) => s.data().map_err(|e| e.to_string())?,
                    None => &[],
                },
            };
            Ok(Slice::new(data, gimli::LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(get)?;
        let ctx = addr2line::Context::from_dwarf(dwarf)
            .map_err(|e| format!("reading the DWARF of {}: {e}", self.path.display()))?;
        let mut functions: Vec<Function<'_>> = obj
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                Some(Function {
                    name: s.name().ok()?,
                    start: s.address(),
                    size: s.size(),
                })
            })
            .collect();
        functions.sort_by_key(|f| (f.start, std::cmp::Reverse(f.size)));
        functions.dedup_by_key(|f| f.start);
        let trace_pc = obj
            .symbols()
            .find(|s| s.name() == Ok("__sanitizer_cov_trace_pc"))
            .map(|s| s.address());
        let code = obj
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        Ok(Symbolizer {
            ctx,
            functions,
            trace_pc,
            code,
        })
    }
}

/// Every DWARF section addr2line may read.
const ALL_SECTIONS: [gimli::SectionId; 16] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugMacinfo,
    gimli::SectionId::DebugMacro,
    gimli::SectionId::DebugNames,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugTypes,
    gimli::SectionId::DebugLoc,
    gimli::SectionId::DebugLocLists,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
];

/// Lookups in one kernel image.
pub struct Symbolizer<'a> {
    ctx: addr2line::Context<Slice<'a>>,
    /// Sorted by start.
    functions: Vec<Function<'a>>,
    trace_pc: Option<u64>,
    /// Executable sections: (address, bytes).
    code: Vec<(u64, &'a [u8])>,
}

impl<'a> Symbolizer<'a> {
    /// The function a PC (a return address) belongs to.
    pub fn function(&self, pc: u64) -> Option<Function<'a>> {
        let addr = pc.wrapping_sub(1);
        let i = self.functions.partition_point(|f| f.start <= addr);
        let f = *self.functions.get(i.checked_sub(1)?)?;
        (addr < f.start + f.size).then_some(f)
    }

    /// File and line of the call a PC returns from (the innermost inlined frame's).
    pub fn place(&self, pc: u64) -> Option<Place> {
        let loc = self.ctx.find_location(pc.wrapping_sub(1)).ok()??;
        Some(Place {
            file: loc.file?.to_owned(),
            line: loc.line?,
        })
    }

    /// Where a function starts in the source (its first line).
    pub fn function_place(&self, f: &Function<'_>) -> Option<Place> {
        // The entry address itself, not entry - 1: look up start + 1 as a "return address".
        self.place(f.start + 1)
    }

    /// The kcov points of a function: the return addresses of its calls to
    /// `__sanitizer_cov_trace_pc` (a `call rel32`, e8 + 4 bytes, whose target is that
    /// function), i.e. every PC kcov can record in it.
    pub fn kcov_points(&self, f: &Function<'_>) -> Vec<u64> {
        let Some(target) = self.trace_pc else {
            return Vec::new();
        };
        let Some(&(base, bytes)) = self
            .code
            .iter()
            .find(|(addr, data)| f.start >= *addr && f.start + f.size <= addr + data.len() as u64)
        else {
            return Vec::new();
        };
        let from = (f.start - base) as usize;
        let to = from + f.size as usize;
        let code = &bytes[from..to];
        let mut points = Vec::new();
        let mut i = 0;
        while i + 5 <= code.len() {
            if code[i] == 0xe8 {
                let rel = i32::from_le_bytes([code[i + 1], code[i + 2], code[i + 3], code[i + 4]]);
                let next = f.start + i as u64 + 5;
                if next.wrapping_add(rel as i64 as u64) == target {
                    points.push(next);
                    i += 5;
                    continue;
                }
            }
            i += 1;
        }
        points
    }

    /// The out-of-line functions of the compilation unit a PC (a return address) is in: every
    /// DWARF subprogram with an address, as the symbol table names it. Identified by address,
    /// the unit's own list of what it compiled.
    pub fn unit_functions(&self, pc: u64) -> Vec<Function<'a>> {
        let Some(unit) = self
            .ctx
            .find_dwarf_and_unit(pc.wrapping_sub(1))
            .skip_all_loads()
        else {
            return Vec::new();
        };
        let mut starts = Vec::new();
        let mut entries = unit.entries();
        while let Ok(Some(e)) = entries.next_dfs() {
            if e.tag() != gimli::DW_TAG_subprogram {
                continue;
            }
            if let Some(low) = e.attr_value(gimli::DW_AT_low_pc)
                && let Ok(Some(addr)) = unit.attr_address(low)
                && addr != 0
            {
                starts.push(addr);
            }
        }
        starts
            .into_iter()
            .filter_map(|start| {
                let i = self.functions.partition_point(|f| f.start < start);
                self.functions.get(i).filter(|f| f.start == start).copied()
            })
            .collect()
    }

    /// Whether the image knows kcov's callback (it was built with kcov).
    pub fn has_kcov(&self) -> bool {
        self.trace_pc.is_some()
    }
}

/// Function-level lookups in /proc/kallsyms (or a System.map).
pub struct Kallsyms {
    /// Sorted by address; text symbols only.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (matches!(kind, "t" | "T" | "w" | "W") && addr != 0)
                    .then(|| (addr, name.to_owned()))
            })
            .collect();
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        Self { symbols }
    }

    /// /proc/kallsyms, when readable with addresses (root).
    pub fn running() -> Option<Self> {
        let k = Self::parse(&std::fs::read_to_string("/proc/kallsyms").ok()?);
        (!k.symbols.is_empty()).then_some(k)
    }

    /// The function of a PC (a return address) and its start.
    pub fn function(&self, pc: u64) -> Option<(&str, u64)> {
        let addr = pc.wrapping_sub(1);
        let i = self.symbols.partition_point(|s| s.0 <= addr);
        let (start, name) = self.symbols.get(i.checked_sub(1)?)?;
        Some((name.as_str(), *start))
    }
}

/// Where to find the vmlinux of a kernel: `explicit` (--vmlinux), `$COVOBS_VMLINUX`, the usual
/// debug locations for `release`, and covobs' kernel cache; the first whose build id matches.
pub fn find_vmlinux(
    explicit: Option<&Path>,
    build_id: Option<&str>,
    release: Option<&str>,
) -> Result<PathBuf, String> {
    let matches = |p: &Path| match build_id {
        Some(want) => build_id_of(p).is_some_and(|id| id.eq_ignore_ascii_case(want)),
        None => p.is_file(),
    };
    if let Some(p) = explicit {
        return if matches(p) {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "{} is not the kernel the PCs came from (build id {})",
                p.display(),
                build_id.unwrap_or("unknown")
            ))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("COVOBS_VMLINUX") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        candidates.push(PathBuf::from(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        )));
    }
    if let Some(r) = release {
        for p in [
            format!("/usr/lib/debug/boot/vmlinux-{r}"),
            format!("/usr/lib/debug/lib/modules/{r}/vmlinux"),
            format!("/boot/vmlinux-{r}"),
            format!("/lib/modules/{r}/build/vmlinux"),
            format!("/lib/modules/{r}/vmlinux"),
        ] {
            candidates.push(PathBuf::from(p));
        }
    }
    let cache = std::env::var_os("COVOBS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/covobs"))
        .join("kernel");
    if let Ok(dir) = std::fs::read_dir(&cache) {
        let mut entries: Vec<PathBuf> = dir.flatten().map(|e| e.path().join("vmlinux")).collect();
        entries.sort();
        candidates.extend(entries);
    }
    candidates
        .into_iter()
        .find(|p| p.is_file() && matches(p))
        .ok_or_else(|| {
            format!(
                "no vmlinux with build id {} was found (give one with --vmlinux, or $COVOBS_VMLINUX)",
                build_id.unwrap_or("unknown")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_finds_the_function_of_a_return_address() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t helper\n0000000000000000 A fixed\nffffffff81000200 D data\nffffffff81000300 T next\n",
        );
        assert_eq!(
            k.function(0xffffffff81000101),
            Some(("helper", 0xffffffff81000100))
        );
        // PC - 1: a call that ends a function returns to the next one's first byte.
        assert_eq!(
            k.function(0xffffffff81000100),
            Some(("_stext", 0xffffffff81000000))
        );
        assert_eq!(k.function(0x10), None);
    }
}
