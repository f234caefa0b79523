//! Connecting to the fleet's servers: `nats://` or `tls://` URLs (TLS required for the latter),
//! `user:password@` or `token@` in the URL, or a credentials file (`--nats-creds`).
use std::{path::Path, time::Duration};

use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};

use super::NatsError;

/// One `--publish` (or `covobs collect`) URL, parsed; the credentials it holds are never shown.
#[derive(Clone, Debug)]
pub struct Server {
    addr: ServerAddr,
    user: Option<String>,
    password: Option<String>,
    shown: String,
}

impl Server {
    pub fn parse(url: &str) -> Result<Self, NatsError> {
        let bad = |why: &str| NatsError::BadUrl {
            url: redact(url),
            why: why.to_owned(),
        };
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("nats" | "tls")) {
            return Err(bad("expected nats://HOST:PORT or tls://HOST:PORT"));
        }
        let addr: ServerAddr = url.parse().map_err(|_| bad("not a server URL"))?;
        let user = addr.username().map(percent_decoded);
        let password = addr.password().map(percent_decoded);
        let shown = format!("{}://{}:{}", addr.scheme(), addr.host(), addr.port());
        Ok(Self {
            addr,
            user,
            password,
            shown,
        })
    }

    /// scheme://host:port, without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A URL as it may be printed: credentials replaced.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The servers as one line for messages.
pub fn shown(servers: &[Server]) -> String {
    servers
        .iter()
        .map(Server::shown)
        .collect::<Vec<_>>()
        .join(",")
}

/// Connect. With `background`, return at once and keep trying (a server down at start is
/// waited for); else the first attempt's failure is the error: refused credentials
/// ([`NatsError::Refused`]) or no server ([`NatsError::Connect`]).
pub async fn connect(
    servers: &[Server],
    creds: Option<&Path>,
    name: &str,
    background: bool,
) -> Result<async_nats::Client, NatsError> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .connection_timeout(super::CONNECT_TIMEOUT)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).clamp(100, 1000))
        })
        .max_reconnects(None::<usize>);
    if let Some(path) = creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Creds {
                path: path.to_path_buf(),
                source,
            })?;
    }
    // Credentials in the (first) URL that has some: user and password, or a token alone.
    if let Some(s) = servers.iter().find(|s| s.user.is_some()) {
        opts = match (&s.user, &s.password) {
            (Some(u), Some(p)) => opts.user_and_password(u.clone(), p.clone()),
            (Some(t), None) => opts.token(t.clone()),
            _ => opts,
        };
    }
    if servers.iter().any(|s| s.addr.tls_required()) {
        opts = opts.require_tls(true);
    }
    if background {
        opts = opts.retry_on_initial_connect();
    }
    let addrs: Vec<ServerAddr> = servers.iter().map(|s| s.addr.clone()).collect();
    let shown = shown(servers);
    opts.connect(addrs).await.map_err(|e| {
        let why = match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                return NatsError::Refused {
                    servers: shown.clone(),
                    why: "the server refused the credentials (authorization violation)".into(),
                };
            }
            ConnectErrorKind::TimedOut => "no answer (timed out)".to_owned(),
            ConnectErrorKind::Tls => format!("TLS: {e}"),
            _ => format!("cannot connect: {e}"),
        };
        NatsError::Connect {
            servers: shown.clone(),
            why,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_credentials_and_never_show_them() {
        let s = Server::parse("nats://covobs:s%40cret@127.0.0.1:4222").expect("parse");
        assert_eq!(s.user.as_deref(), Some("covobs"));
        assert_eq!(s.password.as_deref(), Some("s@cret"));
        assert_eq!(s.shown(), "nats://127.0.0.1:4222");
        let t = Server::parse("tls://tok3n@nats.example:4443").expect("parse");
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref()),
            (Some("tok3n"), None)
        );
        assert!(t.addr.tls_required());
        let e = Server::parse("http://user:pw@host:1").expect_err("scheme");
        assert!(e.is_bad_input());
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn names_are_subject_tokens() {
        assert!(super::super::check_name("--node", "fuzz-07_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", ">", &"x".repeat(65)] {
            assert!(super::super::check_name("--node", bad).is_err(), "{bad:?}");
        }
        let n = super::super::Names::new("tezedge").expect("name");
        assert_eq!(n.stream(), "COVOBS_tezedge");
        assert_eq!(n.bucket(), "covobs_tezedge");
        assert_eq!(
            n.subject("n1", "s1", super::super::wire::Kind::Artifacts),
            "covobs.tezedge.n1.s1.artifacts"
        );
        assert_eq!(
            super::super::wire::module_object("modules/abc123/libfoo.so"),
            "module/abc123"
        );
    }
}
