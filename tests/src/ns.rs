//! Real namespaces and cgroups for the sidecar tests: a PID namespace held open like a pod's,
//! a root filesystem assembled for a target, a cgroup v2 directory of the test's own.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Ids of every thread of host process `pid`: (host tid, tid in the process's own innermost PID
/// namespace), from NSpid.
pub fn ns_tids(pid: i32) -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
    {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(inner) = ns_pid(&format!("/proc/{pid}/task/{tid}/status")) {
            out.push((tid, inner));
        }
    }
    out.sort_unstable();
    out
}

/// The innermost NSpid of a status file.
fn ns_pid(status: &str) -> Option<i32> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The innermost id of host process `pid`.
pub fn ns_pid_of(pid: i32) -> i32 {
    ns_pid(&format!("/proc/{pid}/status")).expect("NSpid")
}

/// Children of a host process.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The first child of `pid` (waits for it to appear).
pub fn wait_child(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = children(pid).first() {
            return *c;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} started no child within 10 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The PID namespace of a pod: `unshare --pid --fork --mount-proc` around a `sleep` that stays its
/// init (like Kubernetes' pause container), with a /proc of its own. Killed with the test.
pub struct PodNamespace {
    unshare: Child,
    /// Host pid of the namespace's init.
    pub init: i32,
}

impl PodNamespace {
    pub fn new() -> Self {
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
                "sleep",
                "600",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare(1) (util-linux)");
        let init = wait_child(unshare.id() as i32);
        // The init has exec'd sleep once its name says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(Instant::now() < deadline, "the namespace's init never ran");
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ns_pid_of(init), 1, "sleep is the namespace's init");
        Self { unshare, init }
    }

    /// A command that runs inside this namespace (its PID namespace and its mount namespace, so
    /// its /proc), as a container of the pod does.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.init))
            .args(["--pid", "--mount", "--"])
            .arg(program);
        c
    }
}

impl Default for PodNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PodNamespace {
    fn drop(&mut self) {
        // The init's death ends every process of the namespace.
        // SAFETY: kill on a pid this test started and still owns.
        unsafe { libc::kill(self.init, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// A root filesystem for a target: `binary` at `at` (an absolute path inside the root), the
/// shared libraries `ldd` names at their own paths, and the extra files given. Assembled in a
/// staging directory and copied by `rootfs_command` into a tmpfs that only the target's mount
/// namespace has.
pub struct Rootfs {
    pub staging: PathBuf,
}

impl Rootfs {
    pub fn assemble(staging: &Path, binary: &Path, at: &str, extra: &[(&Path, &str)]) -> Self {
        let copy = |from: &Path, to: &str| {
            let dst = staging.join(to.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir in rootfs");
            std::fs::copy(from, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), dst.display()));
        };
        copy(binary, at);
        for (from, to) in extra {
            copy(from, to);
        }
        let ldd = crate::run_ok(Command::new("ldd").arg(binary));
        for line in ldd.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            let Some(path) = path.filter(|p| p.starts_with('/')) else {
                continue;
            };
            let real = std::fs::canonicalize(path).expect("library path");
            // Libraries found through $ORIGIN were copied beside the binary already.
            if !extra
                .iter()
                .any(|(from, _)| std::fs::canonicalize(from).is_ok_and(|f| f == real))
            {
                copy(&real, path);
            }
        }
        Self {
            staging: staging.to_path_buf(),
        }
    }

    /// `unshare --mount` a shell that mounts a tmpfs on `mount_point` (private to the new mount
    /// namespace), copies the staging tree into it and makes it the root with pivot_root, the
    /// old root unmounted, as a container runtime does; then execs `program` (a path inside the
    /// root) with `args`. A static busybox does the last steps from inside and removes itself.
    /// The target keeps the spawned child's pid.
    pub fn command(&self, mount_point: &Path, program: &str, args: &[&str]) -> Command {
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("a static busybox (Debian package busybox-static, installed by ./dev setup)");
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                // busybox picks its applet from its own file name: it is copied as `busybox`.
                // A proc of its own, as every container has (the loader reads /proc/self/exe for
                // $ORIGIN).
                "set -e; mount -t tmpfs covobs-test-rootfs \"$1\"; cp -a \"$2\"/. \"$1\"/; \
                 mkdir \"$1\"/.t \"$1\"/.old \"$1\"/proc; cp \"$3\" \"$1\"/.t/busybox; \
                 cd \"$1\"; pivot_root . .old; shift 3; exec /.t/busybox sh -c \
                 '/.t/busybox umount -l /.old && /.t/busybox rmdir /.old && \
                 /.t/busybox mount -t proc proc /proc && /.t/busybox rm -r /.t && exec \"$@\"' \
                 sh \"$@\"",
            )
            .arg("sh")
            .arg(mount_point)
            .arg(&self.staging)
            .arg(busybox)
            .arg(program)
            .args(args);
        c
    }
}

/// A cgroup v2 directory of the test's own, under the hierarchy's root; its processes are
/// killed and the directory removed when dropped.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Its path in the hierarchy (as /proc/PID/cgroup shows it).
    pub path: String,
}

/// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems).
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("this machine mounts a cgroup v2 hierarchy; the cgroup tests need one")
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let name = crate::unique_name(&format!("covobs-{tag}-"));
        let dir = cgroup2_mount().join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        Self {
            path: format!("/{name}"),
            dir,
        }
    }

    /// A child cgroup below this one.
    pub fn child(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir).expect("child cgroup");
        dir
    }

    /// Move process `pid` into cgroup directory `dir`.
    pub fn move_into(dir: &Path, pid: i32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }

    /// Make `cmd` start inside cgroup directory `dir` (it moves itself there before exec).
    pub fn spawn_into(cmd: &mut Command, dir: &Path) {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(
            dir.join("cgroup.procs")
                .to_str()
                .expect("utf-8 path")
                .as_bytes(),
        )
        .expect("path without NUL");
        // SAFETY: runs in the forked child before exec; only open/write/close on memory this
        // closure owns ("0" names the writing process itself).
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Depth first: every child cgroup, then this one.
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        remove(&self.dir);
    }
}
