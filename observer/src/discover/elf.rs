//! Reads one ELF file: its build-id, producer, coverage sections and the symbols covobs hooks,
//! with their file offsets (what a uprobe is attached at).
use std::{fs::File, path::Path};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use super::hooks::{Hook, HookMatch};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file covobs can read: {source}")]
    Parse { path: String, source: object::Error },
}

/// What covobs needs to know about one ELF file.
#[derive(Clone, Debug, Default)]
pub struct ElfInfo {
    pub build_id: Option<String>,
    /// `.comment` strings: "rustc version 1.99.1 ...", "clang version 14.0.6", "GCC: ...".
    pub producers: Vec<String>,
    /// The hooks found, with their file offsets.
    pub hooks: Vec<FoundHook>,
    /// Coverage-related sections present (`__llvm_prf_cnts`, `__sancov_cntrs`, ...).
    pub sections: Vec<SectionInfo>,
    /// Where the symbols came from: "symtab", "dynsym" or "none" (stripped).
    pub symbol_source: &'static str,
    /// `.gnu_debuglink` file name, for finding a separate debug file.
    pub debuglink: Option<String>,
    /// Virtual address of `__llvm_profile_raw_version` (data) if present.
    pub llvm_raw_version_addr: Option<u64>,
    /// ELF type is ET_DYN (PIE or shared object): addresses are relative to the load bias.
    pub position_independent: bool,
    /// Loadable segments: (virtual address, memory size, file offset).
    pub segments: Vec<(u64, u64, u64)>,
    /// Read-only data mentions `OCAMLRUNPARAM`: the OCaml runtime is linked in (found even when
    /// its symbols are stripped).
    pub ocaml_runtime_text: bool,
    /// Read-only data holds `BISECT-COVERAGE-4`: the bisect_ppx runtime is linked in.
    pub bisect_runtime_text: bool,
    /// The `.gcda` files gcov's runtime will write (paths compiled into the binary).
    pub gcda_paths: Vec<String>,
}

impl ElfInfo {
    /// File offset of a virtual address, through the loadable segments.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(addr, size, _)| vaddr >= *addr && vaddr < addr + size)
            .map(|(addr, _, off)| vaddr - addr + off)
    }

    /// Take the hooks from a separate debug file (same build-id) of a stripped binary: symbols
    /// come from the debug file, file offsets from this file's segments.
    pub fn adopt_debug_symbols(&mut self, debug: &ElfInfo) {
        for found in &debug.hooks {
            if self.hooks.iter().any(|h| h.symbol == found.symbol) {
                continue;
            }
            if let Some(file_offset) = self.file_offset(found.vaddr) {
                // The debug file has no code: the entry bytes are read from this file later.
                self.hooks.push(FoundHook {
                    file_offset,
                    ..found.clone()
                });
            }
        }
        if self.llvm_raw_version_addr.is_none() {
            self.llvm_raw_version_addr = debug.llvm_raw_version_addr;
        }
        self.symbol_source = "debug file";
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundHook {
    pub hook: &'static Hook,
    /// The full symbol name (hooks matched by prefix carry OCaml's stamp suffix).
    pub symbol: String,
    pub vaddr: u64,
    pub file_offset: u64,
    /// The first bytes of the function's code (to tell cheap probe points from dear ones).
    pub entry: [u8; 8],
}

impl FoundHook {
    /// Whether a uprobe here is cheap: x86-64 uprobes emulate `push` (about 0.5 us a hit on
    /// this kind of machine) but single-step most other first instructions (about 9.5 us).
    pub fn cheap_entry(&self) -> bool {
        let code = match self.entry {
            // endbr64 is a hint; the instruction after it is the one that counts.
            [0xf3, 0x0f, 0x1e, 0xfa, rest @ ..] => rest.to_vec(),
            e => e.to_vec(),
        };
        matches!(code.as_slice(), [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SectionInfo {
    pub name: String,
    pub vaddr: u64,
    pub size: u64,
    pub file_offset: u64,
}

/// Sections whose presence reveals a coverage runtime even without symbols.
const COVERAGE_SECTIONS: [&str; 10] = [
    "__llvm_prf_cnts",
    "__llvm_prf_data",
    "__llvm_prf_names",
    "__llvm_prf_bits",
    "__llvm_covmap",
    "__llvm_covfun",
    "__sancov_guards",
    "__sancov_cntrs",
    "__sancov_bools",
    "__sancov_pcs",
];

pub fn read(path: &Path) -> Result<ElfInfo, ElfError> {
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| ElfError::Open {
        path: shown(),
        source,
    })?;
    // SAFETY: the map is read-only and private; covobs only reads it. A target rewriting the file
    // underneath could change bytes we read (not memory safety for a read-only MAP_PRIVATE map of a
    // regular file, but inconsistent data): everything read is validated before use.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ElfError::Open {
        path: shown(),
        source,
    })?;
    parse(&map).map_err(|source| ElfError::Parse {
        path: shown(),
        source,
    })
}

pub fn parse(data: &[u8]) -> Result<ElfInfo, object::Error> {
    let obj = object::File::parse(data)?;
    let mut info = ElfInfo {
        build_id: obj.build_id()?.map(hex),
        position_independent: matches!(obj.kind(), object::ObjectKind::Dynamic),
        ..Default::default()
    };
    if let Some(comment) = obj.section_by_name(".comment")
        && let Ok(bytes) = comment.data()
    {
        info.producers = bytes
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).trim().to_owned())
            .collect();
        info.producers.dedup();
    }
    if let Ok(Some((name, _crc))) = obj.gnu_debuglink() {
        info.debuglink = Some(String::from_utf8_lossy(name).into_owned());
    }
    if let Some(rodata) = obj.section_by_name(".rodata")
        && let Ok(bytes) = rodata.data()
    {
        info.ocaml_runtime_text = memchr::memmem::find(bytes, b"OCAMLRUNPARAM").is_some();
        info.bisect_runtime_text = memchr::memmem::find(bytes, b"BISECT-COVERAGE-4").is_some();
        info.gcda_paths = bytes
            .split(|b| *b == 0)
            .filter(|s| s.ends_with(b".gcda") && s.len() > 5 && s.len() < 4096)
            .filter_map(|s| std::str::from_utf8(s).ok())
            .map(str::to_owned)
            .collect();
        info.gcda_paths.sort();
        info.gcda_paths.dedup();
    }
    for section in obj.sections() {
        let Ok(name) = section.name() else { continue };
        if COVERAGE_SECTIONS.contains(&name) {
            info.sections.push(SectionInfo {
                name: name.to_owned(),
                vaddr: section.address(),
                size: section.size(),
                file_offset: section.file_range().map_or(0, |(o, _)| o),
            });
        }
    }

    info.segments = obj
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .collect();
    let segments = info.segments.clone();
    let file_offset = |vaddr: u64| {
        segments
            .iter()
            .find(|(addr, size, _)| vaddr >= *addr && vaddr < addr + size)
            .map(|(addr, _, off)| vaddr - addr + off)
    };

    let symtab: Vec<_> = obj.symbols().collect();
    let (symbols, source) = if !symtab.is_empty() {
        (symtab, "symtab")
    } else {
        let dynsym: Vec<_> = obj.dynamic_symbols().collect();
        if dynsym.is_empty() {
            (dynsym, "none")
        } else {
            (dynsym, "dynsym")
        }
    };
    info.symbol_source = source;
    // .symtab normally holds every .dynsym symbol too; where a linker dropped one, look there.
    let extra: Vec<_> = if source == "symtab" {
        obj.dynamic_symbols().collect()
    } else {
        Vec::new()
    };
    for sym in symbols.iter().chain(extra.iter()) {
        let Ok(name) = sym.name() else { continue };
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        if name == "__llvm_profile_raw_version" {
            info.llvm_raw_version_addr = Some(sym.address());
            continue;
        }
        if sym.kind() != SymbolKind::Text {
            continue;
        }
        for hook in crate::runtimes::hooks() {
            let matched = match hook.matcher {
                HookMatch::Exact(n) => name == n,
                HookMatch::Prefix(p) => name.starts_with(p),
            };
            if !matched || info.hooks.iter().any(|h| h.symbol == name) {
                continue;
            }
            if let Some(off) = file_offset(sym.address()) {
                let mut entry = [0u8; 8];
                if let Some(code) = data.get(off as usize..off as usize + 8) {
                    entry.copy_from_slice(code);
                }
                info.hooks.push(FoundHook {
                    hook,
                    symbol: name.to_owned(),
                    vaddr: sym.address(),
                    file_offset: off,
                    entry,
                });
            }
        }
    }
    Ok(info)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The LLVM major version of the compiler that produced a module, from its `.comment`.
/// rustc records its own version only; `rustc_llvm_major` maps it where the toolchain is known.
pub fn llvm_major_from_producers(producers: &[String]) -> Option<u32> {
    producers.iter().find_map(|p| {
        let rest = p
            .strip_prefix("clang version ")
            .or_else(|| p.split("clang version ").nth(1))?;
        rest.split(['.', ' ']).next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_clang_producers() {
        let p = vec![
            "GCC: (Debian 12.2.0-14) 12.2.0".to_owned(),
            "Debian clang version 14.0.6".to_owned(),
        ];
        assert_eq!(llvm_major_from_producers(&p), Some(14));
        assert_eq!(
            llvm_major_from_producers(&["rustc version 1.99.1".to_owned()]),
            None
        );
    }

    #[test]
    fn reads_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let info = read(&exe).unwrap();
        assert!(info.build_id.is_some(), "rustc links with a build-id");
        assert!(info.position_independent);
        assert!(info.producers.iter().any(|p| p.contains("rustc")));
        assert_eq!(info.symbol_source, "symtab");
    }
}
