//! What the pod-veth programs make of a packet: which flagged flow a pod's packet answers, and
//! which flow a pod's packet opens. Pure, so the kernel and host tests share it.

use crate::{
    maps::FlowKey,
    packet::{
        ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
        IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_ACK, TCP_RST, TCP_SYN,
    },
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

/// The key under which a packet leaving a pod is recorded as a pod-opened flow, if it opens or
/// may open one: TCP SYN, SCTP INIT, ICMP echo request, and any UDP datagram that answers no
/// flagged flow.
#[inline(always)]
pub fn opened_by(p: &Packet) -> Option<FlowKey> {
    if p.fragment || p.has_quoted {
        return None;
    }
    match p.proto {
        IPPROTO_UDP => Some(p.key()),
        IPPROTO_TCP | IPPROTO_SCTP | IPPROTO_ICMP | IPPROTO_ICMPV6 if p.flow_start => Some(p.key()),
        _ => None,
    }
}
