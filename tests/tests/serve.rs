//! `covobs serve` and `attach --serve`: the live web view of a session, seen in a real browser
//! (headless Chromium through the DevTools protocol) while a real attach collects real dumps,
//! and over plain HTTP: its API, its server-sent events, what it refuses.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use covobs_tests::{web::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The URL a serving covobs announced on stderr, and that line.
fn served_url(covobs: &mut Covobs) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = covobs.stderr();
        if let Some(line) = err.lines().find(|l| l.starts_with("covobs: serving ")) {
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .expect("a URL in the line")
                .to_string();
            return (url, line.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "covobs did not say where it serves within 30 s: {err}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// An LLVM fixture whose coverage grows for about ten seconds of active time (a new phase of
/// work every 700 ms), running in `tmp` with its profile there; held while `pause` exists.
fn growing_target(tmp: &TempDir, pause: Option<&Path>) -> Driven {
    let profile = tmp.path().join("target.profraw");
    let args: Vec<&str> = match pause {
        Some(p) => vec!["--pause-file", p.to_str().unwrap()],
        None => Vec::new(),
    };
    start_fixture(
        "llvm-c-target",
        &args,
        &[("LLVM_PROFILE_FILE", profile.to_str().unwrap())],
        tmp.path(),
    )
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + T;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Where the browser test leaves its screenshots (for people to look at).
fn screenshot_dir() -> PathBuf {
    let d = target_dir().join("serve-screenshots");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// What the page shows now, read from its DOM.
const READ_PAGE: &str = r#"(() => {
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
  return {
    lines: text('#card-lines .v'),
    functions: text('#card-functions .v'),
    markers: document.querySelectorAll('#chart circle.pt').length,
    points: Number(document.getElementById('chart').dataset.points || 0),
    polyline: (document.querySelector('#chart polyline.lines') || {getAttribute: () => ''}).getAttribute('points'),
    files: document.querySelectorAll('#files tbody tr').length,
    state: text('#state'),
    sub: text('#sub'),
    marker: window.__covobsTest || null,
  };
})()"#;

fn percent(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("not a percentage: {v}"))
}

/// The page, opened once on `covobs serve` of a running attach, shows the coverage figure and
/// the timeline grow as dumps arrive, without being reloaded; its filter and per-line view work.
#[test]
fn the_live_page_follows_a_running_attach_in_a_real_browser() {
    require_root();
    let tmp = TempDir::new("serve-live");
    let out = tmp.path().join("out");
    // Held until the page is open, so the page sees the whole growth.
    let pause = tmp.path().join("pause");
    std::fs::write(&pause, "").expect("pause file");
    let target = growing_target(&tmp, Some(&pause));
    let pid = target.pid().to_string();
    let mut attach = attach(&[
        "--pid",
        &pid,
        "--interval",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    wait_for_file(&out.join("events.jsonl"));
    let mut serve = Covobs::start(&["serve", out.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let (url, line) = served_url(&mut serve);
    assert!(line.contains("loopback only"), "{line}");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let shots = screenshot_dir();
    let mut browser = Browser::open(&url);
    // The live page, loaded and showing its first summary.
    browser.wait_for(
        "document.readyState === 'complete' && document.querySelector('#card-lines .v') !== null",
        T,
    );
    // A mark on this document: still there later means the page was never reloaded.
    browser.eval("window.__covobsTest = 'same page'");
    std::fs::remove_file(&pause).expect("let the target go on");
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = browser.eval(READ_PAGE);
        assert_eq!(now["marker"], "same page", "the page was reloaded: {now}");
        let changed = seen
            .last()
            .is_none_or(|last| last["lines"] != now["lines"] || last["points"] != now["points"]);
        if changed && now["lines"].as_str().is_some_and(|l| l.ends_with('%')) {
            let shot = shots.join(format!("live-{:02}.png", seen.len() + 1));
            browser.screenshot(&shot);
            eprintln!(
                "{}: lines {} functions {}, {} timeline points, {} files, state {} ({})",
                shot.display(),
                now["lines"],
                now["functions"],
                now["points"],
                now["files"],
                now["state"],
                now["sub"]
            );
            seen.push(now);
        }
        let distinct = {
            let mut v: Vec<&Value> = seen.iter().map(|s| &s["lines"]).collect();
            v.dedup();
            v.len()
        };
        if distinct >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show the coverage grow (4 figures) within 90 s: {seen:#?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The figure only grows, the timeline gains a point with each artifact, and the chart draws
    // them (one marker each, and a longer line).
    for w in seen.windows(2) {
        assert!(
            percent(&w[1]["lines"]) >= percent(&w[0]["lines"]),
            "{:?}",
            seen
        );
        assert!(
            w[1]["points"].as_u64() >= w[0]["points"].as_u64(),
            "{seen:?}"
        );
    }
    let (first, last) = (&seen[0], &seen[seen.len() - 1]);
    assert!(
        percent(&last["lines"]) > percent(&first["lines"]),
        "{seen:?}"
    );
    assert!(
        last["points"].as_u64() > first["points"].as_u64(),
        "{seen:?}"
    );
    assert_eq!(
        last["markers"], last["points"],
        "one marker per point: {last}"
    );
    assert_ne!(last["polyline"], first["polyline"]);
    assert_eq!(last["state"], "live", "{last}");
    // No more points than artifacts the attach collected.
    assert!(last["points"].as_u64().unwrap_or(0) as usize <= artifacts(&out).len());

    // The file filter: every word must be in the path (or module, language).
    let total = last["files"].as_u64().expect("files");
    assert!(total >= 2, "the fixture has several source files: {last}");
    let filtered = browser.eval(
        r#"(() => {
          const f = document.getElementById('filter');
          f.value = 'work.c';
          f.dispatchEvent(new Event('input'));
          const rows = [...document.querySelectorAll('#files tbody tr')];
          const shown = rows.filter((r) => !r.hidden);
          return {shown: shown.map((r) => r.querySelector('a').textContent), hidden: rows.length - shown.length,
                  label: document.getElementById('shown').textContent};
        })()"#,
    );
    let shown: Vec<&str> = filtered["shown"]
        .as_array()
        .expect("shown")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(!shown.is_empty(), "{filtered}");
    assert!(shown.iter().all(|s| s.contains("work.c")), "{filtered}");
    assert!(filtered["hidden"].as_u64() > Some(0), "{filtered}");
    assert!(
        filtered["label"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{} of {total} files", shown.len())),
        "{filtered}"
    );
    browser.eval("document.getElementById('filter').scrollIntoView()");
    browser.screenshot(&shots.join("filtered.png"));

    // The per-line view of work.c: its source, with run and not-run lines and hit counts.
    browser.eval(
        "location.href = [...document.querySelectorAll('#files tbody tr:not([hidden]) a')][0].href",
    );
    browser.wait_for(
        "document.querySelectorAll('#source tbody tr.hit').length > 0",
        T,
    );
    let lines = browser.eval(
        r#"(() => {
          const rows = [...document.querySelectorAll('#source tbody tr')];
          const hit = rows.filter((r) => r.className === 'hit');
          return {rows: rows.length, hit: hit.length,
                  miss: rows.filter((r) => r.className === 'miss').length,
                  counts: hit.slice(0, 5).map((r) => r.querySelector('.cnt').textContent),
                  name: document.getElementById('name').textContent,
                  path: document.getElementById('sub').textContent.split(' \u00b7 ')[0],
                  code: rows.map((r) => r.querySelector('.code').textContent).join('\n')};
        })()"#,
    );
    browser.screenshot(&shots.join("file.png"));
    browser.eval("document.getElementById('source').scrollIntoView()");
    browser.screenshot(&shots.join("file-source.png"));
    eprintln!(
        "file page {}: {} rows, {} run, {} not run",
        lines["name"], lines["rows"], lines["hit"], lines["miss"]
    );
    assert!(
        lines["name"].as_str().unwrap_or("").ends_with("work.c"),
        "{}",
        lines["name"]
    );
    // The source the binary was built from, line for line.
    let path = lines["path"].as_str().expect("the file's path");
    assert!(path.ends_with("/fixtures/llvm-c-target/work.c"), "{path}");
    let source = std::fs::read_to_string(path).expect("work.c");
    assert_eq!(
        lines["code"].as_str().unwrap_or(""),
        source.trim_end_matches('\n')
    );
    assert!(
        lines["hit"].as_u64() > Some(0) && lines["miss"].as_u64() > Some(0),
        "{lines}"
    );
    for c in lines["counts"].as_array().expect("counts") {
        let n: u64 = c.as_str().unwrap_or("").parse().expect("a hit count");
        assert!(n > 0, "{lines}");
    }

    drop(browser);
    serve.signal(libc::SIGINT);
    assert!(serve.wait(T).success(), "{}", serve.stderr());
    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    // serve computed in memory: nothing of its own in the session (the attach ran --no-report).
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.') && n != "report"),
        "{names:?}"
    );
    drop(target);
}

/// `attach --serve`: the same view while the attach runs, over plain HTTP: the summary grows,
/// server-sent events carry it, files of the coverage data and only those are served, other
/// host names are refused; after the attach, `covobs serve` of the finished session agrees with
/// the report the attach wrote.
#[test]
fn attach_serve_answers_while_it_runs_and_serve_agrees_with_the_report() {
    require_root();
    let tmp = TempDir::new("serve-attach");
    let out = tmp.path().join("out");
    let target = growing_target(&tmp, None);
    let pid = target.pid().to_string();
    let mut cmd = Command::new(covobs_bin());
    cmd.args([
        "attach",
        "--json",
        "--pid",
        &pid,
        "--interval",
        "500ms",
        "--out",
        out.to_str().unwrap(),
        "--serve",
        "127.0.0.1:0",
    ]);
    let mut attach = Covobs::spawn(cmd);
    let (url, line) = served_url(&mut attach);
    assert!(line.contains("loopback only"), "{line}");

    let deadline = Instant::now() + T;
    let summary = loop {
        let s = get(&url, "/api/summary");
        assert_eq!(s.status, 200);
        assert_eq!(s.header("content-type"), Some("application/json"));
        let v = s.json();
        if v["artifacts"].as_u64().unwrap_or(0) >= 3
            && !v["files"].as_array().is_none_or(Vec::is_empty)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no artifacts served within {T:?}: {v}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(summary["state"], "running", "{summary}");
    assert_eq!(summary["dir"], out.to_str().unwrap());
    assert!(summary["timeline"].as_array().is_some_and(|t| t.len() >= 3));

    let (name, data) = first_event(&url, "/events", Duration::from_secs(10));
    assert_eq!(name, "update");
    let event: Value = serde_json::from_str(&data).expect("event data");
    assert!(
        event["version"].as_u64() >= summary["version"].as_u64(),
        "{event}"
    );

    let page = get(&url, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<svg id=\"chart\""));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "{:?}",
        page.headers
    );
    let file = summary["files"][0]["path"]
        .as_str()
        .expect("a file")
        .to_string();
    let enc: String = file
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let f = get(&url, &format!("/api/file?path={enc}"));
    assert_eq!(f.status, 200, "{}", f.body);
    let f = f.json();
    assert_eq!(f["path"], file.as_str());
    assert!(f["lines"].as_array().is_some_and(|l| !l.is_empty()), "{f}");
    // Only files of the coverage data.
    assert_eq!(get(&url, "/api/file?path=%2Fetc%2Fpasswd").status, 404);
    // A page of another site that resolves its name to 127.0.0.1 is refused.
    let r = get_with_host(&url, "/api/summary", "evil.example:80").expect("GET");
    assert_eq!(r.status, 421, "{}", r.body);

    attach.signal(libc::SIGINT);
    assert!(attach.wait(T).success(), "{}", attach.stderr());
    assert!(
        std::net::TcpStream::connect(authority(&url)).is_err(),
        "still serving after the attach ended"
    );

    // The finished session, served: the same totals as the report the attach wrote.
    let report = read_json(&out.join("report/summary.json"));
    let mut serve = Covobs::start(&["serve", out.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let (url, _) = served_url(&mut serve);
    let deadline = Instant::now() + T;
    let finished = loop {
        let v = get(&url, "/api/summary").json();
        if v["state"] == "finished" {
            break v;
        }
        assert!(Instant::now() < deadline, "not finished within {T:?}: {v}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(finished["totals"], report["totals"], "{finished}");
    assert_eq!(finished["artifacts"], report["artifacts"]["total"]);
    assert_eq!(
        finished["files"].as_array().map(Vec::len),
        report["files"].as_array().map(Vec::len)
    );
    serve.signal(libc::SIGTERM);
    assert!(serve.wait(T).success(), "{}", serve.stderr());
    drop(target);
}

/// What `serve` refuses, in one line with exit code 2, and `attach --serve` on an address in
/// use refused before anything starts (no ./covobs-out).
#[test]
fn serve_refuses_bad_input() {
    require_root();
    let tmp = TempDir::new("serve-bad");
    let run = |args: &[&str]| {
        Command::new(covobs_bin())
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("covobs")
    };
    let one_line = |o: &std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    };
    one_line(
        &run(&["serve", "/no/such/dir"]),
        "/no/such/dir: no such directory",
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    one_line(
        &run(&["serve", empty.to_str().unwrap()]),
        "is not a covobs session directory",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    std::fs::write(empty.join("events.jsonl"), "").expect("events");
    one_line(
        &run(&["serve", empty.to_str().unwrap(), "--addr", &addr]),
        &format!("{addr} is in use"),
    );
    let me = std::process::id().to_string();
    one_line(
        &run(&["attach", "--pid", &me, "--serve", &addr]),
        &format!("{addr} is in use"),
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("empty")]);
}
