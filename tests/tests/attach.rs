//! `covobs attach` on real LLVM-instrumented targets (rustc -C instrument-coverage, Debian's
//! clang, the runtime in a shared library): triggering, seeing and collecting every dump.
use std::{
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Every artifact of a session with its bytes: (metadata, data), in seq order.
fn artifacts_with_data(out: &Path) -> Vec<(Value, Vec<u8>)> {
    artifacts(out)
        .into_iter()
        .map(|a| {
            let data = a.data();
            (a.meta, data)
        })
        .collect()
}

/// A fixture running in a fresh temporary directory, with its LLVM_PROFILE_FILE there.
struct Running {
    tmp: TempDir,
    target: Driven,
    pid: i32,
    /// The file the target's runtime writes.
    profile: PathBuf,
    /// Where a session's output goes.
    out: PathBuf,
}

fn run_fixture(tag: &str, fixture_name: &str, args: &[&str]) -> Running {
    let tmp = TempDir::new(tag);
    let profile = tmp.path().join("target.profraw");
    let out = tmp.path().join("out");
    let target = start_fixture(
        fixture_name,
        args,
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    );
    let pid = target.pid();
    Running {
        tmp,
        target,
        pid,
        profile,
        out,
    }
}

/// `llvm-profdata show` of the matching LLVM accepts the raw profile.
fn assert_llvm_reads(tools: &LlvmTools, profraw: &Path) {
    run_ok(Command::new(&tools.profdata).arg("show").arg(profraw));
}

#[test]
fn every_triggered_dump_gives_one_valid_artifact_with_the_exact_bytes() {
    require_root();
    for fixture_name in ["llvm-rust-target", "llvm-c-target", "llvm-shared-target"] {
        let tmp = TempDir::new("attach-n");
        let profile = tmp.path().join("target.profraw");
        let out = tmp.path().join("out");
        let mut target = start_fixture(
            fixture_name,
            &[],
            &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
            tmp.path(),
        );
        let pid = target.pid().to_string();
        let mut covobs = attach(&[
            "--pid",
            &pid,
            "--interval",
            "600ms",
            "--duration",
            "3s",
            "--out",
            out.to_str().unwrap(),
        ]);
        let status = covobs.wait(T);
        assert!(status.success(), "{fixture_name}: {}", covobs.stderr());
        let events = covobs.events().to_vec();

        let found = of_kind(&events, "runtime_found");
        assert_eq!(found.len(), 1, "{fixture_name}: {found:?}");
        assert_eq!(found[0].s("runtime"), "llvm");
        let expected_module = if fixture_name == "llvm-shared-target" {
            "libcovshared.so"
        } else {
            fixture_name
        };
        assert!(found[0].s("module").ends_with(expected_module), "{found:?}");

        let triggers = of_kind(&events, "trigger");
        let ends = of_kind(&events, "dump_end");
        let arts = artifacts_with_data(&out);
        // 4 interval ticks in 3 s, plus the dump at detach.
        assert!(
            triggers.len() >= 4,
            "{fixture_name}: {} triggers",
            triggers.len()
        );
        assert!(
            triggers.iter().all(
                |t| t.s("method") == "pidfd" && ["interval", "detach"].contains(&t.s("reason"))
            ),
            "{triggers:?}"
        );
        // (The detach-time dump joins an interval signal still unanswered: no trigger of its own.)
        assert_eq!(
            ends.len(),
            triggers.len(),
            "{fixture_name}: one dump per signal"
        );
        assert_eq!(
            arts.len(),
            triggers.len(),
            "{fixture_name}: one artifact per dump"
        );
        assert!(
            of_kind(&events, "lost").is_empty(),
            "{:?}",
            of_kind(&events, "lost")
        );

        let tools = llvm_tools(fixture_name);
        let target_file = std::fs::read(&profile).unwrap();
        for (meta, data) in &arts {
            assert_eq!(meta["valid"], true, "{meta}");
            assert_eq!(meta["trigger"], "signal");
            assert_eq!(meta["runtime"], "llvm");
            assert_eq!(meta["pid"].as_u64(), Some(target.pid() as u64));
            assert_eq!(meta["bytes"].as_u64(), Some(data.len() as u64));
            let expected_version = raw_profile_version(tools.major);
            assert_eq!(meta["format"]["version"].as_u64(), Some(expected_version));
            // Exactly the bytes this dump appended to the target's file.
            let off = meta["source"]["offset"].as_u64().unwrap() as usize;
            assert_eq!(&target_file[off..off + data.len()], &data[..], "{meta}");
            assert_eq!(meta["source"]["located_by"], "kernel");
            assert!(out.join(meta["module"]["copy"].as_str().unwrap()).is_file());
            let file = out
                .join(format!("{}-{}", pid, meta["comm"].as_str().unwrap()))
                .join(meta["file"].as_str().unwrap());
            assert_llvm_reads(&tools, &file);
        }
        // Consecutive dumps of a plain file name sit end to end in it.
        for pair in arts.windows(2) {
            let a = &pair[0].0;
            let b = &pair[1].0;
            assert_eq!(
                a["source"]["offset"].as_u64().unwrap() + a["bytes"].as_u64().unwrap(),
                b["source"]["offset"].as_u64().unwrap()
            );
        }
        let session = read_json(&out.join("session.json"));
        assert_eq!(
            session["counters"]["artifacts"].as_u64(),
            Some(arts.len() as u64)
        );
        assert!(alive(target.pid()), "{fixture_name} must survive");
        target.child.kill().ok();
    }
}

#[test]
fn dumps_the_target_makes_on_its_own_and_at_exit_are_collected_without_triggering() {
    require_root();
    let Running {
        tmp: _tmp,
        mut target,
        pid,
        profile,
        out,
    } = run_fixture(
        "attach-self",
        "llvm-rust-target",
        &["--self-dump-ms", "300"],
    );
    let mut covobs = attach(&["--pid", &pid.to_string(), "--out", out.to_str().unwrap()]);
    covobs.wait_event(T, "three self dumps", |e| {
        e.kind() == "artifact" && e.u("seq") == 3
    });
    // SIGTERM: the target returns from main and the runtime's atexit dump runs.
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    // The only target exited: covobs ends by itself.
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    assert!(
        of_kind(&events, "trigger").is_empty(),
        "covobs triggered nothing"
    );
    let arts = artifacts_with_data(&out);
    let triggers: Vec<&str> = arts
        .iter()
        .map(|(m, _)| m["trigger"].as_str().unwrap())
        .collect();
    assert!(triggers.len() >= 4, "{triggers:?}");
    assert_eq!(
        triggers.last(),
        Some(&"exit"),
        "the last dump is the exit-time one: {triggers:?}"
    );
    assert!(
        triggers[..triggers.len() - 1].iter().all(|t| *t == "self"),
        "{triggers:?}"
    );
    assert!(arts.iter().all(|(m, _)| m["valid"] == true));
    // The target's own file holds exactly those dumps, end to end from the first one covobs saw
    // (the target may have dumped once before covobs attached).
    let file = std::fs::read(&profile).unwrap();
    let first = arts[0].0["source"]["offset"].as_u64().unwrap() as usize;
    let total: usize = arts.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(first + total, file.len());
    let mut at = first;
    for (meta, data) in &arts {
        assert_eq!(meta["source"]["offset"].as_u64(), Some(at as u64));
        assert_eq!(&file[at..at + data.len()], &data[..]);
        at += data.len();
    }
}

#[test]
fn a_target_without_a_handler_is_refused_and_stays_alive() {
    require_root();
    let Running {
        tmp: _tmp,
        mut target,
        pid,
        out,
        ..
    } = run_fixture("attach-nohandler", "llvm-c-target", &["--no-handler"]);
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "200ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(covobs.wait(T).code(), Some(2));
    let err = covobs.stderr();
    assert!(err.contains("no handler for SIGUSR2"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists(), "a refused attach leaves no output directory");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "the target must not have been signalled");
    assert_eq!(target.child.try_wait().unwrap(), None);
}

#[test]
fn a_target_killed_in_the_middle_of_a_dump_yields_a_lost_event_not_a_corrupt_artifact() {
    require_root();
    let tmp = TempDir::new("attach-killed");
    let fifo = tmp.path().join("blocking.profraw");
    let out = tmp.path().join("out");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The runtime writes its profile into a pipe that nobody reads, with the smallest buffer: the
    // dump blocks in write(2) halfway through, like a dump into a stalled disk.
    let fifo_reader = fifo.clone();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(&fifo_reader).unwrap();
        // SAFETY: fcntl on a descriptor this thread owns.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::F_SETPIPE_SZ,
                4096,
            )
        };
        f
    });
    let target = start_fixture(
        "llvm-rust-target",
        &[],
        &[("LLVM_PROFILE_FILE", fifo.to_str().unwrap())],
        tmp.path(),
    );
    let _keep_open = reader.join().unwrap();
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A quarter of the pipe is already taken: the runtime's first write (4 KiB) cannot finish.
    let mut filler = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut filler, &[0u8; 1024]).unwrap();
    let pid = target.pid();
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--once",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "the dump to start", |e| e.kind() == "dump_start");
    // Give the runtime time to fill the pipe and block, then kill the target mid-dump.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        covobs.events().iter().all(|e| e.kind() != "dump_end"),
        "the dump must still be running"
    );
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let lost = covobs.wait_event(T, "a lost event for the dump", |e| {
        e.kind() == "lost" && e.s("reason").contains("middle of a")
    });
    assert_eq!(lost.u("pid"), pid as u64);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    assert!(
        artifacts_with_data(&out).is_empty(),
        "no partial profile may be kept as an artifact"
    );
    drop(target);
}

#[test]
fn covobs_killed_with_sigkill_leaves_the_target_running_and_no_probe_behind() {
    require_root();
    let Running {
        tmp,
        target,
        pid,
        profile,
        ..
    } = run_fixture("attach-sigkill", "llvm-c-target", &[]);
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "300ms",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    covobs.wait_event(T, "a first artifact", |e| e.kind() == "artifact");
    let ids = covobs.bpf_ids();
    assert!(
        ids.programs.len() >= 10 && ids.links.len() >= 9,
        "tracepoints, dump uprobes and the exit probe (the syscall tracepoints are loaded, attached only in windows): {ids:?}"
    );
    covobs.signal(libc::SIGKILL);
    covobs.wait(T);
    assert_all_freed(&ids);
    assert!(alive(pid));
    // The target still dumps when asked, now with nothing probing it.
    let before = std::fs::metadata(&profile).unwrap().len();
    // SAFETY: kill on our own child, with a handled signal.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&profile).unwrap().len() == before {
        assert!(Instant::now() < deadline, "the target stopped dumping");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(pid));
    drop(target);
}

#[test]
fn covobs_dump_asks_a_running_attach_and_answers_with_the_artifact() {
    require_root();
    let Running {
        tmp: _tmp,
        target,
        pid,
        out,
        ..
    } = run_fixture("attach-ondemand", "llvm-rust-target", &[]);
    let pid = pid.to_string();
    let mut covobs = attach(&["--pid", &pid, "--out", out.to_str().unwrap()]);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let answer = run_ok(Command::new(covobs_bin()).args(["dump", "--pid", &pid, "--json"]));
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let files = answer["artifacts"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{answer}");
    let file = out.join(files[0].as_str().unwrap());
    assert!(file.is_file(), "{}", file.display());
    assert_llvm_reads(&llvm_tools("llvm-rust-target"), &file);

    // Nobody watches that pid: a clear error, exit 2.
    let other = Command::new(covobs_bin())
        .args(["dump", "--pid", "999999999"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("no running `covobs attach` watches"));

    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    // The detach-time dump came after the requested one.
    let arts = artifacts_with_data(&out);
    assert_eq!(arts.len(), 2);
    drop(target);
}

#[test]
fn a_dump_that_never_comes_is_reported_after_the_timeout() {
    require_root();
    let Running {
        tmp: _tmp,
        target,
        pid,
        out,
        ..
    } = run_fixture("attach-timeout", "llvm-c-target", &[]);
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--dump-timeout",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    // A stopped target cannot run its handler: the signal stays pending.
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let answer = Command::new(covobs_bin())
        .args(["dump", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(answer.status.code(), Some(2), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer.stderr).contains("timed out"),
        "{answer:?}"
    );
    let lost = covobs.wait_event(T, "the lost dump", |e| e.kind() == "lost");
    assert!(
        lost.s("reason").contains("no llvm dump started within 1s"),
        "{lost}"
    );
    // Once resumed, the pending signal is handled: the dump arrives late, and is collected.
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    covobs.wait_event(T, "the late artifact", |e| e.kind() == "artifact");
    covobs.signal(libc::SIGTERM);
    assert!(covobs.wait(T).success());
    drop(target);
}

#[test]
fn thread_choices_that_cannot_work_are_refused() {
    require_root();
    let tmp = TempDir::new("attach-thread");
    let target = start_fixture("llvm-rust-target", &[], &[], tmp.path());
    let pid = target.pid().to_string();
    for (thread, needle) in [
        ("ocaml", "runs no OCaml runtime"),
        ("1", "is not a thread of process"),
    ] {
        let out = tmp.path().join(format!("out-{thread}"));
        let mut covobs = attach(&[
            "--pid",
            &pid,
            "--thread",
            thread,
            "--once",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(covobs.wait(T).code(), Some(2), "--thread {thread}");
        let err = covobs.stderr();
        assert!(err.contains(needle), "--thread {thread}: {err}");
        assert!(!out.exists());
    }
    assert!(alive(target.pid()));
}

#[test]
fn by_name_follows_a_restarted_target() {
    require_root();
    let tmp = TempDir::new("attach-restart");
    let name = unique_name("cva");
    let bin = copy_as(&fixture("llvm-c-target"), tmp.path(), &name);
    let out = tmp.path().join("out");
    let env = [("LLVM_PROFILE_FILE", tmp.path().join("%p.profraw"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
    let mut first = start_program(&bin, &[], &env, tmp.path());
    let mut covobs = attach(&[
        "--name",
        &name,
        "--interval",
        "400ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "an artifact of the first process", |e| {
        e.kind() == "artifact" && e.u("pid") == first.pid() as u64
    });
    first.child.kill().unwrap();
    first.wait();
    let second = start_program(&bin, &[], &env, tmp.path());
    covobs.wait_event(T, "an artifact of the restarted process", |e| {
        e.kind() == "artifact" && e.u("pid") == second.pid() as u64
    });
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let arts = artifacts_with_data(&out);
    let pids: std::collections::BTreeSet<u64> = arts
        .iter()
        .map(|(m, _)| m["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(arts.iter().all(|(m, _)| m["valid"] == true));
    let dirs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&name[..name.len().min(15)]))
        })
        .collect();
    assert_eq!(
        dirs.len(),
        2,
        "one artifact directory per process: {dirs:?}"
    );
    drop(second);
}

#[test]
fn syscall_tracepoints_are_attached_only_around_the_dumps_covobs_asks_for() {
    require_root();
    let Running {
        tmp: _tmp,
        target,
        pid,
        out,
        ..
    } = run_fixture("attach-window", "llvm-c-target", &[]);
    let pid = pid.to_string();
    let mut covobs = attach(&["--pid", &pid, "--out", out.to_str().unwrap()]);
    covobs.wait_event(T, "runtime_found", |e| e.kind() == "runtime_found");
    let idle = covobs.bpf_ids();
    assert!(!idle.programs.is_empty(), "covobs' BPF programs: {idle:?}");
    // An attach that is stuck (its socket takes connections, nobody answers) does not hold up
    // the one that watches the target: with a 600 s timeout, a client that waited for it would
    // not be back within T.
    let stuck_path = PathBuf::from(format!(
        "/run/covobs/attach-0-stuck-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&stuck_path);
    let stuck = std::os::unix::net::UnixListener::bind(&stuck_path).expect("stuck socket");
    // The links covobs holds, seen every few ms while the dump is asked for and collected.
    let covobs_pid = covobs.pid();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = std::thread::spawn({
        let watching = watching.clone();
        move || {
            let mut most = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let now = bpf_ids_of(covobs_pid).links;
                if now.len() > most.len() {
                    most = now;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        }
    });
    let mut dump = Command::new(covobs_bin())
        .args(["dump", "--pid", &pid, "--timeout", "600s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("covobs dump");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = dump.try_wait().expect("covobs dump") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = dump.kill();
            panic!("covobs dump was held up by the stuck attach");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "covobs dump: {status}");
    drop(stuck);
    let _ = std::fs::remove_file(&stuck_path);
    // The dump was located by the kernel, and the window closed again after it.
    let art = covobs.wait_event(T, "the artifact", |e| e.kind() == "artifact");
    assert_eq!(art.s("trigger"), "signal");
    let meta = artifacts_with_data(&out);
    assert_eq!(meta[0].0["source"]["located_by"], "kernel", "{}", meta[0].0);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let during = seen.join().expect("watcher");
    let added: Vec<u32> = during
        .iter()
        .filter(|l| !idle.links.contains(l))
        .copied()
        .collect();
    assert!(
        !added.is_empty(),
        "no link was added around the dump: idle {idle:?}, during {during:?}"
    );
    // The window lingers a second after the last dump, then closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = covobs.bpf_ids();
    while after.links.iter().any(|l| added.contains(l)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = covobs.bpf_ids();
    }
    assert_eq!(
        idle.links, after.links,
        "the links added around the dump ({added:?}) stayed"
    );
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success());
    drop(target);
}

#[test]
fn file_tracking_always_locates_the_targets_own_dumps_in_the_kernel_too() {
    require_root();
    let Running {
        tmp: _tmp,
        target,
        pid,
        out,
        ..
    } = run_fixture(
        "attach-always",
        "llvm-rust-target",
        &["--self-dump-ms", "250"],
    );
    let pid = pid.to_string();
    let mut covobs = attach(&[
        "--pid",
        &pid,
        "--file-tracking",
        "always",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "two self dumps", |e| {
        e.kind() == "artifact" && e.u("seq") == 2
    });
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success());
    let arts = artifacts_with_data(&out);
    let own: Vec<&Value> = arts
        .iter()
        .map(|(m, _)| m)
        .filter(|m| m["trigger"] == "self")
        .collect();
    assert!(own.len() >= 2);
    assert!(
        own.iter().all(|m| m["source"]["located_by"] == "kernel"),
        "{own:?}"
    );
    assert_eq!(
        read_json(&out.join("session.json"))["file_tracking"],
        "syscall_always"
    );
    drop(target);
}

/// Every file under `dir` (path relative to it -> text), without the lines that say when it was
/// written.
fn report_files(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("generated") && !l.contains("timestamp="))
                .collect();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), kept.join("\n"));
        }
    }
    out
}

#[test]
fn the_end_report_continues_the_live_coverage_and_equals_a_report_of_the_directory() {
    require_root();
    let Running {
        tmp: _tmp,
        mut target,
        pid,
        out,
        ..
    } = run_fixture(
        "attach-live-report",
        "llvm-rust-target",
        &["--self-dump-ms", "300"],
    );
    // With its report (no --no-report), and -v for the line that says where it came from.
    let mut covobs = Covobs::start(&[
        "-v",
        "attach",
        "--json",
        "--pid",
        &pid.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "three self dumps", |e| {
        e.kind() == "artifact" && e.u("seq") == 3
    });
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    target.wait();
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let stderr = covobs.stderr();
    assert!(
        stderr.contains("the report continues the live coverage"),
        "the end report was not the live coverage's: {stderr}"
    );
    let live = report_files(&out.join("report"));
    assert!(
        live.contains_key(Path::new("coverage.lcov")) && live.len() > 3,
        "{:?}",
        live.keys()
    );
    let arts = artifacts(&out).len();
    assert!(arts >= 4, "{arts} artifacts");
    // The same directory reported on its own, afterwards.
    let again = Command::new(covobs_bin())
        .arg("report")
        .arg(&out)
        .output()
        .expect("covobs report");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let fresh = report_files(&out.join("report"));
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>()
    );
    for (file, text) in &live {
        assert!(
            text == &fresh[file],
            "{}: the live report differs from `covobs report` of the directory",
            file.display()
        );
    }
}
