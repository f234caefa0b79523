//! The reporting stage builds without the eBPF side (docs/architecture.md, "A reporting-only
//! machine"): nothing in covobs-report's dependency tree may be aya, the eBPF programs, or the
//! observer crate (whose build script compiles the eBPF programs).
use std::process::Command;

#[test]
fn the_report_crate_depends_on_nothing_of_ebpf() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--package",
            "covobs-report",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"covobs-report") && crates.contains(&"covobs-layout"),
        "not the tree of covobs-report:\n{tree}"
    );
    let ebpf: Vec<&&str> = crates
        .iter()
        .filter(|c| c.starts_with("aya") || **c == "covobs-ebpf" || **c == "covobs")
        .collect();
    assert!(
        ebpf.is_empty(),
        "covobs-report depends on {ebpf:?}:\n{tree}"
    );
}
