//! Finding `llvm-profdata` and `llvm-cov` of the LLVM major that built a module.
//!
//! LLVM's raw profile format has no compatibility promise across majors, so every module is
//! read with tools of its own LLVM major:
//! 1. what the module was built with: the metadata's `llvm_major`, else its producer string,
//!    else the module's `.comment` section (`rustc version 1.99.1 (...)` wins over the
//!    `clang version` that compiler-rt leaves in Rust binaries; `clang version 14.0.6` -> 14);
//!    a rustc release maps to the LLVM of that installed toolchain (`rustc -vV`);
//! 2. the candidates: extra directories given in the options, every rustup toolchain's
//!    `lib/rustlib/<host>/bin` (the llvm-tools component), Debian's `/usr/lib/llvm-*/bin`, and
//!    `llvm-profdata[-N]` / `llvm-cov[-N]` on PATH, each with its version from `llvm-cov --version`;
//! 3. the choice: the toolchain of exactly that rustc release, else any toolset of that major
//!    (same full version first); none -> the module is left out with a hint on how to get one;
//! 4. when nothing tells the major, the newest toolset whose `llvm-profdata show` accepts the
//!    module's first raw profile.
use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use serde::Serialize;

/// A pair of llvm-profdata and llvm-cov from one LLVM build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Toolset {
    pub profdata: PathBuf,
    pub cov: PathBuf,
    /// "14.0.6", "23.1.1".
    pub version: String,
    pub major: u32,
    /// Where it comes from: "rustup toolchain 1.99.1-x86_64-unknown-linux-gnu", "/usr/lib/llvm-14",
    /// "PATH".
    pub origin: String,
    /// The rustc release of the rustup toolchain it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rustc_release: Option<String>,
    #[serde(skip)]
    pub rustc_commit: Option<String>,
}

impl Toolset {
    pub fn describe(&self) -> String {
        format!("LLVM {} tools from {}", self.version, self.origin)
    }
}

/// An installed rustup toolchain (whether or not it has llvm-tools).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustToolchain {
    pub name: String,
    pub release: String,
    pub commit: Option<String>,
    pub llvm_major: Option<u32>,
    pub has_llvm_tools: bool,
}

/// Everything found on this machine.
#[derive(Clone, Debug, Default)]
pub struct Toolsets {
    pub all: Vec<Toolset>,
    pub rust_toolchains: Vec<RustToolchain>,
}

/// What built a module, from a producer string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Producer {
    Rustc {
        release: String,
        commit: Option<String>,
    },
    Clang {
        version: String,
        major: u32,
    },
}

/// Parse one producer string: `rustc version 1.99.1 (58cf8f9c3 2026-10-13)`,
/// `Debian clang version 14.0.6`, `clang version 23.1.0git`, `Ubuntu clang version 18.1.3 (1)`.
/// Apple's clang numbers its releases differently from LLVM and is not recognised.
pub fn parse_producer(s: &str) -> Option<Producer> {
    let s = s.trim();
    if let Some(i) = s.find("rustc version ") {
        let rest = &s[i + "rustc version ".len()..];
        let mut words = rest.split_whitespace();
        let release = words.next()?.to_string();
        let commit = words
            .next()
            .and_then(|w| w.strip_prefix('('))
            .map(|c| c.trim_end_matches(')').to_string())
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()));
        return Some(Producer::Rustc { release, commit });
    }
    if s.contains("Apple") {
        return None;
    }
    let i = s.find("clang version ")?;
    let version: String = s[i + "clang version ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let major = version.split('.').next()?.parse().ok()?;
    Some(Producer::Clang { version, major })
}

/// The producer that instrumented a binary, from all the strings of its `.comment` section:
/// rustc if it is there (Rust binaries also carry the clang that built compiler-rt), else clang.
pub fn producer_of_comments<'a>(comments: impl IntoIterator<Item = &'a str>) -> Option<Producer> {
    let parsed: Vec<Producer> = comments.into_iter().filter_map(parse_producer).collect();
    parsed
        .iter()
        .find(|p| matches!(p, Producer::Rustc { .. }))
        .or_else(|| parsed.first())
        .cloned()
}

/// The strings of a binary's `.comment` section, and its GNU build id (hex). Reads only the
/// headers and those sections (a module copy can be large); `name` is for messages.
pub fn read_elf_notes(
    file: &fs::File,
    name: &Path,
) -> Result<(Vec<String>, Option<String>), String> {
    use object::{Object as _, ObjectSection as _};
    let cache = object::ReadCache::new(file);
    let parsed = object::File::parse(&cache)
        .map_err(|e| format!("{} is not an object file: {e}", name.display()))?;
    let comments = parsed
        .section_by_name(".comment")
        .and_then(|s| s.data().ok())
        .map(|d| {
            d.split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let build_id = parsed
        .build_id()
        .ok()
        .flatten()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect());
    Ok((comments, build_id))
}

/// "LLVM version 23.1.1-rust-1.99.1-stable" / "Debian LLVM version 14.0.6" -> "23.1.1" / "14.0.6".
pub fn parse_llvm_version(text: &str) -> Option<(String, u32)> {
    let i = text.find("LLVM version ")?;
    let version: String = text[i + "LLVM version ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let major = version.split('.').next()?.parse().ok()?;
    Some((version, major))
}

fn run_capture(cmd: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn toolset_in(dir: &Path, profdata: &str, cov: &str, origin: String) -> Option<Toolset> {
    let profdata = dir.join(profdata);
    let cov = dir.join(cov);
    if !profdata.is_file() || !cov.is_file() {
        return None;
    }
    let (version, major) = parse_llvm_version(&run_capture(&cov, &["--version"])?)?;
    Some(Toolset {
        profdata,
        cov,
        version,
        major,
        origin,
        rustc_release: None,
        rustc_commit: None,
    })
}

fn rustup_homes() -> Vec<PathBuf> {
    let mut homes = Vec::new();
    if let Some(h) = env::var_os("RUSTUP_HOME") {
        homes.push(PathBuf::from(h));
    }
    if let Some(h) = env::var_os("HOME") {
        homes.push(PathBuf::from(h).join(".rustup"));
    }
    // Under sudo, the invoking user's toolchains are the ones that built their programs.
    if let Ok(user) = env::var("SUDO_USER")
        && let Ok(Some(u)) = nix::unistd::User::from_name(&user)
    {
        homes.push(u.dir.join(".rustup"));
    }
    homes.push(PathBuf::from("/root/.rustup"));
    homes
}

fn discover_base() -> Toolsets {
    let mut found = Toolsets::default();
    let mut seen_dirs = BTreeSet::new();
    for home in rustup_homes() {
        let Ok(canon) = home.join("toolchains").canonicalize() else {
            continue;
        };
        if !seen_dirs.insert(canon.clone()) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&canon) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for tc in dirs {
            let name = tc
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(vv) = run_capture(&tc.join("bin/rustc"), &["-vV"]) else {
                continue;
            };
            let field = |k: &str| {
                vv.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let Some(release) = field("release:") else {
                continue;
            };
            let commit = field("commit-hash:");
            let llvm_major = field("LLVM version:")
                .and_then(|v| v.split('.').next().and_then(|m| m.parse().ok()));
            let bins: Vec<PathBuf> = fs::read_dir(tc.join("lib/rustlib"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect();
            let mut has_llvm_tools = false;
            for bin in bins {
                if let Some(mut t) = toolset_in(
                    &bin,
                    "llvm-profdata",
                    "llvm-cov",
                    format!("rustup toolchain {name}"),
                ) {
                    t.rustc_release = Some(release.clone());
                    t.rustc_commit = commit.clone();
                    has_llvm_tools = true;
                    found.all.push(t);
                }
            }
            found.rust_toolchains.push(RustToolchain {
                name,
                release,
                commit,
                llvm_major,
                has_llvm_tools,
            });
        }
    }
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
        })
        .collect();
    debian.sort();
    for d in debian {
        if let Some(t) = toolset_in(
            &d.join("bin"),
            "llvm-profdata",
            "llvm-cov",
            d.display().to_string(),
        ) {
            found.all.push(t);
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("llvm-profdata"))
                .collect();
            names.sort();
            for name in names {
                let suffix = &name["llvm-profdata".len()..];
                if !suffix.is_empty()
                    && !(suffix.starts_with('-') && suffix[1..].bytes().all(|b| b.is_ascii_digit()))
                {
                    continue;
                }
                let cov = format!("llvm-cov{suffix}");
                if let Some(t) = toolset_in(&dir, &name, &cov, format!("PATH ({})", dir.display()))
                {
                    found.all.push(t);
                }
            }
        }
    }
    dedup(&mut found.all);
    found
}

/// The same binaries reached through symlinks (/usr/bin/llvm-cov-14 -> /usr/lib/llvm-14/bin)
/// count once, under their first (most specific) origin.
fn dedup(all: &mut Vec<Toolset>) {
    let mut seen = BTreeSet::new();
    all.retain(|t| {
        let key = (
            fs::canonicalize(&t.profdata).unwrap_or_else(|_| t.profdata.clone()),
            fs::canonicalize(&t.cov).unwrap_or_else(|_| t.cov.clone()),
        );
        seen.insert(key)
    });
}

impl Toolsets {
    /// Discover the toolsets of this machine (cached for the process), plus `extra` directories
    /// (each holding llvm-profdata and llvm-cov), which come first.
    pub fn discover(extra: &[PathBuf]) -> Self {
        static BASE: OnceLock<Toolsets> = OnceLock::new();
        let base = BASE.get_or_init(discover_base);
        let mut all: Vec<Toolset> = extra
            .iter()
            .filter_map(|d| toolset_in(d, "llvm-profdata", "llvm-cov", d.display().to_string()))
            .collect();
        all.extend(base.all.iter().cloned());
        dedup(&mut all);
        Self {
            all,
            rust_toolchains: base.rust_toolchains.clone(),
        }
    }

    /// The LLVM major of an installed rustc release.
    pub fn rustc_llvm_major(&self, release: &str, commit: Option<&str>) -> Option<u32> {
        self.rust_toolchains
            .iter()
            .filter(|t| t.release == release)
            .find(|t| commit_matches(t.commit.as_deref(), commit))
            .or_else(|| self.rust_toolchains.iter().find(|t| t.release == release))
            .and_then(|t| t.llvm_major)
    }

    /// Pick the toolset for a module. `Err` is the message for the user: which LLVM is needed
    /// and how to get its tools.
    pub fn select(&self, need: &Need) -> Result<&Toolset, String> {
        if let Some(Producer::Rustc { release, commit }) = &need.producer {
            let exact = self.all.iter().find(|t| {
                t.rustc_release.as_deref() == Some(release)
                    && commit_matches(t.rustc_commit.as_deref(), commit.as_deref())
            });
            if let Some(t) = exact {
                return Ok(t);
            }
        }
        let Some(major) = need.major else {
            return Err(format!(
                "cannot tell which LLVM built it ({}); {}",
                need.describe(),
                self.hint(need)
            ));
        };
        let same_major: Vec<&Toolset> = self.all.iter().filter(|t| t.major == major).collect();
        if let Some(Producer::Clang { version, .. }) = &need.producer
            && let Some(t) = same_major.iter().find(|t| &t.version == version)
        {
            return Ok(t);
        }
        same_major.first().copied().ok_or_else(|| {
            format!(
                "needs LLVM {major} tools (built by {}), none found{}; {}",
                need.describe(),
                self.found_list(),
                self.hint(need)
            )
        })
    }

    fn found_list(&self) -> String {
        let majors: BTreeSet<u32> = self.all.iter().map(|t| t.major).collect();
        if majors.is_empty() {
            " (no llvm-profdata/llvm-cov at all on this machine)".to_string()
        } else {
            format!(
                " (found LLVM {})",
                majors
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    fn hint(&self, need: &Need) -> String {
        match &need.producer {
            Some(Producer::Rustc { release, commit }) => {
                let installed = self
                    .rust_toolchains
                    .iter()
                    .filter(|t| t.release == *release)
                    .find(|t| commit_matches(t.commit.as_deref(), commit.as_deref()));
                match installed {
                    Some(tc) => format!(
                        "get them with `rustup component add llvm-tools --toolchain {}`",
                        tc.name
                    ),
                    None => format!(
                        "install rustc {release} with its LLVM tools (`rustup toolchain install {} --component llvm-tools`)",
                        toolchain_name_guess(release)
                    ),
                }
            }
            Some(Producer::Clang { major, .. }) => format!(
                "get them with `apt install llvm-{major}` (or any llvm-profdata/llvm-cov {major}.x on PATH)"
            ),
            None => match need.major {
                Some(m) => format!(
                    "install llvm-profdata/llvm-cov {m}.x (`apt install llvm-{m}`, or a Rust toolchain with LLVM {m}: `rustup component add llvm-tools`)"
                ),
                None => "record the module's producer or install the LLVM tools of the compiler that built it".to_string(),
            },
        }
    }
}

/// rustup names stable releases by number; a nightly's name carries a date the release string
/// does not have.
fn toolchain_name_guess(release: &str) -> String {
    if release.contains("nightly") {
        "nightly-<date>".to_string()
    } else if release.contains("beta") {
        "beta-<date>".to_string()
    } else {
        release.to_string()
    }
}

/// Commit hashes match when one is a prefix of the other (producers print 9 digits); unknown
/// matches anything.
fn commit_matches(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.starts_with(b) || b.starts_with(a),
        _ => true,
    }
}

/// What is known about the LLVM that built a module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub major: Option<u32>,
    pub producer: Option<Producer>,
}

impl Need {
    /// From the metadata (`llvm_major`, `producer`) and the module's `.comment` strings.
    pub fn resolve(
        llvm_major: Option<u32>,
        producer: Option<&str>,
        comments: &[String],
        tools: &Toolsets,
    ) -> Self {
        let producer = producer
            .and_then(parse_producer)
            .or_else(|| producer_of_comments(comments.iter().map(String::as_str)));
        let from_producer = match &producer {
            Some(Producer::Clang { major, .. }) => Some(*major),
            Some(Producer::Rustc { release, commit }) => {
                tools.rustc_llvm_major(release, commit.as_deref())
            }
            None => None,
        };
        Self {
            major: llvm_major.or(from_producer),
            producer,
        }
    }

    pub fn describe(&self) -> String {
        match (&self.producer, self.major) {
            (Some(Producer::Rustc { release, .. }), Some(m)) => {
                format!("rustc {release}, LLVM {m}")
            }
            (Some(Producer::Rustc { release, .. }), None) => {
                format!("rustc {release}, whose LLVM is unknown here")
            }
            (Some(Producer::Clang { version, .. }), _) => format!("clang {version}"),
            (None, Some(m)) => format!("LLVM {m}"),
            (None, None) => "no producer recorded".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(major: u32, version: &str, origin: &str, rustc: Option<(&str, &str)>) -> Toolset {
        Toolset {
            profdata: PathBuf::from(format!("/{origin}/llvm-profdata")),
            cov: PathBuf::from(format!("/{origin}/llvm-cov")),
            version: version.into(),
            major,
            origin: origin.into(),
            rustc_release: rustc.map(|r| r.0.to_string()),
            rustc_commit: rustc.map(|r| r.1.to_string()),
        }
    }

    fn machine() -> Toolsets {
        Toolsets {
            all: vec![
                ts(
                    23,
                    "23.1.4",
                    "nightly",
                    Some(("1.101.0-nightly", "aaaaaaaaaaaa")),
                ),
                ts(23, "23.1.1", "stable199", Some(("1.99.1", "58cf8f9c3ffff"))),
                ts(14, "14.0.6", "usr-lib-llvm-14", None),
            ],
            rust_toolchains: vec![
                RustToolchain {
                    name: "1.99.1-x86_64-unknown-linux-gnu".into(),
                    release: "1.99.1".into(),
                    commit: Some("58cf8f9c3ffff".into()),
                    llvm_major: Some(23),
                    has_llvm_tools: true,
                },
                RustToolchain {
                    name: "1.95.0-x86_64-unknown-linux-gnu".into(),
                    release: "1.95.0".into(),
                    commit: Some("bbbbbbbbb".into()),
                    llvm_major: Some(22),
                    has_llvm_tools: false,
                },
            ],
        }
    }

    #[test]
    fn producers() {
        assert_eq!(
            parse_producer("rustc version 1.99.1 (58cf8f9c3 2026-10-13)"),
            Some(Producer::Rustc {
                release: "1.99.1".into(),
                commit: Some("58cf8f9c3".into())
            })
        );
        assert_eq!(
            parse_producer("rustc version 1.101.0-nightly (abcdef012 2026-10-29)"),
            Some(Producer::Rustc {
                release: "1.101.0-nightly".into(),
                commit: Some("abcdef012".into())
            })
        );
        assert_eq!(
            parse_producer("Debian clang version 14.0.6"),
            Some(Producer::Clang {
                version: "14.0.6".into(),
                major: 14
            })
        );
        assert_eq!(
            parse_producer("clang version 23.1.0git"),
            Some(Producer::Clang {
                version: "23.1.0".into(),
                major: 23
            })
        );
        assert_eq!(
            parse_producer("Ubuntu clang version 18.1.3 (1ubuntu1)"),
            Some(Producer::Clang {
                version: "18.1.3".into(),
                major: 18
            })
        );
        assert_eq!(
            parse_producer("GCC: (Debian 12.2.0-14+deb12u1) 12.2.0"),
            None
        );
        assert_eq!(
            parse_producer("Apple clang version 15.0.0 (clang-1500.1.0.2.5)"),
            None
        );
        // A Rust binary's .comment: rustc wins over the clang that built compiler-rt.
        let comments = [
            "clang version 23.1.0git",
            "rustc version 1.99.1 (58cf8f9c3 2026-10-13)",
            "GCC: (Debian 12.2.0-14+deb12u1) 12.2.0",
            "Linker: LLD 23.1.1",
        ];
        assert!(matches!(
            producer_of_comments(comments),
            Some(Producer::Rustc { .. })
        ));
        assert_eq!(
            producer_of_comments(["GCC: (Debian 12.2.0) 12.2.0", "Debian clang version 14.0.6"]),
            Some(Producer::Clang {
                version: "14.0.6".into(),
                major: 14
            })
        );
    }

    #[test]
    fn llvm_versions() {
        assert_eq!(
            parse_llvm_version(
                "LLVM (http://llvm.org/):\n  LLVM version 23.1.1-rust-1.99.1-stable\n"
            ),
            Some(("23.1.1".into(), 23))
        );
        assert_eq!(
            parse_llvm_version("Debian LLVM version 14.0.6\n  Optimized build."),
            Some(("14.0.6".into(), 14))
        );
        assert_eq!(parse_llvm_version("nothing"), None);
    }

    #[test]
    fn selection() {
        let m = machine();
        // rustc: the toolchain of that exact release, not the nightly of the same major.
        let need = Need::resolve(
            None,
            Some("rustc version 1.99.1 (58cf8f9c3 2026-10-13)"),
            &[],
            &m,
        );
        assert_eq!(need.major, Some(23));
        assert_eq!(m.select(&need).expect("tools").origin, "stable199");
        // clang 14 from the .comment section.
        let need = Need::resolve(None, None, &["Debian clang version 14.0.6".into()], &m);
        assert_eq!(m.select(&need).expect("tools").origin, "usr-lib-llvm-14");
        // Only the major known (metadata): any toolset of that major.
        let need = Need::resolve(Some(23), None, &[], &m);
        assert_eq!(m.select(&need).expect("tools").major, 23);
        // A rustc whose toolchain is not installed, but whose LLVM major is in the metadata:
        // same major tools do.
        let need = Need::resolve(
            Some(23),
            Some("rustc version 1.100.0 (123456789 2026-11-01)"),
            &[],
            &m,
        );
        assert_eq!(m.select(&need).expect("tools").major, 23);
    }

    #[test]
    fn missing_tools_say_what_to_install() {
        let m = machine();
        let need = Need::resolve(None, None, &["clang version 17.0.6".into()], &m);
        let e = m.select(&need).expect_err("no 17");
        assert!(e.contains("needs LLVM 17"), "{e}");
        assert!(e.contains("apt install llvm-17"), "{e}");
        assert!(e.contains("found LLVM 14, 23"), "{e}");
        // Installed toolchain without llvm-tools: the component command.
        let need = Need::resolve(
            None,
            Some("rustc version 1.95.0 (bbbbbbbbb 2026-01-01)"),
            &[],
            &m,
        );
        assert_eq!(need.major, Some(22));
        let e = m.select(&need).expect_err("no 22");
        assert!(
            e.contains(
                "rustup component add llvm-tools --toolchain 1.95.0-x86_64-unknown-linux-gnu"
            ),
            "{e}"
        );
        // A rustc that is not installed and no major: install that toolchain.
        let need = Need::resolve(
            None,
            Some("rustc version 1.90.0 (ccccccccc 2025-09-14)"),
            &[],
            &m,
        );
        let e = m.select(&need).expect_err("unknown");
        assert!(
            e.contains("rustup toolchain install 1.90.0 --component llvm-tools"),
            "{e}"
        );
    }

    #[test]
    fn this_machine_has_debian_llvm_14() {
        // The set-up installs llvm-14 (./dev): the discovery must find it with its version.
        let found = Toolsets::discover(&[]);
        assert!(
            found
                .all
                .iter()
                .any(|t| t.major == 14 && t.version.starts_with("14.")),
            "no LLVM 14 tools found: {:?}",
            found.all
        );
    }
}
