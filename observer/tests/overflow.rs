//! Overflow, through BPF_PROG_TEST_RUN on the real kernel: a spoofed SYN flood of more new flows
//! than the flow table holds, with nobody draining the ring buffer. The counters stay exact,
//! the lost events are counted, the flow table evicts its oldest flows instead of refusing new
//! ones, and every packet still passes (TC_ACT_UNSPEC). And the ring wakes its reader only
//! when a flood fills it past its mark, never for a lone event.
//!
//! Needs root and a kernel that runs eBPF; without them it fails, it never skips.

use observer::{
    bpf::{self, LoadOptions},
    kmaps::{Maps, drain_events},
};
use observer_common::{
    addr::key_of,
    maps::{
        FlowKey,
        events::{RECORD_BYTES, WAKE_AT_BYTES},
        health,
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
    testbed::cpu::pin_current();
    let mut ebpf = bpf::load(&LoadOptions::default())
        .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    let (maps, mut ring) = Maps::take(&mut ebpf).expect("maps");
    maps.write_inventory(&vpc_cni().inventory)
        .expect("inventory");
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
        let frame = Frame::tcp(&source(i), POD_A, 40000, 80, TCP_SYN).build();
        bpf::test_run(ebpf, PROG_UPLINK, &frame, 1).expect("test_run");
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

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        key_of(source(i).parse().unwrap()),
        key_of(POD_A.parse().unwrap()),
        40000,
        80,
        6,
    )
}
