//! The install step (`cargo xtask install`, `./dev install`): covobs, its shell completions and
//! its man pages under a prefix, where bash-completion, zsh, fish and man look; `man` renders the
//! pages, bash loads the completion and completes subcommands; a second install changes nothing.
//! The test installs the covobs built with the tests (`--binary`) instead of building the static
//! one; `./dev newcomer-check` goes through the whole path with the static binary.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::SystemTime,
};

use covobs_tests::*;

fn xtask() -> PathBuf {
    let p = target_dir().join("xtask");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

fn install(prefix: &Path) -> Output {
    let out = Command::new(xtask())
        .args(["install", "--prefix"])
        .arg(prefix)
        .arg("--binary")
        .arg(covobs_bin())
        .output()
        .expect("xtask install");
    assert!(
        out.status.success(),
        "xtask install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The subcommands `covobs --help` lists.
fn subcommands() -> Vec<String> {
    let help = run_ok(Command::new(covobs_bin()).arg("--help"));
    let mut in_list = false;
    let mut names = Vec::new();
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_list = true;
            continue;
        }
        if in_list {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            if name != "help" {
                names.push(name.to_string());
            }
        }
    }
    assert!(names.len() >= 10, "{help}");
    names
}

fn mtimes(files: &[PathBuf]) -> Vec<SystemTime> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect()
}

#[test]
fn install_puts_covobs_its_completions_and_man_pages_under_a_prefix() {
    let tmp = TempDir::new("install");
    let prefix = tmp.path().join("prefix");
    let first = install(&prefix);
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(
        said.contains(&format!("installed covobs {}", env!("CARGO_PKG_VERSION"))),
        "{said}"
    );

    let bin = prefix.join("bin/covobs");
    assert_eq!(
        std::fs::read(&bin).expect("bin/covobs"),
        std::fs::read(covobs_bin()).expect("covobs")
    );
    assert_eq!(
        std::fs::metadata(&bin).expect("meta").permissions().mode() & 0o777,
        0o755
    );

    let subs = subcommands();
    let mut files = vec![bin.clone()];
    for rel in [
        "share/bash-completion/completions/covobs",
        "share/zsh/site-functions/_covobs",
        "share/fish/vendor_completions.d/covobs.fish",
    ] {
        let path = prefix.join(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for sub in &subs {
            assert!(text.contains(sub.as_str()), "{rel} does not name {sub}");
        }
        files.push(path);
    }
    let man1 = prefix.join("share/man/man1");
    for page in
        std::iter::once("covobs".to_string()).chain(subs.iter().map(|s| format!("covobs-{s}")))
    {
        let path = man1.join(format!("{page}.1"));
        assert!(path.exists(), "no man page {}", path.display());
        files.push(path);
    }

    // man renders the page (man-db, a Debian package the set-up installs).
    let page = Command::new("man")
        .arg("-l")
        .arg(man1.join("covobs-attach.1"))
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .env("MAN_KEEP_FORMATTING", "")
        .output()
        .expect("man (man-db)");
    let text = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.status.success(),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert!(text.contains("covobs-attach"), "{text}");
    assert!(text.contains("SYNOPSIS"), "{text}");
    assert!(text.contains("covobs attach"), "{text}");
    for option in ["interval", "serve", "pid"] {
        assert!(text.contains(option), "{option}: {text}");
    }
    assert!(
        !text.contains(".TH") && !text.contains("\\fB"),
        "raw roff: {text}"
    );
    // And by name, through MANPATH, as `man covobs-attach` does after an install.
    let by_name = Command::new("man")
        .arg("covobs-attach")
        .env("MANPATH", prefix.join("share/man"))
        .env("MANWIDTH", "100")
        .output()
        .expect("man");
    assert!(
        by_name.status.success(),
        "{}",
        String::from_utf8_lossy(&by_name.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&by_name.stdout), text);

    // bash loads the completion and completes a subcommand and an option.
    let completion = prefix.join("share/bash-completion/completions/covobs");
    let script = format!(
        "source {} || exit 9\n\
         complete -p covobs\n\
         COMP_WORDS=(covobs se); COMP_CWORD=1; COMP_LINE='covobs se'; COMP_POINT=9; _covobs covobs se covobs\n\
         echo \"subcommands: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(covobs attach --inter); COMP_CWORD=2; COMP_LINE='covobs attach --inter'; COMP_POINT=21; _covobs covobs --inter attach\n\
         echo \"options: ${{COMPREPLY[*]}}\"",
        completion.display()
    );
    let bash = run_ok(Command::new("bash").arg("--norc").arg("-c").arg(&script));
    assert!(bash.contains("-F _covobs covobs"), "{bash}");
    assert!(bash.contains("subcommands: serve"), "{bash}");
    assert!(bash.contains("options: --interval"), "{bash}");

    // A second install finds everything in place and touches nothing.
    let before = mtimes(&files);
    let second = install(&prefix);
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("is installed in"), "{said}");
    assert!(said.contains("already"), "{said}");
    assert_eq!(mtimes(&files), before);
}

/// `covobs completions SHELL` and `covobs man [SUBCOMMAND]` print what the install puts in place.
#[test]
fn completions_and_man_pages_are_printed_on_demand() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let text = run_ok(Command::new(covobs_bin()).args(["completions", shell]));
        for sub in &subs {
            assert!(text.contains(sub.as_str()), "{shell}: {sub}");
        }
    }
    let page = run_ok(Command::new(covobs_bin()).args(["man", "serve"]));
    assert!(page.contains(".TH covobs-serve 1"), "{page}");
    assert!(page.contains("addr"), "{page}");
    let out = Command::new(covobs_bin())
        .args(["man", "nope"])
        .output()
        .expect("covobs man");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no subcommand \"nope\""), "{err}");
    let out = Command::new(covobs_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("covobs completions");
    assert_eq!(out.status.code(), Some(2));
}
