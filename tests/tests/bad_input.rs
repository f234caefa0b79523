//! Bad input and missing privileges or kernel features: one-line errors, the right exit codes,
//! nothing left behind.
use std::{
    os::unix::process::CommandExt,
    process::{Command, Output},
};

use covobs_tests::*;

fn covobs(args: &[&str]) -> Command {
    let mut c = Command::new(covobs_bin());
    c.args(args);
    c
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run covobs")
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
}

/// Run as an unprivileged user, with every capability dropped.
fn unprivileged(args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(covobs_bin())
    .args(args);
    c
}

/// Make bpf(2) fail with ENOSYS, as on a kernel built without CONFIG_BPF_SYSCALL.
fn without_bpf_syscall(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; only async-signal-safe prctl calls on data
    // owned by this closure.
    unsafe {
        cmd.pre_exec(|| {
            // seccomp_data: nr at offset 0, arch at offset 4.
            const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
            let ret_errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
            let filter = [
                bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
                bpf_jump(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    AUDIT_ARCH_X86_64,
                    1,
                    0,
                ),
                bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
                bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
                bpf_jump(
                    libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                    libc::SYS_bpf as u32,
                    0,
                    1,
                ),
                bpf_stmt(libc::BPF_RET | libc::BPF_K, ret_errno),
                bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[test]
fn a_pid_that_does_not_exist() {
    require_root();
    let out = run(covobs(&["watch", "--pid", "999999999"]));
    assert_one_line_error(&out, 2, "no such process: 999999999");
}

#[test]
fn a_target_that_exited_is_refused_and_nothing_is_left_behind() {
    require_root();
    // Exited but not reaped yet: /proc still lists it, as it does for a target that exits while
    // covobs attaches.
    let mut child = std::process::Command::new("true").spawn().expect("true");
    let pid = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "true did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let tmp = TempDir::new("zombie");
    let dir = tmp.path().join("out");
    let pid_s = pid.to_string();
    for args in [
        vec!["watch", "--pid", &pid_s],
        vec!["attach", "--pid", &pid_s, "--out", dir.to_str().unwrap()],
    ] {
        let out = run(covobs(&args));
        assert_one_line_error(&out, 2, &format!("process {pid} has exited"));
        assert!(!dir.exists());
    }
    child.wait().expect("reap");
}

#[test]
fn a_kernel_thread_is_not_a_target() {
    require_root();
    // kthreadd is pid 2 in the initial PID namespace.
    let out = run(covobs(&["watch", "--pid", "2"]));
    assert_one_line_error(&out, 2, "kernel thread");
}

#[test]
fn a_name_that_matches_nothing() {
    require_root();
    let name = unique_name("nomatch");
    let out = run(covobs(&["watch", "--name", &name]));
    assert_one_line_error(&out, 2, "no process named");
}

#[test]
fn bad_usage() {
    require_root();
    assert_eq!(run(covobs(&["watch"])).status.code(), Some(2));
    assert_eq!(
        run(covobs(&["watch", "--pid", "1", "--name", "x"]))
            .status
            .code(),
        Some(2)
    );
    let out = run(covobs(&["watch", "--pid", "1", "--duration", "soon"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(covobs(&["watch", "--name", "/usr/bin/x"]));
    assert_one_line_error(&out, 2, "not a path");
}

#[test]
fn not_root() {
    require_root();
    let me = std::process::id().to_string();
    let out = run(unprivileged(&["watch", "--pid", &me]));
    assert_one_line_error(&out, 2, "needs root");

    let out = run(unprivileged(&["doctor"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("CAP_BPF + CAP_PERFMON   FAIL"), "{stdout}");
    assert!(stdout.contains("fix: run covobs as root"), "{stdout}");
    assert!(stdout.contains("covobs cannot attach here"), "{stdout}");
}

#[test]
fn a_kernel_without_the_bpf_syscall() {
    require_root();
    let me = std::process::id().to_string();
    let mut cmd = covobs(&["watch", "--pid", &me]);
    without_bpf_syscall(&mut cmd);
    let out = run(cmd);
    assert_one_line_error(&out, 2, "no bpf() system call");

    let mut cmd = covobs(&["doctor", "--json"]);
    without_bpf_syscall(&mut cmd);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(report["ok"], false);
    let bpf = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "bpf syscall"))
        .expect("a bpf syscall check")
        .clone();
    assert_eq!(bpf["status"], "fail");
    assert!(
        bpf["fix"]
            .as_str()
            .unwrap_or("")
            .contains("CONFIG_BPF_SYSCALL")
    );
}

#[test]
fn doctor_says_attaching_works_here_and_kcov_is_missing() {
    require_root();
    let out = run(covobs(&["doctor", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let status = |name: &str| {
        report["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .map(|c| c["status"].as_str().unwrap_or("").to_owned())
            .unwrap_or_else(|| panic!("no check {name}"))
    };
    for name in [
        "bpf syscall",
        "tracefs",
        "tracepoints",
        "eBPF programs",
        "uprobes",
        "ring buffer",
        "bpf_send_signal_thread",
    ] {
        assert_eq!(status(name), "ok", "{name}: {report:#}");
    }
    // This host kernel has no kcov (the kcov tests run in the VM).
    let kcov_here = std::path::Path::new("/sys/kernel/debug/kcov").exists();
    assert_eq!(status("kcov"), if kcov_here { "ok" } else { "warn" });

    let human = run(covobs(&["doctor"]));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("covobs can attach on this machine."),
        "{text}"
    );
}

/// `covobs snapshot` and `attach --mode snapshot` on what they cannot read: one line, exit code
/// 2, no file written; an existing output file is never overwritten.
#[test]
fn snapshots_of_nothing_readable() {
    require_root();
    let tmp = TempDir::new("bad-snapshot");
    let out = tmp.path().join("x.profraw");
    let out_s = out.to_str().unwrap();
    let o = run(covobs(&["snapshot", "--pid", "999999999", "--out", out_s]));
    assert_one_line_error(&o, 2, "no such process: 999999999");

    let mut sleep = Command::new("sleep").arg("60").spawn().expect("sleep");
    let pid = sleep.id().to_string();
    let o = run(covobs(&["snapshot", "--pid", &pid, "--out", out_s]));
    assert_one_line_error(&o, 2, "no coverage counters covobs can read");
    let session = tmp.path().join("session");
    let o = run(covobs(&[
        "attach",
        "--mode",
        "snapshot",
        "--pid",
        &pid,
        "--out",
        session.to_str().unwrap(),
    ]));
    assert_one_line_error(&o, 2, "no coverage counters covobs can read");
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(!out.exists());
    assert!(!session.exists());

    let target = start_fixture("llvm-c-target", &[], &[], tmp.path());
    std::fs::write(&out, b"keep").unwrap();
    let o = run(covobs(&[
        "snapshot",
        "--pid",
        &target.pid().to_string(),
        "--out",
        out_s,
    ]));
    assert_one_line_error(&o, 2, "covobs never overwrites output");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    drop(target);
}
