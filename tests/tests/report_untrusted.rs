//! `covobs report DIR` on session directories it must not trust (docs/security.md, "Untrusted
//! session directories"): links to files that are not the session's, a huge sparse artifact,
//! metadata a full disk cut short, a session.json of the wrong types. Built from real coverage
//! runs of the C program of report.rs (tests/src/built_session.rs), reported by the real binary.
//!
//! Secrets hold a random marker in a 0700 directory beside the session; covobs runs as root, so
//! permissions do not stop it: only not following links does. Each attack is first laid out with
//! plain copies, where the marker does reach the report (the test can fail), then with links.
use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Instant,
};

use covobs_tests::{built_session::*, *};
use serde_json::{Value, json};

fn covobs(args: &[&str]) -> Output {
    Command::new(covobs_bin())
        .args(args)
        .output()
        .expect("run covobs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A marker no file on the machine holds by chance.
fn marker() -> String {
    let mut b = [0u8; 12];
    let f = fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut &f, &mut b).expect("random");
    format!(
        "covobs-secret-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// A directory only root may enter, for secrets.
fn secret_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    fs::create_dir_all(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
    d
}

fn secret_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("write secret");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Every file under `dir`, recursively (links not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let t = e.file_type().expect("file type");
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Where `marker` (or the first 8 bytes of a file holding it, as a hex word) shows up: covobs'
/// output and everything under report/.
fn leaks(marker: &str, out: &Output, session: &Path) -> Vec<String> {
    let first8 = u64::from_le_bytes(marker.as_bytes()[..8].try_into().expect("8 bytes"));
    let needles = [
        marker.to_string(),
        format!("{first8:x}"),
        marker[marker.len() - 16..].to_string(),
    ];
    let mut found = Vec::new();
    let mut look = |what: String, hay: &str| {
        for n in &needles {
            if hay.contains(n.as_str()) {
                found.push(format!("{what} holds {n:?}"));
            }
        }
    };
    look("stdout".into(), &text(&out.stdout));
    look("stderr".into(), &text(&out.stderr));
    let mut files = Vec::new();
    files_under(&session.join("report"), &mut files);
    for f in files {
        look(
            f.display().to_string(),
            &text(&fs::read(&f).expect("read report file")),
        );
    }
    found
}

/// summary.json's left-out artifacts: file -> reason.
fn excluded(session: &Path) -> BTreeMap<String, String> {
    read_json(&session.join("report/summary.json"))["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .map(|e| {
            (
                e["file"].as_str().expect("file").to_string(),
                e["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect()
}

fn reported_seqs(session: &Path) -> Vec<u64> {
    read_json(&session.join("report/timeline.json"))["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["seq"].as_u64().expect("seq"))
        .collect()
}

/// Metadata of a raw profile artifact `seq` (as SessionBuilder writes it) with `trigger`.
fn metadata(
    s: &SessionBuilder,
    seq: u64,
    pid: u32,
    file: &str,
    bytes: &[u8],
    trigger: &str,
) -> Value {
    json!({
        "seq": seq, "runtime": "llvm", "pid": pid, "tid": pid, "comm": s.comm,
        "trigger": trigger, "start_ns": seq * 1000, "end_ns": seq * 1000 + 1,
        "bytes": bytes.len(), "checksum": format!("sha256:{}", sha256_of(bytes)),
        "valid": true, "file": file, "format": {"name": "llvm-raw-profile", "version": 8},
        "module": s.module,
    })
}

fn sha256_of(bytes: &[u8]) -> String {
    let tmp = TempDir::new("sha");
    let p = tmp.path().join("b");
    fs::write(&p, bytes).expect("write");
    sha256(&p)
}

fn replace_with_link(path: &Path, to: &Path) {
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path).expect("rm dir");
    } else {
        fs::remove_file(path).expect("rm");
    }
    symlink(to, path).expect("symlink");
}

#[test]
fn links_in_a_session_are_never_followed() {
    let tmp = TempDir::new("untrusted-links");
    let work = tmp.path();
    let mark = marker();
    let bin = build_c(work, "cov-untrusted");
    let raw1 = work.join("run1.profraw");
    let raw2 = work.join("run2.profraw");
    let pid1 = run_instrumented(&bin, &raw1, &["1"]);
    let pid2 = run_instrumented(&bin, &raw2, &["50"]);
    let (bytes1, bytes2) = (
        fs::read(&raw1).expect("raw1"),
        fs::read(&raw2).expect("raw2"),
    );

    let secrets = secret_dir(work, "secrets");
    // Like /etc/shadow: not a profile, the marker in its first bytes.
    let shadow = secrets.join("shadow");
    secret_file(
        &shadow,
        format!("{mark}:$6$salt$hash:19000:0:99999:7:::\n").as_bytes(),
    );
    let shadow_bytes = fs::read(&shadow).expect("shadow");

    let session = work.join("session");
    let s = SessionBuilder::new(
        &session,
        &bin,
        "cov-untrusted",
        Some("Debian clang version 14.0.6"),
        Some(14),
    );
    let pdir = session.join(format!("{pid1}-cov-untrusted"));
    let prel = format!("{pid1}-cov-untrusted");
    // 1: a plain good artifact, reported every time.
    s.artifact(1, pid1, &bytes1, true);
    // 2: the artifact is (first a copy of, then a link to) the secret; size and checksum match.
    s.artifact(2, pid1, &shadow_bytes, true);
    // 3: the metadata file is (a copy of, then a link to) metadata that is not the session's:
    // it names a real profile of the session and carries the marker as its trigger, which the
    // timeline repeats.
    let secret_meta = secrets.join("000003-llvm.json");
    fs::write(pdir.join("000003-llvm.profraw"), &bytes2).expect("write");
    secret_file(
        &secret_meta,
        metadata(&s, 3, pid1, "000003-llvm.profraw", &bytes2, &mark)
            .to_string()
            .as_bytes(),
    );
    fs::copy(&secret_meta, pdir.join("000003-llvm.json")).expect("copy");
    // 4: a directory on the way to the artifact is (a copy of, then a link to) a directory of
    // secrets holding a profile whose metadata is in the session.
    let other = secret_dir(work, "other");
    secret_file(&other.join("000004-llvm.profraw"), &bytes2);
    fs::create_dir(pdir.join("sub")).expect("mkdir");
    fs::copy(
        other.join("000004-llvm.profraw"),
        pdir.join("sub/000004-llvm.profraw"),
    )
    .expect("copy");
    fs::write(
        pdir.join("000004-llvm.json"),
        metadata(&s, 4, pid1, "sub/000004-llvm.profraw", &bytes2, "signal").to_string(),
    )
    .expect("write");
    // 5: a process directory that is (a copy of, then a link to) a directory of secrets with an
    // artifact and its metadata (the marker as its trigger).
    let procdir = secret_dir(work, "procdir");
    secret_file(&procdir.join("000005-llvm.profraw"), &bytes2);
    secret_file(
        &procdir.join("000005-llvm.json"),
        metadata(&s, 5, pid2, "000005-llvm.profraw", &bytes2, &mark)
            .to_string()
            .as_bytes(),
    );
    let evil = session.join(format!("{pid2}-evil"));
    fs::create_dir(&evil).expect("mkdir");
    for f in ["000005-llvm.profraw", "000005-llvm.json"] {
        fs::copy(procdir.join(f), evil.join(f)).expect("copy");
    }
    let dir = session.to_string_lossy().into_owned();

    // Plain copies: the marker reaches the report (so the test below can fail).
    let out = covobs(&["report", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !leaks(&mark, &out, &session).is_empty(),
        "with plain copies the marker should be in the report"
    );
    assert_eq!(reported_seqs(&session), [1, 3, 4, 5]);

    // Links.
    replace_with_link(&pdir.join("000002-llvm.profraw"), &shadow);
    replace_with_link(&pdir.join("000003-llvm.json"), &secret_meta);
    replace_with_link(&pdir.join("sub"), &other);
    replace_with_link(&evil, &procdir);
    let out = covobs(&["report", &dir]);
    let stderr = text(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let leaked = leaks(&mark, &out, &session);
    assert!(leaked.is_empty(), "the secret leaked: {leaked:?}");
    assert_eq!(reported_seqs(&session), [1]);
    let ex = excluded(&session);
    let link = "a symbolic link (covobs report follows no link in a session directory)";
    for (file, what) in [
        (format!("{prel}/000002-llvm.profraw"), "the artifact"),
        (format!("{prel}/000003-llvm.json"), "the metadata"),
        (
            format!("{prel}/sub/000004-llvm.profraw"),
            "a directory on the way",
        ),
    ] {
        let reason = ex
            .get(&file)
            .unwrap_or_else(|| panic!("{what} ({file}) is not left out: {ex:?}"));
        assert!(reason.contains(link), "{what}: {reason}");
        assert!(
            stderr.contains(&file),
            "stderr does not name {file}: {stderr}"
        );
    }
    assert_eq!(ex.len(), 3, "{ex:?}");
    // The linked process directory: not listed, and said so.
    assert!(
        stderr.contains(&format!("{pid2}-evil is a symbolic link")),
        "{stderr}"
    );
    let summary = read_json(&session.join("report/summary.json"));
    assert_eq!(summary["artifacts"]["total"], 4, "{}", summary["artifacts"]);
}

#[test]
fn a_module_copy_that_is_a_link_is_not_read() {
    let tmp = TempDir::new("untrusted-module");
    let work = tmp.path();
    let mark = marker();
    // A root-only program whose source name is the marker: llvm-cov reading it would put the
    // marker in the LCOV (SF:) and everywhere else.
    let secrets = secret_dir(work, "secrets");
    let src = secrets.join(format!("{mark}.c"));
    secret_file(&src, C_SOURCE.as_bytes());
    let secret_bin = secrets.join("prog");
    run_ok(
        Command::new(tool("/usr/bin/clang-14"))
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
            ])
            .arg(&secret_bin)
            .arg(&src),
    );
    fs::set_permissions(&secret_bin, fs::Permissions::from_mode(0o700)).expect("chmod");
    let raw = work.join("secret.profraw");
    let pid = run_instrumented(&secret_bin, &raw, &["50"]);
    let bytes = fs::read(&raw).expect("raw");

    let session = work.join("session");
    let s = SessionBuilder::new(
        &session,
        &secret_bin,
        "cov-module",
        Some("Debian clang version 14.0.6"),
        Some(14),
    );
    s.artifact(1, pid, &bytes, true);
    let dir = session.to_string_lossy().into_owned();
    let copy = session.join(s.module["copy"].as_str().expect("copy"));

    // The plain copy is read: the marker is in the report.
    let out = covobs(&["report", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !leaks(&mark, &out, &session).is_empty(),
        "the copy was not read"
    );

    // A link to the same program (its recorded path, which covobs does not fall back to).
    replace_with_link(&copy, &secret_bin);
    let out = covobs(&["report", &dir]);
    let stderr = text(&out.stderr);
    println!("{stderr}");
    // Nothing could be reported.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let leaked = leaks(&mark, &out, &session);
    assert!(leaked.is_empty(), "the secret leaked: {leaked:?}");
    let ex = excluded(&session);
    let reason = ex.values().next().expect("artifact 1 left out");
    assert!(
        reason.contains("the module copy modules/") && reason.contains("a symbolic link"),
        "{reason}"
    );
    // The modules/ directory itself a link (to a plain copy): the same.
    fs::remove_file(&copy).expect("rm link");
    fs::copy(&secret_bin, &copy).expect("copy");
    let modules = session.join("modules");
    let elsewhere = secret_dir(work, "modules-elsewhere");
    fs::rename(&modules, elsewhere.join("m")).expect("move modules");
    symlink(elsewhere.join("m"), &modules).expect("symlink");
    let out = covobs(&["report", &dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(leaks(&mark, &out, &session).is_empty());
    let ex = excluded(&session);
    assert!(
        ex.values()
            .next()
            .is_some_and(|r| r.contains("a symbolic link")),
        "{ex:?}"
    );
}

/// Peak RSS (kB) of a finished child and its own children, from wait4.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its resource usage"
)]
fn run_measured(args: &[&str], out_dir: &Path) -> (Output, i64, f64) {
    let stdout = fs::File::create(out_dir.join("stdout")).expect("stdout");
    let stderr = fs::File::create(out_dir.join("stderr")).expect("stderr");
    let t = Instant::now();
    let child = Command::new(covobs_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn covobs");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; status and usage are valid for writing.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        r,
        child.id() as i32,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    let elapsed = t.elapsed().as_secs_f64();
    use std::os::unix::process::ExitStatusExt as _;
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: fs::read(out_dir.join("stdout")).expect("stdout"),
        stderr: fs::read(out_dir.join("stderr")).expect("stderr"),
    };
    (out, usage.ru_maxrss, elapsed)
}

#[test]
fn a_huge_sparse_artifact_is_refused_before_it_is_read() {
    let tmp = TempDir::new("untrusted-sparse");
    let work = tmp.path();
    let bin = build_c(work, "cov-sparse");
    let raw = work.join("run.profraw");
    let pid = run_instrumented(&bin, &raw, &["50"]);
    let bytes = fs::read(&raw).expect("raw");
    let session = work.join("session");
    let s = SessionBuilder::new(
        &session,
        &bin,
        "cov-sparse",
        Some("Debian clang version 14.0.6"),
        Some(14),
    );
    s.artifact(1, pid, &bytes, true);
    let pdir = session.join(format!("{pid}-cov-sparse"));
    const TEN_GB: u64 = 10 << 30;
    // 2: 10 GB that its metadata says are 10 GB; 3: 10 GB its metadata says are 392 bytes.
    for (seq, recorded) in [(2u64, TEN_GB), (3, 392)] {
        let name = format!("{seq:06}-llvm.profraw");
        let f = fs::File::create(pdir.join(&name)).expect("create");
        f.set_len(TEN_GB).expect("ftruncate to 10 GB");
        let m = f.metadata().expect("stat");
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{}: the file system holds no sparse files; this test would write 10 GB",
            pdir.display()
        );
        let mut meta = metadata(&s, seq, pid, &name, &[], "signal");
        meta["bytes"] = json!(recorded);
        meta["checksum"] = json!(format!("sha256:{}", "0".repeat(64)));
        fs::write(pdir.join(format!("{seq:06}-llvm.json")), meta.to_string()).expect("write");
    }
    let dir = session.to_string_lossy().into_owned();
    let (out, maxrss_kb, secs) = run_measured(&["report", &dir], work);
    let stderr = text(&out.stderr);
    println!(
        "covobs report with two 10 GB sparse artifacts: {secs:.2} s, peak RSS {:.1} MB (covobs and the LLVM tools it ran)",
        maxrss_kb as f64 / 1024.0
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        maxrss_kb < 200 * 1024,
        "covobs grew to {maxrss_kb} kB reading a session with a 10 GB artifact"
    );
    assert_eq!(reported_seqs(&session), [1]);
    let ex = excluded(&session);
    let prel = format!("{pid}-cov-sparse");
    assert_eq!(
        ex[&format!("{prel}/000002-llvm.profraw")],
        "10737418240 bytes: more than the 1073741824 bytes covobs report reads of such a file"
    );
    assert_eq!(
        ex[&format!("{prel}/000003-llvm.profraw")],
        "10737418240 bytes on disk, 392 recorded in its metadata"
    );
}

#[test]
fn bad_metadata_leaves_only_its_artifact_out() {
    let tmp = TempDir::new("untrusted-metadata");
    let work = tmp.path();
    let bin = build_c(work, "cov-meta");
    let raw = work.join("run.profraw");
    let pid = run_instrumented(&bin, &raw, &["50"]);
    let bytes = fs::read(&raw).expect("raw");
    let session = work.join("session");
    let s = SessionBuilder::new(
        &session,
        &bin,
        "cov-meta",
        Some("Debian clang version 14.0.6"),
        Some(14),
    );
    let good = s.artifact(1, pid, &bytes, true);
    // 2: a full disk left the metadata empty; 3: cut in the middle; 4: a field of the wrong type.
    let empty = s.artifact(2, pid, &bytes, true);
    fs::write(&empty, "").expect("truncate");
    let cut = s.artifact(3, pid, &bytes, true);
    let full = fs::read(&cut).expect("read");
    fs::write(&cut, &full[..full.len() / 2]).expect("truncate");
    let typed = s.artifact(4, pid, &bytes, true);
    let mut v = read_json(&typed);
    v["pid"] = json!("SECRET-PID");
    fs::write(&typed, v.to_string()).expect("write");
    assert!(good.exists());

    let dir = session.to_string_lossy().into_owned();
    let out = covobs(&["report", &dir]);
    let stderr = text(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(reported_seqs(&session), [1]);
    let summary = read_json(&session.join("report/summary.json"));
    assert_eq!(summary["artifacts"]["total"], 4);
    assert_eq!(summary["artifacts"]["reported"], 1);
    let ex = excluded(&session);
    let prel = format!("{pid}-cov-meta");
    let reason = |seq: u64| ex[&format!("{prel}/{seq:06}-llvm.json")].clone();
    assert_eq!(
        reason(2),
        "its metadata file cannot be used: empty: no JSON at all"
    );
    assert_eq!(
        reason(3),
        "its metadata file cannot be used: truncated: the JSON ends early"
    );
    assert_eq!(
        reason(4),
        "its metadata file cannot be used: field `pid`: a string where u32 is expected"
    );
    assert!(!stderr.contains("SECRET-PID"), "{stderr}");
    let left: Vec<u64> = summary["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(left, [2, 3, 4]);
}

#[test]
fn session_json_of_the_wrong_types_is_bad_input() {
    let tmp = TempDir::new("untrusted-session-json");
    let work = tmp.path();
    let bin = build_c(work, "cov-sj");
    let raw = work.join("run.profraw");
    let pid = run_instrumented(&bin, &raw, &["5"]);
    let session = work.join("session");
    let s = SessionBuilder::new(&session, &bin, "cov-sj", None, Some(14));
    s.artifact(1, pid, &fs::read(&raw).expect("raw"), true);
    let good = read_json(&session.join("session.json"));
    let dir = session.to_string_lossy().into_owned();
    for (field, value, says) in [
        (
            "targets",
            json!("SECRET"),
            "field `targets`: a string where a sequence is expected",
        ),
        (
            "targets",
            json!([{"pid": "SECRET"}]),
            "field `targets[0].pid`: a string where u32 is expected",
        ),
        (
            "command",
            json!({"a": "SECRET"}),
            "field `command`: an object where a sequence is expected",
        ),
        (
            "kernel",
            json!(["SECRET"]),
            "field `kernel`: an array where a string is expected",
        ),
        (
            "counters",
            json!({"events": -1}),
            "field `counters.events`: a value out of range: u64 is expected",
        ),
    ] {
        let mut doc = good.clone();
        doc[field] = value;
        fs::write(session.join("session.json"), doc.to_string()).expect("write");
        let out = covobs(&["report", &dir]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
        assert!(
            stderr.contains(&format!(
                "{}: {says}",
                session.join("session.json").display()
            )),
            "{field}: {stderr}"
        );
        assert!(!stderr.contains("SECRET"), "{stderr}");
        // Bad input leaves nothing behind.
        let mut left: Vec<String> = fs::read_dir(&session)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{pid}-cov-sj"),
                "modules".into(),
                "session.json".into()
            ]
        );
    }
    // A session.json that is a link is not read either.
    let elsewhere = secret_dir(work, "elsewhere");
    fs::write(elsewhere.join("session.json"), good.to_string()).expect("write");
    replace_with_link(
        &session.join("session.json"),
        &elsewhere.join("session.json"),
    );
    let out = covobs(&["report", &dir]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("session.json: a symbolic link"), "{stderr}");
    // The good one is accepted.
    fs::remove_file(session.join("session.json")).expect("rm");
    fs::write(session.join("session.json"), good.to_string()).expect("write");
    let out = covobs(&["report", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
