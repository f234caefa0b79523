//! bisect_ppx's own reports beside covobs': `bisect-ppx-report html` into `report/bisect/html/`
//! and `bisect-ppx-report cobertura` into `report/bisect/cobertura.xml`, over each process's
//! latest dump (its counts are cumulative: giving every dump would count a hit once per dump).
//!
//! The names in a `.coverage` file are the target's, and bisect-ppx-report (run as root) would
//! look each up under every `--source-path` and put what it finds in its HTML. So it gets
//! rewritten dumps holding only the files whose source covobs found and checked
//! ([`super::bisect`]), and one source root: a scratch tree of links from the recorded names to
//! those sources.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{
    Format, ReportOptions,
    error::Warning,
    programs,
    summary::{BisectInputs, ExternalReport},
};

/// What running bisect-ppx-report gave.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Written, relative to `report/`.
    pub written: Vec<PathBuf>,
    pub external: Vec<ExternalReport>,
    pub warnings: Vec<Warning>,
}

fn warning(message: String) -> Warning {
    Warning {
        module: Some("bisect-ppx-report".into()),
        message,
    }
}

/// Write bisect-ppx-report's HTML and Cobertura (as `opts.formats` asks) under `root/bisect/`.
/// A missing tool or a failed run is a warning: covobs' own report has the OCaml coverage.
pub fn write(root: &Path, inputs: &BisectInputs, opts: &ReportOptions) -> Outcome {
    let mut out = Outcome::default();
    let html = opts.formats.contains(&Format::Html);
    let cobertura = opts.formats.contains(&Format::Cobertura);
    // No OCaml coverage, or none whose source was found (a warning says so already).
    if inputs.dumps.is_empty() || !(html || cobertura) {
        return out;
    }
    let Some(tool) = programs::find(&["bisect-ppx-report"], &opts.tool_dirs) else {
        out.warnings.push(warning(format!(
            "not found, so report/bisect/ (bisect_ppx's own HTML and Cobertura) is not written; \
             covobs' report has the OCaml coverage. Looked in: {}. Install bisect_ppx \
             (`./dev setup` builds it into .tools/ocaml/bin) or put it on PATH",
            programs::search_dirs(&opts.tool_dirs)
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
        return out;
    };
    let scratch = match Scratch::new(inputs) {
        Ok(s) => s,
        Err(why) => {
            out.warnings.push(warning(format!(
                "report/bisect/ is not written: preparing its input failed: {why}"
            )));
            return out;
        }
    };
    let common = |cmd: &mut Command| {
        cmd.arg("--ignore-missing-files")
            .arg(format!("--source-path={}", scratch.sources.display()));
    };
    let mut run = |what: &str, rel: &str, name: &str, args: &dyn Fn(&mut Command)| {
        let mut cmd = Command::new(&tool);
        cmd.arg(what);
        common(&mut cmd);
        args(&mut cmd);
        cmd.args(&scratch.dumps)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match cmd.output() {
            Ok(o) if o.status.success() && root.join(rel).exists() => {
                out.written.push(PathBuf::from(rel));
                out.external.push(ExternalReport {
                    name: name.into(),
                    path: rel.into(),
                });
            }
            Ok(o) => out.warnings.push(warning(format!(
                "`{} {what}` failed ({}): {}",
                tool.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
            Err(e) => out
                .warnings
                .push(warning(format!("cannot run {}: {e}", tool.display()))),
        }
    };
    if html {
        let dir = root.join("bisect/html");
        run(
            "html",
            "bisect/html/index.html",
            "bisect-ppx-report HTML (OCaml)",
            &|c: &mut Command| {
                c.arg("--title=OCaml coverage (bisect_ppx)")
                    .arg("-o")
                    .arg(&dir);
            },
        );
    }
    if cobertura {
        let file = root.join("bisect/cobertura.xml");
        run(
            "cobertura",
            "bisect/cobertura.xml",
            "bisect-ppx-report Cobertura (OCaml)",
            &|c: &mut Command| {
                c.arg(&file);
            },
        );
    }
    out
}

/// The vetted dumps and the source tree bisect-ppx-report reads.
struct Scratch {
    _dir: tempfile::TempDir,
    dumps: Vec<PathBuf>,
    sources: PathBuf,
}

impl Scratch {
    fn new(inputs: &BisectInputs) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("covobs-bisect-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        let sources = dir.path().join("src");
        for (name, path) in &inputs.sources {
            let rel = Path::new(name);
            // Absolute names are used as they are (covobs checked that very file).
            if rel.is_absolute() {
                continue;
            }
            let link = sources.join(rel);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::os::unix::fs::symlink(path, &link)
                .map_err(|e| format!("{}: {e}", link.display()))?;
        }
        std::fs::create_dir_all(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
        let mut dumps = Vec::new();
        for (i, files) in inputs.dumps.iter().enumerate() {
            let p = dir.path().join(format!("{i}.coverage"));
            std::fs::write(&p, super::bisect::write(files))
                .map_err(|e| format!("{}: {e}", p.display()))?;
            dumps.push(p);
        }
        Ok(Self {
            _dir: dir,
            dumps,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bisect::InstrumentedFile;

    #[test]
    fn bisect_ppx_report_writes_its_html_and_cobertura_from_checked_inputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("m.ml");
        std::fs::write(&src, "let a = 1\nlet b = 2\n").expect("source");
        let root = dir.path().join("report");
        std::fs::create_dir(&root).expect("mkdir");
        let file = |counts: Vec<u64>| InstrumentedFile {
            name: "lib/m.ml".into(),
            points: vec![8, 18],
            counts,
        };
        let inputs = BisectInputs {
            // Two processes: bisect-ppx-report adds them up.
            dumps: vec![vec![file(vec![1, 0])], vec![file(vec![2, 0])]],
            sources: BTreeMap::from([("lib/m.ml".to_string(), src)]),
        };
        let out = write(&root, &inputs, &ReportOptions::default());
        assert!(
            out.warnings.is_empty(),
            "bisect-ppx-report: the set-up builds it into .tools/ocaml/bin: {:?}",
            out.warnings
        );
        assert_eq!(
            out.written,
            [
                PathBuf::from("bisect/html/index.html"),
                PathBuf::from("bisect/cobertura.xml")
            ]
        );
        let xml = std::fs::read_to_string(root.join("bisect/cobertura.xml")).expect("xml");
        assert!(xml.contains("name=\"lib/m.ml\""), "{xml}");
        assert!(xml.contains("<line number=\"1\" hits=\"3\"/>"), "{xml}");
        assert!(xml.contains("<line number=\"2\" hits=\"0\"/>"), "{xml}");
        assert_eq!(out.external.len(), 2);
        // Only JSON asked for: nothing to run.
        let json_only = ReportOptions {
            formats: [Format::Json].into_iter().collect(),
            ..ReportOptions::default()
        };
        assert!(write(&root, &inputs, &json_only).written.is_empty());
    }
}
