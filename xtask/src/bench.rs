//! `cargo xtask bench`: figures, never pass/fail. Results go to target/bench/report.json and
//! report.md; `--write-docs` also renders docs/performance.md from the report (`perfdoc`).
//!
//! Sections (all by default, or some with `--only`): the datapath cost per program and packet
//! class, throughput A/B, pod veth churn, spoofed-source floods, and the Kubernetes inventory at
//! scale, and the agent's start with a million conntrack entries.

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

/// A pod as a real API server lists it (about 4 KiB of JSON): managed fields, the container
/// spec, volumes, tolerations, conditions and container statuses, most of which the agent
/// does not read.
fn pod(i: usize, node: &str, ip: String) -> Value {
    let app = format!("app-{}", i % 97);
    let name = format!("app-{:x}-{i}", i % 97);
    let t = "2026-11-30T08:15:42Z";
    let f = |k: &str| json!({k: {}});
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|c| json!({"type": c, "status": "True", "lastProbeTime": null, "lastTransitionTime": t}))
    .collect();
    json!({
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": format!("{app}-5d9f-"),
            "namespace": format!("ns-{}", i % 50),
            "creationTimestamp": t,
            "labels": {"app": app, "pod-template-hash": "5d9f"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": t},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d9f"), "uid": "5b1f9f1e-2c4a-4e8f-9a1b-3c5d7e9f0a2b", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": t, "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"5b1f9f1e\"}": {}}},
                              "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}}, "f:resources": f("f:requests"), "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                                         "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": t, "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}, "k:{\"type\":\"Initialized\"}": {".": {}, "f:status": {}}, "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}},
                                           "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {".": {}, "k:{\"ip\":\"x\"}": {".": {}, "f:ip": {}}}, "f:startTime": {}}}}
            ]
        },
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "app", "image": format!("registry.example.com/{app}:1.4.2"), "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
            }],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}, {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}, {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}], "defaultMode": 420}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
            "securityContext": {}, "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "10.100.0.1", "hostIPs": [{"ip": "10.100.0.1"}],
            "podIP": ip.clone(), "podIPs": [{"ip": ip}],
            "startTime": t,
            "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": t}}, "lastState": {}, "ready": true, "restartCount": 0, "image": format!("registry.example.com/{app}:1.4.2"), "imageID": "registry.example.com/app@sha256:4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9", "containerID": "containerd://0b6d3f1e2c4a4e8f9a1b3c5d7e9f0a2b0b6d3f1e2c4a4e8f9a1b3c5d7e9f0a2b", "started": true}],
            "qosClass": "Burstable"
        }
    })
}

pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

pub(crate) fn status(agent: &AgentProc) -> Option<Value> {
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
                let events = match (v.get("events_received"), v.get("events_lost")) {
                    (Some(r), Some(l)) => format!(" ({r} events read, {l} lost)"),
                    _ => String::new(),
                };
                md.push_str(&format!("| {k}{events} | {m:.0} (mean) | | |\n"));
            }
        }
        md.push_str(&format!(
            "\nFloor (empty program): {} ns median. kernel.bpf_stats_enabled = {} (when 1, every run costs about 45 ns more).\n\n",
            dp["floor_ns"]["median"], dp["kernel.bpf_stats_enabled"]
        ));
        let r = &dp["refresh"];
        let ms = |k: &str| r[k].as_f64().map_or("?".to_string(), |v| format!("{v:.1}"));
        md.push_str(&format!(
            "## Flow refresh and scrape, full table ({} flows; ms, least of 3)\n\n| step | ms |\n|---|---|\n| kernel table read per key (the refresh before, under the tracker's lock) | {} |\n| kernel table read by iteration (the scrape's count before) | {} |\n| kernel table read in batches (BPF_MAP_LOOKUP_BATCH; the refresh now, outside the lock) | {} |\n| tracker refresh, every flow settled (under the lock, no syscall) | {} |\n| a scrape's kernel sampling (the table's fill as of the last refresh, no table read) | {} |\n| tracker refresh, every flow expiring at once (one pass) | {} |\n| the expiry before: one retain over the order per expired flow | {} |\n\n",
            r["flows"],
            ms("kernel_read_per_key_ms"),
            ms("kernel_read_iterate_ms"),
            ms("kernel_read_batch_ms"),
            ms("tracker_refresh_ms"),
            ms("scrape_sample_kernel_ms"),
            ms("tracker_refresh_all_expiring_ms"),
            ms("expiry_one_retain_per_flow_ms"),
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
    /// The agent's start with 1,000,000 conntrack entries: time and memory.
    Conntrack,
}

impl Section {
    pub(crate) const ALL: [Section; 6] = [
        Section::Datapath,
        Section::Throughput,
        Section::Churn,
        Section::Flood,
        Section::Inventory,
        Section::Conntrack,
    ];

    /// The section's key in report.json.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Section::Datapath => "datapath",
            Section::Throughput => "throughput",
            Section::Churn => "churn",
            Section::Flood => "flood",
            Section::Inventory => "inventory_sync",
            Section::Conntrack => "conntrack_start",
        }
    }
}

/// Runs the benchmark (every section, or only those given) with the release binary `bin`.
/// The report (target/bench/report.json) also keeps when and where it ran, under
/// `perfdoc::META_KEY`.
pub fn run(bin: &Path, root: &Path, only: &[Section]) -> Result<()> {
    // Another build than the checkout's (XTASK_BENCH_AGENT) is named on the page.
    let other_agent = std::env::var_os("XTASK_BENCH_AGENT").map(|_| bin);
    let meta = crate::perfdoc::Meta::collect(std::time::SystemTime::now(), other_agent);
    let mut report = serde_json::Map::new();
    let mut md = String::from("# observer bench\n\n");
    for section in Section::ALL {
        if !only.is_empty() && !only.contains(&section) {
            continue;
        }
        let (value, text) = match section {
            Section::Datapath => datapath(bin)?,
            Section::Throughput => crate::throughput::run(bin)?,
            Section::Churn => crate::churn::run(bin)?,
            Section::Flood => crate::flood::run(bin)?,
            Section::Inventory => inventory(bin)?,
            Section::Conntrack => crate::conntrack::run(bin)?,
        };
        print!("{text}");
        report.insert(section.key().into(), value);
        md.push_str(&text);
    }
    report.insert(crate::perfdoc::META_KEY.into(), meta.to_json());
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

/// When an agent's inventory synced.
struct Synced {
    /// Start to the first full sync.
    synced: Duration,
    /// Agent CPU (ms) at the first full sync.
    cpu_ms: f64,
    /// Start to `want` addresses in the maps.
    full: Duration,
    addresses: usize,
}

/// Starts an agent against the fixture API (`--kubernetes on` and `extra`) and waits for its
/// first full sync and `want` addresses in the kernel maps, polling `observer status`.
fn start_synced(
    bin: &Path,
    ns: &Netns,
    dir: &Path,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
    want: usize,
) -> Result<(AgentProc, Synced)> {
    let started = Instant::now();
    let mut args = vec![
        "--kubernetes",
        "on",
        "--node-name",
        ME,
        "--log-level",
        "warn",
    ];
    args.extend_from_slice(extra);
    let agent = AgentProc::start_env(bin, ns, dir, port, &args, env);
    let mut synced = None;
    loop {
        let s = status(&agent);
        let is_synced = s.as_ref().is_some_and(|s| s["inventory"]["synced"] == true);
        if is_synced && synced.is_none() {
            synced = Some((started.elapsed(), cpu_ticks(agent.pid()) as f64 * 10.0));
        }
        let n = s
            .as_ref()
            .and_then(|s| s["inventory"]["addresses"].as_u64())
            .unwrap_or(0) as usize;
        if let (Some((at, cpu_ms)), true) = (synced, n >= want) {
            let full = started.elapsed();
            let sync = Synced {
                synced: at,
                cpu_ms,
                full,
                addresses: n,
            };
            return Ok((agent, sync));
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the inventory did not sync in 10 minutes ({n} of {want} addresses)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let kube = [("KUBECONFIG", kubeconfig.to_str().context("path")?)];
    let want = NODES_N + total_pods;
    let (mut agent, sync) = start_synced(bin, &ns, &dir.join("agent"), 19_702, &[], &kube, want)?;
    let (synced_at, synced_cpu_ms, addresses) = (sync.synced, sync.cpu_ms, sync.addresses);
    let full = sync.full;
    let (rss, hwm) = rss_kib(agent.pid());
    println!(
        "    synced in {:.2} s, agent CPU {:.2} s, RSS {:.1} MiB",
        synced_at.as_secs_f64(),
        synced_cpu_ms / 1000.0,
        hwm as f64 / 1024.0
    );
    let (pages, page_bytes) = api.list_load();
    let (watches, _) = api.counters();
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
    // A node joins, then leaves: its pod CIDR comes and goes. Timed until a source inside it
    // is judged in cluster (then outside again), with the agent's CPU and its map writes.
    let joiner = node(NODES_N);
    let joiner_name = joiner["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let src = format!("100.{}.{}.7", 64 + NODES_N / 256, NODES_N % 256);
    let node_change = |what: &str, want: &str, act: &dyn Fn()| -> Result<Value> {
        let writes = |s: &Option<Value>| {
            s.as_ref()
                .and_then(|s| s["inventory"]["writes"].as_u64())
                .unwrap_or(0)
        };
        let w0 = writes(&status(&agent));
        let cpu0 = cpu_ticks(agent.pid());
        let t = Instant::now();
        act();
        loop {
            let o = agent.cli(&["explain", &src, "100.64.0.250:8080", "--json"]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            if v["verdict"] == want {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("a node {what} did not reach the maps in 120 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        // Let the sync finish writing before counting.
        std::thread::sleep(Duration::from_millis(300));
        let cpu_ms = (cpu_ticks(agent.pid()) - cpu0) as f64 * 10.0;
        let w = writes(&status(&agent)) - w0;
        Ok(json!({"ms": ms, "agent_cpu_ms": cpu_ms, "map_writes": w}))
    };
    let join = node_change("join", "in_cluster", &|| api.apply(NODES, joiner.clone()))?;
    let leave = node_change("leave", "direct_to_pod", &|| {
        api.delete(NODES, "", &joiner_name)
    })?;
    // The same cluster with `--kubernetes-pods local`: this node's pods only, the others
    // through the pod CIDR. Time, CPU, memory and the API load beside the full watch's.
    agent.signal(libc::SIGTERM);
    let (pages0, bytes0) = api.list_load();
    let local_args = [
        "--kubernetes-pods",
        "local",
        "--cluster-cidr",
        "100.64.0.0/10",
    ];
    let local_dir = dir.join("agent-local");
    let local_want = NODES_N + LOCAL_PODS;
    let (local, local_sync) =
        start_synced(bin, &ns, &local_dir, 19_703, &local_args, &kube, local_want)?;
    let local_s = local_sync.full.as_secs_f64();
    let local_cpu_ms = local_sync.cpu_ms;
    let (local_rss, _) = rss_kib(local.pid());
    let (pages1, bytes1) = api.list_load();
    let local_row = json!({
        "seconds_to_synced": local_s,
        "agent_cpu_ms_to_synced": local_cpu_ms,
        "agent_rss_mib": local_rss as f64 / 1024.0,
        "api_list_pages": pages1 - pages0,
        "api_list_mib": (bytes1 - bytes0) as f64 / 1048576.0,
    });
    let value = json!({
        "node_join": join,
        "local_pods_mode": local_row,
        "node_leave": leave,
        "nodes": NODES_N,
        "pods": total_pods,
        "local_pods": LOCAL_PODS,
        "addresses_in_kernel_map": addresses,
        "seconds_to_synced": synced_at.as_secs_f64(),
        "agent_cpu_ms_to_synced": synced_cpu_ms,
        "api_list_pages": pages,
        "api_list_mib": page_bytes as f64 / 1048576.0,
        "api_watch_streams": watches,
        "seconds_to_all_addresses_in_maps": full.as_secs_f64(),
        "agent_rss_mib": rss as f64 / 1024.0,
        "agent_peak_rss_mib": hwm as f64 / 1024.0,
        "one_pod_change_to_maps_ms": change_ms,
        "note": "includes polling `observer status` every 100 ms and `observer explain` every 5 ms (process start each time)"
    });
    let md = format!(
        "## Kubernetes inventory at scale\n\n| figure | value |\n|---|---|\n| nodes / pods (local) | {NODES_N} / {total_pods} ({LOCAL_PODS}) |\n| addresses in the kernel map | {addresses} |\n| start to synced | {:.2} s |\n| start to every address in the maps | {:.2} s |\n| agent CPU (user + system) to synced | {:.2} s |\n| API load of the sync: list pages / MiB listed / watch streams | {pages} / {:.0} / {watches} |\n| agent RSS after sync / peak | {:.1} MiB / {:.1} MiB |\n| one pod change to the maps | {:.1} ms |\n| a node joins (its pod CIDR): to the maps / agent CPU / map writes | {:.0} ms / {:.0} ms / {} |\n| the node leaves | {:.0} ms / {:.0} ms / {} |\n| `--kubernetes-pods local`: start to synced / agent CPU / RSS | {:.2} s / {:.2} s / {:.1} MiB |\n| `--kubernetes-pods local`: list pages / MiB listed | {} / {:.1} |\n\n",
        synced_at.as_secs_f64(),
        full.as_secs_f64(),
        synced_cpu_ms / 1000.0,
        page_bytes as f64 / 1048576.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        change_ms,
        join["ms"].as_f64().unwrap_or(f64::NAN),
        join["agent_cpu_ms"].as_f64().unwrap_or(f64::NAN),
        join["map_writes"],
        leave["ms"].as_f64().unwrap_or(f64::NAN),
        leave["agent_cpu_ms"].as_f64().unwrap_or(f64::NAN),
        leave["map_writes"],
        local_s,
        local_cpu_ms / 1000.0,
        local_rss as f64 / 1024.0,
        pages1 - pages0,
        (bytes1 - bytes0) as f64 / 1048576.0,
    );
    Ok((value, md))
}

pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime is the 14th field, stime the 15th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

pub(crate) fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
