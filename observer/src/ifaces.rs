//! Which interfaces carry our programs: uplinks and pod veths matched by name patterns,
//! attached as they appear, forgotten as they vanish, and re-checked on every reconcile. One
//! interface failing to attach is counted and retried; it never stops the others.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use serde::Serialize;

use crate::{
    attach::{self, Role},
    config::Pattern,
};

/// Our program names as the kernel shows them (truncated to 15 bytes).
fn is_ours(name: &str) -> bool {
    observer_common::names::PROGRAMS
        .iter()
        .any(|p| p.as_bytes()[..p.len().min(15)] == *name.as_bytes())
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IfaceStatus {
    pub name: String,
    pub index: u32,
    pub role: &'static str,
    pub mode: &'static str,
    /// Other TC programs on the interface (names), found with a TCX query.
    pub foreign: Vec<String>,
}

struct Attached {
    name: String,
    role: Role,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

/// The attach state of the node's interfaces. Owns the loaded programs.
pub struct Ifaces {
    ebpf: Ebpf,
    uplinks: Vec<Pattern>,
    pod_ifaces: Vec<Pattern>,
    attached: BTreeMap<u32, Attached>,
    /// Interfaces whose last attach failed: index → (name, error).
    failing: BTreeMap<u32, (String, String)>,
    /// Attach failures since start.
    pub errors: u64,
    tcx: bool,
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Uplink => "uplink",
        Role::Pod => "pod",
    }
}

impl Ifaces {
    pub fn new(ebpf: Ebpf, uplinks: Vec<Pattern>, pod_ifaces: Vec<Pattern>) -> Self {
        Ifaces {
            ebpf,
            uplinks,
            pod_ifaces,
            attached: BTreeMap::new(),
            failing: BTreeMap::new(),
            errors: 0,
            tcx: attach::uses_tcx(),
        }
    }

    /// The role an interface name gets, if any. Uplink patterns win.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        if name == "lo" {
            None
        } else if self.uplinks.iter().any(|p| p.matches(name)) {
            Some(Role::Uplink)
        } else if self.pod_ifaces.iter().any(|p| p.matches(name)) {
            Some(Role::Pod)
        } else {
            None
        }
    }

    /// Brings one interface to its desired state. Returns true if it attached now.
    pub fn ensure(&mut self, index: u32, name: &str) -> bool {
        let role = self.role_of(name);
        if let Some(a) = self.attached.get_mut(&index) {
            if Some(a.role) == role {
                a.name = name.to_string(); // a rename within the same role
                return false;
            }
            self.forget(index);
        }
        let Some(role) = role else {
            self.failing.remove(&index);
            return false;
        };
        match attach::attach(&mut self.ebpf, name, role) {
            Ok(links) => {
                tracing::info!(iface = name, index, role = role_name(role), "attached");
                self.failing.remove(&index);
                self.attached.insert(
                    index,
                    Attached {
                        name: name.to_string(),
                        role,
                        links,
                    },
                );
                true
            }
            Err(e) => {
                self.errors += 1;
                tracing::warn!(iface = name, index, error = %e, "attach failed; will retry");
                self.failing
                    .insert(index, (name.to_string(), e.to_string()));
                false
            }
        }
    }

    /// Forgets an interface (it vanished or no longer matches): detaches what is left.
    pub fn forget(&mut self, index: u32) {
        self.failing.remove(&index);
        if let Some(a) = self.attached.remove(&index) {
            tracing::info!(iface = a.name, index, "detached");
            attach::detach(&mut self.ebpf, a.links);
        }
    }

    /// Makes the attached set match the node's links: attaches what is missing (including
    /// retries of failures), forgets what is gone.
    pub fn reconcile(&mut self, links: &BTreeMap<u32, String>) {
        let gone: Vec<u32> = self
            .attached
            .keys()
            .chain(self.failing.keys())
            .filter(|i| !links.contains_key(i))
            .copied()
            .collect();
        for i in gone {
            self.forget(i);
        }
        for (i, name) in links {
            self.ensure(*i, name);
        }
    }

    /// Detaches everything (shutdown).
    pub fn detach_all(&mut self) {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for i in all {
            self.forget(i);
        }
    }

    /// Attached interfaces per role.
    pub fn counts(&self) -> (usize, usize) {
        let up = self
            .attached
            .values()
            .filter(|a| a.role == Role::Uplink)
            .count();
        (up, self.attached.len() - up)
    }

    /// Whether the interface with this index carries our pod programs.
    pub fn is_pod_iface(&self, index: u32) -> bool {
        self.attached
            .get(&index)
            .is_some_and(|a| a.role == Role::Pod)
    }

    /// The attached interfaces, with foreign programs found on them.
    pub fn status(&self) -> Vec<IfaceStatus> {
        self.attached
            .iter()
            .map(|(index, a)| IfaceStatus {
                name: a.name.clone(),
                index: *index,
                role: role_name(a.role),
                mode: if self.tcx { "tcx" } else { "netlink" },
                foreign: if self.tcx {
                    foreign(&a.name)
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// Interfaces whose attach is failing: (name, error).
    pub fn failing(&self) -> Vec<(String, String)> {
        self.failing.values().cloned().collect()
    }
}

/// Programs on the interface's TCX ingress and egress that are not ours.
fn foreign(iface: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
        if let Ok((_, progs)) = SchedClassifier::query_tcx(iface, dir) {
            for p in progs {
                let name = p.name_as_str().unwrap_or("?").to_string();
                if !is_ours(&name) {
                    out.push(format!(
                        "{name} ({})",
                        if dir == TcAttachType::Ingress {
                            "ingress"
                        } else {
                            "egress"
                        }
                    ));
                }
            }
        }
    }
    out
}
