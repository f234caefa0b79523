//! The guest's initramfs: the host's `busybox` (busybox-static) and `init.sh` as `/init`,
//! packed with `cpio -H newc`, cached in `/var/cache/covobs/initramfs/<key>/initramfs.cpio`
//! (key = hash of busybox, the init script and this recipe).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::cache::{self, Lock};

const RECIPE: &str = "covobs-initramfs-recipe-1: /bin/busybox, /init, /dev/console, cpio newc";
const BUSYBOX: &str = "/bin/busybox";
/// PID 1 of the guest.
pub const INIT_SH: &str = include_str!("init.sh");

/// The cached initramfs for the current busybox and init script, built if needed.
pub fn ensure() -> Result<PathBuf> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (Debian package busybox-static; ./dev setup installs it)")
    })?;
    let material = format!("{RECIPE}\n{}\n{INIT_SH}", cache::sha256_hex(&busybox)?);
    let key = &cache::sha256_hex(material.as_bytes())?[..16];
    let dir = cache::root().join("initramfs");
    let entry = dir.join(key);
    let image = entry.join("initramfs.cpio");
    if image.is_file() {
        return Ok(image);
    }
    let _lock = Lock::acquire(&dir)?;
    if image.is_file() {
        return Ok(image);
    }
    cache::remove_stale_temps(&dir)?;
    let tmp = dir.join(format!(".tmp-{key}-{}", std::process::id()));
    build(&tmp)?;
    std::fs::rename(tmp.join("entry"), &entry)
        .with_context(|| format!("installing {}", entry.display()))?;
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    eprintln!("[vm] initramfs {key} built in {}", entry.display());
    Ok(image)
}

fn build(tmp: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tmp.join("root");
    for d in ["bin", "dev", "proc", "sys", "newroot"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    let init = root.join("init");
    std::fs::write(&init, INIT_SH)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    crate::run(
        Command::new("mknod")
            .arg(root.join("dev/console"))
            .args(["c", "5", "1"]),
    )
    .context("creating /dev/console in the initramfs (needs root)")?;
    let entry = tmp.join("entry");
    std::fs::create_dir_all(&entry)?;
    let image = entry.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 > \"$1\"")
        .arg("sh")
        .arg(&image)
        .current_dir(&root)
        .status()
        .context("spawning find | cpio")?;
    if !status.success() {
        bail!("packing the initramfs with cpio failed: {status}");
    }
    Ok(())
}
