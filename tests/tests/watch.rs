//! `covobs watch` against real multi-threaded processes, as root, with the real eBPF programs.
use std::{path::Path, process::Command, time::Duration};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn threads_target() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_threads-target"))
}

/// The target's answer to `spawn NAME`: the new thread's tid.
fn spawn_thread(target: &mut Driven, name: &str) -> u64 {
    let answer = target.ask(&format!("spawn {name}"));
    let tid = answer
        .strip_prefix(&format!("spawned {name} "))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    assert!(tid > 0);
    tid
}

/// The thread and signal events of one tid, reduced to comparable tuples.
fn thread_story(events: &[Value], pid: u64, tid: u64) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.u("pid") == pid && e.u("tid") == tid)
        .filter_map(|e| match e.kind() {
            "thread_start" => Some(format!("start by {}", e.u("parent_tid"))),
            "thread_rename" => Some(format!("rename {}", e.s("name"))),
            "thread_exit" => Some(format!("exit {}", e.s("name"))),
            "signal_generate" => Some(format!(
                "generate {} from {}/{} group={} {}",
                e.s("signal"),
                e.u("sender_pid"),
                e.u("sender_tid"),
                e["group"],
                e.s("result")
            )),
            "signal_deliver" => Some(format!(
                "deliver {} handler={}",
                e.s("signal"),
                if e.s("handler") == "default" {
                    "default"
                } else {
                    "set"
                }
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_exact_thread_and_signal_events_with_their_tids() {
    require_root();
    let dir = TempDir::new("watch-exact");
    let name = unique_name("cvw");
    let bin = copy_as(threads_target(), dir.path(), &name);
    let mut target = Driven::start(&mut Command::new(&bin));
    let pid = target.pid() as u64;
    assert_eq!(target.line(), format!("ready {pid}"));

    let mut covobs = Covobs::start(&["watch", "--pid", &pid.to_string(), "--json"]);
    let first = covobs.wait_event(T, "the target event", |e| e.kind() == "target");
    assert_eq!(first.u("pid"), pid);
    assert_eq!(first.s("reason"), "pid");
    assert_eq!(first["threads"][0]["tid"].as_u64(), Some(pid));
    assert_eq!(first["threads"][0]["name"].as_str(), Some(name.as_str()));

    let alpha = spawn_thread(&mut target, "alpha");
    let beta = spawn_thread(&mut target, "beta");
    target.ask(&format!("kill {beta} 12"));
    target.ask(&format!("kill {alpha} 10"));
    target.ask("stop alpha");
    covobs.wait_event(T, "alpha's exit", |e| {
        e.kind() == "thread_exit" && e.u("tid") == alpha
    });
    covobs.wait_event(T, "SIGUSR2 delivered on beta", |e| {
        e.kind() == "signal_deliver" && e.u("tid") == beta
    });
    target.send("quit");
    assert!(target.wait().success());
    covobs.wait_event(T, "process_exit", |e| {
        e.kind() == "process_exit" && e.u("pid") == pid
    });
    // The only target is gone: covobs ends by itself.
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());

    let events = covobs.events().to_vec();
    assert_eq!(
        thread_story(&events, pid, alpha),
        [
            format!("start by {pid}"),
            "rename alpha".to_owned(),
            format!("generate SIGUSR1 from {pid}/{pid} group=false delivered"),
            "deliver SIGUSR1 handler=set".to_owned(),
            "exit alpha".to_owned(),
        ]
    );
    assert_eq!(
        thread_story(&events, pid, beta),
        [
            format!("start by {pid}"),
            "rename beta".to_owned(),
            format!("generate SIGUSR2 from {pid}/{pid} group=false delivered"),
            "deliver SIGUSR2 handler=set".to_owned(),
            // The main thread returned: exit_group kills the other threads with SIGKILL.
            "deliver SIGKILL handler=default".to_owned(),
            "exit beta".to_owned(),
        ]
    );
    assert_eq!(
        thread_story(&events, pid, pid),
        [format!("exit {name}")],
        "the main thread received no signal"
    );
    // In-kernel filtering: nothing about any other process reached covobs.
    let others: Vec<&Value> = events.iter().filter(|e| e.u("pid") != pid).collect();
    assert!(
        others.is_empty(),
        "events about other processes: {others:?}"
    );
    // Every event carries the common fields, in time order.
    let mut last = 0;
    for e in &events {
        for field in ["ts_ns", "pid", "tid"] {
            assert!(e[field].is_u64(), "{field} missing in {e}");
        }
        assert!(e.u("ts_ns") >= last, "events out of order at {e}");
        last = e.u("ts_ns");
    }
}

#[test]
fn by_name_picks_up_a_restarted_process_and_one_started_later() {
    require_root();
    let dir = TempDir::new("watch-name");
    let name = unique_name("cvn");
    let bin = copy_as(threads_target(), dir.path(), &name);
    let mut first = Driven::start(&mut Command::new(&bin));
    let pid1 = first.pid() as u64;
    first.line();

    let mut covobs = Covobs::start(&["watch", "--name", &name, "--json"]);
    let t1 = covobs.wait_event(T, "the first process", |e| e.kind() == "target");
    assert_eq!((t1.u("pid"), t1.s("reason")), (pid1, "name"));

    // The daemon dies and is restarted under the same name.
    let _ = first.child.kill();
    first.wait();
    covobs.wait_event(T, "the first process's exit", |e| {
        e.kind() == "process_exit" && e.u("pid") == pid1
    });
    let mut second = Driven::start(&mut Command::new(&bin));
    let pid2 = second.pid() as u64;
    second.line();
    let exec = covobs.wait_event(T, "the restarted process's exec", |e| {
        e.kind() == "process_exec" && e.u("pid") == pid2
    });
    assert_eq!(exec.s("filename"), bin.to_str().unwrap());
    let t2 = covobs.wait_event(T, "the restarted process", |e| {
        e.kind() == "target" && e.u("pid") == pid2
    });
    assert_eq!(t2.s("reason"), "exec");
    // Its threads are followed like the first one's.
    let tid = spawn_thread(&mut second, "late");
    covobs.wait_event(T, "a thread of the restarted process", |e| {
        e.kind() == "thread_rename" && e.u("tid") == tid && e.s("name") == "late"
    });

    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
}

#[test]
fn waits_for_a_name_only_when_asked() {
    require_root();
    let dir = TempDir::new("watch-wait");
    let name = unique_name("cvq");
    let bin = copy_as(threads_target(), dir.path(), &name);

    let mut refused = Covobs::start(&["watch", "--name", &name, "--json"]);
    assert_eq!(refused.wait(T).code(), Some(2));
    let err = refused.stderr();
    assert!(err.contains("no process named"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    let mut covobs = Covobs::start(&["watch", "--name", &name, "--wait", "--json"]);
    // covobs says it waits (stderr) once its probes are in place.
    let started = std::time::Instant::now();
    while !covobs.stderr().contains("waiting") {
        assert!(started.elapsed() < T, "covobs never said it waits");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut target = Driven::start(&mut Command::new(&bin));
    let pid = target.pid() as u64;
    target.line();
    let t = covobs.wait_event(T, "the process that appeared", |e| e.kind() == "target");
    assert_eq!((t.u("pid"), t.s("reason")), (pid, "exec"));
    covobs.signal(libc::SIGTERM);
    assert!(covobs.wait(T).success());
}

#[test]
fn a_long_name_matches_the_executable_not_just_the_kernels_15_bytes() {
    require_root();
    let dir = TempDir::new("watch-long");
    let base = unique_name("cvl");
    let wanted = format!("{base}-longname-of-it-wanted");
    let decoy = format!("{base}-longname-of-it-decoy");
    assert_eq!(
        wanted[..15],
        decoy[..15],
        "both share the kernel's 15-byte comm"
    );
    let wanted_bin = copy_as(threads_target(), dir.path(), &wanted);
    let decoy_bin = copy_as(threads_target(), dir.path(), &decoy);

    let mut covobs = Covobs::start(&["watch", "--name", &wanted, "--wait", "--json"]);
    let started = std::time::Instant::now();
    while !covobs.stderr().contains("waiting") {
        assert!(started.elapsed() < T, "covobs never said it waits");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut d = Driven::start(&mut Command::new(&decoy_bin));
    d.line();
    let mut w = Driven::start(&mut Command::new(&wanted_bin));
    w.line();
    let t = covobs.wait_event(T, "the wanted process", |e| e.kind() == "target");
    assert_eq!(t.u("pid"), w.pid() as u64);
    // The decoy's own thread activity must not show up.
    let tid = spawn_thread(&mut d, "decoythread");
    spawn_thread(&mut w, "wantedthread");
    covobs.wait_event(T, "the wanted process's thread", |e| {
        e.kind() == "thread_rename" && e.s("name") == "wantedthread"
    });
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    assert!(
        events
            .iter()
            .all(|e| e.u("pid") != d.pid() as u64 && e.u("tid") != tid),
        "the decoy leaked into the stream: {events:?}"
    );
}

#[test]
fn leaves_no_program_or_link_behind_on_any_exit() {
    require_root();
    for how in ["duration", "SIGINT", "SIGTERM", "SIGKILL"] {
        let mut target = Driven::start(&mut Command::new(threads_target()));
        target.line();
        let pid = target.pid().to_string();
        let mut args = vec!["watch", "--pid", &pid, "--json"];
        if how == "duration" {
            args.extend(["--duration", "2s"]);
        }
        let mut covobs = Covobs::start(&args);
        covobs.wait_event(T, "the target event", |e| e.kind() == "target");
        let ids = covobs.bpf_ids();
        assert!(
            ids.programs.len() >= 6 && ids.links.len() >= 6,
            "{how}: covobs should hold its 6 tracepoint programs and links: {ids:?}"
        );
        match how {
            "SIGINT" => covobs.signal(libc::SIGINT),
            "SIGTERM" => covobs.signal(libc::SIGTERM),
            "SIGKILL" => covobs.signal(libc::SIGKILL),
            _ => {}
        }
        let status = covobs.wait(T);
        if how != "SIGKILL" {
            assert!(status.success(), "{how}: {status:?} {}", covobs.stderr());
        }
        assert_all_freed(&ids);
        // The target is untouched.
        assert_eq!(target.child.try_wait().expect("try_wait"), None, "{how}");
        assert!(target.ask("spawn still-alive").starts_with("spawned"));
    }
}

/// A thread name is the target's to choose, escape sequences included: the terminal view shows
/// them escaped, so a target cannot drive the terminal of whoever reads covobs' output.
#[test]
fn names_with_terminal_escapes_are_shown_escaped() {
    require_root();
    let dir = TempDir::new("watch-escapes");
    let bin = copy_as(threads_target(), dir.path(), &unique_name("cve"));
    let mut target = Driven::start(&mut Command::new(&bin));
    let pid = target.pid();
    assert_eq!(target.line(), format!("ready {pid}"));
    let mut covobs = Covobs::start(&["watch", "--pid", &pid.to_string()]);
    let deadline = std::time::Instant::now() + T;
    while !covobs.stderr().contains(" watching ") {
        assert!(std::time::Instant::now() < deadline, "{}", covobs.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // ESC [2J clears the screen; ESC ]0; ... BEL would retitle the terminal.
    let tid = spawn_thread(&mut target, "a\u{1b}[2Jb\u{1b}]0;x\u{7}");
    let shown = r"a\u{1b}[2Jb\u{1b}]0;x\u{7}";
    while !covobs.stderr().contains(shown) {
        assert!(std::time::Instant::now() < deadline, "{}", covobs.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    covobs.signal(libc::SIGINT);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let out = covobs.stderr();
    assert!(out.contains(&format!("{tid}")), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    target.send("quit");
}
