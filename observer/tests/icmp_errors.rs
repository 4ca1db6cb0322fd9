//! ICMP errors from routers (SCENARIOS row 20): a fragmentation-needed (IPv4) or packet-too-big
//! (IPv6) about the pod's answer in a flow it serves (the VPC's 9001-byte MTU against 1500 on a
//! VPN or the internet, a load balancer's IP target keeping its clients' addresses) is judged
//! by the flow it quotes, so it is no direct access; an error about a flow the node never saw
//! is, in the lesser class whose opener is unknown.

mod support;

use std::{io::Read, time::Duration};

use observer_common::{
    packet::{TCP_ACK, TCP_PSH},
    testing::frames::{Frame, L4},
};
use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, mac_of, raw_frames, tcp_open},
};

/// A router of the path back to the clients, outside the cluster.
const ROUTER: &str = "10.0.0.1";
const ROUTER6: &str = "2600:1f18:abcd:1::1";

fn icmp_judged(n: &Node, agent: &testbed::agent::AgentProc, verdict: &str) -> f64 {
    ["icmp", "icmpv6"]
        .iter()
        .filter_map(|proto| {
            sample(
                &metrics(n, agent),
                "observer_packets_total",
                &format!("protocol=\"{proto}\",verdict=\"{verdict}\""),
            )
        })
        .sum()
}

#[test]
fn icmp_errors_are_judged_by_the_flow_they_quote() {
    ports_from(19_940);
    let n = Node::new(Layout::VpcCni);
    let pod = n.pods[0].ip;
    let pod6 = n.pods[0].ip6.unwrap();
    let mut servers = Servers::new();
    servers.tcp_echo(&n.pods[0].ns, 80);
    let agent = start(&n, "icmp-errors", &[]);

    // Clients outside the cluster reach the pod straight on its addresses (a load balancer's
    // IP target keeping the clients' addresses): direct accesses, which the pod serves.
    let (sport, mut c4) = tcp_open(&n.outside, pod, 80);
    let (sport6, mut c6) = tcp_open(&n.outside, pod6, 80);
    for c in [&mut c4, &mut c6] {
        std::io::Write::write_all(c, b"hello\n").unwrap();
        c.read_exact(&mut [0u8; 6]).unwrap();
    }
    wait_for("the two served flows", Duration::from_secs(10), || {
        flows(&agent).len() == 2
    });
    let replies = icmp_judged(&n, &agent, "reply");

    // Routers answer the pod's big segments: fragmentation needed, packet too big.
    let answer = TCP_ACK | TCP_PSH;
    let mac = mac_of(&n.node, n.uplinks[0]);
    let error = |src: &str, dst: &str, ty: u8, code: u8, quoted: Frame| {
        let mut f = Frame::new(
            src,
            dst,
            L4::IcmpError {
                ty,
                code,
                quoted: quoted.ip_packet(),
            },
        )
        .build();
        f[..6].copy_from_slice(&mac);
        f
    };
    raw_frames(
        &n.outside,
        "eth0",
        vec![
            error(
                ROUTER,
                pod,
                3,
                4,
                Frame::tcp(pod, n.outside_ip, 80, sport, answer),
            ),
            error(
                ROUTER6,
                pod6,
                2,
                0,
                Frame::tcp(pod6, n.outside_ip6, 80, sport6, answer),
            ),
        ],
    );
    wait_for(
        "both errors judged replies",
        Duration::from_secs(10),
        || icmp_judged(&n, &agent, "reply") >= replies + 2.0,
    );
    assert_eq!(icmp_judged(&n, &agent, "direct_to_pod"), 0.0);

    // An error about a flow this node never saw: a direct access whose opener is unknown.
    raw_frames(
        &n.outside,
        "eth0",
        vec![error(
            ROUTER,
            pod,
            3,
            4,
            Frame::tcp(pod, n.outside_ip, 80, 54_321, answer),
        )],
    );
    let mut rows = Vec::new();
    wait_for(
        "the unseen flow's error settled",
        Duration::from_secs(20),
        || {
            rows = flows(&agent);
            rows.iter()
                .any(|f| f.src == ROUTER && !f.state.is_empty() && alert_lines(&agent).len() >= 3)
        },
    );
    let from_routers: Vec<_> = rows
        .iter()
        .filter(|f| f.src == ROUTER || f.src == ROUTER6)
        .collect();
    assert_eq!(from_routers.len(), 1, "{rows:#?}");
    let e = from_routers[0];
    assert_eq!(
        (e.verdict.as_str(), e.protocol.as_str(), e.origin.as_str()),
        ("direct_to_pod", "icmp", "unknown")
    );
    assert!(e.reason.contains("never saw"), "{}", e.reason);
    drop((c4, c6, servers));
}
