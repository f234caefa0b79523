//! Coverage of a no_std payload in a QEMU guest, read from the host: the fixture `guest-payload`
//! (Rust, `-C instrument-coverage -Z no-profiler-runtime`, minicov) boots under QEMU system
//! emulation (TCG, plain `-m 64M`), runs phases that reach new code over time, writes minicov's
//! own capture to the debugcon port and halts. `covobs snapshot --qemu PID --elf PAYLOAD` of the
//! halted guest (running, and `--pause`d through QMP) is byte for byte minicov's capture, and so
//! are llvm-profdata's counts and llvm-cov's LCOV; a snapshot taken mid-run has fewer counters
//! covered; a `pmemsave` image of the guest's RAM gives the same profile through
//! `--image --base`. Bad input: a payload of another build (its build id differs), a
//! position-independent ELF, a process that is not QEMU, a truncated image.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use covobs_tests::{
    Covobs, TempDir, artifacts, covobs_bin, fixture, llvm_tools, read_json, require_root, run_ok,
};
use serde_json::Value;

const QEMU: &str = "qemu-system-x86_64";

/// A QEMU guest running the payload; killed when dropped.
struct Guest {
    child: Child,
    serial: PathBuf,
    debugcon: PathBuf,
    qmp: PathBuf,
}

impl Guest {
    fn boot(payload: &Path, dir: &Path) -> Self {
        Self::boot_with(payload, dir, &[])
    }

    /// With QEMU options of the test's own (`-S`: stopped until QMP `cont`).
    fn boot_with(payload: &Path, dir: &Path, extra: &[&str]) -> Self {
        let serial = dir.join("serial.log");
        let debugcon = dir.join("debugcon.bin");
        let qmp = dir.join("qmp.sock");
        let child = Command::new(QEMU)
            .args(["-machine", "pc", "-accel", "tcg", "-cpu", "max", "-m", "64M"])
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-kernel"])
            .arg(payload)
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-debugcon")
            .arg(format!("file:{}", debugcon.display()))
            .args(["-global", "isa-debugcon.iobase=0xe9", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{QEMU} cannot run ({e}): the guest tests need QEMU system emulation (Debian: apt-get install qemu-system-x86)")
            });
        Self {
            child,
            serial,
            debugcon,
            qmp,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (bounded) until the serial log has a line `line`.
    fn wait_line(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(&self.serial).unwrap_or_default();
            if log.lines().any(|l| l == line) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU exited ({status}) before {line:?}; serial:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} from the guest; serial:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// minicov's capture, as the payload wrote it to debugcon.
    fn capture(&self) -> Vec<u8> {
        let bytes = std::fs::read(&self.debugcon).expect("debugcon output");
        assert_eq!(&bytes[..8], b"MINICOV1", "debugcon frame");
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 16 + len, "debugcon frame length");
        bytes[16..].to_vec()
    }

    /// One QMP command on a fresh connection (QMP serves one client at a time).
    fn qmp(&self, command: &str, arguments: Value) -> Value {
        let mut msg = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        // A connection made while or just after another client (covobs) talks to QEMU was seen
        // closed by QEMU, before its greeting or after it: the whole exchange is made again on a
        // new connection. The commands asked here are idempotent (queries, stop, cont, pmemsave).
        let mut tries = 0;
        let v = loop {
            match self.qmp_once(&msg) {
                Ok(v) => break v,
                // QEMU may close the connection (and its socket) as it quits; whether it did quit
                // is what the caller checks next (it waits for QEMU's exit).
                Err(_) if command == "quit" && tries > 0 => break serde_json::json!({"return": {}}),
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "QMP {command}: {e} (100 connections)");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        assert!(v.get("error").is_none(), "QMP {command}: {v}");
        v["return"].clone()
    }

    /// Connect, read the greeting, negotiate capabilities and ask `msg`: its answer.
    fn qmp_once(&self, msg: &Value) -> std::io::Result<Value> {
        let s = UnixStream::connect(&self.qmp)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let read = |r: &mut BufReader<UnixStream>| -> std::io::Result<Value> {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QEMU closed the QMP connection",
                ));
            }
            Ok(serde_json::from_str(&line).expect("QMP JSON"))
        };
        read(&mut r)?; // the greeting
        let mut ask = |msg: &Value| -> std::io::Result<Value> {
            writeln!(w, "{msg}")?;
            loop {
                let v = read(&mut r)?;
                if v.get("return").is_some() || v.get("error").is_some() {
                    return Ok(v);
                }
            }
        };
        ask(&serde_json::json!({"execute": "qmp_capabilities"}))?;
        ask(msg)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snapshot(args: &[&str], out: &Path) -> Value {
    let text = run_ok(
        Command::new(covobs_bin())
            .args(["snapshot", "--json"])
            .args(args)
            .arg("--out")
            .arg(out),
    );
    let v: Value = serde_json::from_str(&text).expect("snapshot --json");
    v[0].clone()
}

/// A snapshot that must be refused: exit code 2, one line on stderr, no output file.
fn refused(args: &[&str], out: &Path) -> String {
    let o = Command::new(covobs_bin())
        .arg("snapshot")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run covobs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("covobs: error: "), "{stderr}");
    assert!(!out.exists(), "{args:?} left {} behind", out.display());
    stderr
}

fn show(profdata: &Path, profraw: &Path) -> String {
    run_ok(
        Command::new(profdata)
            .args(["show", "--all-functions", "--counts"])
            .arg(profraw),
    )
}

fn lcov(tools: &covobs_tests::LlvmTools, profraw: &Path, object: &Path) -> String {
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
            .arg(object),
    )
}

/// The count llvm-profdata shows for the first function whose name contains `needle`.
fn function_count(show: &str, needle: &str) -> u64 {
    let mut in_fn = false;
    for line in show.lines() {
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("    ") && t.ends_with(':') {
            in_fn = t.contains(needle);
        } else if in_fn && let Some(c) = t.strip_prefix("Function count: ") {
            return c.parse().expect("function count");
        }
    }
    panic!("no function like {needle} in\n{show}");
}

/// A copy of the payload whose build id differs by one byte: another build of the same code.
fn other_build(payload: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(payload).unwrap();
    let note = b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00";
    let at = bytes
        .windows(note.len())
        .position(|w| w == note)
        .expect("the payload has a 20-byte GNU build id note");
    bytes[at + note.len()] ^= 0xff;
    let path = dir.join("other-build");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_guest_payloads_counters_read_from_qemu_are_minicovs_own_capture() {
    require_root();
    let tools = llvm_tools("guest-payload");
    let payload = fixture("guest-payload");
    let payload_s = payload.to_str().unwrap();
    let tmp = TempDir::new("guest-qemu");
    let dir = tmp.path();
    let mut guest = Guest::boot(&payload, dir);
    let qemu = guest.pid().to_string();

    // Mid-run, paused for an exact read: some phases have not run yet.
    guest.wait_line("phase 2 checksum = 3677586914");
    let mid = dir.join("mid.profraw");
    let w = snapshot(&["--qemu", &qemu, "--elf", payload_s, "--pause"], &mid);
    assert_eq!(w["snapshot"]["method"], "qemu-guest-ram-paused", "{w}");
    let mid_covered = w["snapshot"]["covered"].as_u64().unwrap();
    assert_eq!(
        guest.qmp("query-status", Value::Null)["running"],
        true,
        "covobs resumed the guest"
    );
    let mid_show = show(&tools.profdata, &mid);
    assert!(
        function_count(&mid_show, "phase_checksum") == 1,
        "{mid_show}"
    );

    guest.wait_line("halted");
    let capture = guest.capture();
    let minicov = dir.join("minicov.profraw");
    std::fs::write(&minicov, &capture).unwrap();

    let running = dir.join("running.profraw");
    let w = snapshot(&["--qemu", &qemu, "--elf", payload_s], &running);
    assert_eq!(w["snapshot"]["method"], "qemu-guest-ram", "{w}");
    assert!(
        w["memory"].as_str().unwrap().contains("guest-physical 0x0"),
        "{w}"
    );
    let final_covered = w["snapshot"]["covered"].as_u64().unwrap();
    assert!(
        mid_covered < final_covered,
        "coverage grows over the phases: {mid_covered} then {final_covered}"
    );
    let paused = dir.join("paused.profraw");
    let wp = snapshot(&["--qemu", &qemu, "--elf", payload_s, "--pause"], &paused);
    assert_eq!(wp["snapshot"]["method"], "qemu-guest-ram-paused");
    // With QMP, QEMU says where the counters are; without, covobs finds them by content.
    assert!(
        wp["memory"].as_str().unwrap().contains("qmp-gpa2hva"),
        "{wp}"
    );
    assert!(
        w["memory"].as_str().unwrap().contains("found by content"),
        "{w}"
    );

    let minicov_show = show(&tools.profdata, &minicov);
    assert_eq!(
        show(&tools.profdata, &running),
        minicov_show,
        "llvm-profdata show"
    );
    assert_eq!(
        lcov(&tools, &running, &payload),
        lcov(&tools, &minicov, &payload),
        "llvm-cov LCOV"
    );
    assert!(
        std::fs::read(&running).unwrap() == capture,
        "not byte for byte minicov's capture"
    );
    assert!(std::fs::read(&paused).unwrap() == capture);
    assert_eq!(function_count(&minicov_show, "phase_final"), 1);
    assert_eq!(function_count(&minicov_show, "never_called"), 0);
    assert_eq!(function_count(&minicov_show, "8classify"), 20);

    // The same RAM, saved by QEMU: 1 MiB from the payload's base (2 MiB, guest-physical).
    let ram = dir.join("ram.bin");
    guest.qmp(
        "pmemsave",
        serde_json::json!({"val": 0x20_0000, "size": 0x10_0000, "filename": ram.to_str().unwrap()}),
    );
    let from_image = dir.join("image.profraw");
    let w = snapshot(
        &[
            "--image",
            ram.to_str().unwrap(),
            "--base",
            "0x200000",
            "--elf",
            payload_s,
        ],
        &from_image,
    );
    assert_eq!(w["snapshot"]["method"], "raw-image");
    assert!(
        std::fs::read(&from_image).unwrap() == capture,
        "pmemsave image"
    );

    // Figures (printed, not asserted): one covobs snapshot of the guest next to the path it
    // replaces, a pmemsave of the guest's RAM and a profile built from that image.
    let t = Instant::now();
    snapshot(
        &["--qemu", &qemu, "--elf", payload_s],
        &dir.join("timed.profraw"),
    );
    let direct = t.elapsed();
    let t = Instant::now();
    let whole = dir.join("whole-ram.bin");
    guest.qmp(
        "pmemsave",
        serde_json::json!({"val": 0, "size": 64u64 << 20, "filename": whole.to_str().unwrap()}),
    );
    snapshot(
        &["--image", whole.to_str().unwrap(), "--elf", payload_s],
        &dir.join("timed-image.profraw"),
    );
    let via_image = t.elapsed();
    std::fs::remove_file(&whole).unwrap();
    println!(
        "guest snapshot: covobs --qemu {:.1} ms; pmemsave of 64 MiB + --image {:.1} ms ({:.1}x)",
        direct.as_secs_f64() * 1e3,
        via_image.as_secs_f64() * 1e3,
        via_image.as_secs_f64() / direct.as_secs_f64()
    );

    // Bad input.
    let out = dir.join("refused.profraw");
    let other = other_build(&payload, dir);
    let e = refused(&["--qemu", &qemu, "--elf", other.to_str().unwrap()], &out);
    assert!(
        e.contains("no guest RAM holding") && e.contains("build-id"),
        "{e}"
    );
    let e = refused(
        &[
            "--image",
            ram.to_str().unwrap(),
            "--base",
            "0x200000",
            "--elf",
            other.to_str().unwrap(),
        ],
        &out,
    );
    assert!(e.contains("build-id note differs"), "{e}");
    let pie = fixture("llvm-rust-target");
    let e = refused(&["--qemu", &qemu, "--elf", pie.to_str().unwrap()], &out);
    assert!(e.contains("position-independent"), "{e}");
    let me = std::process::id().to_string();
    let e = refused(&["--qemu", &me, "--elf", payload_s], &out);
    assert!(e.contains("not a QEMU"), "{e}");
    let short = dir.join("short.bin");
    let bytes = std::fs::read(&ram).unwrap();
    std::fs::write(&short, &bytes[..0x8000]).unwrap();
    let e = refused(
        &[
            "--image",
            short.to_str().unwrap(),
            "--base",
            "0x200000",
            "--elf",
            payload_s,
        ],
        &out,
    );
    assert!(e.contains("outside the image"), "{e}");
    let e = refused(
        &[
            "--image",
            ram.to_str().unwrap(),
            "--base",
            "0x300000",
            "--elf",
            payload_s,
        ],
        &out,
    );
    assert!(e.contains("outside the image"), "{e}");
    drop(guest);
}

/// `covobs attach --qemu`: a session of interval snapshots of the guest from before it starts
/// until QEMU exits. The snapshots' coverage grows over the phases; the last one (taken after the
/// guest halted) is minicov's capture byte for byte, the report's LCOV is llvm-cov's of that
/// capture, and the session ends by itself, exit 0, when QEMU quits.
#[test]
fn attach_qemu_follows_a_guest_until_qemu_exits() {
    require_root();
    let tools = llvm_tools("guest-payload");
    let payload = fixture("guest-payload");
    let payload_s = payload.to_str().unwrap();
    let tmp = TempDir::new("guest-attach");
    let dir = tmp.path();
    let mut guest = Guest::boot_with(&payload, dir, &["-S"]);
    let qemu = guest.pid().to_string();
    // QMP answers once QEMU has set the machine up (the payload loaded into RAM).
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&guest.qmp).is_err() {
        assert!(Instant::now() < deadline, "no QMP socket from QEMU");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        guest.qmp("query-status", Value::Null)["status"],
        "prelaunch"
    );
    let out = dir.join("session");
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--qemu",
        &qemu,
        "--elf",
        payload_s,
        "--interval",
        "100ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    let first = covobs.wait_event(Duration::from_secs(60), "a first snapshot", |e| {
        e["event"] == "snapshot"
    });
    assert_eq!(first["covered"], 0, "the guest has not started: {first}");
    guest.qmp("cont", Value::Null);
    guest.wait_line("halted");
    let capture = guest.capture();
    // A snapshot that started after the guest halted: two artifacts after the ones seen now.
    let seen = covobs
        .events()
        .iter()
        .filter(|e| e["event"] == "artifact")
        .count() as u64;
    covobs.wait_event(
        Duration::from_secs(60),
        "a snapshot of the halted guest",
        |e| e["event"] == "artifact" && e["seq"].as_u64().unwrap_or(0) >= seen + 2,
    );
    guest.qmp("quit", Value::Null);
    let status = covobs.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", covobs.stderr());

    let events = covobs.events().to_vec();
    let covered: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "snapshot")
        .map(|e| e["covered"].as_u64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<u64> = covered.iter().copied().collect();
    println!(
        "attach --qemu: {} snapshots at 100 ms, covered counters over time: {covered:?}",
        covered.len()
    );
    assert!(
        covered.windows(2).all(|w| w[0] <= w[1]),
        "coverage only grows: {covered:?}"
    );
    assert!(
        distinct.len() >= 4,
        "the phases show as steps of coverage: {covered:?}"
    );
    assert!(events.iter().any(|e| e["event"] == "process_exit"));
    let arts = artifacts(&out);
    assert_eq!(arts.len(), covered.len());
    let last = arts.last().unwrap();
    assert_eq!(last.meta["trigger"], "snapshot");
    assert!(
        last.meta["snapshot"]["method"] == "qemu-guest-ram",
        "{}",
        last.meta
    );
    assert!(
        last.data() == capture,
        "the last snapshot is not byte for byte minicov's capture"
    );
    let counts: Vec<u64> = arts
        .iter()
        .map(|a| a.meta["snapshot"]["covered"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, covered, "metadata and events agree");

    let minicov = dir.join("minicov.profraw");
    std::fs::write(&minicov, &capture).unwrap();
    let report = std::fs::read_to_string(out.join("report/coverage.lcov")).expect("report LCOV");
    assert!(
        report == lcov(&tools, &minicov, &payload),
        "the report's LCOV is not llvm-cov's of minicov's capture:\n{report}"
    );
    let session = read_json(&out.join("session.json"));
    assert_eq!(session["ended_by"], "qemu-exit", "{session}");
    assert_eq!(session["counters"]["snapshots"], covered.len() as u64);
    assert_eq!(session["counters"]["lost"], 0);
    let timeline = read_json(&out.join("report/timeline.json"));
    let points = timeline
        .as_array()
        .or_else(|| timeline["points"].as_array())
        .expect("timeline points");
    assert_eq!(
        points.len(),
        covered.len(),
        "one timeline point per snapshot"
    );
    drop(guest);
}

/// A copy of the payload whose profile names differ by one byte: another build, as far as the
/// capture's contents can tell (minicov writes no build id in its captures).
fn other_names(payload: &Path, dir: &Path) -> PathBuf {
    let module = covobs::discover::describe_file(payload).expect("the payload's ELF");
    let names = module
        .elf
        .sections
        .iter()
        .find(|s| s.name == "__llvm_prf_names")
        .expect("__llvm_prf_names");
    let mut bytes = std::fs::read(payload).unwrap();
    bytes[(names.file_offset + names.size / 2) as usize] ^= 0x01;
    let path = dir.join("other-names");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Write `bytes` at `offset` of a shared region's file (QEMU maps it shared: the guest's view).
fn poke(file: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// A region header as the payload writes it (docs/guests.md).
fn region_header(sequence: u64, len: u64) -> Vec<u8> {
    let mut h = b"COVOBSHM".to_vec();
    h.extend(64u32.to_le_bytes());
    h.extend(1u32.to_le_bytes());
    h.extend(sequence.to_le_bytes());
    h.extend(len.to_le_bytes());
    h.extend([0u8; 32]);
    h
}

/// The shared-memory mode, for guests whose RAM the host cannot read: the payload, booted with an
/// `ivshmem-plain` device backed by a `memory-backend-file`, publishes minicov's capture in the
/// device's memory after each phase and at the end. `attach --qemu --shared` (started before the
/// guest runs) delivers nothing until the first capture, then growing coverage, and last the
/// payload's final capture; `snapshot --qemu --shared` (by the backend's mem-path and by its id)
/// is byte for byte minicov's capture written on debugcon. A region without the header, with
/// garbage, a header announcing more than the region holds, a cut capture, a capture left
/// half-written, another build's ELF, a file QEMU does not map and an unknown id are refused.
#[test]
fn the_shared_region_holds_the_payloads_own_capture() {
    require_root();
    let tools = llvm_tools("guest-payload");
    let payload = fixture("guest-payload");
    let payload_s = payload.to_str().unwrap();
    let tmp = TempDir::new("guest-shared");
    let dir = tmp.path();
    let shm = dir.join("shm.bin");
    let spare = dir.join("spare.bin");
    let backend = |id: &str, path: &Path| {
        format!(
            "memory-backend-file,id={id},share=on,mem-path={},size=1M",
            path.display()
        )
    };
    let (b1, b2) = (backend("shm", &shm), backend("spare", &spare));
    let mut guest = Guest::boot_with(
        &payload,
        dir,
        &[
            "-S",
            "-object",
            &b1,
            "-device",
            "ivshmem-plain,memdev=shm",
            "-object",
            &b2,
        ],
    );
    let qemu = guest.pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&guest.qmp).is_err() {
        assert!(Instant::now() < deadline, "no QMP socket from QEMU");
        std::thread::sleep(Duration::from_millis(20));
    }
    // QMP answers once QEMU has created its backends and devices.
    assert_eq!(
        guest.qmp("query-status", Value::Null)["status"],
        "prelaunch"
    );
    let out = dir.join("session");
    let shm_s = shm.to_str().unwrap();
    let mut covobs = Covobs::start(&[
        "attach",
        "--json",
        "--qemu",
        &qemu,
        "--shared",
        shm_s,
        "--elf",
        payload_s,
        "--interval",
        "100ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(Duration::from_secs(60), "the payload found", |e| {
        e["event"] == "runtime_found"
    });
    // Ticks before the guest runs: nothing published, nothing delivered.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !covobs.events().iter().any(|e| e["event"] == "snapshot"),
        "a snapshot before the payload published a capture"
    );
    let out_early = dir.join("early.profraw");
    let e = refused(
        &["--qemu", &qemu, "--shared", shm_s, "--elf", payload_s],
        &out_early,
    );
    assert!(e.contains("has not published"), "{e}");
    guest.qmp("cont", Value::Null);
    guest.wait_line("halted");
    let log = std::fs::read_to_string(&guest.serial).unwrap();
    assert!(log.lines().any(|l| l == "shared 1048512"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.starts_with("published ")).count(),
        7,
        "one capture per phase and one at the end: {log}"
    );
    let capture = guest.capture();
    let minicov = dir.join("minicov.profraw");
    std::fs::write(&minicov, &capture).unwrap();

    let by_path = dir.join("by-path.profraw");
    let w = snapshot(
        &["--qemu", &qemu, "--shared", shm_s, "--elf", payload_s],
        &by_path,
    );
    assert_eq!(w["snapshot"]["method"], "qemu-shared-memory", "{w}");
    let memory = w["memory"].as_str().unwrap();
    assert!(memory.contains("capture sequence 14"), "{w}");
    assert!(
        std::fs::read(&by_path).unwrap() == capture,
        "the shared capture is not byte for byte minicov's on debugcon"
    );
    assert_eq!(
        show(&tools.profdata, &by_path),
        show(&tools.profdata, &minicov)
    );
    let by_id = dir.join("by-id.profraw");
    let w = snapshot(
        &["--qemu", &qemu, "--shared", "shm", "--elf", payload_s],
        &by_id,
    );
    assert!(
        w["memory"].as_str().unwrap().contains("command line"),
        "{w}"
    );
    assert!(std::fs::read(&by_id).unwrap() == capture);

    // Bad input, in a second backend of the same QEMU the payload does not write.
    let spare_s = spare.to_str().unwrap();
    let no = dir.join("refused.profraw");
    let shared_refused = |region: &str, elf: &str| {
        refused(&["--qemu", &qemu, "--shared", region, "--elf", elf], &no)
    };
    poke(&spare, 0, b"not a capture header");
    let e = shared_refused(spare_s, payload_s);
    assert!(e.contains("no covobs capture header"), "{e}");
    poke(&spare, 0, &region_header(2, 2 << 20));
    let e = shared_refused(spare_s, payload_s);
    assert!(e.contains("truncated"), "{e}");
    let cut = capture.len() as u64 - 100;
    poke(&spare, 0, &region_header(2, cut));
    poke(&spare, 64, &capture[..cut as usize]);
    let e = shared_refused(spare_s, payload_s);
    assert!(e.contains("not a complete raw profile"), "{e}");
    poke(&spare, 0, &region_header(3, capture.len() as u64));
    poke(&spare, 64, &capture);
    let e = shared_refused(spare_s, payload_s);
    assert!(e.contains("being written"), "{e}");
    poke(&spare, 0, &region_header(4, capture.len() as u64));
    let copied = dir.join("copied.profraw");
    snapshot(
        &["--qemu", &qemu, "--shared", "spare", "--elf", payload_s],
        &copied,
    );
    assert!(
        std::fs::read(&copied).unwrap() == capture,
        "a copied capture"
    );
    let other = other_names(&payload, dir);
    let e = shared_refused(shm_s, other.to_str().unwrap());
    assert!(e.contains("names") && e.contains("differ"), "{e}");
    let unmapped = dir.join("unmapped.bin");
    std::fs::write(&unmapped, vec![0u8; 4096]).unwrap();
    let e = shared_refused(unmapped.to_str().unwrap(), payload_s);
    assert!(e.contains("does not map"), "{e}");
    let e = shared_refused("nope", payload_s);
    assert!(e.contains("nope"), "{e}");
    let pie = fixture("llvm-rust-target");
    let e = shared_refused(shm_s, pie.to_str().unwrap());
    assert!(e.contains("position-independent"), "{e}");

    // The session: nothing until the first capture, then the phases' captures, the final one last.
    let seen = covobs
        .events()
        .iter()
        .filter(|e| e["event"] == "artifact")
        .count() as u64;
    covobs.wait_event(
        Duration::from_secs(60),
        "a snapshot of the halted guest",
        |e| e["event"] == "artifact" && e["seq"].as_u64().unwrap_or(0) >= seen + 2,
    );
    guest.qmp("quit", Value::Null);
    let status = covobs.wait(Duration::from_secs(120));
    assert!(status.success(), "{status}: {}", covobs.stderr());
    let covered: Vec<u64> = covobs
        .events()
        .iter()
        .filter(|e| e["event"] == "snapshot")
        .map(|e| e["covered"].as_u64().unwrap())
        .collect();
    println!("attach --qemu --shared: covered counters over time: {covered:?}");
    assert!(covered[0] > 0, "{covered:?}");
    assert!(covered.windows(2).all(|w| w[0] <= w[1]), "{covered:?}");
    let distinct: std::collections::BTreeSet<u64> = covered.iter().copied().collect();
    assert!(distinct.len() >= 4, "the phases' captures: {covered:?}");
    let arts = artifacts(&out);
    let last = arts.last().unwrap();
    assert_eq!(last.meta["snapshot"]["method"], "qemu-shared-memory");
    assert!(last.data() == capture, "the session's last snapshot");
    let session = read_json(&out.join("session.json"));
    assert_eq!(session["ended_by"], "qemu-exit", "{session}");
    assert_eq!(session["options"]["mode"], "qemu-shared", "{session}");
    assert_eq!(session["counters"]["lost"], 0, "{session}");
    drop(guest);
}

/// A payload that runs with paging at other virtual addresses: `guest-payload-high`, the same
/// code linked at 0xffffffff80000000 + its load address (2 MiB). covobs sees that the ELF's
/// virtual and load addresses differ, asks QEMU for CR3 through QMP and walks the guest's 4-level
/// page tables: the halted guest's snapshot (running and `--pause`d) is minicov's capture byte for
/// byte. A raw image (addressed physically) of such a payload, and the identity-mapped build's
/// ELF against this guest, are refused.
#[test]
fn a_higher_half_payload_is_read_through_the_guests_page_tables() {
    require_root();
    let tools = llvm_tools("guest-payload-high");
    let payload = fixture("guest-payload-high");
    let payload_s = payload.to_str().unwrap();
    let tmp = TempDir::new("guest-high");
    let dir = tmp.path();
    let mut guest = Guest::boot(&payload, dir);
    let qemu = guest.pid().to_string();
    guest.wait_line("halted");
    let capture = guest.capture();
    let minicov = dir.join("minicov.profraw");
    std::fs::write(&minicov, &capture).unwrap();

    let running = dir.join("running.profraw");
    let w = snapshot(&["--qemu", &qemu, "--elf", payload_s], &running);
    assert_eq!(w["snapshot"]["method"], "qemu-guest-ram", "{w}");
    assert!(
        w["memory"].as_str().unwrap().contains("page tables at CR3"),
        "{w}"
    );
    assert!(
        w["snapshot"]["counters_addr"].as_u64().unwrap() >= 0xffff_ffff_8000_0000,
        "{w}"
    );
    assert!(
        std::fs::read(&running).unwrap() == capture,
        "not byte for byte minicov's capture"
    );
    assert_eq!(
        show(&tools.profdata, &running),
        show(&tools.profdata, &minicov)
    );
    let paused = dir.join("paused.profraw");
    let w = snapshot(&["--qemu", &qemu, "--elf", payload_s, "--pause"], &paused);
    assert_eq!(w["snapshot"]["method"], "qemu-guest-ram-paused", "{w}");
    assert!(std::fs::read(&paused).unwrap() == capture);

    let out = dir.join("refused.profraw");
    let ram = dir.join("ram.bin");
    guest.qmp(
        "pmemsave",
        serde_json::json!({"val": 0x20_0000, "size": 0x40_0000, "filename": ram.to_str().unwrap()}),
    );
    let e = refused(
        &[
            "--image",
            ram.to_str().unwrap(),
            "--base",
            "0x200000",
            "--elf",
            payload_s,
        ],
        &out,
    );
    assert!(e.contains("runs at virtual addresses"), "{e}");
    let low = fixture("guest-payload");
    let e = refused(&["--qemu", &qemu, "--elf", low.to_str().unwrap()], &out);
    assert!(e.contains("no guest RAM holding"), "{e}");
    drop(guest);
}
