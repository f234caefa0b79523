//! bisect_ppx's own reports beside covobs': `bisect-ppx-report html` into `report/bisect/html/`
//! and `bisect-ppx-report cobertura` into `report/bisect/cobertura.xml`, over each process's
//! latest `.coverage` file (its counts are cumulative: giving every dump would count a hit once
//! per dump), with the directories covobs found the sources in as `--source-path`.
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
    if inputs.files.is_empty() || !(html || cobertura) {
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
    let common = |cmd: &mut Command| {
        cmd.arg("--ignore-missing-files");
        for r in &inputs.source_roots {
            cmd.arg(format!("--source-path={}", r.display()));
        }
    };
    let mut run = |what: &str, rel: &str, name: &str, args: &dyn Fn(&mut Command)| {
        let mut cmd = Command::new(&tool);
        cmd.arg(what);
        common(&mut cmd);
        args(&mut cmd);
        cmd.args(&inputs.files)
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
