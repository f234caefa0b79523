//! The machine-wide cache of built kernels and initramfs images: `/var/cache/covobs`
//! (or `$COVOBS_CACHE_DIR`). Entries are directories named by a hash of their inputs,
//! built in a sibling temp dir and renamed into place, so an entry that exists is complete.
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Root of the cache.
pub fn root() -> PathBuf {
    std::env::var_os("COVOBS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/covobs"))
}

/// SHA-256 of `data` as hex (coreutils' `sha256sum`; xtask carries no hashing crate).
pub fn sha256_hex(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(data)
        .context("writing to sha256sum")?;
    let out = child.wait_with_output().context("waiting for sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 {
        bail!("unexpected sha256sum output: {text:?}");
    }
    Ok(hex.to_owned())
}

/// Run a command and return its trimmed stdout; fail with its stderr when it fails.
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An exclusive lock on `<dir>/.lock`, held until dropped: one builder per cache kind.
pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            eprintln!("[vm] waiting for another build holding {}", path.display());
            file.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(Lock(file))
    }
}

/// Remove leftovers (`.tmp-*`) of builds that were killed; call with the lock held.
pub fn remove_stale_temps(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            eprintln!("[vm] removing stale {}", entry.path().display());
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Minimal JSON string escaping for the build-info files (xtask has no serde).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
