//! Unprivileged targets that try to make root covobs read or copy a file they could not have
//! written: symlinks where their dumps or compiler notes should be, swapped in while covobs
//! collects. Each target runs as nobody (setpriv); the secrets are root's, holding a random
//! marker. No byte of a marker, nor a secret's size, may reach the session or covobs' output.
use std::{
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const NOBODY: u32 = 65534;

/// Root's files: one only root may read (0600), one everybody may read but only root may write
/// (0644). Both an odd size, so that size never appears in a message by chance.
struct Secrets {
    _dir: TempDir,
    private: PathBuf,
    public: PathBuf,
    marker: String,
    size: usize,
}

fn secrets() -> Secrets {
    let dir = TempDir::new("secrets");
    let mut random = [0u8; 12];
    // SAFETY: getrandom writes at most `len` bytes into the buffer.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    assert_eq!(n, random.len() as isize);
    let marker: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut body = format!("root:$6$covobs-secret-{marker}:19000:0:99999:7:::\n").into_bytes();
    body.resize(7919, b'#');
    let private = dir.path().join("shadow");
    let public = dir.path().join("world-readable");
    for (path, mode) in [(&private, 0o600), (&public, 0o644)] {
        std::fs::write(path, &body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // nobody may reach the files (as it reaches /etc/shadow), not read the private one.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Secrets {
        _dir: dir,
        private,
        public,
        marker,
        size: body.len(),
    }
}

/// A directory nobody owns, where the target works.
fn nobodys_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `program ARGS` as nobody, with no supplementary group and no capability.
fn as_nobody(program: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ])
    .arg(program)
    .args(args)
    .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A copy of a fixture nobody may run.
fn nobodys_copy(fixture_name: &str, dir: &Path) -> PathBuf {
    let copy = copy_as(&fixture(fixture_name), dir, fixture_name);
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// No file of the session, nor covobs' output, holds a marker; no `lost` reason names the
/// secret's size.
fn assert_nothing_leaked(out: &Path, covobs: &mut Covobs, s: &Secrets) {
    let mut files = 0;
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            assert!(!kind.is_symlink(), "{} is a link", path.display());
            if kind.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let data = std::fs::read(&path).unwrap();
                assert!(
                    !contains(&data, s.marker.as_bytes()),
                    "{} holds the secret's marker",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the session wrote nothing at all");
    let stderr = covobs.stderr();
    let events = covobs.events().to_vec();
    let stdout: String = events.iter().map(|e| format!("{e}\n")).collect();
    for text in [&stderr, &stdout] {
        assert!(!text.contains(&s.marker), "covobs printed the marker");
    }
    for lost in of_kind(&events, "lost") {
        let reason = lost["reason"].as_str().unwrap_or_default();
        assert!(
            !reason.contains(&s.size.to_string()),
            "a lost reason names the secret's size: {reason}"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn lost_reasons(events: &[Value]) -> Vec<String> {
    of_kind(events, "lost")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every dump_end the session saw has its artifact or a `lost` event.
fn assert_every_dump_accounted(events: &[Value], out: &Path) {
    let ends = of_kind(events, "dump_end").len();
    let arts = artifacts(out).len();
    let lost = of_kind(events, "lost").len();
    assert!(ends > 0, "no dump was seen");
    assert!(
        arts + lost >= ends,
        "{ends} dumps ended, {arts} artifacts, {lost} lost"
    );
}

/// The target's profile file is a link to a secret from the start: its own dumps fail, and
/// covobs, which looks for them where the environment says, must not take the secret instead.
/// Both secrets: the one nobody cannot read and the one nobody cannot write.
#[test]
fn a_profile_file_that_links_to_a_secret_is_refused_unread() {
    require_root();
    let s = secrets();
    for secret in [&s.private, &s.public] {
        let work = nobodys_dir("untrusted-llvm-env");
        let profile = work.path().join("p.profraw");
        std::os::unix::fs::symlink(secret, &profile).unwrap();
        let program = nobodys_copy("llvm-rust-target", work.path());
        let mut target = Driven::start(&mut as_nobody(
            &program,
            &["--self-dump-ms", "50"],
            &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
            work.path(),
        ));
        let pid = target.pid();
        assert!(target.line().ends_with("ready"));
        let out = work.path().join("out");
        let mut covobs = attach(&[
            "--pid",
            &pid.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--duration",
            "2s",
        ]);
        let status = covobs.wait(T);
        assert!(status.success(), "{status}: {}", covobs.stderr());
        let events = covobs.events().to_vec();
        assert_nothing_leaked(&out, &mut covobs, &s);
        assert!(
            artifacts(&out).is_empty(),
            "nothing the target wrote exists"
        );
        let reasons = lost_reasons(&events);
        let refused = |r: &String| r.contains("as the target") || r.contains("refused unread");
        assert!(
            reasons.iter().any(refused),
            "the refused dumps are told: {reasons:?}"
        );
        // A self-dump that began while covobs was still attaching is lost for that, truly (its
        // bytes went where covobs had no cursor yet): the only other reason there may be.
        assert!(
            reasons
                .iter()
                .all(|r| refused(r) || r.contains("it was still attaching to the process")),
            "{reasons:?}"
        );
        assert_every_dump_accounted(&events, &out);
        assert!(alive(pid), "the target is unharmed");
        // SAFETY: kill on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        target.wait();
    }
}

/// While covobs triggers dumps and collects them, nobody swaps its profile file for a link to a
/// secret and back, as fast as it can: whatever covobs opens at that moment, it must be the file
/// the dump wrote, or nothing.
#[test]
fn a_profile_swapped_for_a_link_during_collection_is_never_read() {
    require_root();
    let s = secrets();
    for secret in [&s.private, &s.public] {
        let work = nobodys_dir("untrusted-llvm-swap");
        let profile = work.path().join("p.profraw");
        let program = nobodys_copy("llvm-rust-target", work.path());
        let mut target = Driven::start(&mut as_nobody(
            &program,
            &["--self-dump-ms", "30"],
            &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
            work.path(),
        ));
        let pid = target.pid();
        assert!(target.line().ends_with("ready"));
        let script = format!(
            "while :; do ln -sfn {secret} l; mv -fT l p.profraw; sleep 0.002; rm -f p.profraw; sleep 0.002; done",
            secret = secret.display()
        );
        let mut swapper: Child = as_nobody(Path::new("sh"), &["-c", &script], &[], work.path())
            .spawn()
            .unwrap();
        let out = work.path().join("out");
        let mut covobs = attach(&[
            "--pid",
            &pid.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--interval",
            "40ms",
            "--duration",
            "3s",
        ]);
        let status = covobs.wait(T);
        let _ = swapper.kill();
        let _ = swapper.wait();
        assert!(status.success(), "{status}: {}", covobs.stderr());
        let events = covobs.events().to_vec();
        assert_nothing_leaked(&out, &mut covobs, &s);
        assert_every_dump_accounted(&events, &out);
        for a in artifacts(&out) {
            if a.meta["valid"] == true {
                assert!(
                    a.data()
                        .starts_with(&[0x81, 0x72, 0x66, 0x6f, 0x72, 0x70, 0x6c, 0xff])
                );
            }
        }
        let refused = lost_reasons(&events)
            .iter()
            .filter(|r| r.contains("refused") || r.contains("as the target"))
            .count();
        println!(
            "swap against {}: {} dumps, {} artifacts, {} lost ({} refused)",
            secret.display(),
            of_kind(&events, "dump_end").len(),
            artifacts(&out).len(),
            of_kind(&events, "lost").len(),
            refused
        );
        assert!(alive(pid), "the target is unharmed");
        // SAFETY: kill on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        target.wait();
    }
}

/// gcov: the compiler's notes beside the target's objects are a link to a secret. The dump's
/// .gcda files are the target's own and collected; the notes are refused, and say so.
#[test]
fn gcov_notes_that_link_to_a_secret_are_not_copied() {
    require_root();
    let s = secrets();
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gcov-target");
    for secret in [&s.private, &s.public] {
        let work = nobodys_dir("untrusted-gcov");
        // Built in nobody's directory, so the .gcda and .gcno paths compiled in are there.
        for src in ["main.c", "work.c", "work.h"] {
            std::fs::copy(sources.join(src), work.path().join(src)).unwrap();
        }
        for src in ["main.c", "work.c"] {
            run_ok(
                Command::new("gcc")
                    .args(["--coverage", "-O1", "-g", "-c", src])
                    .current_dir(work.path()),
            );
        }
        run_ok(
            Command::new("gcc")
                .args(["--coverage", "-o", "gcov-target", "main.o", "work.o"])
                .current_dir(work.path()),
        );
        let notes = work.path().join("work.gcno");
        std::fs::remove_file(&notes).unwrap();
        std::os::unix::fs::symlink(secret, &notes).unwrap();
        for entry in std::fs::read_dir(work.path()).unwrap().flatten() {
            let _ = std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY));
        }
        let mut target = Driven::start(&mut as_nobody(
            &work.path().join("gcov-target"),
            &[],
            &[],
            work.path(),
        ));
        let pid = target.pid();
        assert!(target.line().ends_with("ready"));
        let out = work.path().join("out");
        let mut covobs = attach(&[
            "--pid",
            &pid.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--once",
        ]);
        let status = covobs.wait(T);
        assert!(status.success(), "{status}: {}", covobs.stderr());
        let events = covobs.events().to_vec();
        assert_nothing_leaked(&out, &mut covobs, &s);
        let arts = artifacts(&out);
        assert_eq!(arts.len(), 1, "one gcov dump");
        let meta = &arts[0].meta;
        let parts: Vec<&str> = meta["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap())
            .collect();
        assert!(parts.iter().any(|p| p.ends_with("work.gcda")), "{parts:?}");
        assert!(parts.iter().any(|p| p.ends_with("main.gcno")), "{parts:?}");
        assert!(
            !parts.iter().any(|p| p.ends_with("work.gcno")),
            "the linked notes were copied: {parts:?}"
        );
        let reason = meta["invalid_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("work.gcno"), "{reason}");
        assert_every_dump_accounted(&events, &out);
        assert!(alive(pid));
        // SAFETY: kill on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        target.wait();
    }
}
