//! What `covobs completions SHELL` and `covobs man` print, from the command-line definition itself
//! (clap_complete, clap_mangen), so they never drift from `--help`. `cargo xtask install` puts
//! them where shells and man look.
use std::{io::Write as _, path::Path};

use clap::CommandFactory as _;

use crate::cli::Cli;

#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("covobs has no subcommand {0:?} (see covobs --help)")]
    NoSuchCommand(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl ManualError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::NoSuchCommand(_))
    }
}

fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = command();
    // Into memory: clap_complete panics on a failed write (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "covobs", &mut buf);
    buf
}

/// Print to stdout; a reader that went away (`| head`) is not an error.
pub fn print(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Every man page: ("covobs.1", page), ("covobs-attach.1", page), ...
pub fn pages() -> Result<Vec<(String, Vec<u8>)>, ManualError> {
    let cmd = command();
    let mut out = vec![("covobs.1".to_string(), render(&cmd, "covobs")?)];
    // clap's own `help` subcommand has no page of its own: `covobs help X` is `covobs X --help`.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("covobs-{}", sub.get_name());
        out.push((format!("{name}.1"), render(sub, &name)?));
    }
    Ok(out)
}

/// The page of covobs (None) or of one subcommand.
pub fn page(subcommand: Option<&str>) -> Result<Vec<u8>, ManualError> {
    let cmd = command();
    match subcommand {
        None => render(&cmd, "covobs"),
        Some(name) => {
            let sub = cmd
                .find_subcommand(name)
                .ok_or_else(|| ManualError::NoSuchCommand(name.to_string()))?;
            render(sub, &format!("covobs-{}", sub.get_name()))
        }
    }
}

fn render(cmd: &clap::Command, name: &str) -> Result<Vec<u8>, ManualError> {
    // The page's title and NAME section use the display name: covobs-attach, not attach (the
    // synopsis uses the bin name, `covobs attach`, set when the command was built).
    let cmd = cmd.clone().display_name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("covobs {}", env!("CARGO_PKG_VERSION")))
        .manual("covobs manual")
        .render(&mut buf)
        .map_err(|source| ManualError::Write {
            path: format!("{name}.1"),
            source,
        })?;
    Ok(buf)
}

/// Write every page into `dir` (created if missing).
pub fn write_pages(dir: &Path) -> Result<Vec<String>, ManualError> {
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ManualError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let mut names = Vec::new();
    for (name, bytes) in pages()? {
        let path = dir.join(&name);
        std::fs::write(&path, bytes).map_err(err(&path))?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_subcommand_named_after_it() {
        let pages = pages().expect("pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for n in [
            "covobs.1",
            "covobs-attach.1",
            "covobs-serve.1",
            "covobs-report.1",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
        assert!(!names.contains(&"covobs-help.1"), "{names:?}");
        let attach = String::from_utf8(page(Some("attach")).expect("attach")).expect("utf-8");
        assert!(attach.contains(".TH covobs-attach 1"), "{attach}");
        assert!(attach.contains("interval"), "{attach}");
        assert!(page(Some("nope")).expect_err("no such").is_bad_input());
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(completions(shell)).expect("utf-8");
            for sub in ["attach", "serve", "report", "doctor"] {
                assert!(text.contains(sub), "{shell}: {sub}");
            }
        }
    }
}
