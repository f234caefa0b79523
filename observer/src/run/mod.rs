//! `covobs run [--kernel] -- CMD ...`: a session around a workload covobs launches.
//!
//! The workload is a target like any other (the attach session watches it, probes its dump
//! functions, collects its dumps), with two differences: covobs forks it and holds it before
//! exec until it is watched and its executable's dump functions are probed, and with
//! `--kernel` it runs with kcov enabled, on covobs' own buffer.
//!
//! What `--kernel` covers: kcov is per task. The workload's first thread is traced from its
//! exec on (exec itself, then every system call it makes, including those of its exit), with
//! its buffer read when it exits. Threads it starts and processes it forks are not traced
//! (kcov does not follow clone), unless the workload enables kcov for them itself, and kernel
//! work done on its behalf elsewhere (interrupts, softirqs, kernel threads, other processes)
//! is not seen either. The uprobe hits of covobs' own probes in the workload (its dump
//! functions, at most a few per dump) show up as kernel/events/uprobes.c and friends.
use std::path::{Path, PathBuf};

use crate::{
    BadInput,
    attach::{AttachOptions, launch::Prepared},
    kcov::{KcovError, buffer::OwnedBuffer},
};

/// Default buffer size: 2 Mi entries (16 MiB). An exec alone records ~150k PCs; a full
/// buffer silently drops the rest (reported as a note on the `kcov` event).
pub const DEFAULT_KCOV_ENTRIES: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kcov(#[from] KcovError),
}

pub struct RunOptions {
    pub command: Vec<String>,
    pub kernel: bool,
    pub kcov_entries: usize,
    /// Everything else as for attach (target, signal, interval... are not used).
    pub attach: AttachOptions,
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    crate::require_privileges()?;
    let Some(first) = opts.command.first() else {
        return Err(BadInput("give the command to run after --".into()).into());
    };
    if opts.kernel {
        crate::runtimes::kcov::kernel::available().map_err(|e| {
            BadInput(format!(
                "--kernel needs kcov: {e}; `covobs doctor` says how to get it"
            ))
        })?;
    }
    let program = resolve(first).ok_or_else(|| {
        BadInput(format!(
            "{first}: command not found (not a file, nor in PATH)"
        ))
    })?;
    if opts.kcov_entries < 2 {
        return Err(BadInput("--kcov-entries must be at least 2".into()).into());
    }
    let buffer = if opts.kernel {
        Some(OwnedBuffer::open(opts.kcov_entries)?)
    } else {
        None
    };
    let prepared = Prepared {
        program,
        argv: opts.command.clone(),
        kernel: opts.kernel,
        kcov_entries: opts.kcov_entries,
        buffer,
    };
    crate::attach::run_session(opts.attach, Some(prepared)).await
}

/// A command as execvp would find it: a path when it has a slash, else the first executable
/// file of that name in PATH.
pub fn resolve(command: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_commands_like_execvp() {
        assert_eq!(resolve("sh").map(|p| p.is_absolute()), Some(true));
        assert!(resolve("/bin/sh").is_some());
        assert!(resolve("covobs-no-such-command").is_none());
        assert!(resolve("./covobs-no-such-file").is_none());
        assert!(resolve("/etc/passwd").is_none(), "not executable");
    }
}
