//! Selection by container: `--cgroup` on a real cgroup v2 directory. Processes started in it (or
//! moved into it) after covobs attached are picked up, processes elsewhere are not, a target moved
//! out stops being one without losing what it was asked for.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use covobs_tests::{ns::TestCgroup, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A fixture (copied under `name`) started inside cgroup directory `dir`, from before its exec.
fn start_in(dir: &Path, bin: &Path, profile: &Path, cwd: &Path) -> Driven {
    let mut cmd = Command::new(bin);
    cmd.env("LLVM_PROFILE_FILE", profile).current_dir(cwd);
    TestCgroup::spawn_into(&mut cmd, dir);
    let mut d = Driven::start(&mut cmd);
    let line = d.line();
    assert!(line.ends_with(&format!("pid={} ready", d.pid())), "{line}");
    d
}

#[test]
fn watch_picks_up_processes_started_forked_or_moved_into_the_cgroup_and_nothing_else() {
    require_root();
    let cg = TestCgroup::new("watch");
    let below = cg.child("ctr");
    let other = TestCgroup::new("other");
    let tmp = TempDir::new("cgroup-watch");
    let bin = copy_as(&fixture("llvm-c-target"), tmp.path(), &unique_name("cgw"));
    let p = |n: &str| tmp.path().join(n);

    // Empty at start: --wait.
    let mut covobs = Covobs::start(&[
        "watch",
        "--json",
        "--wait",
        "--cgroup",
        &cg.path,
        "--duration",
        "30s",
    ]);
    // It says it waits once its probes are in place.
    covobs.wait_stderr(T, "yet; waiting for one");

    // Started below the cgroup after covobs: picked up at its exec.
    let inside = start_in(&below, &bin, &p("a.profraw"), tmp.path());
    // Started in another cgroup: ignored.
    let outside = start_in(&other.dir, &bin, &p("b.profraw"), tmp.path());
    let picked = covobs.wait_event(T, "the process started in the cgroup", |e| {
        e.kind() == "target" && e.u("pid") == inside.pid() as u64
    });
    // start_in moves the forked child into the cgroup before its exec: with no name to match,
    // that move is what makes it a target.
    assert_eq!(picked.s("reason"), "cgroup", "{picked}");
    // A shell in the cgroup that forks a subshell (no exec): the child is in the cgroup too.
    let mut sh = Command::new("sh");
    sh.args(["-c", "(while :; do sleep 0.2; done) & wait"])
        .stdout(Stdio::null());
    TestCgroup::spawn_into(&mut sh, &cg.dir);
    let mut sh = sh.spawn().expect("sh");
    let fork = covobs.wait_event(T, "the subshell the shell forked", |e| {
        e.kind() == "process_fork" && e.u("pid") == sh.id() as u64
    });
    assert_eq!(fork["followed"], true, "{fork}");
    let child = fork.u("child_pid");
    covobs.wait_event(T, "the forked subshell adopted", |e| {
        e.kind() == "target" && e.u("pid") == child && e.s("reason") == "fork"
    });
    // Started elsewhere, then moved into the cgroup without an exec (as container runtimes do).
    let mover = start_program(
        &bin,
        &[],
        &[("LLVM_PROFILE_FILE", p("c.profraw").to_str().unwrap())],
        tmp.path(),
    );
    TestCgroup::move_into(&cg.dir, mover.pid());
    let moved = covobs.wait_event(T, "the process moved in", |e| {
        e.kind() == "cgroup_move" && e.u("pid") == mover.pid() as u64
    });
    assert_eq!(moved["entered"], true);
    assert_eq!(moved.s("cgroup"), cg.path);
    let adopted = covobs.wait_event(T, "the moved process adopted", |e| {
        e.kind() == "target" && e.u("pid") == mover.pid() as u64
    });
    assert_eq!(adopted.s("reason"), "cgroup");
    // And moved out again: it is let go.
    TestCgroup::move_into(&other.dir, mover.pid());
    let left = covobs.wait_event(T, "the process moved out", |e| {
        e.kind() == "cgroup_move" && e.u("pid") == mover.pid() as u64 && e["entered"] == false
    });
    assert_eq!(left.s("comm"), adopted.s("comm"));
    std::thread::sleep(Duration::from_millis(800));
    // Once let go, the kernel reports nothing more about it (not even its exit).
    drop(mover);
    // SAFETY: kill on our own child.
    unsafe { libc::kill(inside.pid(), libc::SIGTERM) };
    covobs.wait_event(T, "the exit of the process in the cgroup", |e| {
        e.kind() == "process_exit" && e.u("pid") == inside.pid() as u64
    });
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    let targets: Vec<u64> = of_kind(&events, "target")
        .iter()
        .map(|e| e.u("pid"))
        .collect();
    assert!(!targets.contains(&(outside.pid() as u64)), "{targets:?}");
    let after_leaving = events
        .iter()
        .skip_while(|e| !(e.kind() == "cgroup_move" && e["entered"] == false))
        .skip(1)
        .filter(|e| e.u("pid") == adopted.u("pid"))
        .count();
    assert_eq!(
        after_leaving, 0,
        "events about a process that left the cgroup"
    );
    let _ = sh.kill();
    let _ = sh.wait();
}

#[test]
fn attach_triggers_and_collects_a_process_started_in_the_cgroup_after_it() {
    require_root();
    let cg = TestCgroup::new("attach");
    let tmp = TempDir::new("cgroup-attach");
    let name = unique_name("cga");
    let bin = copy_as(&fixture("llvm-rust-target"), tmp.path(), &name);
    let profile = tmp.path().join("late.profraw");
    let out = tmp.path().join("out");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--no-report",
        "--wait",
        "--cgroup",
        &cg.dir.display().to_string(),
        "--name",
        &name,
        "--interval",
        "500ms",
        "--duration",
        "6s",
        "--out",
        out.to_str().unwrap(),
    ]);
    // It says it waits once its probes are in place.
    covobs.wait_stderr(T, "yet; waiting for one");
    // Same name, wrong cgroup: not a target.
    let elsewhere = start_program(
        &bin,
        &[],
        &[(
            "LLVM_PROFILE_FILE",
            tmp.path().join("elsewhere.profraw").to_str().unwrap(),
        )],
        tmp.path(),
    );
    let late = start_in(&cg.dir, &bin, &profile, tmp.path());
    let adopted = covobs.wait_event(T, "the late process adopted", |e| {
        e.kind() == "target" && e.u("pid") == late.pid() as u64
    });
    assert_eq!(adopted.s("reason"), "exec", "{adopted}");
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    let targets: Vec<u64> = of_kind(&events, "target")
        .iter()
        .map(|e| e.u("pid"))
        .collect();
    assert_eq!(targets, vec![late.pid() as u64]);
    assert!(
        of_kind(&events, "lost").is_empty(),
        "{:?}",
        of_kind(&events, "lost")
    );
    let triggers = of_kind(&events, "trigger");
    assert!(triggers.len() >= 3, "{triggers:?}");
    let written = std::fs::read(&profile).unwrap();
    let dir = out.join(format!("{}-{name}", late.pid()));
    let mut artifacts = 0;
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        if f.path().extension().is_some_and(|e| e == "json") {
            let meta = read_json(&f.path());
            let data = std::fs::read(dir.join(meta["file"].as_str().unwrap())).unwrap();
            let off = meta["source"]["offset"].as_u64().unwrap() as usize;
            assert_eq!(meta["valid"], true);
            assert_eq!(&written[off..off + data.len()], &data[..]);
            artifacts += 1;
        }
    }
    assert_eq!(artifacts, triggers.len());
    // Never signalled: its runtime only created the file, empty, at start.
    let elsewhere_file = tmp.path().join("elsewhere.profraw");
    assert_eq!(
        std::fs::metadata(elsewhere_file)
            .map(|m| m.len())
            .unwrap_or(0),
        0
    );
    drop(elsewhere);
}

#[test]
fn a_target_moved_out_of_the_cgroup_during_attach_is_let_go_with_nothing_lost() {
    require_root();
    let cg = TestCgroup::new("leave");
    let other = TestCgroup::new("leave-to");
    let tmp = TempDir::new("cgroup-leave");
    let profile = tmp.path().join("leaver.profraw");
    let bin = copy_as(&fixture("llvm-c-target"), tmp.path(), &unique_name("cgl"));
    let stays = tmp.path().join("stays.profraw");
    let leaver = start_in(&cg.dir, &bin, &profile, tmp.path());
    let stayer = start_in(&cg.dir, &bin, &stays, tmp.path());
    let out = tmp.path().join("out");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--no-report",
        "--cgroup",
        &cg.path,
        "--interval",
        "400ms",
        "--duration",
        "5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "a dump of the leaver", |e| {
        e.kind() == "artifact" && e.u("pid") == leaver.pid() as u64
    });
    TestCgroup::move_into(&other.dir, leaver.pid());
    covobs.wait_event(T, "the move out", |e| {
        e.kind() == "cgroup_move" && e.u("pid") == leaver.pid() as u64
    });
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    assert!(
        of_kind(&events, "lost").is_empty(),
        "{:?}",
        of_kind(&events, "lost")
    );
    let moved_at = events
        .iter()
        .position(|e| e.kind() == "cgroup_move")
        .unwrap();
    // No trigger for it after the move; the other target goes on.
    assert!(
        !events[moved_at..]
            .iter()
            .any(|e| e.kind() == "trigger" && e.u("pid") == leaver.pid() as u64)
    );
    assert!(
        events[moved_at..]
            .iter()
            .any(|e| e.kind() == "trigger" && e.u("pid") == stayer.pid() as u64)
    );
    // Every dump it made has its artifact, exact.
    let ends = of_kind(&events, "dump_end")
        .iter()
        .filter(|e| e.u("pid") == leaver.pid() as u64)
        .count();
    let arts: Vec<&Value> = of_kind(&events, "artifact")
        .into_iter()
        .filter(|e| e.u("pid") == leaver.pid() as u64)
        .collect();
    assert!(ends >= 1);
    assert_eq!(arts.len(), ends);
    let written = std::fs::read(&profile).unwrap();
    let total: u64 = arts.iter().map(|a| a.u("bytes")).sum();
    let first = arts[0].u("offset");
    assert_eq!(first + total, written.len() as u64);
    assert!(alive(leaver.pid()) && alive(stayer.pid()));
}

#[test]
fn a_cgroup_that_does_not_exist_is_refused_and_leaves_nothing_behind() {
    require_root();
    let tmp = TempDir::new("cgroup-bad");
    let out = tmp.path().join("out");
    for args in [
        vec!["watch", "--cgroup", "/covobs-no-such-cgroup"],
        vec![
            "attach",
            "--cgroup",
            "/covobs-no-such-cgroup/ctr",
            "--out",
            out.to_str().unwrap(),
        ],
        vec![
            "attach",
            "--cgroup",
            "/covobs-no-such-cgroup",
            "--name",
            "x",
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        let o = Command::new(covobs_bin()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no such cgroup"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!out.exists());
    }
    // An empty cgroup without --wait: nothing to attach to.
    let cg = TestCgroup::new("empty");
    let o = Command::new(covobs_bin())
        .args([
            "attach",
            "--cgroup",
            &cg.path,
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no process in cgroup"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.exists());
    // --pid excludes the others.
    let o = Command::new(covobs_bin())
        .args(["watch", "--pid", "1", "--cgroup", &cg.path])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
