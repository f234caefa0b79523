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

/// covobs run from `cwd`, where its default output directory (./covobs-out) would go.
fn covobs_in(cwd: &std::path::Path, args: &[&str]) -> Command {
    let mut c = covobs(args);
    c.current_dir(cwd);
    c
}

/// Run covobs to its end; whatever happened, it left no control socket behind (its BPF objects
/// are never pinned: they go with its descriptors).
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run covobs");
    let pid = child.id();
    let out = child.wait_with_output().expect("run covobs");
    let socket = format!("/run/covobs/attach-{pid}.sock");
    assert!(
        !std::path::Path::new(&socket).exists(),
        "{socket} left behind"
    );
    out
}

/// What a directory holds, by name.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A clap usage error: exit code 2 and `needles` in what it says.
fn assert_usage_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in {stderr:?}");
    }
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
    let cwd = TempDir::new("zombie-cwd");
    let dir = tmp.path().join("out");
    let pid_s = pid.to_string();
    for args in [
        vec!["watch", "--pid", &pid_s],
        vec!["attach", "--pid", &pid_s, "--out", dir.to_str().unwrap()],
        // The default output directory, ./covobs-out/<timestamp>.
        vec!["attach", "--pid", &pid_s],
    ] {
        let out = run(covobs_in(cwd.path(), &args));
        assert_one_line_error(&out, 2, &format!("process {pid} has exited"));
        assert!(!dir.exists(), "{args:?}");
        assert_eq!(entries(cwd.path()), Vec::<String>::new(), "{args:?}");
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
    let out = run(covobs(&["watch"]));
    assert_usage_error(&out, &["required arguments were not provided", "--pid"]);
    let out = run(covobs(&["watch", "--pid", "1", "--name", "x"]));
    assert_usage_error(&out, &["'--pid <PID>' cannot be used with '--name <NAME>'"]);
    let out = run(covobs(&["watch", "--pid", "1", "--duration", "soon"]));
    assert_usage_error(
        &out,
        &["invalid value 'soon' for '--duration", "examples: 500ms"],
    );
    let out = run(covobs(&["watch", "--name", "/usr/bin/x"]));
    assert_one_line_error(&out, 2, "not a path");
}

/// An interval below 10 ms is refused with the reason, before anything happens; 10 ms is
/// accepted (the attach then fails on the missing process, not on the interval).
#[test]
fn an_interval_too_short_is_bad_usage() {
    require_root();
    let cwd = TempDir::new("interval");
    for interval in ["0s", "5ms", "0"] {
        let out = run(covobs_in(
            cwd.path(),
            &["attach", "--pid", "999999999", "--interval", interval],
        ));
        assert_usage_error(
            &out,
            &[
                &format!("invalid value '{interval}' for '--interval"),
                "must be at least 10ms",
            ],
        );
    }
    let out = run(covobs_in(
        cwd.path(),
        &["attach", "--pid", "999999999", "--interval", "10ms"],
    ));
    assert_one_line_error(&out, 2, "no such process: 999999999");
    assert_eq!(entries(cwd.path()), Vec::<String>::new());
}

/// A target without a coverage runtime (issue 17: `attach --pid 1 --once` left an empty
/// ./covobs-out behind): refused in one line, exit 2, and the working directory stays empty.
#[test]
fn a_refused_attach_leaves_not_even_an_empty_folder() {
    require_root();
    let cwd = TempDir::new("refused");
    let mut sleep = Command::new("sleep").arg("60").spawn().expect("sleep");
    let sleep_pid = sleep.id().to_string();
    for pid in ["1", &sleep_pid] {
        let out = run(covobs_in(cwd.path(), &["attach", "--pid", pid, "--once"]));
        assert_one_line_error(&out, 2, "has no coverage runtime covobs can trigger");
        assert_eq!(entries(cwd.path()), Vec::<String>::new(), "--pid {pid}");
    }
    // An existing ./covobs-out (earlier sessions) stays, without a new empty session in it.
    std::fs::create_dir(cwd.path().join("covobs-out")).expect("mkdir");
    std::fs::write(cwd.path().join("covobs-out/keep"), "earlier").expect("write");
    let out = run(covobs_in(
        cwd.path(),
        &["attach", "--pid", &sleep_pid, "--once"],
    ));
    assert_one_line_error(&out, 2, "has no coverage runtime covobs can trigger");
    assert_eq!(entries(&cwd.path().join("covobs-out")), vec!["keep"]);
    // A directory the user made for the session stays, empty as it was.
    let given = cwd.path().join("given");
    std::fs::create_dir(&given).expect("mkdir");
    let out = run(covobs(&[
        "attach",
        "--pid",
        &sleep_pid,
        "--once",
        "--out",
        given.to_str().unwrap(),
    ]));
    assert_one_line_error(&out, 2, "has no coverage runtime covobs can trigger");
    assert_eq!(entries(&given), Vec::<String>::new());
    let _ = sleep.kill();
    let _ = sleep.wait();
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
fn doctor_says_attaching_works_here_and_whether_kcov_does() {
    require_root();
    let out = run(covobs(&["doctor", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no check {name}"))
    };
    let status = |name: &str| check(name)["status"].as_str().unwrap_or("").to_owned();
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
    // kcov: whether this kernel has it, seen without covobs (opening the device as the kernel's
    // kcov users do), decides what the doctor must say; kcov never decides whether it is ok.
    let kcov_here = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/sys/kernel/debug/kcov")
        .is_ok();
    let kcov = check("kcov");
    let message = kcov["detail"].as_str().unwrap_or("");
    if kcov_here {
        eprintln!("this host kernel has kcov");
        assert!(
            kcov["status"] == "ok"
                || (kcov["status"] == "warn" && message.contains("BTF lacks struct kcov")),
            "kcov works here: {kcov:#}"
        );
    } else {
        eprintln!("this host kernel has no kcov (the kcov tests run in the VM)");
        assert_eq!(kcov["status"], "warn", "{kcov:#}");
        assert!(message.contains("unavailable"), "{kcov:#}");
        assert!(
            kcov["fix"].as_str().unwrap_or("").contains("CONFIG_KCOV=y"),
            "{kcov:#}"
        );
    }

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
