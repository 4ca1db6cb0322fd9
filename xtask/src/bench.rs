//! `cargo xtask bench`: figures, never pass/fail. Results go to target/bench/report.json and
//! report.md.
//!
//! Sections (all by default, or some with `--only`): the datapath cost per program and packet
//! class, throughput A/B, pod veth churn, spoofed-source floods, and the Kubernetes inventory at
//! scale.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use testbed::{
    agent::AgentProc,
    kubeapi::{KubeApi, NODES, PODS},
    netns::Netns,
};

const NODES_N: usize = 5_000;
const PODS_PER_NODE: usize = 30;
const LOCAL_PODS: usize = 110;
const ME: &str = "node-00000";

fn node(i: usize) -> Value {
    let name = format!("node-{i:05}");
    let ip = format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256);
    json!({
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": format!("100.{}.{}.0/24", 64 + i / 256, i % 256)},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}
    })
}

fn pod(i: usize, node: &str, ip: String) -> Value {
    json!({
        "kind": "Pod",
        "metadata": {
            "name": format!("app-{:x}-{i}", i % 97),
            "namespace": format!("ns-{}", i % 50),
            "labels": {"app": format!("app-{}", i % 97), "pod-template-hash": "5d9f"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-5d9f", i % 97), "uid": "rs", "controller": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip.clone(), "podIPs": [{"ip": ip}]}
    })
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn status(agent: &AgentProc) -> Option<Value> {
    let o = agent.cli(&["status", "--json"]);
    serde_json::from_slice(&o.stdout).ok()
}

/// The datapath figures from `observer-bench` (built beside `bin`).
fn datapath(bin: &Path) -> Result<(Value, String)> {
    println!("==> datapath cost (BPF_PROG_TEST_RUN)");
    let out = std::process::Command::new(bin.with_file_name("observer-bench"))
        .output()
        .context("running observer-bench")?;
    if !out.status.success() {
        bail!(
            "observer-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dp: Value = serde_json::from_slice(&out.stdout)?;
    let mut md = String::from(
        "## Datapath cost (ns per packet above an empty TC program)\n\n| program: packet class | median | min | max |\n|---|---|---|---|\n",
    );
    if let Some(o) = dp.as_object() {
        for (k, v) in o {
            if let Some(m) = v.get("median_ns_above_floor") {
                md.push_str(&format!("| {k} | {m} | {} | {} |\n", v["min"], v["max"]));
            } else if let Some(m) = v.get("mean_ns_above_floor").and_then(Value::as_f64) {
                md.push_str(&format!("| {k} | {m:.0} (mean) | | |\n"));
            }
        }
        md.push_str(&format!(
            "\nFloor (empty program): {} ns median. kernel.bpf_stats_enabled = {} (when 1, every run costs about 45 ns more).\n\n",
            dp["floor_ns"]["median"], dp["kernel.bpf_stats_enabled"]
        ));
    }
    Ok((dp, md))
}

/// A part of the benchmark, to run alone with `cargo xtask bench --only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// ns per packet per program and class (BPF_PROG_TEST_RUN).
    Datapath,
    /// iperf3 through an observed node vs the same node bare.
    Throughput,
    /// Pod veths created at 20/s and 100/s: attach latency.
    Churn,
    /// Spoofed-source SYN floods to a pod IP.
    Flood,
    /// The 150k-pod Kubernetes inventory: sync time and memory.
    Inventory,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::Datapath,
        Section::Throughput,
        Section::Churn,
        Section::Flood,
        Section::Inventory,
    ];

    fn key(self) -> &'static str {
        match self {
            Section::Datapath => "datapath",
            Section::Throughput => "throughput",
            Section::Churn => "churn",
            Section::Flood => "flood",
            Section::Inventory => "inventory_sync",
        }
    }
}

/// Runs the benchmark (every section, or only those given) with the release binary `bin`.
pub fn run(bin: &Path, root: &Path, only: &[Section]) -> Result<()> {
    let mut report = serde_json::Map::new();
    let mut md = String::from("# observer bench\n\n");
    for section in Section::ALL {
        if !only.is_empty() && !only.contains(&section) {
            continue;
        }
        let (value, text) = match section {
            Section::Datapath => datapath(bin)?,
            Section::Throughput => crate::throughput::run(bin)?,
            Section::Churn => churn(bin)?,
            Section::Flood => flood(bin)?,
            Section::Inventory => inventory(bin)?,
        };
        print!("{text}");
        report.insert(section.key().into(), value);
        md.push_str(&text);
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&Value::Object(report))?,
    )?;
    std::fs::write(out.join("report.md"), &md)?;
    println!("(written to target/bench/report.json and report.md)");
    Ok(())
}

/// The Kubernetes inventory at scale: time to a full sync into the kernel maps, agent memory,
/// one pod change reaching the maps.
fn inventory(bin: &Path) -> Result<(Value, String)> {
    let ns = Netns::new("bench");
    ns.sh(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.sh(&["ip", "addr", "add", "10.100.0.0/16", "dev", "eth0"]);
    let api = KubeApi::start(&ns, 19_701);
    println!(
        "==> generating {NODES_N} nodes and {} pods",
        NODES_N * PODS_PER_NODE
    );
    api.load(NODES, (0..NODES_N).map(node).collect());
    let mut pods = Vec::with_capacity(NODES_N * PODS_PER_NODE);
    for n in 0..NODES_N {
        let per = if n == 0 { LOCAL_PODS } else { PODS_PER_NODE };
        for k in 0..per {
            let i = pods.len();
            let ip = format!("100.{}.{}.{}", 64 + n / 256, n % 256, k + 2);
            pods.push(pod(i, &format!("node-{n:05}"), ip));
        }
    }
    let total_pods = pods.len();
    api.load(PODS, pods);
    let dir = std::env::temp_dir().join(format!("observer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    println!("==> starting the agent against the fixture API");
    let started = Instant::now();
    let agent = AgentProc::start_env(
        bin,
        &ns,
        &dir.join("agent"),
        19_702,
        &[
            "--kubernetes",
            "on",
            "--node-name",
            ME,
            "--log-level",
            "warn",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().context("path")?)],
    );
    let want = NODES_N + total_pods;
    let mut synced_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let addresses = loop {
        let s = status(&agent);
        let synced = s.as_ref().is_some_and(|s| s["inventory"]["synced"] == true);
        if synced && synced_at.is_none() {
            synced_at = Some(started.elapsed());
        }
        let n = s
            .as_ref()
            .and_then(|s| s["inventory"]["addresses"].as_u64())
            .unwrap_or(0) as usize;
        if synced && n >= want {
            break n;
        }
        if Instant::now() > deadline {
            bail!("the inventory did not sync in 10 minutes ({n} of {want} addresses)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let full = started.elapsed();
    let (rss, hwm) = rss_kib(agent.pid());
    // One pod change: the time until `observer explain` sees the new local pod.
    let change = Instant::now();
    api.apply(PODS, pod(9_999_999, ME, "100.64.0.250".into()));
    loop {
        let o = agent.cli(&["explain", "192.0.2.1", "100.64.0.250:8080", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["verdict"] == "direct_to_pod" {
            break;
        }
        if change.elapsed() > Duration::from_secs(60) {
            bail!("a pod change did not reach the maps in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let change_ms = change.elapsed().as_secs_f64() * 1000.0;
    let value = json!({
        "nodes": NODES_N,
        "pods": total_pods,
        "local_pods": LOCAL_PODS,
        "addresses_in_kernel_map": addresses,
        "seconds_to_synced": synced_at.map(|d| d.as_secs_f64()),
        "seconds_to_all_addresses_in_maps": full.as_secs_f64(),
        "agent_rss_mib": rss as f64 / 1024.0,
        "agent_peak_rss_mib": hwm as f64 / 1024.0,
        "one_pod_change_to_maps_ms": change_ms,
        "note": "includes polling `observer status` every 100 ms and `observer explain` every 5 ms (process start each time)"
    });
    let md = format!(
        "## Kubernetes inventory at scale\n\n| figure | value |\n|---|---|\n| nodes / pods (local) | {NODES_N} / {total_pods} ({LOCAL_PODS}) |\n| addresses in the kernel map | {addresses} |\n| start to synced | {:.2} s |\n| start to every address in the maps | {:.2} s |\n| agent RSS after sync / peak | {:.1} MiB / {:.1} MiB |\n| one pod change to the maps | {:.1} ms |\n\n",
        synced_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        full.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        change_ms
    );
    Ok((value, md))
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is the 14th field, stime the 15th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Pod veth churn on a simulated node with a running agent: link created -> programs attached,
/// with the default attach mode (TCX) and with netlink filters on pod veths (`netlink-pods`).
fn churn(bin: &Path) -> Result<(Value, String)> {
    use testbed::topology::{Layout, Node};
    let n = Node::new(Layout::Calico);
    let mut out = serde_json::Map::new();
    let mut md = String::from(
        "## Pod interface churn (link created -> programs attached)\n\n| pod veth attach | rate | veths | p50 | p99 | max | missed | link creation delayed, p99 |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (mode, pod_mode) in [("auto", "tcx"), ("netlink-pods", "netlink")] {
        let dir = std::env::temp_dir().join(format!(
            "observer-bench-churn-{mode}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut agent = AgentProc::start(
            bin,
            &n.node,
            &dir,
            19_703,
            &["--cluster-cidr", "172.16.0.0/16", "--attach-mode", mode],
        );
        let runs = churn_runs(&n, &agent, &dir, pod_mode, &mut md)?;
        // Detached cleanly before the next mode.
        agent.signal(libc::SIGTERM);
        out.insert(format!("pod_veths_{pod_mode}"), runs);
    }
    md.push('\n');
    Ok((Value::Object(out), md))
}

/// Veths created at 20/s and 100/s with a running agent, each second's deleted a second later.
fn churn_runs(
    n: &testbed::topology::Node,
    agent: &AgentProc,
    dir: &Path,
    pod_mode: &str,
    md: &mut String,
) -> Result<Value> {
    use std::io::Write as _;
    let mut out = serde_json::Map::new();
    let interfaces = |agent: &AgentProc| {
        status(agent).map_or(0, |s| s["interfaces"].as_array().map_or(0, Vec::len))
    };
    let baseline = interfaces(agent);
    for (rate, count) in [(20u32, 100usize), (100, 300)] {
        println!(
            "==> churn at {rate}/s, {pod_mode} on pod veths (each second's veths deleted together, a second later, as the \
             kernel's namespace cleanup deletes pods' veths)"
        );
        agent.clear_log();
        // The kernel's creation time of each link, as `ip monitor` hears it: a deletion holds
        // the RTNL for an RCU grace period (about 16 ms here, per deletion or per batch), so a
        // link can be created after it was asked for, and the agent cannot attach before it
        // exists. One link at a time, deletions alone could not keep up with 100/s here.
        let monitor_log = dir.join(format!("monitor-{rate}.txt"));
        let monitor = Reaped(
            std::process::Command::new("ip")
                .args(["-n", &n.node.name, "-ts", "monitor", "link"])
                .stdout(std::fs::File::create(&monitor_log)?)
                .spawn()
                .context("starting ip monitor")?,
        );
        std::thread::sleep(Duration::from_millis(200));
        // One `ip -batch` process for additions and one for deletions take the commands as they
        // are written, so the pace is the bench's, not that of starting a process per link.
        // -force: a group whose creation is still queued behind the RTNL is deleted at the end.
        let batch = || {
            std::process::Command::new("ip")
                .args(["-n", &n.node.name, "-force", "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("starting ip -batch")
        };
        let (mut adder, mut deleter) = (Reaped(batch()?), Reaped(batch()?));
        let mut add = adder.0.stdin.take().context("ip -batch stdin")?;
        let mut del = deleter.0.stdin.take().context("ip -batch stdin")?;
        let mut names = Vec::new();
        let period = Duration::from_secs_f64(1.0 / f64::from(rate));
        let t0 = Instant::now();
        let wall0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let per_second = rate as usize;
        for i in 0..count + 2 * per_second {
            if i < count {
                let name = format!("veth{rate}x{i}");
                // Each second's links form a group (1, 2, ...), deleted together.
                let group = 1 + i / per_second;
                writeln!(
                    add,
                    "link add {name} group {group} type veth peer name pb{rate}x{i}"
                )?;
                add.flush()?;
                names.push(name);
            }
            if i % per_second == 0 && i >= 2 * per_second {
                writeln!(del, "link del group {}", 1 + i / per_second - 2)?;
                del.flush()?;
            }
            let next = period * (i as u32 + 1);
            if let Some(wait) = next.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        drop((add, del));
        let added = adder.0.wait()?;
        if !added.success() {
            bail!("ip -batch (additions) failed: {added}");
        }
        let _ = deleter.0.wait();
        for group in 1..=count.div_ceil(per_second) {
            let _ = std::process::Command::new("ip")
                .args([
                    "-n",
                    &n.node.name,
                    "link",
                    "del",
                    "group",
                    &group.to_string(),
                ])
                .stderr(std::process::Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(monitor);
        let mut created_at: std::collections::HashMap<String, f64> =
            std::collections::HashMap::new();
        for l in std::fs::read_to_string(&monitor_log)?.lines() {
            // [2026-11-25T03:20:34.688163] 3: veth20x1@pb20x1: <...>
            let Some((ts, rest)) = l.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
                continue;
            };
            if let Some(name) = rest.split(": ").nth(1).and_then(|n| n.split('@').next()) {
                created_at
                    .entry(name.to_string())
                    .or_insert_with(|| parse_ts(&format!("{ts}Z")));
            }
        }
        let created: Vec<(String, Option<f64>)> = names
            .into_iter()
            .map(|n| {
                let at = created_at.get(&n).copied();
                (n, at)
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let mut attached: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        for l in agent.log_lines() {
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if v["message"] == "attached"
                && let (Some(i), Some(ts)) = (v["iface"].as_str(), v["timestamp"].as_str())
            {
                attached.insert(i.to_string(), parse_ts(ts));
            }
        }
        let mut lat: Vec<f64> = Vec::new();
        let mut missed = 0;
        let mut unheard = 0;
        for (name, at) in &created {
            match (at, attached.get(name)) {
                (Some(c), Some(t)) => lat.push(((t - c) * 1000.0).max(0.0)),
                (None, Some(_)) => unheard += 1,
                (_, None) => missed += 1,
            }
        }
        if unheard > 0 {
            println!(
                "    {unheard} links attached but not heard by ip monitor: left out of the latencies"
            );
        }
        // How late the kernel created each link after it was asked for (RTNL contention).
        let mut delay: Vec<f64> = created
            .iter()
            .enumerate()
            .filter_map(|(i, (_, at))| {
                at.map(|c| ((c - wall0 - i as f64 / f64::from(rate)) * 1000.0).max(0.0))
            })
            .collect();
        delay.sort_by(|a, b| a.total_cmp(b));
        let delay_p99 = delay
            .get(((delay.len() as f64 - 1.0) * 0.99).round() as usize)
            .copied()
            .unwrap_or(f64::NAN);
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        md.push_str(&format!(
            "| {pod_mode} | {rate}/s | {count} | {:.1} ms | {:.1} ms | {:.1} ms | {missed} | {delay_p99:.0} ms |\n",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        ));
        out.insert(format!("churn_{rate}_per_s"), json!({"veths": count, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "missed": missed, "link_creation_delay_p99_ms": delay_p99}));
    }
    std::thread::sleep(Duration::from_secs(1));
    let left = interfaces(agent);
    md.push_str(&format!(
        "| {pod_mode} | interfaces the agent follows | {baseline} before, {left} after | | | | | |\n"
    ));
    out.insert(
        "interfaces_before_and_after".into(),
        json!([baseline, left]),
    );
    Ok(Value::Object(out))
}

/// A child process killed and reaped when dropped, so an early return leaves none behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames per second of one run of the flood, and what the observer made of them.
struct FloodRun {
    sent: u64,
    arrived: u64,
    seen: f64,
    events: f64,
    lost: f64,
    /// New flows the kernel's LRU could not take under contention (no event; still counted).
    insert_failed: f64,
    cpu: f64,
}

/// Spoofed-source SYN floods to a pod IP from the outside host, on a simulated node with a
/// running agent: once through the whole node (the SYNs reach the pod, which answers), and
/// once dropped by nftables right after the observer's hook, so the figure is what the observer
/// itself keeps up with rather than what the node's forwarding path does.
fn flood(bin: &Path) -> Result<(Value, String)> {
    use observer_common::{packet::TCP_SYN, testing::frames::Frame};
    use testbed::{
        topology::{Layout, Node},
        traffic::{http_get, mac_of, raw_flood},
    };
    const SECS: f64 = 5.0;
    let n = Node::new(Layout::Calico);
    let dir = std::env::temp_dir().join(format!("observer-bench-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let agent = AgentProc::start(
        bin,
        &n.node,
        &dir,
        19_704,
        &["--cluster-cidr", "172.16.0.0/16"],
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let mut frame = Frame::tcp(n.outside_ip, n.pods[0].ip, 40000, 80, TCP_SYN).build();
    frame[..6].copy_from_slice(&mac_of(&n.node, "eth0"));
    let metrics = || -> Result<String> {
        Ok(http_get(&n.node, 19_704, "/metrics")
            .map_err(anyhow::Error::msg)?
            .1)
    };
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("observer_direct_pod_access_flows_total{"))
            .count()
    };
    let figures = |m: &str| {
        (
            metric_sum(
                m,
                "observer_packets_total{protocol=\"tcp\",verdict=\"direct_to_pod\"}",
            ),
            metric_sum(
                m,
                "observer_flows_total{protocol=\"tcp\",verdict=\"direct_to_pod\"}",
            ),
            metric_sum(m, "observer_events_lost_total"),
            metric_sum(
                m,
                "observer_datapath_events_total{event=\"flow_insert_failed\"}",
            ),
        )
    };
    let rx = || -> u64 {
        n.node
            .sh(&["cat", "/sys/class/net/eth0/statistics/rx_packets"])
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let series_before = series(&metrics()?);
    let mut runs = Vec::new();
    for drop_after in [false, true] {
        if drop_after {
            n.node.sh(&["nft", "add table netdev bench"]);
            n.node.sh(&[
                "nft",
                "add chain netdev bench flood { type filter hook ingress device eth0 priority 0; policy drop; }",
            ]);
        }
        println!(
            "==> spoofed-source SYN flood to a pod IP ({SECS} s, {threads} sender threads{})",
            if drop_after {
                ", dropped after the observer"
            } else {
                ", through the node"
            }
        );
        let (seen0, events0, lost0, failed0) = figures(&metrics()?);
        let rx0 = rx();
        let cpu0 = cpu_ticks(agent.pid());
        // The second run's sources follow the first's, so none is a flow already in the table.
        let first_block = if drop_after { threads as u32 } else { 0 };
        let sent = raw_flood(
            &n.outside,
            "eth0",
            frame.clone(),
            SECS,
            threads,
            first_block,
        );
        // Let the agent drain the ring buffer.
        std::thread::sleep(Duration::from_millis(3000));
        let cpu1 = cpu_ticks(agent.pid());
        let (seen1, events1, lost1, failed1) = figures(&metrics()?);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        runs.push((
            drop_after,
            FloodRun {
                sent,
                arrived: rx() - rx0,
                seen: seen1 - seen0,
                events: events1 - events0,
                lost: lost1 - lost0,
                insert_failed: failed1 - failed0,
                cpu: (cpu1 - cpu0) as f64 / hz / SECS,
            },
        ));
        if drop_after {
            n.node.sh(&["nft", "delete table netdev bench"]);
        }
    }
    let (rss, hwm) = rss_kib(agent.pid());
    let series_after = series(&metrics()?);
    let mut md = format!(
        "## Spoofed-source SYN flood to one pod ({SECS} s, {threads} sender threads, a new source per frame)\n\n| figure | through the node | dropped after the observer |\n|---|---|---|\n"
    );
    let row = |name: &str, f: &dyn Fn(&FloodRun) -> String| {
        format!("| {name} | {} | {} |\n", f(&runs[0].1), f(&runs[1].1))
    };
    md.push_str(&row("frames sent", &|r| r.sent.to_string()));
    md.push_str(&row("frames that reached the uplink", &|r| {
        r.arrived.to_string()
    }));
    md.push_str(&row("SYNs judged at the uplink (kernel counter)", &|r| {
        format!("{:.0} ({:.0}/s)", r.seen, r.seen / SECS)
    }));
    md.push_str(&row("new-flow events delivered / lost", &|r| {
        format!("{:.0} / {:.0}", r.events, r.lost)
    }));
    md.push_str(&row("new flows the flow table could not take", &|r| {
        format!("{:.0}", r.insert_failed)
    }));
    md.push_str(&row("agent CPU (cores, over the flood)", &|r| {
        format!("{:.2}", r.cpu)
    }));
    md.push_str(&format!(
        "\nAgent RSS after both {:.1} MiB, peak {:.1} MiB. Direct-access series before / after: {series_before} / {series_after}.\n\n",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    ));
    let json_runs: Vec<Value> = runs
        .iter()
        .map(|(drop_after, r)| {
            json!({
                "dropped_after_the_observer": drop_after, "seconds": SECS, "sender_threads": threads,
                "frames_sent": r.sent, "frames_at_the_uplink": r.arrived,
                "syns_seen_by_the_uplink": r.seen, "new_flows_per_second_seen": r.seen / SECS,
                "events_delivered": r.events, "events_lost": r.lost,
                "flow_inserts_failed": r.insert_failed, "agent_cpu_cores": r.cpu,
            })
        })
        .collect();
    let value = json!({
        "runs": json_runs,
        "agent_rss_mib": rss as f64 / 1024.0, "agent_peak_rss_mib": hwm as f64 / 1024.0,
        "series_before": series_before, "series_after": series_after,
    });
    Ok((value, md))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (tracing's JSON format).
fn parse_ts(ts: &str) -> f64 {
    // 2026-11-25T01:08:32.975584Z
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap_or(("", ""));
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let t: Vec<f64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    if d.len() != 3 || t.len() != 3 {
        return 0.0;
    }
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_parse() {
        assert_eq!(super::parse_ts("2026-11-25T00:00:00Z"), 1_795_564_800.0);
        assert!((super::parse_ts("2000-02-29T01:02:03.5Z") - 951_786_123.5).abs() < 1e-6);
    }
}
