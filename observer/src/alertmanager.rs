//! Optional push of direct-access alerts straight to Alertmanager's v2 API (`--alertmanager-url`),
//! for teams that want them faster than a scrape and rule cycle. The flow tracker offers each
//! alert line it writes (its folding is the only one: `flows/alerts.rs`) to a bounded queue
//! (never waits); a task batches, posts, and backs off on errors, with bounded memory while
//! Alertmanager is down. Alerts carry the labels of the Prometheus rule they stand for (the
//! agent's severity, node, workload, port, state, origin) so Alertmanager routes them alike.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::{clock, flows::FlowRow, metrics::Metrics};

/// Alerts waiting for the push task.
const QUEUE: usize = 1024;
/// Alerts kept while Alertmanager is unreachable (the oldest are dropped beyond).
const PENDING: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// An Alertmanager base address: `http://host:port[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl std::str::FromStr for AmUrl {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or("an http:// URL (https is not supported: use a plain in-cluster Service)")?;
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| "a port from 1 to 65535")?)
            }
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err("a host name or address");
        }
        Ok(AmUrl {
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
        url: AmUrl,
        window: Duration,
        metrics: std::sync::Arc<Metrics>,
        node: String,
    ) -> Pusher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(url, window, rx, metrics.clone(), node));
        Pusher { tx, metrics }
    }

    /// Offers an alert line standing for `count` accesses; never waits. A full queue drops it,
    /// counted in `observer_alertmanager_dropped_total`.
    pub fn offer(&self, row: &FlowRow, count: u64) {
        let alert = Alert {
            row: row.clone(),
            count,
        };
        if self.tx.try_send(alert).is_err() {
            self.metrics.am_dropped.inc();
        }
    }
}

/// The agent's severity (high, medium, low; empty without the Kubernetes inventory) in the
/// vocabulary of the rules and of Alertmanager routes.
pub fn alert_severity(agent: &str) -> &'static str {
    match agent {
        "medium" => "warning",
        "low" => "info",
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
    let (alertname, severity) = if row.origin == crate::flows::ORIGIN_UNKNOWN {
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

async fn post(url: &AmUrl, body: &str) -> Result<(), String> {
    let addr = (url.host.as_str(), url.port);
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "POST {}/api/v2/alerts HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        url.prefix,
        url.host,
        url.port,
        body.len(),
        body
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let status = String::from_utf8_lossy(&head[..n]);
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        Some(code) => Err(format!("HTTP {code}")),
        None => Err("not an HTTP answer".to_string()),
    }
}

async fn run(
    url: AmUrl,
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
        match post(&url, &body).await {
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
        assert!("https://am:9093".parse::<AmUrl>().is_err());
        assert!("am:9093".parse::<AmUrl>().is_err());
        assert!("http://am:99999".parse::<AmUrl>().is_err());
        assert!("http://:9093".parse::<AmUrl>().is_err());
    }
}
