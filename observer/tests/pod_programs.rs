//! The pod-side programs and the uplink together, through BPF_PROG_TEST_RUN: pod-opened flows
//! make replies "reply", flagged flows are delivered / answered / refused, and each new
//! flagged flow yields exactly one event, or (a pure SYN) one staged record, which the pod's
//! answer marks. The pod's packets go through the pod veth's ingress
//! program, or (`uplink-egress` mode) the uplink's egress program, which must find the same.

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use observer::kernel::{
    maps::{self, Maps},
    object::{self, LoadOptions},
    staged::StagedRings,
};
use observer_common::{
    maps::{FlowEvent, FlowKey, FlowStats, health, origin, staged},
    names::{PROG_EGRESS, PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK},
    packet::{TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN},
    testing::{
        flow_key as key,
        frames::{Frame, L4},
        scenarios::vpc::{INTERNET, NODE_ETH0, OUTSIDE, POD_A, VPC_DNS},
    },
    user::Inventory,
    verdict::{Reason, Verdict},
};

const UNSPEC: u32 = u32::MAX;

fn run(ebpf: &mut Ebpf, prog: &'static str, frame: &Frame) {
    let r = object::test_run(ebpf, prog, &frame.build(), 1).expect("test_run");
    assert_eq!(r.return_value, UNSPEC, "{prog} must return TC_ACT_UNSPEC");
}

fn flow(maps: &Maps, k: &FlowKey) -> Option<FlowStats> {
    maps.flows()
        .unwrap()
        .into_iter()
        .find(|(fk, _)| fk == k)
        .map(|(_, s)| s)
}

fn setup() -> (Ebpf, Maps, RingBuf<MapData>) {
    // One CPU throughout: the pod's answer runs on the CPU that received the SYN, as in the
    // kernel's own path, so it finds the staged SYN in that CPU's index.
    testbed::cpu::pin_current();
    let mut ebpf = object::load(&LoadOptions::default())
        .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    // A node with one pod and no pod-opened flows yet.
    let mut inv = Inventory::new();
    inv.add_ip(
        POD_A.parse().unwrap(),
        observer_common::maps::role::LOCAL_POD | observer_common::maps::role::CLUSTER,
    );
    inv.add_ip(
        NODE_ETH0.parse().unwrap(),
        observer_common::maps::role::NODE | observer_common::maps::role::CLUSTER,
    );
    let (maps, events) = Maps::take(&mut ebpf).unwrap();
    maps.write_inventory(&inv).unwrap();
    (ebpf, maps, events)
}

fn verdict_packets(maps: &Maps, v: Verdict) -> u64 {
    maps.verdict_counts().unwrap().packets(v)
}

/// The health counter of packets the pod-side program saw.
fn seen_counter(pod_side: &str) -> usize {
    if pod_side == PROG_EGRESS {
        health::UPLINK_EGRESS_PACKETS as usize
    } else {
        health::FROM_POD_PACKETS as usize
    }
}

#[test]
fn pod_opened_flows_make_replies_replies() {
    pod_opened_flows(PROG_FROM_POD);
}

#[test]
fn pod_opened_flows_make_replies_replies_read_at_uplink_egress() {
    pod_opened_flows(PROG_EGRESS);
}

fn pod_opened_flows(pod_side: &'static str) {
    let (mut ebpf, maps, _events) = setup();
    let synack = Frame::tcp(INTERNET, POD_A, 443, 40000, TCP_SYN | TCP_ACK);
    // Before the pod opened anything, a SYN-ACK to it is a direct access seen mid-stream.
    run(&mut ebpf, PROG_UPLINK, &synack);
    assert_eq!(verdict_packets(&maps, Verdict::DirectToPod), 1);
    // The pod opens TCP, UDP (DNS) and ICMP flows.
    run(
        &mut ebpf,
        pod_side,
        &Frame::tcp(POD_A, INTERNET, 40000, 443, TCP_SYN),
    );
    run(&mut ebpf, pod_side, &Frame::udp(POD_A, VPC_DNS, 40001, 53));
    run(&mut ebpf, pod_side, &Frame::echo(POD_A, INTERNET, true, 77));
    // A second DNS packet of the same flow is not recorded twice.
    run(&mut ebpf, pod_side, &Frame::udp(POD_A, VPC_DNS, 40001, 53));
    let opened: Vec<FlowKey> = maps
        .pod_flows()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert!(opened.contains(&key(POD_A, INTERNET, 40000, 443, 6)));
    assert!(opened.contains(&key(POD_A, VPC_DNS, 40001, 53, 17)));
    assert!(opened.contains(&key(POD_A, INTERNET, 77, 0, 1)));
    // Their replies are replies.
    run(&mut ebpf, PROG_UPLINK, &synack);
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(INTERNET, POD_A, 443, 40000, TCP_ACK | TCP_PSH),
    );
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::udp(VPC_DNS, POD_A, 53, 40001),
    );
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::echo(INTERNET, POD_A, false, 77),
    );
    let quoted = Frame::tcp(POD_A, INTERNET, 40000, 443, TCP_ACK).ip_packet();
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::new(
            INTERNET,
            POD_A,
            L4::IcmpError {
                ty: 3,
                code: 4,
                quoted,
            },
        ),
    );
    assert_eq!(verdict_packets(&maps, Verdict::Reply), 5);
    assert_eq!(verdict_packets(&maps, Verdict::DirectToPod), 1);
    let h = maps.health_counts().unwrap();
    assert_eq!(h[health::POD_FLOWS_OPENED as usize], 3);
    assert_eq!(h[seen_counter(pod_side)], 4);
    if pod_side == PROG_EGRESS {
        // Leaving the node, the node's own flows are not the pods': their replies are judged
        // by the node's address (`host`), and recording them would only crowd POD_FLOWS.
        run(
            &mut ebpf,
            PROG_EGRESS,
            &Frame::tcp(NODE_ETH0, INTERNET, 40010, 443, TCP_SYN),
        );
        run(
            &mut ebpf,
            PROG_EGRESS,
            &Frame::udp(NODE_ETH0, VPC_DNS, 40011, 53),
        );
        assert_eq!(maps.pod_flows().unwrap().len(), 3);
        let h = maps.health_counts().unwrap();
        assert_eq!(h[health::POD_FLOWS_OPENED as usize], 3);
        assert_eq!(h[health::UPLINK_EGRESS_PACKETS as usize], 6);
        assert_eq!(h[health::FROM_POD_PACKETS as usize], 0);
    }
}

#[test]
fn flagged_flows_are_delivered_answered_or_refused_with_one_event_each() {
    flagged_flows(PROG_FROM_POD);
}

/// The same flows with the pod's answers read as they leave the node: answered and refused
/// alike, and nothing is delivered (no program on the pod's veth).
#[test]
fn flagged_flows_are_answered_or_refused_at_uplink_egress() {
    flagged_flows(PROG_EGRESS);
}

fn flagged_flows(pod_side: &'static str) {
    let veths = pod_side == PROG_FROM_POD;
    let (mut ebpf, maps, mut events) = setup();
    let mut rings = StagedRings::take(&mut ebpf).unwrap();
    // Row 1/15: SYN to an open port (answered) and to a closed one (refused): staged.
    let open = Frame::tcp(OUTSIDE, POD_A, 51000, 80, TCP_SYN);
    let closed = Frame::tcp(OUTSIDE, POD_A, 51020, 81, TCP_SYN);
    // Row 11: UDP answered; row 10: ping answered; UDP to a closed port: ICMP unreachable.
    let udp = Frame::udp(OUTSIDE, POD_A, 51013, 5353);
    let ping = Frame::echo(OUTSIDE, POD_A, true, 10);
    let udp_closed = Frame::udp(OUTSIDE, POD_A, 51014, 9);
    // Row 17: mid-stream, never answered.
    let mid = Frame::tcp(OUTSIDE, POD_A, 51021, 80, TCP_ACK | TCP_PSH);
    for f in [&open, &closed, &udp, &ping, &udp_closed, &mid] {
        run(&mut ebpf, PROG_UPLINK, f);
        if veths {
            run(&mut ebpf, PROG_TO_POD, f);
        }
    }
    // Retransmitted SYN: staged again (the agent adds it to the flow).
    run(&mut ebpf, PROG_UPLINK, &open);
    let synack = Frame::tcp(POD_A, OUTSIDE, 80, 51000, TCP_SYN | TCP_ACK);
    run(&mut ebpf, pod_side, &synack);
    // A retransmitted SYN-ACK marks nothing more.
    run(&mut ebpf, pod_side, &synack);
    run(
        &mut ebpf,
        pod_side,
        &Frame::tcp(POD_A, OUTSIDE, 81, 51020, TCP_RST | TCP_ACK),
    );
    run(
        &mut ebpf,
        pod_side,
        &Frame::udp(POD_A, OUTSIDE, 5353, 51013),
    );
    run(&mut ebpf, pod_side, &Frame::echo(POD_A, OUTSIDE, false, 10));
    let quoted = udp_closed.ip_packet();
    run(
        &mut ebpf,
        pod_side,
        &Frame::new(
            POD_A,
            OUTSIDE,
            L4::IcmpError {
                ty: 3,
                code: 3,
                quoted,
            },
        ),
    );

    let state = |k: FlowKey| {
        let s = flow(&maps, &k).unwrap_or_else(|| panic!("no flow {k:?}"));
        (s.delivered, s.answered, s.refused)
    };
    let d = u8::from(veths);
    assert_eq!(state(key(OUTSIDE, POD_A, 51013, 5353, 17)), (d, 1, 0));
    assert_eq!(state(key(OUTSIDE, POD_A, 10, 0, 1)), (d, 1, 0));
    assert_eq!(state(key(OUTSIDE, POD_A, 51014, 9, 17)), (d, 0, 1));
    assert_eq!(state(key(OUTSIDE, POD_A, 51021, 80, 6)), (d, 0, 0));
    let mid_stats = flow(&maps, &key(OUTSIDE, POD_A, 51021, 80, 6)).unwrap();
    assert_eq!(mid_stats.origin, origin::MID_STREAM);
    assert_eq!(mid_stats.reason, Reason::DirectMidStream as u8);

    // The SYNs are in the staged ring, not in the table, with the pod's answers after them.
    let open_key = key(OUTSIDE, POD_A, 51000, 80, 6);
    let closed_key = key(OUTSIDE, POD_A, 51020, 81, 6);
    assert!(flow(&maps, &open_key).is_none() && flow(&maps, &closed_key).is_none());
    let mut records: Vec<FlowEvent> = Vec::new();
    rings.drain(&mut records);
    let kinds: Vec<(FlowKey, u8)> = records.iter().map(|r| (r.key, r.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (open_key, staged::SYN),
            (closed_key, staged::SYN),
            (open_key, staged::SYN),
            (open_key, staged::ANSWERED),
            (closed_key, staged::REFUSED),
        ]
    );
    for syn in [&records[0], &records[2]] {
        assert_eq!(syn.bytes, open.build().len() as u32);
        assert_eq!(syn.origin, origin::START);
        assert_eq!(syn.verdict, Verdict::DirectToPod as u8);
        assert_eq!(syn.reason, Reason::DirectNewConnection as u8);
        assert_eq!(syn.tcp_flags, TCP_SYN);
        assert!(syn.ts_ns > 0);
    }
    assert!(records[2].ts_ns >= records[0].ts_ns);
    // The marks name the interface the answer was read on.
    assert!(records[3].ifindex > 0 && records[3].ifindex == records[4].ifindex);

    // The pod's answers are not taken for flows it opened.
    assert!(maps.pod_flows().unwrap().is_empty());
    // One event per new flagged flow that is not staged, none lost.
    let mut got = Vec::new();
    let bad = maps::drain_events(&mut events, &mut got);
    assert_eq!(bad, 0);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(|e| e.verdict == Verdict::DirectToPod as u8));
    assert!(got.iter().all(|e| e.kind == staged::NEW_FLOW));
    assert_eq!(got[0].key, key(OUTSIDE, POD_A, 51013, 5353, 17));
    let h = maps.health_counts().unwrap();
    assert_eq!(h[health::EVENTS_LOST as usize], 0);
    // Staged SYNs are not marked delivered (nothing reads it for a SYN alone).
    assert_eq!(h[health::DELIVERED_MARKS as usize], 4 * u64::from(veths));
    assert_eq!(h[health::ANSWER_MARKS as usize], 5);
    assert_eq!(h[health::TO_POD_PACKETS as usize], 6 * u64::from(veths));
    assert_eq!(h[seen_counter(pod_side)], 6);
}

/// A softirq batch: 64 SYNs from one client reach the CPU before the pod answers any (the
/// answers come when the batch has been handed to the pods), then half are answered and half
/// refused. Every answer finds its SYN through this CPU's index, none marks another's.
#[test]
fn a_batch_of_syns_is_marked_answer_by_answer() {
    let (mut ebpf, _maps, _events) = setup();
    let mut rings = StagedRings::take(&mut ebpf).unwrap();
    const BATCH: u16 = 64;
    for i in 0..BATCH {
        run(
            &mut ebpf,
            PROG_UPLINK,
            &Frame::tcp(OUTSIDE, POD_A, 42000 + i, 80 + i % 2, TCP_SYN),
        );
    }
    for i in (0..BATCH).rev() {
        let flags = if i % 2 == 0 {
            TCP_SYN | TCP_ACK
        } else {
            TCP_RST | TCP_ACK
        };
        run(
            &mut ebpf,
            PROG_FROM_POD,
            &Frame::tcp(POD_A, OUTSIDE, 80 + i % 2, 42000 + i, flags),
        );
    }
    let mut records: Vec<FlowEvent> = Vec::new();
    rings.drain(&mut records);
    let (syns, marks) = records.split_at(usize::from(BATCH));
    assert!(syns.iter().all(|r| r.kind == staged::SYN));
    assert_eq!(
        marks.len(),
        usize::from(BATCH),
        "an answer without its mark"
    );
    for m in marks {
        let i = m.key.sport - 42000;
        assert_eq!(m.key, key(OUTSIDE, POD_A, 42000 + i, 80 + i % 2, 6));
        let want = if i % 2 == 0 {
            staged::ANSWERED
        } else {
            staged::REFUSED
        };
        assert_eq!(m.kind, want, "{i}");
    }
}

/// The outsider's ACK after a staged SYN puts the flow in the table as the same flow: its
/// start seen, its event a continuation (the agent counted it from the SYN), and the pod's
/// later packets mark nothing twice.
#[test]
fn a_staged_flows_next_packet_continues_it() {
    let (mut ebpf, maps, mut events) = setup();
    let mut rings = StagedRings::take(&mut ebpf).unwrap();
    let k = key(OUTSIDE, POD_A, 51000, 80, 6);
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(OUTSIDE, POD_A, 51000, 80, TCP_SYN),
    );
    let synack = Frame::tcp(POD_A, OUTSIDE, 80, 51000, TCP_SYN | TCP_ACK);
    run(&mut ebpf, PROG_FROM_POD, &synack);
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(OUTSIDE, POD_A, 51000, 80, TCP_ACK),
    );
    run(&mut ebpf, PROG_FROM_POD, &synack);
    // A flow this CPU never staged starts as what it is.
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(OUTSIDE, POD_A, 51001, 80, TCP_ACK),
    );
    let s = flow(&maps, &k).expect("in the table from its second packet");
    assert_eq!((s.packets, s.origin), (1, origin::START));
    let mut got = Vec::new();
    maps::drain_events(&mut events, &mut got);
    let kinds: Vec<(u16, u8, u8)> = got
        .iter()
        .map(|e| (e.key.sport, e.kind, e.origin))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (51000, staged::CONTINUED, origin::START),
            (51001, staged::NEW_FLOW, origin::MID_STREAM)
        ]
    );
    let mut records: Vec<FlowEvent> = Vec::new();
    rings.drain(&mut records);
    let kinds: Vec<u8> = records.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![staged::SYN, staged::ANSWERED]);
    assert_eq!(
        maps.health_counts().unwrap()[health::ANSWER_MARKS as usize],
        1
    );
}

#[test]
fn every_program_returns_unspec_on_garbage() {
    let (mut ebpf, _maps, _events) = setup();
    for prog in [PROG_UPLINK, PROG_TO_POD, PROG_FROM_POD, PROG_EGRESS] {
        for bytes in [
            vec![0u8; 14],
            vec![0xff; 60],
            observer_common::testing::frames::non_ip(0x0806, 28),
        ] {
            let r = object::test_run(&mut ebpf, prog, &bytes, 1).unwrap();
            assert_eq!(r.return_value, UNSPEC);
        }
    }
}

/// Packets of a known flagged flow take their last-seen stamp from the agent's clock (`CLOCK`,
/// written at each flow refresh), which never sets it back; a new flow takes the kernel's clock.
#[test]
fn known_flows_are_stamped_with_the_agents_clock() {
    let (mut ebpf, maps, _events) = setup();
    let k = key(OUTSIDE, POD_A, 51000, 80, 6);
    let before = observer::kernel::clock::kernel_ns();
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(OUTSIDE, POD_A, 51000, 80, TCP_ACK | TCP_PSH),
    );
    let first = flow(&maps, &k).unwrap();
    assert!(first.first_seen_ns >= before);
    assert_eq!(first.last_seen_ns, first.first_seen_ns);
    let ack = Frame::tcp(OUTSIDE, POD_A, 51000, 80, TCP_ACK);
    // The agent's clock, ahead: taken.
    let later = first.last_seen_ns + 5_000_000_000;
    maps.set_clock(later).unwrap();
    run(&mut ebpf, PROG_UPLINK, &ack);
    assert_eq!(flow(&maps, &k).unwrap().last_seen_ns, later);
    // Behind: last seen does not go back.
    maps.set_clock(first.last_seen_ns).unwrap();
    run(&mut ebpf, PROG_UPLINK, &ack);
    let s = flow(&maps, &k).unwrap();
    assert_eq!((s.last_seen_ns, s.packets), (later, 3));
    // A new flow: the kernel's clock.
    run(
        &mut ebpf,
        PROG_UPLINK,
        &Frame::tcp(OUTSIDE, POD_A, 51001, 80, TCP_ACK | TCP_PSH),
    );
    let new = flow(&maps, &key(OUTSIDE, POD_A, 51001, 80, 6)).unwrap();
    assert!(new.first_seen_ns >= before && new.first_seen_ns < later);
}
