//! Finding the external programs the report runs besides the LLVM tools: `gcov` of the GCC that
//! wrote a session's .gcda files, and `bisect-ppx-report`.
//!
//! Where they are looked for, in order: the directories given in the options (`tool_dirs`), the
//! project-local tools folder (`.tools/ocaml/bin`, `.tools/bin`) of the directory covobs runs in
//! or of the covobs executable and their parents (where `./dev setup` installs
//! bisect-ppx-report), then PATH.
use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Project-local tool folders: `<dir>/.tools/ocaml/bin` and `<dir>/.tools/bin` for the current
/// directory, the covobs executable's directory, and their parents.
fn project_dirs() -> Vec<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(d) = env::current_dir() {
        starts.push(d);
    }
    if let Some(d) = env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(d);
    }
    let mut out = Vec::new();
    for start in starts {
        for dir in start.ancestors() {
            for sub in [".tools/ocaml/bin", ".tools/bin"] {
                let p = dir.join(sub);
                if p.is_dir() && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Every directory searched, in order (for messages too).
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    for d in project_dirs() {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for d in env::split_paths(&path) {
            if d.is_absolute() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable named one of `names` (in the order given) in the search directories.
pub fn find(names: &[&str], extra: &[PathBuf]) -> Option<PathBuf> {
    let dirs = search_dirs(extra);
    names
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p)))
}

/// The first line a program prints for `args` (its version), or `None` if it cannot run.
pub fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_in_extra_dirs() {
        let sh = find(&["sh"], &[]).expect("sh on PATH");
        assert!(sh.is_absolute());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("my-tool");
        std::fs::write(&p, "#!/bin/sh\necho 'my-tool 1.2'\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let found = find(&["no-such-tool-x", "my-tool"], &[dir.path().to_path_buf()]);
        assert_eq!(found.as_deref(), Some(p.as_path()));
        assert_eq!(first_line(&p, &[]).as_deref(), Some("my-tool 1.2"));
        assert_eq!(find(&["no-such-tool-x"], &[dir.path().to_path_buf()]), None);
        // Not executable: not found.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(find(&["my-tool"], &[dir.path().to_path_buf()]), None);
    }
}
