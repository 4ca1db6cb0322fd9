//! A simulated Kubernetes node in network namespaces, in either layout of the seed article:
//!
//! ```text
//!   outside (10.0.6.245, 10.0.14.50) ─┐
//!   peer node (+ a pod IP on lo)    ──┤ vpc: bridge br0 ├── node ens5 + ens6 (VPC CNI) / eth0 (Calico)
//!                                                          node ── eni…/cali… ── pod namespaces
//! ```
//!
//! The outside host routes pod IPs to the node, as a VPC does for VPC CNI secondary IPs and
//! as a routed pod CIDR does for Calico. kube-proxy is played by iptables DNAT rules for one
//! NodePort and one ClusterIP ([`Dataplane::KubeProxy`]); a node whose kube-proxy is replaced
//! by an eBPF dataplane has none ([`Dataplane::Ebpf`]). Every namespace is the test's own and
//! is deleted on drop.

use crate::netns::Netns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    VpcCni,
    Calico,
}

/// Who translates Services on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    /// kube-proxy's iptables: DNAT (and so netfilter connection tracking) in the node's
    /// namespace.
    KubeProxy,
    /// kube-proxy replaced (Cilium, Calico's eBPF dataplane): Services are translated in TC
    /// programs with their own connection tables, and nothing in the node's namespace uses
    /// netfilter, so the kernel tracks no connection there. Here: no netfilter rule at all
    /// (the Service and NodePort of the topology are then not translated).
    Ebpf,
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
    /// The node's uplinks: VPC CNI ens5 and ens6 (primary and secondary ENI), Calico eth0.
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
pub(crate) fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.sh(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.sh(&["ip", "link", "set", a_if, "up"]);
    b.sh(&["ip", "link", "set", b_if, "up"]);
}

/// The VPC subnet: a namespace with a plain switch (`br0`) hosts and nodes plug into.
pub(crate) fn vpc_switch() -> Netns {
    let vpc = Netns::new("vpc");
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
    vpc
}

pub(crate) fn host_settings(ns: &Netns) {
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        ns.sysctl(key, "0");
    }
}

impl Node {
    pub fn new(layout: Layout) -> Node {
        Node::with_dataplane(layout, Dataplane::KubeProxy)
    }

    pub fn with_dataplane(layout: Layout, dataplane: Dataplane) -> Node {
        let vpc = vpc_switch();
        let node = Netns::new("node");
        let outside = Netns::new("out");
        let peer = Netns::new("peer");
        let (node_ip, uplinks, peer_ip, peer_pod_ip, service_ip, service_cidr, cluster_cidr) =
            match layout {
                // EKS on Nitro (AL2023) names the primary and secondary ENI ens5 and ens6.
                Layout::VpcCni => (
                    "10.0.7.223",
                    vec!["ens5", "ens6"],
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
        let primary = uplinks[0];
        node.sh(&[
            "ip",
            "addr",
            "add",
            &format!("{node_ip}/20"),
            "dev",
            primary,
        ]);
        if layout == Layout::VpcCni {
            node.sh(&["ip", "addr", "add", "10.0.15.193/20", "dev", uplinks[1]]);
        }
        // The subnet's router, as in the seed's `ip r` (no host answers for it here: what is
        // routed to it goes nowhere).
        node.sh(&[
            "ip", "route", "add", "default", "via", VPC_ROUTER, "dev", primary,
        ]);
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
            pods.push(add_pod(&node, layout, ip, veth_name));
        }
        if layout == Layout::VpcCni {
            // Pod B holds a secondary IP of the secondary ENI, and answers through it.
            route_from_secondary_eni(&node, pods[1].ip, uplinks[1], "10.0.0.0/20", "2");
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
        for (ns, ip, dev) in [
            (&node, node_ip6, primary),
            (&outside, outside_ip6, "eth0"),
            (&peer, peer_ip6, "eth0"),
        ] {
            ns.sh(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        add_pod_ip6(&node, layout, &mut pods[0], pod_ip6);
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
                // ens5, pod B through ens6 (the secondary ENI).
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
        if dataplane == Dataplane::KubeProxy {
            let pod_a = format!("{}:80", pods[0].ip);
            dnat(&node, node_ip, 30080, &pod_a);
            dnat(&node, service_ip, 80, &pod_a);
        }

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
    /// VPC CNI, security groups for pods: a pod on a branch ENI of the trunk ENI (`ens6`, eth1
    /// on older AMIs), behind a `vlan…` veth, whose route lives only in its VLAN's
    /// policy-routing table (`table`, 100 + VLAN id), never in main; the trunk's VLAN link
    /// `vlan.eth.<id>` beside it. This kernel has no VLAN devices: the branch ENI's traffic
    /// arrives untagged on the trunk itself, the rules match the pod's address (`to <pod>`)
    /// and its veth (`iif vlan…`) instead of `iif vlan.eth.<id>`, and `vlan.eth.<id>` is a veth
    /// whose peer is in the VPC namespace, carrying nothing: what the observer must learn (the
    /// route in a rule's table) and leave alone (the VLAN link) is as on a real node.
    pub fn add_branch_pod(&mut self, ip: &'static str, veth_name: &'static str, vlan: u16) -> &Pod {
        assert_eq!(self.layout, Layout::VpcCni, "branch ENIs are the VPC CNI's");
        let trunk = self.uplinks[1];
        let table = (100 + u32::from(vlan)).to_string();
        let vlan_link = format!("vlan.eth.{vlan}");
        veth(&self.node, &vlan_link, &self.vpc, &format!("trunk{vlan}"));
        let pod = add_pod(&self.node, self.layout, ip, veth_name);
        // Move the pod's route from main to the VLAN's table.
        self.node
            .sh(&["ip", "route", "del", &format!("{ip}/32"), "dev", veth_name]);
        self.node.sh(&[
            "ip",
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            veth_name,
            "scope",
            "link",
            "table",
            &table,
        ]);
        self.node.sh(&[
            "ip",
            "route",
            "add",
            "10.0.0.0/20",
            "dev",
            trunk,
            "scope",
            "link",
            "table",
            &table,
        ]);
        self.node
            .sh(&["ip", "rule", "del", "to", ip, "lookup", "main"]);
        self.node.sh(&[
            "ip", "rule", "add", "to", ip, "lookup", &table, "prio", "10",
        ]);
        self.node.sh(&[
            "ip", "rule", "add", "iif", veth_name, "lookup", &table, "prio", "10",
        ]);
        self.outside.sh(&[
            "ip",
            "route",
            "add",
            &format!("{ip}/32"),
            "via",
            "10.0.15.193",
        ]);
        self.pods.push(pod);
        self.pods.last().expect("just pushed")
    }

    pub fn add_pod(&mut self, ip: &'static str, veth_name: &'static str) -> &Pod {
        let pod = add_pod(&self.node, self.layout, ip, veth_name);
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

/// The VPC subnet's router (the node's default route).
pub const VPC_ROUTER: &str = "10.0.0.1";
/// The VPC CNI's and Calico's dummy next hop in every pod: `default via 169.254.1.1`.
pub const POD_GATEWAY: &str = "169.254.1.1";
/// The MAC Calico gives every host-side veth.
const CALICO_VETH_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// VPC CNI: the `ip rule` priorities of its route rules (`to <pod> lookup main`, and `from
/// <pod> lookup <ENI table>` for pods on a secondary ENI).
const TO_CONTAINER_RULE_PRIORITY: &str = "512";
const FROM_POD_RULE_PRIORITY: &str = "1536";

/// A pod namespace behind a host-side veth, wired as each CNI wires it.
///
/// VPC CNI (aws-vpc-cni `setupVeth`, `setupIPBasedContainerRouteRules`): the veth pair is made
/// inside the pod's namespace and its host end moved out; the pod's default route goes via
/// 169.254.1.1, pinned to the host veth's MAC by a permanent neighbour entry; the host has a
/// /32 route `dev eni…`, a `to <pod> lookup main` rule, and for a pod on a secondary ENI a
/// `from <pod> lookup <table>` rule whose table leaves through that ENI; proxy ARP on the host
/// veth, IPv6 router advertisements and forwarding off on it.
///
/// Calico: every host veth has the MAC ee:ee:ee:ee:ee:ee and proxy ARP without delay; the
/// pod's default route goes via 169.254.1.1, which the host veth answers by proxy ARP (the node
/// routes it elsewhere, by its default route); a /32 route `dev cali…` on the host.
pub(crate) fn add_pod(
    node: &Netns,
    layout: Layout,
    ip: &'static str,
    veth_name: &'static str,
) -> Pod {
    let ns = Netns::new("pod");
    match layout {
        Layout::VpcCni => {
            ns.sh(&[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", veth_name,
            ]);
            ns.sh(&["ip", "link", "set", "eth0", "up"]);
            let mac = crate::traffic::mac_of(&ns, veth_name);
            let mac = mac.map(|b| format!("{b:02x}")).join(":");
            ns.sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
            ns.sh(&[
                "ip",
                "route",
                "add",
                POD_GATEWAY,
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            ns.sh(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY,
                "dev",
                "eth0",
            ]);
            ns.sh(&[
                "ip",
                "neigh",
                "add",
                POD_GATEWAY,
                "dev",
                "eth0",
                "lladdr",
                &mac,
                "nud",
                "permanent",
            ]);
            ns.sh(&["ip", "link", "set", veth_name, "netns", &node.name]);
            for (key, value) in [
                ("accept_ra", "0"),
                ("accept_redirects", "1"),
                ("forwarding", "0"),
            ] {
                node.sysctl(&format!("net.ipv6.conf.{veth_name}.{key}"), value);
            }
            node.sh(&["ip", "link", "set", veth_name, "up"]);
            ip_rule(node, "to", ip, "main", TO_CONTAINER_RULE_PRIORITY);
        }
        Layout::Calico => {
            veth(node, veth_name, &ns, "eth0");
            node.sh(&["ip", "link", "set", veth_name, "address", CALICO_VETH_MAC]);
            // Felix answers the pod's ARP for 169.254.1.1 at once.
            node.sysctl(&format!("net.ipv4.neigh.{veth_name}.proxy_delay"), "0");
            ns.sh(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
            ns.sh(&[
                "ip",
                "route",
                "add",
                POD_GATEWAY,
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            ns.sh(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                POD_GATEWAY,
                "dev",
                "eth0",
            ]);
        }
    }
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
    Pod {
        ns,
        ip,
        ip6: None,
        veth: veth_name,
    }
}

/// VPC CNI: a pod on a secondary ENI answers through that ENI (`from <pod> lookup <table>`,
/// the table's routes out of `uplink`).
fn route_from_secondary_eni(node: &Netns, ip: &str, uplink: &str, subnet: &str, table: &str) {
    node.sh(&[
        "ip", "route", "replace", subnet, "dev", uplink, "scope", "link", "table", table,
    ]);
    ip_rule(node, "from", ip, table, FROM_POD_RULE_PRIORITY);
}

/// `ip rule add {to|from} <ip> lookup <table> prio <prio>` in `node`.
fn ip_rule(node: &Netns, selector: &str, ip: &str, table: &str, prio: &str) {
    node.sh(&[
        "ip", "rule", "add", selector, ip, "lookup", table, "prio", prio,
    ]);
}

/// Gives a pod an IPv6 address and a /128 host route on the node. VPC CNI: the pod's default
/// route goes via fe80::1, pinned to the host veth's MAC (no address on the host side).
/// Calico: via a link-local address of the host-side veth.
fn add_pod_ip6(node: &Netns, layout: Layout, pod: &mut Pod, ip6: &'static str) {
    const GW6: &str = "fe80::1";
    if layout == Layout::Calico {
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
    }
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
    if layout == Layout::VpcCni {
        let mac = crate::traffic::mac_of(node, pod.veth);
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        pod.ns.sh(&[
            "ip",
            "-6",
            "neigh",
            "add",
            GW6,
            "dev",
            "eth0",
            "lladdr",
            &mac,
            "nud",
            "permanent",
        ]);
    }
    pod.ns.sh(&[
        "ip", "-6", "route", "add", "default", "via", GW6, "dev", "eth0",
    ]);
    pod.ip6 = Some(ip6);
}
