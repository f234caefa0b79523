//! Kernel coverage on a kernel without kcov (this host): `covobs doctor` says so and how to get
//! it; `covobs run --kernel` refuses with one line, exit 2, and leaves nothing behind. (The
//! kcov tests proper run in the kcov VM: tests/kcov_vm.rs.)
use std::{path::Path, process::Command};

use covobs_tests::*;
use serde_json::Value;

fn require_no_kcov() {
    require_root();
    assert!(
        !Path::new("/sys/kernel/debug/kcov").exists(),
        "these tests check covobs on a kernel without kcov, and this one has /sys/kernel/debug/kcov"
    );
}

#[test]
fn doctor_says_kcov_is_missing_and_how_to_get_it() {
    require_no_kcov();
    let out = Command::new(covobs_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("covobs doctor");
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let kcov = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "kcov")
        .unwrap_or_else(|| panic!("no kcov check: {report}"));
    assert_eq!(kcov["status"], "warn", "{kcov}");
    assert!(
        kcov["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/sys/kernel/debug/kcov")),
        "{kcov}"
    );
    let fix = kcov["fix"].as_str().unwrap_or("");
    assert!(fix.contains("CONFIG_KCOV"), "the fix says how: {kcov}");
    // kcov is optional: it does not fail the doctor by itself.
    let human = Command::new(covobs_bin())
        .arg("doctor")
        .output()
        .expect("covobs doctor");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("kcov"), "{text}");
    assert_eq!(
        human.status.code(),
        Some(0),
        "kcov missing fails the doctor: {text}"
    );
}

#[test]
fn run_kernel_without_kcov_is_refused_and_leaves_nothing() {
    require_no_kcov();
    let tmp = TempDir::new("run-kernel");
    let dir = tmp.path().join("session");
    let marker = tmp.path().join("ran");
    let out = Command::new(covobs_bin())
        .args(["run", "--kernel", "--out"])
        .arg(&dir)
        .arg("--")
        .arg("/bin/sh")
        .arg("-c")
        .arg(format!("touch {}", marker.display()))
        .output()
        .expect("covobs run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("kcov"), "{stderr}");
    assert!(
        stderr.contains("CONFIG_KCOV"),
        "says what is missing: {stderr}"
    );
    assert!(!dir.exists(), "no session directory is left behind");
    assert!(!marker.exists(), "the command must not have run");
}
