//! Pod veths: delivery of flagged flows, the pod's answers, and the flows the pod opens.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use observer_common::{
    maps::{PodFlow, health},
    packet::{Packet, Status, parse},
    pod::{answer_of, opened_by},
};

use crate::{
    maps::{
        FLAGGED_PORTS, FLOWS, POD_FLOWS, POD_PORTS, any_flagged, health, mark_port,
        port_may_have_entry,
    },
    skb::{Skb, ifindex},
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
    if parse(&Skb(ctx), &mut p) != Status::Ip {
        return;
    }
    if let Some(a) = answer_of(&p)
        && any_flagged()
        && port_may_have_entry(&FLAGGED_PORTS, a.key.dport, a.key.proto)
        && let Some(s) = FLOWS.get_ptr_mut(&a.key)
    {
        // SAFETY: a single byte store into a map value.
        unsafe {
            if a.refused {
                (*s).refused = 1;
            } else {
                (*s).answered = 1;
            }
        }
        health(health::ANSWER_MARKS);
        return;
    }
    let Some(key) = opened_by(&p) else {
        return;
    };
    // Look up first: an LRU insert on a present key could evict another flow. A port without
    // its bit has no entry to find.
    if port_may_have_entry(&POD_PORTS, key.sport, key.proto) && POD_FLOWS.get_ptr(&key).is_some() {
        return;
    }
    mark_port(&POD_PORTS, key.sport, key.proto);
    let flow = PodFlow {
        // SAFETY: a helper without preconditions.
        first_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
        ifindex: ifindex(ctx),
        _pad: 0,
    };
    match POD_FLOWS.insert(&key, &flow, 0) {
        Ok(()) => health(health::POD_FLOWS_OPENED),
        Err(_) => health(health::POD_FLOW_INSERT_FAILED),
    }
}
