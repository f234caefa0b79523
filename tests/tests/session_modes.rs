//! The modes of what a real session writes: root alone (0700 directories, 0600 files) whatever
//! the umask, or shared with one group by `--output-group` (0750, 0640, that group), report/
//! included.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use covobs_tests::*;

const T: Duration = Duration::from_secs(120);

/// Every entry under `dir` and `dir` itself: (path, mode bits, gid, is a directory). A link
/// fails the test: a session holds none.
fn walk(dir: &Path) -> Vec<(PathBuf, u32, u32, bool)> {
    let m = std::fs::symlink_metadata(dir).expect("metadata");
    assert!(!m.file_type().is_symlink(), "{} is a link", dir.display());
    let mut out = vec![(dir.to_path_buf(), m.mode() & 0o7777, m.gid(), m.is_dir())];
    if m.is_dir() {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// `covobs attach --once` (with its report) under umask 000, as a shell would start it.
fn session(tag: &str, extra: &str) -> (TempDir, PathBuf) {
    require_root();
    let tmp = TempDir::new(tag);
    let profile = tmp.path().join("target.profraw");
    let target = start_fixture(
        "llvm-rust-target",
        &[],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    // Parents that do not exist yet are covobs' to create too.
    let out = tmp.path().join("a/b/out");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "umask 000; exec {} attach --json --once --pid {} --out {} {extra}",
        covobs_bin().display(),
        target.pid(),
        out.display()
    ));
    let mut covobs = Covobs::spawn(cmd);
    let status = covobs.wait(T);
    assert!(status.success(), "{}", covobs.stderr());
    assert!(
        out.join("report/html/index.html").is_file(),
        "no report: {}",
        covobs.stderr()
    );
    drop(target);
    (tmp, out)
}

fn assert_modes(root: &Path, entries: &[(PathBuf, u32, u32, bool)], dir: u32, file: u32) {
    let files = entries.iter().filter(|e| !e.3).count();
    println!(
        "{}: {} directories, {files} files",
        root.display(),
        entries.len() - files
    );
    assert!(files >= 4, "too little to look at: {entries:?}");
    for (path, mode, _, is_dir) in entries {
        let want = if *is_dir { dir } else { file };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }
}

#[test]
fn a_session_is_root_only_whatever_the_umask() {
    let (tmp, out) = session("modes-private", "");
    let all = walk(&out);
    assert_modes(&out, &all, 0o700, 0o600);
    // Covered: events, metadata, an artifact, session.json, the module copy, the report.
    for name in ["events.jsonl", "session.json", "report/coverage.lcov"] {
        assert!(all.iter().any(|e| e.0 == out.join(name)), "{name} missing");
    }
    assert!(all.iter().any(|e| e.0.starts_with(out.join("modules"))));
    // The parents covobs made, too.
    for p in [tmp.path().join("a"), tmp.path().join("a/b")] {
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", p.display());
    }
}

#[test]
fn output_group_shares_the_session_with_that_group_only() {
    // Debian's group for nobody.
    let (group, gid) = ("nogroup", 65534);
    let (_tmp, out) = session("modes-group", &format!("--output-group {group}"));
    let all = walk(&out);
    assert_modes(&out, &all, 0o750, 0o640);
    for (path, _, g, _) in &all {
        assert_eq!(*g, gid, "{}", path.display());
    }
    // `covobs report` rewrites report/ with the modes it is given.
    run_ok(
        Command::new(covobs_bin())
            .arg("report")
            .arg(&out)
            .args(["--output-group", &gid.to_string()]),
    );
    let report = walk(&out.join("report"));
    assert_modes(&out.join("report"), &report, 0o750, 0o640);
    assert!(report.iter().all(|e| e.2 == gid));
    run_ok(Command::new(covobs_bin()).arg("report").arg(&out));
    let private = walk(&out.join("report"));
    assert_modes(&out.join("report"), &private, 0o700, 0o600);
}

#[test]
fn an_unknown_group_is_bad_input_and_leaves_nothing() {
    require_root();
    let tmp = TempDir::new("modes-bad");
    let out = tmp.path().join("out");
    let o = Command::new(covobs_bin())
        .args(["attach", "--pid", &std::process::id().to_string(), "--once"])
        .args(["--output-group", "no-such-group-covobs", "--out"])
        .arg(&out)
        .output()
        .expect("covobs");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such group"),
        "{o:?}"
    );
    assert!(!out.exists());
}
