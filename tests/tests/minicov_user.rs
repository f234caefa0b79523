//! A user-space process whose profiling runtime is minicov (`-Z no-profiler-runtime`: counters,
//! no `__llvm_profile_write_file`, no signal handler): the fixture `minicov-user` runs phases and
//! writes minicov's own capture when told. `covobs snapshot --pid` and `covobs attach --mode
//! snapshot` find it like any instrumented process, and their profiles are minicov's capture byte
//! for byte (and the attach's report LCOV is llvm-cov's of that capture); signal mode says why it
//! cannot trigger it.
use std::{path::Path, process::Command, time::Duration};

use covobs_tests::{
    Covobs, TempDir, artifacts, covobs_bin, llvm_tools, require_root, run_ok, start_fixture,
};
use serde_json::Value;

const FIXTURE: &str = "minicov-user";

fn lcov(tools: &covobs_tests::LlvmTools, profraw: &Path) -> String {
    let profdata = profraw.with_extension("profdata");
    run_ok(
        Command::new(&tools.profdata)
            .args(["merge", "-o"])
            .arg(&profdata)
            .arg(profraw),
    );
    run_ok(
        Command::new(&tools.cov)
            .args(["export", "-format=lcov", "-instr-profile"])
            .arg(&profdata)
            .arg(&tools.objects[0]),
    )
}

#[test]
fn a_minicov_process_is_snapshotted_like_the_others() {
    require_root();
    let tools = llvm_tools(FIXTURE);
    let tmp = TempDir::new("minicov-user");
    let dir = tmp.path();
    let mut target = start_fixture(FIXTURE, &[], &[], dir);
    let pid = target.pid().to_string();
    assert_eq!(target.ask("phase 1"), "phase 1 = 1110");

    // One snapshot, after the process captured its own counters (nothing instrumented runs
    // between its capture and covobs' read).
    let own = dir.join("own-1.profraw");
    let answer = target.ask(&format!("capture {}", own.display()));
    assert!(answer.starts_with("captured "), "{answer}");
    let snap = dir.join("snap-1.profraw");
    let text = run_ok(
        Command::new(covobs_bin())
            .args(["snapshot", "--json", "--pid", &pid, "--out"])
            .arg(&snap),
    );
    let w: Value = serde_json::from_str(&text).expect("snapshot --json");
    assert_eq!(w[0]["runtime"], "llvm", "{w}");
    assert_eq!(w[0]["snapshot"]["method"], "process_vm_readv", "{w}");
    let captured = std::fs::read(&own).unwrap();
    assert!(
        std::fs::read(&snap).unwrap() == captured,
        "covobs snapshot --pid is not byte for byte minicov's capture"
    );
    println!(
        "minicov-user: {} counters, {} covered after phase 1; profile {} bytes, equal to minicov's",
        w[0]["snapshot"]["counters"], w[0]["snapshot"]["covered"], w[0]["bytes"]
    );

    // Signal mode has nothing to signal, and says what works.
    let o = Command::new(covobs_bin())
        .args(["attach", "--once", "--no-report", "--pid", &pid, "--out"])
        .arg(dir.join("refused"))
        .output()
        .expect("run covobs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--mode snapshot"), "{stderr}");

    // A snapshot-mode session, after two more phases and a second capture.
    assert_eq!(target.ask("phase 2"), "phase 2 = 3677586914");
    assert_eq!(target.ask("phase 3"), "phase 3 = 2204");
    let own2 = dir.join("own-2.profraw");
    target.ask(&format!("capture {}", own2.display()));
    let out = dir.join("session");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--mode",
        "snapshot",
        "--once",
        "--pid",
        &pid,
        "--out",
        out.to_str().unwrap(),
    ]);
    let status = covobs.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", covobs.stderr());
    let events = covobs.events().to_vec();
    let found = events
        .iter()
        .find(|e| e["event"] == "runtime_found" && e["runtime"] == "llvm")
        .expect("runtime_found");
    assert!(
        found["note"].as_str().unwrap_or("").contains("minicov"),
        "{found}"
    );
    let arts = artifacts(&out);
    let snaps: Vec<_> = arts
        .iter()
        .filter(|a| a.meta["trigger"] == "snapshot")
        .collect();
    assert_eq!(snaps.len(), 1, "one snapshot (--once)");
    let captured2 = std::fs::read(&own2).unwrap();
    assert!(
        snaps[0].data() == captured2,
        "the session's snapshot is not byte for byte minicov's capture"
    );
    let report = std::fs::read_to_string(out.join("report/coverage.lcov")).expect("report LCOV");
    assert!(
        report == lcov(&tools, &own2),
        "the report's LCOV is not llvm-cov's of minicov's capture:\n{report}"
    );
    target.send("quit");
    assert!(target.wait().success());
}
