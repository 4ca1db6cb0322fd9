use std::vec::Vec;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::Cidr;
use crate::{
    addr::IpKey,
    addr::key_of,
    maps::{FlowKey, FragKey},
    verdict::Lookup,
};

/// The cluster as the uplink's verdict sees it: exact addresses and CIDRs with their
/// [`crate::maps::role`] bits, and the flows local pods opened.
///
/// It computes the contents of `IP_ROLES` and `CIDR_ROLES` so that the kernel's two lookups
/// (exact, then longest prefix) give the OR of every role that applies to an address, and it
/// answers [`Lookup`] on the host with the same semantics.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    ips: BTreeMap<IpKey, u32>,
    cidrs: BTreeMap<Cidr, u32>,
    pod_flows: BTreeSet<FlowKey>,
    served_flows: BTreeSet<FlowKey>,
    nodeports: BTreeSet<(u16, u8)>,
    fragments: BTreeSet<FragKey>,
    dsr_flows: BTreeSet<FlowKey>,
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives an exact address more roles.
    pub fn add_ip(&mut self, ip: IpAddr, roles: u32) {
        *self.ips.entry(key_of(ip)).or_default() |= roles;
    }

    /// Forgets an exact address.
    pub fn remove_ip(&mut self, ip: IpAddr) {
        self.ips.remove(&key_of(ip));
    }

    /// Gives a CIDR more roles.
    pub fn add_cidr(&mut self, cidr: Cidr, roles: u32) {
        *self.cidrs.entry(cidr).or_default() |= roles;
    }

    /// Records an allocated NodePort (port, IP protocol).
    pub fn add_nodeport(&mut self, port: u16, proto: u8) {
        self.nodeports.insert((port, proto));
    }

    /// The allocated NodePorts.
    pub fn nodeport_entries(&self) -> impl Iterator<Item = &(u16, u8)> {
        self.nodeports.iter()
    }

    /// Records a flow a local pod opened, keyed as the pod sent it.
    pub fn add_pod_flow(&mut self, key: FlowKey) {
        self.pod_flows.insert(key);
    }

    /// Records a datagram whose first fragment was judged (what `FRAGS` holds).
    pub fn add_fragment(&mut self, key: FragKey) {
        self.fragments.insert(key);
    }

    /// Records a connection whose first packet carried a recognised DSR mark (what `DSR_FLOWS`
    /// holds), keyed as the client sent it.
    pub fn add_dsr_flow(&mut self, key: FlowKey) {
        self.dsr_flows.insert(key);
    }

    /// The roles of every CIDR containing the key.
    fn covering(&self, key: &IpKey) -> u32 {
        self.cidrs
            .iter()
            .filter(|(c, _)| c.contains_key(key))
            .fold(0, |acc, (_, r)| acc | r)
    }

    /// The contents of `IP_ROLES`: each exact address with the roles of every CIDR containing
    /// it folded in, so an exact hit needs no LPM lookup.
    pub fn ip_entries(&self) -> Vec<(IpKey, u32)> {
        self.ips
            .iter()
            .map(|(k, r)| (*k, r | self.covering(k)))
            .collect()
    }

    /// The contents of `CIDR_ROLES`: each CIDR with the roles of every CIDR containing it
    /// folded in, so the longest match alone gives all roles.
    pub fn cidr_entries(&self) -> Vec<(Cidr, u32)> {
        self.cidrs
            .keys()
            .map(|c| {
                let roles = self
                    .cidrs
                    .iter()
                    .filter(|(outer, _)| outer.covers(c))
                    .fold(0, |acc, (_, r)| acc | r);
                (*c, roles)
            })
            .collect()
    }

    /// The flows local pods opened.
    pub fn pod_flow_entries(&self) -> impl Iterator<Item = &FlowKey> {
        self.pod_flows.iter()
    }

    /// Records a flow the node saw come in from outside to a local pod (what `FLOWS` holds),
    /// keyed as the outsider sent it.
    pub fn add_served_flow(&mut self, key: FlowKey) {
        self.served_flows.insert(key);
    }

    /// The flows the node saw come in.
    pub fn served_flow_entries(&self) -> impl Iterator<Item = &FlowKey> {
        self.served_flows.iter()
    }
}

impl Lookup for Inventory {
    fn exact_roles(&self, addr: &IpKey) -> Option<u32> {
        self.ips.get(addr).map(|r| r | self.covering(addr))
    }

    fn cidr_roles(&self, addr: &IpKey) -> u32 {
        self.covering(addr)
    }

    fn pod_flow(&self, key: &FlowKey) -> bool {
        self.pod_flows.contains(key)
    }

    fn served_flow(&self, key: &FlowKey) -> bool {
        self.served_flows.contains(key)
    }

    fn nodeport(&self, port: u16, proto: u8) -> bool {
        self.nodeports.contains(&(port, proto))
    }

    fn fragment_judged(&self, key: &FragKey) -> bool {
        self.fragments.contains(key)
    }

    fn dsr_flow(&self, key: &FlowKey) -> bool {
        self.dsr_flows.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::role;

    #[test]
    fn folds_cidr_roles_into_exact_and_nested_entries() {
        let mut inv = Inventory::new();
        inv.add_cidr("10.0.0.0/16".parse().unwrap(), role::CLUSTER);
        inv.add_cidr("10.0.5.0/24".parse().unwrap(), role::ALLOWED);
        inv.add_ip("10.0.5.7".parse().unwrap(), role::LOCAL_POD);
        let ips = inv.ip_entries();
        assert_eq!(
            ips,
            vec![(
                key_of("10.0.5.7".parse().unwrap()),
                role::LOCAL_POD | role::CLUSTER | role::ALLOWED
            )]
        );
        let cidrs = inv.cidr_entries();
        assert!(cidrs.contains(&(
            "10.0.5.0/24".parse().unwrap(),
            role::CLUSTER | role::ALLOWED
        )));
        assert!(cidrs.contains(&("10.0.0.0/16".parse().unwrap(), role::CLUSTER)));
        assert_eq!(
            inv.cidr_roles(&key_of("10.0.9.1".parse().unwrap())),
            role::CLUSTER
        );
        assert_eq!(inv.cidr_roles(&key_of("10.1.0.1".parse().unwrap())), 0);
    }
}
