//! Session directories built by hand the way `covobs attach` lays them out (docs/output.md), from
//! real coverage runs: a C program built with Debian's clang 14, its raw profiles laid out as
//! artifacts with their metadata. `covobs report` tests (report.rs, report_untrusted.rs) use them.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use crate::run_ok;

pub const C_SOURCE: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int classify(int x) {
    if (x > 10 && x < 100)
        return 1;
    else if (x >= 100)
        return 2;
    return 0;
}

static unsigned long work(int n) {
    unsigned long acc = 0;
    for (int i = 0; i < n; i++) {
        if (i % 3 == 0)
            acc += (unsigned long)i * 7;
        else
            acc ^= (unsigned long)i;
    }
    return acc;
}

static void never_called(void) {
    puts("never");
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    printf("class %d\n", classify(n));
    if (n > 5)
        printf("work %lu\n", work(n));
    if (argc > 2 && strcmp(argv[2], "never") == 0)
        never_called();
    return 0;
}
"#;

/// A tool the set-up installs (./dev: clang-14, llvm-14); the test fails if it is missing.
pub fn tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: the set-up installs clang-14 and llvm-14 (./dev setup)"
    );
    p
}

pub const LLVM14: &str = "/usr/lib/llvm-14/bin";

pub fn build_id(binary: &Path) -> String {
    let notes = run_ok(Command::new("readelf").arg("-n").arg(binary));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no build id", binary.display()))
}

pub fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A program run once with its profile written to `profraw`; returns the pid it had.
pub fn run_instrumented(binary: &Path, profraw: &Path, args: &[&str]) -> u32 {
    let child = Command::new(binary)
        .args(args)
        .env("LLVM_PROFILE_FILE", profraw)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the instrumented program");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{} {args:?} failed", binary.display());
    assert!(profraw.exists(), "{} wrote no profile", binary.display());
    pid
}

/// Builds a session directory the way covobs attach lays it out.
pub struct SessionBuilder {
    pub dir: PathBuf,
    pub module: Value,
    pub comm: String,
}

impl SessionBuilder {
    pub fn new(
        dir: &Path,
        binary: &Path,
        comm: &str,
        producer: Option<&str>,
        llvm_major: Option<u32>,
    ) -> Self {
        let id = build_id(binary);
        let name = binary
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let copy = format!("modules/{id}/{name}");
        fs::create_dir_all(dir.join(format!("modules/{id}"))).expect("mkdir modules");
        fs::copy(binary, dir.join(&copy)).expect("copy module");
        let mut module = json!({
            "path": binary.to_string_lossy(),
            "build_id": id,
            "copy": copy,
        });
        if let Some(p) = producer {
            module["producer"] = json!(p);
        }
        if let Some(m) = llvm_major {
            module["llvm_major"] = json!(m);
        }
        fs::write(
            dir.join("session.json"),
            serde_json::to_string_pretty(&json!({
                "covobs_version": "0.1.0",
                "command": ["covobs", "attach", "--name", comm],
                "kernel": "test",
                "targets": [{"pid": 1, "comm": comm, "exe": binary.to_string_lossy()}],
                "counters": {"events": 0, "artifacts": 0, "lost": 0, "ring_buffer_drops": 0, "dumps_triggered": 0}
            }))
            .expect("json"),
        )
        .expect("write session.json");
        Self {
            dir: dir.to_path_buf(),
            module,
            comm: comm.to_string(),
        }
    }

    /// Lay out `bytes` as artifact `seq` of `pid`, with metadata as the collector writes it.
    pub fn artifact(&self, seq: u64, pid: u32, bytes: &[u8], valid: bool) -> PathBuf {
        let pdir = self.dir.join(format!("{pid}-{}", self.comm));
        fs::create_dir_all(&pdir).expect("mkdir pid dir");
        let stem = format!("{seq:06}-llvm");
        let file = pdir.join(format!("{stem}.profraw"));
        fs::write(&file, bytes).expect("write artifact");
        let end_ns = 1_000_000_000 * seq;
        let meta = json!({
            "seq": seq, "runtime": "llvm", "pid": pid, "tid": pid, "comm": self.comm,
            "trigger": "signal", "start_ns": end_ns - 1000, "end_ns": end_ns,
            "collected_ns": end_ns + 1000, "bytes": bytes.len(),
            "checksum": format!("sha256:{}", sha256(&file)), "valid": valid,
            "file": format!("{stem}.profraw"),
            "source": {"path": "/tmp/default.profraw", "offset": 0, "inode": 1, "dev": 1},
            "format": {"name": "llvm-raw-profile", "version": 8},
            "module": self.module,
        });
        let meta_path = pdir.join(format!("{stem}.json"));
        fs::write(
            &meta_path,
            serde_json::to_string_pretty(&meta).expect("json"),
        )
        .expect("write metadata");
        meta_path
    }
}

/// Compile the C program with clang 14 coverage flags into `dir`.
pub fn build_c(dir: &Path, name: &str) -> PathBuf {
    let clang = tool("/usr/bin/clang-14");
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, C_SOURCE).expect("write source");
    let bin = dir.join(name);
    run_ok(
        Command::new(clang)
            .args([
                "-fprofile-instr-generate",
                "-fcoverage-mapping",
                "-O0",
                "-o",
            ])
            .arg(&bin)
            .arg(&src),
    );
    bin
}
