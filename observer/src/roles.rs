//! The desired contents of the address maps, kept incrementally from several owners (the
//! node's own view, each Kubernetes object, the settings), and written to the kernel as a
//! diff: one pod coming or going is one map change.
//!
//! An address's roles are the OR of its owners' roles and of the roles of every CIDR that
//! contains it (so an exact hit needs no LPM lookup); a CIDR entry carries the roles of every
//! shorter CIDR containing it.

use std::collections::{BTreeMap, HashMap, HashSet};

use observer_common::{addr::IpKey, user::Cidr};

use crate::kmaps::{KmapError, Maps};

/// Who asserts a role for an address or CIDR.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The node's own interfaces and routes (netlink).
    Node,
    /// The settings (`--cluster-cidr`, `--allow-source`, `--service-cidr`).
    Config,
    /// A Kubernetes object, by kind and uid (or name).
    Object(&'static str, String),
}

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
}

impl Flushed {
    fn fail(&mut self, e: KmapError, flag: &mut bool) {
        *flag = true;
        self.failures += 1;
        self.error.get_or_insert(e);
    }
}

#[derive(Default)]
pub struct Roles {
    ips: HashMap<IpKey, Vec<(Owner, u32)>>,
    by_owner: HashMap<Owner, Vec<IpKey>>,
    cidrs: BTreeMap<Cidr, Vec<(Owner, u32)>>,
    cidrs_by_owner: HashMap<Owner, Vec<Cidr>>,
    written: HashMap<IpKey, u32>,
    written_cidrs: HashMap<Cidr, u32>,
    dirty: HashSet<IpKey>,
    cidrs_dirty: bool,
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
        let mut keys = Vec::with_capacity(ips.len());
        for (k, r) in ips {
            let v = self.ips.entry(*k).or_default();
            match v.iter_mut().find(|(o, _)| o == owner) {
                Some(e) => e.1 |= r,
                None => v.push((owner.clone(), *r)),
            }
            self.dirty.insert(*k);
            keys.push(*k);
        }
        self.by_owner.insert(owner.clone(), keys);
    }

    /// Sets everything `owner` asserts about CIDRs.
    pub fn set_cidrs(&mut self, owner: &Owner, cidrs: &[(Cidr, u32)]) {
        let old = self.cidrs_by_owner.remove(owner).unwrap_or_default();
        let same = old.len() == cidrs.len()
            && cidrs.iter().all(|(c, r)| {
                self.cidrs
                    .get(c)
                    .is_some_and(|v| v.contains(&(owner.clone(), *r)))
            });
        if same {
            self.cidrs_by_owner.insert(owner.clone(), old);
            return;
        }
        for c in old {
            if let Some(v) = self.cidrs.get_mut(&c) {
                v.retain(|(o, _)| o != owner);
                if v.is_empty() {
                    self.cidrs.remove(&c);
                }
            }
        }
        for (c, r) in cidrs {
            self.cidrs.entry(*c).or_default().push((owner.clone(), *r));
        }
        if !cidrs.is_empty() {
            self.cidrs_by_owner
                .insert(owner.clone(), cidrs.iter().map(|(c, _)| *c).collect());
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

    fn covering(&self, key: &IpKey) -> u32 {
        self.cidrs
            .iter()
            .filter(|(c, _)| c.contains_key(key))
            .flat_map(|(_, v)| v.iter().map(|(_, r)| *r))
            .fold(0, |a, r| a | r)
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
            // Rare (a CIDR setting or a node's pod CIDR changed): every entry is re-derived.
            let mut want: HashMap<Cidr, u32> = HashMap::new();
            for c in self.cidrs.keys() {
                let r = self
                    .cidrs
                    .iter()
                    .filter(|(outer, _)| outer.covers(c))
                    .flat_map(|(_, v)| v.iter().map(|(_, r)| *r))
                    .fold(0, |a, r| a | r);
                want.insert(*c, r);
            }
            let mut failed = false;
            for (c, r) in &want {
                if self.written_cidrs.get(c) != Some(r) {
                    match w.set_cidr(c, *r) {
                        Ok(()) => {
                            self.written_cidrs.insert(*c, *r);
                            out.changes += 1;
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
                        self.written_cidrs.remove(&c);
                        out.changes += 1;
                    }
                    Err(e) => out.fail(e, &mut failed),
                }
            }
            self.dirty.extend(self.ips.keys().copied());
            self.dirty.extend(self.written.keys().copied());
            self.cidrs_dirty = failed;
        }
        let dirty: Vec<IpKey> = self.dirty.iter().copied().collect();
        for k in dirty {
            let done = match self.roles_of(&k) {
                Some(r) if self.written.get(&k) != Some(&r) => match w.set_ip(k, r) {
                    Ok(()) => {
                        self.written.insert(k, r);
                        out.changes += 1;
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
                            self.written.remove(&k);
                            out.changes += 1;
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
        out
    }

    /// Addresses written, and how many have a role bit.
    pub fn count_with(&self, bit: u32) -> usize {
        self.written.values().filter(|r| *r & bit != 0).count()
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
    use observer_common::{addr::key_of, maps::role};

    use super::*;

    fn k(s: &str) -> IpKey {
        key_of(s.parse().unwrap())
    }

    #[test]
    fn owners_combine_and_leave() {
        let mut r = Roles::new();
        let pod = Owner::Object("Pod", "uid-1".into());
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
}
