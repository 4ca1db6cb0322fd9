//! The Kubernetes inventory through the production kube-rs code, against a fixture API server
//! that speaks the real list/watch wire format: initial sync, pods and nodes coming and going
//! reaching the kernel maps, Services and TargetGroupBindings changing the severity, an API
//! outage (stale, last inventory kept, recovery without restart) and a watch restart after
//! 410 Gone. End to end on a simulated Calico node with real traffic.

mod support;

use std::{
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{alert_lines, flows, sample, status, wait_for};
use testbed::{
    agent::AgentProc,
    kubeapi::{
        ENDPOINT_SLICES, KubeApi, NODES, PODS, SERVICE_CIDRS, SERVICES, TARGET_GROUP_BINDINGS,
        fixtures::{node, pod, service, slice, vpc_node, web_pod},
    },
    topology::{Layout, Node},
    traffic::{Servers, http_get, tcp_get},
};

const BIN: &str = env!("CARGO_BIN_EXE_observer");
static PORT: AtomicU16 = AtomicU16::new(19_500);
const NODE: &str = "ip-10-0-13-0.ec2.internal";

fn port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

fn explain(agent: &AgentProc, src: &str, dst: &str) -> String {
    let o = agent.cli(&["explain", src, dst, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["verdict"].as_str().unwrap().to_string()
}

fn wait_verdict(agent: &AgentProc, src: &str, dst: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = explain(agent, src, dst);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{src} -> {dst}: {got}, want {want}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the agent on `n` with the inventory from `api` (`--kubernetes on`), and waits for the
/// first full sync.
fn start_with_api(
    n: &Node,
    api: &KubeApi,
    name: &str,
    node_name: &str,
    extra: &[&str],
) -> AgentProc {
    let dir = std::env::temp_dir().join(format!("observer-kube-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    let mut args = vec!["--kubernetes", "on", "--node-name", node_name];
    args.extend_from_slice(extra);
    let agent = AgentProc::start_env(
        BIN.as_ref(),
        &n.node,
        &dir.join("agent"),
        port(),
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&agent)["inventory"]["synced"] != true {
        assert!(
            Instant::now() < deadline,
            "never synced:\n{}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    agent
}

#[test]
fn the_kubernetes_inventory_follows_the_api() {
    let n = Node::new(Layout::Calico);
    let api = KubeApi::start(&n.node, port());
    api.set_missing(SERVICE_CIDRS); // an older cluster: the Service CIDR comes from the flag
    api.apply(NODES, node(NODE, "10.0.13.0", "172.16.30.0/26"));
    api.apply(
        NODES,
        node(
            "ip-10-0-6-190.ec2.internal",
            "10.0.6.190",
            "172.16.72.64/26",
        ),
    );
    // Pod A (web) backs a Service; pod B (batch) backs none; a pod of the other node.
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-z5nh5",
            "web",
            NODE,
            n.pods[0].ip,
            &[80],
        ),
    );
    api.apply(
        PODS,
        pod(
            "shop",
            "batch-7854ff8877-q2x9k",
            "batch",
            NODE,
            n.pods[1].ip,
            &[8080],
        ),
    );
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-2nx5m",
            "web",
            "ip-10-0-6-190.ec2.internal",
            "172.16.72.69",
            &[80],
        ),
    );
    api.apply(
        SERVICES,
        service("shop", "web", "10.96.0.10", "ClusterIP", "web"),
    );
    api.apply(
        ENDPOINT_SLICES,
        slice("shop", "web", &[n.pods[0].ip, "172.16.72.69"]),
    );
    let mut servers = Servers::new();
    for p in &n.pods {
        servers.tcp(&p.ns, 80);
    }
    // No cluster CIDR flags: the cluster comes from the API.
    let agent = start_with_api(&n, &api, "api", NODE, &["--service-cidr", n.service_cidr]);
    let s = status(&agent);
    assert_eq!(s["inventory"]["mode"], "kubernetes");
    assert_eq!(s["inventory"]["pods"], 2);
    assert_eq!(
        explain(&agent, n.peer_ip, &format!("{}:80", n.pods[0].ip)),
        "in_cluster",
        "a node"
    );
    assert_eq!(
        explain(&agent, "172.16.72.69", &format!("{}:80", n.pods[0].ip)),
        "in_cluster",
        "a pod of another node"
    );
    assert_eq!(
        explain(&agent, "172.16.72.99", &format!("{}:80", n.pods[0].ip)),
        "in_cluster",
        "the other node's pod CIDR"
    );
    assert_eq!(
        explain(&agent, n.outside_ip, &format!("{}:80", n.pods[0].ip)),
        "direct_to_pod"
    );
    assert_eq!(explain(&agent, n.outside_ip, "10.96.0.10:80"), "service");

    // Severity and workload: pod B backs no Service (high), pod A does (medium).
    assert!(tcp_get(&n.outside, None, n.pods[0].ip, 80).1.is_ok());
    assert!(tcp_get(&n.outside, None, n.pods[1].ip, 80).1.is_ok());
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = flows(&agent);
        if rows.len() == 2 && rows.iter().all(|r| !r.severity.is_empty()) {
            break rows;
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        thread::sleep(Duration::from_millis(100));
    };
    let a = rows.iter().find(|r| r.dst == n.pods[0].ip).unwrap();
    let b = rows.iter().find(|r| r.dst == n.pods[1].ip).unwrap();
    assert_eq!(
        (
            a.namespace.as_str(),
            a.pod.as_str(),
            a.workload.as_str(),
            a.severity.as_str()
        ),
        ("shop", "web-7854ff8877-z5nh5", "web", "medium")
    );
    assert_eq!(
        (b.workload.as_str(), b.severity.as_str()),
        ("batch", "high")
    );
    assert_eq!(b.iface, "eth0");
    settled_metrics(
        &n,
        &agent,
        &[
            r#"observer_direct_pod_access_flows_total{origin="seen_start",pod_name="batch-7854ff8877-q2x9k",pod_namespace="shop",pod_workload="batch",port="undeclared",protocol="tcp",severity="high",state="answered"} 1"#,
            r#"observer_direct_pod_access_flows_total{origin="seen_start",pod_name="web-7854ff8877-z5nh5",pod_namespace="shop",pod_workload="web",port="80",protocol="tcp",severity="medium",state="answered"} 1"#,
        ],
    );

    // A TargetGroupBinding (IP targets) for the Service: pod A's port 80 is a load-balancer
    // target, so a new direct flow there is low.
    api.apply(TARGET_GROUP_BINDINGS, json!({
        "kind": "TargetGroupBinding",
        "metadata": {"name": "k8s-shop-web-1234", "namespace": "shop"},
        "spec": {"serviceRef": {"name": "web", "port": 80}, "targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/k8s-shop-web/1234", "targetType": "ip"}
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(tcp_get(&n.outside, None, n.pods[0].ip, 80).1.is_ok());
        thread::sleep(Duration::from_millis(300));
        if flows(&agent)
            .iter()
            .any(|r| r.dst == n.pods[0].ip && r.severity == "low")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the TargetGroupBinding never made pod A's port a load-balancer target"
        );
    }

    // A pod added and deleted on this node reaches the maps; so does a new node.
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-new01",
            "web",
            NODE,
            "172.16.30.9",
            &[80],
        ),
    );
    wait_verdict(&agent, n.outside_ip, "172.16.30.9:80", "direct_to_pod");
    api.delete(PODS, "shop", "web-7854ff8877-new01");
    wait_verdict(&agent, n.outside_ip, "172.16.30.9:80", "host");
    api.apply(
        NODES,
        node("ip-10-0-9-9.ec2.internal", "10.0.9.9", "172.16.80.0/26"),
    );
    wait_verdict(
        &agent,
        "10.0.9.9",
        &format!("{}:80", n.pods[0].ip),
        "in_cluster",
    );
    // A Service with an external IP routed to the node.
    let mut ext = service("shop", "web-ext", "10.96.0.20", "NodePort", "web");
    ext["spec"]["externalIPs"] = json!(["203.0.113.10"]);
    api.apply(SERVICES, ext);
    wait_verdict(&agent, n.outside_ip, "203.0.113.10:80", "service");
    // A NodePort Service whose port is outside the configured range: precise NodePort verdict.
    assert_eq!(
        explain(&agent, n.outside_ip, &format!("{}:9000", n.node_ip)),
        "host"
    );
    let mut np = service("shop", "web-np", "10.96.0.30", "NodePort", "web");
    np["spec"]["ports"][0]["nodePort"] = json!(9000);
    api.apply(SERVICES, np);
    wait_verdict(
        &agent,
        n.outside_ip,
        &format!("{}:9000", n.node_ip),
        "nodeport",
    );
    api.delete(SERVICES, "shop", "web-np");
    wait_verdict(&agent, n.outside_ip, &format!("{}:9000", n.node_ip), "host");

    // API outage: the last inventory stays in force; stale is raised; recovery needs no restart.
    api.set_down(true);
    wait_for(
        "the inventory marked stale",
        Duration::from_secs(30),
        || status(&agent)["inventory"]["stale"] == true,
    );
    let (_, m) = http_get(&n.node, agent.metrics_port, "/metrics").unwrap();
    assert!(m.contains("observer_inventory_stale 1"));
    let since: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("observer_inventory_stale_since_timestamp_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(since > 1.7e9, "the outage's start is exported: {since}");
    assert_eq!(
        explain(&agent, "10.0.9.9", &format!("{}:80", n.pods[0].ip)),
        "in_cluster",
        "judged with the last inventory"
    );
    // A change made while the agent could not see it.
    api.delete(NODES, "", "ip-10-0-9-9.ec2.internal");
    api.set_down(false);
    wait_for("the inventory fresh again", Duration::from_secs(60), || {
        status(&agent)["inventory"]["stale"] == false
    });
    wait_verdict(
        &agent,
        "10.0.9.9",
        &format!("{}:80", n.pods[0].ip),
        "direct_to_pod",
    );

    // 410 Gone: the watches restart from a new list, and changes flow again.
    let (_, gone_before) = api.counters();
    api.expire();
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-new02",
            "web",
            NODE,
            "172.16.30.10",
            &[80],
        ),
    );
    wait_verdict(&agent, n.outside_ip, "172.16.30.10:80", "direct_to_pod");
    let (_, gone_after) = api.counters();
    assert!(gone_after > gone_before, "no watch was answered 410");
    drop(servers);
}

/// The SCENARIOS rows on the VPC CNI node with the inventory from the API (no CIDR flags: under
/// VPC CNI the cluster cannot be told from the VPC by CIDR), with severity and workload.
#[test]
fn every_row_with_the_kubernetes_inventory_vpc_cni() {
    let mut n = Node::new(Layout::VpcCni);
    const ME: &str = "ip-10-0-7-223.ec2.internal";
    const PEER: &str = "ip-10-0-12-177.ec2.internal";
    let api = KubeApi::start(&n.node, port());
    let mut me = node(ME, "10.0.7.223", "10.0.0.0/32");
    me["spec"] = json!({});
    me["status"]["addresses"] = json!([{"type": "InternalIP", "address": "10.0.7.223"}, {"type": "InternalIP", "address": n.node_ip6}]);
    api.apply(NODES, me);
    let mut peer = node(PEER, n.peer_ip, "10.0.0.0/32");
    peer["spec"] = json!({});
    peer["status"]["addresses"] = json!([{"type": "InternalIP", "address": n.peer_ip}, {"type": "InternalIP", "address": n.peer_ip6}]);
    api.apply(NODES, peer);
    let mut web = pod(
        "shop",
        "web-7854ff8877-z5nh5",
        "web",
        ME,
        n.pods[0].ip,
        &[80],
    );
    web["status"]["podIPs"] = json!([{"ip": n.pods[0].ip}, {"ip": n.pods[0].ip6.unwrap()}]);
    api.apply(PODS, web);
    api.apply(
        PODS,
        pod(
            "shop",
            "batch-7854ff8877-q2x9k",
            "batch",
            ME,
            n.pods[1].ip,
            &[8080],
        ),
    );
    // A Job's pod that ran to completion on this node: its status keeps the address the CNI
    // released and gave to the batch pod (item 3 of issue 11). The address is batch's.
    let mut done = pod(
        "shop",
        "migrate-7854ff8877-d0ne1",
        "migrate",
        ME,
        n.pods[1].ip,
        &[9999],
    );
    done["status"]["phase"] = json!("Succeeded");
    api.apply(PODS, done);
    // Another, failed, whose address the VPC has since given to a host outside the cluster.
    let mut failed = pod(
        "shop",
        "migrate-7854ff8877-fa1l2",
        "migrate",
        ME,
        "10.0.9.9",
        &[9999],
    );
    failed["status"]["phase"] = json!("Failed");
    api.apply(PODS, failed);
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-nn7c2",
            "web",
            PEER,
            n.peer_pod_ip,
            &[80],
        ),
    );
    api.apply(
        SERVICES,
        service("shop", "web", n.service_ip, "ClusterIP", "web"),
    );
    api.apply(
        ENDPOINT_SLICES,
        slice("shop", "web", &[n.pods[0].ip, n.peer_pod_ip]),
    );
    let mut servers = Servers::for_node(&n);
    let agent = start_with_api(&n, &api, "rows", ME, &["--allow-source", n.allowed_cidr]);
    // Row 13: a pod created after the agent started, known from the API and its veth.
    api.apply(
        PODS,
        pod(
            "shop",
            "late-7854ff8877-a1b2c",
            "late",
            ME,
            "10.0.4.11",
            &[80],
        ),
    );
    n.add_pod("10.0.4.11", "eni4b5e2a8c9d0");
    servers.tcp(&n.pods.last().unwrap().ns, 80);
    wait_verdict(&agent, n.outside_ip, "10.0.4.11:80", "direct_to_pod");
    // A finished pod's address is nobody's in the cluster: traffic from it is from outside.
    wait_verdict(
        &agent,
        "10.0.9.9",
        &format!("{}:80", n.pods[0].ip),
        "direct_to_pod",
    );
    let pod_a = n.pods[0].ip;
    let ok = |r: (u16, Result<String, std::io::ErrorKind>)| r.1.is_ok();
    assert!(ok(tcp_get(&n.outside, None, pod_a, 80)), "row 1");
    assert!(
        ok(tcp_get(&n.outside, None, n.node_ip, n.nodeport)),
        "row 2"
    );
    assert!(ok(tcp_get(&n.peer, Some(n.peer_ip), pod_a, 80)), "row 4");
    assert!(
        ok(tcp_get(&n.peer, Some(n.peer_pod_ip), pod_a, 80)),
        "row 5"
    );
    assert!(
        ok(tcp_get(&n.pods[0].ns, None, n.outside_ip, 8443)),
        "row 6"
    );
    assert!(
        testbed::traffic::udp_echo(&n.pods[0].ns, n.outside_ip, 53).1,
        "row 6 udp"
    );
    assert!(
        ok(tcp_get(&n.outside, Some(n.allowed_ip), pod_a, 80)),
        "row 7"
    );
    assert!(ok(tcp_get(&n.outside, None, n.service_ip, 80)), "row 8");
    assert!(!ok(tcp_get(&n.outside, None, n.node_ip, 22)), "row 9");
    n.outside.sh(&["ping", "-c", "1", "-W", "2", pod_a]);
    assert!(
        testbed::traffic::udp_echo(&n.outside, pod_a, 5353).1,
        "row 11"
    );
    assert!(
        ok(tcp_get(&n.outside, None, n.pods[0].ip6.unwrap(), 80)),
        "row 12: 1"
    );
    assert!(
        ok(tcp_get(
            &n.peer,
            Some(n.peer_ip6),
            n.pods[0].ip6.unwrap(),
            80
        )),
        "row 12: 4"
    );
    assert!(ok(tcp_get(&n.outside, None, "10.0.4.11", 80)), "row 13");
    assert!(ok(tcp_get(&n.outside, None, n.pods[1].ip, 80)), "row 14");
    assert!(!ok(tcp_get(&n.outside, None, pod_a, 81)), "row 15");

    // (dst, port, protocol, state, pod, workload, severity, iface)
    type Row = (String, u16, String, String, String, String, String, String);
    let r = |d: &str, p: u16, pr: &str, st: &str, pod: &str, w: &str, sev: &str, i: &str| -> Row {
        (
            d.into(),
            p,
            pr.into(),
            st.into(),
            pod.into(),
            w.into(),
            sev.into(),
            i.into(),
        )
    };
    let want: std::collections::BTreeSet<Row> = [
        r(
            pod_a,
            80,
            "tcp",
            "answered",
            "web-7854ff8877-z5nh5",
            "web",
            "medium",
            n.uplinks[0],
        ),
        r(
            pod_a,
            0,
            "icmp",
            "answered",
            "web-7854ff8877-z5nh5",
            "web",
            "medium",
            n.uplinks[0],
        ),
        r(
            pod_a,
            5353,
            "udp",
            "answered",
            "web-7854ff8877-z5nh5",
            "web",
            "medium",
            n.uplinks[0],
        ),
        r(
            pod_a,
            81,
            "tcp",
            "refused",
            "web-7854ff8877-z5nh5",
            "web",
            "medium",
            n.uplinks[0],
        ),
        r(
            n.pods[0].ip6.unwrap(),
            80,
            "tcp",
            "answered",
            "web-7854ff8877-z5nh5",
            "web",
            "medium",
            n.uplinks[0],
        ),
        r(
            "10.0.4.11",
            80,
            "tcp",
            "answered",
            "late-7854ff8877-a1b2c",
            "late",
            "high",
            n.uplinks[0],
        ),
        r(
            n.pods[1].ip,
            80,
            "tcp",
            "answered",
            "batch-7854ff8877-q2x9k",
            "batch",
            "high",
            n.uplinks[1],
        ),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = std::collections::BTreeSet::new();
    while Instant::now() < deadline {
        got = flows(&agent)
            .into_iter()
            .map(|f| {
                let port = if f.protocol == "icmp" { 0 } else { f.dst_port };
                (
                    f.dst, port, f.protocol, f.state, f.pod, f.workload, f.severity, f.iface,
                )
            })
            .collect();
        if got == want {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, want, "only the direct accesses, named and rated");
    let m = settled_metrics(
        &n,
        &agent,
        &[
            r#"observer_direct_pod_access_flows_total{origin="seen_start",pod_name="web-7854ff8877-z5nh5",pod_namespace="shop",pod_workload="web",port="80",protocol="tcp",severity="medium",state="answered"} 2"#,
            r#"observer_direct_pod_access_flows_total{origin="seen_start",pod_name="web-7854ff8877-z5nh5",pod_namespace="shop",pod_workload="web",port="undeclared",protocol="tcp",severity="medium",state="refused"} 1"#,
            r#"observer_direct_pod_access_flows_total{origin="seen_start",pod_name="batch-7854ff8877-q2x9k",pod_namespace="shop",pod_workload="batch",port="undeclared",protocol="tcp",severity="high",state="answered"} 1"#,
        ],
    );
    for ip in [n.outside_ip, n.peer_ip, n.allowed_ip] {
        assert!(!m.contains(ip));
    }
    let alerts: Vec<Value> = agent
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "observer::alert")
        .collect();
    assert_eq!(alerts.len(), want.len());
    assert!(alerts.iter().all(|a| a["namespace"] == "shop"
        && !a["workload"].as_str().unwrap().is_empty()
        && !a["severity"].as_str().unwrap().is_empty()));
    // The suggested NetworkPolicy selects the workload by the pod's own labels (not the
    // per-revision pod-template-hash, which the next rollout changes).
    let out = agent.cli(&["flows", "--suggest-policy"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let policies: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &serde_yaml_ng::Value| v["kind"] == "NetworkPolicy")
        .collect();
    let web = policies
        .iter()
        .find(|v| v["metadata"]["name"] == "observer-restrict-web-7854ff8877-z5nh5-80")
        .unwrap_or_else(|| panic!("no policy for web:80 in {text}"));
    assert_eq!(web["metadata"]["namespace"], "shop");
    let sel = &web["spec"]["podSelector"]["matchLabels"];
    assert_eq!(sel["app"], "web", "{text}");
    assert_eq!(sel.as_mapping().unwrap().len(), 1, "{text}");
    // The completed pod is no local pod: web, batch and late are.
    assert_eq!(status(&agent)["inventory"]["pods"], 3);
    assert!(!m.contains("migrate"), "the completed pod is never named");
    drop(servers);
}

/// The agent's metrics once every `want` line is in them: a flow's series appears when it is
/// judged, `--peer-wait` (15 s by default) after its first packet. Fails with the metrics if
/// they do not all appear within 40 s.
fn settled_metrics(n: &Node, agent: &AgentProc, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, m) = http_get(&n.node, agent.metrics_port, "/metrics").unwrap();
        let missing: Vec<&&str> = want.iter().filter(|w| !m.contains(**w)).collect();
        if missing.is_empty() {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never appeared: {missing:?}\n{m}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// `--kubernetes-pods local`: the Pod watch asks the API for this node's pods only (the list
/// and the watch carry `fieldSelector=spec.nodeName=<node>`), the local pods are named as
/// before, other nodes' pods are in the cluster through `--cluster-cidr`, and a pod of another
/// node never reaches the agent.
#[test]
fn local_pods_mode_watches_only_this_nodes_pods() {
    let n = Node::new(Layout::Calico);
    let api = KubeApi::start(&n.node, port());
    let peer = "ip-10-0-6-190.ec2.internal";
    api.apply(NODES, node(NODE, "10.0.13.0", "172.16.30.0/26"));
    api.apply(NODES, node(peer, "10.0.6.190", "172.16.72.64/26"));
    let web = pod(
        "shop",
        "web-7854ff8877-z5nh5",
        "web",
        NODE,
        n.pods[0].ip,
        &[80],
    );
    api.apply(PODS, web);
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-2nx5m",
            "web",
            peer,
            "172.16.72.69",
            &[80],
        ),
    );
    let cluster = n.cluster_cidr.expect("the Calico pool");
    let agent = start_with_api(
        &n,
        &api,
        "local-pods",
        NODE,
        &[
            "--kubernetes-pods",
            "local",
            "--cluster-cidr",
            cluster,
            "--service-cidr",
            n.service_cidr,
        ],
    );
    let pod_requests: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/api/v1/pods"))
        .collect();
    assert!(!pod_requests.is_empty(), "the agent lists pods");
    for r in &pod_requests {
        let selector = r
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("fieldSelector="))
            .unwrap_or_else(|| panic!("{r}: no field selector"));
        let selector = selector.replace("%3D", "=").replace("%3d", "=");
        assert_eq!(selector, format!("spec.nodeName={NODE}"), "{r}");
    }
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.starts_with("/api/v1/nodes"))
            .all(|r| !r.contains("fieldSelector")),
        "nodes are listed whole"
    );
    // The two local pods are known from their host routes anyway; their addresses and the
    // nodes' are all the inventory holds: the other node's pod is not among them.
    let addresses = status(&agent)["inventory"]["addresses"].as_u64().unwrap();
    let named = |ip: &str| {
        let o = agent.cli(&["explain", n.outside_ip, &format!("{ip}:80"), "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["pod"]["name"].as_str().unwrap_or_default().to_string()
    };
    // The local pod is named; the other node's pod is in the cluster through the CIDR.
    let pod_a = format!("{}:80", n.pods[0].ip);
    assert_eq!(explain(&agent, n.outside_ip, &pod_a), "direct_to_pod");
    assert_eq!(explain(&agent, "172.16.72.69", &pod_a), "in_cluster");
    assert_eq!(named(n.pods[0].ip), "web-7854ff8877-z5nh5");
    // Another node's pod comes, then a local one: only the local one reaches the agent.
    api.apply(
        PODS,
        pod(
            "shop",
            "api-7854ff8877-7xk2d",
            "api",
            peer,
            "172.16.72.70",
            &[8080],
        ),
    );
    api.apply(
        PODS,
        pod(
            "shop",
            "batch-7854ff8877-q2x9k",
            "batch",
            NODE,
            n.pods[1].ip,
            &[8080],
        ),
    );
    wait_for("the local pod named", Duration::from_secs(15), || {
        named(n.pods[1].ip) == "batch-7854ff8877-q2x9k"
    });
    let s = status(&agent);
    assert_eq!(
        s["inventory"]["addresses"].as_u64().unwrap(),
        addresses,
        "no address for the other node's pod (with every pod watched, each adds one): {s}"
    );
}

/// SCENARIOS row 18. Under the VPC CNI no CIDR covers other nodes' pods: a new pod's address
/// is in the cluster only once its status reaches the agent. The fixture API plays the real
/// timeline: the pod is scheduled to the peer node (no IP yet), its first connection reaches
/// the local pod, and the kubelet's status with the IP the CNI gave it arrives 0.3 s, then
/// 1.5 s later (within `--peer-wait`, 15 s by default): neither is a direct access, and each
/// is counted as cleared. The same address reaching the pod after the pod is deleted, with its
/// status never arriving in time, is alerted on as before.
#[test]
fn a_new_pod_elsewhere_is_no_outsider_while_its_ip_is_on_its_way() {
    let n = Node::new(Layout::VpcCni);
    const ME: &str = "ip-10-0-7-223.ec2.internal";
    const PEER: &str = "ip-10-0-12-177.ec2.internal";
    let api = KubeApi::start(&n.node, port());
    api.apply(NODES, vpc_node(ME, "10.0.7.223"));
    api.apply(NODES, vpc_node(PEER, n.peer_ip));
    api.apply(PODS, web_pod(ME, n.pods[0].ip));
    let servers = Servers::for_node(&n);
    let agent = start_with_api(&n, &api, "late-peer", ME, &[]);
    let pod_a = n.pods[0].ip;
    // The new replica's address: under the VPC CNI, any VPC address (here the outside host's).
    let new_pod = n.outside_ip;
    wait_verdict(&agent, new_pod, &format!("{pod_a}:80"), "direct_to_pod");
    let cleared = |agent: &AgentProc| {
        sample(
            &support::metrics(&n, agent),
            "observer_direct_flows_cleared_total",
            "",
        )
        .unwrap_or(0.0)
    };
    let direct = |agent: &AgentProc| {
        support::metrics(&n, agent)
            .lines()
            .filter(|l| l.starts_with("observer_direct_pod_access_flows_total{"))
            .count()
    };

    for (round, late) in [(1.0, 300), (2.0, 1500)] {
        let name = format!("api-7854ff8877-new{late}");
        let mut scheduled = pod("shop", &name, "api", PEER, new_pod, &[8080]);
        scheduled["status"] = json!({"phase": "Pending"});
        api.apply(PODS, scheduled);
        // Its first connection, through a Service DNATed on its own node to pod A here.
        let started = Instant::now();
        assert!(tcp_get(&n.outside, None, pod_a, 80).1.is_ok());
        // The kubelet's status report, `late` after the first packet: the scenario's own
        // timeline, not a wait for something to (not) happen; the check below waits for the
        // agent's judgement itself.
        thread::sleep(Duration::from_millis(late).saturating_sub(started.elapsed()));
        api.apply(PODS, pod("shop", &name, "api", PEER, new_pod, &[8080]));
        // The flow is judged once --peer-wait has passed: cleared, not counted, no alert.
        wait_for(
            &format!("the flow whose source's IP came {late} ms late cleared"),
            Duration::from_secs(30),
            || cleared(&agent) >= round,
        );
        assert_eq!(direct(&agent), 0, "{}", support::metrics(&n, &agent));
        assert!(alert_lines(&agent).is_empty(), "{:#?}", alert_lines(&agent));
        wait_verdict(&agent, new_pod, &format!("{pod_a}:80"), "in_cluster");
        // The pod goes; its address is nobody's in the cluster again.
        api.delete(PODS, "shop", &name);
        wait_verdict(&agent, new_pod, &format!("{pod_a}:80"), "direct_to_pod");
    }

    // Far beyond the window: the status never came in time, so this is an outsider as far as
    // anything could tell, and it is alerted on, as it was before.
    assert!(tcp_get(&n.outside, None, pod_a, 80).1.is_ok());
    wait_for("the alert line", Duration::from_secs(30), || {
        !alert_lines(&agent).is_empty()
    });
    let name = "api-7854ff8877-late9";
    api.apply(PODS, pod("shop", name, "api", PEER, new_pod, &[8080]));
    wait_verdict(&agent, new_pod, &format!("{pod_a}:80"), "in_cluster");
    let alerts = alert_lines(&agent);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["pod"], "web-7854ff8877-z5nh5");
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(cleared(&agent), 2.0);
    assert_eq!(direct(&agent), 1);
    drop(servers);
}
