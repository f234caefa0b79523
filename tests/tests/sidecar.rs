//! covobs beside targets in other namespaces, built for real with unshare(1)/nsenter(1): covobs
//! inside a pod's PID namespace (as a sidecar with shareProcessNamespace), and a target in a mount
//! namespace of its own whose root filesystem exists nowhere on the host.
use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use covobs_tests::{ns::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Every artifact of a session: (metadata, bytes, its directory's name).
fn artifacts(out: &Path) -> Vec<(Value, Vec<u8>, String)> {
    covobs_tests::artifacts(out)
        .into_iter()
        .map(|a| {
            let dir = a
                .meta_path
                .parent()
                .and_then(Path::file_name)
                .expect("artifact dir");
            (a.meta.clone(), a.data(), dir.to_string_lossy().into_owned())
        })
        .collect()
}

/// The pid a fixture announces in its `... pid=N ready` line (its own getpid()).
fn announced_pid(line: &str) -> i32 {
    line.split("pid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Start a fixture inside the pod's namespace; returns it, its pid there and its host pid.
fn start_in_pod(pod: &PodNamespace, bin: &Path, profile: &Path, cwd: &Path) -> (Driven, i32, i32) {
    let mut cmd = pod.command(bin);
    cmd.env("LLVM_PROFILE_FILE", profile).current_dir(cwd);
    let mut app = Driven::start(&mut cmd);
    let ns_pid = announced_pid(&app.line());
    // nsenter forks the program into the namespace: its child is the app.
    let host_pid = wait_child(app.pid());
    assert_eq!(ns_pid_of(host_pid), ns_pid);
    assert_ne!(
        host_pid, ns_pid,
        "a new PID namespace numbers its processes from 1"
    );
    (app, ns_pid, host_pid)
}

#[test]
fn a_sidecar_in_the_pods_pid_namespace_reports_its_ids_and_signals_the_right_task() {
    require_root();
    let pod = PodNamespace::new();
    let tmp = TempDir::new("pidns");
    let name = unique_name("podapp");
    let bin = copy_as(&fixture("llvm-c-target"), tmp.path(), &name);
    let profile = tmp.path().join("app.profraw");
    let profile2 = tmp.path().join("app2.profraw");
    let decoy_profile = tmp.path().join("decoy.profraw");
    let decoy2_profile = tmp.path().join("decoy2.profraw");

    let (_app, ns_pid, host_pid) = start_in_pod(&pod, &bin, &profile, tmp.path());
    // A process with the same name on the host, outside the pod: not the sidecar's business.
    let decoy = start_program(
        &bin,
        &[],
        &[("LLVM_PROFILE_FILE", decoy_profile.to_str().unwrap())],
        tmp.path(),
    );

    // The sidecar: covobs in the pod's PID namespace, with the pod's /proc.
    let out = tmp.path().join("out");
    let mut cmd = pod.command(&covobs_bin());
    cmd.args([
        "attach",
        "--json",
        "--no-report",
        "--name",
        &name,
        "--interval",
        "700ms",
        "--duration",
        "5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut covobs = Covobs::spawn(cmd);
    let covobs_ns_pid = ns_pid_of(wait_child(covobs.pid()));
    covobs.wait_event(T, "the first trigger", |e| e.kind() == "trigger");
    // Started after attach: one more on the host (the kernel sees its exec and must drop it),
    // and one more in the pod (the kernel must pick it up, with its id in the pod).
    let decoy2 = start_program(
        &bin,
        &[],
        &[("LLVM_PROFILE_FILE", decoy2_profile.to_str().unwrap())],
        tmp.path(),
    );
    let (_app2, ns_pid2, host_pid2) = start_in_pod(&pod, &bin, &profile2, tmp.path());
    covobs.wait_event(T, "the second app adopted", |e| {
        e.kind() == "target" && e.u("pid") == ns_pid2 as u64
    });
    let status = covobs.wait(T);
    assert!(status.success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    if std::env::var_os("COVOBS_TEST_DEBUG").is_some() {
        for e in &events {
            eprintln!("{e}");
        }
    }

    // Only the pod's processes, by the pod's ids.
    let targets = of_kind(&events, "target");
    let pids: BTreeSet<u64> = targets.iter().map(|e| e.u("pid")).collect();
    assert_eq!(
        pids,
        BTreeSet::from([ns_pid as u64, ns_pid2 as u64]),
        "{targets:?}"
    );
    for e in &events {
        assert!(
            [0, ns_pid as u64, ns_pid2 as u64].contains(&e.u("pid")),
            "an event about a task outside the pod, or by a host id: {e}"
        );
    }
    let first = targets
        .iter()
        .find(|e| e.u("pid") == ns_pid as u64)
        .unwrap();
    assert_eq!(first.s("reason"), "name");
    let second = targets
        .iter()
        .find(|e| e.u("pid") == ns_pid2 as u64)
        .unwrap();
    assert_eq!(second.s("reason"), "exec");
    // Its threads, by their ids in the pod (what /proc/PID/task/*/status NSpid says).
    let listed: BTreeSet<u64> = first["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    let expected: BTreeSet<u64> = ns_tids(host_pid).iter().map(|(_, t)| *t as u64).collect();
    assert_eq!(
        listed, expected,
        "threads of {host_pid} by their ids in the pod"
    );
    let expected2: BTreeSet<u64> = ns_tids(host_pid2).iter().map(|(_, t)| *t as u64).collect();

    // Every signal went to the right task: the main thread, named by its id in the pod, by
    // covobs (whose id in the pod is the sender's), and ran the handler there.
    let triggers = of_kind(&events, "trigger");
    assert!(triggers.len() >= 6, "{triggers:?}");
    for pid in [ns_pid as u64, ns_pid2 as u64] {
        let sent = triggers.iter().filter(|t| t.u("pid") == pid).count();
        assert!(sent > 0, "nothing sent to {pid}");
        for t in triggers.iter().filter(|t| t.u("pid") == pid) {
            assert_eq!(
                t.u("tid"),
                pid,
                "the main thread, by its id in the pod: {t}"
            );
        }
        let delivered = events
            .iter()
            .filter(|e| {
                e.kind() == "signal_deliver"
                    && e.u("pid") == pid
                    && e.u("tid") == pid
                    && e.s("signal") == "SIGUSR2"
            })
            .count();
        assert_eq!(
            delivered, sent,
            "every signal to {pid} ran its handler there"
        );
    }
    let generated = of_kind(&events, "signal_generate");
    assert!(!generated.is_empty());
    for g in &generated {
        assert_eq!(g.u("sender_pid"), covobs_ns_pid as u64, "{g}");
    }
    for e in of_kind(&events, "dump_end") {
        let threads = if e.u("pid") == ns_pid as u64 {
            &expected
        } else {
            &expected2
        };
        assert!(threads.contains(&e.u("tid")), "{e}");
    }
    assert!(
        of_kind(&events, "lost").is_empty(),
        "{:?}",
        of_kind(&events, "lost")
    );

    // Each dump's exact bytes, in directories named by the pod's ids.
    let arts = artifacts(&out);
    assert_eq!(arts.len(), of_kind(&events, "dump_end").len());
    for (pid, file) in [(ns_pid, &profile), (ns_pid2, &profile2)] {
        let written = std::fs::read(file).unwrap();
        let mine: Vec<_> = arts
            .iter()
            .filter(|(m, _, _)| m["pid"].as_u64() == Some(pid as u64))
            .collect();
        assert!(!mine.is_empty(), "no artifact of {pid}");
        for (meta, data, dir) in mine {
            assert_eq!(meta["valid"], true, "{meta}");
            assert_eq!(dir, &format!("{pid}-{name}"));
            let off = meta["source"]["offset"].as_u64().unwrap() as usize;
            assert_eq!(&written[off..off + data.len()], &data[..], "{meta}");
        }
    }
    // The host processes with the same name never got a signal: they would have dumped (the
    // runtime only creates its file, empty, at start).
    assert!(alive(decoy.pid()) && alive(decoy2.pid()));
    for p in [&decoy_profile, &decoy2_profile] {
        assert_eq!(
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            0,
            "{}",
            p.display()
        );
    }

    let session = read_json(&out.join("session.json"));
    let pod_ns = std::fs::metadata(format!("/proc/{host_pid}/ns/pid"))
        .unwrap()
        .ino();
    assert_eq!(session["pid_namespace"]["initial"], false);
    assert_eq!(session["pid_namespace"]["inode"].as_u64(), Some(pod_ns));
    for t in session["targets"].as_array().unwrap() {
        assert_eq!(t["pid_in_own_namespace"], t["pid"], "{t}");
    }
}

#[test]
fn a_host_covobs_names_a_pod_process_by_its_host_id_and_expands_its_own_pid() {
    require_root();
    // From the host, a process in a pod is known by its host id; the files it names with %p carry
    // the id it has in the pod, and covobs expects them there.
    let pod = PodNamespace::new();
    let tmp = TempDir::new("pidns-host");
    let pattern = tmp.path().join("app-%p.profraw");
    let (_app, ns_pid, host_pid) =
        start_in_pod(&pod, &fixture("llvm-c-target"), &pattern, tmp.path());
    let written = tmp.path().join(format!("app-{ns_pid}.profraw"));
    let out = tmp.path().join("out");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--no-report",
        "--pid",
        &host_pid.to_string(),
        "--once",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(covobs.wait(T).success(), "{}", covobs.stderr());
    let events = covobs.events().to_vec();
    assert!(of_kind(&events, "lost").is_empty(), "{events:?}");
    let arts = artifacts(&out);
    assert_eq!(arts.len(), 1, "{events:?}");
    let (meta, data, dir) = &arts[0];
    assert_eq!(meta["pid"].as_u64(), Some(host_pid as u64));
    assert_eq!(dir, &format!("{host_pid}-llvm-c-target"));
    assert_eq!(meta["source"]["path"].as_str(), written.to_str());
    let file = std::fs::read(&written).unwrap();
    let off = meta["source"]["offset"].as_u64().unwrap() as usize;
    assert_eq!(&file[off..off + data.len()], &data[..]);
    let session = read_json(&out.join("session.json"));
    let target = &session["targets"][0];
    assert_eq!(target["pid_in_own_namespace"].as_u64(), Some(ns_pid as u64));
    assert_eq!(target["llvm_profile_file"].as_str(), written.to_str());
    assert_eq!(session["pid_namespace"]["initial"], true);
}

#[test]
fn a_target_with_its_own_root_filesystem_is_probed_triggered_and_collected_through_it() {
    require_root();
    for fixture_name in ["llvm-c-target", "llvm-shared-target"] {
        let tmp = TempDir::new("mntns");
        let unique = unique_name("covobs-rootfs-");
        let dir = format!("/opt/{unique}/bin");
        let at = format!("{dir}/{fixture_name}");
        // Paths that do not exist on the host: the binary's, and the data directory's.
        let data_dir = format!("/{unique}-data");
        assert!(!Path::new(&at).exists() && !Path::new(&data_dir).exists());
        let staging = tmp.path().join("staging");
        let lib = fixture("libcovshared.so");
        let extra: Vec<(&Path, String)> = if fixture_name == "llvm-shared-target" {
            vec![(lib.as_path(), format!("{dir}/libcovshared.so"))]
        } else {
            Vec::new()
        };
        let extra_refs: Vec<(&Path, &str)> = extra.iter().map(|(p, s)| (*p, s.as_str())).collect();
        let rootfs = Rootfs::assemble(&staging, &fixture(fixture_name), &at, &extra_refs);
        std::fs::create_dir_all(staging.join(format!("{unique}-data/out"))).unwrap();
        // An absolute symlink, meaningful only inside the target's root.
        std::os::unix::fs::symlink(
            format!("{data_dir}/out"),
            staging.join(format!("{unique}-data/link")),
        )
        .unwrap();
        let mount_point = tmp.path().join("root");
        std::fs::create_dir(&mount_point).unwrap();

        let mut cmd = rootfs.command(&mount_point, &at, &[]);
        cmd.env("LLVM_PROFILE_FILE", format!("{data_dir}/link/app.profraw"));
        let mut target = Driven::start(&mut cmd);
        let pid = target.pid();
        let line = target.line();
        assert!(line.ends_with(&format!("pid={pid} ready")), "{line}");
        // Nothing of the target's files is left on the host side.
        std::fs::remove_dir_all(&staging).unwrap();
        assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0);
        let target_root = PathBuf::from(format!("/proc/{pid}/root"));
        assert!(target_root.join(at.trim_start_matches('/')).is_file());

        let out = tmp.path().join("out");
        let mut covobs = Covobs::start(&[
            "attach",
            "--json",
            "--no-report",
            "--pid",
            &pid.to_string(),
            "--interval",
            "600ms",
            "--duration",
            "3s",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            covobs.wait(T).success(),
            "{fixture_name}: {}",
            covobs.stderr()
        );
        let events = covobs.events().to_vec();
        let found = of_kind(&events, "runtime_found");
        assert_eq!(found.len(), 1, "{fixture_name}: {found:?}");
        let module = if fixture_name == "llvm-shared-target" {
            format!("{dir}/libcovshared.so")
        } else {
            at.clone()
        };
        assert_eq!(
            found[0].s("module"),
            module,
            "the path as the target sees it"
        );
        assert!(
            of_kind(&events, "lost").is_empty(),
            "{:?}",
            of_kind(&events, "lost")
        );
        let triggers = of_kind(&events, "trigger");
        let arts = artifacts(&out);
        assert!(triggers.len() >= 4, "{fixture_name}: {triggers:?}");
        assert_eq!(
            arts.len(),
            triggers.len(),
            "{fixture_name}: one artifact per dump"
        );
        // The exact bytes each dump wrote, read back here through the target's root.
        let written = std::fs::read(target_root.join(format!("{unique}-data/out/app.profraw")))
            .expect("the target's profile, inside its root");
        let tools = llvm_tools(fixture_name);
        for (meta, data, dir) in &arts {
            assert_eq!(meta["valid"], true, "{meta}");
            assert_eq!(meta["trigger"], "signal");
            assert_eq!(
                meta["source"]["path"],
                format!("{data_dir}/link/app.profraw")
            );
            assert_eq!(meta["source"]["located_by"], "kernel");
            let off = meta["source"]["offset"].as_u64().unwrap() as usize;
            assert_eq!(&written[off..off + data.len()], &data[..], "{meta}");
            // The module copy was taken through the target's mappings.
            let copy = out.join(meta["module"]["copy"].as_str().unwrap());
            assert_eq!(meta["module"]["path"], module);
            let original = std::fs::read(target_root.join(module.trim_start_matches('/'))).unwrap();
            assert_eq!(std::fs::read(&copy).unwrap(), original);
            run_ok(
                Command::new(&tools.profdata)
                    .arg("show")
                    .arg(out.join(dir).join(meta["file"].as_str().unwrap())),
            );
        }
        assert!(alive(pid), "{fixture_name} must survive");
        target.child.kill().ok();
    }
}

#[test]
fn doctor_in_a_pod_namespace_says_attaching_works_there() {
    require_root();
    let pod = PodNamespace::new();
    let out = pod
        .command(&covobs_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("covobs doctor in the pod");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    let pidns = checks
        .iter()
        .find(|c| c["name"] == "PID namespace")
        .expect("a PID namespace check");
    assert_eq!(pidns["status"], "ok", "{pidns}");
    assert!(
        pidns["detail"].as_str().unwrap().contains("a container's"),
        "{pidns}"
    );
    // The self-test's record came back with covobs' thread id in the pod.
    let ring = checks.iter().find(|c| c["name"] == "ring buffer").unwrap();
    assert_eq!(ring["status"], "ok", "{ring}");
    let signal = checks
        .iter()
        .find(|c| c["name"] == "bpf_send_signal_thread")
        .unwrap();
    assert_eq!(signal["status"], "ok", "{signal}");
    // Both name the same thread: the one that fired the uprobe is the one the signal reached.
    let tid = |c: &serde_json::Value| -> u32 {
        let d = c["detail"].as_str().unwrap_or("");
        d.rsplit('(')
            .next()
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no thread id in {c}"))
    };
    assert_eq!(tid(ring), tid(signal), "{ring} {signal}");
    // A thread id of the pod's own PID namespace (its init is 1), not the host's.
    assert!((2..1000).contains(&tid(ring)), "{ring}");
}
