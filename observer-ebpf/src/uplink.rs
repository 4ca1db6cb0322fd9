//! Uplink ingress: one verdict per packet, counted; flagged flows go into `FLOWS`, and a new
//! one also into `EVENTS`, except a pure SYN, which is staged (`staged.rs`).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_coarse_ns,
    programs::TcContext,
};
use observer_common::{
    addr::IpKey,
    maps::{
        FlowEvent, FlowKey, FlowStats, FragKey, events, health, origin, proto_class,
        proto_class_of, staged, stats_index,
    },
    packet::{IPPROTO_TCP, Packet, Status, parse},
    verdict::{
        Decision, Lookup, Settings, Verdict, decide, origin_of, remember_dsr, remember_fragment,
        unjudged,
    },
};

use crate::{
    atomic,
    maps::{
        DSR_FLOWS, EVENTS, FLAGGED_PORTS, FLOWS, FRAGS, Maps, TRACE, VERDICT_STATS, dsr_marks,
        health, last_seen_clock, mark_port, nodeport_range, pod_lost, pod_unjudged, set_flagged,
        trace_enabled, track_mask,
    },
    skb::{Skb, ifindex},
};

#[inline(always)]
pub fn observe(ctx: &TcContext) {
    let (nodeport_min, nodeport_max) = nodeport_range();
    let settings = Settings {
        nodeport_min,
        nodeport_max,
        dsr_marks: dsr_marks(),
    };
    // The mark is judged first, by a function the verifier checks on its own and whose answer
    // it cannot know: judged inline after the parse, its lookups were walked once per packet
    // shape, and their outcomes parted the rest of the program (twice the whole program).
    let view = View {
        dsr_marked: crate::dsr::judge(ctx, settings.dsr_marks),
    };
    let mut p = Packet::EMPTY;
    let status = parse(&Skb(ctx), &mut p);
    let d = decide(status, &p, &settings, &view);
    let len = ctx.len();
    if status == Status::Ip {
        count(&d, proto_class_of(p.proto), len, p.flow_start);
        if track_mask() & d.verdict.bit() != 0 {
            track(ctx, &p, &d, len);
        }
        if remember_fragment(&p, &d) {
            let _ = FRAGS.insert(&p.frag_key(), &(d.verdict as u32), 0);
        }
        if remember_dsr(&p, &d) {
            // SAFETY: a helper without preconditions.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            let _ = DSR_FLOWS.insert(&p.key(), &now, 0);
        }
    } else {
        count(&d, proto_class::OTHER, len, false);
    }
    // Only malformed and fragment packets pay for this.
    if matches!(d.verdict, Verdict::Malformed | Verdict::Fragment)
        && let Some(kind) = unjudged(status, &p, &view)
    {
        pod_unjudged(&p.dst, kind);
    }
    if trace_enabled() {
        trace(&d);
    }
    #[cfg(feature = "log")]
    aya_log_ebpf::debug!(
        ctx,
        "uplink verdict {} reason {} proto {}",
        d.verdict as u8,
        d.reason as u8,
        p.proto
    );
}

/// The verdict's view at the uplink: the maps, and the frame's DSR mark judged before parsing.
struct View {
    /// Non-zero: the frame's mark names a frontend. A number the verifier does not know.
    dsr_marked: u32,
}

impl Lookup for View {
    #[inline(always)]
    fn exact_roles(&self, addr: &IpKey) -> Option<u32> {
        Maps.exact_roles(addr)
    }
    #[inline(always)]
    fn cidr_roles(&self, addr: &IpKey) -> u32 {
        Maps.cidr_roles(addr)
    }
    #[inline(always)]
    fn pod_flow(&self, key: &FlowKey) -> bool {
        Maps.pod_flow(key)
    }
    #[inline(always)]
    fn served_flow(&self, key: &FlowKey) -> bool {
        Maps.served_flow(key)
    }
    #[inline(always)]
    fn nodeport(&self, port: u16, proto: u8) -> bool {
        Maps.nodeport(port, proto)
    }
    #[inline(always)]
    fn fragment_judged(&self, key: &FragKey) -> bool {
        Maps.fragment_judged(key)
    }
    #[inline(always)]
    fn dsr_flow(&self, key: &FlowKey) -> bool {
        Maps.dsr_flow(key)
    }
    #[inline(always)]
    fn dsr_marked(&self, _p: &Packet) -> bool {
        self.dsr_marked != 0
    }
    #[inline(always)]
    fn roles(&self, addr: &IpKey) -> u32 {
        Maps.roles(addr)
    }
}

#[inline(always)]
fn count(d: &Decision, class: u32, len: u32, flow_start: bool) {
    match VERDICT_STATS.get_ptr_mut(stats_index(d.verdict as u8, class)) {
        Some(s) => {
            // SAFETY: a per-CPU slot, so no other program writes it concurrently.
            unsafe {
                (*s).packets += 1;
                (*s).bytes += u64::from(len);
                (*s).flow_starts += u64::from(flow_start);
            }
        }
        None => health(health::STATS_MISSING),
    }
}

#[inline(always)]
fn trace(d: &Decision) {
    if let Some(t) = TRACE.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot.
        unsafe {
            (*t).seq += 1;
            (*t).verdict = d.verdict as u8;
            (*t).reason = d.reason as u8;
        }
    }
}

/// Updates a flow's counters from another packet. `now` may lag the insert's own stamp (the
/// agent's clock), so last seen never goes back.
#[inline(always)]
fn update(s: *mut FlowStats, len: u32, now: u64, tcp_flags: u8) {
    // SAFETY: `s` points into a map value.
    unsafe {
        atomic::add(&raw mut (*s).packets, 1);
        atomic::add(&raw mut (*s).bytes, u64::from(len));
        if (*s).tcp_flags & tcp_flags != tcp_flags {
            (*s).tcp_flags |= tcp_flags;
        }
        if (*s).last_seen_ns < now {
            (*s).last_seen_ns = now;
        }
    }
}

#[inline(always)]
fn track(ctx: &TcContext, p: &Packet, d: &Decision, len: u32) {
    let key = p.key();
    if p.proto == IPPROTO_TCP && staged::pure_syn(p.tcp_flags) {
        // A flow's first packet by definition: no lookup, no insert, no shared ring, while this
        // CPU's staged ring has room.
        mark_port(&FLAGGED_PORTS, key.dport, key.proto);
        set_flagged();
        let staged = crate::staged::syn(&key, |r| {
            r.key = key;
            r.ifindex = ifindex(ctx);
            r.bytes = len;
            r.verdict = d.verdict as u8;
            r.reason = d.reason as u8;
            r.origin = origin_of(p);
            r.tcp_flags = p.tcp_flags;
            r._pad = [0; 3];
        });
        if staged {
            return;
        }
        // This CPU's ring is full (the agent is behind): the table path, as any first packet,
        // so the flow's next packets find it and it is counted once.
    }
    if let Some(s) = FLOWS.get_ptr_mut(&key) {
        update(s, len, last_seen_clock(), p.tcp_flags);
        return;
    }
    // A new flow: its first-seen stamp (and its event's) from the kernel's clock.
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let ifindex = ifindex(ctx);
    // The outsider's ACK after a SYN this CPU staged: the same flow, seen from its start.
    let continued = p.proto == IPPROTO_TCP && crate::staged::continues(&key);
    let origin = if continued {
        origin::START
    } else {
        origin_of(p)
    };
    // The pod-veth programs look a flow up only if its pod-side port has its bit.
    mark_port(&FLAGGED_PORTS, key.dport, key.proto);
    let stats = FlowStats {
        packets: 1,
        bytes: u64::from(len),
        first_seen_ns: now,
        last_seen_ns: now,
        ifindex,
        pod_ifindex: 0,
        tcp_flags: p.tcp_flags,
        delivered: 0,
        answered: 0,
        refused: 0,
        verdict: d.verdict as u8,
        reason: d.reason as u8,
        origin,
        _pad: 0,
    };
    if FLOWS.insert(&key, &stats, u64::from(BPF_NOEXIST)).is_err() {
        // Another CPU inserted it first, or the insert failed.
        match FLOWS.get_ptr_mut(&key) {
            Some(s) => update(s, len, now, p.tcp_flags),
            None => {
                health(health::FLOW_INSERT_FAILED);
                pod_lost(&key.dst);
            }
        }
        return;
    }
    set_flagged();
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut e) => {
            e.write(FlowEvent {
                key,
                ts_ns: now,
                ifindex,
                bytes: len,
                verdict: d.verdict as u8,
                reason: d.reason as u8,
                origin,
                tcp_flags: p.tcp_flags,
                kind: if continued {
                    staged::CONTINUED
                } else {
                    staged::NEW_FLOW
                },
                _pad: [0; 3],
            });
            // No wakeup (an interrupt, dear in a VM) unless this record fills the ring past
            // the mark: the agent polls the ring.
            let flags = if events::wakes(EVENTS.query(u64::from(BPF_RB_AVAIL_DATA))) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            e.submit(u64::from(flags));
        }
        None => {
            health(health::EVENTS_LOST);
            // A continued flow is known to the agent from its staged SYN, and its packets from
            // here on from `FLOWS`: counting it lost too would count it twice.
            if !continued {
                pod_lost(&key.dst);
            }
        }
    }
}
