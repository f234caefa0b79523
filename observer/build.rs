//! Builds the eBPF programs (observer-ebpf) with the pinned nightly named in
//! observer-ebpf/rust-toolchain.toml, and embeds the object via OUT_DIR.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../observer-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    let text = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let channel = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel").map(str::trim))
        .and_then(|l| l.strip_prefix('='))
        .map(|l| l.trim().trim_matches('"').to_owned())
        .ok_or_else(|| anyhow!("no channel in {}", toolchain_file.display()))?;
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path")?.to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "covobs-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&channel),
    )
}
