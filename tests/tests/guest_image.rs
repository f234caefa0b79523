//! Snapshots from memory images: a `gcore` core file of a frozen process (Rust, LLVM 23, raw
//! profile v11; C, clang 14, v8) gives, through `covobs snapshot --image CORE --elf BIN` with no
//! `--base`, byte for byte the profile `covobs snapshot --pid` reads from the live process and the
//! one the process's own runtime dumps at that very point. Bad input (an ELF the core does not
//! hold, a truncated core) is a one-line error, exit 2, and no output file.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use covobs_tests::{
    TempDir, covobs_bin, fixture,
    freeze::{Frozen, load_bias, symbol_address},
    llvm_tools, require_root, run_ok, start_fixture,
};
use serde_json::Value;

fn snapshot_json(args: &[&str], out: &Path) -> Value {
    let text = run_ok(
        Command::new(covobs_bin())
            .arg("snapshot")
            .arg("--json")
            .args(args)
            .arg("--out")
            .arg(out),
    );
    serde_json::from_str(&text).expect("snapshot --json")
}

/// Run a snapshot that must be refused: exit code 2, one line on stderr, no output file.
pub fn refused(args: &[&str], out: &Path) -> String {
    let o = Command::new(covobs_bin())
        .arg("snapshot")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run covobs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("covobs: error: "), "{stderr}");
    assert!(!out.exists(), "{args:?} left {} behind", out.display());
    stderr
}

fn show(profdata: &Path, profraw: &Path) -> String {
    run_ok(
        Command::new(profdata)
            .args(["show", "--all-functions", "--counts"])
            .arg(profraw),
    )
}

/// Wait until every thread of `pid` is in a stop (state T).
fn wait_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|s| Some(s.rsplit(')').next()?.split_whitespace().next()?.to_owned()))
            .collect();
        if !states.is_empty() && states.iter().all(|s| s == "T") {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} did not stop: {states:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// gcore a stopped process into `dir`; the core's path.
fn gcore(pid: i32, dir: &Path) -> PathBuf {
    let prefix = dir.join("core");
    let out = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(pid.to_string())
        .output()
        .expect("gcore (gdb) is installed");
    let core = PathBuf::from(format!("{}.{pid}", prefix.display()));
    assert!(
        out.status.success() && core.exists(),
        "gcore {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    core
}

fn core_equals_live_snapshot_and_runtime_dump(fixture_name: &str, other: &str) {
    require_root();
    let tools = llvm_tools(fixture_name);
    let tmp = TempDir::new(&format!("guest-core-{fixture_name}"));
    let pause = tmp.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    let profile = tmp.path().join("runtime.profraw");
    let target = start_fixture(
        fixture_name,
        &["--pause-file", pause.to_str().unwrap()],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    std::fs::remove_file(&pause).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    std::fs::write(&pause, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let exe = fixture(fixture_name);
    let dump_fn = symbol_address(pid, &exe, "__llvm_profile_write_file");
    let live = tmp.path().join("live.profraw");
    {
        let frozen = Frozen::stop_quiescent(pid);
        snapshot_json(&["--pid", &pid.to_string()], &live);
        assert_eq!(frozen.call(dump_fn), 0, "__llvm_profile_write_file failed");
        // Pending while every thread is in a ptrace stop: taken before any user code runs
        // again, when the freeze detaches.
        // SAFETY: kill(2) on the test's own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    }
    wait_stopped(pid);
    let core = gcore(pid, tmp.path());
    let from_core = tmp.path().join("core.profraw");
    let exe_s = exe.to_str().unwrap();
    let w = snapshot_json(
        &["--image", core.to_str().unwrap(), "--elf", exe_s],
        &from_core,
    );
    let w = &w[0];
    assert_eq!(w["snapshot"]["method"], "core-file", "{w}");
    assert_eq!(
        w["snapshot"]["load_bias"].as_u64(),
        Some(load_bias(pid, &exe)),
        "the bias from the core's NT_FILE note"
    );

    let (runtime, live_b, core_b) = (
        std::fs::read(&profile).unwrap(),
        std::fs::read(&live).unwrap(),
        std::fs::read(&from_core).unwrap(),
    );
    assert_eq!(
        show(&tools.profdata, &from_core),
        show(&tools.profdata, &profile),
        "{fixture_name}: llvm-profdata show of the core's snapshot and the runtime's dump"
    );
    assert!(core_b == live_b, "{fixture_name}: core != live snapshot");
    assert!(
        core_b == runtime,
        "{fixture_name}: core != the runtime's dump"
    );
    let shown = show(&tools.profdata, &from_core);
    assert!(
        shown.contains("phase_checksum") && shown.lines().count() > 40,
        "{shown}"
    );

    // Bad input.
    let out = tmp.path().join("refused.profraw");
    let other = fixture(other);
    let e = refused(
        &[
            "--image",
            core.to_str().unwrap(),
            "--elf",
            other.to_str().unwrap(),
        ],
        &out,
    );
    assert!(e.contains("no file mapped in the core's process"), "{e}");
    let bytes = std::fs::read(&core).unwrap();
    let truncated = tmp.path().join("truncated.core");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    drop(bytes);
    let e = refused(
        &["--image", truncated.to_str().unwrap(), "--elf", exe_s],
        &out,
    );
    assert!(e.contains("truncated"), "{e}");
    let e = refused(
        &[
            "--image",
            core.to_str().unwrap(),
            "--elf",
            exe_s,
            "--base",
            "0x1000",
        ],
        &out,
    );
    assert!(e.contains("core file"), "{e}");
    std::fs::remove_file(&core).unwrap();
    std::fs::remove_file(&truncated).unwrap();
    // SAFETY: kill(2) on the test's own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(target);
}

#[test]
fn a_core_of_a_rust_target_gives_its_runtimes_own_dump() {
    core_equals_live_snapshot_and_runtime_dump("llvm-rust-target", "llvm-c-target");
}

#[test]
fn a_core_of_a_c_target_gives_its_runtimes_own_dump() {
    core_equals_live_snapshot_and_runtime_dump("llvm-c-target", "llvm-rust-target");
}
