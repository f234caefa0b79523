//! The HTTP side of `covobs serve`: two pages (the session, one file) kept in template files and
//! filled in by their scripts from the JSON API, and the server-sent events that carry each new
//! summary. Only files of the coverage data are ever read, with the report's rules for sources.
use std::{convert::Infallible, net::IpAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::Stream;
use tokio::sync::watch;

use super::{refresh::Published, view::FileView};

const INDEX_HTML: &str = include_str!("templates/index.html");
const FILE_HTML: &str = include_str!("templates/file.html");
const LIVE_CSS: &str = include_str!("templates/live.css");
const LIVE_JS: &str = include_str!("templates/live.js");
const INDEX_JS: &str = include_str!("templates/index.js");
const FILE_JS: &str = include_str!("templates/file.js");

/// Scripts and styles from this server only; data only from this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
pub struct AppState {
    pub published: watch::Receiver<Arc<Published>>,
    /// Bound to loopback: requests must name a loopback host (no DNS rebinding from a web page).
    pub loopback: bool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { html(INDEX_HTML) }))
        .route("/file", get(|| async { html(FILE_HTML) }))
        .route(
            "/assets/report.css",
            get(|| async { css(crate::report::html::CSS) }),
        )
        .route("/assets/live.css", get(|| async { css(LIVE_CSS) }))
        .route("/assets/live.js", get(|| async { js(LIVE_JS) }))
        .route("/assets/index.js", get(|| async { js(INDEX_JS) }))
        .route("/assets/file.js", get(|| async { js(FILE_JS) }))
        .route("/api/summary", get(summary))
        .route("/api/file", get(file))
        .route("/events", get(events))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn typed(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn html(body: &'static str) -> Response {
    typed("text/html; charset=utf-8", body)
}

fn css(body: &'static str) -> Response {
    typed("text/css; charset=utf-8", body)
}

fn js(body: &'static str) -> Response {
    typed("text/javascript; charset=utf-8", body)
}

/// The host part of a Host header (`name:port`, `[v6]:port`).
fn host_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback_host(host: &str) -> bool {
    let h = host_of(host);
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuse requests for another host name on a loopback server, and set the security headers.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if s.loopback {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "covobs serves loopback names only (localhost, 127.0.0.1, [::1])\n",
            )
                .into_response();
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Before the first refresh: a summary that says so.
const STARTING: &str = r#"{"version":0,"state":"starting"}"#;

fn summary_json(p: &Published) -> String {
    if p.version == 0 {
        STARTING.to_string()
    } else {
        p.summary.to_string()
    }
}

async fn summary(State(s): State<AppState>) -> Response {
    let p = s.published.borrow().clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        summary_json(&p),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct FileQuery {
    path: String,
}

async fn file(State(s): State<AppState>, Query(q): Query<FileQuery>) -> Response {
    let p = s.published.borrow().clone();
    let Some(data) = p.data.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no coverage data yet\n").into_response();
    };
    let version = p.version;
    // Reads the source file: off the async threads.
    let view = tokio::task::spawn_blocking(move || FileView::of(&data, &q.path, version)).await;
    match view {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such file in the coverage data\n").into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the file failed\n",
        )
            .into_response(),
    }
}

/// Each new summary as an `update` event, the current one first.
async fn events(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((s.published, true), |(mut rx, first)| async move {
        let mut first = first;
        loop {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            first = false;
            let p = rx.borrow_and_update().clone();
            if p.version == 0 {
                continue;
            }
            let event = Event::default()
                .event("update")
                .id(p.version.to_string())
                .data(&*p.summary);
            return Some((Ok::<Event, Infallible>(event), (rx, false)));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:8047",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8047",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:8047",
            "10.0.0.1:8047",
            "",
            "[fe80::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
