//! Kernel coverage, for real: these tests run inside the kcov VM (`cargo xtask vm-test`, which
//! `cargo xtask test` runs after the host tests), against the kcov kernel, the kcov.rst example
//! and a multi-call workload.
//!
//! On the host (no kcov) they are ignored by `cargo test`; run anywhere else than in the VM
//! they fail loudly.
use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use covobs_tests::*;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

fn require_kcov_vm() {
    require_root();
    assert!(
        std::env::var_os("COVOBS_IN_VM").is_some(),
        "this test runs in the kcov VM: cargo xtask vm-test (cargo xtask test runs it)"
    );
    assert!(
        Path::new("/sys/kernel/debug/kcov").exists(),
        "the VM's kernel has no /sys/kernel/debug/kcov"
    );
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("{s:?} is not a hex number: {e}"))
}

/// The example waiting before KCOV_ENABLE (its buffer mapped), and covobs following it.
fn example_under(command: &str, extra: &[&str], mode: &[&str]) -> (Driven, Covobs, TempDir) {
    let tmp = TempDir::new("kcov");
    let mut args = vec!["wait"];
    args.extend_from_slice(mode);
    let target = start_program(&fixture("kcov_example"), &args, &[], tmp.path());
    let pid = target.pid().to_string();
    let mut cmd = vec![command, "--pid", &pid, "--json"];
    cmd.extend_from_slice(extra);
    let mut covobs = Covobs::start(&cmd);
    covobs.wait_event(TIMEOUT, "kcov found in the example", |e| {
        e.kind() == "runtime_found" && e.s("runtime") == "kcov"
    });
    (target, covobs, tmp)
}

/// Let the example go; the lines it prints (the PCs or records of read(-1, NULL, 0)).
fn run_example(target: &mut Driven) -> Vec<String> {
    target.send("go");
    let mut lines = Vec::new();
    while let Ok(line) = target.try_line(Duration::from_secs(30)) {
        lines.push(line);
    }
    let status = target.wait();
    assert!(status.success(), "kcov_example failed: {status}");
    assert!(!lines.is_empty(), "kcov_example printed nothing");
    lines
}

#[test]
#[ignore = "runs in the kcov VM: cargo xtask vm-test"]
fn watch_reports_exactly_the_pcs_the_kcov_example_prints() {
    require_kcov_vm();
    let (mut target, mut covobs, _tmp) = example_under("watch", &[], &[]);
    let printed: Vec<u64> = run_example(&mut target).iter().map(|l| hex(l)).collect();
    let disable = covobs.wait_event(TIMEOUT, "the kcov disable event", |e| {
        e.kind() == "kcov" && e.s("moment") == "disable"
    });
    assert_eq!(disable["mode"], "pc", "{disable}");
    assert_eq!(disable["exact"], true, "{disable}");
    assert_eq!(
        disable.u("entries"),
        printed.len() as u64,
        "covobs saw another count than the example: {disable}\nprinted: {printed:x?}"
    );
    let reported: BTreeSet<u64> = disable["pcs"]
        .as_array()
        .expect("pcs")
        .iter()
        .map(|v| hex(v.as_str().unwrap_or("")))
        .collect();
    let want: BTreeSet<u64> = printed.iter().copied().collect();
    assert_eq!(reported, want, "the PCs differ: {disable}");
    assert_eq!(disable.u("unique"), want.len() as u64);
    // Its ioctls were seen in order, for the thread that made them.
    let moments: Vec<String> = covobs
        .events()
        .iter()
        .filter(|e| e.kind() == "kcov")
        .map(|e| e.s("moment").to_owned())
        .collect();
    assert!(
        moments.iter().any(|m| m == "enable"),
        "no enable event: {moments:?}"
    );
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(TIMEOUT).success(), "{}", covobs.stderr());
}

#[test]
#[ignore = "runs in the kcov VM: cargo xtask vm-test"]
fn attach_keeps_the_exact_trace_as_an_artifact() {
    require_kcov_vm();
    let out = TempDir::new("kcov-attach-out");
    let dir = out.path().join("session");
    let dir_s = dir.to_string_lossy().into_owned();
    let (mut target, mut covobs, _tmp) =
        example_under("attach", &["--out", &dir_s, "--no-report"], &[]);
    let printed: Vec<u64> = run_example(&mut target).iter().map(|l| hex(l)).collect();
    let artifact = covobs.wait_event(TIMEOUT, "the kcov artifact", |e| {
        e.kind() == "artifact" && e.s("runtime") == "kcov"
    });
    assert_eq!(artifact["valid"], true);
    let file = dir.join(artifact.s("file"));
    let bytes = std::fs::read(&file).expect("artifact file");
    let words: Vec<u64> = bytes
        .as_chunks::<8>()
        .0
        .iter()
        .map(|c| u64::from_le_bytes(*c))
        .collect();
    assert_eq!(words[0], printed.len() as u64, "count word");
    assert_eq!(&words[1..], &printed[..], "the trace, in order");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(file.with_extension("json")).expect("metadata"))
            .expect("metadata json");
    assert_eq!(meta["runtime"], "kcov");
    assert_eq!(meta["format"]["name"], "kcov-trace-pc");
    assert_eq!(meta["kcov"]["exact"], true);
    assert_eq!(meta["trigger"], "self");
    assert!(
        meta["module"]["build_id"]
            .as_str()
            .is_some_and(|id| id.len() >= 16)
    );
    // The example exits: the session ends without leftovers.
    assert!(covobs.wait(TIMEOUT).success(), "{}", covobs.stderr());
    assert!(dir.join("session.json").exists());
}

#[test]
#[ignore = "runs in the kcov VM: cargo xtask vm-test"]
fn cmp_mode_records_are_decoded() {
    require_kcov_vm();
    let (mut target, mut covobs, _tmp) = example_under("watch", &[], &["cmp"]);
    let printed: Vec<Vec<u64>> = run_example(&mut target)
        .iter()
        .map(|l| l.split_whitespace().map(hex).collect())
        .collect();
    assert!(printed.iter().all(|r| r.len() == 4));
    let disable = covobs.wait_event(TIMEOUT, "the kcov disable event (CMP)", |e| {
        e.kind() == "kcov" && e.s("moment") == "disable"
    });
    assert_eq!(disable["mode"], "cmp", "{disable}");
    assert_eq!(disable["exact"], true, "{disable}");
    let records = disable["cmp"].as_array().expect("decoded records");
    assert_eq!(records.len(), printed.len(), "{disable}");
    for (r, p) in records.iter().zip(&printed) {
        let (ty, arg1, arg2, ip) = (p[0], p[1], p[2], p[3]);
        assert_eq!(r["size"].as_u64(), Some(1 << ((ty >> 1) & 3)), "{r}");
        assert_eq!(r["const"].as_bool(), Some(ty & 1 == 1), "{r}");
        assert_eq!(hex(r.s("arg1")), arg1, "{r}");
        assert_eq!(hex(r.s("arg2")), arg2, "{r}");
        assert_eq!(hex(r.s("ip")), ip, "{r}");
    }
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(TIMEOUT).success(), "{}", covobs.stderr());
}

#[test]
#[ignore = "runs in the kcov VM: cargo xtask vm-test"]
fn run_kernel_reports_kernel_and_user_coverage_of_a_workload() {
    require_kcov_vm();
    let tmp = TempDir::new("kcov-run");
    let dir = tmp.path().join("session");
    let profile = tmp.path().join("workload.profraw");
    let out = Command::new(covobs_bin())
        .args(["run", "--kernel", "--out"])
        .arg(&dir)
        .arg("--")
        .arg(fixture("kcov-workload"))
        .arg("3")
        .env("LLVM_PROFILE_FILE", &profile)
        .output()
        .expect("covobs run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "covobs run failed: {stderr}\n{stdout}"
    );
    assert!(
        stdout.contains("kcov_workload rounds=3"),
        "the workload's own output: {stdout}"
    );
    // The kcov trace of the workload, read when it exited.
    let session: Value =
        serde_json::from_slice(&std::fs::read(dir.join("session.json")).expect("session.json"))
            .expect("json");
    assert_eq!(session["workload"]["exit_status"], 0, "{session}");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).expect("events");
    let events: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let kcov_artifacts: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind() == "artifact" && e.s("runtime") == "kcov")
        .collect();
    assert_eq!(kcov_artifacts.len(), 1, "one trace, at exit: {events:?}");
    assert_eq!(kcov_artifacts[0]["trigger"], "exit");
    let lost: Vec<&Value> = events.iter().filter(|e| e.kind() == "lost").collect();
    assert!(
        events
            .iter()
            .any(|e| e.kind() == "artifact" && e.s("runtime") == "llvm"),
        "the workload's own (LLVM) coverage was collected too: {stderr}\nlost: {lost:?}"
    );
    // The report: kernel source files next to the workload's, and the syscall paths.
    let lcov = std::fs::read_to_string(dir.join("report/coverage.lcov")).expect("lcov");
    let hit_files = |suffix: &str| {
        lcov.split("end_of_record")
            .filter(|rec| {
                rec.lines()
                    .any(|l| l.starts_with("SF:") && l.ends_with(suffix))
            })
            .any(|rec| {
                rec.lines().any(|l| {
                    l.strip_prefix("DA:")
                        .and_then(|d| d.split(',').nth(1))
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
    };
    for file in [
        "fs/read_write.c",
        "fs/open.c",
        "fs/stat.c",
        "fs/pipe.c",
        "fs/exec.c",
        "kcov_workload.c",
    ] {
        assert!(
            hit_files(file),
            "no covered line in {file} in coverage.lcov"
        );
    }
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report/summary.json")).expect("summary"))
            .expect("json");
    let functions: Vec<&str> = summary["kernel"]["functions"]
        .as_array()
        .expect("kernel functions")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for f in [
        "ksys_read",
        "vfs_read",
        "do_sys_openat2",
        "vfs_write",
        "do_pipe2",
    ] {
        assert!(
            functions.contains(&f),
            "{f} not among the kernel functions reached"
        );
    }
    assert!(
        summary["kernel"]["symbolized_by"]
            .as_str()
            .is_some_and(|s| s.contains("vmlinux")),
        "{}",
        summary["kernel"]
    );
    let html = std::fs::read_to_string(dir.join("report/html/index.html")).expect("html");
    assert!(html.contains("Kernel (kcov)") && html.contains("User space"));
}
