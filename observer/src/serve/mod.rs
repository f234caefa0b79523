//! `covobs serve DIR` (and `attach`/`run --serve`): a live web view of a session directory. The
//! refresher ([`refresh`]) keeps the report data current in memory as artifacts arrive; an HTTP
//! server (axum, on covobs' tokio runtime) serves the pages ([`routes`]) and pushes each new
//! summary to them as a server-sent event, so the page updates itself. Loopback by default.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::watch;

use crate::{BadInput, report::ReportOptions};

pub mod refresh;
mod routes;
pub mod scan;
pub mod view;

/// Where `covobs serve` listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8047";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{addr} is in use: choose another with --addr (port 0: any free port)")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{}: no such directory", .0.display())]
    NoSuchDir(PathBuf),
    #[error(
        "{} is not a covobs session directory (no session.json, events.jsonl or <pid>-<comm>/)",
        .0.display()
    )]
    NotASession(PathBuf),
    #[error("{0}")]
    Report(#[from] crate::report::ReportError),
    #[error("starting the refresher thread: {0}")]
    Thread(std::io::Error),
}

impl ServeError {
    /// Caused by what the user asked for (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::InUse { .. } | Self::NoSuchDir(_) | Self::NotASession(_) => true,
            Self::Bind { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::AddrNotAvailable
            ),
            Self::Report(e) => e.is_bad_input(),
            Self::Thread(_) => false,
        }
    }
}

/// As an anyhow error: bad input (exit 2) or a runtime failure (exit 1).
fn classified(e: ServeError) -> anyhow::Error {
    let bad = e.is_bad_input();
    crate::classify(e, bad)
}

/// A bound listener, not serving yet: bound first, so a bad address fails before a session
/// starts and leaves nothing behind.
pub struct Listener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => ServeError::InUse { addr },
                _ => ServeError::Bind { addr, source },
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// A running server and its refresher; both stop when it is dropped (or [`Serving::stop`]).
pub struct Serving {
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Stop serving and wait for the refresher to let go of its work directory.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.abort();
        if let Some(t) = self.refresher.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.abort();
        if let Some(t) = self.refresher.take() {
            // The refresher removes its temporary directory as it ends: wait for it, without
            // stalling a runtime that cannot spare the thread.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| {
                        let _ = t.join();
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = t.join();
                }
            }
        }
    }
}

/// The line that says where the view is, and who can reach it.
pub fn announce(dir: &Path, listener: &Listener) -> String {
    let ip = listener.addr.ip();
    let reach = if ip.is_loopback() {
        "loopback only: this machine's users can open it, no other machine can".to_string()
    } else {
        format!(
            "on {ip}: reachable from other machines; anyone who can connect sees the coverage and the sources"
        )
    };
    format!(
        "covobs: serving {} at {} ({reach})",
        dir.display(),
        listener.url()
    )
}

/// Check that `dir` is a session directory (being written or finished).
pub fn check_dir(dir: &Path) -> Result<(), ServeError> {
    match scan::is_session_dir(dir) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ServeError::NotASession(dir.to_path_buf())),
        Err(crate::report::ReportError::NoSuchDir(d)) => Err(ServeError::NoSuchDir(d)),
        Err(e) => Err(e.into()),
    }
}

/// Serve the live view of `dir` on `listener` until the returned handle is stopped or dropped.
pub fn start(listener: Listener, dir: &Path, opts: ReportOptions) -> Result<Serving, ServeError> {
    let (tx, rx) = watch::channel(Arc::new(refresh::Published::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = refresh::spawn(dir, opts, tx, stop.clone()).map_err(ServeError::Thread)?;
    let app = routes::router(routes::AppState {
        published: rx,
        loopback: listener.addr.ip().is_loopback(),
    });
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener.listener, app).await {
            eprintln!("covobs: the web view stopped: {e}");
        }
    });
    Ok(Serving {
        stop,
        refresher: Some(refresher),
        server,
    })
}

/// `covobs serve DIR --addr ADDR`: until Ctrl-C or SIGTERM.
pub async fn run(dir: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
    let mut shutdown = crate::sys::shutdown::Shutdown::install(None);
    check_dir(&dir).map_err(classified)?;
    let listener = Listener::bind(addr).await.map_err(classified)?;
    eprintln!("{}", announce(&dir, &listener));
    let serving = start(listener, &dir, ReportOptions::default()).map_err(classified)?;
    shutdown.wait().await;
    serving.stop().await;
    Ok(())
}

/// For `attach --serve`/`run --serve`: bind now (bad input before anything starts).
pub async fn bind_for_session(addr: Option<SocketAddr>) -> Result<Option<Listener>, BadInput> {
    match addr {
        None => Ok(None),
        Some(a) => Listener::bind(a)
            .await
            .map(Some)
            .map_err(|e| BadInput(e.to_string())),
    }
}
