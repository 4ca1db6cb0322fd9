//! `observer run` end to end on simulated nodes (both layouts), as an SRE would use it:
//! every SCENARIOS row (1-17) through the running agent, asserted through `observer flows --json`,
//! the metrics and the alert log; interface churn; SIGTERM / SIGKILL; a full port scan; bad
//! requests on the debug socket.
//!
//! Needs root, iproute2, iptables, ping and promtool (`cargo xtask test` installs them).
//! Everything lives in namespaces the test creates and deletes, also on failure.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use observer::flows::FlowRow;
use observer_common::{
    packet::TCP_SYN,
    testing::frames::{Frame, non_ip},
};
use testbed::{
    agent::AgentProc,
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, http_get, raw_frames, tcp_get, tcp_open, udp_echo, udp_scan},
};

const BIN: &str = env!("CARGO_BIN_EXE_observer");
static PORT: AtomicU16 = AtomicU16::new(19_100);

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The agent's settings for a simulated node.
fn args(n: &Node) -> Vec<String> {
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

fn start(n: &Node, name: &str, extra: &[&str]) -> AgentProc {
    let mut a = args(n);
    a.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    AgentProc::start(
        BIN.as_ref(),
        &n.node,
        &dir(name),
        PORT.fetch_add(1, Ordering::Relaxed),
        &a,
    )
}

fn flows(agent: &AgentProc) -> Vec<FlowRow> {
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

fn status(agent: &AgentProc) -> serde_json::Value {
    let out = agent.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn attached_names(agent: &AgentProc) -> BTreeSet<String> {
    status(agent)["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(n: &Node, agent: &AgentProc) -> String {
    let (code, body) = http_get(&n.node, agent.metrics_port, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    body
}

/// The value of the sample with exactly these labels, if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let want = format!("{name}{{{labels}}} ");
    text.lines()
        .find(|l| l.starts_with(&want))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `promtool check metrics` on the exposition (a real parser).
fn promtool_check(text: &str) {
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
fn tcx_count(ns: &Netns, iface: &'static str, dir: TcAttachType, prog: &'static str) -> usize {
    ns.run(move || {
        let (_, progs) = SchedClassifier::query_tcx(iface, dir).expect("tcx query");
        progs
            .iter()
            .filter(|p| p.name_as_str() == Some(&prog[..prog.len().min(15)]))
            .count()
    })
}

fn alert_lines(agent: &AgentProc) -> Vec<serde_json::Value> {
    agent
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "observer::alert")
        .collect()
}

fn every_row(layout: Layout) {
    let mut n = Node::new(layout);
    let mut servers = Servers::new();
    for p in &n.pods {
        servers.tcp(&p.ns, 80);
        servers.udp(&p.ns, 5353);
        servers.tcp_echo(&p.ns, 8080);
    }
    servers.tcp(&n.outside, 8443);
    servers.udp(&n.outside, 53);
    let pod_a = n.pods[0].ip;
    let veth_a = n.pods[0].veth;
    // Row 17: a connection that is already open when the agent starts.
    let (long_port, mut long) = tcp_open(&n.outside, pod_a, 8080);
    long.write_all(b"before\n").unwrap();
    let mut buf = [0u8; 7];
    long.read_exact(&mut buf).unwrap();

    let agent = start(&n, &format!("rows-{layout:?}"), &[]);
    let socket_meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(
        (socket_meta.mode() & 0o777, socket_meta.uid()),
        (0o600, 0),
        "socket 0600, root"
    );

    // Row 13: a pod whose veth appears after the agent started.
    let (late_ip, late_veth) = match layout {
        Layout::VpcCni => ("10.0.4.11", "eni4b5e2a8c9d0"),
        Layout::Calico => ("172.16.30.1", "calic09168731f7"),
    };
    n.add_pod(late_ip, late_veth);
    servers.tcp(&n.pods.last().expect("late pod").ns, 80);
    wait_for("the late veth attached", Duration::from_secs(5), || {
        attached_names(&agent).contains(late_veth)
    });

    assert_eq!(
        tcp_get(&n.outside, None, pod_a, 80).1.as_deref(),
        Ok("hello\n"),
        "row 1"
    );
    assert_eq!(
        tcp_get(&n.outside, None, n.node_ip, n.nodeport)
            .1
            .as_deref(),
        Ok("hello\n"),
        "rows 2/3"
    );
    assert_eq!(
        tcp_get(&n.peer, Some(n.peer_ip), pod_a, 80).1.as_deref(),
        Ok("hello\n"),
        "row 4"
    );
    assert_eq!(
        tcp_get(&n.peer, Some(n.peer_pod_ip), pod_a, 80)
            .1
            .as_deref(),
        Ok("hello\n"),
        "row 5"
    );
    assert_eq!(
        tcp_get(&n.pods[0].ns, None, n.outside_ip, 8443)
            .1
            .as_deref(),
        Ok("hello\n"),
        "row 6"
    );
    assert!(udp_echo(&n.pods[0].ns, n.outside_ip, 53).1, "row 6 udp");
    assert_eq!(
        tcp_get(&n.outside, Some(n.allowed_ip), pod_a, 80)
            .1
            .as_deref(),
        Ok("hello\n"),
        "row 7"
    );
    assert_eq!(
        tcp_get(&n.outside, None, n.service_ip, 80).1.as_deref(),
        Ok("hello\n"),
        "row 8"
    );
    assert!(tcp_get(&n.outside, None, n.node_ip, 22).1.is_err(), "row 9");
    n.outside.sh(&["ping", "-c", "1", "-W", "2", pod_a]);
    assert!(udp_echo(&n.outside, pod_a, 5353).1, "row 11");
    assert_eq!(
        tcp_get(&n.outside, None, late_ip, 80).1.as_deref(),
        Ok("hello\n"),
        "row 13"
    );
    if layout == Layout::VpcCni {
        assert_eq!(
            tcp_get(&n.outside, None, n.pods[1].ip, 80).1.as_deref(),
            Ok("hello\n"),
            "row 14"
        );
    }
    assert!(tcp_get(&n.outside, None, pod_a, 81).1.is_err(), "row 15");
    // Row 12: rows 1, 4 and 6 over IPv6.
    let pod6 = n.pods[0].ip6.expect("pod A has IPv6");
    assert_eq!(
        tcp_get(&n.outside, None, pod6, 80).1.as_deref(),
        Ok("hello\n"),
        "row 12: 1"
    );
    assert_eq!(
        tcp_get(&n.peer, Some(n.peer_ip6), pod6, 80).1.as_deref(),
        Ok("hello\n"),
        "row 12: 4"
    );
    assert_eq!(
        tcp_get(&n.pods[0].ns, None, n.outside_ip6, 8443)
            .1
            .as_deref(),
        Ok("hello\n"),
        "row 12: 6"
    );
    // Row 16: frames that are not IP, or malformed, sent raw from the outside host.
    let mut cut = Frame::tcp(n.outside_ip, pod_a, 1, 80, TCP_SYN).build();
    cut.truncate(30);
    // (Three VLAN tags would not do: the receiving kernel strips the outer one before TC.)
    let mut bad_ihl = Frame::tcp(n.outside_ip, pod_a, 1, 80, TCP_SYN).build();
    bad_ihl[14] = 0x44;
    raw_frames(
        &n.outside,
        "eth0",
        vec![non_ip(0x0806, 28), non_ip(0x88cc, 40), cut, bad_ihl],
    );
    long.write_all(b"after\n").unwrap();
    let mut buf = [0u8; 6];
    long.read_exact(&mut buf).unwrap();

    // Expected direct flows: (dst, port, protocol, state, origin, pod, iface).
    let mut want: BTreeSet<(String, u16, String, String, String, String, String)> = [
        (pod_a, 80, "tcp", "answered", "seen_start", veth_a, "eth0"),
        (pod_a, 0, "icmp", "answered", "seen_start", veth_a, "eth0"),
        (pod_a, 5353, "udp", "answered", "datagram", veth_a, "eth0"),
        (
            late_ip,
            80,
            "tcp",
            "answered",
            "seen_start",
            late_veth,
            "eth0",
        ),
        (pod_a, 81, "tcp", "refused", "seen_start", veth_a, "eth0"),
        (pod_a, 8080, "tcp", "answered", "unknown", veth_a, "eth0"),
        (pod6, 80, "tcp", "answered", "seen_start", veth_a, "eth0"),
    ]
    .iter()
    .map(|(d, p, pr, s, o, pod, i)| {
        (
            d.to_string(),
            *p,
            pr.to_string(),
            s.to_string(),
            o.to_string(),
            pod.to_string(),
            i.to_string(),
        )
    })
    .collect();
    if layout == Layout::VpcCni {
        want.insert((
            n.pods[1].ip.into(),
            80,
            "tcp".into(),
            "answered".into(),
            "seen_start".into(),
            n.pods[1].veth.into(),
            "eth1".into(),
        ));
    }
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        got = flows(&agent)
            .into_iter()
            .map(|f| {
                let port = if f.protocol == "icmp" { 0 } else { f.dst_port };
                (f.dst, port, f.protocol, f.state, f.origin, f.pod, f.iface)
            })
            .collect();
        if got == want {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, want, "the direct flows, settled");
    let rows = flows(&agent);
    assert!(rows.iter().all(|f| f.verdict == "direct_to_pod"
        && (f.src == n.outside_ip || f.src == n.outside_ip6)
        && f.packets >= 1));
    assert!(rows.iter().any(|f| f.src_port == long_port), "row 17 flow");

    // One alert per direct flow, with every field.
    wait_for("alerts logged", Duration::from_secs(5), || {
        alert_lines(&agent).len() >= want.len()
    });
    let alerts = alert_lines(&agent);
    assert_eq!(alerts.len(), want.len(), "{alerts:#?}");
    for a in &alerts {
        for field in [
            "verdict",
            "src",
            "dst",
            "src_port",
            "dst_port",
            "protocol",
            "pod",
            "namespace",
            "iface",
            "origin",
            "state",
            "reason",
        ] {
            assert!(!a[field].is_null(), "alert without {field}: {a}");
        }
        assert_eq!(a["verdict"], "direct_to_pod");
        assert!(a["src"] == n.outside_ip || a["src"] == n.outside_ip6, "{a}");
    }

    // Metrics: bounded labels, no source address, the contract's names.
    let m = metrics(&n, &agent);
    promtool_check(&m);
    let l = |port: &str, proto: &str, state: &str, pod: &str| {
        format!(
            "namespace=\"\",pod=\"{pod}\",port=\"{port}\",protocol=\"{proto}\",severity=\"\",state=\"{state}\",workload=\"\""
        )
    };
    assert_eq!(
        sample(
            &m,
            "observer_direct_pod_access_flows_total",
            &l("80", "tcp", "answered", veth_a)
        ),
        Some(2.0),
        "rows 1 and 12 (IPv4 and IPv6) {m}"
    );
    assert_eq!(
        sample(
            &m,
            "observer_direct_pod_access_flows_total",
            &l("81", "tcp", "refused", veth_a)
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "observer_direct_pod_access_flows_total",
            &l("none", "icmp", "answered", veth_a)
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "observer_direct_pod_access_flows_total",
            &l("80", "tcp", "answered", late_veth)
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "observer_direct_pod_access_packets_total",
            &l("80", "tcp", "answered", veth_a)
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "observer_flows_total",
            "protocol=\"tcp\",verdict=\"nodeport\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "observer_flows_total",
            "protocol=\"tcp\",verdict=\"in_cluster\""
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        sample(
            &m,
            "observer_flows_total",
            "protocol=\"tcp\",verdict=\"allowed\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "observer_flows_total",
            "protocol=\"tcp\",verdict=\"service\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "observer_packets_total",
            "protocol=\"tcp\",verdict=\"reply\""
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &m,
            "observer_packets_total",
            "protocol=\"udp\",verdict=\"reply\""
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "observer_flows_total",
            "protocol=\"tcp\",verdict=\"direct_to_pod\""
        ),
        Some(if layout == Layout::VpcCni { 6.0 } else { 5.0 })
    );
    let packets = |verdict: &str| {
        sample(
            &m,
            "observer_packets_total",
            &format!("protocol=\"other\",verdict=\"{verdict}\""),
        )
        .unwrap_or(0.0)
    };
    let row16: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("observer_packets_total"))
        .collect();
    assert!(packets("malformed") >= 2.0, "row 16: {row16:#?}");
    assert!(packets("not_ip") >= 2.0, "row 16: {row16:#?}");
    assert_eq!(
        sample(&m, "observer_attached_interfaces", "role=\"uplink\""),
        Some(if layout == Layout::VpcCni { 2.0 } else { 1.0 })
    );
    assert_eq!(
        sample(&m, "observer_attached_interfaces", "role=\"pod\""),
        Some(n.pods.len() as f64)
    );
    assert_eq!(
        sample(&m, "observer_inventory_pods", ""),
        None,
        "unlabelled samples have no braces"
    );
    assert!(m.contains(&format!("observer_inventory_pods {}", n.pods.len())));
    assert!(m.contains("observer_events_lost_total 0"));
    assert!(m.contains("observer_attach_errors_total 0"));
    assert!(m.contains("observer_build_info{version="));
    for ip in [
        n.outside_ip,
        n.peer_ip,
        n.allowed_ip,
        n.peer_pod_ip,
        n.outside_ip6,
        n.peer_ip6,
    ] {
        assert!(
            !m.contains(ip),
            "the metrics expose the source address {ip}"
        );
    }
    assert_eq!(
        http_get(&n.node, agent.metrics_port, "/healthz").unwrap().0,
        200
    );
    assert_eq!(
        http_get(&n.node, agent.metrics_port, "/readyz").unwrap().0,
        200
    );

    // explain uses the live maps.
    let e = agent.cli(&["explain", n.outside_ip, &format!("{pod_a}:80")]);
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(
        e.status.success() && text.contains("direct_to_pod") && text.contains(veth_a),
        "{text}"
    );
    let e = agent.cli(&[
        "explain",
        n.outside_ip,
        &format!("{}:{}", n.node_ip, n.nodeport),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["verdict"], "nodeport");

    // Remediation: one NetworkPolicy per direct path (pod, port, protocol), valid YAML.
    let out = agent.cli(&["flows", "--suggest-policy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect();
    let paths: BTreeSet<(String, u16, String)> = rows
        .iter()
        .map(|f| {
            (
                f.pod.clone(),
                if f.protocol == "icmp" { 0 } else { f.dst_port },
                f.protocol.clone(),
            )
        })
        .collect();
    assert_eq!(docs.len(), paths.len(), "{text}");
    assert!(
        docs.iter()
            .all(|d| d["kind"] == "NetworkPolicy" && d["spec"]["policyTypes"][0] == "Ingress")
    );
    assert!(
        text.contains(n.allowed_cidr),
        "allowed sources are admitted: {text}"
    );
    let e = agent.cli(&["explain", n.outside_ip, &format!("{pod_a}:80"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let policy: serde_yaml::Value =
        serde_yaml::from_str(v["remedy"]["network_policy"].as_str().unwrap()).unwrap();
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 80);

    // The table view reads.
    let t = agent.cli(&["flows"]);
    assert!(String::from_utf8_lossy(&t.stdout).contains("direct_to_pod"));
    drop(long);
    drop(servers);
}

#[test]
fn every_row_through_the_agent_vpc_cni() {
    every_row(Layout::VpcCni);
}

#[test]
fn every_row_through_the_agent_calico() {
    every_row(Layout::Calico);
}

#[test]
fn interface_churn_sigterm_and_sigkill() {
    let n = Node::new(Layout::Calico);
    let mut agent = start(&n, "churn", &[]);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    // Traffic while 50 pod veths come and go.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let ns = n.outside.name.clone();
        let pod = n.pods[0].ip;
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = Command::new("ip")
                    .args(["netns", "exec", &ns, "ping", "-c", "1", "-W", "1", pod])
                    .output();
            }
        })
    };
    let names: Vec<String> = (0..50).map(|i| format!("veth{i:02}churn")).collect();
    for (i, name) in names.iter().enumerate() {
        n.node.sh(&[
            "ip",
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("pc{i:02}"),
        ]);
    }
    wait_for("50 new veths attached", Duration::from_secs(10), || {
        let a = attached_names(&agent);
        names.iter().all(|n| a.contains(n))
    });
    for name in &names {
        n.node.sh(&["ip", "link", "del", name]);
    }
    wait_for("50 veths forgotten", Duration::from_secs(10), || {
        let a = attached_names(&agent);
        !names.iter().any(|n| a.contains(n))
    });
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    assert_eq!(status(&agent)["attach_errors"], 0);

    // SIGKILL: TCX links die with the process; a restart attaches exactly one copy.
    agent.signal(libc::SIGKILL);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        0
    );
    let mut agent = start(&n, "churn2", &[]);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    assert_eq!(
        tcx_count(
            &n.node,
            n.pods[0].veth,
            TcAttachType::Egress,
            "observer_to_pod"
        ),
        1
    );
    assert_eq!(
        tcx_count(
            &n.node,
            n.pods[0].veth,
            TcAttachType::Ingress,
            "observer_from_pod"
        ),
        1
    );
    // SIGTERM: everything detached, the socket removed, exit 0.
    let socket = agent.socket.clone();
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
    for (iface, dir, prog) in [
        ("eth0", TcAttachType::Ingress, "observer_uplink"),
        (n.pods[0].veth, TcAttachType::Egress, "observer_to_pod"),
        (n.pods[0].veth, TcAttachType::Ingress, "observer_from_pod"),
    ] {
        assert_eq!(
            tcx_count(&n.node, iface, dir, prog),
            0,
            "{iface} still has {prog}"
        );
    }
    assert!(!socket.exists());
    assert!(
        n.node
            .sh(&["tc", "qdisc", "show"])
            .lines()
            .all(|l| !l.contains("clsact")),
        "a clsact qdisc was left"
    );
}

#[test]
fn a_port_scan_keeps_series_and_alerts_bounded() {
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    servers.udp(&n.pods[0].ns, 5353);
    let agent = start(&n, "scan", &["--ports-per-pod", "8"]);
    udp_scan(&n.outside, n.pods[0].ip, 1..=65535);
    thread::sleep(Duration::from_millis(3500));
    let m = metrics(&n, &agent);
    promtool_check(&m);
    let veth = n.pods[0].veth;
    let series: Vec<&str> = m
        .lines()
        .filter(|l| {
            l.starts_with("observer_direct_pod_access_flows_total{")
                && l.contains(&format!("pod=\"{veth}\""))
        })
        .collect();
    // At most 8 ports + "other", for each state (answered, refused, silent).
    assert!(
        !series.is_empty() && series.len() <= 27,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(series.iter().any(|l| l.contains("port=\"other\"")));
    let total: f64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(total > 1000.0, "the scan's flows are counted: {total}");
    assert!(!m.contains(n.outside_ip));
    // Alerts: the first 8 ports, the rest folded into one summary line (after the window).
    let alerts = alert_lines(&agent);
    assert!(alerts.len() <= 9, "{} alert lines", alerts.len());
    assert!(sample(&m, "observer_alerts_folded_total", "").is_none());
    assert!(
        m.lines()
            .any(|l| l.starts_with("observer_alerts_folded_total ") && !l.ends_with(" 0"))
    );
    // The recent-flows view stays bounded.
    let s = status(&agent);
    assert!(s["recent_flows"].as_u64().unwrap() <= observer::defaults::RECENT_FLOWS as u64);
    drop(servers);
}

fn raw_request(socket: &std::path::Path, body: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(body).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn bad_requests_on_the_socket_get_errors() {
    let n = Node::new(Layout::Calico);
    let agent = start(&n, "badreq", &[]);
    for (body, want) in [
        (b"not json\n".to_vec(), "bad request"),
        (b"{\"cmd\":\"reboot\"}\n".to_vec(), "bad request"),
        (
            b"{\"cmd\":\"flows\",\"verdict\":\"evil\"}\n".to_vec(),
            "unknown verdict",
        ),
        (
            b"{\"cmd\":\"explain\",\"src\":\"x\",\"dst\":\"y\"}\n".to_vec(),
            "invalid source",
        ),
        (
            b"{\"cmd\":\"status\",\"extra\":1}\n".to_vec(),
            "bad request",
        ),
        (vec![b'a'; 100_000], "longer than 64 KiB"),
        (b"".to_vec(), "empty request"),
    ] {
        let answer = raw_request(&agent.socket, &body);
        assert!(
            answer.contains("\"error\"") && answer.contains(want),
            "{want}: {answer}"
        );
    }
    // Still serving.
    assert!(agent.cli(&["status"]).status.success());
    let e = agent.cli(&["explain", "10.0.6.245", "nonsense"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid destination"));
}

/// TC filter program names on a clsact hook, from `tc filter show`.
fn tc_filters(ns: &Netns, iface: &str, hook: &str) -> Vec<String> {
    ns.sh(&["tc", "filter", "show", "dev", iface, hook])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "name")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn netlink_mode_replaces_leftovers_and_leaves_others_alone() {
    use aya::programs::tc::{NlOptions, TcAttachOptions};
    let n = Node::new(Layout::Calico);
    // Another agent's filter on eth0 (clsact ingress, priority 200).
    let mut other = observer::bpf::load(&observer::bpf::LoadOptions::default()).expect("load");
    observer::bpf::load_noop(&mut other).expect("load tc_noop");
    let node_ns = format!("/run/netns/{}", n.node.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&node_ns).unwrap();
            // SAFETY: setns on a namespace fd for this thread only.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
                0
            );
            let _ = aya::programs::tc::qdisc_add_clsact("eth0");
            let p =
                observer::bpf::classifier(&mut other, observer_common::names::PROG_NOOP).unwrap();
            let opts = TcAttachOptions::Netlink(NlOptions {
                priority: 200,
                ..NlOptions::default()
            });
            let id = p
                .attach_with_options("eth0", TcAttachType::Ingress, opts)
                .expect("attach the other filter");
            // Keep it after `other` is dropped, as a separate agent would.
            std::mem::forget(p.take_link(id).expect("link"));
        });
    });
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let mut agent = start(&n, "netlink1", &["--attach-mode", "netlink"]);
    let ours = |iface: &str, hook: &str| {
        tc_filters(&n.node, iface, hook)
            .iter()
            .filter(|f| f.starts_with("observer_"))
            .count()
    };
    assert_eq!(
        ours("eth0", "ingress"),
        1,
        "{:?}",
        tc_filters(&n.node, "eth0", "ingress")
    );
    assert_eq!(ours(n.pods[0].veth, "egress"), 1);
    let s = status(&agent);
    assert_eq!(s["attach_mode"], "netlink");
    let eth0 = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap()
        .clone();
    assert!(eth0["foreign"].to_string().contains("tc_noop"), "{eth0}");
    // SIGKILL leaves the filters; the next start replaces them instead of stacking.
    agent.signal(libc::SIGKILL);
    assert_eq!(ours("eth0", "ingress"), 1);
    let mut agent = start(&n, "netlink2", &["--attach-mode", "netlink"]);
    assert_eq!(
        ours("eth0", "ingress"),
        1,
        "{:?}",
        tc_filters(&n.node, "eth0", "ingress")
    );
    assert_eq!(ours(n.pods[0].veth, "ingress"), 1);
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    wait_for(
        "the direct flow in netlink mode",
        Duration::from_secs(5),
        || flows(&agent).len() == 1,
    );
    // SIGTERM: our filters go; the other filter and its qdisc stay; our own qdiscs go.
    assert!(agent.signal(libc::SIGTERM).success());
    assert_eq!(ours("eth0", "ingress"), 0);
    assert_eq!(
        ours(n.pods[0].veth, "egress") + ours(n.pods[0].veth, "ingress"),
        0
    );
    assert!(
        tc_filters(&n.node, "eth0", "ingress")
            .iter()
            .any(|f| f.starts_with("tc_noop")),
        "the other filter was removed"
    );
    let qdiscs = n.node.sh(&["tc", "qdisc", "show"]);
    assert!(
        qdiscs
            .lines()
            .any(|l| l.contains("clsact") && l.contains("dev eth0")),
        "{qdiscs}"
    );
    assert!(
        !qdiscs
            .lines()
            .any(|l| l.contains("clsact") && l.contains(n.pods[0].veth)),
        "{qdiscs}"
    );
    drop(servers);
}
