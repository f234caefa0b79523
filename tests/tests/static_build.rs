//! The statically linked covobs (`cargo xtask static`) runs with no other file: from an empty
//! directory with an empty environment, and as the only file of a root filesystem that has just
//! /proc and /sys mounted, as in the `FROM scratch` image of docs/deploy/Dockerfile.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The musl build `cargo xtask static` makes.
fn static_covobs() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/x86_64-unknown-linux-musl/release/covobs");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask static` (./dev test does)",
        path.display()
    );
    path
}

fn output_of(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// A copy of the static binary alone in a fresh directory.
fn alone(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let bin = covobs_tests::copy_as(&static_covobs(), dir.path(), "covobs");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    (dir, bin)
}

#[test]
fn the_static_binary_needs_no_dynamic_loader_and_no_library() {
    let bin = static_covobs();
    let out = output_of(Command::new("ldd").arg(&bin));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd: {said}"
    );
    // No program interpreter (PT_INTERP) in the ELF program headers.
    let elf = std::fs::read(&bin).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(elf[54..56].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[56..58].try_into().unwrap()) as usize;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_ne!(p_type, 3, "PT_INTERP: the binary asks for a dynamic loader");
    }
}

#[test]
fn from_an_empty_directory_with_an_empty_environment_doctor_and_watch_work() {
    require_root();
    let (dir, bin) = alone("static-empty");
    let doctor = output_of(
        Command::new(&bin)
            .args(["doctor", "--json"])
            .env_clear()
            .current_dir(dir.path()),
    );
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&doctor.stderr)
        )
    });
    assert_eq!(doctor.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);

    let tmp = TempDir::new("static-target");
    let mut target = start_fixture(
        "llvm-c-target",
        &[],
        &[(
            "LLVM_PROFILE_FILE",
            tmp.path().join("p.profraw").to_str().unwrap(),
        )],
        tmp.path(),
    );
    let mut cmd = Command::new(&bin);
    cmd.args([
        "watch",
        "--json",
        "--pid",
        &target.pid().to_string(),
        "--duration",
        "2s",
    ])
    .env_clear()
    .current_dir(dir.path());
    let mut covobs = Covobs::spawn(cmd);
    let t = covobs.wait_event(T, "the target", |e| e.kind() == "target");
    assert_eq!(t.u("pid"), target.pid() as u64);
    let found = covobs.wait_event(T, "the runtime", |e| e.kind() == "runtime_found");
    assert_eq!(found.s("runtime"), "llvm");
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    // Nothing was written next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    target.child.kill().ok();
}

#[test]
fn as_the_only_file_of_a_scratch_root_it_observes_the_host() {
    require_root();
    // What a container from docs/deploy/Dockerfile sees: / holds the binary; the runtime mounts
    // /proc and /sys (a privileged container gets the kernel's tracefs under /sys).
    let (dir, _bin) = alone("static-scratch");
    let root = dir.path();
    let tmp = TempDir::new("static-scratch-target");
    let mut target = start_fixture(
        "llvm-c-target",
        &[],
        &[(
            "LLVM_PROFILE_FILE",
            tmp.path().join("p.profraw").to_str().unwrap(),
        )],
        tmp.path(),
    );
    let script = "set -e; mkdir -p \"$1/proc\" \"$1/sys\"; mount --rbind /proc \"$1/proc\"; \
                  mount --rbind /sys \"$1/sys\"; root=$1; shift; exec chroot \"$root\" /covobs \"$@\"";
    let scratch = |args: &[&str]| {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(root)
        .args(args)
        .env_clear();
        c
    };
    let doctor = output_of(&mut scratch(&["doctor", "--json"]));
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&doctor.stderr)
        )
    });
    assert_eq!(doctor.status.code(), Some(0), "{report:#}");
    let pid = target.pid().to_string();
    let mut covobs = Covobs::spawn(scratch(&[
        "watch",
        "--json",
        "--pid",
        &pid,
        "--duration",
        "2s",
    ]));
    let found = covobs.wait_event(T, "the runtime", |e| e.kind() == "runtime_found");
    assert_eq!(found.u("pid"), target.pid() as u64);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    target.child.kill().ok();
}
