//! The desired contents of the address maps, kept incrementally from several owners (the
//! node's own view, each Kubernetes object, the settings), and written to the kernel as a
//! diff: one pod coming or going is one map change.
//!
//! An address's roles are the OR of its owners' roles and of the roles of every CIDR that
//! contains it (so an exact hit needs no LPM lookup); a CIDR entry carries the roles of every
//! shorter CIDR containing it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::OnceLock,
};

use observer_common::{addr::IpKey, maps::role, user::Cidr};
use smallvec::SmallVec;

use super::joined::{Membership, is_member};
use crate::kernel::maps::{KmapError, Maps};

/// Who asserts a role for an address or CIDR. Small and `Copy`: in a 150k-pod cluster each
/// address has its owner stored twice (by address and by owner), so an owner is 17 bytes,
/// not a kind string and a uid string on the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The node's own interfaces and routes (netlink).
    Node,
    /// The settings (`--cluster-cidr`, `--allow-source`, `--service-cidr`).
    Config,
    /// A Kubernetes object, by kind and uid.
    Object(Kind, ObjectId),
}

/// The kinds of Kubernetes objects that assert roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Pod,
    Service,
    EndpointSlice,
    ServiceCidr,
    TargetGroupBinding,
    Namespace,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceCidr => "ServiceCIDR",
            Kind::TargetGroupBinding => "TargetGroupBinding",
            Kind::Namespace => "Namespace",
        }
    }
}

/// An object's identity in 16 bytes: the UUID the API server gives every object (its
/// `metadata.uid`), parsed; any other id (an object without a uid: namespace/name) is its
/// SHA-1, cut to 16 bytes (a collision among a cluster's objects is beyond reach: 2^-90
/// for a million objects).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 16]);

impl ObjectId {
    pub fn new(id: &str) -> ObjectId {
        parse_uuid(id).unwrap_or_else(|| {
            let d = sha1_smol::Sha1::from(id).digest().bytes();
            let mut b = [0; 16];
            b.copy_from_slice(&d[..16]);
            ObjectId(b)
        })
    }
}

impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `8-4-4-4-12` hex digits, as Kubernetes writes uids.
fn parse_uuid(s: &str) -> Option<ObjectId> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = b.iter().filter(|c| **c != b'-');
    for o in &mut out {
        let hi = (*digits.next()? as char).to_digit(16)?;
        let lo = (*digits.next()? as char).to_digit(16)?;
        *o = (hi << 4 | lo) as u8;
    }
    Some(ObjectId(out))
}

/// Owners of one address: nearly always one, kept inline.
type Owners = SmallVec<[(Owner, u32); 1]>;
/// Addresses of one owner: a pod has one, or two with dual-stack.
type Keys = SmallVec<[IpKey; 1]>;

/// What a [`Roles::flush`] did.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Map entries written or removed.
    pub changes: usize,
    /// Writes the kernel refused; they stay pending.
    pub failures: usize,
    /// Changes still to be written (addresses, and the CIDR set as one).
    pub pending: usize,
    /// The first refusal.
    pub error: Option<KmapError>,
    /// Addresses and CIDRs that became members (in the cluster or allowed) or stopped being
    /// ones, as written; only while [`Roles::track_membership`] is set.
    pub membership: Membership,
}

impl Flushed {
    fn fail(&mut self, e: KmapError, flag: &mut bool) {
        *flag = true;
        self.failures += 1;
        self.error.get_or_insert(e);
    }
}

/// The roles of a set of CIDRs by prefix length and network address: the roles of every CIDR
/// containing an address (or a shorter prefix) are one hash lookup per distinct prefix length,
/// not a scan of every CIDR (a 5,000-node cluster has 5,000 pod CIDRs, all of one length).
#[derive(Debug, Default)]
struct PrefixIndex {
    /// (prefix length in the 128-bit key space, network address → OR of roles), shortest first.
    lens: Vec<(u32, HashMap<u128, u32>)>,
}

fn masked(key: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        key & (u128::MAX << (128 - len))
    }
}

impl PrefixIndex {
    fn build<'a>(cidrs: impl Iterator<Item = (&'a Cidr, u32)>) -> Self {
        let mut by_len: BTreeMap<u32, HashMap<u128, u32>> = BTreeMap::new();
        for (c, r) in cidrs {
            *by_len
                .entry(c.key_prefix_len())
                .or_default()
                .entry(u128::from_be_bytes(c.key()))
                .or_default() |= r;
        }
        PrefixIndex {
            lens: by_len.into_iter().collect(),
        }
    }

    /// The OR of the roles of every prefix of at most `max_len` bits that contains `key`.
    fn roles(&self, key: &IpKey, max_len: u32) -> u32 {
        let k = u128::from_be_bytes(*key);
        let mut acc = 0;
        for (len, m) in &self.lens {
            if *len > max_len {
                break;
            }
            if let Some(r) = m.get(&masked(k, *len)) {
                acc |= r;
            }
        }
        acc
    }
}

#[derive(Default)]
pub struct Roles {
    ips: HashMap<IpKey, Owners>,
    by_owner: HashMap<Owner, Keys>,
    cidrs: BTreeMap<Cidr, Vec<(Owner, u32)>>,
    cidrs_by_owner: HashMap<Owner, Vec<Cidr>>,
    written: HashMap<IpKey, u32>,
    written_cidrs: HashMap<Cidr, u32>,
    dirty: HashSet<IpKey>,
    cidrs_dirty: bool,
    /// CIDRs added or removed since the last flush: only the addresses inside them change.
    changed_cidrs: Vec<Cidr>,
    /// [`PrefixIndex`] of `cidrs`, built when first needed after a change.
    index: OnceLock<PrefixIndex>,
    /// Entries of `written` with the node role.
    node_written: usize,
    /// Report membership changes in [`Flushed::membership`]: off for a first full sync, whose
    /// 150k addresses all join at once, and where held flows are judged again anyway.
    pub track_membership: bool,
}

impl Roles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets everything `owner` asserts about exact addresses (replacing what it asserted).
    pub fn set_ips(&mut self, owner: &Owner, ips: &[(IpKey, u32)]) {
        if let Some(old) = self.by_owner.remove(owner) {
            for k in old {
                if let Some(v) = self.ips.get_mut(&k) {
                    v.retain(|(o, _)| o != owner);
                    if v.is_empty() {
                        self.ips.remove(&k);
                    }
                }
                self.dirty.insert(k);
            }
        }
        if ips.is_empty() {
            return;
        }
        let mut keys = Keys::with_capacity(ips.len());
        for (k, r) in ips {
            let v = self.ips.entry(*k).or_default();
            match v.iter_mut().find(|(o, _)| o == owner) {
                Some(e) => e.1 |= r,
                None => v.push((*owner, *r)),
            }
            self.dirty.insert(*k);
            keys.push(*k);
        }
        self.by_owner.insert(*owner, keys);
    }

    /// Sets everything `owner` asserts about CIDRs.
    pub fn set_cidrs(&mut self, owner: &Owner, cidrs: &[(Cidr, u32)]) {
        let old = self.cidrs_by_owner.remove(owner).unwrap_or_default();
        let same = old.len() == cidrs.len()
            && cidrs
                .iter()
                .all(|(c, r)| self.cidrs.get(c).is_some_and(|v| v.contains(&(*owner, *r))));
        if same {
            self.cidrs_by_owner.insert(*owner, old);
            return;
        }
        for c in old {
            if let Some(v) = self.cidrs.get_mut(&c) {
                v.retain(|(o, _)| o != owner);
                if v.is_empty() {
                    self.cidrs.remove(&c);
                }
            }
            self.changed_cidrs.push(c);
        }
        for (c, r) in cidrs {
            self.cidrs.entry(*c).or_default().push((*owner, *r));
            self.changed_cidrs.push(*c);
        }
        self.index = OnceLock::new();
        if !cidrs.is_empty() {
            self.cidrs_by_owner
                .insert(*owner, cidrs.iter().map(|(c, _)| *c).collect());
        }
        self.cidrs_dirty = true;
    }

    /// Forgets an owner entirely.
    pub fn remove_owner(&mut self, owner: &Owner) {
        self.set_ips(owner, &[]);
        if self.cidrs_by_owner.contains_key(owner) {
            self.set_cidrs(owner, &[]);
        }
    }

    fn index(&self) -> &PrefixIndex {
        self.index.get_or_init(|| {
            PrefixIndex::build(
                self.cidrs
                    .iter()
                    .map(|(c, v)| (c, v.iter().fold(0, |a, (_, r)| a | r))),
            )
        })
    }

    /// The roles of every CIDR containing the address.
    fn covering(&self, key: &IpKey) -> u32 {
        self.index().roles(key, 128)
    }

    /// The roles an address should have now.
    pub fn roles_of(&self, key: &IpKey) -> Option<u32> {
        let own = self.ips.get(key)?;
        Some(own.iter().fold(0, |a, (_, r)| a | r) | self.covering(key))
    }

    /// Writes what changed to the maps. A change the kernel refuses (a full `IP_ROLES`, say)
    /// stays pending and is tried again at the next flush; the others are written meanwhile.
    pub fn flush(&mut self, maps: &Maps) -> Flushed {
        let mut out = Flushed::default();
        let mut w = maps.role_writer();
        if self.cidrs_dirty {
            // A CIDR setting or a node's pod CIDR changed. Each CIDR entry carries the roles of
            // the CIDRs containing it (one index lookup per prefix length); the addresses inside
            // a changed CIDR are re-derived, the others keep their roles.
            let index = self.index();
            let want: HashMap<Cidr, u32> = self
                .cidrs
                .keys()
                .map(|c| (*c, index.roles(&c.key(), c.key_prefix_len())))
                .collect();
            let mut failed = false;
            for (c, r) in &want {
                if self.written_cidrs.get(c) != Some(r) {
                    match w.set_cidr(c, *r) {
                        Ok(()) => {
                            let old = self.written_cidrs.insert(*c, *r);
                            out.changes += 1;
                            if self.track_membership && is_member(Some(*r)) != is_member(old) {
                                let m = &mut out.membership;
                                if is_member(Some(*r)) {
                                    m.joined_cidrs.push(*c);
                                } else {
                                    m.left_cidrs.push(*c);
                                }
                            }
                        }
                        Err(e) => out.fail(e, &mut failed),
                    }
                }
            }
            let gone: Vec<Cidr> = self
                .written_cidrs
                .keys()
                .filter(|c| !want.contains_key(c))
                .copied()
                .collect();
            for c in gone {
                match w.remove_cidr(&c) {
                    Ok(()) => {
                        let old = self.written_cidrs.remove(&c);
                        out.changes += 1;
                        if self.track_membership && is_member(old) {
                            out.membership.left_cidrs.push(c);
                        }
                    }
                    Err(e) => out.fail(e, &mut failed),
                }
            }
            let changed = PrefixIndex::build(self.changed_cidrs.iter().map(|c| (c, 1)));
            let inside = |k: &&IpKey| changed.roles(k, 128) != 0;
            let touched: Vec<IpKey> = self
                .ips
                .keys()
                .chain(self.written.keys())
                .filter(inside)
                .copied()
                .collect();
            self.dirty.extend(touched);
            if !failed {
                self.changed_cidrs.clear();
            }
            self.cidrs_dirty = failed;
        }
        let dirty: Vec<IpKey> = self.dirty.iter().copied().collect();
        for k in dirty {
            let done = match self.roles_of(&k) {
                Some(r) if self.written.get(&k) != Some(&r) => match w.set_ip(k, r) {
                    Ok(()) => {
                        let old = self.written.insert(k, r);
                        self.count_node(old, -1);
                        self.count_node(Some(r), 1);
                        out.changes += 1;
                        if self.track_membership && is_member(Some(r)) != is_member(old) {
                            let m = &mut out.membership;
                            if is_member(Some(r)) {
                                m.joined.push(k);
                            } else {
                                m.left.push(k);
                            }
                        }
                        true
                    }
                    Err(e) => {
                        out.fail(e, &mut false);
                        false
                    }
                },
                Some(_) => true,
                None => match self.written.get(&k) {
                    None => true,
                    Some(_) => match w.remove_ip(&k) {
                        Ok(()) => {
                            let old = self.written.remove(&k);
                            self.count_node(old, -1);
                            out.changes += 1;
                            if self.track_membership && is_member(old) {
                                out.membership.left.push(k);
                            }
                            true
                        }
                        Err(e) => {
                            out.fail(e, &mut false);
                            false
                        }
                    },
                },
            };
            if done {
                self.dirty.remove(&k);
            }
        }
        if let Err(e) = w.finish() {
            out.fail(e, &mut false);
        }
        out.pending = self.dirty.len() + usize::from(self.cidrs_dirty);
        // A full sync leaves a large, empty set behind: give the memory back.
        if self.dirty.is_empty() && self.dirty.capacity() > 4096 {
            self.dirty = HashSet::new();
        }
        out
    }

    fn count_node(&mut self, roles: Option<u32>, by: isize) {
        if roles.is_some_and(|r| r & role::NODE != 0) {
            self.node_written = self.node_written.saturating_add_signed(by);
        }
    }

    /// Addresses written with the node role (kept as they are written: the status asks for
    /// it at every sync, and a scan of 150k addresses each time is not free).
    pub fn node_count(&self) -> usize {
        self.node_written
    }

    pub fn address_count(&self) -> usize {
        self.written.len()
    }

    pub fn cidr_count(&self) -> usize {
        self.written_cidrs.len()
    }
}

#[cfg(test)]
mod tests {
    use observer_common::addr::key_of;

    use super::*;

    fn k(s: &str) -> IpKey {
        key_of(s.parse().unwrap())
    }

    #[test]
    fn owners_combine_and_leave() {
        let mut r = Roles::new();
        let pod = Owner::Object(Kind::Pod, ObjectId::new("uid-1"));
        r.set_ips(&pod, &[(k("10.0.3.240"), role::CLUSTER | role::LOCAL_POD)]);
        r.set_ips(&Owner::Node, &[(k("10.0.3.240"), role::LOCAL_POD)]);
        r.set_cidrs(
            &Owner::Config,
            &[("10.0.3.0/24".parse().unwrap(), role::ALLOWED)],
        );
        assert_eq!(
            r.roles_of(&k("10.0.3.240")),
            Some(role::CLUSTER | role::LOCAL_POD | role::ALLOWED)
        );
        r.remove_owner(&pod);
        assert_eq!(
            r.roles_of(&k("10.0.3.240")),
            Some(role::LOCAL_POD | role::ALLOWED)
        );
        r.set_ips(&Owner::Node, &[]);
        assert_eq!(r.roles_of(&k("10.0.3.240")), None);
        assert!(r.dirty.contains(&k("10.0.3.240")));
    }

    fn node(i: usize) -> Owner {
        Owner::Object(Kind::Node, ObjectId::new(&i.to_string()))
    }

    #[test]
    fn uids_are_parsed_and_other_ids_hashed() {
        let a = ObjectId::new("0b6d3f1e-2c4a-4e8f-9a1b-3c5d7e9f0a2b");
        assert_eq!(format!("{a:?}"), "0b6d3f1e2c4a4e8f9a1b3c5d7e9f0a2b");
        assert_eq!(a, ObjectId::new("0B6D3F1E-2C4A-4E8F-9A1B-3C5D7E9F0A2B"));
        // Not a UUID (a wrong length, a misplaced dash, a non-hex digit): hashed, distinct.
        let others = [
            "shop/web",
            "0b6d3f1e-2c4a-4e8f-9a1b-3c5d7e9f0a2",
            "0b6d3f1e2-c4a-4e8f-9a1b-3c5d7e9f0a2b",
            "0b6d3f1e-2c4a-4e8f-9a1b-3c5d7e9f0a2g",
        ];
        for o in others {
            assert_ne!(ObjectId::new(o), a, "{o}");
            assert_eq!(ObjectId::new(o), ObjectId::new(o));
        }
        assert_ne!(ObjectId::new("shop/web"), ObjectId::new("shop/api"));
        assert_eq!(std::mem::size_of::<Owner>(), 17);
    }

    /// The linear definition the index replaces: the OR of every CIDR containing the key.
    fn linear(cidrs: &[(Cidr, u32)], key: &IpKey) -> u32 {
        cidrs
            .iter()
            .filter(|(c, _)| c.contains_key(key))
            .fold(0, |a, (_, r)| a | r)
    }

    fn cidr_of(v6: bool, a: u128, len: u8) -> Cidr {
        let ip: std::net::IpAddr = if v6 {
            std::net::Ipv6Addr::from(a).into()
        } else {
            std::net::Ipv4Addr::from(a as u32).into()
        };
        Cidr::new(ip, if v6 { len } else { len.min(32) }).unwrap()
    }

    proptest::proptest! {
        /// Roles by the prefix index equal the linear scan, for addresses and for CIDRs
        /// (nested prefixes of both families, /0 included), and after CIDRs come and go the
        /// re-derived addresses are exactly right.
        #[test]
        fn the_prefix_index_agrees_with_a_linear_scan(
            cidrs in proptest::collection::vec((proptest::bool::ANY, 0u128..16, 0u8..=40, 0u32..32), 0..24),
            keys in proptest::collection::vec((proptest::bool::ANY, 0u128..16), 1..24),
            drop_owner in 0usize..8,
        ) {
            // Few distinct bits at the top of the address, so prefixes nest and collide often.
            let spread = |v6: bool, x: u128| if v6 { x << 124 } else { x << 28 };
            let list: Vec<(Cidr, u32)> = cidrs
                .iter()
                .map(|(v6, a, len, r)| (cidr_of(*v6, spread(*v6, *a), *len), 1 << (r % 5)))
                .collect();
            let keys: Vec<IpKey> = keys
                .iter()
                .map(|(v6, a)| {
                    let c = cidr_of(*v6, spread(*v6, *a) | 0x1234, if *v6 { 128 } else { 32 });
                    c.key()
                })
                .collect();
            let mut r = Roles::new();
            // One owner per CIDR, so one can leave later.
            for (i, (c, roles)) in list.iter().enumerate() {
                r.set_cidrs(&node(i), &[(*c, *roles)]);
            }
            let ips: Vec<(IpKey, u32)> = keys.iter().map(|k| (*k, role::CLUSTER)).collect();
            r.set_ips(&Owner::Node, &ips);
            for k in &keys {
                proptest::prop_assert_eq!(r.covering(k), linear(&list, k));
            }
            let index = r.index();
            for (c, _) in &list {
                let want = list
                    .iter()
                    .filter(|(outer, _)| outer.covers(c))
                    .fold(0, |a, (_, x)| a | x);
                proptest::prop_assert_eq!(index.roles(&c.key(), c.key_prefix_len()), want);
            }
            // An owner leaves: the index follows.
            if drop_owner < list.len() {
                r.set_cidrs(&node(drop_owner), &[]);
                let rest: Vec<(Cidr, u32)> = list
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != drop_owner)
                    .map(|(_, x)| *x)
                    .collect();
                for k in &keys {
                    proptest::prop_assert_eq!(r.covering(k), linear(&rest, k));
                }
            }
        }
    }
}
