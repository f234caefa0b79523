//! What the host tells the guest's init (xtask/src/vm/init.sh) through the run's control
//! directory, shared into the guest at /run/covobs-vm: `params` (sourced by init) and `cmd.sh`
//! (the command, its environment and working directory, run by the host's /bin/sh chrooted
//! into the host's root).
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Host environment variables passed into the guest when set (besides `--env`).
const PASS_PREFIXES: &[&str] = &["RUST_", "COVOBS_", "CARGO_"];
const PASS_NAMES: &[&str] = &["LANG", "LC_ALL", "PATH"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Quote for POSIX sh: 'it'\''s'.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The guest-side environment: host variables worth keeping, then fixed ones, then `extra`.
pub fn environment(share: &Path, extra: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            PASS_NAMES.contains(&k.as_str()) || PASS_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .filter(|(k, _)| valid_name(k))
        .collect();
    let path = match env.iter().find(|(k, _)| k == "PATH") {
        Some((_, host_path)) => format!("{host_path}:{DEFAULT_PATH}"),
        None => DEFAULT_PATH.to_owned(),
    };
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), path));
    env.push(("HOME".into(), "/root".into()));
    env.push(("TERM".into(), "dumb".into()));
    env.push(("COVOBS_IN_VM".into(), "1".into()));
    env.push((
        "COVOBS_VM_SHARE".into(),
        share.to_string_lossy().into_owned(),
    ));
    for (k, v) in extra {
        if !valid_name(k) {
            bail!("--env {k}=...: not a valid variable name");
        }
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

/// Write `params` and `cmd.sh` into the control directory.
pub fn write_control(
    ctl: &Path,
    share: &Path,
    cwd: &Path,
    env: &[(String, String)],
    command: &[String],
) -> Result<()> {
    if command.is_empty() {
        bail!("no command to run in the VM");
    }
    let share = share.to_string_lossy();
    let workspace = crate::workspace_root();
    std::fs::write(
        ctl.join("params"),
        format!(
            "COVOBS_SHARE={}\nCOVOBS_WORKSPACE={}\n",
            sh_quote(&share),
            sh_quote(&workspace.to_string_lossy())
        ),
    )
    .context("writing params")?;
    let mut script = String::from("# written by cargo xtask vm-run\n");
    for (k, v) in env {
        script.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    script.push_str(&format!(
        "cd {} 2>/dev/null || cd /\nexec",
        sh_quote(&cwd.to_string_lossy())
    ));
    for arg in command {
        script.push(' ');
        script.push_str(&sh_quote(arg));
    }
    script.push('\n');
    std::fs::write(ctl.join("cmd.sh"), script).context("writing cmd.sh")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn names() {
        assert!(valid_name("RUST_LOG"));
        assert!(!valid_name("1X"));
        assert!(!valid_name("A-B"));
        assert!(!valid_name(""));
    }
}
