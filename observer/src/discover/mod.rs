//! Discover the coverage runtimes inside a target: scan its executable and every mapped ELF file
//! (opened through /proc/PID/map_files, so other mount namespaces and deleted files work) for the
//! runtimes' entry points and sections. Results are cached per file identity (device + inode +
//! build-id), not per process: a restarted daemon costs nothing to rescan.
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use serde::Serialize;

pub mod elf;
pub mod hooks;
pub mod maps;

pub use elf::{ElfInfo, FoundHook};
pub use hooks::{Role, Runtime};
pub use maps::{FileId, Mapping};

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("reading the memory map of process {pid}: {source}")]
    Maps { pid: i32, source: std::io::Error },
}

/// One ELF file mapped by a target, with what covobs found in it.
#[derive(Debug, Serialize)]
pub struct Module {
    pub file: FileId,
    /// The path as the target sees it.
    pub path: String,
    pub build_id: Option<String>,
    pub producers: Vec<String>,
    /// LLVM major of the producing compiler, when the producer says (clang); None for rustc.
    pub llvm_major: Option<u32>,
    /// Runtimes present (by their dump functions or their sections).
    pub runtimes: Vec<Runtime>,
    /// Runtimes present but without a probe-able dump function (stripped symbols).
    pub without_symbols: Vec<Runtime>,
    pub symbol_source: &'static str,
    #[serde(skip)]
    pub elf: ElfInfo,
}

impl Module {
    /// Hooks of one runtime and role.
    pub fn hooks(&self, runtime: Runtime, role: Role) -> impl Iterator<Item = &FoundHook> {
        self.elf
            .hooks
            .iter()
            .filter(move |h| h.hook.runtime == runtime && h.hook.role == role)
    }

    pub fn has_coverage(&self) -> bool {
        self.runtimes.iter().any(|r| r.is_coverage()) || !self.without_symbols.is_empty()
    }

    pub fn file_name(&self) -> &str {
        self.path
            .trim_end_matches(" (deleted)")
            .rsplit('/')
            .next()
            .unwrap_or("module")
    }
}

/// A module as mapped in one process.
#[derive(Clone, Debug)]
pub struct Mapped {
    pub module: Arc<Module>,
    /// A path that opens this very file from covobs' side (map_files of one of its mappings).
    pub open_path: PathBuf,
    /// Lowest address the file is mapped at in the process.
    pub base: u64,
}

/// The cache of scanned files. One per covobs run.
#[derive(Default)]
pub struct Discovery {
    cache: HashMap<FileId, Arc<Module>>,
    /// Files that are not ELF or could not be read (not retried).
    unreadable: HashMap<FileId, String>,
}

impl Discovery {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every mapped ELF file of `pid` that carries a coverage runtime or the OCaml runtime.
    pub fn scan(&mut self, pid: i32) -> Result<Vec<Mapped>, DiscoverError> {
        let mappings = maps::read(pid).map_err(|source| DiscoverError::Maps { pid, source })?;
        let mut by_file: BTreeMap<FileId, Vec<&Mapping>> = BTreeMap::new();
        for m in &mappings {
            by_file.entry(m.file).or_default().push(m);
        }
        let mut found = Vec::new();
        for (id, maps) in by_file {
            // Only files mapped executable carry code to probe; debugfs files (kcov) are not ELF.
            if !maps.iter().any(|m| m.executable()) {
                continue;
            }
            let first = maps[0];
            let module = match self.module(pid, id, first) {
                Some(m) => m,
                None => continue,
            };
            if module.runtimes.is_empty() && module.without_symbols.is_empty() {
                continue;
            }
            found.push(Mapped {
                open_path: first.map_file(pid),
                base: maps.iter().map(|m| m.start).min().unwrap_or(0),
                module,
            });
        }
        Ok(found)
    }

    /// An executable that is about to be run (`covobs run`, before its exec): the module as it
    /// will be mapped, when it carries a runtime. `open_path` is the file itself.
    pub fn scan_path(&mut self, path: &std::path::Path) -> Option<Mapped> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let mapping = Mapping {
            start: 0,
            end: 0,
            perms: "r-xp".into(),
            offset: 0,
            file: id,
            path: path.to_string_lossy().into_owned(),
        };
        let module = match self.cache.get(&id) {
            Some(m) => m.clone(),
            None => {
                let info = elf::read(path).ok()?;
                let module = Arc::new(describe(id, &mapping.path, info));
                self.cache.insert(id, module.clone());
                module
            }
        };
        (!module.runtimes.is_empty()).then(|| Mapped {
            module,
            open_path: path.to_path_buf(),
            base: 0,
        })
    }

    fn module(&mut self, pid: i32, id: FileId, mapping: &Mapping) -> Option<Arc<Module>> {
        if let Some(m) = self.cache.get(&id) {
            return Some(m.clone());
        }
        if self.unreadable.contains_key(&id) {
            return None;
        }
        let open_path = mapping.map_file(pid);
        let mut info = match elf::read(&open_path) {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("skipping {}: {e}", mapping.path);
                self.unreadable.insert(id, e.to_string());
                return None;
            }
        };
        if info.symbol_source != "symtab"
            && let Some(debug_file) = find_debug_file(pid, &info)
        {
            match elf::read(&debug_file.open_path()) {
                Ok(d) if d.build_id == info.build_id => info.adopt_debug_symbols(&d),
                Ok(_) => tracing::debug!("{}: build-id differs, ignored", debug_file.path),
                Err(e) => tracing::debug!("{}: {e}", debug_file.path),
            }
        }
        let module = Arc::new(describe(id, &mapping.path, info));
        self.cache.insert(id, module.clone());
        Some(module)
    }
}

/// A module read from a file the user named (`covobs snapshot --elf`): what is found in it,
/// whether or not it carries a dump function.
pub fn describe_file(path: &std::path::Path) -> Result<Module, elf::ElfError> {
    use std::os::unix::fs::MetadataExt as _;
    let info = elf::read(path)?;
    let id = std::fs::metadata(path).map_or(FileId { dev: 0, ino: 0 }, |m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    });
    Ok(describe(id, &path.to_string_lossy(), info))
}

fn describe(file: FileId, path: &str, elf: ElfInfo) -> Module {
    let mut runtimes: Vec<Runtime> = elf
        .hooks
        .iter()
        .filter(|h| {
            matches!(
                h.hook.role,
                Role::Dump | Role::OcamlRuntime | Role::ProcessExit | Role::Ioctl
            )
        })
        .map(|h| h.hook.runtime)
        .collect();
    runtimes.sort();
    runtimes.dedup();
    let without_symbols = Runtime::ALL
        .into_iter()
        .filter(|r| !runtimes.contains(r) && r.observed().present_without_symbols(&elf))
        .collect();
    Module {
        file,
        path: path.to_owned(),
        build_id: elf.build_id.clone(),
        llvm_major: elf::llvm_major_from_producers(&elf.producers),
        producers: elf.producers.clone(),
        runtimes,
        without_symbols,
        symbol_source: elf.symbol_source,
        elf,
    }
}

/// A separate debug file for a stripped module, looked up inside the target's root the way gdb
/// does: /usr/lib/debug/.build-id/ab/cdef....debug, then the .gnu_debuglink name. Opened with
/// every symlink resolved inside that root (never in covobs' own filesystem view).
fn find_debug_file(pid: i32, info: &ElfInfo) -> Option<DebugFile> {
    let root = crate::target::files::TargetDir::open(pid, "root").ok()?;
    let mut candidates = Vec::new();
    if let Some(id) = &info.build_id
        && id.len() > 2
    {
        candidates.push(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        ));
    }
    if let Some(link) = info.debuglink.as_deref()
        && !link.contains('/')
    {
        candidates.push(format!("/usr/lib/debug/{link}"));
    }
    candidates.into_iter().find_map(|path| {
        let file = crate::target::files::open_in_target(
            &root,
            None,
            &path,
            crate::target::files::Expect::Readable,
        )
        .ok()?;
        file.metadata()
            .is_ok_and(|m| m.is_file())
            .then_some(DebugFile { file, path })
    })
}

/// A debug file opened inside a target's root.
struct DebugFile {
    file: std::fs::File,
    /// As the target names it.
    path: String,
}

impl DebugFile {
    /// A path that opens this very file (through covobs' own descriptor).
    fn open_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}
