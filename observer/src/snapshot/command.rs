//! `covobs snapshot --pid PID --out FILE`: one signal-free snapshot of every instrumented module
//! of a process, written as the files its runtimes would write.
//!
//! Names: with one module, FILE itself. With several, FILE is a stem: `<stem>.<module>.<ext>`
//! (the stem is FILE without a `.profraw`/`.sancov` extension; `<module>` the module's file name,
//! `-2`, `-3`... when two modules share a name; `<ext>` `profraw` or `sancov`). A SanitizerCoverage
//! module's bucketed counter map goes beside its `.sancov`, with the extension `.counters`.
//!
//! The same for memory that is not a live process's own ([`Source`]): `--image FILE --elf BIN`
//! (an ELF core file, or a raw RAM dump starting at `--base`) and `--qemu PID --elf PAYLOAD` (a
//! QEMU guest's RAM, read inside the QEMU process; `--pause` stops the guest through QMP for the
//! read), or `--qemu PID --shared REGION --elf PAYLOAD` (the payload's own capture, from a
//! region it shares with the host: [`super::shared`]).
use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    ModulePlan, Snapshot, SnapshotError,
    image::Image,
    memory::MemoryError,
    module_names,
    paging::Paged,
    payload::ElfTarget,
    plan_process,
    qemu::{self, GuestRam},
    qmp::{self, Qmp},
    shared,
};
use crate::{discover::Discovery, target::Process};

/// Where a snapshot's memory is.
#[derive(Clone, Debug)]
pub enum Source {
    /// A live process: every instrumented module it maps.
    Pid(i32),
    /// A memory image (ELF core file, or raw dump whose first byte was at `base`) holding `elf`.
    Image {
        path: PathBuf,
        elf: PathBuf,
        base: Option<u64>,
    },
    /// The RAM of the guest of QEMU process `pid`, where `elf` is loaded.
    Qemu {
        pid: i32,
        elf: PathBuf,
        qmp: Option<PathBuf>,
        pause: bool,
        /// The payload's capture in this shared region instead of its counters in guest RAM.
        shared: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Qemu(String),
    /// The shared region holds no capture yet (bad input for a snapshot; a session waits).
    #[error("{0}")]
    NotYet(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CommandError {
    /// Caused by what the user asked for (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadInput(_) | Self::NotYet(_))
    }
}

/// What was written, one entry per file (`--json`).
#[derive(Debug, Serialize)]
pub struct Written {
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_map: Option<PathBuf>,
    pub module: String,
    pub build_id: Option<String>,
    pub runtime: &'static str,
    pub format: crate::collect::FormatInfo,
    pub bytes: u64,
    pub snapshot: super::SnapshotInfo,
    /// Where the memory was, for images and guests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Take the snapshot `source` names and write it under `out`.
pub fn run_source(source: &Source, out: &Path) -> Result<Vec<Written>, CommandError> {
    match source {
        Source::Pid(pid) => run(*pid, out),
        Source::Image { path, elf, base } => run_image(path, elf, *base, out),
        Source::Qemu {
            pid,
            elf,
            qmp,
            pause,
            shared: None,
        } => run_qemu(*pid, elf, qmp.as_deref(), *pause, out),
        Source::Qemu {
            pid,
            elf,
            qmp,
            shared: Some(region),
            ..
        } => run_shared(*pid, elf, region, qmp.as_deref(), out),
    }
}

/// Errors about memory or an ELF the user named: bad input (exit 2).
fn named_input(e: SnapshotError) -> CommandError {
    match e {
        SnapshotError::Memory(MemoryError::Read { .. } | MemoryError::Short { .. })
        | SnapshotError::Maps { .. } => CommandError::Snapshot(e),
        other => CommandError::BadInput(other.to_string()),
    }
}

fn fixed_address(target: &ElfTarget, what: &str) -> Result<(), CommandError> {
    if target.position_independent() {
        return Err(CommandError::BadInput(format!(
            "{} is position-independent: {what} needs a fixed-address build (ET_EXEC; rustc -C relocation-model=static)",
            target.path.display()
        )));
    }
    Ok(())
}

/// `covobs snapshot --image FILE --elf BIN [--base ADDR]`.
pub fn run_image(
    image: &Path,
    elf: &Path,
    base: Option<u64>,
    out: &Path,
) -> Result<Vec<Written>, CommandError> {
    let target = ElfTarget::open(elf).map_err(named_input)?;
    let mut img = Image::open(image, base).map_err(|e| CommandError::BadInput(e.to_string()))?;
    let plans = if img.is_core() {
        let biases = target.biases_in_core(&img.files);
        let mut first_error = None;
        let mut found = None;
        for bias in &biases {
            img.set_file_pieces(
                target
                    .read_only_pieces(&img.files, *bias)
                    .map_err(named_input)?,
            );
            match target.plan(&img, *bias) {
                Ok(p) => {
                    found = Some(p);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (found, first_error) {
            (Some(p), _) => p,
            (None, Some(e)) if biases.len() == 1 => return Err(named_input(e)),
            (None, e) => {
                return Err(CommandError::BadInput(format!(
                    "{}: no file mapped in the core's process is {}{}",
                    image.display(),
                    target.path.display(),
                    e.map_or_else(String::new, |e| format!("; at the likeliest mapping: {e}"))
                )));
            }
        }
    } else {
        fixed_address(&target, "a raw image")?;
        if target.runs_at_virtual_addresses().map_err(named_input)? {
            return Err(CommandError::BadInput(format!(
                "{} runs at virtual addresses (its segments' virtual and load addresses differ): a raw image is addressed physically; snapshot the running guest with --qemu",
                target.path.display()
            )));
        }
        target.plan(&img, 0).map_err(named_input)?
    };
    let paths = output_paths(out, &plans);
    check_new(&paths)?;
    let snaps = plans
        .iter()
        .map(|p| p.take_from(&img))
        .collect::<Result<Vec<_>, _>>()
        .map_err(named_input)?;
    let memory = format!(
        "{} {}",
        if img.is_core() {
            "core file"
        } else {
            "raw image"
        },
        image.display()
    );
    write(snaps, paths, Some(memory))
}

/// A guest stopped through QMP for a snapshot; resumed by `resume`, or when dropped.
pub struct Paused {
    qmp: Option<Qmp>,
}

impl Paused {
    /// Stop the guest if it runs (a guest someone else stopped is left as it is).
    pub fn stop(mut q: Qmp) -> Result<Self, qmp::QmpError> {
        if !q.running()? {
            return Ok(Self { qmp: None });
        }
        q.execute("stop", None)?;
        Ok(Self { qmp: Some(q) })
    }

    pub fn resume(mut self) -> Result<(), qmp::QmpError> {
        match self.qmp.take() {
            Some(mut q) => q.execute("cont", None).map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut q) = self.qmp.take()
            && let Err(e) = q.execute("cont", None)
        {
            eprintln!("covobs: warning: resuming the guest: {e}");
        }
    }
}

/// A guest whose RAM holds the payload: where, and what to read there.
pub struct Guest {
    pub pid: i32,
    pub target: ElfTarget,
    pub ram: GuestRam,
    pub plans: Vec<ModulePlan>,
    /// QEMU's QMP socket, when known (given, or on its command line).
    pub qmp: Option<PathBuf>,
    /// CR3, for a payload that runs at virtual addresses: its addresses go through the guest's
    /// page tables.
    pub cr3: Option<u64>,
}

/// The guest's RAM as the payload addresses it: physical, or virtual through the page tables.
fn view(ram: &GuestRam, cr3: Option<u64>) -> Box<dyn super::MemorySource> {
    match cr3 {
        Some(cr3) => Box::new(Paged {
            ram: ram.clone(),
            cr3,
        }),
        None => Box::new(ram.clone()),
    }
}

impl Guest {
    /// Where the memory is, for `memory` in `--json` and the session's events.
    pub fn describe(&self) -> String {
        let ram = &self.ram;
        format!(
            "QEMU process {}: guest RAM of {:#x} bytes at guest-physical {:#x}, host {:#x} ({}; found by {}){}",
            self.pid,
            ram.len,
            ram.gpa,
            ram.hva,
            ram.backing,
            ram.located,
            self.cr3.map_or_else(String::new, |c| format!(
                "; virtual addresses through the guest's page tables at CR3 {c:#x}"
            ))
        )
    }

    /// One snapshot of every plan; with `pause`, the guest is stopped through QMP for the read
    /// and resumed after it.
    pub fn take(&mut self, pause: bool) -> Result<Vec<Snapshot>, CommandError> {
        let paused = if pause {
            let socket = self.qmp.as_deref().ok_or_else(|| no_qmp(self.pid))?;
            let q = Qmp::connect(socket).map_err(|e| CommandError::Qemu(e.to_string()))?;
            Some(Paused::stop(q).map_err(|e| CommandError::Qemu(e.to_string()))?)
        } else {
            None
        };
        self.ram.paused = paused.is_some();
        let src = view(&self.ram, self.cr3);
        let snaps = self
            .plans
            .iter()
            .map(|p| p.take_from(&*src))
            .collect::<Result<Vec<_>, _>>()
            .map_err(named_input)?;
        if let Some(p) = paused {
            p.resume().map_err(|e| CommandError::Qemu(e.to_string()))?;
        }
        Ok(snaps)
    }
}

fn no_qmp(pid: i32) -> CommandError {
    CommandError::BadInput(format!(
        "--pause needs QEMU process {pid}'s QMP socket: none on its command line (-qmp unix:PATH,server=on,wait=off), give --qmp PATH"
    ))
}

/// Find the payload `elf` in the RAM of QEMU process `pid`. With QMP (`want_qmp`, or
/// `qmp_socket` given), QEMU is asked where the payload's counters are (`gpa2hva`) and that
/// block is tried first; otherwise (and when that block fails the checks) the QEMU process's
/// mappings are tried by content. Returns the QMP connection it used, if any.
pub fn locate_guest(
    pid: i32,
    elf: &Path,
    qmp_socket: Option<&Path>,
    want_qmp: bool,
) -> Result<(Guest, Option<Qmp>), CommandError> {
    let target = ElfTarget::open(elf).map_err(named_input)?;
    fixed_address(&target, "a guest snapshot")?;
    let virtual_addresses = target.runs_at_virtual_addresses().map_err(named_input)?;
    let bad = |e: qemu::QemuError| match e {
        qemu::QemuError::Maps { .. } => CommandError::Qemu(e.to_string()),
        other => CommandError::BadInput(other.to_string()),
    };
    let mut candidates = qemu::candidates(pid).map_err(bad)?;
    let socket = match qmp_socket {
        Some(p) => Some(p.to_path_buf()),
        None => qmp::socket_from_cmdline(&qemu::cmdline(pid).map_err(bad)?),
    };
    if want_qmp && socket.is_none() {
        return Err(no_qmp(pid));
    }
    if virtual_addresses && socket.is_none() {
        return Err(CommandError::BadInput(format!(
            "{} runs at virtual addresses (its segments' virtual and load addresses differ): covobs walks the guest's page tables from CR3, which it asks QEMU process {pid} through QMP, and it has no QMP socket on its command line (-qmp unix:PATH,server=on,wait=off; or give --qmp PATH)",
            target.path.display()
        )));
    }
    let mut conn = match &socket {
        Some(s) if want_qmp || virtual_addresses || qmp_socket.is_some() => {
            Some(Qmp::connect(s).map_err(|e| CommandError::BadInput(e.to_string()))?)
        }
        _ => None,
    };
    let mut cr3 = None;
    if virtual_addresses && let Some(q) = conn.as_mut() {
        let regs = q
            .registers()
            .map_err(|e| CommandError::Qemu(e.to_string()))?;
        if let Some(why) = regs.unsupported() {
            return Err(CommandError::BadInput(format!(
                "{} runs at virtual addresses, but {why}",
                target.path.display()
            )));
        }
        cr3 = Some(regs.cr3);
    }
    if cr3.is_none()
        && let Some(q) = conn.as_mut()
        && let Some(gpa) = target.counters_addr()
        && let Ok(Some(hva)) = q.gpa2hva(gpa)
        && let Some(ram) = qemu::locate(&candidates, gpa, hva)
    {
        candidates.insert(0, ram);
    }
    let (ram, plans) = find_payload(pid, &target, candidates, cr3)?;
    Ok((
        Guest {
            pid,
            target,
            ram,
            plans,
            qmp: socket,
            cr3,
        },
        conn,
    ))
}

/// `covobs snapshot --qemu PID --elf PAYLOAD [--qmp SOCKET] [--pause]`.
pub fn run_qemu(
    pid: i32,
    elf: &Path,
    qmp_socket: Option<&Path>,
    pause: bool,
    out: &Path,
) -> Result<Vec<Written>, CommandError> {
    let (mut guest, conn) = locate_guest(pid, elf, qmp_socket, pause)?;
    let paused = match conn {
        Some(q) if pause => {
            Some(Paused::stop(q).map_err(|e| CommandError::BadInput(e.to_string()))?)
        }
        _ => None,
    };
    let paths = output_paths(out, &guest.plans);
    check_new(&paths)?;
    // Stopped above already (once, with the connection that located the payload).
    guest.ram.paused = paused.is_some();
    let src = view(&guest.ram, guest.cr3);
    let snaps = guest
        .plans
        .iter()
        .map(|p| p.take_from(&*src))
        .collect::<Result<Vec<_>, _>>()
        .map_err(named_input)?;
    if let Some(p) = paused {
        p.resume().map_err(|e| CommandError::Qemu(e.to_string()))?;
    }
    write(snaps, paths, Some(guest.describe()))
}

/// A guest that publishes its payload's capture in a region shared with the host.
pub struct SharedGuest {
    pub pid: i32,
    pub target: ElfTarget,
    pub region: shared::Region,
}

impl SharedGuest {
    /// Resolve REGION (a memory-backend-file's mem-path or id) in QEMU process `pid`.
    pub fn open(
        pid: i32,
        elf: &Path,
        region: &str,
        qmp_socket: Option<&Path>,
    ) -> Result<Self, CommandError> {
        let target = ElfTarget::open(elf).map_err(named_input)?;
        fixed_address(&target, "a shared capture")?;
        let bad = |e: qemu::QemuError| match e {
            qemu::QemuError::Maps { .. } => CommandError::Qemu(e.to_string()),
            other => CommandError::BadInput(other.to_string()),
        };
        qemu::candidates(pid).map_err(bad)?;
        let cmdline = qemu::cmdline(pid).map_err(bad)?;
        let socket = match qmp_socket {
            Some(p) => Some(p.to_path_buf()),
            None => qmp::socket_from_cmdline(&cmdline),
        };
        let region =
            shared::resolve(pid, region, &cmdline, socket.as_deref()).map_err(shared_error)?;
        Ok(Self {
            pid,
            target,
            region,
        })
    }

    /// The capture the region holds now, checked against the payload.
    pub fn take(&self) -> Result<(ModulePlan, Snapshot, u64), CommandError> {
        let c = self.region.capture().map_err(shared_error)?;
        let what = format!("shared region {}", self.region.file.display());
        let (plan, snap) =
            super::capture::snapshot(&self.target, &c.bytes, c.read, shared::METHOD, &what)
                .map_err(named_input)?;
        Ok((plan, snap, c.sequence))
    }
}

fn shared_error(e: shared::SharedError) -> CommandError {
    match e {
        shared::SharedError::Bad(m) => CommandError::BadInput(m),
        shared::SharedError::NotYet(m) => CommandError::NotYet(m),
        other => CommandError::Qemu(other.to_string()),
    }
}

/// `covobs snapshot --qemu PID --shared REGION --elf PAYLOAD`.
pub fn run_shared(
    pid: i32,
    elf: &Path,
    region: &str,
    qmp_socket: Option<&Path>,
    out: &Path,
) -> Result<Vec<Written>, CommandError> {
    let guest = SharedGuest::open(pid, elf, region, qmp_socket)?;
    let (plan, snap, sequence) = guest.take()?;
    let paths = output_paths(out, std::slice::from_ref(&plan));
    check_new(&paths)?;
    let memory = format!("{}, capture sequence {sequence}", guest.region.describe());
    write(vec![snap], paths, Some(memory))
}

/// The first candidate RAM block that holds the payload, with its plans.
fn find_payload(
    pid: i32,
    target: &ElfTarget,
    candidates: Vec<GuestRam>,
    cr3: Option<u64>,
) -> Result<(GuestRam, Vec<ModulePlan>), CommandError> {
    let n = candidates.len();
    let mut first_error = None;
    for ram in candidates {
        match target.plan(&*view(&ram, cr3), 0) {
            Ok(plans) => return Ok((ram, plans)),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Err(CommandError::BadInput(format!(
        "QEMU process {pid} has no guest RAM holding {} (looked at {n} read-write mappings of 1 MiB or more{})",
        target.path.display(),
        first_error.map_or_else(String::new, |e| format!("; the largest: {e}"))
    )))
}

fn check_new(paths: &[(PathBuf, Option<PathBuf>)]) -> Result<(), CommandError> {
    for (file, map) in paths {
        for p in std::iter::once(file).chain(map.as_ref()) {
            if p.exists() {
                return Err(CommandError::BadInput(format!(
                    "{} exists: covobs never overwrites output",
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// Take the snapshot of `pid` and write it under `out`.
pub fn run(pid: i32, out: &Path) -> Result<Vec<Written>, CommandError> {
    let process = Process::get(pid).map_err(|e| CommandError::BadInput(e.to_string()))?;
    let mut discovery = Discovery::new();
    let mapped = discovery
        .scan(pid)
        .map_err(|e| CommandError::BadInput(e.to_string()))?;
    let (plans, failed) = plan_process(pid, &mapped)?;
    if plans.is_empty() {
        let why = failed
            .iter()
            .map(|(m, e)| format!("{}: {e}", m.path))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CommandError::BadInput(if why.is_empty() {
            format!(
                "process {pid} ({}) has no coverage counters covobs can read (looked for __llvm_prf_cnts and __sancov_cntrs)",
                process.comm
            )
        } else {
            format!("process {pid} ({}): {why}", process.comm)
        }));
    }
    for (m, e) in &failed {
        eprintln!("covobs: warning: {} is left out: {e}", m.path);
    }
    let paths = output_paths(out, &plans);
    check_new(&paths)?;
    // Every module first, then the files: the reads stay as close together as they can.
    let mut snaps: Vec<Snapshot> = Vec::with_capacity(plans.len());
    for p in &plans {
        snaps.push(p.take(pid)?);
    }
    if !process.is_alive() {
        return Err(CommandError::Snapshot(SnapshotError::NotMapped {
            pid,
            module: "the process (it exited during the snapshot)".into(),
        }));
    }
    write(snaps, paths, None)
}

/// Write each snapshot to its paths; on a failure, remove what was written.
fn write(
    snaps: Vec<Snapshot>,
    paths: Vec<(PathBuf, Option<PathBuf>)>,
    memory: Option<String>,
) -> Result<Vec<Written>, CommandError> {
    let mut written = Vec::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (snap, (file, map)) in snaps.into_iter().zip(paths) {
            create(&file, &snap.bytes)?;
            created.push(file.clone());
            if let (Some(map_path), Some(bytes)) = (&map, &snap.counter_map) {
                create(map_path, bytes)?;
                created.push(map_path.clone());
            }
            written.push(Written {
                file,
                counter_map: map,
                module: snap.module.path.clone(),
                build_id: snap.module.build_id.clone(),
                runtime: snap.runtime.as_str(),
                format: snap.format.clone(),
                bytes: snap.bytes.len() as u64,
                snapshot: snap.info,
                memory: memory.clone(),
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in created {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(written)
}

fn create(path: &Path, data: &[u8]) -> Result<(), CommandError> {
    let err = |source| CommandError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Where each plan's file goes (and its counter map, for SanitizerCoverage).
pub fn output_paths(out: &Path, plans: &[ModulePlan]) -> Vec<(PathBuf, Option<PathBuf>)> {
    let names = module_names(plans);
    plans
        .iter()
        .zip(names)
        .map(|(p, name)| {
            let file = if plans.len() == 1 {
                out.to_path_buf()
            } else {
                let stem = match out.extension().and_then(|e| e.to_str()) {
                    Some("profraw" | "sancov") => out.with_extension(""),
                    _ => out.to_path_buf(),
                };
                let mut s = stem.into_os_string();
                s.push(format!(".{name}.{}", p.runtime().extension()));
                PathBuf::from(s)
            };
            let map =
                matches!(p.kind, super::Kind::Sancov(_)).then(|| file.with_extension("counters"));
            (file, map)
        })
        .collect()
}

/// One line per file, for the terminal.
pub fn render(written: &[Written]) -> String {
    let mut s = String::new();
    for w in written {
        let d = &w.snapshot;
        s.push_str(&format!(
            "{}: {} {} v{} of {}, {} counters ({} covered), {} bytes read in {} us\n",
            w.file.display(),
            w.runtime,
            w.format.name,
            w.format.version,
            w.module,
            d.counters,
            d.delta.covered,
            d.read.bytes,
            d.read.end_ns.saturating_sub(d.read.start_ns) / 1000
        ));
        if let Some(m) = &w.counter_map {
            s.push_str(&format!("{}: bucketed counter map\n", m.display()));
        }
    }
    s
}
