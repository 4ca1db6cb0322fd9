//! Optional push of direct-access alerts straight to Alertmanager's v2 API (`--alertmanager-url`),
//! for teams that want them faster than a scrape and rule cycle. The flow tracker offers each
//! alert line it writes (its folding is the only one: `flows/alerts.rs`) to a bounded queue
//! (never waits); a task batches, posts, and backs off on errors, with bounded memory while
//! Alertmanager is down. Alerts carry the labels of the Prometheus rule they stand for (the
//! agent's severity, node, workload, port, state, origin) so Alertmanager routes them alike.
//!
//! HTTP goes through hyper-util's client with rustls (the stack kube uses): `http://` or
//! `https://` with the system's roots or a CA file, and an optional bearer token or basic auth
//! read from files at each push (so rotated secrets are picked up).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    flows::{AlertSink, FlowRow, ORIGIN_UNKNOWN},
    inventory::SEVERITY_UNRATED,
    kernel::clock,
    metrics::Metrics,
};

/// Alerts waiting for the push task.
const QUEUE: usize = 1024;
/// Alerts kept while Alertmanager is unreachable (the oldest are dropped beyond).
const PENDING: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// An Alertmanager base address: `http[s]://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl AmUrl {
    /// The URL of an API path.
    pub fn join(&self, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}:{}{}{path}", self.port, self.prefix)
    }
}

/// How the agent authenticates to Alertmanager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmAuth {
    None,
    /// `Authorization: Bearer <token>`, the token read from this file.
    Bearer(PathBuf),
    /// Basic auth with this user, the password read from this file.
    Basic {
        user: String,
        password_file: PathBuf,
    },
}

/// Where and how to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmTarget {
    pub url: AmUrl,
    /// PEM CA certificates to trust for https (instead of the system's roots).
    pub ca_file: Option<PathBuf>,
    pub auth: AmAuth,
}

/// An `--alertmanager-*` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {key} {value:?}: {problem}")]
pub struct SettingError {
    pub key: &'static str,
    pub value: String,
    pub problem: String,
}

fn invalid(key: &'static str, value: &str, problem: impl Into<String>) -> SettingError {
    SettingError {
        key,
        value: value.to_string(),
        problem: problem.into(),
    }
}

impl AmTarget {
    /// The target from the `--alertmanager-*` settings, checked: a URL, a CA file only for
    /// https and holding certificates, one kind of auth, and readable secret files. `None`
    /// without a URL.
    pub fn from_settings(
        url: Option<String>,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
        user: Option<String>,
        password_file: Option<PathBuf>,
    ) -> Result<Option<AmTarget>, SettingError> {
        let url = match url {
            Some(u) if !u.trim().is_empty() => u,
            _ => {
                for (key, set) in [
                    ("alertmanager-ca-file", ca_file.is_some()),
                    ("alertmanager-bearer-token-file", token_file.is_some()),
                    ("alertmanager-user", user.is_some()),
                    ("alertmanager-password-file", password_file.is_some()),
                ] {
                    if set {
                        return Err(invalid(key, "set", "only with --alertmanager-url"));
                    }
                }
                return Ok(None);
            }
        };
        let parsed: AmUrl = url
            .trim()
            .parse()
            .map_err(|problem: &str| invalid("alertmanager-url", &url, problem))?;
        let readable = |key: &'static str, p: &PathBuf| {
            std::fs::read(p).map(|_| ()).map_err(|e| {
                invalid(
                    key,
                    &p.display().to_string(),
                    format!("a readable file ({e})"),
                )
            })
        };
        let auth = match (token_file, user, password_file) {
            (None, None, None) => AmAuth::None,
            (Some(t), None, None) => {
                readable("alertmanager-bearer-token-file", &t)?;
                AmAuth::Bearer(t)
            }
            (None, Some(user), Some(password_file)) => {
                readable("alertmanager-password-file", &password_file)?;
                AmAuth::Basic {
                    user,
                    password_file,
                }
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "alertmanager-bearer-token-file",
                    "set",
                    "either a bearer token or basic auth, not both",
                ));
            }
            (None, Some(u), None) => {
                return Err(invalid(
                    "alertmanager-user",
                    &u,
                    "with --alertmanager-password-file",
                ));
            }
            (None, None, Some(p)) => {
                return Err(invalid(
                    "alertmanager-password-file",
                    &p.display().to_string(),
                    "with --alertmanager-user",
                ));
            }
        };
        if let Some(ca) = &ca_file
            && !parsed.https
        {
            return Err(invalid(
                "alertmanager-ca-file",
                &ca.display().to_string(),
                "only with an https:// --alertmanager-url",
            ));
        }
        let target = AmTarget {
            url: parsed,
            ca_file,
            auth,
        };
        // The roots are loaded once here, so a bad CA file, or no root at all for https,
        // stops the start, not the first push.
        AmClient::new(target.clone()).map_err(|e| match e {
            AmError::NoRoots(_) => invalid("alertmanager-url", &url, e.to_string()),
            e => invalid(
                "alertmanager-ca-file",
                &target
                    .ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                e.to_string(),
            ),
        })?;
        Ok(Some(target))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AmError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it ({detail})")]
    Ca { path: String, detail: String },
    #[error(
        "no root certificate to verify an https Alertmanager with ({0}): set SSL_CERT_FILE to a \
         PEM bundle, or --alertmanager-ca-file"
    )]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Request(String),
}

/// An HTTP(S) client for Alertmanager's API.
#[derive(Clone)]
pub struct AmClient {
    target: AmTarget,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AmClient {
    /// The client; fails on an unreadable or empty CA file (checked at configuration too).
    pub fn new(target: AmTarget) -> Result<AmClient, AmError> {
        let mut roots = rustls::RootCertStore::empty();
        match &target.ca_file {
            Some(path) => {
                let p = path.display().to_string();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| AmError::Ca {
                        path: p.clone(),
                        detail: e.to_string(),
                    })?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| AmError::Ca {
                        path: p.clone(),
                        detail: e.to_string(),
                    })?;
                if certs.is_empty() {
                    return Err(AmError::Ca {
                        path: p,
                        detail: "empty".into(),
                    });
                }
                for c in certs {
                    roots.add(c)?;
                }
            }
            // Only https needs roots: none are loaded for http.
            None if target.url.https => {
                // SSL_CERT_FILE / SSL_CERT_DIR when set, else the system's bundle (the image
                // ships Debian's and sets SSL_CERT_FILE).
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let mut detail: Vec<String> =
                        found.errors.iter().map(|e| e.to_string()).collect();
                    if detail.is_empty() {
                        detail.push("no certificate found".into());
                    }
                    return Err(AmError::NoRoots(detail.join("; ")));
                }
                tracing::debug!(
                    roots = added,
                    "trusting the system's root certificates for Alertmanager"
                );
            }
            None => {}
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(AmClient {
            target,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    fn read(path: &Path) -> Result<String, AmError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|source| AmError::Read {
                path: path.display().to_string(),
                source,
            })
    }

    /// Sends a request to an API path; returns the status and at most 64 KiB of the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), AmError> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.target.url.join(path));
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        match &self.target.auth {
            AmAuth::None => {}
            AmAuth::Bearer(file) => {
                req = req.header(AUTHORIZATION, format!("Bearer {}", Self::read(file)?));
            }
            AmAuth::Basic {
                user,
                password_file,
            } => {
                use base64::Engine as _;
                let pair = format!("{user}:{}", Self::read(password_file)?);
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                req = req.header(AUTHORIZATION, format!("Basic {b64}"));
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AmError::Request(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| AmError::Request("no answer within 10 s".into()))?
            .map_err(|e| AmError::Request(format!("{e:#}: {}", source_chain(&e))))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect(),
        )
        .await
        .map_err(|_| AmError::Request("the answer's body did not come within 10 s".into()))?
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
        Ok((status, body))
    }
}

/// The causes of an error, for a log line that says why a connection failed (TLS, refused).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

impl std::str::FromStr for AmUrl {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (https, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err("an http:// or https:// URL"),
        };
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| "a port from 1 to 65535")?)
            }
            _ => (hostport, if https { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err("a host name or address");
        }
        Ok(AmUrl {
            https,
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }
}

/// An alert line, as pushed: the flow's row and how many accesses it stands for.
struct Alert {
    row: FlowRow,
    count: u64,
}

/// The handle the flow tracker offers alerts to.
#[derive(Clone)]
pub struct Pusher {
    tx: mpsc::Sender<Alert>,
    metrics: std::sync::Arc<Metrics>,
}

impl Pusher {
    /// Starts the push task; alerts name `node`.
    pub fn spawn(
        client: AmClient,
        window: Duration,
        metrics: std::sync::Arc<Metrics>,
        node: String,
    ) -> Pusher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, window, rx, metrics.clone(), node));
        Pusher { tx, metrics }
    }
}

impl AlertSink for Pusher {
    /// Offers an alert line standing for `count` accesses; never waits. A full queue drops it,
    /// counted in `observer_alertmanager_dropped_total`.
    fn offer(&self, row: &FlowRow, count: u64) {
        let alert = Alert {
            row: row.clone(),
            count,
        };
        if self.tx.try_send(alert).is_err() {
            self.metrics.am_dropped.inc();
        }
    }
}

/// The agent's severity in the vocabulary of the rules and of Alertmanager routes: `high` and
/// `unrated` (nothing tells whether the pod backs a Service) are `critical`, `medium` is
/// `warning`, `low` is `info`. Any other value (an agent older than `unrated` sent an empty one)
/// is `critical`, as the rules rate it: an access nothing lowers is never routed as minor.
pub fn alert_severity(agent: &str) -> &'static str {
    match agent {
        "medium" => "warning",
        "low" => "info",
        "high" | SEVERITY_UNRATED => "critical",
        _ => "critical",
    }
}

fn alert_json(a: &Alert, node: &str, now: SystemTime, window: Duration) -> serde_json::Value {
    let row = &a.row;
    let port = if row.protocol == "icmp" {
        "none".to_string()
    } else {
        row.dst_port.to_string()
    };
    // As the rules name them: a flow nobody can place is its own, lesser alert; the agent's
    // severity (Kubernetes inventory) maps to the rules' vocabulary, critical without it.
    let (alertname, severity) = if row.origin == ORIGIN_UNKNOWN {
        ("ObserverDirectPodAccessUnknownOrigin", "warning")
    } else {
        ("ObserverDirectPodAccess", alert_severity(&row.severity))
    };
    json!({
        "labels": {
            "alertname": alertname,
            "source": "observer-agent",
            "severity": severity,
            "team": "platform",
            "node": node,
            "pod_namespace": row.namespace,
            "pod_workload": row.workload,
            "pod_name": row.pod,
            "port": port,
            "protocol": row.protocol,
            "state": row.state,
            "origin": row.origin,
        },
        "annotations": {
            "summary": format!(
                "Pod {}/{} was reached directly on its pod IP, port {}/{}, from outside the cluster ({}).",
                row.namespace, row.pod, port, row.protocol, row.state
            ),
            "description": format!(
                "{} access(es) on node {node}, the first {}:{} -> {}:{} on {} ({}, origin {}). See `observer flows` on that node.",
                a.count, row.src, row.src_port, row.dst, row.dst_port, row.iface, row.reason, row.origin
            ),
            "runbook_url": "https://github.com/observer-project/observer/blob/main/docs/runbooks/observer-direct-pod-access.md",
        },
        "startsAt": clock::rfc3339(now),
        "endsAt": clock::rfc3339(now + window),
    })
}

/// Posts alerts to the v2 API: Ok on a 2xx answer.
async fn post(client: &AmClient, body: String) -> Result<(), String> {
    match client
        .send(Method::POST, "/api/v2/alerts", Some(body))
        .await
    {
        Ok((code, _)) if (200..300).contains(&code) => Ok(()),
        Ok((code, body)) => Err(format!(
            "HTTP {code}: {}",
            body.chars().take(200).collect::<String>()
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn run(
    client: AmClient,
    window: Duration,
    mut rx: mpsc::Receiver<Alert>,
    metrics: std::sync::Arc<Metrics>,
    node: String,
) {
    let mut pending: VecDeque<Alert> = VecDeque::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        // Wait for work (or retry what is pending after the backoff).
        if pending.is_empty() {
            match rx.recv().await {
                Some(a) => pending.push_back(a),
                None => return,
            }
        }
        while let Ok(a) = rx.try_recv() {
            pending.push_back(a);
        }
        let wall = SystemTime::now();
        let body = serde_json::Value::Array(
            pending
                .iter()
                .map(|a| alert_json(a, &node, wall, window))
                .collect(),
        )
        .to_string();
        match post(&client, body).await {
            Ok(()) => {
                metrics.am_pushes.with_label_values(&["ok"]).inc();
                pending.clear();
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                metrics.am_pushes.with_label_values(&["error"]).inc();
                tracing::warn!(error = e, retry_in = ?backoff, "pushing alerts to Alertmanager failed");
                // Kept for the retry, the oldest dropped beyond the bound.
                while pending.len() > PENDING {
                    pending.pop_front();
                    metrics.am_dropped.inc();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_severity_maps_deliberately() {
        // The same mapping as the rules' label_replace chain (deploy/prometheus).
        for (agent, routed) in [
            ("high", "critical"),
            (SEVERITY_UNRATED, "critical"),
            ("medium", "warning"),
            ("low", "info"),
            ("", "critical"),
        ] {
            assert_eq!(alert_severity(agent), routed, "{agent:?}");
        }
    }

    #[test]
    fn urls() {
        let u: AmUrl = "http://alertmanager.monitoring:9093".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("alertmanager.monitoring", 9093, "")
        );
        let u: AmUrl = "http://127.0.0.1:9093/am/".parse().unwrap();
        assert_eq!((u.port, u.prefix.as_str()), (9093, "/am"));
        let u: AmUrl = "http://[::1]:9093".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9093));
        let u: AmUrl = "https://am.monitoring".parse().unwrap();
        assert_eq!((u.https, u.port), (true, 443));
        assert_eq!(
            u.join("/api/v2/alerts"),
            "https://am.monitoring:443/api/v2/alerts"
        );
        assert!("ftp://am:9093".parse::<AmUrl>().is_err());
        assert!("am:9093".parse::<AmUrl>().is_err());
        assert!("http://am:99999".parse::<AmUrl>().is_err());
        assert!("http://:9093".parse::<AmUrl>().is_err());
    }

    #[test]
    fn alertmanager_settings_are_checked() {
        let dir = std::env::temp_dir().join(format!("observer-am-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let missing = dir.join("missing");
        // (url, ca file, bearer token file, user, password file)
        type Settings = (
            Option<&'static str>,
            Option<PathBuf>,
            Option<PathBuf>,
            Option<&'static str>,
            Option<PathBuf>,
        );
        let check = |(url, ca, token, user, password): Settings| {
            AmTarget::from_settings(
                url.map(String::from),
                ca,
                token,
                user.map(String::from),
                password,
            )
        };
        let cases: Vec<(Settings, &str)> = vec![
            (
                (None, Some(not_pem.clone()), None, None, None),
                "alertmanager-ca-file \"set\": only with --alertmanager-url",
            ),
            (
                (Some("ftp://am:9093"), None, None, None, None),
                "an http:// or https:// URL",
            ),
            (
                (
                    Some("http://am:9093"),
                    Some(not_pem.clone()),
                    None,
                    None,
                    None,
                ),
                "only with an https://",
            ),
            (
                (
                    Some("https://am:9093"),
                    Some(not_pem.clone()),
                    None,
                    None,
                    None,
                ),
                "no PEM certificate",
            ),
            (
                (
                    Some("https://am:9093"),
                    None,
                    Some(secret.clone()),
                    Some("observer"),
                    Some(secret.clone()),
                ),
                "either a bearer token or basic auth",
            ),
            (
                (Some("https://am:9093"), None, None, Some("observer"), None),
                "with --alertmanager-password-file",
            ),
            (
                (
                    Some("https://am:9093"),
                    None,
                    Some(missing.clone()),
                    None,
                    None,
                ),
                "a readable file",
            ),
        ];
        for (settings, want) in cases {
            let e = check(settings).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        let t = check((
            Some("https://am.monitoring:9093/am"),
            None,
            Some(secret.clone()),
            None,
            None,
        ))
        .unwrap()
        .unwrap();
        assert!(t.url.https);
        assert_eq!(t.auth, AmAuth::Bearer(secret));
        std::fs::remove_dir_all(&dir).ok();
    }
}
