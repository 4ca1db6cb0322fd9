//! Helpers shared by the agent's end-to-end tests: starting `observer run` on a simulated
//! node, reading its flows, status and metrics, and checking the kernel's TCX attachments.
#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

use std::{
    collections::BTreeSet,
    io::Write,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use observer::flows::FlowRow;
use testbed::{agent::AgentProc, netns::Netns, topology::Node, traffic::http_get};

pub const BIN: &str = env!("CARGO_BIN_EXE_observer");
static PORT: AtomicU16 = AtomicU16::new(0);

/// Gives each test binary its own range of loopback ports.
pub fn ports_from(base: u16) {
    let _ = PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
}

pub fn next_port() -> u16 {
    let _ = PORT.compare_exchange(0, 19_100, Ordering::Relaxed, Ordering::Relaxed);
    PORT.fetch_add(1, Ordering::Relaxed)
}

pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The agent's settings for a simulated node.
pub fn args(n: &Node) -> Vec<String> {
    let mut a = vec![
        "--allow-source".to_string(),
        n.allowed_cidr.to_string(),
        "--service-cidr".to_string(),
        n.service_cidr.to_string(),
        "--cluster-cidr".to_string(),
        format!("{}/32", n.peer_ip),
        "--cluster-cidr".to_string(),
        format!("{}/128", n.peer_ip6),
    ];
    match n.cluster_cidr {
        Some(c) => a.extend(["--cluster-cidr".to_string(), c.to_string()]),
        None => a.extend([
            "--cluster-cidr".to_string(),
            format!("{}/32", n.peer_pod_ip),
        ]),
    }
    a
}

pub fn start(n: &Node, name: &str, extra: &[&str]) -> AgentProc {
    let mut a = args(n);
    a.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    AgentProc::start(BIN.as_ref(), &n.node, &dir(name), next_port(), &a)
}

/// Starts the agent on `n` with the Kubernetes inventory from `api` (`--kubernetes on
/// --node-name node_name`, a kubeconfig pointing at the fixture server). Does not wait for the
/// first sync.
pub fn start_with_kubeconfig(
    n: &Node,
    api: &testbed::kubeapi::KubeApi,
    name: &str,
    node_name: &str,
    extra: &[&str],
) -> AgentProc {
    let d = dir(name);
    std::fs::create_dir_all(&d).unwrap();
    let kubeconfig = d.join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    let mut args = vec!["--kubernetes", "on", "--node-name", node_name];
    args.extend_from_slice(extra);
    AgentProc::start_env(
        BIN.as_ref(),
        &n.node,
        &d.join("agent"),
        next_port(),
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
}

pub fn flows(agent: &AgentProc) -> Vec<FlowRow> {
    let out = agent.cli(&["flows", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn status(agent: &AgentProc) -> serde_json::Value {
    let out = agent.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status json")
}

pub fn attached_names(agent: &AgentProc) -> BTreeSet<String> {
    status(agent)["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent has refreshed its flows from the kernel `n` more times: every flow
/// seen before the call has then had the chance to settle, be counted and alerted on (with the
/// default 1 s settle time and refresh interval, 3 refreshes are enough).
pub fn wait_refreshes(agent: &AgentProc, n: u64) {
    let count = || {
        status(agent)["flow_refreshes"]
            .as_u64()
            .expect("flow_refreshes")
    };
    let want = count() + n;
    wait_for(
        &format!("{n} flow refreshes"),
        Duration::from_secs(5 + 2 * n),
        || count() >= want,
    );
}

pub fn metrics(n: &Node, agent: &AgentProc) -> String {
    let (code, body) = http_get(&n.node, agent.metrics_port, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    body
}

/// The value of the sample with exactly these labels, if present.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let want = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find(|l| l.starts_with(&want))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `promtool check metrics` on the exposition (a real parser).
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let problems =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // promtool exits 1 for lint warnings too; only parse errors matter here.
    assert!(
        !problems.contains("error while linting")
            && !problems.contains("text format parsing error"),
        "{problems}"
    );
}

/// TCX programs named `prog` on `iface` in `ns`.
pub fn tcx_count(ns: &Netns, iface: &'static str, dir: TcAttachType, prog: &'static str) -> usize {
    ns.run(move || {
        let (_, progs) = SchedClassifier::query_tcx(iface, dir).expect("tcx query");
        progs
            .iter()
            .filter(|p| p.name_as_str() == Some(&prog[..prog.len().min(15)]))
            .count()
    })
}

/// How many of the agent's log lines contain `needle`.
pub fn log_count(agent: &AgentProc, needle: &str) -> usize {
    agent
        .log_lines()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

pub fn alert_lines(agent: &AgentProc) -> Vec<serde_json::Value> {
    agent
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "observer::alert")
        .collect()
}
