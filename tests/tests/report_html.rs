//! The report's static HTML as a browser renders it: headless Chromium (DevTools protocol) opens
//! report/html/index.html and a file page of a real session (pulldown-cmark from crates.io, see
//! covobs_tests::third_party) and what it shows is checked against summary.json and
//! coverage.lcov; the page loads with no console error, no script error, no failed load.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use covobs_tests::{third_party::third_party_session, web::Browser, *};
use serde_json::{Value, json};

/// Where the test leaves its screenshots (for people to look at).
fn screenshot_dir() -> PathBuf {
    let d = target_dir().join("report-html-screenshots");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// What the index page shows: the cards and the file table.
const READ_INDEX: &str = r#"(() => {
  const cards = {};
  for (const c of document.querySelectorAll('.cards .card')) {
    cards[c.querySelector('.k').textContent] =
      {v: c.querySelector('.v').textContent, n: c.querySelector('.n').textContent};
  }
  const files = [...document.querySelectorAll('td.file a')].map((a) => ({
    path: a.title,
    href: a.getAttribute('href'),
    cells: [...a.closest('tr').querySelectorAll('td.pct')].map((td) => td.textContent.trim()),
  }));
  return {cards, files, h1: document.querySelector('h1').textContent};
})()"#;

/// What a file page shows: its cards, path and every source row.
const READ_FILE: &str = r#"(() => {
  const cards = {};
  for (const c of document.querySelectorAll('.cards .card')) {
    cards[c.querySelector('.k').textContent] =
      {v: c.querySelector('.v').textContent, n: c.querySelector('.n').textContent};
  }
  const rows = [...document.querySelectorAll('table.src tr[id^="L"]')].map((r) => ({
    line: Number(r.id.slice(1)),
    class: r.className,
    count: r.querySelector('td.cnt').textContent,
    code: r.querySelector('td.code').textContent,
  }));
  const funcs = [...document.querySelectorAll('table.funcs tr')].slice(1).map((r) => ({
    name: r.querySelector('td.file').title,
    class: r.className,
    calls: r.querySelector('td.num:last-child').textContent,
  }));
  return {cards, rows, funcs, path: document.querySelector('header h1 + .sub').textContent.split(' \u00b7 ')[0],
          back: document.querySelector('header a').getAttribute('href')};
})()"#;

/// What went wrong while pages loaded: script exceptions, console errors, error log entries
/// (CSP violations, failed resources), failed network loads.
fn problems(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(format!("exception: {}", p["exceptionDetails"])),
                "Runtime.consoleAPICalled"
                    if matches!(p["type"].as_str(), Some("error" | "assert" | "warning")) =>
                {
                    Some(format!("console {}: {}", p["type"], p["args"]))
                }
                "Log.entryAdded"
                    if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    Some(format!("log: {}", p["entry"]))
                }
                "Network.loadingFailed" => Some(format!("failed load: {p}")),
                _ => None,
            }
        })
        .collect()
}

/// A card as the page shows it, from summary.json's figures.
fn expect_card(card: &Value, figures: &Value, what: &str) {
    let (hit, total) = (
        figures["hit"].as_u64().expect("hit"),
        figures["total"].as_u64().expect("total"),
    );
    if total == 0 {
        assert_eq!(card["v"], "-", "{what}: {card}");
        assert_eq!(card["n"], "none instrumented", "{what}: {card}");
        return;
    }
    assert_eq!(
        card["n"].as_str(),
        Some(format!("{hit} of {total} covered").as_str()),
        "{what}"
    );
    expect_percent(card["v"].as_str().unwrap_or(""), hit, total, what);
}

/// `23.0%` for 2506 of 10873: one decimal, 100.0% only when complete, 0.0% only when none.
fn expect_percent(shown: &str, hit: u64, total: u64, what: &str) {
    let p: f64 = shown
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what}: not a percentage: {shown:?}"));
    let exact = hit as f64 * 100.0 / total as f64;
    assert!(
        (p - exact).abs() <= 0.1,
        "{what}: {shown} for {hit}/{total}"
    );
    assert_eq!(
        p == 100.0,
        hit == total,
        "{what}: {shown} for {hit}/{total}"
    );
    assert_eq!(p == 0.0, hit == 0, "{what}: {shown} for {hit}/{total}");
}

/// A table cell: `-` when nothing is instrumented, else `P% hit/total`.
fn expect_cell(cell: &str, figures: &Value, what: &str) {
    let (hit, total) = (
        figures["hit"].as_u64().expect("hit"),
        figures["total"].as_u64().expect("total"),
    );
    if total == 0 {
        assert_eq!(cell, "-", "{what}");
        return;
    }
    let (pct, counts) = cell
        .split_once(' ')
        .unwrap_or_else(|| panic!("{what}: {cell:?}"));
    assert_eq!(counts, format!("{hit}/{total}"), "{what}");
    expect_percent(pct, hit, total, what);
}

/// One file's record in an LCOV file.
fn lcov_record<'a>(lcov: &'a str, file: &str) -> &'a str {
    lcov.split("end_of_record\n")
        .find(|r| r.starts_with(&format!("SF:{file}\n")))
        .unwrap_or_else(|| panic!("no record of {file} in coverage.lcov"))
}

/// The `FNDA:` entries of one file of an LCOV file: (name, count), in order.
fn lcov_functions(lcov: &str, file: &str) -> Vec<(String, String)> {
    lcov_record(lcov, file)
        .lines()
        .filter_map(|l| l.strip_prefix("FNDA:"))
        .map(|d| {
            let (count, name) = d.split_once(',').expect("FNDA:count,name");
            (name.to_string(), count.to_string())
        })
        .collect()
}

/// The `DA:` lines of one file of an LCOV file: line -> count.
fn lcov_lines(lcov: &str, file: &str) -> BTreeMap<u64, u64> {
    lcov_record(lcov, file)
        .lines()
        .filter_map(|l| l.strip_prefix("DA:"))
        .map(|d| {
            let (line, count) = d.split_once(',').expect("DA:line,count");
            (line.parse().expect("line"), count.parse().expect("count"))
        })
        .collect()
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn the_static_html_report_renders_the_reports_figures_in_a_real_browser() {
    require_root();
    let tmp = TempDir::new("report-html");
    let session = third_party_session(tmp.path());
    let report = session.out.join("report");
    let summary = read_json(&report.join("summary.json"));
    let lcov = fs::read_to_string(report.join("coverage.lcov")).expect("coverage.lcov");
    let shots = screenshot_dir();

    let mut browser = Browser::open("about:blank");
    for domain in ["Page", "Runtime", "Log", "Network"] {
        browser.call(&format!("{domain}.enable"), json!({}));
    }

    // The index: the session's totals and every file, each with its own figures.
    let index = report.join("html/index.html");
    browser.navigate(&file_url(&index));
    let shown = browser.eval(READ_INDEX);
    browser.screenshot(&shots.join("index.png"));
    browser.eval("document.querySelector('td.file').scrollIntoView()");
    browser.screenshot(&shots.join("index-files.png"));
    assert_eq!(shown["h1"], "Coverage report");
    let totals = &summary["totals"];
    for (card, key) in [
        ("Lines", "lines"),
        ("Functions", "functions"),
        ("Branches", "branches"),
        ("Regions", "regions"),
    ] {
        expect_card(
            &shown["cards"][card],
            &totals[key],
            &format!("index {card}"),
        );
    }
    let rows: BTreeMap<String, &Value> = shown["files"]
        .as_array()
        .expect("file rows")
        .iter()
        .map(|r| (r["path"].as_str().expect("path").to_string(), r))
        .collect();
    let listed: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    let files = summary["files"].as_array().expect("summary files");
    let expected: BTreeSet<&str> = files
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(listed, expected, "the file list is summary.json's");
    assert_eq!(
        rows.len(),
        shown["files"].as_array().map_or(0, Vec::len),
        "each file listed once"
    );
    for f in files {
        let path = f["path"].as_str().expect("path");
        let row = rows[path];
        let cells: Vec<&str> = row["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .map(|c| c.as_str().unwrap_or(""))
            .collect();
        assert_eq!(cells.len(), 4, "{path}: {row}");
        for (cell, key) in cells
            .iter()
            .zip(["lines", "functions", "branches", "regions"])
        {
            expect_cell(cell, &f[key], &format!("{path} {key}"));
        }
        let href = row["href"].as_str().expect("href");
        assert!(
            index.parent().expect("html dir").join(href).is_file(),
            "{path}: its page {href} is missing"
        );
    }

    // The file with the most lines run: its page, reached by its link, line by line.
    let busiest = files
        .iter()
        .max_by_key(|f| f["lines"]["hit"].as_u64())
        .expect("a file");
    let path = busiest["path"].as_str().expect("path");
    let href = rows[path]["href"].as_str().expect("href").to_string();
    browser.eval(&format!(
        "document.querySelector('td.file a[href=\"{href}\"]').click()"
    ));
    let page = index.parent().expect("html dir").join(&href);
    browser.wait_for(
        &format!(
            "location.href === {} && document.readyState === 'complete'",
            serde_json::to_string(&file_url(&page)).expect("JSON")
        ),
        std::time::Duration::from_secs(30),
    );
    let file = browser.eval(READ_FILE);
    browser.screenshot(&shots.join("file.png"));
    browser.eval("document.querySelector('tr.hit').scrollIntoView()");
    browser.screenshot(&shots.join("file-source.png"));
    assert_eq!(file["path"], path);
    assert_eq!(file["back"], "../index.html");
    for (card, key) in [
        ("Lines", "lines"),
        ("Functions", "functions"),
        ("Branches", "branches"),
        ("Regions", "regions"),
    ] {
        expect_card(
            &file["cards"][card],
            &busiest[key],
            &format!("{path} {card}"),
        );
    }
    // Every function of coverage.lcov with its calls; none that ran is marked not run.
    let mut shown_funcs: Vec<(String, String)> = file["funcs"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            let (name, calls) = (f["name"].as_str(), f["calls"].as_str());
            assert!(
                calls == Some("0") || f["class"] != "miss",
                "a function that ran is marked not run: {f}"
            );
            (
                name.unwrap_or("").to_string(),
                calls.unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut lcov_funcs = lcov_functions(&lcov, path);
    shown_funcs.sort();
    lcov_funcs.sort();
    assert_eq!(shown_funcs, lcov_funcs, "{path}: the functions table");
    // Every line of the source, in order, with coverage.lcov's count where it has one.
    let source = fs::read_to_string(path).expect("the source file");
    let source_lines: Vec<&str> = source.lines().collect();
    let shown_rows = file["rows"].as_array().expect("rows");
    assert_eq!(
        shown_rows.len(),
        source_lines.len(),
        "{path}: one row a line"
    );
    let counts = lcov_lines(&lcov, path);
    let (mut hit, mut miss) = (0, 0);
    for (i, row) in shown_rows.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(row["line"].as_u64(), Some(n), "{row}");
        assert_eq!(row["code"].as_str(), Some(source_lines[i]), "line {n}");
        let count = row["count"].as_str().unwrap_or("");
        match counts.get(&n) {
            Some(&c) => {
                assert_eq!(count, c.to_string(), "line {n}: {row}");
                let class = row["class"].as_str().unwrap_or("");
                assert!(
                    class == if c > 0 { "hit" } else { "miss" } || class == "part",
                    "line {n} with count {c}: {row}"
                );
                if c > 0 {
                    hit += 1;
                } else {
                    miss += 1;
                }
            }
            None => assert_eq!(count, "", "line {n} is not in coverage.lcov: {row}"),
        }
    }
    // (Not summary.json's lines hit: llvm-cov's per-file figures take each generic's best
    // instantiation, its DA lines the merged view; the page shows both as llvm-cov does.)
    assert!(hit > 0 && miss > 0, "{path}: {hit} run, {miss} not run");
    assert_eq!(hit + miss, counts.len() as u64);
    println!(
        "{path}: {} rows, {hit} run, {miss} not run, as in coverage.lcov; screenshots in {}",
        shown_rows.len(),
        shots.display()
    );

    // Back to the index by the page's own link.
    browser.eval("document.querySelector('header a').click()");
    browser.wait_for(
        &format!(
            "location.href === {} && document.readyState === 'complete'",
            serde_json::to_string(&file_url(&index)).expect("JSON")
        ),
        std::time::Duration::from_secs(30),
    );
    let events = browser.take_events();
    // The events were seen at all: each page's own request among them.
    let requested: Vec<&str> = events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .filter_map(|e| e["params"]["request"]["url"].as_str())
        .collect();
    for url in [file_url(&index), file_url(&page)] {
        assert!(
            requested.contains(&url.as_str()),
            "{url} not in {requested:?}"
        );
    }
    let found = problems(&events);
    assert!(found.is_empty(), "while the pages loaded: {found:#?}");
}
