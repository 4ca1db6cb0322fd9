//! The metrics endpoint: `/metrics`, `/healthz` and `/readyz`, over plain HTTP or, with a
//! certificate and key (`--metrics-tls-cert-file`, `--metrics-tls-key-file`), over TLS; and,
//! with `--metrics-bearer-token-file`, `/metrics` only for a client that presents that token
//! (`Authorization: Bearer …`, as Prometheus sends it from a ServiceMonitor's
//! `authorization`). The probes stay open: they tell nothing but up and ready. The files are
//! read again when they change (a Secret's rotation), never cached past it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};

use anyhow::Context as _;
use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    routing::get,
};

use super::state::Shared;

/// How the endpoint is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsEndpoint {
    pub addr: std::net::SocketAddr,
    /// TLS: the PEM certificate chain and its key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A file holding the token `/metrics` requires.
    pub bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Pem { path: String, problem: String },
    #[error("the metrics certificate and key: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}: empty (a bearer token is needed)")]
    EmptyToken(String),
}

fn read(path: &Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|source| EndpointError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The token in `path`, trimmed; an empty one is an error (it would admit nothing, or
/// everything with a careless comparison).
pub fn read_token(path: &Path) -> Result<String, EndpointError> {
    let t = String::from_utf8_lossy(&read(path)?).trim().to_string();
    if t.is_empty() {
        return Err(EndpointError::EmptyToken(path.display().to_string()));
    }
    Ok(t)
}

/// A TLS server configuration from PEM files: checked at configuration, built again when
/// either file changes.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, EndpointError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let pem = |path: &Path, problem: String| EndpointError::Pem {
        path: path.display().to_string(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no PEM certificate in it".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem(key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)?;
    Ok(config)
}

/// An `address:port` to listen on. An IPv6 address may come without brackets
/// (`fd00::7:19962`: the port is after the last colon), as the downward API's `status.hostIP`
/// gives it, which the manifests put before `:PORT` without knowing the family.
pub fn listen_addr(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let ip: std::net::Ipv6Addr = host.parse().ok()?;
    Some(std::net::SocketAddr::new(ip.into(), port.parse().ok()?))
}

/// Whether `headers` carry `Bearer <token>`, compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn router(shared: Arc<Shared>, token_file: Option<PathBuf>) -> Router {
    let s1 = shared.clone();
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let s = s1.clone();
                let token_file = token_file.clone();
                async move {
                    if let Some(f) = &token_file {
                        match read_token(f) {
                            Ok(t) if authorized(&headers, &t) => {}
                            Ok(_) => {
                                return (
                                    StatusCode::UNAUTHORIZED,
                                    [("www-authenticate", "Bearer")],
                                    String::from("unauthorized\n"),
                                );
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the metrics bearer token cannot be read");
                                return (
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    [("content-type", "text/plain")],
                                    String::from("the bearer token cannot be read\n"),
                                );
                            }
                        }
                    }
                    s.metrics.sample_kernel(&s.maps);
                    (
                        StatusCode::OK,
                        [("content-type", "text/plain; version=0.0.4")],
                        s.metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let s = shared.clone();
                async move {
                    if s.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: first sync pending\n",
                        )
                    }
                }
            }),
        )
}

/// What identifies a file's version: modification time, inode and length (a rotation that
/// keeps the time, `cp -p`, still changes the inode or the length; a Secret's update swaps
/// the file).
type Stamp = (SystemTime, u64, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.ino(), m.len()))
}

/// The TLS acceptor, rebuilt when the certificate or the key changes. A pair that does not
/// load (half written, or a key of another certificate) keeps the previous acceptor, logged,
/// and is tried again at the next connection: only a pair that loaded is remembered.
struct Acceptor {
    files: (PathBuf, PathBuf),
    loaded: Option<(Stamp, Stamp)>,
    current: tokio_rustls::TlsAcceptor,
    /// The stamps of the last pair that failed, so its error is logged once.
    failed: Option<(Option<Stamp>, Option<Stamp>)>,
}

impl Acceptor {
    fn stamps(files: &(PathBuf, PathBuf)) -> (Option<Stamp>, Option<Stamp>) {
        (stamp(&files.0), stamp(&files.1))
    }

    fn new(files: (PathBuf, PathBuf)) -> anyhow::Result<Acceptor> {
        let stamps = Self::stamps(&files);
        let config = server_config(&files.0, &files.1)?;
        Ok(Acceptor {
            loaded: stamps.0.zip(stamps.1),
            files,
            current: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            failed: None,
        })
    }

    fn get(&mut self) -> tokio_rustls::TlsAcceptor {
        let stamps = Self::stamps(&self.files);
        if stamps.0.zip(stamps.1) != self.loaded {
            match server_config(&self.files.0, &self.files.1) {
                Ok(c) => {
                    tracing::info!("the metrics certificate changed: loaded");
                    self.current = tokio_rustls::TlsAcceptor::from(Arc::new(c));
                    self.loaded = stamps.0.zip(stamps.1);
                    self.failed = None;
                }
                Err(e) => {
                    if self.failed != Some(stamps) {
                        tracing::error!(error = %e, "the metrics certificate changed but does not load; serving the previous one");
                        self.failed = Some(stamps);
                    }
                }
            }
        }
        self.current.clone()
    }
}

/// Serves the endpoint until the process ends.
pub async fn serve(endpoint: MetricsEndpoint, shared: Arc<Shared>) -> anyhow::Result<()> {
    let addr = endpoint.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let app = router(shared, endpoint.bearer_token_file.clone());
    let auth = if endpoint.bearer_token_file.is_some() {
        "bearer token"
    } else {
        "none"
    };
    let Some(files) = endpoint.tls else {
        tracing::info!(%addr, scheme = "http", auth, "serving /metrics, /healthz, /readyz");
        axum::serve(listener, app).await?;
        return Ok(());
    };
    let mut acceptor = Acceptor::new(files)?;
    tracing::info!(%addr, scheme = "https", auth, "serving /metrics, /healthz, /readyz");
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = acceptor.get();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake holds only its own task.
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp)).await;
            let Ok(Ok(stream)) = handshake else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_bare_ipv6_from_the_downward_api() {
        let a = |s: &str| listen_addr(s).map(|a| a.to_string());
        assert_eq!(a("0.0.0.0:19962").as_deref(), Some("0.0.0.0:19962"));
        assert_eq!(a("10.0.7.223:19962").as_deref(), Some("10.0.7.223:19962"));
        assert_eq!(a("[::]:19962").as_deref(), Some("[::]:19962"));
        assert_eq!(
            a("2600:1f18:4a3:6e00::7:19962").as_deref(),
            Some("[2600:1f18:4a3:6e00::7]:19962")
        );
        for bad in [
            "19962",
            "10.0.7.223",
            "10.0.7.223:",
            ":19962",
            "fd00::7",
            "host:19962",
            "10.0.7.223:99999",
        ] {
            assert_eq!(a(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("authorization", v.parse().unwrap());
            m
        };
        assert!(authorized(&h("Bearer s3cret"), "s3cret"));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "bearer s3cret",
            "s3cret",
        ] {
            assert!(!authorized(&h(bad), "s3cret"), "{bad}");
        }
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
