//! The programs on a simulated node in network namespaces, both layouts of the seed article,
//! with real traffic: SCENARIOS rows 1-11 and 14-15 (row 14 on the VPC CNI node). The test
//! loader fills the maps, attaches the programs in the node namespace, drives TCP, UDP and
//! ICMP, and asserts the verdict counters, the flow table and the events.
//!
//! Needs root, iproute2, iptables and ping (`cargo xtask test` installs them). Everything lives
//! in namespaces the test creates and deletes, also on failure.

use std::{net::IpAddr, thread, time::Duration};

use observer::kernel::{
    attach::{self, Role},
    maps::{self, Maps},
    object::{self, LoadOptions},
};
use observer_common::{
    addr::ip_of,
    maps::{FlowKey, FlowStats, origin, role},
    testing::flow_key as key,
    user::Inventory,
    verdict::Verdict,
};
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, tcp_get, tcp_send_hash, udp_echo},
};

fn describe(flows: &[(FlowKey, FlowStats)]) -> String {
    flows
        .iter()
        .map(|(k, s)| {
            format!(
                "{}:{} -> {}:{} proto {} delivered {} answered {} refused {}\n",
                ip_of(&k.src),
                k.sport,
                ip_of(&k.dst),
                k.dport,
                k.proto,
                s.delivered,
                s.answered,
                s.refused
            )
        })
        .collect()
}

/// What the agent would know about this node and its cluster.
fn inventory(n: &Node) -> Inventory {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut inv = Inventory::new();
    inv.add_ip(ip(n.node_ip), role::NODE | role::CLUSTER);
    if n.layout == Layout::VpcCni {
        inv.add_ip(ip("10.0.15.193"), role::NODE | role::CLUSTER);
    }
    for p in &n.pods {
        inv.add_ip(ip(p.ip), role::LOCAL_POD | role::CLUSTER);
    }
    inv.add_ip(ip(n.peer_ip), role::CLUSTER);
    match n.cluster_cidr {
        Some(c) => inv.add_cidr(c.parse().unwrap(), role::CLUSTER),
        None => inv.add_ip(ip(n.peer_pod_ip), role::CLUSTER),
    }
    inv.add_cidr(n.allowed_cidr.parse().unwrap(), role::ALLOWED);
    inv.add_cidr(n.service_cidr.parse().unwrap(), role::SERVICE);
    inv
}

fn run_layout(layout: Layout) {
    let n = Node::new(layout);
    let mut ebpf = object::load(&LoadOptions::default())
        .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    let (maps, mut events) = Maps::take(&mut ebpf).expect("maps");
    let mut rings = observer::kernel::staged::StagedRings::take(&mut ebpf).expect("staged rings");
    maps.write_inventory(&inventory(&n))
        .expect("filling the maps");
    // Attach inside the node namespace.
    let modes = attach::Modes::auto();
    thread::scope(|s| {
        s.spawn(|| {
            n.node.enter_this_thread();
            for up in &n.uplinks {
                attach::attach(&mut ebpf, up, Role::Uplink, modes).expect("attach uplink");
            }
            for p in &n.pods {
                attach::attach(&mut ebpf, p.veth, Role::Pod, modes).expect("attach pod veth");
            }
        });
    });

    let servers = Servers::for_node(&n);
    let pod_a = n.pods[0].ip;
    let pod_b = n.pods[1].ip;

    // Row 1: outside host straight to a pod IP.
    let (row1_port, r) = tcp_get(&n.outside, None, pod_a, 80);
    assert_eq!(
        r.as_deref(),
        Ok("hello\n"),
        "row 1: the pod must be reachable (the exposure)"
    );
    // Rows 2/3: the NodePort (DNAT keeps the client address: the pod sees the outsider).
    let (np_port, r) = tcp_get(&n.outside, None, n.node_ip, n.nodeport);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 2: NodePort");
    // Row 4: another node; row 5: a pod of another node.
    let (_, r) = tcp_get(&n.peer, Some(n.peer_ip), pod_a, 80);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 4");
    let (_, r) = tcp_get(&n.peer, Some(n.peer_pod_ip), pod_a, 80);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 5");
    // Row 6: the pod's own connection and DNS-like query to the outside.
    let (pod_tcp_port, r) = tcp_get(&n.pods[0].ns, None, n.outside_ip, 8443);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 6 tcp");
    let (pod_udp_port, ok) = udp_echo(&n.pods[0].ns, n.outside_ip, 53);
    assert!(ok, "row 6 udp");
    // Row 7: an allowed source.
    let (_, r) = tcp_get(&n.outside, Some(n.allowed_ip), pod_a, 80);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 7");
    // Row 8: a Service ClusterIP routed to the node.
    let (svc_port, r) = tcp_get(&n.outside, None, n.service_ip, 80);
    assert_eq!(r.as_deref(), Ok("hello\n"), "row 8");
    // Row 9: the node itself (nothing listens on 22 here: refused by the node).
    let (_, r) = tcp_get(&n.outside, None, n.node_ip, 22);
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionRefused), "row 9");
    // Row 10: ping a pod IP.
    n.outside
        .sh(&["ping", "-c", "2", "-i", "0.2", "-W", "2", pod_a]);
    // Row 11: UDP to a pod IP.
    let (row11_port, ok) = udp_echo(&n.outside, pod_a, 5353);
    assert!(ok, "row 11");
    // Row 15: a closed port of the pod.
    let (row15_port, r) = tcp_get(&n.outside, None, pod_a, 81);
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionRefused), "row 15");
    // Row 14 (VPC CNI): pod B is reached through eth1, the secondary ENI.
    let row14 = (layout == Layout::VpcCni).then(|| {
        let (port, r) = tcp_get(&n.outside, None, pod_b, 80);
        assert_eq!(r.as_deref(), Ok("hello\n"), "row 14");
        port
    });
    thread::sleep(Duration::from_millis(200));

    // Verdict counters.
    let c = maps.verdict_counts().unwrap();
    for (v, class) in [
        (Verdict::DirectToPod, "tcp"),
        (Verdict::DirectToPod, "udp"),
        (Verdict::DirectToPod, "icmp"),
        (Verdict::NodePort, "tcp"),
        (Verdict::InCluster, "tcp"),
        (Verdict::Reply, "tcp"),
        (Verdict::Reply, "udp"),
        (Verdict::Allowed, "tcp"),
        (Verdict::Service, "tcp"),
        (Verdict::Host, "tcp"),
    ] {
        assert!(
            c.packets_of(v, class) > 0,
            "{layout:?}: no {v:?}/{class} packets: {c:?}"
        );
    }
    // SYNs: one direct connection per row 1, 15 (and 14) was seen opening.
    let direct_syns = c.0.get(&(Verdict::DirectToPod, "tcp")).unwrap().flow_starts;
    assert_eq!(direct_syns, 2 + u64::from(row14.is_some()), "{c:?}");

    // The flow table and the staged SYNs hold exactly the direct accesses, with what the pod
    // did (a SYN-only flow, row 15, is not marked delivered: only its answer is staged).
    let mut staged = Vec::new();
    rings.drain(&mut staged);
    let flows: Vec<(FlowKey, FlowStats)> =
        observer::flows::kernel_view(maps.flows().unwrap(), &staged)
            .into_iter()
            .collect();
    let outside = n.outside_ip;
    let mut expected = vec![
        (
            key(outside, pod_a, row1_port, 80, 6),
            (1, 1, 0),
            origin::START,
        ),
        (
            key(outside, pod_a, row15_port, 81, 6),
            (0, 0, 1),
            origin::START,
        ),
        (
            key(outside, pod_a, row11_port, 5353, 17),
            (1, 1, 0),
            origin::DATAGRAM,
        ),
    ];
    if let Some(port) = row14 {
        expected.push((key(outside, pod_b, port, 80, 6), (1, 1, 0), origin::START));
    }
    let icmp: Vec<_> = flows.iter().filter(|(k, _)| k.proto == 1).collect();
    assert_eq!(icmp.len(), 1, "row 10: one ping flow\n{}", describe(&flows));
    let (ik, is) = icmp[0];
    assert_eq!(
        (ip_of(&ik.src), ip_of(&ik.dst)),
        (outside.parse::<IpAddr>().unwrap(), pod_a.parse().unwrap())
    );
    assert_eq!(
        (is.delivered, is.answered, is.refused, is.packets),
        (1, 1, 0, 2),
        "row 10"
    );
    for (k, (d, a, r), o) in &expected {
        let s = flows
            .iter()
            .find(|(fk, _)| fk == k)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("{layout:?}: missing flow {k:?}\n{}", describe(&flows)));
        assert_eq!((s.delivered, s.answered, s.refused), (*d, *a, *r), "{k:?}");
        assert_eq!(s.origin, *o);
        assert_eq!(s.verdict, Verdict::DirectToPod as u8);
        assert!(s.pod_ifindex != 0);
    }
    assert_eq!(
        flows.len(),
        expected.len() + 1,
        "{layout:?}: only direct accesses are flagged\n{}",
        describe(&flows)
    );
    for port in [np_port, svc_port] {
        assert!(
            !flows.iter().any(|(k, _)| k.sport == port),
            "NodePort/Service flow flagged"
        );
    }
    // Row 14: the flow came in on the secondary ENI; row 1 on the primary uplink, delivered
    // through pod A's veth.
    let ifindex_of = |k: &FlowKey| flows.iter().find(|(fk, _)| fk == k).unwrap().1;
    let row1 = ifindex_of(&expected[0].0);
    assert_eq!(row1.ifindex, n.node.ifindex(n.uplinks[0]));
    assert_eq!(row1.pod_ifindex, n.node.ifindex(n.pods[0].veth));
    if let Some(port) = row14 {
        let s = ifindex_of(&key(outside, pod_b, port, 80, 6));
        assert_eq!(
            s.ifindex,
            n.node.ifindex(n.uplinks[1]),
            "row 14 arrives on the secondary ENI"
        );
        assert_eq!(s.pod_ifindex, n.node.ifindex(n.pods[1].veth));
    }

    // The pod's own flows were recorded, so their replies were replies.
    let opened = maps.pod_flows().unwrap();
    assert!(
        opened
            .iter()
            .any(|(k, _)| *k == key(pod_a, outside, pod_tcp_port, 8443, 6)),
        "row 6 tcp not recorded"
    );
    assert!(
        opened
            .iter()
            .any(|(k, _)| *k == key(pod_a, outside, pod_udp_port, 53, 17)),
        "row 6 udp not recorded"
    );

    // One event per flow in the table, none lost; every flagged flow announced by its event or
    // its staged SYN.
    let mut got = Vec::new();
    let bad = maps::drain_events(&mut events, &mut got);
    assert_eq!(bad, 0);
    assert_eq!(got.len(), maps.flows().unwrap().len(), "{got:?}");
    let announced: std::collections::HashSet<FlowKey> = got
        .iter()
        .chain(
            staged
                .iter()
                .filter(|r| r.kind == observer_common::maps::staged::SYN),
        )
        .map(|e| e.key)
        .collect();
    let shown: std::collections::HashSet<FlowKey> = flows.iter().map(|(k, _)| *k).collect();
    assert_eq!(announced, shown);
    let h = maps.health_counts().unwrap();
    assert_eq!(h[observer_common::maps::health::EVENTS_LOST as usize], 0);
    assert_eq!(
        h[observer_common::maps::health::FLOW_INSERT_FAILED as usize],
        0
    );
    // Fail-open: byte streams arrive intact through the observed paths (direct to the pod, and
    // in the other direction through the pod veth programs), whatever the verdict.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = format!("{:016x}", testbed::traffic::fnv1a(&data));
    assert_eq!(
        tcp_send_hash(&n.outside, pod_a, 9000, data.clone()),
        want,
        "outside -> pod, 4 MiB"
    );
    assert_eq!(
        tcp_send_hash(&n.peer, pod_a, 9000, data),
        want,
        "peer node -> pod, 4 MiB"
    );
    drop(servers);
}

#[test]
fn vpc_cni_node() {
    run_layout(Layout::VpcCni);
}

#[test]
fn calico_node() {
    run_layout(Layout::Calico);
}
