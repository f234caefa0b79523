//! Stopping under load, and covobs' own failures under load. 20 targets each dumping on their own
//! every 10 ms (2,000 dumps a second): `--duration`, then SIGTERM mid-run, then a covobs whose
//! descriptors run out (an RLIMIT_NOFILE hard limit of 160 set before its exec: about what it
//! needs with 20 targets, so opens fail here and there while every target is alive). Each run: exit 0,
//! every dump_end is an artifact or a `lost` event, no `lost` reason says a target is gone while
//! all are alive, and, out of descriptors, the reasons name the failure. Figures printed (the
//! time to exit is a figure: the bound is the documented one, not asserted on a shared machine).
use std::{
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use covobs_tests::{
    Covobs, Driven, EventExt, TempDir, alive, copy_as, covobs_bin, fixture, of_kind, read_json,
    require_root, start_program, unique_name,
};
use serde_json::Value;

const TARGETS: usize = 20;

enum Stop {
    Duration(u64),
    Sigterm(u64),
    /// SIGTERM, then a second one 1.5 s later: the backlog is given up at once.
    SigtermTwice(u64),
}

fn run(tag: &str, stop: Stop, nofile: Option<u64>) -> Vec<Value> {
    let t0 = Instant::now();
    let tmp = TempDir::new(tag);
    let name = unique_name("stop");
    let exe = copy_as(&fixture("llvm-rust-target"), tmp.path(), &name);
    let out = tmp.path().join("out");
    let mut targets: Vec<Driven> = (0..TARGETS)
        .map(|i| {
            let profile = tmp.path().join(format!("t{i}.profraw"));
            start_program(
                &exe,
                &["--self-dump-ms", "10"],
                &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
                tmp.path(),
            )
        })
        .collect();
    let targets_started = t0.elapsed();
    let mut cmd = Command::new(covobs_bin());
    cmd.args(["attach", "--json", "--no-report", "--name", &name, "--out"])
        .arg(&out);
    match stop {
        Stop::Duration(s) => cmd.arg("--duration").arg(format!("{s}s")),
        Stop::Sigterm(_) | Stop::SigtermTwice(_) => cmd.arg("--duration").arg("600s"),
    };
    if let Some(n) = nofile {
        // Also ask for dumps: the triggers need descriptors too (pidfds, /proc reads).
        cmd.args(["--interval", "100ms"]);
        // SAFETY: setrlimit is async-signal-safe; run in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut covobs = Covobs::spawn(cmd);
    let stop_at = match stop {
        Stop::Duration(s) | Stop::Sigterm(s) | Stop::SigtermTwice(s) => s,
    };
    let signalled = match stop {
        Stop::Duration(_) => None,
        Stop::Sigterm(s) | Stop::SigtermTwice(s) => {
            std::thread::sleep(Duration::from_secs(s));
            covobs.signal(libc::SIGTERM);
            let at = Instant::now();
            if matches!(stop, Stop::SigtermTwice(_)) {
                std::thread::sleep(Duration::from_millis(1500));
                covobs.signal(libc::SIGTERM);
            }
            Some(at)
        }
    };
    // A hang detector, far above the documented bound (2 x --dump-timeout 10 s + 3 s).
    let status = covobs.wait(Duration::from_secs(120));
    let exited = Instant::now();
    let covobs_ran = exited - started;
    let stderr = covobs.stderr();
    assert!(status.success(), "{status}: {stderr}");
    let all_alive = targets.iter().all(|t| alive(t.pid()));
    assert!(all_alive, "the targets are unharmed");
    for t in &mut targets {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(t.pid(), libc::SIGKILL) };
        t.wait();
    }

    let events: Vec<Value> = std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dump_ends = of_kind(&events, "dump_end").len() as u64;
    let artifacts = of_kind(&events, "artifact").len() as u64;
    let lost = of_kind(&events, "lost");
    // Losses of a dump that ended (not of a trigger, nor of a dump whose end covobs stopped
    // before seeing, nor an artifact written and then found invalid: that one has both events).
    let dump_lost: u64 = lost
        .iter()
        .filter(|l| {
            (l.s("what") == "llvm" || l.s("what") == "collection")
                && !l.s("reason").contains("while it ran")
                && !l.s("reason").contains(" is not valid ")
        })
        .map(|l| l.u("count"))
        .sum();
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    for l in &lost {
        let shape: String = l
            .s("reason")
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        *reasons.entry(shape).or_default() += l.u("count");
    }
    let session = read_json(&out.join("session.json"));
    let stop_to_exit = match signalled {
        Some(at) => exited - at,
        // --duration counts from the probes being in place: this is an upper bound.
        None => (exited - started).saturating_sub(Duration::from_secs(stop_at)),
    };
    println!(
        "{tag}: {TARGETS} targets, {dump_ends} dump_end, {artifacts} artifacts, {} lost ({dump_lost} of ended dumps), stop to exit {:.2} s{}, descriptors peak {} (limit {}), RSS peak {:.1} MB",
        lost.iter().map(|l| l.u("count")).sum::<u64>(),
        stop_to_exit.as_secs_f64(),
        if signalled.is_some() {
            ""
        } else {
            " (at most)"
        },
        session["resources"]["descriptors_peak"],
        session["resources"]["descriptor_limit"],
        session["resources"]["rss_peak_bytes"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6,
    );
    println!(
        "  (test time: targets started in {:.1} s, covobs ran {:.1} s, {:.1} s in all)",
        targets_started.as_secs_f64(),
        covobs_ran.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    for (r, n) in &reasons {
        println!("  lost {n:>6}: {r}");
    }
    assert!(dump_ends > 0);
    assert_eq!(
        dump_ends,
        artifacts + dump_lost,
        "every dump_end is an artifact or a lost event"
    );
    let false_gone: Vec<_> = lost
        .iter()
        .filter(|l| l.s("reason").contains("gone") || l.s("reason").contains("exited"))
        .collect();
    assert!(
        false_gone.is_empty(),
        "every target was alive: {false_gone:?}"
    );
    events
}

#[test]
fn duration_and_sigterm_end_in_bounded_time_with_every_dump_accounted() {
    require_root();
    run("stop-duration", Stop::Duration(3), None);
    run("stop-sigterm", Stop::Sigterm(2), None);
    let events = run("stop-sigterm-twice", Stop::SigtermTwice(2), None);
    let given_up: u64 = of_kind(&events, "lost")
        .iter()
        .filter(|l| {
            l.s("reason")
                .contains("covobs stopped before collecting it")
        })
        .map(|l| l.u("count"))
        .sum();
    println!("  the second SIGTERM gave up {given_up} queued dumps, each a lost event");
}

#[test]
fn out_of_descriptors_is_said_to_be_covobs_failure_never_the_targets() {
    require_root();
    let events = run("stop-emfile", Stop::Duration(3), Some(160));
    let lost = of_kind(&events, "lost");
    assert!(
        lost.iter()
            .any(|l| l.s("reason").contains("Too many open files")),
        "covobs ran out of descriptors and said so"
    );
    // A failure of covobs is worded as one: no reason blames the target for EMFILE.
    for l in &lost {
        let r = l.s("reason");
        if r.contains("Too many open files") {
            assert!(
                r.contains("covobs' own failure") || r.contains("covobs' output directory"),
                "{r}"
            );
        }
    }
}
