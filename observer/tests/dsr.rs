//! DSR dataplanes (SCENARIOS row 24): Cilium's kube-proxy replacement in DSR or hybrid mode with
//! `loadBalancer.dsrDispatch=opt` forwards a client's packets to the backend's node with the
//! client's address kept, and marks a connection's first packet (and every UDP datagram) with
//! the Service's address: an IPv4 option or an IPv6 Destination Options header. On a node that
//! runs Cilium (it has `cilium_host`), a mark naming a Service or a node's NodePort makes the
//! packet, and its connection's later unmarked segments, Service traffic; a mark naming
//! anything else is a direct access as before. The frames are crafted as Cilium builds them.

mod support;

use std::time::Duration;

use observer_common::{
    packet::{TCP_ACK, TCP_PSH, TCP_SYN},
    testing::frames::Frame,
};
use support::*;
use testbed::{
    agent::AgentProc,
    topology::{Layout, Node},
    traffic::{Servers, mac_of, raw_frames},
};

fn judged(n: &Node, agent: &AgentProc, verdict: &str) -> f64 {
    let text = metrics(n, agent);
    ["tcp", "udp"]
        .iter()
        .filter_map(|proto| {
            sample(
                &text,
                "observer_packets_total",
                &format!("protocol=\"{proto}\",verdict=\"{verdict}\""),
            )
        })
        .sum()
}

#[test]
fn cilium_dsr_marks_are_service_traffic_on_a_cilium_node() {
    ports_from(19_925);
    let n = Node::new(Layout::VpcCni);
    let pod = n.pods[0].ip;
    let pod6 = n.pods[0].ip6.unwrap();
    let mut servers = Servers::new();
    servers.tcp_echo(&n.pods[0].ns, 80);
    let mac = mac_of(&n.node, n.uplinks[0]);
    let send = |frames: Vec<Frame>| {
        let frames = frames
            .into_iter()
            .map(|f| {
                let mut b = f.build();
                b[..6].copy_from_slice(&mac);
                b
            })
            .collect();
        raw_frames(&n.outside, "eth0", frames);
    };
    let client = n.outside_ip;
    let client6 = n.outside_ip6;

    // Before: a node without Cilium trusts no mark (`--dsr-marks auto`): a marked SYN from
    // outside is a direct access like any other.
    let mut agent = start(&n, "dsr-no-cilium", &[]);
    assert_eq!(
        log_count(&agent, "\"trusted\":\"none\""),
        1,
        "{}",
        agent.log_text()
    );
    send(vec![
        Frame::tcp(client, pod, 41_000, 80, TCP_SYN).cilium_dsr(n.service_ip, 80),
    ]);
    wait_for("the marked SYN flagged", Duration::from_secs(10), || {
        flows(&agent).iter().any(|f| f.src_port == 41_000)
    });
    assert!(agent.signal(libc::SIGTERM).success());

    // The node runs Cilium: it has the cilium_host/cilium_net pair Cilium creates.
    n.node.sh(&[
        "ip",
        "link",
        "add",
        "cilium_host",
        "type",
        "veth",
        "peer",
        "name",
        "cilium_net",
    ]);
    // An IPv6 Service CIDR beside the node's IPv4 one, for the IPv6 mark.
    const SERVICE6: &str = "fd00:20::a";
    let mut agent = start(&n, "dsr-cilium", &["--service-cidr", "fd00:20::/108"]);
    assert_eq!(
        log_count(&agent, "\"trusted\":\"cilium\""),
        1,
        "{}",
        agent.log_text()
    );
    let service_before = judged(&n, &agent, "service");
    let data = TCP_ACK | TCP_PSH;
    send(vec![
        // A connection to a Service, forwarded by another node: its SYN marked, the rest not.
        Frame::tcp(client, pod, 41_001, 80, TCP_SYN).cilium_dsr(n.service_ip, 80),
        Frame::tcp(client, pod, 41_001, 80, TCP_ACK),
        Frame::tcp(client, pod, 41_001, 80, data).payload(32),
        // A UDP datagram to a Service: every datagram carries the mark.
        Frame::udp(client, pod, 41_002, 53)
            .cilium_dsr(n.service_ip, 53)
            .payload(16),
        // IPv6, to a Service: a Destination Options header.
        Frame::tcp(client6, pod6, 41_003, 80, TCP_SYN).cilium_dsr(SERVICE6, 80),
        // A forged mark naming no Service of the cluster: still a direct access.
        Frame::tcp(client, pod, 41_004, 80, TCP_SYN).cilium_dsr(client, 80),
    ]);
    let mut rows = Vec::new();
    wait_for(
        "the forged mark flagged and the marked packets judged",
        Duration::from_secs(10),
        || {
            rows = flows(&agent);
            rows.iter().any(|f| f.src_port == 41_004)
                && judged(&n, &agent, "service") >= service_before + 5.0
        },
    );
    // The flows of the marked connections settle as what they are: nothing else was flagged,
    // counted or alerted.
    wait_refreshes(&agent, 3);
    let rows = flows(&agent);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0].src_port, rows[0].verdict.as_str()),
        (41_004, "direct_to_pod")
    );
    assert_eq!(judged(&n, &agent, "service"), service_before + 5.0);
    let alerts = alert_lines(&agent);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["src"], client);

    // `--dsr-marks off` on the same node trusts nothing.
    assert!(agent.signal(libc::SIGTERM).success());
    let agent = start(&n, "dsr-off", &["--dsr-marks", "off"]);
    send(vec![
        Frame::tcp(client, pod, 41_005, 80, TCP_SYN).cilium_dsr(n.service_ip, 80),
    ]);
    wait_for("the marked SYN flagged", Duration::from_secs(10), || {
        flows(&agent).iter().any(|f| f.src_port == 41_005)
    });
    drop(servers);
}
