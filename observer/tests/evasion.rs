//! Evasion through fragments and header tricks, end to end: `observer run` on a VPC CNI node,
//! raw frames with valid checksums from an outside host, and the pod's own kernel answering.
//! Each evasion whose flow the parser cannot read (`malformed` or `fragment`) is counted against
//! the pod it reached (`observer_unjudged_pod_packets_total`) and raises an alert line naming the
//! pod; a legitimately fragmented reply to the pod's own flow raises nothing.
//!
//! Needs root, iproute2 and promtool (`cargo xtask test` installs them).

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    time::Duration,
};

use support::*;
use testbed::{
    evasion::{ethernet, ipv4_fragments, ipv6_header_in_second_fragment, ipv6_long_chain, tcp_syn},
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, mac_of, raw_frames},
};

/// The pod's TCP segments sent so far (`Tcp: OutSegs` of its namespace): a SYN it took is
/// answered with a SYN-ACK (open port) or a RST (closed), either way one more segment.
fn out_segs(ns: &Netns) -> u64 {
    let snmp = ns.sh(&["cat", "/proc/net/snmp"]);
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "OutSegs")
        .expect("OutSegs");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The pod's unjudged count of `kind` in a scrape.
fn unjudged(text: &str, veth: &str, kind: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("observer_unjudged_pod_packets_total{")
                && l.contains(&format!("pod_name=\"{veth}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn evasions_to_a_pod_are_counted_against_it_and_alerted() {
    ports_from(19_400);
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    let pod = &n.pods[0];
    servers.tcp(&pod.ns, 80);
    servers.udp(&n.outside, 5300);
    let agent = start(&n, "evasion", &[]);
    let to_node = mac_of(&n.node, n.uplinks[0]);
    let from = mac_of(&n.outside, "eth0");
    let send = |packets: Vec<Vec<u8>>| {
        raw_frames(
            &n.outside,
            "eth0",
            packets.iter().map(|p| ethernet(to_node, from, p)).collect(),
        );
    };
    let src4: Ipv4Addr = n.outside_ip.parse().unwrap();
    let dst4: Ipv4Addr = pod.ip.parse().unwrap();
    let src6: Ipv6Addr = n.outside_ip6.parse().unwrap();
    let dst6: Ipv6Addr = pod.ip6.expect("pod A has IPv6").parse().unwrap();

    // A fragmented reply to the pod's own UDP flow: the first fragment is a reply, the others
    // inherit it. Nothing unjudged, no alert.
    let echoed = pod.ns.run(move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let big = vec![7u8; 4000];
        s.send_to(&big, (src4, 5300)).unwrap();
        let mut buf = vec![0u8; 8000];
        s.recv_from(&mut buf).map(|(len, _)| len).unwrap_or(0)
    });
    assert_eq!(echoed, 4000, "the fragmented reply reached the pod");

    // 1. An IPv4 SYN in tiny fragments: 8 bytes of TCP (the ports) in the first, the rest in
    //    the second (RFC 1858). The pod's kernel reassembles it and answers.
    let before = out_segs(&pod.ns);
    let syn = tcp_syn(IpAddr::V4(src4), IpAddr::V4(dst4), 41_001, 80);
    send(ipv4_fragments(src4, dst4, 0x4242, 6, &syn, &[8]));
    wait_for(
        "the pod answered the reassembled SYN",
        Duration::from_secs(5),
        || out_segs(&pod.ns) > before,
    );

    // 2. An IPv6 SYN behind nine destination-options headers (the parser follows six; Linux
    //    delivers any number). The pod answers.
    let before = out_segs(&pod.ns);
    let syn6 = tcp_syn(IpAddr::V6(src6), IpAddr::V6(dst6), 41_002, 80);
    send(vec![ipv6_long_chain(src6, dst6, 9, &syn6)]);
    wait_for(
        "the pod answered the SYN behind nine headers",
        Duration::from_secs(5),
        || out_segs(&pod.ns) > before,
    );

    // 3. An IPv6 SYN whose TCP header is all in the second fragment. Linux drops such a first
    //    fragment (RFC 8200 §4.5), but it is counted all the same.
    let syn6b = tcp_syn(IpAddr::V6(src6), IpAddr::V6(dst6), 41_003, 80);
    send(ipv6_header_in_second_fragment(
        src6,
        dst6,
        0x0bad_cafe,
        &syn6b,
    ));

    // 4. A non-first IPv4 fragment alone.
    let lone = ipv4_fragments(src4, dst4, 0x4343, 17, &[9u8; 64], &[16]);
    send(vec![lone[1].clone()]);

    // The kernel counted them against the pod: header = tiny first fragment, long chain,
    // IPv6 first fragment without TCP; fragment = the tiny SYN's second fragment, the IPv6
    // second fragment, the lone fragment.
    let veth = pod.veth;
    wait_for("the unjudged counts", Duration::from_secs(10), || {
        let m = metrics(&n, &agent);
        unjudged(&m, veth, "header") >= 3.0 && unjudged(&m, veth, "fragment") >= 3.0
    });
    let m = metrics(&n, &agent);
    promtool_check(&m);
    assert_eq!(unjudged(&m, veth, "header"), 3.0, "{m}");
    assert_eq!(unjudged(&m, veth, "fragment"), 3.0, "{m}");
    assert!(!m.contains(n.outside_ip), "no source address in metrics");
    // One alert line per pod and kind, naming the pod.
    let alerts: Vec<_> = alert_lines(&agent)
        .into_iter()
        .filter(|a| a["verdict"] == "unjudged")
        .collect();
    let kinds: std::collections::BTreeSet<_> = alerts
        .iter()
        .map(|a| {
            assert_eq!(a["pod"], veth, "{a}");
            a["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["fragment".to_string(), "header".to_string()].into(),
        "{alerts:?}"
    );
    drop(servers);
}
