//! Attaching the programs to interfaces: TCX on kernels that have it (>= 6.6), otherwise a
//! clsact qdisc and a direct-action filter. Other programs on the interface are left alone.

use aya::{
    Ebpf,
    programs::{TcAttachType, tc, tc::SchedClassifierLinkId},
    util::KernelVersion,
};
use observer_common::names::{PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK};

use crate::bpf::{BpfError, classifier};

/// What an interface is to the observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Where traffic enters the node (eth0, ens5...): ingress gets the uplink program.
    Uplink,
    /// A pod's host-side veth (eni*, cali*...): egress (to the pod) and ingress (from it).
    Pod,
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

/// Whether this kernel attaches with TCX (else netlink/clsact).
pub fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The programs and directions of a role.
pub fn programs_of(role: Role) -> &'static [(&'static str, TcAttachType)] {
    match role {
        Role::Uplink => &[(PROG_UPLINK, TcAttachType::Ingress)],
        Role::Pod => &[
            (PROG_TO_POD, TcAttachType::Egress),
            (PROG_FROM_POD, TcAttachType::Ingress),
        ],
    }
}

/// Attaches the role's programs to `iface` (in the calling thread's network namespace).
/// On failure, whatever was attached for this call is detached again.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    role: Role,
) -> Result<Vec<(&'static str, SchedClassifierLinkId)>, AttachError> {
    if !uses_tcx() {
        // EEXIST: the qdisc is already there (ours or another agent's); keep it.
        match tc::qdisc_add_clsact(iface) {
            Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
            Err(source) => {
                return Err(AttachError::Clsact {
                    iface: iface.to_string(),
                    source,
                });
            }
        }
    }
    let mut links = Vec::new();
    for &(program, direction) in programs_of(role) {
        let result = classifier(ebpf, program)?.attach(iface, direction);
        match result {
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

/// Detaches links made by [`attach`]. Links of interfaces that are gone detach with them, so
/// errors are ignored.
pub fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, SchedClassifierLinkId)>) {
    for (program, id) in links {
        if let Ok(p) = classifier(ebpf, program) {
            let _ = p.detach(id);
        }
    }
}
