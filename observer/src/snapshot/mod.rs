//! Snapshots: coverage read straight out of a running target's memory, no signal and no help from
//! the target. For each instrumented module covobs finds where its counters are in the process
//! (the module's sections plus its load bias), copies them with one `process_vm_readv`, and
//! writes the file the module's own runtime would have written from those counters: an LLVM raw
//! profile of the runtime's format version ([`llvm`]), or a `.sancov` file and a bucketed counter
//! map for SanitizerCoverage ([`sancov`]). At exit, the eBPF side copies the same ranges in the
//! kernel while the process's memory still exists ([`exit`]); [`delta`] says what each snapshot
//! added.
//!
//! Consistency: the counters of one module are copied in one system call while the target runs.
//! Each counter is a value it held during that copy (8-byte counters are read whole on x86-64),
//! but counters copied at the start and at the end of the window may come from instants a few
//! microseconds apart; the metadata gives the window. A final snapshot is copied after the last
//! thread stopped running user code, so it is exact.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::{
    collect::FormatInfo,
    discover::{Mapped, Module, Runtime, maps::Mapping},
    runtimes::llvm::memory as llvm,
};

pub mod capture;
pub mod command;
pub mod delta;
pub mod exit;
pub mod image;
pub mod memory;
pub mod paging;
pub mod payload;
pub mod qemu;
pub mod qmp;
/// SanitizerCoverage's memory reader, where the report still imports it from.
pub use crate::runtimes::sancov::memory as sancov;
pub mod shared;
pub mod source;

pub use delta::{CoveredSet, Delta, DeltaTracker};
pub use memory::{Range, ReadTiming};
pub use source::{LiveProcess, MemorySource};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("{module}: {what} not found")]
    Missing { module: String, what: &'static str },
    #[error("not supported by memory snapshots: {0}")]
    Unsupported(String),
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Elf {
        path: PathBuf,
        source: object::Error,
    },
    #[error("{module} is not mapped in process {pid} any more")]
    NotMapped { pid: i32, module: String },
    #[error("reading the memory map of process {pid}: {source}")]
    Maps { pid: i32, source: std::io::Error },
    /// The memory named by the user does not hold the ELF named by the user.
    #[error("{0}")]
    Mismatch(String),
}

/// What a snapshot reads in one module, resolved for one process.
#[derive(Clone, Debug)]
pub enum Kind {
    Llvm(llvm::LlvmPlan),
    Sancov(sancov::SancovPlan),
}

#[derive(Clone, Debug)]
pub struct ModulePlan {
    pub module: Arc<Module>,
    /// A path that opens the module file itself (/proc/PID/map_files/...).
    pub open_path: PathBuf,
    /// Run-time address minus link-time address.
    pub load_bias: u64,
    pub kind: Kind,
}

/// How a snapshot was read, for the artifact's metadata (`snapshot` field).
pub use crate::layout::artifact::SnapshotInfo;

/// One module's snapshot: the file its runtime would write, and what went into it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub module: Arc<Module>,
    pub runtime: Runtime,
    pub format: FormatInfo,
    pub bytes: Vec<u8>,
    /// SanitizerCoverage: the AFL-bucketed counter map (one byte per edge).
    pub counter_map: Option<Vec<u8>>,
    pub covered: CoveredSet,
    pub info: SnapshotInfo,
}

impl ModulePlan {
    pub fn runtime(&self) -> Runtime {
        match self.kind {
            Kind::Llvm(_) => Runtime::Llvm,
            Kind::Sancov(_) => Runtime::Sancov,
        }
    }

    /// The ranges whose bytes change while the target runs: what a snapshot, and the kernel at
    /// exit, copies.
    pub fn live_ranges(&self) -> Vec<Range> {
        match &self.kind {
            Kind::Llvm(p) => p.live_ranges(),
            Kind::Sancov(p) => vec![p.counters],
        }
    }

    /// Read the live ranges of process `pid` now (one process_vm_readv) and build the snapshot.
    pub fn take(&self, pid: i32) -> Result<Snapshot, SnapshotError> {
        self.take_from(&LiveProcess(pid))
    }

    /// Read the live ranges from `src` (in one read) and build the snapshot.
    pub fn take_from(&self, src: &dyn MemorySource) -> Result<Snapshot, SnapshotError> {
        match &self.kind {
            Kind::Llvm(p) => {
                let (counters, bitmap, read) = p.read(src)?;
                Ok(self.build(vec![counters, bitmap], read, src.method().into(), 0))
            }
            Kind::Sancov(p) => {
                let (counters, read) = p.read(src)?;
                Ok(self.build(vec![counters], read, src.method().into(), 0))
            }
        }
    }

    /// Build a snapshot from the bytes of `live_ranges()` (in that order), however they were
    /// read.
    pub fn build(
        &self,
        mut live: Vec<Vec<u8>>,
        read: ReadTiming,
        method: String,
        unreadable_bytes: u64,
    ) -> Snapshot {
        live.resize(2, Vec::new());
        let bitmap = live.pop().unwrap_or_default();
        let counters = live.pop().unwrap_or_default();
        let counters_addr = self.live_ranges().first().map_or(0, |r| r.addr);
        let window = read.end_ns.saturating_sub(read.start_ns);
        let consistency = match method.as_str() {
            "process_vm_readv" => format!(
                "counters copied in one process_vm_readv of {} bytes over {window} ns while the target ran: each counter is a value it held in that window",
                read.bytes,
            ),
            qemu::METHOD_RUNNING => format!(
                "counters copied from the guest's RAM in one process_vm_readv of the QEMU process, {} bytes over {window} ns while the guest ran: each counter is a value it held in that window",
                read.bytes,
            ),
            qemu::METHOD_PAUSED => format!(
                "counters copied from the guest's RAM in one process_vm_readv of the QEMU process, {} bytes over {window} ns while the guest was stopped: exact",
                read.bytes,
            ),
            shared::METHOD => format!(
                "the payload's own capture, {} bytes read from the region it shares with the host in {window} ns, at an even sequence that did not change during the read: complete, as the payload captured it",
                read.bytes,
            ),
            image::METHOD_CORE | image::METHOD_RAW => {
                "read from a memory image: the counters as the image holds them".into()
            }
            _ => "copied in the kernel as the last thread exited: no user code ran during the copy, the counters are final".into(),
        };
        match &self.kind {
            Kind::Llvm(p) => {
                let size = p.counter_size() as usize;
                let n = counters.len() / size.max(1);
                let covered =
                    CoveredSet::from_fn(n, |i| p.covered(&counters[i * size..(i + 1) * size]));
                Snapshot {
                    module: self.module.clone(),
                    runtime: Runtime::Llvm,
                    format: FormatInfo {
                        name: "llvm-raw-profile".into(),
                        version: p.version(),
                    },
                    bytes: p.profile(&counters, &bitmap),
                    counter_map: None,
                    info: SnapshotInfo {
                        method,
                        read,
                        load_bias: self.load_bias,
                        counters_addr,
                        counters: n as u64,
                        delta: Delta {
                            covered: covered.count(),
                            ..Delta::default()
                        },
                        unreadable_bytes,
                        consistency,
                    },
                    covered,
                }
            }
            Kind::Sancov(p) => {
                let covered = CoveredSet::from_fn(counters.len(), |i| counters[i] != 0);
                Snapshot {
                    module: self.module.clone(),
                    runtime: Runtime::Sancov,
                    format: FormatInfo {
                        name: "sancov".into(),
                        version: 64,
                    },
                    bytes: p.sancov_file(&counters),
                    counter_map: Some(sancov::bucketed(&counters)),
                    info: SnapshotInfo {
                        method,
                        read,
                        load_bias: self.load_bias,
                        counters_addr,
                        counters: counters.len() as u64,
                        delta: Delta {
                            covered: covered.count(),
                            ..Delta::default()
                        },
                        unreadable_bytes,
                        consistency,
                    },
                    covered,
                }
            }
        }
    }
}

const PAGE: u64 = 4096;

/// The load bias of a module in a process: where its first mapping is, against the segment that
/// mapping holds (0 for a fixed-address executable).
pub fn load_bias(module: &Module, mappings: &[Mapping]) -> Option<u64> {
    if !module.elf.position_independent {
        return Some(0);
    }
    let mut mine: Vec<&Mapping> = mappings.iter().filter(|m| m.file == module.file).collect();
    mine.sort_by_key(|m| m.start);
    mine.iter().find_map(|m| {
        module
            .elf
            .segments
            .iter()
            .find(|(_, _, off)| off & !(PAGE - 1) == m.offset)
            .map(|(vaddr, _, _)| m.start.wrapping_sub(vaddr & !(PAGE - 1)))
    })
}

/// Modules that have counters but cannot be snapshotted, with the reason.
pub type Unplanned = Vec<(Arc<Module>, SnapshotError)>;

/// Plan snapshots of every module of `pid` that has counters covobs can read.
pub fn plan_process(
    pid: i32,
    mapped: &[Mapped],
) -> Result<(Vec<ModulePlan>, Unplanned), SnapshotError> {
    let mappings =
        crate::discover::maps::read(pid).map_err(|source| SnapshotError::Maps { pid, source })?;
    let mut plans = Vec::new();
    let mut failed = Vec::new();
    for m in mapped {
        match plan_module(pid, m, &mappings) {
            Ok(p) => plans.extend(p),
            Err(e) => failed.push((m.module.clone(), e)),
        }
    }
    Ok((plans, failed))
}

/// The plans of one module (LLVM and/or SanitizerCoverage; none when it has no counters).
pub fn plan_module(
    pid: i32,
    mapped: &Mapped,
    mappings: &[Mapping],
) -> Result<Vec<ModulePlan>, SnapshotError> {
    if !has_counters(&mapped.module) {
        return Ok(Vec::new());
    }
    let bias = load_bias(&mapped.module, mappings).ok_or_else(|| SnapshotError::NotMapped {
        pid,
        module: mapped.module.path.clone(),
    })?;
    plan_module_at(&LiveProcess(pid), &mapped.module, &mapped.open_path, bias)
}

/// Whether the module has counters a snapshot can read.
pub fn has_counters(module: &Module) -> bool {
    module
        .elf
        .sections
        .iter()
        .any(|s| (s.name == "__llvm_prf_cnts" || s.name == "__sancov_cntrs") && s.size > 0)
}

/// The plans of one module whose link-time addresses plus `bias` are its addresses in `src`;
/// `open_path` opens the module file.
pub fn plan_module_at(
    src: &dyn MemorySource,
    module: &Arc<Module>,
    open_path: &std::path::Path,
    bias: u64,
) -> Result<Vec<ModulePlan>, SnapshotError> {
    let section = |name: &str| {
        module
            .elf
            .sections
            .iter()
            .find(|s| s.name == name && s.size > 0)
    };
    let has_llvm = section("__llvm_prf_cnts").is_some();
    let has_sancov = section("__sancov_cntrs").is_some();
    let at = |s: &crate::discover::elf::SectionInfo| Range {
        addr: s.vaddr.wrapping_add(bias),
        len: s.size,
    };
    let missing = |what| SnapshotError::Missing {
        module: module.path.clone(),
        what,
    };
    let mut plans = Vec::new();
    if has_llvm {
        let file = read_file(open_path)?;
        let version_addr = module
            .elf
            .llvm_raw_version_addr
            .ok_or_else(|| missing("__llvm_profile_raw_version (stripped symbols?)"))?;
        let (word, _) = src.read_vec(Range {
            addr: version_addr.wrapping_add(bias),
            len: 8,
        })?;
        let version_word = u64::from_le_bytes(word[..8].try_into().unwrap_or_default());
        let data = section("__llvm_prf_data").ok_or_else(|| missing("__llvm_prf_data"))?;
        let cnts = section("__llvm_prf_cnts").ok_or_else(|| missing("__llvm_prf_cnts"))?;
        let names = section("__llvm_prf_names").ok_or_else(|| missing("__llvm_prf_names"))?;
        let names_bytes = file
            .get(names.file_offset as usize..(names.file_offset + names.size) as usize)
            .ok_or_else(|| missing("__llvm_prf_names contents"))?;
        // minicov, built for bare metal, writes no build ids; compiler-rt's runtime writes them.
        let binary_ids = if llvm::uses_minicov(&file) {
            Vec::new()
        } else {
            llvm::binary_ids(&file).map_err(|source| SnapshotError::Elf {
                path: open_path.to_path_buf(),
                source,
            })?
        };
        let unsupported = ["__llvm_prf_vtab", "__llvm_prf_vns"]
            .iter()
            .filter(|n| section(n).is_some())
            .map(|n| n.to_string())
            .collect();
        let plan = llvm::plan(
            src,
            llvm::Sections {
                version_word,
                data: at(data),
                counters: at(cnts),
                bitmap: section("__llvm_prf_bits").map(at),
                names: at(names),
                names_bytes: names_bytes.into(),
                binary_ids: binary_ids.into(),
                unsupported_sections: unsupported,
            },
        )?;
        plans.push(ModulePlan {
            module: module.clone(),
            open_path: open_path.to_path_buf(),
            load_bias: bias,
            kind: Kind::Llvm(plan),
        });
    }
    if has_sancov {
        let cntrs = section("__sancov_cntrs").ok_or_else(|| missing("__sancov_cntrs"))?;
        let pcs = section("__sancov_pcs").ok_or_else(|| {
            missing("__sancov_pcs (build with -fsanitize-coverage=inline-8bit-counters,pc-table)")
        })?;
        let file = read_file(open_path)?;
        let plan = sancov::plan(&file, open_path, at(cntrs), pcs.vaddr, pcs.size)?;
        plans.push(ModulePlan {
            module: module.clone(),
            open_path: open_path.to_path_buf(),
            load_bias: bias,
            kind: Kind::Sancov(plan),
        });
    }
    Ok(plans)
}

pub(crate) fn read_file(path: &std::path::Path) -> Result<memmap2::Mmap, SnapshotError> {
    let err = |source| SnapshotError::File {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    // SAFETY: a read-only private map of the module file (opened through map_files, so the inode
    // the process maps); covobs only copies bytes out of it and checks offsets against its length.
    unsafe { memmap2::Mmap::map(&f) }.map_err(err)
}

/// Unique, readable names for the modules of one snapshot: the file name, with `-2`, `-3`... for
/// repeats.
pub fn module_names(plans: &[ModulePlan]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    plans
        .iter()
        .map(|p| {
            let base = p.module.file_name().to_owned();
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { base } else { format!("{base}-{n}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{FileId, elf::ElfInfo};

    fn module(pie: bool, segments: Vec<(u64, u64, u64)>) -> Module {
        Module {
            file: FileId { dev: 1, ino: 2 },
            path: "/x".into(),
            build_id: None,
            producers: vec![],
            llvm_major: None,
            runtimes: vec![],
            without_symbols: vec![],
            symbol_source: "symtab",
            elf: ElfInfo {
                position_independent: pie,
                segments,
                ..Default::default()
            },
        }
    }

    fn mapping(start: u64, offset: u64) -> Mapping {
        Mapping {
            start,
            end: start + 0x1000,
            perms: "r--p".into(),
            offset,
            file: FileId { dev: 1, ino: 2 },
            path: "/x".into(),
        }
    }

    #[test]
    fn load_bias_from_the_first_mapping() {
        // The rust fixture's layout: segments at 0, 0x1c050 (file 0x1b050), 0x681b0 (0x661b0).
        let m = module(
            true,
            vec![
                (0, 0x1b04c, 0),
                (0x1c050, 0x4b160, 0x1b050),
                (0x681b0, 0x3e50, 0x661b0),
            ],
        );
        let maps = [
            mapping(0x5555_0001_c000, 0x1b000),
            mapping(0x5555_0000_0000, 0),
        ];
        assert_eq!(load_bias(&m, &maps), Some(0x5555_0000_0000));
        // Only the text mapping left (the first was unmapped): same answer through it.
        assert_eq!(load_bias(&m, &maps[..1]), Some(0x5555_0000_0000));
        assert_eq!(load_bias(&module(false, vec![]), &[]), Some(0));
        assert_eq!(load_bias(&m, &[]), None);
    }
}
