//! The container image of docs/deploy/Dockerfile, run for real by a Docker daemon the test starts
//! for itself (its own socket, data root and no networking, so nothing else on the machine is
//! touched): covobs as a sidecar in the PID namespace of an app container whose image holds only
//! an instrumented program and its C library, and covobs in the host's PID namespace.
//!
//! Both images are built here from local files (`FROM scratch`): no registry is needed.
//! The sidecar runs with the narrow privileges docs/deploy/covobs-sidecar.yaml lists as the
//! alternative to `privileged: true` (this Docker knows no CAP_BPF/CAP_PERFMON names:
//! CAP_SYS_ADMIN stands for them).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use covobs_tests::{
    ns::{self, Rootfs},
    *,
};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A dockerd of the test's own, stopped (with its containers) when dropped.
struct Dockerd {
    child: Child,
    dir: TempDir,
}

impl Dockerd {
    fn start() -> Self {
        let dir = TempDir::new("dockerd");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg(format!("--data-root={}", dir.path().join("data").display()))
            .arg(format!("--exec-root={}", dir.path().join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("dockerd.pid").display()
            ))
            .arg(format!(
                "--host=unix://{}",
                dir.path().join("docker.sock").display()
            ))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package docker.io, installed by ./dev setup)");
        let d = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = d
                .docker()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s: {}",
                d.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        )
        // The classic builder: FROM scratch and COPY need nothing more (no buildx plugin here).
        .env("DOCKER_BUILDKIT", "0");
        c
    }

    /// Run a docker command; its stdout, or a panic with what it said.
    fn ok(&self, args: &[&str]) -> String {
        run_ok(self.docker().args(args)).trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self
            .docker()
            .args(["ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = self.docker().args(["rm", "-f", id]).output();
        }
        // SAFETY: SIGTERM to the dockerd this test started: it unmounts its layers and stops.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until the session's events hold `n` artifacts.
fn wait_artifacts(events: &Path, n: usize, what: &str, d: &Dockerd, container: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while of_kind(&events_of(events), "artifact").len() < n {
        if Instant::now() > deadline {
            let logs = d.docker().args(["logs", container]).output().unwrap();
            panic!(
                "{what}: fewer than {n} artifacts within 60 s: {}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Every artifact of a session matches the bytes the target wrote to `written`, is a valid raw
/// profile, and there is one per trigger; nothing was lost.
fn check_session(session: &Path, events: &[Value], written: &[u8], profdata: &Path) {
    let triggers = of_kind(events, "trigger");
    let arts = of_kind(events, "artifact");
    assert!(triggers.len() >= 3, "{triggers:?}");
    assert_eq!(
        arts.len(),
        triggers.len(),
        "one artifact per dump: {events:?}"
    );
    assert!(
        of_kind(events, "lost").is_empty(),
        "{:?}",
        of_kind(events, "lost")
    );
    for d in of_kind(events, "delivery") {
        assert_eq!(d["ok"], true, "{d}");
    }
    for a in arts {
        assert_eq!(a["valid"], true, "{a}");
        let file = session.join(a.s("file"));
        let data = std::fs::read(&file).unwrap();
        let off = a.u("offset") as usize;
        assert_eq!(&written[off..off + data.len()], &data[..], "{a}");
        run_ok(Command::new(profdata).arg("show").arg(&file));
    }
}

#[test]
fn the_image_runs_as_a_sidecar_in_an_app_containers_pid_namespace_and_with_the_hosts() {
    require_root();
    let static_bin = workspace_root().join("target/x86_64-unknown-linux-musl/release/covobs");
    assert!(
        static_bin.exists(),
        "{} is missing: run `cargo xtask static` (./dev test does)",
        static_bin.display()
    );
    let d = Dockerd::start();
    let tag = unique_name("t");
    let covobs_image = format!("covobs-test:{tag}");
    let app_image = format!("covobs-test-app:{tag}");

    // The image exactly as the Dockerfile's header says to build it, from the repository root.
    d.ok(&[
        "build",
        "-q",
        "-f",
        workspace_root()
            .join("docs/deploy/Dockerfile")
            .to_str()
            .unwrap(),
        "-t",
        &covobs_image,
        workspace_root().to_str().unwrap(),
    ]);
    // Nothing in it but the binary (.dockerignore keeps the rest of the tree out of the context).
    let size: u64 = d
        .ok(&["image", "inspect", "-f", "{{.Size}}", &covobs_image])
        .parse()
        .unwrap();
    let bin_size = std::fs::metadata(&static_bin).unwrap().len();
    assert!(
        size >= bin_size && size < bin_size + 64 * 1024,
        "image {size} bytes, binary {bin_size}"
    );

    // The app's image: the instrumented program at a path the host does not have, and its C
    // library; the profile goes to /data in the container's own filesystem.
    let tmp = TempDir::new("image");
    let app_dir = format!("/opt/{tag}/bin");
    let app_path = format!("{app_dir}/llvm-c-target");
    assert!(!Path::new(&app_path).exists());
    let staging = tmp.path().join("app");
    Rootfs::assemble(&staging, &fixture("llvm-c-target"), &app_path, &[]);
    std::fs::create_dir(staging.join("data")).unwrap();
    let app_dockerfile = tmp.path().join("app.Dockerfile");
    std::fs::write(&app_dockerfile, "FROM scratch\nCOPY . /\n").unwrap();
    d.ok(&[
        "build",
        "-q",
        "-f",
        app_dockerfile.to_str().unwrap(),
        "-t",
        &app_image,
        staging.to_str().unwrap(),
    ]);
    let app = format!("app-{tag}");
    d.ok(&[
        "run",
        "-d",
        "--name",
        &app,
        "--network=none",
        // %p: the pid the app has in its own namespace.
        "-e",
        "LLVM_PROFILE_FILE=/data/app-%p.profraw",
        &app_image,
        &app_path,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.ok(&["logs", &app]).contains("pid=1 ready") {
        assert!(Instant::now() < deadline, "the app never said it was ready");
        thread::sleep(Duration::from_millis(100));
    }
    let app_host_pid: i32 = d
        .ok(&["inspect", "-f", "{{.State.Pid}}", &app])
        .parse()
        .unwrap();
    let profile = PathBuf::from(format!("/proc/{app_host_pid}/root/data/app-1.profraw"));
    let profdata = llvm_tools("llvm-c-target").profdata;

    // 1. The pod: covobs' container joins the app's PID namespace (shareProcessNamespace) and
    // finds it by name, as the Kubernetes example does; `docker stop` is the pod's SIGTERM.
    let out = tmp.path().join("coverage");
    std::fs::create_dir(&out).unwrap();
    let narrow = [
        "--cap-add=SYS_ADMIN",
        "--cap-add=SYS_PTRACE",
        "--cap-add=KILL",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "-v=/sys/kernel/tracing:/sys/kernel/tracing",
        "--network=none",
    ];
    let sidecar = format!("covobs-{tag}");
    let volume = format!("-v={}:/coverage", out.display());
    let pid_ns = format!("--pid=container:{app}");
    let mut args = vec!["run", "-d", "--name", &sidecar, &pid_ns, &volume];
    args.extend(narrow);
    args.extend([
        covobs_image.as_str(),
        "attach",
        "--name=llvm-c-target",
        "--wait",
        "--interval=1s",
        "--out=/coverage/session",
    ]);
    d.ok(&args);
    let session = out.join("session");
    wait_artifacts(&session.join("events.jsonl"), 3, "sidecar", &d, &sidecar);
    d.ok(&["stop", "-t", "60", &sidecar]);
    let logs = d.docker().args(["logs", &sidecar]).output().unwrap();
    let said = String::from_utf8_lossy(&logs.stderr).into_owned();
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &sidecar]),
        "0",
        "{said}"
    );
    // The image has no /tmp and no LLVM tools: covobs' own engine writes the whole report all
    // the same, in the session; no work files are left.
    assert!(
        said.contains("session written to /coverage/session"),
        "{said}"
    );
    assert!(
        said.contains("reported, 0 left out)") && !said.contains("left out of the report"),
        "{said}"
    );
    let in_image = std::fs::read_to_string(session.join("report/coverage.lcov")).expect("lcov");
    assert!(in_image.contains("work.c"), "{in_image}");
    for e in std::fs::read_dir(&session).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "{name} left in the session");
    }
    let events = events_of(&session.join("events.jsonl"));
    let written = std::fs::read(&profile).expect("the app's profile, in its container");
    check_session(&session, &events, &written, &profdata);
    // Ids of the pod's namespace: the app is its init there.
    let targets = of_kind(&events, "target");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].u("pid"), 1);
    assert_eq!(targets[0].s("exe"), app_path, "the path as the app sees it");
    for t in of_kind(&events, "trigger") {
        assert_eq!((t.u("pid"), t.u("tid")), (1, 1), "{t}");
    }
    // The last dump is the one asked for when the pod ends.
    assert_eq!(
        of_kind(&events, "trigger").last().unwrap().s("reason"),
        "detach"
    );
    let info = read_json(&session.join("session.json"));
    assert_eq!(info["pid_namespace"]["initial"], false, "{info}");
    assert_eq!(info["targets"][0]["pid_in_own_namespace"], 1);
    assert_eq!(
        info["targets"][0]["llvm_profile_file"],
        "/data/app-1.profraw"
    );
    // The session is whole: the host's covobs, where the LLVM tools are, reports it.
    // With llvm-profdata and llvm-cov there, as the oracle: the same LCOV as the engine's.
    let report = Command::new(covobs_bin())
        .arg("report")
        .arg("--llvm-cov")
        .arg(&session)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let by_tools = std::fs::read_to_string(session.join("report/coverage.lcov")).expect("lcov");
    assert_eq!(
        in_image, by_tools,
        "the engine in the image and llvm-cov on the host"
    );

    // 2. A node-wide covobs: the host's PID namespace (hostPID), the app's container selected
    // by its cgroup through the host's cgroup2 hierarchy mounted into covobs' container.
    let app_cgroup = std::fs::read_to_string(format!("/proc/{app_host_pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .expect("the app's cgroup v2 path");
    assert!(
        app_cgroup.len() > 1,
        "the app runs in a cgroup of its own: {app_cgroup}"
    );
    let out2 = tmp.path().join("coverage-host");
    std::fs::create_dir(&out2).unwrap();
    let volume2 = format!("-v={}:/coverage", out2.display());
    let cgroups = format!("-v={}:/host-cgroup:ro", ns::cgroup2_mount().display());
    let selected = format!("--cgroup=/host-cgroup{app_cgroup}");
    let mut args = vec!["run", "--rm", "--pid=host", &volume2, &cgroups];
    args.extend(narrow);
    args.extend([
        covobs_image.as_str(),
        "attach",
        "--no-report",
        &selected,
        "--interval=500ms",
        "--duration=2200ms",
        "--out=/coverage/session",
    ]);
    let host = d.docker().args(&args).output().unwrap();
    assert!(
        host.status.success(),
        "{}",
        String::from_utf8_lossy(&host.stderr)
    );
    let session2 = out2.join("session");
    let events2 = events_of(&session2.join("events.jsonl"));
    let written = std::fs::read(&profile).unwrap();
    check_session(&session2, &events2, &written, &profdata);
    let targets = of_kind(&events2, "target");
    assert_eq!(
        targets.len(),
        1,
        "the app alone is in its cgroup: {targets:?}"
    );
    assert_eq!(targets[0].u("pid"), app_host_pid as u64);
    assert_eq!(targets[0].s("reason"), "cgroup");
    let info = read_json(&session2.join("session.json"));
    assert_eq!(info["pid_namespace"]["initial"], true, "{info}");
    assert_eq!(info["targets"][0]["pid_in_own_namespace"], 1);

    assert_eq!(d.ok(&["inspect", "-f", "{{.State.Running}}", &app]), "true");
}
