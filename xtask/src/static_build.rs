//! `cargo xtask static`: covobs linked statically against musl, the binary of the container
//! image (docs/deploy/Dockerfile). It runs on any x86_64 Linux with no other file.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Where the build lands.
pub fn binary() -> PathBuf {
    crate::workspace_root().join(format!("target/{TARGET}/release/covobs"))
}

/// The C compiler for musl that ring (TLS for the NATS client) builds its C and assembly with:
/// Debian's musl-tools (./dev setup installs it). cc-rs would look for `x86_64-linux-musl-gcc`,
/// which Debian does not ship under that name.
const MUSL_CC: &str = "musl-gcc";
const MUSL_CC_VAR: &str = "CC_x86_64_unknown_linux_musl";

/// Build it, check that it asks for no dynamic loader, and say where it is.
pub fn build() -> Result<PathBuf> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(crate::workspace_root()).args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        "covobs",
    ]);
    if std::env::var_os(MUSL_CC_VAR).is_none() {
        cargo.env(MUSL_CC_VAR, MUSL_CC);
    }
    crate::run(&mut cargo)?;
    let bin = binary();
    let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if has_interpreter(&elf)? {
        bail!(
            "{} asks for a dynamic loader (PT_INTERP): not static",
            bin.display()
        );
    }
    eprintln!(
        "static covobs: {} ({} KiB)",
        bin.display(),
        elf.len() / 1024
    );
    Ok(bin)
}

/// Whether a 64-bit little-endian ELF has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    let field = |at: usize, len: usize| -> Result<u64> {
        let bytes = elf.get(at..at + len).context("truncated ELF header")?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(v))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("not a 64-bit ELF file");
    }
    let phoff = field(32, 8)? as usize;
    let phentsize = field(54, 2)? as usize;
    let phnum = field(56, 2)? as usize;
    for i in 0..phnum {
        if field(phoff + i * phentsize, 4)? == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}
