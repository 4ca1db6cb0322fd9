//! Attaching the programs to interfaces: TCX links (Linux >= 6.6), or a clsact qdisc with a
//! direct-action filter at the observer's own priority and handle. Other programs on the
//! interface are never replaced or reordered.
//!
//! By default every interface gets TCX links where the kernel has them: a TCX program runs
//! before every legacy filter, so no other agent's filter can end a packet's processing before
//! the observer saw it. aws-network-policy-agent, for one, puts its filters at priority 1 on
//! pod veths, the observer's own netlink priority; within one priority the newest filter runs
//! first, and its `TC_ACT_OK` ends classification.
//!
//! A TCX attach has a cost: it swaps the device's program list and waits for an RCU grace
//! period (`synchronize_rcu`) while holding the RTNL, once per hook, so twice per pod veth
//! (about 25 ms here), and no other process on the node creates or changes a link meanwhile.
//! `netlink-pods` mode attaches pod veths with netlink filters instead, without that wait
//! (100 veths: 0.1 s instead of 2.7 s), for nodes with heavy pod churn and no other filters on
//! pod veths.

use aya::{
    Ebpf,
    programs::{
        LinkOrder, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use observer_common::names::{
    PROG_EGRESS, PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK, PROGRAMS_ALT, other_copy,
};

use crate::kernel::object::{BpfError, classifier};

/// Netlink filters: priority 1 (ahead of filters that might drop before we count) and a
/// handle of our own, so that a restart finds and replaces its leftovers by name.
pub const NL_PRIORITY: u16 = 1;
pub const NL_HANDLE: TcHandle = TcHandle::new(0, 0x0b5e);
/// The other handle [`to_front`] alternates with: within one priority the newest filter runs
/// first, so ours goes back to the front by adding a copy under this handle, then removing the
/// old one, with no moment without ours.
pub const NL_HANDLE_ALT: TcHandle = TcHandle::new(0, 0x0b5f);

/// What an interface is to the observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Where traffic enters the node (eth0, ens5...): ingress gets the uplink program.
    Uplink,
    /// A pod's host-side veth (eni*, cali*...): egress (to the pod) and ingress (from it).
    Pod,
}

/// How programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TCX links (Linux >= 6.6): they go away with the process.
    Tcx,
    /// clsact qdisc + direct-action filters (any kernel): they outlive a crash.
    Netlink,
}

impl Mode {
    /// TCX where the kernel has it.
    pub fn auto() -> Mode {
        if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            Mode::Tcx
        } else {
            Mode::Netlink
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcx => "tcx",
            Mode::Netlink => "netlink",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("attaching {program} to {iface} ({direction:?}): {source}")]
    Attach {
        program: &'static str,
        iface: String,
        direction: TcAttachType,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("adding a clsact qdisc to {iface}: {source}")]
    Clsact {
        iface: String,
        #[source]
        source: tc::TcError,
    },
}

/// Where the pod-side facts (a pod's answers, the flows it opens) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodFacts {
    /// On each pod's host-side veth (egress and ingress): also *delivered*.
    Veths,
    /// On the uplinks' egress, as the pods' packets leave the node; nothing on pod veths, so
    /// pod churn costs no attach. *Delivered* is not known.
    UplinkEgress,
}

/// The attach mode of each role, and where the pod-side facts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    pub uplink: Mode,
    pub pod: Mode,
    pub pod_facts: PodFacts,
}

impl Modes {
    /// The default: TCX on every interface where the kernel has it, netlink filters before.
    pub fn auto() -> Modes {
        Modes::all(Mode::auto())
    }

    /// TCX (where the kernel has it) on uplinks, netlink filters on pod veths: no RCU grace
    /// period under the RTNL per pod, but other filters on pod veths may run first.
    pub fn netlink_pods() -> Modes {
        Modes {
            uplink: Mode::auto(),
            pod: Mode::Netlink,
            pod_facts: PodFacts::Veths,
        }
    }

    /// TCX (where the kernel has it) on uplinks, at ingress and egress, and nothing on pod
    /// veths: the pods' answers and openings are read as they leave the node.
    pub fn uplink_egress() -> Modes {
        Modes {
            uplink: Mode::auto(),
            pod: Mode::auto(),
            pod_facts: PodFacts::UplinkEgress,
        }
    }

    /// One mode for every role.
    pub fn all(mode: Mode) -> Modes {
        Modes {
            uplink: mode,
            pod: mode,
            pod_facts: PodFacts::Veths,
        }
    }

    pub fn of(self, role: Role) -> Mode {
        match role {
            Role::Uplink => self.uplink,
            Role::Pod => self.pod,
        }
    }

    /// Every program these modes attach (the first copies), to verify at load.
    pub fn programs(self) -> Vec<&'static str> {
        [Role::Uplink, Role::Pod]
            .iter()
            .flat_map(|r| self.programs_of(*r).iter().map(|(p, _)| *p))
            .collect()
    }

    /// The programs and directions of a role in these modes.
    pub fn programs_of(self, role: Role) -> &'static [(&'static str, TcAttachType)] {
        programs_of(role, self.pod_facts)
    }

    /// How pod veths are attached: "tcx", "netlink", or "none" (`uplink-egress`).
    pub fn pod_veths_name(self) -> &'static str {
        match self.pod_facts {
            PodFacts::Veths => self.pod.name(),
            PodFacts::UplinkEgress => "none",
        }
    }

    /// "tcx", "netlink", or the two when they differ ("uplinks tcx, pod veths netlink").
    pub fn name(self) -> String {
        if self.pod_facts == PodFacts::UplinkEgress {
            format!(
                "uplinks {} (ingress and egress), pod veths none",
                self.uplink.name()
            )
        } else if self.uplink == self.pod {
            self.uplink.name().to_string()
        } else {
            format!(
                "uplinks {}, pod veths {}",
                self.uplink.name(),
                self.pod.name()
            )
        }
    }
}

/// Whether this kernel attaches uplinks with TCX by default.
pub fn uses_tcx() -> bool {
    Mode::auto() == Mode::Tcx
}

/// The programs and directions of a role, by where the pod-side facts are read.
pub fn programs_of(role: Role, facts: PodFacts) -> &'static [(&'static str, TcAttachType)] {
    match (role, facts) {
        (Role::Uplink, PodFacts::Veths) => &[(PROG_UPLINK, TcAttachType::Ingress)],
        (Role::Uplink, PodFacts::UplinkEgress) => &[
            (PROG_UPLINK, TcAttachType::Ingress),
            (PROG_EGRESS, TcAttachType::Egress),
        ],
        (Role::Pod, PodFacts::Veths) => &[
            (PROG_TO_POD, TcAttachType::Egress),
            (PROG_FROM_POD, TcAttachType::Ingress),
        ],
        (Role::Pod, PodFacts::UplinkEgress) => &[],
    }
}

/// What [`attach`] did on one interface.
#[derive(Debug)]
pub struct Attachment {
    pub links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// We added the clsact qdisc (netlink mode), or found our own leftover filters on it (a
    /// previous run in netlink mode was killed), so the qdisc is ours to remove when no filter
    /// is left on it.
    pub owns_clsact: bool,
}

/// The programs of a role and their directions (from [`Modes::programs_of`]).
pub type Programs = &'static [(&'static str, TcAttachType)];

/// Attaches the role's programs in `modes` to `iface` (in the calling thread's network
/// namespace); a role the modes attach nothing to is only cleared of leftovers. On failure,
/// whatever was attached for this call is detached again.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    role: Role,
    modes: Modes,
) -> Result<Attachment, AttachError> {
    let (programs, mode) = (modes.programs_of(role), modes.of(role));
    let mut owns_clsact = false;
    if mode == Mode::Netlink && !programs.is_empty() {
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => owns_clsact = true,
            Err(tc::TcError::AlreadyAttached) => {}
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(AttachError::Clsact {
                    iface: iface.to_string(),
                    source,
                });
            }
        }
    }
    // Our filters left by a killed run in netlink mode are replaced, never stacked, whatever
    // the mode now.
    owns_clsact |= remove_leftovers(iface, role);
    let links = attach_programs(ebpf, iface, programs, mode, NL_HANDLE, false)?;
    Ok(Attachment { links, owns_clsact })
}

/// Removes the netlink filters a killed run left on `iface` for any program the role carries
/// in any mode (a run in another mode may have left them): true if there were any (their
/// clsact qdisc is then ours).
fn remove_leftovers(iface: &str, role: Role) -> bool {
    let mut found = false;
    let every_mode = [PodFacts::Veths, PodFacts::UplinkEgress]
        .into_iter()
        .flat_map(|facts| programs_of(role, facts));
    for &(program, direction) in every_mode {
        if tc::qdisc_detach_program(iface, direction, program).is_ok() {
            tracing::info!(
                iface,
                program,
                "removed a leftover filter of a previous run"
            );
            found = true;
        }
    }
    found
}

/// Attaches each program of the role (their second copies if `alt`, loading them the first
/// time); on a failure detaches the ones attached before it.
fn attach_programs(
    ebpf: &mut Ebpf,
    iface: &str,
    programs: Programs,
    mode: Mode,
    handle: TcHandle,
    alt: bool,
) -> Result<Vec<(&'static str, SchedClassifierLinkId)>, AttachError> {
    let mut links = Vec::new();
    for &(first, direction) in programs {
        let program = if alt {
            other_copy(first).unwrap_or(first)
        } else {
            first
        };
        // Programs outside the mode's set, and the second copies, load on first use.
        crate::kernel::object::load_program(ebpf, program)?;
        let options = match mode {
            Mode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
            Mode::Netlink => TcAttachOptions::Netlink(NlOptions {
                priority: NL_PRIORITY,
                handle,
                ..NlOptions::default()
            }),
        };
        match classifier(ebpf, program)?.attach_with_options(iface, direction, options) {
            Ok(id) => links.push((program, id)),
            Err(source) => {
                detach(ebpf, links);
                return Err(AttachError::Attach {
                    program,
                    iface: iface.to_string(),
                    direction,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(links)
}

/// Puts the role's programs back in front of the programs of others on `iface`: attaches them
/// again (TCX: the other copies of the programs, at the head of the list, as a hook holds a
/// program once; netlink: under the other handle, as within one priority the newest filter runs
/// first), then detaches the old ones, and updates `links` and `handle`. For a moment both
/// copies run (a packet may be counted twice), never neither. On failure the old ones stay.
pub fn to_front(
    ebpf: &mut Ebpf,
    iface: &str,
    programs: Programs,
    mode: Mode,
    links: &mut Vec<(&'static str, SchedClassifierLinkId)>,
    handle: &mut TcHandle,
) -> Result<(), AttachError> {
    let (next, alt) = match mode {
        Mode::Tcx => (
            *handle,
            links
                .first()
                .is_some_and(|(p, _)| !PROGRAMS_ALT.contains(p)),
        ),
        Mode::Netlink if *handle == NL_HANDLE => (NL_HANDLE_ALT, false),
        Mode::Netlink => (NL_HANDLE, false),
    };
    let new = attach_programs(ebpf, iface, programs, mode, next, alt)?;
    detach(ebpf, std::mem::replace(links, new));
    *handle = next;
    Ok(())
}

/// Detaches links made by [`attach`]. Links of interfaces that are gone detach with them, so
/// errors are ignored.
pub fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, SchedClassifierLinkId)>) {
    for (program, id) in links {
        if let Ok(p) = classifier(ebpf, program) {
            let _ = p.detach(id);
        }
    }
}
