//! The HTML report: `index.html` (totals, coverage over time, files grouped by language, modules,
//! what was left out) and one page per source file (the source with hit counts in the gutter).
//! Static pages: no script, no fetches (a Content-Security-Policy forbids both), CSS inline,
//! everything from the coverage data or the sources escaped.
//!
//! Sources are read from the paths in the coverage data, which the observed program's binary
//! chose; covobs usually runs as root, so a source is shown only when the user who asked could
//! read it too (world-readable, or owned by the sudo user), never e.g. /etc/shadow.
use std::{
    collections::BTreeMap, fmt::Write as _, fs, io::Read as _, os::unix::fs::MetadataExt as _,
    path::Path,
};

use super::{
    ReportError, chart,
    model::{Counts, FileCoverage, Totals},
    output::create,
    summary::{FileSummary, ReportData},
};

/// Escape text for HTML and XML (element content and quoted attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline have no business in a page.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const MAX_SOURCE_BYTES: u64 = 16 << 20;

pub const CSS: &str = r#"
:root{--hit:#e6f5e6;--hit-g:#b9e3b9;--miss:#fbe3e3;--miss-g:#f3b9b9;--part:#fff4cc;--part-g:#f5dc85;--fg:#1d232a;--mut:#5b6570;--line:#dde2e7;--bg2:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;padding:24px 32px;max-width:1280px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}h3 small{color:var(--mut);font-weight:normal}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
.sub{color:var(--mut);margin:0}.sub code{font-size:13px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0}
.sides{display:flex;gap:28px;flex-wrap:wrap}.sides>section{flex:1 1 420px}.sides h2{margin-top:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:190px;background:var(--bg2)}
.card .k{color:var(--mut);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:600}.card .n{color:var(--mut);font-size:12px}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
th{background:var(--bg2);font-weight:600;font-size:12px;color:var(--mut)}
td.num,th.num{text-align:right;white-space:nowrap}
td.file{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;overflow-wrap:break-word}
table.funcs td.file{overflow-wrap:anywhere}
td.mod{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;white-space:nowrap}
.pct{white-space:nowrap;width:150px}
.bar{display:inline-block;width:60px;height:8px;background:#e8ebee;border-radius:4px;overflow:hidden;vertical-align:middle;margin-right:6px}
.bar span{display:block;height:100%}
.hi{background:#3aa655}.mid{background:#e0a526}.lo{background:#d9534f}
.pct small{color:var(--mut)}
.note{color:var(--mut)}
.warn{background:#fff8e1;border:1px solid #f0d58a;border-radius:6px;padding:8px 12px}
.warn li{margin:2px 0}
svg.chart{max-width:100%;height:auto;border:1px solid var(--line);border-radius:8px;background:#fff}
svg .grid{stroke:#eceff2}svg .axis{stroke:#9aa4ae}svg .tick,svg .label,svg .legend{font:11px system-ui,sans-serif;fill:#5b6570}
table.src{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;width:100%;table-layout:auto}
table.src td{border:0;padding:0 8px;white-space:pre;vertical-align:top}
table.src td.ln,table.src td.cnt,table.src td.br{text-align:right;color:var(--mut);user-select:none;width:1%}
table.src td.ln a{color:var(--mut)}
table.src td.code{width:100%}
table.src td.lbl{white-space:nowrap;color:var(--mut);font-size:.85em;padding-left:1em}
tr.hit td.code{background:var(--hit)}tr.hit td.cnt{background:var(--hit-g);color:var(--fg)}
tr.miss td.code{background:var(--miss)}tr.miss td.cnt{background:var(--miss-g);color:var(--fg)}
tr.part td.code{background:var(--part)}tr.part td.cnt,tr.part td.br{background:var(--part-g);color:var(--fg)}
tr:target td{outline:2px solid #0b5cad}
table.funcs tr.miss td{background:var(--miss)}
.legendrow span{display:inline-block;padding:1px 8px;margin-right:6px;border-radius:4px;font-size:12px}
footer{margin-top:36px;color:var(--mut);font-size:12px}
"#;

pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        escape(title)
    )
}

fn level(p: Option<f64>) -> &'static str {
    match p {
        Some(p) if p >= 80.0 => "hi",
        Some(p) if p >= 50.0 => "mid",
        _ => "lo",
    }
}

/// A table cell with a bar, the percentage and hit/total.
fn pct_cell(c: Counts) -> String {
    match c.percent() {
        None => "<td class=\"pct\"><span class=\"note\">-</span></td>".to_string(),
        Some(p) => format!(
            "<td class=\"pct\"><span class=\"bar\"><span class=\"{}\" style=\"width:{:.1}%\"></span></span>{} <small>{}/{}</small></td>",
            level(Some(p)),
            p,
            c.percent_text(),
            c.hit,
            c.total
        ),
    }
}

fn card(name: &str, c: Counts) -> String {
    let detail = if c.total == 0 {
        "none instrumented".to_string()
    } else {
        format!("{} of {} covered", c.hit, c.total)
    };
    format!(
        "<div class=\"card\"><div class=\"k\">{name}</div><div class=\"v\">{}</div>\
         <div class=\"n\">{detail}</div><span class=\"bar\" style=\"width:100%\"><span class=\"{}\" style=\"width:{:.1}%\"></span></span></div>",
        c.percent_text(),
        level(c.percent()),
        c.percent().unwrap_or(0.0)
    )
}

fn cards(t: &Totals) -> String {
    let mut s = String::from("<div class=\"cards\">");
    s.push_str(&card("Lines", t.lines));
    s.push_str(&card("Functions", t.functions));
    s.push_str(&card("Branches", t.branches));
    if let Some(r) = t.regions {
        s.push_str(&card("Regions", r));
    }
    if let Some(p) = t.points {
        s.push_str(&card("Points (OCaml)", p));
    }
    s.push_str("</div>");
    s
}

fn file_page_name(i: usize, path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{:04}-{clean}.html", i + 1)
}

/// The directory prefix all paths share, to show shorter names (full paths in titles).
pub fn common_prefix(paths: &[&str]) -> String {
    let Some(first) = paths.first() else {
        return String::new();
    };
    let mut prefix = match first.rfind('/') {
        Some(i) => &first[..=i],
        None => return String::new(),
    };
    for p in &paths[1..] {
        while !p.starts_with(prefix) {
            let trimmed = &prefix[..prefix.len() - 1];
            match trimmed.rfind('/') {
                Some(i) => prefix = &prefix[..=i],
                None => return String::new(),
            }
        }
    }
    prefix.to_string()
}

fn ns_to_utc(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Write `index.html` and the per-file pages into `dir` (created).
pub fn write(dir: &Path, d: &ReportData) -> Result<(), ReportError> {
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Write { path: p, source }
    };
    fs::create_dir(dir).map_err(werr(dir))?;
    let files_dir = dir.join("files");
    fs::create_dir(&files_dir).map_err(werr(&files_dir))?;
    let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
    let prefix = common_prefix(&paths);
    let mut pages = BTreeMap::new();
    for (i, f) in d.files.iter().enumerate() {
        let name = file_page_name(i, &f.path);
        let cov = d.coverage.files.get(&f.path);
        let html = file_page(f, cov, &prefix, d.line_labels.get(&f.path));
        create(&files_dir.join(&name), html.as_bytes())?;
        pages.insert(f.path.as_str(), format!("files/{name}"));
    }
    create(
        &dir.join("index.html"),
        index(d, &pages, &prefix).as_bytes(),
    )
}

fn index(d: &ReportData, pages: &BTreeMap<&str, String>, prefix: &str) -> String {
    let mut b = String::new();
    b.push_str("<header><h1>Coverage report</h1>");
    let mut sub = Vec::new();
    if let Some(c) = d.session.command() {
        sub.push(format!("<code>{}</code>", escape(&c)));
    }
    let targets = d.session.targets();
    if !targets.is_empty() {
        let t: Vec<String> = targets
            .iter()
            .map(|(pid, comm, _)| format!("{} (pid {pid})", escape(comm)))
            .collect();
        sub.push(format!("targets: {}", t.join(", ")));
    }
    if let Some(k) = d.session.kernel() {
        sub.push(format!("kernel {}", escape(&k)));
    }
    sub.push(format!(
        "{} artifact{}, {} reported, {} left out",
        d.artifacts,
        if d.artifacts == 1 { "" } else { "s" },
        d.reported(),
        d.excluded.len()
    ));
    let _ = write!(
        b,
        "<p class=\"sub\">{}</p></header>",
        sub.join(" &middot; ")
    );
    b.push_str(&cards(&d.totals));
    let is_kernel = |f: &FileSummary| f.modules.iter().all(|m| m == "vmlinux");
    if let Some(k) = &d.kernel {
        // User space and kernel side by side: each its own figures.
        let mut user = Totals::default();
        for f in d.files.iter().filter(|f| !is_kernel(f)) {
            user.add(&f.totals);
        }
        let _ = write!(
            b,
            "<div class=\"sides\"><section><h2>User space</h2><p class=\"note\">{} source file{} of the targets' own code.</p>{}</section>\
             <section><h2>Kernel (kcov)</h2><p class=\"note\">{} distinct PCs from {} kcov artifact{}, {} kernel function{} reached; symbolized with {}.</p>{}</section></div>",
            d.files.iter().filter(|f| !is_kernel(f)).count(),
            if d.files.iter().filter(|f| !is_kernel(f)).count() == 1 {
                ""
            } else {
                "s"
            },
            cards(&user),
            k.pcs,
            k.artifacts,
            if k.artifacts == 1 { "" } else { "s" },
            k.functions.len(),
            if k.functions.len() == 1 { "" } else { "s" },
            escape(&k.symbolized_by),
            cards(&k.totals)
        );
    }
    if !d.warnings.is_empty() {
        b.push_str("<div class=\"warn\"><strong>Warnings</strong><ul>");
        for w in &d.warnings {
            let _ = write!(b, "<li>{}</li>", escape(&w.to_string()));
        }
        b.push_str("</ul></div>");
    }
    if !d.external.is_empty() {
        b.push_str("<h2>Other reports</h2><ul>");
        for e in &d.external {
            let _ = write!(
                b,
                "<li><a href=\"../{}\">{}</a> <span class=\"note\">report/{}</span></li>",
                escape(&e.path),
                escape(&e.name),
                escape(&e.path)
            );
        }
        b.push_str("</ul>");
    }
    let _ = write!(
        b,
        "<h2>Coverage over time</h2><p class=\"note\">Session coverage after each artifact, in collection order.</p>{}",
        chart::svg(&d.timeline)
    );
    b.push_str("<h2>Files</h2>");
    if d.files.is_empty() {
        b.push_str("<p class=\"note\">No coverage data.</p>");
    } else if !prefix.is_empty() {
        let _ = write!(
            b,
            "<p class=\"note\">Paths relative to <code>{}</code>.</p>",
            escape(prefix)
        );
    }
    let has_regions = d.totals.regions.is_some();
    let has_points = d.totals.points.is_some();
    // Kernel files get their own group (they are C too, but another program's).
    let mut groups: Vec<(String, Vec<&FileSummary>, Counts)> = Vec::new();
    for lang in &d.languages {
        let files: Vec<&FileSummary> = d
            .files
            .iter()
            .filter(|f| f.language == lang.language && !is_kernel(f))
            .collect();
        if files.is_empty() {
            continue;
        }
        let mut lines = Counts::default();
        for f in &files {
            lines.add(f.totals.lines);
        }
        groups.push((lang.language.to_owned(), files, lines));
    }
    let kernel_files: Vec<&FileSummary> = d.files.iter().filter(|f| is_kernel(f)).collect();
    if !kernel_files.is_empty() {
        let mut lines = Counts::default();
        for f in &kernel_files {
            lines.add(f.totals.lines);
        }
        groups.push(("Linux kernel".to_owned(), kernel_files, lines));
    }
    for (language, files, lines) in &groups {
        let _ = write!(
            b,
            "<h3>{} <small>{} file{} &middot; lines {}</small></h3>",
            escape(language),
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            lines.percent_text()
        );
        b.push_str("<table><tr><th>File</th><th>Module</th><th>Lines</th><th>Functions</th><th>Branches</th>");
        if has_regions {
            b.push_str("<th>Regions</th>");
        }
        if has_points {
            b.push_str("<th>Points</th>");
        }
        b.push_str("</tr>");
        for f in files {
            let shown = f.path.strip_prefix(prefix).unwrap_or(&f.path);
            let link = pages
                .get(f.path.as_str())
                .map(|p| {
                    format!(
                        "<a href=\"{}\" title=\"{}\">{}</a>",
                        escape(p),
                        escape(&f.path),
                        escape(shown)
                    )
                })
                .unwrap_or_else(|| escape(shown));
            let _ = write!(
                b,
                "<tr><td class=\"file\">{link}</td><td class=\"mod\">{}</td>{}{}{}",
                escape(&f.modules.join(", ")),
                pct_cell(f.totals.lines),
                pct_cell(f.totals.functions),
                pct_cell(f.totals.branches)
            );
            if has_regions {
                b.push_str(&pct_cell(f.totals.regions.unwrap_or_default()));
            }
            if has_points {
                b.push_str(&pct_cell(f.totals.points.unwrap_or_default()));
            }
            b.push_str("</tr>");
        }
        b.push_str("</table>");
    }
    if let Some(k) = &d.kernel
        && !k.functions.is_empty()
    {
        const SHOWN: usize = 300;
        let _ = write!(
            b,
            "<h2>Kernel functions</h2><p class=\"note\">The {} kernel function{} the session reached, most recorded first{}: kcov points hit of the function's points, and how many times its PCs were recorded.</p>\
             <table><tr><th>Function</th><th>File</th><th>Points</th><th class=\"num\">Recorded</th></tr>",
            k.functions.len(),
            if k.functions.len() == 1 { "" } else { "s" },
            if k.functions.len() > SHOWN {
                format!(" ({SHOWN} shown; summary.json has all)")
            } else {
                String::new()
            }
        );
        for f in k.functions.iter().take(SHOWN) {
            let place = match (&f.file, f.line) {
                (Some(file), Some(line)) => {
                    let shown = file.strip_prefix(prefix).unwrap_or(file);
                    match pages.get(file.as_str()) {
                        Some(page) => format!(
                            "<a href=\"{}#L{line}\">{}:{line}</a>",
                            escape(page),
                            escape(shown)
                        ),
                        None => format!("{}:{line}", escape(shown)),
                    }
                }
                _ => String::new(),
            };
            let points = match f.points {
                Some(total) => pct_cell(Counts::new(f.points_hit, total)),
                None => format!("<td class=\"pct\">{} PCs</td>", f.points_hit),
            };
            let _ = write!(
                b,
                "<tr><td class=\"file\">{}</td><td class=\"file\">{place}</td>{points}<td class=\"num\">{}</td></tr>",
                escape(&f.name),
                f.hits
            );
        }
        b.push_str("</table>");
    }
    if !d.modules.is_empty() {
        b.push_str("<h2>Modules</h2><table><tr><th>Module</th><th>Build</th><th class=\"num\">Artifacts</th><th class=\"num\">Files</th><th>Lines</th><th>Functions</th><th>Branches</th><th>Regions</th>");
        if has_points {
            b.push_str("<th>Points</th>");
        }
        b.push_str("</tr>");
        for m in &d.modules {
            let mut about = Vec::new();
            if let Some(p) = &m.producer {
                about.push(escape(p));
            }
            if let Some(t) = &m.tools {
                about.push(format!("read with {}", escape(t)));
            }
            if let Some(id) = &m.build_id {
                about.push(format!("build id {}", escape(id)));
            }
            if let Some(u) = &m.unavailable {
                about.push(format!("<strong>not reported: {}</strong>", escape(u)));
            }
            let _ = write!(
                b,
                "<tr><td class=\"mod\" title=\"{}\">{}<br><small>{}</small></td><td><small>{}</small></td><td class=\"num\">{}</td><td class=\"num\">{}</td>{}{}{}{}",
                escape(m.path.as_deref().unwrap_or("")),
                escape(&m.name),
                escape(&m.runtime),
                about.join("<br>"),
                m.artifacts,
                m.files,
                pct_cell(m.totals.lines),
                pct_cell(m.totals.functions),
                pct_cell(m.totals.branches),
                pct_cell(m.totals.regions.unwrap_or_default())
            );
            if has_points {
                b.push_str(&pct_cell(m.totals.points.unwrap_or_default()));
            }
            b.push_str("</tr>");
        }
        b.push_str("</table>");
    }
    if !d.excluded.is_empty() {
        b.push_str("<h2>Left out</h2><table><tr><th class=\"num\">Seq</th><th class=\"num\">PID</th><th>Artifact</th><th>Why</th></tr>");
        for e in &d.excluded {
            let _ = write!(
                b,
                "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"file\">{}</td><td>{}</td></tr>",
                e.seq,
                e.pid,
                escape(&e.file),
                escape(&e.reason)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<footer>covobs {} &middot; generated {}</footer>",
        env!("CARGO_PKG_VERSION"),
        ns_to_utc(d.generated_unix_ns)
    );
    let title = match d.session.command() {
        Some(c) => format!("Coverage: {c}"),
        None => "Coverage report".to_string(),
    };
    page(&title, &b)
}

/// A function's name for people: Rust symbols demangled (without their hash), others as they are.
/// A demangled name without its generic arguments (`<a::W<u8, _>>::new` -> `<a::W>::new`,
/// `a::f::<u8>` -> `a::f`): the instantiations of one generic function share it. A `<` is
/// a generic argument list after a name or `::`, otherwise a qualified path (`<T as Tr>::f`).
fn without_generic_args(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // For each open `<`: whether it opened generic arguments.
    let mut open: Vec<bool> = Vec::new();
    let mut prev = ' ';
    for c in name.chars() {
        let skipping = open.iter().any(|&g| g);
        match c {
            '<' => {
                let generic = prev.is_alphanumeric() || prev == '_' || prev == ':' || skipping;
                if generic && !skipping && out.ends_with("::") {
                    out.truncate(out.len() - 2);
                }
                if !generic {
                    out.push(c);
                }
                open.push(generic);
            }
            '>' if prev != '-' => match open.pop() {
                Some(false) | None => out.push(c),
                Some(true) => {}
            },
            _ if !skipping => out.push(c),
            _ => {}
        }
        prev = c;
    }
    out
}

pub fn display_name(name: &str) -> String {
    // C statics are `file.c:name`; Rust symbols never contain a colon before demangling.
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

/// Why a source is not shown, or its text.
pub fn read_source(path: &str) -> Result<String, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("the path is relative and covobs does not know to what".into());
    }
    if ["/proc/", "/sys/", "/dev/"]
        .iter()
        .any(|d| path.starts_with(d))
    {
        return Err("not a source file".into());
    }
    let meta = fs::metadata(p).map_err(|e| format!("{e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if !readable_by_requester(&meta) {
        return Err(
            "only root can read it, and covobs shows sources the requesting user could read".into(),
        );
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(format!("{} bytes: too large to show", meta.len()));
    }
    let mut bytes = Vec::new();
    fs::File::open(p)
        .and_then(|f| f.take(MAX_SOURCE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("{e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Readable by everyone, or by the user who ran covobs through sudo, or covobs is not root
/// (then the kernel decided already).
pub(crate) fn readable_by_requester(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let sudo_uid = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse::<u32>().ok());
    readable_by(meta.mode(), meta.uid(), euid, sudo_uid)
}

/// [`readable_by_requester`] of a file with `mode` owned by `owner`, for covobs running as `euid`
/// on behalf of `sudo_uid`.
fn readable_by(mode: u32, owner: u32, euid: u32, sudo_uid: Option<u32>) -> bool {
    if euid != 0 || mode & 0o004 != 0 {
        return true;
    }
    sudo_uid.is_some_and(|uid| owner == uid && mode & 0o400 != 0)
}

fn file_page(
    f: &FileSummary,
    cov: Option<&FileCoverage>,
    prefix: &str,
    labels: Option<&BTreeMap<u32, (usize, Vec<String>)>>,
) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<header><p class=\"sub\"><a href=\"../index.html\">&larr; all files</a></p><h1>{}</h1>\
         <p class=\"sub\">{} &middot; module {}</p></header>",
        escape(f.path.strip_prefix(prefix).unwrap_or(&f.path)),
        escape(&f.path),
        escape(&f.modules.join(", "))
    );
    b.push_str(&cards(&f.totals));
    let empty = FileCoverage::new(f.path.clone());
    let cov = cov.unwrap_or(&empty);
    if !cov.functions.is_empty() {
        b.push_str("<h2>Functions</h2><table class=\"funcs\"><tr><th>Function</th><th class=\"num\">Line</th><th class=\"num\">Calls</th></tr>");
        let mut funcs: Vec<_> = cov.functions.iter().collect();
        funcs.sort_by(|a, b| (a.line, &a.name).cmp(&(b.line, &b.name)));
        // Generic functions that ran in some instantiation: their other instantiations (and
        // rustc's record of the generic itself, `f::<_>`) with no calls are not code not run.
        let ran: std::collections::HashSet<(u32, String)> = funcs
            .iter()
            .filter(|f| f.hits > 0)
            .map(|f| (f.line, without_generic_args(&display_name(&f.name))))
            .collect();
        for func in funcs {
            let shown = display_name(&func.name);
            let class = if func.hits > 0 || ran.contains(&(func.line, without_generic_args(&shown)))
            {
                ""
            } else {
                "miss"
            };
            let _ = write!(
                b,
                "<tr class=\"{}\"><td class=\"file\" title=\"{}\">{}</td><td class=\"num\"><a href=\"#L{}\">{}</a></td><td class=\"num\">{}</td></tr>",
                class,
                escape(&func.name),
                escape(&shown),
                func.line,
                func.line,
                func.hits
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Source</h2><p class=\"legendrow\"><span style=\"background:var(--hit)\">run</span><span style=\"background:var(--miss)\">not run</span><span style=\"background:var(--part)\">run, some branches not taken</span> counts: times each line ran; branches: taken/total</p>");
    let branches = cov.branches_by_line();
    let source = read_source(&f.path);
    let text_lines: Vec<&str> = match &source {
        Ok(text) => text.lines().collect(),
        Err(why) => {
            let _ = write!(
                b,
                "<p class=\"warn\">Source not available: {} ({}). The lines below are those with coverage data.</p>",
                escape(&f.path),
                escape(why)
            );
            Vec::new()
        }
    };
    let last_data_line = cov.lines.keys().next_back().copied().unwrap_or(0) as usize;
    let n = if source.is_ok() {
        text_lines.len().max(last_data_line)
    } else {
        0
    };
    b.push_str("<table class=\"src\">");
    let row = |b: &mut String, ln: u32, code: &str| {
        let hits = cov.lines.get(&ln);
        let br = branches.get(&ln);
        let class = match (hits, br) {
            (Some(0), _) => "miss",
            (Some(_), Some(c)) if c.hit < c.total => "part",
            (Some(_), _) => "hit",
            (None, _) => "",
        };
        let _ = write!(
            b,
            "<tr id=\"L{ln}\" class=\"{class}\"><td class=\"ln\"><a href=\"#L{ln}\">{ln}</a></td><td class=\"cnt\">{}</td><td class=\"br\">{}</td><td class=\"code\">{}</td>{}</tr>",
            hits.map(|h| h.to_string()).unwrap_or_default(),
            br.map(|c| format!("{}/{}", c.hit, c.total))
                .unwrap_or_default(),
            escape(code),
            labels
                .map(|l| line_labels_cell(l.get(&ln)))
                .unwrap_or_default()
        );
    };
    if source.is_ok() {
        for i in 0..n {
            let code = text_lines.get(i).copied().unwrap_or("");
            row(&mut b, i as u32 + 1, code);
        }
    } else {
        for &ln in cov.lines.keys() {
            row(&mut b, ln, "");
        }
    }
    b.push_str("</table>");
    page(&format!("Coverage: {}", f.path), &b)
}

/// The labels that reached a line (docs/labels.md): the first few, and how many in all.
fn line_labels_cell(labels: Option<&(usize, Vec<String>)>) -> String {
    let Some((count, first)) = labels else {
        return "<td class=\"lbl\"></td>".into();
    };
    let more = count.saturating_sub(first.len());
    format!(
        "<td class=\"lbl\" title=\"reached by {count} label{}\">{}{}</td>",
        if *count == 1 { "" } else { "s" },
        escape(&first.join(", ")),
        if more > 0 {
            format!(" +{more}")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_arguments_are_left_out() {
        let cases = [
            (
                "<pulldown_cmark::html::HtmlWriter<&mut a::P<a::b::{closure#0}>, W<Fn() -> u8>>>::new",
                "<pulldown_cmark::html::HtmlWriter>::new",
            ),
            (
                "<pulldown_cmark::html::HtmlWriter<_, _>>::new",
                "<pulldown_cmark::html::HtmlWriter>::new",
            ),
            ("a::write_html_io::<&mut P, W>", "a::write_html_io"),
            ("a::write_html_io::<_, _>", "a::write_html_io"),
            ("<u8 as a::T>::f", "<u8 as a::T>::f"),
            ("a::f::{closure#0}", "a::f::{closure#0}"),
            ("work.c:classify", "work.c:classify"),
        ];
        for (name, base) in cases {
            assert_eq!(without_generic_args(name), base, "{name}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape("a\u{1b}[31mb\tc"), "a\u{fffd}[31mb\tc");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn names_and_prefixes() {
        assert_eq!(file_page_name(0, "/a/b/main.rs"), "0001-main.rs.html");
        assert_eq!(file_page_name(11, "/a/<x> \"y\".c"), "0012-_x___y_.c.html");
        assert_eq!(common_prefix(&["/s/a/x.c", "/s/a/y/z.c"]), "/s/a/");
        assert_eq!(common_prefix(&["/s/a/x.c", "/t/y.c"]), "/");
        assert_eq!(common_prefix(&["x.c", "y.c"]), "");
        assert_eq!(common_prefix(&[]), "");
    }

    #[test]
    fn demangled_names() {
        assert_eq!(display_name("_RNvCsaEQyU3jpcqk_1r4main"), "r::main");
        assert_eq!(
            display_name("_RINvCsaEQyU3jpcqk_1r8classifydEB2_"),
            "r::classify::<f64>"
        );
        assert_eq!(
            display_name("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(display_name("t.c:classify"), "t.c:classify");
        assert_eq!(display_name("main"), "main");
    }

    #[test]
    fn utc() {
        assert_eq!(ns_to_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            ns_to_utc(1_700_000_000 * 1_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
    }

    #[test]
    fn who_may_read_what() {
        // Root on behalf of nobody in particular: world-readable files only.
        assert!(readable_by(0o644, 0, 0, None));
        assert!(!readable_by(0o640, 0, 0, None));
        assert!(!readable_by(0o600, 1000, 0, None));
        // Through sudo: also the files the user who ran sudo owns and may read.
        assert!(readable_by(0o600, 1000, 0, Some(1000)));
        assert!(!readable_by(0o200, 1000, 0, Some(1000)));
        assert!(!readable_by(0o600, 0, 0, Some(1000)));
        assert!(!readable_by(0o640, 1001, 0, Some(1000)));
        // Not root: the kernel already decided what covobs could open.
        assert!(readable_by(0o600, 0, 1000, None));
    }

    #[test]
    fn sources_only_root_could_read_are_not_shown() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root: it checks what covobs running as root shows of a file only root could read"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("secret.c");
        fs::write(&p, "int secret;\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        // Owned by a user who is not the one behind sudo (if any): only root could read it.
        let sudo_uid = std::env::var("SUDO_UID")
            .ok()
            .and_then(|u| u.parse::<u32>().ok());
        let owner = if sudo_uid == Some(65534) {
            65533
        } else {
            65534
        };
        std::os::unix::fs::chown(&p, Some(owner), None).expect("chown");
        let path = p.to_string_lossy().into_owned();
        let e = read_source(&path).expect_err("a file only root could read");
        assert!(e.contains("only root can read it"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(read_source(&path).expect("readable"), "int secret;\n");
        assert!(read_source("relative.c").is_err());
        assert!(read_source("/proc/self/environ").is_err());
        assert!(read_source(&dir.path().to_string_lossy()).is_err());
    }

    #[test]
    fn file_page_escapes_source_and_marks_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.c");
        fs::write(&p, "int main() {\n  if (a < b && c > d) x();\n}\n").expect("write");
        let path = p.to_string_lossy().into_owned();
        let mut cov = FileCoverage::new(path.clone());
        cov.lines = BTreeMap::from([(1, 1), (2, 1), (3, 0)]);
        cov.branches = vec![
            crate::model::Branch {
                line: 2,
                block: "0".into(),
                branch: "0".into(),
                taken: Some(1),
            },
            crate::model::Branch {
                line: 2,
                block: "0".into(),
                branch: "1".into(),
                taken: Some(0),
            },
        ];
        let f = FileSummary {
            path: path.clone(),
            language: "C",
            modules: vec!["m".into()],
            totals: cov.totals(),
        };
        let html = file_page(&f, Some(&cov), "", None);
        assert!(html.contains("if (a &lt; b &amp;&amp; c &gt; d) x();"));
        assert!(html.contains("<tr id=\"L2\" class=\"part\">"));
        assert!(html.contains("<tr id=\"L3\" class=\"miss\">"));
        assert!(html.contains("<td class=\"br\">1/2</td>"));
        assert!(!html.contains("<script"));
        // Missing source: said so, lines still listed.
        let mut gone = f.clone();
        gone.path = format!("{path}.missing");
        let html = file_page(&gone, Some(&cov), "", None);
        assert!(html.contains("Source not available"));
        assert!(html.contains("id=\"L3\""));
    }
}
