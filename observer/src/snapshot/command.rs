//! `covobs snapshot --pid PID --out FILE`: one signal-free snapshot of every instrumented module
//! of a process, written as the files its runtimes would write.
//!
//! Names: with one module, FILE itself. With several, FILE is a stem: `<stem>.<module>.<ext>`
//! (the stem is FILE without a `.profraw`/`.sancov` extension; `<module>` the module's file name,
//! `-2`, `-3`... when two modules share a name; `<ext>` `profraw` or `sancov`). A SanitizerCoverage
//! module's bucketed counter map goes beside its `.sancov`, with the extension `.counters`.
use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{ModulePlan, Snapshot, SnapshotError, module_names, plan_process};
use crate::{discover::Discovery, target::Process};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CommandError {
    /// Caused by what the user asked for (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadInput(_))
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
    for (file, map) in &paths {
        for p in std::iter::once(file).chain(map.as_ref()) {
            if p.exists() {
                return Err(CommandError::BadInput(format!(
                    "{} exists: covobs never overwrites output",
                    p.display()
                )));
            }
        }
    }
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
