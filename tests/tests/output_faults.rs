//! covobs' output failing under a real attach: the output filesystem filling up and the session
//! directory removed mid-session. Each is said at once on stderr, covobs stops with exit 1,
//! every dump is accounted (the ones it could not write are `lost` with covobs' own failure as
//! the reason), nothing half-written stays, and the target runs on.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use covobs_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A tmpfs of its own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("covobs-test")
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every file under `dir` (no links followed): (path, size).
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let m = std::fs::symlink_metadata(e.path()).expect("metadata");
        if m.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out
}

/// Fill the filesystem of `dir` with one file until it takes no more.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let mut total = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let block = vec![0xa5u8; chunk];
        while f.write_all(&block).is_ok() {
            total += chunk as u64;
        }
    }
    total
}

/// The summary line "covobs: targets 1 · dumps N · ... · lost N": the number after `what`.
fn summary_count(stderr: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("covobs: targets "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    line.split(" · ")
        .find_map(|part| part.strip_prefix(&format!("{what} ")))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {what} count in {line:?}"))
}

fn start_target(tmp: &Path) -> Driven {
    let profile = tmp.join("target.profraw");
    start_fixture(
        "llvm-rust-target",
        &[],
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp,
    )
}

#[test]
fn a_full_output_disk_stops_covobs_loudly_and_what_was_written_stays_reportable() {
    require_root();
    let tmp = TempDir::new("fault-full");
    let target = start_target(tmp.path());
    let pid = target.pid();
    let mnt = Tmpfs::mount(&tmp.path().join("mnt"), "64m");
    let out = mnt.0.join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "100ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "3 artifacts", |e| {
        e.kind() == "artifact" && e["seq"].as_u64() >= Some(3)
    });
    let filler = mnt.0.join("filler");
    let filled = fill(&filler);
    let full_at = Instant::now();
    let status = covobs.wait(T);
    let stopped_after = full_at.elapsed();
    let stderr = covobs.stderr();
    println!("filled {filled} bytes; covobs stopped {stopped_after:?} later\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let loud = stderr
        .lines()
        .find(|l| l.starts_with("covobs: error: covobs' output directory"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(loud.contains("No space left on device"), "{loud}");
    // Every dump accounted: the ones not written are lost, and the reason is covobs' own.
    let lost = summary_count(&stderr, "lost");
    assert!(lost > 0, "{stderr}");
    let events = covobs.events().to_vec();
    let lost_events: Vec<&Value> = of_kind(&events, "lost");
    assert!(!lost_events.is_empty());
    for l in &lost_events {
        let reason = l.s("reason");
        assert!(
            reason.contains("covobs' output directory") && reason.contains("No space left"),
            "{l}"
        );
        assert!(
            !reason.contains("gone") && !reason.contains("replaced"),
            "{l}"
        );
    }
    let dump_ends = of_kind(&events, "dump_end").len() as u64;
    let artifacts = of_kind(&events, "artifact").len() as u64;
    assert_eq!(summary_count(&stderr, "artifacts"), artifacts, "{stderr}");
    assert!(
        artifacts + lost >= dump_ends,
        "{dump_ends} dumps ended, {artifacts} artifacts, {lost} lost"
    );
    assert!(alive(pid), "the target died");

    // Nothing half-written stays, and the end of the session found room (the reserve).
    let written = files(&out);
    for (path, size) in &written {
        assert!(*size > 0, "{} is empty", path.display());
        assert!(
            !path.ends_with(".covobs-reserve"),
            "the reserve was left behind"
        );
    }
    let text = std::fs::read_to_string(out.join("events.jsonl")).expect("events.jsonl");
    let logged: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let session = read_json(&out.join("session.json"));
    // The reserve left room for the end of the session: its losses are in the session itself.
    println!(
        "events not written after the fault: {}",
        session["output"]["events_not_written"]
    );
    assert_eq!(of_kind(&logged, "lost").len() as u64, lost, "{text}");
    let fault = session["output"]["fault"].as_str().unwrap_or_default();
    assert!(fault.contains("No space left on device"), "{session}");
    assert_eq!(
        session["counters"]["lost"].as_u64(),
        Some(lost),
        "{session}"
    );

    // With room again, what was written is a session the report takes whole.
    std::fs::remove_file(&filler).expect("remove filler");
    let report = Command::new(covobs_bin())
        .arg("report")
        .arg(&out)
        .output()
        .expect("covobs report");
    println!("{}", String::from_utf8_lossy(&report.stdout));
    assert!(report.status.success(), "{report:?}");
    assert!(
        !String::from_utf8_lossy(&report.stderr).contains("left out"),
        "{report:?}"
    );
    drop(covobs);
    drop(target);
    drop(mnt);
}

#[test]
fn the_session_directory_removed_mid_session_stops_covobs_loudly() {
    require_root();
    let tmp = TempDir::new("fault-removed");
    let target = start_target(tmp.path());
    let pid = target.pid();
    let out = tmp.path().join("out");
    let mut covobs = attach(&[
        "--pid",
        &pid.to_string(),
        "--interval",
        "100ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    covobs.wait_event(T, "3 artifacts", |e| {
        e.kind() == "artifact" && e["seq"].as_u64() >= Some(3)
    });
    // covobs keeps writing while the tree is removed: like `rm -rf`, try again until it is gone.
    let mut tries = 0;
    while out.exists() {
        tries += 1;
        if let Err(e) = std::fs::remove_dir_all(&out) {
            assert!(tries < 100, "rm -rf {}: {e}", out.display());
        }
    }
    let removed_at = Instant::now();
    let mut said_after = None;
    while removed_at.elapsed() < T {
        if covobs.stderr().contains("covobs: error: ") {
            said_after = Some(removed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = covobs.wait(T);
    let stderr = covobs.stderr();
    println!("removed; said after {said_after:?}\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let loud = stderr
        .lines()
        .find(|l| l.starts_with("covobs: error: covobs' output directory"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(loud.contains("the directory was removed"), "{loud}");
    let lost = summary_count(&stderr, "lost");
    let events = covobs.events().to_vec();
    for l in of_kind(&events, "lost") {
        assert!(l.s("reason").contains("covobs' output directory"), "{l}");
    }
    println!("lost {lost}");
    // Nothing recreated it.
    assert!(!out.exists());
    assert!(alive(pid), "the target died");
    drop(target);
}
