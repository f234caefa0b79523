//! Snapshots of an ELF the user names (`--elf`) in memory where covobs cannot find it by itself:
//! a memory image or a guest's RAM. The module's link-time addresses plus a bias are its
//! addresses in the source; before a profile is built from the source's bytes, they are checked
//! to be this build's: the build-id note (when it is loaded) and the profile names must equal
//! the file's, and every data record must point into the counters.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    Kind, ModulePlan, SnapshotError, has_counters, image::MappedFile, load_bias, memory::Range,
    plan_module_at, read_file, source::MemorySource,
};
use crate::discover::{Module, maps::Mapping};

/// The ELF a snapshot is taken for.
#[derive(Debug)]
pub struct ElfTarget {
    pub module: Arc<Module>,
    pub path: PathBuf,
}

impl ElfTarget {
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let module = crate::discover::describe_file(path)
            .map_err(|e| SnapshotError::Mismatch(e.to_string()))?;
        if !has_counters(&module) {
            return Err(SnapshotError::Mismatch(format!(
                "{} has no coverage counters (no __llvm_prf_cnts or __sancov_cntrs section)",
                path.display()
            )));
        }
        Ok(Self {
            module: Arc::new(module),
            path: path.to_path_buf(),
        })
    }

    /// Link-time address of the counters (LLVM's, else SanitizerCoverage's).
    pub fn counters_addr(&self) -> Option<u64> {
        ["__llvm_prf_cnts", "__sancov_cntrs"]
            .iter()
            .find_map(|name| {
                self.module
                    .elf
                    .sections
                    .iter()
                    .find(|s| s.name == *name && s.size > 0)
                    .map(|s| s.vaddr)
            })
    }

    /// Whether the ELF is linked to run at virtual addresses other than where it is loaded: a
    /// loadable segment whose virtual address is not its physical (load) address.
    pub fn runs_at_virtual_addresses(&self) -> Result<bool, SnapshotError> {
        use object::read::elf::{FileHeader as _, ProgramHeader as _};
        let file = read_file(&self.path)?;
        let elf_err = |source| SnapshotError::Elf {
            path: self.path.clone(),
            source,
        };
        let header =
            object::elf::FileHeader64::<object::LittleEndian>::parse(&*file).map_err(elf_err)?;
        let endian = header.endian().map_err(elf_err)?;
        Ok(header
            .program_headers(endian, &*file)
            .map_err(elf_err)?
            .iter()
            .any(|ph| {
                ph.p_type(endian) == object::elf::PT_LOAD
                    && ph.p_vaddr(endian) != ph.p_paddr(endian)
            }))
    }

    pub fn position_independent(&self) -> bool {
        self.module.elf.position_independent
    }

    /// Where the module may have been loaded in the process a core file was taken of, most
    /// likely first: the NT_FILE entries with this file's path, then with its file name, then
    /// every other mapped file (a copy of this build under another name). The caller keeps the
    /// first bias whose memory passes [`Self::plan`]'s checks.
    pub fn biases_in_core(&self, files: &[MappedFile]) -> Vec<u64> {
        if !self.position_independent() {
            return vec![0];
        }
        let canonical = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let name = self.module.file_name();
        let mut paths: Vec<&str> = files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let rank = |p: &str| {
            let p = p.trim_end_matches(" (deleted)");
            if Path::new(p) == canonical || Path::new(p) == self.path {
                0
            } else if p.rsplit('/').next() == Some(name) {
                1
            } else {
                2
            }
        };
        paths.sort_by_key(|p| rank(p));
        let mut out = Vec::new();
        for p in paths {
            let mine: Vec<Mapping> = files
                .iter()
                .filter(|f| f.path == p)
                .map(|f| Mapping {
                    start: f.start,
                    end: f.end,
                    perms: String::new(),
                    offset: f.offset,
                    file: self.module.file,
                    path: f.path.clone(),
                })
                .collect();
            if let Some(b) = load_bias(&self.module, &mine)
                && !out.contains(&b)
            {
                out.push(b);
            }
        }
        out
    }

    /// The read-only loadable parts of this file as they are mapped at `bias` by the NT_FILE
    /// entries of `files` with this bias: what a core may leave out (see
    /// [`super::image::Image::set_file_pieces`]).
    pub fn read_only_pieces(
        &self,
        files: &[MappedFile],
        bias: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, SnapshotError> {
        use object::{Object as _, ObjectSegment as _, SegmentFlags};
        let file = read_file(&self.path)?;
        let obj = object::File::parse(&*file).map_err(|source| SnapshotError::Elf {
            path: self.path.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for seg in obj.segments() {
            let writable = match seg.flags() {
                SegmentFlags::Elf { p_flags, .. } => p_flags.0 & object::elf::PF_W.0 != 0,
                _ => true,
            };
            let (offset, len) = seg.file_range();
            let at = seg.address().wrapping_add(bias);
            let mapped = files
                .iter()
                .any(|f| f.start <= at && at.saturating_add(len) <= f.end);
            if writable || len == 0 || !mapped {
                continue;
            }
            if let Some(bytes) = file.get(offset as usize..(offset + len) as usize) {
                out.push((at, bytes.to_vec()));
            }
        }
        Ok(out)
    }

    /// Plan the module at `bias` in `src` and check that what `src` holds there is this build.
    pub fn plan(
        &self,
        src: &dyn MemorySource,
        bias: u64,
    ) -> Result<Vec<ModulePlan>, SnapshotError> {
        self.check_build_id(src, bias)?;
        let plans = plan_module_at(src, &self.module, &self.path, bias)?;
        for p in &plans {
            if let Kind::Llvm(l) = &p.kind {
                let (names, _) = src.read_vec(Range {
                    addr: l.names_addr,
                    len: l.names.len() as u64,
                })?;
                if names[..] != l.names[..] {
                    return Err(self.mismatch("its profile names (__llvm_prf_names) differ"));
                }
                l.check_counter_pointers()
                    .map_err(|e| self.mismatch(&format!("its profile data does not match: {e}")))?;
                self.check_records(l)?;
            }
        }
        Ok(plans)
    }

    /// The data records in memory name the functions (name MD5) and their shapes (hash) of the
    /// file's records: the first 16 bytes of each (the rest holds relocated pointers).
    fn check_records(
        &self,
        l: &crate::runtimes::llvm::memory::LlvmPlan,
    ) -> Result<(), SnapshotError> {
        let file = read_file(&self.path)?;
        let Some(data) = self
            .module
            .elf
            .sections
            .iter()
            .find(|s| s.name == "__llvm_prf_data" && s.size > 0)
        else {
            return Ok(());
        };
        let Some(in_file) =
            file.get(data.file_offset as usize..(data.file_offset + data.size) as usize)
        else {
            return Ok(());
        };
        let rec = crate::runtimes::llvm::memory::data_record_size(l.version()) as usize;
        for (i, (m, f)) in l
            .data_bytes
            .chunks_exact(rec)
            .zip(in_file.chunks_exact(rec))
            .enumerate()
        {
            if m[..16] != f[..16] {
                return Err(self.mismatch(&format!(
                    "its profile data record {i} names another function"
                )));
            }
        }
        Ok(())
    }

    /// Compare the loaded build-id note with the file's, when the note is loaded.
    fn check_build_id(&self, src: &dyn MemorySource, bias: u64) -> Result<(), SnapshotError> {
        let file = read_file(&self.path)?;
        let Some((addr, bytes)) = build_id_note(&file) else {
            return Ok(());
        };
        let held = src.read_vec(Range {
            addr: addr.wrapping_add(bias),
            len: bytes.len() as u64,
        });
        match held {
            Ok((b, _)) if b == bytes => Ok(()),
            Ok(_) => Err(self.mismatch("its build-id note differs")),
            // A core file may leave out read-only pages: the other checks still apply.
            Err(_) if !src.live() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn mismatch(&self, why: &str) -> SnapshotError {
        SnapshotError::Mismatch(format!(
            "the memory does not hold {} ({}): {why}",
            self.path.display(),
            self.module
                .build_id
                .as_deref()
                .map_or_else(|| "no build id".to_string(), |id| format!("build id {id}"))
        ))
    }
}

/// The loaded `.note.gnu.build-id` section: its link-time address and bytes.
fn build_id_note(file: &[u8]) -> Option<(u64, Vec<u8>)> {
    use object::{Object as _, ObjectSection as _};
    let obj = object::File::parse(file).ok()?;
    let s = obj.section_by_name(".note.gnu.build-id")?;
    let data = s.data().ok()?;
    (s.address() != 0 && !data.is_empty()).then(|| (s.address(), data.to_vec()))
}
