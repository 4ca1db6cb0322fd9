//! `cargo xtask bench --only conntrack`: the agent's start on a node whose conntrack table
//! holds 1,000,000 connections (a NAT-heavy node, a big instance): time to `started` and peak
//! RSS, against the same node with an empty table.
//!
//! The table is filled in the simulated node's namespace with `conntrack -R` (batched netlink
//! creations). The kernel caps every namespace's table at `net.netfilter.nf_conntrack_max`,
//! which only the initial namespace may change (262,144 here); this section raises it for its
//! run and puts the previous value back when it ends, failed or not, after emptying the node's
//! table (a run killed meanwhile leaves the value in target/bench, and the next run restores
//! it first). Nothing else outside the bench's namespaces is touched.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use testbed::{
    agent::AgentProc,
    netns::Netns,
    topology::{Layout, Node},
};

use crate::bench::{cpu_ticks, rss_kib};

/// Connections in the loaded table.
const ENTRIES: usize = 1_000_000;
/// Of which local pods opened (masqueraded to outside servers): learnt into the kernel's
/// `POD_FLOWS` (131,072 entries) at the start. UDP: a TCP connection created through
/// ctnetlink carries the liberal-window flag (seen here), which the agent reads as picked up
/// mid-stream and rightly does not learn, so only these show the learning's cost.
const POD_OPENED: usize = 100_000;
/// Of which outside clients reach local pods through a NodePort (DNAT).
const THROUGH_NODEPORT: usize = 600_000;
/// The rest: the node's own connections to outside hosts (kubelet, the runtime, agents).
const MAX_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Where the limit before the raise is written while it is raised: a run interrupted before
/// it could restore it (Ctrl-C) is undone by the next one.
const SAVED: &str = "target/bench/nf_conntrack_max.before";

/// The global table limit, raised for the run; on drop (also on a failure) the node's table is
/// emptied, then the limit restored.
struct MaxRaised {
    before: String,
    /// The namespace whose table is emptied first.
    ns: String,
}

impl MaxRaised {
    fn to(limit: usize, ns: &Netns) -> Result<MaxRaised> {
        if let Ok(saved) = std::fs::read_to_string(SAVED) {
            println!(
                "    restoring net.netfilter.nf_conntrack_max to {} (an interrupted run raised it)",
                saved.trim()
            );
            std::fs::write(MAX_SYSCTL, saved.trim())
                .with_context(|| format!("writing {MAX_SYSCTL}"))?;
            let _ = std::fs::remove_file(SAVED);
        }
        let before = std::fs::read_to_string(MAX_SYSCTL)
            .with_context(|| format!("reading {MAX_SYSCTL} (is nf_conntrack loaded?)"))?
            .trim()
            .to_string();
        let raised = MaxRaised {
            before: before.clone(),
            ns: ns.name.clone(),
        };
        if before.parse::<usize>().is_ok_and(|b| b >= limit) {
            return Ok(raised);
        }
        println!(
            "    raising net.netfilter.nf_conntrack_max {before} -> {limit} for this run (restored after)"
        );
        if let Some(dir) = Path::new(SAVED).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(SAVED, &before)?;
        std::fs::write(MAX_SYSCTL, limit.to_string())
            .with_context(|| format!("writing {MAX_SYSCTL}"))?;
        Ok(raised)
    }
}

impl Drop for MaxRaised {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "conntrack", "-F"])
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = std::fs::write(MAX_SYSCTL, &self.before) {
            eprintln!(
                "could not restore net.netfilter.nf_conntrack_max to {}: {e}",
                self.before
            );
        } else {
            let _ = std::fs::remove_file(SAVED);
            println!(
                "    net.netfilter.nf_conntrack_max restored to {}",
                self.before
            );
        }
    }
}

/// One start of the agent and what it cost.
struct Start {
    /// Process start to the `started` log line.
    started: Duration,
    /// Process start to the debug API answering (what a readiness probe waits for).
    ready: Duration,
    peak_rss_kib: u64,
    rss_kib: u64,
    cpu_ms: f64,
    tracked: u64,
    pod_opened: u64,
}

/// The agent's log line `message`'s field `field`, if it logged one.
fn logged(agent: &AgentProc, message: &str, field: &str) -> Option<Value> {
    agent.log_lines().iter().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["message"] == message).then(|| v[field].clone())
    })
}

fn start(bin: &Path, n: &Node, dir: &Path) -> Result<Start> {
    let _ = std::fs::remove_dir_all(dir);
    let wall0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let t0 = Instant::now();
    let mut agent = AgentProc::start(
        bin,
        &n.node,
        dir,
        19_705,
        &["--cluster-cidr", "172.16.0.0/16", "--log-level", "info"],
    );
    let ready = t0.elapsed();
    let ts = logged(&agent, "started", "timestamp")
        .and_then(|t| t.as_str().map(crate::churn::parse_ts))
        .context("the agent logged no `started` line")?;
    let started = Duration::from_secs_f64((ts - wall0.as_secs_f64()).max(0.0));
    let (rss, hwm) = rss_kib(agent.pid());
    let cpu_ms = cpu_ticks(agent.pid()) as f64 * 10.0;
    let field = |f: &str| {
        logged(&agent, "learnt the connections local pods had open", f)
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let (tracked, pod_opened) = (field("tracked"), field("pod_opened"));
    agent.signal(libc::SIGTERM);
    Ok(Start {
        started,
        ready,
        peak_rss_kib: hwm,
        rss_kib: rss,
        cpu_ms,
        tracked,
        pod_opened,
    })
}

/// `conntrack -R` lines: `-I` creations of established connections, as the node's netfilter
/// would have tracked them.
fn table(n: &Node) -> String {
    let node = n.node_ip;
    let pods: Vec<&str> = n.pods.iter().map(|p| p.ip).collect();
    let mut out = String::with_capacity(ENTRIES * 200);
    // A distinct (address, port) per connection: 60,000 ports per address.
    let addr = |base: &str, i: usize| format!("{base}.{}.{}", i / 60_000 / 256, i / 60_000 % 256);
    let port = |i: usize| 1_024 + i % 60_000;
    let tcp = "-p tcp --state ESTABLISHED -u SEEN_REPLY,ASSURED -t 86400";
    for i in 0..ENTRIES {
        let pod = pods[i % pods.len()];
        let line = if i < POD_OPENED {
            // A pod's flow to an outside server (UDP, see POD_OPENED), masqueraded to the
            // node's address.
            let server = addr("203.0", i);
            format!(
                "-I -p udp -t 3600 -s {pod} -d {server} --sport {} --dport 443 -r {server} -q {node} --reply-port-src 443 --reply-port-dst {}\n",
                port(i),
                port(i)
            )
        } else if i < POD_OPENED + THROUGH_NODEPORT {
            // An outside client through a NodePort: DNAT to a pod, the client's address kept
            // (`externalTrafficPolicy: Local`; masqueraded, a pod's replies could not tell
            // more than 64k of them apart).
            let client = addr("198.18", i);
            format!(
                "-I {tcp} -s {client} -d {node} --sport {} --dport {} -r {pod} -q {client} --reply-port-src 80 --reply-port-dst {}\n",
                port(i),
                n.nodeport,
                port(i)
            )
        } else {
            // The node's own connection to an outside host.
            let host = addr("100.64", i);
            format!(
                "-I {tcp} -s {node} -d {host} --sport {} --dport 443 -r {host} -q {node} --reply-port-src 443 --reply-port-dst {}\n",
                port(i),
                port(i)
            )
        };
        out.push_str(&line);
    }
    out
}

fn fill(ns: &Netns, lines: &str) -> Result<Duration> {
    let t = Instant::now();
    let mut load = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "conntrack", "-R", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting conntrack -R")?;
    load.stdin
        .take()
        .context("conntrack -R stdin")?
        .write_all(lines.as_bytes())?;
    let status = load.wait()?;
    if !status.success() {
        bail!("conntrack -R failed: {status}");
    }
    Ok(t.elapsed())
}

fn count(ns: &Netns) -> Result<u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "conntrack", "-C"])
        .output()
        .context("conntrack -C")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("conntrack -C output")
}

fn row(s: &Start) -> Value {
    json!({
        "started_s": s.started.as_secs_f64(),
        "ready_s": s.ready.as_secs_f64(),
        "peak_rss_mib": s.peak_rss_kib as f64 / 1024.0,
        "rss_mib": s.rss_kib as f64 / 1024.0,
        "agent_cpu_ms": s.cpu_ms,
        "connections_read": s.tracked,
        "pod_opened_learnt": s.pod_opened,
    })
}

/// The agent started on an empty table and on a full one.
pub fn run(bin: &Path) -> Result<(Value, String)> {
    println!("==> agent start with an empty conntrack table and with {ENTRIES} connections");
    let n = Node::new(Layout::Calico);
    let dir = std::env::temp_dir().join(format!("observer-bench-ct-{}", std::process::id()));
    // Conntrack is in use in the node's namespace as kube-proxy makes it: a NAT rule.
    n.node.sh(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth0",
        "-j",
        "RETURN",
    ]);
    let idle = start(bin, &n, &dir.join("idle"))?;
    let raised = MaxRaised::to(ENTRIES + 100_000, &n.node)?;
    let lines = table(&n);
    let fill_time = fill(&n.node, &lines)?;
    drop(lines);
    let in_table = count(&n.node)?;
    println!(
        "    {in_table} connections tracked in the node's namespace ({:.1} s to load)",
        fill_time.as_secs_f64()
    );
    if in_table < ENTRIES as u64 {
        bail!("only {in_table} of {ENTRIES} connections could be created");
    }
    let loaded = start(bin, &n, &dir.join("loaded"))?;
    // The table emptied, then the limit restored, before the node goes.
    drop(raised);
    let over_idle = (loaded.peak_rss_kib as f64 - idle.peak_rss_kib as f64) / 1024.0;
    let value = json!({
        "connections": in_table,
        "pod_opened": POD_OPENED,
        "through_nodeport": THROUGH_NODEPORT,
        "node_own": ENTRIES - POD_OPENED - THROUGH_NODEPORT,
        "empty": row(&idle),
        "loaded": row(&loaded),
        "peak_rss_over_empty_mib": over_idle,
    });
    let md = crate::perfdoc::conntrack(&value);
    Ok((value, format!("## Agent start on a busy node\n\n{md}\n")))
}
