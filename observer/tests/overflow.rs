//! Overflow, through BPF_PROG_TEST_RUN on the real kernel: a spoofed SYN flood of more new flows
//! than the flow table holds, with nobody draining the ring buffer. The counters stay exact,
//! the lost events are counted, the flow table evicts its oldest flows instead of refusing new
//! ones, and every packet still passes (TC_ACT_UNSPEC).
//!
//! Needs root and a kernel that runs eBPF; without them it fails, it never skips.

use observer::{
    bpf::{self, LoadOptions},
    kmaps::{Maps, drain_events},
};
use observer_common::{
    addr::key_of,
    maps::{FlowKey, health},
    names::PROG_UPLINK,
    packet::TCP_SYN,
    testing::{
        frames::Frame,
        scenarios::{vpc::POD_A, vpc_cni},
    },
    verdict::Verdict,
};

const TABLE: u32 = 1024;
const FLOOD: u32 = 20_000;

fn source(i: u32) -> String {
    // 198.18.0.0/15 (benchmarking space): outside the cluster, one address per flow.
    format!("198.18.{}.{}", i / 250, 1 + i % 250)
}

#[test]
fn flood_past_the_flow_table_and_the_ring_buffer() {
    // One CPU throughout, as a flood of one flow hash per source would mostly be.
    testbed::cpu::pin_current();
    let mut ebpf = bpf::load(&LoadOptions {
        flow_table_entries: TABLE,
        ..LoadOptions::default()
    })
    .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    let (maps, mut ring) = Maps::take(&mut ebpf).expect("maps");
    maps.write_inventory(&vpc_cni().inventory)
        .expect("inventory");
    let (_, capacity) = maps.flow_table_use().expect("flow table");
    assert_eq!(
        capacity, TABLE,
        "the configured capacity reaches the kernel"
    );

    for i in 0..FLOOD {
        let frame = Frame::tcp(&source(i), POD_A, 40000, 80, TCP_SYN).build();
        let r = bpf::test_run(&mut ebpf, PROG_UPLINK, &frame, 1).expect("test_run");
        assert_eq!(r.return_value, u32::MAX, "packet {i} was not passed on");
    }

    // Exact counts, whatever was lost downstream.
    let counts = maps.verdict_counts().expect("counters");
    let direct = &counts.0[&(Verdict::DirectToPod, "tcp")];
    assert_eq!(direct.packets, u64::from(FLOOD));
    assert_eq!(direct.flow_starts, u64::from(FLOOD));

    // The ring buffer (1 MiB) holds fewer events than the flood made: the rest are counted.
    let h = maps.health_counts().expect("health");
    let mut events = Vec::new();
    let bad = drain_events(&mut ring, &mut events);
    assert_eq!(bad, 0);
    let lost = h[health::EVENTS_LOST as usize];
    assert!(
        lost > 0,
        "a {FLOOD}-flow flood must overflow the ring buffer"
    );
    assert_eq!(
        events.len() as u64 + lost,
        u64::from(FLOOD),
        "every new flow is either an event or counted as lost"
    );
    // The events that made it are the first ones, in order, and intact.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.key, key(i as u32), "event {i}");
        assert_eq!(e.verdict, Verdict::DirectToPod as u8);
    }

    // The table is full, not over, and never refused a flow: LRU eviction, oldest first.
    let (entries, _) = maps.flow_table_use().expect("flow table");
    assert!(
        entries <= u64::from(TABLE),
        "{entries} entries in a {TABLE}-entry table"
    );
    assert!(
        entries >= u64::from(TABLE) * 9 / 10,
        "only {entries} entries kept"
    );
    assert_eq!(h[health::FLOW_INSERT_FAILED as usize], 0);
    let present = |i: u32| maps.flow(&key(i)).expect("lookup").is_some();
    let newest = (FLOOD - TABLE / 2..FLOOD).filter(|i| !present(*i)).count();
    assert_eq!(
        newest,
        0,
        "{newest} of the newest {} flows evicted",
        TABLE / 2
    );
    let oldest = (0..FLOOD - TABLE).filter(|i| present(*i)).count();
    assert_eq!(oldest, 0, "{oldest} flows older than the table's span kept");

    // The table recovers: a flow that was evicted comes back as a new flow with an event.
    let frame = Frame::tcp(&source(0), POD_A, 40000, 80, TCP_SYN).build();
    bpf::test_run(&mut ebpf, PROG_UPLINK, &frame, 1).expect("test_run");
    assert!(present(0));
    let mut events = Vec::new();
    let _ = drain_events(&mut ring, &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, key(0));
}

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        key_of(source(i).parse().unwrap()),
        key_of(POD_A.parse().unwrap()),
        40000,
        80,
        6,
    )
}
