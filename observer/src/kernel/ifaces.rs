//! Which interfaces carry our programs: uplinks and pod veths matched by name patterns,
//! attached as they appear, forgotten as they vanish, and re-checked on every reconcile. One
//! interface failing to attach is counted and retried; it never stops the others.

use std::{collections::BTreeMap, fmt, time::Instant};

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{SchedClassifierLinkId, TcHandle},
    },
};
use serde::Serialize;

use crate::{
    defaults,
    kernel::{
        attach::{self, Mode, Modes, Role},
        netlink::Netlink,
    },
};

/// An interface name pattern with `*` (any run) and `?` (one character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern of 1 to 64 characters, each one that can be in an interface name (or `*`,
    /// `?`); otherwise what is wrong with it.
    pub fn new(v: &str) -> Result<Pattern, String> {
        if v.is_empty() || v.len() > 64 {
            return Err("an interface pattern of 1 to 64 characters".into());
        }
        if let Some(c) = v
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "*?._-@:".contains(*c)))
        {
            return Err(format!("character {c:?} cannot be in an interface name"));
        }
        Ok(Pattern(v.to_string()))
    }

    pub fn matches(&self, name: &str) -> bool {
        fn m(p: &[u8], s: &[u8]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
                (Some(b'?'), Some(_)) => m(&p[1..], &s[1..]),
                (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
                _ => false,
            }
        }
        m(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether this network namespace has an interface of this name.
pub fn exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; the call reads it only.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

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
    /// Another program runs before ours and stays there.
    pub not_first: bool,
}

struct Attached {
    name: String,
    role: Role,
    mode: Mode,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// Netlink mode: the handle our filters have now (it alternates, see `attach::to_front`).
    handle: TcHandle,
    /// Moves to the front since `moves_since` (bounded by `defaults::FRONT_MOVES_MAX`).
    moves: u32,
    moves_since: Instant,
    owns_clsact: bool,
    foreign: Vec<String>,
    /// Another program runs before ours on one of its hooks, and ours could not be moved back
    /// in front (the move budget is spent, or the kernel refused).
    not_first: bool,
}

/// The attach state of the node's interfaces. Owns the loaded programs.
pub struct Ifaces {
    ebpf: Ebpf,
    uplinks: Vec<Pattern>,
    pod_ifaces: Vec<Pattern>,
    /// Never attached, whatever the patterns above match.
    exclude: Vec<Pattern>,
    attached: BTreeMap<u32, Attached>,
    /// Interfaces whose last attach failed: index → (name, error).
    failing: BTreeMap<u32, (String, String)>,
    /// Attach failures since start.
    pub errors: u64,
    modes: Modes,
    /// Interfaces of a role this mode attaches nothing to (pod veths in `uplink-egress`) that
    /// were cleared of a killed run's leftover filters, so it is done once per interface.
    swept: std::collections::BTreeSet<u32>,
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Uplink => "uplink",
        Role::Pod => "pod",
    }
}

impl Ifaces {
    pub fn new(
        ebpf: Ebpf,
        uplinks: Vec<Pattern>,
        pod_ifaces: Vec<Pattern>,
        exclude: Vec<Pattern>,
        modes: Modes,
    ) -> Self {
        Ifaces {
            ebpf,
            uplinks,
            pod_ifaces,
            exclude,
            attached: BTreeMap::new(),
            failing: BTreeMap::new(),
            errors: 0,
            modes,
            swept: Default::default(),
        }
    }

    pub fn modes(&self) -> Modes {
        self.modes
    }

    /// The role an interface name gets, if any. Uplink patterns win.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        if name == "lo" || self.exclude.iter().any(|p| p.matches(name)) {
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
        // A role this mode attaches nothing to (pod veths in uplink-egress) is only cleared of
        // a killed run's filters, once per interface.
        if self.modes.programs_of(role).is_empty() {
            self.failing.remove(&index);
            if self.swept.insert(index) {
                let _ = attach::attach(&mut self.ebpf, name, role, self.modes);
            }
            return false;
        }
        match attach::attach(&mut self.ebpf, name, role, self.modes) {
            Ok(a) => {
                tracing::info!(
                    iface = name,
                    index,
                    role = role_name(role),
                    mode = self.modes.of(role).name(),
                    "attached"
                );
                self.failing.remove(&index);
                self.attached.insert(
                    index,
                    Attached {
                        name: name.to_string(),
                        role,
                        mode: self.modes.of(role),
                        links: a.links,
                        handle: attach::NL_HANDLE,
                        moves: 0,
                        moves_since: Instant::now(),
                        owns_clsact: a.owns_clsact,
                        foreign: Vec::new(),
                        not_first: false,
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
    /// Returns the interface if its clsact qdisc is ours (netlink mode), to remove once empty.
    pub fn forget(&mut self, index: u32) -> Option<(u32, String)> {
        self.failing.remove(&index);
        self.swept.remove(&index);
        let a = self.attached.remove(&index)?;
        tracing::info!(iface = a.name, index, "detached");
        attach::detach(&mut self.ebpf, a.links);
        a.owns_clsact.then_some((index, a.name))
    }

    /// Makes the attached set match the node's links: attaches what is missing (including
    /// retries of failures), forgets what is gone.
    pub fn reconcile(&mut self, links: &BTreeMap<u32, String>) {
        let gone: Vec<u32> = self
            .attached
            .keys()
            .chain(self.failing.keys())
            .chain(self.swept.iter())
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

    /// Detaches everything (shutdown). Returns the interfaces whose clsact qdisc is ours.
    pub fn detach_all(&mut self) -> Vec<(u32, String)> {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        all.into_iter().filter_map(|i| self.forget(i)).collect()
    }

    /// Looks up the other programs on each attached interface.
    pub async fn update_foreign(&mut self, nl: &Netlink) {
        for (index, a) in self.attached.iter_mut() {
            // Others may use either hook, whatever our own mode is.
            let mut foreign = if attach::Mode::auto() == Mode::Tcx {
                foreign_tcx(&a.name)
            } else {
                Vec::new()
            };
            foreign.extend(foreign_netlink(nl, *index).await);
            a.foreign = foreign;
        }
    }

    /// Keeps our programs first on their hooks (all interfaces, or only `index`): a program of
    /// another agent attached later in front of ours (a TCX link at the head, `BPF_F_BEFORE`; a
    /// netlink filter at our priority) runs before it, and a `TC_ACT_OK` of it would end the
    /// packet's processing before we saw it. Ours goes back to the front, at most
    /// `FRONT_MOVES_MAX` times a window per interface; past that, or when the kernel refuses,
    /// the interface counts as not first (`observer_interfaces_not_first`, `ObserverBlind`).
    pub async fn keep_first(&mut self, nl: &Netlink, index: Option<u32>) {
        let candidates: Vec<u32> = self
            .attached
            .keys()
            .filter(|i| index.is_none_or(|x| x == **i))
            .copied()
            .collect();
        for i in candidates {
            let Some((role, mode, name)) = self
                .attached
                .get(&i)
                .map(|a| (a.role, a.mode, a.name.clone()))
            else {
                continue;
            };
            let mut behind = false;
            for &(_, direction) in self.modes.programs_of(role) {
                behind |= match mode {
                    Mode::Tcx => tcx_first_is_foreign(&name, direction),
                    Mode::Netlink => nl
                        .tc_filters(i, direction == TcAttachType::Ingress)
                        .await
                        .is_ok_and(|filters| {
                            filters.first().is_some_and(|f| {
                                !f.name
                                    .as_deref()
                                    .is_some_and(|n| n.starts_with("observer_"))
                            })
                        }),
                };
            }
            let Some(a) = self.attached.get_mut(&i) else {
                continue;
            };
            if !behind {
                a.not_first = false;
                continue;
            }
            if a.moves_since.elapsed() > defaults::FRONT_MOVES_WINDOW {
                a.moves = 0;
                a.moves_since = Instant::now();
            }
            if a.moves >= defaults::FRONT_MOVES_MAX {
                a.not_first = true;
                if a.moves == defaults::FRONT_MOVES_MAX {
                    a.moves += 1;
                    tracing::warn!(
                        iface = a.name,
                        index = i,
                        "another agent keeps putting its filter ahead of ours; leaving it there for now: packets it ends are not seen"
                    );
                }
                continue;
            }
            a.moves += 1;
            match attach::to_front(
                &mut self.ebpf,
                &a.name,
                self.modes.programs_of(role),
                mode,
                &mut a.links,
                &mut a.handle,
            ) {
                Ok(()) => {
                    a.not_first = false;
                    tracing::info!(
                        iface = a.name,
                        index = i,
                        mode = mode.name(),
                        "another program was put ahead of ours; ours is in front again"
                    );
                }
                Err(e) => {
                    a.not_first = true;
                    self.errors += 1;
                    tracing::warn!(iface = a.name, index = i, error = %e, "could not move our programs to the front; will retry");
                }
            }
        }
    }

    /// Attached interfaces where another program runs before ours and stays there.
    pub fn not_first(&self) -> usize {
        self.attached.values().filter(|a| a.not_first).count()
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
                mode: a.mode.name(),
                foreign: a.foreign.clone(),
                not_first: a.not_first,
            })
            .collect()
    }

    /// Interfaces whose attach is failing: (name, error).
    pub fn failing(&self) -> Vec<(String, String)> {
        self.failing.values().cloned().collect()
    }
}

/// TC filters of others on the interface's clsact hooks (netlink mode).
async fn foreign_netlink(nl: &Netlink, index: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (ingress, dir) in [(true, "ingress"), (false, "egress")] {
        if let Ok(names) = nl.tc_filter_names(index, ingress).await {
            // Filter names are the program's section/function name, possibly with a suffix.
            for n in names.into_iter().filter(|n| !n.starts_with("observer_")) {
                out.push(format!("{n} ({dir}, tc filter)"));
            }
        }
    }
    out
}

/// Whether the first program of the interface's TCX hook is not ours (false if the query fails:
/// the next reconcile asks again).
fn tcx_first_is_foreign(iface: &str, dir: TcAttachType) -> bool {
    SchedClassifier::query_tcx(iface, dir).is_ok_and(|(_, progs)| {
        progs
            .first()
            .is_some_and(|p| !is_ours(p.name_as_str().unwrap_or("?")))
    })
}

/// Programs on the interface's TCX ingress and egress that are not ours.
fn foreign_tcx(iface: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_glob() {
        let p = Pattern::new("cali*").unwrap();
        assert!(p.matches("calibe254a7a7ea") && p.matches("cali") && !p.matches("xcali"));
        let q = Pattern::new("eth?").unwrap();
        assert!(q.matches("eth1") && !q.matches("eth10"));
    }
}
