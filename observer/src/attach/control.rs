//! `covobs dump` reaches a running `covobs attach` through a root-only Unix socket:
//! /run/covobs/attach-<covobs pid>.sock (directory 0700, socket 0600, peer checked to be root).
//! One request, one JSON line each way; the answer comes when the dumps were collected.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

pub const DIR: &str = "/run/covobs";

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
}

impl ControlError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::NoAttach(_) | Self::Refused(_))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DumpRequest {
    Pid(i32),
    Name(String),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DumpResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attach does not watch what was asked: the client tries the next socket.
    #[serde(default)]
    pub not_mine: bool,
    /// Threads signalled: "pid/tid runtime+runtime".
    #[serde(default)]
    pub triggered: Vec<String>,
    /// Artifact files written (relative to the session directory).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Dumps that could not be collected, with the reason.
    #[serde(default)]
    pub lost: Vec<String>,
    #[serde(default)]
    pub session_dir: String,
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

    /// The next request from a root peer (others are answered with an error and dropped).
    pub async fn accept(&self) -> Option<(DumpRequest, Responder)> {
        loop {
            let (stream, _) = self.listener.accept().await.ok()?;
            let root_peer = stream.peer_cred().map(|c| c.uid() == 0).unwrap_or(false);
            let mut responder = Responder { stream };
            if !root_peer {
                responder
                    .send(DumpResponse {
                        error: Some("only root may ask covobs for dumps".into()),
                        ..Default::default()
                    })
                    .await;
                continue;
            }
            let mut line = String::new();
            let mut reader = BufReader::new(&mut responder.stream);
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            match read
                .ok()
                .and_then(Result::ok)
                .map(|_| serde_json::from_str(&line))
            {
                Some(Ok(req)) => return Some((req, responder)),
                _ => {
                    responder
                        .send(DumpResponse {
                            error: Some("malformed request".into()),
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
    }
}

impl ControlServer {
    /// Accept requests on a task of their own. `accept` reads the request after taking the
    /// connection: dropped half-way (a `select!` branch that lost), it would close a client's
    /// connection under it; a channel receive can be dropped safely.
    pub fn serve(self) -> Requests {
        let path = self.path.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(async move {
            while let Some(request) = self.accept().await {
                if tx.send(request).await.is_err() {
                    break;
                }
            }
        });
        Requests { rx, task, path }
    }
}

/// Requests accepted by [`ControlServer::serve`]. Dropping it stops accepting and removes the
/// socket.
pub struct Requests {
    rx: tokio::sync::mpsc::Receiver<(DumpRequest, Responder)>,
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

/// Where the answer to one request goes.
pub struct Responder {
    stream: UnixStream,
}

impl Responder {
    pub async fn send(mut self, response: DumpResponse) {
        if let Ok(mut line) = serde_json::to_vec(&response) {
            line.push(b'\n');
            let _ = self.stream.write_all(&line).await;
            let _ = self.stream.shutdown().await;
        }
    }
}

/// The client side: ask every running attach at once (one that is stuck or shutting down must
/// not hold up the one that watches the target); the answers of all that watch it are merged.
pub async fn request_dump(
    what: DumpRequest,
    timeout: Duration,
) -> Result<DumpResponse, ControlError> {
    let label = match &what {
        DumpRequest::Pid(p) => format!("process {p}"),
        DumpRequest::Name(n) => format!("a process named {n:?}"),
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
                    source: std::io::Error::other("no answer in time"),
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
        // A socket that answered nothing may belong to the attach that watches the target.
        return Err(failures
            .into_iter()
            .next()
            .unwrap_or(ControlError::NoAttach(label)));
    }
    merge(mine)
}

/// One attach's answer: `None` when it does not watch the target. A socket left by a covobs
/// that was killed refuses the connection: that is `None` too.
async fn ask(path: &Path, what: &DumpRequest) -> Result<Option<DumpResponse>, ControlError> {
    let Ok(mut stream) = UnixStream::connect(path).await else {
        return Ok(None);
    };
    let io = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut line = serde_json::to_vec(what).map_err(|e| io(e.into()))?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .await
        .map_err(io)?;
    if answer.is_empty() {
        // Closed without answering: that attach is shutting down.
        return Ok(None);
    }
    let response: DumpResponse = serde_json::from_str(&answer).map_err(|e| io(e.into()))?;
    Ok((!response.not_mine).then_some(response))
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
