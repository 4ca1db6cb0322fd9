//! Names of maps, programs and load-time globals, shared by the eBPF object and the agent.

/// TC ingress of an uplink (eth*, ens*...): judges every packet before netfilter DNAT.
pub const PROG_UPLINK: &str = "observer_uplink";
/// TC egress of a pod's host-side veth: traffic delivered to the pod.
pub const PROG_TO_POD: &str = "observer_to_pod";
/// TC ingress of a pod's host-side veth: traffic the pod sends.
pub const PROG_FROM_POD: &str = "observer_from_pod";
/// TC egress of an uplink, in `uplink-egress` mode only: the pods' answers and the flows they
/// open, read as they leave the node (instead of [`PROG_TO_POD`] and [`PROG_FROM_POD`]).
pub const PROG_EGRESS: &str = "observer_egress";
/// An empty program (returns TC_ACT_UNSPEC): the benchmark's floor, a foreign program in
/// tests. The agent never attaches it.
pub const PROG_NOOP: &str = "tc_noop";
/// The agent's programs, for loading and listing.
pub const PROGRAMS: [&str; 4] = [PROG_UPLINK, PROG_TO_POD, PROG_FROM_POD, PROG_EGRESS];
/// Second copies of the programs (same code, same maps). A TCX hook holds a program once, so
/// to go back to the head of a hook after another program was put in front, the agent attaches
/// the other copy there and then detaches the first: no moment without the observer. Loaded
/// the first time they are needed. The kernel shows them under the same 15-byte names.
pub const PROGRAMS_ALT: [&str; 4] = [
    "observer_uplink_alt",
    "observer_to_pod_alt",
    "observer_from_pod_alt",
    "observer_egress_alt",
];

/// The other copy of one of [`PROGRAMS`] (or the first copy of one of [`PROGRAMS_ALT`]).
pub fn other_copy(program: &str) -> Option<&'static str> {
    PROGRAMS.iter().zip(PROGRAMS_ALT.iter()).find_map(|(a, b)| {
        if *a == program {
            Some(*b)
        } else if *b == program {
            Some(*a)
        } else {
            None
        }
    })
}

/// Exact addresses and their roles ([`crate::maps::IpRole`]).
pub const MAP_IP_ROLES: &str = "IP_ROLES";
/// CIDRs and their roles (LPM trie), consulted when the exact map misses.
pub const MAP_CIDR_ROLES: &str = "CIDR_ROLES";
/// NodePorts actually allocated, beside the range: a bitmap ([`crate::maps::port_bit`]).
pub const MAP_NODEPORTS: &str = "NODEPORTS";
/// Pod-side ports local pods opened flows from: a bitmap ([`crate::maps::port_bit`]) in front
/// of `POD_FLOWS`. A bit is set before any entry with that port goes in, and never cleared.
pub const MAP_POD_PORTS: &str = "POD_PORTS";
/// Per-CPU direct-mapped cache of address roles ([`crate::maps::RoleCacheEntry`]).
pub const MAP_ROLE_CACHE: &str = "ROLE_CACHE";
/// One u64: bumped by the agent after every change to the role maps; 0 = cache unused.
pub const MAP_ROLES_GENERATION: &str = "ROLES_GENERATION";
/// Flows opened by local pods (LRU), so their replies are judged "reply".
pub const MAP_POD_FLOWS: &str = "POD_FLOWS";
/// Flagged flows (direct to pod) with their counters and state (LRU).
pub const MAP_FLOWS: &str = "FLOWS";
/// One u32: 0 until the first flagged flow exists; the pod-veth programs skip their `FLOWS`
/// lookups until then (the common case on a node nobody reaches directly).
pub const MAP_FLAGGED: &str = "FLAGGED";
/// Pod-side ports of flagged flows: a bitmap ([`crate::maps::port_bit`]) in front of `FLOWS`
/// for the pod-veth programs. A bit is set before any flow with that port goes in.
pub const MAP_FLAGGED_PORTS: &str = "FLAGGED_PORTS";
/// One u64: the agent's reading of CLOCK_MONOTONIC_COARSE at its last flow refresh (every
/// second); 0 until the first. Packets of known flagged flows take their `last_seen_ns` from it.
pub const MAP_CLOCK: &str = "CLOCK";
/// Per-CPU packet/byte/flow-start counters per verdict and protocol class.
pub const MAP_VERDICT_STATS: &str = "VERDICT_STATS";
/// Per-CPU health counters ([`crate::maps::Health`]).
pub const MAP_HEALTH: &str = "HEALTH";
/// Per pod address, new flagged flows whose event or `FLOWS` entry was lost (u64).
pub const MAP_POD_LOST: &str = "POD_LOST";
/// Fragmented datagrams whose first fragment was judged.
pub const MAP_FRAGS: &str = "FRAGS";
/// Connections recognised by a DSR mark on their first packet.
pub const MAP_DSR_FLOWS: &str = "DSR_FLOWS";
/// Per pod, packets from outside whose flow could not be read.
pub const MAP_POD_UNJUDGED: &str = "POD_UNJUDGED";
/// Ring buffer of [`crate::maps::FlowEvent`], one per new flagged flow.
pub const MAP_EVENTS: &str = "EVENTS";
/// Staged pure SYNs and their marks, a ring per CPU mapped by the agent (`maps::staged`).
pub const MAP_STAGED: &str = "STAGED";
/// Each staged ring's head and tail (`maps::staged::Positions`), mapped by the agent.
pub const MAP_STAGED_POSITIONS: &str = "STAGED_POSITIONS";
/// Per-CPU record of the last uplink decision, written only when [`GLOBAL_TRACE`] is set (tests).
pub const MAP_TRACE: &str = "TRACE";

/// Lowest NodePort (u16, load-time global).
pub const GLOBAL_NODEPORT_MIN: &str = "NODEPORT_MIN";
/// Highest NodePort (u16, load-time global).
pub const GLOBAL_NODEPORT_MAX: &str = "NODEPORT_MAX";
/// Bit mask of verdicts whose flows go into [`MAP_FLOWS`] (u32, load-time global).
pub const GLOBAL_TRACK_MASK: &str = "TRACK_MASK";
/// Non-zero: answer roles through [`MAP_ROLE_CACHE`] (u8, load-time global; on by default).
pub const GLOBAL_ROLE_CACHE: &str = "ROLE_CACHE_ENABLED";
/// Records per CPU in `STAGED` (`maps::staged::slots_for` of the possible CPUs).
pub const GLOBAL_STAGED_SLOTS: &str = "STAGED_SLOTS";
/// Non-zero: trust Cilium's DSR marks naming a Service of the cluster (u8, load-time global).
pub const GLOBAL_DSR_MARKS: &str = "DSR_MARKS";
/// Non-zero: write each uplink decision into [`MAP_TRACE`] (u8, load-time global; tests only).
pub const GLOBAL_TRACE: &str = "TRACE_ENABLED";
