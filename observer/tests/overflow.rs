//! Overflow, through BPF_PROG_TEST_RUN on the real kernel: a spoofed flood of more new flows
//! than the flow table holds (datagrams: the `FLOWS` path), with nobody draining the ring
//! buffer. The counters stay exact, the lost events are counted, the flow table evicts its
//! oldest flows instead of refusing new ones, and every packet still passes (TC_ACT_UNSPEC).
//! The ring wakes its reader only when a flood fills it past its mark, never for a lone event.
//! A spoofed SYN flood is staged until the ring of its CPU is full, then takes the table path:
//! exact too, each SYN recorded once or counted lost against the pod.
//!
//! Needs root and a kernel that runs eBPF; without them it fails, it never skips.

use observer::kernel::{
    maps::{Maps, drain_events},
    object::{self, LoadOptions},
    staged::StagedRings,
};
use observer_common::{
    addr::key_of,
    maps::{
        FlowKey,
        events::{RECORD_BYTES, WAKE_AT_BYTES},
        health, origin, staged,
    },
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

/// A node with a `TABLE`-flow table, on one CPU throughout, as a flood of one flow hash per
/// source would mostly be.
fn node() -> (aya::Ebpf, Maps, aya::maps::RingBuf<aya::maps::MapData>) {
    testbed::cpu::pin_current();
    let mut ebpf = object::load(&LoadOptions {
        flow_table_entries: TABLE,
        ..LoadOptions::default()
    })
    .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    let (maps, ring) = Maps::take(&mut ebpf).expect("maps");
    maps.write_inventory(&vpc_cni().inventory)
        .expect("inventory");
    (ebpf, maps, ring)
}

fn source(i: u32) -> String {
    // 198.18.0.0/15 (benchmarking space): outside the cluster, one address per flow.
    format!("198.18.{}.{}", i / 250, 1 + i % 250)
}

#[test]
fn flood_past_the_flow_table_and_the_ring_buffer() {
    let (mut ebpf, maps, mut ring) = node();
    let (_, capacity) = maps.flow_table_use().expect("flow table");
    assert_eq!(
        capacity, TABLE,
        "the configured capacity reaches the kernel"
    );

    for i in 0..FLOOD {
        let frame = datagram(i);
        let r = object::test_run(&mut ebpf, PROG_UPLINK, &frame, 1).expect("test_run");
        assert_eq!(r.return_value, u32::MAX, "packet {i} was not passed on");
    }

    // Exact counts, whatever was lost downstream.
    let counts = maps.verdict_counts().expect("counters");
    let direct = &counts.0[&(Verdict::DirectToPod, "udp")];
    assert_eq!(direct.packets, u64::from(FLOOD));

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
    object::test_run(&mut ebpf, PROG_UPLINK, &datagram(0), 1).expect("test_run");
    assert!(present(0));
    let mut events = Vec::new();
    let _ = drain_events(&mut ring, &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, key(0));
}

/// Whether the ring buffer's fd was woken within `ms`, through a real epoll set: an fd gets on
/// epoll's ready list only by a wakeup (or by being ready when it is added), so a record
/// submitted without one leaves `epoll_wait` empty.
fn woken(epfd: i32, ms: i32) -> bool {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: one valid event buffer of length 1.
    let n = unsafe { libc::epoll_wait(epfd, &mut ev, 1, ms) };
    assert!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
    n == 1
}

#[test]
fn lone_events_do_not_wake_the_reader_a_flood_does() {
    use std::os::fd::{AsFd, AsRawFd};
    let (mut ebpf, maps, mut ring) = node();
    // SAFETY: plain syscalls on fds this test owns.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0);
    let ring_fd = ring.as_fd().as_raw_fd();
    let mut add = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 1,
    };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, ring_fd, &mut add) },
        0
    );
    let syn = |ebpf: &mut aya::Ebpf, i: u32| {
        object::test_run(ebpf, PROG_UPLINK, &datagram(i), 1).expect("test_run");
    };

    // A lone access, the reader keeping up: the event is there, and nothing woke the reader.
    syn(&mut ebpf, 0);
    assert!(!woken(epfd, 50), "a lone event woke the reader");
    let mut events = Vec::new();
    drain_events(&mut ring, &mut events);
    assert_eq!(events.len(), 1, "the event is in the ring for the poll");

    // A flood with the reader behind: quiet until the record that crosses the mark, which
    // wakes it, long before the ring is full.
    let crossing = WAKE_AT_BYTES.div_ceil(RECORD_BYTES) as u32;
    for i in 1..crossing {
        syn(&mut ebpf, i);
    }
    assert!(
        !woken(epfd, 50),
        "woken before the mark ({} records)",
        crossing - 1
    );
    syn(&mut ebpf, crossing);
    assert!(
        woken(epfd, 2_000),
        "the record crossing the mark did not wake the reader"
    );
    events.clear();
    drain_events(&mut ring, &mut events);
    assert_eq!(events.len() as u32, crossing, "every record read");
    let h = maps.health_counts().expect("health");
    assert_eq!(h[health::EVENTS_LOST as usize], 0);
    // SAFETY: closing the epoll fd this test created.
    unsafe { libc::close(epfd) };
}

/// A new flow's first datagram from source `i`.
fn datagram(i: u32) -> Vec<u8> {
    Frame::udp(&source(i), POD_A, 40000, 5353).build()
}

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        key_of(source(i).parse().unwrap()),
        key_of(POD_A.parse().unwrap()),
        40000,
        5353,
        17,
    )
}

/// A SYN flood is staged until this CPU's ring is full; past it, SYNs take the table path
/// (the flow table, the event ring, lost events counted against the pod), so a flow is never
/// both lost and recorded, and every SYN is still accounted for.
#[test]
fn a_syn_flood_is_staged_then_falls_back_to_the_flow_table() {
    let (mut ebpf, maps, mut ring) = node();
    let mut rings = StagedRings::take(&mut ebpf).expect("staged rings");
    let syn = |i: u32| Frame::tcp(&source(i), POD_A, 40000, 80, TCP_SYN).build();
    let syn_key = |i: u32| {
        FlowKey::new(
            key_of(source(i).parse().unwrap()),
            key_of(POD_A.parse().unwrap()),
            40000,
            80,
            6,
        )
    };
    let slots = rings.slots();
    assert_eq!(
        slots,
        staged::slots_for(aya::util::nr_cpus().unwrap() as u32),
        "the loader's ring size reaches the kernel and the agent"
    );
    // Past this CPU's ring, and past the event ring after it.
    let past = 20_000;
    let flood = slots + past;
    for i in 0..flood {
        let r = object::test_run(&mut ebpf, PROG_UPLINK, &syn(i), 1).expect("test_run");
        assert_eq!(r.return_value, u32::MAX, "packet {i} was not passed on");
    }
    let counts = maps.verdict_counts().expect("counters");
    let direct = &counts.0[&(Verdict::DirectToPod, "tcp")];
    assert_eq!(direct.packets, u64::from(flood));
    assert_eq!(direct.flow_starts, u64::from(flood));
    // This CPU's ring holds the first `slots` SYNs, in order.
    let mut records = Vec::new();
    rings.drain(&mut records);
    assert_eq!(records.len() as u32, slots);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            (r.key, r.kind),
            (syn_key(i as u32), staged::SYN),
            "record {i}"
        );
        assert_eq!(r.verdict, Verdict::DirectToPod as u8);
    }
    // The rest went into the table with an event each, or with the event counted lost
    // against the pod.
    let mut events = Vec::new();
    drain_events(&mut ring, &mut events);
    let h = maps.health_counts().expect("health");
    let lost = h[health::EVENTS_LOST as usize];
    assert!(
        lost > 0,
        "{past} SYNs past the staged ring must overflow the event ring"
    );
    assert_eq!(events.len() as u64 + lost, u64::from(past));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.key, syn_key(slots + i as u32), "event {i}");
        assert_eq!((e.kind, e.origin), (staged::NEW_FLOW, origin::START));
    }
    assert_eq!(
        maps.pod_lost().expect("pod lost"),
        vec![(key_of(POD_A.parse().unwrap()), lost)],
        "the lost events are counted against the pod they reached"
    );
    let (entries, _) = maps.flow_table_use().expect("flow table");
    assert!(entries <= u64::from(TABLE) && entries >= u64::from(TABLE) * 9 / 10);
    assert!(maps.flow(&syn_key(flood - 1)).expect("lookup").is_some());
    assert!(
        maps.flow(&syn_key(0)).expect("lookup").is_none(),
        "staged SYNs stay out"
    );
    // Read, the ring takes SYNs again.
    object::test_run(&mut ebpf, PROG_UPLINK, &syn(flood), 1).expect("test_run");
    records.clear();
    rings.drain(&mut records);
    assert_eq!(records.len(), 1);
}
