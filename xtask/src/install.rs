//! `cargo xtask install [--prefix DIR]` (`./dev install`): the static covobs into PREFIX/bin, its
//! shell completions where bash-completion, zsh and fish look under PREFIX, and a man page for
//! covobs and each subcommand in PREFIX/share/man/man1. The completions and pages come from the
//! binary being installed (`covobs completions SHELL`, `covobs man --out-dir`). A file already
//! there with the same bytes is left alone, so a second run changes nothing and takes seconds.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub const DEFAULT_PREFIX: &str = "/usr/local";

/// Where each shell's completions go, relative to the prefix.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "share/bash-completion/completions/covobs"),
    ("zsh", "share/zsh/site-functions/_covobs"),
    ("fish", "share/fish/vendor_completions.d/covobs.fish"),
];

const MAN_DIR: &str = "share/man/man1";

/// What one file's installation did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Installed,
    Unchanged,
}

pub fn run(prefix: &Path, binary: Option<PathBuf>) -> Result<()> {
    if !prefix.is_absolute() {
        bail!("--prefix {}: give an absolute directory", prefix.display());
    }
    let bin = match binary {
        Some(b) => b,
        None => crate::static_build::build()?,
    };
    let mut changed = Vec::new();
    let mut unchanged = 0usize;
    let mut note = |rel: &str, o: Outcome| match o {
        Outcome::Installed => changed.push(rel.to_string()),
        Outcome::Unchanged => unchanged += 1,
    };

    let exe = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    note("bin/covobs", put(&prefix.join("bin/covobs"), &exe, 0o755)?);
    for (shell, rel) in COMPLETIONS {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("{} completions {shell} printed nothing", bin.display());
        }
        note(rel, put(&prefix.join(rel), &script, 0o644)?);
    }
    let staging = tempdir()?;
    output(
        Command::new(&bin)
            .arg("man")
            .arg("--out-dir")
            .arg(staging.path()),
    )?;
    let mut pages: Vec<PathBuf> = fs::read_dir(staging.path())?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    pages.sort();
    if pages.is_empty() {
        bail!("{} man wrote no page", bin.display());
    }
    for page in &pages {
        let name = page
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("{MAN_DIR}/{name}");
        note(&rel, put(&prefix.join(&rel), &fs::read(page)?, 0o644)?);
    }

    let version = output(Command::new(prefix.join("bin/covobs")).arg("--version"))?;
    let version = String::from_utf8_lossy(&version).trim().to_string();
    if changed.is_empty() {
        eprintln!(
            "{version} is installed in {} already ({unchanged} files unchanged)",
            prefix.display()
        );
    } else {
        eprintln!(
            "installed {version} into {}: {} (and {unchanged} unchanged)",
            prefix.display(),
            changed.join(", ")
        );
    }
    eprintln!(
        "  bin/covobs, completions for bash, zsh and fish, {} man pages (man covobs-attach)",
        pages.len()
    );
    hints(prefix);
    Ok(())
}

/// Say what the shell needs when the prefix is not one it searches already.
fn hints(prefix: &Path) {
    let bin = prefix.join("bin");
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin));
    if !on_path {
        eprintln!(
            "  {} is not on your PATH: export PATH=\"{}:$PATH\"",
            bin.display(),
            bin.display()
        );
    }
    if prefix != Path::new(DEFAULT_PREFIX) && prefix != Path::new("/usr") {
        eprintln!(
            "  man pages: MANPATH=\"{}:\" man covobs; completions: bash-completion, zsh and fish look under {}/share when it is in XDG_DATA_DIRS (zsh: fpath)",
            prefix.join("share/man").display(),
            prefix.display()
        );
    }
}

/// Run a command, return its stdout; fail with its stderr.
fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Put `bytes` at `dest` with `mode`: left alone when it holds them already, otherwise written
/// beside it and renamed over it (a running covobs keeps its old file; nobody sees half of one).
fn put(dest: &Path, bytes: &[u8], mode: u32) -> Result<Outcome> {
    if let Ok(old) = fs::read(dest)
        && old == bytes
    {
        let perms = fs::metadata(dest)?.permissions();
        if perms.mode() & 0o7777 != mode {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        }
        return Ok(Outcome::Unchanged);
    }
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.covobs-install-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("installing {}", dest.display()));
    }
    Ok(Outcome::Installed)
}

/// A temporary directory removed on drop (xtask has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let p = std::env::temp_dir().join(format!("covobs-install-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TempDir(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_installs_then_leaves_equal_files_alone() {
        let t = tempdir().expect("tempdir");
        let dest = t.path().join("a/b/file");
        assert_eq!(put(&dest, b"one", 0o755).expect("put"), Outcome::Installed);
        assert_eq!(fs::read(&dest).expect("read"), b"one");
        assert_eq!(
            fs::metadata(&dest).expect("meta").permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(put(&dest, b"one", 0o755).expect("put"), Outcome::Unchanged);
        assert_eq!(put(&dest, b"two", 0o644).expect("put"), Outcome::Installed);
        assert_eq!(fs::read(&dest).expect("read"), b"two");
        // Nothing else is left in the directory.
        let names: Vec<_> = fs::read_dir(t.path().join("a/b"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file")]);
    }
}
