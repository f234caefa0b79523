//! The kernel config fragment (`kernel/covobs-kcov.config`) and the check that Kconfig kept
//! what it asks for: `olddefconfig` silently drops options whose dependencies are missing.
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// One line of a fragment: `CONFIG_X=value` or `# CONFIG_X is not set` (value `n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// Parse a fragment or a full .config.
pub fn parse(text: &str) -> Vec<Setting> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.strip_suffix(" is not set")?;
                name.starts_with("CONFIG_").then(|| Setting {
                    name: name.to_owned(),
                    value: "n".to_owned(),
                })
            } else {
                let (name, value) = line.split_once('=')?;
                name.starts_with("CONFIG_").then(|| Setting {
                    name: name.to_owned(),
                    value: value.to_owned(),
                })
            }
        })
        .collect()
}

/// Every `=y` of the fragment must be `=y` in the final .config, and every other explicit
/// value must be kept too (`n` = absent or "is not set"). Fails listing what was dropped.
pub fn verify(fragment: &Path, dot_config: &Path) -> Result<()> {
    let wanted = parse(
        &std::fs::read_to_string(fragment)
            .with_context(|| format!("reading {}", fragment.display()))?,
    );
    let have = parse(
        &std::fs::read_to_string(dot_config)
            .with_context(|| format!("reading {}", dot_config.display()))?,
    );
    let value_of = |name: &str| {
        have.iter()
            .rev()
            .find(|s| s.name == name)
            .map_or("n", |s| s.value.as_str())
    };
    let dropped: Vec<String> = wanted
        .iter()
        .filter(|w| value_of(&w.name) != w.value)
        .map(|w| {
            format!(
                "{}={} (final .config: {})",
                w.name,
                w.value,
                value_of(&w.name)
            )
        })
        .collect();
    if !dropped.is_empty() {
        bail!(
            "Kconfig dropped {} setting(s) of {} (unmet dependencies?):\n  {}",
            dropped.len(),
            fragment.display(),
            dropped.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_lists_what_kconfig_dropped() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("covobs-kconfig-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (fragment, config) = (dir.join("fragment"), dir.join(".config"));
        std::fs::write(
            &fragment,
            "CONFIG_KCOV=y\nCONFIG_BPF=y\n# CONFIG_VT is not set\nCONFIG_NR_CPUS=8\n",
        )?;
        std::fs::write(
            &config,
            "CONFIG_BPF=y\n# CONFIG_KCOV is not set\nCONFIG_NR_CPUS=8\n",
        )?;
        let err = verify(&fragment, &config).err().map(|e| e.to_string());
        std::fs::write(
            &config,
            "CONFIG_KCOV=y\nCONFIG_BPF=y\n# CONFIG_VT is not set\nCONFIG_NR_CPUS=8\n",
        )?;
        let ok = verify(&fragment, &config);
        std::fs::remove_dir_all(&dir)?;
        let err = err.unwrap_or_default();
        assert!(err.contains("dropped 1 setting"), "{err}");
        assert!(err.contains("CONFIG_KCOV=y (final .config: n)"), "{err}");
        ok
    }

    #[test]
    fn parses_set_and_unset_lines() {
        let s = parse("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\nFOO=1\n");
        assert_eq!(
            s,
            vec![
                Setting {
                    name: "CONFIG_A".into(),
                    value: "y".into()
                },
                Setting {
                    name: "CONFIG_B".into(),
                    value: "n".into()
                },
                Setting {
                    name: "CONFIG_C".into(),
                    value: "\"x\"".into()
                },
            ]
        );
    }
}
