//! A simulated Kubernetes node in network namespaces, in either layout of the seed article:
//!
//! ```text
//!   outside (10.0.6.245, 10.0.14.50) ─┐
//!   peer node (+ a pod IP on lo)    ──┤ vpc: bridge br0 ├── node eth0 (+ eth1 for VPC CNI)
//!                                                          node ── eni…/cali… ── pod namespaces
//! ```
//!
//! The outside host routes pod IPs to the node, as a VPC does for VPC CNI secondary IPs and
//! as a routed pod CIDR does for Calico. kube-proxy is played by iptables DNAT rules for one
//! NodePort and one ClusterIP. Every namespace is the test's own and is deleted on drop.

use crate::netns::Netns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    VpcCni,
    Calico,
}

pub struct Pod {
    pub ns: Netns,
    pub ip: &'static str,
    /// The pod's IPv6 address (pod A only).
    pub ip6: Option<&'static str>,
    /// The host-side veth in the node namespace.
    pub veth: &'static str,
}

pub struct Node {
    pub layout: Layout,
    pub node_ip: &'static str,
    /// The node's uplinks (eth0, and eth1 for VPC CNI).
    pub uplinks: Vec<&'static str>,
    pub outside_ip: &'static str,
    pub allowed_ip: &'static str,
    pub allowed_cidr: &'static str,
    pub peer_ip: &'static str,
    pub peer_pod_ip: &'static str,
    pub service_ip: &'static str,
    pub service_cidr: &'static str,
    pub cluster_cidr: Option<&'static str>,
    pub nodeport: u16,
    /// IPv6 (SCENARIOS row 12): the node, the outside host, the peer node, and a pod CIDR or
    /// address of the peer's pods for the cluster.
    pub node_ip6: &'static str,
    pub outside_ip6: &'static str,
    pub peer_ip6: &'static str,
    pub pods: Vec<Pod>,
    pub node: Netns,
    pub outside: Netns,
    pub peer: Netns,
    pub vpc: Netns,
}

/// Joins `a_if` in `a` and `b_if` in `b` with a veth pair, created directly in those
/// namespaces (nothing passes through the root namespace).
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.sh(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.sh(&["ip", "link", "set", a_if, "up"]);
    b.sh(&["ip", "link", "set", b_if, "up"]);
}

fn host_settings(ns: &Netns) {
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        ns.sysctl(key, "0");
    }
}

impl Node {
    pub fn new(layout: Layout) -> Node {
        let vpc = Netns::new("vpc");
        let node = Netns::new("node");
        let outside = Netns::new("out");
        let peer = Netns::new("peer");
        vpc.sh(&["ip", "link", "add", "br0", "type", "bridge"]);
        vpc.sh(&["ip", "link", "set", "br0", "up"]);
        // A plain switch: with br_netfilter loaded, bridged IPv4 would be validated (and
        // malformed frames dropped) before reaching the node.
        for t in ["iptables", "ip6tables", "arptables"] {
            let _ = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &vpc.name,
                    "sysctl",
                    "-qw",
                    &format!("net.bridge.bridge-nf-call-{t}=0"),
                ])
                .output();
        }
        let (node_ip, uplinks, peer_ip, peer_pod_ip, service_ip, service_cidr, cluster_cidr) =
            match layout {
                Layout::VpcCni => (
                    "10.0.7.223",
                    vec!["eth0", "eth1"],
                    "10.0.12.177",
                    "10.0.10.231",
                    "172.20.0.10",
                    "172.20.0.0/16",
                    None,
                ),
                Layout::Calico => (
                    "10.0.13.0",
                    vec!["eth0"],
                    "10.0.6.190",
                    "172.16.72.69",
                    "10.96.0.10",
                    "10.96.0.0/12",
                    Some("172.16.0.0/16"),
                ),
            };
        for (i, up) in uplinks.iter().enumerate() {
            let port = format!("n{i}");
            veth(&node, up, &vpc, &port);
            vpc.sh(&["ip", "link", "set", &port, "master", "br0"]);
        }
        veth(&outside, "eth0", &vpc, "o0");
        vpc.sh(&["ip", "link", "set", "o0", "master", "br0"]);
        veth(&peer, "eth0", &vpc, "p0");
        vpc.sh(&["ip", "link", "set", "p0", "master", "br0"]);

        for ns in [&node, &outside, &peer] {
            host_settings(ns);
        }
        node.sysctl("net.ipv4.ip_forward", "1");
        // Two uplinks in one subnet: only the owner of an address answers ARP for it.
        node.sysctl("net.ipv4.conf.all.arp_ignore", "1");
        node.sysctl("net.ipv4.conf.all.arp_announce", "2");
        node.sh(&["ip", "addr", "add", &format!("{node_ip}/20"), "dev", "eth0"]);
        if layout == Layout::VpcCni {
            node.sh(&["ip", "addr", "add", "10.0.15.193/20", "dev", "eth1"]);
        }
        outside.sh(&["ip", "addr", "add", "10.0.6.245/20", "dev", "eth0"]);
        outside.sh(&["ip", "addr", "add", "10.0.14.50/20", "dev", "eth0"]);
        peer.sh(&["ip", "addr", "add", &format!("{peer_ip}/20"), "dev", "eth0"]);
        peer.sh(&[
            "ip",
            "addr",
            "add",
            &format!("{peer_pod_ip}/32"),
            "dev",
            "lo",
        ]);

        let pod_defs: &[(&'static str, &'static str)] = match layout {
            Layout::VpcCni => &[
                ("10.0.3.240", "eni9397facaed1"),
                ("10.0.8.245", "eni5e0af5c1cbe"),
            ],
            Layout::Calico => &[
                ("172.16.30.3", "calibe254a7a7ea"),
                ("172.16.30.2", "calidfe83332386"),
            ],
        };
        let mut pods = Vec::new();
        for (ip, veth_name) in pod_defs {
            pods.push(add_pod(&node, ip, veth_name));
        }
        let (node_ip6, outside_ip6, peer_ip6, pod_ip6) = match layout {
            Layout::VpcCni => (
                "2600:1f18:abcd:1::10",
                "2600:1f18:abcd:1::99",
                "2600:1f18:abcd:1::20",
                "2600:1f18:abcd:1::3f0",
            ),
            Layout::Calico => (
                "fd00:10::d",
                "fd00:10::99",
                "fd00:10::20",
                "fd00:172:16:30::3",
            ),
        };
        node.sysctl("net.ipv6.conf.all.forwarding", "1");
        for (ns, ip) in [
            (&node, node_ip6),
            (&outside, outside_ip6),
            (&peer, peer_ip6),
        ] {
            ns.sh(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        add_pod_ip6(&node, &mut pods[0], pod_ip6);
        for ns in [&outside, &peer] {
            ns.sh(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{pod_ip6}/128"),
                "via",
                node_ip6,
            ]);
        }

        match layout {
            Layout::VpcCni => {
                // The VPC routes each secondary IP to the ENI that holds it: pod A through
                // eth0, pod B through eth1 (the secondary ENI).
                outside.sh(&["ip", "route", "add", "10.0.3.240/32", "via", "10.0.7.223"]);
                outside.sh(&["ip", "route", "add", "10.0.8.245/32", "via", "10.0.15.193"]);
                peer.sh(&["ip", "route", "add", "10.0.3.240/32", "via", "10.0.7.223"]);
                peer.sh(&["ip", "route", "add", "10.0.8.245/32", "via", "10.0.7.223"]);
                node.sh(&["ip", "route", "add", "10.0.10.231/32", "via", peer_ip]);
            }
            Layout::Calico => {
                // A routed pod CIDR: the exposure exists when the network routes it to the node.
                outside.sh(&["ip", "route", "add", "172.16.30.0/26", "via", node_ip]);
                peer.sh(&["ip", "route", "add", "172.16.30.0/26", "via", node_ip]);
                node.sh(&["ip", "route", "add", "172.16.72.64/26", "via", peer_ip]);
            }
        }
        outside.sh(&["ip", "route", "add", service_cidr, "via", node_ip]);

        // kube-proxy: one NodePort and one ClusterIP, both to pod A:80.
        let pod_a = format!("{}:80", pods[0].ip);
        dnat(&node, node_ip, 30080, &pod_a);
        dnat(&node, service_ip, 80, &pod_a);

        Node {
            layout,
            node_ip,
            uplinks,
            outside_ip: "10.0.6.245",
            allowed_ip: "10.0.14.50",
            allowed_cidr: "10.0.14.0/26",
            peer_ip,
            peer_pod_ip,
            service_ip,
            service_cidr,
            cluster_cidr,
            nodeport: 30080,
            node_ip6,
            outside_ip6,
            peer_ip6,
            pods,
            node,
            outside,
            peer,
            vpc,
        }
    }
}

impl Node {
    /// Adds a pod after the fact (SCENARIOS row 13), routed like the others from outside.
    pub fn add_pod(&mut self, ip: &'static str, veth_name: &'static str) -> &Pod {
        let pod = add_pod(&self.node, ip, veth_name);
        let via = match self.layout {
            Layout::VpcCni => "10.0.7.223",
            Layout::Calico => self.node_ip,
        };
        if self.layout == Layout::VpcCni {
            self.outside
                .sh(&["ip", "route", "add", &format!("{ip}/32"), "via", via]);
        }
        self.pods.push(pod);
        self.pods.last().expect("just pushed")
    }
}

/// A kube-proxy-style DNAT rule in `node`: TCP to `dst`:`port` goes to `to` (address:port).
fn dnat(node: &Netns, dst: &str, port: u16, to: &str) {
    let port = port.to_string();
    node.sh(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        dst,
        "-p",
        "tcp",
        "--dport",
        &port,
        "-j",
        "DNAT",
        "--to-destination",
        to,
    ]);
}

/// A pod namespace behind a host-side veth, wired like VPC CNI and Calico do: a /32 host
/// route to the pod, proxy ARP on the host side, and an on-link default route in the pod.
fn add_pod(node: &Netns, ip: &'static str, veth_name: &'static str) -> Pod {
    let ns = Netns::new("pod");
    veth(node, veth_name, &ns, "eth0");
    node.sysctl(&format!("net.ipv4.conf.{veth_name}.proxy_arp"), "1");
    node.sh(&[
        "ip",
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        veth_name,
        "scope",
        "link",
    ]);
    ns.sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    ns.sh(&[
        "ip", "route", "add", "default", "dev", "eth0", "scope", "link",
    ]);
    Pod {
        ns,
        ip,
        ip6: None,
        veth: veth_name,
    }
}

/// Gives a pod an IPv6 address: a /128 host route on the node, and a link-local gateway
/// (fe80::1) on the host-side veth, as Calico does.
fn add_pod_ip6(node: &Netns, pod: &mut Pod, ip6: &'static str) {
    node.sh(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        pod.veth,
        "nodad",
    ]);
    node.sh(&[
        "ip",
        "-6",
        "route",
        "add",
        &format!("{ip6}/128"),
        "dev",
        pod.veth,
    ]);
    pod.ns.sh(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{ip6}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    pod.ns.sh(&[
        "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
    ]);
    pod.ip6 = Some(ip6);
}
