//! The standalone inventory (no Kubernetes): local pods from host routes through pod
//! interfaces, node addresses from the interfaces, and cluster / allowed / Service CIDRs from
//! the settings. It is recomputed from the node view and written to the maps as a diff, so
//! one pod coming or going is one map change.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use observer_common::{
    addr::{IpKey, key_of},
    maps::role,
    user::Cidr,
};

use super::{
    Directory, InventoryStatus, PodRef,
    roles::{Flushed, Owner, Roles},
};
use crate::kernel::{maps::Maps, netlink::NodeView};

/// The inventory from the node itself and the settings, written through [`Roles`]; other
/// sources (Kubernetes) add their own owners to the same roles.
pub struct Standalone {
    config: Vec<(Cidr, u32)>,
    pub roles: Roles,
    pub status: InventoryStatus,
}

impl Standalone {
    pub fn new(cluster: Vec<Cidr>, allowed: Vec<Cidr>, services: Vec<Cidr>) -> Self {
        let mut config = Vec::new();
        config.extend(cluster.into_iter().map(|c| (c, role::CLUSTER)));
        config.extend(allowed.into_iter().map(|c| (c, role::ALLOWED)));
        config.extend(services.into_iter().map(|c| (c, role::SERVICE)));
        Standalone {
            config,
            roles: Roles::new(),
            status: InventoryStatus {
                mode: "standalone",
                ..Default::default()
            },
        }
    }

    /// What the node view implies: the node's addresses and the local pods (host routes
    /// through pod interfaces, as `eni…`/`cali…` veths carry them), and their directory.
    /// `is_pod_iface` tells pod interfaces by name.
    pub fn desired(
        &self,
        view: &NodeView,
        is_pod_iface: impl Fn(&str) -> bool,
    ) -> (Vec<(IpKey, u32)>, Directory) {
        let mut ips = Vec::new();
        let mut dir = Directory {
            pods: HashMap::new(),
            ifaces: view.links.clone(),
            ..Directory::default()
        };
        for (index, addrs) in &view.addrs {
            let on_pod_iface = view.links.get(index).is_some_and(|n| is_pod_iface(n));
            for a in addrs {
                // Loopback is not reachable from outside; addresses on pod veths (link-local
                // mostly) are not the node's.
                if a.is_loopback() || on_pod_iface {
                    continue;
                }
                ips.push((key_of(*a), role::NODE | role::CLUSTER));
            }
        }
        for r in view.live_routes() {
            let Some(name) = view.links.get(&r.oif) else {
                continue;
            };
            if !is_pod_iface(name) {
                continue;
            }
            ips.push((key_of(r.dst), role::LOCAL_POD | role::CLUSTER));
            dir.pods.insert(
                r.dst,
                Arc::new(PodRef {
                    name: name.clone(),
                    iface: name.clone(),
                    ..PodRef::default()
                }),
            );
        }
        (ips, dir)
    }

    /// Applies the node view and the settings, and writes what changed (and what could not be
    /// written before).
    pub fn sync(&mut self, maps: &Maps, ips: &[(IpKey, u32)], dir: &Directory) -> Flushed {
        self.roles.set_ips(&Owner::Node, ips);
        let config = self.config.clone();
        self.roles.set_cidrs(&Owner::Config, &config);
        let flushed = self.roles.flush(maps);
        let changes = flushed.changes;
        self.status.unwritten = flushed.pending;
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
        self.status.node_ips = self.roles.node_count();
        self.status.addresses = self.roles.address_count();
        self.status.cidrs = self.roles.cidr_count();
        flushed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kernel::netlink::{HostRoute, MAIN_TABLE};

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
            table: MAIN_TABLE,
        });
        view.routes.push(HostRoute {
            dst: "169.254.169.254".parse().unwrap(),
            oif: 2,
            table: MAIN_TABLE,
        });
        // A branch ENI pod (security groups for pods): its route only in its VLAN's table,
        // which a rule sends traffic to; and a leftover in a table no rule uses.
        view.links.insert(9, "vlan1a2b3c4d5e6".into());
        view.links.insert(10, "vlan.eth.1".into());
        view.routes.push(HostRoute {
            dst: "10.0.5.21".parse().unwrap(),
            oif: 9,
            table: 101,
        });
        view.routes.push(HostRoute {
            dst: "10.0.5.22".parse().unwrap(),
            oif: 9,
            table: 102,
        });
        view.rule_tables.insert(101);
        let s = Standalone::new(vec!["10.0.12.0/24".parse().unwrap()], vec![], vec![]);
        let (inv, dir) = s.desired(&view, |n| n.starts_with("eni") || n == "vlan1a2b3c4d5e6");
        let ips: BTreeMap<IpKey, u32> = inv.into_iter().collect();
        assert_eq!(ips.len(), 3, "{ips:?}");
        assert_eq!(
            ips[&key_of("10.0.5.21".parse().unwrap())],
            role::LOCAL_POD | role::CLUSTER
        );
        assert_eq!(
            dir.pod(&"10.0.5.21".parse().unwrap()).unwrap().iface,
            "vlan1a2b3c4d5e6"
        );
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
    }
}
