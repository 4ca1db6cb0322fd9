//! Pod veths: delivery of flagged flows, the pod's answers, and the flows the pod opens. In
//! `uplink-egress` mode the answers and openings are read at the uplinks' egress instead.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use observer_common::{
    maps::{FlowKey, PodFlow, health},
    packet::{IPPROTO_TCP, Packet, Status, TCP_RST, TCP_SYN, parse},
    pod::{answer_of, opened_by, opened_leaving_node},
};

use crate::{
    maps::{
        FLAGGED_PORTS, FLOWS, Maps, POD_FLOWS, POD_PORTS, any_flagged, health, mark_port,
        port_may_have_entry,
    },
    skb::{Skb, ifindex},
    staged,
};

/// A packet going out of the host-side veth into the pod.
#[inline(always)]
pub fn to_pod(ctx: &TcContext) {
    health(health::TO_POD_PACKETS);
    // Nothing to mark until the first flagged flow: the common case costs a counter.
    if !any_flagged() {
        return;
    }
    let mut p = Packet::EMPTY;
    if parse(&Skb(ctx), &mut p) != Status::Ip || p.fragment {
        return;
    }
    // Only flows to a port with a flagged flow can be one.
    if !port_may_have_entry(&FLAGGED_PORTS, p.dport, p.proto) {
        return;
    }
    if let Some(s) = FLOWS.get_ptr_mut(&p.key()) {
        // SAFETY: single stores into a map value; every writer stores the same values.
        unsafe {
            (*s).delivered = 1;
            (*s).pod_ifindex = ifindex(ctx);
        }
        health(health::DELIVERED_MARKS);
    }
}

/// A packet the pod sent, entering the host through its veth.
#[inline(always)]
pub fn from_pod(ctx: &TcContext) {
    health(health::FROM_POD_PACKETS);
    let mut p = Packet::EMPTY;
    if parse(&Skb(ctx), &mut p) != Status::Ip || mark_answer(ctx, &p) {
        return;
    }
    if let Some(key) = opened_by(&p, &Maps) {
        record_opened(ctx, &key);
    }
}

/// A packet leaving the node on an uplink (`--attach-mode uplink-egress`, no pod veth
/// programs): a local pod's answers and the flows it opens, as [`from_pod`] finds them. The
/// node's own packets, and pods' packets SNATed to the node's address, open nothing.
#[inline(always)]
pub fn leaving_node(ctx: &TcContext) {
    health(health::UPLINK_EGRESS_PACKETS);
    let mut p = Packet::EMPTY;
    if parse(&Skb(ctx), &mut p) != Status::Ip || mark_answer(ctx, &p) {
        return;
    }
    if let Some(key) = opened_leaving_node(&p, &Maps) {
        record_opened(ctx, &key);
    }
}

/// Marks the flagged flow this packet answers, if any: true if it did. A TCP flow the uplink
/// staged (its SYN alone so far) is marked in the staged ring, others in `FLOWS`.
#[inline(always)]
fn mark_answer(ctx: &TcContext, p: &Packet) -> bool {
    let Some(a) = answer_of(p) else {
        return false;
    };
    if !any_flagged() || !port_may_have_entry(&FLAGGED_PORTS, a.key.dport, a.key.proto) {
        return false;
    }
    // Only a SYN-ACK, an RST or an ICMP error can answer a SYN alone: the pod's other TCP
    // packets (a Service connection's data on a flagged port) skip the staged index.
    if a.key.proto == IPPROTO_TCP
        && (p.quoted().is_some() || p.tcp_flags & (TCP_SYN | TCP_RST) != 0)
        && let Some(marked) = staged::mark(&a.key, a.refused, ifindex(ctx))
    {
        if marked {
            health(health::ANSWER_MARKS);
        }
        return true;
    }
    if let Some(s) = FLOWS.get_ptr_mut(&a.key) {
        // SAFETY: a single byte store into a map value.
        unsafe {
            if a.refused {
                (*s).refused = 1;
            } else {
                (*s).answered = 1;
            }
        }
        health(health::ANSWER_MARKS);
        return true;
    }
    false
}

/// Records a flow a local pod opened, so that its replies are judged `reply`.
#[inline(always)]
fn record_opened(ctx: &TcContext, key: &FlowKey) {
    // Look up first: an LRU insert on a present key could evict another flow. A port without
    // its bit has no entry to find.
    if port_may_have_entry(&POD_PORTS, key.sport, key.proto) && POD_FLOWS.get_ptr(key).is_some() {
        return;
    }
    mark_port(&POD_PORTS, key.sport, key.proto);
    let flow = PodFlow {
        // SAFETY: a helper without preconditions.
        first_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
        ifindex: ifindex(ctx),
        _pad: 0,
    };
    match POD_FLOWS.insert(key, &flow, 0) {
        Ok(()) => health(health::POD_FLOWS_OPENED),
        Err(_) => health(health::POD_FLOW_INSERT_FAILED),
    }
}
