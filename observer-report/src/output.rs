//! Writing `report/`: everything goes to a temporary directory inside the session first, which
//! then takes the place of the old report in one step (an atomic exchange when there is one), so
//! a failed or interrupted report leaves the previous one, never half of a new one.
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    Format, ReportError, ReportOptions, ReportSummary, bisect_report, cobertura, html, lcov,
    session::Session,
    summary::{ReportData, SummaryFile},
    timeline::TimelineFile,
};

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file that must not exist yet.
pub fn create(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_err(path))?;
    f.write_all(bytes).map_err(write_err(path))?;
    Ok(())
}

fn json_bytes(v: &impl serde::Serialize, path: &Path) -> Result<Vec<u8>, ReportError> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| ReportError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    b.push(b'\n');
    Ok(b)
}

/// Write the report of `data` into `<session>/report/`.
pub fn write_report(
    session: &Session,
    data: &ReportData,
    opts: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let staging = tempfile::Builder::new()
        .prefix(".report-")
        .tempdir_in(&session.dir)
        .map_err(write_err(&session.dir))?;
    let root = staging.path();
    let mut written: Vec<PathBuf> = Vec::new();
    // bisect_ppx's own reports first: the index links them and the summary has their warnings.
    let bisect = bisect_report::write(root, &data.bisect, opts);
    // Labels (docs/labels.md): a failure leaves them out, not the report.
    let (label_files, line_labels) = super::labels::write_into_report(session, root, opts)
        .unwrap_or_else(|e| {
            tracing::warn!("labels are not in the report: {e}");
            Default::default()
        });
    let patched;
    let data = if bisect.external.is_empty() && bisect.warnings.is_empty() && line_labels.is_empty()
    {
        data
    } else {
        let mut d = data.clone();
        d.external.extend(bisect.external);
        d.warnings.extend(bisect.warnings);
        d.line_labels = line_labels;
        patched = d;
        &patched
    };
    if opts.formats.contains(&Format::Lcov) {
        let p = root.join("coverage.lcov");
        create(&p, lcov::write(&data.coverage).as_bytes())?;
        written.push(PathBuf::from("coverage.lcov"));
    }
    if opts.formats.contains(&Format::Html) {
        html::write(&root.join("html"), data)?;
        written.push(PathBuf::from("html/index.html"));
    }
    if opts.formats.contains(&Format::Json) {
        let p = root.join("summary.json");
        create(&p, &json_bytes(&SummaryFile::of(data), &p)?)?;
        written.push(PathBuf::from("summary.json"));
        let p = root.join("timeline.json");
        let t = TimelineFile {
            version: 1,
            points: &data.timeline,
        };
        create(&p, &json_bytes(&t, &p)?)?;
        written.push(PathBuf::from("timeline.json"));
    }
    if opts.formats.contains(&Format::Cobertura) {
        let p = root.join("coverage.cobertura.xml");
        create(&p, cobertura::write(data).as_bytes())?;
        written.push(PathBuf::from("coverage.cobertura.xml"));
    }
    written.extend(bisect.written);
    written.extend(label_files);
    // Every file and directory of the report with the session's modes (other tools wrote some).
    opts.modes
        .apply_tree(root)
        .map_err(|e| write_err(root)(std::io::Error::other(e.to_string())))?;
    let dest = session.dir.join("report");
    swap_into_place(root, &dest)?;
    // The staging directory now holds the previous report (or nothing): dropped with it.
    drop(staging);
    Ok(ReportSummary {
        outputs: written.into_iter().map(|p| dest.join(p)).collect(),
        dir: dest,
        totals: data.totals,
        files: data.files.len(),
        artifacts: data.artifacts,
        reported: data.reported(),
        excluded: data.excluded.clone(),
        warnings: data.warnings.clone(),
    })
}

/// Put `staging` at `dest`: exchanged atomically with an existing `dest` (which then sits at
/// `staging`), or renamed when there is none.
pub(crate) fn swap_into_place(staging: &Path, dest: &Path) -> Result<(), ReportError> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => exchange(staging, dest).map_err(write_err(dest)),
        Ok(_) => Err(write_err(dest)(std::io::Error::other(
            "exists and is not a directory; covobs leaves it alone",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::rename(staging, dest).map_err(write_err(dest))
        }
        Err(e) => Err(write_err(dest)(e)),
    }
}

/// renameat2(RENAME_EXCHANGE) as a raw system call: nix wraps it for glibc only, and the musl
/// covobs is statically linked with has no wrapper.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path with a NUL byte"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths that renameat2 only reads; plain integer flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_an_old_report_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("report");
        let a = dir.path().join("a");
        fs::create_dir(&a).expect("mkdir");
        fs::write(a.join("one"), "1").expect("write");
        swap_into_place(&a, &dest).expect("rename");
        assert!(dest.join("one").exists());
        assert!(!a.exists());
        let b = dir.path().join("b");
        fs::create_dir(&b).expect("mkdir");
        fs::write(b.join("two"), "2").expect("write");
        swap_into_place(&b, &dest).expect("exchange");
        assert!(dest.join("two").exists());
        assert!(!dest.join("one").exists());
        // The old report is where the new one was, for the caller to remove.
        assert!(b.join("one").exists());
        // A file in the way is left alone.
        let c = dir.path().join("c");
        fs::create_dir(&c).expect("mkdir");
        let file = dir.path().join("file");
        fs::write(&file, "x").expect("write");
        assert!(swap_into_place(&c, &file).is_err());
        // create() never overwrites.
        assert!(create(&file, b"y").is_err());
    }
}
