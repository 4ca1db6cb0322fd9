//! The rows of `SCENARIOS.md` as crafted frames with the verdict each must get, on a node of
//! each layout of the seed article: VPC CNI (pods in the node subnet) and Calico (a routed pod
//! CIDR). Addresses come from the article's `ip a` / `ip r` output.

use std::string::ToString;

use std::{net::IpAddr, vec, vec::Vec};

use super::{
    flow_key,
    frames::{Frame, L4, non_ip},
};
use crate::{
    maps::role,
    packet::{TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN},
    user::Inventory,
    verdict::{Settings, Verdict},
};

/// Default NodePort range.
pub const SETTINGS: Settings = Settings {
    nodeport_min: 30000,
    nodeport_max: 32767,
    dsr_marks: true,
};

/// One frame of a row and the verdict it must get.
#[derive(Clone, Debug)]
pub struct Case {
    /// The SCENARIOS.md row ("1", "12", ...).
    pub row: &'static str,
    pub what: &'static str,
    /// The frame, when it was crafted with [`Frame`] (so variants can be derived).
    pub frame: Option<Frame>,
    pub bytes: Vec<u8>,
    pub expect: Verdict,
}

/// A simulated node: its inventory and the cases judged on its uplinks.
#[derive(Clone, Debug)]
pub struct Layout {
    pub name: &'static str,
    pub inventory: Inventory,
    pub cases: Vec<Case>,
}

fn case(row: &'static str, what: &'static str, frame: Frame, expect: Verdict) -> Case {
    Case {
        row,
        what,
        bytes: frame.build(),
        frame: Some(frame),
        expect,
    }
}

fn raw(row: &'static str, what: &'static str, bytes: Vec<u8>, expect: Verdict) -> Case {
    Case {
        row,
        what,
        frame: None,
        bytes,
        expect,
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Addresses of the VPC CNI node (ip-10-0-7-223 in the article).
pub mod vpc {
    pub const NODE_ETH0: &str = "10.0.7.223";
    pub const NODE_ETH1: &str = "10.0.15.193";
    pub const POD_A: &str = "10.0.3.240";
    pub const POD_B: &str = "10.0.8.245";
    /// A pod whose veth appears after the agent started (row 13).
    pub const POD_LATE: &str = "10.0.4.11";
    pub const PEER_NODE: &str = "10.0.12.177";
    pub const PEER_POD: &str = "10.0.10.231";
    pub const OUTSIDE: &str = "10.0.6.245";
    pub const ALLOWED_SRC: &str = "10.0.14.50";
    pub const ALLOWED_CIDR: &str = "10.0.14.0/26";
    pub const SERVICE_CIDR: &str = "172.20.0.0/16";
    pub const SERVICE_IP: &str = "172.20.0.10";
    pub const EXTERNAL_IP: &str = "203.0.113.10";
    pub const INTERNET: &str = "198.51.100.7";
    pub const VPC_DNS: &str = "10.0.0.2";
    pub const NODE6: &str = "2600:1f18:abcd:1::10";
    pub const POD6: &str = "2600:1f18:abcd:1::3f0";
    pub const PEER_NODE6: &str = "2600:1f18:abcd:1::20";
    pub const OUTSIDE6: &str = "2600:1f18:abcd:1::99";
    pub const INTERNET6: &str = "2001:db8::7";
}

/// Addresses of the Calico node (ip-10-0-13-0 in the article).
pub mod calico {
    pub const NODE: &str = "10.0.13.0";
    pub const VXLAN: &str = "172.16.30.0";
    pub const POD_A: &str = "172.16.30.3";
    pub const POD_B: &str = "172.16.30.2";
    pub const POD_LATE: &str = "172.16.30.1";
    pub const CLUSTER_CIDR: &str = "172.16.0.0/16";
    pub const PEER_NODE: &str = "10.0.6.190";
    pub const PEER_POD: &str = "172.16.72.69";
    pub const OUTSIDE: &str = "10.0.6.245";
    pub const ALLOWED_SRC: &str = "10.0.14.50";
    pub const ALLOWED_CIDR: &str = "10.0.14.0/26";
    pub const SERVICE_CIDR: &str = "10.96.0.0/12";
    pub const SERVICE_IP: &str = "10.96.0.10";
    pub const INTERNET: &str = "198.51.100.7";
    pub const NODE6: &str = "fd00:10::d";
    pub const POD6: &str = "fd00:172:16:30::3";
    pub const POD_CIDR6: &str = "fd00:172:16::/48";
    pub const OUTSIDE6: &str = "fd00:10::99";
    pub const INTERNET6: &str = "2001:db8::7";
}

/// The VPC CNI node.
pub fn vpc_cni() -> Layout {
    use vpc::*;
    let mut inv = Inventory::new();
    for n in [NODE_ETH0, NODE_ETH1, NODE6] {
        inv.add_ip(addr(n), role::NODE | role::CLUSTER);
    }
    for p in [POD_A, POD_B, POD_LATE, POD6] {
        inv.add_ip(addr(p), role::LOCAL_POD | role::CLUSTER);
    }
    for c in [PEER_NODE, PEER_NODE6] {
        inv.add_ip(addr(c), role::CLUSTER | role::OTHER_NODE);
    }
    inv.add_ip(addr(PEER_POD), role::CLUSTER);
    inv.add_cidr(ALLOWED_CIDR.parse().unwrap(), role::ALLOWED);
    inv.add_cidr(SERVICE_CIDR.parse().unwrap(), role::SERVICE);
    inv.add_ip(addr(EXTERNAL_IP), role::SERVICE);
    // A NodePort allocated outside the range (a cluster with a custom range).
    inv.add_nodeport(8443, 6);
    // The NodePorts of Services the DSR rows' marks name.
    inv.add_nodeport(30999, 6);
    inv.add_nodeport(32001, 6);
    inv.add_pod_flow(flow_key(POD_A, INTERNET, 40000, 443, 6));
    inv.add_pod_flow(flow_key(POD_A, VPC_DNS, 40001, 53, 17));
    inv.add_pod_flow(flow_key(POD_A, INTERNET, 77, 0, 1));
    inv.add_pod_flow(flow_key(POD6, INTERNET6, 40002, 443, 6));
    inv.add_pod_flow(flow_key(POD6, INTERNET6, 40003, 53, 17));
    // Row 20: connections the node saw come in, that the pod serves (a load balancer's IP
    // target answering clients whose addresses it keeps).
    inv.add_served_flow(flow_key(INTERNET, POD_A, 51100, 8443, 6));
    inv.add_served_flow(flow_key(INTERNET6, POD6, 51101, 8443, 6));
    // Row 24: a connection whose SYN carried a DSR mark (what the marked SYN's case makes).
    inv.add_dsr_flow(flow_key(INTERNET, POD_A, 51200, 8080, 6));
    let cases = rows(&Addrs {
        node: NODE_ETH0,
        node_second: NODE_ETH1,
        pod: POD_A,
        pod_late: POD_LATE,
        peer_node: PEER_NODE,
        peer_pod: PEER_POD,
        outside: OUTSIDE,
        allowed: ALLOWED_SRC,
        service: SERVICE_IP,
        external: Some(EXTERNAL_IP),
        internet: INTERNET,
        dns: VPC_DNS,
        node6: NODE6,
        pod6: POD6,
        peer6: PEER_NODE6,
        outside6: OUTSIDE6,
        internet6: INTERNET6,
    });
    Layout {
        name: "vpc-cni",
        inventory: inv,
        cases,
    }
}

/// The Calico node.
pub fn calico() -> Layout {
    use calico::*;
    let mut inv = Inventory::new();
    for n in [NODE, VXLAN, NODE6] {
        inv.add_ip(addr(n), role::NODE | role::CLUSTER);
    }
    for p in [POD_A, POD_B, POD_LATE, POD6] {
        inv.add_ip(addr(p), role::LOCAL_POD | role::CLUSTER);
    }
    inv.add_ip(addr(PEER_NODE), role::CLUSTER | role::OTHER_NODE);
    inv.add_cidr(CLUSTER_CIDR.parse().unwrap(), role::CLUSTER);
    inv.add_cidr(POD_CIDR6.parse().unwrap(), role::CLUSTER);
    inv.add_cidr(ALLOWED_CIDR.parse().unwrap(), role::ALLOWED);
    inv.add_cidr(SERVICE_CIDR.parse().unwrap(), role::SERVICE);
    inv.add_nodeport(8443, 6);
    inv.add_nodeport(30999, 6);
    inv.add_nodeport(32001, 6);
    inv.add_pod_flow(flow_key(POD_A, INTERNET, 40000, 443, 6));
    inv.add_pod_flow(flow_key(POD_A, "10.0.0.2", 40001, 53, 17));
    inv.add_pod_flow(flow_key(POD_A, INTERNET, 77, 0, 1));
    inv.add_pod_flow(flow_key(POD6, INTERNET6, 40002, 443, 6));
    inv.add_pod_flow(flow_key(POD6, INTERNET6, 40003, 53, 17));
    // Row 20: connections the node saw come in, that the pod serves (a load balancer's IP
    // target answering clients whose addresses it keeps).
    inv.add_served_flow(flow_key(INTERNET, POD_A, 51100, 8443, 6));
    inv.add_served_flow(flow_key(INTERNET6, POD6, 51101, 8443, 6));
    // Row 24: a connection whose SYN carried a DSR mark (what the marked SYN's case makes).
    inv.add_dsr_flow(flow_key(INTERNET, POD_A, 51200, 8080, 6));
    let cases = rows(&Addrs {
        node: NODE,
        node_second: VXLAN,
        pod: POD_A,
        pod_late: POD_LATE,
        peer_node: PEER_NODE,
        peer_pod: PEER_POD,
        outside: OUTSIDE,
        allowed: ALLOWED_SRC,
        service: SERVICE_IP,
        external: None,
        internet: INTERNET,
        dns: "10.0.0.2",
        node6: NODE6,
        pod6: POD6,
        peer6: "fd00:172:16:72::45",
        outside6: OUTSIDE6,
        internet6: INTERNET6,
    });
    Layout {
        name: "calico",
        inventory: inv,
        cases,
    }
}

struct Addrs {
    node: &'static str,
    node_second: &'static str,
    pod: &'static str,
    pod_late: &'static str,
    peer_node: &'static str,
    peer_pod: &'static str,
    outside: &'static str,
    allowed: &'static str,
    service: &'static str,
    external: Option<&'static str>,
    internet: &'static str,
    dns: &'static str,
    node6: &'static str,
    pod6: &'static str,
    peer6: &'static str,
    outside6: &'static str,
    internet6: &'static str,
}

fn rows(a: &Addrs) -> Vec<Case> {
    use Verdict::*;
    let syn = TCP_SYN;
    let synack = TCP_SYN | TCP_ACK;
    let data = TCP_ACK | TCP_PSH;
    let pod_syn_out = Frame::tcp(a.pod, a.internet, 40000, 443, syn);
    let mut c = vec![
        case(
            "1",
            "outside host, TCP SYN to a local pod IP:80",
            Frame::tcp(a.outside, a.pod, 51000, 80, syn),
            DirectToPod,
        ),
        case(
            "2",
            "outside host to node IP:NodePort",
            Frame::tcp(a.outside, a.node, 51001, 30080, syn),
            NodePort,
        ),
        case(
            "2",
            "outside host to node IP:NodePort, UDP",
            Frame::udp(a.outside, a.node, 51002, 31000),
            NodePort,
        ),
        case(
            "2",
            "an allocated NodePort outside the range",
            Frame::tcp(a.outside, a.node, 51025, 8443, syn),
            NodePort,
        ),
        case(
            "9",
            "the same port over UDP is not allocated",
            Frame::udp(a.outside, a.node, 51026, 8443),
            Host,
        ),
        case(
            "3",
            "NodePort with client address preserved (same packet at the uplink)",
            Frame::tcp(a.outside, a.node, 51003, 32767, syn),
            NodePort,
        ),
        case(
            "4",
            "another node to a local pod",
            Frame::tcp(a.peer_node, a.pod, 51004, 80, syn),
            InCluster,
        ),
        case(
            "5",
            "a pod of another node to a local pod",
            Frame::tcp(a.peer_pod, a.pod, 51005, 8080, syn),
            InCluster,
        ),
        case(
            "5",
            "a pod of another node, UDP",
            Frame::udp(a.peer_pod, a.pod, 51006, 53),
            InCluster,
        ),
        case(
            "6",
            "SYN-ACK of a connection the pod opened",
            Frame::tcp(a.internet, a.pod, 443, 40000, synack),
            Reply,
        ),
        case(
            "6",
            "data of a connection the pod opened",
            Frame::tcp(a.internet, a.pod, 443, 40000, data),
            Reply,
        ),
        case(
            "6",
            "DNS answer to the pod's query",
            Frame::udp(a.dns, a.pod, 53, 40001),
            Reply,
        ),
        case(
            "6",
            "echo reply to the pod's ping",
            Frame::echo(a.internet, a.pod, false, 77),
            Reply,
        ),
        case(
            "6",
            "ICMP fragmentation-needed about the pod's connection",
            Frame::new(
                a.internet,
                a.pod,
                L4::IcmpError {
                    ty: 3,
                    code: 4,
                    quoted: pod_syn_out.ip_packet(),
                },
            ),
            Reply,
        ),
        case(
            "20",
            "a router's fragmentation-needed about the pod's answer in a flow it serves",
            Frame::new(
                a.internet,
                a.pod,
                L4::IcmpError {
                    ty: 3,
                    code: 4,
                    quoted: Frame::tcp(a.pod, a.internet, 8443, 51100, data).ip_packet(),
                },
            ),
            Reply,
        ),
        case(
            "20",
            "a router's packet-too-big about the pod's IPv6 answer in a flow it serves",
            Frame::new(
                a.internet6,
                a.pod6,
                L4::IcmpError {
                    ty: 2,
                    code: 0,
                    quoted: Frame::tcp(a.pod6, a.internet6, 8443, 51101, data).ip_packet(),
                },
            ),
            Reply,
        ),
        case(
            "20",
            "an unreachable about the pod's answer to a client the node never saw, allowed or not",
            Frame::new(
                a.internet,
                a.pod,
                L4::IcmpError {
                    ty: 3,
                    code: 1,
                    quoted: Frame::udp(a.pod, a.allowed, 53, 51102).ip_packet(),
                },
            ),
            DirectToPod,
        ),
        case(
            "20",
            "an error to one pod quoting another pod's connection",
            Frame::new(
                a.internet,
                a.pod_late,
                L4::IcmpError {
                    ty: 3,
                    code: 4,
                    quoted: pod_syn_out.ip_packet(),
                },
            ),
            DirectToPod,
        ),
        case(
            "20",
            "an ICMP error about a flow the node never saw",
            Frame::new(
                a.internet,
                a.pod,
                L4::IcmpError {
                    ty: 3,
                    code: 4,
                    quoted: Frame::tcp(a.pod, a.internet, 8443, 51199, data).ip_packet(),
                },
            ),
            DirectToPod,
        ),
        case(
            "24",
            "a client's SYN forwarded by Cilium DSR, marked with a Service address",
            Frame::tcp(a.internet, a.pod, 51200, 8080, syn).cilium_dsr(a.service, 80),
            Service,
        ),
        case(
            "24",
            "the next segment of that DSR connection, unmarked",
            Frame::tcp(a.internet, a.pod, 51200, 8080, data),
            Service,
        ),
        case(
            "24",
            "a SYN marked with a node address on a NodePort (DSR NodePort)",
            Frame::tcp(a.internet, a.pod, 51201, 8080, syn).cilium_dsr(a.node, 30999),
            Service,
        ),
        case(
            "24",
            "a SYN marked in network byte order (newer Cilium)",
            Frame::tcp(a.internet, a.pod, 51208, 8080, syn).cilium_dsr_network_order(a.service, 80),
            Service,
        ),
        case(
            "24",
            "a SYN marked with another node's address on a NodePort (it took the client's packet)",
            Frame::tcp(a.internet, a.pod, 51209, 8080, syn).cilium_dsr(a.peer_node, 32001),
            Service,
        ),
        case(
            "24",
            "a UDP datagram forwarded by Cilium DSR (every datagram is marked)",
            Frame::udp(a.internet, a.pod, 51202, 53).cilium_dsr(a.service, 53),
            Service,
        ),
        case(
            "24",
            "an IPv6 SYN marked (destination option) with a node address on a NodePort",
            Frame::tcp(a.internet6, a.pod6, 51203, 8080, syn).cilium_dsr(a.node6, 30999),
            Service,
        ),
        case(
            "1",
            "a forged DSR mark naming no Service of the cluster",
            Frame::tcp(a.internet, a.pod, 51204, 8080, syn).cilium_dsr(a.internet, 80),
            DirectToPod,
        ),
        case(
            "1",
            "a forged DSR mark naming a pod address on a port of the NodePort range",
            Frame::tcp(a.internet, a.pod, 51210, 8080, syn).cilium_dsr(a.peer_pod, 30500),
            DirectToPod,
        ),
        case(
            "1",
            "a forged DSR mark naming a node address on an unallocated port of the range",
            Frame::tcp(a.internet, a.pod, 51211, 8080, syn).cilium_dsr(a.node, 30500),
            DirectToPod,
        ),
        case(
            "1",
            "a forged DSR mark naming a node address off any NodePort",
            Frame::tcp(a.internet, a.pod, 51205, 22, syn).cilium_dsr(a.node, 22),
            DirectToPod,
        ),
        case(
            "1",
            "a forged IPv6 DSR mark naming the client itself",
            Frame::tcp(a.internet6, a.pod6, 51206, 8080, syn).cilium_dsr(a.internet6, 80),
            DirectToPod,
        ),
        case(
            "1",
            "a segment of a flow whose SYN was never marked",
            Frame::tcp(a.internet, a.pod, 51207, 8080, data),
            DirectToPod,
        ),
        case(
            "6",
            "a bare SYN on a pod-opened tuple is not a reply",
            Frame::tcp(a.internet, a.pod, 443, 40000, syn),
            DirectToPod,
        ),
        case(
            "6",
            "the same SYN-ACK without a pod-opened flow",
            Frame::tcp(a.internet, a.pod, 443, 40999, synack),
            DirectToPod,
        ),
        case(
            "7",
            "allowed source (LB subnet) to a pod IP",
            Frame::tcp(a.allowed, a.pod, 51007, 80, syn),
            Allowed,
        ),
        case(
            "8",
            "outside host to a Service ClusterIP",
            Frame::tcp(a.outside, a.service, 51008, 80, syn),
            Service,
        ),
        case(
            "9",
            "outside host to the node's SSH",
            Frame::tcp(a.outside, a.node, 51009, 22, syn),
            Host,
        ),
        case(
            "9",
            "outside host to the kubelet",
            Frame::tcp(a.outside, a.node, 51010, 10250, syn),
            Host,
        ),
        case(
            "9",
            "outside host to the node's second address",
            Frame::tcp(a.outside, a.node_second, 51011, 22, syn),
            Host,
        ),
        case(
            "9",
            "ping to the node",
            Frame::echo(a.outside, a.node, true, 9),
            Host,
        ),
        case(
            "9",
            "to an address this node does not host",
            Frame::tcp(a.outside, a.internet, 51012, 80, syn),
            Host,
        ),
        case(
            "10",
            "outside host, ICMP echo to a pod IP",
            Frame::echo(a.outside, a.pod, true, 10),
            DirectToPod,
        ),
        case(
            "11",
            "outside host, UDP to a pod IP",
            Frame::udp(a.outside, a.pod, 51013, 5353),
            DirectToPod,
        ),
        case(
            "11",
            "outside host, SCTP INIT to a pod IP",
            Frame::new(
                a.outside,
                a.pod,
                L4::Sctp {
                    sport: 51014,
                    dport: 3868,
                    chunk: 1,
                },
            ),
            DirectToPod,
        ),
        case(
            "11",
            "outside host, GRE to a pod IP",
            Frame::new(a.outside, a.pod, L4::Raw { proto: 47 }),
            DirectToPod,
        ),
        case(
            "12",
            "row 1 over IPv6",
            Frame::tcp(a.outside6, a.pod6, 51015, 80, syn),
            DirectToPod,
        ),
        case(
            "12",
            "row 4 over IPv6",
            Frame::tcp(a.peer6, a.pod6, 51016, 80, syn),
            InCluster,
        ),
        case(
            "12",
            "row 6 over IPv6: SYN-ACK",
            Frame::tcp(a.internet6, a.pod6, 443, 40002, synack),
            Reply,
        ),
        case(
            "12",
            "row 6 over IPv6: DNS answer",
            Frame::udp(a.internet6, a.pod6, 53, 40003),
            Reply,
        ),
        case(
            "12",
            "row 10 over IPv6: echo request",
            Frame::echo(a.outside6, a.pod6, true, 12),
            DirectToPod,
        ),
        case(
            "12",
            "row 9 over IPv6: to the node",
            Frame::tcp(a.outside6, a.node6, 51017, 22, syn),
            Host,
        ),
        case(
            "13",
            "row 1 to a pod whose veth appeared later",
            Frame::tcp(a.outside, a.pod_late, 51018, 80, syn),
            DirectToPod,
        ),
        case(
            "14",
            "row 1 arriving on the secondary interface (same packet)",
            Frame::tcp(a.outside, a.pod, 51019, 80, syn),
            DirectToPod,
        ),
        case(
            "15",
            "row 1 to a closed port",
            Frame::tcp(a.outside, a.pod, 51020, 81, syn),
            DirectToPod,
        ),
        raw("16", "ARP request", non_ip(0x0806, 28), NotIp),
        raw("16", "LLDP", non_ip(0x88cc, 40), NotIp),
        raw(
            "16",
            "a frame cut inside the IPv4 header",
            Frame::tcp(a.outside, a.pod, 1, 80, syn).build()[..24].to_vec(),
            Malformed,
        ),
        raw(
            "16",
            "a frame cut inside the TCP header",
            Frame::tcp(a.outside, a.pod, 1, 80, syn).build()[..44].to_vec(),
            Malformed,
        ),
        raw(
            "16",
            "IPv4 with a header length of 4 words",
            bad_ihl(Frame::tcp(a.outside, a.pod, 1, 80, syn).build()),
            Malformed,
        ),
        case(
            "16",
            "three VLAN tags",
            Frame::tcp(a.outside, a.pod, 1, 80, syn)
                .vlan(1)
                .vlan(2)
                .vlan(3),
            Malformed,
        ),
        case(
            "16",
            "a TCP data offset below 5",
            bad_doff(Frame::tcp(a.outside, a.pod, 1, 80, syn)),
            Malformed,
        ),
        case(
            "17",
            "TCP without SYN for a flow never seen to start",
            Frame::tcp(a.outside, a.pod, 51021, 80, data),
            DirectToPod,
        ),
        case(
            "17",
            "a bare ACK, mid-stream",
            Frame::tcp(a.outside, a.pod, 51022, 80, TCP_ACK),
            DirectToPod,
        ),
        case(
            "17",
            "a RST from outside, mid-stream",
            Frame::tcp(a.outside, a.pod, 51023, 80, TCP_RST),
            DirectToPod,
        ),
    ];
    if let Some(ext) = a.external {
        c.push(case(
            "8",
            "outside host to a Service external IP",
            Frame::tcp(a.outside, ext, 51024, 443, syn),
            Service,
        ));
    }
    c
}

fn bad_ihl(mut f: Vec<u8>) -> Vec<u8> {
    f[14] = 0x44;
    f
}

/// A TCP header whose data offset says 4 words (the builder writes 5).
fn bad_doff(f: Frame) -> Frame {
    // Encoded as a raw protocol 6 payload so the builder does not fix it.
    let mut h = vec![
        0xc8,
        0x1c,
        0,
        80,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        4 << 4,
        TCP_SYN,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ];
    let mut out = Frame::new(&f.src.to_string(), &f.dst.to_string(), L4::Raw { proto: 6 });
    out.payload.append(&mut h);
    out
}

/// Structural variants of a crafted frame that keep its verdict: VLAN tags, IPv4 options,
/// IPv6 extension headers, and a first fragment. Plus the non-first fragment, judged `Fragment`.
pub fn variants(c: &Case) -> Vec<Case> {
    let Some(f) = &c.frame else {
        return Vec::new();
    };
    if c.expect == Verdict::Malformed {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut push = |what: &'static str, frame: Frame, expect: Verdict| {
        out.push(Case {
            row: c.row,
            what,
            bytes: frame.build(),
            frame: Some(frame),
            expect,
        });
    };
    push("802.1Q tagged", f.clone().vlan(100), c.expect);
    push("QinQ tagged", f.clone().vlan(100).vlan(200), c.expect);
    if f.src.is_ipv4() {
        push(
            "IPv4 with 3 option words",
            f.clone().ipv4_options(3),
            c.expect,
        );
        // The most options a header holds (a DSR mark takes two words of them).
        let most = if f.dsr.is_some() { 8 } else { 10 };
        push(
            "IPv4 with the most option words",
            f.clone().ipv4_options(most).vlan(7),
            c.expect,
        );
        push(
            "IPv4 first fragment",
            f.clone().fragment(0, true).payload(24),
            c.expect,
        );
    } else {
        push(
            "IPv6 hop-by-hop + destination options",
            f.clone().ipv6_ext(&[0, 60]),
            c.expect,
        );
        push("IPv6 routing header", f.clone().ipv6_ext(&[43]), c.expect);
        push("IPv6 AH", f.clone().ipv6_ext(&[51]), c.expect);
        push(
            "IPv6 first fragment",
            f.clone().ipv6_ext(&[0, 44]).fragment(0, true),
            c.expect,
        );
        push(
            "IPv6 five extension headers",
            f.clone().ipv6_ext(&[0, 43, 60, 51, 60]),
            c.expect,
        );
        push(
            "IPv6 seven extension headers (more than followed)",
            f.clone().ipv6_ext(&[0, 43, 60, 51, 60, 60, 60]),
            Verdict::Malformed,
        );
    }
    push(
        "non-first fragment",
        f.clone().fragment(185, false).payload(16),
        Verdict::Fragment,
    );
    out
}

/// Every case of both layouts with its variants, with the layout it belongs to.
pub fn full_corpus() -> Vec<(Layout, Vec<Case>)> {
    [vpc_cni(), calico()]
        .into_iter()
        .map(|l| {
            let mut all = l.cases.clone();
            for c in &l.cases {
                all.extend(variants(c));
            }
            (l, all)
        })
        .collect()
}
