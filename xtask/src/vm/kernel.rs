//! `cargo xtask kernel`: the kcov + BPF + BTF test kernel, built from Debian's
//! `linux-source-6.1` with the fragment `kernel/covobs-kcov.config`, cached in
//! `/var/cache/covobs/kernel/<key>/` (key = hash of package version, fragment, gcc, pahole
//! and this recipe's version).
//!
//! A cache entry holds `bzImage`, `vmlinux` (DWARF 5 + BTF, for symbolization), `config`,
//! `System.map`, `build-info.json` and `src/`: a copy of the kernel source and generated
//! files this kernel was compiled from (those named by the build's `.*.cmd` dependency
//! files). The DWARF of `vmlinux` names them by their path under `src/`
//! (`-fdebug-prefix-map`), so `addr2line -e vmlinux` prints paths that exist.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::cache::{self, Lock};
use super::{kconfig, sources};

/// Bump when the build steps below change in a way that changes the result.
const RECIPE: &str = "covobs-kernel-recipe-1: tinyconfig + kvm_guest.config + fragment; \
                      olddefconfig; make bzImage KCFLAGS=-fdebug-prefix-map=<tree>=<entry>/src";
const PACKAGE: &str = "linux-source-6.1";
const TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// A built kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
}

impl Kernel {
    fn at(dir: PathBuf) -> Self {
        Kernel {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            dir,
        }
    }

    fn is_complete(&self) -> bool {
        self.bzimage.is_file()
            && self.vmlinux.is_file()
            && self.dir.join("build-info.json").is_file()
    }
}

/// What the cache key is made of.
struct Inputs {
    package_version: String,
    fragment: PathBuf,
    fragment_text: String,
    gcc: String,
    pahole: String,
}

impl Inputs {
    fn gather() -> Result<Self> {
        let package_version =
            cache::output_of(Command::new("dpkg-query").args(["-W", "-f=${Version}", PACKAGE]))
                .with_context(|| format!("{PACKAGE} is not installed (./dev setup installs it)"))?;
        if !Path::new(TARBALL).is_file() {
            bail!("{TARBALL} is missing although {PACKAGE} {package_version} is installed");
        }
        let fragment = fragment_path();
        let fragment_text = std::fs::read_to_string(&fragment)
            .with_context(|| format!("reading {}", fragment.display()))?;
        let gcc = cache::output_of(Command::new("gcc").arg("--version"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let pahole = cache::output_of(Command::new("pahole").arg("--version"))?;
        Ok(Inputs {
            package_version,
            fragment,
            fragment_text,
            gcc,
            pahole,
        })
    }

    fn key(&self) -> Result<String> {
        let material = format!(
            "{RECIPE}\n{PACKAGE} {}\n{}\n{}\n--- fragment ---\n{}",
            self.package_version, self.gcc, self.pahole, self.fragment_text
        );
        Ok(cache::sha256_hex(material.as_bytes())?[..16].to_owned())
    }
}

/// The project's config fragment.
pub fn fragment_path() -> PathBuf {
    crate::workspace_root().join("kernel/covobs-kcov.config")
}

fn kernels_dir() -> PathBuf {
    cache::root().join("kernel")
}

/// The cached kernel for the current inputs, building it first if needed.
pub fn ensure() -> Result<Kernel> {
    let started = Instant::now();
    let inputs = Inputs::gather()?;
    let key = inputs.key()?;
    let kernel = Kernel::at(kernels_dir().join(&key));
    if kernel.is_complete() {
        return Ok(kernel);
    }
    let _lock = Lock::acquire(&kernels_dir())?;
    if kernel.is_complete() {
        return Ok(kernel); // another process built it while we waited
    }
    if kernel.dir.exists() {
        bail!(
            "{} exists but is incomplete; remove it and retry",
            kernel.dir.display()
        );
    }
    cache::remove_stale_temps(&kernels_dir())?;
    let tmp = kernels_dir().join(format!(".tmp-{key}-{}", std::process::id()));
    let result = build(&inputs, &key, &tmp, &kernel.dir);
    if result.is_err() {
        eprintln!(
            "[vm] kernel build failed; its tree is left in {}",
            tmp.display()
        );
        return result.map(|()| kernel);
    }
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    eprintln!(
        "[vm] kernel {key} built and cached in {} (cold build took {}m{:02}s)",
        kernel.dir.display(),
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60
    );
    Ok(kernel)
}

fn build(inputs: &Inputs, key: &str, tmp: &Path, entry: &Path) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let log_path = tmp.join("build.log");
    eprintln!(
        "[vm] building kernel {key} from {PACKAGE} {} (5-8 min on 2 cores); log: {}",
        inputs.package_version,
        log_path.display()
    );
    crate::run(Command::new("tar").args(["-xf", TARBALL, "-C"]).arg(tmp))?;
    let tree = tmp.join("linux-source-6.1");
    if !tree.join("Makefile").is_file() {
        bail!("{TARBALL} did not unpack into {}", tree.display());
    }
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let step = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..])
            .current_dir(&tree)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?);
        let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); last lines of {}:\n{}",
                args.join(" "),
                log_path.display(),
                tail(&log_path, 40)
            );
        }
        Ok(())
    };
    let fragment = inputs.fragment.to_string_lossy();
    step(&["make", "ARCH=x86_64", "tinyconfig"])?;
    step(&[
        "scripts/kconfig/merge_config.sh",
        "-m",
        ".config",
        "kernel/configs/kvm_guest.config",
        &fragment,
    ])?;
    step(&["make", "ARCH=x86_64", "olddefconfig"])?;
    // Fail before spending minutes on a kernel that lacks what was asked for.
    kconfig::verify(&inputs.fragment, &tree.join(".config"))?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let src_dir = entry.join("src");
    let kcflags = format!(
        "KCFLAGS=-fdebug-prefix-map={}={}",
        tree.display(),
        src_dir.display()
    );
    let jobs = format!("-j{jobs}");
    step(&["make", "ARCH=x86_64", &jobs, &kcflags, "bzImage"])?;
    kconfig::verify(&inputs.fragment, &tree.join(".config"))
        .context("the .config changed during the build")?;
    let build_secs = started.elapsed().as_secs();

    // Stage the entry next to the tree, then rename it into place in one step.
    let stage = tmp.join("entry");
    std::fs::create_dir(&stage)?;
    std::fs::rename(tree.join("vmlinux"), stage.join("vmlinux"))?;
    std::fs::copy(tree.join("arch/x86/boot/bzImage"), stage.join("bzImage"))?;
    std::fs::copy(tree.join(".config"), stage.join("config"))?;
    std::fs::copy(tree.join("System.map"), stage.join("System.map"))?;
    let copied = sources::copy_compiled_sources(&tree, &stage.join("src"))?;
    let release =
        std::fs::read_to_string(tree.join("include/config/kernel.release")).unwrap_or_default();
    let info = format!(
        "{{\n  \"key\": {},\n  \"package\": {},\n  \"package_version\": {},\n  \
         \"tarball\": {},\n  \"kernel_release\": {},\n  \"fragment\": {},\n  \
         \"fragment_sha256\": {},\n  \"gcc\": {},\n  \"pahole\": {},\n  \
         \"build_seconds\": {build_secs},\n  \"built_at_unix\": {},\n  \
         \"source_files\": {},\n  \"source_bytes\": {},\n  \"source_dir\": {}\n}}\n",
        cache::json_str(key),
        cache::json_str(PACKAGE),
        cache::json_str(&inputs.package_version),
        cache::json_str(TARBALL),
        cache::json_str(release.trim()),
        cache::json_str(&inputs.fragment.to_string_lossy()),
        cache::json_str(&cache::sha256_hex(inputs.fragment_text.as_bytes())?),
        cache::json_str(&inputs.gcc),
        cache::json_str(&inputs.pahole),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        copied.files,
        copied.bytes,
        cache::json_str(&src_dir.to_string_lossy()),
    );
    std::fs::write(stage.join("build-info.json"), info)?;
    std::fs::rename(&stage, entry)
        .with_context(|| format!("installing {} as {}", stage.display(), entry.display()))?;
    eprintln!(
        "[vm] kept {} source files ({:.1} MB) in {}",
        copied.files,
        copied.bytes as f64 / 1e6,
        src_dir.display()
    );
    Ok(())
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
