//! What the pod-side programs make of a packet: which flagged flow a pod's packet answers, and
//! which flow a pod's packet opens. Pure, so the kernel and host tests share it. The pod veth
//! programs see only the pod's packets; the uplink-egress program (`--attach-mode
//! uplink-egress`) sees everything leaving the node, and asks [`opened_leaving_node`].

use crate::{
    maps::{FlowKey, role},
    packet::{
        ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
        IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_ACK, TCP_RST, TCP_SYN,
    },
    verdict::Lookup,
};

/// A pod's answer to a flagged flow: the flow's key as the outsider sent it, and whether the
/// pod refused it (TCP RST, ICMP unreachable) rather than served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub key: FlowKey,
    pub refused: bool,
}

/// The flagged flow a packet leaving a pod would answer, if any (to be checked in `FLOWS`).
#[inline(always)]
pub fn answer_of(p: &Packet) -> Option<Answer> {
    if p.fragment {
        return None;
    }
    if let Some(quoted) = p.quoted() {
        // ICMP unreachable (port closed, prohibited...) quoting the outsider's packet.
        return Some(Answer {
            key: *quoted,
            refused: true,
        });
    }
    let refused = match p.proto {
        IPPROTO_TCP if p.tcp_flags & TCP_RST != 0 => true,
        // A bare SYN from the pod opens its own flow; it answers nothing.
        IPPROTO_TCP if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => return None,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => false,
        IPPROTO_ICMP if p.icmp_type == ICMP_ECHO_REPLY => false,
        IPPROTO_ICMPV6 if p.icmp_type == ICMPV6_ECHO_REPLY => false,
        _ => return None,
    };
    Some(Answer {
        key: p.key().reversed(),
        refused,
    })
}

/// Destination roles whose answers never need `POD_FLOWS`: they come back from a source the
/// verdict places before it looks for a reply (an address in the cluster: a node, a pod of
/// any node, a cluster CIDR), never cross an uplink (this node, its pods), or come from the
/// backend a Service was translated to. An allowed destination is not among them: its answer
/// stays a `reply`, not `allowed`.
pub const ANSWERED_FROM_INSIDE: u32 = role::CLUSTER | role::NODE | role::LOCAL_POD | role::SERVICE;

/// The key under which a packet leaving a pod is recorded as a pod-opened flow, if it opens or
/// may open one towards an address outside the cluster: TCP SYN, SCTP INIT, ICMP echo request,
/// and any UDP datagram that answers no flagged flow. A flow to an address in the cluster opens
/// nothing (see [`ANSWERED_FROM_INSIDE`]): a UDP server's answers to its in-cluster and Service
/// clients (CoreDNS, NodeLocal DNSCache), and pods' calls to each other, would otherwise cycle
/// the LRU `POD_FLOWS` and push out the flows pods opened to servers outside the cluster, whose
/// next answers would then look like direct accesses.
#[inline(always)]
pub fn opened_by<L: Lookup + ?Sized>(p: &Packet, l: &L) -> Option<FlowKey> {
    if p.fragment || p.has_quoted {
        return None;
    }
    let key = match p.proto {
        IPPROTO_UDP => p.key(),
        IPPROTO_TCP | IPPROTO_SCTP | IPPROTO_ICMP | IPPROTO_ICMPV6 if p.flow_start => p.key(),
        _ => return None,
    };
    if l.roles(&p.dst) & ANSWERED_FROM_INSIDE != 0 {
        return None;
    }
    Some(key)
}

/// The key under which a packet leaving the node on an uplink is recorded as a pod-opened
/// flow: as [`opened_by`], for a packet whose source is a local pod. The node's own packets
/// are not, and neither is a pod's flow SNATed to the node's address: its replies come back to
/// the node's address, which the uplink judges `host`.
#[inline(always)]
pub fn opened_leaving_node<L: Lookup + ?Sized>(p: &Packet, l: &L) -> Option<FlowKey> {
    // The source first: most packets leaving the node are the node's own.
    if l.roles(&p.src) & role::LOCAL_POD == 0 {
        return None;
    }
    opened_by(p, l)
}
