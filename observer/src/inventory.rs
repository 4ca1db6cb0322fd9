//! The standalone inventory (no Kubernetes): local pods from host routes through pod
//! interfaces, node addresses from the interfaces, and cluster / allowed / Service CIDRs from
//! the settings. It is recomputed from the node view and written to the maps as a diff, so
//! one pod coming or going is one map change.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::SystemTime,
};

use observer_common::{
    addr::{IpKey, key_of},
    maps::role,
    user::{Cidr, Inventory},
};
use serde::Serialize;

use crate::{
    kmaps::{KmapError, Maps},
    netlink::NodeView,
};

/// Who a local pod address belongs to. In standalone mode the pod is its interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub iface: String,
}

/// Local pod addresses and interface names, for naming flows.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub pods: HashMap<IpAddr, PodRef>,
    pub ifaces: BTreeMap<u32, String>,
}

impl Directory {
    pub fn pod(&self, ip: &IpAddr) -> Option<&PodRef> {
        self.pods.get(ip)
    }

    pub fn iface(&self, index: u32) -> String {
        self.ifaces
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct InventoryStatus {
    pub mode: &'static str,
    pub pods: usize,
    pub node_ips: usize,
    pub cidrs: usize,
    pub last_update_unix: f64,
}

/// The inventory from the node itself and the settings.
pub struct Standalone {
    cluster: Vec<Cidr>,
    allowed: Vec<Cidr>,
    services: Vec<Cidr>,
    written_ips: HashMap<IpKey, u32>,
    written_cidrs: HashMap<Cidr, u32>,
    pub status: InventoryStatus,
}

impl Standalone {
    pub fn new(cluster: Vec<Cidr>, allowed: Vec<Cidr>, services: Vec<Cidr>) -> Self {
        Standalone {
            cluster,
            allowed,
            services,
            written_ips: HashMap::new(),
            written_cidrs: HashMap::new(),
            status: InventoryStatus {
                mode: "standalone",
                ..Default::default()
            },
        }
    }

    /// The inventory and directory the node view implies. `is_pod_iface` tells pod
    /// interfaces by name.
    pub fn desired(
        &self,
        view: &NodeView,
        is_pod_iface: impl Fn(&str) -> bool,
    ) -> (Inventory, Directory) {
        let mut inv = Inventory::new();
        let mut dir = Directory {
            pods: HashMap::new(),
            ifaces: view.links.clone(),
        };
        for (index, addrs) in &view.addrs {
            let on_pod_iface = view.links.get(index).is_some_and(|n| is_pod_iface(n));
            for a in addrs {
                // Loopback is not reachable from outside; addresses on pod veths (link-local
                // mostly) are not the node's.
                if a.is_loopback() || on_pod_iface {
                    continue;
                }
                inv.add_ip(*a, role::NODE | role::CLUSTER);
            }
        }
        for r in &view.routes {
            let Some(name) = view.links.get(&r.oif) else {
                continue;
            };
            if !is_pod_iface(name) {
                continue;
            }
            inv.add_ip(r.dst, role::LOCAL_POD | role::CLUSTER);
            dir.pods.insert(
                r.dst,
                PodRef {
                    namespace: String::new(),
                    name: name.clone(),
                    iface: name.clone(),
                },
            );
        }
        for c in &self.cluster {
            inv.add_cidr(*c, role::CLUSTER);
        }
        for c in &self.allowed {
            inv.add_cidr(*c, role::ALLOWED);
        }
        for c in &self.services {
            inv.add_cidr(*c, role::SERVICE);
        }
        (inv, dir)
    }

    /// Writes what changed since the last sync. Returns the number of map changes.
    pub fn sync(
        &mut self,
        maps: &Maps,
        inv: &Inventory,
        dir: &Directory,
    ) -> Result<usize, KmapError> {
        let mut changes = 0;
        let ips: HashMap<IpKey, u32> = inv.ip_entries().into_iter().collect();
        for (k, roles) in &ips {
            if self.written_ips.get(k) != Some(roles) {
                maps.set_ip(*k, *roles)?;
                changes += 1;
            }
        }
        for k in self.written_ips.keys() {
            if !ips.contains_key(k) {
                maps.remove_ip(k)?;
                changes += 1;
            }
        }
        let cidrs: HashMap<Cidr, u32> = inv.cidr_entries().into_iter().collect();
        for (c, roles) in &cidrs {
            if self.written_cidrs.get(c) != Some(roles) {
                maps.set_cidr(c, *roles)?;
                changes += 1;
            }
        }
        for c in self.written_cidrs.keys() {
            if !cidrs.contains_key(c) {
                maps.remove_cidr(c)?;
                changes += 1;
            }
        }
        let node_ips = ips.values().filter(|r| *r & role::NODE != 0).count();
        self.written_ips = ips;
        self.written_cidrs = cidrs;
        if changes > 0 || self.status.last_update_unix == 0.0 {
            self.status.last_update_unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        }
        // A pod may have several addresses (IPv4 and IPv6).
        self.status.pods = dir
            .pods
            .values()
            .map(|p| (&p.namespace, &p.name))
            .collect::<std::collections::HashSet<_>>()
            .len();
        self.status.node_ips = node_ips;
        self.status.cidrs = self.written_cidrs.len();
        Ok(changes)
    }

    /// Whether an address is a local pod now.
    pub fn is_local_pod(&self, ip: IpAddr) -> bool {
        self.written_ips
            .get(&key_of(ip))
            .is_some_and(|r| r & role::LOCAL_POD != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::HostRoute;

    #[test]
    fn pods_from_routes_nodes_from_addresses() {
        let mut view = NodeView::default();
        view.links.insert(2, "eth0".into());
        view.links.insert(6, "eni9397facaed1".into());
        view.links.insert(1, "lo".into());
        view.addrs.insert(2, vec!["10.0.7.223".parse().unwrap()]);
        view.addrs.insert(1, vec!["127.0.0.1".parse().unwrap()]);
        view.addrs.insert(6, vec!["fe80::1".parse().unwrap()]);
        view.routes.push(HostRoute {
            dst: "10.0.3.240".parse().unwrap(),
            oif: 6,
        });
        view.routes.push(HostRoute {
            dst: "169.254.169.254".parse().unwrap(),
            oif: 2,
        });
        let s = Standalone::new(vec!["10.0.12.0/24".parse().unwrap()], vec![], vec![]);
        let (inv, dir) = s.desired(&view, |n| n.starts_with("eni"));
        let ips: BTreeMap<IpKey, u32> = inv.ip_entries().into_iter().collect();
        assert_eq!(ips.len(), 2, "{ips:?}");
        assert_eq!(
            ips[&key_of("10.0.3.240".parse().unwrap())],
            role::LOCAL_POD | role::CLUSTER
        );
        assert_eq!(
            ips[&key_of("10.0.7.223".parse().unwrap())],
            role::NODE | role::CLUSTER
        );
        assert_eq!(
            dir.pod(&"10.0.3.240".parse().unwrap()).unwrap().iface,
            "eni9397facaed1"
        );
        assert_eq!(inv.cidr_entries().len(), 1);
    }
}
