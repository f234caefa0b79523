//! `covobs dump` reaches a running `covobs attach` through a root-only Unix socket:
//! /run/covobs/attach-<covobs pid>.sock (directory 0700, socket 0600, peer checked to be root).
//! One JSON line each way per request; the answer comes when the dumps were collected. A request
//! with `"keep_open": true` leaves the connection open for the next one (JSON lines: a test
//! runner closes thousands of labels over one connection); docs/labels.md has the protocol.
//!
//! Each connection is served on a task of its own, so no client waits for another: a request
//! line must arrive within [`REQUEST_DEADLINE`] and fit in [`MAX_LINE`] bytes (read through a
//! bounded reader, never buffered beyond that). At most [`MAX_READING`] connections may be
//! reading their request at once: a new one evicts the oldest still silent, so idle or hostile
//! connections never keep a real request (which arrives with its connection) out. At most
//! [`MAX_WAITING`] requests wait for their dumps; more are answered `busy` (clients retry).
use std::{
    collections::VecDeque,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{
        AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
        BufReader,
    },
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::{AbortHandle, JoinSet},
};

pub const DIR: &str = "/run/covobs";

/// The longest request line taken (a request is a few dozen bytes).
pub const MAX_LINE: usize = 64 * 1024;
/// How long a client may take to send its request line after connecting.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// How long a connection kept open (`keep_open`) may wait for its next request.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(3600);
/// Connections reading their request line at once.
pub const MAX_READING: usize = 64;
/// Requests handed to the session and waiting for their dumps.
pub const MAX_WAITING: usize = 64;
/// The longest answer a client takes (an answer lists artifact paths).
const MAX_ANSWER: usize = 16 << 20;
/// How long writing an answer may take (a client that does not read loses it).
const ANSWER_DEADLINE: Duration = Duration::from_secs(1);
/// A `busy` attach is asked again after this long.
const BUSY_RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no running `covobs attach` watches {0}")]
    NoAttach(String),
    #[error("covobs attach answered: {0}")]
    Refused(String),
    /// Every attach that answered does not watch the target, and some did not answer: one of
    /// those may (a stopped or overloaded covobs), so this is not "no attach watches it".
    #[error(
        "no `covobs attach` that answered watches {what}; {} did not answer in time, and may: {}",
        sockets.len(),
        sockets.join(", ")
    )]
    Unanswered { what: String, sockets: Vec<String> },
}

impl ControlError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::NoAttach(_) | Self::Refused(_))
    }
}

/// Why a connection's request was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request line longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("no request within {0:?}")]
    Deadline(Duration),
    #[error("reading the request: {0}")]
    Io(String),
}

/// Which targets a request is about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DumpTarget {
    Pid(i32),
    Name(String),
}

/// One request line: `{"pid":42}`, `{"name":"x","label":"test-1","keep_open":true}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpRequest {
    #[serde(flatten)]
    pub target: DumpTarget,
    /// The label this dump closes (docs/labels.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Keep the connection open after the answer, for the next request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_open: bool,
}

impl DumpRequest {
    pub fn new(target: DumpTarget) -> Self {
        Self {
            target,
            label: None,
            keep_open: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DumpResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attach does not watch what was asked: the client tries the next socket.
    #[serde(default)]
    pub not_mine: bool,
    /// Too many requests wait already: the client asks again shortly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
    /// Threads signalled: "pid/tid runtime+runtime".
    #[serde(default)]
    pub triggered: Vec<String>,
    /// Artifact files written (relative to the session directory).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Dumps that could not be collected, with the reason.
    #[serde(default)]
    pub lost: Vec<String>,
    /// The labels of other requests that share this one's dump (signal mode: a request that
    /// finds its dump asked for and not started yet joins it; docs/labels.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares_dump_with: Vec<String>,
    #[serde(default)]
    pub session_dir: String,
}

impl DumpResponse {
    pub fn refusal(why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Default::default()
        }
    }
}

/// One request line (its newline, if any, included) as a request.
pub fn parse_request(line: &[u8]) -> Result<DumpRequest, RequestError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(RequestError::TooLong(MAX_LINE));
    }
    serde_json::from_slice(line).map_err(|e| RequestError::Malformed(e.to_string()))
}

/// Read one line of at most `max` bytes (newline excluded) from `r`: never more than `max` + 1
/// bytes are taken. A last line without its newline counts when the peer closes.
pub async fn read_line_bounded<R: AsyncRead + Unpin>(
    r: R,
    max: usize,
) -> Result<Vec<u8>, RequestError> {
    let mut reader = BufReader::with_capacity(4096, r);
    Ok(next_line(&mut reader, max).await?.unwrap_or_default())
}

/// The next line of at most `max` bytes from a buffered reader that stays with its connection
/// (what it read ahead is the next request's); `None` when the peer closed before any byte.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, RequestError> {
    // `max` + 1 line bytes, and the newline.
    let limit = max as u64 + 2;
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| RequestError::Io(e.to_string()))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > max {
        return Err(RequestError::TooLong(max));
    }
    Ok(Some(line))
}

/// The request a client sends on `r`.
pub async fn read_request<R: AsyncRead + Unpin>(r: R) -> Result<DumpRequest, RequestError> {
    parse_request(&read_line_bounded(r, MAX_LINE).await?)
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    pub fn bind() -> Result<Self, ControlError> {
        let path = PathBuf::from(format!("{DIR}/attach-{}.sock", std::process::id()));
        let io = |source| ControlError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(DIR).map_err(io)?;
        std::fs::set_permissions(DIR, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Self { listener, path })
    }

    /// Serve connections on a task of their own; the requests come out of the returned
    /// [`Requests`], each with the [`Responder`] its answer goes to.
    pub fn serve(self) -> Requests {
        let path = self.path.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(self, tx));
        Requests { rx, task, path }
    }
}

/// Take connections until the session ends (the task is aborted; its connection tasks with it).
async fn accept_loop(server: ControlServer, tx: mpsc::UnboundedSender<(DumpRequest, Responder)>) {
    // Requests handed to the session hold one permit each until they are answered: the channel
    // to the session is unbounded, its length is not.
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let mut connections = JoinSet::new();
    // Connections still reading their first request, oldest first (with the flag each sets once
    // its first request is in: from then on it is a client's, not a candidate for eviction).
    let mut reading: VecDeque<(AbortHandle, Arc<AtomicBool>)> = VecDeque::new();
    loop {
        tokio::select! {
            accepted = server.listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, say: the connection stays in the backlog; try
                        // again shortly instead of spinning.
                        tracing::warn!("control socket: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                reading.retain(|(h, served)| !h.is_finished() && !served.load(Ordering::Relaxed));
                if reading.len() >= MAX_READING
                    && let Some((oldest, _)) = reading.pop_front()
                {
                    // Silent the longest: its descriptor and buffer go to the newcomer.
                    oldest.abort();
                }
                let served = Arc::new(AtomicBool::new(false));
                let task = connection(stream, tx.clone(), waiting.clone(), served.clone());
                reading.push_back((connections.spawn(task), served));
                // Let the new connection read before the next accept: a real client's request
                // is already there, and is taken before a burst of newcomers could evict it.
                tokio::task::yield_now().await;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One client: checked to be root, then its requests one after the other: each read within the
/// deadline and the size cap, handed to the session (the hand-over has no await: an eviction
/// cannot cut it in half), answered; the next one only after a `keep_open` request.
async fn connection(
    stream: UnixStream,
    tx: mpsc::UnboundedSender<(DumpRequest, Responder)>,
    waiting: Arc<Semaphore>,
    served: Arc<AtomicBool>,
) {
    let root_peer = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
    let (read, mut write) = stream.into_split();
    if !root_peer {
        let refusal = DumpResponse::refusal("only root may ask covobs for dumps");
        answer(&mut write, &refusal, true).await;
        return;
    }
    let mut reader = BufReader::with_capacity(4096, read);
    let mut deadline = REQUEST_DEADLINE;
    loop {
        let read = tokio::time::timeout(deadline, next_line(&mut reader, MAX_LINE)).await;
        let line = match read {
            Ok(Ok(Some(line))) => line,
            // The client closed after its last request.
            Ok(Ok(None)) if deadline == IDLE_DEADLINE => return,
            Ok(Ok(None)) => b"".to_vec(),
            Ok(Err(e)) => {
                answer(&mut write, &DumpResponse::refusal(e.to_string()), true).await;
                return;
            }
            Err(_) if deadline == IDLE_DEADLINE => return,
            Err(_) => {
                let e = RequestError::Deadline(REQUEST_DEADLINE);
                answer(&mut write, &DumpResponse::refusal(e.to_string()), true).await;
                return;
            }
        };
        let request = match parse_request(&line) {
            Ok(r) => r,
            Err(e) => {
                answer(&mut write, &DumpResponse::refusal(e.to_string()), true).await;
                return;
            }
        };
        served.store(true, Ordering::Relaxed);
        let keep_open = request.keep_open;
        let Ok(permit) = waiting.clone().try_acquire_owned() else {
            let busy = DumpResponse {
                busy: true,
                ..DumpResponse::refusal(format!(
                    "busy: {MAX_WAITING} requests are waiting for their dumps"
                ))
            };
            if !answer(&mut write, &busy, !keep_open).await || !keep_open {
                return;
            }
            deadline = IDLE_DEADLINE;
            continue;
        };
        let (answer_tx, answer_rx) = oneshot::channel();
        let responder = Responder {
            answer: answer_tx,
            _permit: permit,
        };
        if tx.send((request, responder)).is_err() {
            return;
        }
        // Dropped unanswered: the session is ending; the client sees the connection close.
        let Ok(response) = answer_rx.await else {
            return;
        };
        if !answer(&mut write, &response, !keep_open).await || !keep_open {
            return;
        }
        deadline = IDLE_DEADLINE;
    }
}

/// Write one answer line within [`ANSWER_DEADLINE`] (a client that does not read loses it, it
/// does not hold covobs), and with `close` shut the connection down. False when it failed.
async fn answer<W: AsyncWrite + Unpin>(
    stream: &mut W,
    response: &DumpResponse,
    close: bool,
) -> bool {
    let Ok(mut line) = serde_json::to_vec(response) else {
        return false;
    };
    line.push(b'\n');
    let written = tokio::time::timeout(ANSWER_DEADLINE, async {
        stream.write_all(&line).await?;
        if close {
            stream.shutdown().await?;
        }
        stream.flush().await
    })
    .await;
    matches!(written, Ok(Ok(())))
}

/// Requests taken by [`ControlServer::serve`]. Dropping it stops accepting (and every
/// connection still reading) and removes the socket.
pub struct Requests {
    rx: mpsc::UnboundedReceiver<(DumpRequest, Responder)>,
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Requests {
    pub async fn next(&mut self) -> Option<(DumpRequest, Responder)> {
        self.rx.recv().await
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where the answer to one request goes (its connection writes it); it holds one of the
/// [`MAX_WAITING`] places until answered (or dropped).
pub struct Responder {
    answer: oneshot::Sender<DumpResponse>,
    _permit: OwnedSemaphorePermit,
}

impl Responder {
    pub async fn send(self, response: DumpResponse) {
        let _ = self.answer.send(response);
    }
}

const NO_ANSWER: &str = "no answer in time";

/// The client side: ask every running attach at once (one that is stuck or shutting down must
/// not hold up the one that watches the target); the answers of all that watch it are merged.
pub async fn request_dump(
    what: DumpRequest,
    timeout: Duration,
) -> Result<DumpResponse, ControlError> {
    let label = match &what.target {
        DumpTarget::Pid(p) => format!("process {p}"),
        DumpTarget::Name(n) => format!("a process named {n:?}"),
    };
    let sockets: Vec<PathBuf> = std::fs::read_dir(DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| is_attach_socket(p))
                .collect()
        })
        .unwrap_or_default();
    let mut asking = tokio::task::JoinSet::new();
    for path in sockets {
        let what = what.clone();
        asking.spawn(async move {
            let answer = tokio::time::timeout(timeout, ask(&path, &what)).await;
            match answer {
                Ok(r) => r,
                Err(_) => Err(ControlError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(NO_ANSWER),
                }),
            }
        });
    }
    let mut mine: Vec<DumpResponse> = Vec::new();
    let mut failures: Vec<ControlError> = Vec::new();
    // Once one attach answered for the target, the others get a moment more (several attaches
    // may watch the same name), not the whole timeout.
    let mut rest_deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match rest_deadline {
            Some(d) => match tokio::time::timeout_at(d, asking.join_next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => asking.join_next().await,
        };
        let Some(joined) = next else { break };
        match joined {
            Ok(Ok(Some(response))) => {
                mine.push(response);
                rest_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(1));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(ControlError::Io {
                path: DIR.into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
    asking.abort_all();
    if mine.is_empty() {
        // A socket that answered nothing may belong to the attach that watches the target: said
        // as that (one stuck attach elsewhere on the machine used to make this "no answer in
        // time" from its socket alone), and a failure that is not a timeout as itself.
        let (timeouts, other): (Vec<ControlError>, Vec<ControlError>) =
            failures.into_iter().partition(
                |e| matches!(e, ControlError::Io { source, .. } if source.to_string() == NO_ANSWER),
            );
        if let Some(e) = other.into_iter().next() {
            return Err(e);
        }
        let sockets: Vec<String> = timeouts
            .into_iter()
            .filter_map(|e| match e {
                ControlError::Io { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        if sockets.is_empty() {
            return Err(ControlError::NoAttach(label));
        }
        return Err(ControlError::Unanswered {
            what: label,
            sockets,
        });
    }
    merge(mine)
}

/// One attach's answer: `None` when it does not watch the target. A socket left by a covobs
/// that was killed refuses the connection: that is `None` too. A `busy` attach is asked again
/// (the caller's timeout bounds it).
async fn ask(path: &Path, what: &DumpRequest) -> Result<Option<DumpResponse>, ControlError> {
    let io = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut line = serde_json::to_vec(what).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    loop {
        let Ok(mut stream) = UnixStream::connect(path).await else {
            return Ok(None);
        };
        stream.write_all(&line).await.map_err(io)?;
        let answer = read_line_bounded(&mut stream, MAX_ANSWER)
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        if answer.is_empty() {
            // Closed without answering: that attach is shutting down.
            return Ok(None);
        }
        let response: DumpResponse = serde_json::from_slice(&answer).map_err(|e| io(e.into()))?;
        if response.busy {
            tokio::time::sleep(BUSY_RETRY).await;
            continue;
        }
        return Ok((!response.not_mine).then_some(response));
    }
}

/// Several attaches that watch the target: one answer. Refused only when every one refused.
fn merge(mine: Vec<DumpResponse>) -> Result<DumpResponse, ControlError> {
    let single = mine.len() == 1;
    let mut merged = DumpResponse::default();
    let mut errors = Vec::new();
    for mut r in mine {
        if !single {
            // Artifacts of different sessions: each named with its own session directory.
            let dir = std::mem::take(&mut r.session_dir);
            for a in &mut r.artifacts {
                *a = Path::new(&dir).join(&*a).display().to_string();
            }
        }
        if !r.ok {
            errors.push(r.error.unwrap_or_else(|| "failed".into()));
            continue;
        }
        merged.ok = true;
        merged.triggered.extend(r.triggered);
        merged.artifacts.extend(r.artifacts);
        merged.lost.extend(r.lost);
        merged.shares_dump_with.extend(r.shares_dump_with);
        if merged.session_dir.is_empty() {
            merged.session_dir = r.session_dir;
        }
    }
    if merged.ok {
        Ok(merged)
    } else {
        Err(ControlError::Refused(errors.join("; ")))
    }
}

fn is_attach_socket(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("attach-") && n.ends_with(".sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(dir: &str, artifacts: &[&str]) -> DumpResponse {
        DumpResponse {
            ok: true,
            artifacts: artifacts.iter().map(|a| a.to_string()).collect(),
            session_dir: dir.into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_answer_keeps_its_session_dir_and_several_name_theirs() {
        let one = merge(vec![answer("/s1", &["p/a.profraw"])]).unwrap();
        assert_eq!(
            (one.session_dir.as_str(), one.artifacts),
            ("/s1", vec!["p/a.profraw".to_string()])
        );
        let two = merge(vec![answer("/s1", &["a"]), answer("/s2", &["b"])]).unwrap();
        assert_eq!(two.session_dir, "");
        assert_eq!(
            two.artifacts,
            vec!["/s1/a".to_string(), "/s2/b".to_string()]
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_line_is_read_up_to_the_cap_and_never_beyond() {
        let max = 16;
        let ok = block_on(read_line_bounded(&b"0123456789abcdef\nrest"[..], max));
        assert_eq!(ok.unwrap(), b"0123456789abcdef");
        let long = block_on(read_line_bounded(&b"0123456789abcdefX\n"[..], max));
        assert_eq!(long, Err(RequestError::TooLong(max)));
        // An endless line: refused after max + 2 bytes, whatever follows.
        assert_eq!(
            block_on(read_line_bounded(endless(), max)),
            Err(RequestError::TooLong(max))
        );
        // The last line of a peer that closed counts without its newline.
        let eof = block_on(read_line_bounded(&b"{\"pid\":1}"[..], max));
        assert_eq!(eof.unwrap(), b"{\"pid\":1}");
    }

    /// A client that sends 'x' forever.
    fn endless() -> impl AsyncRead + Unpin {
        struct Endless(std::io::Repeat);
        impl AsyncRead for Endless {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                use std::io::Read as _;
                let n = self.0.read(buf.initialize_unfilled())?;
                buf.advance(n);
                std::task::Poll::Ready(Ok(()))
            }
        }
        Endless(std::io::repeat(b'x'))
    }

    #[test]
    fn requests_parse_as_the_client_writes_them() {
        let labelled = DumpRequest {
            label: Some("t-1".into()),
            keep_open: true,
            ..DumpRequest::new(DumpTarget::Pid(7))
        };
        for r in [
            DumpRequest::new(DumpTarget::Pid(42)),
            DumpRequest::new(DumpTarget::Name("a b\n\"c".into())),
            labelled,
        ] {
            let mut line = serde_json::to_vec(&r).unwrap();
            line.push(b'\n');
            assert_eq!(parse_request(&line), Ok(r.clone()));
            assert_eq!(block_on(read_request(&line[..])), Ok(r));
        }
        assert!(matches!(
            parse_request(b"{\"pid\":\"x\"}"),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            block_on(read_request(&b"\n"[..])),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn a_busy_answer_reads_as_one_and_old_answers_as_not_busy() {
        let busy: DumpResponse =
            serde_json::from_slice(br#"{"ok":false,"error":"busy","busy":true}"#).unwrap();
        assert!(busy.busy);
        let old: DumpResponse =
            serde_json::from_slice(br#"{"ok":true,"artifacts":["a"]}"#).unwrap();
        assert!(!old.busy && old.ok);
        // Not busy: the field is left out, as older covobs wrote it.
        let line = serde_json::to_string(&DumpResponse::default()).unwrap();
        assert!(!line.contains("busy"), "{line}");
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::*;

        fn request() -> impl Strategy<Value = DumpRequest> {
            let target = prop_oneof![
                any::<i32>().prop_map(DumpTarget::Pid),
                ".{0,64}".prop_map(DumpTarget::Name),
            ];
            (target, proptest::option::of(".{0,16}"), any::<bool>()).prop_map(
                |(target, label, keep_open)| DumpRequest {
                    target,
                    label,
                    keep_open,
                },
            )
        }

        proptest! {
            // A fixed number of cases: a bounded run in the ordinary test command.
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Whatever bytes a client sends, in whatever pieces: an answer, no panic, and
            /// never more than the cap taken.
            #[test]
            fn any_bytes_give_a_request_or_a_reason(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
                max in 1usize..300,
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                match rt.block_on(read_line_bounded(&bytes[..], max)) {
                    Ok(line) => {
                        prop_assert!(line.len() <= max);
                        prop_assert!(!line.contains(&b'\n'));
                        prop_assert!(bytes.starts_with(&line));
                    }
                    Err(e) => prop_assert_eq!(e, RequestError::TooLong(max)),
                }
                let parsed = rt.block_on(read_request(&bytes[..]));
                if let Ok(req) = parsed {
                    // Only what the line says: the same request re-encoded parses the same.
                    let again = serde_json::to_vec(&req).unwrap();
                    prop_assert_eq!(parse_request(&again), Ok(req));
                }
            }

            #[test]
            fn every_request_survives_the_wire(r in request(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
                let mut line = serde_json::to_vec(&r).unwrap();
                line.push(b'\n');
                // What follows the line is not read as part of it.
                line.extend_from_slice(&junk);
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                prop_assert_eq!(rt.block_on(read_request(&line[..])), Ok(r));
            }

            #[test]
            fn json_of_any_shape_never_panics(v in json_value()) {
                let line = serde_json::to_vec(&v).unwrap();
                let _ = parse_request(&line);
            }
        }

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(serde_json::Value::from),
                    proptest::collection::btree_map("pid|name|.{0,4}", inner, 0..3)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }
    }

    #[test]
    fn one_connection_answers_its_requests_in_order_even_sent_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, server) = UnixStream::pair().expect("pair");
            let (tx, mut rx) = mpsc::unbounded_channel();
            let served = Arc::new(AtomicBool::new(false));
            let conn = tokio::spawn(connection(
                server,
                tx,
                Arc::new(Semaphore::new(4)),
                served.clone(),
            ));
            // Both lines in one write: what the server reads ahead is the second request.
            client
                .write_all(
                    b"{\"pid\":1,\"label\":\"a\",\"keep_open\":true}\n{\"pid\":2,\"label\":\"b\"}\n",
                )
                .await
                .expect("write");
            for want in ["a", "b"] {
                let (req, responder) = rx.recv().await.expect("request");
                assert_eq!(req.label.as_deref(), Some(want));
                responder.send(answer("/s", &[want])).await;
            }
            let mut all = String::new();
            client.read_to_string(&mut all).await.expect("read");
            let answers: Vec<DumpResponse> = all
                .lines()
                .map(|l| serde_json::from_str(l).expect("answer"))
                .collect();
            assert_eq!(answers.len(), 2, "{all}");
            assert_eq!(answers[0].artifacts, ["a"]);
            assert_eq!(answers[1].artifacts, ["b"]);
            // Without keep_open the second answer closed the connection.
            conn.await.expect("connection task");
            assert!(served.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn refused_only_when_every_attach_refused() {
        let refused = DumpResponse {
            error: Some("no handler".into()),
            ..Default::default()
        };
        assert!(merge(vec![refused.clone(), answer("/s", &["a"])]).is_ok());
        let e = merge(vec![refused.clone(), refused]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "covobs attach answered: no handler; no handler"
        );
    }
}
