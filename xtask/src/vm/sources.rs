//! Keeps the part of a kernel tree a built kernel's DWARF refers to: the sources and headers
//! named by kbuild's `.*.cmd` dependency files (`source_<obj> := ...`, `deps_<obj> := ...`),
//! generated headers included. Tens of MB instead of the tree's GBs.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub struct Copied {
    pub files: usize,
    pub bytes: u64,
}

/// Copy every file the build's objects were compiled from into `dest`, same relative paths.
pub fn copy_compiled_sources(tree: &Path, dest: &Path) -> Result<Copied> {
    let mut cmd_files = Vec::new();
    find_cmd_files(tree, &mut cmd_files)?;
    let mut wanted = BTreeSet::new();
    for cmd in &cmd_files {
        let text = std::fs::read_to_string(cmd).unwrap_or_default();
        collect_paths(&text, &mut wanted);
    }
    let mut copied = Copied { files: 0, bytes: 0 };
    for rel in wanted {
        let rel = match rel.strip_prefix(tree) {
            Ok(r) => r.to_path_buf(),
            Err(_) if rel.is_absolute() => continue, // compiler headers outside the tree
            Err(_) => rel,
        };
        if rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            continue;
        }
        let from = tree.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let to = dest.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        copied.files += 1;
        copied.bytes += meta.len();
    }
    Ok(copied)
}

fn find_cmd_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            find_cmd_files(&entry.path(), out)?;
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(".o.cmd") {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The paths in `source_X := path` and in the continuation lines of `deps_X := \`.
fn collect_paths(cmd_file: &str, out: &mut BTreeSet<PathBuf>) {
    let mut in_deps = false;
    for line in cmd_file.lines() {
        let continues = line.trim_end().ends_with('\\');
        if let Some(rest) = line.strip_prefix("source_") {
            if let Some((_, path)) = rest.split_once(":=") {
                out.extend(path.split_whitespace().map(PathBuf::from));
            }
        } else if line.starts_with("deps_") {
            in_deps = continues;
        } else if in_deps {
            let token = line.trim().trim_end_matches('\\').trim();
            if !token.is_empty() && !token.starts_with("$(") {
                out.insert(PathBuf::from(token));
            }
            in_deps = continues;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kbuild_cmd_files() {
        let text = "cmd_fs/read_write.o := gcc -c fs/read_write.c\n\
                    \n\
                    source_fs/read_write.o := fs/read_write.c\n\
                    \n\
                    deps_fs/read_write.o := \\\n  \
                    include/linux/compiler-version.h \\\n    \
                    $(wildcard include/config/CC_VERSION_TEXT) \\\n  \
                    include/linux/kconfig.h \\\n  \
                    /usr/lib/gcc/x86_64-linux-gnu/12/include/stdarg.h \\\n\
                    \n\
                    fs/read_write.o: $(deps_fs/read_write.o)\n";
        let mut out = BTreeSet::new();
        collect_paths(text, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "/usr/lib/gcc/x86_64-linux-gnu/12/include/stdarg.h",
                "fs/read_write.c",
                "include/linux/compiler-version.h",
                "include/linux/kconfig.h",
            ]
        );
    }
}
