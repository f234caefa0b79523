//! For the live web view's tests: a plain HTTP/1.1 client over a TCP stream, and headless
//! Chromium driven through the DevTools protocol (a websocket, JSON messages).
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// An HTTP response: status, headers (names lowercased), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `http://HOST:PORT/` -> `HOST:PORT`.
pub fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

fn connect(url: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(authority(url))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// GET `path` from the server at `url`, with a Host header of the caller's choice. The body is
/// read by its length (or chunks): a server may keep the connection open.
pub fn get_with_host(url: &str, path: &str, host: &str) -> std::io::Result<Response> {
    let mut s = connect(url)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16)
                .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
            if n == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn get(url: &str, path: &str) -> Response {
    get_with_host(url, path, authority(url)).unwrap_or_else(|e| panic!("GET {url} {path}: {e}"))
}

/// The first server-sent event of `path` (its `event:` name and `data:`), within `timeout`.
pub fn first_event(url: &str, path: &str, timeout: Duration) -> (String, String) {
    let mut s = connect(url).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        authority(url)
    )
    .expect("request");
    let mut r = BufReader::new(s);
    let (mut name, mut data) = (String::new(), String::new());
    let deadline = Instant::now() + timeout;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).expect("read the event stream") == 0 {
            break;
        }
        // Chunked framing: the size lines are not fields.
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if l.is_empty() && !data.is_empty() {
            return (name, data);
        }
    }
    panic!("no server-sent event from {url}{path} within {timeout:?}");
}

/// Headless Chromium with its DevTools protocol on a websocket.
pub struct Browser {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// DevTools events received while waiting for answers, in order.
    events: Vec<Value>,
    // Dropped in this order: the browser goes, then its profile.
    _process: Killed,
    _profile: crate::TempDir,
}

/// A child process killed when dropped, also when a test panics while starting it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Chromium executable (Debian's `chromium`, installed by ./dev's set-up).
pub fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromium is missing: the live view's browser test needs it (./dev setup installs it)");
}

impl Browser {
    /// Open `url` in a new headless Chromium (a fresh profile), window 1200x900.
    pub fn open(url: &str) -> Self {
        let profile = crate::TempDir::new("chromium");
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1200,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let process = Killed(child);
        // Chromium writes the port it took into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within 30 s"
            );
            thread::sleep(Duration::from_millis(100));
        };
        let devtools = format!("http://127.0.0.1:{port}/");
        // The page target of our URL.
        let ws = loop {
            let list = get(&devtools, "/json/list").json();
            let found = list.as_array().and_then(|a| {
                a.iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().unwrap_or("").starts_with(url)
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            if let Some(ws) = found {
                break ws;
            }
            assert!(
                Instant::now() < deadline,
                "no page for {url} in chromium's targets: {list}"
            );
            thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(ws.as_str()).expect("DevTools websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        Self {
            socket,
            next_id: 0,
            events: Vec::new(),
            _process: process,
            _profile: profile,
        }
    }

    /// Call a DevTools method and return its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let m = self.socket.read().expect("read from chromium");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The events received so far (for the domains enabled), and forget them. A call answered
    /// after an event was sent brings that event in: call this after some other call.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Go to `url` and wait until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        let want = serde_json::to_string(url).expect("a JSON string");
        self.wait_for(
            &format!("location.href === {want} && document.readyState === 'complete'"),
            Duration::from_secs(30),
        );
    }

    /// Evaluate a JavaScript expression in the page; its value (JSON-serializable).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the page as the window shows it.
    pub fn screenshot(&mut self, to: &Path) {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        std::fs::write(to, png).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    }

    /// Wait until `expr` is true in the page (panics after `timeout`).
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(expr) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "not true within {timeout:?}: {expr}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
    }
}
