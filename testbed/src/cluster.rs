//! A small VPC CNI cluster for the soak: nodes on one VPC subnet (a bridge), hosts outside the
//! cluster beside them, and pods placed and removed while it runs. As under the VPC CNI, a pod
//! holds a VPC address: the VPC routes it to its node (here every host and node has a /32
//! route to the node), and the node to the pod's veth. Nodes run kube-proxy (iptables DNAT of
//! the Service and the NodePort, masquerade of what the NodePort DNATs only) or an eBPF
//! dataplane (no netfilter rule: nothing uses conntrack in the node's namespace).

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use crate::{
    netns::Netns,
    topology::{Layout, Pod, VPC_ROUTER, add_pod, host_settings, veth, vpc_switch},
};

/// How a node forwards Service traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    KubeProxy,
    Ebpf,
}

pub struct ClusterNode {
    /// The Kubernetes node name.
    pub name: String,
    pub ip: &'static str,
    pub dataplane: Dataplane,
    pub ns: Netns,
}

/// A host outside the cluster on the VPC subnet.
pub struct Host {
    pub ip: &'static str,
    pub ns: Netns,
}

/// A pod of the cluster: where it runs and its namespace.
pub struct PlacedPod {
    pub node: usize,
    pub pod: Pod,
}

pub struct Cluster {
    pub vpc: Netns,
    pub nodes: Vec<ClusterNode>,
    /// An intruder: reaches pod IPs straight.
    pub outside: Host,
    /// The load balancer's subnet (an allowed source): health checks, NodePort traffic.
    pub lb: Host,
    /// A database and DNS server outside the cluster, which pods connect to.
    pub db: Host,
    /// The control plane's host: the (fixture) API server listens there.
    pub control_plane: Host,
    pods: Mutex<BTreeMap<&'static str, PlacedPod>>,
}

/// The node's uplink (the primary ENI on Nitro).
pub const UPLINK: &str = "ens5";
/// The Service's ClusterIP and the NodePort, both to the backend's :80.
pub const SERVICE_IP: &str = "172.20.0.10";
pub const SERVICE_CIDR: &str = "172.20.0.0/16";
pub const NODEPORT: u16 = 30080;
/// The allowed sources (the load balancers' subnet).
pub const LB_CIDR: &str = "10.0.14.0/26";
/// kube-proxy's mark for traffic to masquerade (KUBE-MARK-MASQ).
const MASQ_MARK: &str = "0x4000";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Cluster {
    /// Nodes `10.0.1.<10+i>` named `ip-10-0-1-<10+i>.ec2.internal`, with these dataplanes.
    pub fn new(dataplanes: &[Dataplane]) -> Cluster {
        let vpc = vpc_switch();
        let attach = |ns: &Netns, port: String, ip: &str| {
            veth(ns, UPLINK, &vpc, &port);
            vpc.sh(&["ip", "link", "set", &port, "master", "br0"]);
            host_settings(ns);
            ns.sh(&["ip", "addr", "add", &format!("{ip}/20"), "dev", UPLINK]);
        };
        let mut nodes = Vec::new();
        for (i, dataplane) in dataplanes.iter().enumerate() {
            let ip = leak(format!("10.0.1.{}", 10 + i));
            let ns = Netns::new("node");
            attach(&ns, format!("n{i}"), ip);
            ns.sysctl("net.ipv4.ip_forward", "1");
            ns.sh(&[
                "ip", "route", "add", "default", "via", VPC_ROUTER, "dev", UPLINK,
            ]);
            if *dataplane == Dataplane::KubeProxy {
                for (table, chain, hook) in [
                    ("nat", "SOAK-SVC", "PREROUTING"),
                    ("nat", "SOAK-MASQ", "POSTROUTING"),
                ] {
                    ns.sh(&["iptables", "-t", table, "-N", chain]);
                    ns.sh(&["iptables", "-t", table, "-A", hook, "-j", chain]);
                }
                ns.sh(&[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "SOAK-MASQ",
                    "-m",
                    "mark",
                    "--mark",
                    MASQ_MARK,
                    "-j",
                    "MASQUERADE",
                ]);
            }
            nodes.push(ClusterNode {
                name: format!("ip-10-0-1-{}.ec2.internal", 10 + i),
                ip,
                dataplane: *dataplane,
                ns,
            });
        }
        let host = |role: &str, ip: &'static str, port: &str| {
            let ns = Netns::new(role);
            attach(&ns, port.to_string(), ip);
            Host { ip, ns }
        };
        let outside = host("out", "10.0.6.245", "o0");
        let lb = host("lb", "10.0.14.50", "l0");
        let db = host("db", "10.0.5.5", "d0");
        let control_plane = host("cp", "10.0.1.2", "c0");
        for h in [&outside, &lb] {
            for n in &nodes {
                if n.dataplane == Dataplane::KubeProxy {
                    h.ns.sh(&["ip", "route", "add", SERVICE_CIDR, "via", n.ip]);
                    break;
                }
            }
        }
        Cluster {
            vpc,
            nodes,
            outside,
            lb,
            db,
            control_plane,
            pods: Mutex::new(BTreeMap::new()),
        }
    }

    /// The CNI's part of a new pod on node `node`: its namespace, veth and routes, and the
    /// VPC's route to it. Its Kubernetes status is the caller's (the kubelet's) business.
    pub fn add_pod(&self, node: usize, ip: &str, veth_name: &str) {
        let (ip, veth_name) = (leak(ip.to_string()), leak(veth_name.to_string()));
        let n = &self.nodes[node];
        let pod = add_pod(&n.ns, Layout::VpcCni, ip, veth_name);
        for ns in self.others(node) {
            ns.sh(&["ip", "route", "replace", &format!("{ip}/32"), "via", n.ip]);
        }
        self.lock().insert(ip, PlacedPod { node, pod });
    }

    /// The CNI's part of a pod's deletion: its namespace (and veth, and the node's route to
    /// it) goes, and the VPC's route. The address is free for another pod.
    pub fn remove_pod(&self, ip: &str) {
        let Some(p) = self.lock().remove(ip) else {
            return;
        };
        // The pod's namespace may outlive its deletion (a socket in it): its veth goes now,
        // and the node's route with it, as when the CNI tears the pod down.
        let node = &self.nodes[p.node].ns.name;
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", node, "ip", "link", "del", p.pod.veth])
            .output();
        for ns in self.others(p.node) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "ip", "route", "del"])
                .arg(format!("{ip}/32"))
                .output();
        }
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[p.node].ns.name,
                "ip",
                "rule",
                "del",
                "to",
            ])
            .arg(ip)
            .output();
        drop(p);
    }

    /// The pods, by address.
    pub fn pods(&self) -> MutexGuard<'_, BTreeMap<&'static str, PlacedPod>> {
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, PlacedPod>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn others(&self, node: usize) -> Vec<&Netns> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, n)| &n.ns)
            .chain([&self.outside.ns, &self.lb.ns, &self.db.ns])
            .collect()
    }

    /// kube-proxy on every node that runs it: the Service and the NodePort to `backend:80`,
    /// replacing the previous backend (a rollout). Only the NodePort's traffic is masqueraded.
    pub fn set_service_backend(&self, backend: &str) {
        let to = format!("{backend}:80");
        for n in self
            .nodes
            .iter()
            .filter(|n| n.dataplane == Dataplane::KubeProxy)
        {
            let ipt = |args: &[&str]| {
                let mut a = vec!["iptables", "-t", "nat"];
                a.extend_from_slice(args);
                n.ns.sh(&a);
            };
            ipt(&["-F", "SOAK-SVC"]);
            ipt(&[
                "-A",
                "SOAK-SVC",
                "-d",
                n.ip,
                "-p",
                "tcp",
                "--dport",
                &NODEPORT.to_string(),
                "-j",
                "MARK",
                "--set-mark",
                MASQ_MARK,
            ]);
            for (dst, port) in [(SERVICE_IP, 80), (n.ip, NODEPORT)] {
                ipt(&[
                    "-A",
                    "SOAK-SVC",
                    "-d",
                    dst,
                    "-p",
                    "tcp",
                    "--dport",
                    &port.to_string(),
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &to,
                ]);
            }
        }
    }
}
