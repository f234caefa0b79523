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

/// The client side: ask every running attach until one watches the target.
pub async fn request_dump(
    what: DumpRequest,
    timeout: Duration,
) -> Result<DumpResponse, ControlError> {
    let label = match &what {
        DumpRequest::Pid(p) => format!("process {p}"),
        DumpRequest::Name(n) => format!("a process named {n:?}"),
    };
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| is_attach_socket(p))
                .collect()
        })
        .unwrap_or_default();
    sockets.sort();
    for path in sockets {
        // A socket left by a covobs that was killed refuses connections: skip it.
        let Ok(mut stream) = UnixStream::connect(&path).await else {
            continue;
        };
        let io = |source| ControlError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(&what).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(io)?;
        let mut answer = String::new();
        let mut reader = BufReader::new(stream);
        tokio::time::timeout(timeout, reader.read_line(&mut answer))
            .await
            .map_err(|_| io(std::io::Error::other("no answer in time")))?
            .map_err(io)?;
        let response: DumpResponse = serde_json::from_str(&answer).map_err(|e| io(e.into()))?;
        if response.not_mine {
            continue;
        }
        if !response.ok {
            return Err(ControlError::Refused(
                response.error.unwrap_or_else(|| "failed".into()),
            ));
        }
        return Ok(response);
    }
    Err(ControlError::NoAttach(label))
}

fn is_attach_socket(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("attach-") && n.ends_with(".sock"))
}
