//! Sources that joined the cluster recently. Under the VPC CNI no CIDR covers the pods of other
//! nodes: a new pod's address becomes "in the cluster" only when its Pod status reaches this
//! agent, and its first packets (a new replica calling a Service backed here) can come before
//! that. The inventory notes each address or CIDR whose roles gain `CLUSTER` or `ALLOWED` when
//! they are written to the kernel, and forgets it when it loses them or after a while; the flow
//! tracker judges a direct flow again when it settles, and one from such a source was never a
//! direct access.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use observer_common::{
    addr::{IpKey, ip_of},
    maps::role,
    user::Cidr,
};

/// The roles that make a source not an outsider (the verdict's in-cluster and allowed checks).
pub const MEMBER_ROLES: u32 = role::CLUSTER | role::ALLOWED;

/// Whether roles as written to the kernel make their address or CIDR a member.
pub fn is_member(roles: Option<u32>) -> bool {
    roles.is_some_and(|r| r & MEMBER_ROLES != 0)
}

/// What one flush of the roles changed in membership.
#[derive(Debug, Default)]
pub struct Membership {
    pub joined: Vec<IpKey>,
    pub left: Vec<IpKey>,
    pub joined_cidrs: Vec<Cidr>,
    pub left_cidrs: Vec<Cidr>,
}

impl Membership {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
            && self.left.is_empty()
            && self.joined_cidrs.is_empty()
            && self.left_cidrs.is_empty()
    }
}

/// Addresses and CIDRs that became members recently, with when.
#[derive(Clone, Debug, Default)]
pub struct Joined {
    ips: HashMap<IpAddr, Instant>,
    cidrs: Vec<(Cidr, Instant)>,
}

impl Joined {
    /// Applies one flush's changes, noted at `now`.
    pub fn apply(&mut self, m: &Membership, now: Instant) {
        for k in &m.joined {
            self.ips.insert(ip_of(k), now);
        }
        for k in &m.left {
            self.ips.remove(&ip_of(k));
        }
        for c in &m.joined_cidrs {
            self.cidrs.retain(|(x, _)| x != c);
            self.cidrs.push((*c, now));
        }
        self.cidrs.retain(|(x, _)| !m.left_cidrs.contains(x));
    }

    /// Forgets what joined before `before`. Returns whether anything was forgotten.
    pub fn prune(&mut self, before: Instant) -> bool {
        let n = self.len();
        self.ips.retain(|_, t| *t >= before);
        self.cidrs.retain(|(_, t)| *t >= before);
        self.len() != n
    }

    /// Whether `ip` joined recently, itself or inside a CIDR, and is still a member.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ips.contains_key(ip) || self.cidrs.iter().any(|(c, _)| c.contains(*ip))
    }

    pub fn len(&self) -> usize {
        self.ips.len() + self.cidrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use observer_common::addr::key_of;

    use super::*;

    #[test]
    fn joins_leaves_and_ages() {
        let t0 = Instant::now();
        let pod: IpAddr = "10.0.9.80".parse().unwrap();
        let lb: IpAddr = "10.0.14.7".parse().unwrap();
        let mut j = Joined::default();
        j.apply(
            &Membership {
                joined: vec![key_of(pod)],
                joined_cidrs: vec!["10.0.14.0/26".parse().unwrap()],
                ..Membership::default()
            },
            t0,
        );
        assert!(j.contains(&pod) && j.contains(&lb));
        assert!(!j.contains(&"10.0.9.81".parse().unwrap()));
        // The pod is deleted: its address may go to an outsider next.
        j.apply(
            &Membership {
                left: vec![key_of(pod)],
                ..Membership::default()
            },
            t0,
        );
        assert!(!j.contains(&pod) && j.contains(&lb));
        assert!(!j.prune(t0));
        assert!(j.prune(t0 + Duration::from_secs(1)));
        assert!(j.is_empty());
    }
}
