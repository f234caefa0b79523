//! `cargo xtask newcomer-check` (`./dev newcomer-check`): the path of a new user, in a fresh clone
//! of this repository's committed HEAD: the two commands at the top of the README, as written,
//! then the install step the README names, then `covobs --version` and `covobs doctor` from the
//! PATH, `man covobs-attach` and the bash completion. It runs the whole test suite inside the
//! clone, so it is not part of that suite itself. Prints how long each step took.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

pub struct Options {
    /// Install here instead of a prefix inside the check's directory (e.g. /usr/local, as the
    /// README does).
    pub prefix: Option<PathBuf>,
    /// Leave the clone and the prefix for a look afterwards.
    pub keep: bool,
    /// Skip `./dev test` (the longest step).
    pub skip_test: bool,
}

/// The commands of the README's first code block: `./dev demo`, `./dev test`.
fn top_commands(readme: &str) -> Vec<String> {
    let mut in_block = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            if in_block {
                break;
            }
            in_block = true;
            continue;
        }
        if in_block {
            let cmd = line.split('#').next().unwrap_or("").trim();
            if !cmd.is_empty() {
                out.push(cmd.to_string());
            }
        }
    }
    out
}

/// The install command the README names (the first line starting with `./dev install`).
fn install_command(readme: &str) -> Option<String> {
    readme
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| l.starts_with("./dev install"))
        .map(str::to_string)
}

fn step(name: &str, cmd: &mut Command, timings: &mut Vec<(String, f64)>) -> Result<String> {
    eprintln!("[newcomer-check] {name}: {cmd:?}");
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    timings.push((name.to_string(), secs));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{name} failed ({}) after {secs:.0} s\n--- stdout (end):\n{}\n--- stderr (end):\n{}",
            out.status,
            tail(&stdout),
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    eprintln!("[newcomer-check] {name}: ok in {secs:.1} s");
    Ok(stdout)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn run(opts: &Options) -> Result<()> {
    let root = crate::workspace_root();
    let dirty = Command::new("git")
        .current_dir(&root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .context("git status")?;
    if !dirty.stdout.is_empty() {
        eprintln!("[newcomer-check] note: uncommitted changes are not in the clone");
    }
    let base = std::env::temp_dir().join(format!("covobs-newcomer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    let result = check(&root, &base, opts);
    if opts.keep || result.is_err() {
        eprintln!("[newcomer-check] left in {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}

fn check(root: &Path, base: &Path, opts: &Options) -> Result<()> {
    let mut timings = Vec::new();
    let clone = base.join("covobs");
    step(
        "fresh clone",
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(root)
            .arg(&clone),
        &mut timings,
    )?;
    let readme = std::fs::read_to_string(clone.join("README.md")).context("README.md")?;
    let top = top_commands(&readme);
    if top != ["./dev demo", "./dev test"] {
        bail!("the README's first commands are {top:?}, not ./dev demo and ./dev test");
    }
    for cmd in &top {
        if cmd.starts_with("./dev test") && opts.skip_test {
            eprintln!("[newcomer-check] {cmd}: skipped (--skip-test)");
            continue;
        }
        step(
            cmd,
            Command::new("bash").arg("-c").arg(cmd).current_dir(&clone),
            &mut timings,
        )?;
    }
    let install =
        install_command(&readme).context("the README names no `./dev install` command")?;
    let prefix = opts.prefix.clone().unwrap_or_else(|| base.join("prefix"));
    let install = format!("{install} --prefix {}", prefix.display());
    step(
        "install",
        Command::new("bash")
            .arg("-c")
            .arg(&install)
            .current_dir(&clone),
        &mut timings,
    )?;
    // Installing again changes nothing.
    let again = Command::new("bash")
        .arg("-c")
        .arg(&install)
        .current_dir(&clone)
        .output()?;
    if !String::from_utf8_lossy(&again.stderr).contains("already") {
        bail!(
            "a second install was not a no-op: {}",
            String::from_utf8_lossy(&again.stderr)
        );
    }

    // From the PATH, in a directory of its own.
    let path = format!(
        "{}:{}",
        prefix.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = base.join("home");
    std::fs::create_dir_all(&home)?;
    let user = |args: &str| {
        let mut c = Command::new("bash");
        c.arg("-c").arg(args).current_dir(&home).env("PATH", &path);
        c
    };
    let which = step(
        "command -v covobs",
        &mut user("command -v covobs"),
        &mut timings,
    )?;
    if Path::new(which.trim()) != prefix.join("bin/covobs") {
        bail!(
            "covobs on the PATH is {}, not the installed one",
            which.trim()
        );
    }
    let version = step(
        "covobs --version",
        &mut user("covobs --version"),
        &mut timings,
    )?;
    let want = format!("covobs {}", env!("CARGO_PKG_VERSION"));
    if version.trim() != want {
        bail!(
            "covobs --version says {:?}, expected {want:?}",
            version.trim()
        );
    }
    let doctor = step("covobs doctor", &mut user("covobs doctor"), &mut timings)?;
    if !doctor.contains("covobs can attach on this machine") {
        bail!("covobs doctor: {doctor}");
    }
    let page = step(
        "man covobs-attach",
        &mut user(&format!(
            "MANPATH={}: MANWIDTH=100 man covobs-attach",
            prefix.join("share/man").display()
        )),
        &mut timings,
    )?;
    if !page.contains("--interval") {
        bail!("man covobs-attach does not show --interval:\n{page}");
    }
    step(
        "bash completion",
        &mut user(&format!(
            "source {} && complete -p covobs",
            prefix
                .join("share/bash-completion/completions/covobs")
                .display()
        )),
        &mut timings,
    )?;
    eprintln!("[newcomer-check] passed; times:");
    for (name, secs) in &timings {
        eprintln!("  {secs:>8.1} s  {name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readme_commands() {
        let readme =
            std::fs::read_to_string(crate::workspace_root().join("README.md")).expect("README.md");
        assert_eq!(top_commands(&readme), ["./dev demo", "./dev test"]);
        assert_eq!(install_command(&readme).as_deref(), Some("./dev install"));
    }
}
