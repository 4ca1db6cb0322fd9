//! `observer run` end to end on simulated nodes (both layouts), as an SRE would use it: every
//! SCENARIOS row (1-17) through the running agent, asserted through `observer flows --json`,
//! the metrics (promtool-checked) and the JSON alert lines, plus explain and the remediation.
//!
//! Needs root, iproute2, iptables, ping and promtool (`cargo xtask test` installs them).
//! Everything lives in namespaces the test creates and deletes, also on failure.

mod support;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    os::unix::fs::MetadataExt,
    thread,
    time::{Duration, Instant},
};

use observer_common::{
    packet::TCP_SYN,
    testing::frames::{Frame, non_ip},
};
use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, http_get, raw_frames, tcp_get, tcp_open, udp_echo},
};

/// Where the pod-side facts are read: on the pod veths (the default), or on the uplinks'
/// egress (`--attach-mode uplink-egress`), which must give the same flows, states and alerts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PodSide {
    Veths,
    UplinkEgress,
}

fn every_row(layout: Layout, side: PodSide) {
    let mut n = Node::new(layout);
    let mut servers = Servers::for_node(&n);
    let pod_a = n.pods[0].ip;
    let veth_a = n.pods[0].veth;
    // Row 17: a connection that is already open when the agent starts.
    let (long_port, mut long) = tcp_open(&n.outside, pod_a, 8080);
    long.write_all(b"before\n").unwrap();
    let mut buf = [0u8; 7];
    long.read_exact(&mut buf).unwrap();

    let extra: &[&str] = match side {
        PodSide::Veths => &[],
        PodSide::UplinkEgress => &["--attach-mode", "uplink-egress"],
    };
    let agent = start(&n, &format!("rows-{layout:?}-{side:?}"), extra);
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
    match side {
        PodSide::Veths => wait_for("the late veth attached", Duration::from_secs(5), || {
            attached_names(&agent).contains(late_veth)
        }),
        PodSide::UplinkEgress => {
            wait_for("the late pod known", Duration::from_secs(5), || {
                status(&agent)["inventory"]["pods"] == n.pods.len()
            });
            assert!(
                !attached_names(&agent).contains(late_veth),
                "no pod veth program"
            );
        }
    }

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
    let up0 = n.uplinks[0];
    let mut want: BTreeSet<(String, u16, String, String, String, String, String)> = [
        (pod_a, 80, "tcp", "answered", "seen_start", veth_a, up0),
        (pod_a, 0, "icmp", "answered", "seen_start", veth_a, up0),
        (pod_a, 5353, "udp", "answered", "datagram", veth_a, up0),
        (late_ip, 80, "tcp", "answered", "seen_start", late_veth, up0),
        (pod_a, 81, "tcp", "refused", "seen_start", veth_a, up0),
        (pod_a, 8080, "tcp", "answered", "outsider", veth_a, up0),
        (pod6, 80, "tcp", "answered", "seen_start", veth_a, up0),
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
            n.uplinks[1].into(),
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
            "origin=\"seen_start\",pod_name=\"{pod}\",pod_namespace=\"\",pod_workload=\"\",port=\"{port}\",protocol=\"{proto}\",severity=\"unrated\",state=\"{state}\""
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
    let pod_veths = match side {
        PodSide::Veths => n.pods.len(),
        PodSide::UplinkEgress => 0,
    };
    assert_eq!(
        sample(&m, "observer_attached_interfaces", "role=\"pod\""),
        Some(pod_veths as f64)
    );
    // What the ObserverBlind rule reads to tell "no pod veth by design" from "pods missed".
    let pod_veths_mode = match side {
        PodSide::Veths => "tcx",
        PodSide::UplinkEgress => "none",
    };
    assert_eq!(
        sample(
            &m,
            "observer_attach_mode_info",
            &format!("pod_veths=\"{pod_veths_mode}\",uplinks=\"tcx\"")
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "observer_inventory_pods", ""),
        Some(n.pods.len() as f64)
    );
    assert!(m.contains("observer_events_lost_total 0"));
    // The datapath's own account: nothing failed to be recorded, the pod side saw its traffic.
    let datapath = |event: &str| {
        sample(
            &m,
            "observer_datapath_events_total",
            &format!("event=\"{event}\""),
        )
    };
    assert_eq!(datapath("flow_insert_failed"), Some(0.0), "{m}");
    assert_eq!(datapath("pod_flow_insert_failed"), Some(0.0), "{m}");
    let (seen, unseen): (&[&str], &[&str]) = match side {
        PodSide::Veths => (
            &["to_pod_packets", "from_pod_packets", "delivered_marks"],
            &["uplink_egress_packets"],
        ),
        PodSide::UplinkEgress => (
            &["uplink_egress_packets"],
            &["to_pod_packets", "from_pod_packets", "delivered_marks"],
        ),
    };
    for event in ["pod_flows_opened", "answer_marks"].iter().chain(seen) {
        assert!(datapath(event).is_some_and(|v| v > 0.0), "{event}: {m}");
    }
    for event in unseen {
        assert_eq!(datapath(event), Some(0.0), "{event}: {m}");
    }
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
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
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
    let policy: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(v["remedy"]["network_policy"].as_str().unwrap()).unwrap();
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 80);

    // The table view reads.
    let t = agent.cli(&["flows"]);
    assert!(String::from_utf8_lossy(&t.stdout).contains("direct_to_pod"));
    drop(long);
    drop(servers);
}

#[test]
fn every_row_through_the_agent_vpc_cni() {
    every_row(Layout::VpcCni, PodSide::Veths);
}

#[test]
fn every_row_through_the_agent_calico() {
    every_row(Layout::Calico, PodSide::Veths);
}

#[test]
fn every_row_through_the_agent_vpc_cni_uplink_egress() {
    every_row(Layout::VpcCni, PodSide::UplinkEgress);
}

#[test]
fn every_row_through_the_agent_calico_uplink_egress() {
    every_row(Layout::Calico, PodSide::UplinkEgress);
}
